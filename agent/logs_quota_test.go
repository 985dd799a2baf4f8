package agent_test

import (
	"context"
	"sync"
	"testing"

	"github.com/nkudo/nkudo/agent"
	"github.com/nkudo/nkudo/api"
)

// closingCP answers log batches as a control plane whose log quota for
// plan "full" is used up, and records every line it is sent.
type closingCP struct {
	*memCP
	mu   sync.Mutex
	sent []api.LogLine
}

func (c *closingCP) SendLogs(_ context.Context, lines []api.LogLine) (api.LogsResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent = append(c.sent, lines...)
	var resp api.LogsResponse
	for _, l := range lines {
		if l.PlanID == "full" {
			resp.Dropped++
		} else {
			resp.Accepted++
		}
	}
	if resp.Dropped > 0 {
		resp.Closed = []api.LogClosed{{PlanID: "full", Quota: "plan", LimitBytes: 1 << 20}}
	}
	return resp, nil
}

func (c *closingCP) sentOf(plan string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, l := range c.sent {
		if l.PlanID == plan {
			n++
		}
	}
	return n
}

// TestDeliverStopsSendingClosedLogs: once the control plane answers that a
// plan's log is closed at a quota, the agent drops that plan's later lines
// from its outbox without sending them (no retry loop), and keeps sending
// the lines of other plans.
func TestDeliverStopsSendingClosedLogs(t *testing.T) {
	r := newRig(t)
	cp := &closingCP{memCP: newMemCP()}
	a := agent.New(agent.Config{Client: cp, Executor: r.ex, Facts: agent.FactsSource{StateDir: r.state, Hypervisor: r.prov}, AgentVersion: "test"})
	add := func(plan string, seq int64) {
		t.Helper()
		if err := r.ex.Logs.Add(agent.OutboxEntry{Log: &api.LogLine{PlanID: plan, Seq: seq, Stream: api.StreamAgent, Line: "x"}}); err != nil {
			t.Fatal(err)
		}
	}
	add("full", 1)
	add("open", 1)
	if err := a.Deliver(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := cp.sentOf("full"); n != 1 {
		t.Fatalf("first delivery sent %d lines of the full plan, want 1", n)
	}
	add("full", 2)
	add("full", 3)
	add("open", 2)
	if err := a.Deliver(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := cp.sentOf("full"); n != 1 {
		t.Errorf("lines of the closed plan sent %d times in all, want only the first", n)
	}
	if n := cp.sentOf("open"); n != 2 {
		t.Errorf("lines of the open plan sent: %d, want 2", n)
	}
	if n := r.ex.Logs.Len(); n != 0 {
		t.Errorf("%d lines left in the outbox, want 0", n)
	}
}
