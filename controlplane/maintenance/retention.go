package maintenance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nkudo/nkudo/store"
)

// Retention defaults.
const (
	DefaultRetentionInterval = time.Hour
	DefaultPlanRetention     = 30 * 24 * time.Hour
	DefaultDeliveryRetention = 7 * 24 * time.Hour
)

// RetentionLease is the store lease that picks the one replica pruning.
const RetentionLease = "maintenance/retention"

// RetentionOptions configure the retention job. Zero durations take the
// defaults; a negative retention disables that kind of pruning.
type RetentionOptions struct {
	Store  store.Store
	Logger *slog.Logger // nil: discard
	// Registerer receives nkudo_retention_pruned_rows_total and
	// nkudo_retention_runs_total (nil: not registered).
	Registerer prometheus.Registerer
	// Interval is the time between runs (0: DefaultRetentionInterval).
	Interval time.Duration
	// Plans: finished plans (with actions and log lines) not updated for
	// this long are deleted (0: DefaultPlanRetention; negative: never).
	Plans time.Duration
	// Deliveries: webhook delivery IDs older than this are forgotten
	// (0: DefaultDeliveryRetention; negative: never).
	Deliveries time.Duration
	// Holder names this replica in the lease ("": host, pid and a random suffix).
	Holder string
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Retention prunes finished plans, their logs and old webhook delivery IDs
// on a schedule. With several replicas on one database, only the holder of
// the RetentionLease prunes; the lease outlives one interval, so a replica
// that stops is replaced within two.
type Retention struct {
	o      RetentionOptions
	log    *slog.Logger
	pruned *prometheus.CounterVec
	runs   *prometheus.CounterVec
}

// Pruned counts what one run deleted. Ran is false when another replica
// holds the lease (nothing was attempted).
type Pruned struct {
	Ran        bool
	Plans      int64
	Deliveries int64
}

// NewRetention checks the options and registers the metrics.
func NewRetention(o RetentionOptions) (*Retention, error) {
	if o.Store == nil {
		return nil, errors.New("retention: a store is required")
	}
	if o.Interval < 0 {
		return nil, fmt.Errorf("retention: interval %s: want a positive duration", o.Interval)
	}
	if o.Interval == 0 {
		o.Interval = DefaultRetentionInterval
	}
	if o.Plans == 0 {
		o.Plans = DefaultPlanRetention
	}
	if o.Deliveries == 0 {
		o.Deliveries = DefaultDeliveryRetention
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Holder == "" {
		o.Holder = holderID()
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Retention{
		o:   o,
		log: log.With("component", "retention"),
		pruned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nkudo_retention_pruned_rows_total",
			Help: "Rows deleted by the retention job, by kind (plans, deliveries); a plan's actions and log lines go with it.",
		}, []string{"kind"}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nkudo_retention_runs_total",
			Help: "Retention runs by result (pruned, standby: another replica holds the lease, error).",
		}, []string{"result"}),
	}
	// Zero-valued series exist from the start, so rate() sees the first prune.
	for _, k := range []string{"plans", "deliveries"} {
		r.pruned.WithLabelValues(k)
	}
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{r.pruned, r.runs} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("retention: register metric: %w", err)
			}
		}
	}
	return r, nil
}

// holderID names this process for the lease.
func holderID() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// RunOnce takes (or renews) the lease and, when this replica holds it,
// prunes plans and deliveries older than their retention.
func (r *Retention) RunOnce(ctx context.Context) (Pruned, error) {
	var p Pruned
	ok, err := r.o.Store.AcquireLease(ctx, RetentionLease, r.o.Holder, 2*r.o.Interval)
	if err != nil {
		r.runs.WithLabelValues("error").Inc()
		return p, fmt.Errorf("retention: acquire lease: %w", err)
	}
	if !ok {
		r.runs.WithLabelValues("standby").Inc()
		return p, nil
	}
	p.Ran = true
	now := r.o.Now()
	var errs []error
	if r.o.Plans > 0 {
		n, err := r.o.Store.PrunePlans(ctx, store.Actor{Kind: store.ActorSystem, ID: "retention"}, now.Add(-r.o.Plans))
		if err != nil {
			errs = append(errs, fmt.Errorf("retention: %w", err))
		}
		p.Plans = n
		r.pruned.WithLabelValues("plans").Add(float64(n))
	}
	if r.o.Deliveries > 0 {
		n, err := r.o.Store.PruneDeliveries(ctx, now.Add(-r.o.Deliveries))
		if err != nil {
			errs = append(errs, fmt.Errorf("retention: %w", err))
		}
		p.Deliveries = n
		r.pruned.WithLabelValues("deliveries").Add(float64(n))
	}
	if err := errors.Join(errs...); err != nil {
		r.runs.WithLabelValues("error").Inc()
		return p, err
	}
	r.runs.WithLabelValues("pruned").Inc()
	return p, nil
}

// Run prunes at once and then every interval until ctx ends; it gives the
// lease up on the way out so another replica can take over at once.
// Failures are logged and retried on the next tick.
func (r *Retention) Run(ctx context.Context) {
	r.log.Info("retention job started", "interval", r.o.Interval, "plans", retentionString(r.o.Plans), "deliveries", retentionString(r.o.Deliveries))
	t := time.NewTicker(r.o.Interval)
	defer t.Stop()
	for {
		p, err := r.RunOnce(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			r.log.Error("retention run failed", "err", err)
		case p.Ran && (p.Plans > 0 || p.Deliveries > 0):
			r.log.Info("pruned old rows", "plans", p.Plans, "deliveries", p.Deliveries)
		case p.Ran:
			r.log.Debug("nothing to prune")
		case err == nil:
			r.log.Debug("another replica holds the retention lease")
		}
		select {
		case <-ctx.Done():
			// The parent is done; release with a short context of its own.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if err := r.o.Store.ReleaseLease(rctx, RetentionLease, r.o.Holder); err != nil && !errors.Is(err, store.ErrClosed) {
				r.log.Warn("release retention lease", "err", err)
			}
			cancel()
			return
		case <-t.C:
		}
	}
}

func retentionString(d time.Duration) string {
	if d < 0 {
		return "never"
	}
	return d.String()
}
