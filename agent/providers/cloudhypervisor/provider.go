// Package cloudhypervisor is the agent's Cloud Hypervisor provider: one
// `cloud-hypervisor --api-socket` process per VM, driven through the v53 REST
// API over its unix socket. Every host path is derived from validated names
// under the state dir:
//
//	<state>/images/<sha256>          downloaded, verified images (shared cache)
//	<state>/vms/<name>/meta.json     marks the VM as n-kudo-managed (spec, hash, size)
//	<state>/vms/<name>/api.sock      the VMM's API socket
//	<state>/vms/<name>/root.raw      copy of the root image
//	<state>/vms/<name>/disk-<d>.raw  sparse data disks
//	<state>/vms/<name>/cidata.img    cloud-init NoCloud seed (FAT, label CIDATA)
//	<state>/vms/<name>/serial.log    guest serial console
//	<state>/vms/<name>/vmm.log       the VMM's own output
//
// A directory under vms/ without meta.json whose socket answers is a VM
// n-kudo did not create: it is reported as unmanaged and never touched.
// VMM processes run in their own session so they outlive agent restarts; the
// provider re-attaches to them through their sockets.
package cloudhypervisor

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
	// Binary is the cloud-hypervisor executable; empty means "cloud-hypervisor" from PATH.
	Binary string
	Logger *slog.Logger
	// DisableNetworking skips creating TAPs and bridges with netlink (the TAP
	// names are still put in the VM config). For tests and unprivileged runs.
	DisableNetworking bool
	// StopTimeout is how long Stop waits for the guest to obey the ACPI power
	// button before a hard vm.shutdown; zero means 30s.
	StopTimeout time.Duration
	// StartTimeout bounds waiting for a launched VMM to answer vmm.ping; zero means 10s.
	StartTimeout time.Duration
	// HTTPClient downloads images; nil means a client with no overall timeout
	// (the action's context bounds it).
	HTTPClient *http.Client
	// ControlPlane and ControlPlaneHTTP route image URLs on the control
	// plane's origin (pushed images) through the agent's mTLS client (see
	// imagecache.Cache). Zero: every URL goes through HTTPClient.
	ControlPlane     string
	ControlPlaneHTTP *http.Client
	// SiteKey decrypts user-data encrypted to the site (nil: such
	// user-data fails the action).
	SiteKey *age.X25519Identity
	// Env is added to the environment of every VMM process.
	Env []string
}

// Provider implements agent.Provider for Cloud Hypervisor.
type Provider struct {
	opts Options
	log  *slog.Logger
	// opMu serialises mutating operations; List runs beside them (it only
	// reads metadata, which is replaced atomically, and asks the VMMs).
	opMu  sync.Mutex
	mu    sync.Mutex
	procs map[string]*proc
	// version caches `--version` per binary file: facts ask on every
	// heartbeat, and the answer only changes when the binary does.
	version versionCache
	images  *imagecache.Cache
}

type versionCache struct {
	mu      sync.Mutex
	path    string
	size    int64
	modTime time.Time
	version string
}

type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

var _ agent.Provider = (*Provider)(nil)

// New checks the options and prepares the state dir.
func New(opts Options) (*Provider, error) {
	if opts.StateDir == "" {
		return nil, errors.New("cloudhypervisor: state dir is required")
	}
	abs, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return nil, fmt.Errorf("cloudhypervisor: state dir: %w", err)
	}
	opts.StateDir = abs
	if opts.Binary == "" {
		opts.Binary = "cloud-hypervisor"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.StopTimeout == 0 {
		opts.StopTimeout = 30 * time.Second
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 10 * time.Second
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{}
	}
	for _, d := range []string{"vms", "images"} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o750); err != nil {
			return nil, fmt.Errorf("cloudhypervisor: %w", err)
		}
	}
	return &Provider{opts: opts, log: opts.Logger.With("component", "cloudhypervisor"), procs: map[string]*proc{},
		images: &imagecache.Cache{Dir: filepath.Join(abs, "images"), HTTP: opts.HTTPClient,
			ControlPlane: opts.ControlPlane, ControlPlaneHTTP: opts.ControlPlaneHTTP}}, nil
}

// Reattach finds the VMMs still running from an earlier agent and logs
// them; every later operation reaches them through their sockets.
func (p *Provider) Reattach(ctx context.Context) ([]model.ObservedVM, error) {
	vms, err := p.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, vm := range vms {
		if vm.State == model.VMRunning {
			p.log.Info("re-attached to running vm", "vm", vm.Name, "managed", vm.Managed)
		}
	}
	return vms, nil
}

// Version runs `cloud-hypervisor --version` and returns e.g. "v53.0".
func (p *Provider) Version(ctx context.Context) (path, version string, err error) {
	path, err = exec.LookPath(p.opts.Binary)
	if err != nil {
		return "", "", fmt.Errorf("find %s: %w", p.opts.Binary, err)
	}
	fi, statErr := os.Stat(path)
	c := &p.version
	c.mu.Lock()
	defer c.mu.Unlock()
	if statErr == nil && c.path == path && c.size == fi.Size() && c.modTime.Equal(fi.ModTime()) {
		return path, c.version, nil
	}
	version, err = runVersion(ctx, path, p.opts.Env)
	if err == nil && statErr == nil {
		c.path, c.size, c.modTime, c.version = path, fi.Size(), fi.ModTime(), version
	}
	return path, version, err
}

// runVersion runs path --version with env added, as the VMMs get it.
func runVersion(ctx context.Context, path string, env []string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "--version")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", path, err)
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		return "", fmt.Errorf("%s --version: empty output", path)
	}
	return f[len(f)-1], nil
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

func (p *Provider) vmDir(name string) string { return filepath.Join(p.opts.StateDir, "vms", name) }
func (p *Provider) socket(name string) string {
	return filepath.Join(p.vmDir(name), "api.sock")
}

// Phases of meta.json: a VM in phase creating is not reported (the create is
// redone), one in phase created exists.
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

// alive pings the VM's VMM; ok is false when nothing answers.
func (p *Provider) alive(ctx context.Context, name string) (*Client, PingResponse, bool) {
	c := NewClient(p.socket(name))
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	ping, err := c.Ping(ctx)
	return c, ping, err == nil
}

// managed loads the metadata of an existing n-kudo VM.
func (p *Provider) managed(ctx context.Context, name string) (meta, error) {
	if err := ValidName(name); err != nil {
		return meta{}, err
	}
	m, err := p.readMeta(name)
	if errors.Is(err, os.ErrNotExist) {
		if _, _, ok := p.alive(ctx, name); ok {
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

// ensureVMM returns a client for the VM's VMM, launching one if none answers.
func (p *Provider) ensureVMM(ctx context.Context, name string) (*Client, error) {
	if c, _, ok := p.alive(ctx, name); ok {
		return c, nil
	}
	sock := p.socket(name)
	// v52 and earlier fail with EADDRINUSE on a socket left by a dead VMM.
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket %s: %w", sock, err)
	}
	logPath := filepath.Join(p.vmDir(name), "vmm.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("vmm log: %w", err)
	}
	// Not CommandContext: the VMM must outlive the action and the agent.
	cmd := exec.Command(p.opts.Binary, "--api-socket", "path="+sock, "--no-shutdown")
	cmd.Env = append(os.Environ(), p.opts.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("launch %s: %w", p.opts.Binary, err)
	}
	pr := &proc{cmd: cmd, done: make(chan struct{})}
	p.mu.Lock()
	p.procs[name] = pr
	p.mu.Unlock()
	_ = os.WriteFile(filepath.Join(p.vmDir(name), "vmm.pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o640)
	p.log.Info("launched vmm", "vm", name, "pid", cmd.Process.Pid)
	agent.Progress(ctx, fmt.Sprintf("launched cloud-hypervisor (pid %d)", cmd.Process.Pid))
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.log.Info("vmm exited", "vm", name, "pid", cmd.Process.Pid, "status", fmt.Sprint(err))
		p.mu.Lock()
		if p.procs[name] == pr {
			delete(p.procs, name)
		}
		p.mu.Unlock()
		close(pr.done)
	}()
	deadline := time.Now().Add(p.opts.StartTimeout)
	for {
		if c, _, ok := p.alive(ctx, name); ok {
			return c, nil
		}
		select {
		case <-pr.done:
			return nil, fmt.Errorf("cloud-hypervisor for vm %s exited at start: %s", name, tail(logPath))
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for cloud-hypervisor of vm %s: %w", name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("cloud-hypervisor for vm %s did not answer vmm.ping within %s: %s", name, p.opts.StartTimeout, tail(logPath))
		}
	}
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

// Create prepares disks, seed and config and registers the config with a
// VMM (vm.create) without booting. A VM that already exists with the same
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
		if _, _, ok := p.alive(ctx, name); ok {
			return fmt.Errorf("vm %s: %w", name, agent.ErrUnmanaged)
		}
	case err != nil:
		return err
	}
	dir := p.vmDir(name)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("vm %s: %w", name, err)
	}
	m := meta{Name: name, Phase: phaseCreating, Spec: spec, SpecHash: hash, CPUs: spec.CPUs, MemoryMiB: spec.MemoryMiB}
	if err := p.writeMeta(m); err != nil {
		return err
	}
	if err := p.create(ctx, name, spec, old, m); err != nil {
		p.discard(ctx, name)
		return err
	}
	return nil
}

// discard removes what a failed create left: its VMM and its files. A
// crash skips this; the next create then redoes everything.
func (p *Provider) discard(ctx context.Context, name string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	if c, ping, ok := p.alive(ctx, name); ok {
		_ = c.Action(ctx, "vm.delete")
		if c.Action(ctx, "vmm.shutdown") == nil {
			_ = p.waitExit(ctx, name, ping.PID)
		}
	}
	if err := os.RemoveAll(p.vmDir(name)); err != nil {
		p.log.Warn("cannot remove the files of a failed create", "vm", name, "err", err)
	}
}

func (p *Provider) create(ctx context.Context, name string, spec model.VMSpec, old, m meta) error {
	hash := m.SpecHash
	a, err := p.prepare(ctx, name, spec)
	if err != nil {
		return fmt.Errorf("vm %s: %w", name, err)
	}
	m.Artifacts = a
	if err := p.writeMeta(m); err != nil {
		return err
	}
	c, err := p.ensureVMM(ctx, name)
	if err != nil {
		return err
	}
	info, err := c.Info(ctx)
	switch {
	case IsNotCreated(err):
		if err := c.Create(ctx, buildConfig(name, spec, m.CPUs, m.MemoryMiB, a)); err != nil {
			return fmt.Errorf("vm %s: %w", name, err)
		}
		agent.Progress(ctx, "vm.create done")
	case err != nil:
		return fmt.Errorf("vm %s: %w", name, err)
	case info.State == "Running" || info.State == "Paused":
		return fmt.Errorf("vm %s: a half-created VM is already running (state %s)", name, info.State)
	case old.SpecHash != hash:
		// A config from an interrupted create of another spec: replace it.
		if err := c.Action(ctx, "vm.delete"); err != nil {
			return fmt.Errorf("vm %s: %w", name, err)
		}
		if err := c.Create(ctx, buildConfig(name, spec, m.CPUs, m.MemoryMiB, a)); err != nil {
			return fmt.Errorf("vm %s: %w", name, err)
		}
	default:
		agent.Progress(ctx, "vm config already registered by an interrupted create")
	}
	m.Phase = phaseCreated
	return p.writeMeta(m)
}

// prepare fetches payloads and images and builds every file the VM needs.
func (p *Provider) prepare(ctx context.Context, name string, spec model.VMSpec) (artifacts, error) {
	dir := p.vmDir(name)
	a := artifacts{Serial: filepath.Join(dir, "serial.log")}
	var err error
	if spec.Kernel != nil {
		agent.Progress(ctx, "fetching kernel "+imagecache.SanitizeURL(spec.Kernel.URL))
		if a.Kernel, err = p.images.Fetch(ctx, spec.Kernel.URL, spec.Kernel.SHA256); err != nil {
			return a, err
		}
		if ird := spec.Kernel.Initramfs; ird != nil {
			agent.Progress(ctx, "fetching initramfs "+imagecache.SanitizeURL(ird.URL))
			if a.Initramfs, err = p.images.Fetch(ctx, ird.URL, ird.SHA256); err != nil {
				return a, err
			}
		}
	}
	if spec.Firmware != nil {
		agent.Progress(ctx, "fetching firmware "+imagecache.SanitizeURL(spec.Firmware.URL))
		if a.Firmware, err = p.images.Fetch(ctx, spec.Firmware.URL, spec.Firmware.SHA256); err != nil {
			return a, err
		}
	}
	if spec.Image != nil {
		agent.Progress(ctx, "fetching image "+imagecache.SanitizeURL(spec.Image.URL))
		img, err := p.images.Fetch(ctx, spec.Image.URL, spec.Image.SHA256)
		if err != nil {
			return a, err
		}
		a.RootDisk = filepath.Join(dir, "root.raw")
		if err := imagecache.CopyFile(img, a.RootDisk); err != nil {
			return a, err
		}
	}
	for _, d := range spec.Disks {
		path := filepath.Join(dir, "disk-"+d.Name+".raw")
		if err := sparseFile(path, int64(d.SizeGiB)<<30); err != nil {
			return a, err
		}
		a.DataDisks = append(a.DataDisks, path)
	}
	a.Seed = filepath.Join(dir, "cidata.img")
	if err := p.writeSeed(name, spec, a.Seed); err != nil {
		return a, err
	}
	agent.Progress(ctx, fmt.Sprintf("prepared %d disk(s) and the cloud-init seed", len(spec.Disks)+1))
	return a, nil
}

// sparseFile creates an empty sparse file of size bytes (replacing any
// leftover from an interrupted create).
func sparseFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create disk %s: %w", path, err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fmt.Errorf("size disk %s: %w", path, err)
	}
	return f.Close()
}

func (p *Provider) writeSeed(name string, spec model.VMSpec, path string) error {
	b, err := seed.NoCloud(name, spec, p.opts.SiteKey)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o640)
}

// Start boots the VM, launching its VMM and re-registering its config first
// when needed (after a host reboot, a VMM exit or a cold resize).
func (p *Provider) Start(ctx context.Context, name string) error {
	p.opMu.Lock()
	defer p.opMu.Unlock()
	m, err := p.managed(ctx, name)
	if err != nil {
		return err
	}
	if !p.opts.DisableNetworking {
		for i, n := range m.Spec.Networks {
			if err := tap.Ensure(tap.Name(name, i), n.Bridge); err != nil {
				return fmt.Errorf("vm %s: %w", name, err)
			}
		}
	}
	c, err := p.ensureVMM(ctx, name)
	if err != nil {
		return err
	}
	info, err := c.Info(ctx)
	if IsNotCreated(err) {
		if err := c.Create(ctx, buildConfig(name, m.Spec, m.CPUs, m.MemoryMiB, m.Artifacts)); err != nil {
			return fmt.Errorf("vm %s: %w", name, err)
		}
		info.State = "Created"
	} else if err != nil {
		return fmt.Errorf("vm %s: %w", name, err)
	}
	switch info.State {
	case "Running":
		agent.Progress(ctx, "vm already running")
		return nil
	case "Paused":
		err = c.Action(ctx, "vm.resume")
	default:
		err = c.Action(ctx, "vm.boot")
	}
	if err != nil {
		return fmt.Errorf("vm %s: %w", name, err)
	}
	agent.Progress(ctx, "vm booted")
	return nil
}

// Stop presses the ACPI power button and waits for the guest to power off;
// after StopTimeout it stops the VM hard with vm.shutdown. Created and
// Shutdown both count as stopped (v53 reports Created after vm.shutdown).
func (p *Provider) Stop(ctx context.Context, name string) error {
	p.opMu.Lock()
	defer p.opMu.Unlock()
	if _, err := p.managed(ctx, name); err != nil {
		return err
	}
	c, _, ok := p.alive(ctx, name)
	if !ok {
		agent.Progress(ctx, "vm already stopped (no vmm running)")
		return nil
	}
	running := func() (bool, string, error) {
		info, err := c.Info(ctx)
		if IsNotCreated(err) {
			return false, "", nil
		}
		if err != nil {
			if _, _, ok := p.alive(ctx, name); !ok {
				return false, "", nil // the VMM exited with the guest
			}
			return false, "", fmt.Errorf("vm %s: %w", name, err)
		}
		return info.State == "Running" || info.State == "Paused", info.State, nil
	}
	run, state, err := running()
	if err != nil || !run {
		if err == nil {
			agent.Progress(ctx, "vm already stopped")
		}
		return err
	}
	if state == "Running" {
		if err := c.Action(ctx, "vm.power-button"); err != nil {
			return fmt.Errorf("vm %s: %w", name, err)
		}
		agent.Progress(ctx, "pressed the ACPI power button")
		deadline := time.Now().Add(p.opts.StopTimeout)
		for time.Now().Before(deadline) {
			if run, _, err = running(); err != nil {
				return err
			} else if !run {
				agent.Progress(ctx, "guest powered off")
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("vm %s: wait for power-off: %w", name, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
		agent.Progress(ctx, fmt.Sprintf("guest ignored the power button for %s: forcing vm.shutdown", p.opts.StopTimeout))
		p.log.Warn("guest ignored the power button; hard stop", "vm", name)
	}
	if err := c.Action(ctx, "vm.shutdown"); err != nil {
		if run, _, rerr := running(); rerr == nil && !run {
			return nil // it powered off in between
		}
		return fmt.Errorf("vm %s: %w", name, err)
	}
	agent.Progress(ctx, "vm stopped (vm.shutdown)")
	return nil
}

// Delete removes the VM's config, its VMM, its TAPs and every file it owns.
// Deleting a VM that does not exist succeeds.
func (p *Provider) Delete(ctx context.Context, name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	p.opMu.Lock()
	defer p.opMu.Unlock()
	dir := p.vmDir(name)
	m, err := p.readMeta(name)
	c, ping, alive := p.alive(ctx, name)
	switch {
	case errors.Is(err, os.ErrNotExist) && alive:
		return fmt.Errorf("vm %s: %w", name, agent.ErrUnmanaged)
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return err
	}
	if alive {
		if err := c.Action(ctx, "vm.delete"); err != nil {
			return fmt.Errorf("vm %s: %w", name, err)
		}
		if err := c.Action(ctx, "vmm.shutdown"); err != nil {
			return fmt.Errorf("vm %s: %w", name, err)
		}
		if err := p.waitExit(ctx, name, ping.PID); err != nil {
			return err
		}
		agent.Progress(ctx, "vmm shut down")
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

// waitExit waits for the VMM to go away after vmm.shutdown, killing it if it lingers.
func (p *Provider) waitExit(ctx context.Context, name string, pid int) error {
	p.mu.Lock()
	pr := p.procs[name]
	p.mu.Unlock()
	gone := func() bool {
		if pr != nil {
			select {
			case <-pr.done:
				return true
			default:
				return false
			}
		}
		return pid <= 0 || syscall.Kill(pid, 0) == syscall.ESRCH
	}
	deadline := time.Now().Add(10 * time.Second)
	killed := false
	for !gone() {
		if time.Now().After(deadline) {
			if killed || pid <= 0 {
				return fmt.Errorf("vm %s: vmm did not exit after vmm.shutdown", name)
			}
			p.log.Warn("vmm did not exit after vmm.shutdown; killing it", "vm", name, "pid", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
			killed, deadline = true, time.Now().Add(5*time.Second)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("vm %s: wait for vmm exit: %w", name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// Resize sets vCPUs and memory. A running VM is resized live (vm.resize);
// a stopped one gets the new size at its next start.
func (p *Provider) Resize(ctx context.Context, name string, cpus, memoryMiB int) error {
	p.opMu.Lock()
	defer p.opMu.Unlock()
	m, err := p.managed(ctx, name)
	if err != nil {
		return err
	}
	if cpus < 1 || cpus > m.Spec.EffectiveMaxCPUs() {
		return fmt.Errorf("vm %s: cpus %d outside 1..%d (maxCpus)", name, cpus, m.Spec.EffectiveMaxCPUs())
	}
	if memoryMiB < 64 || memoryMiB > m.Spec.EffectiveMaxMemoryMiB() {
		return fmt.Errorf("vm %s: memoryMiB %d outside 64..%d (maxMemoryMiB)", name, memoryMiB, m.Spec.EffectiveMaxMemoryMiB())
	}
	if c, _, ok := p.alive(ctx, name); ok {
		info, err := c.Info(ctx)
		switch {
		case err == nil && (info.State == "Running" || info.State == "Paused"):
			ram := int64(memoryMiB) * mib
			if err := p.resizeLive(ctx, c, VmResize{DesiredVCPUs: &cpus, DesiredRAM: &ram}); err != nil {
				return fmt.Errorf("vm %s: %w", name, err)
			}
			agent.Progress(ctx, fmt.Sprintf("resized live to %d vCPUs, %d MiB", cpus, memoryMiB))
		case err == nil:
			// Drop the stored config; Start rebuilds it with the new size.
			if err := c.Action(ctx, "vm.delete"); err != nil {
				return fmt.Errorf("vm %s: %w", name, err)
			}
		case !IsNotCreated(err):
			return fmt.Errorf("vm %s: %w", name, err)
		}
	}
	m.CPUs, m.MemoryMiB = cpus, memoryMiB
	return p.writeMeta(m)
}

// resizeLive calls vm.resize, waiting out 429 (a vCPU removal still
// pending in the guest) for up to StopTimeout.
func (p *Provider) resizeLive(ctx context.Context, c *Client, r VmResize) error {
	deadline := time.Now().Add(p.opts.StopTimeout)
	for {
		err := c.Resize(ctx, r)
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusTooManyRequests || time.Now().After(deadline) {
			return err
		}
		agent.Progress(ctx, "a vCPU removal is still pending in the guest; retrying vm.resize")
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// List reports every VM under the state dir: managed ones from their
// metadata and VMM, unmanaged ones (a live socket without metadata) from
// vm.info alone.
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
		var info VmInfo
		ierr := errors.New("no vmm")
		if c, _, ok := p.alive(ctx, name); ok {
			ictx, cancel := context.WithTimeout(ctx, 3*time.Second)
			info, ierr = c.Info(ictx)
			cancel()
		}
		running := ierr == nil && info.State == "Running"
		if merr != nil { // no metadata: not ours
			if ierr != nil {
				continue
			}
			o := model.ObservedVM{Name: name, State: model.VMStopped}
			if running {
				o.State = model.VMRunning
			}
			if info.Config.Cpus != nil {
				o.CPUs, o.MaxCPUs = info.Config.Cpus.BootVCPUs, info.Config.Cpus.MaxVCPUs
			}
			if info.Config.Memory != nil {
				o.MemoryMiB = int(info.MemoryActualSize / mib)
				o.MaxMemoryMiB = int((info.Config.Memory.Size + info.Config.Memory.HotplugSize) / mib)
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
			if info.Config.Cpus != nil {
				o.CPUs = info.Config.Cpus.BootVCPUs
			}
			if info.MemoryActualSize > 0 {
				o.MemoryMiB = int(info.MemoryActualSize / mib)
			}
		}
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Shutdown stops every VMM under the state dir, the ones this provider
// launched and the ones it re-attached to, and waits until they are gone;
// their guests die with them. VM files are left as they are. It waits for
// an operation in progress to finish first.
//
// An agent does not call it when it exits: VMMs outlive the agent, which
// re-attaches to them after a restart. It is for tearing a host's VMs
// down on purpose: tests, decommissioning.
func (p *Provider) Shutdown(ctx context.Context) error {
	p.opMu.Lock()
	defer p.opMu.Unlock()
	names := map[string]bool{}
	if entries, err := os.ReadDir(filepath.Join(p.opts.StateDir, "vms")); err == nil {
		for _, e := range entries {
			if e.IsDir() && dnsLabel.MatchString(e.Name()) {
				names[e.Name()] = true
			}
		}
	}
	p.mu.Lock()
	for name := range p.procs {
		names[name] = true
	}
	p.mu.Unlock()
	var errs []error
	for name := range names {
		if err := p.shutdownVMM(ctx, name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// shutdownVMM asks one VMM to exit (vmm.shutdown) and kills it when it does
// not answer or does not go.
func (p *Provider) shutdownVMM(ctx context.Context, name string) error {
	pid := 0
	p.mu.Lock()
	pr := p.procs[name]
	p.mu.Unlock()
	if pr != nil {
		pid = pr.cmd.Process.Pid
	}
	asked := false
	if c, ping, ok := p.alive(ctx, name); ok {
		if pid == 0 {
			pid = ping.PID
		}
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := c.Action(actx, "vmm.shutdown")
		cancel()
		if err != nil {
			p.log.Warn("vmm.shutdown refused; killing the vmm", "vm", name, "err", err)
		}
		asked = err == nil
	}
	if pid == 0 {
		pid = p.recordedPID(name)
	}
	if pid <= 0 {
		return nil // nothing runs for this VM
	}
	if !asked {
		// Not answering its socket (hung, or still starting): nothing to ask.
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return p.waitExit(ctx, name, pid)
}

// recordedPID is the pid in the VM's vmm.pid when that process is still
// the VM's VMM (its command line names the VM's socket); 0 otherwise, so a
// reused pid is never signalled.
func (p *Provider) recordedPID(name string) int {
	b, err := os.ReadFile(filepath.Join(p.vmDir(name), "vmm.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte("path="+p.socket(name))) {
		return 0
	}
	return pid
}
