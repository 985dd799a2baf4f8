package main

import (
	"context"
	"log/slog"

	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/store"
)

// wireGitOps attaches the GitOps loop (reconciler, webhooks, desired state)
// to the server options and starts its background work; the returned stop
// function waits for that work to end. Until the loop is wired in, the
// reconcile and webhook endpoints answer 501.
func wireGitOps(ctx context.Context, st store.Store, log *slog.Logger, opts *controlplane.Options) (stop func(), err error) {
	return func() {}, nil
}
