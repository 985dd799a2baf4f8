package cloudhypervisor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/agent"
	"github.com/nkudo/nkudo/agent/internal/vmmtest"
	"github.com/nkudo/nkudo/agent/providers/internal/tap"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/tests/fakes/chfake"
)

var fakeBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chfake-bin")
	if err != nil {
		panic(err)
	}
	fakeBinary = filepath.Join(dir, "cloud-hypervisor")
	out, err := exec.Command("go", "build", "-o", fakeBinary, "github.com/nkudo/nkudo/tests/fakes/cloud-hypervisor").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build fake cloud-hypervisor: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	if msg := vmmtest.Check(fakeBinary); msg != "" {
		fmt.Fprintln(os.Stderr, "FAIL:", msg)
		code = 1
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

type env struct {
	p        *Provider
	state    string
	reqLog   string
	files    string
	spec     model.VMSpec
	binary   string
	extraEnv []string
}

// newEnv builds a provider on the fake binary with a request log, and a
// spec whose payloads are real files served as file:// URLs.
func newEnv(t *testing.T, extraEnv ...string) *env {
	t.Helper()
	state, err := os.MkdirTemp("", "chp") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	e := &env{state: state, reqLog: filepath.Join(t.TempDir(), "requests.jsonl"), files: t.TempDir(), binary: fakeBinary, extraEnv: extraEnv}
	t.Cleanup(func() {
		// A provider of its own: it stops every VMM under the state dir,
		// whichever provider of the test launched it.
		if p, err := New(Options{StateDir: state}); err == nil {
			if err := p.Shutdown(context.WithoutCancel(t.Context())); err != nil {
				t.Errorf("stop the test's VMMs: %v", err)
			}
		}
		os.RemoveAll(state)
	})
	kernel := e.file(t, "vmlinux", "not really a kernel")
	image := e.file(t, "root.img", strings.Repeat("disk", 1024))
	e.spec = model.VMSpec{
		State: model.VMRunning, CPUs: 1, MaxCPUs: 4, MemoryMiB: 512, MaxMemoryMiB: 1024,
		Kernel:    &model.Kernel{URL: "file://" + kernel.path, SHA256: kernel.sum, Cmdline: "console=ttyS0"},
		Image:     &model.Image{URL: "file://" + image.path, SHA256: image.sum},
		Disks:     []model.Disk{{Name: "data", SizeGiB: 2}},
		Networks:  []model.Network{{Bridge: "br-lan"}},
		CloudInit: &model.CloudInit{UserData: "#cloud-config\nhostname: pos-1\n"},
	}
	e.p = e.provider(t)
	return e
}

func (e *env) provider(t *testing.T) *Provider {
	t.Helper()
	p, err := New(Options{
		StateDir: e.state, Binary: e.binary, DisableNetworking: true, StopTimeout: 5 * time.Second,
		Env: append([]string{"CHFAKE_REQUEST_LOG=" + e.reqLog}, e.extraEnv...),
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

type file struct{ path, sum string }

func (e *env) file(t *testing.T, name, content string) file {
	t.Helper()
	p := filepath.Join(e.files, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256([]byte(content))
	return file{p, hex.EncodeToString(s[:])}
}

// calls lists "endpoint" for every request the fakes received, in order.
func (e *env) calls(t *testing.T) []string {
	t.Helper()
	entries, err := chfake.ReadRequestLog(e.reqLog)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, x := range entries {
		if x.Endpoint == "vmm.ping" || x.Endpoint == "vm.info" || x.Received {
			continue // probes, not actions
		}
		out = append(out, x.Endpoint)
	}
	return out
}

func killVMMs(state string) {
	pids, _ := filepath.Glob(filepath.Join(state, "vms", "*", "vmm.pid"))
	for _, f := range pids {
		b, _ := os.ReadFile(f)
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func (e *env) list(t *testing.T) []model.ObservedVM {
	t.Helper()
	vms, err := e.p.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return vms
}

func TestVmConfigJSON(t *testing.T) {
	spec := model.VMSpec{
		CPUs: 2, MaxCPUs: 4, MemoryMiB: 1024, MaxMemoryMiB: 2048,
		Kernel:   &model.Kernel{URL: "https://x/k", SHA256: "00", Cmdline: "console=ttyS0 root=/dev/vda1 rw"},
		Disks:    []model.Disk{{Name: "data", SizeGiB: 10}},
		Networks: []model.Network{{Bridge: "br-lan", MAC: "52:54:00:aa:bb:01"}},
	}
	cfg := buildConfig("pos-1", spec, 2, 1024, artifacts{
		Kernel: "/s/images/k", RootDisk: "/s/vms/pos-1/root.raw", Seed: "/s/vms/pos-1/cidata.img",
		Serial: "/s/vms/pos-1/serial.log", DataDisks: []string{"/s/vms/pos-1/disk-data.raw"},
	})
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"cpus":    map[string]any{"boot_vcpus": 2.0, "max_vcpus": 4.0},
		"memory":  map[string]any{"size": float64(1 << 30), "hotplug_size": float64(1 << 30), "hotplug_method": "Acpi"},
		"payload": map[string]any{"kernel": "/s/images/k", "cmdline": "console=ttyS0 root=/dev/vda1 rw"},
		"disks": []any{
			map[string]any{"path": "/s/vms/pos-1/root.raw", "id": "root"},
			map[string]any{"path": "/s/vms/pos-1/disk-data.raw", "id": "disk-data"},
			map[string]any{"path": "/s/vms/pos-1/cidata.img", "readonly": true, "id": "cidata"},
		},
		"net":     []any{map[string]any{"tap": tap.Name("pos-1", 0), "mac": "52:54:00:aa:bb:01", "id": "net0"}},
		"rng":     map[string]any{"src": "/dev/urandom"},
		"serial":  map[string]any{"mode": "File", "file": "/s/vms/pos-1/serial.log"},
		"console": map[string]any{"mode": "Off"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("VmConfig JSON (-want +got):\n%s", d)
	}
	if n := tap.Name("a-very-long-vm-name-that-is-still-a-valid-dns-label-0123456789", 9); len(n) > 15 {
		t.Errorf("tap name %q longer than IFNAMSIZ-1", n)
	}
	// Firmware boot and no headroom.
	fw := buildConfig("x", model.VMSpec{CPUs: 1, MemoryMiB: 512, Firmware: &model.Firmware{}}, 1, 512, artifacts{Firmware: "/fw"})
	if fw.Payload != (PayloadConfig{Firmware: "/fw"}) || fw.Memory.HotplugSize != 0 || fw.Cpus.MaxVCPUs != 1 {
		t.Errorf("firmware config = %+v %+v %+v", fw.Payload, fw.Memory, fw.Cpus)
	}
}

func TestLifecycle(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	var progress []string
	pctx := agent.WithProgress(ctx, func(l string) { progress = append(progress, l) })
	if err := e.p.Create(pctx, "pos-1", e.spec); err != nil {
		t.Fatal(err)
	}
	if len(progress) == 0 {
		t.Error("create reported no progress")
	}
	want := []model.ObservedVM{{Name: "pos-1", State: model.VMStopped, Managed: true, SpecHash: e.spec.Hash(), CPUs: 1, MemoryMiB: 512, MaxCPUs: 4, MaxMemoryMiB: 1024}}
	if d := cmp.Diff(want, e.list(t)); d != "" {
		t.Fatalf("after create (-want +got):\n%s", d)
	}
	for _, f := range []string{"root.raw", "disk-data.raw", "cidata.img", "meta.json"} {
		if _, err := os.Stat(filepath.Join(e.state, "vms", "pos-1", f)); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(e.state, "vms", "pos-1", "disk-data.raw"), &st); err != nil || st.Size != 2<<30 || st.Blocks > 64 {
		t.Errorf("data disk: size %d blocks %d err %v, want 2 GiB sparse", st.Size, st.Blocks, err)
	}
	// A second create is a no-op: no second vm.create (which v53 answers with 500).
	if err := e.p.Create(ctx, "pos-1", e.spec); err != nil {
		t.Fatalf("second create: %v", err)
	}
	if err := e.p.Start(ctx, "pos-1"); err != nil {
		t.Fatal(err)
	}
	if err := e.p.Start(ctx, "pos-1"); err != nil {
		t.Fatalf("second start: %v", err)
	}
	want[0].State = model.VMRunning
	if d := cmp.Diff(want, e.list(t)); d != "" {
		t.Fatalf("after start (-want +got):\n%s", d)
	}
	if err := e.p.Resize(ctx, "pos-1", 3, 768); err != nil {
		t.Fatal(err)
	}
	want[0].CPUs, want[0].MemoryMiB = 3, 768
	if d := cmp.Diff(want, e.list(t)); d != "" {
		t.Fatalf("after resize (-want +got):\n%s", d)
	}
	if err := e.p.Resize(ctx, "pos-1", 5, 768); err == nil || !strings.Contains(err.Error(), "maxCpus") {
		t.Errorf("resize over max: %v", err)
	}
	if err := e.p.Stop(ctx, "pos-1"); err != nil {
		t.Fatal(err)
	}
	if err := e.p.Stop(ctx, "pos-1"); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	want[0].State = model.VMStopped
	if d := cmp.Diff(want, e.list(t)); d != "" {
		t.Fatalf("after stop (-want +got):\n%s", d)
	}
	// Cold resize, then start again: the config is rebuilt with the new size.
	if err := e.p.Resize(ctx, "pos-1", 2, 1024); err != nil {
		t.Fatal(err)
	}
	if err := e.p.Start(ctx, "pos-1"); err != nil {
		t.Fatal(err)
	}
	want[0].State, want[0].CPUs, want[0].MemoryMiB = model.VMRunning, 2, 1024
	if d := cmp.Diff(want, e.list(t)); d != "" {
		t.Fatalf("after cold resize + start (-want +got):\n%s", d)
	}
	if err := e.p.Delete(ctx, "pos-1"); err != nil {
		t.Fatal(err)
	}
	if err := e.p.Delete(ctx, "pos-1"); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if got := e.list(t); len(got) != 0 {
		t.Fatalf("after delete: %v", got)
	}
	if _, err := os.Stat(filepath.Join(e.state, "vms", "pos-1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("vm dir still there: %v", err)
	}
	wantCalls := []string{
		"vm.create",            // create
		"vm.boot",              // start (second start: nothing)
		"vm.resize",            // live resize
		"vm.power-button",      // stop: graceful, no vm.shutdown
		"vm.delete",            // cold resize drops the stored config
		"vm.create", "vm.boot", // start rebuilds it
		"vm.delete", "vmm.shutdown", // delete
	}
	if d := cmp.Diff(wantCalls, e.calls(t)); d != "" {
		t.Errorf("hypervisor calls (-want +got):\n%s", d)
	}
}

func TestStopFallsBackToShutdown(t *testing.T) {
	e := newEnv(t, `CHFAKE_FAULTS=[{"endpoint":"vm.power-button","ignore":true}]`)
	p, _ := New(Options{StateDir: e.state, Binary: fakeBinary, DisableNetworking: true, StopTimeout: 300 * time.Millisecond,
		Env: []string{"CHFAKE_REQUEST_LOG=" + e.reqLog, `CHFAKE_FAULTS=[{"endpoint":"vm.power-button","ignore":true}]`}})
	ctx := t.Context()
	if err := p.Create(ctx, "pos-1", e.spec); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx, "pos-1"); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(ctx, "pos-1"); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"vm.create", "vm.boot", "vm.power-button", "vm.shutdown"}, e.calls(t)); d != "" {
		t.Errorf("calls (-want +got):\n%s", d)
	}
	vms, _ := p.List(ctx)
	if len(vms) != 1 || vms[0].State != model.VMStopped {
		t.Errorf("after forced stop: %+v", vms)
	}
}

func TestResizeWaitsOutPendingVCPURemoval(t *testing.T) {
	e := newEnv(t, `CHFAKE_FAULTS=[{"endpoint":"vm.resize","nth":1,"status":429,"error":"vCPU removal pending"}]`)
	ctx := t.Context()
	for _, step := range []func() error{
		func() error { return e.p.Create(ctx, "pos-1", e.spec) },
		func() error { return e.p.Start(ctx, "pos-1") },
		func() error { return e.p.Resize(ctx, "pos-1", 2, 512) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	if d := cmp.Diff([]string{"vm.create", "vm.boot", "vm.resize", "vm.resize"}, e.calls(t)); d != "" {
		t.Errorf("calls (-want +got):\n%s", d)
	}
	if vms := e.list(t); len(vms) != 1 || vms[0].CPUs != 2 {
		t.Errorf("after resize: %+v", vms)
	}
}

func TestErrorBodySurfaced(t *testing.T) {
	e := newEnv(t, `CHFAKE_FAULTS=[{"endpoint":"vm.boot","nth":1,"status":500,"error":"Failed to open disk: permission denied"}]`)
	ctx := t.Context()
	if err := e.p.Create(ctx, "pos-1", e.spec); err != nil {
		t.Fatal(err)
	}
	err := e.p.Start(ctx, "pos-1")
	if err == nil || !strings.Contains(err.Error(), "Failed to open disk: permission denied") || !strings.Contains(err.Error(), "500") {
		t.Fatalf("start error = %v, want the API's error chain", err)
	}
	if err := e.p.Start(ctx, "pos-1"); err != nil {
		t.Fatalf("retry: %v", err)
	}
}

func TestImageDigestMismatchKeepsNothing(t *testing.T) {
	e := newEnv(t)
	spec := e.spec
	spec.Image = &model.Image{URL: e.spec.Image.URL, SHA256: strings.Repeat("ab", 32)}
	err := e.p.Create(t.Context(), "pos-1", spec)
	if err == nil || !strings.Contains(err.Error(), "sha256 mismatch") {
		t.Fatalf("create = %v, want sha256 mismatch", err)
	}
	imgs, _ := os.ReadDir(filepath.Join(e.state, "images"))
	for _, i := range imgs {
		if i.Name() == spec.Image.SHA256 || strings.HasPrefix(i.Name(), ".download") {
			t.Errorf("cache kept %s after a mismatch", i.Name())
		}
	}
	if got := e.list(t); len(got) != 0 {
		t.Errorf("a failed create is listed: %+v", got)
	}
	if _, err := os.Stat(filepath.Join(e.state, "vms", "pos-1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed create left its files: %v", err)
	}
	if c := e.calls(t); len(c) != 0 {
		t.Errorf("hypervisor called: %v", c)
	}
}

func TestImageOverHTTPDownloadedOnce(t *testing.T) {
	e := newEnv(t)
	content := strings.Repeat("image", 999)
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		fmt.Fprint(w, content)
	}))
	t.Cleanup(srv.Close)
	sum := sha256.Sum256([]byte(content))
	spec := e.spec
	spec.Image = &model.Image{URL: srv.URL + "/pos.raw?token=secret", SHA256: hex.EncodeToString(sum[:])}
	for _, name := range []string{"a", "b"} {
		if err := e.p.Create(t.Context(), name, spec); err != nil {
			t.Fatal(err)
		}
	}
	if hits != 1 {
		t.Errorf("image downloaded %d times, want once", hits)
	}
	spec.Image.URL = srv.URL + "/missing?token=secret"
	spec.Image.SHA256 = strings.Repeat("0", 64)
	srv.Config.Handler = http.NotFoundHandler()
	err := e.p.Create(t.Context(), "c", spec)
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("create with a 404 image = %v (must fail without leaking the query)", err)
	}
}

func TestUnmanagedVMsAreReportedNotTouched(t *testing.T) {
	e := newEnv(t)
	dir := filepath.Join(e.state, "vms", "by-hand")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	srv := chfake.New(chfake.Config{SkipFileChecks: true, RequestLog: e.reqLog})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe(ctx, filepath.Join(dir, "api.sock")) }()
	t.Cleanup(func() { cancel(); <-done })
	c := NewClient(filepath.Join(dir, "api.sock"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := c.Ping(t.Context()); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("in-process fake never answered")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := c.Create(t.Context(), VmConfig{Payload: PayloadConfig{Kernel: "/k"}, Cpus: &CpusConfig{2, 2}, Memory: &MemoryConfig{Size: 256 * mib}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Action(t.Context(), "vm.boot"); err != nil {
		t.Fatal(err)
	}
	want := []model.ObservedVM{{Name: "by-hand", State: model.VMRunning, CPUs: 2, MaxCPUs: 2, MemoryMiB: 256, MaxMemoryMiB: 256}}
	if d := cmp.Diff(want, e.list(t)); d != "" {
		t.Fatalf("list (-want +got):\n%s", d)
	}
	before := srv.Calls("vm.shutdown") + srv.Calls("vm.delete") + srv.Calls("vm.power-button") + srv.Calls("vm.create")
	for op, f := range map[string]func() error{
		"stop":   func() error { return e.p.Stop(t.Context(), "by-hand") },
		"delete": func() error { return e.p.Delete(t.Context(), "by-hand") },
		"start":  func() error { return e.p.Start(t.Context(), "by-hand") },
		"create": func() error { return e.p.Create(t.Context(), "by-hand", e.spec) },
		"resize": func() error { return e.p.Resize(t.Context(), "by-hand", 1, 256) },
	} {
		if err := f(); !errors.Is(err, agent.ErrUnmanaged) {
			t.Errorf("%s on an unmanaged vm = %v, want ErrUnmanaged", op, err)
		}
	}
	if after := srv.Calls("vm.shutdown") + srv.Calls("vm.delete") + srv.Calls("vm.power-button") + srv.Calls("vm.create"); after != before {
		t.Errorf("unmanaged vm was touched: %d mutating calls", after-before)
	}
	if srv.State() != chfake.StateRunning {
		t.Errorf("unmanaged vm state = %s", srv.State())
	}
}

func TestReattachAndStaleSocket(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	if err := e.p.Create(ctx, "pos-1", e.spec); err != nil {
		t.Fatal(err)
	}
	if err := e.p.Start(ctx, "pos-1"); err != nil {
		t.Fatal(err)
	}
	// A new provider (agent restart) sees the running VM through its socket.
	p2 := e.provider(t)
	vms, err := p2.Reattach(ctx)
	if err != nil || len(vms) != 1 || vms[0].State != model.VMRunning || !vms[0].Managed {
		t.Fatalf("reattach: %+v %v", vms, err)
	}
	// The VMM dies hard: its socket stays behind; Start must still work.
	killVMMs(e.state)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, _, ok := p2.alive(ctx, "pos-1"); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("killed VMM still answers")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := os.Stat(p2.socket("pos-1")); err != nil {
		t.Fatalf("expected a stale socket: %v", err)
	}
	if vms, _ := p2.List(ctx); len(vms) != 1 || vms[0].State != model.VMStopped {
		t.Fatalf("after VMM death: %+v", vms)
	}
	if err := p2.Start(ctx, "pos-1"); err != nil {
		t.Fatalf("start after VMM death: %v", err)
	}
	if vms, _ := p2.List(ctx); len(vms) != 1 || vms[0].State != model.VMRunning {
		t.Fatalf("after restart: %+v", vms)
	}
}

func TestNamesAreValidated(t *testing.T) {
	e := newEnv(t)
	for _, name := range []string{"", "../etc", "Pos", "a/b", "-x", strings.Repeat("a", 64), "x."} {
		if err := e.p.Create(t.Context(), name, e.spec); err == nil {
			t.Errorf("create %q accepted", name)
		}
		if err := e.p.Delete(t.Context(), name); err == nil {
			t.Errorf("delete %q accepted", name)
		}
	}
	bad := e.spec
	bad.Disks = []model.Disk{{Name: "../../x", SizeGiB: 1}}
	if err := e.p.Create(t.Context(), "ok", bad); err == nil || !strings.Contains(err.Error(), "disks[0].name") {
		t.Errorf("bad disk name: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(e.state, "vms")); len(entries) != 0 {
		t.Errorf("rejected input left files: %v", entries)
	}
}

func TestVMMCrashAtStart(t *testing.T) {
	e := newEnv(t, "CHFAKE_EXIT_NOW=1")
	err := e.p.Create(t.Context(), "pos-1", e.spec)
	if err == nil || !strings.Contains(err.Error(), "exited at start") {
		t.Fatalf("create with a crashing VMM = %v", err)
	}
	if got := e.list(t); len(got) != 0 {
		t.Errorf("half-created vm listed: %+v", got)
	}
}

// TestRealCloudHypervisor runs the lifecycle against the real program when
// the host has it, a usable /dev/kvm and a bootable kernel.
func TestRealCloudHypervisor(t *testing.T) {
	bin, err := exec.LookPath("cloud-hypervisor")
	if err != nil {
		t.Skip("SKIP: no real cloud-hypervisor on PATH; the provider suite ran against the fake only")
	}
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err != nil {
		t.Skipf("SKIP: /dev/kvm is not usable (%v)", err)
	} else {
		f.Close()
	}
	kernel := os.Getenv("NKUDO_TEST_CH_KERNEL")
	if kernel == "" {
		t.Skip("SKIP: set NKUDO_TEST_CH_KERNEL to a PVH vmlinux to boot a real VM")
	}
	e := newEnv(t)
	e.binary = bin
	e.p = e.provider(t)
	b, err := os.ReadFile(kernel)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	e.spec.Kernel = &model.Kernel{URL: "file://" + kernel, SHA256: hex.EncodeToString(sum[:]), Cmdline: "console=ttyS0"}
	e.spec.Networks = nil
	ctx := t.Context()
	for _, step := range []func() error{
		func() error { return e.p.Create(ctx, "real-1", e.spec) },
		func() error { return e.p.Start(ctx, "real-1") },
		func() error { return e.p.Stop(ctx, "real-1") },
		func() error { return e.p.Delete(ctx, "real-1") },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
}

// Shutdown stops the VMMs this provider launched and those it re-attached
// to after a restart; a provider that is merely dropped (an agent exit)
// leaves them running for the next one.
func TestShutdownStopsEveryVMM(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	for _, name := range []string{"pos-1", "pos-2"} {
		if err := e.p.Create(ctx, name, e.spec); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.p.Start(ctx, "pos-1"); err != nil {
		t.Fatal(err)
	}
	if left := vmmtest.Leftover(fakeBinary); len(left) < 2 {
		t.Fatalf("want two VMMs running, have %v", left)
	}
	// Agent restart: the old provider is dropped, the VMMs keep running.
	p2 := e.provider(t)
	if vms, err := p2.Reattach(ctx); err != nil || len(vms) != 2 || vms[0].State != model.VMRunning {
		t.Fatalf("reattach: %+v %v", vms, err)
	}
	// A VMM launched by the new provider, and one that hangs (stopped by
	// SIGSTOP, it never answers its socket: it is killed by its pid).
	if err := p2.Create(ctx, "pos-3", e.spec); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(e.state, "vms", "pos-2", "vmm.pid"))
	if err != nil {
		t.Fatal(err)
	}
	hung, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err := syscall.Kill(hung, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := p2.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	var left []string
	for _, l := range vmmtest.Leftover(fakeBinary) {
		if strings.Contains(l, e.state) {
			left = append(left, l)
		}
	}
	if len(left) != 0 {
		t.Errorf("VMMs still running after Shutdown: %v", left)
	}
	if vms, _ := p2.List(ctx); len(vms) != 3 || vms[0].State != model.VMStopped {
		t.Errorf("after shutdown: %+v", vms)
	}
}
