package reconciler_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/forge/forgetest"
	"github.com/nkudo/nkudo/internal/egress"
	"github.com/nkudo/nkudo/internal/pgtest"
	"github.com/nkudo/nkudo/reconciler"
	"github.com/nkudo/nkudo/reconciler/gittest"
	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/postgres"
)

// blockingStore holds its first plan write until the writer's context
// ends, as a write stuck behind a database lock holds a replica that is
// asked to stop.
type blockingStore struct {
	store.Store
	once    sync.Once
	reached chan struct{}
}

func (s *blockingStore) RecordSitePlans(ctx context.Context, actor store.Actor, tenant, repoID string, recs []store.SitePlanRecord, now time.Time) ([]store.SitePlanResult, error) {
	first := false
	s.once.Do(func() { first = true })
	if first {
		close(s.reached)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return s.Store.RecordSitePlans(ctx, actor, tenant, repoID, recs, now)
}

// pgReplicaEnv is a repository of three sites on a throw-away Postgres,
// and a way to open more connection pools on it, one per replica.
func pgReplicaEnv(t *testing.T) (*env, func() store.Store) {
	url := pgtest.URL(t)
	open := func() store.Store {
		st, err := postgres.Open(t.Context(), url, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	ctx := t.Context()
	e := &env{t: t, st: open(), git: gittest.New(t), forge: forgetest.New(t)}
	if _, err := e.st.CreateTenant(ctx, admin, store.Tenant{ID: tenant}); err != nil {
		t.Fatal(err)
	}
	for _, s := range threeSites {
		if _, err := e.st.CreateSite(ctx, admin, tenant, s); err != nil {
			t.Fatal(err)
		}
	}
	repo, err := e.st.CreateRepository(ctx, admin, store.Repository{Tenant: tenant, Name: "fleet", URL: e.git.Remote, Branch: "main"}, "hook-secret")
	if err != nil {
		t.Fatal(err)
	}
	e.repo = repo
	return e, open
}

// adoptEnv is a repository of three sites on a throw-away Postgres, and a
// way to start replicas on it (each its own connection pool), all with
// polling off.
func adoptEnv(t *testing.T) (*env, func() store.Store, func(st store.Store, holder string) *reconciler.Reconciler) {
	e, open := pgReplicaEnv(t)
	newReplica := func(st store.Store, holder string) *reconciler.Reconciler {
		r, err := reconciler.New(reconciler.Options{
			Store: st, Holder: holder, DataDir: t.TempDir(), PublicURL: "https://cp.example.com",
			Logger: slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
			Writers: func(ctx context.Context, repo store.Repository) ([]forge.Writer, error) {
				w, err := forge.NewGitea(forge.GitHubOptions{BaseURL: e.forge.URL, Owner: "acme", Repo: "fleet"})
				return []forge.Writer{w}, err
			},
			Reporter:           forge.ReporterOptions{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, MaxAttempts: 1000},
			ApplyCheckInterval: 20 * time.Millisecond, DriftInterval: time.Hour, PollInterval: -1, AllowLocalSources: true,
			Egress: egress.Policy{Allow: egress.Loopback()},
			// No renewal comes during a test: a stuck replica's lease
			// lapses only when the test shortens it.
			LeaseTTL: time.Minute,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
		return r
	}
	return e, open, newReplica
}

// pendingRequests lists the repository's requests no finished reconcile
// covered, whoever holds its lease.
func pendingRequests(t *testing.T, st store.Store, repoID string) bool {
	t.Helper()
	reqs, err := st.PendingReconciles(t.Context(), "no-such-lease/")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range reqs {
		if q.RepoID == repoID {
			return true
		}
	}
	return false
}

// TestRequestOutlivesDeadReplica: replica a accepts a reconcile request
// and dies while storing the commit's plans, holding the repository's
// lease. Replica b, with polling off, never saw the request; once a's
// lease expires b adopts it from the store and reconciles the commit:
// every site gets its plan and the commit its nkudo/plan status.
func TestRequestOutlivesDeadReplica(t *testing.T) {
	e, open, newReplica := adoptEnv(t)
	ctx := t.Context()
	stA := &stallingStore{Store: open(), reached: make(chan struct{}), resume: make(chan struct{})}
	a := newReplica(stA, "replica-a")
	actx, stopA := context.WithCancel(ctx)
	aDone := make(chan struct{})
	go func() { a.Run(actx); close(aDone) }()
	// a's stuck worker is let go (its write refused: the lease is b's by
	// then) only when the test ends.
	t.Cleanup(func() { stopA(); close(stA.resume); <-aDone })

	e.git.Fleet("fleet", 3, 1)
	c1 := e.git.Commit("one VM per site")
	if res, err := a.Trigger(ctx, tenant, e.repo.ID, ""); err != nil || !res.Queued {
		t.Fatalf("trigger on replica a: %+v, %v", res, err)
	}
	<-stA.reached
	// a dies: its loops stop, its worker never comes back, and nothing
	// releases its lease.
	stopA()

	b := newReplica(open(), "replica-b")
	runLoop(t, b)
	// b leaves the commit alone while a's lease is live.
	for range 20 {
		time.Sleep(20 * time.Millisecond)
		if n := len(e.plans()); n != 0 {
			t.Fatalf("%d plans stored while replica a held the lease", n)
		}
	}
	if !pendingRequests(t, e.st, e.repo.ID) {
		t.Fatal("the accepted request is not recorded as pending")
	}
	// a's lease runs out, as a dead holder's does.
	if ok, err := e.st.RenewLease(ctx, "reconcile/"+e.repo.ID, "replica-a", time.Millisecond); err != nil || !ok {
		t.Fatalf("shorten replica a's lease: %v, %v", ok, err)
	}
	waitFor(t, "replica b to reconcile the commit a accepted", func() bool {
		return e.status(c1, forge.ContextPlan).State != ""
	})
	if st := e.status(c1, forge.ContextPlan); st.State != "success" {
		t.Errorf("nkudo/plan of %s: %+v, want success", c1, st)
	}
	if n := len(e.plans()); n != len(threeSites) {
		t.Errorf("%d plans stored, want %d", n, len(threeSites))
	}
	waitFor(t, "the request to be handled", func() bool { return !pendingRequests(t, e.st, e.repo.ID) })
}

// TestShutdownReleasesReconcileLease: a replica asked to stop in the
// middle of a reconcile releases the repository's lease on its way out
// (another replica need not wait for it to expire) and leaves the request
// pending, since the attempt did not finish; another replica adopts it at
// once.
func TestShutdownReleasesReconcileLease(t *testing.T) {
	e, open, newReplica := adoptEnv(t)
	ctx := t.Context()
	stA := &blockingStore{Store: open(), reached: make(chan struct{})}
	a := newReplica(stA, "replica-a")
	actx, stopA := context.WithCancel(ctx)
	aDone := make(chan struct{})
	go func() { a.Run(actx); close(aDone) }()
	t.Cleanup(func() { stopA(); <-aDone })

	e.git.Fleet("fleet", 3, 1)
	c1 := e.git.Commit("one VM per site")
	if res, err := a.Trigger(ctx, tenant, e.repo.ID, ""); err != nil || !res.Queued {
		t.Fatalf("trigger on replica a: %+v, %v", res, err)
	}
	<-stA.reached
	stopA()
	<-aDone
	if !pendingRequests(t, e.st, e.repo.ID) {
		t.Fatal("a reconcile cut short by shutdown marked its request handled")
	}
	reqs, err := e.st.PendingReconciles(ctx, "reconcile/")
	if err != nil {
		t.Fatal(err)
	}
	if len(reqs) != 1 {
		t.Fatalf("pending requests with a free lease: %+v; want the repository's (replica a released its lease)", reqs)
	}

	b := newReplica(open(), "replica-b")
	runLoop(t, b)
	waitFor(t, "replica b to reconcile the commit a accepted", func() bool {
		return e.status(c1, forge.ContextPlan).State == "success"
	})
	waitFor(t, "the request to be handled", func() bool { return !pendingRequests(t, e.st, e.repo.ID) })
}
