// Package guest builds the test guest of the real-VM suites from Debian
// packages already installed on the host: the linux-image-cloud-amd64
// kernel, and an initramfs of busybox-static, the kernel's virtio, FAT and
// power-button modules and an /init (init.sh) that reads the cloud-init
// NoCloud seed, applies its hostname and marker and prints a status line
// per second on the serial console.
//
// The user-data keys the guest understands are hostname, nkudo_marker (a
// string echoed in every status line) and nkudo_poweroff_once (power off
// from inside on the first boot only, remembered on the root disk).
package guest

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

//go:embed init.sh
var initScript []byte

// Modules are loaded in this order (dependencies first): virtio over PCI
// and MMIO, the network and block drivers, FAT for the seed, and the ACPI
// power button with evdev so the guest obeys system_powerdown.
var Modules = []string{
	"failover", "virtio_ring", "virtio", "virtio_mmio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev",
	"virtio_pci", "net_failover", "virtio_net", "virtio_blk", "fat", "vfat", "nls_cp437", "nls_ascii",
	"nls_utf8", "button", "evdev",
}

// Cmdline is the kernel command line the guest needs. Under TCG the TSC
// calibration hangs about one boot in five without tsc_early_khz.
const Cmdline = "console=ttyS0 quiet panic=-1 tsc_early_khz=2600000 tsc=reliable"

// Busybox is where busybox-static installs its binary.
const Busybox = "/bin/busybox"

// Kernel finds the installed cloud kernel: its vmlinuz and its version
// (the name of its /lib/modules directory).
func Kernel() (path, version string, err error) {
	matches, _ := filepath.Glob("/boot/vmlinuz-*-cloud-amd64")
	sort.Strings(matches)
	for i := len(matches) - 1; i >= 0; i-- {
		v := strings.TrimPrefix(filepath.Base(matches[i]), "vmlinuz-")
		if _, err := os.Stat(filepath.Join("/lib/modules", v, "modules.dep")); err == nil {
			return matches[i], v, nil
		}
	}
	return "", "", errors.New("no /boot/vmlinuz-*-cloud-amd64 with its /lib/modules: install linux-image-cloud-amd64")
}

// Missing names the packages (and programs) the guest and QEMU need that
// are not installed; empty when everything is there.
func Missing() []string {
	var out []string
	if _, _, err := Kernel(); err != nil {
		out = append(out, "linux-image-cloud-amd64")
	}
	if !static(Busybox) {
		out = append(out, "busybox-static")
	}
	for bin, pkg := range map[string]string{"/usr/bin/qemu-system-x86_64": "qemu-system-x86", "/usr/bin/qemu-img": "qemu-utils"} {
		if _, err := os.Stat(bin); err != nil {
			out = append(out, pkg)
		}
	}
	sort.Strings(out)
	return out
}

// static reports whether path is a statically linked ELF (no PT_INTERP),
// which a busybox from the busybox package is not.
func static(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 64 || string(b[:4]) != "\x7fELF" {
		return false
	}
	return !strings.Contains(string(b[:min(len(b), 4096)]), "/lib64/ld-linux")
}

// Build writes the guest's initramfs (cpio newc, uncompressed) for the
// kernel of version kver to w.
func Build(w io.Writer, kver string) error {
	bb, err := os.ReadFile(Busybox)
	if err != nil {
		return fmt.Errorf("read busybox: %w", err)
	}
	deps, err := moduleFiles(kver)
	if err != nil {
		return err
	}
	cw := &cpioWriter{w: w}
	for _, d := range []string{"bin", "dev", "etc", "lib", "lib/modules", "proc", "sys", "seed", "tmp"} {
		cw.dir(d)
	}
	cw.file("bin/busybox", 0o755, bb)
	cw.file("init", 0o755, initScript)
	var order []string
	for _, m := range Modules {
		rel, ok := deps[m]
		if !ok {
			return fmt.Errorf("kernel %s has no module %s (is it built in? then drop it from guest.Modules)", kver, m)
		}
		b, err := os.ReadFile(filepath.Join("/lib/modules", kver, rel))
		if err != nil {
			return fmt.Errorf("read module %s: %w", m, err)
		}
		cw.file("lib/modules/"+m+".ko", 0o644, b)
		order = append(order, m)
	}
	cw.file("etc/modules-order", 0o644, []byte(strings.Join(order, "\n")+"\n"))
	cw.trailer()
	return cw.err
}

// moduleFiles maps module names to their paths in modules.dep. Compressed
// modules are not supported: Debian 12's cloud kernel ships plain .ko files.
func moduleFiles(kver string) (map[string]string, error) {
	b, err := os.ReadFile(filepath.Join("/lib/modules", kver, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("modules of kernel %s: %w", kver, err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		rel, _, ok := strings.Cut(line, ":")
		if !ok || !strings.HasSuffix(rel, ".ko") {
			continue
		}
		name := strings.TrimSuffix(filepath.Base(rel), ".ko")
		out[strings.ReplaceAll(name, "-", "_")] = rel
	}
	return out, nil
}

// cpioWriter writes the "newc" cpio format the kernel unpacks.
type cpioWriter struct {
	w   io.Writer
	ino int
	n   int64
	err error
}

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.err = err
}

func (c *cpioWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

func (c *cpioWriter) entry(name string, mode uint32, data []byte) {
	c.ino++
	nlink := 1
	if mode&0o040000 != 0 {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write(append([]byte(name), 0))
	c.pad()
	c.write(data)
	c.pad()
}

func (c *cpioWriter) dir(name string)                         { c.entry(name, 0o040755, nil) }
func (c *cpioWriter) file(name string, perm uint32, b []byte) { c.entry(name, 0o100000|perm, b) }
func (c *cpioWriter) trailer()                                { c.entry("TRAILER!!!", 0, nil) }

// Files writes the guest's kernel (a copy of the installed vmlinuz) and
// initramfs into dir and returns their paths.
func Files(dir string) (kernel, initramfs string, err error) {
	src, kver, err := Kernel()
	if err != nil {
		return "", "", err
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return "", "", fmt.Errorf("read kernel: %w", err)
	}
	kernel, initramfs = filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initramfs.cpio")
	if err := os.WriteFile(kernel, b, 0o644); err != nil {
		return "", "", fmt.Errorf("write kernel: %w", err)
	}
	f, err := os.Create(initramfs)
	if err != nil {
		return "", "", fmt.Errorf("write initramfs: %w", err)
	}
	if err := Build(f, kver); err != nil {
		f.Close()
		return "", "", err
	}
	if err := f.Close(); err != nil {
		return "", "", fmt.Errorf("write initramfs: %w", err)
	}
	return kernel, initramfs, nil
}

// UserData is the cloud-config the guest understands.
func UserData(hostname, marker string, powerOffOnce bool) string {
	s := "#cloud-config\nhostname: " + hostname + "\nnkudo_marker: " + marker + "\n"
	if powerOffOnce {
		s += "nkudo_poweroff_once: true\n"
	}
	return s
}

// Status is one status line of the guest's serial console.
type Status struct {
	Hostname, Marker string
	CPUs             int
	MemKiB           int
}

// LastStatus parses the last complete NKUDO-STATUS line of a serial log;
// ok is false when there is none yet.
func LastStatus(serial []byte) (s Status, ok bool) {
	lines := strings.Split(string(serial), "\n")
	for i := len(lines) - 2; i >= 0; i-- { // the last element is an unfinished line
		f := strings.Fields(lines[i])
		if len(f) == 0 || f[0] != "NKUDO-STATUS" {
			continue
		}
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "hostname":
				s.Hostname = v
			case "marker":
				s.Marker = v
			case "cpus":
				fmt.Sscanf(v, "%d", &s.CPUs)
			case "memkb":
				fmt.Sscanf(v, "%d", &s.MemKiB)
			}
		}
		return s, true
	}
	return s, false
}
