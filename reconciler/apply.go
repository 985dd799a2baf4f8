package reconciler

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

// tracking follows the plans that must finish before a commit's
// nkudo/apply turns green.
type tracking struct {
	repo      store.Repository
	commit    string
	plans     map[string]string // site → plan ID still to finish
	converged int               // sites whose plan succeeded
	started   time.Time
}

// applyTracker holds the commits whose nkudo/apply status is still being
// followed, one tracking per repository and commit. Its zero value is
// ready. A tracking itself is read and changed by the apply loop only.
type applyTracker struct {
	mu sync.Mutex
	m  map[string]*tracking // repo ID/commit → its tracking
}

func trackingKey(t *tracking) string { return t.repo.ID + "/" + t.commit }

// add follows t, replacing an older tracking of the same commit.
func (a *applyTracker) add(t *tracking) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		a.m = map[string]*tracking{}
	}
	a.m[trackingKey(t)] = t
}

// list returns the trackings followed now, in no order.
func (a *applyTracker) list() []*tracking {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*tracking, 0, len(a.m))
	for _, t := range a.m {
		out = append(out, t)
	}
	return out
}

// has reports whether the repository's commit is followed now.
func (a *applyTracker) has(repoID, commit string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.m[repoID+"/"+commit]
	return ok
}

// remove stops following t's commit.
func (a *applyTracker) remove(t *tracking) {
	a.mu.Lock()
	delete(a.m, trackingKey(t))
	a.mu.Unlock()
}

// activePlans returns the repository's pending and in-progress plans:
// plan ID → site.
func (r *Reconciler) activePlans(ctx context.Context, repo store.Repository) (map[string]string, error) {
	return r.store.ActivePlanIDs(ctx, repo.Tenant, repo.ID)
}

// trackActive starts following commit: its own plans (site → plan ID)
// plus the repository's plans still active from earlier commits, which
// carry the same desired state for sites this commit did not change. The
// first evaluation is left to the apply loop so a reconcile never waits
// on it.
func (r *Reconciler) trackActive(ctx context.Context, repo store.Repository, commit string, own map[string]string) {
	active, err := r.activePlans(ctx, repo)
	if err != nil {
		r.log.Error("apply tracking", "repo", repo.ID, "err", err)
	}
	plans := map[string]string{}
	for id, site := range active {
		plans[site] = id
	}
	for s, id := range own {
		plans[s] = id
	}
	t := &tracking{repo: repo, commit: commit, plans: plans, started: r.now()}
	if len(plans) == 0 {
		r.setStatus(ctx, repo, commit, forge.ContextApply, store.StateSuccess, "nothing to apply: every site is converged")
		return
	}
	// One replica follows a commit at a time, so replicas do not take
	// turns rewriting its pending status; SetCommitStatusOnce still keeps
	// one verdict should two overlap while a lease changes hands. Without
	// an answer from the store, track anyway: the status stays once-only.
	if ok, err := r.store.AcquireLease(ctx, applyLease(repo.ID, commit), r.opts.Holder, r.opts.LeaseTTL); err != nil {
		r.log.Warn("apply tracking lease", "repo", repo.ID, "commit", commit, "err", err)
	} else if !ok {
		r.log.Debug("another replica follows this commit's apply", "repo", repo.ID, "commit", commit)
		return
	}
	r.setStatus(ctx, repo, commit, forge.ContextApply, store.StatePending, fmt.Sprintf("0 of %d sites converged", len(plans)))
	r.tracker.add(t)
}

// applyLease names the lease of one commit's apply tracking.
func applyLease(repoID, commit string) string { return "apply/" + repoID + "/" + commit }

// adoptEvery is how many apply checks pass between two looks for pending
// commits nobody follows (their replica died: its lease ran out).
const adoptEvery = 12

func (r *Reconciler) applyLoop(ctx context.Context) {
	tk := time.NewTicker(r.opts.ApplyCheckInterval)
	defer tk.Stop()
	defer r.releaseApplyLeases(context.WithoutCancel(ctx))
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		if n%adoptEvery == 0 {
			r.adoptPending(ctx)
		}
		r.adoptRequests(ctx)
		for _, t := range r.tracker.list() {
			r.checkApply(ctx, t)
		}
	}
}

// adoptPending follows the pending nkudo/apply of each repository's last
// applied commit that no replica follows (trackActive takes its lease).
func (r *Reconciler) adoptPending(ctx context.Context) {
	repos, err := r.store.ListAllRepositories(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Error("adopt pending apply statuses: list repositories", "err", err)
		}
		return
	}
	for _, repo := range repos {
		if repo.LastAppliedCommit == "" {
			continue
		}
		if r.tracker.has(repo.ID, repo.LastAppliedCommit) {
			continue
		}
		sts, err := r.store.CommitStatuses(ctx, repo.Tenant, repo.ID, repo.LastAppliedCommit)
		if err != nil {
			continue
		}
		for _, st := range sts {
			if st.Context == forge.ContextApply && st.State == store.StatePending {
				r.trackActive(ctx, repo, repo.LastAppliedCommit, nil)
			}
		}
	}
}

// releaseApplyLeases lets another replica adopt this one's commits at once
// when it stops.
func (r *Reconciler) releaseApplyLeases(ctx context.Context) {
	for _, t := range r.tracker.list() {
		if err := r.store.ReleaseLease(ctx, applyLease(t.repo.ID, t.commit), r.opts.Holder); err != nil {
			r.log.Warn("release apply tracking lease", "repo", t.repo.ID, "commit", t.commit, "err", err)
		}
	}
}

// checkApply re-evaluates one commit's nkudo/apply status.
func (r *Reconciler) checkApply(ctx context.Context, t *tracking) {
	lease := applyLease(t.repo.ID, t.commit)
	if ok, err := r.store.RenewLease(ctx, lease, r.opts.Holder, r.opts.LeaseTTL); err == nil && !ok {
		// Taken over (this replica stalled past the lease): the new holder follows it.
		r.tracker.remove(t)
		return
	}
	state, desc, done, err := r.evaluate(ctx, t)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Error("apply tracking", "repo", t.repo.ID, "commit", t.commit, "err", err)
		}
		return
	}
	r.setStatus(ctx, t.repo, t.commit, forge.ContextApply, state, desc)
	if done {
		r.tracker.remove(t)
		if err := r.store.ReleaseLease(ctx, lease, r.opts.Holder); err != nil {
			r.log.Warn("release apply tracking lease", "repo", t.repo.ID, "commit", t.commit, "err", err)
		}
	}
}

// evaluate costs one list query per check plus one read per plan that
// finished since the last check, however many sites are waiting.
func (r *Reconciler) evaluate(ctx context.Context, t *tracking) (store.StatusState, string, bool, error) {
	active, err := r.activePlans(ctx, t.repo)
	if err != nil {
		return "", "", false, err
	}
	sites := make([]string, 0, len(t.plans))
	for s := range t.plans {
		sites = append(sites, s)
	}
	sort.Strings(sites)
	var waiting []string
	for _, site := range sites {
		id := t.plans[site]
		if _, ok := active[id]; ok {
			waiting = append(waiting, site)
			continue
		}
		p, err := r.store.GetPlan(ctx, t.repo.Tenant, id)
		if errors.Is(err, store.ErrNotFound) {
			delete(t.plans, site) // deleted with its site
			t.converged++
			continue
		}
		if err != nil {
			return "", "", false, err
		}
		switch p.Status {
		case model.PlanSucceeded:
			if !staleSkipped(p) {
				delete(t.plans, site)
				t.converged++
				break
			}
			// The agent refused the plan as stale: it "succeeded" without
			// running. Follow the re-plan from the fresh inventory.
			next, converged, err := r.afterStale(ctx, t, site, id)
			if err != nil {
				return "", "", false, err
			}
			switch {
			case converged:
				delete(t.plans, site)
				t.converged++
			case next != "":
				t.plans[site] = next
				waiting = append(waiting, site)
			default:
				waiting = append(waiting, site)
			}
		case model.PlanFailed:
			return store.StateFailure, failureDescription(site, p), true, nil
		case model.PlanSuperseded:
			if p.SupersededBy == "" {
				// Cancelled without a new plan (store.SupersedeActivePlan).
				by := p.SupersededByCommit
				if by != "" && by != t.commit && by != p.Plan.Commit {
					return store.StateError, fmt.Sprintf("superseded by %s before it finished (site %s): that commit needs none of its remaining actions", short(by), site), true, nil
				}
				// The same desired state found the site needing nothing more.
				delete(t.plans, site)
				t.converged++
				break
			}
			next, err := r.store.GetPlan(ctx, t.repo.Tenant, p.SupersededBy)
			if err != nil {
				return "", "", false, fmt.Errorf("superseding plan of %s: %w", site, err)
			}
			if next.Plan.Commit != "" && next.Plan.Commit != t.commit && next.Plan.Commit != p.Plan.Commit {
				return store.StateError, fmt.Sprintf("superseded by %s before it finished (site %s)", short(next.Plan.Commit), site), true, nil
			}
			// Re-planned for the same desired state (stale inventory, drift): follow it.
			t.plans[site] = next.Plan.ID
			waiting = append(waiting, site)
		default:
			waiting = append(waiting, site) // became active between the two reads
		}
	}
	total := len(t.plans) + t.converged
	if len(waiting) == 0 {
		return store.StateSuccess, fmt.Sprintf("%d of %d sites converged", t.converged, total), true, nil
	}
	// A site that stays offline past the timeout fails the commit.
	if off, what, site, err := r.offline(ctx, t, waiting); err != nil {
		return "", "", false, err
	} else if site != "" {
		return store.StateFailure, fmt.Sprintf("site %s %s for %s; its plan did not run", site, what, off.Round(time.Second)), true, nil
	}
	desc := fmt.Sprintf("%d of %d sites converged; waiting for %s", t.converged, total, waiting[0])
	if len(waiting) > 1 {
		desc += fmt.Sprintf(" and %d more", len(waiting)-1)
	}
	return store.StatePending, desc, false, nil
}

// offline finds the first waiting site silent for longer than OfflineTimeout.
func (r *Reconciler) offline(ctx context.Context, t *tracking, waiting []string) (time.Duration, string, string, error) {
	if r.now().Sub(t.started) <= r.opts.OfflineTimeout {
		return 0, "", "", nil // nobody can be late yet
	}
	all, err := r.store.ListSites(ctx, t.repo.Tenant)
	if err != nil {
		return 0, "", "", fmt.Errorf("list sites: %w", err)
	}
	byName := make(map[string]store.Site, len(all))
	for _, s := range all {
		byName[s.Name] = s
	}
	for _, site := range waiting {
		s := byName[site]
		since := later(s.LastHeartbeat, t.started)
		if off := r.now().Sub(since); off > r.opts.OfflineTimeout {
			what := "has not reported"
			if !s.LastHeartbeat.IsZero() {
				what = "offline"
			}
			return off, what, site, nil
		}
	}
	return 0, "", "", nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// staleSkipped reports whether every action of a plan was skipped by the
// agent's stale-plan guard (the plan was never run).
func staleSkipped(p store.StoredPlan) bool {
	if len(p.Actions) == 0 {
		return false
	}
	for _, a := range p.Actions {
		if a.Status != model.ActionSkipped || !strings.Contains(a.Error, "stale plan") {
			return false
		}
	}
	return true
}

// afterStale finds what replaced a plan the agent refused as stale: a newer
// plan of the site (next), or a re-plan that found the site converged. With
// neither yet, it asks the drift loop to re-plan the site.
func (r *Reconciler) afterStale(ctx context.Context, t *tracking, site, id string) (next string, converged bool, err error) {
	// The desired state is read before the plans: a re-plan records its
	// plan and its desired state together (store.RecordSitePlan), so a
	// record seen here means any plan it made is visible to the read below.
	sd, err := r.store.SiteDesired(ctx, t.repo.Tenant, t.repo.ID)
	if err != nil {
		return "", false, fmt.Errorf("desired state of %s: %w", site, err)
	}
	inv, err := r.store.Inventory(ctx, t.repo.Tenant, site)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return "", false, fmt.Errorf("inventory of %s: %w", site, err)
	}
	list, err := r.store.ListPlans(ctx, t.repo.Tenant, store.PlanFilter{Site: site, RepoID: t.repo.ID, Limit: 1})
	if err != nil {
		return "", false, fmt.Errorf("plans of %s: %w", site, err)
	}
	if len(list) > 0 && list[0].Plan.ID != id {
		return list[0].Plan.ID, false, nil
	}
	d := sd[site]
	if d.Commit == t.commit && d.InventoryVersion == inv.Version && d.UpdatedAt.After(t.started) {
		return "", true, nil // re-planned from the fresh inventory: nothing to do
	}
	r.markDirty(t.repo.Tenant, site)
	return "", false, nil
}

// failureDescription names the first failed site and action.
func failureDescription(site string, p store.StoredPlan) string {
	for _, a := range p.Actions {
		if a.Status == model.ActionFailed {
			msg := fmt.Sprintf("site %s: %s %s failed", site, a.Action.Operation, a.Action.VM)
			if a.Error != "" {
				msg += ": " + a.Error
			}
			return msg
		}
	}
	return fmt.Sprintf("site %s: plan failed", site)
}
