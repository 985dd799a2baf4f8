package reconciler

import (
	"io/fs"
	"sync"

	"github.com/nkudo/nkudo/schema"
)

// loaders keeps one schema.Cache per repository, so a commit that changes
// a few manifest files parses only those; schema re-checks the set on
// every load. Its zero value is ready to use.
type loaders struct {
	mu sync.Mutex
	m  map[string]*schema.Cache // repo ID → its cache
}

func (l *loaders) get(repoID string) *schema.Cache {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.m[repoID]
	if !ok {
		if l.m == nil {
			l.m = map[string]*schema.Cache{}
		}
		c = schema.NewCache(blobKey)
		l.m[repoID] = c
	}
	return c
}

// blobKey names a file of a treeFS by its blob hash, read from the tree
// object: equal hashes are equal contents.
func blobKey(_ string, d fs.DirEntry) string {
	if de, ok := d.(dirEntry); ok {
		return de.hash.String()
	}
	return ""
}
