package schema

import (
	"os"
	"testing"

	"github.com/nkudo/nkudo/model"
)

// TestExampleRepository keeps manifests-example loading clean and as
// described in its README.
func TestExampleRepository(t *testing.T) {
	d, err := Load(os.DirFS("../manifests-example"))
	if err != nil {
		t.Fatalf("manifests-example does not load:\n%v", err)
	}
	if len(d.Sites) < 3 || len(d.VMs) < 8 {
		t.Errorf("got %d sites and %d VMs, want at least 3 and 8", len(d.Sites), len(d.VMs))
	}
	var stopped, headroom, firmware, kernel int
	for _, vm := range d.VMs {
		if vm.Spec.State == model.VMStopped {
			stopped++
		}
		if vm.Spec.MaxCPUs > vm.Spec.CPUs || vm.Spec.MaxMemoryMiB > vm.Spec.MemoryMiB {
			headroom++
		}
		if vm.Spec.Firmware != nil {
			firmware++
		}
		if vm.Spec.Kernel != nil {
			kernel++
		}
	}
	if stopped == 0 || stopped == len(d.VMs) || headroom == 0 || firmware == 0 || kernel == 0 {
		t.Errorf("want running and stopped VMs, resize headroom, kernel and firmware boot; got %d stopped of %d, %d with headroom, %d firmware, %d kernel",
			stopped, len(d.VMs), headroom, firmware, kernel)
	}
	prune := 0
	for _, s := range d.Sites {
		if s.AllowsPrune() {
			prune++
		}
	}
	if prune != 1 {
		t.Errorf("%d sites allow pruning, want exactly one (tower-17)", prune)
	}
}
