package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/pki"
)

func runCmd(t *testing.T, ctx context.Context, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestAdminThenServe bootstraps a tenant and a token on the store, serves
// on the same data dir, uses the token through the API, and stops on
// context cancellation (as on SIGTERM).
func TestAdminThenServe(t *testing.T) {
	dir := t.TempDir()
	data := "--data-dir=" + dir
	if code, _, errs := runCmd(t, t.Context(), "admin", "tenant", "create", "acme", data); code != 0 {
		t.Fatalf("tenant create: exit %d: %s", code, errs)
	}
	code, out, errs := runCmd(t, t.Context(), "admin", "token", "create", "--tenant=acme", data)
	if code != 0 || !strings.HasPrefix(out, "nkudo_") {
		t.Fatalf("token create: exit %d, stdout %q: %s", code, out, errs)
	}
	token := strings.TrimSpace(out)
	if code, _, _ := runCmd(t, t.Context(), "admin", "token", "create", data); code != 2 {
		t.Errorf("token create without --tenant or --admin: exit %d, want 2", code)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	go func() {
		code, _, _ := runCmd(t, ctx, "serve", data, "--listen="+addr)
		done <- code
	}()
	// Read (never create) the dev CA the server generates; the server
	// writes the CA before the server certificate.
	var pool *x509.CertPool
	deadline := time.Now().Add(10 * time.Second)
	for pool == nil {
		if _, err := os.Stat(filepath.Join(dir, "pki", pki.ServerCertFile)); err == nil {
			b, err := os.ReadFile(filepath.Join(dir, "pki", pki.CACertFile))
			if err != nil {
				t.Fatal(err)
			}
			pool = x509.NewCertPool()
			pool.AppendCertsFromPEM(b)
		}
		if time.Now().After(deadline) {
			t.Fatal("dev PKI never appeared")
		}
		time.Sleep(20 * time.Millisecond)
	}
	c, err := api.NewClient(api.ClientConfig{BaseURL: "https://" + addr, Token: token, RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	for {
		if err := c.Health(t.Context(), true); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("server never became ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := c.CreateSite(t.Context(), "s1"); err != nil {
		t.Fatalf("create site with the bootstrapped token: %v", err)
	}
	c.CloseIdleConnections()
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("serve exit %d after cancel, want 0", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop after cancel")
	}
	code, out, errs = runCmd(t, t.Context(), "admin", "site", "revoke", "--tenant=acme", "s1", data)
	if code != 1 || !strings.Contains(errs, "never enrolled") {
		t.Errorf("revoke of a never-enrolled site: exit %d, %q %q", code, out, errs)
	}
}

func TestPKIInitAndRequirePersistent(t *testing.T) {
	dir := t.TempDir()
	code, out, errs := runCmd(t, t.Context(), "pki", "init", "--dir="+filepath.Join(dir, "pki"), "--host=cp.example.net")
	if code != 0 || !strings.Contains(out, "CA_CERT_FILE=") || !strings.Contains(out, "AUDIT_KEY_FILE=") || !strings.Contains(out, "sha256:") {
		t.Fatalf("pki init: exit %d: %s %s", code, out, errs)
	}
	t.Setenv("REQUIRE_PERSISTENT_PKI", "true")
	code, _, errs = runCmd(t, t.Context(), "serve", "--data-dir="+dir, "--listen=127.0.0.1:0")
	if code != 1 || !strings.Contains(errs, "REQUIRE_PERSISTENT_PKI") || !strings.Contains(errs, "CA_KEY_FILE") {
		t.Errorf("serve with REQUIRE_PERSISTENT_PKI and no files: exit %d: %s", code, errs)
	}
}

func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "nkudo.yaml")
	if err := os.WriteFile(cfg, []byte("data-dir: "+filepath.Join(dir, "data")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := runCmd(t, t.Context(), "--config="+cfg, "migrate"); code != 0 {
		t.Fatalf("migrate: exit %d: %s", code, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "nkudo.db")); err != nil {
		t.Errorf("config file's data-dir was not used: %v", err)
	}
}

// TestConfigFileBelowEnvironment: flags beat the environment, which beats
// the config file; a key that names no flag is an error naming it.
func TestConfigFileBelowEnvironment(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "nkudo.yaml")
	if err := os.WriteFile(cfg, []byte("data-dir: "+filepath.Join(dir, "from-file")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NKUDO_DATA_DIR", filepath.Join(dir, "from-env"))
	if code, _, errs := runCmd(t, t.Context(), "--config="+cfg, "migrate"); code != 0 {
		t.Fatalf("migrate: exit %d: %s", code, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "from-env", "nkudo.db")); err != nil {
		t.Errorf("NKUDO_DATA_DIR did not win over the config file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "from-file")); err == nil {
		t.Errorf("the config file's data-dir was used although NKUDO_DATA_DIR is set")
	}
	if code, _, errs := runCmd(t, t.Context(), "--config="+cfg, "migrate", "--data-dir="+filepath.Join(dir, "from-flag")); code != 0 {
		t.Fatalf("migrate --data-dir: exit %d: %s", code, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "from-flag", "nkudo.db")); err != nil {
		t.Errorf("--data-dir did not win over NKUDO_DATA_DIR: %v", err)
	}

	if err := os.WriteFile(cfg, []byte("data-dir: x\ndata_dri: y\nlisten: 127.0.0.1:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runCmd(t, t.Context(), "--config="+cfg, "migrate")
	if code != 2 || !strings.Contains(errs, "unknown keys data-dri") {
		t.Errorf("config file with a misspelt key: exit %d: %s", code, errs)
	}
}

// TestVersionFlagAndUsageErrors: --version prints the version command's
// line; a usage error exits 2 with the usage of that command only.
func TestVersionFlagAndUsageErrors(t *testing.T) {
	code, flag, _ := runCmd(t, t.Context(), "--version")
	_, cmd, _ := runCmd(t, t.Context(), "version")
	if code != 0 || flag != cmd || !strings.HasPrefix(flag, "nkudo ") {
		t.Errorf("--version: exit %d, %q; version: %q", code, flag, cmd)
	}
	code, _, errs := runCmd(t, t.Context(), "admin", "tenant", "create", "--no-such-flag")
	if code != 2 || !strings.Contains(errs, "--no-such-flag") || !strings.Contains(errs, "nkudo admin tenant create") {
		t.Errorf("usage error: exit %d:\n%s", code, errs)
	}
	if strings.Contains(errs, "serve") || strings.Contains(errs, "token") {
		t.Errorf("usage error shows other commands:\n%s", errs)
	}
}

// TestAdminJSON: the admin commands that print data print one JSON object
// with -o json, and nothing else on stdout.
func TestAdminJSON(t *testing.T) {
	data := "--data-dir=" + t.TempDir()
	code, out, errs := runCmd(t, t.Context(), "admin", "tenant", "create", "acme", "--name", "Acme", "-o", "json", data)
	var tenant struct{ ID, Name string }
	if err := json.Unmarshal([]byte(out), &tenant); code != 0 || err != nil || tenant.ID != "acme" || tenant.Name != "Acme" {
		t.Fatalf("tenant create -o json: exit %d, %v: %q %s", code, err, out, errs)
	}
	code, out, errs = runCmd(t, t.Context(), "admin", "token", "create", "--tenant=acme", "--name=ci", "-o", "json", data)
	var tok api.CreateTokenResponse
	if err := json.Unmarshal([]byte(out), &tok); code != 0 || err != nil || !strings.HasPrefix(tok.Token, "nkudo_") || tok.Tenant != "acme" || tok.Name != "ci" {
		t.Fatalf("token create -o json: exit %d, %v: %q %s", code, err, out, errs)
	}
	var rep struct {
		Tenant   string
		Deleted  bool
		Contents struct {
			APITokens int `json:"apiTokens"`
		}
	}
	code, out, _ = runCmd(t, t.Context(), "admin", "tenant", "delete", "acme", "-o", "json", data)
	if err := json.Unmarshal([]byte(out), &rep); code != 1 || err != nil || rep.Tenant != "acme" || rep.Deleted || rep.Contents.APITokens != 1 {
		t.Errorf("tenant delete -o json without --purge: exit %d, %v: %q", code, err, out)
	}
	code, out, errs = runCmd(t, t.Context(), "admin", "tenant", "delete", "acme", "--purge", "--yes", "-o", "json", data)
	if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil || !rep.Deleted {
		t.Errorf("tenant delete --purge -o json: exit %d, %v: %q %s", code, err, out, errs)
	}
}

// TestCompletion: with COMP_LINE set (bash's complete -C), nkudo prints
// the candidates for the word being completed and exits 0.
func TestCompletion(t *testing.T) {
	t.Setenv("COMP_LINE", "nkudo admin to")
	code, out, errs := runCmd(t, t.Context())
	if code != 0 || strings.TrimSpace(out) != "token" {
		t.Errorf("completion of %q: exit %d, %q %s", "nkudo admin to", code, out, errs)
	}
	t.Setenv("COMP_LINE", "")
	code, out, _ = runCmd(t, t.Context(), "completion", "zsh")
	if code != 0 || !strings.Contains(out, "bashcompinit") || !strings.Contains(out, " nkudo\n") {
		t.Errorf("completion zsh: exit %d, %q", code, out)
	}
}
