package sqlite

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/internal/sqlstore"
)

// A statement run in one transaction is prepared once it is over and
// reused by the next ones; the cache keeps schema changes and long
// statements out and stops growing at its bound.
func TestStatementCache(t *testing.T) {
	ctx := t.Context()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "nkudo.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	admin := store.Actor{Kind: store.ActorAdmin, ID: "t"}
	if _, err := s.CreateTenant(ctx, admin, store.Tenant{ID: "acme"}); err != nil {
		t.Fatal(err)
	}
	d := s.db
	const q = `SELECT COUNT(*) FROM tenants WHERE id = $1`
	count := func() int {
		var n int
		err := d.Write(ctx, func(c sqlstore.Conn) error { return c.QueryRow(ctx, q, "acme").Scan(&n) })
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 1 {
		t.Fatalf("count = %d, want 1", n)
	}
	first, _ := d.wstmts.lookup(d.rebind(q).q)
	if first == nil {
		t.Fatal("a statement run in a write transaction was not prepared after it")
	}
	if n := count(); n != 1 {
		t.Fatalf("count through the prepared statement = %d, want 1", n)
	}
	if again, _ := d.wstmts.lookup(d.rebind(q).q); again != first {
		t.Error("the statement was prepared again")
	}

	// Not cached: a schema change, a statement longer than the bound.
	long := `SELECT COUNT(*) FROM tenants WHERE id <> '` + strings.Repeat("x", maxCachedStmtLen) + `'`
	for _, q := range []string{`CREATE TABLE scratch (x INTEGER)`, long} {
		err := d.Write(ctx, func(c sqlstore.Conn) error { _, err := c.Exec(ctx, q); return err })
		if err != nil {
			t.Fatal(err)
		}
		if ps, ok := d.wstmts.lookup(d.rebind(q).q); ps != nil || ok {
			t.Errorf("%.30q… cached", q)
		}
	}

	// Bounded: distinct statements beyond maxCachedStmts still run, unprepared.
	for i := range maxCachedStmts + 10 {
		var n int
		err := d.Read(ctx, func(c sqlstore.Conn) error {
			return c.QueryRow(ctx, fmt.Sprintf(`SELECT %d + COUNT(*) FROM tenants`, i)).Scan(&n)
		})
		if err != nil || n != i+1 {
			t.Fatalf("statement %d: %d, %v", i, n, err)
		}
	}
	d.rstmts.mu.Lock()
	size := len(d.rstmts.m)
	d.rstmts.mu.Unlock()
	if size != maxCachedStmts {
		t.Errorf("read cache holds %d statements, want its bound %d", size, maxCachedStmts)
	}
}

// sqlstore's $N placeholders run as anonymous ?s: repeated and out of
// order, each takes its own argument; a missing one is an error.
func TestPlaceholders(t *testing.T) {
	ctx := t.Context()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "nkudo.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := s.db.ReadConn()
	var got string
	if err := c.QueryRow(ctx, `SELECT $2 || $1 || $2 || $3`, "a", "b", "c").Scan(&got); err != nil || got != "babc" {
		t.Errorf("$2 || $1 || $2 || $3 = %q (%v), want babc", got, err)
	}
	if err := c.QueryRow(ctx, `SELECT $1 || $2 || $3`, "a", "b", "c").Scan(&got); err != nil || got != "abc" {
		t.Errorf("$1 || $2 || $3 = %q (%v), want abc", got, err)
	}
	if err := c.QueryRow(ctx, `SELECT $1 || $3`, "a", "b").Scan(&got); err == nil || !strings.Contains(err.Error(), "$3") {
		t.Errorf("a missing argument: %v, want an error naming $3", err)
	}
}
