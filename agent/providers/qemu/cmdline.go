package qemu

import (
	"fmt"
	"strings"

	"github.com/nkudo/nkudo/agent/providers/internal/tap"
	"github.com/nkudo/nkudo/model"
)

// artifacts are the host paths a VM's command line points at.
type artifacts struct {
	Kernel, Initramfs, Firmware, RootDisk, Seed, Serial string
	DataDisks                                           []string // same order as spec.Disks
}

// launch is what one QEMU process is started with.
type launch struct {
	Name, Machine, Accel, QMP, PIDFile string
	CPUs, MemoryMiB                    int
	Spec                               model.VMSpec
	Artifacts                          artifacts
	// UserNet attaches the NICs to isolated user-mode backends instead of
	// the VM's TAPs (networking disabled).
	UserNet bool
}

// dimmSlots is how many memory hotplug slots a VM gets: one DIMM per grow.
const dimmSlots = 8

// args builds the command line. The VM boots with its current size; the
// rest up to the ceilings is hotplug headroom (maxcpus, maxmem with slots).
func (l launch) args() []string {
	cpu := cpuModel(l.Accel)
	maxCPUs := max(l.Spec.EffectiveMaxCPUs(), l.CPUs)
	maxMem := max(l.Spec.EffectiveMaxMemoryMiB(), l.MemoryMiB)
	mem := fmt.Sprintf("size=%dM", l.MemoryMiB)
	if maxMem > l.MemoryMiB {
		mem += fmt.Sprintf(",slots=%d,maxmem=%dM", dimmSlots, maxMem)
	}
	a := []string{
		"-name", "guest=" + l.Name + ",debug-threads=on",
		"-machine", l.Machine, "-accel", l.Accel, "-cpu", cpu,
		"-smp", fmt.Sprintf("cpus=%d,maxcpus=%d", l.CPUs, maxCPUs),
		"-m", mem,
		"-nodefaults", "-no-user-config", "-display", "none",
		"-qmp", "unix:" + l.QMP + ",server=on,wait=off",
		"-pidfile", l.PIDFile,
		"-serial", "file:" + l.Artifacts.Serial,
		"-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0",
	}
	switch {
	case l.Spec.Kernel != nil:
		a = append(a, "-kernel", l.Artifacts.Kernel)
		if l.Artifacts.Initramfs != "" {
			a = append(a, "-initrd", l.Artifacts.Initramfs)
		}
		if l.Spec.Kernel.Cmdline != "" {
			a = append(a, "-append", l.Spec.Kernel.Cmdline)
		}
	case l.Spec.Firmware != nil:
		a = append(a, "-bios", l.Artifacts.Firmware)
	}
	disk := func(id, path, format string, readonly bool) {
		d := "file=" + qemuEscape(path) + ",if=none,id=" + id + ",format=" + format + ",cache=none,aio=threads"
		if readonly {
			d += ",readonly=on"
		}
		// The serial names the disk inside the guest (/sys/block/vdX/serial).
		a = append(a, "-drive", d, "-device", "virtio-blk-pci,drive="+id+",serial="+id)
	}
	if l.Artifacts.RootDisk != "" {
		disk("root", l.Artifacts.RootDisk, "qcow2", false)
	}
	for i, d := range l.Spec.Disks {
		disk("disk-"+d.Name, l.Artifacts.DataDisks[i], "qcow2", false)
	}
	if l.Artifacts.Seed != "" {
		disk("cidata", l.Artifacts.Seed, "raw", true)
	}
	for i, n := range l.Spec.Networks {
		mac := n.MAC
		if mac == "" {
			mac = tap.MAC(l.Name, i)
		}
		id := fmt.Sprintf("net%d", i)
		if l.UserNet {
			a = append(a, "-netdev", "user,id="+id+",restrict=on")
		} else {
			a = append(a, "-netdev", "tap,id="+id+",ifname="+tap.Name(l.Name, i)+",script=no,downscript=no")
		}
		a = append(a, "-device", "virtio-net-pci,netdev="+id+",mac="+mac)
	}
	return a
}

// qemuEscape doubles commas, QEMU's escape inside option values.
func qemuEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }
