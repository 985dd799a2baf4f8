package storetest

import (
	"testing"
	"time"

	"github.com/nkudo/nkudo/store"
)

// testReconcileRequests: a request stays pending until an attempt that
// covered it finishes, is hidden while the repository's lease is held, and
// shows again once that lease expires (its holder died).
func testReconcileRequests(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	repo, err := s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "r", URL: "u"}, "")
	must(t, err)
	const prefix = "reconcile/"
	pending := func() []store.ReconcileRequest {
		t.Helper()
		p, err := s.PendingReconciles(ctx, prefix)
		must(t, err)
		return p
	}
	if p := pending(); len(p) != 0 {
		t.Fatalf("pending before any request: %+v", p)
	}
	if n, err := s.ReconcileRequested(ctx, repo.ID); err != nil || n != 0 {
		t.Fatalf("requested before any request: %d, %v", n, err)
	}
	if err := s.RequestReconcile(ctx, "", repo.ID); err == nil {
		t.Error("a request without a tenant was accepted")
	}
	must(t, s.RequestReconcile(ctx, tenantA, repo.ID))
	must(t, s.RequestReconcile(ctx, tenantA, repo.ID))
	seq, err := s.ReconcileRequested(ctx, repo.ID)
	must(t, err)
	if seq != 2 {
		t.Fatalf("requested = %d, want 2", seq)
	}
	if p := pending(); len(p) != 1 || p[0].RepoID != repo.ID || p[0].Tenant != tenantA || p[0].Requested != 2 || p[0].Handled != 0 {
		t.Fatalf("pending = %+v, want the repository with 2 requests", p)
	}

	// A live holder of the lease is on it: not pending.
	ok, err := s.AcquireLease(ctx, prefix+repo.ID, "replica-a", 300*time.Millisecond)
	must(t, err)
	if !ok {
		t.Fatal("acquire lease")
	}
	if p := pending(); len(p) != 0 {
		t.Fatalf("pending while the lease is held: %+v", p)
	}
	// The holder dies: once its lease expires the request is pending again.
	waitFor(t, "the request to be pending after the lease expired", func() bool { return len(pending()) == 1 })

	// An attempt covering the first request leaves the second pending; one
	// covering both clears it; an older count never moves it back.
	must(t, s.ReconcileHandled(ctx, repo.ID, 1))
	if p := pending(); len(p) != 1 || p[0].Handled != 1 {
		t.Fatalf("pending after handling 1 of 2: %+v", p)
	}
	must(t, s.ReconcileHandled(ctx, repo.ID, 2))
	must(t, s.ReconcileHandled(ctx, repo.ID, 1))
	if p := pending(); len(p) != 0 {
		t.Fatalf("pending after handling both: %+v", p)
	}
	// A new request after that is pending again.
	must(t, s.RequestReconcile(ctx, tenantA, repo.ID))
	if p := pending(); len(p) != 1 || p[0].Requested != 3 || p[0].Handled != 2 {
		t.Fatalf("pending after a third request: %+v", p)
	}
	// A released lease does not hide it either.
	must2(s.AcquireLease(ctx, prefix+repo.ID, "replica-b", time.Minute))(t)
	must(t, s.ReleaseLease(ctx, prefix+repo.ID, "replica-b"))
	if p := pending(); len(p) != 1 {
		t.Fatalf("pending after the lease was released: %+v", p)
	}
}
