package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/pki"
)

// lockedBuffer collects the control plane's log lines from its goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// siteEnv starts a control plane with tenant acme and points nkudoctl at
// it through the environment, pinning the CA by fingerprint. Its log, at
// debug level, goes to the returned buffer.
func siteEnv(t *testing.T) (*cptest.Env, cptest.Tenant, *lockedBuffer) {
	t.Helper()
	logs := &lockedBuffer{}
	env := cptest.Start(t, cptest.Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	acme := env.NewTenant("acme")
	t.Setenv("NKUDO_CONFIG", filepath.Join(t.TempDir(), "none.json"))
	t.Setenv("NKUDO_SERVER", env.URL)
	t.Setenv("NKUDO_TOKEN", acme.Token)
	t.Setenv("NKUDO_CA_HASH", env.CAFingerprint)
	t.Setenv("NKUDO_CA_FILE", "")
	t.Setenv("NKUDO_TENANT", "")
	return env, acme, logs
}

// nkudoctlIn runs nkudoctl with stdin.
func nkudoctlIn(t *testing.T, stdin io.Reader, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(t.Context(), args, &Streams{In: stdin, Out: &out, Err: &errb})
	return code, out.String(), errb.String()
}

// enroll redeems an enrollment token the way nkudo-edge does, pinned to
// caHash, and returns the control plane's answer.
func enroll(t *testing.T, url, token, caHash string) (api.CertResponse, error) {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "edge")
	if err != nil {
		t.Fatal(err)
	}
	c, err := api.NewClient(api.ClientConfig{BaseURL: url, CAFingerprint: caHash})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	return c.Enroll(t.Context(), api.EnrollRequest{Token: token, CSR: string(csr)})
}

func TestSitesToken(t *testing.T) {
	env, acme, _ := siteEnv(t)
	cmdRE := regexp.MustCompile(`^nkudo-edge enroll --control-plane (\S+) --token (\S+) --ca-hash (\S+)\n$`)

	// An unknown site without --create: the error says how to go on, and
	// nothing is created.
	code, out, errs := nkudoctl(t, "sites", "token", "store-042")
	if code != exitError || out != "" || !strings.Contains(errs, "not found") || !strings.Contains(errs, "--create") {
		t.Errorf("token for an unknown site: exit %d\nstdout %q\nstderr %q", code, out, errs)
	}
	if _, err := acme.Client.GetSite(t.Context(), "store-042"); err == nil {
		t.Error("a token request without --create registered the site")
	}

	start := time.Now()
	code, out, errs = nkudoctl(t, "sites", "token", "store-042", "--create", "--ttl", "2h")
	if code != exitOK {
		t.Fatalf("token --create: exit %d: %s", code, errs)
	}
	m := cmdRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("token --create: stdout is not one enroll command:\n%q", out)
	}
	if m[1] != env.URL || m[3] != env.CAFingerprint {
		t.Errorf("enroll command names %s and %s, want %s and %s", m[1], m[3], env.URL, env.CAFingerprint)
	}
	if !strings.Contains(errs, "created site store-042") || !strings.Contains(errs, "valid until") {
		t.Errorf("token --create: stderr %q", errs)
	}
	// The printed command works: its token enrolls the site once.
	if resp, err := enroll(t, m[1], m[2], m[3]); err != nil || resp.Site != "store-042" || resp.Tenant != "acme" {
		t.Fatalf("enroll with the printed token: %+v %v", resp, err)
	}
	if _, err := enroll(t, m[1], m[2], m[3]); err == nil {
		t.Error("the printed token enrolled twice")
	}

	// -o json: the whole answer, for the existing site; --create is a no-op.
	code, out, errs = nkudoctl(t, "sites", "token", "store-042", "--create", "-o", "json")
	if code != exitOK || strings.Contains(errs, "created site") {
		t.Fatalf("token -o json: exit %d: %s", code, errs)
	}
	var tok api.EnrollmentToken
	if err := json.Unmarshal([]byte(out), &tok); err != nil {
		t.Fatalf("token -o json: %v\n%s", err, out)
	}
	if tok.Site != "store-042" || tok.Tenant != "acme" || tok.CAFingerprint != env.CAFingerprint ||
		tok.Command != "nkudo-edge enroll --control-plane "+env.URL+" --token "+tok.Token+" --ca-hash "+env.CAFingerprint {
		t.Errorf("token -o json: %+v", tok)
	}
	// The server default TTL is an hour; the 2h token above was asked for explicitly.
	if d := tok.ExpiresAt.Sub(start); d < 50*time.Minute || d > 70*time.Minute {
		t.Errorf("default token expires after %s, want about 1h", d)
	}

	// "sites" alone still lists, as "sites list" does.
	for _, args := range [][]string{{"sites"}, {"sites", "list"}, {"sites", "-o", "json"}, {"sites", "list", "-o", "json"}} {
		code, out, errs := nkudoctl(t, args...)
		if code != exitOK || !strings.Contains(out, "store-042") {
			t.Errorf("%v: exit %d\n%s%s", args, code, out, errs)
		}
		if args[len(args)-1] == "json" {
			var sites []api.Site
			if err := json.Unmarshal([]byte(out), &sites); err != nil || len(sites) != 1 || sites[0].EnrolledAt.IsZero() {
				t.Errorf("%v: %v %+v", args, err, sites)
			}
		}
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"negative ttl", []string{"sites", "token", "store-042", "--ttl=-1h"}, "want a positive duration"},
		{"ttl over the server's limit", []string{"sites", "token", "store-042", "--ttl", "1000h"}, "ttl"},
		{"bad site name", []string{"sites", "token", "Bad_Name", "--create"}, "create site Bad_Name"},
		{"no site", []string{"sites", "token"}, "expected \"<site>\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := nkudoctl(t, tc.args...)
			if code != exitError || out != "" && !strings.HasPrefix(out, "Usage:") || !strings.Contains(errs, tc.want) {
				t.Errorf("exit %d, want %d\nstdout %q\nstderr %q, want it to hold %q", code, exitError, out, errs, tc.want)
			}
		})
	}

	t.Run("wrong API token", func(t *testing.T) {
		t.Setenv("NKUDO_TOKEN", "nkudo_wrong")
		if code, _, errs := nkudoctl(t, "sites", "token", "store-042"); code != exitError || !strings.Contains(errs, "unauthorized") {
			t.Errorf("exit %d: %s", code, errs)
		}
	})
}

func TestSitesNetBird(t *testing.T) {
	env, acme, logs := siteEnv(t)
	env.NewSite("acme", "store-043")
	const key = "A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF"
	const mgmt = "https://netbird.example.com:443"
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyFile := write("setupkey", "  "+key+"\n")

	// Every output of every run below must be free of the key.
	var outputs []string
	ctl := func(stdin string, args ...string) (int, string, string) {
		t.Helper()
		var in io.Reader
		if stdin != "" {
			in = strings.NewReader(stdin)
		}
		code, out, errs := nkudoctlIn(t, in, args...)
		outputs = append(outputs, out, errs)
		return code, out, errs
	}
	// netBird returns what a fresh enrollment of store-043 is given.
	netBird := func() *api.NetBirdConfig {
		t.Helper()
		tok := env.EnrollmentToken("acme", "store-043")
		resp, err := enroll(t, env.URL, tok.Token, tok.CAFingerprint)
		if err != nil {
			t.Fatal(err)
		}
		return resp.NetBird
	}

	code, out, errs := ctl("", "sites", "netbird", "store-043", "--setup-key-file", keyFile, "--management-url", mgmt)
	if code != exitOK || !strings.Contains(out, "NetBird setup key stored for site store-043") {
		t.Fatalf("netbird --setup-key-file: exit %d\n%s%s", code, out, errs)
	}
	site, err := acme.Client.GetSite(t.Context(), "store-043")
	if err != nil || !site.NetBirdConfigured || site.NetBirdManagementURL != mgmt {
		t.Errorf("site after netbird: configured=%v url=%q err=%v", site.NetBirdConfigured, site.NetBirdManagementURL, err)
	}
	// The agent is handed the key without the file's surrounding whitespace.
	if nb := netBird(); nb == nil || nb.SetupKey != key || nb.ManagementURL != mgmt {
		t.Errorf("enrollment after --setup-key-file gets %+v", nb)
	}

	code, out, errs = ctl("\n"+strings.ToLower(key)+"\n", "sites", "netbird", "store-043", "--setup-key-stdin", "--management-url", "http://nb.internal")
	if code != exitOK {
		t.Fatalf("netbird --setup-key-stdin: exit %d\n%s%s", code, out, errs)
	}
	if nb := netBird(); nb == nil || nb.SetupKey != strings.ToLower(key) || nb.ManagementURL != "http://nb.internal" {
		t.Errorf("enrollment after --setup-key-stdin gets %+v", nb)
	}
	// --setup-key-file - reads standard input too, as --actual - does.
	code, out, errs = ctl(strings.ToLower(key)+"\n", "sites", "netbird", "store-043", "--setup-key-file", "-", "--management-url", mgmt)
	if code != exitOK {
		t.Fatalf("netbird --setup-key-file -: exit %d\n%s%s", code, out, errs)
	}
	if nb := netBird(); nb == nil || nb.SetupKey != strings.ToLower(key) || nb.ManagementURL != mgmt {
		t.Errorf("enrollment after --setup-key-file - gets %+v", nb)
	}

	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"key as a flag", "", []string{"--setup-key", key}, "lands in shell history"},
		{"key as a flag with =", "", []string{"--setup-key=" + key}, "lands in shell history"},
		{"no key source", "", nil, "no setup key"},
		{"two key sources", key, []string{"--setup-key-file", keyFile, "--setup-key-stdin"}, "can't be used together"},
		{"empty file", "", []string{"--setup-key-file", write("empty", "\n")}, "is empty (to remove the key, pass --clear)"},
		{"missing file", "", []string{"--setup-key-file", filepath.Join(dir, "nope")}, "no such file"},
		{"empty stdin", "", []string{"--setup-key-stdin"}, "no standard input"},
		{"two lines", "", []string{"--setup-key-file", write("two", key+"\n"+key+"\n")}, "want the key alone"},
		{"huge file", "", []string{"--setup-key-file", write("huge", strings.Repeat(key, 100))}, "longer than 1024 bytes"},
		{"bad management URL", "", []string{"--setup-key-file", keyFile, "--management-url=ftp://nb"}, "want an http(s) URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"sites", "netbird", "store-043"}, tc.args...)
			if !strings.Contains(strings.Join(tc.args, " "), "--management-url") {
				args = append(args, "--management-url", mgmt)
			}
			code, _, errs := ctl(tc.stdin, args...)
			if code != exitError || !strings.Contains(errs, tc.want) {
				t.Errorf("exit %d, want %d; stderr %q, want it to hold %q", code, exitError, errs, tc.want)
			}
		})
	}
	t.Run("unknown site", func(t *testing.T) {
		code, _, errs := ctl("", "sites", "netbird", "store-999", "--setup-key-file", keyFile, "--management-url", mgmt)
		if code != exitError || !strings.Contains(errs, "set NetBird for site store-999") || !strings.Contains(errs, "not found") {
			t.Errorf("exit %d: %s", code, errs)
		}
	})
	// None of the refused runs changed the stored key.
	if nb := netBird(); nb == nil || nb.SetupKey != strings.ToLower(key) {
		t.Errorf("a refused run changed the NetBird config: %+v", nb)
	}

	code, out, errs = ctl("", "sites", "netbird", "store-043", "--clear", "--management-url", mgmt)
	if code != exitOK || !strings.Contains(out, "NetBird setup key cleared for site store-043") {
		t.Fatalf("netbird --clear: exit %d\n%s%s", code, out, errs)
	}
	if site, err := acme.Client.GetSite(t.Context(), "store-043"); err != nil || site.NetBirdConfigured {
		t.Errorf("site after --clear: configured=%v err=%v", site.NetBirdConfigured, err)
	}
	if nb := netBird(); nb != nil && nb.SetupKey != "" {
		t.Errorf("enrollment after --clear gets a setup key")
	}

	// The key is in none of nkudoctl's output, the server's log or the audit log.
	events, err := env.Admin.ListAudit(t.Context(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	auditJSON, _ := json.Marshal(events)
	if !bytes.Contains(auditJSON, []byte("store-043")) {
		t.Fatalf("the audit log does not mention store-043; the check below would prove nothing:\n%s", auditJSON)
	}
	for name, text := range map[string]string{
		"nkudoctl output": strings.Join(outputs, "\n"),
		"server log":      logs.String(),
		"audit log":       string(auditJSON),
	} {
		if strings.Contains(strings.ToLower(text), strings.ToLower(key)) {
			t.Errorf("the setup key appears in the %s:\n%s", name, text)
		}
	}
	if !strings.Contains(logs.String(), "store-043") {
		t.Errorf("the server log does not mention store-043; the check above proves nothing:\n%s", logs.String())
	}
}

// TestUnknownAuthorityHint: a server whose CA this machine does not trust
// fails with a hint naming the flags and the variable that fix it.
func TestUnknownAuthorityHint(t *testing.T) {
	siteEnv(t)
	t.Setenv("NKUDO_CA_HASH", "")
	code, _, errs := nkudoctlIn(t, nil, "sites")
	if code != exitError {
		t.Fatalf("exit %d, want %d: %s", code, exitError, errs)
	}
	for _, want := range []string{"hint:", "--ca-hash", "--ca-file", "NKUDO_CA_FILE"} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
}

// TestConfigPrecedence: the config file `login` writes is read through
// kong: flags win over the environment, which wins over the file; a key the
// file should not have is an error for the commands that connect, and the
// offline ones do not read it.
func TestConfigPrecedence(t *testing.T) {
	env, acme, _ := siteEnv(t)
	cfg := filepath.Join(t.TempDir(), "config.json")
	t.Setenv("NKUDO_CONFIG", cfg)
	for _, k := range []string{"NKUDO_SERVER", "NKUDO_TOKEN", "NKUDO_CA_HASH"} {
		t.Setenv(k, "")
	}
	write := func(c string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"server": "` + env.URL + `", "token": "` + acme.Token + `", "caHash": "` + env.CAFingerprint + `"}`)
	if code, out, errs := nkudoctlIn(t, nil, "sites"); code != exitOK {
		t.Fatalf("sites from the config file alone: exit %d\n%s%s", code, out, errs)
	}
	// Nothing listens on port 1: a command that uses it fails.
	t.Setenv("NKUDO_SERVER", "https://127.0.0.1:1")
	if code, _, errs := nkudoctlIn(t, nil, "sites"); code != exitError || !strings.Contains(errs, "127.0.0.1:1") {
		t.Errorf("NKUDO_SERVER did not win over the config file: exit %d: %s", code, errs)
	}
	if code, out, errs := nkudoctlIn(t, nil, "sites", "--server", env.URL); code != exitOK {
		t.Errorf("--server did not win over NKUDO_SERVER: exit %d\n%s%s", code, out, errs)
	}
	t.Setenv("NKUDO_SERVER", "")

	write(`{"server": "` + env.URL + `", "tokn": "x"}`)
	if code, _, errs := nkudoctlIn(t, nil, "sites"); code != exitError || !strings.Contains(errs, `unknown field "tokn"`) {
		t.Errorf("config file with an unknown key: exit %d: %s", code, errs)
	}
	example, err := filepath.Abs("../../manifests-example")
	if err != nil {
		t.Fatal(err)
	}
	if code, out, errs := nkudoctlIn(t, nil, "validate", example); code != exitOK {
		t.Errorf("validate with a broken config file: exit %d\n%s%s", code, out, errs)
	}
}
