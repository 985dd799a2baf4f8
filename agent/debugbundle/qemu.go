package debugbundle

import (
	"context"
	"errors"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// collectQEMUVMs adds, per VM directory of the QEMU provider (qemu/vms),
// its metadata (redacted as for Cloud Hypervisor), the tails of its serial
// console and qemu.log, and whether its recorded QEMU process runs. A host
// that never ran QEMU has no qemu/ and gets nothing, not even a skip entry.
func (b *bundle) collectQEMUVMs(ctx context.Context) error {
	return b.eachVMDir("qemu/vms", "qemu-vms", true, func(vrel, out, vmSrc string) error {
		for _, f := range []string{"serial.log", "qemu.log"} {
			if err := b.addFile(b.state, b.o.StateDir, path.Join(vrel, f), path.Join(out, f)); err != nil {
				return err
			}
		}
		st := map[string]any{}
		if fd, err := readFile(b.state, path.Join(vrel, "qemu.pid"), 64); err == nil {
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
		if err := b.addJSON(path.Join(out, "qemu.json"), filepath.Join(vmSrc, "qemu.pid"), st); err != nil {
			return err
		}
		return ctx.Err()
	})
}
