package source

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/nkudo/nkudo/internal/gitcopy"
	"github.com/nkudo/nkudo/store"
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

// Watch watches the refs of the local repositories that repos lists
// (re-listed every few seconds) with fsnotify until ctx ends, and calls
// changed shortly after a commit lands in one (debounced: a commit touches
// several files), and once when its watch begins, so commits made before
// it are not missed. A source the local-source policy refuses is not
// watched. For development; polling still runs.
func (s *Mirrors) Watch(ctx context.Context, repos func(context.Context) ([]store.Repository, error), changed func(ctx context.Context, tenant, repoID string)) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.log.Error("watch local repositories", "err", err)
		return
	}
	defer w.Close()
	watched := map[string]string{} // watched dir → repo ID
	tenants := map[string]string{} // repo ID → tenant
	refresh := func() {
		list, err := repos(ctx)
		if err != nil {
			return
		}
		for _, repo := range list {
			gd := localGitDir(repo.URL)
			if gd == "" || s.local.CheckPath(gd) != nil {
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
				changed(ctx, repo.Tenant, repo.ID)
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
			s.log.Warn("watch local repositories", "err", err)
		case <-tick.C:
			for id, at := range pending {
				if time.Now().After(at) {
					delete(pending, id)
					changed(ctx, tenants[id], id)
				}
			}
			if time.Since(lastRefresh) > 5*time.Second {
				refresh()
				lastRefresh = time.Now()
			}
		}
	}
}
