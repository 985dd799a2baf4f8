package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/pki"
)

// TestAdminUsesAuditKey: admin commands find the audit key where serve
// keeps it (the dev PKI directory) and extend the keyed chain; pointed at
// no key they refuse to write rather than add events the chain would show
// as forged.
func TestAdminUsesAuditKey(t *testing.T) {
	ctx := t.Context()
	env := cptest.Start(t, cptest.Options{})
	if _, err := os.Stat(filepath.Join(env.DataDir, "pki", pki.AuditKeyFile)); err != nil {
		t.Fatalf("no audit key beside the dev CA: %v", err)
	}
	if code, out, errs := runCmd(t, ctx, append([]string{"admin", "tenant", "create", "acme"}, storeArgs(env)...)...); code != 0 {
		t.Fatalf("admin tenant create with the key: exit %d\n%s%s", code, out, errs)
	}
	if v, err := env.Admin.VerifyAudit(ctx); err != nil || !v.OK || v.KeyedFrom != 1 {
		t.Errorf("chain after an admin command: %+v, %v; want intact and keyed", v, err)
	}
	args := append([]string{"admin", "tenant", "create", "globex", "--audit-key-file", filepath.Join(t.TempDir(), "missing.key")}, storeArgs(env)...)
	code, _, errs := runCmd(t, ctx, args...)
	if code == 0 || !strings.Contains(errs, "audit key") {
		t.Errorf("admin tenant create without the key: exit %d, %q; want a refusal naming the audit key", code, errs)
	}
	if v, err := env.Admin.VerifyAudit(ctx); err != nil || !v.OK {
		t.Errorf("chain after the refused command: %+v, %v; want intact", v, err)
	}
}
