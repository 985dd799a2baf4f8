package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Accelerations: kvm needs a /dev/kvm that runs the guest; tcg is QEMU's
// software emulation, slower but available everywhere.
const (
	AccelAuto = "auto"
	AccelKVM  = "kvm"
	AccelTCG  = "tcg"
)

// ProbeTimeout bounds the probe boot.
const ProbeTimeout = 10 * time.Second

// probeSector is a boot sector that writes 0x31 to the isa-debug-exit port
// 0xf4 (QEMU then exits with status 0x31<<1|1 = 99) and halts: proof that
// the accelerator ran guest code.
var probeSector = func() []byte {
	b := make([]byte, 512)
	copy(b, []byte{0xb0, 0x31, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd}) // mov al,0x31; out 0xf4,al; hlt; jmp $-1
	b[510], b[511] = 0x55, 0xaa
	return b
}()

const probeExit = 99

// Probe boots a one-sector guest with accel and the CPU model VMs get, and
// reports whether it ran. The presence of /dev/kvm proves nothing: some
// hosts expose one that only runs special guest kernels (and refuses the
// host CPU model's MSRs), so only a real boot answers. The probe uses the
// i440fx "pc" machine, whose firmware reaches a boot sector fastest, and is
// x86 only: elsewhere auto means TCG unless kvm is asked for.
func Probe(ctx context.Context, binary, accel string) error {
	if runtime.GOARCH != "amd64" {
		return fmt.Errorf("probe %s: the probe guest is x86 only; pass --accel kvm explicitly on %s", accel, runtime.GOARCH)
	}
	dir, err := os.MkdirTemp("", "nkudo-qemu-probe-")
	if err != nil {
		return fmt.Errorf("probe %s: %w", accel, err)
	}
	defer os.RemoveAll(dir)
	img := filepath.Join(dir, "boot.img")
	if err := os.WriteFile(img, probeSector, 0o600); err != nil {
		return fmt.Errorf("probe %s: %w", accel, err)
	}
	ctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "-machine", "pc", "-accel", accel, "-cpu", cpuModel(accel), "-nodefaults", "-no-user-config",
		"-display", "none", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
		"-drive", "file="+qemuEscape(img)+",format=raw,if=ide")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee) && ee.ExitCode() == probeExit:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("probe %s: the probe guest did not finish within %s", accel, ProbeTimeout)
	case err == nil:
		return fmt.Errorf("probe %s: qemu exited without the guest reaching its exit port", accel)
	}
	return fmt.Errorf("probe %s: %w: %s", accel, err, strings.TrimSpace(string(out)))
}

// ResolveAccel turns want (auto, kvm or tcg) into the accelerator to use.
// auto probes KVM with a real boot and falls back to TCG, returning why in
// note; kvm and tcg are taken as given.
func ResolveAccel(ctx context.Context, binary, want string) (accel, note string, err error) {
	switch want {
	case AccelKVM, AccelTCG:
		return want, "", nil
	case AccelAuto, "":
		if err := Probe(ctx, binary, AccelKVM); err != nil {
			return AccelTCG, err.Error(), nil
		}
		return AccelKVM, "", nil
	}
	return "", "", fmt.Errorf("accel %q: want auto, kvm or tcg", want)
}

// cpuModel is the CPU VMs get: the host's under KVM, everything QEMU can
// emulate under TCG.
func cpuModel(accel string) string {
	if accel == AccelKVM {
		return "host"
	}
	return "max"
}

// DefaultMachine is the machine type of this host's architecture: q35 on
// x86 (ACPI CPU and memory hotplug), virt elsewhere.
func DefaultMachine() string {
	if runtime.GOARCH == "amd64" {
		return "q35"
	}
	return "virt"
}
