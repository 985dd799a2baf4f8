package diff_test

import (
	"slices"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/diff"
	"github.com/nkudo/nkudo/model"
)

func spec(state model.VMState, cpus int) model.VMSpec {
	return model.VMSpec{State: state, CPUs: cpus, MemoryMiB: 1024,
		Image: &model.Image{URL: "https://images.example/pos.raw", SHA256: "9f2c"}}
}

func onlySite(t *testing.T, r diff.Result) diff.SiteResult {
	t.Helper()
	if len(r.Sites) != 1 {
		t.Fatalf("got %d sites, want 1", len(r.Sites))
	}
	return r.Sites[0]
}

// A VM stopped by hand twice is repaired twice: the two start actions must
// have different IDs, or the agent would answer the second from its cache.
func TestActionIDInventoryVersion(t *testing.T) {
	s := spec(model.VMRunning, 2)
	desired := model.Desired{Sites: []model.Site{{Name: "s"}}, VMs: []model.VirtualMachine{{Name: "vm", Site: "s", Spec: s}}}
	stopped := func(version int64) map[string]model.Inventory {
		return map[string]model.Inventory{"s": {Site: "s", Version: version, Reported: true, VMs: []model.ObservedVM{
			{Name: "vm", State: model.VMStopped, Managed: true, SpecHash: s.Hash(), CPUs: 2, MemoryMiB: 1024}}}}
	}
	opts := diff.Options{Tenant: "t"}
	first := onlySite(t, diff.Plan(desired, stopped(5), opts)).Plan
	again := onlySite(t, diff.Plan(desired, stopped(5), opts)).Plan
	second := onlySite(t, diff.Plan(desired, stopped(7), opts)).Plan
	if diff := cmp.Diff(first, again); diff != "" {
		t.Errorf("same inputs, different plans:\n%s", diff)
	}
	if len(first.Actions) != 1 || len(second.Actions) != 1 {
		t.Fatalf("want one start action each, got %v and %v", first.Actions, second.Actions)
	}
	if first.Actions[0].ID == second.Actions[0].ID {
		t.Errorf("start at inventory v5 and v7 share action ID %s", first.Actions[0].ID)
	}
	if first.ID == second.ID {
		t.Errorf("plans at inventory v5 and v7 share plan ID %s", first.ID)
	}
	other := onlySite(t, diff.Plan(desired, stopped(5), diff.Options{Tenant: "u"})).Plan
	if other.Actions[0].ID == first.Actions[0].ID || other.ID == first.ID {
		t.Errorf("tenants t and u share IDs")
	}
	// The commit is not part of any ID: an identical plan from a later commit is the same plan.
	later := onlySite(t, diff.Plan(desired, stopped(5), diff.Options{Tenant: "t", Commit: "abc"})).Plan
	if later.ID != first.ID || later.Commit != "abc" {
		t.Errorf("commit changed the plan ID or was not recorded: %s vs %s, commit %q", later.ID, first.ID, later.Commit)
	}
}

// Two resizes of the same VM to different sizes must not share an ID.
func TestActionIDResizeTarget(t *testing.T) {
	ids := map[string]int{}
	for _, cpus := range []int{3, 4} {
		s := spec(model.VMRunning, cpus)
		s.MaxCPUs = 8
		desired := model.Desired{Sites: []model.Site{{Name: "s"}}, VMs: []model.VirtualMachine{{Name: "vm", Site: "s", Spec: s}}}
		actual := map[string]model.Inventory{"s": {Site: "s", Version: 1, Reported: true, VMs: []model.ObservedVM{
			{Name: "vm", State: model.VMRunning, Managed: true, SpecHash: s.Hash(), CPUs: 2, MemoryMiB: 1024, MaxCPUs: 8}}}}
		p := onlySite(t, diff.Plan(desired, actual, diff.Options{})).Plan
		if len(p.Actions) != 1 || p.Actions[0].Operation != model.OpResize {
			t.Fatalf("cpus %d: want one resize, got %+v", cpus, p.Actions)
		}
		ids[p.Actions[0].ID] = cpus
	}
	if len(ids) != 2 {
		t.Errorf("resizes to 3 and 4 cpus share an action ID")
	}
}

// The result does not depend on the order of the input slices.
func TestPlanInputOrder(t *testing.T) {
	var desired model.Desired
	actual := map[string]model.Inventory{}
	for si := range 3 {
		site := "s" + strconv.Itoa(si)
		desired.Sites = append(desired.Sites, model.Site{Name: site})
		inv := model.Inventory{Site: site, Version: int64(si), Reported: true}
		for v := range 5 {
			name := "vm" + strconv.Itoa(v)
			s := spec(model.VMRunning, 1+v%2)
			desired.VMs = append(desired.VMs, model.VirtualMachine{Name: name, Site: site, Spec: s})
			if v%2 == 0 {
				inv.VMs = append(inv.VMs, model.ObservedVM{Name: name, Managed: true, SpecHash: "old", State: model.VMRunning})
			}
		}
		inv.VMs = append(inv.VMs, model.ObservedVM{Name: "gone", Managed: true, SpecHash: "x", State: model.VMRunning},
			model.ObservedVM{Name: "nas", State: model.VMRunning})
		actual[site] = inv
	}
	want := diff.Plan(desired, actual, diff.Options{Tenant: "t"})

	slices.Reverse(desired.Sites)
	slices.Reverse(desired.VMs)
	for site, inv := range actual {
		slices.Reverse(inv.VMs)
		actual[site] = inv
	}
	got := diff.Plan(desired, actual, diff.Options{Tenant: "t"})
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("reversed input gives a different result (-want +got):\n%s", diff)
	}
}

// Actions carry a copy of the desired spec: changing the plan must not
// change the caller's manifests.
func TestPlanDoesNotAliasInput(t *testing.T) {
	desired := model.Desired{VMs: []model.VirtualMachine{{Name: "vm", Site: "s", Spec: spec(model.VMRunning, 2)}}}
	p := onlySite(t, diff.Plan(desired, nil, diff.Options{})).Plan
	p.Actions[0].Spec.CPUs = 99
	if desired.VMs[0].Spec.CPUs != 2 {
		t.Errorf("plan aliases the desired spec")
	}
}

func TestOptionsSites(t *testing.T) {
	desired := model.Desired{VMs: []model.VirtualMachine{
		{Name: "vm", Site: "a", Spec: spec(model.VMRunning, 2)},
		{Name: "vm", Site: "b", Spec: spec(model.VMRunning, 2)},
	}}
	for _, tc := range []struct {
		name  string
		sites []string
		want  []string
	}{
		{"nil plans all", nil, []string{"a", "b"}},
		{"empty plans none", []string{}, nil},
		{"one", []string{"b"}, []string{"b"}},
		{"unknown ignored", []string{"zzz", "a"}, []string{"a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, s := range diff.Plan(desired, nil, diff.Options{Sites: tc.sites}).Sites {
				got = append(got, s.Site)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Error(diff)
			}
		})
	}
}
