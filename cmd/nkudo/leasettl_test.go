package main

import (
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/pki"
	"github.com/nkudo/nkudo/store/sqlite"
)

// TestLeaseTTLFlag: a --lease-ttl under a second is refused naming the
// flag, and the simulator hands its --lease-ttl to the replicas it starts.
func TestLeaseTTLFlag(t *testing.T) {
	dir := t.TempDir()
	st, err := sqlite.Open(t.Context(), filepath.Join(dir, "nkudo.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var opts controlplane.Options
	_, err = wireGitOps(t.Context(), st, slog.New(slog.DiscardHandler), dir, "", GitOpsFlags{PollInterval: "-1s", LeaseTTL: 10 * time.Millisecond}, &opts)
	if err == nil || !strings.Contains(err.Error(), "--lease-ttl") {
		t.Fatalf("10ms lease: err = %v, want one naming --lease-ttl", err)
	}

	c := BenchFleetCmd{Sites: 10, HeartbeatInterval: time.Second, PollInterval: "-1s", LeaseTTL: 15 * time.Second}
	if args := c.serveArgs("127.0.0.1:1", dir, "key", pki.InitFiles{}); !slices.Contains(args, "--lease-ttl=15s") {
		t.Errorf("serve args %q lack --lease-ttl=15s", args)
	}
	c.LeaseTTL = 0
	for _, a := range c.serveArgs("127.0.0.1:1", dir, "key", pki.InitFiles{}) {
		if strings.HasPrefix(a, "--lease-ttl") {
			t.Errorf("serve args carry %q without --lease-ttl", a)
		}
	}
}
