package reconciler

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
)

// taskQueue holds the tasks waiting for a worker. It coalesces by key (the
// latest trigger of a repository wins; drift sites merge), hands tasks out
// by tenant in turn (round-robin), and never runs two tasks of one
// repository, nor more than perTenant tasks of one tenant, at once: a
// tenant whose repository is stuck in a slow fetch or load holds at most
// perTenant workers, and the others go on serving the other tenants.
// It is the loop's one queue: webhooks, polls, manual triggers and drift
// all push into it, and it is bounded: a task with a new key is refused
// once max tasks wait (one already waiting with its key still merges).
type taskQueue struct {
	perTenant int
	max       int
	// wake is signalled when a task may have become runnable.
	wake chan struct{}

	mu       sync.Mutex
	tasks    map[string]*task    // coalescing key → waiting task
	byTenant map[string][]string // tenant → keys of its waiting tasks, oldest first
	turn     []string            // tenants with waiting tasks; the next served first
	running  map[string]int      // tenant → tasks running
	busy     map[string]bool     // repository ID → one of its tasks running
}

func newTaskQueue(perTenant, size int) *taskQueue {
	return &taskQueue{
		perTenant: max(perTenant, 1),
		max:       cmp.Or(max(size, 0), DefaultQueueSize),
		wake:      make(chan struct{}, 1),
		tasks:     map[string]*task{},
		byTenant:  map[string][]string{},
		running:   map[string]int{},
		busy:      map[string]bool{},
	}
}

func taskKey(t *task) string {
	key := string(t.kind) + "/" + t.repoID
	if t.kind == taskPreview {
		key = fmt.Sprintf("%s#%d", key, t.pr)
	}
	return key
}

// push queues t, or merges it into the waiting task with its key. It is
// false when t was refused: the queue is full and nothing waits with t's key.
func (q *taskQueue) push(t *task) bool {
	key := taskKey(t)
	q.mu.Lock()
	if old, ok := q.tasks[key]; ok {
		if t.kind == taskDrift {
			for s := range t.sites {
				old.sites[s] = true
			}
		} else if t.refresh {
			// A re-preview never replaces a waiting preview, which may be
			// of a newer head and is as fresh.
		} else {
			*old = *t // the latest ref or head wins
		}
	} else {
		if len(q.tasks) >= q.max {
			q.mu.Unlock()
			return false
		}
		q.tasks[key] = t
		if len(q.byTenant[t.tenant]) == 0 {
			q.turn = append(q.turn, t.tenant)
		}
		q.byTenant[t.tenant] = append(q.byTenant[t.tenant], key)
	}
	q.mu.Unlock()
	q.signal()
	return true
}

// waiting is how many tasks wait for a worker.
func (q *taskQueue) waiting() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.tasks)
}

// pop takes the next runnable task: from the first tenant in turn that is
// under its limit, its oldest task whose repository is idle. That tenant
// then goes to the back of the turn. nil when nothing can run now.
func (q *taskQueue) pop() *task {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, tenant := range q.turn {
		if q.running[tenant] >= q.perTenant {
			continue
		}
		keys := q.byTenant[tenant]
		for j, key := range keys {
			t := q.tasks[key]
			if q.busy[t.repoID] {
				continue
			}
			delete(q.tasks, key)
			keys = slices.Delete(keys, j, j+1)
			q.turn = slices.Delete(q.turn, i, i+1)
			if len(keys) == 0 {
				delete(q.byTenant, tenant)
			} else {
				q.byTenant[tenant] = keys
				q.turn = append(q.turn, tenant)
			}
			q.running[tenant]++
			q.busy[t.repoID] = true
			if len(q.tasks) > 0 {
				// Another worker may take one of the rest now.
				q.signal()
			}
			return t
		}
	}
	return nil
}

// done marks a task popped earlier as finished.
func (q *taskQueue) done(t *task) {
	q.mu.Lock()
	delete(q.busy, t.repoID)
	if q.running[t.tenant]--; q.running[t.tenant] <= 0 {
		delete(q.running, t.tenant)
	}
	q.mu.Unlock()
	q.signal() // a task of this tenant or repository may be waiting for it
}

func (q *taskQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}
