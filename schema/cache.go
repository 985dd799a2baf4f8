package schema

import (
	"context"
	"io/fs"
	"sync"

	"github.com/nkudo/nkudo/model"
)

// Cache loads one tree after another, such as the commits of a branch,
// and reads again only the files whose content changed. Each file's
// documents are parsed and checked on their own (YAML, JSON Schema, the
// rules within a document); only that per-file work is reused. The
// limits that add up across files and the set checks (unique names,
// existing sites, per-site limits, MAC addresses) run on every load over
// all documents, so a Cache's result, errors included, is always the
// result of LoadContext on the same tree.
//
// A Cache is safe for concurrent use. It keeps the files of the last load
// only: a tree seen before that is read again in full.
type Cache struct {
	key func(p string, d fs.DirEntry) string

	mu    sync.Mutex
	files cached
}

// NewCache returns a Cache whose key names the content of the file at p
// (for a git tree, the blob hash). Two files with the same path and key
// must have the same content. A key of "" means unknown: the file is read.
// A nil key reads every file, as LoadContext does.
func NewCache(key func(p string, d fs.DirEntry) string) *Cache {
	return &Cache{key: key}
}

// LoadStats says how much of a tree a load read.
type LoadStats struct {
	// Files is the number of manifest files in the tree (0 when a tree
	// limit stopped the walk).
	Files int
	// Read is the number of files read and parsed; the others were
	// reused from the previous load.
	Read int
}

// Load is LoadContext, reusing what the previous load of c learned about
// every file whose path and key are unchanged. Files that fail with an
// I/O error are not kept.
func (c *Cache) Load(ctx context.Context, fsys fs.FS) (model.Desired, LoadStats, error) {
	c.mu.Lock()
	prev := c.files
	c.mu.Unlock()
	d, next, stats, err := load(ctx, fsys, c.key, prev)
	if next != nil {
		c.mu.Lock()
		c.files = next
		c.mu.Unlock()
	}
	return d, stats, err
}
