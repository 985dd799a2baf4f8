package reconciler

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

// tracking follows the plans that must finish before a commit's
// nkudo/apply turns green.
type tracking struct {
	repo    store.Repository
	commit  string
	plans   map[string]string // site → plan ID
	started time.Time
}

// trackActive starts following commit: its own plans (site → plan ID)
// plus the repository's plans still active from earlier commits, which
// carry the same desired state for sites this commit did not change.
func (r *Reconciler) trackActive(ctx context.Context, repo store.Repository, commit string, own map[string]string) {
	plans := map[string]string{}
	for _, status := range []model.PlanStatus{model.PlanPending, model.PlanInProgress} {
		list, err := r.store.ListPlans(ctx, repo.Tenant, store.PlanFilter{RepoID: repo.ID, Status: status, Limit: 100000})
		if err != nil {
			r.log.Error("apply tracking: list plans", "repo", repo.ID, "err", err)
			continue
		}
		for _, p := range list {
			plans[p.Plan.Site] = p.Plan.ID
		}
	}
	for s, id := range own {
		plans[s] = id
	}
	t := &tracking{repo: repo, commit: commit, plans: plans, started: r.now()}
	r.mu.Lock()
	r.tracked[repo.ID+"/"+commit] = t
	r.mu.Unlock()
	r.checkApply(ctx, t)
}

func (r *Reconciler) applyLoop(ctx context.Context) {
	tk := time.NewTicker(r.opts.ApplyCheckInterval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		r.mu.Lock()
		list := make([]*tracking, 0, len(r.tracked))
		for _, t := range r.tracked {
			list = append(list, t)
		}
		r.mu.Unlock()
		for _, t := range list {
			r.checkApply(ctx, t)
		}
	}
}

// checkApply re-evaluates one commit's nkudo/apply status.
func (r *Reconciler) checkApply(ctx context.Context, t *tracking) {
	state, desc, done, err := r.evaluate(ctx, t)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Error("apply tracking", "repo", t.repo.ID, "commit", t.commit, "err", err)
		}
		return
	}
	r.setStatus(ctx, t.repo, t.commit, forge.ContextApply, state, desc)
	if done {
		r.mu.Lock()
		delete(r.tracked, t.repo.ID+"/"+t.commit)
		r.mu.Unlock()
	}
}

func (r *Reconciler) evaluate(ctx context.Context, t *tracking) (store.StatusState, string, bool, error) {
	sites := make([]string, 0, len(t.plans))
	for s := range t.plans {
		sites = append(sites, s)
	}
	sort.Strings(sites)
	if len(sites) == 0 {
		return store.StateSuccess, "nothing to apply: every site is converged", true, nil
	}
	converged := 0
	var waiting []string
	for _, site := range sites {
		id := t.plans[site]
		p, err := r.store.GetPlan(ctx, t.repo.Tenant, id)
		if errors.Is(err, store.ErrNotFound) {
			converged++ // deleted with its site
			continue
		}
		if err != nil {
			return "", "", false, err
		}
		switch p.Status {
		case model.PlanSucceeded:
			converged++
		case model.PlanFailed:
			return store.StateFailure, failureDescription(site, p), true, nil
		case model.PlanSuperseded:
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
			s, err := r.store.GetSite(ctx, t.repo.Tenant, site)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return "", "", false, err
			}
			since := later(s.LastHeartbeat, t.started)
			if off := r.now().Sub(since); off > r.opts.OfflineTimeout {
				what := "has not reported"
				if !s.LastHeartbeat.IsZero() {
					what = "offline"
				}
				return store.StateFailure, fmt.Sprintf("site %s %s for %s; its plan did not run", site, what, off.Round(time.Second)), true, nil
			}
			waiting = append(waiting, site)
		}
	}
	if len(waiting) == 0 {
		return store.StateSuccess, fmt.Sprintf("%d of %d sites converged", converged, len(sites)), true, nil
	}
	desc := fmt.Sprintf("%d of %d sites converged; waiting for %s", converged, len(sites), waiting[0])
	if len(waiting) > 1 {
		desc += fmt.Sprintf(" and %d more", len(waiting)-1)
	}
	return store.StatePending, desc, false, nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
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
