package controlplane_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

// TestReportResultsBatch: a batch of results is acknowledged in order, and a
// refused result in a batch keeps the ones before it and is named by index,
// as when every result had its own transaction.
func TestReportResultsBatch(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	ctx := t.Context()
	env.NewTenant("acme")
	agent := env.Enroll("acme", "s1")
	spec := model.VMSpec{State: model.VMRunning, CPUs: 1, MemoryMiB: 256}
	var actions []model.Action
	for _, id := range []string{"a1", "a2", "a3"} {
		actions = append(actions, model.Action{ID: id, Operation: model.OpCreate, VM: "vm-" + id, Reason: model.ReasonMissing, Spec: &spec, SpecHash: spec.Hash()})
	}
	plan := model.Plan{ID: "p1", Tenant: "acme", Site: "s1", Actions: actions}
	if _, err := env.Store().StorePlan(ctx, store.Actor{Kind: store.ActorSystem, ID: "test"}, plan, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	ok := func(id string) api.ActionResult {
		return api.ActionResult{PlanID: "p1", ActionID: id, Status: model.ActionSucceeded}
	}
	if _, err := agent.Client.ReportResults(ctx, ok("a1")); err != nil {
		t.Fatal(err)
	}
	failedA1 := api.ActionResult{PlanID: "p1", ActionID: "a1", Status: model.ActionFailed, Error: "boom"}
	_, err := agent.Client.ReportResults(ctx, ok("a2"), failedA1, ok("a3"))
	if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "results[1]") {
		t.Fatalf("batch with a conflicting result: err = %v, want a conflict naming results[1]", err)
	}
	got, err := env.Store().GetPlan(ctx, "acme", "p1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Actions[1].Status != model.ActionSucceeded || got.Actions[2].Status != model.ActionPending {
		t.Fatalf("after the refused batch: a2 %s, a3 %s; want succeeded, pending", got.Actions[1].Status, got.Actions[2].Status)
	}
	resp, err := agent.Client.ReportResults(ctx, ok("a3"), api.ActionResult{PlanID: "p1", ActionID: "a2", Status: model.ActionSucceeded})
	if err != nil {
		t.Fatal(err)
	}
	want := []api.ResultAck{
		{ActionID: "a3", New: true, PlanStatus: model.PlanSucceeded},
		{ActionID: "a2", New: false, PlanStatus: model.PlanSucceeded},
	}
	if len(resp.Results) != len(want) || resp.Results[0] != want[0] || resp.Results[1] != want[1] {
		t.Errorf("acks = %+v, want %+v", resp.Results, want)
	}
}

// TestReportResultsStartsBatch: a batch's starts are recorded together, and
// a refused start (its plan was superseded) keeps the starts before it and
// is named by index with the superseded code the agent acts on.
func TestReportResultsStartsBatch(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	ctx := t.Context()
	env.NewTenant("acme")
	agent := env.Enroll("acme", "s1")
	spec := model.VMSpec{State: model.VMRunning, CPUs: 1, MemoryMiB: 256}
	actions := func(ids ...string) []model.Action {
		var out []model.Action
		for _, id := range ids {
			out = append(out, model.Action{ID: id, Operation: model.OpCreate, VM: "vm-" + id, Reason: model.ReasonMissing, Spec: &spec, SpecHash: spec.Hash()})
		}
		return out
	}
	sys := store.Actor{Kind: store.ActorSystem, ID: "test"}
	if _, err := env.Store().StorePlan(ctx, sys, model.Plan{ID: "p1", Tenant: "acme", Site: "s1", Actions: actions("a1", "a2")}, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Store().StorePlan(ctx, sys, model.Plan{ID: "p2", Tenant: "acme", Site: "s1", Actions: actions("b1", "b2", "b3")}, "", time.Now()); err != nil {
		t.Fatal(err) // p1 is superseded
	}
	running := func(plan, id string) api.ActionResult {
		return api.ActionResult{PlanID: plan, ActionID: id, Status: model.ActionRunning}
	}
	resp, err := agent.Client.ReportResults(ctx, running("p2", "b1"), running("p2", "b2"))
	if err != nil {
		t.Fatal(err)
	}
	for i, ack := range resp.Results {
		if !ack.New || ack.PlanStatus != model.PlanInProgress {
			t.Errorf("ack %d = %+v, want new, in progress", i, ack)
		}
	}
	_, err = agent.Client.ReportResults(ctx, running("p2", "b3"), running("p1", "a1"))
	if !errors.Is(err, api.ErrSuperseded) || !strings.Contains(err.Error(), "results[1]") {
		t.Fatalf("batch with a start of a superseded plan: err = %v, want superseded naming results[1]", err)
	}
	p2, err := env.Store().GetPlan(ctx, "acme", "p2")
	if err != nil {
		t.Fatal(err)
	}
	p1, err := env.Store().GetPlan(ctx, "acme", "p1")
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range p2.Actions {
		if a.Status != model.ActionRunning {
			t.Errorf("p2 action %d: %s, want running", i, a.Status)
		}
	}
	if p1.Actions[0].Status != model.ActionPending {
		t.Errorf("superseded p1's a1 became %s", p1.Actions[0].Status)
	}
}
