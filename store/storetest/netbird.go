package storetest

import (
	"testing"

	"github.com/nkudo/nkudo/store"
)

func testNetBird(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	_, err := s.GetNetBirdIntegration(ctx, tenantA)
	wantErr(t, err, store.ErrNotFound)

	// The token credential must exist first, in the same tenant.
	in := store.NetBirdIntegration{Tenant: tenantA, URL: "https://api.netbird.io", Credential: "netbird"}
	_, err = s.PutNetBirdIntegration(ctx, admin, in)
	wantErr(t, err, store.ErrNotFound)
	must2(s.PutCredential(ctx, admin, store.Credential{Tenant: tenantB, Name: "netbird", Kind: store.CredentialToken, Host: "api.netbird.io"}, "nbp_b"))(t)
	_, err = s.PutNetBirdIntegration(ctx, admin, in)
	wantErr(t, err, store.ErrNotFound)
	must2(s.PutCredential(ctx, admin, store.Credential{Tenant: tenantA, Name: "netbird", Kind: store.CredentialToken, Host: "api.netbird.io"}, "nbp_a"))(t)

	for _, bad := range []store.NetBirdIntegration{
		{Tenant: tenantA, URL: "api.netbird.io", Credential: "netbird"},
		{Tenant: tenantA, URL: "ftp://api.netbird.io", Credential: "netbird"},
		{Tenant: tenantA, URL: "https://u:p@api.netbird.io", Credential: "netbird"},
		{Tenant: tenantA, URL: "https://api.netbird.io", Credential: "no/such"},
	} {
		_, err := s.PutNetBirdIntegration(ctx, admin, bad)
		wantErr(t, err, store.ErrInvalid)
	}

	got, err := s.PutNetBirdIntegration(ctx, admin, in)
	must(t, err)
	if got.URL != in.URL || got.Credential != "netbird" || got.CreatedAt.IsZero() {
		t.Fatalf("PutNetBirdIntegration = %+v", got)
	}
	in.URL = "https://netbird.example:33073"
	up, err := s.PutNetBirdIntegration(ctx, admin, in)
	must(t, err)
	if up.URL != in.URL || !up.CreatedAt.Equal(got.CreatedAt) {
		t.Errorf("replaced integration = %+v (was %+v)", up, got)
	}
	if g, err := s.GetNetBirdIntegration(ctx, tenantA); err != nil || g != up {
		t.Errorf("GetNetBirdIntegration = %+v, %v; want %+v", g, err, up)
	}
	_, err = s.GetNetBirdIntegration(ctx, tenantB)
	wantErr(t, err, store.ErrNotFound)
	wantErr(t, s.DeleteNetBirdIntegration(ctx, admin, tenantB), store.ErrNotFound)

	must(t, s.DeleteNetBirdIntegration(ctx, admin, tenantA))
	_, err = s.GetNetBirdIntegration(ctx, tenantA)
	wantErr(t, err, store.ErrNotFound)
	if _, err := s.GetCredential(ctx, tenantA, "netbird"); err != nil {
		t.Errorf("deleting the integration removed its credential: %v", err)
	}
	events, err := s.ListAudit(ctx, tenantA, 0, 1000)
	must(t, err)
	seen := map[string]bool{}
	for _, e := range events {
		seen[e.Action] = true
	}
	for _, a := range []string{"netbird.create", "netbird.update", "netbird.delete"} {
		if !seen[a] {
			t.Errorf("no audit event %s", a)
		}
	}
}
