package reconciler

import (
	"context"
	mrand "math/rand/v2"
	"sync"
	"time"
)

// pollSchedule says when each repository is polled next. Its zero value
// is ready: a repository it has not seen is due.
type pollSchedule struct {
	mu   sync.Mutex
	next map[string]time.Time // repo ID → its next poll
}

// due reports whether repoID is due at now and, if so, schedules its next
// poll one interval later, jittered ±10% so that repositories registered
// together do not all fetch in the same tick.
func (p *pollSchedule) due(repoID string, now time.Time, interval time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	next, ok := p.next[repoID]
	if ok && now.Before(next) {
		return false
	}
	jitter := time.Duration(mrand.Int64N(int64(interval)/5+1)) - interval/10
	if p.next == nil {
		p.next = map[string]time.Time{}
	}
	p.next[repoID] = now.Add(interval + jitter)
	return true
}

// retry makes repoID due again at once (its poll was not queued).
func (p *pollSchedule) retry(repoID string) {
	p.mu.Lock()
	delete(p.next, repoID)
	p.mu.Unlock()
}

func (r *Reconciler) pollLoop(ctx context.Context) {
	if r.opts.PollInterval < 0 {
		return
	}
	tick := min(max(r.opts.PollInterval/10, 100*time.Millisecond), 10*time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		r.pollDue(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *Reconciler) pollDue(ctx context.Context) {
	repos, err := r.store.ListAllRepositories(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Error("poll: list repositories", "err", err)
		}
		return
	}
	now := r.now()
	for _, repo := range repos {
		due := r.polls.due(repo.ID, now, r.opts.PollInterval)
		if due && !repo.Suspended && !r.enqueue(&task{kind: taskReconcile, tenant: repo.Tenant, repoID: repo.ID, trigger: "poll"}) {
			// The queue is full: polled again at the next tick.
			r.polls.retry(repo.ID)
		}
	}
}
