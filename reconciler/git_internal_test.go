package reconciler

import (
	"fmt"
	"testing"

	"github.com/nkudo/nkudo/reconciler/gittest"
)

// newTestMirror returns a mirror of url in a fresh data dir.
func newTestMirror(t testing.TB, url string) *mirror {
	t.Helper()
	r := &Reconciler{opts: Options{DataDir: t.TempDir()}, mirrors: map[string]*mirror{}}
	m, err := r.mirrorFor("fleet", url)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// BenchmarkFetchIncrementalLocal: one commit changing one file lands in a
// local source of 50 sites; the timed part is the mirror fetching it.
func BenchmarkFetchIncrementalLocal(b *testing.B) {
	g := gittest.New(b)
	g.Fleet("fleet", 50, 4)
	g.Commit("base")
	m := newTestMirror(b, g.Remote)
	if _, _, err := m.fetchBranch(b.Context(), nil, "main"); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		g.Write("fleet/site-0001.yaml", gittest.Site("site-0001")+"---\n"+gittest.VM("site-0001", "vm-01", "Running", 1+i%8)+fmt.Sprintf("# %d\n", i))
		want := g.Commit(fmt.Sprintf("change %d", i))
		b.StartTimer()
		h, _, err := m.fetchBranch(b.Context(), nil, "main")
		if err != nil {
			b.Fatal(err)
		}
		if h.String() != want {
			b.Fatalf("fetched %s, want %s", h, want)
		}
	}
}
