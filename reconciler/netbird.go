package reconciler

import (
	"context"
	"slices"

	"github.com/go-git/go-git/v5/plumbing"
)

// DesiredNetBirdGroups implements the NetBird sync's desired-state hook:
// the NetBird groups the last applied commit gives a site. ok is false
// when that is not known here (no applied commit, not fetched on this
// replica) or the Site has no netbird section: its peer is left alone.
func (r *Reconciler) DesiredNetBirdGroups(ctx context.Context, tenant, site string) ([]string, bool, error) {
	repoID, err := r.repoOfSite(ctx, tenant, site)
	if err != nil || repoID == "" {
		return nil, false, err
	}
	repo, err := r.store.GetRepository(ctx, tenant, repoID)
	if err != nil {
		return nil, false, err
	}
	if repo.LastAppliedCommit == "" {
		return nil, false, nil
	}
	head := plumbing.NewHash(repo.LastAppliedCommit)
	m, err := r.mirrorFor(repo.ID, repo.URL)
	if err != nil {
		return nil, false, err
	}
	if _, err := m.repo.CommitObject(head); err != nil {
		return nil, false, nil
	}
	l, err := r.load(ctx, repo, head)
	if err != nil {
		return nil, false, err
	}
	for _, s := range l.desired.Sites {
		if s.Name == site && s.Spec.NetBird != nil {
			return slices.Clone(s.Spec.NetBird.Groups), true, nil
		}
	}
	return nil, false, nil
}
