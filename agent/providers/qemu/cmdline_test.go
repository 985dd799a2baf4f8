package qemu

import (
	"strings"
	"testing"

	"github.com/nkudo/nkudo/model"
)

func TestArgsCarryHotplugHeadroomAndDisks(t *testing.T) {
	spec := model.VMSpec{CPUs: 1, MaxCPUs: 4, MemoryMiB: 256, MaxMemoryMiB: 1024,
		Kernel:   &model.Kernel{URL: "x", SHA256: "y", Cmdline: "console=ttyS0"},
		Disks:    []model.Disk{{Name: "data", SizeGiB: 2}},
		Networks: []model.Network{{Bridge: "br0"}, {Bridge: "br1", MAC: "52:54:00:aa:bb:cc"}}}
	l := launch{Name: "pos-1", Machine: "q35", Accel: "tcg", QMP: "/s/qmp.sock", PIDFile: "/s/qemu.pid", CPUs: 2, MemoryMiB: 512,
		Spec: spec, Artifacts: artifacts{Kernel: "/k", Initramfs: "/i", RootDisk: "/s/root.qcow2", Seed: "/s/cidata.img",
			Serial: "/s/serial.log", DataDisks: []string{"/s/a,b.qcow2"}}}
	got := strings.Join(l.args(), " ")
	for _, want := range []string{
		"-smp cpus=2,maxcpus=4", "-m size=512M,slots=8,maxmem=1024M", "-accel tcg -cpu max", "-machine q35",
		"-kernel /k -initrd /i -append console=ttyS0",
		"file=/s/root.qcow2,if=none,id=root,format=qcow2", "virtio-blk-pci,drive=root,serial=root",
		"file=/s/a,,b.qcow2,if=none,id=disk-data,format=qcow2",
		"file=/s/cidata.img,if=none,id=cidata,format=raw,cache=none,aio=threads,readonly=on",
		"-qmp unix:/s/qmp.sock,server=on,wait=off", "-pidfile /s/qemu.pid", "-serial file:/s/serial.log",
		"tap,id=net0,ifname=nk", "virtio-net-pci,netdev=net1,mac=52:54:00:aa:bb:cc",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("args lack %q:\n%s", want, got)
		}
	}
	l.UserNet, l.Accel, l.Spec.MaxMemoryMiB = true, "kvm", 0
	got = strings.Join(l.args(), " ")
	for _, want := range []string{"-netdev user,id=net0,restrict=on", "-cpu host", "-m size=512M -"} {
		if !strings.Contains(got, want) {
			t.Errorf("args lack %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "tap,") {
		t.Errorf("user networking still names a TAP:\n%s", got)
	}
}
