package storetest

import (
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

func testPlanDedupe(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	r, err := s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "r", URL: "u"}, "")
	must(t, err)

	for _, bad := range []model.Plan{
		{},
		{ID: "p", Tenant: tenantA, Site: siteA},
		{ID: "p", Tenant: tenantA, Site: siteA, Actions: []model.Action{{ID: "x"}, {ID: "x"}}},
	} {
		_, err := s.StorePlan(ctx, admin, bad, "", epoch)
		wantErr(t, err, store.ErrInvalid)
	}
	_, err = s.StorePlan(ctx, admin, plan(tenantA, "nope", "1", "vm-a"), "", epoch)
	wantErr(t, err, store.ErrNotFound)

	p := plan(tenantA, siteA, "1", "vm-a", "vm-b")
	p.Unmanaged = []string{"legacy"}
	stored, err := s.StorePlan(ctx, admin, p, r.ID, epoch)
	must(t, err)
	if !stored {
		t.Fatal("first StorePlan reported not stored")
	}
	stored, err = s.StorePlan(ctx, admin, p, r.ID, epoch.Add(second))
	must(t, err)
	if stored {
		t.Error("second StorePlan of the same ID reported stored")
	}

	got, err := s.GetPlan(ctx, tenantA, p.ID)
	must(t, err)
	if diff := cmp.Diff(p, got.Plan); diff != "" {
		t.Errorf("stored plan (-want +got):\n%s", diff)
	}
	if got.Status != model.PlanPending || got.RepoID != r.ID || !got.CreatedAt.Equal(epoch) || got.SupersededBy != "" {
		t.Errorf("stored plan lifecycle = %s repo %q created %v", got.Status, got.RepoID, got.CreatedAt)
	}
	if len(got.Actions) != 2 {
		t.Fatalf("GetPlan has %d action records, want 2", len(got.Actions))
	}
	for i, a := range got.Actions {
		if a.Index != i || a.Status != model.ActionPending || a.Action.ID != p.Actions[i].ID {
			t.Errorf("action %d = %+v", i, a)
		}
	}
	_, err = s.GetPlan(ctx, tenantB, p.ID)
	wantErr(t, err, store.ErrNotFound)

	// The same plan ID for another site is a conflict, never a silent no-op.
	q := p
	q.Site = siteB
	_, err = s.StorePlan(ctx, admin, q, r.ID, epoch)
	wantErr(t, err, store.ErrConflict)

	// Listing.
	p2 := plan(tenantA, siteB, "2", "vm-c")
	must2(s.StorePlan(ctx, admin, p2, r.ID, epoch.Add(2*second)))(t)
	list, err := s.ListPlans(ctx, tenantA, store.PlanFilter{})
	must(t, err)
	if len(list) != 2 || list[0].Plan.ID != p2.ID || list[1].Plan.ID != p.ID || list[0].Actions != nil {
		t.Errorf("ListPlans = %v, want newest first without actions", planIDs(list))
	}
	list, err = s.ListPlans(ctx, tenantA, store.PlanFilter{Site: siteA, WithActions: true})
	must(t, err)
	if len(list) != 1 || list[0].Plan.ID != p.ID || len(list[0].Actions) != 2 {
		t.Errorf("ListPlans(site) = %v", planIDs(list))
	}
	list, err = s.ListPlans(ctx, tenantA, store.PlanFilter{Commit: p2.Commit})
	must(t, err)
	if len(list) != 1 || list[0].Plan.ID != p2.ID {
		t.Errorf("ListPlans(commit) = %v", planIDs(list))
	}
	list, err = s.ListPlans(ctx, tenantA, store.PlanFilter{RepoID: r.ID, Limit: 1})
	must(t, err)
	if len(list) != 1 {
		t.Errorf("ListPlans(limit 1) = %v", planIDs(list))
	}
	list, err = s.ListPlans(ctx, tenantB, store.PlanFilter{})
	must(t, err)
	if len(list) != 0 {
		t.Errorf("tenant B lists %v", planIDs(list))
	}
}

func planIDs(ps []store.StoredPlan) []string {
	var ids []string
	for _, p := range ps {
		ids = append(ids, p.Plan.ID)
	}
	return ids
}

func testPlanDedupeConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	const n = 8
	for round := range 3 {
		p := plan(tenantA, siteA, "c"+string(rune('0'+round)), "vm-a", "vm-b", "vm-c")
		var wg sync.WaitGroup
		results := make(chan bool, n)
		start := make(chan struct{})
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				stored, err := s.StorePlan(ctx, admin, p, "", epoch)
				if err != nil {
					t.Errorf("StorePlan: %v", err)
				}
				results <- stored
			}()
		}
		close(start)
		wg.Wait()
		close(results)
		count := 0
		for ok := range results {
			if ok {
				count++
			}
		}
		if count != 1 {
			t.Errorf("round %d: %d concurrent StorePlan calls reported stored, want exactly 1", round, count)
		}
		got, err := s.GetPlan(ctx, tenantA, p.ID)
		must(t, err)
		if len(got.Actions) != 3 {
			t.Errorf("round %d: plan has %d actions, want 3", round, len(got.Actions))
		}
	}
	// Different plans for one site at once: exactly one ends up active.
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.StorePlan(ctx, admin, plan(tenantA, siteB, "race"+string(rune('a'+i)), "vm-x"), "", epoch); err != nil {
				t.Errorf("StorePlan: %v", err)
			}
		}()
	}
	wg.Wait()
	active, err := s.ListPlans(ctx, tenantA, store.PlanFilter{Site: siteB, Status: model.PlanPending})
	must(t, err)
	super, err := s.ListPlans(ctx, tenantA, store.PlanFilter{Site: siteB, Status: model.PlanSuperseded})
	must(t, err)
	if len(active) != 1 || len(super) != n-1 {
		t.Errorf("after %d racing plans: %d pending, %d superseded; want 1 and %d", n, len(active), len(super), n-1)
	}
}

func testPlanSupersession(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	_, err := s.ActivePlan(ctx, tenantA, siteA)
	wantErr(t, err, store.ErrNotFound)

	p1 := plan(tenantA, siteA, "1", "vm-a")
	p2 := plan(tenantA, siteA, "2", "vm-a", "vm-b")
	other := plan(tenantA, siteB, "3", "vm-z")
	must2(s.StorePlan(ctx, admin, p1, "", epoch))(t)
	must2(s.StorePlan(ctx, admin, other, "", epoch))(t)
	must(t, s.StartAction(ctx, tenantA, siteA, p1.ID, p1.Actions[0].ID, epoch))
	must2(s.StorePlan(ctx, admin, p2, "", epoch.Add(second)))(t)

	got1, err := s.GetPlan(ctx, tenantA, p1.ID)
	must(t, err)
	if got1.Status != model.PlanSuperseded || got1.SupersededBy != p2.ID {
		t.Errorf("older plan: status %s superseded by %q, want superseded by %s", got1.Status, got1.SupersededBy, p2.ID)
	}
	act, err := s.ActivePlan(ctx, tenantA, siteA)
	must(t, err)
	if act.Plan.ID != p2.ID || len(act.Actions) != 2 {
		t.Errorf("ActivePlan = %s with %d actions, want %s with 2", act.Plan.ID, len(act.Actions), p2.ID)
	}
	// Another site's plan is untouched.
	if o, _ := s.GetPlan(ctx, tenantA, other.ID); o.Status != model.PlanPending {
		t.Errorf("other site's plan became %s", o.Status)
	}
	// The action the agent is in may still be reported as started ...
	must(t, s.StartAction(ctx, tenantA, siteA, p1.ID, p1.Actions[0].ID, epoch))
	// ... but pending actions of a superseded plan may not start.
	p3 := plan(tenantA, siteA, "3", "vm-q")
	must2(s.StorePlan(ctx, admin, p3, "", epoch.Add(second)))(t)
	wantErr(t, s.StartAction(ctx, tenantA, siteA, p2.ID, p2.Actions[0].ID, epoch), store.ErrSuperseded)

	// The desired state goes back to p1: it becomes active again, p2 superseded.
	stored, err := s.StorePlan(ctx, admin, p1, "", epoch.Add(2*second))
	must(t, err)
	if !stored {
		t.Error("reviving a superseded plan reported not stored")
	}
	act, err = s.ActivePlan(ctx, tenantA, siteA)
	must(t, err)
	if act.Plan.ID != p1.ID || act.Status != model.PlanInProgress || act.Actions[0].Status != model.ActionRunning {
		t.Errorf("revived plan = %s %s (action %s), want %s in_progress with its running action", act.Plan.ID, act.Status, act.Actions[0].Status, p1.ID)
	}
	got3, _ := s.GetPlan(ctx, tenantA, p3.ID)
	if got3.Status != model.PlanSuperseded || got3.SupersededBy != p1.ID {
		t.Errorf("p3 after revival: %s by %q, want superseded by %s", got3.Status, got3.SupersededBy, p1.ID)
	}
	got2, _ := s.GetPlan(ctx, tenantA, p2.ID)
	if got2.Status != model.PlanSuperseded || got2.SupersededBy != p3.ID {
		t.Errorf("p2 after revival: %s by %q, want still superseded by %s", got2.Status, got2.SupersededBy, p3.ID)
	}
}

func testActionLifecycle(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	p := plan(tenantA, siteA, "1", "vm-a", "vm-b")
	must2(s.StorePlan(ctx, admin, p, "", epoch))(t)
	a0, a1 := p.Actions[0].ID, p.Actions[1].ID

	wantErr(t, s.StartAction(ctx, tenantA, siteA, "nope", a0, epoch), store.ErrNotFound)
	wantErr(t, s.StartAction(ctx, tenantA, siteA, p.ID, "nope", epoch), store.ErrNotFound)
	wantErr(t, s.StartAction(ctx, tenantA, siteB, p.ID, a0, epoch), store.ErrNotFound)
	wantErr(t, s.StartAction(ctx, tenantB, siteA, p.ID, a0, epoch), store.ErrNotFound)
	must(t, s.StartAction(ctx, tenantA, siteA, p.ID, a0, epoch))
	must(t, s.StartAction(ctx, tenantA, siteA, p.ID, a0, epoch)) // again: fine
	got, _ := s.GetPlan(ctx, tenantA, p.ID)
	if got.Status != model.PlanInProgress || got.Actions[0].Status != model.ActionRunning || !got.Actions[0].StartedAt.Equal(epoch) {
		t.Errorf("after start: plan %s action %+v", got.Status, got.Actions[0])
	}

	_, err := s.RecordActionResult(ctx, agent, tenantA, siteA, store.ActionResult{PlanID: p.ID, ActionID: a0, Status: model.ActionRunning})
	wantErr(t, err, store.ErrInvalid)
	_, err = s.RecordActionResult(ctx, agent, tenantB, siteA, store.ActionResult{PlanID: p.ID, ActionID: a0, Status: model.ActionSucceeded})
	wantErr(t, err, store.ErrNotFound)

	r0 := store.ActionResult{PlanID: p.ID, ActionID: a0, Status: model.ActionSucceeded, Output: []byte(`{"pid": 42}`), FinishedAt: epoch.Add(second)}
	out, err := s.RecordActionResult(ctx, agent, tenantA, siteA, r0)
	must(t, err)
	if !out.New || out.PlanStatus != model.PlanInProgress {
		t.Errorf("first result: %+v, want new, in_progress", out)
	}
	out, err = s.RecordActionResult(ctx, agent, tenantA, siteA, r0)
	must(t, err)
	if out.New || out.PlanStatus != model.PlanInProgress {
		t.Errorf("repeated result: %+v, want not new, in_progress", out)
	}
	diffRes := r0
	diffRes.Status, diffRes.Error = model.ActionFailed, "boom"
	_, err = s.RecordActionResult(ctx, agent, tenantA, siteA, diffRes)
	wantErr(t, err, store.ErrConflict)
	// A late or repeated "started" report for a finished action changes nothing.
	must(t, s.StartAction(ctx, tenantA, siteA, p.ID, a0, epoch.Add(time.Hour)))
	if got, _ := s.GetPlan(ctx, tenantA, p.ID); got.Actions[0].Status != model.ActionSucceeded || !got.Actions[0].StartedAt.Equal(epoch) {
		t.Errorf("late start changed a finished action: %+v", got.Actions[0])
	}

	// A result for an action that was never started is fine (fast actions).
	out, err = s.RecordActionResult(ctx, agent, tenantA, siteA, store.ActionResult{PlanID: p.ID, ActionID: a1, Status: model.ActionSkipped, FinishedAt: epoch.Add(2 * second)})
	must(t, err)
	if !out.New || out.PlanStatus != model.PlanSucceeded {
		t.Errorf("last result: %+v, want new, succeeded", out)
	}
	got, err = s.GetPlan(ctx, tenantA, p.ID)
	must(t, err)
	if got.Status != model.PlanSucceeded {
		t.Errorf("plan status = %s, want succeeded", got.Status)
	}
	want := store.ActionRecord{Index: 0, Action: p.Actions[0], Status: model.ActionSucceeded,
		Output: []byte(`{"pid":42}`), StartedAt: epoch, FinishedAt: epoch.Add(second)}
	if diff := cmp.Diff(want, got.Actions[0]); diff != "" {
		t.Errorf("action record (-want +got):\n%s", diff)
	}
	_, err = s.ActivePlan(ctx, tenantA, siteA)
	wantErr(t, err, store.ErrNotFound)
}

func testActionFailure(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	p := plan(tenantA, siteA, "1", "vm-a", "vm-b")
	must2(s.StorePlan(ctx, admin, p, "", epoch))(t)
	out, err := s.RecordActionResult(ctx, agent, tenantA, siteA, store.ActionResult{PlanID: p.ID, ActionID: p.Actions[0].ID, Status: model.ActionFailed, Error: "disk full", FinishedAt: epoch})
	must(t, err)
	if !out.New || out.PlanStatus != model.PlanFailed {
		t.Errorf("failed result: %+v, want new, failed", out)
	}
	got, _ := s.GetPlan(ctx, tenantA, p.ID)
	if got.Status != model.PlanFailed || got.Actions[0].Error != "disk full" || got.Actions[1].Status != model.ActionPending {
		t.Errorf("after failure: plan %s, actions %+v", got.Status, got.Actions)
	}

	// Results of a superseded plan are recorded without changing its status.
	q := plan(tenantA, siteB, "2", "vm-c")
	must2(s.StorePlan(ctx, admin, q, "", epoch))(t)
	must(t, s.StartAction(ctx, tenantA, siteB, q.ID, q.Actions[0].ID, epoch))
	must2(s.StorePlan(ctx, admin, plan(tenantA, siteB, "3", "vm-d"), "", epoch))(t)
	out, err = s.RecordActionResult(ctx, agent, tenantA, siteB, store.ActionResult{PlanID: q.ID, ActionID: q.Actions[0].ID, Status: model.ActionSucceeded, FinishedAt: epoch})
	must(t, err)
	if !out.New || out.PlanStatus != model.PlanSuperseded {
		t.Errorf("result for superseded plan: %+v, want new, superseded", out)
	}
	got, _ = s.GetPlan(ctx, tenantA, q.ID)
	if got.Status != model.PlanSuperseded || got.Actions[0].Status != model.ActionSucceeded {
		t.Errorf("superseded plan after result: %s, action %s", got.Status, got.Actions[0].Status)
	}
}

func testPrunePlans(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	done := plan(tenantA, siteA, "1", "vm-a")
	old := plan(tenantA, siteB, "2", "vm-b")
	active := plan(tenantA, siteB, "3", "vm-c")
	for _, p := range []model.Plan{done, old, active} {
		must2(s.StorePlan(ctx, admin, p, "", epoch))(t)
	}
	must2(s.RecordActionResult(ctx, agent, tenantA, siteA, store.ActionResult{PlanID: done.ID, ActionID: done.Actions[0].ID, Status: model.ActionSucceeded}))(t)
	must2(s.AppendLogs(ctx, tenantA, siteA, []store.LogLine{{PlanID: done.ID, Seq: 1, Line: "x"}}))(t)
	n, err := s.PrunePlans(ctx, admin, epoch.Add(-time.Hour))
	must(t, err)
	if n != 0 {
		t.Errorf("pruned %d plans updated after the cutoff", n)
	}
	// The store's clock set updated_at of the finished plan; prune far ahead.
	n, err = s.PrunePlans(ctx, admin, time.Now().Add(24*time.Hour))
	must(t, err)
	if n != 2 {
		t.Errorf("pruned %d plans, want 2 (succeeded and superseded)", n)
	}
	for _, id := range []string{done.ID, old.ID} {
		_, err := s.GetPlan(ctx, tenantA, id)
		wantErr(t, err, store.ErrNotFound)
	}
	if act, err := s.ActivePlan(ctx, tenantA, siteB); err != nil || act.Plan.ID != active.ID {
		t.Errorf("active plan after prune: %v %v", act.Plan.ID, err)
	}
	v, err := s.VerifyAudit(ctx)
	must(t, err)
	ev, _ := s.ListAudit(ctx, "", v.Events-1, 1)
	if !v.OK() || len(ev) != 1 || ev[0].Action != "plans.prune" {
		t.Errorf("audit after prune: %+v %+v", v, ev)
	}
}

// testPlanSupersedeActive: a site's active plan is cancelled without a new
// one (the desired state went back, or was refused), atomically, audited
// and announced; pending actions may not start afterwards, and a later
// StorePlan of the same plan revives it.
func testPlanSupersedeActive(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	_, err := s.SupersedeActivePlan(ctx, admin, tenantA, siteA, "c-b", "converged", epoch)
	wantErr(t, err, store.ErrNotFound)
	_, err = s.SupersedeActivePlan(ctx, admin, tenantA, "nope", "c-b", "converged", epoch)
	wantErr(t, err, store.ErrNotFound)

	p := plan(tenantA, siteA, "a", "vm-a", "vm-b")
	other := plan(tenantA, siteB, "o", "vm-z")
	must2(s.StorePlan(ctx, admin, p, "", epoch))(t)
	must2(s.StorePlan(ctx, admin, other, "", epoch))(t)
	// Another tenant cannot cancel it.
	_, err = s.SupersedeActivePlan(ctx, admin, tenantB, siteA, "c-b", "converged", epoch)
	wantErr(t, err, store.ErrNotFound)
	// The agent is in the first action when the plan is cancelled.
	must(t, s.StartAction(ctx, tenantA, siteA, p.ID, p.Actions[0].ID, epoch))

	woke, stop := s.Subscribe(ctx, store.PlanTopic(tenantA, siteA))
	defer stop()
	got, err := s.SupersedeActivePlan(ctx, admin, tenantA, siteA, "c-b", "site converged at c-b", epoch.Add(second))
	must(t, err)
	if got.Plan.ID != p.ID || got.Status != model.PlanSuperseded || got.SupersededBy != "" || got.SupersededByCommit != "c-b" || len(got.Actions) != 2 {
		t.Errorf("SupersedeActivePlan = %s %s by %q/%q with %d actions, want %s superseded by commit c-b with 2 actions",
			got.Plan.ID, got.Status, got.SupersededBy, got.SupersededByCommit, len(got.Actions), p.ID)
	}
	waitFor(t, "plan topic notified", func() bool { return woken(woke) })
	stored, err := s.GetPlan(ctx, tenantA, p.ID)
	must(t, err)
	if stored.Status != model.PlanSuperseded || stored.SupersededByCommit != "c-b" {
		t.Errorf("stored plan: %s by commit %q, want superseded by c-b", stored.Status, stored.SupersededByCommit)
	}
	_, err = s.ActivePlan(ctx, tenantA, siteA)
	wantErr(t, err, store.ErrNotFound)
	if o, _ := s.GetPlan(ctx, tenantA, other.ID); o.Status != model.PlanPending {
		t.Errorf("other site's plan became %s", o.Status)
	}
	// The action in progress finishes and is recorded; the rest may not start.
	must2(s.RecordActionResult(ctx, agent, tenantA, siteA, store.ActionResult{PlanID: p.ID, ActionID: p.Actions[0].ID, Status: model.ActionSucceeded, FinishedAt: epoch}))(t)
	wantErr(t, s.StartAction(ctx, tenantA, siteA, p.ID, p.Actions[1].ID, epoch), store.ErrSuperseded)
	if again, _ := s.GetPlan(ctx, tenantA, p.ID); again.Status != model.PlanSuperseded {
		t.Errorf("after the running action finished the plan is %s, want superseded", again.Status)
	}
	// Nothing active any more: a second call finds nothing.
	_, err = s.SupersedeActivePlan(ctx, admin, tenantA, siteA, "c-b", "converged", epoch)
	wantErr(t, err, store.ErrNotFound)

	events, err := s.ListAudit(ctx, tenantA, 0, 0)
	must(t, err)
	var n int
	for _, ev := range events {
		if ev.Action == "plan.supersede" && ev.Object == "plan/"+p.ID {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d plan.supersede audit events for %s, want 1", n, p.ID)
	}

	// The desired state comes back: storing the plan again revives it, and
	// a newer plan records the commit that superseded the older one.
	if ok, err := s.StorePlan(ctx, admin, p, "", epoch.Add(2*second)); err != nil || !ok {
		t.Fatalf("reviving a cancelled plan: stored %v, %v", ok, err)
	}
	if rev, _ := s.GetPlan(ctx, tenantA, p.ID); rev.Status != model.PlanInProgress || rev.SupersededByCommit != "" {
		t.Errorf("revived plan: %s by commit %q, want in_progress and no superseding commit", rev.Status, rev.SupersededByCommit)
	}
	next := plan(tenantA, siteA, "n", "vm-n")
	must2(s.StorePlan(ctx, admin, next, "", epoch.Add(3*second)))(t)
	if old, _ := s.GetPlan(ctx, tenantA, p.ID); old.SupersededBy != next.ID || old.SupersededByCommit != next.Commit {
		t.Errorf("plan superseded by a newer one: by %q/%q, want %s/%s", old.SupersededBy, old.SupersededByCommit, next.ID, next.Commit)
	}
}
