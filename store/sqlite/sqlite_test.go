package sqlite_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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
