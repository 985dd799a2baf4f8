package reconciler

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/store"
)

// TestFreshness: what a re-computed comment says moved, and nothing for a
// new head or a first preview.
func TestFreshness(t *testing.T) {
	prev := store.Preview{Commit: "c1", Base: "b1", Inventories: map[string]int64{"a": 3, "b": 1}}
	cur := store.Preview{Commit: "c1", Base: "b2aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", Inventories: map[string]int64{"a": 5, "b": 1, "c": 2}}
	want := []string{"base moved to b2aaaaaaaaaa", "inventory of site a moved from v3 to v5"}
	if d := cmp.Diff(want, freshness(prev, cur)); d != "" {
		t.Errorf("freshness (-want +got):\n%s", d)
	}
	cur.Commit = "c2"
	if got := freshness(prev, cur); got != nil {
		t.Errorf("a new head: %v, want nothing", got)
	}
	if got := freshness(store.Preview{}, prev); got != nil {
		t.Errorf("a first preview: %v, want nothing", got)
	}
	// Many sites: a few by name, then a count.
	prev.Inventories, cur.Inventories, cur.Commit, cur.Base = map[string]int64{}, map[string]int64{}, "c1", "b1"
	for i := range 12 {
		prev.Inventories[fmt.Sprintf("s%02d", i)] = 1
		cur.Inventories[fmt.Sprintf("s%02d", i)] = 2
	}
	got := freshness(prev, cur)
	if len(got) != maxChangeLines+1 || got[maxChangeLines] != "and 7 more sites" {
		t.Errorf("many sites moved: %q", got)
	}
}

// TestInventoriesLine: few sites by name and version, many as a count and
// a range.
func TestInventoriesLine(t *testing.T) {
	if got := inventoriesLine(map[string]int64{"b": 2, "a": 7}); got != "inventories `a` v7, `b` v2" {
		t.Errorf("few: %q", got)
	}
	many := map[string]int64{}
	for i := range 40 {
		many[fmt.Sprintf("s%02d", i)] = int64(i + 3)
	}
	if got := inventoriesLine(many); !strings.HasPrefix(got, "the inventories of 40 sites (versions v3–v42") {
		t.Errorf("many: %q", got)
	}
}

// TestPRFreshRateLimit: one refresh per pull request per interval; offers
// in between coalesce (the latest head wins) and come due together.
func TestPRFreshRateLimit(t *testing.T) {
	f := newPRFresh(time.Minute)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(pr int, sha string) *task {
		return &task{kind: taskPreview, repoID: "r", pr: pr, sha: sha, refresh: true}
	}
	f.offer([]*task{mk(1, "a"), mk(2, "x")})
	if got := f.due(t0); len(got) != 2 {
		t.Fatalf("first offers: %d due, want 2", len(got))
	}
	f.offer([]*task{mk(1, "b")})
	f.offer([]*task{mk(1, "c")})
	if got := f.due(t0.Add(30 * time.Second)); len(got) != 0 {
		t.Fatalf("within the interval: %d due", len(got))
	}
	got := f.due(t0.Add(time.Minute))
	if len(got) != 1 || got[0].sha != "c" {
		t.Fatalf("after the interval: %+v, want one refresh of the latest head", got)
	}
	if got := f.due(t0.Add(2 * time.Minute)); len(got) != 0 {
		t.Errorf("nothing offered: %d due", len(got))
	}
}
