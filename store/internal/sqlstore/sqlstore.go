// Package sqlstore is the one implementation of store.Store over SQL that
// both backends share. A backend (store/sqlite, store/postgres) supplies
// transactions, a few dialect strings and cross-replica notification; all
// queries, rules and audit chaining live here, so the two cannot drift.
//
// Queries use $1-style placeholders (the SQLite backend rewrites them to
// ?1), store every time as BIGINT microseconds since the Unix epoch, avoid
// NULL (zero values mean "none") and keep JSON as TEXT so bytes round-trip
// exactly (the audit chain hashes them).
package sqlstore

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/seal"
)

// Conn is a transaction as the queries see it.
type Conn interface {
	Exec(ctx context.Context, query string, args ...any) (rowsAffected int64, err error)
	Query(ctx context.Context, query string, args ...any) (Rows, error)
	QueryRow(ctx context.Context, query string, args ...any) Row
}

// Rows iterates a result set.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

// Row is a single-row result; Scan returns an error that Backend.IsNoRows
// recognises when there was no row.
type Row interface {
	Scan(dest ...any) error
}

// Backend is what a database driver provides.
type Backend interface {
	// Read runs fn in a read-only transaction.
	Read(ctx context.Context, fn func(Conn) error) error
	// Write runs fn in a read-write transaction, committed when fn returns
	// nil. It may retry fn on transient serialization failures, so fn must
	// not have effects outside the transaction.
	Write(ctx context.Context, fn func(Conn) error) error
	// ReadConn returns a Conn that runs each statement on its own, outside
	// a transaction (one round trip), for reads that are a single statement.
	ReadConn() Conn
	// WriteRow runs one statement (UPDATE … RETURNING) as its own implicit
	// transaction: one round trip for the hottest write, the heartbeat.
	// A backend may trade the durability of the last moments for speed here.
	WriteRow(ctx context.Context, query string, args ...any) Row
	// NotifyTx queues cross-replica wake-ups of topics, delivered on
	// commit (a no-op for a single-process backend).
	NotifyTx(ctx context.Context, c Conn, topics []string) error
	IsNoRows(err error) bool
	IsUniqueViolation(err error) bool
	// IsLockTimeout says err is a statement given up after waiting its
	// bound for a lock (WriteRow's, where the backend sets one).
	IsLockTimeout(err error) bool
	Ping(ctx context.Context) error
	Close() error
}

// Dialect holds the few SQL fragments that differ between databases.
type Dialect struct {
	// ForUpdate is appended to SELECTs that lock rows (" FOR UPDATE"; ""
	// where the database has a single writer anyway).
	ForUpdate string
	// NowMicros is an SQL expression for the database's current time in
	// microseconds, used for leases so replicas with skewed clocks agree.
	NowMicros string
	// WritableCTE says an INSERT may run inside a WITH of an UPDATE (one
	// statement, so one round trip, for the audit chain's last rows and
	// its head).
	WritableCTE bool
}

// Options configure a Store.
type Options struct {
	Logger *slog.Logger
	// Now is the clock for bookkeeping timestamps (nil = time.Now).
	Now func() time.Time
	// Key seals secrets at rest (nil = a random key for this process only:
	// secrets written then do not open after a restart, and plain-text
	// secrets of older releases are left unsealed; for tests).
	Key *seal.Key
	// ProcessLeases says the database serves one process only (SQLite): a
	// lease held by a holder that never acquired it through this Store was
	// left by an earlier process that died holding it, and is taken over
	// at once instead of waiting for it to expire.
	ProcessLeases bool
	// AuditKey keys the audit chain (nil = events get no MAC, and a chain
	// already keyed cannot be appended to).
	AuditKey store.AuditKey
	// AuditKeyFresh says AuditKey was just made, so a chain that has events
	// but no keyed part may be keyed from now on. With an older key only an
	// empty chain is: a key that already keyed this chain must never key it
	// again, or someone who stripped the MACs and re-chained would see the
	// evidence laundered by the next start.
	AuditKeyFresh bool
}

// Store implements store.Store over a Backend.
type Store struct {
	b   Backend
	d   Dialect
	log *slog.Logger
	now func() time.Time
	hub *Hub
	key *seal.Key
	// ephemeralKey: key was made up for this process (Options.Key nil).
	ephemeralKey bool
	closed       atomic.Bool

	auditKey      store.AuditKey
	auditKeyFresh bool
	processLeases bool
	holders       sync.Map // holder → true: holders of this process: every holder that asked this Store for a lease
}

var _ store.Store = (*Store)(nil)

// New builds a Store. hub may be shared with the backend's listener (nil = a new one).
func New(b Backend, d Dialect, hub *Hub, o Options) *Store {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if hub == nil {
		hub = NewHub()
	}
	ephemeral := o.Key == nil
	if ephemeral {
		k, _, err := seal.Generate()
		if err != nil {
			panic(err) // crypto/rand does not fail on supported platforms
		}
		o.Key = k
	}
	return &Store{b: b, d: d, log: o.Logger, now: o.Now, hub: hub, key: o.Key, ephemeralKey: ephemeral,
		processLeases: o.ProcessLeases, auditKey: o.AuditKey, auditKeyFresh: o.AuditKeyFresh}
}

// Ping implements store.Store.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	if err := s.b.Ping(ctx); err != nil {
		return fmt.Errorf("ping database: %w", err)
	}
	return nil
}

// Close implements store.Store.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.hub.Close()
	return s.b.Close()
}

// wtx is a write transaction with the audit events and topics it produces.
type wtx struct {
	Conn
	s      *Store
	now    time.Time
	audits []store.AuditEvent
	topics []string
}

// audit queues one audit event, appended at the end of the transaction
// (the chain head is the last lock taken, so lock order stays fixed).
func (t *wtx) audit(tenant string, actor store.Actor, action, object string, detail any) {
	var d []byte
	if detail != nil {
		d = store.Detail(detail)
	}
	t.audits = append(t.audits, store.AuditEvent{
		Tenant: tenant, Actor: actor.String(), Action: action, Object: object, Detail: d,
	})
}

func (t *wtx) notify(topic string) { t.topics = append(t.topics, topic) }

func (s *Store) read(ctx context.Context, fn func(Conn) error) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return s.b.Read(ctx, fn)
}

// read1 runs fn, which must issue exactly one statement, without a
// transaction: a single statement sees one consistent snapshot anyway.
func (s *Store) read1(ctx context.Context, fn func(Conn) error) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return fn(s.b.ReadConn())
}

// readAll runs the single query q through read1 and scans every row it
// returns with scan.
func readAll[T any](ctx context.Context, s *Store, scan func(Row) (T, error), q string, args ...any) ([]T, error) {
	var out []T
	err := s.read1(ctx, func(c Conn) error {
		rows, err := c.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			v, err := scan(rows)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		return rows.Err()
	})
	return out, err
}

func (s *Store) write(ctx context.Context, fn func(*wtx) error) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	var topics []string
	err := s.b.Write(ctx, func(c Conn) error {
		t := &wtx{Conn: c, s: s, now: store.Micro(s.now())}
		if err := fn(t); err != nil {
			return err
		}
		// Notifications are queued before the audit append (they are sent
		// at commit either way): from the audit head's lock to the commit,
		// every audited transaction waits, so that span holds no more
		// statements than the chain needs.
		if len(t.topics) > 0 {
			if err := s.b.NotifyTx(ctx, c, t.topics); err != nil {
				return fmt.Errorf("notify %s: %w", strings.Join(t.topics, ", "), err)
			}
		}
		if len(t.audits) > 0 {
			if _, err := s.appendAudit(ctx, t, t.audits); err != nil {
				return err
			}
		}
		topics = t.topics
		return nil
	})
	if err != nil {
		return err
	}
	for _, topic := range topics {
		s.hub.Publish(topic)
	}
	return nil
}

// notFound turns a driver "no rows" into store.ErrNotFound.
func (s *Store) notFound(err error) error {
	if err != nil && s.b.IsNoRows(err) {
		return store.ErrNotFound
	}
	return err
}

// conflict turns a unique violation into store.ErrConflict.
func (s *Store) conflict(err error) error {
	if err != nil && s.b.IsUniqueViolation(err) {
		return store.ErrConflict
	}
	return err
}

// us converts a time to stored microseconds (0 for the zero time).
func us(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// tm converts stored microseconds back (0 gives the zero time).
func tm(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMicro(v).UTC()
}

func raw(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}

// Hub fans wake-ups out to in-process subscribers. Publish never blocks:
// each subscriber channel has a buffer of one and wake-ups coalesce.
type Hub struct {
	mu     sync.Mutex
	subs   map[string]map[chan struct{}]struct{}
	closed bool
}

// NewHub returns an empty hub.
func NewHub() *Hub { return &Hub{subs: map[string]map[chan struct{}]struct{}{}} }

// Subscribe registers a subscriber until cancel or ctx ends.
func (h *Hub) Subscribe(ctx context.Context, topic string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return ch, func() {}
	}
	if h.subs[topic] == nil {
		h.subs[topic] = map[chan struct{}]struct{}{}
	}
	h.subs[topic][ch] = struct{}{}
	h.mu.Unlock()
	var once sync.Once
	cancel := func() {
		once.Do(func() {
			h.mu.Lock()
			delete(h.subs[topic], ch)
			if len(h.subs[topic]) == 0 {
				delete(h.subs, topic)
			}
			h.mu.Unlock()
		})
	}
	// A callback, not a goroutine per subscriber: every parked plan
	// long-poll holds a subscription, and a fleet parks thousands.
	stop := context.AfterFunc(ctx, cancel)
	return ch, func() { stop(); cancel() }
}

// Publish wakes the subscribers of topic.
func (h *Hub) Publish(topic string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs[topic] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// PublishAll wakes every subscriber (after a notification connection was
// re-established and wake-ups may have been missed).
func (h *Hub) PublishAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, subs := range h.subs {
		for ch := range subs {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// Close drops all subscribers; later subscriptions get channels that never fire.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	h.subs = map[string]map[chan struct{}]struct{}{}
}

// errInvalid wraps store.ErrInvalid with a reason.
func errInvalid(format string, a ...any) error {
	return fmt.Errorf(format+": %w", append(a, store.ErrInvalid)...)
}

// values renders the placeholders of a multi-row INSERT: rows groups of
// cols placeholders, numbered from 1.
func values(rows, cols int) string { return valuesFrom(1, rows, cols) }

// valuesFrom is values numbered from first.
func valuesFrom(first, rows, cols int) string {
	var b strings.Builder
	b.Grow(rows * cols * 6)
	n := first
	for r := range rows {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for c := range cols {
			if c > 0 {
				b.WriteString(", ")
			}
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			n++
		}
		b.WriteByte(')')
	}
	return b.String()
}

// list renders n placeholders numbered from first, for an IN list.
func list(first, n int) string {
	var b strings.Builder
	b.Grow(n * 6)
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(first + i))
	}
	return b.String()
}

// batchRows bounds multi-row INSERTs (SQLite allows 32766 parameters).
const batchRows = 500
