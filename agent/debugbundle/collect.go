package debugbundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nkudo/nkudo/agent"
	"github.com/nkudo/nkudo/agent/providers/cloudhypervisor"
	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/pki"
)

// Files of the PKI dir (agent.Enroll writes them).
const (
	certFile     = "agent.crt"
	caFile       = "ca.crt"
	keyFile      = "agent.key"
	identityFile = "identity.json"
)

func (b *bundle) collectVersion(context.Context) error {
	v := map[string]any{
		"agentVersion": b.o.AgentVersion, "protocolVersion": api.ProtocolVersion,
		"goVersion": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH,
		"hostname": b.m.Hostname, "uid": os.Getuid(), "gid": os.Getgid(), "collectedAt": b.now,
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if strings.HasPrefix(s.Key, "vcs.") {
				v[s.Key] = s.Value
			}
		}
	}
	return b.addJSON("version.json", "nkudo-edge version", v)
}

func (b *bundle) collectFacts(ctx context.Context) error {
	if b.o.Facts == nil {
		b.skip("nkudo-edge facts", "no facts source configured")
		return nil
	}
	f, err := b.o.Facts(ctx)
	if err != nil {
		b.skip("nkudo-edge facts", err.Error())
		return nil
	}
	return b.addJSON("facts.json", "nkudo-edge facts", f)
}

// fileRow is one row of a directory listing: metadata, never content.
type fileRow struct {
	Path    string    `json:"path"`
	Type    string    `json:"type"`
	Mode    string    `json:"mode"`
	Size    int64     `json:"size"`
	ModTime time.Time `json:"modTime"`
	UID     uint32    `json:"uid"`
	GID     uint32    `json:"gid"`
	// Target is a symlink's target; Outside says it leaves the listed dir.
	Target  string `json:"target,omitempty"`
	Outside bool   `json:"outside,omitempty"`
}

func row(base, full, rel string, fi fs.FileInfo) fileRow {
	r := fileRow{Path: filepath.ToSlash(rel), Type: fileType(fi.Mode()), Mode: fi.Mode().Perm().String(), Size: fi.Size(),
		ModTime: fi.ModTime().UTC()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		r.UID, r.GID = st.Uid, st.Gid
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		r.Target, _ = os.Readlink(full)
		t := r.Target
		if !filepath.IsAbs(t) {
			t = filepath.Join(filepath.Dir(full), t)
		}
		rel, err := filepath.Rel(base, t)
		r.Outside = err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator))
	}
	return r
}

func fileType(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "file"
	case m.IsDir():
		return "dir"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeNamedPipe != 0:
		return "fifo"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "other"
}

// listing is a directory listing capped at a number of rows.
type listing struct {
	Dir       string    `json:"dir"`
	Files     []fileRow `json:"files"`
	Truncated bool      `json:"truncated,omitempty"`
}

// collectTree lists the state dir (metadata only; symlinks are listed, not
// followed), so full disks, stray files and wrong owners show.
func (b *bundle) collectTree(context.Context) error {
	if b.state == nil {
		return nil
	}
	base := b.state.Name()
	l := listing{Dir: b.o.StateDir, Files: []fileRow{}}
	limit := 10 * b.o.MaxEntries
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			l.Files = append(l.Files, fileRow{Path: p, Type: "error: " + err.Error()})
			return nil
		}
		if p == base {
			return nil
		}
		if len(l.Files) >= limit {
			l.Truncated = true
			return filepath.SkipAll
		}
		fi, err := d.Info()
		if err != nil {
			return nil // gone meanwhile
		}
		rel, _ := filepath.Rel(base, p)
		l.Files = append(l.Files, row(base, p, rel, fi))
		return nil
	})
	if err != nil {
		b.skip(b.o.StateDir+" (listing)", err.Error())
		return nil
	}
	return b.addJSON("state-files.json", b.o.StateDir+" (listing)", l)
}

// readDir lists rel below root.
func readDir(root *os.Root, rel string) ([]os.DirEntry, error) {
	if root == nil {
		return nil, errSkip{"its directory could not be opened"}
	}
	d, err := root.Open(rel)
	if errors.Is(err, os.ErrNotExist) {
		return nil, errNotPresent
	}
	if err != nil {
		if fi, lerr := root.Lstat(rel); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(filepath.Join(root.Name(), rel))
			return nil, errSkip{fmt.Sprintf("symlink to %q leads outside %s (or nowhere); not followed", target, root.Name())}
		}
		return nil, errSkip{err.Error()}
	}
	defer d.Close()
	entries, err := d.ReadDir(-1)
	if err != nil {
		return nil, errSkip{err.Error()}
	}
	return entries, nil
}

// certInfo is the public part of a certificate.
type certInfo struct {
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	Serial    string    `json:"serial"` // hex, as the control plane prints and stores it
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
	// ExpiresIn is negative once the certificate has expired.
	ExpiresIn   string   `json:"expiresIn"`
	Expired     bool     `json:"expired"`
	IsCA        bool     `json:"isCA"`
	DNSNames    []string `json:"dnsNames,omitempty"`
	URIs        []string `json:"uris,omitempty"`
	KeyType     string   `json:"keyType"`
	Fingerprint string   `json:"fingerprint"`
}

func describeCert(c *x509.Certificate, now time.Time) certInfo {
	ci := certInfo{Subject: c.Subject.String(), Issuer: c.Issuer.String(), Serial: c.SerialNumber.Text(16),
		NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(), ExpiresIn: c.NotAfter.Sub(now).Round(time.Second).String(),
		Expired: now.After(c.NotAfter), IsCA: c.IsCA, DNSNames: c.DNSNames, KeyType: c.PublicKeyAlgorithm.String()}
	for _, u := range c.URIs {
		ci.URIs = append(ci.URIs, u.String())
	}
	ci.Fingerprint = pki.Fingerprint(c.Raw)
	return ci
}

// parseCerts returns the public facts of every certificate in a PEM file.
func parseCerts(data []byte, now time.Time) ([]certInfo, error) {
	var out []certInfo
	for rest := data; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return out, fmt.Errorf("parse certificate %d: %w", len(out)+1, err)
		}
		out = append(out, describeCert(c, now))
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate in it")
	}
	return out, nil
}

// collectPKI adds the PKI dir's listing, the public facts of the agent and
// CA certificates, whether the key matches the certificate, and the
// identity with its secrets redacted. Key files are only listed.
func (b *bundle) collectPKI(context.Context) error {
	if b.pki == nil {
		return nil // openRoot said why
	}
	dir := b.o.PKIDir
	entries, err := readDir(b.pki, ".")
	if err != nil {
		b.skip(dir, err.Error())
		return nil
	}
	l := listing{Dir: dir, Files: []fileRow{}}
	for _, e := range entries {
		if fi, err := e.Info(); err == nil {
			l.Files = append(l.Files, row(b.pki.Name(), filepath.Join(b.pki.Name(), e.Name()), e.Name(), fi))
		}
		if isKeyFile(e.Name()) {
			b.skip(filepath.Join(dir, e.Name()), "private key: never collected")
		}
	}
	if err := b.addJSON("pki/files.json", dir+" (listing)", l); err != nil {
		return err
	}
	certs := map[string]any{}
	var certPEM []byte
	for _, name := range []string{certFile, caFile} {
		fd, err := readFile(b.pki, name, 1<<20)
		if err != nil {
			certs[name] = map[string]string{"error": err.Error()}
			continue
		}
		if name == certFile {
			certPEM = fd.data
		}
		infos, err := parseCerts(fd.data, b.now)
		if err != nil {
			certs[name] = map[string]any{"error": err.Error(), "certificates": infos}
			continue
		}
		certs[name] = infos
	}
	// The key is read only to check it belongs to the certificate; a
	// mismatch explains TLS failures that nothing else shows.
	if certPEM != nil {
		if kd, err := readFile(b.pki, keyFile, 1<<20); err != nil {
			certs["keyMatchesCertificate"] = "unknown: " + err.Error()
		} else if _, err := tls.X509KeyPair(certPEM, kd.data); err != nil {
			certs["keyMatchesCertificate"] = "no: " + err.Error()
		} else {
			certs["keyMatchesCertificate"] = "yes"
		}
	}
	if err := b.addJSON("pki/certificates.json", filepath.Join(dir, certFile)+", "+filepath.Join(dir, caFile), certs); err != nil {
		return err
	}
	src := filepath.Join(dir, identityFile)
	fd, err := readFile(b.pki, identityFile, 1<<20)
	if err != nil {
		b.skip(src, err.Error())
		return nil
	}
	var doc any
	if err := json.Unmarshal(fd.data, &doc); err != nil {
		b.skip(src, fmt.Sprintf("not valid JSON (%v); not included, it may hold the setup key", err))
		return nil
	}
	n := 0
	redactJSON(doc, func(string) { n++ })
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		b.skip(src, err.Error())
		return nil
	}
	return b.addRedacted("pki/identity.json", src, append(out, '\n'), n)
}

// addRedacted adds a document from which n secrets were already removed.
func (b *bundle) addRedacted(name, src string, data []byte, n int) error {
	before := len(b.m.Collected)
	if err := b.add(name, data, Item{Source: src}); err != nil {
		return err
	}
	if len(b.m.Collected) > before {
		b.m.Collected[before].Redactions += n
	}
	return nil
}

var (
	idFile  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}\.json$`)
	seqFile = regexp.MustCompile(`^([0-9]{1,20})\.json$`)
)

// collectExecutor adds the action cache (most recent records), both
// outboxes (counters and entries) and the per-plan log sequence numbers.
// It reads the files the executor writes; it does not open the executor,
// which would create and repair them.
func (b *bundle) collectExecutor(context.Context) error {
	if b.state == nil {
		return nil // openRoot said why
	}
	if err := b.collectActions(); err != nil {
		return err
	}
	for _, box := range []string{"results", "logs"} {
		if err := b.collectOutbox(box); err != nil {
			return err
		}
	}
	return b.collectSeqs()
}

type namedEntry struct {
	name string
	mod  time.Time
}

func (b *bundle) collectActions() error {
	rel := "agent/actions"
	src := filepath.Join(b.o.StateDir, rel)
	entries, err := readDir(b.state, rel)
	if err != nil {
		b.skip(src, err.Error())
		return nil
	}
	var files []namedEntry
	for _, e := range entries {
		if !idFile.MatchString(e.Name()) {
			continue
		}
		var mod time.Time
		if fi, err := e.Info(); err == nil {
			mod = fi.ModTime()
		}
		files = append(files, namedEntry{e.Name(), mod})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].mod.After(files[j].mod) })
	type unreadable struct{ File, Error string }
	out := struct {
		Total      int            `json:"total"`
		Listed     int            `json:"listed"`
		Records    []agent.Record `json:"records"`
		Unreadable []unreadable   `json:"unreadable,omitempty"`
	}{Total: len(files), Records: []agent.Record{}}
	for _, f := range files[:min(len(files), b.o.MaxEntries)] {
		fd, err := readFile(b.state, path.Join(rel, f.name), 1<<20)
		var r agent.Record
		if err == nil {
			err = json.Unmarshal(fd.data, &r)
		}
		if err != nil {
			out.Unreadable = append(out.Unreadable, unreadable{f.name, err.Error()})
			continue
		}
		out.Records = append(out.Records, r)
	}
	out.Listed = len(out.Records)
	sort.SliceStable(out.Records, func(i, j int) bool { return out.Records[i].StartedAt.Before(out.Records[j].StartedAt) })
	return b.addJSON("agent/actions.json", src, out)
}

// outboxEntry is an outbox file as listed in the bundle.
type outboxEntry struct {
	Seq uint64 `json:"seq"`
	agent.OutboxEntry
	Error string `json:"error,omitempty"`
}

func (b *bundle) collectOutbox(box string) error {
	rel := "agent/outbox/" + box
	src := filepath.Join(b.o.StateDir, rel)
	entries, err := readDir(b.state, rel)
	if err != nil {
		b.skip(src, err.Error())
		return nil
	}
	var seqs []uint64
	for _, e := range entries {
		if m := seqFile.FindStringSubmatch(e.Name()); m != nil {
			if n, err := strconv.ParseUint(m[1], 10, 64); err == nil {
				seqs = append(seqs, n)
			}
		}
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	out := struct {
		Pending int `json:"pending"`
		// Dropped is the persisted count of entries dropped while full.
		Dropped   string        `json:"dropped"`
		OldestSeq uint64        `json:"oldestSeq,omitempty"`
		NewestSeq uint64        `json:"newestSeq,omitempty"`
		Omitted   int           `json:"omitted,omitempty"`
		Entries   []outboxEntry `json:"entries"`
	}{Pending: len(seqs), Dropped: "0", Entries: []outboxEntry{}}
	if _, err := b.state.Lstat(path.Join(rel, "dropped")); err == nil {
		out.Dropped = b.readCounter(path.Join(rel, "dropped"))
	}
	if len(seqs) > 0 {
		out.OldestSeq, out.NewestSeq = seqs[0], seqs[len(seqs)-1]
	}
	// The oldest entries say why delivery is stuck, the newest what just
	// happened: keep both ends when there are too many.
	if len(seqs) > b.o.MaxEntries {
		half := b.o.MaxEntries / 2
		out.Omitted = len(seqs) - b.o.MaxEntries
		seqs = append(seqs[:half:half], seqs[len(seqs)-(b.o.MaxEntries-half):]...)
	}
	for _, seq := range seqs {
		e := outboxEntry{Seq: seq}
		fd, err := readFile(b.state, path.Join(rel, fmt.Sprintf("%016d.json", seq)), 1<<20)
		if errors.Is(err, errNotPresent) {
			continue // delivered while the bundle was collected
		}
		if err == nil {
			err = json.Unmarshal(fd.data, &e.OutboxEntry)
		}
		if err != nil {
			e.Error = err.Error()
		}
		out.Entries = append(out.Entries, e)
	}
	return b.addJSON("agent/outbox-"+box+".json", src, out)
}

// readCounter reads a file holding one decimal number; anything else is
// reported by size only, never quoted.
func (b *bundle) readCounter(rel string) string {
	fd, err := readFile(b.state, rel, 64)
	if err != nil {
		return "unknown: " + err.Error()
	}
	v := strings.TrimSpace(string(fd.data))
	if _, err := strconv.ParseInt(v, 10, 64); err != nil || fd.truncated {
		return fmt.Sprintf("unknown: not a number (%d bytes)", fd.size)
	}
	return v
}

func (b *bundle) collectSeqs() error {
	rel := "agent/logseq"
	src := filepath.Join(b.o.StateDir, rel)
	entries, err := readDir(b.state, rel)
	if err != nil {
		b.skip(src, err.Error())
		return nil
	}
	seqs := map[string]string{}
	for _, e := range entries {
		plan, ok := strings.CutSuffix(e.Name(), ".seq")
		if !ok || len(seqs) >= b.o.MaxEntries {
			continue
		}
		seqs[plan] = b.readCounter(path.Join(rel, e.Name()))
	}
	return b.addJSON("agent/log-sequences.json", src, seqs)
}

// collectVMs adds, per VM directory of the Cloud Hypervisor provider, its
// metadata (cloud-init data and URL credentials redacted), the tails of its
// serial console and VMM logs, and what its VMM answers.
func (b *bundle) collectVMs(ctx context.Context) error {
	return b.eachVMDir("hypervisor/vms", "vms", false, func(vrel, out, _ string) error {
		for _, f := range []string{"serial.log", "vmm.log"} {
			if err := b.addFile(b.state, b.o.StateDir, path.Join(vrel, f), path.Join(out, f)); err != nil {
				return err
			}
		}
		return b.collectVMM(ctx, vrel, out)
	})
}

// eachVMDir walks the VM directories under state-relative rel for both
// VM providers: it skips what is not a directory or not a valid VM name
// (both providers accept the same names, DNS labels), adds each VM's
// redacted metadata under bundle path out/<name>, and then calls fn with
// the VM's state-relative path, its bundle path and its host path. When
// absentOK, a missing rel adds nothing, not even a skip entry.
func (b *bundle) eachVMDir(rel, outDir string, absentOK bool, fn func(vrel, out, vmSrc string) error) error {
	if b.state == nil {
		return nil // openRoot said why
	}
	src := filepath.Join(b.o.StateDir, rel)
	entries, err := readDir(b.state, rel)
	if absentOK && errors.Is(err, errNotPresent) {
		return nil
	}
	if err != nil {
		b.skip(src, err.Error())
		return nil
	}
	for _, e := range entries {
		name := e.Name()
		vmSrc := filepath.Join(src, name)
		if !e.IsDir() {
			b.skip(vmSrc, fmt.Sprintf("not a directory (%s); not followed", fileType(e.Type())))
			continue
		}
		if err := cloudhypervisor.ValidName(name); err != nil {
			b.skip(vmSrc, err.Error())
			continue
		}
		vrel, out := path.Join(rel, name), path.Join(outDir, name)
		if err := b.collectMeta(vrel, out); err != nil {
			return err
		}
		if err := fn(vrel, out, vmSrc); err != nil {
			return err
		}
	}
	return nil
}

func (b *bundle) collectMeta(vrel, out string) error {
	src := filepath.Join(b.o.StateDir, vrel, "meta.json")
	fd, err := readFile(b.state, path.Join(vrel, "meta.json"), 1<<20)
	if err != nil {
		b.skip(src, err.Error())
		return nil
	}
	var doc any
	if err := json.Unmarshal(fd.data, &doc); err != nil {
		b.skip(src, fmt.Sprintf("not valid JSON (%v); not included, it may hold cloud-init data", err))
		return nil
	}
	n := redactMeta(doc, func(v string) { b.addSecret([]byte(v)) })
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		b.skip(src, err.Error())
		return nil
	}
	return b.addRedacted(path.Join(out, "meta.json"), src, append(data, '\n'), n)
}

// redactMeta reduces cloud-init documents (user data carries passwords
// and keys) to their size and digest, drops credentials and queries from
// URLs (signed download links), and redacts secret-named fields.
func redactMeta(doc any, found func(string)) int {
	n := 0
	var walk func(v any, inCloudInit bool)
	walk = func(v any, inCloudInit bool) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				s, isStr := e.(string)
				switch {
				case isStr && s != "" && (inCloudInit || secretName(k)):
					sum := sha256.Sum256([]byte(s))
					x[k] = fmt.Sprintf("%s %d bytes, sha256:%s", redacted, len(s), hex.EncodeToString(sum[:]))
					found(s)
					n++
				case isStr:
					if u := sanitizeURL(s, found); u != s {
						x[k] = u
						n++
					}
				default:
					walk(e, inCloudInit || strings.EqualFold(k, "cloudInit"))
				}
			}
		case []any:
			for _, e := range x {
				walk(e, inCloudInit)
			}
		}
	}
	walk(doc, false)
	return n
}

// sanitizeURL drops the user info and the query of an http(s) URL (they
// carry credentials and signatures), passing each dropped part to found;
// any other string is returned as is.
func sanitizeURL(s string, found func(string)) string {
	if !strings.HasPrefix(s, "http://") && !strings.HasPrefix(s, "https://") {
		return s
	}
	u, err := url.Parse(s)
	if err != nil {
		return redacted + " (unparsable URL)"
	}
	if u.User == nil && u.RawQuery == "" && u.Fragment == "" {
		return s
	}
	user := u.User != nil
	if user {
		if pw, ok := u.User.Password(); ok {
			found(pw)
		}
		found(u.User.String())
		u.User = nil
	}
	if u.RawQuery != "" {
		found(u.RawQuery)
		u.RawQuery = redacted
	}
	u.Fragment = ""
	out := u.String()
	if user {
		out = strings.Replace(out, "://", "://"+redacted+"@", 1)
	}
	return out
}

// collectVMM records the VMM's pid file, whether that process lives, and
// what its API socket answers (vmm.ping, vm.info).
func (b *bundle) collectVMM(ctx context.Context, vrel, out string) error {
	st := map[string]any{}
	if fd, err := readFile(b.state, path.Join(vrel, "vmm.pid"), 64); err == nil {
		pid, perr := strconv.Atoi(strings.TrimSpace(string(fd.data)))
		if perr != nil || pid <= 0 {
			st["pid"] = "unparsable: " + strings.TrimSpace(string(fd.data))
		} else {
			st["pid"] = pid
			kerr := syscall.Kill(pid, 0)
			st["pidAlive"] = kerr == nil || errors.Is(kerr, syscall.EPERM)
		}
	} else {
		st["pid"] = err.Error()
	}
	sock := path.Join(vrel, "api.sock")
	fi, err := b.state.Lstat(sock)
	switch {
	case err != nil:
		st["socket"] = "absent"
	case fi.Mode()&fs.ModeSocket == 0:
		st["socket"] = "not a socket (" + fileType(fi.Mode()) + "); not used"
	default:
		st["socket"] = "present"
		c := cloudhypervisor.NewClient(filepath.Join(b.state.Name(), sock))
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		ping, err := c.Ping(pctx)
		cancel()
		if err != nil {
			st["ping"] = map[string]string{"error": err.Error()}
			break
		}
		st["ping"] = ping
		ictx, cancel := context.WithTimeout(ctx, 3*time.Second)
		info, err := c.Info(ictx)
		cancel()
		if err != nil {
			st["info"] = map[string]string{"error": err.Error()}
		} else {
			st["info"] = info
		}
	}
	return b.addJSON(path.Join(out, "vmm.json"), filepath.Join(b.o.StateDir, vrel)+" (VMM)", st)
}

// collectNetBird adds `netbird status --json` when netbird is on PATH.
func (b *bundle) collectNetBird(ctx context.Context) error {
	const src = "netbird status --json"
	bin := b.o.NetBird
	if bin == "" {
		bin = "netbird"
	}
	p, err := exec.LookPath(bin)
	if err != nil {
		b.skip(src, "netbird not on PATH: "+err.Error())
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, p, "status", "--json")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	if !json.Valid(stdout.Bytes()) {
		msg := strings.TrimSpace(stderr.String() + " " + stdout.String())
		if len(msg) > 500 {
			msg = msg[:500]
		}
		b.skip(src, fmt.Sprintf("%s: exit %v, no JSON: %s", p, runErr, msg))
		return nil
	}
	return b.add("netbird/status.json", stdout.Bytes(), Item{Source: p + " status --json"})
}

// collectJournal adds the tail of the agent unit's journal: the agent's
// own log says why requests and actions fail.
func (b *bundle) collectJournal(ctx context.Context) error {
	if b.o.JournalUnit == "" {
		return nil
	}
	bin := b.o.Journalctl
	if bin == "" {
		bin = "journalctl"
	}
	src := "journalctl -u " + b.o.JournalUnit
	p, err := exec.LookPath(bin)
	if err != nil {
		b.skip(src, "journalctl not on PATH: "+err.Error())
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, p, "--unit", b.o.JournalUnit, "--no-pager", "--output", "short-iso-precise", "--lines", "20000")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 500 {
			msg = msg[:500]
		}
		b.skip(src, fmt.Sprintf("%s: %v: %s", p, err, msg))
		return nil
	}
	data, n := redact(stdout.Bytes(), b.secrets)
	data, cut := tail(data, b.o.MaxFileBytes)
	it := Item{Source: src, Redactions: n, Truncated: cut}
	if cut {
		it.SourceBytes = int64(stdout.Len())
	}
	return b.add("journal.log", data, it)
}
