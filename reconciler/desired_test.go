package reconciler_test

import (
	"context"
	"errors"
	"slices"
	"testing"

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
