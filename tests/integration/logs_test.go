package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/agent"
	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/model"
)

// reportOutage makes the control plane unreachable for reports while down
// is set, and for heartbeats while hbDown is set. It keeps every result the
// server accepted, in order.
type reportOutage struct {
	agent.ControlPlane
	mu        sync.Mutex
	down      bool
	hbDown    bool
	hbRefused int
	sent      []api.ActionResult
}

// heartbeatsRefused counts the heartbeats refused while held.
func (o *reportOutage) heartbeatsRefused() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.hbRefused
}

func (o *reportOutage) holdHeartbeats(down bool) {
	o.mu.Lock()
	o.hbDown = down
	o.mu.Unlock()
}

// accepted returns the results the server accepted from index from on.
func (o *reportOutage) accepted(from int) []api.ActionResult {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]api.ActionResult(nil), o.sent[min(from, len(o.sent)):]...)
}

func (o *reportOutage) Heartbeat(ctx context.Context, req api.HeartbeatRequest) (api.HeartbeatResponse, error) {
	o.mu.Lock()
	down := o.hbDown
	if down {
		o.hbRefused++
	}
	o.mu.Unlock()
	if down {
		return api.HeartbeatResponse{}, errReportOutage
	}
	return o.ControlPlane.Heartbeat(ctx, req)
}

func (o *reportOutage) isDown() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.down
}

func (o *reportOutage) set(down bool) {
	o.mu.Lock()
	o.down = down
	o.mu.Unlock()
}

var errReportOutage = errors.New("dial tcp: connect: connection refused (outage)")

func (o *reportOutage) SendLogs(ctx context.Context, lines []api.LogLine) (api.LogsResponse, error) {
	if o.isDown() {
		return api.LogsResponse{}, errReportOutage
	}
	return o.ControlPlane.SendLogs(ctx, lines)
}

func (o *reportOutage) ReportResults(ctx context.Context, rs ...api.ActionResult) (api.ResultsResponse, error) {
	if o.isDown() {
		return api.ResultsResponse{}, errReportOutage
	}
	resp, err := o.ControlPlane.ReportResults(ctx, rs...)
	if err == nil {
		o.mu.Lock()
		o.sent = append(o.sent, rs...)
		o.mu.Unlock()
	}
	return resp, err
}

func TestExecutionLogStreaming(t *testing.T) {
	edgeBackends(t, func(t *testing.T, postgres bool) {
		env := startEdgeCP(t, postgres)
		e := newEdgeSite(t, env, "acme", "store-1")
		out := &reportOutage{}
		e.wrap = func(c agent.ControlPlane) agent.ControlPlane { out.ControlPlane = c; return out }
		e.start()
		e.waitFirstHeartbeat()

		// Plan 1 streams while the control plane is up.
		d1 := e.desired(e.vm("vm-a", model.VMRunning))
		p1 := e.plan(d1)
		e.waitPlanDone(p1)
		// Plan 2 is made from the inventory after plan 1, as the reconciler
		// does on the heartbeat that reports it (a plan made earlier is
		// refused as stale; TestPlanSharingAnActionAcrossAnOutage covers the
		// plan made before that heartbeat arrived).
		e.waitConverged(d1)
		checkPlanLogs(t, e, p1)

		// Plan 2 runs while reports cannot get through and the control plane
		// restarts: the agent buffers on disk and delivers everything after.
		out.set(true)
		d2 := e.desired(e.vm("vm-a", model.VMStopped), e.vm("vm-b", model.VMRunning), e.vm("vm-c", model.VMRunning))
		p2 := e.plan(d2)
		outbox := filepath.Join(e.state, "agent", "outbox", "logs")
		waitEdge(t, "the agent to execute plan 2 while buffering", 30*time.Second, func() (bool, string) {
			for _, a := range p2.Actions {
				if r, ok, _ := edgeCache(t, e).Get(a.ID); !ok || !r.Final() {
					return false, "running " + a.ID[:8]
				}
			}
			ob, _ := agent.OpenOutbox(outbox, 0)
			return ob.Len() > 0, fmt.Sprintf("%d buffered lines", ob.Len())
		})
		env.Restart()
		out.set(false)
		e.waitPlanDone(p2)
		waitEdge(t, "the buffered logs to be delivered", 30*time.Second, func() (bool, string) {
			ob, _ := agent.OpenOutbox(outbox, 0)
			return ob.Len() == 0, fmt.Sprintf("%d still buffered", ob.Len())
		})
		checkPlanLogs(t, e, p2)
		checkPlanLogs(t, e, p1) // untouched by the restart
		assertResultsOnce(t, e, p2)
	})
}

// TestPlanSharingAnActionAcrossAnOutage: the control plane plans again from
// an inventory that predates the last plan (its heartbeat has not arrived),
// so the new plan repeats one of the last plan's actions with the same ID.
// The agent knows it changed the host since its last acknowledged
// heartbeat: it does not judge the new plan until a heartbeat gets through,
// then skips it as stale while its reports are buffered across an outage
// and a control-plane restart. Every action of the stale plan gets its own
// (skipped) outcome, the shared action keeps plan 1's outcome, nothing of
// plan 1 is sent again, and the re-plan from the fresh inventory repeats
// nothing.
func TestPlanSharingAnActionAcrossAnOutage(t *testing.T) {
	edgeBackends(t, func(t *testing.T, postgres bool) {
		env := startEdgeCP(t, postgres)
		e := newEdgeSite(t, env, "acme", "store-1")
		out := &reportOutage{}
		e.wrap = func(c agent.ControlPlane) agent.ControlPlane { out.ControlPlane = c; return out }
		e.start()
		e.waitFirstHeartbeat()
		// Heartbeats stop getting through: the control plane does not learn of plan 1's VM.
		out.holdHeartbeats(true)
		inv := e.inventory()

		d1 := e.desired(e.vm("vm-a", model.VMRunning))
		p1 := e.plan(d1)
		e.waitPlanDone(p1)
		// The server has plan 1's outcome; wait until the agent has heard so
		// too (its outbox is empty), so that every later result counts.
		waitEdge(t, "plan 1's results to leave the outbox", 20*time.Second, func() (bool, string) {
			ob, _ := agent.OpenOutbox(filepath.Join(e.state, "agent", "outbox", "results"), 0)
			return ob.Len() == 0, fmt.Sprint(ob.Len())
		})
		before := len(out.accepted(0))

		out.set(true)
		d2 := e.desired(e.vm("vm-a", model.VMStopped), e.vm("vm-b", model.VMRunning), e.vm("vm-c", model.VMRunning))
		refused := out.heartbeatsRefused()
		p2 := e.plan(d2)
		if p2.InventoryVersion != inv.Version || p2.InventoryVersion != p1.InventoryVersion {
			t.Fatalf("plan 2 made against inventory version %d, want %d (the one before plan 1)", p2.InventoryVersion, inv.Version)
		}
		shared := planActionID(t, p1, model.OpCreate, "vm-a")
		if planActionID(t, p2, model.OpCreate, "vm-a") != shared || len(p2.Actions) != 5 {
			t.Fatalf("plan 2 does not repeat plan 1's create of vm-a: %+v", p2.Actions)
		}
		// Not judged while the change cannot be reported.
		waitEdge(t, "the agent to try to report before judging plan 2", 20*time.Second, func() (bool, string) {
			return out.heartbeatsRefused() >= refused+2, fmt.Sprint(out.heartbeatsRefused())
		})
		for _, a := range p2.Actions {
			r, ok, _ := edgeCache(t, e).Get(a.ID)
			if ok && r.PlanID == p2.ID {
				t.Fatalf("plan 2 judged while heartbeats were held: %s %s %s", a.Operation, a.VM, r.Status)
			}
		}
		out.holdHeartbeats(false)
		waitEdge(t, "the agent to skip plan 2 while buffering", 30*time.Second, func() (bool, string) {
			for _, a := range p2.Actions {
				if a.ID == shared {
					continue
				}
				if r, ok, _ := edgeCache(t, e).Get(a.ID); !ok || r.Status != model.ActionSkipped {
					return false, fmt.Sprintf("%s %s: %+v", a.Operation, a.VM, r)
				}
			}
			return true, ""
		})
		if v := e.inventory().Version; v <= inv.Version {
			t.Errorf("inventory version %d after the heartbeat got through, want newer than %d", v, inv.Version)
		}
		if r, _, _ := edgeCache(t, e).Get(shared); r.PlanID != p1.ID || r.Status != model.ActionSucceeded {
			t.Errorf("the shared create lost plan 1's outcome: %+v", r)
		}
		env.Restart()
		out.set(false)
		waitEdge(t, "the outbox to drain", 30*time.Second, func() (bool, string) {
			ob, _ := agent.OpenOutbox(filepath.Join(e.state, "agent", "outbox", "results"), 0)
			lb, _ := agent.OpenOutbox(filepath.Join(e.state, "agent", "outbox", "logs"), 0)
			return ob.Len()+lb.Len() == 0, fmt.Sprintf("%d results, %d log lines buffered", ob.Len(), lb.Len())
		})

		final := map[string]int{}
		for _, r := range out.accepted(before) {
			if r.PlanID != p2.ID {
				t.Errorf("after plan 1 finished, a result of plan %s was sent: %s %s", r.PlanID[:12], r.ActionID[:12], r.Status)
				continue
			}
			if r.Status != model.ActionSkipped || !strings.Contains(r.Error, "stale plan") {
				t.Errorf("plan 2 result %s %s %q, want skipped as stale", r.ActionID[:12], r.Status, r.Error)
			}
			final[r.ActionID]++
		}
		for _, a := range p2.Actions {
			if final[a.ID] != 1 {
				t.Errorf("plan 2, %s %s: %d final results sent, want 1", a.Operation, a.VM, final[a.ID])
			}
		}
		sp, err := env.Store().GetPlan(t.Context(), e.tenant, p2.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range sp.Actions {
			if a.Status != model.ActionSkipped {
				t.Errorf("plan 2 action %s %s stored as %s, want skipped", a.Action.Operation, a.Action.VM, a.Status)
			}
		}
		logs, err := env.Store().Logs(t.Context(), e.tenant, p2.ID, 0, 100)
		if err != nil || len(logs) == 0 || !strings.Contains(logs[0].Line, "stale plan") {
			t.Errorf("plan 2's log = %+v (%v), want the stale-plan line", logs, err)
		}

		// The re-plan from the fresh inventory does only what is left.
		p3 := e.plan(d2)
		var ops []string
		for _, a := range p3.Actions {
			ops = append(ops, string(a.Operation)+" "+a.VM)
		}
		if d := cmp.Diff([]string{"stop vm-a", "create vm-b", "create vm-c", "start vm-b", "start vm-c"}, ops); d != "" {
			t.Errorf("re-plan (-want +got):\n%s", d)
		}
		e.waitPlanDone(p3)
		e.waitConverged(d2)
		assertOncePerVM(t, e.chCalls(), []string{"vm.create", "vm.boot"}, "vm-a", "vm-b", "vm-c")
		checkPlanLogs(t, e, p3)
		checkPlanLogs(t, e, p1)
	})
}

// checkPlanLogs asserts that the stored log of p is complete (every sequence
// number the agent handed out, no gaps), ordered, and follows the plan's
// action order.
func checkPlanLogs(t *testing.T, e *edgeSite, p *model.Plan) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.state, "agent", "logseq", p.ID+".seq"))
	if err != nil {
		t.Fatalf("agent's log sequence for plan %s: %v", p.ID[:12], err)
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	var lines []string
	waitEdge(t, "every log line of the plan to be stored", 20*time.Second, func() (bool, string) {
		got, err := e.env.Store().Logs(t.Context(), e.tenant, p.ID, 0, 10000)
		if err != nil {
			return false, err.Error()
		}
		return int64(len(got)) == n, fmt.Sprintf("%d of %d lines", len(got), n)
	})
	got, _ := e.env.Store().Logs(t.Context(), e.tenant, p.ID, 0, 10000)
	index := map[string]int{}
	for i, a := range p.Actions {
		index[a.ID] = i
	}
	lastAction := -1
	for i, l := range got {
		if l.Seq != int64(i+1) {
			t.Fatalf("line %d has seq %d: gap or disorder", i, l.Seq)
		}
		if i > 0 && l.Time.Before(got[i-1].Time) {
			t.Errorf("line %d is older than line %d", l.Seq, got[i-1].Seq)
		}
		if ai, ok := index[l.ActionID]; ok {
			if ai < lastAction {
				t.Errorf("line %d belongs to action %d after lines of action %d", l.Seq, ai, lastAction)
			}
			lastAction = ai
		}
		lines = append(lines, l.Line)
	}
	all := strings.Join(lines, "\n")
	for _, a := range p.Actions {
		if want := fmt.Sprintf("%s %s: done", a.Operation, a.VM); !strings.Contains(all, want) {
			t.Errorf("log of plan %s lacks %q:\n%s", p.ID[:12], want, all)
		}
	}
}
