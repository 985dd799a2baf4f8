package storetest

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/store"
)

// Reopen opens the same database again (every call a new store, closed by
// the callee at cleanup) with an audit key (nil = none); fresh says the key
// was just made (store.Options' AuditKeyFresh).
type Reopen func(key store.AuditKey, fresh bool) store.Store

// OpenDatabase makes a fresh, empty database and returns how to open it.
type OpenDatabase func(t *testing.T) Reopen

// AuditKeyed runs the keyed-chain suite: someone with write access to the
// database but without the audit key edits an event and recomputes every
// later hash and the head (a full re-chain), and VerifyAudit with the key
// still finds it; a restart cannot launder it; the chain of an installation
// that gets its first key is keyed from that point on.
func AuditKeyed(t *testing.T, openDB OpenDatabase) {
	key := store.AuditKey(strings.Repeat("k", 32))
	cases := []struct {
		name   string
		tamper func(t *testing.T, ctx context.Context, s store.Store, raw Raw)
		broken int64
		reason string
	}{
		{"edit and re-chain", func(t *testing.T, ctx context.Context, s store.Store, raw Raw) {
			Rechain(t, ctx, s, raw, func(e *store.AuditEvent) bool {
				if e.Seq == 3 {
					e.Actor = "admin:someone-else"
				}
				return true
			}, false)
		}, 3, "MAC"},
		{"edit, strip every MAC and re-chain", func(t *testing.T, ctx context.Context, s store.Store, raw Raw) {
			Rechain(t, ctx, s, raw, func(e *store.AuditEvent) bool {
				if e.Seq == 3 {
					e.Actor = "admin:someone-else"
				}
				return true
			}, true)
		}, 1, "no event carries a MAC"},
		{"drop the keyed start, strip and re-chain", func(t *testing.T, ctx context.Context, s store.Store, raw Raw) {
			Rechain(t, ctx, s, raw, func(e *store.AuditEvent) bool { return e.Action != store.ActionAuditKeyed }, true)
		}, 1, "no event carries a MAC"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			reopen := openDB(t)
			s := reopen(key, false)
			raw := rawOf(t, s)
			seed(t, s)
			v, err := s.VerifyAudit(ctx)
			must(t, err)
			if !v.OK() || v.KeyedFrom != 1 || !v.KeyChecked {
				t.Fatalf("keyed chain before tampering: %+v, want intact, keyed from 1, key checked", v)
			}
			tc.tamper(t, ctx, s, raw)
			v, err = s.VerifyAudit(ctx)
			must(t, err)
			if v.FirstBroken != tc.broken || !strings.Contains(v.Reason, tc.reason) {
				t.Errorf("VerifyAudit after the re-chain = %+v, want first broken %d, reason with %q", v, tc.broken, tc.reason)
			}
			// The tampered chain is consistent without the key: only the key tells.
			if v, err := reopen(nil, false).VerifyAudit(ctx); err != nil || !v.OK() || v.KeyChecked {
				t.Errorf("VerifyAudit without the key = %+v, %v; want it fooled (intact, key not checked), else this test proves nothing", v, err)
			}
			// A restart with the key, and a write, do not launder it: the
			// key is not fresh, so it does not start a new keyed part.
			again := reopen(key, false)
			if _, err := again.CreateTenant(ctx, admin, store.Tenant{ID: "later"}); err != nil {
				t.Fatal(err)
			}
			if v, err := again.VerifyAudit(ctx); err != nil || v.OK() {
				t.Errorf("VerifyAudit after a restart and a write = %+v, %v; want still broken", v, err)
			}
		})
	}

	t.Run("first key keys an existing chain", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		reopen := openDB(t)
		old := reopen(nil, false)
		seed(t, old)
		before, err := old.VerifyAudit(ctx)
		must(t, err)
		keyed := reopen(key, true)
		v, err := keyed.VerifyAudit(ctx)
		must(t, err)
		if !v.OK() || v.KeyedFrom != before.Events+1 {
			t.Fatalf("after the first keyed open: %+v, want intact and keyed from %d", v, before.Events+1)
		}
		// Events from before the key are covered from the keyed start on.
		Rechain(t, ctx, keyed, rawOf(t, keyed), func(e *store.AuditEvent) bool {
			if e.Seq == 2 {
				e.Actor = "admin:someone-else"
			}
			return true
		}, false)
		v, err = keyed.VerifyAudit(ctx)
		must(t, err)
		if v.FirstBroken != before.Events+1 {
			t.Errorf("edited pre-key event re-chained: %+v, want the keyed start %d to fail", v, before.Events+1)
		}
		// A store without the key cannot extend the keyed chain.
		_, err = reopen(nil, false).CreateTenant(ctx, admin, store.Tenant{ID: "unkeyed"})
		wantErr(t, err, store.ErrAuditKey)
	})

	t.Run("an old key never keys a chain", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		reopen := openDB(t)
		seed(t, reopen(nil, false))
		s := reopen(key, false) // not fresh: must not start a keyed part here
		if _, err := s.CreateTenant(ctx, admin, store.Tenant{ID: "later"}); err != nil {
			t.Fatal(err)
		}
		v, err := s.VerifyAudit(ctx)
		must(t, err)
		if v.OK() || !strings.Contains(v.Reason, store.ActionAuditKeyed) {
			t.Errorf("old key on an unkeyed chain: %+v, want broken (MACs without a keyed start)", v)
		}
	})

	t.Run("another key", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		reopen := openDB(t)
		seed(t, reopen(key, false))
		v, err := reopen(store.AuditKey(strings.Repeat("x", 32)), false).VerifyAudit(ctx)
		must(t, err)
		if v.FirstBroken != 1 || !strings.Contains(v.Reason, "audit key") {
			t.Errorf("verify with another key: %+v, want the keyed start refused naming the key", v)
		}
	})
}

func rawOf(t *testing.T, s store.Store) Raw {
	t.Helper()
	raw, ok := s.(Raw)
	if !ok {
		t.Skipf("SKIP: %T has no ExecRaw hook", s)
	}
	return raw
}

// Rechain rewrites the whole log as someone with database access but
// without the key would: keep the events keep accepts (after it edited
// them), renumber, recompute every hash and the head. With strip the MACs
// are cleared (else the old ones stay: the attacker cannot make new ones).
func Rechain(t *testing.T, ctx context.Context, s store.Store, raw Raw, keep func(*store.AuditEvent) bool, strip bool) {
	t.Helper()
	evs, err := s.ListAudit(ctx, "", 0, 100000)
	must(t, err)
	must(t, raw.ExecRaw(ctx, `DELETE FROM audit_events`))
	prev, mac := "", ""
	var seq int64
	for _, e := range evs {
		if !keep(&e) {
			continue
		}
		seq++
		e.Seq, e.PrevHash = seq, prev
		e.Hash = store.AuditHash(e)
		if strip {
			e.MAC = ""
		}
		q := fmt.Sprintf(`INSERT INTO audit_events (seq, at, tenant, actor, action, object, detail, prev_hash, hash, mac)
			VALUES (%d, %d, %s, %s, %s, %s, %s, %s, %s, %s)`, e.Seq, e.Time.UnixMicro(),
			lit(e.Tenant), lit(e.Actor), lit(e.Action), lit(e.Object), lit(string(e.Detail)), lit(e.PrevHash), lit(e.Hash), lit(e.MAC))
		must(t, raw.ExecRaw(ctx, q))
		prev, mac = e.Hash, e.MAC
	}
	must(t, raw.ExecRaw(ctx, fmt.Sprintf(`UPDATE audit_head SET seq = %d, hash = %s, mac = %s WHERE id = 1`, seq, lit(prev), lit(mac))))
}

// lit quotes s as an SQL string literal.
func lit(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
