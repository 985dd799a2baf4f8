package controlplane_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/internal/egress"
	nbmgmt "github.com/nkudo/nkudo/tests/fakes/netbird-management"
)

// startNetBird serves the management API fake over TLS and returns it with
// options that let the control plane reach it (loopback allowed, its roots
// trusted).
func startNetBird(t *testing.T, allowLoopback bool) (*nbmgmt.Server, *httptest.Server, func(*controlplane.Options)) {
	t.Helper()
	nb := &nbmgmt.Server{}
	ts := httptest.NewTLSServer(nb)
	t.Cleanup(ts.Close)
	roots := x509.NewCertPool()
	roots.AddCert(ts.Certificate())
	return nb, ts, func(o *controlplane.Options) {
		if allowLoopback {
			o.NetBirdEgress = egress.Policy{Allow: egress.Loopback()}
		}
		o.NetBirdTLS = &tls.Config{RootCAs: roots}
	}
}

// TestNetBirdIntegrationSet: the token is checked with GET /api/groups
// before anything is stored, kept as a tenant credential and never shown.
func TestNetBirdIntegrationSet(t *testing.T) {
	nb, ts, configure := startNetBird(t, true)
	env := cptest.Start(t, cptest.Options{Configure: configure})
	acme := env.NewTenant("acme")
	ctx := t.Context()

	_, err := acme.Client.GetNetBirdIntegration(ctx)
	if !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("get before set: %v, want not found", err)
	}
	for _, tc := range []struct {
		req   api.SetNetBirdIntegrationRequest
		field string
	}{
		{api.SetNetBirdIntegrationRequest{URL: ts.URL, Token: "nbp_wrong"}, `"token"`},
		{api.SetNetBirdIntegrationRequest{URL: ts.URL}, `"token"`},
		{api.SetNetBirdIntegrationRequest{URL: "api.netbird.io", Token: nbmgmt.DefaultToken}, `"url"`},
		{api.SetNetBirdIntegrationRequest{URL: strings.Replace(ts.URL, "https:", "http:", 1), Token: nbmgmt.DefaultToken}, `"url"`},
	} {
		_, err := acme.Client.SetNetBirdIntegration(ctx, tc.req)
		if !errors.Is(err, api.ErrBadRequest) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("set %v: %v, want a bad request naming %s", tc.req, err, tc.field)
		}
		if err != nil && strings.Contains(err.Error(), "nbp_wrong") {
			t.Errorf("the error shows the token: %v", err)
		}
	}
	nb.Fail(1, 0)
	if _, err := acme.Client.SetNetBirdIntegration(ctx, api.SetNetBirdIntegrationRequest{URL: ts.URL, Token: nbmgmt.DefaultToken}); !errors.Is(err, api.ErrBadRequest) {
		t.Errorf("set while the API fails: %v, want a bad request", err)
	}
	if creds, err := acme.Client.ListCredentials(ctx); err != nil || len(creds) != 0 {
		t.Fatalf("failed sets stored credentials: %v, %v", creds, err)
	}

	got, err := acme.Client.SetNetBirdIntegration(ctx, api.SetNetBirdIntegrationRequest{URL: ts.URL, Token: nbmgmt.DefaultToken})
	if err != nil {
		t.Fatal(err)
	}
	if got.URL != ts.URL || got.Credential != "netbird" || got.Groups != 1 || got.Fingerprint == "" {
		t.Errorf("set = %+v", got)
	}
	shown, err := acme.Client.GetNetBirdIntegration(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(shown)
	if shown.URL != ts.URL || shown.Fingerprint != got.Fingerprint || strings.Contains(string(b), nbmgmt.DefaultToken) {
		t.Errorf("get = %s", b)
	}
	creds, err := acme.Client.ListCredentials(ctx)
	if err != nil || len(creds) != 1 || creds[0].Kind != api.CredentialToken || creds[0].Host != strings.TrimPrefix(ts.URL, "https://") {
		t.Errorf("credentials = %+v, %v; want the token bound to the API's host", creds, err)
	}
	// Another tenant sees none of it.
	if _, err := env.NewTenant("beta").Client.GetNetBirdIntegration(ctx); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("other tenant: %v, want not found", err)
	}
	if err := acme.Client.DeleteNetBirdIntegration(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := acme.Client.GetNetBirdIntegration(ctx); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("get after delete: %v", err)
	}
}

// TestNetBirdIntegrationEgress: without an allow-list the egress policy
// refuses a management API on loopback.
func TestNetBirdIntegrationEgress(t *testing.T) {
	nb, ts, configure := startNetBird(t, false)
	env := cptest.Start(t, cptest.Options{Configure: configure})
	acme := env.NewTenant("acme")
	_, err := acme.Client.SetNetBirdIntegration(t.Context(), api.SetNetBirdIntegrationRequest{URL: ts.URL, Token: nbmgmt.DefaultToken})
	if !errors.Is(err, api.ErrBadRequest) || !strings.Contains(err.Error(), "egress denied") {
		t.Errorf("set to loopback: %v, want refused by the egress policy", err)
	}
	if calls := nb.Calls(); len(calls) != 0 {
		t.Errorf("the fake was called: %v", calls)
	}
}
