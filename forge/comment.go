package forge

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// CommentLimit is the longest comment body (in characters) written: GitHub
// answers 422 above 65,536 characters.
const CommentLimit = 65536

// commentPages bounds how many pages of a pull request's comments are
// searched for our marker, so a PR with a huge discussion costs a bounded
// number of requests (an unfound marker then means a second comment, not a
// stuck writer).
const commentPages = 20

// PlanMarker is the hidden first line of the plan comment. It carries the
// status prefix so two control planes on one repository each keep their own.
func PlanMarker(prefix string) string { return "<!-- nkudo:plan " + prefix + " -->" }

// Commenter keeps one comment per pull request, found by a marker.
type Commenter interface {
	Name() string
	// Upsert finds the comment of pull request pr whose body starts with
	// marker and edits it to marker+"\n"+body, or, when create is true,
	// creates it when there is none. It does not write when the body is
	// already that.
	Upsert(ctx context.Context, pr int, marker, body string, create bool) error
}

// Upsert implements Commenter with the issue comments API, which GitHub and
// Gitea/Forgejo both use for pull request conversations.
func (g *GitHub) Upsert(ctx context.Context, pr int, marker, body string, create bool) error {
	if pr <= 0 {
		return fmt.Errorf("comment: pull request number %d must be positive", pr)
	}
	issue := g.repoPath() + "/issues/" + strconv.Itoa(pr) + "/comments"
	per := "per_page=100"
	if g.gitea {
		per = "limit=50"
	}
	return upsertMarked(ctx, commentAPI{
		do:         g.do,
		list:       issue + "?" + per + "&page=",
		create:     issue,
		edit:       g.repoPath() + "/issues/comments/",
		editMethod: http.MethodPatch,
		noun:       "comment",
	}, marker, body, create)
}

// commentAPI is where a forge lists, edits and creates the comments of one
// pull request.
type commentAPI struct {
	do         func(ctx context.Context, method, path string, body []byte, op string) ([]byte, error)
	list       string // page number appended
	create     string
	edit       string // comment ID appended
	editMethod string
	noun       string // in operation names: "comment", "note"
}

// markedComment is a comment as listed; System is set only by GitLab, whose
// system notes ("added 1 commit") are never ours.
type markedComment struct {
	ID     int64  `json:"id"`
	Body   string `json:"body"`
	System bool   `json:"system"`
}

// upsertMarked implements Upsert on api: it searches at most commentPages
// pages for the comment starting with marker, edits it unless it already
// reads marker+"\n"+body, and otherwise creates one when create is true.
func upsertMarked(ctx context.Context, api commentAPI, marker, body string, create bool) error {
	full := marker + "\n" + body
	for page := 1; page <= commentPages; page++ {
		b, err := api.do(ctx, http.MethodGet, api.list+strconv.Itoa(page), nil, "list "+api.noun+"s")
		if err != nil {
			return err
		}
		var list []markedComment
		if err := json.Unmarshal(b, &list); err != nil {
			return &Error{Op: "list " + api.noun + "s", Err: fmt.Errorf("decode: %w", err)}
		}
		for _, c := range list {
			if c.System || !hasMarker(c.Body, marker) {
				continue
			}
			if c.Body == full {
				return nil
			}
			in, err := json.Marshal(map[string]string{"body": full})
			if err != nil {
				return fmt.Errorf("encode %s: %w", api.noun, err)
			}
			_, err = api.do(ctx, api.editMethod, api.edit+strconv.FormatInt(c.ID, 10), in, "edit "+api.noun)
			return err
		}
		if len(list) == 0 {
			break
		}
	}
	if !create {
		return nil
	}
	in, err := json.Marshal(map[string]string{"body": full})
	if err != nil {
		return fmt.Errorf("encode %s: %w", api.noun, err)
	}
	_, err = api.do(ctx, http.MethodPost, api.create, in, "create "+api.noun)
	return err
}

// hasMarker reports whether body's first line is marker (forges may turn
// "\n" into "\r\n").
func hasMarker(body, marker string) bool {
	first, _, _ := strings.Cut(body, "\n")
	return strings.TrimRight(first, "\r") == marker
}

// CommentReporterOptions configures a CommentReporter. Zero values pick the defaults.
type CommentReporterOptions struct {
	// Marker identifies our comment (see PlanMarker).
	Marker string
	// MinBackoff and MaxBackoff bound the retry delay (default 1s and 5m).
	MinBackoff, MaxBackoff time.Duration
	// MaxAttempts is how often one body is tried before it is given up (default 8).
	MaxAttempts int
	// Timeout bounds one upsert (default 1m).
	Timeout time.Duration
	Logger  *slog.Logger
}

type pendingComment struct {
	body      string
	create    bool
	attempts  int
	notBefore time.Time
}

// CommentReporter writes pull request comments through a Commenter in the
// background: Report never blocks, only the latest body per pull request is
// kept (a burst of pushes costs one write), and failures are retried with
// backoff, so a forge outage never blocks a preview.
type CommentReporter struct {
	c    Commenter
	opts CommentReporterOptions
	log  *slog.Logger

	mu      sync.Mutex
	pending map[int]*pendingComment
	wake    chan struct{}
	idle    chan struct{}
	busy    bool
}

// NewCommentReporter returns a reporter for c; call Run to start writing.
func NewCommentReporter(c Commenter, o CommentReporterOptions) *CommentReporter {
	if o.MinBackoff <= 0 {
		o.MinBackoff = time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Minute
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 8
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	r := &CommentReporter{c: c, opts: o, log: o.Logger.With("component", "forge", "commenter", c.Name()),
		pending: map[int]*pendingComment{}, wake: make(chan struct{}, 1), idle: make(chan struct{})}
	close(r.idle)
	return r
}

// Report queues body as the comment of pull request pr, replacing a body
// still waiting for the same pull request.
func (r *CommentReporter) Report(pr int, body string) { r.queue(pr, body, true) }

// ReportEdit is Report for an edit only: a pull request without our
// comment gets none (a closed pull request we never commented on).
func (r *CommentReporter) ReportEdit(pr int, body string) { r.queue(pr, body, false) }

func (r *CommentReporter) queue(pr int, body string, create bool) {
	r.mu.Lock()
	r.pending[pr] = &pendingComment{body: body, create: create}
	select {
	case <-r.idle:
		r.idle = make(chan struct{})
	default:
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Idle returns a channel closed when nothing waits to be written.
func (r *CommentReporter) Idle() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.idle
}

// Run writes queued comments until ctx ends.
func (r *CommentReporter) Run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		pr, p, wait := r.next()
		if p != nil {
			r.write(ctx, pr, p)
			continue
		}
		if wait <= 0 {
			wait = time.Hour
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-timer.C:
		}
	}
}

func (r *CommentReporter) next() (int, *pendingComment, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	var wait time.Duration
	for pr, p := range r.pending {
		if d := p.notBefore.Sub(now); d > 0 {
			if wait == 0 || d < wait {
				wait = d
			}
			continue
		}
		delete(r.pending, pr)
		r.busy = true
		return pr, p, 0
	}
	if len(r.pending) == 0 && !r.busy {
		select {
		case <-r.idle:
		default:
			close(r.idle)
		}
	}
	return 0, nil, wait
}

func (r *CommentReporter) write(ctx context.Context, pr int, p *pendingComment) {
	wctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	err := r.c.Upsert(wctx, pr, r.opts.Marker, p.body, p.create)
	cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.busy = false
	if err == nil {
		r.log.Debug("wrote plan comment", "pr", pr)
		return
	}
	p.attempts++
	if _, newer := r.pending[pr]; newer || ctx.Err() != nil {
		return
	}
	if !Retryable(err) || p.attempts >= r.opts.MaxAttempts {
		r.log.Error("giving up on plan comment", "pr", pr, "attempts", p.attempts, "err", err)
		return
	}
	d := backoff(r.opts.MinBackoff, r.opts.MaxBackoff, p.attempts)
	p.notBefore = time.Now().Add(d)
	r.log.Warn("plan comment failed, will retry", "pr", pr, "in", d, "err", err)
	r.pending[pr] = p
}
