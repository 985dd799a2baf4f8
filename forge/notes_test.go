package forge_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/internal/localsource"
)

// TestNotesConcurrentPosts has several writers (some sharing one local
// directory, as writers rebuilt for a repository do) post to one local
// remote at once. Every post must land and none may hang: the remote's
// notes ref moves under each writer, so each must fetch, rebuild its notes
// commit and try again.
func TestNotesConcurrentPosts(t *testing.T) {
	root := t.TempDir()
	remote := filepath.Join(root, "remote.git")
	git(t, root, "init", "-q", "--bare", remote)
	work := filepath.Join(root, "work")
	git(t, root, "init", "-q", "-b", "main", work)
	if err := os.WriteFile(filepath.Join(work, "a.yaml"), []byte("x: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	git(t, work, "add", ".")
	git(t, work, "commit", "-q", "-m", "one")
	head := git(t, work, "rev-parse", "HEAD")
	git(t, work, "push", "-q", remote, "main")

	for _, url := range []string{remote, "file://" + remote} {
		t.Run(url, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			const writers, posts = 6, 4
			base := t.TempDir()
			dirs := []string{"shared", "shared", "shared", "own-1", "own-2", "own-3"}
			var ws []*forge.Notes
			for i := range writers {
				w, err := forge.NewNotes(forge.NotesOptions{Dir: filepath.Join(base, dirs[i]), RemoteURL: url, LocalSources: localsource.Policy{Allow: true}})
				if err != nil {
					t.Fatal(err)
				}
				ws = append(ws, w)
			}
			var wg sync.WaitGroup
			errs := make(chan error, writers*posts)
			for i, w := range ws {
				wg.Go(func() {
					for j := range posts {
						st := forge.Status{SHA: head, Context: fmt.Sprintf("w%d/p%d", i, j), State: forge.StateSuccess}
						if err := w.Post(ctx, st); err != nil {
							errs <- fmt.Errorf("writer %d post %d: %w", i, j, err)
						}
					}
				})
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-ctx.Done():
				t.Fatal("concurrent notes posts did not finish: a push hung")
			}
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			n, err := forge.NewNotes(forge.NotesOptions{Dir: filepath.Join(base, "reader"), RemoteURL: url, LocalSources: localsource.Policy{Allow: true}})
			if err != nil {
				t.Fatal(err)
			}
			got, err := n.Current(ctx, head)
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for _, st := range got {
				seen[st.Context] = true
			}
			for i := range writers {
				for j := range posts {
					if c := fmt.Sprintf("w%d/p%d", i, j); !seen[c] {
						t.Errorf("status %s lost", c)
					}
				}
			}
		})
	}
}

// stuckWriter blocks in Current, ignoring its context, until released: a
// git subprocess that never exits.
type stuckWriter struct {
	entered chan struct{}
	release chan struct{}
}

func (w *stuckWriter) Name() string          { return "stuck" }
func (w *stuckWriter) DescriptionLimit() int { return 100 }
func (w *stuckWriter) Post(ctx context.Context, st forge.Status) error {
	return nil
}
func (w *stuckWriter) Current(ctx context.Context, sha string) ([]forge.Status, error) {
	select {
	case w.entered <- struct{}{}:
	default:
	}
	<-w.release
	return nil, nil
}

// TestReporterStopsDespiteStuckWriter: a writer that ignores its context
// must not keep Run (and so a shutdown) from returning.
func TestReporterStopsDespiteStuckWriter(t *testing.T) {
	w := &stuckWriter{entered: make(chan struct{}, 1), release: make(chan struct{})}
	r := forge.NewReporter(w, forge.ReporterOptions{PostTimeout: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { close(w.release) })
	r.Report(forge.Status{SHA: sha, Context: forge.ContextPlan, State: forge.StatePending})
	select {
	case <-w.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the writer was never called")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended while a post was stuck")
	}
}

// BenchmarkNotesPostLocal: one status posted to a local remote (fetch,
// rebuild the notes commit, copy objects, swap the ref).
func BenchmarkNotesPostLocal(b *testing.B) {
	root := b.TempDir()
	remote := filepath.Join(root, "remote.git")
	git(b, root, "init", "-q", "--bare", remote)
	w, err := forge.NewNotes(forge.NotesOptions{Dir: filepath.Join(root, "w"), RemoteURL: remote, LocalSources: localsource.Policy{Allow: true}})
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; b.Loop(); i++ {
		st := forge.Status{SHA: fmt.Sprintf("%040x", i%64), Context: "nkudo/apply", State: forge.StateSuccess, Description: fmt.Sprint(i)}
		if err := w.Post(b.Context(), st); err != nil {
			b.Fatal(err)
		}
	}
}

// TestNotesNonBareRemote posts to local remotes with a working tree: one
// whose .git is a directory, one whose .git is a "gitdir:" file (as
// `git init --separate-git-dir` leaves it). git itself must then read the
// note from the remote.
func TestNotesNonBareRemote(t *testing.T) {
	root := t.TempDir()
	plain := filepath.Join(root, "plain")
	git(t, root, "init", "-q", "-b", "main", plain)
	separate := filepath.Join(root, "separate")
	git(t, root, "init", "-q", "-b", "main", "--separate-git-dir", filepath.Join(root, "separate-git"), separate)
	for _, remote := range []string{plain, separate} {
		t.Run(filepath.Base(remote), func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(remote, "a.yaml"), []byte("x: 1\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			git(t, remote, "add", ".")
			git(t, remote, "commit", "-q", "-m", "one")
			head := git(t, remote, "rev-parse", "HEAD")
			w, err := forge.NewNotes(forge.NotesOptions{Dir: filepath.Join(t.TempDir(), "w"), RemoteURL: remote, LocalSources: localsource.Policy{Allow: true}})
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Post(t.Context(), forge.Status{SHA: head, Context: "nkudo/plan", State: forge.StateSuccess}); err != nil {
				t.Fatal(err)
			}
			if got := git(t, remote, "notes", "--ref=nkudo", "show", head); !strings.Contains(got, `"nkudo/plan"`) || !strings.Contains(got, `"sha":"`+head+`"`) {
				t.Errorf("git notes show in %s = %q, want the nkudo/plan status with the commit SHA", remote, got)
			}
		})
	}
}
