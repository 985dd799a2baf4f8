package netbird

import (
	"bytes"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/api"
)

var fakeDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nbfake-bin")
	if err != nil {
		panic(err)
	}
	fakeDir = dir
	if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "netbird"), "github.com/nkudo/nkudo/tests/fakes/netbird").CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// withFake puts the fake netbird first on PATH with its own state dir.
func withFake(t *testing.T, state string) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("PATH", fakeDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("NBFAKE_STATE_DIR", dir)
	if state != "" {
		if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte(state), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestUpStatusAndFacts(t *testing.T) {
	dir := withFake(t, "")
	var logs bytes.Buffer
	c := &Client{Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	ctx := t.Context()
	before := c.Facts(ctx)
	if !before.Installed || before.State != "NeedsLogin" || before.Error == "" || before.ManagementConnected {
		t.Errorf("facts before up = %+v", before)
	}
	const key = "A1B2C3D4-0000-4000-8000-SECRETSECRET"
	cfg := api.NetBirdConfig{ManagementURL: "https://nb.example.net:443", SetupKey: key}
	if err := c.Up(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := c.Up(ctx, cfg); err != nil { // "Already connected" is success
		t.Fatalf("second up: %v", err)
	}
	got := c.Facts(ctx)
	want := api.NetBirdFacts{Installed: true, State: "Connected", IP: "100.64.0.33", FQDN: "edge.netbird.cloud", ManagementConnected: true}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("facts after up (-want +got):\n%s", d)
	}
	if err := c.Ready(ctx); err != nil {
		t.Errorf("ready: %v", err)
	}
	calls, _ := os.ReadFile(filepath.Join(dir, "calls.log"))
	if !strings.Contains(string(calls), "up --setup-key REDACTED --management-url https://nb.example.net:443") {
		t.Errorf("netbird calls:\n%s", calls)
	}
	if strings.Contains(logs.String(), key) {
		t.Errorf("setup key logged: %s", logs.String())
	}
}

func TestFailuresAreFacts(t *testing.T) {
	const key = "SECRET-KEY-VALUE"
	cases := []struct {
		name, state string
		wantErr     string
	}{
		{"daemon down", `{"daemonDown":true}`, "failed to connect to daemon"},
		{"login refused", `{"loginError":"invalid setup key"}`, "PermissionDenied"},
		{"signal down", `{"status":"Connected","setupKeyUsed":true,"signalDown":true,"ip":"100.64.0.9/16"}`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			withFake(t, tc.state)
			c := &Client{}
			err := c.Up(t.Context(), api.NetBirdConfig{SetupKey: key})
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("up = %v, want %q", err, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), key) {
				t.Errorf("setup key in error: %v", err)
			}
			f := c.Facts(t.Context())
			if f.Error == "" {
				t.Errorf("facts = %+v, want an error fact", f)
			}
		})
	}
	t.Run("not installed", func(t *testing.T) {
		c := &Client{Binary: "/nonexistent/netbird"}
		if f := c.Facts(t.Context()); f.Installed || !strings.Contains(f.Error, "not installed") {
			t.Errorf("facts = %+v", f)
		}
	})
}
