package source

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/internal/egress"
	"github.com/nkudo/nkudo/internal/localsource"
	"github.com/nkudo/nkudo/reconciler/gittest"
)

// TestCheckDeletesOversizedMirror: a fetch that takes a mirror over
// MaxMirrorBytes fails with ErrMirrorTooLarge naming the limit, the mirror
// is gone from disk and from the set, and the next fetch starts a new one.
func TestCheckDeletesOversizedMirror(t *testing.T) {
	g := gittest.New(t)
	g.Fleet("fleet", 2, 1)
	c1 := g.Commit("base")
	dir := t.TempDir()
	s := New(Options{DataDir: dir, MaxMirrorBytes: 1, // any mirror is over
		Git:   egress.NewGit(egress.Policy{Allow: egress.Loopback()}, 0),
		Local: localsource.Policy{Allow: true, Protected: []string{dir}}})
	m, err := s.Mirror("fleet", g.Remote)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.FetchBranch(t.Context(), "fleet", g.Remote, nil, "main")
	if !errors.Is(err, ErrMirrorTooLarge) || !strings.Contains(err.Error(), "MaxMirrorBytes") {
		t.Fatalf("fetch: %v, want ErrMirrorTooLarge naming MaxMirrorBytes", err)
	}
	if _, err := os.Stat(m.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the oversized mirror is still on disk (stat: %v)", err)
	}
	s.maxBytes = -1 // no limit
	m2, err := s.Mirror("fleet", g.Remote)
	if err != nil {
		t.Fatal(err)
	}
	if m2 == m {
		t.Fatal("the deleted mirror is still in the set")
	}
	if h, err := s.FetchBranch(t.Context(), "fleet", g.Remote, nil, "main"); err != nil || h.String() != c1 {
		t.Fatalf("fetch into a new mirror: %s, %v; want %s", h, err, c1)
	}
}
