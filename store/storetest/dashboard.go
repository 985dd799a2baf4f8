package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

// testRecentCommitStatuses: a repository's statuses across commits, most
// recently updated first, bounded, and scoped to the tenant and repository.
func testRecentCommitStatuses(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	r := mustGet(s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "r", URL: "u"}, ""))(t)
	r2 := mustGet(s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "r2", URL: "u2"}, ""))(t)
	set := func(repo, commit, context string, st store.StatusState, at int) {
		t.Helper()
		must2(s.SetCommitStatus(ctx, tenantA, store.CommitStatus{RepoID: repo, Commit: commit, Context: context, State: st, UpdatedAt: epoch.Add(time.Duration(at) * second)}))(t)
	}
	set(r.ID, "c1", "nkudo/validate", store.StateSuccess, 1)
	set(r.ID, "c1", "nkudo/plan", store.StateSuccess, 2)
	set(r.ID, "c2", "nkudo/validate", store.StateFailure, 3)
	set(r2.ID, "c9", "nkudo/validate", store.StateSuccess, 4)
	got := mustGet(s.RecentCommitStatuses(ctx, tenantA, r.ID, 0))(t)
	var order []string
	for _, cs := range got {
		order = append(order, cs.Commit+" "+cs.Context+" "+string(cs.State))
	}
	want := []string{"c2 nkudo/validate failure", "c1 nkudo/plan success", "c1 nkudo/validate success"}
	if diff := cmp.Diff(want, order); diff != "" {
		t.Errorf("RecentCommitStatuses (-want +got):\n%s", diff)
	}
	if got := mustGet(s.RecentCommitStatuses(ctx, tenantA, r.ID, 2))(t); len(got) != 2 || got[0].Commit != "c2" {
		t.Errorf("limit 2: %+v", got)
	}
	if got := mustGet(s.RecentCommitStatuses(ctx, tenantB, r.ID, 0))(t); len(got) != 0 {
		t.Errorf("tenant B sees %d of A's statuses", len(got))
	}
}

// testFleetWakeUp: the tenant's fleet topic wakes when any of its sites'
// plans change, and not for another tenant's.
func testFleetWakeUp(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	ch, cancel := s.Subscribe(ctx, store.FleetTopic(tenantA))
	defer cancel()
	other, cancelOther := s.Subscribe(ctx, store.FleetTopic(tenantB))
	defer cancelOther()
	p := plan(tenantA, siteB, "1", "vm-a")
	must2(s.StorePlan(ctx, admin, p, "", epoch))(t)
	if !woken(ch) {
		t.Fatal("fleet subscriber not woken by StorePlan")
	}
	must2(s.RecordActionResult(ctx, agent, tenantA, siteB, store.ActionResult{PlanID: p.ID, ActionID: p.Actions[0].ID, Status: model.ActionSucceeded, FinishedAt: epoch}))(t)
	if !woken(ch) {
		t.Error("fleet subscriber not woken when a plan finished")
	}
	if !quiet(other) {
		t.Error("another tenant's fleet subscriber was woken")
	}
}
