package reconciler

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestDriftDebouncer: a marked site is due at once the first time, then
// at most once per interval; marks in between merge into one re-plan; a
// site not marked is never due.
func TestDriftDebouncer(t *testing.T) {
	d := newDriftDebouncer(10 * time.Second)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := d.due(t0); len(got) != 0 {
		t.Fatalf("nothing marked, due %v", got)
	}
	d.mark("acme", "b")
	d.mark("acme", "a")
	d.mark("acme", "a")
	if diff := cmp.Diff([]string{"acme/a", "acme/b"}, d.due(t0)); diff != "" {
		t.Fatalf("first marks (-want +got):\n%s", diff)
	}
	if got := d.due(t0); len(got) != 0 {
		t.Fatalf("due twice for one mark: %v", got)
	}
	d.mark("acme", "a")
	d.mark("acme", "a")
	if got := d.due(t0.Add(9 * time.Second)); len(got) != 0 {
		t.Fatalf("due within the interval: %v", got)
	}
	if diff := cmp.Diff([]string{"acme/a"}, d.due(t0.Add(10*time.Second))); diff != "" {
		t.Fatalf("after the interval (-want +got):\n%s", diff)
	}
	if got := d.due(t0.Add(time.Hour)); len(got) != 0 {
		t.Fatalf("merged marks re-planned twice: %v", got)
	}
}

func TestDriftDebouncerRepoOf(t *testing.T) {
	d := newDriftDebouncer(time.Second)
	if id, ok := d.repoOf("acme", "a"); ok {
		t.Fatalf("unknown site has repository %q", id)
	}
	d.setRepo("acme", "a", "fleet")
	d.setRepo("other", "a", "infra")
	if id, ok := d.repoOf("acme", "a"); !ok || id != "fleet" {
		t.Errorf("repoOf(acme, a) = %q, %v; want fleet", id, ok)
	}
	if id, ok := d.repoOf("other", "a"); !ok || id != "infra" {
		t.Errorf("repoOf(other, a) = %q, %v; want infra (tenants apart)", id, ok)
	}
}
