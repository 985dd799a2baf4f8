package controlplane

import (
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nkudo/nkudo/api"
)

// TestOverloadHeartbeatReserve: with the agent bound full, only heartbeats
// get in, up to a quarter of the bound; a released slot serves anyone.
func TestOverloadHeartbeatReserve(t *testing.T) {
	o, err := newOverload(8, 1, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	enter := func(heartbeat bool) (func(), bool) {
		release, err := o.enterAgent(heartbeat)
		var he *httpError
		if err != nil && (!errors.As(err, &he) || he.code != api.CodeUnavailable) {
			t.Fatalf("enterAgent: %v; want nil or 503 unavailable", err)
		}
		return release, err == nil
	}
	var held []func()
	// fill takes n slots as heartbeats or other requests, then checks
	// that one more of the same kind is refused.
	fill := func(n int, heartbeat bool, what string) {
		for i := range n {
			release, ok := enter(heartbeat)
			if !ok {
				t.Fatalf("%s %d of %d refused", what, i+1, n)
			}
			held = append(held, release)
		}
		if _, ok := enter(heartbeat); ok {
			t.Fatalf("%s %d was served beyond its %d slots", what, n+1, n)
		}
	}
	fill(8, false, "request")  // the bound
	fill(2, true, "heartbeat") // the reserve: a quarter of it
	held[0]()
	held[0]() // idempotent
	if _, ok := enter(false); !ok {
		t.Fatal("a request after one was released: refused")
	}
	if _, ok := enter(false); ok {
		t.Fatal("a double release freed two slots")
	}
}
