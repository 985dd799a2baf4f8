package reconciler

import (
	"context"
	"errors"

	"github.com/nkudo/nkudo/store"
)

// Accepted reconcile requests outlive the replica that accepted them.
// Trigger records each one in the store before queueing it; a reconcile
// reads the count when it takes the repository's lease and, once the
// attempt finishes (whatever its outcome), records that it covered that
// many. A replica killed between the two leaves the request pending, and
// every replica's apply loop adopts the pending requests whose reconcile
// lease is free (released, or expired with its dead holder): the queue
// coalesces them and the lease lets one replica reconcile. Adoption
// reconciles the branch head, as a poll does.

// adoptedTrigger is the trigger of a reconcile queued by adoption.
const adoptedTrigger = "adopted"

// recordRequest makes an accepted request durable. A store failure is
// logged, not returned: the request is still queued here, only not
// protected against this replica's death.
func (r *Reconciler) recordRequest(ctx context.Context, tenant, repoID string) {
	if err := r.store.RequestReconcile(ctx, tenant, repoID); err != nil {
		r.log.Warn("record reconcile request (queued, but lost if this replica dies)", "tenant", tenant, "repo", repoID, "err", err)
	}
}

// startRequests is called by a reconcile holding the repository's lease;
// the returned function, called with the reconcile's error when it ends,
// records the requests seen at the start as handled. A reconcile cut
// short (shutdown, lease lost) leaves them pending for adoption, and a
// request that arrived meanwhile stays pending as well.
func (r *Reconciler) startRequests(ctx context.Context, repoID string) func(error) {
	seq, err := r.store.ReconcileRequested(ctx, repoID)
	if err != nil {
		r.log.Warn("read reconcile requests", "repo", repoID, "err", err)
		return func(error) {}
	}
	return func(rerr error) {
		if seq == 0 || ctx.Err() != nil || errors.Is(rerr, store.ErrLeaseLost) {
			return
		}
		if err := r.store.ReconcileHandled(context.WithoutCancel(ctx), repoID, seq); err != nil {
			r.log.Warn("record reconcile request handled", "repo", repoID, "err", err)
		}
	}
}

// adoptRequests queues a reconcile of every repository with requests no
// finished attempt covered and no live lease holder, unless one is waiting
// in this replica's queue already (which may name a ref).
func (r *Reconciler) adoptRequests(ctx context.Context) {
	reqs, err := r.store.PendingReconciles(ctx, leaseName(""))
	if err != nil {
		if ctx.Err() == nil {
			r.log.Error("adopt reconcile requests", "err", err)
		}
		return
	}
	for _, q := range reqs {
		t := &task{kind: taskReconcile, tenant: q.Tenant, repoID: q.RepoID, trigger: adoptedTrigger}
		if r.queue.has(taskKey(t)) {
			continue
		}
		if r.enqueue(t) {
			r.log.Info("adopting a reconcile request no replica finished", "tenant", q.Tenant, "repo", q.RepoID, "requested", q.Requested, "handled", q.Handled)
		}
	}
}

// adoptedDone reports whether an adopted reconcile found its requests
// handled by the time a worker took it (another replica adopted them
// first): then it has nothing to do.
func (r *Reconciler) adoptedDone(ctx context.Context, t *task) bool {
	if t.trigger != adoptedTrigger {
		return false
	}
	reqs, err := r.store.PendingReconciles(ctx, leaseName(""))
	if err != nil {
		return false
	}
	for _, q := range reqs {
		if q.RepoID == t.repoID {
			return false
		}
	}
	return true
}

// has reports whether a task with key waits.
func (q *taskQueue) has(key string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, ok := q.tasks[key]
	return ok
}
