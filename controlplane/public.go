package controlplane

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/nkudo/nkudo/api"
)

// Public routes answer anyone, so each one whose cost is not fixed is
// bounded here; docs/api.md lists the bound of every unauthenticated route.

// publicInFlight is how many requests of one costly public route (the CRL,
// /metrics) run at once; more get 503 with Retry-After.
const publicInFlight = 4

// busySlots caps the concurrent requests of one route.
type busySlots chan struct{}

// enter takes a slot, or answers 503 when all are taken.
func (b busySlots) enter(what string) (release func(), err error) {
	select {
	case b <- struct{}{}:
		return func() { <-b }, nil
	default:
		return nil, &httpError{status: http.StatusServiceUnavailable, code: api.CodeUnavailable,
			msg: fmt.Sprintf("too many %s requests in progress; retry shortly", what), retryAfter: time.Second}
	}
}

// readyzInterval is the least time between two database pings of /readyz:
// callers within it share the last answer.
const readyzInterval = time.Second

// readiness caches the database ping of /readyz. Callers arriving during a
// ping wait for it and share its result, so the database sees at most one
// ping per readyzInterval however many callers there are.
type readiness struct {
	mu  sync.Mutex
	at  time.Time
	err error
}

func (r *readiness) check(ctx context.Context, now time.Time, ping func(context.Context) error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.at.IsZero() && now.Sub(r.at) < readyzInterval && now.Sub(r.at) >= 0 {
		return r.err
	}
	r.err, r.at = ping(ctx), now
	return r.err
}
