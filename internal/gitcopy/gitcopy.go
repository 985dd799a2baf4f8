// Package gitcopy copies git objects between repositories in-process:
// the commits reachable from a tip, with their trees and blobs, that the
// destination lacks. go-git's file transport runs git-upload-pack and
// git-receive-pack as subprocesses and can block forever on a
// remote-side error, ignoring its context; copying with go-git's storers
// directly keeps every step cancellable and turns a broken source into an
// error.
package gitcopy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
)

// LocalPath returns the path of a repository URL on the local file system
// (a plain path or file:// URL), or "" for a network URL.
func LocalPath(rawURL string) string {
	ep, err := transport.NewEndpoint(rawURL)
	if err != nil || ep.Protocol != "file" {
		return ""
	}
	return ep.Path
}

// New returns a Copier from src to dst; ctx bounds every step.
func New(ctx context.Context, src storer.EncodedObjectStorer, dst storer.Storer) *Copier {
	return &Copier{ctx: ctx, src: src, dst: dst, seen: map[plumbing.Hash]bool{}}
}

// UnpackLimit: a fetch of fewer objects stores them loose, more go into
// one pack (git's fetch.unpackLimit default), so small incremental
// fetches do not pile up packs and a first fetch does not write
// thousands of files.
const UnpackLimit = 100

// Copier finds the objects a source holds that the destination lacks,
// then writes them, checking its context between objects.
type Copier struct {
	ctx  context.Context
	src  storer.EncodedObjectStorer
	dst  storer.Storer
	seen map[plumbing.Hash]bool
	// missing lists what to copy, every object after those it names.
	missing []missingObject
}

type missingObject struct {
	hash plumbing.Hash
	kind plumbing.ObjectType
}

// has reports whether the destination holds h. Git keeps the closure of every
// object it holds present, so a commit or tree the destination has needs no walk.
func (c *Copier) has(h plumbing.Hash) bool { return c.dst.HasEncodedObject(h) == nil }

func (c *Copier) add(h plumbing.Hash, kind plumbing.ObjectType) {
	c.missing = append(c.missing, missingObject{h, kind})
}

// History lists the commits reachable from tip, with their trees and
// blobs, stopping at commits the destination has.
func (c *Copier) History(tip plumbing.Hash) error {
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

// tree lists a tree and what it holds that the destination lacks, the tree last.
func (c *Copier) tree(h plumbing.Hash) error {
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

// Write stores the missing objects in the destination: loose one by one in
// list order, or as one pack built aside and handed over only once
// complete and checked, so a copy cut short never leaves a commit without
// its tree. Each object must land under its name: the destination names an
// object by the hash of what it read, so an object damaged in the source
// would land under another. A pack is built in dir ("" for the system's
// temporary directory), best on the destination's file system.
func (c *Copier) Write(dir string) error {
	if len(c.missing) == 0 {
		return nil
	}
	if len(c.missing) < UnpackLimit {
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
// read, then writes the file to the destination as a pack: a pack holding a
// damaged object never reaches the destination.
func (c *Copier) pack(dir string) (err error) {
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
