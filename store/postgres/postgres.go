// Package postgres is the production store.Store backend, on PostgreSQL
// through pgx (pgxpool). Several control-plane replicas share one database:
// row locks order the writes about one site, the audit head row orders
// audit appends, leases live in a table with database-time expiry, and
// wake-ups travel as NOTIFY on one channel to a dedicated LISTEN connection
// in every replica, so a long-poll held by any replica returns at once.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/internal/sqlstore"
	"github.com/nkudo/nkudo/store/seal"
)

//go:embed migrations/*.sql
var migrationsFS embed.FS

// channel is the one NOTIFY channel; the payload is the topic.
const channel = "nkudo_wake"

// migrationLock is the advisory lock key that serialises migrations of
// replicas starting at the same time.
const migrationLock = 0x6e6b75646f // "nkudo"

// Options configure Open.
type Options struct {
	Logger *slog.Logger
	// Now is the clock for bookkeeping timestamps (nil = time.Now). Leases
	// always use the database's clock.
	Now func() time.Time
	// MaxConns caps the pool (0 = pool_max_conns from the URL, else 16).
	MaxConns int32
	// NoMigrate applies no migration (read-only inspection, such as a
	// health check).
	NoMigrate bool
	// Key seals secrets at rest (nil = a random key for this process
	// only, for tests). Every replica must use the same key.
	Key *seal.Key
	// AuditKey keys the audit chain; AuditKeyFresh says it was just made
	// (see sqlstore.Options). A store opened for writing with a key keys
	// the chain at once when it may.
	AuditKey      store.AuditKey
	AuditKeyFresh bool
}

// Store is a store.Store on a PostgreSQL database.
type Store struct {
	*sqlstore.Store
	db      *db
	applied []string
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at url (postgres://…), applies pending
// migrations and starts the notification listener.
func Open(ctx context.Context, url string, o Options) (*Store, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	log := o.Logger.With("component", "store")
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse postgres url: %w", err)
	}
	switch {
	case o.MaxConns > 0:
		cfg.MaxConns = o.MaxConns
	case !strings.Contains(url, "pool_max_conns"):
		// pgxpool's default (the CPU count, at least 4) is small for a
		// server whose requests each hold a connection for a moment.
		cfg.MaxConns = max(cfg.MaxConns, 16)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	// Heartbeats go through their own small pool whose sessions commit
	// without waiting for the WAL flush (synchronous_commit=off). A crash
	// can lose the last fraction of a second of heartbeats, which the
	// agents repeat anyway; nothing durable can depend on a lost one,
	// because any later synchronous commit flushes the WAL up to itself.
	hcfg := cfg.Copy()
	if hcfg.ConnConfig.RuntimeParams == nil {
		hcfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	hcfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	// A heartbeat waits at most this long for its site's row: storing a
	// batch of plans locks its sites until it commits, and heartbeats
	// blocked behind it would hold this small pool, stalling every other
	// site's heartbeat. Given up, it is answered 503 and retried.
	hcfg.ConnConfig.RuntimeParams["lock_timeout"] = "1s"
	hcfg.MaxConns = min(hcfg.MaxConns, 4)
	hbPool, err := pgxpool.NewWithConfig(ctx, hcfg)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	d := &db{pool: pool, hbPool: hbPool, connCfg: cfg.ConnConfig, log: log, hub: sqlstore.NewHub()}
	var applied []string
	if !o.NoMigrate {
		applied, err = d.migrate(ctx)
	}
	if err != nil {
		d.closePools()
		return nil, fmt.Errorf("migrate postgres: %w", err)
	}
	for _, name := range applied {
		log.Info("applied migration", "migration", name)
	}
	if err := d.startListener(ctx); err != nil {
		d.closePools()
		return nil, fmt.Errorf("listen for notifications: %w", err)
	}
	s := sqlstore.New(d, sqlstore.Dialect{
		ForUpdate:   " FOR UPDATE",
		NowMicros:   `(extract(epoch from clock_timestamp()) * 1000000)::bigint`,
		WritableCTE: true,
	}, d.hub, sqlstore.Options{Logger: o.Logger, Now: o.Now, Key: o.Key, AuditKey: o.AuditKey, AuditKeyFresh: o.AuditKeyFresh})
	if !o.NoMigrate {
		if _, err := s.SealPlaintext(ctx); err != nil {
			s.Close()
			return nil, err
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

// ExecRaw runs one statement outside the store's rules. It exists for tests
// that tamper with rows (the audit chain check) and for repair scripts.
func (s *Store) ExecRaw(ctx context.Context, query string, args ...any) error {
	_, err := s.db.pool.Exec(ctx, query, args...)
	return err
}

// Pending names the migrations not yet applied to the database at url,
// writing nothing (it runs in a read-only transaction).
func Pending(ctx context.Context, url string) ([]string, error) {
	ms, err := sqlstore.Migrations(migrationsFS, "migrations")
	if err != nil {
		return nil, err
	}
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	defer c.Close(context.WithoutCancel(ctx))
	var versions []int64
	err = pgx.BeginTxFunc(ctx, c, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			return nil
		}
		rows, err := tx.Query(ctx, sqlstore.AppliedQuery)
		if err != nil {
			return err
		}
		versions, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read schema version: %w", err)
	}
	return sqlstore.PendingNames(ms, versions)
}

type db struct {
	pool    *pgxpool.Pool
	hbPool  *pgxpool.Pool // heartbeats: synchronous_commit=off
	connCfg *pgx.ConnConfig
	log     *slog.Logger
	hub     *sqlstore.Hub

	stopListen context.CancelFunc
	listenDone chan struct{}
	closeOnce  sync.Once
}

func (d *db) migrate(ctx context.Context) ([]string, error) {
	ms, err := sqlstore.Migrations(migrationsFS, "migrations")
	if err != nil {
		return nil, err
	}
	pc, err := d.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer pc.Release()
	if _, err := pc.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(migrationLock)); err != nil {
		return nil, fmt.Errorf("take migration lock: %w", err)
	}
	defer func() {
		_, _ = pc.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, int64(migrationLock))
	}()
	inTx := func(fn func(sqlstore.Conn) error) error {
		return pgx.BeginFunc(ctx, pc, func(tx pgx.Tx) error { return fn(conn{tx}) })
	}
	return sqlstore.Apply(ctx, conn{pc}, ms, inTx, d.IsNoRows)
}

// startListener runs the LISTEN connection until Close, reconnecting with
// backoff. It returns once the first LISTEN is in place, so a Subscribe
// after Open cannot miss a notification sent by another replica.
func (d *db) startListener(ctx context.Context) error {
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d.stopListen = cancel
	d.listenDone = make(chan struct{})
	conn, err := d.listenConn(ctx)
	if err != nil {
		cancel()
		close(d.listenDone)
		return err
	}
	go func() {
		defer close(d.listenDone)
		backoff := 100 * time.Millisecond
		for {
			err := d.serve(lctx, conn)
			conn.Close(context.WithoutCancel(lctx))
			if lctx.Err() != nil {
				return
			}
			d.log.Warn("notification connection lost; reconnecting", "err", err)
			for {
				select {
				case <-lctx.Done():
					return
				case <-time.After(backoff):
				}
				conn, err = d.listenConn(lctx)
				if err == nil {
					backoff = 100 * time.Millisecond
					// Wake-ups may have been missed while disconnected:
					// wake everyone; subscribers re-read their state.
					d.hub.PublishAll()
					break
				}
				backoff = min(backoff*2, 5*time.Second)
				d.log.Warn("reconnect notification connection", "err", err)
			}
		}
	}()
	return nil
}

func (d *db) listenConn(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, d.connCfg.Copy())
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
		conn.Close(ctx)
		return nil, err
	}
	return conn, nil
}

func (d *db) serve(ctx context.Context, conn *pgx.Conn) error {
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		d.hub.Publish(n.Payload)
	}
}

// Read runs fn in a read-only transaction.
func (d *db) Read(ctx context.Context, fn func(sqlstore.Conn) error) error {
	return d.tx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly}, fn)
}

// Write runs fn in a read-committed transaction, retrying it on
// serialization failures and deadlocks (which the fixed lock order makes
// rare, not impossible).
func (d *db) Write(ctx context.Context, fn func(sqlstore.Conn) error) error {
	var err error
	for attempt := range 5 {
		err = d.tx(ctx, pgx.TxOptions{}, fn)
		var pe *pgconn.PgError
		if err == nil || !errors.As(err, &pe) || (pe.Code != "40001" && pe.Code != "40P01") {
			return err
		}
		d.log.Debug("retrying transaction", "attempt", attempt+1, "err", err)
	}
	return err
}

func (d *db) tx(ctx context.Context, opts pgx.TxOptions, fn func(sqlstore.Conn) error) (err error) {
	tx, err := d.pool.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	if err = fn(conn{tx}); err != nil {
		return err
	}
	if err = tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func (d *db) ReadConn() sqlstore.Conn { return conn{d.pool} }

// WriteRow serves RecordHeartbeat, the only single-statement write: it
// runs on the heartbeat pool (see Open).
func (d *db) WriteRow(ctx context.Context, q string, args ...any) sqlstore.Row {
	return d.hbPool.QueryRow(ctx, q, args...)
}

func (d *db) NotifyTx(ctx context.Context, c sqlstore.Conn, topics []string) error {
	// One statement for all: a batch of plans wakes one topic per site.
	_, err := c.Exec(ctx, `SELECT pg_notify($1, topic) FROM unnest($2::text[]) AS topic`, channel, topics)
	return err
}

func (d *db) IsNoRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }

func (d *db) IsLockTimeout(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "55P03" // lock_not_available
}

func (d *db) IsUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

func (d *db) Ping(ctx context.Context) error { return d.pool.Ping(ctx) }

func (d *db) Close() error {
	d.closeOnce.Do(func() {
		d.stopListen()
		<-d.listenDone
		d.closePools()
	})
	return nil
}

func (d *db) closePools() {
	d.hbPool.Close()
	d.pool.Close()
}

// queryer is what pgx.Tx and *pgxpool.Pool have in common.
type queryer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

type conn struct{ tx queryer }

func (c conn) Exec(ctx context.Context, q string, args ...any) (int64, error) {
	tag, err := c.tx.Exec(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func (c conn) Query(ctx context.Context, q string, args ...any) (sqlstore.Rows, error) {
	rows, err := c.tx.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return rows, nil
}

func (c conn) QueryRow(ctx context.Context, q string, args ...any) sqlstore.Row {
	return c.tx.QueryRow(ctx, q, args...)
}
