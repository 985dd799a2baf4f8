package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nkudo/nkudo/controlplane/maintenance"
	"github.com/nkudo/nkudo/internal/pgtest"
	"github.com/nkudo/nkudo/pki"
	"github.com/nkudo/nkudo/store/backend"
	"github.com/nkudo/nkudo/store/storetest"
)

// TestAdminHealthPendingMigrations: a database missing its newest
// migration is degraded (exit 1, the migration named), and the check
// leaves it as it was: it must not migrate what it inspects.
func TestAdminHealthPendingMigrations(t *testing.T) {
	for _, tc := range []struct{ name, url string }{
		{"sqlite", ""},
		{"postgres", pgtest.URL(t)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			dir := t.TempDir()
			args := []string{"--data-dir=" + dir}
			if tc.url != "" {
				args = append(args, "--database-url="+tc.url)
			}
			if code, _, errs := runCmd(t, ctx, append([]string{"migrate"}, args...)...); code != 0 {
				t.Fatalf("migrate: exit %d: %s", code, errs)
			}
			q := storetest.SQLiteQuery(t, filepath.Join(dir, backend.DefaultSQLiteFile))
			if tc.url != "" {
				q = storetest.PostgresQuery(t, tc.url)
			}
			// A valid PKI, so that the database alone decides the exit code.
			if _, err := pki.Init(filepath.Join(dir, "pki"), nil, time.Now()); err != nil {
				t.Fatal(err)
			}
			var newest string
			var version int
			q(ctx, `SELECT version, name FROM schema_migrations ORDER BY version DESC LIMIT 1`, &version, &newest)
			q(ctx, `DELETE FROM schema_migrations WHERE name = '`+newest+`'`)
			state := func() (rows int, file []byte, mtime time.Time) {
				q(ctx, `SELECT COUNT(*) FROM schema_migrations`, &rows)
				if tc.url == "" {
					path := filepath.Join(dir, backend.DefaultSQLiteFile)
					var err error
					if file, err = os.ReadFile(path); err != nil {
						t.Fatal(err)
					}
					fi, err := os.Stat(path)
					if err != nil {
						t.Fatal(err)
					}
					mtime = fi.ModTime()
				}
				return rows, file, mtime
			}
			rows, file, mtime := state()

			code, out, errs := runCmd(t, ctx, append([]string{"admin", "health", "-o", "json"}, args...)...)
			var rep maintenance.Report
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatalf("exit %d, not a report (%v):\n%s%s", code, err, out, errs)
			}
			if code != 1 || rep.Status == maintenance.StatusOK {
				t.Errorf("pending migration: exit %d, status %s, want 1 and not ok", code, rep.Status)
			}
			db := checkOf(rep, "database")
			if db.Status != maintenance.StatusWarn || !bytes.Contains([]byte(db.Message), []byte(newest)) {
				t.Errorf("database check = %+v, want warn naming %s", db, newest)
			}
			if diff := cmp.Diff([]string{newest}, db.Items); diff != "" {
				t.Errorf("database items (-want +got):\n%s", diff)
			}
			if c := checkOf(rep, "sites"); c.Status != maintenance.StatusSkip {
				t.Errorf("sites check on an old schema = %+v, want skip", c)
			}

			rows2, file2, mtime2 := state()
			if rows2 != rows || !bytes.Equal(file, file2) || !mtime.Equal(mtime2) {
				t.Errorf("health changed the database: %d rows, %d bytes, mtime %v before; %d rows, %d bytes, mtime %v after",
					rows, len(file), mtime, rows2, len(file2), mtime2)
			}

			// With the row back the same check passes: exit 1 was the migration.
			q(ctx, fmt.Sprintf(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (%d, '%s', 0)`, version, newest))
			code, out, errs = runCmd(t, ctx, append([]string{"admin", "health", "-o", "json"}, args...)...)
			rep = maintenance.Report{}
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatalf("exit %d, not a report (%v):\n%s%s", code, err, out, errs)
			}
			if code != 0 || rep.Status != maintenance.StatusOK {
				t.Errorf("schema current: exit %d, %+v, want 0 and ok", code, rep)
			}
		})
	}
}

// TestAdminHealthMissingSQLiteCreatesNothing: checking a data dir without
// a database leaves it empty.
func TestAdminHealthMissingSQLiteCreatesNothing(t *testing.T) {
	dir := t.TempDir()
	if code, out, errs := runCmd(t, t.Context(), "admin", "health", "--data-dir="+dir); code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", code, out, errs)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("health created %v in the data dir", entries)
	}
	missing := filepath.Join(dir, "not-yet")
	if code, _, _ := runCmd(t, t.Context(), "admin", "health", "--data-dir="+missing); code != 1 {
		t.Errorf("missing data dir: exit %d, want 1", code)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Errorf("health created %s", missing)
	}
}
