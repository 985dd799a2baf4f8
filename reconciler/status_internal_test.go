package reconciler

import (
	"context"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/sqlite"
)

type nopWriter struct{}

func (nopWriter) Name() string                                            { return "nop" }
func (nopWriter) DescriptionLimit() int                                   { return 100 }
func (nopWriter) Post(context.Context, forge.Status) error                { return nil }
func (nopWriter) Current(context.Context, string) ([]forge.Status, error) { return nil, nil }

// TestReportersBuiltOnce: reconciles reporting for one repository at the
// same time share one set of reporters; a set built in a race is dropped
// before it runs, so no status lands in a reporter that is then replaced.
func TestReportersBuiltOnce(t *testing.T) {
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "nkudo.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var built atomic.Int64
	start := make(chan struct{})
	r, err := New(Options{Store: st, DataDir: t.TempDir(), Writers: func(ctx context.Context, repo store.Repository) ([]forge.Writer, error) {
		built.Add(1)
		<-start // every caller builds before any installs
		return []forge.Writer{nopWriter{}}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	repo := store.Repository{ID: "r1", Tenant: "acme", URL: "file:///x"}
	const callers = 4
	lists := make([][]*forge.Reporter, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			l, err := r.reportersFor(t.Context(), repo)
			if err != nil {
				t.Error(err)
			}
			lists[i] = l
		})
	}
	for built.Load() < callers {
		runtime.Gosched() // until every caller is building
	}
	close(start)
	wg.Wait()
	for i := 1; i < callers; i++ {
		if len(lists[i]) != 1 || lists[i][0] != lists[0][0] {
			t.Fatalf("caller %d got reporters %p, caller 0 got %p: want one shared set", i, lists[i], lists[0])
		}
	}
}

// TestReportersRebuiltOnCredentialsChange: the git-notes writer pushes with
// the repository's own credentials, so changing them must rebuild it.
func TestReportersRebuiltOnCredentialsChange(t *testing.T) {
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "nkudo.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var built atomic.Int64
	r, err := New(Options{Store: st, DataDir: t.TempDir(), Writers: func(ctx context.Context, repo store.Repository) ([]forge.Writer, error) {
		built.Add(1)
		return []forge.Writer{nopWriter{}}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	repo := store.Repository{ID: "r1", Tenant: "acme", URL: "https://git.example/fleet.git", ForgeKind: store.ForgeGitNotes, CredentialsRef: "old"}
	for _, ref := range []string{"old", "old", "new"} {
		repo.CredentialsRef = ref
		if _, err := r.reportersFor(t.Context(), repo); err != nil {
			t.Fatal(err)
		}
	}
	if got := built.Load(); got != 2 {
		t.Errorf("writers built %d times for credentials old, old, new; want 2", got)
	}
}
