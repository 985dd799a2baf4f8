package reconciler

// The plan phase: the loaded desired state and the live inventories →
// the sites to plan (selectSites) and, per site, the record to store and
// the older plan to cancel (plan). Nothing is written here but the drift
// marks of sites whose plan is in progress.

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/nkudo/nkudo/diff"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

// selection is what selectSites found: the sites to plan, the sites whose
// records only lack their documents, and the inventories planned against.
type selection struct {
	invs map[string]model.Inventory
	prev map[string]store.SiteDesired // the repository's records before this run
	// toPlan are the sites to plan, sorted.
	toPlan []string
	// backfill are unchanged sites recorded before the store kept
	// documents, sorted: their hash says the documents are the ones loaded now.
	backfill []string
}

// selectSites picks the sites of repo whose desired state (from l) or
// inventory changed since they were last planned; only restricts the
// candidates (nil = every site the repository knows). report is true for
// a reconcile of a commit (false for drift).
func (r *Reconciler) selectSites(ctx context.Context, repo store.Repository, commit string, l *loaded, only []string, report bool) (*selection, error) {
	tenant := repo.Tenant
	invs, err := r.store.Inventories(ctx, tenant)
	if err != nil {
		return nil, fmt.Errorf("read inventories: %w", err)
	}
	prev, err := r.store.SiteDesired(ctx, tenant, repo.ID)
	if err != nil {
		return nil, fmt.Errorf("read site desired state: %w", err)
	}
	hashes := l.siteHashes()
	candidates := map[string]bool{}
	if only != nil {
		for _, s := range only {
			candidates[s] = true
		}
	} else {
		for s := range hashes {
			candidates[s] = true
		}
		for s := range prev {
			candidates[s] = true // sites gone from git: their managed VMs are pruned
		}
	}
	var toPlan, backfill []string
	for s := range candidates {
		desiredHash := hashes[s] // "" for a site gone from git
		old, had := prev[s]
		if desiredHash == "" && !had && only != nil {
			continue // drift on a site this repository never planned
		}
		sameDesired := had && old.Hash == desiredHash
		same := sameDesired && old.InventoryVersion == invs[s].Version
		// A site recorded as planned for this very commit, which is not
		// applied yet, was planned by a run that did not finish (a crash or
		// a lost lease half-way through the sites). It is planned again:
		// storing the same plan is a no-op, and the commit's nkudo/plan
		// summary and apply tracking must cover every site it planned, not
		// only those the last run reached.
		resumed := same && report && old.Commit == commit
		if same && !resumed {
			if !old.Documented {
				backfill = append(backfill, s)
			}
			continue // unchanged: the incremental rule
		}
		if !resumed && sameDesired {
			// Only the inventory moved. Leave a plan the agent is working
			// on alone (its own progress moves the inventory), and a
			// pending plan that is still fresh.
			ap, err := r.store.ActivePlan(ctx, tenant, s)
			skip := false
			switch {
			case err == nil && ap.Status == model.PlanInProgress:
				// Looked at again once the agent is done (its plan may turn
				// out stale, or the inventory may still differ).
				r.markDirty(tenant, s)
				skip = true
			case err == nil && ap.Plan.InventoryVersion >= invs[s].Version:
				skip = true
			case err != nil && !errors.Is(err, store.ErrNotFound):
				return nil, fmt.Errorf("active plan of %s: %w", s, err)
			}
			if skip {
				if !old.Documented {
					backfill = append(backfill, s)
				}
				continue
			}
		}
		toPlan = append(toPlan, s)
	}
	sort.Strings(toPlan)
	sort.Strings(backfill)
	return &selection{invs: invs, prev: prev, toPlan: toPlan, backfill: backfill}, nil
}

// sitePlan is the plan phase's outcome for one site, in the planner's order.
type sitePlan struct {
	site string
	// cancel, when set, is why the site's older active plan is cancelled
	// without a new one (the plan was refused, or the site converged).
	cancel string
	// record is the site's plan and desired state to store; nil for a
	// refused site (nothing is stored; it is tried again next time).
	record *store.SitePlanRecord
}

// planned is the plan phase's output.
type planned struct {
	// none is true when no site was selected: the planner did not run.
	none    bool
	sites   []sitePlan
	result  diff.Result
	summary string
	refused map[string]string // site → why the planner refused its plan
	// firstRefused is "site: reason" of the first refused site ("" = none).
	firstRefused string
}

// plan runs the planner over the selected sites. With nothing selected
// it answers "no changes" without planning.
func (r *Reconciler) plan(ctx context.Context, repo store.Repository, commit string, l *loaded, sel *selection) (*planned, error) {
	if len(sel.toPlan) == 0 {
		return &planned{none: true, summary: "no changes"}, nil
	}
	tenant := repo.Tenant
	nbGroups, err := r.netbirdGroups(ctx, tenant, l, sel.toPlan)
	if err != nil {
		return nil, err
	}
	result := diff.Plan(l.desired, sel.invs, diff.Options{Tenant: tenant, Commit: commit, Sites: sel.toPlan, PruneLimit: r.opts.PruneLimit, NetBirdGroups: nbGroups})
	p := &planned{result: result, summary: diff.Summary(result), refused: map[string]string{}}
	for _, sr := range result.Sites {
		if sr.Refused != "" {
			p.refused[sr.Site] = sr.Refused
			if p.firstRefused == "" {
				p.firstRefused = sr.Site + ": " + sr.Refused
			}
			// Nothing stored for that site; it is tried again next time.
			// An older plan still waiting there is cancelled too: it was
			// made for a desired state the repository has moved away from,
			// and a refused commit must not leave it running (it may be
			// just as destructive). The site holds still until a commit
			// is accepted.
			p.sites = append(p.sites, sitePlan{site: sr.Site, cancel: "plan refused: " + sr.Refused})
			continue
		}
		// The site's desired state is recorded with its plan, in one
		// transaction: what any replica serves as desired is what was planned.
		rec := &store.SitePlanRecord{Desired: l.siteDesired(sr.Site, commit, sel.invs[sr.Site].Version, r.now())}
		sp := sitePlan{site: sr.Site, record: rec}
		if len(sr.Plan.Actions) == 0 {
			// Converged: no plan is stored, and an older plan still waiting
			// for the site (a change reverted before it ran) must not run.
			sp.cancel = "site converged: no actions needed"
		} else {
			rec.Plan = &sr.Plan
		}
		p.sites = append(p.sites, sp)
	}
	return p, nil
}
