package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/store"
)

func testTenants(t *testing.T, s store.Store) {
	ctx := t.Context()
	got, err := s.CreateTenant(ctx, admin, store.Tenant{ID: "acme", Name: "Acme"})
	must(t, err)
	if got.CreatedAt.IsZero() {
		t.Error("CreatedAt not set")
	}
	_, err = s.CreateTenant(ctx, admin, store.Tenant{ID: "acme"})
	wantErr(t, err, store.ErrConflict)
	for _, bad := range []string{"", "Acme", "-x", "a_b", "x-"} {
		_, err = s.CreateTenant(ctx, admin, store.Tenant{ID: bad})
		wantErr(t, err, store.ErrInvalid)
	}
	must2(s.CreateTenant(ctx, admin, store.Tenant{ID: "beta"}))(t)
	one, err := s.GetTenant(ctx, "acme")
	must(t, err)
	if diff := cmp.Diff(got, one); diff != "" {
		t.Errorf("GetTenant (-created +got):\n%s", diff)
	}
	_, err = s.GetTenant(ctx, "nope")
	wantErr(t, err, store.ErrNotFound)
	all, err := s.ListTenants(ctx)
	must(t, err)
	if len(all) != 2 || all[0].ID != "acme" || all[1].ID != "beta" {
		t.Errorf("ListTenants = %+v, want acme, beta", all)
	}
	must(t, s.DeleteTenant(ctx, admin, "beta"))
	wantErr(t, s.DeleteTenant(ctx, admin, "beta"), store.ErrNotFound)
	_, err = s.GetTenant(ctx, "beta")
	wantErr(t, err, store.ErrNotFound)
}

// must2 checks the error of a two-value call.
func must2[T any](_ T, err error) func(testing.TB) {
	return func(t testing.TB) {
		t.Helper()
		must(t, err)
	}
}

// mustGet returns v, failing the test if err is set: a list that failed
// must not pass for an empty one.
func mustGet[T any](v T, err error) func(testing.TB) T {
	return func(t testing.TB) T {
		t.Helper()
		must(t, err)
		return v
	}
}

func testRepositories(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	_, err := s.CreateRepository(ctx, admin, store.Repository{Tenant: "nope", Name: "r", URL: "u"}, "")
	wantErr(t, err, store.ErrNotFound)
	_, err = s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "r"}, "")
	wantErr(t, err, store.ErrInvalid)

	in := store.Repository{
		Tenant: tenantA, Name: "fleet", URL: "https://git.example/acme/fleet.git", Branch: "main", Path: "sites",
		CredentialsRef: "creds/fleet", ForgeKind: store.ForgeGitea, ForgeAPIURL: "https://git.example/api/v1",
		ForgeProject: "acme/fleet", ForgeCredentialsRef: "creds/forge",
	}
	r, err := s.CreateRepository(ctx, admin, in, "whsec")
	must(t, err)
	if r.ID == "" || !r.HasWebhookSecret || r.CreatedAt.IsZero() {
		t.Fatalf("created repository = %+v, want ID, secret flag and CreatedAt", r)
	}
	want := in
	want.ID, want.HasWebhookSecret, want.CreatedAt = r.ID, true, r.CreatedAt
	if diff := cmp.Diff(want, r); diff != "" {
		t.Errorf("CreateRepository (-want +got):\n%s", diff)
	}
	_, err = s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "fleet", URL: "x"}, "")
	wantErr(t, err, store.ErrConflict)
	// The same name in another tenant is fine.
	rb, err := s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantB, Name: "fleet", URL: "x"}, "")
	must(t, err)

	got, err := s.GetRepository(ctx, tenantA, r.ID)
	must(t, err)
	if diff := cmp.Diff(r, got); diff != "" {
		t.Errorf("GetRepository (-want +got):\n%s", diff)
	}
	sec, err := s.WebhookSecret(ctx, tenantA, r.ID)
	must(t, err)
	if sec.Reveal() != "whsec" {
		t.Errorf("WebhookSecret = %q, want whsec", sec.Reveal())
	}
	if sec.String() == "whsec" {
		t.Error("Secret prints itself")
	}
	_, err = s.WebhookSecret(ctx, tenantB, r.ID)
	wantErr(t, err, store.ErrNotFound)

	list, err := s.ListRepositories(ctx, tenantA)
	must(t, err)
	if len(list) != 1 || list[0].ID != r.ID {
		t.Errorf("ListRepositories = %+v, want only %s", list, r.ID)
	}
	all, err := s.ListAllRepositories(ctx)
	must(t, err)
	if len(all) != 2 {
		t.Errorf("ListAllRepositories has %d, want 2", len(all))
	}

	name, susp, empty := "fleet2", true, store.Secret("")
	up, err := s.UpdateRepository(ctx, admin, tenantA, r.ID, store.RepositoryUpdate{Name: &name, Suspended: &susp, WebhookSecret: &empty})
	must(t, err)
	if up.Name != "fleet2" || !up.Suspended || up.HasWebhookSecret || up.URL != in.URL {
		t.Errorf("UpdateRepository = %+v", up)
	}
	got, err = s.GetRepository(ctx, tenantA, r.ID)
	must(t, err)
	if diff := cmp.Diff(up, got); diff != "" {
		t.Errorf("after update (-want +got):\n%s", diff)
	}
	_, err = s.UpdateRepository(ctx, admin, tenantB, r.ID, store.RepositoryUpdate{Name: &name})
	wantErr(t, err, store.ErrNotFound)
	// The destructive label: default until set, kept, checked.
	if l := got.AcceptLabel(); l != store.DefaultDestructiveLabel {
		t.Errorf("AcceptLabel of a new repository = %q, want the default", l)
	}
	label, bad := "ops/destroy-ok", "bad\nlabel"
	up, err = s.UpdateRepository(ctx, admin, tenantA, r.ID, store.RepositoryUpdate{DestructiveLabel: &label})
	must(t, err)
	if got := mustGet(s.GetRepository(ctx, tenantA, r.ID))(t); got.DestructiveLabel != label || got.AcceptLabel() != label || up.DestructiveLabel != label {
		t.Errorf("after setting the destructive label: %q / %q", got.DestructiveLabel, up.DestructiveLabel)
	}
	_, err = s.UpdateRepository(ctx, admin, tenantA, r.ID, store.RepositoryUpdate{DestructiveLabel: &bad})
	wantErr(t, err, store.ErrInvalid)
	_, err = s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "labelled", URL: "x", DestructiveLabel: " x"}, "")
	wantErr(t, err, store.ErrInvalid)
	r2, err := s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "other", URL: "x"}, "")
	must(t, err)
	_, err = s.UpdateRepository(ctx, admin, tenantA, r2.ID, store.RepositoryUpdate{Name: &name})
	wantErr(t, err, store.ErrConflict)

	must(t, s.MarkCommitSeen(ctx, tenantA, r.ID, "c1", epoch))
	must(t, s.SetRepositoryError(ctx, tenantA, r.ID, "boom", epoch.Add(second)))
	got, _ = s.GetRepository(ctx, tenantA, r.ID)
	if got.LastSeenCommit != "c1" || !got.LastSeenAt.Equal(epoch) || got.LastError != "boom" || got.LastAppliedCommit != "" {
		t.Errorf("after seen+error: %+v", got)
	}
	must(t, s.MarkCommitApplied(ctx, admin, tenantA, r.ID, "c1", epoch.Add(2*second)))
	got, _ = s.GetRepository(ctx, tenantA, r.ID)
	if got.LastAppliedCommit != "c1" || got.LastError != "" || !got.LastErrorAt.IsZero() {
		t.Errorf("after applied: %+v", got)
	}
	wantErr(t, s.MarkCommitSeen(ctx, tenantB, r.ID, "c1", epoch), store.ErrNotFound)
	wantErr(t, s.MarkCommitApplied(ctx, admin, tenantB, r.ID, "c1", epoch), store.ErrNotFound)

	wantErr(t, s.DeleteRepository(ctx, admin, tenantB, r.ID), store.ErrNotFound)
	must(t, s.DeleteRepository(ctx, admin, tenantA, r.ID))
	_, err = s.GetRepository(ctx, tenantA, r.ID)
	wantErr(t, err, store.ErrNotFound)
	if _, err := s.GetRepository(ctx, tenantB, rb.ID); err != nil {
		t.Errorf("other tenant's repository went too: %v", err)
	}
}

func testSiteDesired(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	r, err := s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "r", URL: "u"}, "")
	must(t, err)
	got, err := s.SiteDesired(ctx, tenantA, r.ID)
	must(t, err)
	if len(got) != 0 {
		t.Fatalf("SiteDesired of a new repository = %v", got)
	}
	must(t, s.SetSiteDesired(ctx, tenantA, r.ID, store.SiteDesired{Site: siteA, Hash: "h1", Commit: "c1", UpdatedAt: epoch}))
	must(t, s.SetSiteDesired(ctx, tenantA, r.ID, store.SiteDesired{Site: siteB, Hash: "h2", Commit: "c1", UpdatedAt: epoch}))
	must(t, s.SetSiteDesired(ctx, tenantA, r.ID, store.SiteDesired{Site: siteA, Hash: "h3", Commit: "c2", UpdatedAt: epoch.Add(second)}))
	got, err = s.SiteDesired(ctx, tenantA, r.ID)
	must(t, err)
	want := map[string]store.SiteDesired{
		siteA: {Site: siteA, Hash: "h3", Commit: "c2", UpdatedAt: epoch.Add(second), Documented: true},
		siteB: {Site: siteB, Hash: "h2", Commit: "c1", UpdatedAt: epoch, Documented: true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("SiteDesired (-want +got):\n%s", diff)
	}
	_, err = s.SiteDesired(ctx, tenantB, r.ID)
	wantErr(t, err, store.ErrNotFound)
	wantErr(t, s.SetSiteDesired(ctx, tenantB, r.ID, store.SiteDesired{Site: siteA, Hash: "x"}), store.ErrNotFound)
}

func testAPITokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	_, err := s.CreateAPIToken(ctx, admin, store.APIToken{Name: "x"}, store.HashSecret("s0"))
	wantErr(t, err, store.ErrInvalid)
	_, err = s.CreateAPIToken(ctx, admin, store.APIToken{Tenant: "nope"}, store.HashSecret("s0"))
	wantErr(t, err, store.ErrNotFound)

	ta, err := s.CreateAPIToken(ctx, admin, store.APIToken{Tenant: tenantA, Name: "ci"}, store.HashSecret("secret-a"))
	must(t, err)
	adm, err := s.CreateAPIToken(ctx, admin, store.APIToken{Admin: true, Name: "root"}, store.HashSecret("secret-admin"))
	must(t, err)
	_, err = s.CreateAPIToken(ctx, admin, store.APIToken{Tenant: tenantB, Name: "dup"}, store.HashSecret("secret-a"))
	wantErr(t, err, store.ErrConflict)
	exp, err := s.CreateAPIToken(ctx, admin, store.APIToken{Tenant: tenantB, Name: "short", ExpiresAt: epoch}, store.HashSecret("secret-b"))
	must(t, err)

	got, err := s.APITokenByHash(ctx, store.HashSecret("secret-a"), epoch)
	must(t, err)
	if diff := cmp.Diff(ta, got); diff != "" {
		t.Errorf("APITokenByHash (-want +got):\n%s", diff)
	}
	got, err = s.APITokenByHash(ctx, store.HashSecret("secret-admin"), epoch)
	must(t, err)
	if !got.Admin || got.Tenant != "" || got.ID != adm.ID {
		t.Errorf("admin token = %+v", got)
	}
	_, err = s.APITokenByHash(ctx, store.HashSecret("wrong"), epoch)
	wantErr(t, err, store.ErrNotFound)
	if _, err := s.APITokenByHash(ctx, store.HashSecret("secret-b"), epoch.Add(-second)); err != nil {
		t.Errorf("token before expiry: %v", err)
	}
	_, err = s.APITokenByHash(ctx, store.HashSecret("secret-b"), epoch)
	wantErr(t, err, store.ErrTokenExpired)

	must(t, s.TouchAPIToken(ctx, ta.ID, epoch.Add(time.Minute)))
	wantErr(t, s.TouchAPIToken(ctx, "nope", epoch), store.ErrNotFound)
	list, err := s.ListAPITokens(ctx, tenantA)
	must(t, err)
	if len(list) != 1 || list[0].ID != ta.ID || !list[0].LastUsedAt.Equal(epoch.Add(time.Minute)) {
		t.Errorf("ListAPITokens(A) = %+v", list)
	}
	list, err = s.ListAPITokens(ctx, "")
	must(t, err)
	if len(list) != 1 || list[0].ID != adm.ID {
		t.Errorf("ListAPITokens(admin) = %+v", list)
	}
	wantErr(t, s.DeleteAPIToken(ctx, admin, tenantA, exp.ID), store.ErrNotFound)
	wantErr(t, s.DeleteAPIToken(ctx, admin, "", ta.ID), store.ErrNotFound)
	must(t, s.DeleteAPIToken(ctx, admin, tenantA, ta.ID))
	_, err = s.APITokenByHash(ctx, store.HashSecret("secret-a"), epoch)
	wantErr(t, err, store.ErrNotFound)
	must(t, s.DeleteAPIToken(ctx, admin, "", adm.ID))
}

func testEnrollmentTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	id, secret, tok, err := store.NewEnrollmentToken()
	must(t, err)
	pid, psecret, err := store.ParseEnrollmentToken(tok)
	must(t, err)
	if pid != id || psecret != secret {
		t.Fatalf("ParseEnrollmentToken(%q) = %q, %q", tok, pid, psecret)
	}
	for _, bad := range []string{"", "abc", ".x", "x.", "a.b.c"} {
		_, _, err := store.ParseEnrollmentToken(bad)
		wantErr(t, err, store.ErrInvalid)
	}

	_, err = s.CreateEnrollmentToken(ctx, admin, store.EnrollmentToken{ID: id, Tenant: tenantA, Site: "nope", ExpiresAt: epoch}, store.HashSecret(secret))
	wantErr(t, err, store.ErrNotFound)
	_, err = s.CreateEnrollmentToken(ctx, admin, store.EnrollmentToken{ID: id, Tenant: tenantA, Site: siteA}, store.HashSecret(secret))
	wantErr(t, err, store.ErrInvalid)
	e, err := s.CreateEnrollmentToken(ctx, admin, store.EnrollmentToken{ID: id, Tenant: tenantA, Site: siteA, ExpiresAt: epoch.Add(time.Hour)}, store.HashSecret(secret))
	must(t, err)
	_, err = s.CreateEnrollmentToken(ctx, admin, store.EnrollmentToken{ID: id, Tenant: tenantA, Site: siteA, ExpiresAt: epoch}, store.HashSecret(secret))
	wantErr(t, err, store.ErrConflict)

	_, err = s.RedeemEnrollmentToken(ctx, "unknown", store.HashSecret(secret), epoch)
	wantErr(t, err, store.ErrNotFound)
	_, err = s.RedeemEnrollmentToken(ctx, id, store.HashSecret("wrong"), epoch)
	wantErr(t, err, store.ErrNotFound)
	got, err := s.RedeemEnrollmentToken(ctx, id, store.HashSecret(secret), epoch)
	must(t, err)
	want := e
	want.UsedAt = epoch
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("RedeemEnrollmentToken (-want +got):\n%s", diff)
	}
	_, err = s.RedeemEnrollmentToken(ctx, id, store.HashSecret(secret), epoch)
	wantErr(t, err, store.ErrTokenUsed)

	e2, err := s.CreateEnrollmentToken(ctx, admin, store.EnrollmentToken{ID: "short", Tenant: tenantA, Site: siteB, ExpiresAt: epoch}, store.HashSecret("s2"))
	must(t, err)
	_, err = s.RedeemEnrollmentToken(ctx, e2.ID, store.HashSecret("s2"), epoch)
	wantErr(t, err, store.ErrTokenExpired)

	list, err := s.ListEnrollmentTokens(ctx, tenantA)
	must(t, err)
	if len(list) != 2 {
		t.Errorf("ListEnrollmentTokens = %+v, want 2", list)
	}
	list, err = s.ListEnrollmentTokens(ctx, tenantB)
	must(t, err)
	if len(list) != 0 {
		t.Errorf("tenant B sees %d enrollment tokens", len(list))
	}
	wantErr(t, s.DeleteEnrollmentToken(ctx, admin, tenantB, e2.ID), store.ErrNotFound)
	must(t, s.DeleteEnrollmentToken(ctx, admin, tenantA, e2.ID))
	_, err = s.RedeemEnrollmentToken(ctx, e2.ID, store.HashSecret("s2"), epoch.Add(-time.Hour))
	wantErr(t, err, store.ErrNotFound)
}

func testEnrollmentConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	for round := range 5 {
		id := "tok" + string(rune('a'+round))
		_, err := s.CreateEnrollmentToken(ctx, admin, store.EnrollmentToken{ID: id, Tenant: tenantA, Site: siteA, ExpiresAt: epoch.Add(time.Hour)}, store.HashSecret("s"))
		must(t, err)
		const n = 2
		errs := make(chan error, n)
		start := make(chan struct{})
		for range n {
			go func() {
				<-start
				_, err := s.RedeemEnrollmentToken(ctx, id, store.HashSecret("s"), epoch)
				errs <- err
			}()
		}
		close(start)
		wins, used := 0, 0
		for range n {
			switch err := <-errs; {
			case err == nil:
				wins++
			case errors.Is(err, store.ErrTokenUsed):
				used++
			default:
				t.Errorf("redeem: unexpected error %v", err)
			}
		}
		if wins != 1 || used != n-1 {
			t.Errorf("round %d: %d redemptions won and %d saw ErrTokenUsed, want 1 and %d", round, wins, used, n-1)
		}
	}
}

func testSites(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.CreateSite(ctx, admin, tenantA, siteA)
	wantErr(t, err, store.ErrNotFound)
	seed(t, s)
	_, err = s.CreateSite(ctx, admin, tenantA, siteA)
	wantErr(t, err, store.ErrConflict)
	_, err = s.CreateSite(ctx, admin, tenantA, "Bad_Name")
	wantErr(t, err, store.ErrInvalid)

	st, err := s.GetSite(ctx, tenantA, siteA)
	must(t, err)
	if st.Tenant != tenantA || st.Name != siteA || st.CreatedAt.IsZero() || !st.EnrolledAt.IsZero() || st.InventoryVersion != 0 {
		t.Errorf("new site = %+v", st)
	}
	list, err := s.ListSites(ctx, tenantA)
	must(t, err)
	if len(list) != 2 || list[0].Name != siteA || list[1].Name != siteB {
		t.Errorf("ListSites = %+v", list)
	}

	must(t, s.SetSiteCertificate(ctx, admin, tenantA, siteA, "serial-1", epoch))
	must(t, s.SetSiteCertificate(ctx, admin, tenantA, siteA, "serial-2", epoch.Add(time.Hour)))
	wantErr(t, s.SetSiteCertificate(ctx, admin, tenantA, "nope", "serial-x", epoch), store.ErrNotFound)
	st, _ = s.GetSite(ctx, tenantA, siteA)
	if st.CertSerial != "serial-2" || !st.EnrolledAt.Equal(epoch) {
		t.Errorf("after certificates: serial %q enrolled %v, want serial-2 at %v", st.CertSerial, st.EnrolledAt, epoch)
	}

	revoked, err := s.IsSerialRevoked(ctx, "serial-1")
	must(t, err)
	if revoked {
		t.Error("serial-1 revoked before RevokeSerial")
	}
	must(t, s.RevokeSerial(ctx, admin, tenantA, siteA, "serial-1", epoch))
	must(t, s.RevokeSerial(ctx, admin, tenantA, siteA, "serial-1", epoch.Add(second)))
	wantErr(t, s.RevokeSerial(ctx, admin, tenantB, "nope", "serial-9", epoch), store.ErrNotFound)
	revoked, err = s.IsSerialRevoked(ctx, "serial-1")
	must(t, err)
	if !revoked {
		t.Error("serial-1 not revoked after RevokeSerial")
	}
	rl, err := s.ListRevokedSerials(ctx)
	must(t, err)
	if diff := cmp.Diff([]store.RevokedSerial{{Serial: "serial-1", Tenant: tenantA, Site: siteA, RevokedAt: epoch}}, rl); diff != "" {
		t.Errorf("ListRevokedSerials (-want +got):\n%s", diff)
	}

	must(t, s.SetSiteNetBird(ctx, admin, tenantA, siteA, "https://netbird.example", "setup-key-1"))
	u, k, err := s.SiteNetBird(ctx, tenantA, siteA)
	must(t, err)
	if u != "https://netbird.example" || k.Reveal() != "setup-key-1" {
		t.Errorf("SiteNetBird = %q, %q", u, k.Reveal())
	}
	st, _ = s.GetSite(ctx, tenantA, siteA)
	if !st.HasNetBirdSetupKey || st.NetBirdManagementURL != u {
		t.Errorf("site netbird fields = %+v", st)
	}
	if b := string(mustJSON(st)); contains(b, "setup-key-1") {
		t.Errorf("site JSON leaks the setup key: %s", b)
	}
	_, _, err = s.SiteNetBird(ctx, tenantB, siteA)
	if err != nil {
		t.Errorf("tenant B site: %v", err)
	}
	_, _, err = s.SiteNetBird(ctx, tenantA, "nope")
	wantErr(t, err, store.ErrNotFound)

	must(t, s.DeleteSite(ctx, admin, tenantA, siteB))
	wantErr(t, s.DeleteSite(ctx, admin, tenantA, siteB), store.ErrNotFound)
	_, err = s.GetSite(ctx, tenantA, siteB)
	wantErr(t, err, store.ErrNotFound)
	if _, err := s.GetSite(ctx, tenantB, siteB); err != nil {
		t.Errorf("tenant B's site with the same name went too: %v", err)
	}
}

func testHeartbeat(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	_, err := s.RecordHeartbeat(ctx, tenantA, "nope", store.Heartbeat{Time: epoch})
	wantErr(t, err, store.ErrNotFound)
	_, err = s.RecordHeartbeat(ctx, tenantA, siteA, store.Heartbeat{Facts: []byte("{not json"), Time: epoch})
	wantErr(t, err, store.ErrInvalid)

	_, err = s.RecordHeartbeat(ctx, tenantA, siteA, store.Heartbeat{VMs: []model.ObservedVM{{Name: "x"}, {Name: "x"}}, Time: epoch})
	wantErr(t, err, store.ErrInvalid)
	_, err = s.RecordHeartbeat(ctx, tenantA, siteA, store.Heartbeat{VMs: []model.ObservedVM{{}}, Time: epoch})
	wantErr(t, err, store.ErrInvalid)

	inv, err := s.Inventory(ctx, tenantA, siteA)
	must(t, err)
	if inv.Reported || inv.Version != 0 || len(inv.VMs) != 0 || inv.Site != siteA {
		t.Errorf("inventory before any report = %+v", inv)
	}

	a := model.ObservedVM{Name: "a", State: model.VMRunning, Managed: true, SpecHash: "h", CPUs: 1, MemoryMiB: 256}
	b := model.ObservedVM{Name: "b", State: model.VMStopped, CPUs: 2, MemoryMiB: 512}
	facts := []byte(`{"cpus": 8, "kvm": true}`)
	steps := []struct {
		vms         []model.ObservedVM
		wantVersion int64
		wantChanged bool
	}{
		{nil, 1, true},                       // first report, even empty, is a change
		{[]model.ObservedVM{}, 1, false},     // nil and empty are the same set
		{[]model.ObservedVM{b, a}, 2, true},  // new VMs
		{[]model.ObservedVM{a, b}, 2, false}, // same set, other order
		{[]model.ObservedVM{a, {Name: "b", State: model.VMRunning, CPUs: 2, MemoryMiB: 512}}, 3, true},
		{[]model.ObservedVM{a}, 4, true},
	}
	for i, st := range steps {
		res, err := s.RecordHeartbeat(ctx, tenantA, siteA, store.Heartbeat{Facts: facts, VMs: st.vms, Interval: 15 * time.Second, Time: epoch.Add(time.Duration(i) * second)})
		must(t, err)
		if res.InventoryVersion != st.wantVersion || res.Changed != st.wantChanged {
			t.Errorf("heartbeat %d: got version %d changed %v, want %d %v", i, res.InventoryVersion, res.Changed, st.wantVersion, st.wantChanged)
		}
	}
	inv, err = s.Inventory(ctx, tenantA, siteA)
	must(t, err)
	want := model.Inventory{Site: siteA, Version: 4, Reported: true, VMs: []model.ObservedVM{a}}
	if diff := cmp.Diff(want, inv); diff != "" {
		t.Errorf("Inventory (-want +got):\n%s", diff)
	}
	st, err := s.GetSite(ctx, tenantA, siteA)
	must(t, err)
	if !st.LastHeartbeat.Equal(epoch.Add(5*second)) || st.HeartbeatInterval != 15*time.Second || string(st.Facts) != `{"cpus":8,"kvm":true}` || st.InventoryVersion != 4 {
		t.Errorf("site after heartbeats: hb %v interval %v facts %s version %d", st.LastHeartbeat, st.HeartbeatInterval, st.Facts, st.InventoryVersion)
	}
	// Facts omitted and interval zero keep what is stored.
	_, err = s.RecordHeartbeat(ctx, tenantA, siteA, store.Heartbeat{VMs: []model.ObservedVM{a}, Time: epoch.Add(time.Minute)})
	must(t, err)
	st, _ = s.GetSite(ctx, tenantA, siteA)
	if string(st.Facts) != `{"cpus":8,"kvm":true}` || st.HeartbeatInterval != 15*time.Second || !st.LastHeartbeat.Equal(epoch.Add(time.Minute)) {
		t.Errorf("heartbeat without facts changed them: %+v", st)
	}

	all, err := s.Inventories(ctx, tenantA)
	must(t, err)
	wantAll := map[string]model.Inventory{
		siteA: want,
		siteB: {Site: siteB, VMs: []model.ObservedVM{}},
	}
	if diff := cmp.Diff(wantAll, all); diff != "" {
		t.Errorf("Inventories (-want +got):\n%s", diff)
	}
	other, err := s.Inventories(ctx, tenantB)
	must(t, err)
	if other[siteA].Reported {
		t.Error("tenant B's edge-1 shows tenant A's report")
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
