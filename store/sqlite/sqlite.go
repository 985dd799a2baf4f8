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
	"strconv"
	"strings"
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
	rebound   sync.Map // query text -> bound
	// Statements prepared once per pool and reused by every transaction:
	// preparing (parsing and planning) was a large share of a write's cost.
	wstmts, rstmts stmtCache
}

func (d *db) migrate(ctx context.Context) ([]string, error) {
	ms, err := sqlstore.Migrations(migrationsFS, "migrations")
	if err != nil {
		return nil, err
	}
	inTx := func(fn func(sqlstore.Conn) error) error { return d.Write(ctx, fn) }
	return sqlstore.Apply(ctx, conn{d: d, tx: d.w}, ms, inTx, d.IsNoRows)
}

func (d *db) tx(ctx context.Context, pool *sql.DB, readOnly bool, fn func(sqlstore.Conn) error) (err error) {
	stmts := &d.rstmts
	if pool == d.w {
		stmts = &d.wstmts
	}
	var misses []string
	// Statements this transaction ran unprepared are prepared once it is
	// over: preparing on the pool takes a connection, and the writer's
	// only one is the transaction's until then.
	defer func() { stmts.prepare(ctx, pool, misses) }()
	tx, err := pool.BeginTx(ctx, &sql.TxOptions{ReadOnly: readOnly})
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if err = fn(conn{d: d, tx: tx, sqltx: tx, stmts: stmts, misses: &misses}); err != nil {
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

func (d *db) ReadConn() sqlstore.Conn { return conn{d: d, tx: d.r, pool: d.r, stmts: &d.rstmts} }

func (d *db) WriteRow(ctx context.Context, q string, args ...any) sqlstore.Row {
	return conn{d: d, tx: d.w, pool: d.w, stmts: &d.wstmts}.QueryRow(ctx, q, args...)
}

func (d *db) NotifyTx(context.Context, sqlstore.Conn, []string) error { return nil }

func (d *db) IsNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// IsLockTimeout is false: SQLite's one writer queues heartbeats behind the
// write in progress, and a plan batch's write is short.
func (d *db) IsLockTimeout(error) bool { return false }

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
		err = errors.Join(d.rstmts.close(), d.wstmts.close(), d.r.Close(), d.w.Close())
	})
	return err
}

// placeholder matches the $N placeholders sqlstore writes.
var placeholder = regexp.MustCompile(`\$(\d+)`)

// bound is a query as SQLite runs it: sqlstore's $N placeholders become
// anonymous ?s, and order[i] is the index of the argument the i-th takes
// (nil: the arguments in their own order). Numbered parameters (?N) would
// do without reordering, but SQLite looks each one's name up in a list,
// which made binding a multi-row INSERT quadratic in its parameters.
type bound struct {
	q     string
	order []int
}

func (d *db) rebind(q string) bound {
	if v, ok := d.rebound.Load(q); ok {
		return v.(bound)
	}
	var order []int
	inOrder := true
	r := placeholder.ReplaceAllStringFunc(q, func(m string) string {
		n, _ := strconv.Atoi(m[1:])
		inOrder = inOrder && n == len(order)+1
		order = append(order, n-1)
		return "?"
	})
	b := bound{q: r}
	if !inOrder {
		b.order = order
	}
	d.rebound.Store(q, b)
	return b
}

// args orders args for b's placeholders.
func (b bound) args(args []any) ([]any, error) {
	if b.order == nil {
		return args, nil
	}
	out := make([]any, len(b.order))
	for i, n := range b.order {
		if n < 0 || n >= len(args) {
			return nil, fmt.Errorf("no argument for $%d (%d given)", n+1, len(args))
		}
		out[i] = args[n]
	}
	return out, nil
}

// queryer is what *sql.Tx and *sql.DB have in common.
type queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// conn runs sqlstore's statements on tx: a transaction (sqltx, then
// statements not prepared yet are noted in misses) or a pool (pool, then
// they are prepared on the spot: no connection is held).
type conn struct {
	d      *db
	tx     queryer
	sqltx  *sql.Tx
	pool   *sql.DB
	stmts  *stmtCache
	misses *[]string
}

// stmt returns q prepared for this conn, or nil when it is not (q then
// runs as a one-off statement, prepared and finalized by the driver).
func (c conn) stmt(ctx context.Context, q string) *sql.Stmt {
	if c.stmts == nil {
		return nil
	}
	ps, ok := c.stmts.lookup(q)
	switch {
	case ps != nil && c.sqltx != nil:
		// The transaction's own handle on ps: database/sql reuses the
		// statement already prepared on the transaction's connection.
		return c.sqltx.StmtContext(ctx, ps)
	case ps != nil || !ok:
		return ps
	case c.sqltx != nil:
		*c.misses = append(*c.misses, q)
		return nil
	default:
		c.stmts.prepare(ctx, c.pool, []string{q})
		ps, _ = c.stmts.lookup(q)
		return ps
	}
}

func (c conn) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	b := c.d.rebind(q)
	args, err := b.args(args)
	if err != nil {
		return 0, err
	}
	var res sql.Result
	if ps := c.stmt(ctx, b.q); ps != nil {
		res, err = ps.ExecContext(ctx, args...)
	} else {
		res, err = c.tx.ExecContext(ctx, b.q, args...)
	}
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (c conn) Query(ctx context.Context, q string, args ...any) (sqlstore.Rows, error) {
	b := c.d.rebind(q)
	args, err := b.args(args)
	if err != nil {
		return nil, err
	}
	var rows *sql.Rows
	if ps := c.stmt(ctx, b.q); ps != nil {
		rows, err = ps.QueryContext(ctx, args...)
	} else {
		rows, err = c.tx.QueryContext(ctx, b.q, args...)
	}
	if err != nil {
		return nil, err
	}
	return sqlRows{rows}, nil
}

func (c conn) QueryRow(ctx context.Context, q string, args ...any) sqlstore.Row {
	b := c.d.rebind(q)
	args, err := b.args(args)
	if err != nil {
		return errRow{err}
	}
	if ps := c.stmt(ctx, b.q); ps != nil {
		return ps.QueryRowContext(ctx, args...)
	}
	return c.tx.QueryRowContext(ctx, b.q, args...)
}

// errRow is a Row whose Scan fails with err.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { _ = r.Rows.Close() }

// Bounds of a stmtCache. Statements are never evicted (one in use must
// not be closed under its user), so the cache stops growing when full;
// long statements (multi-row INSERTs of a batch) are left out: their
// preparation is shared by many rows already, and their programs are large.
const (
	maxCachedStmts   = 256
	maxCachedStmtLen = 2048
)

// cacheable says whether q is worth keeping prepared: a short query or
// data change, not a schema change or a pragma (run once, if ever again).
func cacheable(q string) bool {
	if len(q) > maxCachedStmtLen {
		return false
	}
	verb, _, _ := strings.Cut(strings.TrimSpace(q), " ")
	switch strings.ToUpper(verb) {
	case "SELECT", "INSERT", "UPDATE", "DELETE", "WITH":
		return true
	}
	return false
}

// stmtCache holds statements prepared on one pool, by query text.
type stmtCache struct {
	mu     sync.Mutex
	m      map[string]*sql.Stmt
	closed bool
}

// lookup returns q's prepared statement, or nil and whether q may still
// be cached.
func (c *stmtCache) lookup(q string) (*sql.Stmt, bool) {
	if !cacheable(q) {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ps, ok := c.m[q]
	if ok {
		return ps, true
	}
	return nil, !c.closed && len(c.m) < maxCachedStmts
}

// prepare prepares the queries in qs not cached yet on pool. The caller
// must hold no connection of pool. A query that fails to prepare is left
// out: run unprepared, it reports its own error.
func (c *stmtCache) prepare(ctx context.Context, pool *sql.DB, qs []string) {
	for _, q := range qs {
		if _, ok := c.lookup(q); !ok {
			continue
		}
		ps, err := pool.PrepareContext(ctx, q)
		if err != nil {
			continue
		}
		c.mu.Lock()
		if _, dup := c.m[q]; dup || c.closed || len(c.m) >= maxCachedStmts {
			c.mu.Unlock()
			_ = ps.Close()
			continue
		}
		if c.m == nil {
			c.m = map[string]*sql.Stmt{}
		}
		c.m[q] = ps
		c.mu.Unlock()
	}
}

func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var errs []error
	for _, ps := range c.m {
		errs = append(errs, ps.Close())
	}
	c.m = nil
	return errors.Join(errs...)
}
