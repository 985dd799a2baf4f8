package source

import (
	"context"
	"errors"
	"fmt"
	"strings"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"github.com/nkudo/nkudo/internal/gitcopy"
)

// Local sources (a path or file:// URL) are fetched in-process: go-git's
// file transport runs git-upload-pack as a subprocess and, on an error on
// the source side, can block forever in the subprocess's Wait, ignoring
// its context. Reading the source with go-git directly keeps every step
// cancellable and turns a broken source into an error.

// openLocal opens the source repository (bare or with a working tree)
// with its pack files held open until close: go-git otherwise reopens a
// pack for every object read from it.
//
// The source is checked against the local-source policy here, at every
// use: the path as named, and the git directory go-git found behind it (a
// symlink or a ".git" file may lead elsewhere) with its alternates.
func (m *Mirror) openLocal() (st storage.Storer, close func(), err error) {
	if err := m.sources.CheckPath(m.local); err != nil {
		return nil, nil, err
	}
	src, err := git.PlainOpen(m.local)
	if errors.Is(err, git.ErrRepositoryNotExists) && !strings.HasSuffix(m.local, ".git") {
		// git-upload-pack finds "repo.git" by the name "repo" too.
		src, err = git.PlainOpen(m.local + ".git")
	}
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", m.local, err)
	}
	fsst, ok := src.Storer.(*filesystem.Storage)
	if !ok {
		return nil, nil, fmt.Errorf("open %s: not a repository on disk", m.local)
	}
	if err := m.sources.CheckGitDir(fsst.Filesystem().Root()); err != nil {
		return nil, nil, err
	}
	held := filesystem.NewStorageWithOptions(fsst.Filesystem(), cache.NewObjectLRUDefault(), filesystem.Options{KeepDescriptors: true, LargeObjectThreshold: largeObjectBytes})
	return held, func() { held.Close() }, nil
}

// localDefaultBranch reads where the source's HEAD points.
func (m *Mirror) localDefaultBranch() (string, error) {
	src, done, err := m.openLocal()
	if err != nil {
		return "", fmt.Errorf("list %s: %w", m.local, err)
	}
	defer done()
	head, err := src.Reference(plumbing.HEAD)
	if err != nil {
		return "", fmt.Errorf("list %s: read HEAD: %w", m.local, err)
	}
	if head.Type() != plumbing.SymbolicReference || !head.Target().IsBranch() {
		return "", fmt.Errorf("list %s: HEAD names no branch; set the repository's branch", m.local)
	}
	return head.Target().Short(), nil
}

// localFetch does for a local source what a fetch with specs (all forced)
// does: it copies the objects reachable from the matching source refs that
// the mirror lacks, then points the mirror's refs at them, rewinds
// included. Objects are written before refs, dependencies before what
// needs them, so a fetch cut short leaves the mirror consistent. A spec
// matching nothing is an error unless optional.
func (m *Mirror) localFetch(ctx context.Context, specs []config.RefSpec, optional bool) error {
	src, done, err := m.openLocal()
	if err != nil {
		return err
	}
	defer done()
	type update struct {
		name plumbing.ReferenceName
		hash plumbing.Hash
	}
	var updates []update
	for _, spec := range specs {
		var found []update
		if spec.IsWildcard() {
			iter, err := src.IterReferences()
			if err != nil {
				return fmt.Errorf("list refs of %s: %w", m.local, err)
			}
			err = iter.ForEach(func(ref *plumbing.Reference) error {
				if ref.Type() != plumbing.HashReference || !spec.Match(ref.Name()) {
					return nil
				}
				found = append(found, update{spec.Dst(ref.Name()), ref.Hash()})
				return nil
			})
			iter.Close()
			if err != nil {
				return fmt.Errorf("list refs of %s: %w", m.local, err)
			}
		} else {
			name := plumbing.ReferenceName(spec.Src())
			ref, err := storer.ResolveReference(src, name)
			switch {
			case errors.Is(err, plumbing.ErrReferenceNotFound):
			case err != nil:
				return fmt.Errorf("read %s of %s: %w", name, m.local, err)
			default:
				found = append(found, update{spec.Dst(name), ref.Hash()})
			}
		}
		if len(found) == 0 && !optional {
			return fmt.Errorf("couldn't find remote ref %s in %s", spec.Src(), m.local)
		}
		updates = append(updates, found...)
	}
	c := gitcopy.New(ctx, src, m.repo.Storer)
	for _, u := range updates {
		if err := c.History(u.hash); err != nil {
			return fmt.Errorf("copy %s from %s: %w", u.name, m.local, err)
		}
	}
	if err := c.Write(m.dir); err != nil {
		return fmt.Errorf("copy from %s: %w", m.local, err)
	}
	for _, u := range updates {
		if err := ctx.Err(); err != nil {
			return err
		}
		if cur, err := m.repo.Storer.Reference(u.name); err == nil && cur.Hash() == u.hash {
			continue
		}
		if err := m.repo.Storer.SetReference(plumbing.NewHashReference(u.name, u.hash)); err != nil {
			return fmt.Errorf("update mirror %s: %w", u.name, err)
		}
	}
	return nil
}
