package backend_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/internal/pgtest"
	"github.com/nkudo/nkudo/store/backend"
	"github.com/nkudo/nkudo/store/storetest"
)

// TestPendingWritesNothing migrates a database, forgets its newest
// migration, then inspects it with Pending and OpenWith{NoMigrate}: both
// must name (or leave) the forgotten migration and change nothing, which
// the SQLite file's bytes and mtime and the schema_migrations row count show.
func TestPendingWritesNothing(t *testing.T) {
	dir := t.TempDir()
	type dbState struct {
		rows    int
		file    []byte
		modTime time.Time
	}
	for _, tc := range []struct {
		name, url string
		// forget deletes the newest schema_migrations row and returns its name.
		forget func(ctx context.Context) string
		state  func(ctx context.Context) dbState
	}{
		{
			name: "sqlite",
			url:  "",
			forget: func(ctx context.Context) string {
				return forgetNewest(t, ctx, storetest.SQLiteQuery(t, filepath.Join(dir, backend.DefaultSQLiteFile)))
			},
			state: func(ctx context.Context) dbState {
				path := filepath.Join(dir, backend.DefaultSQLiteFile)
				var s dbState
				storetest.SQLiteQuery(t, path)(ctx, `SELECT COUNT(*) FROM schema_migrations`, &s.rows)
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				fi, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				s.file, s.modTime = b, fi.ModTime()
				return s
			},
		},
		{
			name: "postgres",
			url:  pgtest.URL(t),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			if tc.name == "postgres" {
				tc.forget = func(ctx context.Context) string { return forgetNewest(t, ctx, storetest.PostgresQuery(t, tc.url)) }
				tc.state = func(ctx context.Context) dbState {
					var s dbState
					storetest.PostgresQuery(t, tc.url)(ctx, `SELECT COUNT(*) FROM schema_migrations`, &s.rows)
					return s
				}
			}
			if _, err := backend.Migrate(ctx, tc.url, dir, nil); err != nil {
				t.Fatal(err)
			}
			if got, err := backend.Pending(ctx, tc.url, dir, nil); err != nil || len(got) != 0 {
				t.Fatalf("Pending after migrate = %v, %v; want none", got, err)
			}
			forgotten := tc.forget(ctx)
			before := tc.state(ctx)

			got, err := backend.Pending(ctx, tc.url, dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{forgotten}, got); diff != "" {
				t.Errorf("Pending (-want +got):\n%s", diff)
			}
			s, err := backend.OpenWith(ctx, tc.url, dir, backend.OpenOptions{NoMigrate: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Ping(ctx); err != nil {
				t.Error(err)
			}
			if _, err := s.ListTenants(ctx); err != nil {
				t.Errorf("read through a NoMigrate store: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Error(err)
			}

			after := tc.state(ctx)
			if after.rows != before.rows || !bytes.Equal(after.file, before.file) || !after.modTime.Equal(before.modTime) {
				t.Errorf("inspection changed the database: %d rows, %d bytes, mtime %v before; %d rows, %d bytes, mtime %v after",
					before.rows, len(before.file), before.modTime, after.rows, len(after.file), after.modTime)
			}
		})
	}
}

// TestPendingFreshPostgres: a database never migrated has every migration
// pending, and inspecting it does not create schema_migrations.
func TestPendingFreshPostgres(t *testing.T) {
	ctx := t.Context()
	u := pgtest.URL(t)
	got, err := backend.Pending(ctx, u, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) == 0 || got[0] != "0001_init.sql" {
		t.Errorf("Pending on a fresh database = %v, want every migration", got)
	}
	var exists bool
	storetest.PostgresQuery(t, u)(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`, &exists)
	if exists {
		t.Error("Pending created schema_migrations")
	}
	applied, err := backend.Migrate(ctx, u, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(applied, got); diff != "" {
		t.Errorf("Pending before migrate vs applied by it (-applied +pending):\n%s", diff)
	}
}

func TestPendingMissingSQLite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "absent")
	path := filepath.Join(dir, backend.DefaultSQLiteFile)
	if _, err := backend.Pending(t.Context(), "", dir, nil); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Pending on a missing file: %v, want ErrNotExist", err)
	}
	if _, err := backend.OpenWith(t.Context(), "", dir, backend.OpenOptions{NoMigrate: true}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenWith NoMigrate on a missing file: %v, want ErrNotExist", err)
	}
	// An existing directory without the file: still nothing created.
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := backend.Pending(t.Context(), "", dir, nil); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Pending on a missing file: %v, want ErrNotExist", err)
	}
	if _, err := backend.OpenWith(t.Context(), "", dir, backend.OpenOptions{NoMigrate: true}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenWith NoMigrate on a missing file: %v, want ErrNotExist", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("inspection created %v in %s", entries, dir)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stat %s: %v, want it absent", path, err)
	}
}

func forgetNewest(t *testing.T, ctx context.Context, exec storetest.QueryFunc) string {
	t.Helper()
	var name string
	exec(ctx, `SELECT name FROM schema_migrations ORDER BY version DESC LIMIT 1`, &name)
	exec(ctx, `DELETE FROM schema_migrations WHERE name = '`+name+`'`)
	return name
}
