package controlplane

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The notifier sends the server's fire-and-forget wake-ups (the fleet and
// plan-state topics after heartbeats and action reports) to the store in
// batches. Under a rollout every report notified on its own, each a write
// transaction waiting for a pool connection in the agent's request. Now a
// caller hands its topics over and returns; one goroutine at a time writes
// every pending topic, deduplicated, with one store call, then the next
// batch gathered meanwhile. A lost wake-up only delays a page (the
// subscribers re-read on their own schedule too), so failures are logged
// and the topics dropped.

// maxPendingTopics bounds the topics waiting for a flush; more are dropped
// (and counted) while a slow store holds the current batch.
const maxPendingTopics = 10_000

// notifyTimeout bounds one flush, so a hung store cannot hold the queue
// (or a shutdown) for ever.
const notifyTimeout = 10 * time.Second

// topicNotifier is the store method the notifier calls.
type topicNotifier interface {
	NotifyTopics(ctx context.Context, topics []string) error
}

type notifier struct {
	store   topicNotifier
	log     *slog.Logger
	max     int
	dropped prometheus.Counter
	batches prometheus.Counter

	mu      sync.Mutex
	pending map[string]struct{}
	// done is open while a flushing goroutine runs, closed when it has
	// emptied the pending set and exited; nil when none ever ran.
	done    chan struct{}
	running bool
}

func newNotifier(st topicNotifier, log *slog.Logger, reg *prometheus.Registry) (*notifier, error) {
	n := &notifier{
		store:   st,
		log:     log,
		max:     maxPendingTopics,
		pending: map[string]struct{}{},
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nkudo_notify_dropped_total",
			Help: "Wake-up topics dropped because too many were waiting for the store (pages refresh later).",
		}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nkudo_notify_batches_total",
			Help: "Store writes that notified a batch of coalesced wake-up topics.",
		}),
	}
	for _, c := range []prometheus.Collector{n.dropped, n.batches} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// notify queues topics for the next flush and returns at once. The flush
// runs under ctx's values but not its cancellation: it outlives the
// request that asked for it.
func (n *notifier) notify(ctx context.Context, topics ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, t := range topics {
		if _, ok := n.pending[t]; ok {
			continue
		}
		if len(n.pending) >= n.max {
			n.dropped.Inc()
			continue
		}
		n.pending[t] = struct{}{}
	}
	if n.running || len(n.pending) == 0 {
		return
	}
	n.running = true
	n.done = make(chan struct{})
	go n.flush(context.WithoutCancel(ctx), n.done)
}

// flush writes batches until nothing is pending, then exits.
func (n *notifier) flush(ctx context.Context, done chan struct{}) {
	defer close(done)
	for {
		n.mu.Lock()
		if len(n.pending) == 0 {
			n.running = false
			n.mu.Unlock()
			return
		}
		topics := make([]string, 0, len(n.pending))
		for t := range n.pending {
			topics = append(topics, t)
		}
		clear(n.pending)
		n.mu.Unlock()

		fctx, cancel := context.WithTimeout(ctx, notifyTimeout)
		err := n.store.NotifyTopics(fctx, topics)
		cancel()
		n.batches.Inc()
		if err != nil {
			n.log.Warn("notify wake-up topics", "topics", len(topics), "err", err)
		}
	}
}

// wait returns when every topic queued before the call has been written
// (or its write failed), or when ctx ends first.
func (n *notifier) wait(ctx context.Context) error {
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
