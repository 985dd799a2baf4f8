package reconciler

import (
	"slices"
	"strings"
	"sync"

	"github.com/nkudo/nkudo/schema"
	"github.com/nkudo/nkudo/source"
)

// loaders keeps one schema.Cache per repository, so a commit that changes
// a few manifest files parses only those; schema re-checks the set on
// every load. Its zero value is ready to use.
type loaders struct {
	mu     sync.Mutex
	m      map[string]*schema.Cache  // repo ID → its cache
	hashes map[string]*siteHashCache // repo ID → its sites' hashes
}

// hashesOf returns the repository's cache of per-site desired hashes.
func (l *loaders) hashesOf(repoID string) *siteHashCache {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.hashes[repoID]
	if !ok {
		if l.hashes == nil {
			l.hashes = map[string]*siteHashCache{}
		}
		c = &siteHashCache{}
		l.hashes[repoID] = c
	}
	return c
}

// siteHashCache keeps each site's desired hash and documents from the
// repository's last load, keyed by the files its documents came from and
// their blob hashes: a site whose files are all unchanged has the same
// documents, so a one-file change hashes one site, not the repository.
type siteHashCache struct {
	mu    sync.Mutex
	sites map[string]siteHashEntry // site → its last hash
}

type siteHashEntry struct {
	key  string // the site's files and their blob hashes (siteFilesKey)
	hash string
	doc  *siteDoc
}

func (c *siteHashCache) get(site, key string) (siteHashEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.sites[site]
	return e, ok && e.key == key
}

// replace keeps the entries of the latest load only: sites gone from git
// are dropped with it.
func (c *siteHashCache) replace(sites map[string]siteHashEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sites = sites
}

func (l *loaders) get(repoID string) *schema.Cache {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.m[repoID]
	if !ok {
		if l.m == nil {
			l.m = map[string]*schema.Cache{}
		}
		c = schema.NewCache(source.BlobKey)
		l.m[repoID] = c
	}
	return c
}

// siteFilesKey names the content a site's documents come from: each file
// (sorted, once) with its blob hash. "" when a blob hash is unknown (the
// site is hashed afresh).
func siteFilesKey(files []string, blobs map[string]string) string {
	slices.Sort(files)
	files = slices.Compact(files)
	var b strings.Builder
	for _, f := range files {
		h, ok := blobs[f]
		if !ok || h == "" {
			return ""
		}
		b.WriteString(f)
		b.WriteByte(0)
		b.WriteString(h)
		b.WriteByte(0)
	}
	return b.String()
}
