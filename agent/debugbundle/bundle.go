// Package debugbundle collects an edge agent's diagnostics into a gzipped
// tarball that is safe to attach to a ticket: host facts, the agent
// version, the executor's action cache and outboxes, per-VM metadata and
// the tails of each VM's serial and VMM (or QEMU) logs, the public facts of the agent
// certificate, a redacted identity, `netbird status --json`, a listing of
// the state dir, and manifest.json naming what was collected and what was
// skipped and why.
//
// Secrets stay out by construction and by a second line of defence: key
// files are never read into the bundle, the setup key and any token in the
// identity are replaced by [REDACTED], cloud-init user data is reduced to
// its size and digest, and every file is scanned before it is written for
// PEM private-key blocks, the bytes of the agent's own key and the site's
// secret values (redacted, or the file dropped when a "PRIVATE KEY" marker
// remains). Files are read through os.Root, so a symlink that leads out of
// the state or PKI dir is never followed; nothing in the state dir is
// created or changed.
package debugbundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nkudo/nkudo/agent/internal/atomicfile"
)

// Options configure a bundle. StateDir and PKIDir name the agent's dirs;
// a missing or unreadable one is reported in the manifest, not an error.
type Options struct {
	// StateDir is the agent's state dir (hypervisor/ and agent/ below it).
	StateDir string
	// PKIDir holds agent.key, agent.crt, ca.crt and identity.json.
	PKIDir string
	// AgentVersion is recorded in version.json and the manifest.
	AgentVersion string
	// Facts returns what `nkudo-edge facts` prints; nil skips facts.json.
	Facts func(ctx context.Context) (any, error)
	// NetBird is the netbird binary; empty means "netbird" from PATH.
	NetBird string
	// JournalUnit is the systemd unit whose journal tail is collected with
	// journalctl (the agent's own log); empty skips it.
	JournalUnit string
	// Journalctl is the journalctl binary; empty means "journalctl" from PATH.
	Journalctl string
	// Secrets are more values to redact wherever they appear (for example
	// an enrollment token from the environment). Empty ones are ignored.
	Secrets []string
	// MaxFileBytes bounds the tail kept of each log file; zero means 1 MiB.
	MaxFileBytes int64
	// MaxEntries bounds the action records, outbox entries and listing
	// rows of each kind; zero means 1000.
	MaxEntries int
	// Name is the top directory inside the archive; empty means "nkudo-edge-debug".
	Name string
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Manifest is manifest.json: what the bundle holds and what it left out.
type Manifest struct {
	Format       int       `json:"format"`
	CreatedAt    time.Time `json:"createdAt"`
	AgentVersion string    `json:"agentVersion"`
	Hostname     string    `json:"hostname"`
	StateDir     string    `json:"stateDir"`
	PKIDir       string    `json:"pkiDir"`
	Collected    []Item    `json:"collected"`
	Skipped      []Skip    `json:"skipped"`
}

// Item is one file of the bundle.
type Item struct {
	// Path is the file's path inside the bundle (below Name).
	Path string `json:"path"`
	// Source is the file or command it came from.
	Source string `json:"source"`
	Bytes  int    `json:"bytes"`
	// Truncated says only the tail of SourceBytes was kept.
	Truncated   bool  `json:"truncated,omitempty"`
	SourceBytes int64 `json:"sourceBytes,omitempty"`
	// Redactions counts secrets and key blocks replaced by [REDACTED].
	Redactions int `json:"redactions,omitempty"`
}

// Skip is something that was not collected, with the reason.
type Skip struct {
	Source string `json:"source"`
	Reason string `json:"reason"`
}

// FormatVersion is the manifest's format number.
const FormatVersion = 1

// DefaultName is the bundle's default base name (without .tar.gz):
// nkudo-edge-debug-<host>-<UTC time>.
func DefaultName(host string, now time.Time) string {
	host = strings.Map(func(r rune) rune {
		if r == '-' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			return r
		}
		return '_'
	}, host)
	if host == "" {
		host = "unknown"
	}
	return "nkudo-edge-debug-" + host + "-" + now.UTC().Format("20060102T150405Z")
}

// WriteFile writes the bundle to path (0600), atomically: a failed run
// leaves no partial tarball behind.
func WriteFile(ctx context.Context, path string, o Options) (*Manifest, error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("debug bundle %s: %w", path, err)
	}
	name := tmp.Name()
	fail := func(err error) (*Manifest, error) {
		tmp.Close()
		os.Remove(name)
		return nil, err
	}
	m, err := Write(ctx, tmp, o)
	if err != nil {
		return fail(err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		return fail(fmt.Errorf("debug bundle %s: %w", path, err))
	}
	if err := tmp.Sync(); err != nil {
		return fail(fmt.Errorf("debug bundle %s: %w", path, err))
	}
	if err := tmp.Close(); err != nil {
		os.Remove(name)
		return nil, fmt.Errorf("debug bundle %s: %w", path, err)
	}
	if err := os.Rename(name, path); err != nil {
		os.Remove(name)
		return nil, fmt.Errorf("debug bundle %s: %w", path, err)
	}
	return m, atomicfile.SyncDir(dir)
}

// Write collects the diagnostics and writes them to w as a gzipped
// tarball. Only a failure to write w or the end of ctx is an error;
// everything that cannot be collected is listed in the manifest's Skipped.
func Write(ctx context.Context, w io.Writer, o Options) (*Manifest, error) {
	if o.MaxFileBytes <= 0 {
		o.MaxFileBytes = 1 << 20
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = 1000
	}
	if o.Name == "" {
		o.Name = "nkudo-edge-debug"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	host, _ := os.Hostname()
	b := &bundle{
		o: o, log: o.Logger.With("component", "debugbundle"), now: now().UTC(),
		m: &Manifest{Format: FormatVersion, AgentVersion: o.AgentVersion, Hostname: host,
			StateDir: o.StateDir, PKIDir: o.PKIDir, Collected: []Item{}, Skipped: []Skip{}},
	}
	b.m.CreatedAt = b.now
	zw := gzip.NewWriter(w)
	b.tw = tar.NewWriter(zw)
	b.state = b.openRoot("state dir", o.StateDir)
	b.pki = b.openRoot("PKI dir", o.PKIDir)
	defer func() {
		for _, r := range []*os.Root{b.state, b.pki} {
			if r != nil {
				r.Close()
			}
		}
	}()
	// Secrets first: every file written after this is scanned for them.
	b.loadSecrets()
	for _, collect := range []func(context.Context) error{
		// VMs before the executor: credentials found in VM metadata are
		// then redacted from cached results and logs too.
		b.collectVersion, b.collectPKI, b.collectVMs, b.collectQEMUVMs, b.collectExecutor,
		b.collectFacts, b.collectTree, b.collectNetBird, b.collectJournal,
	} {
		if err := collect(ctx); err != nil {
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("debug bundle: %w", err)
		}
	}
	mj, err := json.MarshalIndent(b.m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	// The manifest is not listed in itself; its quoted paths and reasons
	// get the same redaction as every file.
	if err := b.writeEntry("manifest.json", []byte(b.scrubText(string(mj))+"\n")); err != nil {
		return nil, err
	}
	if err := b.tw.Close(); err != nil {
		return nil, fmt.Errorf("write debug bundle: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("write debug bundle: %w", err)
	}
	return b.m, nil
}

// bundle is one collection run.
type bundle struct {
	o   Options
	log *slog.Logger
	now time.Time
	m   *Manifest
	tw  *tar.Writer
	// state and pki are nil when the dir cannot be opened.
	state, pki *os.Root
	secrets    [][]byte
}

func (b *bundle) openRoot(what, dir string) *os.Root {
	if dir == "" {
		b.skip(what, "not configured")
		return nil
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		b.skip(dir, fmt.Sprintf("cannot open the %s: %v", what, err))
		return nil
	}
	return r
}

// skip records something left out; the reason is scrubbed like any file.
func (b *bundle) skip(source, reason string) {
	reason = b.scrubText(reason)
	b.log.Debug("skipped", "source", source, "reason", reason)
	b.m.Skipped = append(b.m.Skipped, Skip{Source: source, Reason: reason})
}

// add scrubs data and writes it as name; a file that still holds a
// private-key marker after redaction is dropped and listed as skipped.
func (b *bundle) add(name string, data []byte, it Item) error {
	clean, n, drop := scrub(data, b.secrets)
	if drop != "" {
		b.skip(it.Source, drop)
		return nil
	}
	it.Path, it.Bytes = name, len(clean)
	it.Redactions += n
	if err := b.writeEntry(name, clean); err != nil {
		return err
	}
	b.m.Collected = append(b.m.Collected, it)
	return nil
}

func (b *bundle) addJSON(name, source string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		b.skip(source, "encode: "+err.Error())
		return nil
	}
	return b.add(name, append(data, '\n'), Item{Source: source})
}

func (b *bundle) writeEntry(name string, data []byte) error {
	hdr := &tar.Header{Name: path.Join(b.o.Name, name), Mode: 0o644, Size: int64(len(data)), ModTime: b.now, Typeflag: tar.TypeReg,
		Format: tar.FormatPAX}
	if err := b.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write debug bundle: %s: %w", name, err)
	}
	if _, err := b.tw.Write(data); err != nil {
		return fmt.Errorf("write debug bundle: %s: %w", name, err)
	}
	return nil
}

// fileData is what readFile found.
type fileData struct {
	data      []byte
	size      int64
	truncated bool
}

// errSkip carries the reason a file is not collected.
type errSkip struct{ reason string }

func (e errSkip) Error() string { return e.reason }

// errNotPresent is the reason for a file that does not exist.
var errNotPresent = errSkip{"not present"}

// readFile reads rel below root, at most max bytes (the tail when the
// file is bigger). It refuses anything that is not a regular file and
// every symlink.
func readFile(root *os.Root, rel string, max int64) (fileData, error) {
	var fd fileData
	if root == nil {
		return fd, errSkip{"its directory could not be opened"}
	}
	lfi, err := root.Lstat(rel)
	if errors.Is(err, os.ErrNotExist) {
		return fd, errNotPresent
	}
	if err != nil {
		return fd, errSkip{err.Error()}
	}
	// The agent writes regular files only: a symlink in their place is
	// never followed, wherever it leads (os.Root below also refuses
	// symlinked directories that leave root).
	if lfi.Mode()&os.ModeSymlink != 0 {
		target, _ := os.Readlink(filepath.Join(root.Name(), rel))
		if _, err := root.Stat(rel); err != nil {
			return fd, errSkip{fmt.Sprintf("symlink to %q leads outside %s (or nowhere); not followed", target, root.Name())}
		}
		return fd, errSkip{fmt.Sprintf("symlink to %q; not followed (the agent writes a regular file here)", target)}
	}
	// O_NONBLOCK: opening a FIFO planted in the state dir must not hang.
	f, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fd, errSkip{err.Error()}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fd, errSkip{err.Error()}
	}
	if !fi.Mode().IsRegular() {
		return fd, errSkip{fmt.Sprintf("not a regular file (%s)", fi.Mode().Type())}
	}
	fd.size = fi.Size()
	if fd.size > max {
		if _, err := f.Seek(fd.size-max, io.SeekStart); err != nil {
			return fd, errSkip{err.Error()}
		}
		fd.truncated = true
	}
	// Sized once from the stat: a file growing while it is read stays
	// bounded, one shrinking is read to its end.
	fd.data = make([]byte, min(fd.size, max))
	n, err := io.ReadFull(f, fd.data)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fd, errSkip{err.Error()}
	}
	fd.data = fd.data[:n]
	return fd, nil
}

// tailMargin is read before a log's tail and redacted with it, so that a
// secret or key block the cut falls into is still whole when it is
// replaced, and no fragment of it survives at the start of the tail.
const tailMargin = 64 << 10

// addFile collects the tail of the log rel below root as name, or
// records why not.
func (b *bundle) addFile(root *os.Root, dir, rel, name string) error {
	src := filepath.Join(dir, rel)
	fd, err := readFile(root, rel, b.o.MaxFileBytes+tailMargin)
	if err != nil {
		b.skip(src, err.Error())
		return nil
	}
	data, n := redact(fd.data, b.secrets)
	data, cut := tail(data, b.o.MaxFileBytes)
	truncated := fd.truncated || cut
	it := Item{Source: src, Truncated: truncated, Redactions: n}
	if truncated {
		it.SourceBytes = fd.size
	}
	return b.add(name, data, it)
}

// tail keeps the last max bytes of data, starting at a line when one
// starts soon after the cut; cut says whether anything was dropped.
func tail(data []byte, max int64) (out []byte, cut bool) {
	if int64(len(data)) <= max {
		return data, false
	}
	data = data[int64(len(data))-max:]
	if i := bytes.IndexByte(data[:min(len(data), 4096)], '\n'); i >= 0 {
		data = data[i+1:]
	}
	return data, true
}
