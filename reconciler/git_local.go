package reconciler

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage"
	"github.com/go-git/go-git/v5/storage/filesystem"
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

// openLocal opens the source repository (bare or with a working tree)
// with its pack files held open until close: go-git otherwise reopens a
// pack for every object read from it.
func (m *mirror) openLocal() (st storage.Storer, close func(), err error) {
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
		return src.Storer, func() {}, nil
	}
	held := filesystem.NewStorageWithOptions(fsst.Filesystem(), cache.NewObjectLRUDefault(), filesystem.Options{KeepDescriptors: true})
	return held, func() { held.Close() }, nil
}

// localDefaultBranch reads where the source's HEAD points.
func (m *mirror) localDefaultBranch() (string, error) {
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
func (m *mirror) localFetch(ctx context.Context, specs []config.RefSpec, optional bool) error {
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
	c := copier{ctx: ctx, src: src, dst: m.repo.Storer, seen: map[plumbing.Hash]bool{}}
	for _, u := range updates {
		if err := c.history(u.hash); err != nil {
			return fmt.Errorf("copy %s from %s: %w", u.name, m.local, err)
		}
	}
	if err := c.write(m.dir); err != nil {
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

// unpackLimit: a fetch of fewer objects stores them loose, more go into
// one pack (git's fetch.unpackLimit default), so small incremental
// fetches do not pile up packs and a first fetch does not write
// thousands of files.
const unpackLimit = 100

// copier finds the objects a source holds that the mirror lacks, then
// writes them, checking its context between objects.
type copier struct {
	ctx      context.Context
	src, dst storer.Storer
	seen     map[plumbing.Hash]bool
	// missing lists what to copy, every object after those it names.
	missing []missingObject
}

type missingObject struct {
	hash plumbing.Hash
	kind plumbing.ObjectType
}

// has reports whether the mirror holds h. Git keeps the closure of every
// object it holds present, so a commit or tree the mirror has needs no walk.
func (c *copier) has(h plumbing.Hash) bool { return c.dst.HasEncodedObject(h) == nil }

func (c *copier) add(h plumbing.Hash, kind plumbing.ObjectType) {
	c.missing = append(c.missing, missingObject{h, kind})
}

// history lists the commits reachable from tip, with their trees and
// blobs, stopping at commits the mirror has.
func (c *copier) history(tip plumbing.Hash) error {
	var commits []*object.Commit
	queue := []plumbing.Hash{tip}
	for len(queue) > 0 {
		h := queue[0]
		queue = queue[1:]
		if c.seen[h] || c.has(h) {
			continue
		}
		c.seen[h] = true
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
		commits = append(commits, commit)
		queue = append(queue, commit.ParentHashes...)
	}
	// A breadth-first walk meets a commit before its parents: list from
	// the end so a parent comes before its child.
	for i := len(commits) - 1; i >= 0; i-- {
		if err := c.tree(commits[i].TreeHash); err != nil {
			return err
		}
		c.add(commits[i].Hash, plumbing.CommitObject)
	}
	return nil
}

// tree lists a tree and what it holds that the mirror lacks, the tree last.
func (c *copier) tree(h plumbing.Hash) error {
	if c.seen[h] || c.has(h) {
		return nil
	}
	c.seen[h] = true
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
		switch {
		case e.Mode == filemode.Dir:
			if err := c.tree(e.Hash); err != nil {
				return err
			}
		case e.Mode == filemode.Submodule:
			// A commit of another repository: not in this one.
		case !c.seen[e.Hash] && !c.has(e.Hash):
			c.seen[e.Hash] = true
			c.add(e.Hash, plumbing.BlobObject)
		}
	}
	c.add(h, plumbing.TreeObject)
	return nil
}

// write stores the missing objects in the mirror: loose one by one in
// list order, or as one pack built aside and handed over only once
// complete and checked, so a copy cut short never leaves a commit without
// its tree. Each object must land under its name: the mirror names an
// object by the hash of what it read, so an object damaged in the source
// would land under another.
func (c *copier) write(dir string) error {
	if len(c.missing) == 0 {
		return nil
	}
	if len(c.missing) < unpackLimit {
		for _, o := range c.missing {
			if err := c.ctx.Err(); err != nil {
				return err
			}
			obj, err := c.src.EncodedObject(o.kind, o.hash)
			if err != nil {
				return fmt.Errorf("read %s %s: %w", o.kind, o.hash, err)
			}
			if _, err := c.dst.SetEncodedObject(obj); err != nil {
				return fmt.Errorf("write %s %s: %w", o.kind, o.hash, err)
			}
			if !c.has(o.hash) {
				return corrupt(o)
			}
		}
		return nil
	}
	return c.pack(dir)
}

func corrupt(o missingObject) error {
	return fmt.Errorf("%s %s is corrupt in the source: its content does not match its name", o.kind, o.hash)
}

// pack encodes the missing objects (without deltas: the source's are not
// reused and computing new ones costs more than it saves on a local disk)
// into a temporary file in dir, each checked against its name as it is
// read, then writes the file to the mirror as a pack: a pack holding a
// damaged object never reaches the mirror.
func (c *copier) pack(dir string) (err error) {
	f, err := os.CreateTemp(dir, "incoming-*.pack")
	if err != nil {
		return fmt.Errorf("create pack: %w", err)
	}
	defer func() {
		f.Close()
		if rerr := os.Remove(f.Name()); rerr != nil && err == nil {
			err = fmt.Errorf("remove %s: %w", f.Name(), rerr)
		}
	}()
	hashes := make([]plumbing.Hash, len(c.missing))
	for i, o := range c.missing {
		hashes[i] = o.hash
	}
	bw := bufio.NewWriter(ctxWriter{c.ctx, f})
	if _, err := packfile.NewEncoder(bw, verifyingStorer{c.src}, false).Encode(hashes, 0); err != nil {
		return fmt.Errorf("read objects: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write pack: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("write pack: %w", err)
	}
	if err := c.ctx.Err(); err != nil {
		return err
	}
	if err := packfile.UpdateObjectStorage(c.dst, bufio.NewReader(f)); err != nil {
		return fmt.Errorf("store pack: %w", err)
	}
	return nil
}

// ctxWriter fails its writes once ctx ends, which stops a pack encoder
// that has no context of its own.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (w ctxWriter) Write(p []byte) (int, error) {
	if err := w.ctx.Err(); err != nil {
		return 0, err
	}
	return w.w.Write(p)
}

// verifyingStorer hands out objects whose content is checked against
// their name when read to the end.
type verifyingStorer struct{ storer.EncodedObjectStorer }

func (v verifyingStorer) EncodedObject(t plumbing.ObjectType, h plumbing.Hash) (plumbing.EncodedObject, error) {
	o, err := v.EncodedObjectStorer.EncodedObject(t, h)
	if err != nil {
		return nil, err
	}
	return verifiedObject{o, h}, nil
}

type verifiedObject struct {
	plumbing.EncodedObject
	name plumbing.Hash
}

func (o verifiedObject) Reader() (io.ReadCloser, error) {
	r, err := o.EncodedObject.Reader()
	if err != nil {
		return nil, err
	}
	return &verifyingReader{ReadCloser: r, obj: o, sum: plumbing.NewHasher(o.Type(), o.Size())}, nil
}

type verifyingReader struct {
	io.ReadCloser
	obj verifiedObject
	sum plumbing.Hasher
}

func (r *verifyingReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.sum.Write(p[:n])
	if err == io.EOF && r.sum.Sum() != r.obj.name {
		return n, corrupt(missingObject{r.obj.name, r.obj.Type()})
	}
	return n, err
}
