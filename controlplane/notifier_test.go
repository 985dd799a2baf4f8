package controlplane

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/sqlite"
)

// gatedStore is a real store whose first NotifyTopics waits for gate, so
// a test can pile wake-ups up behind a flush in progress, and which
// counts the NotifyTopics calls (each one write transaction).
type gatedStore struct {
	store.Store
	entered chan struct{} // closed when the first call is at the gate
	gate    chan struct{}
	calls   atomic.Int64
	batches chan []string
}

func (g *gatedStore) NotifyTopics(ctx context.Context, topics []string) error {
	if g.calls.Add(1) == 1 {
		close(g.entered)
		<-g.gate
	}
	g.batches <- topics
	return g.Store.NotifyTopics(ctx, topics)
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// batch is the next batch the store was given.
func batch(t *testing.T, g *gatedStore) []string {
	t.Helper()
	select {
	case b := <-g.batches:
		return b
	default:
		t.Fatal("fewer store calls than expected")
		return nil
	}
}

func openGated(t *testing.T) *gatedStore {
	t.Helper()
	st, err := sqlite.Open(t.Context(), t.TempDir()+"/nkudo.db", sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &gatedStore{Store: st, entered: make(chan struct{}), gate: make(chan struct{}), batches: make(chan []string, 100)}
}

// TestNotifierCoalesces: a thousand concurrent wake-ups of 200 topics,
// queued while a flush is in progress, are written with one more store
// call, and a subscriber of every topic is woken.
func TestNotifierCoalesces(t *testing.T) {
	ctx := t.Context()
	g := openGated(t)
	n, err := newNotifier(g, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	const topics, wakes = 200, 1000
	subs := make([]<-chan struct{}, topics)
	for i := range subs {
		ch, cancel := g.Subscribe(ctx, fmt.Sprintf("t/%d", i))
		defer cancel()
		subs[i] = ch
	}
	n.notify(ctx, "t/0") // the first flush takes it and waits at the gate
	<-g.entered
	var wg sync.WaitGroup
	for i := range wakes {
		wg.Go(func() { n.notify(ctx, fmt.Sprintf("t/%d", i%topics)) })
	}
	wg.Wait()
	close(g.gate)
	if err := n.wait(ctx); err != nil {
		t.Fatal(err)
	}
	if got := g.calls.Load(); got != 2 {
		t.Errorf("%d wake-ups took %d store calls, want 2 (the gated one, then one batch)", wakes+1, got)
	}
	if got := counterValue(t, n.batches); got != 2 {
		t.Errorf("nkudo_notify_batches_total = %v, want 2", got)
	}
	first, second := batch(t, g), batch(t, g)
	if len(first) != 1 || len(second) != topics {
		t.Errorf("batches of %d and %d topics, want 1 and %d (deduplicated)", len(first), len(second), topics)
	}
	for i, ch := range subs {
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("subscriber of t/%d never woken", i)
		}
	}
}

// TestNotifierBounded: topics beyond the pending bound are dropped and
// counted; the ones kept are still written, and the notifier works again
// once the backlog is gone.
func TestNotifierBounded(t *testing.T) {
	ctx := t.Context()
	g := openGated(t)
	n, err := newNotifier(g, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	n.max = 5
	n.notify(ctx, "first")
	<-g.entered
	for i := range 8 {
		n.notify(ctx, fmt.Sprintf("t/%d", i))
	}
	n.notify(ctx, "t/0") // already pending: neither kept twice nor dropped
	if got := counterValue(t, n.dropped); got != 3 {
		t.Errorf("nkudo_notify_dropped_total = %v, want 3", got)
	}
	close(g.gate)
	if err := n.wait(ctx); err != nil {
		t.Fatal(err)
	}
	batch(t, g)
	if b := batch(t, g); len(b) != 5 {
		t.Errorf("second batch = %v, want the 5 topics kept", b)
	}
	ch, cancel := g.Subscribe(ctx, "later")
	defer cancel()
	n.notify(ctx, "later")
	if err := n.wait(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("a wake-up after the backlog never arrived")
	}
}

// TestNotifierWaitOnIdle: waiting with nothing queued returns at once, and
// a wait cut short by its context says so.
func TestNotifierWaitOnIdle(t *testing.T) {
	g := openGated(t)
	n, err := newNotifier(g, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := n.wait(t.Context()); err != nil {
		t.Fatalf("wait with nothing queued: %v", err)
	}
	n.notify(t.Context(), "x") // held at the gate
	<-g.entered
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := n.wait(ctx); err == nil {
		t.Error("wait on a held flush returned nil after its context ended")
	}
	close(g.gate)
	if err := n.wait(t.Context()); err != nil {
		t.Fatal(err)
	}
}
