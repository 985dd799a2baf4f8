package sqlite_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/seal"
	"github.com/nkudo/nkudo/store/sqlite"
	"github.com/nkudo/nkudo/store/storetest"
)

func open(t *testing.T) store.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "nkudo.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, open)
}

func TestMigrateTwice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nkudo.db")
	s, err := sqlite.Open(t.Context(), path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Applied()) == 0 {
		t.Error("first open applied no migrations")
	}
	if _, err := s.CreateTenant(t.Context(), store.Actor{Kind: store.ActorAdmin, ID: "t"}, store.Tenant{ID: "acme"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = sqlite.Open(t.Context(), path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(s.Applied()) != 0 {
		t.Errorf("second open applied %v again", s.Applied())
	}
	if _, err := s.GetTenant(t.Context(), "acme"); err != nil {
		t.Errorf("data lost across reopen: %v", err)
	}
}

func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Store {
		s, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "nkudo.db"), sqlite.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		return s
	})
}

// A database migrated by a newer release is refused, not half-understood.
func TestRefuseNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nkudo.db")
	s, err := sqlite.Open(t.Context(), path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ExecRaw(t.Context(), `INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, '0999_future.sql', 0)`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = sqlite.Open(t.Context(), path, sqlite.Options{})
	if err == nil || !strings.Contains(err.Error(), "newer than this release") {
		t.Fatalf("open of a newer schema: %v, want a refusal", err)
	}
}

func TestFilePrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nkudo.db")
	s, err := sqlite.Open(t.Context(), path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CreateTenant(t.Context(), store.Actor{Kind: store.ActorAdmin, ID: "t"}, store.Tenant{ID: "acme"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v, want no group or other access", filepath.Base(p), fi.Mode().Perm())
		}
	}
}

// fileHas reports whether the database file or its WAL contains needle.
func fileHas(t *testing.T, path, needle string) bool {
	t.Helper()
	for _, p := range []string{path, path + "-wal"} {
		b, err := os.ReadFile(p)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(needle)) {
			return true
		}
	}
	return false
}

// No secret reaches the database file in plain text: credentials, webhook
// secrets and setup keys are sealed before they are written.
func TestNoPlaintextSecretsOnDisk(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "nkudo.db")
	key, _, err := seal.Generate()
	if err != nil {
		t.Fatal(err)
	}
	s, err := sqlite.Open(ctx, path, sqlite.Options{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	admin := store.Actor{Kind: store.ActorAdmin, ID: "t"}
	const cred, hook, setup = "cred-PLAINTEXT-1f3a", "hook-PLAINTEXT-9b2c", "setup-PLAINTEXT-77d0"
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err = s.CreateTenant(ctx, admin, store.Tenant{ID: "acme"})
	must(err)
	_, err = s.PutCredential(ctx, admin, store.Credential{Tenant: "acme", Name: "ci", Kind: store.CredentialToken, Host: "git.example"}, cred)
	must(err)
	r, err := s.CreateRepository(ctx, admin, store.Repository{Tenant: "acme", Name: "r", URL: "https://git.example/r.git"}, hook)
	must(err)
	_, err = s.CreateSite(ctx, admin, "acme", "edge-1")
	must(err)
	must(s.SetSiteNetBird(ctx, admin, "acme", "edge-1", "https://nb.example", setup))
	s.Close()
	for _, secret := range []string{cred, hook, setup} {
		if fileHas(t, path, secret) {
			t.Errorf("the database file contains %q in plain text", secret)
		}
	}

	// Reopened with the same key, every secret opens.
	s, err = sqlite.Open(ctx, path, sqlite.Options{Key: key})
	must(err)
	_, c, err := s.CredentialSecret(ctx, "acme", "ci")
	must(err)
	w, err := s.WebhookSecret(ctx, "acme", r.ID)
	must(err)
	_, k, err := s.SiteNetBird(ctx, "acme", "edge-1")
	must(err)
	if c.Reveal() != cred || w.Reveal() != hook || k.Reveal() != setup {
		t.Errorf("reopened secrets = %q, %q, %q", c.Reveal(), w.Reveal(), k.Reveal())
	}
	s.Close()

	// With another key, reads fail with an error that says so, not garbage.
	other, _, _ := seal.Generate()
	s, err = sqlite.Open(ctx, path, sqlite.Options{Key: other})
	must(err)
	defer s.Close()
	if _, _, err := s.CredentialSecret(ctx, "acme", "ci"); !errors.Is(err, seal.ErrWrongKey) || !strings.Contains(err.Error(), key.ID()) {
		t.Errorf("CredentialSecret with another key: %v, want ErrWrongKey naming key %s", err, key.ID())
	}
	if _, err := s.WebhookSecret(ctx, "acme", r.ID); !errors.Is(err, seal.ErrWrongKey) {
		t.Errorf("WebhookSecret with another key: %v, want ErrWrongKey", err)
	}
}

// Secrets written in plain text by a release before sealing are sealed
// when the store opens, and no plain copy stays in the file.
func TestSealLegacyPlaintext(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "nkudo.db")
	key, _, _ := seal.Generate()
	s, err := sqlite.Open(ctx, path, sqlite.Options{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	admin := store.Actor{Kind: store.ActorAdmin, ID: "t"}
	if _, err := s.CreateTenant(ctx, admin, store.Tenant{ID: "acme"}); err != nil {
		t.Fatal(err)
	}
	r, err := s.CreateRepository(ctx, admin, store.Repository{Tenant: "acme", Name: "r", URL: "https://git.example/r.git"}, "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateSite(ctx, admin, "acme", "edge-1"); err != nil {
		t.Fatal(err)
	}
	const hook, setup = "legacy-HOOK-5e1d", "legacy-SETUP-a0c4"
	for _, q := range []string{
		`UPDATE repositories SET webhook_secret = '` + hook + `'`,
		`UPDATE sites SET netbird_setup_key = '` + setup + `'`,
	} {
		if err := s.ExecRaw(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	if !fileHas(t, path, hook) {
		t.Fatal("test setup: the legacy plain text is not in the file")
	}

	s, err = sqlite.Open(ctx, path, sqlite.Options{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.WebhookSecret(ctx, "acme", r.ID)
	if err != nil || w.Reveal() != hook {
		t.Errorf("WebhookSecret after sealing = %q, %v", w.Reveal(), err)
	}
	_, k, err := s.SiteNetBird(ctx, "acme", "edge-1")
	if err != nil || k.Reveal() != setup {
		t.Errorf("SiteNetBird after sealing = %q, %v", k.Reveal(), err)
	}
	s.Close()
	for _, secret := range []string{hook, setup} {
		if fileHas(t, path, secret) {
			t.Errorf("%q still in the database file after sealing", secret)
		}
	}
}

// TestStaleLeaseTakenOverAfterRestart: a process killed while holding a
// lease (kill -9 mid-reconcile) leaves its row behind; the next process on
// the file takes the lease over at once instead of waiting out its TTL.
// Within one process a live holder's lease stays exclusive.
func TestStaleLeaseTakenOverAfterRestart(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "nkudo.db")
	first, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := first.AcquireLease(ctx, "reconcile/r1", "host-1234-dead", time.Hour); err != nil || !ok {
		t.Fatalf("first process AcquireLease = %v, %v", ok, err)
	}
	first.Close() // never released: the process died

	s, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ok, err := s.AcquireLease(ctx, "reconcile/r1", "host-5678-new", time.Hour)
	if err != nil || !ok {
		t.Fatalf("restarted process AcquireLease = %v, %v; want the dead process's lease taken over", ok, err)
	}
	if ok, err := s.AcquireLease(ctx, "reconcile/r1", "host-5678-other", time.Hour); err != nil || ok {
		t.Fatalf("second holder of the live process AcquireLease = %v, %v; want refused", ok, err)
	}
	if ok, err := s.RenewLease(ctx, "reconcile/r1", "host-5678-new", time.Hour); err != nil || !ok {
		t.Fatalf("RenewLease by the new holder = %v, %v", ok, err)
	}
}

func TestAuditKeyed(t *testing.T) {
	storetest.AuditKeyed(t, func(t *testing.T) storetest.Reopen {
		path := filepath.Join(t.TempDir(), "nkudo.db")
		return func(key store.AuditKey, fresh bool) store.Store {
			s, err := sqlite.Open(t.Context(), path, sqlite.Options{AuditKey: key, AuditKeyFresh: fresh})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
	})
}

func TestDesiredKeyUpgrade(t *testing.T) {
	storetest.DesiredKeyUpgrade(t, func(t *testing.T) storetest.Reopen {
		path := filepath.Join(t.TempDir(), "nkudo.db")
		return func(key store.AuditKey, fresh bool) store.Store {
			s, err := sqlite.Open(t.Context(), path, sqlite.Options{AuditKey: key, AuditKeyFresh: fresh})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
	})
}
