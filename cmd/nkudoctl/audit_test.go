package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/cptest"
	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/storetest"
)

// TestAuditVerify checks an intact chain, a chain with an edited event
// (changed behind the server's back with raw SQL), and the error exits.
func TestAuditVerify(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	acme := env.NewTenant("acme")
	env.NewSite("acme", "s1")
	t.Setenv("NKUDO_CONFIG", filepath.Join(t.TempDir(), "config.json"))
	t.Setenv("NKUDO_SERVER", env.URL)
	t.Setenv("NKUDO_CA_HASH", env.CAFingerprint)
	t.Setenv("NKUDO_TOKEN", env.AdminToken)
	t.Setenv("NKUDO_TENANT", "")

	code, out, errs := nkudoctl(t, "audit", "verify")
	if code != 0 || !strings.HasPrefix(out, "OK: audit hash chain intact (") {
		t.Fatalf("intact chain: exit %d\n%s%s", code, out, errs)
	}
	code, out, _ = nkudoctl(t, "audit", "verify", "-o", "json")
	var v api.AuditVerification
	if err := json.Unmarshal([]byte(out), &v); code != 0 || err != nil || !v.OK || v.Events < 3 {
		t.Errorf("intact chain, json: exit %d, %+v (%v)\n%s", code, v, err, out)
	}

	// A tenant token may not verify the installation-wide chain.
	if code, _, errs := nkudoctl(t, "audit", "verify", "--token", acme.Token); code != 2 || !strings.Contains(errs, "admin") {
		t.Errorf("tenant token: exit %d, %q, want 2", code, errs)
	}

	raw, ok := env.Store().(interface {
		ExecRaw(ctx context.Context, query string, args ...any) error
	})
	if !ok {
		t.Fatal("the SQLite store has no ExecRaw")
	}
	if err := raw.ExecRaw(t.Context(), `UPDATE audit_events SET actor = 'someone-else' WHERE seq = 2`); err != nil {
		t.Fatal(err)
	}
	code, out, errs = nkudoctl(t, "audit", "verify")
	if code != 1 || !strings.HasPrefix(out, "BROKEN: audit event 2: ") {
		t.Errorf("edited event: exit %d\n%s%s", code, out, errs)
	}
	code, out, _ = nkudoctl(t, "audit", "verify", "-o", "json")
	if err := json.Unmarshal([]byte(out), &v); code != 1 || err != nil || v.OK || v.FirstBroken != 2 {
		t.Errorf("edited event, json: exit %d, %+v (%v)", code, v, err)
	}

	t.Setenv("NKUDO_SERVER", "")
	if code, _, errs := nkudoctl(t, "audit", "verify"); code != 2 || !strings.Contains(errs, "no control plane") {
		t.Errorf("no server: exit %d, %q", code, errs)
	}
}

// TestAuditVerifyKeyedRechain: someone with write access to the database
// but not to the PKI directory edits an event and recomputes every later
// hash and the head; the hashes are consistent again, yet `nkudoctl audit
// verify` reports the chain broken, because the server checks the MACs
// under its audit key.
func TestAuditVerifyKeyedRechain(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	env.NewTenant("acme")
	env.NewSite("acme", "s1")
	t.Setenv("NKUDO_CONFIG", filepath.Join(t.TempDir(), "config.json"))
	t.Setenv("NKUDO_SERVER", env.URL)
	t.Setenv("NKUDO_CA_HASH", env.CAFingerprint)
	t.Setenv("NKUDO_TOKEN", env.AdminToken)
	t.Setenv("NKUDO_TENANT", "")
	code, out, errs := nkudoctl(t, "audit", "verify")
	if code != 0 || !strings.Contains(out, "keyed: MACs under the server's audit key check from event 1 on") {
		t.Fatalf("intact keyed chain: exit %d\n%s%s", code, out, errs)
	}
	raw, ok := env.Store().(storetest.Raw)
	if !ok {
		t.Fatal("the SQLite store has no ExecRaw")
	}
	storetest.Rechain(t, t.Context(), env.Store(), raw, func(e *store.AuditEvent) bool {
		if e.Action == "site.create" {
			e.Object = "site/someone-elses"
		}
		return true
	}, false)
	code, out, errs = nkudoctl(t, "audit", "verify")
	if code != 1 || !strings.HasPrefix(out, "BROKEN: audit event ") || !strings.Contains(out, "MAC") {
		t.Errorf("edited and re-chained: exit %d\n%s%s", code, out, errs)
	}
}

// TestAuditVerifyCheckpoint: truncating the newest events (and setting the
// head back to the last one kept) leaves a consistent chain that plain
// verification calls intact; a checkpoint saved before finds it.
func TestAuditVerifyCheckpoint(t *testing.T) {
	env := cptest.Start(t, cptest.Options{})
	acme := env.NewTenant("acme")
	env.NewSite("acme", "s1")
	t.Setenv("NKUDO_CONFIG", filepath.Join(t.TempDir(), "config.json"))
	t.Setenv("NKUDO_SERVER", env.URL)
	t.Setenv("NKUDO_CA_HASH", env.CAFingerprint)
	t.Setenv("NKUDO_TOKEN", env.AdminToken)
	t.Setenv("NKUDO_TENANT", "")
	cp := filepath.Join(t.TempDir(), "checkpoint.json")
	if code, out, errs := nkudoctl(t, "audit", "verify", "--save-checkpoint", cp); code != 0 {
		t.Fatalf("save checkpoint: exit %d\n%s%s", code, out, errs)
	}
	var saved struct{ Seq int64 }
	if b, err := os.ReadFile(cp); err != nil || json.Unmarshal(b, &saved) != nil || saved.Seq < 2 {
		t.Fatalf("checkpoint file: %v %+v", err, saved)
	}
	if _, err := acme.Client.CreateSite(t.Context(), "s2"); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := nkudoctl(t, "audit", "verify", "--checkpoint", cp); code != 0 || !strings.Contains(out, "checkpoint: event") {
		t.Fatalf("checkpoint on a grown chain: exit %d\n%s%s", code, out, errs)
	}

	// Truncate: drop everything from the checkpoint's event on.
	keep := saved.Seq - 1
	evs, err := env.Store().ListAudit(t.Context(), "", keep-1, 1)
	if err != nil || len(evs) != 1 {
		t.Fatal(evs, err)
	}
	raw := env.Store().(storetest.Raw)
	for _, q := range []string{
		fmt.Sprintf(`DELETE FROM audit_events WHERE seq > %d`, keep),
		fmt.Sprintf(`UPDATE audit_head SET seq = %d, hash = '%s', mac = '%s' WHERE id = 1`, keep, evs[0].Hash, evs[0].MAC),
	} {
		if err := raw.ExecRaw(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}
	if code, out, _ := nkudoctl(t, "audit", "verify"); code != 0 {
		t.Fatalf("truncated chain without a checkpoint: exit %d, %s; want it to pass (the documented limit), else this test proves nothing", code, out)
	}
	code, out, errs := nkudoctl(t, "audit", "verify", "--checkpoint", cp)
	if code != 1 || !strings.Contains(out, "truncated") {
		t.Errorf("truncated chain with the checkpoint: exit %d\n%s%s", code, out, errs)
	}
}
