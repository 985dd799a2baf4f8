package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/store"
)

// testLeaseFence checks fenced writes (store.WithLease): a write whose
// lease is held goes through; once the lease expired and another holder
// took it, or expired with no one taking it, every fenced write fails with
// ErrLeaseLost and stores nothing (plans, desired state, applied commit),
// so the replica that stalled cannot overwrite the new holder's work.
func testLeaseFence(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	r, err := s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "r1", URL: "u1"}, "")
	must(t, err)
	const name = "reconcile/r1"
	ok, err := s.AcquireLease(ctx, name, "replica-a", time.Minute)
	must(t, err)
	if !ok {
		t.Fatal("first acquire failed")
	}
	ctxA := store.WithLease(ctx, store.Lease{Name: name, Holder: "replica-a"})
	ctxB := store.WithLease(ctx, store.Lease{Name: name, Holder: "replica-b"})

	// Held: the fenced writes go through.
	pA1, pB1 := plan(tenantA, siteA, "a1", "vm-a"), plan(tenantA, siteB, "a1", "vm-b")
	res, err := s.RecordSitePlans(ctxA, admin, tenantA, r.ID, []store.SitePlanRecord{
		{Desired: store.SiteDesired{Site: siteA, Hash: "a1", Commit: "c1", UpdatedAt: epoch}, Plan: &pA1},
		{Desired: store.SiteDesired{Site: siteB, Hash: "b1", Commit: "c1", UpdatedAt: epoch}, Plan: &pB1},
	}, epoch)
	must(t, err)
	if !res[0].Stored || !res[1].Stored {
		t.Fatalf("fenced write with the lease held: %+v, want both stored", res)
	}
	must(t, s.MarkCommitApplied(ctxA, admin, tenantA, r.ID, "c1", epoch))

	// replica-a stalls past its lease; replica-b takes it over and writes.
	ok, err = s.RenewLease(ctx, name, "replica-a", 100*time.Millisecond)
	must(t, err)
	if !ok {
		t.Fatal("renew of a held lease failed")
	}
	waitFor(t, "replica-b to take over the expired lease", func() bool {
		ok, err := s.AcquireLease(ctx, name, "replica-b", time.Minute)
		must(t, err)
		return ok
	})
	pA2 := plan(tenantA, siteA, "b2", "vm-a", "vm-b2")
	_, err = s.RecordSitePlans(ctxB, admin, tenantA, r.ID, []store.SitePlanRecord{
		{Desired: store.SiteDesired{Site: siteA, Hash: "a2", Commit: "c2", UpdatedAt: epoch.Add(second)}, Plan: &pA2},
	}, epoch.Add(second))
	must(t, err)
	must(t, s.MarkCommitApplied(ctxB, admin, tenantA, r.ID, "c2", epoch.Add(second)))

	want := func(stage string) {
		t.Helper()
		list, err := s.SiteDesired(ctx, tenantA, r.ID)
		must(t, err)
		wantList := map[string]store.SiteDesired{
			siteA: {Site: siteA, Hash: "a2", Commit: "c2", UpdatedAt: epoch.Add(second), Documented: true},
			siteB: {Site: siteB, Hash: "b1", Commit: "c1", UpdatedAt: epoch, Documented: true},
		}
		if diff := cmp.Diff(wantList, list); diff != "" {
			t.Errorf("%s: desired state (-want +got):\n%s", stage, diff)
		}
		for site, id := range map[string]string{siteA: pA2.ID, siteB: pB1.ID} {
			if ap, err := s.ActivePlan(ctx, tenantA, site); err != nil || ap.Plan.ID != id {
				t.Errorf("%s: active plan of %s = %q (%v), want %s", stage, site, ap.Plan.ID, err, id)
			}
		}
		if got, err := s.GetRepository(ctx, tenantA, r.ID); err != nil || got.LastAppliedCommit != "c2" {
			t.Errorf("%s: last applied commit = %q (%v), want c2", stage, got.LastAppliedCommit, err)
		}
	}
	want("after the takeover")

	// replica-a wakes up and writes an older commit's plans: refused, nothing stored.
	stale := func(stage string, c context.Context) {
		t.Helper()
		pOld := plan(tenantA, siteA, "old-"+stage, "vm-a", "vm-old")
		_, err := s.RecordSitePlans(c, admin, tenantA, r.ID, []store.SitePlanRecord{
			{Desired: store.SiteDesired{Site: siteA, Hash: "old", Commit: "c0", UpdatedAt: epoch}, Plan: &pOld},
			{Desired: store.SiteDesired{Site: siteB, Hash: "old", Commit: "c0", UpdatedAt: epoch}},
		}, epoch)
		wantErr(t, err, store.ErrLeaseLost)
		_, err = s.RecordSitePlan(c, admin, tenantA, r.ID, store.SiteDesired{Site: siteA, Hash: "old", Commit: "c0"}, &pOld, epoch)
		wantErr(t, err, store.ErrLeaseLost)
		wantErr(t, s.SetSiteDesired(c, tenantA, r.ID, store.SiteDesired{Site: siteB, Hash: "old", Commit: "c0"}), store.ErrLeaseLost)
		_, err = s.SupersedeActivePlan(c, admin, tenantA, siteA, "c0", "stale", epoch)
		wantErr(t, err, store.ErrLeaseLost)
		wantErr(t, s.MarkCommitApplied(c, admin, tenantA, r.ID, "c0", epoch), store.ErrLeaseLost)
		want(stage)
	}
	stale("taken over", ctxA)

	// Released: the same.
	must(t, s.ReleaseLease(ctx, name, "replica-b"))
	stale("released", ctxB)

	// Expired with nobody taking it over: the lease's holder may not write
	// either (another replica may take it at any moment).
	ok, err = s.AcquireLease(ctx, name, "replica-b", time.Millisecond)
	must(t, err)
	if !ok {
		t.Fatal("acquire of a free lease failed")
	}
	waitFor(t, "the lease to expire", func() bool {
		// Writes what is already there until refused.
		err := s.MarkCommitApplied(ctxB, admin, tenantA, r.ID, "c2", epoch.Add(second))
		if err != nil && !errors.Is(err, store.ErrLeaseLost) {
			t.Fatal(err)
		}
		return err != nil
	})
	stale("expired", ctxB)
}
