package postgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nkudo/nkudo/internal/pgtest"
	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/postgres"
)

// TestFencedWriteHoldsOffTakeover: a fenced plan write that passed its
// lease check keeps the lease row locked until it commits, so a replica
// taking the expired lease over waits for it, and the write never lands
// after the takeover. Replica a's write is held up after its check (another
// transaction holds the site's row); its lease expires meanwhile; replica
// b's AcquireLease waits until a's write is done, then takes the lease,
// and a's next fenced write is refused.
func TestFencedWriteHoldsOffTakeover(t *testing.T) {
	ctx := t.Context()
	url := pgtest.URL(t)
	var r []*postgres.Store
	for range 2 {
		s, err := postgres.Open(ctx, url, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		r = append(r, s)
	}
	seedSite(t, r[0])
	repo, err := r[0].CreateRepository(ctx, admin, store.Repository{Tenant: "acme", Name: "fleet", URL: "u"}, "")
	if err != nil {
		t.Fatal(err)
	}
	const name = "reconcile/fleet"
	if ok, err := r[0].AcquireLease(ctx, name, "replica-a", 3*time.Second); err != nil || !ok {
		t.Fatalf("acquire: %v, %v", ok, err)
	}
	ctxA := store.WithLease(ctx, store.Lease{Name: name, Holder: "replica-a"})

	raw, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close(context.WithoutCancel(ctx)) })
	blocker, err := raw.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Released below; this is for a test that fails before.
	defer func() { _ = blocker.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := blocker.Exec(ctx, `SELECT 1 FROM sites WHERE tenant = 'acme' AND name = 'edge-1' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	waiting := func(n int) func() bool {
		return func() bool {
			var got int
			if err := blocker.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
				WHERE wait_event_type = 'Lock' AND datname = current_database()`).Scan(&got); err != nil {
				t.Fatal(err)
			}
			return got == n
		}
	}

	type written struct {
		res []store.SitePlanResult
		err error
	}
	aDone := make(chan written, 1)
	p := testPlan("a1")
	go func() {
		res, err := r[0].RecordSitePlans(ctxA, admin, "acme", repo.ID, []store.SitePlanRecord{
			{Desired: store.SiteDesired{Site: "edge-1", Hash: "h1", Commit: "a1"}, Plan: &p},
		}, time.Now())
		aDone <- written{res, err}
	}()
	waitFor(t, "replica a's write to pass its lease check and wait for the site", waiting(1))
	waitFor(t, "replica a's lease to expire", func() bool {
		var expired bool
		if err := blocker.QueryRow(ctx, `SELECT expires_at <= (extract(epoch from clock_timestamp()) * 1000000)::bigint
			FROM leases WHERE name = $1`, name).Scan(&expired); err != nil {
			t.Fatal(err)
		}
		return expired
	})
	bDone := make(chan error, 1)
	go func() {
		ok, err := r[1].AcquireLease(ctx, name, "replica-b", time.Minute)
		if err == nil && !ok {
			err = errors.New("expired lease not taken over")
		}
		bDone <- err
	}()
	waitFor(t, "replica b's takeover to wait for replica a's write", waiting(2))
	if err := blocker.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	a := <-aDone
	if a.err != nil || !a.res[0].Stored {
		t.Fatalf("replica a's write under way when its lease expired: %+v, %v; want stored", a.res, a.err)
	}
	if err := <-bDone; err != nil {
		t.Fatalf("replica b's takeover: %v", err)
	}
	p2 := testPlan("a2")
	_, err = r[0].RecordSitePlans(ctxA, admin, "acme", repo.ID, []store.SitePlanRecord{
		{Desired: store.SiteDesired{Site: "edge-1", Hash: "h2", Commit: "a2"}, Plan: &p2},
	}, time.Now())
	if !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("replica a's write after the takeover: %v, want ErrLeaseLost", err)
	}
	if ap, err := r[1].ActivePlan(ctx, "acme", "edge-1"); err != nil || ap.Plan.ID != p.ID {
		t.Errorf("active plan = %q (%v), want %s", ap.Plan.ID, err, p.ID)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
