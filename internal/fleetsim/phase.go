package fleetsim

import (
	"context"
	"fmt"
	"time"

	"github.com/nkudo/nkudo/store"
)

// runPhase commits the changed sites' manifests, delivers the push webhook
// and waits until every changed site's hypervisor holds its desired VMs and
// the commit's nkudo/apply is final.
func (s *sim) runPhase(ctx context.Context, name string, changed []*site) (*Phase, error) {
	s.phase.Store(name)
	s.converged.Store(0)
	for _, st := range changed {
		if err := s.repo.write(st.name, siteManifest(st.name, st.vms)); err != nil {
			return nil, fmt.Errorf("%s: write %s: %w", name, st.name, err)
		}
	}
	before := s.repo.before()
	sha, err := s.repo.commit(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	for _, st := range changed {
		st.hv.Mark()
	}
	t0 := time.Now()
	if err := s.webhook(ctx, before, sha); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	ph := &Phase{Name: name, Commit: sha, Sites: len(changed)}
	ctx, cancelPhase := context.WithCancelCause(ctx)
	defer cancelPhase(nil)
	pending := map[*site]bool{}
	for _, st := range changed {
		pending[st] = true
	}
	err = s.waitFor(ctx, name+": every changed site converged", func() (bool, string) {
		if f := s.sink.failed(sha); f != "" {
			// The fleet will not converge on this commit: say why at once.
			cancelPhase(fmt.Errorf("%s: commit %s: %s", name, sha[:12], f))
		}
		for st := range pending {
			if st.hv.Matches(st.want()) {
				delete(pending, st)
			}
		}
		s.converged.Store(int64(len(changed) - len(pending)))
		if k := s.o.KillReplicaAfter; k > 0 && name == "rollout" && len(changed)-len(pending) >= k && !s.killed.Load() {
			s.killed.Store(true)
			s.killedAt.Store(int64(len(changed) - len(pending)))
			s.phase.Store(fmt.Sprintf("%s (replica %d killed)", name, s.o.KillReplica))
			if err := s.o.ControlPlane.Kill(s.o.KillReplica); err != nil {
				s.o.Logger.Error("kill replica", "replica", s.o.KillReplica, "err", err)
			}
		}
		return len(pending) == 0, fmt.Sprintf("%d/%d converged", len(changed)-len(pending), len(changed))
	})
	if err != nil {
		return ph, err
	}
	var converge, pickup []time.Duration
	firsts := map[string]time.Time{}
	for _, st := range changed {
		first, last := st.hv.Times()
		converge = append(converge, last.Sub(t0))
		firsts[st.name] = first
	}
	ph.Converge = distribution(converge)
	if s.o.ControlPlane.Store != nil {
		plans, err := s.o.ControlPlane.Store.ListPlans(ctx, Tenant, store.PlanFilter{Commit: sha, RepoID: s.repoID, Limit: 4*len(changed) + 100})
		if err != nil {
			return ph, fmt.Errorf("%s: list plans: %w", name, err)
		}
		stored := map[string]time.Time{}
		for _, p := range plans {
			if t, ok := stored[p.Plan.Site]; !ok || p.CreatedAt.Before(t) {
				stored[p.Plan.Site] = p.CreatedAt
			}
		}
		var last time.Time
		for site, t := range stored {
			if t.After(last) {
				last = t
			}
			if f := firsts[site]; !f.IsZero() {
				pickup = append(pickup, f.Sub(t))
			}
		}
		ph.PlansStored = len(stored)
		if !last.IsZero() {
			ph.CommitToPlansStored = Seconds(last.Sub(t0).Seconds())
		}
		ph.Pickup = distribution(pickup)
	}
	err = s.waitFor(ctx, name+": nkudo/apply final on "+sha[:12], func() (bool, string) {
		st := s.sink.state(sha, "nkudo/apply")
		return st != "" && st != "pending", "nkudo/apply=" + st
	})
	ph.Apply = s.sink.state(sha, "nkudo/apply")
	ph.ApplyFinal = Seconds(time.Since(t0).Seconds())
	return ph, err
}

// planChecks counts, for every phase's commit, the stored plans computed
// twice for the same site and inventory version, and the final
// nkudo/apply statuses each commit got.
func (s *sim) planChecks(ctx context.Context, rep *Report) error {
	for i := range rep.Phases {
		ph := &rep.Phases[i]
		ph.ApplyFinals = s.sink.finals(ph.Commit, "nkudo/apply")
		plans, err := s.o.ControlPlane.Store.ListPlans(ctx, Tenant, store.PlanFilter{Commit: ph.Commit, RepoID: s.repoID, Limit: 4*s.o.Sites + 100})
		if err != nil {
			return fmt.Errorf("list plans of %s: %w", ph.Commit, err)
		}
		seen := map[string]string{}
		for _, p := range plans {
			k := fmt.Sprintf("%s@%d", p.Plan.Site, p.Plan.InventoryVersion)
			if other, ok := seen[k]; ok {
				rep.DuplicatePlans = append(rep.DuplicatePlans, fmt.Sprintf("%s: commit %s, inventory version %d: plans %s and %s",
					p.Plan.Site, ph.Commit[:12], p.Plan.InventoryVersion, other, p.Plan.ID))
				continue
			}
			seen[k] = p.Plan.ID
		}
	}
	return nil
}
