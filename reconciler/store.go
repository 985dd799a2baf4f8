package reconciler

// The store phase: the plan phase's records → the store, a batch of sites
// per transaction, with the older plans the commit supersedes cancelled
// in the planner's order; the outcome (stored, unregistered, cancelled)
// lands in the Result.

import (
	"context"
	"errors"
	"fmt"

	"github.com/nkudo/nkudo/store"
)

// storePlans writes what the plan phase decided: first the documents of
// the records that lack them (sel.backfill), then each planned site in
// order, its older active plan cancelled when p says so and its record
// stored in batches of planBatch.
func (r *Reconciler) storePlans(ctx context.Context, repo store.Repository, commit string, l *loaded, sel *selection, p *planned, res *Result) error {
	tenant := repo.Tenant
	// Records written before the store kept documents get them without
	// re-planning: their hash says the documents are the ones loaded now.
	// Written in batches, as plans are: one transaction per planBatch sites.
	for from := 0; from < len(sel.backfill); from += planBatch {
		var recs []store.SitePlanRecord
		for _, s := range sel.backfill[from:min(from+planBatch, len(sel.backfill))] {
			old := sel.prev[s]
			recs = append(recs, store.SitePlanRecord{Desired: l.siteDesired(s, old.Commit, old.InventoryVersion, old.UpdatedAt)})
		}
		if _, err := r.store.RecordSitePlans(ctx, r.actor, tenant, repo.ID, recs, r.now()); err != nil {
			return fmt.Errorf("record desired state of %d sites from %s: %w", len(recs), recs[0].Desired.Site, err)
		}
	}
	var batch []store.SitePlanRecord
	for _, sp := range p.sites {
		if sp.cancel != "" {
			if err := r.cancelActive(ctx, tenant, sp.site, commit, sp.cancel, res); err != nil {
				return err
			}
		}
		if sp.record == nil {
			continue
		}
		batch = append(batch, *sp.record)
		if len(batch) == planBatch {
			if err := r.recordPlans(ctx, repo, batch, res); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	return r.recordPlans(ctx, repo, batch, res)
}

// planBatch is how many sites' plans are recorded per store transaction:
// one commit for many sites (a cold commit of 1,000 sites was mostly
// per-transaction cost), small enough that a transaction holds the
// store's writer briefly.
const planBatch = 100

// recordPlans records a batch of sites' plans and desired state (as
// store.RecordSitePlans) and notes the outcome in res.
func (r *Reconciler) recordPlans(ctx context.Context, repo store.Repository, batch []store.SitePlanRecord, res *Result) error {
	if len(batch) == 0 {
		return nil
	}
	tenant := repo.Tenant
	out, err := r.store.RecordSitePlans(ctx, r.actor, tenant, repo.ID, batch, r.now())
	if err != nil {
		return fmt.Errorf("store plans for %d sites from %s: %w", len(batch), batch[0].Desired.Site, err)
	}
	for i, rec := range batch {
		site := rec.Desired.Site
		if err := out[i].Err; err != nil {
			if rec.Plan != nil && errors.Is(err, store.ErrNotFound) {
				// The site is in git but not registered with the control
				// plane yet: nothing can run there. Planned again once it is.
				res.Unregistered = append(res.Unregistered, site)
				continue
			}
			return fmt.Errorf("store plan for %s: %w", site, err)
		}
		if out[i].Stored {
			res.Stored = append(res.Stored, *rec.Plan)
		}
		r.drift.setRepo(tenant, site, repo.ID)
	}
	return nil
}

// cancelActive supersedes the site's active plan, if it has one, without
// storing a new one, and notes it in res.
func (r *Reconciler) cancelActive(ctx context.Context, tenant, site, commit, reason string, res *Result) error {
	p, err := r.store.SupersedeActivePlan(ctx, r.actor, tenant, site, commit, reason, r.now())
	if errors.Is(err, store.ErrNotFound) {
		return nil // nothing active (or the site is not registered)
	}
	if err != nil {
		return fmt.Errorf("cancel active plan of %s: %w", site, err)
	}
	if res.Cancelled == nil {
		res.Cancelled = map[string]string{}
	}
	res.Cancelled[site] = p.Plan.ID
	r.log.Info("older plan superseded without a new one", "tenant", tenant, "site", site, "plan", p.Plan.ID,
		"planCommit", short(p.Plan.Commit), "commit", short(commit), "reason", reason)
	return nil
}
