package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nkudo/nkudo/agent"
	"github.com/nkudo/nkudo/agent/internal/atomicfile"
	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/model"
)

// memCP is a control plane in memory with the real one's inventory
// versioning: the version moves when a heartbeat's VM set differs from the
// stored one. It serves one plan at a time and records, in order, the
// heartbeats it answered and the results it received.
type memCP struct {
	mu       sync.Mutex
	inv      string
	version  int64
	failHB   bool
	failed   int
	events   []string // "heartbeat N" or "result <plan> <op> <vm> <status> <error>"
	plan     *api.AgentPlan
	planWake chan struct{}
	// cancelOnCheck cancels the plan when the agent checks it before its
	// first action (a WatchPlan with wait 0), as a commit landing then would.
	cancelOnCheck bool
	// refuseStarts refuses every action start as superseded, and the plan
	// long-poll never says so (a control plane without WatchPlan's answer).
	refuseStarts bool
	ops          map[string]string // action ID → "op vm"
}

func newMemCP() *memCP { return &memCP{planWake: make(chan struct{}), ops: map[string]string{}} }

func (c *memCP) Heartbeat(_ context.Context, req api.HeartbeatRequest) (api.HeartbeatResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failHB {
		c.failed++
		return api.HeartbeatResponse{}, errors.New("connection refused (heartbeats held back)")
	}
	vms := req.VMs
	if vms == nil {
		vms = []model.ObservedVM{}
	}
	b, _ := json.Marshal(vms)
	if string(b) != c.inv {
		c.inv = string(b)
		c.version++
	}
	c.events = append(c.events, fmt.Sprintf("heartbeat %d", c.version))
	// An hour: every heartbeat after the first one is one the agent chose to send.
	return api.HeartbeatResponse{InventoryVersion: c.version, NextHeartbeat: api.Duration(time.Hour)}, nil
}

func (c *memCP) WatchPlan(ctx context.Context, after string, wait time.Duration) (*api.AgentPlan, error) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		c.mu.Lock()
		if c.cancelOnCheck && wait == 0 && c.plan != nil && c.plan.Plan.ID == after {
			c.cancelLocked("c0mm1t")
		}
		p, wake, refusing := c.plan, c.planWake, c.refuseStarts
		c.mu.Unlock()
		active := p != nil && p.Status != model.PlanSuperseded
		if active && p.Plan.ID != after || !active && p != nil && p.Plan.ID == after && !refusing {
			cp := *p
			return &cp, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			return nil, nil
		case <-wake:
		}
	}
}

func (c *memCP) cancelLocked(commit string) {
	c.plan = &api.AgentPlan{Plan: c.plan.Plan, Status: model.PlanSuperseded, SupersededByCommit: commit}
	close(c.planWake)
	c.planWake = make(chan struct{})
}

func (c *memCP) ReportResults(_ context.Context, rs ...api.ActionResult) (api.ResultsResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range rs {
		if c.refuseStarts && r.Status == model.ActionRunning {
			c.events = append(c.events, "refused start "+c.ops[r.ActionID])
			return api.ResultsResponse{}, &api.Error{Status: 409, Code: api.CodeSuperseded, Message: "plan superseded"}
		}
	}
	for _, r := range rs {
		c.events = append(c.events, strings.TrimSpace(fmt.Sprintf("result %s %s %s %s", r.PlanID, c.ops[r.ActionID], r.Status, r.Error)))
	}
	return api.ResultsResponse{}, nil
}

func (c *memCP) SendLogs(context.Context, []api.LogLine) (api.LogsResponse, error) {
	return api.LogsResponse{}, nil
}

// publish makes p the site's plan.
func (c *memCP) publish(p model.Plan) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range p.Actions {
		c.ops[a.ID] = string(a.Operation) + " " + a.VM
	}
	c.plan = &api.AgentPlan{Plan: p, Status: model.PlanPending}
	close(c.planWake)
	c.planWake = make(chan struct{})
}

func (c *memCP) setFailHB(fail bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failHB = fail
}

func (c *memCP) snapshot() (events []string, version int64, failed int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.events), c.version, c.failed
}

// heartbeats counts the heartbeats among events.
func heartbeats(events []string) int {
	n := 0
	for _, e := range events {
		if strings.HasPrefix(e, "heartbeat ") {
			n++
		}
	}
	return n
}

// finals lists the final results of plan among events.
func finals(events []string, plan string) []string {
	var out []string
	for _, e := range events {
		if strings.HasPrefix(e, "result "+plan+" ") && !strings.Contains(e, " running") {
			out = append(out, e)
		}
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last state: %s", what, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runAgent runs an agent on the rig against cp until the test ends.
func runAgent(t *testing.T, r *rig, cp *memCP) {
	t.Helper()
	a := agent.New(agent.Config{Client: cp, Executor: r.ex, Facts: agent.FactsSource{StateDir: r.state, Hypervisor: r.prov},
		AgentVersion: "test", PollWait: time.Second, FirstHeartbeat: time.Hour, MaxBackoff: 200 * time.Millisecond})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent run: %v", err)
		}
	})
	waitFor(t, "the first heartbeat", func() (bool, string) {
		ev, _, _ := cp.snapshot()
		return heartbeats(ev) == 1, fmt.Sprint(ev)
	})
}

// planNamed is r.plan with an ID of its own.
func planNamed(r *rig, id string, version int64, ops ...string) model.Plan {
	p := r.plan(version, ops...)
	p.ID = id
	for i := range p.Actions {
		p.Actions[i].ID = id + "-" + p.Actions[i].ID
	}
	return p
}

// waitPlanFinals waits until every action of p has a final result.
func waitPlanFinals(t *testing.T, cp *memCP, p model.Plan) []string {
	t.Helper()
	var got []string
	waitFor(t, "plan "+p.ID+" to finish", func() (bool, string) {
		ev, _, _ := cp.snapshot()
		got = finals(ev, p.ID)
		return len(got) == len(p.Actions), fmt.Sprint(ev)
	})
	return got
}

func TestNoHeartbeatBeforeAPlanWhenNothingChanged(t *testing.T) {
	r := newRig(t)
	cp := newMemCP()
	runAgent(t, r, cp)

	p1 := planNamed(r, "p1", 1, "create vm-a")
	cp.publish(p1)
	waitPlanFinals(t, cp, p1)
	// The plan changed the host: it is reported at once, not an hour later.
	waitFor(t, "the heartbeat after plan 1", func() (bool, string) {
		ev, v, _ := cp.snapshot()
		return heartbeats(ev) == 2 && v == 2, fmt.Sprint(ev)
	})
	// Plan 2 was computed against the reported inventory: it runs with no
	// heartbeat before it (the agent's version is current).
	p2 := planNamed(r, "p2", 2, "start vm-a")
	cp.publish(p2)
	got := waitPlanFinals(t, cp, p2)
	if want := []string{"result p2 start vm-a succeeded"}; !slices.Equal(got, want) {
		t.Fatalf("plan 2 results = %q, want %q", got, want)
	}
	waitFor(t, "the heartbeat after plan 2", func() (bool, string) {
		ev, v, _ := cp.snapshot()
		return heartbeats(ev) == 3 && v == 3, fmt.Sprint(ev)
	})
	ev, _, _ := cp.snapshot()
	first := slices.IndexFunc(ev, func(e string) bool { return strings.HasPrefix(e, "result p2 ") })
	if n := heartbeats(ev[:first]); n != 2 {
		t.Errorf("%d heartbeats before plan 2 ran, want 2 (none extra): %q", n, ev)
	}
	// A plan that changes nothing (all replayed from the cache) sends no heartbeat.
	p3 := planNamed(r, "p3", 3)
	p3.Actions = p2.Actions
	cp.publish(p3)
	waitPlanFinals(t, cp, p3)
	// Once the next plan has results, the agent is past p3's aftermath.
	p4 := planNamed(r, "p4", 3)
	p4.Actions = p2.Actions
	cp.publish(p4)
	waitPlanFinals(t, cp, p4)
	ev, _, _ = cp.snapshot()
	if n := heartbeats(ev); n != 3 {
		t.Errorf("%d heartbeats after plans that changed nothing, want 3: %q", n, ev)
	}
	if c := r.calls(t); !slices.Equal(c, []string{"vm.create", "vm.boot"}) {
		t.Errorf("hypervisor calls = %q", c)
	}
}

func TestHeartbeatBeforeExecutingWhenChanged(t *testing.T) {
	tests := []struct {
		name string
		// change puts the host ahead of the control plane's inventory
		// (version 2 after the setup, with vm-a created and stopped).
		change func(t *testing.T, r *rig, cp *memCP)
	}{
		{"an action applied whose heartbeat failed", func(t *testing.T, r *rig, cp *memCP) {
			cp.setFailHB(true)
			p := planNamed(r, "pchange", 2, "start vm-a")
			cp.publish(p)
			waitPlanFinals(t, cp, p)
			// The heartbeat after the plan failed: the host is ahead.
			waitFor(t, "the heartbeat after the plan to fail", func() (bool, string) {
				_, _, failed := cp.snapshot()
				return failed >= 1, fmt.Sprint(failed)
			})
		}},
		{"a VM changed by hand", func(t *testing.T, r *rig, cp *memCP) {
			if err := r.prov.Start(t.Context(), "vm-a"); err != nil {
				t.Fatal(err)
			}
			cp.setFailHB(true)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			cp := newMemCP()
			runAgent(t, r, cp)
			setup := planNamed(r, "psetup", 1, "create vm-a")
			cp.publish(setup)
			waitPlanFinals(t, cp, setup)
			waitFor(t, "vm-a to be reported", func() (bool, string) {
				_, v, _ := cp.snapshot()
				return v == 2, fmt.Sprint(v)
			})
			tc.change(t, r, cp)

			// Computed against version 2, before the change was reported.
			stale := planNamed(r, "pstale", 2, "start vm-a")
			_, _, failedBefore := cp.snapshot()
			cp.publish(stale)
			// While heartbeats fail the plan is not judged, so not run.
			waitFor(t, "the agent to try to report before running the plan", func() (bool, string) {
				_, _, failed := cp.snapshot()
				return failed >= failedBefore+2, fmt.Sprint(failed)
			})
			if ev, _, _ := cp.snapshot(); len(finals(ev, "pstale")) != 0 {
				t.Fatalf("plan judged without a successful heartbeat: %q", ev)
			}
			cp.setFailHB(false)
			got := waitPlanFinals(t, cp, stale)
			if len(got) != 1 || !strings.HasPrefix(got[0], "result pstale start vm-a skipped stale plan") {
				t.Errorf("plan computed before the change: results %q, want skipped as stale", got)
			}
			ev, v, _ := cp.snapshot()
			if v != 3 {
				t.Errorf("inventory version %d after the change was reported, want 3", v)
			}
			// The heartbeat carrying the change came before the verdict.
			hb := slices.Index(ev, "heartbeat 3")
			res := slices.IndexFunc(ev, func(e string) bool { return strings.HasPrefix(e, "result pstale ") })
			if hb < 0 || hb > res {
				t.Errorf("events %q: want heartbeat 3 before pstale's result", ev)
			}
			if c := r.calls(t); !slices.Equal(c, []string{"vm.create", "vm.boot"}) {
				t.Errorf("hypervisor calls %q, want vm-a created and booted once", c)
			}

			// The re-plan from the fresh inventory runs with no further heartbeat.
			before := heartbeats(ev)
			fresh := planNamed(r, "pfresh", 3, "stop vm-a")
			cp.publish(fresh)
			if got := waitPlanFinals(t, cp, fresh); !slices.Equal(got, []string{"result pfresh stop vm-a succeeded"}) {
				t.Errorf("re-plan results %q", got)
			}
			ev, _, _ = cp.snapshot()
			first := slices.IndexFunc(ev, func(e string) bool { return strings.HasPrefix(e, "result pfresh ") })
			if n := heartbeats(ev[:first]); n != before {
				t.Errorf("%d heartbeats before the fresh plan ran, want %d: %q", n, before, ev)
			}
		})
	}
}

// BenchmarkListBeforePlan is the hypervisor side of the check an agent
// makes before judging a plan when it applied nothing since its last
// heartbeat: one List of the real provider, here with 4 running VMs.
func BenchmarkListBeforePlan(b *testing.B) {
	r := newRig(b)
	for _, vm := range []string{"vm-a", "vm-b", "vm-c", "vm-d"} {
		if err := r.prov.Create(b.Context(), vm, r.spec); err != nil {
			b.Fatal(err)
		}
		if err := r.prov.Start(b.Context(), vm); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		vms, err := r.prov.List(b.Context())
		if err != nil || len(vms) != 4 {
			b.Fatalf("list = %d VMs, %v", len(vms), err)
		}
	}
}

// A plan cancelled between its delivery and its first action (the agent's
// check before starting) runs nothing; every action is reported skipped.
func TestPlanCancelledBeforeItsFirstActionRunsNothing(t *testing.T) {
	r := newRig(t)
	cp := newMemCP()
	cp.cancelOnCheck = true
	runAgent(t, r, cp)
	p := planNamed(r, "p1", 1, "create vm-a", "start vm-a")
	cp.publish(p)
	got := waitPlanFinals(t, cp, p)
	want := []string{
		"result p1 create vm-a skipped superseded: commit c0mm1t cancelled the plan; not executed",
		"result p1 start vm-a skipped superseded: commit c0mm1t cancelled the plan; not executed",
	}
	if !slices.Equal(got, want) {
		t.Errorf("results = %q, want %q", got, want)
	}
	if c := r.calls(t); len(c) != 0 {
		t.Errorf("hypervisor calls of a cancelled plan: %v", c)
	}
}

// A control plane that refuses an action's start as superseded (and whose
// long-poll does not say so) stops the plan before its next action. The
// first create takes 2s, ample for the refusal to come back meanwhile.
func TestRefusedStartStopsThePlan(t *testing.T) {
	r := newRig(t, `CHFAKE_FAULTS=[{"endpoint":"vm.create","delay":"2s"}]`)
	cp := newMemCP()
	cp.refuseStarts = true
	runAgent(t, r, cp)
	p := planNamed(r, "p1", 1, "create vm-a", "start vm-a", "create vm-b")
	cp.publish(p)
	got := waitPlanFinals(t, cp, p)
	const why = "superseded: the control plane refused to start the plan's actions; not executed"
	want := []string{"result p1 create vm-a succeeded", "result p1 start vm-a skipped " + why, "result p1 create vm-b skipped " + why}
	if !slices.Equal(got, want) {
		t.Errorf("results = %q, want %q", got, want)
	}
	if c := r.calls(t); !slices.Equal(c, []string{"vm.create"}) {
		t.Errorf("hypervisor calls = %v, want only the first action's vm.create", c)
	}
}

// A result the outbox cannot store (disk full, I/O error) after its
// outcome was cached is held and retried: it reaches the control plane
// once the outbox takes writes again, without an agent restart.
func TestResultReachesControlPlaneAfterOutboxWriteFailure(t *testing.T) {
	r := newRig(t)
	cp := newMemCP()
	var failing atomic.Bool
	failing.Store(true)
	agent.SetOutboxWrite(r.ex.Results, func(path string, data []byte, perm os.FileMode) error {
		if failing.Load() {
			return fmt.Errorf("write %s: %w", path, syscall.ENOSPC)
		}
		return atomicfile.Write(path, data, perm)
	})
	runAgent(t, r, cp)

	p := planNamed(r, "p1", 1, "create vm-a", "start vm-a")
	cp.publish(p)
	// Both outcomes are cached while the outbox refuses every write.
	waitFor(t, "the plan's outcomes in the cache", func() (bool, string) {
		var st []string
		for _, a := range p.Actions {
			rec, ok, err := r.ex.Cache.Get(a.ID)
			if err != nil || !ok || !rec.Final() {
				return false, fmt.Sprint(st, ok, err)
			}
			st = append(st, string(rec.Status))
		}
		return true, fmt.Sprint(st)
	})
	if n := r.ex.Results.Len(); n != 0 {
		t.Fatalf("outbox holds %d results while its writes fail", n)
	}
	if n := r.ex.Held(); n == 0 {
		t.Fatal("no result held while the outbox refuses them")
	}
	ev, _, _ := cp.snapshot()
	if got := finals(ev, p.ID); len(got) != 0 {
		t.Fatalf("results reached the control plane while the outbox refused them: %q", got)
	}

	failing.Store(false)
	got := waitPlanFinals(t, cp, p)
	want := []string{"result p1 create vm-a succeeded", "result p1 start vm-a succeeded"}
	if !slices.Equal(got, want) {
		t.Fatalf("results after the outbox recovered = %q, want %q", got, want)
	}
	waitFor(t, "nothing held or queued", func() (bool, string) {
		return r.ex.Held() == 0 && r.ex.Results.Len() == 0, fmt.Sprint(r.ex.Held(), r.ex.Results.Len())
	})
	if c := r.calls(t); !slices.Equal(c, []string{"vm.create", "vm.boot"}) {
		t.Errorf("hypervisor calls = %q, want each action applied once", c)
	}
}
