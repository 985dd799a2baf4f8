package model

import "testing"

func TestVMSpecHashIgnoresResizableFields(t *testing.T) {
	base := VMSpec{
		State: VMRunning, CPUs: 2, MaxCPUs: 4, MemoryMiB: 1024, MaxMemoryMiB: 4096,
		Image:    &Image{URL: "https://images.example/pos.raw", SHA256: "ab"},
		Networks: []Network{{Bridge: "br-lan"}},
	}
	resized := base
	resized.CPUs, resized.MemoryMiB, resized.State = 4, 2048, VMStopped
	if base.Hash() != resized.Hash() {
		t.Errorf("state, cpus and memory changed the hash; they must be changeable in place")
	}

	for name, change := range map[string]func(*VMSpec){
		"maxCpus":  func(s *VMSpec) { s.MaxCPUs = 8 },
		"image":    func(s *VMSpec) { s.Image = &Image{URL: "https://images.example/pos2.raw", SHA256: "cd"} },
		"networks": func(s *VMSpec) { s.Networks = []Network{{Bridge: "br-wan"}} },
		"disks":    func(s *VMSpec) { s.Disks = []Disk{{Name: "data", SizeGiB: 10}} },
	} {
		t.Run(name, func(t *testing.T) {
			changed := base
			change(&changed)
			if changed.Hash() == base.Hash() {
				t.Errorf("changing %s kept the hash; it needs a replace", name)
			}
		})
	}
}

func TestVMSpecHashNormalisesMissingHeadroom(t *testing.T) {
	implicit := VMSpec{CPUs: 2, MemoryMiB: 512}
	explicit := VMSpec{CPUs: 2, MaxCPUs: 2, MemoryMiB: 512, MaxMemoryMiB: 512}
	if implicit.Hash() != explicit.Hash() {
		t.Errorf("maxCpus/maxMemoryMiB equal to the base must hash like their absence")
	}
	grown := VMSpec{CPUs: 3, MemoryMiB: 512}
	if grown.Hash() == implicit.Hash() {
		t.Errorf("growing cpus without headroom must change the hash (replace, not resize)")
	}
}

func TestOperationPhaseOrder(t *testing.T) {
	order := []Operation{OpStop, OpDelete, OpCreate, OpResize, OpStart}
	for i := 1; i < len(order); i++ {
		if order[i-1].Phase() >= order[i].Phase() {
			t.Errorf("%s must come before %s", order[i-1], order[i])
		}
	}
}
