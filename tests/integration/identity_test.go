package integration

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/pki"
	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/storetest"
)

// TestRevokeRacesRenew races renewals against a revocation of their site,
// over real TLS, 200 times: once the revoke has answered, no certificate
// handed to a renewal that authenticated before it may work, and the site
// shows revoked. Without the store serialising the two, a renewal that
// passed authentication before the revoke records its new certificate
// after it, and the agent walks away with a working one.
func TestRevokeRacesRenew(t *testing.T) {
	cptest.ForEachBackend(t, func(t *testing.T, o cptest.Options) {
		env := cptest.Start(t, o)
		ctx := t.Context()
		acme := env.NewTenant("acme")
		env.NewSite("acme", "s1")
		const rounds, renewals = 200, 3
		sys := store.Actor{Kind: store.ActorSystem, ID: "test"}
		for round := range rounds {
			// A certificate the site holds, as enrollment would record it
			// (enrollment itself is rate-limited per address).
			cert := env.IssueCert("acme", "s1", time.Now(), time.Hour)
			leaf, err := x509.ParseCertificate(cert.Certificate[0])
			if err != nil {
				t.Fatal(err)
			}
			if err := env.Store().SetSiteCertificate(ctx, sys, "acme", "s1", pki.SerialString(leaf.SerialNumber), time.Now()); err != nil {
				t.Fatal(err)
			}
			agent := env.AgentClient(cert)
			if _, err := agent.Heartbeat(ctx, api.HeartbeatRequest{}); err != nil {
				t.Fatalf("round %d: heartbeat before the race: %v", round, err)
			}
			var wg sync.WaitGroup
			start := make(chan struct{})
			var mu sync.Mutex
			var got []*api.Client
			for range renewals {
				wg.Go(func() {
					key, err := pki.NewKey()
					if err != nil {
						t.Error(err)
						return
					}
					csr, _ := pki.NewCSR(key, "s1")
					<-start
					ren, err := agent.Renew(ctx, api.RenewRequest{CSR: string(csr)})
					if err != nil {
						if !errors.Is(err, api.ErrCertRevoked) {
							t.Errorf("round %d: renew: %v, want success or cert_revoked", round, err)
						}
						return
					}
					c, err := cptest.KeyPair(key, []byte(ren.Certificate))
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					got = append(got, env.AgentClient(c))
					mu.Unlock()
				})
			}
			wg.Go(func() {
				<-start
				if _, err := acme.Client.RevokeSite(ctx, "s1"); err != nil {
					t.Errorf("round %d: revoke: %v", round, err)
				}
			})
			close(start)
			wg.Wait()
			if t.Failed() {
				return
			}
			for i, c := range got {
				if _, err := c.Heartbeat(ctx, api.HeartbeatRequest{}); !errors.Is(err, api.ErrCertRevoked) {
					t.Fatalf("round %d: certificate %d renewed around the revoke: heartbeat %v, want cert_revoked", round, i, err)
				}
			}
			site, err := acme.Client.GetSite(ctx, "s1")
			if err != nil || !site.Revoked {
				t.Fatalf("round %d: site after the race: revoked=%v, %v; want revoked", round, site.Revoked, err)
			}
		}
	})
}

// TestRevokeOnSiteDelete: deleting a site revokes every certificate it
// had, and the site created again under the same name (a new identity
// epoch) accepts none of them, for heartbeats or renewals; its own new
// enrollment works.
func TestRevokeOnSiteDelete(t *testing.T) {
	cptest.ForEachBackend(t, func(t *testing.T, o cptest.Options) {
		env := cptest.Start(t, o)
		ctx := t.Context()
		acme := env.NewTenant("acme")
		old := env.Enroll("acme", "s1")
		// A renewed certificate too: the old epoch had two.
		key, _ := pki.NewKey()
		csr, _ := pki.NewCSR(key, "s1")
		ren, err := old.Client.Renew(ctx, api.RenewRequest{CSR: string(csr)})
		if err != nil {
			t.Fatal(err)
		}
		renewedCert, err := cptest.KeyPair(key, []byte(ren.Certificate))
		if err != nil {
			t.Fatal(err)
		}
		renewed := env.AgentClient(renewedCert)
		if _, err := renewed.Heartbeat(ctx, api.HeartbeatRequest{}); err != nil {
			t.Fatal(err)
		}
		if err := acme.Client.DeleteSite(ctx, "s1"); err != nil {
			t.Fatal(err)
		}
		if _, err := old.Client.Heartbeat(ctx, api.HeartbeatRequest{}); err == nil {
			t.Fatal("certificate of a deleted site still heartbeats")
		}
		if _, err := acme.Client.CreateSite(ctx, "s1"); err != nil {
			t.Fatal(err)
		}
		for name, c := range map[string]*api.Client{"enrolled": old.Client, "renewed": renewed} {
			_, err := c.Heartbeat(ctx, api.HeartbeatRequest{})
			wantAPIError(t, err, api.ErrCertRevoked, http.StatusUnauthorized, "revoked")
			key, _ := pki.NewKey()
			csr, _ := pki.NewCSR(key, "s1")
			if _, err := c.Renew(ctx, api.RenewRequest{CSR: string(csr)}); !errors.Is(err, api.ErrCertRevoked) {
				t.Errorf("%s certificate of the deleted site renews into the new one: %v", name, err)
			}
		}
		site, err := acme.Client.GetSite(ctx, "s1")
		if err != nil || site.Online || !site.EnrolledAt.IsZero() {
			t.Fatalf("re-created site = %+v, %v; want fresh (not enrolled, offline)", site, err)
		}
		fresh := env.Enroll("acme", "s1")
		if _, err := fresh.Client.Heartbeat(ctx, api.HeartbeatRequest{}); err != nil {
			t.Fatalf("new enrollment of the re-created site: %v", err)
		}
		if _, err := old.Client.Heartbeat(ctx, api.HeartbeatRequest{}); !errors.Is(err, api.ErrCertRevoked) {
			t.Errorf("old certificate after the new enrollment: %v, want cert_revoked", err)
		}
		// The CRL lists both certificates of the deleted site.
		der, err := env.UserClient("", "").CRL(ctx)
		if err != nil {
			t.Fatal(err)
		}
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		listed := map[string]bool{}
		for _, e := range crl.RevokedCertificateEntries {
			listed[pki.SerialString(e.SerialNumber)] = true
		}
		for _, c := range []*x509.Certificate{old.Cert.Leaf, renewedCert.Leaf} {
			if !listed[pki.SerialString(c.SerialNumber)] {
				t.Errorf("CRL lacks serial %s of the deleted site", pki.SerialString(c.SerialNumber))
			}
		}
	})
}

// TestEnrollWrongSecretNoOracle: a wrong secret gets the same 401 whatever
// the token ID names and whatever site or tenant the request claims; only
// a caller holding the secret learns that the token is for another site.
func TestEnrollWrongSecretNoOracle(t *testing.T) {
	env := cptest.Start(t, cptest.Options{Configure: func(o *controlplane.Options) { o.EnrollBurst = 100 }})
	env.NewTenant("acme")
	env.NewSite("acme", "s1")
	env.NewSite("acme", "s2")
	tok := env.EnrollmentToken("acme", "s1")
	id, secret, _ := strings.Cut(tok.Token, ".")
	key, _ := pki.NewKey()
	csr, _ := pki.NewCSR(key, "x")
	wrong := strings.Repeat("0", len(secret))
	try := func(token, tenant, site string) (int, string) {
		body := fmt.Sprintf(`{"token":%q,"csr":%q,"tenant":%q,"site":%q}`, token, csr, tenant, site)
		return env.Raw(nil, "", "POST", api.PathEnroll, []byte(body))
	}
	wantStatus, wantBody := try("ffffffffffffffffffffffffffffffff."+wrong, "", "")
	if wantStatus != http.StatusUnauthorized {
		t.Fatalf("unknown token: %d %s, want 401", wantStatus, wantBody)
	}
	for _, tc := range []struct{ name, token, tenant, site string }{
		{"wrong secret", id + "." + wrong, "", ""},
		{"wrong secret, right site", id + "." + wrong, "acme", "s1"},
		{"wrong secret, other site", id + "." + wrong, "acme", "s2"},
		{"wrong secret, other tenant", id + "." + wrong, "globex", "s1"},
		{"unknown token, a site", "ffffffffffffffffffffffffffffffff." + wrong, "acme", "s2"},
	} {
		status, body := try(tc.token, tc.tenant, tc.site)
		if status != wantStatus || body != wantBody {
			t.Errorf("%s: %d %s; want the unknown token's %d %s", tc.name, status, body, wantStatus, wantBody)
		}
	}
	// With the secret, another site is refused without burning the token.
	if status, body := try(tok.Token, "acme", "s2"); status != http.StatusForbidden {
		t.Errorf("right secret, other site: %d %s, want 403", status, body)
	}
	if status, body := try(tok.Token, "acme", "s1"); status != http.StatusOK {
		t.Errorf("right secret, right site after a refusal: %d %s, want 200", status, body)
	}
}

// TestEnrollAndAPITokenTTLMustBePositive: a zero or negative "ttl" is
// refused with 400 naming the field, for enrollment and API tokens alike;
// before, "-1h" made an API token that never expires.
func TestEnrollAndAPITokenTTLMustBePositive(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	acme := env.NewTenant("acme")
	env.NewSite("acme", "s1")
	for _, ttl := range []string{"-1h", "0s", "-1ns"} {
		for _, tc := range []struct{ what, token, path, body string }{
			{"API token", env.AdminToken, api.PathTokens, fmt.Sprintf(`{"tenant":"acme","name":"x","ttl":%q}`, ttl)},
			{"enrollment token", acme.Token, api.Path(api.PathSiteEnroll, "s1"), fmt.Sprintf(`{"ttl":%q}`, ttl)},
		} {
			status, body := env.Raw(nil, tc.token, "POST", tc.path, []byte(tc.body))
			if status != http.StatusBadRequest || !strings.Contains(body, `field \"ttl\"`) {
				t.Errorf("%s with ttl %s: %d %s; want 400 naming field \"ttl\"", tc.what, ttl, status, body)
			}
		}
	}
	// Positive and absent TTLs still work.
	for _, tc := range []struct{ token, path, body string }{
		{env.AdminToken, api.PathTokens, `{"tenant":"acme","name":"x","ttl":"1h"}`},
		{env.AdminToken, api.PathTokens, `{"tenant":"acme","name":"y"}`},
		{acme.Token, api.Path(api.PathSiteEnroll, "s1"), `{"ttl":"10m"}`},
		{acme.Token, api.Path(api.PathSiteEnroll, "s1"), ``},
	} {
		if status, body := env.Raw(nil, tc.token, "POST", tc.path, []byte(tc.body)); status != http.StatusCreated {
			t.Errorf("POST %s %s: %d %s, want 201", tc.path, tc.body, status, body)
		}
	}
	tok, err := env.Admin.CreateToken(t.Context(), api.CreateTokenRequest{Tenant: "acme", TTL: api.Duration(time.Hour)})
	if err != nil || tok.ExpiresAt.IsZero() {
		t.Errorf("token with a 1h ttl: %+v, %v; want an expiry", tok, err)
	}
}

// TestAuditRechainDetected: over the API, on SQLite and Postgres rows, an
// edit followed by a full re-chain by someone without the audit key (every
// later hash and the head recomputed) is reported, and so is the same with
// every MAC stripped; the server keys its chain at its first start.
func TestAuditRechainDetected(t *testing.T) {
	cptest.ForEachBackend(t, func(t *testing.T, o cptest.Options) {
		for _, strip := range []bool{false, true} {
			env := cptest.Start(t, o)
			ctx := t.Context()
			acme := env.NewTenant("acme")
			env.Enroll("acme", "s1")
			if _, err := acme.Client.RevokeSite(ctx, "s1"); err != nil {
				t.Fatal(err)
			}
			// Something after it: dropping the newest events is truncation,
			// which the chain cannot show (docs/store.md says so).
			env.NewSite("acme", "s2")
			v, err := env.Admin.VerifyAudit(ctx)
			if err != nil || !v.OK || !v.KeyChecked || v.KeyedFrom != 1 {
				t.Fatalf("fresh keyed chain: %+v, %v; want intact, keyed from event 1, MACs checked", v, err)
			}
			raw, ok := env.Store().(storetest.Raw)
			if !ok {
				t.Fatalf("%T has no ExecRaw", env.Store())
			}
			// Hide the revocation: drop its event and re-chain the rest.
			storetest.Rechain(t, ctx, env.Store(), raw, func(e *store.AuditEvent) bool { return e.Action != "site.revoke" }, strip)
			v, err = env.Admin.VerifyAudit(ctx)
			if err != nil || v.OK || v.FirstBroken == 0 || v.Reason == "" {
				t.Errorf("strip=%v: chain after dropping an event and re-chaining without the key: %+v, %v; want broken", strip, v, err)
			}
		}
	})
}
