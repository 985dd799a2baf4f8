package diff_test

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"github.com/nkudo/nkudo/diff"
	"github.com/nkudo/nkudo/model"
)

// siteModel is a site as an agent sees it: VM name → observed VM. apply
// mutates it the way an agent executing an action would, and refuses what an
// agent could not do (start a running VM, delete a running one, create over
// an existing name, resize to another spec's ceilings, touch an unmanaged VM).
type siteModel map[string]model.ObservedVM

func (m siteModel) apply(a model.Action) error {
	vm, exists := m[a.VM]
	if exists && !vm.Managed {
		return fmt.Errorf("%s %s: touches an unmanaged VM", a.Operation, a.VM)
	}
	if !exists && a.Operation != model.OpCreate {
		return fmt.Errorf("%s %s: no such VM", a.Operation, a.VM)
	}
	switch a.Operation {
	case model.OpStop:
		if vm.State != model.VMRunning {
			return fmt.Errorf("stop %s: not running", a.VM)
		}
		vm.State = model.VMStopped
	case model.OpDelete:
		if vm.State == model.VMRunning {
			return fmt.Errorf("delete %s: still running", a.VM)
		}
		delete(m, a.VM)
		return nil
	case model.OpCreate:
		if exists {
			return fmt.Errorf("create %s: already exists", a.VM)
		}
		if a.Spec == nil || a.SpecHash != a.Spec.Hash() {
			return fmt.Errorf("create %s: missing spec or wrong spec hash", a.VM)
		}
		vm = model.ObservedVM{Name: a.VM, State: model.VMStopped, Managed: true, SpecHash: a.SpecHash,
			CPUs: a.Spec.CPUs, MemoryMiB: a.Spec.MemoryMiB, MaxCPUs: a.Spec.MaxCPUs, MaxMemoryMiB: a.Spec.MaxMemoryMiB}
	case model.OpResize:
		// Equal hashes mean equal ceilings, so the new size fits the VM.
		if a.Spec == nil || vm.SpecHash != a.Spec.Hash() {
			return fmt.Errorf("resize %s: spec hash differs from the VM's", a.VM)
		}
		vm.CPUs, vm.MemoryMiB = a.Spec.CPUs, a.Spec.MemoryMiB
	case model.OpStart:
		if vm.State == model.VMRunning {
			return fmt.Errorf("start %s: already running", a.VM)
		}
		vm.State = model.VMRunning
	default:
		return fmt.Errorf("unknown operation %q", a.Operation)
	}
	m[a.VM] = vm
	return nil
}

func (m siteModel) applyAll(actions []model.Action) error {
	for _, a := range actions {
		if err := m.apply(a); err != nil {
			return err
		}
	}
	return nil
}

func (m siteModel) clone() siteModel { return maps.Clone(m) }

func (m siteModel) inventory(site string, version int64) model.Inventory {
	inv := model.Inventory{Site: site, Version: version, Reported: true}
	for _, name := range slices.Sorted(maps.Keys(m)) {
		inv.VMs = append(inv.VMs, m[name])
	}
	return inv
}

// converged says whether m holds exactly the desired managed VMs of a site
// (conflicting names excepted) and the unmanaged VMs it started with.
func converged(m, before siteModel, want []model.VirtualMachine, conflicts []diff.Conflict) error {
	skip := map[string]bool{}
	for _, c := range conflicts {
		skip[c.VM] = true
	}
	wanted := map[string]bool{}
	for _, d := range want {
		wanted[d.Name] = true
		if skip[d.Name] {
			continue
		}
		vm, ok := m[d.Name]
		switch {
		case !ok:
			return fmt.Errorf("%s missing", d.Name)
		case !vm.Managed:
			return fmt.Errorf("%s not managed", d.Name)
		case vm.SpecHash != d.Spec.Hash():
			return fmt.Errorf("%s has spec %s, want %s", d.Name, vm.SpecHash, d.Spec.Hash())
		case vm.CPUs != d.Spec.CPUs || vm.MemoryMiB != d.Spec.MemoryMiB:
			return fmt.Errorf("%s has %d cpus %d MiB, want %d, %d", d.Name, vm.CPUs, vm.MemoryMiB, d.Spec.CPUs, d.Spec.MemoryMiB)
		case (vm.State == model.VMRunning) != (d.Spec.State == model.VMRunning):
			return fmt.Errorf("%s is %q, want %s", d.Name, vm.State, d.Spec.State)
		}
	}
	for name, vm := range m {
		if vm.Managed && !wanted[name] {
			return fmt.Errorf("%s still present but not desired", name)
		}
	}
	for name, vm := range before {
		if !vm.Managed && !cmp.Equal(vm, m[name]) {
			return fmt.Errorf("unmanaged %s changed", name)
		}
	}
	return nil
}

var vmNames = []string{"a", "b", "c", "d", "e", "f", "g"}

func genSpec(t *rapid.T, label string) model.VMSpec {
	s := model.VMSpec{
		State:     rapid.SampledFrom([]model.VMState{model.VMRunning, model.VMStopped}).Draw(t, label+".state"),
		CPUs:      rapid.IntRange(1, 4).Draw(t, label+".cpus"),
		MaxCPUs:   rapid.SampledFrom([]int{0, 4, 8}).Draw(t, label+".maxCpus"),
		MemoryMiB: rapid.SampledFrom([]int{512, 1024}).Draw(t, label+".memoryMiB"),
		Image:     &model.Image{URL: "https://images.example/x.raw", SHA256: rapid.SampledFrom([]string{"11", "22"}).Draw(t, label+".image")},
	}
	s.MaxMemoryMiB = rapid.SampledFrom([]int{0, 2048}).Draw(t, label+".maxMemoryMiB")
	return s
}

// genSite draws a desired VM set and an observed one for one site. Observed
// managed VMs are often made from the desired spec (so same-hash cases such
// as start, stop and resize are common), sometimes from another spec.
func genSite(t *rapid.T, site string) ([]model.VirtualMachine, siteModel) {
	var want []model.VirtualMachine
	for _, n := range vmNames {
		if rapid.Bool().Draw(t, site+"/"+n+".desired") {
			want = append(want, model.VirtualMachine{Name: n, Site: site, Spec: genSpec(t, site+"/"+n)})
		}
	}
	m := siteModel{}
	for _, n := range vmNames {
		label := site + "/" + n + ".actual"
		switch rapid.IntRange(0, 3).Draw(t, label) {
		case 0: // absent
		case 1: // unmanaged
			m[n] = model.ObservedVM{Name: n, State: rapid.SampledFrom([]model.VMState{model.VMRunning, model.VMStopped, ""}).Draw(t, label+".state"),
				CPUs: rapid.IntRange(1, 16).Draw(t, label+".cpus"), MemoryMiB: 4096}
		default: // managed, from the desired spec when there is one, else a random one
			s := genSpec(t, label)
			if i := slices.IndexFunc(want, func(v model.VirtualMachine) bool { return v.Name == n }); i >= 0 && rapid.Bool().Draw(t, label+".same") {
				s = want[i].Spec
			}
			m[n] = model.ObservedVM{Name: n, Managed: true, SpecHash: s.Hash(),
				State:     rapid.SampledFrom([]model.VMState{model.VMRunning, model.VMStopped, ""}).Draw(t, label+".state"),
				CPUs:      rapid.IntRange(1, s.EffectiveMaxCPUs()).Draw(t, label+".cpus"),
				MemoryMiB: rapid.SampledFrom([]int{512, 1024, s.EffectiveMaxMemoryMiB()}).Draw(t, label+".memoryMiB"),
				MaxCPUs:   s.MaxCPUs, MaxMemoryMiB: s.MaxMemoryMiB}
		}
	}
	return want, m
}

type fleet struct {
	desired model.Desired
	models  map[string]siteModel
	actual  map[string]model.Inventory
	want    map[string][]model.VirtualMachine
}

// genFleet draws 1–3 sites in git (plus, sometimes, one site gone from git
// but still reporting VMs).
func genFleet(t *rapid.T, allowPrune bool) fleet {
	f := fleet{models: map[string]siteModel{}, actual: map[string]model.Inventory{}, want: map[string][]model.VirtualMachine{}}
	n := rapid.IntRange(1, 3).Draw(t, "sites")
	for i := range n {
		site := "site-" + strconv.Itoa(i)
		s := model.Site{Name: site}
		if allowPrune {
			s.Annotations = map[string]string{model.AnnotationAllowPrune: "true"}
		}
		f.desired.Sites = append(f.desired.Sites, s)
		want, m := genSite(t, site)
		f.desired.VMs = append(f.desired.VMs, want...)
		f.want[site] = want
		f.models[site] = m
	}
	if rapid.Bool().Draw(t, "removedSite") {
		_, m := genSite(t, "site-gone")
		f.models["site-gone"] = m
	}
	for site, m := range f.models {
		f.actual[site] = m.inventory(site, rapid.Int64Range(0, 1000).Draw(t, site+".version"))
	}
	return f
}

func TestPropertyConverges(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		f := genFleet(t, false)
		opts := diff.Options{Tenant: "t", PruneLimit: diff.PruneUnlimited}
		r := diff.Plan(f.desired, f.actual, opts)

		for _, sr := range r.Sites {
			if sr.Refused != "" {
				t.Fatalf("site %s refused with an unlimited prune limit: %s", sr.Site, sr.Refused)
			}
			before := f.models[sr.Site]
			if before == nil {
				before = siteModel{}
			}
			checkOrder(t, sr)

			// Applying the plan converges the site and touches nothing unmanaged.
			m := before.clone()
			if err := m.applyAll(sr.Plan.Actions); err != nil {
				t.Fatalf("site %s: apply: %v\nplan: %v", sr.Site, err, sr.Plan.Actions)
			}
			if err := converged(m, before, f.want[sr.Site], sr.Conflicts); err != nil {
				t.Fatalf("site %s: not converged: %v\nplan: %v", sr.Site, err, sr.Plan.Actions)
			}

			// Planning again yields nothing.
			again := diff.Plan(f.desired, map[string]model.Inventory{sr.Site: m.inventory(sr.Site, sr.Plan.InventoryVersion+1)},
				diff.Options{Tenant: "t", Sites: []string{sr.Site}})
			if len(again.Sites) != 1 || len(again.Sites[0].Plan.Actions) != 0 || again.Sites[0].Refused != "" {
				t.Fatalf("site %s: re-plan after apply is not empty: %+v", sr.Site, again.Sites)
			}

			// Minimality: without any one action the site no longer converges.
			for i := range sr.Plan.Actions {
				rest := slices.Delete(slices.Clone(sr.Plan.Actions), i, i+1)
				m := before.clone()
				if err := m.applyAll(rest); err != nil {
					continue
				}
				if converged(m, before, f.want[sr.Site], sr.Conflicts) == nil {
					t.Fatalf("site %s: action %d (%s %s) is superfluous", sr.Site, i, sr.Plan.Actions[i].Operation, sr.Plan.Actions[i].VM)
				}
			}
		}
	})
}

// InSync agrees with the planner: a desired VM is in sync exactly when it
// is observed, managed, and its site's plan has no action for it.
func TestPropertyInSync(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		want, m := genSite(t, "s")
		r := diff.Plan(model.Desired{Sites: []model.Site{{Name: "s"}}, VMs: want},
			map[string]model.Inventory{"s": m.inventory("s", 1)}, diff.Options{Tenant: "t", PruneLimit: diff.PruneUnlimited})
		planned := map[string]bool{}
		for _, a := range r.Sites[0].Plan.Actions {
			planned[a.VM] = true
		}
		for _, d := range want {
			var observed *model.ObservedVM
			if o, ok := m[d.Name]; ok {
				observed = &o
			}
			wantSync := observed != nil && observed.Managed && !planned[d.Name]
			if got := diff.InSync(&d.Spec, observed); got != wantSync {
				t.Fatalf("%s: InSync = %v, want %v (observed %+v, planned %v)", d.Name, got, wantSync, observed, planned[d.Name])
			}
		}
		if diff.InSync(nil, &model.ObservedVM{Managed: true}) {
			t.Fatal("InSync without a desired spec")
		}
	})
}

func checkOrder(t *rapid.T, sr diff.SiteResult) {
	seen := map[string]bool{}
	for i, a := range sr.Plan.Actions {
		if seen[a.ID] {
			t.Fatalf("site %s: duplicate action ID", sr.Site)
		}
		seen[a.ID] = true
		if i == 0 {
			continue
		}
		p := sr.Plan.Actions[i-1]
		if p.Operation.Phase() > a.Operation.Phase() || (p.Operation.Phase() == a.Operation.Phase() && p.VM >= a.VM) {
			t.Fatalf("site %s: %s %s after %s %s breaks the phase order", sr.Site, a.Operation, a.VM, p.Operation, p.VM)
		}
	}
	for _, u := range sr.Plan.Unmanaged {
		for _, a := range sr.Plan.Actions {
			if a.VM == u {
				t.Fatalf("site %s: %s touches unmanaged %s", sr.Site, a.Operation, u)
			}
		}
	}
}

// The same inputs, in any order, give the same result, IDs included.
func TestPropertyDeterministic(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		f := genFleet(t, rapid.Bool().Draw(t, "allowPrune"))
		opts := diff.Options{Tenant: "t", Commit: "c"}
		first := diff.Plan(f.desired, f.actual, opts)

		shuffled := model.Desired{
			Sites: rapid.Permutation(f.desired.Sites).Draw(t, "sitesOrder"),
			VMs:   rapid.Permutation(f.desired.VMs).Draw(t, "vmsOrder"),
		}
		actual := map[string]model.Inventory{}
		for site, inv := range f.actual {
			inv.VMs = rapid.Permutation(inv.VMs).Draw(t, site+".order")
			actual[site] = inv
		}
		if d := cmp.Diff(first, diff.Plan(shuffled, actual, opts)); d != "" {
			t.Fatalf("reordered input changes the result:\n%s", d)
		}
	})
}

// Prune safety under the default rule: a site is refused exactly when it
// would prune all of its managed VMs, or more than half when it has more than
// 4, and a refused plan never reaches Plans.
func TestPropertyPruneSafety(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		allow := rapid.Bool().Draw(t, "allowPrune")
		f := genFleet(t, allow)
		r := diff.Plan(f.desired, f.actual, diff.Options{Tenant: "t"})
		planned := map[string]bool{}
		for _, p := range r.Plans() {
			planned[p.Site] = true
		}
		for _, sr := range r.Sites {
			managed, pruned := 0, 0
			wanted := map[string]bool{}
			for _, d := range f.want[sr.Site] {
				wanted[d.Name] = true
			}
			for name, vm := range f.models[sr.Site] {
				if vm.Managed {
					managed++
					if !wanted[name] {
						pruned++
					}
				}
			}
			optedIn := allow && sr.Site != "site-gone"
			wantRefused := !optedIn && pruned > 0 && (pruned == managed || (managed > 4 && 2*pruned > managed))
			if (sr.Refused != "") != wantRefused {
				t.Fatalf("site %s: %d of %d managed pruned, opted in %v: refused %q, want refused %v", sr.Site, pruned, managed, optedIn, sr.Refused, wantRefused)
			}
			if wantRefused && planned[sr.Site] {
				t.Fatalf("site %s: refused plan returned by Plans", sr.Site)
			}
			if !wantRefused && len(sr.Plan.Actions) > 0 && !planned[sr.Site] {
				t.Fatalf("site %s: plan missing from Plans", sr.Site)
			}
		}
	})
}

// An empty desired set never deletes anything.
func TestPropertyEmptyDesiredDeletesNothing(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		f := genFleet(t, false)
		for _, p := range diff.Plan(model.Desired{}, f.actual, diff.Options{}).Plans() {
			for _, a := range p.Actions {
				if a.Operation == model.OpDelete {
					t.Fatalf("empty desired set deletes %s at %s", a.VM, p.Site)
				}
			}
		}
	})
}
