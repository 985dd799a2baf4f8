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

	"github.com/nkudo/nkudo/agent"
	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/model"
)

// reportOutage makes the control plane unreachable for reports while down is set.
type reportOutage struct {
	agent.ControlPlane
	mu   sync.Mutex
	down bool
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
	return o.ControlPlane.ReportResults(ctx, rs...)
}

func TestExecutionLogStreaming(t *testing.T) {
	edgeBackends(t, func(t *testing.T, postgres bool) {
		env := startEdgeCP(t, postgres)
		e := newEdgeSite(t, env, "acme", "store-1")
		out := &reportOutage{}
		e.wrap = func(c agent.ControlPlane) agent.ControlPlane { out.ControlPlane = c; return out }
		e.start()
		waitEdge(t, "the first heartbeat", 20*time.Second, func() (bool, string) { return e.inventory().Reported, "" })

		// Plan 1 streams while the control plane is up.
		d1 := e.desired(e.vm("vm-a", model.VMRunning))
		p1 := e.plan(d1)
		e.waitPlanDone(p1)
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
