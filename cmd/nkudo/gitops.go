package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/reconciler"
	"github.com/nkudo/nkudo/store"
)

// GitOpsFlags tune the GitOps loop that `serve` runs beside the API.
type GitOpsFlags struct {
	PollInterval string `help:"How often every repository is fetched, webhooks or not (Go duration; negative disables polling)." default:"1m" env:"NKUDO_POLL_INTERVAL"`
	WatchLocal   bool   `help:"Watch local (file://) repositories and reconcile on every commit (development)." env:"NKUDO_WATCH_LOCAL"`
	// StatusPrefix keeps several control planes (or installations) posting
	// to one forge from overwriting each other's statuses.
	StatusPrefix string `help:"Prefix of every commit status context (\"eu/\" posts eu/nkudo/plan); empty for none." env:"NKUDO_STATUS_PREFIX" placeholder:"PREFIX"`
	// OfflineTimeout is when nkudo/apply gives up on a silent site.
	OfflineTimeout time.Duration `name:"site-offline-timeout" help:"A site with a plan that has not heartbeated for this long fails nkudo/apply." default:"15m" env:"NKUDO_SITE_OFFLINE_TIMEOUT"`
	// AllowInsecureCredentials exists for local forges without TLS.
	AllowInsecureCredentials bool `help:"Let credentials travel over plain http:// to the host they are bound to (local development only; by default https or ssh)." env:"NKUDO_ALLOW_INSECURE_CREDENTIALS"`
}

// wireGitOps attaches the GitOps loop (reconciler, webhooks, desired state)
// to the server options and starts it; the returned stop function ends the
// loop and waits for it, before the store is closed.
func wireGitOps(ctx context.Context, st store.Store, log *slog.Logger, dataDir, publicURL string, f GitOpsFlags, opts *controlplane.Options) (stop func(), err error) {
	poll, err := parseDuration(f.PollInterval)
	if err != nil {
		return nil, fmt.Errorf("--poll-interval: %w", err)
	}
	loop, err := reconciler.NewLoop(reconciler.Options{
		// The loop's packages name their own component in every line.
		Store: st, DataDir: dataDir, Logger: log,
		PublicURL: publicURL, PollInterval: poll, WatchLocal: f.WatchLocal,
		StatusPrefix: f.StatusPrefix, OfflineTimeout: f.OfflineTimeout,
		AllowInsecureCredentials: f.AllowInsecureCredentials,
	})
	if err != nil {
		return nil, fmt.Errorf("start GitOps loop: %w", err)
	}
	opts.Reconciler, opts.Desired, opts.Webhooks = loop, loop, loop.Webhooks
	opts.AllowInsecureCredentials = f.AllowInsecureCredentials
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := loop.Run(lctx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("GitOps loop stopped", "err", err)
		}
	}()
	return func() { cancel(); <-done }, nil
}
