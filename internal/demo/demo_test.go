package demo

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/internal/egress"
	manifestsexample "github.com/nkudo/nkudo/manifests-example"
	"github.com/nkudo/nkudo/pki"
	"github.com/nkudo/nkudo/reconciler"
	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/backend"
)

// TestMain doubles as the fake Cloud Hypervisor: the demo links
// <data-dir>/bin/cloud-hypervisor to this test binary, exactly as `nkudo
// demo` links it to itself.
func TestMain(m *testing.M) {
	if IsFakeHypervisor(os.Args[0]) {
		// This process is a VMM, not a test run: its main owns the context.
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := FakeHypervisor(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	// As nkudo's main does: the demo's git server is fetched over HTTP.
	egress.InstallGit()
	os.Exit(m.Run())
}

// testServe wires the control plane like `nkudo serve` does: store, dev
// PKI, the GitOps loop (reconciler + webhooks) and the API server.
func testServe(ctx context.Context, ln net.Listener, dataDir string, log *slog.Logger) (err error) {
	key, err := pki.LoadAuditKey(filepath.Join(dataDir, "pki", pki.AuditKeyFile), true)
	if err != nil {
		ln.Close()
		return err
	}
	st, err := backend.OpenWith(ctx, "", dataDir, backend.OpenOptions{Logger: log, AuditKey: store.AuditKey(key.Key), AuditKeyFresh: key.Fresh})
	if err != nil {
		ln.Close()
		return err
	}
	if err := key.Commit(); err != nil {
		ln.Close()
		st.Close()
		return err
	}
	defer func() { err = errors.Join(err, st.Close()) }()
	auth, err := pki.Load(pki.Config{DevDir: filepath.Join(dataDir, "pki")}, log)
	if err != nil {
		ln.Close()
		return err
	}
	loop, err := reconciler.NewLoop(reconciler.Options{Store: st, DataDir: dataDir, Logger: log,
		ApplyCheckInterval: 250 * time.Millisecond,
		Egress:             egress.Policy{Allow: egress.Loopback()}}) // the demo's git server is on loopback
	if err != nil {
		ln.Close()
		return err
	}
	srv, err := controlplane.New(controlplane.Options{Store: st, PKI: auth, Logger: log,
		Reconciler: loop, Webhooks: loop.Webhooks,
		MinHeartbeatInterval: time.Second, EnrollBurst: 50, ShutdownTimeout: 5 * time.Second})
	if err != nil {
		ln.Close()
		return err
	}
	loopCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = loop.Run(loopCtx) })
	err = srv.Serve(ctx, ln)
	cancel()
	wg.Wait()
	return err
}

func TestDemoOnceConvergesBothCommits(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// A short path: VMM sockets live under it and must fit 107 bytes.
	base, err := os.MkdirTemp("", "nkd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	dataDir := filepath.Join(base, "demo")
	var out bytes.Buffer
	var mu sync.Mutex
	var events []Event
	var logs bytes.Buffer
	err = Run(t.Context(), Options{
		Manifests: "../../manifests-example", DataDir: dataDir, Serve: testServe,
		SelfExecutable: self, Out: &out, Once: true, Timeout: 90 * time.Second,
		Logger: slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Events: func(e Event) { mu.Lock(); events = append(events, e); mu.Unlock() },
	})
	if err != nil {
		t.Fatalf("demo --once: %v\n---- story ----\n%s\n---- logs (tail) ----\n%s", err, out.String(), tail(logs.String(), 80))
	}
	t.Logf("story:\n%s", out.String())

	var commits, converged []string
	var want []string                // the second commit's actions, from what it says it changed
	applied := map[string][]string{} // commit → "site op vm" of succeeded actions
	for _, e := range events {
		switch e.Step {
		case StepRepo:
			commits = append(commits, e.Commit)
		case StepCommit:
			if site, ok := e.Data["site"].(string); ok {
				commits = append(commits, e.Commit)
				want = []string{site + " create " + e.Data["added"].(string), site + " resize " + e.Data["resized"].(string),
					site + " start " + e.Data["added"].(string)}
			}
		case StepConverged:
			converged = append(converged, e.Commit)
		case StepAction:
			if f := strings.Fields(e.Message); len(f) == 3 && f[2] == "succeeded" {
				applied[e.Commit] = append(applied[e.Commit], e.Site+" "+f[0]+" "+f[1])
			}
		}
	}
	if len(commits) != 2 {
		t.Fatalf("commits told: %v, want 2", commits)
	}
	if diff := cmp.Diff(commits, converged); diff != "" {
		t.Errorf("converged commits (-commits +converged):\n%s", diff)
	}
	// The second commit resizes one VM and adds one: exactly three actions,
	// nothing else touched anywhere (the planner's minimality, seen end to end).
	second := applied[commits[1]]
	sort.Strings(second)
	if diff := cmp.Diff(want, second); diff != "" {
		t.Errorf("actions applied for the second commit (-want +got):\n%s", diff)
	}
	if n := len(applied[commits[0]]); n < 10 {
		t.Errorf("first commit applied %d actions, want at least one per example VM (10): %v", n, applied[commits[0]])
	}
	// Nothing keeps running: every VMM socket is gone.
	if socks := sockets(dataDir); len(socks) > 0 {
		t.Errorf("VMM sockets left after the demo: %v", socks)
	}
	for _, s := range []string{"plan:", "nkudo/apply", "every site converged", "NKUDO_TOKEN=", "# dashboard: open https://", "one-time sign-in link", "/ui/signin/code?code="} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("story lacks %q", s)
		}
	}
	// The sign-in link carries a code, never the token.
	if m := regexp.MustCompile(`(?m)NKUDO_TOKEN=(\S+)`).FindStringSubmatch(out.String()); m != nil {
		for _, line := range strings.Split(out.String(), "\n") {
			if strings.Contains(line, "/ui/signin/code?") && strings.Contains(line, m[1]) {
				t.Errorf("the sign-in link carries the API token: %s", line)
			}
		}
	}
}

// TestDemoInterruptedMidPlanStopsEverything is Ctrl-C in the middle of the
// first convergence: Run returns nil and leaves no VMM behind. It starts
// from the embedded manifests-example in a directory without one, as a
// released binary does.
func TestDemoInterruptedMidPlanStopsEverything(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	base, err := os.MkdirTemp("", "nkd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	dataDir := filepath.Join(base, "demo")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out bytes.Buffer
	var mu sync.Mutex
	interrupted := false
	err = Run(ctx, Options{
		ManifestsFS: manifestsexample.FS(), DataDir: dataDir, Serve: testServe, SelfExecutable: self,
		Out: &out, Timeout: 90 * time.Second, Logger: slog.New(slog.DiscardHandler),
		Events: func(e Event) {
			mu.Lock()
			defer mu.Unlock()
			if e.Step == StepAction && strings.HasSuffix(e.Message, "succeeded") && !interrupted {
				interrupted = true
				cancel() // Ctrl-C
			}
		},
	})
	if err != nil {
		t.Fatalf("Run after Ctrl-C = %v, want nil\n%s", err, out.String())
	}
	if !interrupted {
		t.Fatalf("the story ended before any action succeeded:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "interrupted") {
		t.Errorf("the story does not say it was interrupted:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "validated the built-in manifests-example: 3 sites") {
		t.Errorf("the story does not start from the built-in manifests-example:\n%s", out.String())
	}
	if socks := sockets(dataDir); len(socks) > 0 {
		t.Errorf("VMM sockets left after Ctrl-C: %v", socks)
	}
}

func sockets(dir string) []string {
	var socks []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type()&fs.ModeSocket != 0 {
			socks = append(socks, p)
		}
		return nil
	})
	return socks
}

func TestDemoRefusesANonEmptyDataDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Run(t.Context(), Options{Manifests: "../../manifests-example", DataDir: dir, Serve: testServe, SelfExecutable: "/bin/false"})
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("Run = %v, want a refusal naming the non-empty data dir", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "keep")); err != nil || string(b) != "x" {
		t.Errorf("the existing file was touched: %q, %v", b, err)
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
