package reconciler

import "context"

// WaitComments waits until the plan comment writers of a repository have
// nothing left to write, so a test can assert what a preview did not write.
func (r *Reconciler) WaitComments(repoID string) {
	rr, _ := r.reporters.get(repoID)
	if rr == nil {
		return
	}
	for _, c := range rr.comments {
		<-c.Idle()
	}
}

// RefreshDue runs one tick of the loop that re-previews open pull requests.
func (r *Reconciler) RefreshDue(ctx context.Context) { r.refreshDue(ctx) }

// DrainQueue runs the queued tasks in the calling goroutine until none is
// left (for tests that do not start Run), and says how many ran, by kind.
func (r *Reconciler) DrainQueue(ctx context.Context) map[string]int {
	ran := map[string]int{}
	for {
		t := r.queue.pop()
		if t == nil {
			return ran
		}
		_ = r.runTask(ctx, t)
		r.queue.done(t)
		ran[string(t.kind)]++
	}
}
