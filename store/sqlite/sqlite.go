// Package sqlite is the embedded store.Store backend: one database file,
// pure Go (modernc.org/sqlite), so `nkudo serve` needs no database server
// and binaries stay CGO_ENABLED=0.
//
// The file runs in WAL mode with a busy timeout and foreign keys on. All
// writes go through a single connection (SQLite has one writer anyway; one
// connection turns lock waits into an in-process queue) with BEGIN
// IMMEDIATE; reads use a separate pool of read-only connections. Wake-ups
// are in-process only: one SQLite file serves one control-plane process.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/internal/sqlstore"
	"github.com/nkudo/nkudo/store/seal"
)

//go:embed migrations/*.sql
var migrationsFS embed.FS

// Options configure Open.
type Options struct {
	Logger *slog.Logger
	// Now is the clock for bookkeeping timestamps (nil = time.Now).
	Now func() time.Time
	// ReadConns is the size of the read pool (0 = 4).
	ReadConns int
	// NoMigrate opens an existing file as it is: no file is created and no
	// migration applied (read-only inspection, such as a health check).
	NoMigrate bool
	// Key seals secrets at rest (nil = a random key for this process
	// only, for tests).
	Key *seal.Key
	// AuditKey keys the audit chain; AuditKeyFresh says it was just made
	// (see sqlstore.Options). A store opened for writing with a key keys
	// the chain at once when it may.
	AuditKey      store.AuditKey
	AuditKeyFresh bool
}

// Store is a store.Store on one SQLite file.
type Store struct {
	*sqlstore.Store
	db      *db
	applied []string
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the database file at path and applies
// pending migrations.
func Open(ctx context.Context, path string, o Options) (*Store, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ReadConns <= 0 {
		o.ReadConns = 4
	}
	// The file holds webhook secrets and setup keys: create it private.
	// SQLite gives the -wal and -shm files the same mode.
	flags := os.O_RDWR | os.O_CREATE
	if o.NoMigrate {
		flags = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	f.Close()
	pragmas := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "busy_timeout(10000)", "foreign_keys(1)", "synchronous(NORMAL)"} {
		pragmas.Add("_pragma", p)
	}
	wq := url.Values{"_pragma": pragmas["_pragma"], "_txlock": {"immediate"}}
	if o.NoMigrate {
		wq.Set("mode", "rw") // never create the file
	}
	w, err := sql.Open("sqlite", "file:"+path+"?"+wq.Encode())
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxIdleTime(0)
	// The writer creates the file and the schema before the readers open it.
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	d := &db{w: w}
	var applied []string
	if !o.NoMigrate {
		applied, err = d.migrate(ctx)
	}
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("migrate sqlite %s: %w", path, err)
	}
	rq := url.Values{"_pragma": append(pragmas["_pragma"], "query_only(1)")}
	r, err := sql.Open("sqlite", "file:"+path+"?"+rq.Encode())
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	r.SetMaxOpenConns(o.ReadConns)
	r.SetMaxIdleConns(o.ReadConns)
	d.r = r
	for _, name := range applied {
		o.Logger.Info("applied migration", "component", "store", "migration", name)
	}
	s := sqlstore.New(d, sqlstore.Dialect{
		ForUpdate: "",
		NowMicros: `CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)`,
	}, nil, sqlstore.Options{Logger: o.Logger, Now: o.Now, Key: o.Key, ProcessLeases: true, AuditKey: o.AuditKey, AuditKeyFresh: o.AuditKeyFresh})
	if !o.NoMigrate {
		n, err := s.SealPlaintext(ctx)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("open sqlite %s: %w", path, err)
		}
		if n > 0 {
			// The plain text is still in free pages and WAL frames:
			// rebuild the file and empty the WAL so no copy stays on disk.
			for _, q := range []string{`VACUUM`, `PRAGMA wal_checkpoint(TRUNCATE)`} {
				if _, err := w.ExecContext(ctx, q); err != nil {
					s.Close()
					return nil, fmt.Errorf("scrub sqlite %s after sealing: %w", path, err)
				}
			}
		}
		if err := s.AnchorAudit(ctx); err != nil {
			s.Close()
			return nil, err
		}
	}
	return &Store{Store: s, db: d, applied: applied}, nil
}

// Applied lists the migrations this Open applied (empty when the schema was current).
func (s *Store) Applied() []string { return s.applied }

// ExecRaw runs one statement on the writer outside the store's rules. It
// exists for tests that tamper with rows (the audit chain check) and for
// operators' repair scripts; nothing in n-kudo calls it.
func (s *Store) ExecRaw(ctx context.Context, query string, args ...any) error {
	_, err := s.db.w.ExecContext(ctx, query, args...)
	return err
}

// Pending names the migrations not yet applied to the database file at
// path, without creating the file or writing to it. A missing file is an
// error wrapping fs.ErrNotExist.
func Pending(ctx context.Context, path string) ([]string, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("sqlite %s: %w", path, err)
	}
	ms, err := sqlstore.Migrations(migrationsFS, "migrations")
	if err != nil {
		return nil, err
	}
	// mode=rw never creates the file; query_only refuses any write.
	q := url.Values{"mode": {"rw"}, "_pragma": {"busy_timeout(10000)", "query_only(1)"}}
	c, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	defer c.Close()
	var n int
	if err := c.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`).Scan(&n); err != nil {
		return nil, fmt.Errorf("read sqlite %s: %w", path, err)
	}
	var versions []int64
	if n > 0 {
		rows, err := c.QueryContext(ctx, sqlstore.AppliedQuery)
		if err != nil {
			return nil, fmt.Errorf("read schema version of %s: %w", path, err)
		}
		defer rows.Close()
		for rows.Next() {
			var v int64
			if err := rows.Scan(&v); err != nil {
				return nil, fmt.Errorf("read schema version of %s: %w", path, err)
			}
			versions = append(versions, v)
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read schema version of %s: %w", path, err)
		}
	}
	return sqlstore.PendingNames(ms, versions)
}

type db struct {
	w, r      *sql.DB
	closeOnce sync.Once
	rebound   sync.Map // query text -> text with ?N placeholders
}

func (d *db) migrate(ctx context.Context) ([]string, error) {
	ms, err := sqlstore.Migrations(migrationsFS, "migrations")
	if err != nil {
		return nil, err
	}
	inTx := func(fn func(sqlstore.Conn) error) error { return d.Write(ctx, fn) }
	return sqlstore.Apply(ctx, conn{d, d.w}, ms, inTx, d.IsNoRows)
}

func (d *db) tx(ctx context.Context, pool *sql.DB, readOnly bool, fn func(sqlstore.Conn) error) (err error) {
	tx, err := pool.BeginTx(ctx, &sql.TxOptions{ReadOnly: readOnly})
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if err = fn(conn{d, tx}); err != nil {
		return err
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func (d *db) Read(ctx context.Context, fn func(sqlstore.Conn) error) error {
	return d.tx(ctx, d.r, true, fn)
}

func (d *db) Write(ctx context.Context, fn func(sqlstore.Conn) error) error {
	return d.tx(ctx, d.w, false, fn)
}

func (d *db) ReadConn() sqlstore.Conn { return conn{d, d.r} }

func (d *db) WriteRow(ctx context.Context, q string, args ...any) sqlstore.Row {
	return d.w.QueryRowContext(ctx, d.rebind(q), args...)
}

func (d *db) NotifyTx(context.Context, sqlstore.Conn, string) error { return nil }

func (d *db) IsNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

func (d *db) IsUniqueViolation(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

func (d *db) Ping(ctx context.Context) error {
	var one int
	return d.r.QueryRowContext(ctx, `SELECT 1`).Scan(&one)
}

func (d *db) Close() error {
	var err error
	d.closeOnce.Do(func() {
		err = errors.Join(d.r.Close(), d.w.Close())
	})
	return err
}

// placeholder matches the $N placeholders sqlstore writes; SQLite spells
// numbered parameters ?N.
var placeholder = regexp.MustCompile(`\$(\d+)`)

func (d *db) rebind(q string) string {
	if v, ok := d.rebound.Load(q); ok {
		return v.(string)
	}
	r := placeholder.ReplaceAllString(q, "?$1")
	d.rebound.Store(q, r)
	return r
}

// queryer is what *sql.Tx and *sql.DB have in common.
type queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

type conn struct {
	d  *db
	tx queryer
}

func (c conn) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	res, err := c.tx.ExecContext(ctx, c.d.rebind(q), args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (c conn) Query(ctx context.Context, q string, args ...any) (sqlstore.Rows, error) {
	rows, err := c.tx.QueryContext(ctx, c.d.rebind(q), args...)
	if err != nil {
		return nil, err
	}
	return sqlRows{rows}, nil
}

func (c conn) QueryRow(ctx context.Context, q string, args ...any) sqlstore.Row {
	return c.tx.QueryRowContext(ctx, c.d.rebind(q), args...)
}

type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { _ = r.Rows.Close() }
