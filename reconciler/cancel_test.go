package reconciler_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/reconciler/gittest"
	"github.com/nkudo/nkudo/store"
)

// TestRevertCancelsPendingPlan: a commit that reverts a destructive one
// before its plan ran leaves nothing to store for the site, and the older
// plan must not run either. The same holds when the newer commit is
// refused by prune safety.
func TestRevertCancelsPendingPlan(t *testing.T) {
	const site = "site-0001"
	for _, tc := range []struct {
		name   string
		second func(g *gittest.Repo)
		reason string // nkudo/plan of the second commit contains it
	}{
		{"revert", func(g *gittest.Repo) { g.Fleet("fleet", 1, 2) }, "no changes"},
		{"refused", func(g *gittest.Repo) { g.Write("fleet/site-0001.yaml", gittest.Site(site)) }, "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, []string{site}, nil)
			runLoop(t, e.rec)
			e.git.Fleet("fleet", 1, 2)
			e.git.Commit("two VMs")
			e.mustReconcile()
			e.converge(site, desiredVMs([]string{site}, 2, model.VMRunning), "")

			// Commit A deletes vm-02; the agent does not run its plan yet.
			e.git.Write("fleet/site-0001.yaml", gittest.Site(site)+"---\n"+gittest.VM(site, "vm-01", "Running", 1))
			a := e.git.Commit("drop vm-02")
			ra := e.mustReconcile()
			if len(ra.Stored) != 1 {
				t.Fatalf("commit A stored %d plans, want 1", len(ra.Stored))
			}
			planA := ra.Stored[0]
			if !slices.ContainsFunc(planA.Actions, func(x model.Action) bool { return x.Operation == model.OpDelete }) {
				t.Fatalf("plan of A has no delete: %+v", planA.Actions)
			}

			tc.second(e.git)
			b := e.git.Commit("second thoughts")
			rb := e.mustReconcile()
			if len(rb.Stored) != 0 || rb.Cancelled[site] != planA.ID {
				t.Fatalf("commit B: stored %d, cancelled %v; want nothing stored and %s cancelled", len(rb.Stored), rb.Cancelled, planA.ID)
			}
			if _, err := e.st.ActivePlan(t.Context(), tenant, site); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("active plan after B: %v, want none", err)
			}
			got, err := e.st.GetPlan(t.Context(), tenant, planA.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != model.PlanSuperseded || got.SupersededByCommit != b {
				t.Errorf("plan of A: %s by commit %q, want superseded by %s", got.Status, got.SupersededByCommit, b)
			}
			// The agent may not start any of it.
			err = e.st.StartAction(t.Context(), tenant, site, planA.ID, planA.Actions[0].ID, time.Now())
			if !errors.Is(err, store.ErrSuperseded) {
				t.Errorf("StartAction on the cancelled plan: %v, want ErrSuperseded", err)
			}
			if st := e.status(b, forge.ContextPlan); !strings.Contains(st.Description, tc.reason) {
				t.Errorf("nkudo/plan of B = %+v, want it to say %q", st, tc.reason)
			}
			waitFor(t, "nkudo/apply of A says superseded", func() bool {
				st := e.status(a, forge.ContextApply)
				return st.State == store.StateError && strings.Contains(st.Description, "superseded by "+b[:12])
			})
		})
	}
}
