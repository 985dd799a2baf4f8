// Package qemu is the agent's QEMU provider: one `qemu-system-<arch>`
// process per VM, driven over QMP on a unix socket. Every host path is
// derived from validated names under the state dir:
//
//	<state>/images/<sha256>            downloaded, verified images (shared cache)
//	<state>/vms/<name>/meta.json       marks the VM as n-kudo-managed (spec, hash, size)
//	<state>/vms/<name>/qmp.sock        the process's QMP socket
//	<state>/vms/<name>/qemu.pid        its pid (written by QEMU itself)
//	<state>/vms/<name>/root.qcow2      copy-on-write overlay on the cached base image
//	<state>/vms/<name>/disk-<d>.qcow2  data disks, created at their size
//	<state>/vms/<name>/cidata.img      cloud-init NoCloud seed (FAT, label CIDATA)
//	<state>/vms/<name>/serial.log      guest serial console
//	<state>/vms/<name>/qemu.log        QEMU's own output
//
// Unlike Cloud Hypervisor there is no VMM without a guest: a VM is stopped
// exactly when no QEMU process runs for it, so a guest that powers off
// from inside, or a killed QEMU, shows up as a stopped VM. QEMU processes
// run in their own session and outlive the agent; a restarted agent finds
// them by their pid files and sockets (and, for a process killed before it
// wrote its pid file, by its command line) and never launches a second one.
package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"filippo.io/age"

	"github.com/nkudo/nkudo/agent"
	"github.com/nkudo/nkudo/agent/internal/atomicfile"
	"github.com/nkudo/nkudo/agent/providers/internal/imagecache"
	"github.com/nkudo/nkudo/agent/providers/internal/seed"
	"github.com/nkudo/nkudo/agent/providers/internal/tap"
	"github.com/nkudo/nkudo/model"
)

// Options configure a Provider. Only StateDir is required.
type Options struct {
	StateDir string
	// Binary is the QEMU system emulator; empty means qemu-system-<arch>
	// of this host from PATH.
	Binary string
	// Img is qemu-img; empty means "qemu-img" from PATH.
	Img string
	// Accel is kvm or tcg (resolve auto with ResolveAccel first); empty means tcg.
	Accel string
	// Machine is the machine type; empty means q35 on x86 (ACPI CPU and
	// memory hotplug) and virt elsewhere.
	Machine string
	Logger  *slog.Logger
	// DisableNetworking skips creating TAPs and bridges with netlink; the
	// NICs are then attached to isolated user-mode backends. For tests and
	// unprivileged runs.
	DisableNetworking bool
	// StopTimeout is how long Stop waits for the guest to obey the ACPI
	// power button before it quits QEMU; zero means 30s.
	StopTimeout time.Duration
	// StartTimeout bounds waiting for a launched QEMU to answer QMP; zero means 30s.
	StartTimeout time.Duration
	// HTTPClient downloads images; nil means a client with no overall
	// timeout (the action's context bounds it).
	HTTPClient *http.Client
	// ControlPlane and ControlPlaneHTTP route image URLs on the control
	// plane's origin (pushed images) through the agent's mTLS client (see
	// imagecache.Cache). Zero: every URL goes through HTTPClient.
	ControlPlane     string
	ControlPlaneHTTP *http.Client
	// SiteKey decrypts user-data encrypted to the site (nil: such
	// user-data fails the action).
	SiteKey *age.X25519Identity
}

// Provider implements agent.Provider for QEMU.
type Provider struct {
	opts   Options
	log    *slog.Logger
	images *imagecache.Cache
	// opMu serialises mutating operations; List runs beside them.
	opMu sync.Mutex
	// qmpMu serialises QMP sessions: QEMU serves one client at a time.
	qmpMu sync.Mutex
	mu    sync.Mutex
	procs map[string]*proc
	// version caches `--version` per binary file (facts ask every heartbeat).
	version struct {
		sync.Mutex
		path, version string
		size          int64
		modTime       time.Time
	}
}

type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

var _ agent.Provider = (*Provider)(nil)

// DefaultBinary is the system emulator of this host's architecture.
func DefaultBinary() string {
	switch runtime.GOARCH {
	case "amd64":
		return "qemu-system-x86_64"
	case "arm64":
		return "qemu-system-aarch64"
	}
	return "qemu-system-" + runtime.GOARCH
}

// New checks the options and prepares the state dir.
func New(opts Options) (*Provider, error) {
	if opts.StateDir == "" {
		return nil, errors.New("qemu: state dir is required")
	}
	abs, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return nil, fmt.Errorf("qemu: state dir: %w", err)
	}
	opts.StateDir = abs
	if opts.Binary == "" {
		opts.Binary = DefaultBinary()
	}
	if opts.Img == "" {
		opts.Img = "qemu-img"
	}
	switch opts.Accel {
	case "":
		opts.Accel = AccelTCG
	case AccelKVM, AccelTCG:
	default:
		return nil, fmt.Errorf("qemu: accel %q: want kvm or tcg (resolve auto with ResolveAccel)", opts.Accel)
	}
	if opts.Machine == "" {
		opts.Machine = DefaultMachine()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.StopTimeout == 0 {
		opts.StopTimeout = 30 * time.Second
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 30 * time.Second
	}
	for _, d := range []string{"vms", "images"} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o750); err != nil {
			return nil, fmt.Errorf("qemu: %w", err)
		}
	}
	return &Provider{
		opts: opts, log: opts.Logger.With("component", "qemu"), procs: map[string]*proc{},
		images: &imagecache.Cache{Dir: filepath.Join(abs, "images"), HTTP: opts.HTTPClient,
			ControlPlane: opts.ControlPlane, ControlPlaneHTTP: opts.ControlPlaneHTTP},
	}, nil
}

// Name is the hypervisor's name in host facts.
func (p *Provider) Name() string { return "qemu" }

// Accel is the accelerator the provider launches VMs with.
func (p *Provider) Accel() string { return p.opts.Accel }

// Reattach finds the QEMU processes still running from an earlier agent
// and logs them; every later operation reaches them through their sockets.
func (p *Provider) Reattach(ctx context.Context) ([]model.ObservedVM, error) {
	vms, err := p.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, vm := range vms {
		if vm.State == model.VMRunning {
			p.log.Info("re-attached to running vm", "vm", vm.Name, "managed", vm.Managed, "pid", p.pid(vm.Name))
		}
	}
	return vms, nil
}

var versionRe = regexp.MustCompile(`version ([0-9][0-9A-Za-z.+~-]*)`)

// Version runs `<binary> --version` and returns e.g. "7.2.22".
func (p *Provider) Version(ctx context.Context) (path, version string, err error) {
	path, err = exec.LookPath(p.opts.Binary)
	if err != nil {
		return "", "", fmt.Errorf("find %s: %w", p.opts.Binary, err)
	}
	fi, statErr := os.Stat(path)
	c := &p.version
	c.Lock()
	defer c.Unlock()
	if statErr == nil && c.path == path && c.size == fi.Size() && c.modTime.Equal(fi.ModTime()) {
		return path, c.version, nil
	}
	vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(vctx, path, "--version").Output()
	if err != nil {
		return path, "", fmt.Errorf("%s --version: %w", path, err)
	}
	m := versionRe.FindSubmatch(out)
	if m == nil {
		return path, "", fmt.Errorf("%s --version: no version in %.80q", path, out)
	}
	version = string(m[1])
	if statErr == nil {
		c.path, c.size, c.modTime, c.version = path, fi.Size(), fi.ModTime(), version
	}
	return path, version, nil
}

var (
	dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	ifName   = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)
)

// ValidName reports whether name is a DNS label, the only names that are
// turned into host paths.
func ValidName(name string) error {
	if !dnsLabel.MatchString(name) {
		return fmt.Errorf("vm name %q is not a DNS label (lowercase letters, digits and '-', at most 63)", name)
	}
	return nil
}

func validateSpec(spec model.VMSpec) error {
	if spec.CPUs < 1 {
		return fmt.Errorf("spec.cpus: %d, want at least 1", spec.CPUs)
	}
	if spec.MemoryMiB < 64 {
		return fmt.Errorf("spec.memoryMiB: %d, want at least 64", spec.MemoryMiB)
	}
	if spec.Kernel == nil && spec.Firmware == nil {
		return errors.New("spec: needs a kernel or a firmware payload")
	}
	for i, d := range spec.Disks {
		if !dnsLabel.MatchString(d.Name) {
			return fmt.Errorf("spec.disks[%d].name %q is not a DNS label", i, d.Name)
		}
		if d.SizeGiB < 1 {
			return fmt.Errorf("spec.disks[%d].sizeGiB: %d, want at least 1", i, d.SizeGiB)
		}
	}
	for i, n := range spec.Networks {
		if !ifName.MatchString(n.Bridge) || n.Bridge == "." || n.Bridge == ".." {
			return fmt.Errorf("spec.networks[%d].bridge %q is not a valid interface name", i, n.Bridge)
		}
	}
	return nil
}

func (p *Provider) vmDir(name string) string  { return filepath.Join(p.opts.StateDir, "vms", name) }
func (p *Provider) socket(name string) string { return filepath.Join(p.vmDir(name), "qmp.sock") }
func (p *Provider) pidFile(name string) string {
	return filepath.Join(p.vmDir(name), "qemu.pid")
}

// Phases of meta.json: a VM in phase creating is not reported (the create
// is redone), one in phase created exists.
const (
	phaseCreating = "creating"
	phaseCreated  = "created"
)

type meta struct {
	Name      string       `json:"name"`
	Phase     string       `json:"phase"`
	Spec      model.VMSpec `json:"spec"`
	SpecHash  string       `json:"specHash"`
	CPUs      int          `json:"cpus"`
	MemoryMiB int          `json:"memoryMiB"`
	Artifacts artifacts    `json:"artifacts"`
}

func (p *Provider) readMeta(name string) (meta, error) {
	var m meta
	b, err := os.ReadFile(filepath.Join(p.vmDir(name), "meta.json"))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("vm %s: corrupt meta.json: %w", name, err)
	}
	return m, nil
}

func (p *Provider) writeMeta(m meta) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode meta: %w", err)
	}
	return atomicfile.Write(filepath.Join(p.vmDir(m.Name), "meta.json"), b, 0o640)
}

// pid is the pid of the QEMU process running VM name, or 0. It trusts the
// pid file only when that process's command line names the VM's QMP
// socket (so a reused pid is never taken for QEMU), and otherwise looks
// through /proc: a QEMU launched by an agent killed at once may not have
// written its pid file yet.
func (p *Provider) pid(name string) int {
	needle := []byte("unix:" + p.socket(name) + ",")
	ours := func(pid int) bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		return err == nil && bytes.Contains(b, needle)
	}
	if b, err := os.ReadFile(p.pidFile(name)); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 && ours(pid) {
			return pid
		}
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && ours(pid) {
			return pid
		}
	}
	return 0
}

// qmp runs fn in one QMP session with VM name's QEMU.
func (p *Provider) qmp(ctx context.Context, name string, fn func(*Monitor) error) error {
	p.qmpMu.Lock()
	defer p.qmpMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m, err := Dial(ctx, p.socket(name))
	if err != nil {
		return err
	}
	defer m.Close()
	return fn(m)
}

// status asks a running QEMU for its run state ("" when none answers).
func (p *Provider) status(ctx context.Context, name string) (string, error) {
	var st statusInfo
	err := p.qmp(ctx, name, func(m *Monitor) error { return m.Run(ctx, "query-status", nil, &st) })
	return st.Status, err
}

// managed loads the metadata of an existing n-kudo VM.
func (p *Provider) managed(name string) (meta, error) {
	if err := ValidName(name); err != nil {
		return meta{}, err
	}
	m, err := p.readMeta(name)
	if errors.Is(err, os.ErrNotExist) {
		if p.pid(name) > 0 {
			return meta{}, fmt.Errorf("vm %s: %w", name, agent.ErrUnmanaged)
		}
		return meta{}, fmt.Errorf("vm %s does not exist", name)
	}
	if err != nil {
		return meta{}, err
	}
	if m.Phase != phaseCreated {
		return meta{}, fmt.Errorf("vm %s does not exist (its create did not finish)", name)
	}
	return m, nil
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	b = bytes.TrimSpace(b)
	if len(b) > 400 {
		b = b[len(b)-400:]
	}
	if len(b) == 0 {
		return "(no output)"
	}
	return string(b)
}

// Create prepares the overlay, data disks and seed and records the VM; it
// launches nothing (Start does). A VM that already exists with the same
// spec hash is left as is; one with another spec is an error.
func (p *Provider) Create(ctx context.Context, name string, spec model.VMSpec) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if err := validateSpec(spec); err != nil {
		return fmt.Errorf("vm %s: %w", name, err)
	}
	if l := len(p.socket(name)); l > 107 {
		return fmt.Errorf("vm %s: socket path is %d bytes, over the unix socket limit of 107: use a shorter state dir", name, l)
	}
	p.opMu.Lock()
	defer p.opMu.Unlock()
	hash := spec.Hash()
	old, err := p.readMeta(name)
	switch {
	case err == nil && old.Phase == phaseCreated && old.SpecHash == hash:
		agent.Progress(ctx, "vm already exists with this spec")
		return nil
	case err == nil && old.Phase == phaseCreated:
		return fmt.Errorf("vm %s already exists with spec %.12s, not %.12s: delete it first", name, old.SpecHash, hash)
	case errors.Is(err, os.ErrNotExist):
		if p.pid(name) > 0 {
			return fmt.Errorf("vm %s: %w", name, agent.ErrUnmanaged)
		}
	case err != nil:
		return err
	}
	if pid := p.pid(name); pid > 0 {
		// Only an interrupted create of ours gets here (phase creating), and
		// it never launches QEMU; refuse rather than rebuild disks under a guest.
		return fmt.Errorf("vm %s: a half-created VM has a running QEMU (pid %d)", name, pid)
	}
	dir := p.vmDir(name)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("vm %s: %w", name, err)
	}
	m := meta{Name: name, Phase: phaseCreating, Spec: spec, SpecHash: hash, CPUs: spec.CPUs, MemoryMiB: spec.MemoryMiB}
	if err := p.writeMeta(m); err != nil {
		return err
	}
	a, err := p.prepare(ctx, name, spec)
	if err != nil {
		// A crash skips this; the next create then redoes everything.
		if rerr := os.RemoveAll(dir); rerr != nil {
			p.log.Warn("cannot remove the files of a failed create", "vm", name, "err", rerr)
		}
		return fmt.Errorf("vm %s: %w", name, err)
	}
	m.Artifacts, m.Phase = a, phaseCreated
	if err := p.writeMeta(m); err != nil {
		return err
	}
	agent.Progress(ctx, "vm created")
	return nil
}

// prepare fetches payloads and images and builds every file the VM needs.
func (p *Provider) prepare(ctx context.Context, name string, spec model.VMSpec) (artifacts, error) {
	dir := p.vmDir(name)
	a := artifacts{Serial: filepath.Join(dir, "serial.log")}
	fetch := func(what, rawURL, sum string) (string, error) {
		agent.Progress(ctx, "fetching "+what+" "+imagecache.SanitizeURL(rawURL))
		return p.images.Fetch(ctx, rawURL, sum)
	}
	var err error
	if k := spec.Kernel; k != nil {
		if a.Kernel, err = fetch("kernel", k.URL, k.SHA256); err != nil {
			return a, err
		}
		if k.Initramfs != nil {
			if a.Initramfs, err = fetch("initramfs", k.Initramfs.URL, k.Initramfs.SHA256); err != nil {
				return a, err
			}
		}
	}
	if f := spec.Firmware; f != nil {
		if a.Firmware, err = fetch("firmware", f.URL, f.SHA256); err != nil {
			return a, err
		}
	}
	if spec.Image != nil {
		base, err := fetch("image", spec.Image.URL, spec.Image.SHA256)
		if err != nil {
			return a, err
		}
		a.RootDisk = filepath.Join(dir, "root.qcow2")
		format, err := p.imageFormat(ctx, base)
		if err != nil {
			return a, err
		}
		// The overlay only holds the guest's writes; the cached base stays shared and untouched.
		if err := p.qemuImg(ctx, "create", "-q", "-f", "qcow2", "-F", format, "-b", base, a.RootDisk); err != nil {
			return a, err
		}
	}
	for _, d := range spec.Disks {
		path := filepath.Join(dir, "disk-"+d.Name+".qcow2")
		if err := p.qemuImg(ctx, "create", "-q", "-f", "qcow2", path, fmt.Sprintf("%dG", d.SizeGiB)); err != nil {
			return a, err
		}
		a.DataDisks = append(a.DataDisks, path)
	}
	a.Seed = filepath.Join(dir, "cidata.img")
	b, err := seed.NoCloud(name, spec, p.opts.SiteKey)
	if err != nil {
		return a, err
	}
	if err := atomicfile.Write(a.Seed, b, 0o640); err != nil {
		return a, err
	}
	agent.Progress(ctx, fmt.Sprintf("prepared %d disk(s) and the cloud-init seed", len(spec.Disks)+1))
	return a, nil
}

// imageFormat asks qemu-img what a base image is (raw or qcow2), so the
// overlay names its backing format instead of letting QEMU guess.
func (p *Provider) imageFormat(ctx context.Context, path string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, p.opts.Img, "info", "--output=json", path).Output()
	if err != nil {
		return "", fmt.Errorf("qemu-img info %s: %w%s", path, err, stderrOf(err))
	}
	var info struct {
		Format string `json:"format"`
	}
	if err := json.Unmarshal(out, &info); err != nil || info.Format == "" {
		return "", fmt.Errorf("qemu-img info %s: no format in %.80q", path, out)
	}
	return info.Format, nil
}

func (p *Provider) qemuImg(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, p.opts.Img, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("qemu-img %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return ": " + string(bytes.TrimSpace(ee.Stderr))
	}
	return ""
}

// Start boots the VM: it launches QEMU with the VM's current size unless
// a QEMU already runs for it, in which case it only resumes a paused one.
func (p *Provider) Start(ctx context.Context, name string) error {
	p.opMu.Lock()
	defer p.opMu.Unlock()
	m, err := p.managed(name)
	if err != nil {
		return err
	}
	if pid := p.pid(name); pid > 0 {
		st, err := p.waitQMP(ctx, name, pid, "")
		if err != nil {
			return err
		}
		if st == "paused" {
			if err := p.qmp(ctx, name, func(mon *Monitor) error { return mon.Run(ctx, "cont", nil, nil) }); err != nil {
				return fmt.Errorf("vm %s: %w", name, err)
			}
			agent.Progress(ctx, "vm resumed")
			return nil
		}
		agent.Progress(ctx, fmt.Sprintf("vm already running (qemu pid %d)", pid))
		return nil
	}
	if !p.opts.DisableNetworking {
		for i, n := range m.Spec.Networks {
			if err := tap.Ensure(tap.Name(name, i), n.Bridge); err != nil {
				return fmt.Errorf("vm %s: %w", name, err)
			}
		}
	}
	return p.launch(ctx, m)
}

// launch starts QEMU for m and waits until its QMP socket answers.
func (p *Provider) launch(ctx context.Context, m meta) error {
	name := m.Name
	dir := p.vmDir(name)
	for _, f := range []string{p.socket(name), p.pidFile(name)} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("vm %s: remove stale %s: %w", name, f, err)
		}
	}
	logPath := filepath.Join(dir, "qemu.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("vm %s: qemu log: %w", name, err)
	}
	l := launch{Name: name, Machine: p.opts.Machine, Accel: p.opts.Accel, QMP: p.socket(name), PIDFile: p.pidFile(name),
		CPUs: m.CPUs, MemoryMiB: m.MemoryMiB, Spec: m.Spec, Artifacts: m.Artifacts, UserNet: p.opts.DisableNetworking}
	// Not CommandContext: QEMU must outlive the action and the agent.
	cmd := exec.Command(p.opts.Binary, l.args()...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("vm %s: launch %s: %w", name, p.opts.Binary, err)
	}
	pr := &proc{cmd: cmd, done: make(chan struct{})}
	p.mu.Lock()
	p.procs[name] = pr
	p.mu.Unlock()
	pid := cmd.Process.Pid
	p.log.Info("launched qemu", "vm", name, "pid", pid, "accel", p.opts.Accel, "cpus", m.CPUs, "memoryMiB", m.MemoryMiB)
	agent.Progress(ctx, fmt.Sprintf("launched %s (pid %d, %s)", filepath.Base(p.opts.Binary), pid, p.opts.Accel))
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.log.Info("qemu exited", "vm", name, "pid", pid, "status", fmt.Sprint(err))
		p.mu.Lock()
		if p.procs[name] == pr {
			delete(p.procs, name)
		}
		p.mu.Unlock()
		close(pr.done)
	}()
	st, err := p.waitQMP(ctx, name, pid, logPath)
	if err != nil {
		return err
	}
	agent.Progress(ctx, "vm booted (qemu "+st+")")
	return nil
}

// waitQMP waits until QEMU pid answers on its QMP socket and returns its
// run state. A QEMU that exits meanwhile fails with the tail of logPath.
func (p *Provider) waitQMP(ctx context.Context, name string, pid int, logPath string) (string, error) {
	deadline := time.Now().Add(p.opts.StartTimeout)
	for {
		st, err := p.status(ctx, name)
		if err == nil {
			return st, nil
		}
		if !processAlive(pid) {
			if logPath == "" {
				logPath = filepath.Join(p.vmDir(name), "qemu.log")
			}
			return "", fmt.Errorf("vm %s: qemu exited at start: %s", name, tail(logPath))
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("vm %s: qemu (pid %d) did not answer QMP within %s: %w", name, pid, p.opts.StartTimeout, err)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("vm %s: wait for qemu: %w", name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// processAlive reports whether pid runs and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

// Stop presses the ACPI power button (system_powerdown) and waits for the
// guest to power off, which ends QEMU; after StopTimeout it quits QEMU,
// and kills it if even that is not obeyed.
func (p *Provider) Stop(ctx context.Context, name string) error {
	p.opMu.Lock()
	defer p.opMu.Unlock()
	if _, err := p.managed(name); err != nil {
		return err
	}
	pid := p.pid(name)
	if pid == 0 {
		agent.Progress(ctx, "vm already stopped (no qemu running)")
		return nil
	}
	return p.powerOff(ctx, name, pid)
}

// powerOff presses the power button, waits StopTimeout for the guest to
// obey, then terminates QEMU.
func (p *Provider) powerOff(ctx context.Context, name string, pid int) error {
	err := p.qmp(ctx, name, func(m *Monitor) error { return m.Run(ctx, "system_powerdown", nil, nil) })
	if err == nil {
		agent.Progress(ctx, "pressed the ACPI power button")
		if p.waitGone(ctx, pid, p.opts.StopTimeout) {
			agent.Progress(ctx, "guest powered off")
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("vm %s: wait for power-off: %w", name, ctx.Err())
		}
		agent.Progress(ctx, fmt.Sprintf("guest ignored the power button for %s: quitting qemu", p.opts.StopTimeout))
		p.log.Warn("guest ignored the power button; hard stop", "vm", name)
	}
	return p.terminate(ctx, name, pid)
}

// terminate ends QEMU pid: quit over QMP, then SIGKILL.
func (p *Provider) terminate(ctx context.Context, name string, pid int) error {
	if err := p.qmp(ctx, name, func(m *Monitor) error { return m.Run(ctx, "quit", nil, nil) }); err != nil {
		p.log.Warn("qmp quit failed; killing qemu", "vm", name, "pid", pid, "err", err)
	} else if p.waitGone(ctx, pid, 10*time.Second) {
		agent.Progress(ctx, "qemu quit")
		return nil
	}
	if processAlive(pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if !p.waitGone(ctx, pid, 10*time.Second) {
		return fmt.Errorf("vm %s: qemu (pid %d) is still running after SIGKILL", name, pid)
	}
	agent.Progress(ctx, "qemu killed")
	return nil
}

// waitGone polls until pid has exited, for at most d.
func (p *Provider) waitGone(ctx context.Context, pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return true
}

// Delete ends the VM's QEMU and removes its TAPs and every file it owns.
// Deleting a VM that does not exist succeeds.
func (p *Provider) Delete(ctx context.Context, name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	p.opMu.Lock()
	defer p.opMu.Unlock()
	dir := p.vmDir(name)
	m, err := p.readMeta(name)
	pid := p.pid(name)
	switch {
	case errors.Is(err, os.ErrNotExist) && pid > 0:
		return fmt.Errorf("vm %s: %w", name, agent.ErrUnmanaged)
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return err
	}
	if pid > 0 {
		if err := p.terminate(ctx, name, pid); err != nil {
			return err
		}
	}
	if !p.opts.DisableNetworking {
		for i := range m.Spec.Networks {
			if err := tap.Remove(tap.Name(name, i)); err != nil {
				return fmt.Errorf("vm %s: %w", name, err)
			}
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("vm %s: remove files: %w", name, err)
	}
	agent.Progress(ctx, "vm files removed")
	return atomicfile.SyncDir(filepath.Dir(dir))
}

// List reports every VM under the state dir: managed ones from their
// metadata and QMP, unmanaged ones (a running QEMU without metadata) from
// QMP alone.
func (p *Provider) List(ctx context.Context) ([]model.ObservedVM, error) {
	entries, err := os.ReadDir(filepath.Join(p.opts.StateDir, "vms"))
	if err != nil {
		return nil, fmt.Errorf("list vms: %w", err)
	}
	out := []model.ObservedVM{}
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || ValidName(name) != nil {
			continue
		}
		m, merr := p.readMeta(name)
		if merr != nil && !errors.Is(merr, os.ErrNotExist) {
			p.log.Warn("skipping vm with unreadable metadata", "vm", name, "err", merr)
			continue
		}
		if merr == nil && m.Phase != phaseCreated {
			continue
		}
		var live liveInfo
		lerr := errors.New("no qemu")
		if p.pid(name) > 0 {
			live, lerr = p.liveInfo(ctx, name)
		}
		running := lerr == nil && (live.Status == "running" || live.Status == "paused")
		if merr != nil { // no metadata: not ours
			if lerr != nil {
				continue
			}
			o := model.ObservedVM{Name: name, State: model.VMStopped, CPUs: live.CPUs, MaxCPUs: live.MaxCPUs,
				MemoryMiB: live.MemoryMiB, MaxMemoryMiB: live.MemoryMiB}
			if running {
				o.State = model.VMRunning
			}
			out = append(out, o)
			continue
		}
		o := model.ObservedVM{
			Name: name, State: model.VMStopped, Managed: true, SpecHash: m.SpecHash,
			CPUs: m.CPUs, MemoryMiB: m.MemoryMiB,
			MaxCPUs: m.Spec.EffectiveMaxCPUs(), MaxMemoryMiB: m.Spec.EffectiveMaxMemoryMiB(),
		}
		if running {
			o.State = model.VMRunning
			o.CPUs, o.MemoryMiB = live.CPUs, live.MemoryMiB
		}
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// liveInfo is what QMP says about a running VM.
type liveInfo struct {
	Status                   string
	CPUs, MaxCPUs, MemoryMiB int
}

func (p *Provider) liveInfo(ctx context.Context, name string) (liveInfo, error) {
	var li liveInfo
	err := p.qmp(ctx, name, func(m *Monitor) error {
		var st statusInfo
		if err := m.Run(ctx, "query-status", nil, &st); err != nil {
			return err
		}
		var cpus []cpuInfo
		if err := m.Run(ctx, "query-cpus-fast", nil, &cpus); err != nil {
			return err
		}
		// A machine without CPU hotplug (microvm, none) answers with an
		// error: its maximum is what it has.
		var slots []hotpluggableCPU
		if err := m.Run(ctx, "query-hotpluggable-cpus", nil, &slots); err != nil && !IsQMPError(err) {
			return err
		}
		var mem memorySummary
		if err := m.Run(ctx, "query-memory-size-summary", nil, &mem); err != nil {
			return err
		}
		li = liveInfo{Status: st.Status, CPUs: len(cpus), MaxCPUs: max(len(slots), len(cpus)),
			MemoryMiB: int((mem.BaseMemory + mem.PluggedMemory) / mib)}
		return nil
	})
	return li, err
}

const mib = 1 << 20

// Shutdown ends every QEMU under the state dir and waits until they are
// gone; VM files are left as they are. An agent does not call it when it
// exits (guests outlive the agent); it is for tests and decommissioning.
func (p *Provider) Shutdown(ctx context.Context) error {
	p.opMu.Lock()
	defer p.opMu.Unlock()
	entries, err := os.ReadDir(filepath.Join(p.opts.StateDir, "vms"))
	if err != nil {
		return fmt.Errorf("list vms: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || ValidName(e.Name()) != nil {
			continue
		}
		if pid := p.pid(e.Name()); pid > 0 {
			if err := p.terminate(ctx, e.Name(), pid); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
