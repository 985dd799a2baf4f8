package scripts_test

import (
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/controlplane/cptest"
)

func TestNkudoSite(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	acme := env.NewTenant("acme")
	script := filepath.Join(repoRoot(t), "scripts", "nkudo-site.sh")
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: env.PKI.CACert().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	conn := []string{"NKUDO_SERVER=" + env.URL, "NKUDO_CA_FILE=" + caFile, "NKUDO_TOKEN=" + acme.Token, "NKUDO_TENANT="}

	t.Run("token for a new site", func(t *testing.T) {
		out := mustRun(t, t.TempDir(), conn, script, "token", "store-042", "--create", "--ttl", "2h")
		if !strings.Contains(out, "created site store-042") {
			t.Errorf("--create did not create the site:\n%s", out)
		}
		m := regexp.MustCompile(`(?m)^token: +(\S+)$`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no token printed:\n%s", out)
		}
		want := "./install-edge.sh --control-plane " + env.URL + " --token " + m[1] + " --ca-hash " + env.CAFingerprint
		if !strings.Contains(out, want) {
			t.Errorf("install command missing; want %q in:\n%s", want, out)
		}
		// A second token for the now existing site works without --create too.
		out = mustRun(t, t.TempDir(), conn, script, "token", "store-042")
		if strings.Contains(out, "created site") || !strings.Contains(out, "ca-hash:   "+env.CAFingerprint) {
			t.Errorf("second token:\n%s", out)
		}
	})

	t.Run("errors name the cause", func(t *testing.T) {
		out, err := run(t, t.TempDir(), conn, script, "token", "no-such-site")
		if err == nil || !strings.Contains(out, "HTTP 404") {
			t.Errorf("token for an unknown site: err=%v\n%s", err, out)
		}
		out, err = run(t, t.TempDir(), conn, script, "token", "Bad_Name")
		if err == nil || !strings.Contains(out, "is not a DNS label") {
			t.Errorf("bad site name: err=%v\n%s", err, out)
		}
		bad := append(append([]string(nil), conn...), "NKUDO_TOKEN=nkudo_wrong")
		out, err = run(t, t.TempDir(), bad, script, "token", "store-042")
		if err == nil || !strings.Contains(out, "HTTP 401") {
			t.Errorf("wrong API token: err=%v\n%s", err, out)
		}
	})

	t.Run("netbird setup key", func(t *testing.T) {
		env.NewSite("acme", "store-043")
		keyFile := filepath.Join(t.TempDir(), "setupkey")
		if err := os.WriteFile(keyFile, []byte("A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		out := mustRun(t, t.TempDir(), conn, script, "netbird", "store-043", "--setup-key-file", keyFile, "--management-url", "https://netbird.example.com:443")
		if strings.Contains(out, "A1B2C3D4") {
			t.Errorf("the setup key was printed:\n%s", out)
		}
		site, err := acme.Client.GetSite(t.Context(), "store-043")
		if err != nil {
			t.Fatal(err)
		}
		if !site.NetBirdConfigured || site.NetBirdManagementURL != "https://netbird.example.com:443" {
			t.Errorf("site after netbird: configured=%v url=%q", site.NetBirdConfigured, site.NetBirdManagementURL)
		}
	})
}
