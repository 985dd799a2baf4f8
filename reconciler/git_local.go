package reconciler

import (
	"context"
	"errors"
	"fmt"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
)

// Local sources (a path or file:// URL) are fetched in-process: go-git's
// file transport runs git-upload-pack as a subprocess and, on an error on
// the source side, can block forever in the subprocess's Wait, ignoring
// its context. Reading the source with go-git directly keeps every step
// cancellable and turns a broken source into an error.

// localPath returns the path of a source on the local file system, or ""
// for a network source.
func localPath(rawURL string) string {
	ep, err := transport.NewEndpoint(rawURL)
	if err != nil || ep.Protocol != "file" {
		return ""
	}
	return ep.Path
}

// openLocal opens the source repository (bare or with a working tree).
func (m *mirror) openLocal() (*git.Repository, error) {
	src, err := git.PlainOpen(m.local)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", m.local, err)
	}
	return src, nil
}

// localDefaultBranch reads where the source's HEAD points.
func (m *mirror) localDefaultBranch() (string, error) {
	src, err := m.openLocal()
	if err != nil {
		return "", fmt.Errorf("list %s: %w", m.local, err)
	}
	head, err := src.Storer.Reference(plumbing.HEAD)
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
func (m *mirror) localFetch(ctx context.Context, specs []config.RefSpec, optional bool) error {
	src, err := m.openLocal()
	if err != nil {
		return err
	}
	type update struct {
		name plumbing.ReferenceName
		hash plumbing.Hash
	}
	var updates []update
	for _, spec := range specs {
		var found []update
		if spec.IsWildcard() {
			iter, err := src.Storer.IterReferences()
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
			ref, err := storer.ResolveReference(src.Storer, name)
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
	c := copier{ctx: ctx, src: src.Storer, dst: m.repo.Storer}
	for _, u := range updates {
		if err := c.history(u.hash); err != nil {
			return fmt.Errorf("copy %s from %s: %w", u.name, m.local, err)
		}
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

// copier copies objects from a source repository to the mirror, checking
// its context between objects.
type copier struct {
	ctx      context.Context
	src, dst storer.EncodedObjectStorer
}

// has reports whether the mirror holds h. Git keeps the closure of every
// object it holds present, so a commit or tree the mirror has needs no walk.
func (c copier) has(h plumbing.Hash) bool { return c.dst.HasEncodedObject(h) == nil }

// history copies the commits reachable from tip, with their trees and
// blobs, stopping at commits the mirror has; parents are written first.
func (c copier) history(tip plumbing.Hash) error {
	var missing []*object.Commit
	seen := map[plumbing.Hash]bool{}
	queue := []plumbing.Hash{tip}
	for len(queue) > 0 {
		h := queue[0]
		queue = queue[1:]
		if seen[h] || c.has(h) {
			continue
		}
		seen[h] = true
		if err := c.ctx.Err(); err != nil {
			return err
		}
		obj, err := c.src.EncodedObject(plumbing.CommitObject, h)
		if err != nil {
			return fmt.Errorf("read commit %s: %w", h, err)
		}
		commit, err := object.DecodeCommit(c.src, obj)
		if err != nil {
			return fmt.Errorf("decode commit %s: %w", h, err)
		}
		missing = append(missing, commit)
		queue = append(queue, commit.ParentHashes...)
	}
	// A breadth-first walk lists a commit before its parents: write from
	// the end so a parent is always in the mirror before its child.
	for i := len(missing) - 1; i >= 0; i-- {
		if err := c.tree(missing[i].TreeHash); err != nil {
			return err
		}
		if err := c.object(plumbing.CommitObject, missing[i].Hash); err != nil {
			return err
		}
	}
	return nil
}

// tree copies a tree and what it holds that the mirror lacks, the tree last.
func (c copier) tree(h plumbing.Hash) error {
	if c.has(h) {
		return nil
	}
	if err := c.ctx.Err(); err != nil {
		return err
	}
	obj, err := c.src.EncodedObject(plumbing.TreeObject, h)
	if err != nil {
		return fmt.Errorf("read tree %s: %w", h, err)
	}
	t, err := object.DecodeTree(c.src, obj)
	if err != nil {
		return fmt.Errorf("decode tree %s: %w", h, err)
	}
	for _, e := range t.Entries {
		switch e.Mode {
		case filemode.Dir:
			if err := c.tree(e.Hash); err != nil {
				return err
			}
		case filemode.Submodule:
			// A commit of another repository: not in this one.
		default:
			if c.has(e.Hash) {
				continue
			}
			if err := c.ctx.Err(); err != nil {
				return err
			}
			if err := c.object(plumbing.BlobObject, e.Hash); err != nil {
				return err
			}
		}
	}
	return c.write(obj, h)
}

func (c copier) object(t plumbing.ObjectType, h plumbing.Hash) error {
	obj, err := c.src.EncodedObject(t, h)
	if err != nil {
		return fmt.Errorf("read %s %s: %w", t, h, err)
	}
	return c.write(obj, h)
}

// write stores obj, which the source holds as h. The mirror names an
// object by the hash of what it read, so a source object whose content
// was damaged lands under another name: that is an error, not a copy.
func (c copier) write(obj plumbing.EncodedObject, h plumbing.Hash) error {
	if _, err := c.dst.SetEncodedObject(obj); err != nil {
		return fmt.Errorf("write %s %s: %w", obj.Type(), h, err)
	}
	if !c.has(h) {
		return fmt.Errorf("%s %s is corrupt in the source: its content does not match its name", obj.Type(), h)
	}
	return nil
}
