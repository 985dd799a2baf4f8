package reconciler

// WaitComments waits until the plan comment writers of a repository have
// nothing left to write, so a test can assert what a preview did not write.
func (r *Reconciler) WaitComments(repoID string) {
	r.mu.Lock()
	rr := r.reporters[repoID]
	r.mu.Unlock()
	if rr == nil {
		return
	}
	for _, c := range rr.comments {
		<-c.Idle()
	}
}
