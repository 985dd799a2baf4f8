package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nkudo/nkudo/controlplane/maintenance"
	"github.com/nkudo/nkudo/store"
)

// RetentionFlags tune the retention job that `serve` runs (on one replica
// at a time, chosen by a store lease).
type RetentionFlags struct {
	RetentionInterval string `help:"How often old rows are pruned (Go duration; negative disables the job)." default:"1h" env:"NKUDO_RETENTION_INTERVAL"`
	PlanRetention     string `help:"Finished plans, with their actions and logs, are deleted after this long without change (negative keeps them)." default:"720h" env:"NKUDO_PLAN_RETENTION"`
	DeliveryRetention string `help:"Webhook delivery IDs (kept for de-duplication) older than this are forgotten (negative: not by this job; the webhook receiver forgets them after 7 days anyway)." default:"168h" env:"NKUDO_DELIVERY_RETENTION"`
}

// startRetention starts the retention job; the returned stop function ends
// it and waits, before the store is closed.
func startRetention(ctx context.Context, st store.Store, log *slog.Logger, reg prometheus.Registerer, f RetentionFlags) (stop func(), err error) {
	interval, err := parseDuration(f.RetentionInterval)
	if err != nil {
		return nil, fmt.Errorf("--retention-interval: %w", err)
	}
	plans, err := parseDuration(f.PlanRetention)
	if err != nil {
		return nil, fmt.Errorf("--plan-retention: %w", err)
	}
	deliveries, err := parseDuration(f.DeliveryRetention)
	if err != nil {
		return nil, fmt.Errorf("--delivery-retention: %w", err)
	}
	if interval < 0 {
		log.Info("retention job disabled", "component", "retention")
		return func() {}, nil
	}
	r, err := maintenance.NewRetention(maintenance.RetentionOptions{
		Store: st, Logger: log, Registerer: reg,
		Interval: interval, Plans: plans, Deliveries: deliveries,
	})
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(rctx)
	}()
	return func() { cancel(); <-done }, nil
}
