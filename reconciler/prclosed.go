package reconciler

import (
	"context"
	"errors"

	"github.com/nkudo/nkudo/store"
)

// Closed pull requests: the mark lives in the store with the previews, so
// a preview queued before the close, run after a restart, still leaves
// the "closed" comment alone. The reconciler's closedPRs map only spares
// the store a read.

// recordClosed stores that a pull request was closed or merged. A pull
// request never previewed has no stored preview and no comment to keep.
func (r *Reconciler) recordClosed(ctx context.Context, repo store.Repository, pr int, merged bool) {
	state := store.PreviewClosed
	if merged {
		state = store.PreviewMerged
	}
	r.labels.forget(prKey(repo.ID, pr))
	err := r.store.SetPreviewState(ctx, repo.Tenant, repo.ID, pr, state)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		r.log.Error("record closed pull request", "repo", repo.ID, "pr", pr, "err", err)
	}
}

// reopenPreview marks a pull request open again in the store (a reopen,
// or a push to a pull request recorded closed).
func (r *Reconciler) reopenPreview(ctx context.Context, tenant, repoID string, pr int) {
	p, err := r.store.GetPreview(ctx, tenant, repoID, pr)
	if err != nil || p.State == store.PreviewOpen {
		return
	}
	if err := r.store.SetPreviewState(ctx, tenant, repoID, pr, store.PreviewOpen); err != nil && !errors.Is(err, store.ErrNotFound) {
		r.log.Error("record reopened pull request", "repo", repoID, "pr", pr, "err", err)
	}
}

// previewClosedInStore reports whether the store records the pull request
// as closed or merged.
func (r *Reconciler) previewClosedInStore(ctx context.Context, repo store.Repository, pr int) bool {
	p, err := r.store.GetPreview(ctx, repo.Tenant, repo.ID, pr)
	return err == nil && p.State != store.PreviewOpen && p.State != ""
}
