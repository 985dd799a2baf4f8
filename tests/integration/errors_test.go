package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/pki"
	"github.com/nkudo/nkudo/store"
)

// siteSnapshot is the state a refused request must leave alone.
type siteSnapshot struct {
	audit     int
	serial    string
	heartbeat time.Time
	version   int64
}

func takeSiteSnapshot(t *testing.T, env *cptest.Env, tenant, site string) siteSnapshot {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	evs, err := env.Store().ListAudit(ctx, "", 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	s, err := env.Store().GetSite(ctx, tenant, site)
	if err != nil {
		t.Fatal(err)
	}
	return siteSnapshot{audit: len(evs), serial: s.CertSerial, heartbeat: s.LastHeartbeat, version: s.InventoryVersion}
}

func newEnrollRequest(t *testing.T, token string) api.EnrollRequest {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "x")
	if err != nil {
		t.Fatal(err)
	}
	return api.EnrollRequest{Token: token, CSR: string(csr)}
}

// wantAPIError checks the sentinel, the status and that the message says why.
func wantAPIError(t *testing.T, err error, sentinel error, status int, msgPart string) {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v, want an *api.Error", err)
	}
	if !errors.Is(err, sentinel) || ae.Status != status {
		t.Errorf("err = %v (status %d), want %v with status %d", err, ae.Status, sentinel, status)
	}
	if !strings.Contains(ae.Message, msgPart) {
		t.Errorf("message %q does not say %q", ae.Message, msgPart)
	}
}

// TestEnrollmentRefusals: reuse, expiry, wrong site, unknown tokens and the
// rate limit each get their own clear answer and change nothing.
func TestEnrollmentRefusals(t *testing.T) {
	cptest.ForEachBackend(t, func(t *testing.T, o cptest.Options) {
		clock := &cptest.Clock{}
		o.Clock = clock
		o.Configure = func(co *controlplane.Options) { co.EnrollRate = rate.Inf }
		env := cptest.Start(t, o)
		ctx := t.Context()
		env.NewTenant("acme")
		env.NewSite("acme", "s1")
		env.NewSite("acme", "s2")
		anon := env.UserClient("", "")

		t.Run("reuse", func(t *testing.T) {
			tok := env.EnrollmentToken("acme", "s1")
			if _, err := anon.Enroll(ctx, newEnrollRequest(t, tok.Token)); err != nil {
				t.Fatal(err)
			}
			before := takeSiteSnapshot(t, env, "acme", "s1")
			_, err := anon.Enroll(ctx, newEnrollRequest(t, tok.Token))
			wantAPIError(t, err, api.ErrTokenUsed, http.StatusUnauthorized, "already used")
			if after := takeSiteSnapshot(t, env, "acme", "s1"); after != before {
				t.Errorf("state changed: %+v → %+v", before, after)
			}
		})
		t.Run("concurrent redemptions: one wins", func(t *testing.T) {
			tok := env.EnrollmentToken("acme", "s1")
			const n = 8
			errs := make(chan error, n)
			var wg sync.WaitGroup
			for range n {
				req := newEnrollRequest(t, tok.Token)
				wg.Go(func() {
					_, err := anon.Enroll(ctx, req)
					errs <- err
				})
			}
			wg.Wait()
			close(errs)
			won := 0
			for err := range errs {
				switch {
				case err == nil:
					won++
				case !errors.Is(err, api.ErrTokenUsed):
					t.Errorf("losing redemption: %v, want token_used", err)
				}
			}
			if won != 1 {
				t.Errorf("%d of %d concurrent redemptions won, want exactly 1", won, n)
			}
		})
		t.Run("expired", func(t *testing.T) {
			tok, err := env.Admin.CreateEnrollmentToken(ctx, "s2", time.Minute)
			if err == nil {
				t.Fatal("admin token without a tenant header created an enrollment token")
			}
			tok, err = env.UserClient(env.AdminToken, "acme").CreateEnrollmentToken(ctx, "s2", time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			clock.Advance(2 * time.Minute)
			before := takeSiteSnapshot(t, env, "acme", "s2")
			_, err = anon.Enroll(ctx, newEnrollRequest(t, tok.Token))
			wantAPIError(t, err, api.ErrTokenExpired, http.StatusUnauthorized, "expired")
			if after := takeSiteSnapshot(t, env, "acme", "s2"); after != before {
				t.Errorf("state changed: %+v → %+v", before, after)
			}
		})
		t.Run("wrong site", func(t *testing.T) {
			tok := env.EnrollmentToken("acme", "s2")
			req := newEnrollRequest(t, tok.Token)
			req.Tenant, req.Site = "acme", "s1"
			before := takeSiteSnapshot(t, env, "acme", "s1")
			_, err := anon.Enroll(ctx, req)
			wantAPIError(t, err, api.ErrForbidden, http.StatusForbidden, "not for site s1")
			if after := takeSiteSnapshot(t, env, "acme", "s1"); after != before {
				t.Errorf("state changed: %+v → %+v", before, after)
			}
			// The token was not burned by the refusal.
			req.Site = "s2"
			if _, err := anon.Enroll(ctx, req); err != nil {
				t.Errorf("enroll with the right site after a refusal: %v", err)
			}
		})
		t.Run("unknown and wrong secret look the same", func(t *testing.T) {
			tok := env.EnrollmentToken("acme", "s1")
			id, _, _ := strings.Cut(tok.Token, ".")
			var msgs []string
			for _, bad := range []string{"0123.4567", id + ".wrongsecret", "no-dot-at-all"} {
				_, err := anon.Enroll(ctx, newEnrollRequest(t, bad))
				wantAPIError(t, err, api.ErrTokenInvalid, http.StatusUnauthorized, "not valid")
				msgs = append(msgs, err.Error())
			}
			if msgs[0] != msgs[1] || msgs[1] != msgs[2] {
				t.Errorf("answers differ, leaking which tokens exist: %q", msgs)
			}
			if _, err := anon.Enroll(ctx, newEnrollRequest(t, tok.Token)); err != nil {
				t.Errorf("the real token stopped working after wrong guesses: %v", err)
			}
		})
		t.Run("bad CSR keeps the token", func(t *testing.T) {
			tok := env.EnrollmentToken("acme", "s1")
			_, err := anon.Enroll(ctx, api.EnrollRequest{Token: tok.Token, CSR: "not a csr"})
			wantAPIError(t, err, api.ErrBadRequest, http.StatusBadRequest, "csr")
			if _, err := anon.Enroll(ctx, newEnrollRequest(t, tok.Token)); err != nil {
				t.Errorf("token burned by a bad CSR: %v", err)
			}
		})
	})
}

func TestEnrollmentRateLimit(t *testing.T) {
	env := cptest.Start(t, cptest.Options{Configure: func(co *controlplane.Options) {
		co.EnrollRate, co.EnrollBurst = rate.Every(time.Hour), 2
	}})
	anon := env.UserClient("", "")
	for i := range 2 {
		_, err := anon.Enroll(t.Context(), newEnrollRequest(t, "abc.def"))
		if !errors.Is(err, api.ErrTokenInvalid) {
			t.Fatalf("attempt %d: %v, want token_invalid", i+1, err)
		}
	}
	_, err := anon.Enroll(t.Context(), newEnrollRequest(t, "abc.def"))
	wantAPIError(t, err, api.ErrRateLimited, http.StatusTooManyRequests, "too many enrollment attempts")
	metrics := mustGet(t, env, "", api.PathMetrics)
	if !strings.Contains(metrics, `nkudo_enrollment_attempts_total{result="rate_limited"} 1`) {
		t.Error("rate-limited attempt not counted in metrics")
	}
}

// TestAgentCertificateRefusals: revoked, expired, foreign and missing
// certificates are refused on every agent route with a clear code.
func TestAgentCertificateRefusals(t *testing.T) {
	cptest.ForEachBackend(t, func(t *testing.T, o cptest.Options) {
		env := cptest.Start(t, o)
		ctx := t.Context()
		acme := env.NewTenant("acme")
		agent := env.Enroll("acme", "s1")
		if _, err := agent.Client.Heartbeat(ctx, api.HeartbeatRequest{}); err != nil {
			t.Fatal(err)
		}

		t.Run("expired", func(t *testing.T) {
			cert := env.IssueCert("acme", "s1", time.Now().Add(-3*time.Hour), time.Hour)
			_, err := env.AgentClient(cert).Heartbeat(ctx, api.HeartbeatRequest{})
			wantAPIError(t, err, api.ErrCertInvalid, http.StatusUnauthorized, "expired")
		})
		t.Run("foreign CA", func(t *testing.T) {
			other, err := pki.Load(pki.Config{DevDir: t.TempDir()}, cpDiscardLogger())
			if err != nil {
				t.Fatal(err)
			}
			key, _ := pki.NewKey()
			csr, _ := pki.NewCSR(key, "s1")
			iss, err := other.Sign(csr, pki.Identity{Tenant: "acme", Site: "s1"})
			if err != nil {
				t.Fatal(err)
			}
			cert, err := cptest.KeyPair(key, iss.CertPEM)
			if err != nil {
				t.Fatal(err)
			}
			_, err = env.AgentClient(cert).Heartbeat(ctx, api.HeartbeatRequest{})
			wantAPIError(t, err, api.ErrCertInvalid, http.StatusUnauthorized, "not issued by this control plane")
		})
		t.Run("no certificate", func(t *testing.T) {
			_, err := env.UserClient(acme.Token, "").Heartbeat(ctx, api.HeartbeatRequest{})
			wantAPIError(t, err, api.ErrCertInvalid, http.StatusUnauthorized, "client certificate")
		})
		t.Run("revoked takes effect on the next request", func(t *testing.T) {
			// The agent renews; its older certificate stays usable until a revocation.
			older := agent.Client
			key, _ := pki.NewKey()
			csr, _ := pki.NewCSR(key, "s1")
			ren, err := agent.Client.Renew(ctx, api.RenewRequest{CSR: string(csr)})
			if err != nil {
				t.Fatal(err)
			}
			renewed, err := cptest.KeyPair(key, []byte(ren.Certificate))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := older.Heartbeat(ctx, api.HeartbeatRequest{}); err != nil {
				t.Fatalf("pre-renewal certificate before any revocation: %v", err)
			}
			current := env.AgentClient(renewed)
			if _, err := current.Heartbeat(ctx, api.HeartbeatRequest{}); err != nil {
				t.Fatal(err)
			}
			// The agent's connection stays open across the revocation: the
			// serial is checked per request, not only at the handshake.
			rev, err := acme.Client.RevokeSite(ctx, "s1")
			if err != nil {
				t.Fatal(err)
			}
			if rev.Serial == "" {
				t.Fatal("revocation named no serial")
			}
			before := takeSiteSnapshot(t, env, "acme", "s1")
			_, err = current.Heartbeat(ctx, api.HeartbeatRequest{})
			wantAPIError(t, err, api.ErrCertRevoked, http.StatusUnauthorized, "revoked")
			if _, err := current.WaitPlan(ctx, "", 0); !errors.Is(err, api.ErrCertRevoked) {
				t.Errorf("long-poll with a revoked certificate: %v", err)
			}
			if after := takeSiteSnapshot(t, env, "acme", "s1"); after.heartbeat != before.heartbeat || after.version != before.version {
				t.Errorf("revoked agent changed the site: %+v → %+v", before, after)
			}
			site, err := acme.Client.GetSite(ctx, "s1")
			if err != nil || !site.Revoked {
				t.Errorf("site after revocation: %+v, %v", site, err)
			}
			// The certificate from before the renewal was never revoked by
			// serial, yet it is refused too, and stays refused after the
			// site enrolls again.
			if _, err := older.Heartbeat(ctx, api.HeartbeatRequest{}); !errors.Is(err, api.ErrCertRevoked) {
				t.Errorf("pre-renewal certificate after revocation: %v, want cert_revoked", err)
			}
			again := env.Enroll("acme", "s1")
			if _, err := again.Client.Heartbeat(ctx, api.HeartbeatRequest{}); err != nil {
				t.Errorf("re-enrolled agent: %v", err)
			}
			if _, err := older.Heartbeat(ctx, api.HeartbeatRequest{}); !errors.Is(err, api.ErrCertRevoked) {
				t.Errorf("pre-renewal certificate after re-enrollment: %v, want cert_revoked", err)
			}
			der, err := env.UserClient("", "").CRL(ctx)
			if err != nil {
				t.Fatal(err)
			}
			crl, err := x509.ParseRevocationList(der)
			if err != nil {
				t.Fatal(err)
			}
			if err := crl.CheckSignatureFrom(env.PKI.CACert()); err != nil {
				t.Errorf("CRL signature: %v", err)
			}
			found := false
			for _, e := range crl.RevokedCertificateEntries {
				found = found || pki.SerialString(e.SerialNumber) == rev.Serial
			}
			if !found {
				t.Errorf("CRL lacks revoked serial %s", rev.Serial)
			}
		})
	})
}

// TestMalformedRequests: bad bodies are refused with 400/413, a message
// naming the problem, and no change to the site.
func TestMalformedRequests(t *testing.T) {
	cptest.ForEachBackend(t, func(t *testing.T, o cptest.Options) {
		env := cptest.Start(t, o)
		acme := env.NewTenant("acme")
		agent := env.Enroll("acme", "s1")
		if _, err := agent.Client.Heartbeat(t.Context(), api.HeartbeatRequest{}); err != nil {
			t.Fatal(err)
		}
		big := `{"protocolVersion":1,"facts":{"hostname":"` + strings.Repeat("x", 2<<20) + `"},"vms":[]}`
		tests := []struct {
			name       string
			cert       *tls.Certificate
			token      string
			method     string
			path       string
			body       string
			wantStatus int
			wantCode   api.Code
			wantMsg    string
		}{
			{"malformed JSON", &agent.Cert, "", "POST", api.PathAgentHB, `{"facts": {`, 400, api.CodeBadRequest, "malformed JSON"},
			{"unknown field", &agent.Cert, "", "POST", api.PathAgentHB, `{"protocolVersion":1,"facts":{},"vms":[],"surprise":1}`, 400, api.CodeBadRequest, `unknown field "surprise"`},
			{"unknown nested field", &agent.Cert, "", "POST", api.PathAgentHB, `{"facts":{"gpu":"yes"},"vms":[]}`, 400, api.CodeBadRequest, `unknown field "gpu"`},
			{"wrong type", &agent.Cert, "", "POST", api.PathAgentHB, `{"facts":{"cpus":"eight"},"vms":[]}`, 400, api.CodeBadRequest, `facts.cpus`},
			{"duplicate VM", &agent.Cert, "", "POST", api.PathAgentHB, `{"vms":[{"name":"a"},{"name":"a"}]}`, 400, api.CodeBadRequest, `reported twice`},
			{"oversized body", &agent.Cert, "", "POST", api.PathAgentHB, big, 413, api.CodeTooLarge, "exceeds"},
			{"trailing data", &agent.Cert, "", "POST", api.PathAgentHB, `{} {}`, 400, api.CodeBadRequest, "after the JSON value"},
			{"empty body", &agent.Cert, "", "POST", api.PathAgentResults, ``, 400, api.CodeBadRequest, "empty"},
			{"newer protocol", &agent.Cert, "", "POST", api.PathAgentHB, `{"protocolVersion":99}`, 400, api.CodeBadRequest, "protocol 99"},
			{"repo without webhook secret", nil, acme.Token, "POST", api.PathRepos, `{"name":"r","url":"https://git.example.net/r.git"}`, 400, api.CodeBadRequest, "webhookSecret"},
			{"bad site name", nil, acme.Token, "POST", api.PathSites, `{"name":"Not A Label"}`, 400, api.CodeBadRequest, `"name"`},
			{"invalid API token", nil, "nkudo_nope", "GET", api.PathSites, ``, 401, api.CodeUnauthorized, "invalid API token"},
			{"unknown path", nil, acme.Token, "GET", "/v1/nope", ``, 404, api.CodeNotFound, "no endpoint"},
			{"wrong method", nil, acme.Token, "DELETE", api.PathSites, ``, 405, api.CodeMethod, "allowed methods are POST, GET"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				before := takeSiteSnapshot(t, env, "acme", "s1")
				var body []byte
				if tt.method == "POST" {
					body = []byte(tt.body)
				}
				status, got := env.Raw(tt.cert, tt.token, tt.method, tt.path, body)
				if status != tt.wantStatus {
					t.Fatalf("status %d, want %d: %s", status, tt.wantStatus, got)
				}
				var eb api.ErrorBody
				if err := json.Unmarshal([]byte(got), &eb); err != nil {
					t.Fatalf("not the error envelope: %s", got)
				}
				if eb.Error.Code != tt.wantCode || !strings.Contains(eb.Error.Message, tt.wantMsg) {
					t.Errorf("error %+v, want code %s and a message with %q", eb.Error, tt.wantCode, tt.wantMsg)
				}
				after := takeSiteSnapshot(t, env, "acme", "s1")
				if after != before {
					t.Errorf("state changed: %+v → %+v", before, after)
				}
			})
		}
	})
}

// TestExpiredAPIToken: an expired bearer token gets its own code.
func TestExpiredAPIToken(t *testing.T) {
	clock := &cptest.Clock{}
	env := cptest.Start(t, cptest.Options{Clock: clock})
	env.NewTenant("acme")
	tok, err := controlplane.CreateAPIToken(t.Context(), env.Store(), store.Actor{Kind: store.ActorAdmin, ID: "test"},
		api.CreateTokenRequest{Tenant: "acme", TTL: api.Duration(time.Hour)}, clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := env.UserClient(tok.Token, "")
	if _, err := c.ListSites(t.Context()); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Hour)
	_, err = c.ListSites(t.Context())
	wantAPIError(t, err, api.ErrTokenExpired, http.StatusUnauthorized, "expired")
}
