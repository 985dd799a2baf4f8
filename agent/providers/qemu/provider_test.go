package qemu

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/agent"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/tests/vm/guest"
)

// requireQEMU skips (or, with NKUDO_E2E_VM=require, fails) when QEMU, the
// cloud kernel or busybox-static is missing.
func requireQEMU(t *testing.T) {
	t.Helper()
	if m := guest.Missing(); len(m) > 0 {
		msg := fmt.Sprintf("real-QEMU test needs the packages %s (apt-get install -y %s)", strings.Join(m, ", "), strings.Join(m, " "))
		if os.Getenv("NKUDO_E2E_VM") == "require" {
			t.Fatal(msg)
		}
		t.Skip("SKIP: " + msg)
	}
}

func fileRef(t *testing.T, path string) (string, string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return "file://" + path, hex.EncodeToString(sum[:])
}

// guestSpec is a spec booting the test guest: a blank 1 MiB root image,
// the cloud kernel and the busybox initramfs.
func guestSpec(t *testing.T, host, marker string, powerOffOnce bool) model.VMSpec {
	t.Helper()
	dir := t.TempDir()
	kernel, initrd, err := guest.Files(dir)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root.raw")
	if err := os.WriteFile(root, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := model.VMSpec{State: model.VMRunning, CPUs: 1, MaxCPUs: 2, MemoryMiB: 256, MaxMemoryMiB: 512,
		Kernel:    &model.Kernel{Cmdline: guest.Cmdline, Initramfs: &model.Image{}},
		Image:     &model.Image{},
		Disks:     []model.Disk{{Name: "data", SizeGiB: 1}},
		Networks:  []model.Network{{Bridge: "br-test"}},
		CloudInit: &model.CloudInit{UserData: guest.UserData(host, marker, powerOffOnce)}}
	spec.Kernel.URL, spec.Kernel.SHA256 = fileRef(t, kernel)
	spec.Kernel.Initramfs.URL, spec.Kernel.Initramfs.SHA256 = fileRef(t, initrd)
	spec.Image.URL, spec.Image.SHA256 = fileRef(t, root)
	return spec
}

func newProvider(t *testing.T, state string) *Provider {
	t.Helper()
	p, err := New(Options{StateDir: state, DisableNetworking: true, StopTimeout: 20 * time.Second, StartTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitStatus polls the VM's serial console until a status line satisfies ok.
func waitStatus(t *testing.T, p *Provider, name, what string, ok func(guest.Status) bool) guest.Status {
	t.Helper()
	serial := filepath.Join(p.vmDir(name), "serial.log")
	deadline := time.Now().Add(3 * time.Minute)
	for {
		b, _ := os.ReadFile(serial)
		if s, found := guest.LastStatus(b); found && ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("vm %s: no status line with %s within 3m; serial console:\n%s", name, what, tailBytes(b, 1500))
		}
		time.Sleep(200 * time.Millisecond) // polling a file with a deadline
	}
}

func tailBytes(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func listOne(t *testing.T, p *Provider, name string) model.ObservedVM {
	t.Helper()
	vms, err := p.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, vm := range vms {
		if vm.Name == name {
			return vm
		}
	}
	t.Fatalf("List does not report %s: %+v", name, vms)
	return model.ObservedVM{}
}

// qemuProcesses counts the QEMU processes whose command line names sock.
func qemuProcesses(sock string) int {
	n := 0
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), "unix:"+sock+",") && processAliveName(e.Name()) {
			n++
		}
	}
	return n
}

func processAliveName(pid string) bool {
	var n int
	fmt.Sscanf(pid, "%d", &n)
	return n > 0 && processAlive(n)
}

// TestRealQEMULifecycle boots the test guest under QEMU and drives it
// through every operation: its seed is read, a live resize shows in the
// guest, the ACPI power button stops it, a second provider (an agent
// restart) re-attaches without a second process, and delete leaves nothing.
func TestRealQEMULifecycle(t *testing.T) {
	requireQEMU(t)
	ctx := t.Context()
	state := t.TempDir()
	p := newProvider(t, state)
	t.Cleanup(func() { _ = p.Shutdown(context.WithoutCancel(ctx)) })
	spec := guestSpec(t, "lc-guest", "marker-lc", false)
	const name = "lc"
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(p.vmDir(name), "qemu.log"))
			t.Logf("qemu.log:\n%s", b)
		}
	})
	if err := p.Create(ctx, name, spec); err != nil {
		t.Fatal(err)
	}
	if err := p.Create(ctx, name, spec); err != nil { // idempotent
		t.Fatalf("second create: %v", err)
	}
	if vm := listOne(t, p, name); vm.State != model.VMStopped || !vm.Managed || vm.SpecHash != spec.Hash() {
		t.Fatalf("after create: %+v", vm)
	}
	for _, f := range []string{"root.qcow2", "disk-data.qcow2", "cidata.img"} {
		if _, err := os.Stat(filepath.Join(p.vmDir(name), f)); err != nil {
			t.Errorf("create left no %s: %v", f, err)
		}
	}
	out, err := exec.Command("qemu-img", "info", "--output=json", filepath.Join(p.vmDir(name), "root.qcow2")).Output()
	if err != nil || !strings.Contains(string(out), `"backing-filename"`) || !strings.Contains(string(out), filepath.Join(state, "images")) {
		t.Errorf("root.qcow2 is not an overlay on the cached image (%v):\n%s", err, out)
	}

	if err := p.Start(ctx, name); err != nil {
		t.Fatal(err)
	}
	s := waitStatus(t, p, name, "the seed's hostname", func(s guest.Status) bool { return s.Hostname != "" })
	bootMem := s.MemKiB
	if s.Hostname != "lc-guest" || s.Marker != "marker-lc" || s.CPUs != 1 {
		t.Errorf("guest status %+v, want hostname lc-guest, marker marker-lc, 1 cpu", s)
	}
	if vm := listOne(t, p, name); vm.State != model.VMRunning || vm.CPUs != 1 || vm.MemoryMiB != 256 {
		t.Errorf("running: %+v", vm)
	}

	if err := p.Resize(ctx, name, 2, 512); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, p, name, "2 cpus", func(s guest.Status) bool { return s.CPUs == 2 })
	if vm := listOne(t, p, name); vm.CPUs != 2 || vm.MemoryMiB != 512 {
		t.Errorf("after resize: %+v", vm)
	}
	// The hot-plugged 256 MiB DIMM, onlined by the guest.
	waitStatus(t, p, name, "the plugged DIMM", func(s guest.Status) bool { return s.MemKiB >= bootMem+200*1024 })
	// A shrink restarts the guest with the smaller size.
	pidBefore := p.pid(name)
	if err := p.Resize(ctx, name, 1, 256); err != nil {
		t.Fatal(err)
	}
	if p.pid(name) == pidBefore {
		t.Error("a shrink kept the same qemu process")
	}
	waitStatus(t, p, name, "1 cpu after the shrink", func(s guest.Status) bool { return s.CPUs == 1 && s.MemKiB < bootMem+100*1024 })
	if vm := listOne(t, p, name); vm.CPUs != 1 || vm.MemoryMiB != 256 {
		t.Errorf("after the shrink: %+v", vm)
	}
	if err := p.Resize(ctx, name, 2, 512); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, p, name, "2 cpus again", func(s guest.Status) bool { return s.CPUs == 2 })

	// An agent restart: a new provider finds the running QEMU and starting
	// the VM again launches nothing.
	p2 := newProvider(t, state)
	if vms, err := p2.Reattach(ctx); err != nil || len(vms) != 1 || vms[0].State != model.VMRunning {
		t.Fatalf("reattach: %v %+v", err, vms)
	}
	if err := p2.Start(ctx, name); err != nil {
		t.Fatal(err)
	}
	if n := qemuProcesses(p.socket(name)); n != 1 {
		t.Fatalf("%d qemu processes after a second start, want 1", n)
	}
	// Without its pid file (an agent killed before QEMU wrote it) the
	// process is still found by its command line.
	if err := os.Remove(p.pidFile(name)); err != nil {
		t.Fatal(err)
	}
	if err := newProvider(t, state).Start(ctx, name); err != nil {
		t.Fatal(err)
	}
	if n := qemuProcesses(p.socket(name)); n != 1 {
		t.Fatalf("%d qemu processes after a start without the pid file, want 1", n)
	}

	if err := p2.Stop(ctx, name); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(p.vmDir(name), "serial.log")); !strings.Contains(string(b), "NKUDO-POWER-BUTTON") {
		t.Errorf("the guest did not see the power button (stopped by quit instead):\n%s", tailBytes(b, 800))
	}
	if vm := listOne(t, p2, name); vm.State != model.VMStopped || vm.CPUs != 2 || vm.MemoryMiB != 512 {
		t.Errorf("stopped: %+v", vm)
	}
	// A stopped VM boots with its resized size.
	if err := p2.Start(ctx, name); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, p2, name, "2 cpus after a cold start", func(s guest.Status) bool { return s.CPUs == 2 })

	if err := p2.Delete(ctx, name); err != nil {
		t.Fatal(err)
	}
	if n := qemuProcesses(p.socket(name)); n != 0 {
		t.Errorf("%d qemu processes after delete", n)
	}
	if _, err := os.Stat(p.vmDir(name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("vm dir after delete: %v", err)
	}
	if err := p2.Delete(ctx, name); err != nil {
		t.Errorf("deleting a missing vm: %v", err)
	}
}

// TestRealQEMUGuestPowerOffIsStopped: a guest that powers itself off ends
// its QEMU, and List reports the VM stopped (drift the planner repairs).
func TestRealQEMUGuestPowerOffIsStopped(t *testing.T) {
	requireQEMU(t)
	ctx := t.Context()
	p := newProvider(t, t.TempDir())
	t.Cleanup(func() { _ = p.Shutdown(context.WithoutCancel(ctx)) })
	if err := p.Create(ctx, "po", guestSpec(t, "po", "m", true)); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx, "po"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for listOne(t, p, "po").State != model.VMStopped {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(p.vmDir("po"), "serial.log"))
			t.Fatalf("the guest did not power itself off within 3m:\n%s", tailBytes(b, 800))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The root overlay remembers it: the second boot stays up.
	if err := p.Start(ctx, "po"); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, p, "po", "a status line on the second boot", func(guest.Status) bool { return true })
	if vm := listOne(t, p, "po"); vm.State != model.VMRunning {
		t.Errorf("after restart: %+v", vm)
	}
}

func TestUnmanagedAndInvalid(t *testing.T) {
	p := newProvider(t, t.TempDir())
	ctx := t.Context()
	if err := p.Create(ctx, "Bad_Name", model.VMSpec{}); err == nil || !strings.Contains(err.Error(), "DNS label") {
		t.Errorf("bad name: %v", err)
	}
	err := p.Create(ctx, "ok", model.VMSpec{CPUs: 1, MemoryMiB: 128, Kernel: &model.Kernel{}, Disks: []model.Disk{{Name: "d", SizeGiB: 0}}})
	if err == nil || !strings.Contains(err.Error(), "spec.disks[0].sizeGiB") {
		t.Errorf("bad disk: %v", err)
	}
	if err := p.Start(ctx, "missing"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("start of a missing vm: %v", err)
	}
	if err := p.Delete(ctx, "missing"); err != nil {
		t.Errorf("delete of a missing vm: %v", err)
	}
}

// TestUnmanagedQEMUIsReportedNotTouched: a QEMU under vms/ that n-kudo did
// not create (no meta.json) is listed as unmanaged, and every operation
// on it is refused.
func TestUnmanagedQEMUIsReportedNotTouched(t *testing.T) {
	requireQEMU(t)
	ctx := t.Context()
	p := newProvider(t, t.TempDir())
	dir := p.vmDir("foreign")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(DefaultBinary(), "-machine", "none", "-display", "none", "-nodefaults",
		"-qmp", "unix:"+p.socket("foreign")+",server=on,wait=off")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := p.status(ctx, "foreign"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the foreign qemu never answered QMP")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if vm := listOne(t, p, "foreign"); vm.Managed {
		t.Errorf("a foreign qemu is listed as managed: %+v", vm)
	}
	for op, err := range map[string]error{
		"create": p.Create(ctx, "foreign", guestSpec(t, "f", "m", false)),
		"start":  p.Start(ctx, "foreign"),
		"stop":   p.Stop(ctx, "foreign"),
		"resize": p.Resize(ctx, "foreign", 1, 128),
		"delete": p.Delete(ctx, "foreign"),
	} {
		if !errors.Is(err, agent.ErrUnmanaged) {
			t.Errorf("%s of an unmanaged VM: %v, want ErrUnmanaged", op, err)
		}
	}
	if _, err := os.Stat(dir); err != nil || !processAlive(cmd.Process.Pid) {
		t.Errorf("the foreign VM was touched: dir %v, alive %v", err, processAlive(cmd.Process.Pid))
	}
}

func TestProbeBootsUnderTCG(t *testing.T) {
	requireQEMU(t)
	if err := Probe(t.Context(), DefaultBinary(), AccelTCG); err != nil {
		t.Fatalf("the probe guest does not boot under TCG: %v", err)
	}
	accel, note, err := ResolveAccel(t.Context(), DefaultBinary(), AccelAuto)
	if err != nil {
		t.Fatal(err)
	}
	kvmErr := Probe(t.Context(), DefaultBinary(), AccelKVM)
	if (kvmErr == nil) != (accel == AccelKVM) {
		t.Errorf("auto chose %s (%s) while the KVM probe says %v", accel, note, kvmErr)
	}
	t.Logf("auto → %s (%s)", accel, note)
	if _, _, err := ResolveAccel(t.Context(), DefaultBinary(), "hvf"); err == nil || !strings.Contains(err.Error(), "accel") {
		t.Errorf("unknown accel: %v", err)
	}
}

func TestVersion(t *testing.T) {
	requireQEMU(t)
	p := newProvider(t, t.TempDir())
	path, v, err := p.Version(t.Context())
	if err != nil || path == "" || !strings.Contains(v, ".") {
		t.Fatalf("Version = %q %q %v", path, v, err)
	}
}

// TestInterruptedCreateIsRedone: a create that died half-way (meta.json
// still in phase creating, files half there) is not reported and the next
// create rebuilds it.
func TestInterruptedCreateIsRedone(t *testing.T) {
	requireQEMU(t)
	ctx := t.Context()
	p := newProvider(t, t.TempDir())
	spec := guestSpec(t, "ic", "m", false)
	if err := os.MkdirAll(p.vmDir("ic"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := p.writeMeta(meta{Name: "ic", Phase: phaseCreating, Spec: spec, SpecHash: spec.Hash()}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p.vmDir("ic"), "root.qcow2"), []byte("half-written"), 0o600); err != nil {
		t.Fatal(err)
	}
	if vms, err := p.List(ctx); err != nil || len(vms) != 0 {
		t.Fatalf("a half-created VM is listed: %v %+v", err, vms)
	}
	if err := p.Start(ctx, "ic"); err == nil || !strings.Contains(err.Error(), "did not finish") {
		t.Errorf("start of a half-created VM: %v", err)
	}
	if err := p.Create(ctx, "ic", spec); err != nil {
		t.Fatal(err)
	}
	if vm := listOne(t, p, "ic"); vm.State != model.VMStopped || !vm.Managed {
		t.Errorf("after the redone create: %+v", vm)
	}
	out, err := exec.Command("qemu-img", "info", filepath.Join(p.vmDir("ic"), "root.qcow2")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "backing file") {
		t.Errorf("root.qcow2 was not rebuilt as an overlay (%v):\n%s", err, out)
	}
}
