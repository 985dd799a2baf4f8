package reconciler

import (
	"context"
	"sort"
	"sync"
	"time"
)

// driftDebouncer collects the sites whose inventory moved and hands each
// out for a re-plan at most once per interval, merging the changes in
// between. It also remembers which repository plans a site, so that a
// drift check finds its repository without asking the store. Make it
// with newDriftDebouncer.
type driftDebouncer struct {
	interval time.Duration

	mu        sync.Mutex
	dirty     map[string]bool      // tenant/site with an unprocessed inventory change
	lastDrift map[string]time.Time // tenant/site → last drift re-plan
	siteRepo  map[string]string    // tenant/site → repo ID that plans it
}

func newDriftDebouncer(interval time.Duration) *driftDebouncer {
	return &driftDebouncer{interval: interval, dirty: map[string]bool{}, lastDrift: map[string]time.Time{}, siteRepo: map[string]string{}}
}

// mark notes an inventory change of a site; it is due at the next call of
// due at least interval after the site's last re-plan.
func (d *driftDebouncer) mark(tenant, site string) {
	d.mu.Lock()
	d.dirty[tenant+"/"+site] = true
	d.mu.Unlock()
}

// due returns the marked sites (tenant/site keys, sorted) whose last
// re-plan is at least interval before now, unmarks them and records now
// as their re-plan.
func (d *driftDebouncer) due(now time.Time) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var due []string
	for k := range d.dirty {
		if now.Sub(d.lastDrift[k]) >= d.interval {
			due = append(due, k)
			delete(d.dirty, k)
			d.lastDrift[k] = now
		}
	}
	sort.Strings(due)
	return due
}

// repoOf returns the repository known to plan a site; ok is false when
// none is known yet (the store knows).
func (d *driftDebouncer) repoOf(tenant, site string) (repoID string, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	repoID, ok = d.siteRepo[tenant+"/"+site]
	return repoID, ok
}

// setRepo records that repoID plans a site.
func (d *driftDebouncer) setRepo(tenant, site, repoID string) {
	d.mu.Lock()
	d.siteRepo[tenant+"/"+site] = repoID
	d.mu.Unlock()
}

// driftLoop turns inventory changes into drift re-plans, rate-limited per site.
func (r *Reconciler) driftLoop(ctx context.Context) {
	t := time.NewTicker(min(r.opts.DriftInterval/4+time.Millisecond, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, k := range r.drift.due(r.now()) {
			tenant, site := splitKey(k)
			repoID, err := r.repoOfSite(ctx, tenant, site)
			if err != nil {
				r.log.Error("drift: find repository of site", "tenant", tenant, "site", site, "err", err)
				continue
			}
			if repoID == "" {
				continue // no repository plans this site
			}
			if !r.enqueue(&task{kind: taskDrift, tenant: tenant, repoID: repoID, sites: map[string]bool{site: true}}) {
				r.markDirty(tenant, site) // the queue is full: checked again later
			}
		}
	}
}

func splitKey(k string) (string, string) {
	for i := 0; i < len(k); i++ {
		if k[i] == '/' {
			return k[:i], k[i+1:]
		}
	}
	return k, ""
}

// repoOfSite finds the repository that plans a site ("" if none).
func (r *Reconciler) repoOfSite(ctx context.Context, tenant, site string) (string, error) {
	if id, ok := r.drift.repoOf(tenant, site); ok {
		return id, nil
	}
	repos, err := r.store.ListRepositories(ctx, tenant)
	if err != nil {
		return "", err
	}
	for _, repo := range repos {
		sd, err := r.store.SiteDesired(ctx, tenant, repo.ID)
		if err != nil {
			return "", err
		}
		for s := range sd {
			r.drift.setRepo(tenant, s, repo.ID)
		}
		if _, ok := sd[site]; ok {
			return repo.ID, nil
		}
	}
	return "", nil
}
