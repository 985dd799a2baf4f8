package demo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nkudo/nkudo/agent/providers/qemu"
	"github.com/nkudo/nkudo/tests/vm/guest"
)

// ProviderQEMU selects real guests under QEMU (Options.Provider).
const ProviderQEMU = "qemu"

// qemuSite is the one site of the QEMU demo fleet.
const qemuSite = "lab"

// qemuFleet builds the test guest (the Debian cloud kernel with a busybox
// initramfs, see tests/vm/guest), serves it from the demo's payload server
// at base and writes a one-site, one-VM repository for it into dir. The
// example fleet is not used: its dozen VMs and gigabytes would not boot
// under software emulation; the second commit grows this VM and adds a
// kiosk beside it, so at most two guests run.
func (d *demo) qemuFleet(dir, base string) (string, error) {
	if m := guest.Missing(); len(m) > 0 {
		return "", fmt.Errorf("demo --hypervisor qemu needs the packages %v (apt-get install -y qemu-system-x86 qemu-utils linux-image-cloud-amd64 busybox-static)", m)
	}
	gdir := filepath.Join(dir, "guest")
	if err := os.MkdirAll(gdir, 0o755); err != nil {
		return "", fmt.Errorf("demo: %w", err)
	}
	kernel, initrd, err := guest.Files(gdir)
	if err != nil {
		return "", fmt.Errorf("demo: build the guest: %w", err)
	}
	refs := map[string]string{}
	d.pay.mu.Lock()
	if d.pay.files == nil {
		d.pay.files = map[string][]byte{}
	}
	for name, content := range map[string][]byte{"vmlinuz": nil, "initramfs": nil, "root.raw": make([]byte, 1<<20)} {
		if content == nil {
			src := kernel
			if name == "initramfs" {
				src = initrd
			}
			if content, err = os.ReadFile(src); err != nil {
				d.pay.mu.Unlock()
				return "", fmt.Errorf("demo: %w", err)
			}
		}
		sum := sha256.Sum256(content)
		d.pay.files["/images/guest/"+name] = content
		refs[name] = hex.EncodeToString(sum[:])
	}
	d.pay.mu.Unlock()
	repo := filepath.Join(dir, "qemu-fleet")
	files := map[string]string{
		"sites/" + qemuSite + ".yaml": "apiVersion: nkudo.io/v1alpha1\nkind: Site\nmetadata:\n  name: " + qemuSite + "\nspec: {}\n",
		"vms/" + qemuSite + "/camera-gw.yaml": fmt.Sprintf(`# A real guest under QEMU: the Debian cloud kernel with a busybox initramfs
# that prints its hostname, vCPUs and memory on the serial console
# (<data-dir>/s/%[1]s/qemu/vms/camera-gw/serial.log) once a second.
apiVersion: nkudo.io/v1alpha1
kind: VirtualMachine
metadata:
  name: camera-gw
  site: %[1]s
spec:
  state: Running
  cpus: 1
  maxCpus: 2
  memoryMiB: 256
  maxMemoryMiB: 512
  image:
    url: %[2]s/images/guest/root.raw
    sha256: %[3]s
  kernel:
    url: %[2]s/images/guest/vmlinuz
    sha256: %[4]s
    cmdline: %[5]s
    initramfs:
      url: %[2]s/images/guest/initramfs
      sha256: %[6]s
  networks:
    - bridge: br-lab
  cloudInit:
    userData: |
      #cloud-config
      hostname: camera-gw
      nkudo_marker: n-kudo-demo
`, qemuSite, base, refs["root.raw"], refs["vmlinuz"], guest.Cmdline, refs["initramfs"]),
	}
	for name, content := range files {
		p := filepath.Join(repo, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", fmt.Errorf("demo: %w", err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return "", fmt.Errorf("demo: %w", err)
		}
	}
	return repo, nil
}

// shutdownQEMU ends every QEMU the demo's agents launched.
func shutdownQEMU(ctx context.Context, sitesDir string) error {
	entries, err := os.ReadDir(sitesDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	var errs []error
	for _, e := range entries {
		state := filepath.Join(sitesDir, e.Name(), "qemu")
		if _, err := os.Stat(state); err != nil {
			continue
		}
		p, err := qemu.New(qemu.Options{StateDir: state, StopTimeout: time.Second})
		if err == nil {
			err = p.Shutdown(ctx)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("stop the guests of %s: %w", e.Name(), err))
		}
	}
	return errors.Join(errs...)
}
