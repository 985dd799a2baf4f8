package reconciler

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
