package reconciler

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nkudo/nkudo/diff"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

// Freshness of pull-request previews: a preview is computed against the
// sites' inventories and the branch commit in force at that moment, and
// says so. When a site reports a new inventory, or the branch moves, the
// open pull requests it concerns are previewed again through the one task
// queue, at most once per pull request per Options.RefreshInterval, and
// their comment says what changed.

// DefaultRefreshInterval is Options.RefreshInterval's default.
const DefaultRefreshInterval = time.Minute

// prFresh collects what moved and decides when each open pull request is
// previewed again. It does no I/O: the refresh loop asks it what is due.
type prFresh struct {
	every time.Duration

	mu      sync.Mutex
	sites   map[string]bool      // tenant/site whose inventory moved
	repos   map[string]bool      // tenant/repoID whose branch moved
	pending map[string]*task     // repo#pr → refresh waiting for its turn
	last    map[string]time.Time // repo#pr → when its last refresh was queued
}

func newPRFresh(every time.Duration) *prFresh {
	return &prFresh{every: every, sites: map[string]bool{}, repos: map[string]bool{}, pending: map[string]*task{}, last: map[string]time.Time{}}
}

// siteMoved notes a site's new inventory. It never blocks on I/O.
func (f *prFresh) siteMoved(tenant, site string) {
	if f == nil || f.every < 0 { // nil: a Reconciler not built by New
		return
	}
	f.mu.Lock()
	f.sites[tenant+"/"+site] = true
	f.mu.Unlock()
}

// baseMoved notes that a repository's branch has a new commit in force.
func (f *prFresh) baseMoved(tenant, repoID string) {
	if f == nil || f.every < 0 {
		return
	}
	f.mu.Lock()
	f.repos[tenant+"/"+repoID] = true
	f.mu.Unlock()
}

// drain returns and forgets what moved since the last call.
func (f *prFresh) drain() (sites, repos []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sites, repos = slices.Sorted(maps.Keys(f.sites)), slices.Sorted(maps.Keys(f.repos))
	clear(f.sites)
	clear(f.repos)
	return sites, repos
}

// offer adds refresh tasks; due returns those whose pull request has had
// no refresh for the interval, at most one per pull request, and keeps
// the rest (coalesced: the latest wins) for later.
func (f *prFresh) offer(ts []*task) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, t := range ts {
		f.pending[prKey(t.repoID, t.pr)] = t
	}
}

func (f *prFresh) due(now time.Time) []*task {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*task
	for _, k := range slices.Sorted(maps.Keys(f.pending)) {
		if last, ok := f.last[k]; ok && now.Sub(last) < f.every {
			continue
		}
		out = append(out, f.pending[k])
		delete(f.pending, k)
		f.last[k] = now
	}
	// Bound memory: a pull request last refreshed an interval ago has no
	// limit left to enforce.
	for k, at := range f.last {
		if now.Sub(at) >= f.every && f.pending[k] == nil {
			delete(f.last, k)
		}
	}
	return out
}

// retry puts back a task the queue refused, for the next tick.
func (f *prFresh) retry(t *task) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := prKey(t.repoID, t.pr)
	if _, ok := f.pending[k]; !ok {
		f.pending[k] = t
	}
	delete(f.last, k)
}

// refreshLoop turns moved inventories and branches into re-previews.
func (r *Reconciler) refreshLoop(ctx context.Context) {
	if r.fresh == nil || r.fresh.every < 0 {
		return
	}
	t := time.NewTicker(min(r.fresh.every/4+time.Millisecond, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.refreshDue(ctx)
	}
}

// refreshDue finds the open pull requests concerned by what moved and
// queues those whose turn it is.
func (r *Reconciler) refreshDue(ctx context.Context) {
	sites, repos := r.fresh.drain()
	bySite := map[string][]string{} // tenant/repoID → sites that moved
	for _, k := range sites {
		tenant, site := splitKey(k)
		repoID, err := r.repoOfSite(ctx, tenant, site)
		if err != nil {
			r.log.Error("refresh previews: find repository of site", "tenant", tenant, "site", site, "err", err)
			continue
		}
		if repoID != "" {
			bySite[tenant+"/"+repoID] = append(bySite[tenant+"/"+repoID], site)
		}
	}
	for _, k := range repos {
		if _, ok := bySite[k]; !ok {
			bySite[k] = nil
		}
	}
	baseMoved := map[string]bool{}
	for _, k := range repos {
		baseMoved[k] = true
	}
	for _, k := range slices.Sorted(maps.Keys(bySite)) {
		tenant, repoID := splitKey(k)
		ts, err := r.openPreviews(ctx, tenant, repoID, bySite[k], baseMoved[k])
		if err != nil {
			r.log.Error("refresh previews: open pull requests", "tenant", tenant, "repo", repoID, "err", err)
			continue
		}
		r.fresh.offer(ts)
	}
	for _, t := range r.fresh.due(r.now()) {
		if !r.enqueue(t) {
			r.fresh.retry(t) // the queue is full: tried at the next tick
		}
	}
}

// openPreviews returns refresh tasks for the open pull requests of a
// repository whose latest preview is concerned: planned against one of
// sites, or any planned one when the branch moved.
func (r *Reconciler) openPreviews(ctx context.Context, tenant, repoID string, sites []string, baseMoved bool) ([]*task, error) {
	ps, err := r.store.OpenPreviews(ctx, tenant, repoID)
	if err != nil {
		return nil, err
	}
	var out []*task
	for _, p := range ps {
		if !isSHA(p.Commit) {
			continue
		}
		// A head that was not planned (invalid, unverified) stays so
		// whatever moves: nothing to refresh.
		if p.Inventories == nil {
			continue
		}
		concerned := baseMoved
		for _, s := range sites {
			if _, ok := p.Inventories[s]; ok {
				concerned = true
			}
		}
		if concerned {
			out = append(out, &task{kind: taskPreview, tenant: tenant, repoID: repoID, pr: p.PR, sha: p.Commit, refresh: true})
		}
	}
	return out, nil
}

// refreshStale reports whether a refresh task was overtaken: its pull
// request has a newer head previewed (or was closed) since it was queued.
// Tasks of one repository never run at once, so the answer holds while the
// task runs.
func (r *Reconciler) refreshStale(ctx context.Context, t *task) bool {
	p, err := r.store.GetPreview(ctx, t.tenant, t.repoID, t.pr)
	return err != nil || p.Commit != t.sha || p.State != store.PreviewOpen
}

// lastPreview returns the stored preview of a pull request the next one
// is compared with (zero when there is none).
func (r *Reconciler) lastPreview(ctx context.Context, repo store.Repository, pr int) store.Preview {
	p, err := r.store.GetPreview(ctx, repo.Tenant, repo.ID, pr)
	if err != nil {
		return store.Preview{}
	}
	return p
}

// inventoryVersions are the inventory versions res was planned against.
func inventoryVersions(res diff.Result, invs map[string]model.Inventory) map[string]int64 {
	out := make(map[string]int64, len(res.Sites))
	for _, s := range res.Sites {
		out[s.Site] = invs[s.Site].Version
	}
	return out
}

// maxChangeLines bounds the changes a re-computed comment names one by one.
const maxChangeLines = 5

// freshness says what changed since prev for a preview of the same head:
// the sites whose inventory moved and the branch commit. Nothing for a new
// head (the comment is about another commit) or a first preview.
func freshness(prev, cur store.Preview) []string {
	if prev.Commit == "" || prev.Commit != cur.Commit {
		return nil
	}
	var out []string
	if prev.Base != cur.Base && cur.Base != "" {
		out = append(out, "base moved to "+short(cur.Base))
	}
	var moved []string
	for _, s := range slices.Sorted(maps.Keys(cur.Inventories)) {
		was, ok := prev.Inventories[s]
		now := cur.Inventories[s]
		if ok && was != now {
			moved = append(moved, fmt.Sprintf("inventory of site %s moved from v%d to v%d", s, was, now))
		}
	}
	if len(moved) > maxChangeLines {
		n := len(moved) - maxChangeLines
		moved = append(moved[:maxChangeLines], fmt.Sprintf("and %d more %s", n, pluralWord(n, "site", "sites")))
	}
	return append(out, moved...)
}

// inventoriesLine names the inventory versions compactly: each site for a
// few, a count and the version range for many.
func inventoriesLine(invs map[string]int64) string {
	if len(invs) == 0 {
		return "no site inventories"
	}
	sites := slices.Sorted(maps.Keys(invs))
	if len(sites) <= 8 {
		parts := make([]string, len(sites))
		for i, s := range sites {
			parts[i] = fmt.Sprintf("`%s` v%d", s, invs[s])
		}
		return "inventories " + strings.Join(parts, ", ")
	}
	lo, hi := invs[sites[0]], invs[sites[0]]
	for _, v := range invs {
		lo, hi = min(lo, v), max(hi, v)
	}
	return fmt.Sprintf("the inventories of %d sites (versions v%d–v%d)", len(sites), lo, hi)
}
