package reconciler

// The load phase: a commit's tree in the mirror (or, for drift, the
// store's records of the last valid commit) → *loaded, the validated
// desired state with each site's hash.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/schema"
	"github.com/nkudo/nkudo/store"
)

// loaded is the validated desired state of one tree, with per-site hashes.
type loaded struct {
	desired model.Desired
	err     error
	tree    string
	// incremental is true when files unchanged since the repository's
	// previous load were not parsed again.
	incremental bool
	once        sync.Once
	hashes      map[string]string   // site → hash of its desired state
	docs        map[string]*siteDoc // site → its documents, as hashed
	// blobs (manifest path → blob hash) and hashCache, when set, let
	// siteHashes reuse the previous load's hashes of unchanged sites.
	blobs     map[string]string
	hashCache *siteHashCache
	rehashed  int // sites encoded and hashed by siteHashes (not reused)
}

// siteDoc is one site's desired state: what is hashed, and what the store
// keeps for the site.
type siteDoc struct {
	Site *model.Site            `json:"site"`
	VMs  []model.VirtualMachine `json:"vms"`
}

// siteDesired is site's record as planned at commit against inventory
// version inv (documents empty for a site gone from git).
func (l *loaded) siteDesired(site, commit string, inv int64, now time.Time) store.SiteDesired {
	d := store.SiteDesired{Site: site, Hash: l.siteHashes()[site], InventoryVersion: inv, Commit: commit, UpdatedAt: now}
	if doc := l.docs[site]; doc != nil {
		d.Document, d.VMs = doc.Site, doc.VMs
	}
	return d
}

// siteHashes hashes each site's manifest and VMs (positions left out: moving
// a VM between files changes nothing at the edge). A site whose files are
// the same blobs as at the previous load keeps its hash and documents from
// then; only the others are encoded and hashed.
func (l *loaded) siteHashes() map[string]string {
	l.once.Do(func() {
		// Group by site first, by index: a cached site's documents are
		// neither copied nor encoded.
		type group struct {
			site  int // index in desired.Sites, -1 for none
			vms   []int
			files []string
		}
		groups := map[string]*group{}
		get := func(n string) *group {
			g, ok := groups[n]
			if !ok {
				g = &group{site: -1}
				groups[n] = g
			}
			return g
		}
		for i := range l.desired.Sites {
			s := &l.desired.Sites[i]
			g := get(s.Name)
			g.site = i
			g.files = append(g.files, s.Source.File)
		}
		for i := range l.desired.VMs {
			vm := &l.desired.VMs[i]
			g := get(vm.Site)
			g.vms = append(g.vms, i)
			if n := len(g.files); n == 0 || g.files[n-1] != vm.Source.File {
				g.files = append(g.files, vm.Source.File)
			}
		}
		l.hashes = make(map[string]string, len(groups))
		l.docs = make(map[string]*siteDoc, len(groups))
		var next map[string]siteHashEntry
		if l.hashCache != nil && l.blobs != nil {
			next = make(map[string]siteHashEntry, len(groups))
		}
		for n, g := range groups {
			key := ""
			if next != nil {
				key = siteFilesKey(g.files, l.blobs)
			}
			if key != "" {
				if e, ok := l.hashCache.get(n, key); ok {
					l.hashes[n], l.docs[n] = e.hash, e.doc
					next[n] = e
					continue
				}
			}
			d := &siteDoc{}
			if g.site >= 0 {
				s := l.desired.Sites[g.site]
				s.Source = model.Source{}
				d.Site = &s
			}
			for _, i := range g.vms {
				vm := l.desired.VMs[i]
				vm.Source = model.Source{}
				d.VMs = append(d.VMs, vm)
			}
			sort.Slice(d.VMs, func(i, j int) bool { return d.VMs[i].Name < d.VMs[j].Name })
			b, _ := json.Marshal(d)
			sum := sha256.Sum256(b)
			h := hex.EncodeToString(sum[:16])
			l.hashes[n], l.docs[n] = h, d
			l.rehashed++
			if key != "" {
				next[n] = siteHashEntry{key: key, hash: h, doc: d}
			}
		}
		if next != nil {
			l.hashCache.replace(next)
		}
	})
	return l.hashes
}

// loadCache remembers the last few loaded trees: polling an unchanged
// branch, or a commit that only touched files outside the manifests path,
// costs no parsing.
type loadCache struct {
	mu    sync.Mutex
	max   int
	order []string
	m     map[string]*loaded
}

func newLoadCache(n int) *loadCache { return &loadCache{max: n, m: map[string]*loaded{}} }

func (c *loadCache) get(k string) *loaded {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

func (c *loadCache) put(k string, l *loaded) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok {
		c.order = append(c.order, k)
	}
	c.m[k] = l
	for len(c.order) > c.max {
		delete(c.m, c.order[0])
		c.order = c.order[1:]
	}
}

// load reads and validates the manifests of commit head below repo.Path,
// within Options.LoadTimeout.
func (r *Reconciler) load(ctx context.Context, repo store.Repository, head plumbing.Hash) (*loaded, error) {
	ctx, cancel := r.loadContext(ctx)
	defer cancel()
	m, err := r.mirrors.Mirror(repo.ID, repo.URL)
	if err != nil {
		return nil, err
	}
	fsys, err := m.CommitFS(head, repo.Path)
	if err != nil {
		if errors.Is(err, ErrNoCommit) {
			return nil, err
		}
		// The manifests path does not exist in this commit: no manifests.
		return nil, fmt.Errorf("%w: %w", err, schema.ErrNoManifests)
	}
	treeHash := fsys.Hash()
	key := repo.ID + "/" + treeHash.String()
	if l := r.cache.get(key); l != nil {
		return l, l.err
	}
	d, stats, err := r.loaders.get(repo.ID).Load(ctx, fsys)
	l := &loaded{desired: d, err: err, tree: treeHash.String(), incremental: stats.Read < stats.Files,
		blobs: fsys.BlobHashes(), hashCache: r.loaders.hashesOf(repo.ID)}
	if l.err == nil || !loadError(l.tree, repo.Path, l.err).Retry {
		r.cache.put(key, l) // a failure that may pass next time is not cached
	}
	return l, l.err
}

// loadApplied loads the repository's last valid commit from its mirror,
// fetching it first on a fresh data dir.
func (r *Reconciler) loadApplied(ctx context.Context, repo store.Repository) (*loaded, error) {
	head := plumbing.NewHash(repo.LastAppliedCommit)
	m, err := r.mirrors.Mirror(repo.ID, repo.URL)
	if err != nil {
		return nil, err
	}
	if !m.HasCommit(head) {
		// A fresh data dir (restart elsewhere): fetch the commit.
		if err := r.fetchSHA(ctx, repo, repo.LastAppliedCommit, 0); err != nil {
			return nil, fetchError(err)
		}
	}
	l, err := r.load(ctx, repo, head)
	if err != nil {
		e := loadError(repo.LastAppliedCommit, repo.Path, err)
		e.Err = fmt.Errorf("load last valid commit %s: %w", short(repo.LastAppliedCommit), e.Err)
		return nil, e
	}
	return l, nil
}

// desiredFromStore builds the desired state of sites from the store's
// records, so drift is re-planned without git. It answers nil (read the
// mirror instead) unless every record can be trusted to be the last valid
// commit's: each site recorded with its documents from this repository,
// the commit planned without refusal (a refused site keeps the record of
// an older commit, and must not be repaired towards it), and no record of
// another commit written after it was applied (a newer commit whose
// reconcile stopped half-way records some sites before it is applied).
func (r *Reconciler) desiredFromStore(ctx context.Context, repo store.Repository, sites []string) (*loaded, error) {
	sts, err := r.store.CommitStatuses(ctx, repo.Tenant, repo.ID, repo.LastAppliedCommit)
	if err != nil {
		return nil, fmt.Errorf("statuses of %s: %w", short(repo.LastAppliedCommit), err)
	}
	if !slices.ContainsFunc(sts, func(st store.CommitStatus) bool {
		return st.Context == forge.ContextPlan && st.State == store.StateSuccess
	}) {
		return nil, nil
	}
	l := &loaded{hashes: map[string]string{}, docs: map[string]*siteDoc{}}
	for _, s := range sites {
		d, err := r.store.DesiredState(ctx, repo.Tenant, s)
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("desired state of %s: %w", s, err)
		}
		if d.RepoID != repo.ID {
			return nil, nil
		}
		if d.Commit != repo.LastAppliedCommit && d.UpdatedAt.After(repo.LastAppliedAt) {
			return nil, nil
		}
		if d.Document == nil && len(d.VMs) == 0 {
			continue // gone from git: no hash, its managed VMs are pruned
		}
		l.hashes[s] = d.Hash
		l.docs[s] = &siteDoc{Site: d.Document, VMs: d.VMs}
		if d.Document != nil {
			l.desired.Sites = append(l.desired.Sites, *d.Document)
		}
		l.desired.VMs = append(l.desired.VMs, d.VMs...)
	}
	l.once.Do(func() {}) // hashes and docs are the recorded ones
	return l, nil
}
