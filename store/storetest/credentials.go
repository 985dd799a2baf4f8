package storetest

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/seal"
)

const credSecret = "ghp_conformance-secret-1"

func testCredentials(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed(t, s)
	in := store.Credential{Tenant: tenantA, Name: "ci", Kind: store.CredentialToken, Host: "Git.Example"}
	c, err := s.PutCredential(ctx, admin, in, credSecret)
	must(t, err)
	if c.Host != "git.example" || c.Fingerprint != store.CredentialFingerprint(credSecret) || c.CreatedAt.IsZero() || !c.UpdatedAt.Equal(c.CreatedAt) {
		t.Fatalf("PutCredential = %+v", c)
	}

	// Names are per tenant: B's "ci" is a different credential.
	must2(s.PutCredential(ctx, admin, store.Credential{Tenant: tenantB, Name: "ci", Kind: store.CredentialBasic, Host: "other.example:8443"}, "bob:pw"))(t)
	got, sec, err := s.CredentialSecret(ctx, tenantA, "ci")
	must(t, err)
	if sec.Reveal() != credSecret || got.Kind != store.CredentialToken || got.Host != "git.example" {
		t.Errorf("CredentialSecret(A) = %+v, %q", got, sec.Reveal())
	}
	_, sec, err = s.CredentialSecret(ctx, tenantB, "ci")
	must(t, err)
	if sec.Reveal() != "bob:pw" {
		t.Errorf("CredentialSecret(B) = %q", sec.Reveal())
	}
	// Another tenant's credential does not exist for B.
	must2(s.PutCredential(ctx, admin, store.Credential{Tenant: tenantA, Name: "deploy", Kind: store.CredentialToken, Host: "git.example"}, "t2"))(t)
	_, err = s.GetCredential(ctx, tenantB, "deploy")
	wantErr(t, err, store.ErrNotFound)
	_, _, err = s.CredentialSecret(ctx, tenantB, "deploy")
	wantErr(t, err, store.ErrNotFound)
	wantErr(t, s.DeleteCredential(ctx, admin, tenantB, "deploy"), store.ErrNotFound)

	// Listing never carries the secret, however it is encoded.
	list, err := s.ListCredentials(ctx, tenantA)
	must(t, err)
	if len(list) != 2 || list[0].Name != "ci" || list[1].Name != "deploy" {
		t.Fatalf("ListCredentials = %+v", list)
	}
	b, _ := json.Marshal(list)
	if strings.Contains(string(b), credSecret) || strings.Contains(string(b), "nkv1:") {
		t.Errorf("list shows the secret: %s", b)
	}

	// Replacing keeps CreatedAt and changes the fingerprint.
	up, err := s.PutCredential(ctx, admin, store.Credential{Tenant: tenantA, Name: "ci", Kind: store.CredentialToken, Host: "git.example"}, "rotated")
	must(t, err)
	if !up.CreatedAt.Equal(c.CreatedAt) || up.Fingerprint == c.Fingerprint {
		t.Errorf("replaced credential = %+v (was %+v)", up, c)
	}

	bad := []struct {
		field string
		c     store.Credential
		sec   store.Secret
	}{
		{"name", store.Credential{Name: "a/b", Kind: store.CredentialToken, Host: "h"}, "s"},
		{"name", store.Credential{Name: "", Kind: store.CredentialToken, Host: "h"}, "s"},
		{"kind", store.Credential{Name: "x", Kind: "password", Host: "h"}, "s"},
		{"host", store.Credential{Name: "x", Kind: store.CredentialToken, Host: "https://h/x"}, "s"},
		{"host", store.Credential{Name: "x", Kind: store.CredentialToken, Host: ""}, "s"},
		{"secret", store.Credential{Name: "x", Kind: store.CredentialToken, Host: "h"}, " "},
		{"secret", store.Credential{Name: "x", Kind: store.CredentialBasic, Host: "h"}, "no-colon"},
		{"knownHosts", store.Credential{Name: "x", Kind: store.CredentialToken, Host: "h", KnownHosts: "h ssh-ed25519 AAAA"}, "s"},
	}
	for _, tc := range bad {
		tc.c.Tenant = tenantA
		_, err := s.PutCredential(ctx, admin, tc.c, tc.sec)
		wantErr(t, err, store.ErrInvalid)
		if !strings.Contains(err.Error(), tc.field) {
			t.Errorf("error %q does not name the field %s", err, tc.field)
		}
	}
	_, err = s.PutCredential(ctx, admin, store.Credential{Tenant: "nope", Name: "x", Kind: store.CredentialToken, Host: "h"}, "s")
	wantErr(t, err, store.ErrNotFound)

	must(t, s.DeleteCredential(ctx, admin, tenantA, "deploy"))
	wantErr(t, s.DeleteCredential(ctx, admin, tenantA, "deploy"), store.ErrNotFound)
	_, err = s.GetCredential(ctx, tenantA, "deploy")
	wantErr(t, err, store.ErrNotFound)

	// Every mutation is audited, and no event carries a secret.
	events, err := s.ListAudit(ctx, tenantA, 0, 1000)
	must(t, err)
	seen := map[string]int{}
	for _, e := range events {
		seen[e.Action]++
		if strings.Contains(string(e.Detail), credSecret) || strings.Contains(string(e.Detail), "rotated") {
			t.Errorf("audit event %s carries the secret: %s", e.Action, e.Detail)
		}
	}
	if seen["credential.create"] != 2 || seen["credential.update"] != 1 || seen["credential.delete"] != 1 {
		t.Errorf("audit actions = %v", seen)
	}

	// A tenant purge removes its credentials.
	must(t, s.DeleteTenant(ctx, admin, tenantB))
	_, _, err = s.CredentialSecret(ctx, tenantB, "ci")
	wantErr(t, err, store.ErrNotFound)
}

// testSealedRows moves sealed values between rows behind the store's back:
// each is bound to its row, so none opens elsewhere.
func testSealedRows(t *testing.T, open Open) {
	s := open(t)
	raw, ok := s.(Raw)
	if !ok {
		t.Skipf("SKIP: %T has no ExecRaw hook; sealed-row binding untested on this backend", s)
	}
	ctx := t.Context()
	seed(t, s)
	must2(s.PutCredential(ctx, admin, store.Credential{Tenant: tenantA, Name: "ci", Kind: store.CredentialToken, Host: "git.example"}, credSecret))(t)
	must2(s.PutCredential(ctx, admin, store.Credential{Tenant: tenantB, Name: "ci", Kind: store.CredentialToken, Host: "git.example"}, "b-secret"))(t)
	must(t, raw.ExecRaw(ctx, `UPDATE credentials SET secret = (SELECT secret FROM credentials WHERE tenant = 'acme' AND name = 'ci')
		WHERE tenant = 'globex' AND name = 'ci'`))
	if _, sec, err := s.CredentialSecret(ctx, tenantB, "ci"); !errors.Is(err, seal.ErrOpen) {
		t.Errorf("A's sealed secret moved to B's row opened: %q, %v", sec.Reveal(), err)
	}

	ra := mustGet(s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantA, Name: "r", URL: "u"}, "whsec-a"))(t)
	rb := mustGet(s.CreateRepository(ctx, admin, store.Repository{Tenant: tenantB, Name: "r", URL: "u"}, "whsec-b"))(t)
	must(t, raw.ExecRaw(ctx, `UPDATE repositories SET webhook_secret = (SELECT webhook_secret FROM repositories WHERE id = '`+ra.ID+`')
		WHERE id = '`+rb.ID+`'`))
	if sec, err := s.WebhookSecret(ctx, tenantB, rb.ID); !errors.Is(err, seal.ErrOpen) {
		t.Errorf("A's sealed webhook secret moved to B's repository opened: %q, %v", sec.Reveal(), err)
	}
	if sec := mustGet(s.WebhookSecret(ctx, tenantA, ra.ID))(t); sec.Reveal() != "whsec-a" {
		t.Errorf("WebhookSecret(A) = %q", sec.Reveal())
	}

	must(t, s.SetSiteNetBird(ctx, admin, tenantA, siteA, "https://nb.example", "setup-a"))
	must(t, raw.ExecRaw(ctx, `UPDATE sites SET netbird_setup_key = (SELECT netbird_setup_key FROM sites WHERE tenant = 'acme' AND name = 'edge-1')
		WHERE tenant = 'acme' AND name = 'edge-2'`))
	if _, k, err := s.SiteNetBird(ctx, tenantA, siteB); !errors.Is(err, seal.ErrOpen) {
		t.Errorf("edge-1's sealed setup key moved to edge-2 opened: %q, %v", k.Reveal(), err)
	}
}
