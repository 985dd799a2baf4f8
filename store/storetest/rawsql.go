package storetest

import (
	"context"
	"database/sql"
	"testing"

	"github.com/jackc/pgx/v5"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver
)

// QueryFunc runs q against a database behind the store's back, scanning
// its one row into dest (none for a statement). It fails the test on error.
type QueryFunc func(ctx context.Context, q string, dest ...any)

// SQLiteQuery returns a QueryFunc over the SQLite file at path. Each call
// opens and closes its own connection, so none is held between calls.
func SQLiteQuery(t testing.TB, path string) QueryFunc {
	return func(ctx context.Context, q string, dest ...any) {
		t.Helper()
		db, err := sql.Open("sqlite", "file:"+path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if len(dest) == 0 {
			_, err = db.ExecContext(ctx, q)
		} else {
			err = db.QueryRowContext(ctx, q).Scan(dest...)
		}
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// PostgresQuery returns a QueryFunc over the Postgres database at url.
// Each call opens and closes its own connection.
func PostgresQuery(t testing.TB, url string) QueryFunc {
	return func(ctx context.Context, q string, dest ...any) {
		t.Helper()
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.WithoutCancel(ctx))
		if len(dest) == 0 {
			_, err = c.Exec(ctx, q)
		} else {
			err = c.QueryRow(ctx, q).Scan(dest...)
		}
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}
