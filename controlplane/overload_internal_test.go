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
	for i := range 8 {
		release, ok := enter(false)
		if !ok {
			t.Fatalf("request %d of 8 refused", i+1)
		}
		held = append(held, release)
	}
	if _, ok := enter(false); ok {
		t.Fatal("a ninth request was served with the bound full")
	}
	for i := range 2 {
		release, ok := enter(true)
		if !ok {
			t.Fatalf("heartbeat %d of the reserve of 2 refused", i+1)
		}
		held = append(held, release)
	}
	if _, ok := enter(true); ok {
		t.Fatal("a heartbeat beyond the reserve was served")
	}
	held[0]()
	held[0]() // idempotent
	if _, ok := enter(false); !ok {
		t.Fatal("a request after one was released: refused")
	}
	if _, ok := enter(false); ok {
		t.Fatal("a double release freed two slots")
	}
}
