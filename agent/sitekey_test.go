package agent_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/agent"
	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/cptest"
)

// The site key is created at enrollment (0600), survives restarts, is made
// on the next start of an agent enrolled before site keys existed, and its
// recipient reaches GET site through the heartbeat facts.
func TestSiteKeyCreatedAtEnrollmentAndReported(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	env.NewTenant("acme")
	env.NewSite("acme", "store-1")
	tok := env.EnrollmentToken("acme", "store-1")
	dir := filepath.Join(t.TempDir(), "pki")
	ctx := t.Context()
	id, err := agent.Enroll(ctx, agent.EnrollOptions{ControlPlane: env.URL, Token: tok.Token, CAHash: tok.CAFingerprint, PKIDir: dir}, nil)
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	st, err := os.Stat(filepath.Join(dir, "site.agekey"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("site.agekey: %v, %v; want mode 0600", st, err)
	}
	rcpt := id.SiteRecipient()
	if !strings.HasPrefix(rcpt, "age1") {
		t.Fatalf("recipient = %q, want age1…", rcpt)
	}
	again, err := agent.LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.SiteRecipient() != rcpt {
		t.Errorf("a restart changed the site key: %s → %s", rcpt, again.SiteRecipient())
	}

	// An agent enrolled before site keys: the next start creates one.
	if err := os.Remove(filepath.Join(dir, "site.agekey")); err != nil {
		t.Fatal(err)
	}
	old, err := agent.LoadIdentity(dir)
	if err != nil {
		t.Fatalf("load an identity without a site key: %v", err)
	}
	if r := old.SiteRecipient(); !strings.HasPrefix(r, "age1") || r == rcpt {
		t.Errorf("recipient after the key was removed = %q (old %q)", r, rcpt)
	}

	client, err := api.NewClient(api.ClientConfig{BaseURL: env.URL, RootCAs: old.RootCAs(), Certificate: old.Certificate})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.CloseIdleConnections)
	for _, typed := range []bool{true, false} {
		f := api.HostFacts{Hostname: "edge", AgeRecipient: old.SiteRecipient()}
		if !typed {
			f = f.LegacyLabels()
		}
		if _, err := client.Heartbeat(ctx, api.HeartbeatRequest{Facts: f}); err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
		site, err := env.UserClient(env.AdminToken, "acme").GetSite(ctx, "store-1")
		if err != nil {
			t.Fatal(err)
		}
		if site.Facts == nil || site.Facts.AgeRecipient != old.SiteRecipient() {
			t.Errorf("typed=%v: GET site facts = %+v, want ageRecipient %s", typed, site.Facts, old.SiteRecipient())
		}
	}
}
