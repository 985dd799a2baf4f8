package reconciler

import (
	"context"
	"sync"

	"github.com/nkudo/nkudo/webhooks"
)

// Loop is the whole GitOps loop, ready to plug into a control plane:
//
//	loop, err := reconciler.NewLoop(reconciler.Options{Store: st, DataDir: dir, Logger: log, PublicURL: url})
//	opts.Reconciler, opts.Webhooks = loop, loop.Webhooks
//	go loop.Run(ctx)
type Loop struct {
	*Reconciler
	// Webhooks serves POST /v1/webhooks/{repo}.
	Webhooks *webhooks.Handler
}

// NewLoop builds a reconciler and the webhook handler that feeds it: an
// accepted delivery goes straight into the reconciler's task queue.
func NewLoop(o Options) (*Loop, error) {
	rec, err := New(o)
	if err != nil {
		return nil, err
	}
	wh := webhooks.New(webhooks.Options{Store: o.Store, Sink: rec, Logger: o.Logger, Now: o.Now})
	return &Loop{Reconciler: rec, Webhooks: wh}, nil
}

// Run runs the reconciler, and the webhook handler's pruning of old
// delivery IDs, until ctx ends.
func (l *Loop) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { l.Webhooks.Run(ctx) })
	err := l.Reconciler.Run(ctx)
	wg.Wait()
	return err
}
