package reconciler

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func popAll(q *taskQueue) []string {
	var got []string
	for t := q.pop(); t != nil; t = q.pop() {
		got = append(got, t.repoID)
	}
	return got
}

// TestTaskQueueTakesTenantsInTurn: with no limit in the way, tasks are
// handed out one tenant after the other, each tenant's oldest first.
func TestTaskQueueTakesTenantsInTurn(t *testing.T) {
	q := newTaskQueue(10, 0)
	for i := range 4 {
		q.push(&task{kind: taskReconcile, tenant: "a", repoID: fmt.Sprintf("a%d", i)})
	}
	q.push(&task{kind: taskReconcile, tenant: "b", repoID: "b0"})
	q.push(&task{kind: taskReconcile, tenant: "c", repoID: "c0"})
	q.push(&task{kind: taskReconcile, tenant: "b", repoID: "b1"})
	want := []string{"a0", "b0", "c0", "a1", "b1", "a2", "a3"}
	if diff := cmp.Diff(want, popAll(q)); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
}

// TestTaskQueueLimitsTenantAndRepository: one running task per tenant by
// default, never two of one repository, and a finished task frees its
// tenant for the next.
func TestTaskQueueLimitsTenantAndRepository(t *testing.T) {
	q := newTaskQueue(0, 0) // the default: 1
	q.push(&task{kind: taskReconcile, tenant: "a", repoID: "a0"})
	q.push(&task{kind: taskReconcile, tenant: "a", repoID: "a1"})
	q.push(&task{kind: taskReconcile, tenant: "b", repoID: "b0"})
	first := q.pop()
	if diff := cmp.Diff([]string{"b0"}, popAll(q)); first.repoID != "a0" || diff != "" {
		t.Fatalf("while a0 runs: first %s, then (-want +got):\n%s", first.repoID, diff)
	}
	q.done(first)
	// A preview of a1's repository is another task of a busy repository.
	a1 := q.pop()
	q.push(&task{kind: taskPreview, tenant: "a", repoID: "a1", pr: 7})
	if got := q.pop(); a1 == nil || a1.repoID != "a1" || got != nil {
		t.Fatalf("after a0: popped %v then %v, want a1 then nothing", a1, got)
	}
	q.done(a1)
	if got := q.pop(); got == nil || got.kind != taskPreview || got.repoID != "a1" {
		t.Fatalf("after a1 finished: %v, want its preview", got)
	}
}

// TestTaskQueueCoalesces: a repository triggered again while it waits
// keeps one task (the latest ref), in its place; drift sites merge.
func TestTaskQueueCoalesces(t *testing.T) {
	q := newTaskQueue(1, 0)
	q.push(&task{kind: taskReconcile, tenant: "a", repoID: "a0", ref: "one"})
	q.push(&task{kind: taskReconcile, tenant: "b", repoID: "b0"})
	q.push(&task{kind: taskReconcile, tenant: "a", repoID: "a0", ref: "two"})
	q.push(&task{kind: taskDrift, tenant: "b", repoID: "b1", sites: map[string]bool{"s1": true}})
	q.push(&task{kind: taskDrift, tenant: "b", repoID: "b1", sites: map[string]bool{"s2": true}})
	a := q.pop()
	q.done(a)
	b := q.pop()
	q.done(b)
	d := q.pop()
	q.done(d)
	if rest := q.pop(); a.ref != "two" || b.repoID != "b0" || d.repoID != "b1" || len(d.sites) != 2 || rest != nil {
		t.Errorf("got %+v, %+v, %+v, %+v; want a0@two, b0, b1 with two sites, nothing more", a, b, d, rest)
	}
}

// TestTaskQueueBounded: once size tasks wait, a task with a new key is
// refused, while one with a waiting task's key still merges into it; a
// popped task makes room again.
func TestTaskQueueBounded(t *testing.T) {
	q := newTaskQueue(1, 2)
	for _, tc := range []struct {
		t    *task
		want bool
	}{
		{&task{kind: taskReconcile, tenant: "a", repoID: "a0", ref: "one"}, true},
		{&task{kind: taskPreview, tenant: "a", repoID: "a0", pr: 7}, true},
		{&task{kind: taskReconcile, tenant: "b", repoID: "b0"}, false},
		{&task{kind: taskPreview, tenant: "a", repoID: "a0", pr: 8}, false},
		{&task{kind: taskReconcile, tenant: "a", repoID: "a0", ref: "two"}, true},
	} {
		if got := q.push(tc.t); got != tc.want {
			t.Errorf("push %s %s#%d: %v, want %v", tc.t.kind, tc.t.repoID, tc.t.pr, got, tc.want)
		}
	}
	if n := q.waiting(); n != 2 {
		t.Errorf("%d tasks waiting, want 2", n)
	}
	first := q.pop()
	if first == nil || first.ref != "two" {
		t.Fatalf("popped %+v, want a0's reconcile at the latest ref", first)
	}
	if !q.push(&task{kind: taskReconcile, tenant: "b", repoID: "b0"}) {
		t.Error("a task was refused with room in the queue")
	}
}
