package controlplane

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"
)

// TestBusySlots: a route's slots are taken up to its cap, then the answer
// is 503 with Retry-After, and a released slot is usable again.
func TestBusySlots(t *testing.T) {
	b := make(busySlots, 2)
	r1, err := b.enter("CRL")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.enter("CRL"); err != nil {
		t.Fatal(err)
	}
	_, err = b.enter("CRL")
	var he *httpError
	if !errors.As(err, &he) || he.status != http.StatusServiceUnavailable || he.retryAfter <= 0 {
		t.Fatalf("third request: %v, want 503 with Retry-After", err)
	}
	r1()
	if _, err := b.enter("CRL"); err != nil {
		t.Errorf("after a release: %v", err)
	}
}

// TestReadinessPingsOncePerInterval: callers within readyzInterval share
// one database ping, including its failure; a later caller pings again.
func TestReadinessPingsOncePerInterval(t *testing.T) {
	var r readiness
	pings := 0
	down := errors.New("database down")
	ping := func(context.Context) error { pings++; return down }
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 100 {
		if err := r.check(t.Context(), t0.Add(time.Duration(i)*time.Millisecond), ping); !errors.Is(err, down) {
			t.Fatalf("check %d: %v, want the shared failure", i, err)
		}
	}
	if pings != 1 {
		t.Errorf("%d pings for 100 checks within the interval, want 1", pings)
	}
	_ = r.check(t.Context(), t0.Add(readyzInterval), ping)
	if pings != 2 {
		t.Errorf("%d pings after the interval, want 2", pings)
	}
}
