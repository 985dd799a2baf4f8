package storetest

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

// testRecentCommitStatuses: a repository's statuses across commits, most
// recently updated first, bounded, and scoped to the tenant and repository.
func testRecentCommitStatuses(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	r := mustGet(s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "r", URL: "u"}, ""))(t)
	r2 := mustGet(s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "r2", URL: "u2"}, ""))(t)
	set := func(repo, commit, context string, st store.StatusState, at int) {
		t.Helper()
		must2(s.SetCommitStatus(ctx, tenantA, store.CommitStatus{RepoID: repo, Commit: commit, Context: context, State: st, UpdatedAt: epoch.Add(time.Duration(at) * second)}))(t)
	}
	set(r.ID, "c1", "nkudo/validate", store.StateSuccess, 1)
	set(r.ID, "c1", "nkudo/plan", store.StateSuccess, 2)
	set(r.ID, "c2", "nkudo/validate", store.StateFailure, 3)
	set(r2.ID, "c9", "nkudo/validate", store.StateSuccess, 4)
	got := mustGet(s.RecentCommitStatuses(ctx, tenantA, r.ID, 0))(t)
	var order []string
	for _, cs := range got {
		order = append(order, cs.Commit+" "+cs.Context+" "+string(cs.State))
	}
	want := []string{"c2 nkudo/validate failure", "c1 nkudo/plan success", "c1 nkudo/validate success"}
	if diff := cmp.Diff(want, order); diff != "" {
		t.Errorf("RecentCommitStatuses (-want +got):\n%s", diff)
	}
	if got := mustGet(s.RecentCommitStatuses(ctx, tenantA, r.ID, 2))(t); len(got) != 2 || got[0].Commit != "c2" {
		t.Errorf("limit 2: %+v", got)
	}
	if got := mustGet(s.RecentCommitStatuses(ctx, tenantB, r.ID, 0))(t); len(got) != 0 {
		t.Errorf("tenant B sees %d of A's statuses", len(got))
	}
}

// testFleetWakeUp: the tenant's fleet topic wakes when any of its sites'
// plans change, and not for another tenant's.
func testFleetWakeUp(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	ch, cancel := s.Subscribe(ctx, store.FleetTopic(tenantA))
	defer cancel()
	other, cancelOther := s.Subscribe(ctx, store.FleetTopic(tenantB))
	defer cancelOther()
	p := plan(tenantA, siteB, "1", "vm-a")
	must2(s.StorePlan(ctx, admin, p, "", epoch))(t)
	if !woken(ch) {
		t.Fatal("fleet subscriber not woken by StorePlan")
	}
	must2(s.RecordActionResult(ctx, agent, tenantA, siteB, store.ActionResult{PlanID: p.ID, ActionID: p.Actions[0].ID, Status: model.ActionSucceeded, FinishedAt: epoch}))(t)
	if !woken(ch) {
		t.Error("fleet subscriber not woken when a plan finished")
	}
	if !quiet(other) {
		t.Error("another tenant's fleet subscriber was woken")
	}
}

// testUISessions: dashboard sessions are found by their ID hash, end
// after their idle timeout and lifetime, are bounded per token and in
// all (least recently used first), touch their last use at most once per
// UISessionTouch, and go with their tenant.
func testUISessions(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	l := store.UISessionLimits{Idle: 15 * time.Minute, Lifetime: 12 * time.Hour, PerToken: 2, Max: 4}
	mk := func(id, token, tenant string) store.UISession {
		return store.UISession{IDHash: id, TokenHash: token, Tenant: tenant}
	}
	wantErr(t, s.CreateUISession(ctx, mk("", "tok", tenantA), l, epoch), store.ErrInvalid)
	wantErr(t, s.CreateUISession(ctx, mk("x", "", tenantA), l, epoch), store.ErrInvalid)
	wantErr(t, s.CreateUISession(ctx, mk("x", "tok", ""), l, epoch), store.ErrInvalid)
	wantErr(t, s.CreateUISession(ctx, mk("x", "tok", "no-such-tenant"), l, epoch), store.ErrNotFound)

	must(t, s.CreateUISession(ctx, mk("s1", "tok-a", tenantA), l, epoch))
	got := mustGet(s.GetUISession(ctx, "s1", l, epoch.Add(time.Second), false))(t)
	if got.TokenHash != "tok-a" || got.Tenant != tenantA || !got.CreatedAt.Equal(epoch) || !got.SeenAt.Equal(epoch) {
		t.Errorf("session %+v", got)
	}
	_, err := s.GetUISession(ctx, "nope", l, epoch, false)
	wantErr(t, err, store.ErrNotFound)

	// Touching within UISessionTouch writes nothing; after it, the last use moves.
	got = mustGet(s.GetUISession(ctx, "s1", l, epoch.Add(30*time.Second), true))(t)
	if !got.SeenAt.Equal(epoch) {
		t.Errorf("touched within %s: seen %s", store.UISessionTouch, got.SeenAt)
	}
	at := epoch.Add(10 * time.Minute)
	must2(s.GetUISession(ctx, "s1", l, at, true))(t)
	if got := mustGet(s.GetUISession(ctx, "s1", l, at, false))(t); !got.SeenAt.Equal(at) {
		t.Errorf("after a touch at %s: seen %s", at, got.SeenAt)
	}
	// Idle past the timeout: gone, and stays gone.
	_, err = s.GetUISession(ctx, "s1", l, at.Add(16*time.Minute), false)
	wantErr(t, err, store.ErrNotFound)
	_, err = s.GetUISession(ctx, "s1", l, at, false)
	wantErr(t, err, store.ErrNotFound)

	// Lifetime: used every 10 minutes, still ends after 12 hours.
	must(t, s.CreateUISession(ctx, mk("life", "tok-l", tenantA), l, epoch))
	for at := epoch.Add(10 * time.Minute); at.Before(epoch.Add(12 * time.Hour)); at = at.Add(10 * time.Minute) {
		must2(s.GetUISession(ctx, "life", l, at, true))(t)
	}
	_, err = s.GetUISession(ctx, "life", l, epoch.Add(12*time.Hour+time.Minute), true)
	wantErr(t, err, store.ErrNotFound)

	// Per token: a third session of tok-b ends its least recently used.
	now := epoch.Add(20 * time.Hour)
	must(t, s.CreateUISession(ctx, mk("b1", "tok-b", tenantA), l, now))
	must(t, s.CreateUISession(ctx, mk("b2", "tok-b", tenantA), l, now.Add(2*time.Minute)))
	must2(s.GetUISession(ctx, "b1", l, now.Add(4*time.Minute), true))(t) // b1 now used more recently than b2
	must(t, s.CreateUISession(ctx, mk("b3", "tok-b", tenantA), l, now.Add(5*time.Minute)))
	alive := func(ids ...string) string {
		var out []string
		for _, id := range ids {
			if _, err := s.GetUISession(ctx, id, l, now.Add(6*time.Minute), false); err == nil {
				out = append(out, id)
			}
		}
		return fmt.Sprint(out)
	}
	if got := alive("b1", "b2", "b3"); got != "[b1 b3]" {
		t.Errorf("after a third session of one token: %s alive, want [b1 b3]", got)
	}
	// In all: Max 4 sessions; two more tokens push out the least recently used.
	must(t, s.CreateUISession(ctx, mk("c1", "tok-c", tenantB), l, now.Add(5*time.Minute)))
	must(t, s.CreateUISession(ctx, mk("c2", "tok-c", tenantB), l, now.Add(5*time.Minute)))
	must(t, s.CreateUISession(ctx, mk("d1", "tok-d", tenantB), l, now.Add(6*time.Minute)))
	if got := alive("b1", "b3", "c1", "c2", "d1"); got != "[b3 c1 c2 d1]" {
		t.Errorf("beyond the total bound: %s alive, want [b3 c1 c2 d1]", got)
	}

	must(t, s.DeleteUISession(ctx, "b3"))
	must(t, s.DeleteUISession(ctx, "b3")) // absent: no error
	if got := alive("b3"); got != "[]" {
		t.Errorf("deleted session still found")
	}
	// A deleted tenant takes its sessions along.
	must(t, s.DeleteTenant(ctx, admin, tenantB))
	if got := alive("c1", "c2", "d1"); got != "[]" {
		t.Errorf("sessions of a deleted tenant: %s", got)
	}
}

// testUISignInCodes: a sign-in code is redeemed once, never after it
// expired, by exactly one of several concurrent redeemers.
func testUISignInCodes(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	code := func(h string, exp time.Time) store.UISignInCode {
		return store.UISignInCode{CodeHash: h, TokenHash: "tok", Tenant: tenantA, ExpiresAt: exp}
	}
	wantErr(t, s.CreateUISignInCode(ctx, store.UISignInCode{TokenHash: "tok", Tenant: tenantA, ExpiresAt: epoch}, store.UISignInCodeLimits{}, epoch), store.ErrInvalid)
	wantErr(t, s.CreateUISignInCode(ctx, store.UISignInCode{CodeHash: "x", TokenHash: "tok", Tenant: "no-such-tenant", ExpiresAt: epoch}, store.UISignInCodeLimits{}, epoch), store.ErrNotFound)

	must(t, s.CreateUISignInCode(ctx, code("c1", epoch.Add(10*time.Minute)), store.UISignInCodeLimits{}, epoch))
	got := mustGet(s.RedeemUISignInCode(ctx, "c1", epoch.Add(time.Minute)))(t)
	if got.TokenHash != "tok" || got.Tenant != tenantA || !got.ExpiresAt.Equal(epoch.Add(10*time.Minute)) {
		t.Errorf("redeemed %+v", got)
	}
	_, err := s.RedeemUISignInCode(ctx, "c1", epoch.Add(time.Minute))
	wantErr(t, err, store.ErrNotFound)

	must(t, s.CreateUISignInCode(ctx, code("late", epoch.Add(10*time.Minute)), store.UISignInCodeLimits{}, epoch))
	_, err = s.RedeemUISignInCode(ctx, "late", epoch.Add(11*time.Minute))
	wantErr(t, err, store.ErrNotFound)
	_, err = s.RedeemUISignInCode(ctx, "late", epoch.Add(time.Minute)) // consumed by the late try
	wantErr(t, err, store.ErrNotFound)

	must(t, s.CreateUISignInCode(ctx, code("race", epoch.Add(10*time.Minute)), store.UISignInCodeLimits{}, epoch))
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.RedeemUISignInCode(ctx, "race", epoch.Add(time.Minute)); err == nil {
				wins.Add(1)
			} else if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("concurrent redeem: %v", err)
			}
		}()
	}
	wg.Wait()
	if n := wins.Load(); n != 1 {
		t.Errorf("%d concurrent redeems got the code, want exactly 1", n)
	}

	// Bounds: a token's third code voids its oldest; a tenant's codes
	// beyond its bound are refused (voiding is never across tokens), and
	// expired codes do not count.
	lim := store.UISignInCodeLimits{PerToken: 2, PerTenant: 3}
	at := func(m int) time.Time { return epoch.Add(time.Duration(m) * time.Minute) }
	byToken := func(h, tok string, exp time.Time) store.UISignInCode {
		return store.UISignInCode{CodeHash: h, TokenHash: tok, Tenant: tenantA, ExpiresAt: exp}
	}
	must(t, s.CreateUISignInCode(ctx, byToken("t1-a", "tok1", at(10)), lim, at(0)))
	must(t, s.CreateUISignInCode(ctx, byToken("t1-b", "tok1", at(30)), lim, at(1)))
	must(t, s.CreateUISignInCode(ctx, byToken("t1-c", "tok1", at(30)), lim, at(2)))
	must(t, s.CreateUISignInCode(ctx, byToken("t2-a", "tok2", at(12)), lim, at(2)))
	wantErr(t, s.CreateUISignInCode(ctx, byToken("t3-a", "tok3", at(30)), lim, at(2)), store.ErrQuota)
	// Another tenant has its own bound.
	must(t, s.CreateUISignInCode(ctx, store.UISignInCode{CodeHash: "b-a", TokenHash: "tokB", Tenant: tenantB, ExpiresAt: at(30)}, lim, at(2)))
	// t2-a expired at 12: room for one more.
	must(t, s.CreateUISignInCode(ctx, byToken("t3-a", "tok3", at(30)), lim, at(13)))
	wantErr(t, s.CreateUISignInCode(ctx, byToken("t3-b", "tok4", at(30)), lim, at(13)), store.ErrQuota)
	_, err = s.RedeemUISignInCode(ctx, "t1-a", at(3))
	wantErr(t, err, store.ErrNotFound) // voided by its token's third code
	for _, h := range []string{"t1-b", "t1-c", "t3-a", "b-a"} {
		if _, err := s.RedeemUISignInCode(ctx, h, at(14)); err != nil {
			t.Errorf("code %s after the bounds applied: %v", h, err)
		}
	}
}
