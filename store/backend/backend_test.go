package backend_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/nkudo/nkudo/internal/pgtest"
	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/backend"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestSQLitePath(t *testing.T) {
	tests := []struct {
		url, dir, want string
		err            bool
	}{
		{"", "/data", "/data/nkudo.db", false},
		{"sqlite://", "/data", "/data/nkudo.db", false},
		{"sqlite://x.db", "/data", "/data/x.db", false},
		{"sqlite:x.db", "/data", "/data/x.db", false},
		{"sqlite:///var/lib/n.db", "", "/var/lib/n.db", false},
		{"", "", "", true},
		{"sqlite://x.db?mode=ro", "/data", "", true},
	}
	for _, tc := range tests {
		got, err := backend.SQLitePath(tc.url, tc.dir)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("SQLitePath(%q, %q) = %q, %v; want %q, error %v", tc.url, tc.dir, got, err, tc.want, tc.err)
		}
	}
}

func TestRedact(t *testing.T) {
	if got := backend.Redact("postgres://u:secret@db/x"); got != "postgres://u:xxxxx@db/x" {
		t.Errorf("Redact = %q", got)
	}
}

func TestOpenAndMigrate(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, url string }{
		{"sqlite", ""},
		{"postgres", pgtest.URL(t)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			applied, err := backend.Migrate(t.Context(), tc.url, filepath.Join(dir, "data"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(applied) == 0 {
				t.Error("first migrate applied nothing")
			}
			applied, err = backend.Migrate(t.Context(), tc.url, filepath.Join(dir, "data"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(applied) != 0 {
				t.Errorf("second migrate applied %v", applied)
			}
			s, err := backend.Open(t.Context(), tc.url, filepath.Join(dir, "data"), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.Ping(t.Context()); err != nil {
				t.Error(err)
			}
		})
	}
	_, err := backend.Open(t.Context(), "mysql://x", dir, nil)
	if !errors.Is(err, store.ErrInvalid) {
		t.Errorf("unknown scheme: %v, want ErrInvalid", err)
	}
}
