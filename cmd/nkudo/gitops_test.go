package main

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/sqlite"
)

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

// TestGitOpsLogsNameTheirComponentOnce: the loop's packages name their own
// component; serve must not add another.
func TestGitOpsLogsNameTheirComponentOnce(t *testing.T) {
	dir := t.TempDir()
	st, err := sqlite.Open(t.Context(), filepath.Join(dir, "nkudo.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	admin := store.Actor{Kind: store.ActorAdmin, ID: "test"}
	if _, err := st.CreateTenant(t.Context(), admin, store.Tenant{ID: "acme"}); err != nil {
		t.Fatal(err)
	}
	repo, err := st.CreateRepository(t.Context(), admin, store.Repository{Tenant: "acme", Name: "fleet", URL: "file://" + filepath.Join(dir, "missing.git"), Branch: "main"}, "secret")
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	var opts controlplane.Options
	ctx, cancel := context.WithCancel(t.Context())
	stop, err := wireGitOps(ctx, st, log, dir, "", GitOpsFlags{PollInterval: "-1s", OfflineTimeout: time.Minute}, &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); stop() })
	if _, err := opts.Reconciler.Trigger(t.Context(), "acme", repo.ID, ""); err != nil {
		t.Fatal(err)
	}
	// The unreachable repository makes the reconciler log an error.
	var lines []string
	deadline := time.Now().Add(20 * time.Second)
	for len(lines) == 0 {
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, `"component":"reconciler"`) {
				lines = append(lines, l)
			}
		}
		if len(lines) == 0 && time.Now().After(deadline) {
			t.Fatalf("nothing logged by the reconciler:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, line := range lines {
		if n := strings.Count(line, `"component":`); n != 1 {
			t.Errorf("log line names its component %d times, want once: %s", n, line)
		}
	}
}

// TestServeGitOpsFlags: the status prefix and the site offline timeout are
// serve flags, the timeout also read from its environment variable (a bad
// value is refused by name before anything starts).
func TestServeGitOpsFlags(t *testing.T) {
	data := "--data-dir=" + t.TempDir()
	code, _, errs := runCmd(t, t.Context(), "serve", data, "--status-prefix=eu/", "--site-offline-timeout=bogus")
	if code != 2 || strings.Contains(errs, "unknown flag") || !strings.Contains(errs, "site-offline-timeout") {
		t.Errorf("serve with a bad --site-offline-timeout: exit %d: %s", code, errs)
	}
	t.Setenv("NKUDO_SITE_OFFLINE_TIMEOUT", "bogus")
	t.Setenv("NKUDO_STATUS_PREFIX", "eu/")
	code, _, errs = runCmd(t, t.Context(), "serve", data)
	if code != 2 || !strings.Contains(errs, "site-offline-timeout") {
		t.Errorf("serve with a bad NKUDO_SITE_OFFLINE_TIMEOUT: exit %d: %s", code, errs)
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  bool
	}{
		{"1GiB", 1 << 30, false}, {"512 MiB", 512 << 20, false}, {"4096", 4096, false}, {"64KiB", 64 << 10, false},
		{"-1", -1, false}, {"", 0, false},
		{"0", 0, true}, {"1GB", 0, true}, {"lots", 0, true}, {"9999999999GiB", 0, true},
	} {
		got, err := parseSize(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// TestGitOpsMetricsOnServerRegistry: serve exports the loop's
// nkudo_reconcile_errors_total from the registry the server serves, beside
// the Go and process collectors a server's own registry has.
func TestGitOpsMetricsOnServerRegistry(t *testing.T) {
	dir := t.TempDir()
	st, err := sqlite.Open(t.Context(), filepath.Join(dir, "nkudo.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	admin := store.Actor{Kind: store.ActorAdmin, ID: "test"}
	if _, err := st.CreateTenant(t.Context(), admin, store.Tenant{ID: "acme"}); err != nil {
		t.Fatal(err)
	}
	// Local sources are refused without --allow-local-sources: the
	// reconcile fails on the operator's side.
	repo, err := st.CreateRepository(t.Context(), admin, store.Repository{Tenant: "acme", Name: "fleet", URL: "file://" + filepath.Join(dir, "missing.git"), Branch: "main"}, "secret")
	if err != nil {
		t.Fatal(err)
	}
	var opts controlplane.Options
	ctx, cancel := context.WithCancel(t.Context())
	stop, err := wireGitOps(ctx, st, slog.New(slog.DiscardHandler), dir, "", GitOpsFlags{PollInterval: "-1s", OfflineTimeout: time.Minute}, &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); stop() })
	if opts.Registry == nil {
		t.Fatal("wireGitOps left Options.Registry nil: the loop's series would not be served")
	}
	if _, err := opts.Reconciler.Trigger(t.Context(), "acme", repo.ID, ""); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mfs, err := opts.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		names := map[string]float64{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				if c := m.GetCounter(); c != nil {
					names[mf.GetName()] += c.GetValue()
				} else {
					names[mf.GetName()] = 0
				}
			}
		}
		if _, ok := names["go_goroutines"]; !ok {
			t.Fatalf("the shared registry lacks the Go collector: %v", names)
		}
		if names["nkudo_reconcile_errors_total"] >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no nkudo_reconcile_errors_total after a failed reconcile: %v", names)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
