package agent_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/agent"
	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/cptest"
)

func TestEnrollPinsTheCARenewsAndRefusesReenrollment(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	env.NewTenant("acme")
	env.NewSite("acme", "store-1")
	tok := env.EnrollmentToken("acme", "store-1")
	dir := filepath.Join(t.TempDir(), "pki")
	ctx := t.Context()

	// A CA that does not match the pin is refused before the token is sent.
	wrong := "sha256:" + strings.Repeat("ab", 32)
	_, err := agent.Enroll(ctx, agent.EnrollOptions{ControlPlane: env.URL, Token: tok.Token, CAHash: wrong, PKIDir: dir}, nil)
	if err == nil || !strings.Contains(err.Error(), "fingerprint") {
		t.Fatalf("enroll with a wrong CA hash = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "agent.crt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused enrollment stored a certificate: %v", err)
	}
	for _, bad := range []string{"", "sha1:abcd", "sha256:xyz"} {
		if _, err := agent.Enroll(ctx, agent.EnrollOptions{ControlPlane: env.URL, Token: tok.Token, CAHash: bad, PKIDir: dir}, nil); err == nil {
			t.Errorf("CA hash %q accepted", bad)
		}
	}

	// The same token still works: it was never sent to the impostor.
	id, err := agent.Enroll(ctx, agent.EnrollOptions{ControlPlane: env.URL, Token: tok.Token, CAHash: tok.CAFingerprint, PKIDir: dir}, nil)
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	if id.Tenant() != "acme" || id.Site() != "store-1" {
		t.Errorf("identity = %s/%s", id.Tenant(), id.Site())
	}
	for name, want := range map[string]os.FileMode{"agent.key": 0o600, "identity.json": 0o600} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, err %v; want %v", name, st.Mode().Perm(), err, want)
		}
	}
	client, err := api.NewClient(api.ClientConfig{BaseURL: env.URL, RootCAs: id.RootCAs(), Certificate: id.Certificate})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.CloseIdleConnections)
	if _, err := client.Heartbeat(ctx, api.HeartbeatRequest{}); err != nil {
		t.Fatalf("heartbeat with the enrolled identity: %v", err)
	}

	// Renewal: at 70-90 % of the lifetime; a new certificate that keeps working.
	nb, na := id.Validity()
	for range 20 {
		at := id.RenewAt()
		if frac := float64(at.Sub(nb)) / float64(na.Sub(nb)); frac < 0.7 || frac > 0.9 {
			t.Fatalf("renewal at %.2f of the lifetime", frac)
		}
	}
	oldCert, _ := id.Certificate()
	if err := id.Renew(ctx, client); err != nil {
		t.Fatalf("renew: %v", err)
	}
	newCert, _ := id.Certificate()
	if newCert.Leaf.SerialNumber.Cmp(oldCert.Leaf.SerialNumber) == 0 {
		t.Error("renewal kept the old certificate")
	}
	if _, err := client.Heartbeat(ctx, api.HeartbeatRequest{}); err != nil {
		t.Fatalf("heartbeat after renewal: %v", err)
	}
	reloaded, err := agent.LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := reloaded.Certificate(); c.Leaf.SerialNumber.Cmp(newCert.Leaf.SerialNumber) != 0 {
		t.Error("the renewed certificate was not stored")
	}

	// Enrolling an enrolled agent needs --force.
	tok2 := env.EnrollmentToken("acme", "store-1")
	_, err = agent.Enroll(ctx, agent.EnrollOptions{ControlPlane: env.URL, Token: tok2.Token, CAHash: tok2.CAFingerprint, PKIDir: dir}, nil)
	if !errors.Is(err, agent.ErrEnrolled) {
		t.Fatalf("re-enroll without force = %v", err)
	}
	if _, err := agent.Enroll(ctx, agent.EnrollOptions{ControlPlane: env.URL, Token: tok2.Token, CAHash: tok2.CAFingerprint, PKIDir: dir, Force: true}, nil); err != nil {
		t.Fatalf("re-enroll with force: %v", err)
	}
}
