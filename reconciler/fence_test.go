package reconciler_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/internal/egress"
	"github.com/nkudo/nkudo/reconciler"
	"github.com/nkudo/nkudo/store"
)

// stallingStore freezes its first plan write until resume is closed, as a
// GC pause or a partition from the database freezes a replica between
// planning and storing.
type stallingStore struct {
	store.Store
	once            sync.Once
	reached, resume chan struct{}
}

func (s *stallingStore) RecordSitePlans(ctx context.Context, actor store.Actor, tenant, repoID string, recs []store.SitePlanRecord, now time.Time) ([]store.SitePlanResult, error) {
	s.once.Do(func() {
		close(s.reached)
		<-s.resume
	})
	return s.Store.RecordSitePlans(ctx, actor, tenant, repoID, recs, now)
}

// TestReplicaStalledPastLeaseStoresNothing: two reconcilers on one
// Postgres. Replica a plans commit c1 and stalls before storing it, long
// enough for its repository lease to expire (its renewal never came);
// replica b takes the lease over and stores the newer commit c2. When a
// wakes up, the store refuses its late write of c1: a's reconcile ends
// with ErrLeaseLost (a handover, not a failure: no lastError, no failure
// status), and every site keeps c2's plan and desired state.
func TestReplicaStalledPastLeaseStoresNothing(t *testing.T) {
	e, open := pgReplicaEnv(t)
	ctx := t.Context()
	stA := &stallingStore{Store: e.st, reached: make(chan struct{}), resume: make(chan struct{})}
	repo := e.repo
	var err error
	newReplica := func(st store.Store, holder string) *reconciler.Reconciler {
		o := reconciler.Options{
			DataDir: t.TempDir(), PublicURL: "https://cp.example.com",
			Logger: slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
			Writers: func(ctx context.Context, repo store.Repository) ([]forge.Writer, error) {
				w, err := forge.NewGitea(forge.GitHubOptions{BaseURL: e.forge.URL, Owner: "acme", Repo: "fleet"})
				return []forge.Writer{w}, err
			},
			Reporter:           forge.ReporterOptions{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, MaxAttempts: 1000},
			ApplyCheckInterval: 20 * time.Millisecond, DriftInterval: time.Hour, PollInterval: -1, AllowLocalSources: true,
			Egress: egress.Policy{Allow: egress.Loopback()},
		}
		// A renewal every 20s: none comes during the test, as none comes
		// from a stalled process.
		o.Store, o.Holder, o.LeaseTTL = st, holder, time.Minute
		r, err := reconciler.New(o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
		return r
	}
	a, b := newReplica(stA, "replica-a"), newReplica(open(), "replica-b")

	e.git.Fleet("fleet", 3, 1)
	c1 := e.git.Commit("one VM per site")
	e.git.Fleet("fleet", 3, 2)
	c2 := e.git.Commit("two VMs per site")

	errA := make(chan error, 1)
	go func() {
		_, err := a.Reconcile(ctx, repo, c1)
		errA <- err
	}()
	<-stA.reached
	// a stalls past its lease: it expires without a renewal.
	if ok, err := e.st.RenewLease(ctx, "reconcile/"+repo.ID, "replica-a", time.Millisecond); err != nil || !ok {
		t.Fatalf("shorten replica a's lease: %v, %v", ok, err)
	}
	var resB reconciler.Result
	waitFor(t, "replica b to take the repository over", func() bool {
		var err error
		resB, err = b.Reconcile(ctx, repo, "")
		if err != nil {
			t.Fatalf("replica b: %v", err)
		}
		return !resB.Skipped
	})
	if resB.Commit != c2 || len(resB.Stored) != len(threeSites) {
		t.Fatalf("replica b reconciled %s storing %d plans, want %s storing %d", resB.Commit, len(resB.Stored), c2, len(threeSites))
	}

	close(stA.resume)
	err = <-errA
	var re *reconciler.Error
	if !errors.Is(err, store.ErrLeaseLost) || !errors.As(err, &re) || re.Reason != reconciler.ReasonLeaseLost {
		t.Fatalf("replica a's late reconcile: %v, want ErrLeaseLost as ReasonLeaseLost", err)
	}
	if _, ok := re.LastError(); ok {
		t.Error("a lease lost to another replica records a lastError")
	}

	want := map[string]string{}
	for _, p := range resB.Stored {
		want[p.Site] = p.ID
	}
	desired, err := e.st.SiteDesired(ctx, tenant, repo.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, site := range threeSites {
		ap, err := e.st.ActivePlan(ctx, tenant, site)
		if err != nil || ap.Plan.ID != want[site] || ap.Plan.Commit != c2 {
			t.Errorf("active plan of %s = %s of %s (%v), want replica b's %s of %s", site, ap.Plan.ID, ap.Plan.Commit, err, want[site], c2)
		}
		if d := desired[site]; d.Commit != c2 {
			t.Errorf("desired state of %s from commit %q, want %s", site, d.Commit, c2)
		}
	}
	plans, err := e.st.ListPlans(ctx, tenant, store.PlanFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range plans {
		if p.Plan.Commit == c1 {
			t.Errorf("plan %s of the stalled replica's commit %s was stored", p.Plan.ID, c1)
		}
	}
	got, err := e.st.GetRepository(ctx, tenant, repo.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.LastAppliedCommit != c2 || got.LastError != "" {
		t.Errorf("repository: applied %q, lastError %q; want %s and none", got.LastAppliedCommit, got.LastError, c2)
	}
	for _, s := range e.forge.Statuses(c1) {
		if s.State == "failure" || s.State == "error" {
			t.Errorf("status %s %s on the stalled replica's commit: %q", s.Context, s.State, s.Description)
		}
	}
}
