package storetest

import (
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

// testRecordActionResults: a batch of results is recorded as the same
// results one by one would be, and a refused result leaves the whole batch
// unrecorded.
func testRecordActionResults(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	p := plan(tenantA, siteA, "1", "vm-a", "vm-b", "vm-c")
	must2(s.StorePlan(ctx, admin, p, "", epoch))(t)
	a0, a1, a2 := p.Actions[0].ID, p.Actions[1].ID, p.Actions[2].ID
	must2(s.RecordActionResult(ctx, agent, tenantA, siteA, store.ActionResult{PlanID: p.ID, ActionID: a0, Status: model.ActionSucceeded, FinishedAt: epoch}))(t)
	before, err := s.ListAudit(ctx, tenantA, 0, 1000)
	must(t, err)

	// a0 again with another result: ErrConflict, and a1 (before it in the
	// batch) stays pending.
	_, err = s.RecordActionResults(ctx, agent, tenantA, siteA, []store.ActionResult{
		{PlanID: p.ID, ActionID: a1, Status: model.ActionSucceeded, FinishedAt: epoch},
		{PlanID: p.ID, ActionID: a0, Status: model.ActionFailed, Error: "boom", FinishedAt: epoch},
	})
	wantErr(t, err, store.ErrConflict)
	_, err = s.RecordActionResults(ctx, agent, tenantA, siteA, []store.ActionResult{
		{PlanID: p.ID, ActionID: a1, Status: model.ActionSucceeded, FinishedAt: epoch},
		{PlanID: p.ID, ActionID: a2, Status: model.ActionRunning},
	})
	wantErr(t, err, store.ErrInvalid)
	if got, _ := s.GetPlan(ctx, tenantA, p.ID); got.Actions[1].Status != model.ActionPending {
		t.Fatalf("a refused batch recorded a1: %s", got.Actions[1].Status)
	}

	// a0 repeated (not new), a1 and a2 new: the plan succeeds with the last.
	outs, err := s.RecordActionResults(ctx, agent, tenantA, siteA, []store.ActionResult{
		{PlanID: p.ID, ActionID: a0, Status: model.ActionSucceeded, FinishedAt: epoch},
		{PlanID: p.ID, ActionID: a1, Status: model.ActionSucceeded, FinishedAt: epoch.Add(second)},
		{PlanID: p.ID, ActionID: a2, Status: model.ActionSkipped, FinishedAt: epoch.Add(2 * second)},
	})
	must(t, err)
	want := []store.ResultOutcome{
		{New: false, PlanStatus: model.PlanInProgress},
		{New: true, PlanStatus: model.PlanInProgress},
		{New: true, PlanStatus: model.PlanSucceeded},
	}
	if len(outs) != len(want) {
		t.Fatalf("outcomes = %+v, want %+v", outs, want)
	}
	for i := range want {
		if outs[i] != want[i] {
			t.Errorf("outcome %d = %+v, want %+v", i, outs[i], want[i])
		}
	}
	got, err := s.GetPlan(ctx, tenantA, p.ID)
	must(t, err)
	if got.Status != model.PlanSucceeded || got.Actions[1].Status != model.ActionSucceeded || got.Actions[2].Status != model.ActionSkipped {
		t.Errorf("after the batch: plan %s, actions %s %s", got.Status, got.Actions[1].Status, got.Actions[2].Status)
	}
	// One audit event per new result, none for the repeat or the refused batches.
	after, err := s.ListAudit(ctx, tenantA, 0, 1000)
	must(t, err)
	var results int
	for _, e := range after[len(before):] {
		if e.Action == "action.result" {
			results++
		}
	}
	if results != 2 {
		t.Errorf("%d action.result audit events for the batches, want 2", results)
	}
}

// testStartActions checks that StartActions starts a batch as StartAction
// would one by one, and that a refused start leaves the whole batch
// unrecorded with the refusal's sentinel and action in the error.
func testStartActions(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	p := plan(tenantA, siteA, "1", "vm-a", "vm-b", "vm-c")
	must2(s.StorePlan(ctx, admin, p, "", epoch))(t)
	a0, a1, a2 := p.Actions[0].ID, p.Actions[1].ID, p.Actions[2].ID
	must(t, s.StartActions(ctx, tenantA, siteA, nil))

	// An unknown action after a good one: nothing is recorded.
	err := s.StartActions(ctx, tenantA, siteA, []store.ActionStart{
		{PlanID: p.ID, ActionID: a0, Time: epoch},
		{PlanID: p.ID, ActionID: "nope", Time: epoch},
	})
	wantErr(t, err, store.ErrNotFound)
	if !strings.Contains(err.Error(), "nope") {
		t.Errorf("error %q does not name the refused action", err)
	}
	// Another site's plan is not found either.
	wantErr(t, s.StartActions(ctx, tenantA, siteB, []store.ActionStart{{PlanID: p.ID, ActionID: a0, Time: epoch}}), store.ErrNotFound)
	got, err := s.GetPlan(ctx, tenantA, p.ID)
	must(t, err)
	if got.Status != model.PlanPending || got.Actions[0].Status != model.ActionPending {
		t.Fatalf("a refused batch changed the plan: %s, action %s", got.Status, got.Actions[0].Status)
	}

	// Two starts, the first repeated: both running, the plan in progress.
	must(t, s.StartActions(ctx, tenantA, siteA, []store.ActionStart{
		{PlanID: p.ID, ActionID: a0, Time: epoch},
		{PlanID: p.ID, ActionID: a0, Time: epoch.Add(second)},
		{PlanID: p.ID, ActionID: a1, Time: epoch.Add(2 * second)},
	}))
	got, err = s.GetPlan(ctx, tenantA, p.ID)
	must(t, err)
	if got.Status != model.PlanInProgress {
		t.Errorf("plan after starts: %s, want in_progress", got.Status)
	}
	for i, want := range []struct {
		status model.ActionStatus
		at     time.Time
	}{{model.ActionRunning, epoch}, {model.ActionRunning, epoch.Add(2 * second)}, {model.ActionPending, time.Time{}}} {
		a := got.Actions[i]
		if a.Status != want.status || !a.StartedAt.Equal(want.at) {
			t.Errorf("action %d: %s started %v, want %s started %v", i, a.Status, a.StartedAt, want.status, want.at)
		}
	}

	// A finished action reported started again is left as it is.
	must2(s.RecordActionResult(ctx, agent, tenantA, siteA, store.ActionResult{PlanID: p.ID, ActionID: a0, Status: model.ActionSucceeded, FinishedAt: epoch}))(t)
	must(t, s.StartActions(ctx, tenantA, siteA, []store.ActionStart{{PlanID: p.ID, ActionID: a0, Time: epoch.Add(time.Hour)}}))
	if got, _ := s.GetPlan(ctx, tenantA, p.ID); got.Actions[0].Status != model.ActionSucceeded {
		t.Errorf("a late start changed a finished action to %s", got.Actions[0].Status)
	}

	// Superseded: the running action may be reported again, a pending one
	// may not start, and the refusal keeps the batch out.
	must2(s.StorePlan(ctx, admin, plan(tenantA, siteA, "2", "vm-q"), "", epoch.Add(time.Minute)))(t)
	err = s.StartActions(ctx, tenantA, siteA, []store.ActionStart{
		{PlanID: p.ID, ActionID: a1, Time: epoch},
		{PlanID: p.ID, ActionID: a2, Time: epoch},
	})
	wantErr(t, err, store.ErrSuperseded)
	if !strings.Contains(err.Error(), a2) {
		t.Errorf("error %q does not name the refused action %s", err, a2)
	}
	must(t, s.StartActions(ctx, tenantA, siteA, []store.ActionStart{{PlanID: p.ID, ActionID: a1, Time: epoch}}))
	if got, _ := s.GetPlan(ctx, tenantA, p.ID); got.Actions[2].Status != model.ActionPending {
		t.Errorf("a superseded plan's pending action became %s", got.Actions[2].Status)
	}
}
