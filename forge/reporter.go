package forge

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// ReporterOptions configures a Reporter. Zero values pick the defaults.
type ReporterOptions struct {
	// Prefix goes before every context ("acme/" makes "acme/nkudo/plan"), so
	// several control planes or tenants never overwrite each other's statuses.
	Prefix string
	// Buffer bounds the statuses waiting to be posted (default 1024). When
	// full, the oldest waiting status is dropped (and logged): statuses are
	// advisory, reconciling must never wait for the forge.
	Buffer int
	// MinBackoff and MaxBackoff bound the retry delay (default 1s and 5m).
	MinBackoff, MaxBackoff time.Duration
	// MaxAttempts is how often one status is tried before it is given up (default 8).
	MaxAttempts int
	// PostTimeout bounds one read-and-post against the forge (default 1m).
	PostTimeout time.Duration
	Logger      *slog.Logger
	// OnPosted, when set, is called after the forge shows a status (posted
	// now, or found already there), with the context as given to Report.
	OnPosted func(Status)
}

type statusKey struct{ sha, context string }

type pendingStatus struct {
	st        Status
	attempts  int
	notBefore time.Time
	seq       uint64 // arrival order, for dropping the oldest
}

// Reporter posts statuses through a Writer in the background: Report never
// blocks. Only the latest status per (commit, context) is kept, it is posted
// only when it differs from what the forge shows, and failures are retried
// with exponential backoff.
type Reporter struct {
	w    Writer
	opts ReporterOptions
	log  *slog.Logger

	mu      sync.Mutex
	queue   map[statusKey]*pendingStatus
	seq     uint64
	wake    chan struct{}
	shown   map[statusKey]Status // last status known to be on the forge
	shownOK map[string]bool      // commits whose forge statuses were read
	idle    chan struct{}        // closed when the queue is empty and no post runs
	busy    bool
}

// NewReporter returns a reporter for w; call Run to start posting.
func NewReporter(w Writer, o ReporterOptions) *Reporter {
	if o.Buffer <= 0 {
		o.Buffer = 1024
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Minute
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 8
	}
	if o.PostTimeout <= 0 {
		o.PostTimeout = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Reporter{
		w:       w,
		opts:    o,
		log:     o.Logger.With("component", "forge", "writer", w.Name()),
		queue:   map[statusKey]*pendingStatus{},
		wake:    make(chan struct{}, 1),
		shown:   map[statusKey]Status{},
		shownOK: map[string]bool{},
		idle:    make(chan struct{}),
	}
	close(r.idle)
	return r
}

// Writer returns the writer the reporter posts through.
func (r *Reporter) Writer() Writer { return r.w }

// Report queues st (context without prefix) and returns at once. A newer
// status for the same commit and context replaces a queued older one.
func (r *Reporter) Report(st Status) {
	st.Context = r.opts.Prefix + st.Context
	st.Description = Trim(strings.TrimSpace(st.Description), r.w.DescriptionLimit())
	st.TargetURL = SanitizeURL(st.TargetURL)
	k := statusKey{st.SHA, st.Context}
	r.mu.Lock()
	r.seq++
	if p, ok := r.queue[k]; ok {
		p.st, p.attempts, p.notBefore, p.seq = st, 0, time.Time{}, r.seq
	} else {
		if len(r.queue) >= r.opts.Buffer {
			r.dropOldestLocked()
		}
		r.queue[k] = &pendingStatus{st: st, seq: r.seq}
	}
	r.markBusyLocked()
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *Reporter) markBusyLocked() {
	select {
	case <-r.idle:
		r.idle = make(chan struct{})
	default:
	}
}

func (r *Reporter) dropOldestLocked() {
	var oldest statusKey
	var min uint64
	first := true
	for k, p := range r.queue {
		if first || p.seq < min {
			oldest, min, first = k, p.seq, false
		}
	}
	p := r.queue[oldest]
	delete(r.queue, oldest)
	r.log.Warn("status queue full, dropping oldest status", "sha", oldest.sha, "context", oldest.context, "state", p.st.State)
}

// Idle returns a channel closed when nothing is waiting to be posted
// (including statuses waiting for a retry).
func (r *Reporter) Idle() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.idle
}

// Run posts queued statuses until ctx ends.
func (r *Reporter) Run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		p, wait := r.next()
		if p != nil {
			r.post(ctx, p)
			continue
		}
		if wait > 0 {
			timer.Reset(wait)
		} else {
			timer.Reset(time.Hour)
		}
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-timer.C:
		}
	}
}

// next takes the oldest status that is due, or says how long until one is.
func (r *Reporter) next() (*pendingStatus, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	var best *pendingStatus
	var bestKey statusKey
	var wait time.Duration
	for k, p := range r.queue {
		if d := p.notBefore.Sub(now); d > 0 {
			if wait == 0 || d < wait {
				wait = d
			}
			continue
		}
		if best == nil || p.seq < best.seq {
			best, bestKey = p, k
		}
	}
	if best != nil {
		delete(r.queue, bestKey)
		r.busy = true
		return best, 0
	}
	if len(r.queue) == 0 && !r.busy {
		select {
		case <-r.idle:
		default:
			close(r.idle)
		}
	}
	return nil, wait
}

func (r *Reporter) post(ctx context.Context, p *pendingStatus) {
	pctx, cancel := context.WithTimeout(ctx, r.opts.PostTimeout)
	err := r.bounded(pctx, p.st)
	cancel()
	if err == nil && r.opts.OnPosted != nil {
		st := p.st
		st.Context = strings.TrimPrefix(st.Context, r.opts.Prefix)
		r.opts.OnPosted(st)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.busy = false
	k := statusKey{p.st.SHA, p.st.Context}
	if err == nil {
		return
	}
	p.attempts++
	if _, newer := r.queue[k]; newer || ctx.Err() != nil {
		return // a newer status replaces this one; or we are shutting down
	}
	if !Retryable(err) || p.attempts >= r.opts.MaxAttempts {
		r.log.Error("giving up on commit status", "sha", p.st.SHA, "context", p.st.Context, "state", p.st.State, "attempts", p.attempts, "err", err)
		return
	}
	d := backoff(r.opts.MinBackoff, r.opts.MaxBackoff, p.attempts)
	p.notBefore = time.Now().Add(d)
	r.log.Warn("commit status failed, will retry", "sha", p.st.SHA, "context", p.st.Context, "in", d, "err", err)
	r.seq++
	p.seq = r.seq
	r.queue[k] = p
}

// bounded runs postChanged but stops waiting for it when ctx ends: a
// writer stuck in a call that ignores its context (a git subprocess that
// never exits) costs one goroutine, never the reporter or a shutdown.
func (r *Reporter) bounded(ctx context.Context, st Status) error {
	done := make(chan error, 1)
	go func() { done <- r.postChanged(ctx, st) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	// A writer that honours its context returns about now.
	grace := time.NewTimer(abandonGrace)
	defer grace.Stop()
	select {
	case err := <-done:
		return err
	case <-grace.C:
		r.log.Warn("commit status post did not return when its context ended; abandoned", "sha", st.SHA, "context", st.Context, "err", ctx.Err())
		return &Error{Op: "post status " + st.Context, Retry: true, Err: ctx.Err()}
	}
}

// abandonGrace is how long a post may take to return after its context
// ended before the reporter stops waiting for it.
const abandonGrace = time.Second

// postChanged compares with what the forge shows (read once per commit,
// then remembered) and posts only a change.
func (r *Reporter) postChanged(ctx context.Context, st Status) error {
	k := statusKey{st.SHA, st.Context}
	r.mu.Lock()
	known := r.shownOK[st.SHA]
	r.mu.Unlock()
	if !known {
		cur, err := r.w.Current(ctx, st.SHA)
		if err != nil {
			return err
		}
		r.mu.Lock()
		if len(r.shownOK) >= 4096 {
			// Bound memory: forgetting only costs one extra read per commit.
			clear(r.shownOK)
			clear(r.shown)
		}
		r.shownOK[st.SHA] = true
		for _, c := range cur {
			r.shown[statusKey{st.SHA, c.Context}] = c
		}
		r.mu.Unlock()
	}
	r.mu.Lock()
	prev, ok := r.shown[k]
	if !ok {
		// GitHub compares contexts case-insensitively.
		for kk, v := range r.shown {
			if kk.sha == st.SHA && strings.EqualFold(kk.context, st.Context) {
				prev, ok = v, true
				break
			}
		}
	}
	r.mu.Unlock()
	if ok && prev.State == st.State && prev.Description == st.Description && (st.TargetURL == "" || prev.TargetURL == st.TargetURL) {
		return nil
	}
	if err := r.w.Post(ctx, st); err != nil {
		return err
	}
	r.mu.Lock()
	r.shown[k] = st
	r.mu.Unlock()
	r.log.Debug("posted commit status", "sha", st.SHA, "context", st.Context, "state", st.State)
	return nil
}

// Forget drops what the reporter remembers about a commit's statuses, so
// the next status re-reads the forge (and memory stays bounded).
func (r *Reporter) Forget(sha string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.shownOK, sha)
	for k := range r.shown {
		if k.sha == sha {
			delete(r.shown, k)
		}
	}
}

// backoff is the delay before retry number attempts (1-based): min doubled
// per attempt, capped at max, with jitter over its upper half so several
// replicas do not retry in step.
func backoff(minD, maxD time.Duration, attempts int) time.Duration {
	d := minD << min(attempts-1, 20)
	if d > maxD || d <= 0 {
		d = maxD
	}
	return d/2 + rand.N(d/2+1)
}
