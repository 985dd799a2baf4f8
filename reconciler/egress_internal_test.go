package reconciler

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/internal/egress"
	"github.com/nkudo/nkudo/internal/localsource"
	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/sqlite"
)

func newWriterTestReconciler(t *testing.T, tweak func(*Options)) *Reconciler {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "nkudo.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	o := Options{Store: st, DataDir: t.TempDir()}
	if tweak != nil {
		tweak(&o)
	}
	r, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// TestForgeStatusEgress: a status API on loopback gets nothing from a
// reconciler without the allow-list, and the post from one with it.
func TestForgeStatusEgress(t *testing.T) {
	var hits atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusCreated)
		w.Write([]byte("{}"))
	}))
	t.Cleanup(api.Close)
	st := forge.Status{SHA: "0123456789abcdef0123456789abcdef01234567", Context: forge.ContextPlan, State: forge.StateSuccess}
	for _, kind := range []store.ForgeKind{store.ForgeGitHub, store.ForgeGitea, store.ForgeGitLab} {
		repo := store.Repository{ID: "r1", Tenant: "acme", URL: "https://git.example.com/acme/fleet.git",
			ForgeKind: kind, ForgeAPIURL: api.URL, ForgeProject: "acme/fleet"}
		ws, err := newWriterTestReconciler(t, nil).writersFromRepo(t.Context(), repo)
		if err != nil || len(ws) != 1 {
			t.Fatalf("%s writers: %v", kind, err)
		}
		if err := ws[0].Post(t.Context(), st); !errors.Is(err, egress.ErrDenied) {
			t.Errorf("%s post to a loopback API: err = %v, want ErrDenied", kind, err)
		}
		if hits.Load() != 0 {
			t.Fatalf("%s: the loopback API got %d requests", kind, hits.Load())
		}
		allowed := newWriterTestReconciler(t, func(o *Options) { o.Egress = egress.Policy{Allow: egress.Loopback()} })
		ws, err = allowed.writersFromRepo(t.Context(), repo)
		if err != nil {
			t.Fatal(err)
		}
		if err := ws[0].Post(t.Context(), st); err != nil {
			t.Errorf("%s post with loopback allowed: %v", kind, err)
		}
		if hits.Swap(0) == 0 {
			t.Errorf("%s: the allowed post never arrived", kind)
		}
	}
}

// TestGitNotesTargetRefused: git notes are never written into a
// repository on the host unless local sources are allowed, and never into
// the data dir; a symlink swapped after the writer was built is caught at
// the post.
func TestGitNotesTargetRefused(t *testing.T) {
	victim := filepath.Join(t.TempDir(), "victim.git")
	if out, err := exec.Command("git", "init", "-q", "--bare", victim).CombinedOutput(); err != nil {
		t.Skipf("SKIP: git init: %v: %s", err, out)
	}
	st := forge.Status{SHA: "0123456789abcdef0123456789abcdef01234567", Context: forge.ContextPlan, State: forge.StateSuccess}
	notesOf := func(dir string) bool {
		return exec.Command("git", "--git-dir", dir, "rev-parse", "--verify", "-q", forge.NotesRef).Run() == nil
	}

	off := newWriterTestReconciler(t, nil)
	repo := store.Repository{ID: "r1", Tenant: "mallory", URL: victim, ForgeKind: store.ForgeGitNotes}
	if _, err := off.writersFromRepo(t.Context(), repo); !errors.Is(err, localsource.ErrRefused) {
		t.Errorf("notes into %s with local sources off: err = %v, want ErrRefused", victim, err)
	}

	on := newWriterTestReconciler(t, func(o *Options) { o.AllowLocalSources = true })
	inData := filepath.Join(on.opts.DataDir, "git", "acme.git")
	if out, err := exec.Command("git", "init", "-q", "--bare", inData).CombinedOutput(); err != nil {
		t.Fatalf("git init: %v: %s", err, out)
	}
	repo.URL = inData
	if _, err := on.writersFromRepo(t.Context(), repo); !errors.Is(err, localsource.ErrRefused) {
		t.Errorf("notes into the data dir: err = %v, want ErrRefused", err)
	}

	link := filepath.Join(t.TempDir(), "target.git")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	repo.URL = link
	ws, err := on.writersFromRepo(t.Context(), repo)
	if err != nil {
		t.Fatal(err)
	}
	if err := ws[0].Post(t.Context(), st); err != nil || !notesOf(victim) {
		t.Fatalf("notes into an allowed repository: %v", err)
	}
	os.Remove(link)
	if err := os.Symlink(inData, link); err != nil {
		t.Fatal(err)
	}
	if err := ws[0].Post(t.Context(), forge.Status{SHA: st.SHA, Context: forge.ContextApply, State: forge.StatePending}); !errors.Is(err, localsource.ErrRefused) {
		t.Errorf("post through a symlink swapped into the data dir: err = %v, want ErrRefused", err)
	}
	if notesOf(inData) {
		t.Error("notes were written into the data dir")
	}
}
