package integration

import (
	"fmt"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

// TestAgentFailsOverToReplica: two control planes on one Postgres and an
// agent that knows both. The first one stops for good; the agent keeps
// heartbeating through the second and applies a plan stored there.
func TestAgentFailsOverToReplica(t *testing.T) {
	a := startEdgeCP(t, true)
	b := cptest.Start(t, cptest.Options{ReplicaOf: a, Configure: func(o *controlplane.Options) {
		o.MinHeartbeatInterval = 300 * time.Millisecond
	}})
	e := newEdgeSite(t, a, "acme", "store-1")
	e.failover = []string{b.URL}
	e.start()
	e.waitFirstHeartbeat()
	if b.Server().LongPolls() != 0 {
		t.Fatalf("replica b holds %d long-polls before a stopped; the agent was to use a first", b.Server().LongPolls())
	}

	a.Stop()
	e.env = b // the store is read through the surviving replica from now on
	before, err := b.Store().GetSite(t.Context(), "acme", "store-1")
	if err != nil {
		t.Fatal(err)
	}
	waitEdge(t, "a heartbeat through replica b", 20*time.Second, func() (bool, string) {
		s, err := b.Store().GetSite(t.Context(), "acme", "store-1")
		if err != nil {
			return false, err.Error()
		}
		return s.LastHeartbeat.After(before.LastHeartbeat), s.LastHeartbeat.String()
	})
	waitEdge(t, "the agent's long-poll to park on replica b", 20*time.Second, func() (bool, string) {
		n := b.Server().LongPolls()
		return n == 1, fmt.Sprintf("long-polls on b: %d", n)
	})

	d := e.desired(e.vm("vm-a", model.VMRunning))
	p := e.plan(d)
	if p == nil {
		t.Fatal("no plan for a missing VM")
	}
	e.waitPlanDone(p)
	e.waitConverged(d)
}

// TestLongPollWokenByOtherReplica: an agent's long-poll parked on replica
// b returns the plan that replica a stores, through Postgres' NOTIFY, long
// before its wait would have elapsed (an unwoken poll answers nothing).
func TestLongPollWokenByOtherReplica(t *testing.T) {
	a := cptest.Start(t, cptest.Options{Postgres: true})
	b := cptest.Start(t, cptest.Options{ReplicaOf: a})
	a.NewTenant("acme")
	ag := a.Enroll("acme", "store-1")
	onB := b.AgentClient(ag.Cert)
	if _, err := onB.Heartbeat(t.Context(), api.HeartbeatRequest{VMs: []model.ObservedVM{}}); err != nil {
		t.Fatal(err)
	}

	type answer struct {
		p   *api.AgentPlan
		err error
	}
	got := make(chan answer, 1)
	go func() {
		p, err := onB.WaitPlan(t.Context(), "", 55*time.Second)
		got <- answer{p, err}
	}()
	waitEdge(t, "the long-poll to park on replica b", 20*time.Second, func() (bool, string) {
		return b.Server().LongPolls() == 1, "not parked"
	})
	plan := model.Plan{ID: "plan-1", Tenant: "acme", Site: "store-1", Commit: "c1",
		Actions: []model.Action{{ID: "act-1", Operation: model.OpStart, VM: "vm-a", Reason: model.ReasonState}}}
	if _, err := a.Store().StorePlan(t.Context(), store.Actor{Kind: store.ActorSystem, ID: "test"}, plan, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	ans := <-got
	if ans.err != nil {
		t.Fatalf("long-poll on b: %v", ans.err)
	}
	if ans.p == nil || ans.p.Plan.ID != plan.ID {
		t.Fatalf("long-poll on b answered %+v; want plan %s, woken by replica a's store", ans.p, plan.ID)
	}
}
