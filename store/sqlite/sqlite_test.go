package sqlite_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nkudo/nkudo/store"
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
