package forge

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"github.com/nkudo/nkudo/internal/gitcopy"
	"github.com/nkudo/nkudo/internal/localsource"
)

// errRefMoved: the remote notes ref is not where the new notes commit was
// built on (another writer got there first). The post fetches, rebuilds
// its commit on the new tip and tries again.
var errRefMoved = errors.New("notes ref moved")

// localRemote is a repository on the local file system that notes are
// copied into directly: objects first, then the ref, compare-and-swapped
// under git's own lock file protocol (refs/notes/nkudo.lock), so git
// commands and other writers working on the same repository interleave
// safely with this one.
type localRemote struct {
	path   string
	policy localsource.Policy
}

// gitDir is the directory holding refs/ and objects/ of repo, as go-git
// found it: the path itself for a bare repository, else its .git (a
// directory or a "gitdir:" file).
func (l localRemote) gitDir(repo *git.Repository) (string, error) {
	st, ok := repo.Storer.(*filesystem.Storage)
	if !ok {
		return "", fmt.Errorf("%s: not a repository on disk", l.path)
	}
	return st.Filesystem().Root(), nil
}

// open checks the path against the policy at every use (a symlink may
// have moved since the writer was built), opens it, and checks the git
// directory it found too: a ".git" file can point anywhere.
func (l localRemote) open() (*git.Repository, error) {
	if err := l.policy.CheckPath(l.path); err != nil {
		return nil, err
	}
	repo, err := git.PlainOpen(l.path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", l.path, err)
	}
	dir, err := l.gitDir(repo)
	if err != nil {
		return nil, err
	}
	if err := l.policy.CheckGitDir(dir); err != nil {
		return nil, err
	}
	return repo, nil
}

// head returns the remote notes tip (ZeroHash when there is none).
func (l localRemote) head(repo *git.Repository) (plumbing.Hash, error) {
	ref, err := repo.Reference(plumbing.ReferenceName(NotesRef), true)
	if errors.Is(err, plumbing.ErrReferenceNotFound) {
		return plumbing.ZeroHash, nil
	}
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("read %s of %s: %w", NotesRef, l.path, err)
	}
	return ref.Hash(), nil
}

// fetch copies the remote notes history into dst and returns its tip
// (ZeroHash when the remote has no notes yet).
func (l localRemote) fetch(ctx context.Context, dst storer.Storer) (plumbing.Hash, error) {
	repo, err := l.open()
	if err != nil {
		return plumbing.ZeroHash, err
	}
	tip, err := l.head(repo)
	if err != nil || tip.IsZero() {
		return tip, err
	}
	if err := copyHistory(ctx, repo.Storer, dst, tip); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("copy notes from %s: %w", l.path, err)
	}
	return tip, nil
}

// push copies the history of next from src into the remote and moves the
// remote notes ref from old (ZeroHash: the ref must not exist) to next.
// errRefMoved when the ref is elsewhere or another writer holds its lock.
func (l localRemote) push(ctx context.Context, src storer.EncodedObjectStorer, old, next plumbing.Hash) error {
	repo, err := l.open()
	if err != nil {
		return err
	}
	if err := copyHistory(ctx, src, repo.Storer, next); err != nil {
		return fmt.Errorf("copy notes to %s: %w", l.path, err)
	}
	dir, err := l.gitDir(repo)
	if err != nil {
		return err
	}
	refPath := filepath.Join(dir, filepath.FromSlash(NotesRef))
	if err := os.MkdirAll(filepath.Dir(refPath), 0o755); err != nil {
		return fmt.Errorf("update %s: %w", NotesRef, err)
	}
	lock := refPath + ".lock"
	f, err := os.OpenFile(lock, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, os.ErrExist) {
		// Another writer (or git) is updating the ref right now; a lock
		// left behind by a crash stays until removed, as with git itself.
		return fmt.Errorf("%w: %s is locked", errRefMoved, lock)
	}
	if err != nil {
		return fmt.Errorf("lock %s: %w", NotesRef, err)
	}
	committed := false
	defer func() {
		if !committed {
			f.Close()
			os.Remove(lock)
		}
	}()
	// Read under the lock: packed or loose, whatever git last wrote.
	cur, err := l.head(repo)
	if err != nil {
		return err
	}
	if cur != old {
		return fmt.Errorf("%w: %s is at %s, not %s", errRefMoved, NotesRef, cur, old)
	}
	if _, err := f.WriteString(next.String() + "\n"); err != nil {
		return fmt.Errorf("write %s: %w", lock, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", lock, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", lock, err)
	}
	if err := os.Rename(lock, refPath); err != nil {
		return fmt.Errorf("update %s: %w", NotesRef, err)
	}
	committed = true
	return nil
}

// copyHistory copies the commits reachable from tip, with their trees and
// blobs, that dst lacks from src to dst.
func copyHistory(ctx context.Context, src storer.EncodedObjectStorer, dst storer.Storer, tip plumbing.Hash) error {
	c := gitcopy.New(ctx, src, dst)
	if err := c.History(tip); err != nil {
		return err
	}
	return c.Write("")
}
