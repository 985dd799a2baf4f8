package pgtest_test

import (
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/nkudo/nkudo/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// Each URL is a separate, empty database on the same cluster.
func TestURLFreshDatabases(t *testing.T) {
	a, b := pgtest.URL(t), pgtest.URL(t)
	if a == b {
		t.Fatalf("two calls returned the same URL %s", a)
	}
	ca, err := pgx.Connect(t.Context(), a)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close(t.Context())
	if _, err := ca.Exec(t.Context(), `CREATE TABLE marker (x int)`); err != nil {
		t.Fatal(err)
	}
	cb, err := pgx.Connect(t.Context(), b)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close(t.Context())
	var n int
	if err := cb.QueryRow(t.Context(), `SELECT count(*) FROM pg_tables WHERE tablename = 'marker'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Error("a table created in one database is visible in the other")
	}
	var fsync string
	if err := ca.QueryRow(t.Context(), `SHOW fsync`).Scan(&fsync); err != nil {
		t.Fatal(err)
	}
	t.Logf("fsync=%s", fsync)
}
