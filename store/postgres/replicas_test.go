package postgres_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nkudo/nkudo/internal/pgtest"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/postgres"
)

var admin = store.Actor{Kind: store.ActorAdmin, ID: "test"}

// replicas opens n stores on one database, like n control-plane replicas.
func replicas(t *testing.T, n int) []*postgres.Store {
	t.Helper()
	url := pgtest.URL(t)
	var out []*postgres.Store
	for range n {
		s, err := postgres.Open(t.Context(), url, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		out = append(out, s)
	}
	return out
}

func seedSite(t *testing.T, s store.Store) {
	t.Helper()
	if _, err := s.CreateTenant(t.Context(), admin, store.Tenant{ID: "acme"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateSite(t.Context(), admin, "acme", "edge-1"); err != nil {
		t.Fatal(err)
	}
}

func testPlan(tag string) model.Plan {
	return model.Plan{ID: "plan-" + tag, Tenant: "acme", Site: "edge-1", Commit: tag,
		Actions: []model.Action{{ID: "act-" + tag, Operation: model.OpStart, VM: "vm-a", Reason: model.ReasonState}}}
}

func wait(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	case <-time.After(10 * time.Second):
		return false
	}
}

// A long-poll held by one replica returns when another replica stores a plan.
func TestReplicasWakeUp(t *testing.T) {
	r := replicas(t, 2)
	seedSite(t, r[0])
	ch, cancel := r[1].Subscribe(t.Context(), store.PlanTopic("acme", "edge-1"))
	defer cancel()
	if _, err := r[0].StorePlan(t.Context(), admin, testPlan("1"), "", time.Now()); err != nil {
		t.Fatal(err)
	}
	if !wait(ch) {
		t.Fatal("replica 1 not woken by a plan stored on replica 0")
	}
	logs, cancelLogs := r[1].Subscribe(t.Context(), store.LogTopic("plan-1"))
	defer cancelLogs()
	if _, err := r[0].AppendLogs(t.Context(), "acme", "edge-1", []store.LogLine{{PlanID: "plan-1", Seq: 1, Line: "x"}}); err != nil {
		t.Fatal(err)
	}
	if !wait(logs) {
		t.Fatal("replica 1 not woken by logs appended on replica 0")
	}
	// A batch of topics notified on replica 0 wakes each on replica 1.
	var batch []<-chan struct{}
	for i := range 3 {
		ch, cancel := r[1].Subscribe(t.Context(), fmt.Sprintf("batch/%d", i))
		defer cancel()
		batch = append(batch, ch)
	}
	if err := r[0].NotifyTopics(t.Context(), []string{"batch/0", "batch/1", "batch/2"}); err != nil {
		t.Fatal(err)
	}
	for i, ch := range batch {
		if !wait(ch) {
			t.Errorf("replica 1 not woken for batch/%d notified with others on replica 0", i)
		}
	}
}

// The listener reconnects after its connection is killed, wakes every
// subscriber (notifications may have been missed) and then works again.
func TestListenerReconnect(t *testing.T) {
	r := replicas(t, 2)
	seedSite(t, r[0])
	ch, cancel := r[1].Subscribe(t.Context(), store.PlanTopic("acme", "edge-1"))
	defer cancel()
	if err := r[0].ExecRaw(t.Context(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	if !wait(ch) {
		t.Fatal("subscriber not woken after the listener reconnected")
	}
	// Poll: the new LISTEN may take a moment; each round stores a new plan.
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		if _, err := r[0].StorePlan(t.Context(), admin, testPlan(string(rune('a'+i%26))+time.Now().Format("150405.000000")), "", time.Now()); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ch:
			return
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("cross-replica wake-ups did not resume after reconnect")
		}
	}
}

func TestReplicasLeaseAndDedupe(t *testing.T) {
	r := replicas(t, 2)
	seedSite(t, r[0])
	for round := range 5 {
		var wg sync.WaitGroup
		var mu sync.Mutex
		leases, stored := 0, 0
		p := testPlan(string(rune('a' + round)))
		for i, s := range r {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, err := s.AcquireLease(t.Context(), "repo/"+p.ID, string(rune('A'+i)), time.Minute)
				if err != nil {
					t.Error(err)
				}
				st, err := s.StorePlan(t.Context(), admin, p, "", time.Now())
				if err != nil {
					t.Error(err)
				}
				mu.Lock()
				defer mu.Unlock()
				if ok {
					leases++
				}
				if st {
					stored++
				}
			}()
		}
		wg.Wait()
		if leases != 1 || stored != 1 {
			t.Errorf("round %d: %d replicas got the lease and %d stored the plan; want 1 and 1", round, leases, stored)
		}
	}
}

// Replicas racing to finish one commit's nkudo/apply, each with its own
// verdict: exactly one final status is written, and it is never replaced.
func TestReplicasFinalStatusOnce(t *testing.T) {
	r := replicas(t, 2)
	seedSite(t, r[0])
	repo, err := r[0].CreateRepository(t.Context(), admin, store.Repository{Tenant: "acme", Name: "fleet", URL: "https://git.example/fleet.git"}, "")
	if err != nil {
		t.Fatal(err)
	}
	for round := range 5 {
		commit := fmt.Sprintf("c%d", round)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var winners []string
		for i := range 8 {
			s := r[i%2]
			wg.Add(1)
			go func() {
				defer wg.Done()
				state := store.StateSuccess
				if i%3 == 0 {
					state = store.StateFailure
				}
				desc := fmt.Sprintf("verdict of writer %d", i)
				// Each writer tracked the commit (pending) before its verdict.
				if _, err := s.SetCommitStatusOnce(t.Context(), "acme", store.CommitStatus{RepoID: repo.ID, Commit: commit,
					Context: "nkudo/apply", State: store.StatePending, Description: "0 of 1 sites converged"}); err != nil {
					t.Error(err)
				}
				changed, err := s.SetCommitStatusOnce(t.Context(), "acme", store.CommitStatus{RepoID: repo.ID, Commit: commit,
					Context: "nkudo/apply", State: state, Description: desc})
				if err != nil {
					t.Error(err)
				}
				if changed {
					mu.Lock()
					winners = append(winners, desc)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		got, err := r[1].CommitStatuses(t.Context(), "acme", repo.ID, commit)
		if err != nil {
			t.Fatal(err)
		}
		if len(winners) != 1 || len(got) != 1 || got[0].Description != winners[0] {
			t.Errorf("round %d: final writes that won: %q; stored %+v; want exactly one, the stored one", round, winners, got)
		}
	}
}

// Replicas starting together migrate once; the others wait and find the schema current.
func TestConcurrentMigrate(t *testing.T) {
	url := pgtest.URL(t)
	const n = 4
	var wg sync.WaitGroup
	applied := make(chan int, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := postgres.Open(t.Context(), url, postgres.Options{})
			if err != nil {
				t.Error(err)
				return
			}
			defer s.Close()
			applied <- len(s.Applied())
		}()
	}
	wg.Wait()
	close(applied)
	migrated := 0
	for a := range applied {
		if a > 0 {
			migrated++
		}
	}
	if migrated != 1 {
		t.Errorf("%d of %d concurrent opens applied migrations, want 1", migrated, n)
	}
}
