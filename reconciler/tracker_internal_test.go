package reconciler

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nkudo/nkudo/store"
)

func TestApplyTracker(t *testing.T) {
	var a applyTracker
	fleet := store.Repository{ID: "fleet"}
	t1 := &tracking{repo: fleet, commit: "c1"}
	a.add(t1)
	a.add(&tracking{repo: fleet, commit: "c2"})
	t1b := &tracking{repo: fleet, commit: "c1"}
	a.add(t1b) // the same commit tracked again replaces the first
	list := a.list()
	if len(list) != 2 {
		t.Fatalf("%d trackings, want 2", len(list))
	}
	for _, tr := range list {
		if tr == t1 {
			t.Error("the replaced tracking is still followed")
		}
	}
	a.remove(t1b)
	if list := a.list(); len(list) != 1 || list[0].commit != "c2" {
		t.Errorf("after remove: %v, want c2 only", list)
	}
}

// TestClosedPRs: a closed pull request stays closed until reopened, and
// the set forgets everything rather than grow past its bound.
func TestClosedPRs(t *testing.T) {
	var c closedPRs
	if c.has("fleet#1") {
		t.Fatal("empty set has fleet#1")
	}
	c.close("fleet#1")
	if !c.has("fleet#1") || c.has("fleet#2") {
		t.Fatal("close marks exactly its pull request")
	}
	c.reopen("fleet#1")
	if c.has("fleet#1") {
		t.Fatal("reopened pull request still closed")
	}
	for i := range closedPRsMax {
		c.close(fmt.Sprintf("fleet#%d", i))
	}
	if !c.has("fleet#0") {
		t.Fatal("forgot before the bound")
	}
	c.close("fleet#next")
	if c.has("fleet#0") || !c.has("fleet#next") {
		t.Errorf("past the bound: has fleet#0 = %v, fleet#next = %v; want forgotten, kept", c.has("fleet#0"), c.has("fleet#next"))
	}
	if n := len(c.m); n > closedPRsMax {
		t.Errorf("%d entries, bound %d", n, closedPRsMax)
	}
}

// TestReporterSetReplacesAndStops: reporters of a new config replace (and
// cancel) the old ones, a set built for the config already installed is
// dropped (cancelled) in favour of it, and stop cancels and waits for all.
func TestReporterSetReplacesAndStops(t *testing.T) {
	var s reporterSet
	mk := func(cfg string) (*repoReporters, context.Context) {
		ctx, cancel := context.WithCancel(t.Context())
		return &repoReporters{config: cfg, cancel: cancel}, ctx
	}
	a, actx := mk("a")
	s.install("fleet", a, actx)
	a2, a2ctx := mk("a")
	s.install("fleet", a2, a2ctx)
	if cur, _ := s.get("fleet"); cur != a {
		t.Fatal("a set of the installed config replaced it")
	}
	if a2ctx.Err() == nil || actx.Err() != nil {
		t.Fatalf("dropped set cancelled = %v, installed set cancelled = %v; want true, false", a2ctx.Err() != nil, actx.Err() != nil)
	}
	b, bctx := mk("b")
	s.install("fleet", b, bctx)
	if cur, _ := s.get("fleet"); cur != b || actx.Err() == nil {
		t.Fatal("a new config did not replace and cancel the old set")
	}
	if !s.stop(10 * time.Second) {
		t.Fatal("stop: reporters did not stop")
	}
	if bctx.Err() == nil {
		t.Error("stop left a set running")
	}
}
