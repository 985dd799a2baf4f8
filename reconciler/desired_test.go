package reconciler_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"testing"

	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/reconciler"
	"github.com/nkudo/nkudo/reconciler/gittest"
	"github.com/nkudo/nkudo/store"
)

// TestDesiredStateRecordedWithPlans: every planned site's documents land in
// the store with the plan, and a record written before the store kept
// documents is filled in by the next reconcile without planning again.
func TestDesiredStateRecordedWithPlans(t *testing.T) {
	sites := []string{gittest.SiteName(1), gittest.SiteName(2)}
	e := newEnv(t, sites, nil)
	ctx := t.Context()
	e.git.Fleet("fleet", len(sites), 2)
	c1 := e.git.Commit("two sites")
	e.mustReconcile()
	check := func(when string) {
		t.Helper()
		for _, s := range sites {
			d, err := e.st.DesiredState(ctx, tenant, s)
			if err != nil {
				t.Fatalf("%s: desired state of %s: %v", when, s, err)
			}
			var names []string
			for _, vm := range d.VMs {
				names = append(names, vm.Name)
			}
			if d.RepoID != e.repo.ID || d.Commit != c1 || d.AppliedCommit != c1 || d.Hash == "" || d.Document == nil || d.Document.Name != s ||
				!slices.Equal(names, []string{"vm-01", "vm-02"}) {
				t.Errorf("%s: desired state of %s = repo %s commit %s applied %s hash %q document %v VMs %v", when, s, d.RepoID, d.Commit, d.AppliedCommit, d.Hash, d.Document, names)
			}
		}
	}
	check("after the first reconcile")
	plans := len(e.plans())

	raw, ok := e.st.(interface {
		ExecRaw(ctx context.Context, query string, args ...any) error
	})
	if !ok {
		t.Fatalf("%T has no ExecRaw", e.st)
	}
	if err := raw.ExecRaw(ctx, `UPDATE site_desired SET state = ''`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.DesiredState(ctx, tenant, sites[0]); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("desired state without documents: %v, want not found", err)
	}
	if res := e.mustReconcile(); len(res.Planned) != 0 {
		t.Errorf("reconcile after the upgrade planned %v, want nothing", res.Planned)
	}
	check("after the documents were filled in")
	if n := len(e.plans()); n != plans {
		t.Errorf("%d plans after filling in documents, want %d", n, plans)
	}
}

// TestDriftRepairedFromStore: a replica with an empty data dir, whose git
// remote is gone, still repairs drift: it re-plans from the desired state
// in the store, without fetching the repository.
func TestDriftRepairedFromStore(t *testing.T) {
	e := newEnv(t, []string{"site-0001"}, nil)
	e.git.Fleet("fleet", 1, 2)
	e.git.Commit("two VMs")
	e.mustReconcile()
	want := desiredVMs([]string{"site-0001"}, 2, model.VMRunning)
	e.converge("site-0001", want, "")

	if err := os.RemoveAll(e.git.Remote); err != nil {
		t.Fatal(err)
	}
	opts := e.opts
	opts.DataDir = t.TempDir()
	other, err := reconciler.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { other.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	// Someone stops vm-02 by hand.
	inv := inventoryOf(want, "site-0001")
	inv[1].State = model.VMStopped
	e.heartbeat("site-0001", inv)
	other.InventoryChanged(t.Context(), tenant, "site-0001")
	waitFor(t, "drift plan from the store", func() bool {
		ap, err := e.st.ActivePlan(t.Context(), tenant, "site-0001")
		return err == nil && len(ap.Plan.Actions) == 1 && ap.Plan.Actions[0].Operation == model.OpStart && ap.Plan.Actions[0].VM == "vm-02"
	})
}

// TestDriftAfterRefusalNotRepairedFromStore: a site refused by prune
// safety keeps the record of the commit before; drift there must not be
// repaired towards that older desired state (the mirror's last valid
// commit is planned instead, and refused again).
func TestDriftAfterRefusalNotRepairedFromStore(t *testing.T) {
	e := newEnv(t, []string{"site-0001"}, nil)
	runLoop(t, e.rec)
	e.git.Fleet("fleet", 1, 2)
	e.git.Commit("two VMs")
	e.mustReconcile()
	want := desiredVMs([]string{"site-0001"}, 2, model.VMRunning)
	e.converge("site-0001", want, "")

	e.git.Write("fleet/site-0001.yaml", gittest.Site("site-0001"))
	e.git.Commit("remove every VM")
	if res := e.mustReconcile(); res.Refused["site-0001"] == "" {
		t.Fatalf("refused %v, want site-0001 refused", res.Refused)
	}
	if d, err := e.st.DesiredState(t.Context(), tenant, "site-0001"); err != nil || len(d.VMs) != 2 {
		t.Fatalf("record after the refusal: %d VMs, %v; want the older commit's 2", len(d.VMs), err)
	}

	before := e.rec.TaskCounts()
	inv := inventoryOf(want, "site-0001")
	inv[1].State = model.VMStopped
	e.heartbeat("site-0001", inv)
	e.rec.InventoryChanged(t.Context(), tenant, "site-0001")
	waitFor(t, "drift task", func() bool { return e.rec.TaskCounts().Drift > before.Drift })
	if ap, err := e.st.ActivePlan(t.Context(), tenant, "site-0001"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("drift after a refusal planned %v (%v), want nothing", ap.Plan.Actions, err)
	}
}
