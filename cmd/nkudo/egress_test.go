package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/store/sqlite"
)

// TestServeSourceFlags: the source and egress flags reach the control
// plane's options, with the data dir and the PKI files' directories
// protected; a bad CIDR is refused naming the flag.
func TestServeSourceFlags(t *testing.T) {
	dir := t.TempDir()
	st, err := sqlite.Open(t.Context(), filepath.Join(dir, "nkudo.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.DiscardHandler)

	var opts controlplane.Options
	_, err = wireGitOps(t.Context(), st, log, dir, "", GitOpsFlags{PollInterval: "-1s", EgressAllow: []string{"10.0.0.0/8", "nope"}}, &opts)
	if err == nil || !strings.Contains(err.Error(), "--egress-allow") || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("bad CIDR: err = %v, want one naming the flag and the entry", err)
	}

	f := GitOpsFlags{PollInterval: "-1s", AllowLocalSources: true, EgressAllow: []string{"127.0.0.0/8"}}
	f.protected = PKIFlags{CAKeyFile: "/etc/nkudo/pki/ca.key"}.pkiDirs()
	ctx, cancel := context.WithCancel(t.Context())
	stop, err := wireGitOps(ctx, st, log, dir, "", f, &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); stop() })
	if !opts.AllowLocalSources || strings.Join(opts.ProtectedDirs, ",") != dir+",/etc/nkudo/pki" {
		t.Errorf("options: allow %v, protected %q", opts.AllowLocalSources, opts.ProtectedDirs)
	}
}
