package source

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"github.com/nkudo/nkudo/schema"
)

// Bounds on what one repository's git objects and mirror can cost the
// control plane beyond what schema.Load limits (see docs/gitops.md, "Bounds").
const (
	// MaxTreeObjectBytes bounds one tree object (one directory listing):
	// a larger one is refused by its header, before it is decoded.
	// 4 MiB lists some 60,000 entries with 40-byte names, more than
	// schema.MaxFiles.
	MaxTreeObjectBytes = 4 << 20
	// DefaultMaxMirrorBytes is Options.MaxMirrorBytes when zero.
	DefaultMaxMirrorBytes = 1 << 30 // 1 GiB
	// largeObjectBytes: objects larger than this are streamed from disk
	// and never held whole in memory (go-git's LargeObjectThreshold; without
	// it a packed or loose object is decoded into memory when opened, so a
	// 300 MB blob costs 300 MB even when only its size is wanted).
	largeObjectBytes = schema.MaxFileBytes
)

// errTreeTooLarge is wrapped by the error for a tree over MaxTreeObjectBytes.
var errTreeTooLarge = errors.New("tree object too large")

// ErrMirrorTooLarge is wrapped by Check's error (and so by a fetch's) when
// the repository's mirror is larger on disk than Options.MaxMirrorBytes.
var ErrMirrorTooLarge = errors.New("mirror too large")

// boundedTree decodes tree object h after checking its size in the header.
func boundedTree(s storer.EncodedObjectStorer, h plumbing.Hash) (*object.Tree, error) {
	o, err := s.EncodedObject(plumbing.TreeObject, h)
	if err != nil {
		return nil, fmt.Errorf("tree %s: %w", h, err)
	}
	if o.Size() > MaxTreeObjectBytes {
		return nil, fmt.Errorf("tree %s is %d bytes: limit MaxTreeObjectBytes is %d MiB: %w", h.String()[:12], o.Size(), MaxTreeObjectBytes>>20, errTreeTooLarge)
	}
	return object.DecodeTree(s, o)
}

// boundedStorage reopens a repository's storage so that objects over
// largeObjectBytes are streamed, not read whole into memory.
func boundedStorage(repo *git.Repository) (*git.Repository, error) {
	fsst, ok := repo.Storer.(*filesystem.Storage)
	if !ok {
		return repo, nil
	}
	st := filesystem.NewStorageWithOptions(fsst.Filesystem(), cache.NewObjectLRUDefault(), filesystem.Options{LargeObjectThreshold: largeObjectBytes})
	return git.Open(st, nil)
}

// diskSize is the bytes the files under dir take (their sizes; a
// directory counts nothing).
func diskSize(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // a temporary file gone since the listing
			}
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			total += info.Size()
		}
		return nil
	})
	return total, err
}

// Check fails when m is over MaxMirrorBytes on disk after a fetch. The
// mirror is then deleted (it is a cache: nothing of the repository's
// desired state lives in it), so the disk it took is returned, and nothing
// of the fetched commit is loaded or planned.
func (s *Mirrors) Check(m *Mirror) error {
	limit := s.maxBytes
	if limit < 0 {
		return nil
	}
	size, err := diskSize(m.dir)
	if err != nil {
		return fmt.Errorf("size of mirror: %w", err)
	}
	if size <= limit {
		return nil
	}
	m.mu.Lock()
	s.mu.Lock()
	if s.mirrors[m.id] == m {
		delete(s.mirrors, m.id)
	}
	s.mu.Unlock()
	rerr := os.RemoveAll(m.dir)
	m.mu.Unlock()
	if rerr != nil {
		s.log.Error("remove oversized mirror", "repo", m.id, "err", rerr)
	}
	return fmt.Errorf("repository %s: its git mirror takes %s on disk, over the limit of %s (MaxMirrorBytes, nkudo serve --max-mirror-size): nothing was reconciled: %w",
		m.id, mib(size), mib(limit), ErrMirrorTooLarge)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
