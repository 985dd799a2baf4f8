package main

import (
	"crypto/tls"
	"crypto/x509"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/internal/egress"
	nbmgmt "github.com/nkudo/nkudo/tests/fakes/netbird-management"
)

func TestNetBirdSet(t *testing.T) {
	nb := &nbmgmt.Server{}
	ts := httptest.NewTLSServer(nb)
	t.Cleanup(ts.Close)
	roots := x509.NewCertPool()
	roots.AddCert(ts.Certificate())
	env := cptest.Start(t, cptest.Options{Configure: func(o *controlplane.Options) {
		o.NetBirdEgress = egress.Policy{Allow: egress.Loopback()}
		o.NetBirdTLS = &tls.Config{RootCAs: roots}
	}})
	acme := env.NewTenant("acme")
	t.Setenv("NKUDO_CONFIG", filepath.Join(t.TempDir(), "none.json"))
	t.Setenv("NKUDO_SERVER", env.URL)
	t.Setenv("NKUDO_TOKEN", acme.Token)
	t.Setenv("NKUDO_CA_HASH", env.CAFingerprint)
	t.Setenv("NKUDO_CA_FILE", "")
	t.Setenv("NKUDO_TENANT", "")

	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good"), filepath.Join(dir, "bad")
	if err := os.WriteFile(good, []byte(nbmgmt.DefaultToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("nbp_not_the_token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	ctl := func(args ...string) (int, string, string) {
		code, out, errs := nkudoctlIn(t, nil, args...)
		all.WriteString(out + errs)
		return code, out, errs
	}

	if code, out, errs := ctl("netbird"); code == exitOK || !strings.Contains(errs, "netbird set") {
		t.Errorf("show before set: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs := ctl("netbird", "set", "--url", ts.URL, "--token-file", bad); code == exitOK || !strings.Contains(errs, `"token"`) {
		t.Errorf("set with a wrong token: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs := ctl("netbird", "set", "--url", ts.URL, "--token-file", good)
	if code != exitOK || !strings.Contains(out, "netbird integration set: "+ts.URL) || !strings.Contains(out, "sha256:") {
		t.Fatalf("set: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = ctl("netbird", "show")
	if code != exitOK || !strings.Contains(out, ts.URL) || !strings.Contains(out, "credential:  netbird") {
		t.Errorf("show: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs := ctl("-o", "json", "netbird"); code != exitOK || !strings.Contains(out, `"url"`) {
		t.Errorf("show -o json: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs := ctl("netbird", "rm"); code != exitOK {
		t.Errorf("rm: exit %d\n%s%s", code, out, errs)
	}
	if strings.Contains(all.String(), nbmgmt.DefaultToken) || strings.Contains(all.String(), "nbp_not_the_token") {
		t.Errorf("a token was printed:\n%s", all.String())
	}
}

func TestNetBirdCell(t *testing.T) {
	up := &api.HostFacts{NetBird: api.NetBirdFacts{Installed: true, ManagementConnected: true, IP: "100.64.0.2"}}
	down := &api.HostFacts{NetBird: api.NetBirdFacts{Installed: true}}
	for _, tc := range []struct {
		site api.Site
		want string
	}{
		{api.Site{}, "-"},
		{api.Site{Facts: up}, "100.64.0.2"},
		{api.Site{Facts: down}, "DOWN"},
		{api.Site{Facts: down, NetBirdSync: &api.NetBirdSync{LastError: "netbird GET /api/groups: 500"}}, "DOWN, sync failing"},
		{api.Site{NetBirdSync: &api.NetBirdSync{KeyPending: true}}, "key pending"},
	} {
		if got := netbirdCell(tc.site); got != tc.want {
			t.Errorf("netbirdCell(%+v) = %q, want %q", tc.site, got, tc.want)
		}
	}
}
