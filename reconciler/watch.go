package reconciler

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/nkudo/nkudo/internal/gitcopy"
)

// localGitDir returns the git directory of a local repository URL (a
// path or file://), or "" for remote sources.
func localGitDir(rawURL string) string {
	p := gitcopy.LocalPath(rawURL)
	if p == "" {
		return ""
	}
	if st, err := os.Stat(filepath.Join(p, ".git")); err == nil && st.IsDir() {
		return filepath.Join(p, ".git")
	}
	if st, err := os.Stat(filepath.Join(p, "refs")); err == nil && st.IsDir() {
		return p // bare
	}
	return ""
}

// watchLoop watches local repositories' refs with fsnotify and triggers a
// reconcile shortly after a commit lands (debounced: a commit touches
// several files). For development; polling still runs.
func (r *Reconciler) watchLoop(ctx context.Context) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		r.log.Error("watch local repositories", "err", err)
		return
	}
	defer w.Close()
	watched := map[string]string{} // watched dir → repo ID
	tenants := map[string]string{} // repo ID → tenant
	refresh := func() {
		repos, err := r.store.ListAllRepositories(ctx)
		if err != nil {
			return
		}
		for _, repo := range repos {
			gd := localGitDir(repo.URL)
			if gd == "" || r.local.CheckPath(gd) != nil {
				continue // a refused source is not watched either; its fetch says why
			}
			tenants[repo.ID] = repo.Tenant
			added := false
			for _, d := range []string{gd, filepath.Join(gd, "refs", "heads")} {
				if _, ok := watched[d]; ok {
					continue
				}
				if err := w.Add(d); err == nil {
					watched[d] = repo.ID
					added = true
				}
			}
			if added {
				// Commits made before the watch began are not missed.
				if _, err := r.Trigger(ctx, repo.Tenant, repo.ID, ""); err != nil {
					r.log.Warn("watch: trigger", "repo", repo.ID, "err", err)
				}
			}
		}
	}
	refresh()
	const debounce = 300 * time.Millisecond
	pending := map[string]time.Time{}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	lastRefresh := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-w.Events:
			dir := filepath.Dir(ev.Name)
			if id, ok := watched[dir]; ok {
				pending[id] = time.Now().Add(debounce)
			}
		case err := <-w.Errors:
			r.log.Warn("watch local repositories", "err", err)
		case <-tick.C:
			for id, at := range pending {
				if time.Now().After(at) {
					delete(pending, id)
					if _, err := r.Trigger(ctx, tenants[id], id, ""); err != nil {
						r.log.Warn("watch: trigger", "repo", id, "err", err)
					}
				}
			}
			if time.Since(lastRefresh) > 5*time.Second {
				refresh()
				lastRefresh = time.Now()
			}
		}
	}
}
