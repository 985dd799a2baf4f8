package agent_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nkudo/nkudo/agent"
	"github.com/nkudo/nkudo/api"
)

// An overloaded control plane answers 503 with Retry-After; the agent's
// heartbeat and plan poll each wait exactly that long (longer than any
// backoff draw here) before they ask again, and ask nothing meanwhile.
func TestAgentHonoursRetryAfter(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Retry-After", "7")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":{"code":"unavailable","message":"too many agent requests in progress"}}`))
	}))
	t.Cleanup(srv.Close)
	client, err := api.NewClient(api.ClientConfig{BaseURL: srv.URL, HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var waits []time.Duration
	recorded := make(chan struct{}, 16)
	never := make(chan time.Time) // the test decides when time passes: never
	r := newRig(t)
	a := agent.New(agent.Config{Client: client, Executor: r.ex, Facts: agent.FactsSource{StateDir: r.state, Hypervisor: r.prov},
		AgentVersion: "test", PollWait: time.Second, FirstHeartbeat: time.Second,
		After: func(d time.Duration) <-chan time.Time {
			mu.Lock()
			waits = append(waits, d)
			mu.Unlock()
			recorded <- struct{}{}
			return never
		}})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	// Heartbeat, plan poll and the idle delivery loop each wait once.
	for range 3 {
		select {
		case <-recorded:
		case <-time.After(30 * time.Second):
			t.Fatal("the agent's loops did not all start waiting")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	sevens := 0
	for _, d := range waits {
		if d == 7*time.Second {
			sevens++
		}
	}
	if sevens != 2 {
		t.Errorf("waits %v: want the heartbeat and the plan poll each to wait the 7s Retry-After", waits)
	}
	for _, d := range waits {
		if d < 7*time.Second {
			t.Errorf("waits %v: one is shorter than Retry-After", waits)
		}
	}
	if h := hits.Load(); h != 2 {
		t.Errorf("%d requests, want 2 (one heartbeat, one poll; nothing before Retry-After passed)", h)
	}
}
