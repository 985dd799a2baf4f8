package diff_test

import (
	"fmt"
	"testing"

	"github.com/nkudo/nkudo/diff"
	"github.com/nkudo/nkudo/model"
)

// benchFleet builds sites × vms desired VMs with an inventory that matches
// them except for every changeEvery-th VM (0: none), which drifts in turn by
// power state, size (within headroom) or spec (a replace).
func benchFleet(sites, vms, changeEvery int) (model.Desired, map[string]model.Inventory) {
	var desired model.Desired
	actual := make(map[string]model.Inventory, sites)
	n := 0
	for s := range sites {
		site := fmt.Sprintf("store-%04d", s)
		desired.Sites = append(desired.Sites, model.Site{Name: site, Labels: map[string]string{"region": "eu-west"}})
		inv := model.Inventory{Site: site, Version: int64(s + 1), Reported: true}
		for v := range vms {
			spec := model.VMSpec{
				State: model.VMRunning, CPUs: 2, MaxCPUs: 4, MemoryMiB: 1024, MaxMemoryMiB: 4096,
				Image:     &model.Image{URL: "https://images.example/pos.raw", SHA256: "9f2c4e1d8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d"},
				Kernel:    &model.Kernel{URL: "https://images.example/vmlinux", SHA256: "aa", Cmdline: "console=ttyS0 root=/dev/vda1"},
				Disks:     []model.Disk{{Name: "data", SizeGiB: 10}},
				Networks:  []model.Network{{Bridge: "br-lan"}},
				CloudInit: &model.CloudInit{UserData: "#cloud-config\nhostname: pos\n"},
			}
			name := fmt.Sprintf("vm-%02d", v)
			desired.VMs = append(desired.VMs, model.VirtualMachine{Name: name, Site: site, Spec: spec})
			obs := model.ObservedVM{Name: name, State: model.VMRunning, Managed: true, SpecHash: spec.Hash(),
				CPUs: 2, MemoryMiB: 1024, MaxCPUs: 4, MaxMemoryMiB: 4096}
			if changeEvery > 0 && n%changeEvery == 0 {
				switch (n / changeEvery) % 3 {
				case 0:
					obs.State = model.VMStopped
				case 1:
					obs.CPUs = 3
				case 2:
					obs.SpecHash = "old"
				}
			}
			n++
			inv.VMs = append(inv.VMs, obs)
		}
		actual[site] = inv
	}
	return desired, actual
}

// BenchmarkPlan plans 1,000 sites × 10 VMs with 1% of the VMs changed, and a
// fleet that is fully converged.
func BenchmarkPlan(b *testing.B) {
	for _, bc := range []struct {
		name        string
		changeEvery int
		wantPlans   int
	}{
		{"1000x10/1pct-changed", 100, 100},
		{"1000x10/converged", 0, 0},
	} {
		b.Run(bc.name, func(b *testing.B) {
			desired, actual := benchFleet(1000, 10, bc.changeEvery)
			opts := diff.Options{Tenant: "acme", Commit: "c0ffee"}
			if got := len(diff.Plan(desired, actual, opts).Plans()); got != bc.wantPlans {
				b.Fatalf("got %d plans, want %d", got, bc.wantPlans)
			}
			b.ReportAllocs()
			for b.Loop() {
				diff.Plan(desired, actual, opts)
			}
		})
	}
}
