package backend_test

import (
	"database/sql"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/nkudo/nkudo/internal/pgtest"
	"github.com/nkudo/nkudo/store/backend"
)

// TestSchemasAgree migrates both dialects and compares every table's
// columns and declared types, so a migration added to one dialect only, or
// a column typed differently, fails here rather than in production.
func TestSchemasAgree(t *testing.T) {
	dir := t.TempDir()
	pgURL := pgtest.URL(t)
	for _, u := range []string{"", pgURL} {
		if _, err := backend.Migrate(t.Context(), u, dir, nil); err != nil {
			t.Fatal(err)
		}
	}

	lite, err := sql.Open("sqlite", "file:"+filepath.Join(dir, backend.DefaultSQLiteFile))
	if err != nil {
		t.Fatal(err)
	}
	defer lite.Close()
	rows, err := lite.QueryContext(t.Context(), `SELECT m.name, p.name, p.type FROM sqlite_master m, pragma_table_info(m.name) p
		WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'`)
	if err != nil {
		t.Fatal(err)
	}
	var liteCols []string
	for rows.Next() {
		var table, col, typ string
		if err := rows.Scan(&table, &col, &typ); err != nil {
			t.Fatal(err)
		}
		liteCols = append(liteCols, table+"."+col+" "+strings.ToLower(typ))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	pg, err := pgx.Connect(t.Context(), pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(t.Context())
	prows, err := pg.Query(t.Context(), `SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'public'`)
	if err != nil {
		t.Fatal(err)
	}
	var pgCols []string
	for prows.Next() {
		var table, col, typ string
		if err := prows.Scan(&table, &col, &typ); err != nil {
			t.Fatal(err)
		}
		pgCols = append(pgCols, table+"."+col+" "+typ)
	}
	if err := prows.Err(); err != nil {
		t.Fatal(err)
	}
	sort.Strings(liteCols)
	sort.Strings(pgCols)
	if len(liteCols) < 50 {
		t.Fatalf("only %d SQLite columns found: %v", len(liteCols), liteCols)
	}
	if diff := cmp.Diff(liteCols, pgCols); diff != "" {
		t.Errorf("schemas differ (-sqlite +postgres):\n%s", diff)
	}
}
