package controlplane_test

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestPlanCompletionLogged: the result that finishes a plan is logged once
// at info level with the plan's status; a resent result is not.
func TestPlanCompletionLogged(t *testing.T) {
	logs := &syncBuffer{}
	env := cptest.Start(t, cptest.Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	ctx := t.Context()
	env.NewTenant("acme")
	agent := env.Enroll("acme", "s1")
	spec := model.VMSpec{State: model.VMRunning, CPUs: 1, MemoryMiB: 256}
	// One active plan per site: each is stored when the one before is done.
	storePlan := func(id string) {
		t.Helper()
		plan := model.Plan{ID: id, Tenant: "acme", Site: "s1", Actions: []model.Action{
			{ID: id + "-a1", Operation: model.OpCreate, VM: "vm", Reason: model.ReasonMissing, Spec: &spec, SpecHash: spec.Hash()},
			{ID: id + "-a2", Operation: model.OpStart, VM: "vm", Reason: model.ReasonMissing},
		}}
		if _, err := env.Store().StorePlan(ctx, store.Actor{Kind: store.ActorSystem, ID: "test"}, plan, "", time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	storePlan("p-ok")
	report := func(results ...api.ActionResult) {
		t.Helper()
		if _, err := agent.Client.ReportResults(ctx, results...); err != nil {
			t.Fatal(err)
		}
	}
	report(api.ActionResult{PlanID: "p-ok", ActionID: "p-ok-a1", Status: model.ActionSucceeded})
	if strings.Contains(logs.String(), "plan finished") {
		t.Fatalf("logged a plan finished after its first of two actions:\n%s", logs.String())
	}
	report(api.ActionResult{PlanID: "p-ok", ActionID: "p-ok-a2", Status: model.ActionSucceeded})
	report(api.ActionResult{PlanID: "p-ok", ActionID: "p-ok-a2", Status: model.ActionSucceeded}) // resent
	storePlan("p-bad")
	report(api.ActionResult{PlanID: "p-bad", ActionID: "p-bad-a1", Status: model.ActionFailed, Error: "boom"},
		api.ActionResult{PlanID: "p-bad", ActionID: "p-bad-a2", Status: model.ActionSkipped})
	var finished []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "msg=\"plan finished\"") {
			finished = append(finished, l)
		}
	}
	if len(finished) != 2 || !strings.Contains(finished[0], "plan=p-ok status=succeeded") || !strings.Contains(finished[1], "plan=p-bad status=failed") ||
		!strings.Contains(finished[0], "level=INFO") || !strings.Contains(finished[0], "tenant=acme site=s1") {
		t.Errorf("plan finished lines:\n%s\nall:\n%s", strings.Join(finished, "\n"), logs.String())
	}
}
