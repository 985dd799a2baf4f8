package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nkudo/nkudo/agent"
	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

// supersededAnswers records the plan long-poll answers that told the agent
// its plan was superseded, as "plan commit".
type supersededAnswers struct {
	agent.ControlPlane
	mu  sync.Mutex
	got []string
}

func (s *supersededAnswers) WatchPlan(ctx context.Context, after string, wait time.Duration) (*api.AgentPlan, error) {
	p, err := s.ControlPlane.WatchPlan(ctx, after, wait)
	if p != nil && p.Status == model.PlanSuperseded {
		s.mu.Lock()
		s.got = append(s.got, p.Plan.ID+" "+p.SupersededByCommit)
		s.mu.Unlock()
	}
	return p, err
}

func (s *supersededAnswers) answers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...)
}

// A commit cancels the site's plan (store.SupersedeActivePlan, as the
// reconciler does for a revert or a refused commit) while the agent is in
// the plan's first, slow action: the agent hears of it through the plan
// long-poll, finishes that action, starts no other, and reports the rest
// skipped as superseded.
func TestCancelledPlanStopsAfterTheCurrentAction(t *testing.T) {
	edgeBackends(t, func(t *testing.T, postgres bool) {
		env := startEdgeCP(t, postgres)
		e := newEdgeSite(t, env, "acme", "store-1")
		watch := &supersededAnswers{}
		e.wrap = func(c agent.ControlPlane) agent.ControlPlane { watch.ControlPlane = c; return watch }
		// Every VM creation takes 3s: ample time for the cancellation to
		// reach the agent while the first one is in flight.
		if err := os.WriteFile(e.controlFile, []byte(`{"faults":[{"endpoint":"vm.create","delay":"3s"}]}`), 0o644); err != nil {
			t.Fatal(err)
		}
		e.start()
		e.waitFirstHeartbeat()

		p := e.plan(e.desired(e.vm("vm-a", model.VMRunning), e.vm("vm-b", model.VMRunning)))
		if p == nil || len(p.Actions) < 3 || p.Actions[0].Operation != model.OpCreate {
			t.Fatalf("want a plan of at least 3 actions starting with a create, got %+v", p)
		}
		first := p.Actions[0]
		waitEdge(t, "the first action to start", 20*time.Second, func() (bool, string) {
			r, ok, _ := edgeCache(t, e).Get(first.ID)
			return ok && r.Status == model.ActionRunning, fmt.Sprint(r)
		})
		const commit = "5eed0000000000000000000000000000000000aa"
		if _, err := env.Store().SupersedeActivePlan(t.Context(), store.Actor{Kind: store.ActorSystem, ID: "test"},
			e.tenant, e.site, commit, "test: the commit needs nothing of the plan", time.Now()); err != nil {
			t.Fatalf("supersede: %v", err)
		}

		var sp store.StoredPlan
		waitEdge(t, "every action of the cancelled plan to be reported", 30*time.Second, func() (bool, string) {
			var err error
			sp, err = env.Store().GetPlan(t.Context(), e.tenant, p.ID)
			if err != nil {
				return false, err.Error()
			}
			for _, a := range sp.Actions {
				if a.Status == model.ActionPending || a.Status == model.ActionRunning {
					return false, fmt.Sprintf("%s %s %s", a.Action.Operation, a.Action.VM, a.Status)
				}
			}
			return true, ""
		})
		if sp.Status != model.PlanSuperseded || sp.SupersededByCommit != commit {
			t.Errorf("plan status %s by commit %q, want superseded by %s", sp.Status, sp.SupersededByCommit, commit)
		}
		for i, a := range sp.Actions {
			want := model.ActionSkipped
			if i == 0 {
				want = model.ActionSucceeded
			}
			if a.Status != want || (i > 0 && !strings.HasPrefix(a.Error, "superseded")) {
				b, _ := json.MarshalIndent(sp.Actions, "", "  ")
				t.Fatalf("action %d (%s %s) = %s %q, want %s (skipped ones as superseded):\n%s",
					i, a.Action.Operation, a.Action.VM, a.Status, a.Error, want, b)
			}
		}

		// The hypervisor saw the first action and nothing after it.
		calls := e.chCalls()
		if len(calls) == 0 {
			t.Fatal("the request log shows no call of the first action")
		}
		for _, c := range calls {
			if !strings.HasPrefix(c, first.VM+" vm.create ") {
				t.Errorf("hypervisor calls %v: want only %s's vm.create (the first action)", calls, first.VM)
				break
			}
		}
		for _, a := range p.Actions[1:] {
			if r, ok, _ := edgeCache(t, e).Get(a.ID); ok {
				t.Errorf("the agent recorded %s %s after the cancellation: %+v", a.Operation, a.VM, r)
			}
		}
		// Heard through the long-poll, with the cancelling commit.
		if got := watch.answers(); !slices.Contains(got, p.ID+" "+commit) {
			t.Errorf("superseded answers to the agent = %q, want one for plan %s by commit %s", got, p.ID, commit)
		}

		// The long-poll itself: WatchPlan answers at once for the cancelled
		// plan; WaitPlan (an older agent) still just waits.
		id, err := agent.LoadIdentity(e.pkiDir)
		if err != nil {
			t.Fatal(err)
		}
		c, err := api.NewClient(api.ClientConfig{BaseURL: env.URL, RootCAs: id.RootCAs(), Certificate: id.Certificate})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.CloseIdleConnections)
		got, err := c.WatchPlan(t.Context(), p.ID, 0)
		if err != nil || got == nil || got.Plan.ID != p.ID || got.Status != model.PlanSuperseded ||
			got.SupersededBy != "" || got.SupersededByCommit != commit {
			t.Errorf("WatchPlan(after the cancelled plan) = %+v, %v; want it superseded by commit %s", got, err, commit)
		}
		if got, err := c.WaitPlan(t.Context(), p.ID, 0); got != nil || err != nil {
			t.Errorf("WaitPlan(after the cancelled plan) = %+v, %v; want nothing", got, err)
		}
		if got, err := c.WatchPlan(t.Context(), "", 0); got != nil || err != nil {
			t.Errorf("WatchPlan(no plan) with no active plan = %+v, %v; want nothing", got, err)
		}
	})
}

// BenchmarkPlanCheck is the round trip the agent adds before a plan's first
// action (WatchPlan with wait 0, over mTLS, SQLite): "active" for a plan
// still active (the usual answer, 204), "cancelled" for one a commit
// cancelled (the superseded answer with the plan).
func BenchmarkPlanCheck(b *testing.B) {
	env := startEdgeCP(b, false)
	e := newEdgeSite(b, env, "acme", "store-1")
	id, err := agent.LoadIdentity(e.pkiDir)
	if err != nil {
		b.Fatal(err)
	}
	c, err := api.NewClient(api.ClientConfig{BaseURL: env.URL, RootCAs: id.RootCAs(), Certificate: id.Certificate})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.CloseIdleConnections)
	actor := store.Actor{Kind: store.ActorSystem, ID: "bench"}
	p := model.Plan{ID: "bench-plan", Tenant: e.tenant, Site: e.site, Actions: []model.Action{
		{ID: "bench-a1", Operation: model.OpStart, VM: "vm-a"}, {ID: "bench-a2", Operation: model.OpStart, VM: "vm-b"}}}
	if _, err := env.Store().StorePlan(b.Context(), actor, p, "", time.Now()); err != nil {
		b.Fatal(err)
	}
	b.Run("active", func(b *testing.B) {
		for b.Loop() {
			if got, err := c.WatchPlan(b.Context(), p.ID, 0); got != nil || err != nil {
				b.Fatalf("check = %+v, %v", got, err)
			}
		}
	})
	if _, err := env.Store().SupersedeActivePlan(b.Context(), actor, e.tenant, e.site, "c0ffee", "bench", time.Now()); err != nil {
		b.Fatal(err)
	}
	b.Run("cancelled", func(b *testing.B) {
		for b.Loop() {
			if got, err := c.WatchPlan(b.Context(), p.ID, 0); err != nil || got == nil || got.Status != model.PlanSuperseded {
				b.Fatalf("check = %+v, %v", got, err)
			}
		}
	})
}
