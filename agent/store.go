package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nkudo/nkudo/agent/internal/atomicfile"
	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/model"
)

var idRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

func checkID(kind, id string) error {
	if !idRe.MatchString(id) {
		return fmt.Errorf("%s id %q: want 1-128 letters, digits, '-' or '_'", kind, id)
	}
	return nil
}

// Record is the cached state of one action: the result as reported
// (status running is the "started" marker: the action began and its
// outcome is not known) and what the action did, for the debug bundle.
type Record struct {
	model.ActionResult
	Operation model.Operation `json:"operation"`
	VM        string          `json:"vm"`
}

// Final reports whether the record holds an outcome.
func (r Record) Final() bool {
	return r.Status == model.ActionSucceeded || r.Status == model.ActionFailed || r.Status == model.ActionSkipped
}

// Cache is the persisted idempotency cache: action ID → Record, one file
// per action, each written atomically and fsynced (file and directory)
// before the result is reported.
type Cache struct {
	dir string
}

// OpenCache opens (creating) the cache in dir.
func OpenCache(dir string) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open action cache: %w", err)
	}
	return &Cache{dir: dir}, nil
}

// Get returns the record of an action, ok=false when there is none.
func (c *Cache) Get(actionID string) (Record, bool, error) {
	var r Record
	if err := checkID("action", actionID); err != nil {
		return r, false, err
	}
	b, err := os.ReadFile(filepath.Join(c.dir, actionID+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("action cache: %w", err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, false, fmt.Errorf("action cache %s: %w", actionID, err)
	}
	return r, true, nil
}

// Put stores a record durably.
func (c *Cache) Put(r Record) error {
	if err := checkID("action", r.ActionID); err != nil {
		return err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode action record: %w", err)
	}
	return atomicfile.Write(filepath.Join(c.dir, r.ActionID+".json"), b, 0o600)
}

// Prune removes final records older than age (their plans are long done).
func (c *Cache) Prune(now time.Time, age time.Duration) error {
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return fmt.Errorf("prune action cache: %w", err)
	}
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || idRe.FindString(id) == "" {
			continue
		}
		r, ok, err := c.Get(id)
		if err != nil || !ok || !r.Final() || now.Sub(r.FinishedAt) < age {
			continue
		}
		_ = os.Remove(filepath.Join(c.dir, e.Name()))
	}
	return nil
}

// OutboxEntry is one undelivered result or log line.
type OutboxEntry struct {
	Seq    uint64            `json:"-"`
	Key    string            `json:"key,omitempty"`
	Result *api.ActionResult `json:"result,omitempty"`
	Log    *api.LogLine      `json:"log,omitempty"`
}

// Outbox is a bounded on-disk FIFO of results or log lines waiting for the
// control plane. When it is full the oldest entry is dropped and counted;
// the counter is persisted and reported.
type Outbox struct {
	dir string
	max int

	mu      sync.Mutex
	next    uint64
	pending []pendingEntry // ordered by seq
	dropped int64
	wake    chan struct{}
	// write stores one file durably; nil means atomicfile.Write. Tests
	// replace it to make the outbox's disk fail.
	write func(path string, data []byte, perm os.FileMode) error
}

func (o *Outbox) writeFile(path string, data []byte, perm os.FileMode) error {
	if o.write != nil {
		return o.write(path, data, perm)
	}
	return atomicfile.Write(path, data, perm)
}

type pendingEntry struct {
	seq uint64
	key string
}

// OpenOutbox opens (creating) an outbox in dir holding at most limit entries (0 = unbounded).
func OpenOutbox(dir string, limit int) (*Outbox, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open outbox: %w", err)
	}
	o := &Outbox{dir: dir, max: limit, next: 1, wake: make(chan struct{}, 1)}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open outbox: %w", err)
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		seq, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue
		}
		var oe OutboxEntry
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil || json.Unmarshal(b, &oe) != nil {
			// A torn entry cannot exist (atomic writes); an unreadable one is dropped loudly.
			o.dropped++
			os.Remove(filepath.Join(dir, e.Name()))
			continue
		}
		o.pending = append(o.pending, pendingEntry{seq: seq, key: oe.Key})
		o.next = max(o.next, seq+1)
	}
	sort.Slice(o.pending, func(i, j int) bool { return o.pending[i].seq < o.pending[j].seq })
	if b, err := os.ReadFile(filepath.Join(dir, "dropped")); err == nil {
		n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		o.dropped += n
	}
	if len(o.pending) > 0 {
		o.signal()
	}
	return o, nil
}

func (o *Outbox) signal() { kick(o.wake) }

// Wake is signalled when entries are added.
func (o *Outbox) Wake() <-chan struct{} { return o.wake }

// Add appends an entry. A non-empty key that is already pending is not
// added twice.
func (o *Outbox) Add(e OutboxEntry) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if e.Key != "" {
		for _, p := range o.pending {
			if p.key == e.Key {
				return nil
			}
		}
	}
	for o.max > 0 && len(o.pending) >= o.max {
		oldest := o.pending[0]
		if err := os.Remove(o.path(oldest.seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("outbox: drop oldest: %w", err)
		}
		o.pending = o.pending[1:]
		o.dropped++
		if err := o.writeFile(filepath.Join(o.dir, "dropped"), []byte(strconv.FormatInt(o.dropped, 10)), 0o600); err != nil {
			return err
		}
	}
	seq := o.next
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("outbox: encode: %w", err)
	}
	if err := o.writeFile(o.path(seq), b, 0o600); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	o.next++
	o.pending = append(o.pending, pendingEntry{seq: seq, key: e.Key})
	o.signal()
	return nil
}

func (o *Outbox) path(seq uint64) string {
	return filepath.Join(o.dir, fmt.Sprintf("%016d.json", seq))
}

// Peek returns up to n of the oldest entries, oldest first.
func (o *Outbox) Peek(n int) ([]OutboxEntry, error) {
	o.mu.Lock()
	pend := append([]pendingEntry(nil), o.pending[:min(n, len(o.pending))]...)
	o.mu.Unlock()
	out := make([]OutboxEntry, 0, len(pend))
	for _, p := range pend {
		b, err := os.ReadFile(o.path(p.seq))
		if errors.Is(err, os.ErrNotExist) {
			continue // dropped meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("outbox: %w", err)
		}
		var e OutboxEntry
		if err := json.Unmarshal(b, &e); err != nil {
			return nil, fmt.Errorf("outbox entry %d: %w", p.seq, err)
		}
		e.Seq = p.seq
		out = append(out, e)
	}
	return out, nil
}

// Remove deletes delivered entries.
func (o *Outbox) Remove(entries ...OutboxEntry) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	gone := map[uint64]bool{}
	for _, e := range entries {
		if err := os.Remove(o.path(e.Seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("outbox: %w", err)
		}
		gone[e.Seq] = true
	}
	kept := o.pending[:0]
	for _, p := range o.pending {
		if !gone[p.seq] {
			kept = append(kept, p)
		}
	}
	o.pending = kept
	return atomicfile.SyncDir(o.dir)
}

// Len is the number of pending entries.
func (o *Outbox) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.pending)
}

// Dropped is how many entries were dropped because the outbox was full
// (or unreadable) over the outbox's lifetime.
func (o *Outbox) Dropped() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.dropped
}

// seqStore hands out per-plan log sequence numbers (from 1), persisted so
// that numbers are never reused after a restart.
type seqStore struct {
	dir string
	mu  sync.Mutex
}

func (s *seqStore) next(planID string) (int64, error) {
	if err := checkID("plan", planID); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := filepath.Join(s.dir, planID+".seq")
	var n int64
	if b, err := os.ReadFile(p); err == nil {
		n, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	} else if !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("log sequence: %w", err)
	}
	n++
	if err := atomicfile.Write(p, []byte(strconv.FormatInt(n, 10)), 0o600); err != nil {
		return 0, err
	}
	return n, nil
}
