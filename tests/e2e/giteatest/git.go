package giteatest

import (
	"context"
	"testing"
	"time"

	"github.com/nkudo/nkudo/tests/e2e/e2etest"
)

// WorkTree is a local clone of a Gitea repository; pushes go over HTTP
// with the admin token. Files are written with e2etest's work-tree helpers.
type WorkTree struct {
	*e2etest.WorkTree
}

// Clone clones r (an empty repository is fine) into a temp dir, on main.
func Clone(t testing.TB, r Repo) *WorkTree {
	t.Helper()
	return &WorkTree{e2etest.Clone(t, r.AuthURL)}
}

// Commit commits every change in the work tree and returns the commit.
func (w *WorkTree) Commit(t testing.TB, msg string) string {
	t.Helper()
	e2etest.Git(t, w.Dir, "add", "--all")
	e2etest.Git(t, w.Dir, "commit", "--quiet", "--allow-empty", "-m", msg)
	return e2etest.Git(t, w.Dir, "rev-parse", "HEAD")
}

// Push pushes HEAD to branch on the Gitea repository.
func (w *WorkTree) Push(t testing.TB, branch string) {
	t.Helper()
	e2etest.Git(t, w.Dir, "push", "--quiet", "origin", "HEAD:refs/heads/"+branch)
}

// Checkout switches to branch, creating it from HEAD when it does not exist.
func (w *WorkTree) Checkout(t testing.TB, branch string) {
	t.Helper()
	e2etest.Git(t, w.Dir, "checkout", "--quiet", "-B", branch)
}

// poll calls cond every 100 ms until it returns true (true) or ctx ends
// or 60 s pass (false).
func poll(ctx context.Context, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}
