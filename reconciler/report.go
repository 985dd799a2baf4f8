package reconciler

// The report phase: the outcome of a reconcile of a commit → its
// nkudo/plan status, and the apply tracking that turns into nkudo/apply.
// Drift repairs report through their plans, not commit statuses.

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/nkudo/nkudo/diff"
	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/store"
)

// reportPlans posts commit's nkudo/plan (a refusal, or the summary with
// the sites not registered yet) and starts following its plans for
// nkudo/apply.
func (r *Reconciler) reportPlans(ctx context.Context, repo store.Repository, commit string, p *planned, res *Result) {
	if p.none {
		r.setStatus(ctx, repo, commit, forge.ContextPlan, store.StateSuccess, "no changes")
		r.trackActive(ctx, repo, commit, nil)
		return
	}
	if p.firstRefused != "" {
		r.setStatus(ctx, repo, commit, forge.ContextPlan, store.StateFailure, "refused: "+p.firstRefused)
	} else {
		desc := res.Summary
		if n := len(res.Unregistered); n > 0 {
			// Count only the sites planned; name the unregistered ones apart.
			planned := diff.Result{Sites: slices.DeleteFunc(slices.Clone(p.result.Sites), func(s diff.SiteResult) bool { return slices.Contains(res.Unregistered, s.Site) })}
			names, more := res.Unregistered[:min(n, 3)], ""
			if n > 3 {
				more = fmt.Sprintf(" and %d more", n-3)
			}
			desc = diff.Summary(planned) + "; not registered: " + strings.Join(names, ", ") + more
		}
		r.setStatus(ctx, repo, commit, forge.ContextPlan, store.StateSuccess, desc)
	}
	var planIDs = map[string]string{}
	for _, sr := range p.result.Sites {
		if sr.Refused == "" && len(sr.Plan.Actions) > 0 && !slices.Contains(res.Unregistered, sr.Site) {
			planIDs[sr.Site] = sr.Plan.ID
		}
	}
	r.trackActive(ctx, repo, commit, planIDs)
}
