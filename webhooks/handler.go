package webhooks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/store"
)

// Store is what the handler needs from the store.
type Store interface {
	ListAllRepositories(ctx context.Context) ([]store.Repository, error)
	WebhookSecret(ctx context.Context, tenant, id string) (store.Secret, error)
	RecordDelivery(ctx context.Context, forge, deliveryID string, now time.Time) (duplicate bool, err error)
	PruneDeliveries(ctx context.Context, cutoff time.Time) (int64, error)
	RecordPayload(ctx context.Context, repoID, bodyHash string, now time.Time, window time.Duration) (duplicate bool, err error)
}

// DeliveryRetention is how long delivery IDs are remembered: longer than
// the three days GitHub lets a delivery be redelivered by hand.
const DeliveryRetention = 7 * 24 * time.Hour

// Sink receives the work deliveries ask for: the reconciler, whose one
// task queue they go into directly. Both methods are called while the
// delivery is answered, so they must not wait for the work: they queue it
// (coalescing per repository, previews per pull request) and return.
type Sink interface {
	// Trigger queues a reconcile of the repository; ref "" means its
	// tracked branch head. Queued false: not queued (a full queue; a
	// suspended repository).
	Trigger(ctx context.Context, tenant, repoID, ref string) (api.TriggerResult, error)
	// Preview queues a validate-and-plan of a pull request head, applying
	// nothing; an error when it was not queued.
	Preview(ctx context.Context, tenant, repoID string, pr int, headSHA string) error
}

// ClosedSink is a Sink that also hears of closed pull requests (to mark
// their plan comment); a Sink without it ignores them.
type ClosedSink interface {
	// PreviewClosed records that a pull request was closed (merged or not)
	// without waiting for the forge.
	PreviewClosed(ctx context.Context, tenant, repoID string, pr int, merged bool) error
}

// LabelSink is a Sink that also takes the pull request's labels when the
// payload lists them (they open the destructive-plan gate); a Sink without
// it gets Preview, and reads labels itself.
type LabelSink interface {
	// PreviewLabels is Preview with the pull request's current labels.
	PreviewLabels(ctx context.Context, tenant, repoID string, pr int, headSHA string, labels []string) error
}

// Options configures a Handler.
type Options struct {
	Store Store
	Sink  Sink
	// Logger receives one line per ignored, rejected or dropped delivery;
	// nil discards.
	Logger *slog.Logger
	// MaxBody bounds a payload (default 25 MiB, GitHub's own cap). A
	// declared length over it is refused before the body is read.
	MaxBody int64
	// MaxConcurrent bounds the deliveries whose bodies are read at once
	// (default 8), and MaxBodyBytes the bytes they may hold together
	// (default 64 MiB; a delivery without a declared length counts as
	// MaxBody). Beyond either, deliveries get 503 with Retry-After.
	MaxConcurrent int
	MaxBodyBytes  int64
	// BodyTimeout bounds reading one body (default 30s), so slow senders
	// cannot hold the slots.
	BodyTimeout time.Duration
	// ReplayWindow is how long the hash of an accepted body is remembered:
	// the same body again within it is dropped as a replay, whatever its
	// delivery ID (default DeliveryRetention).
	ReplayWindow time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Handler serves POST /v1/webhooks/{repo}. It answers within milliseconds:
// an accepted delivery is queued with the Sink (the reconciler's bounded
// task queue) before the answer, never run. Run only forgets old delivery
// IDs.
type Handler struct {
	opts Options
	log  *slog.Logger

	mu     sync.Mutex
	repos  map[string]store.Repository
	loaded time.Time
	bodies *bodySlots
}

// New returns a handler; call Run to process deliveries.
func New(o Options) *Handler {
	if o.MaxBody <= 0 {
		o.MaxBody = 25 << 20
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = 8
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 64 << 20
	}
	if o.BodyTimeout <= 0 {
		o.BodyTimeout = 30 * time.Second
	}
	if o.ReplayWindow <= 0 {
		o.ReplayWindow = DeliveryRetention
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Handler{
		opts:   o,
		log:    o.Logger.With("component", "webhooks"),
		repos:  map[string]store.Repository{},
		bodies: &bodySlots{maxN: o.MaxConcurrent, maxBytes: o.MaxBodyBytes},
	}
}

type reply struct {
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, errCode, msg string) {
	writeJSON(w, code, map[string]any{"error": map[string]string{"code": errCode, "message": msg}})
}

// repoID takes the {repo} path value, or the last path segment when the
// handler is mounted without a pattern.
func repoID(r *http.Request) string {
	if v := r.PathValue("repo"); v != "" {
		return v
	}
	p := strings.TrimRight(r.URL.Path, "/")
	return p[strings.LastIndex(p, "/")+1:]
}

const (
	// repoCacheTTL is how long a cached repository is trusted.
	repoCacheTTL = time.Second
	// repoMissReloadGap is the least time between two reloads caused by an
	// unknown repository ID.
	repoMissReloadGap = 100 * time.Millisecond
)

// lookup finds a repository by ID across tenants. The list is cached and
// re-read on a miss at most once a second, so unknown IDs cannot hammer the store.
func (h *Handler) lookup(ctx context.Context, id string) (store.Repository, bool, error) {
	h.mu.Lock()
	r, ok := h.repos[id]
	age := h.opts.Now().Sub(h.loaded)
	h.mu.Unlock()
	if ok && age <= repoCacheTTL {
		return r, true, nil
	}
	// A miss reloads too: a repository registered moments ago must not
	// lose its first delivery (forges do not redeliver). The gap bounds
	// how often unknown IDs, which anyone can send, cost a reload.
	if !ok && age < repoMissReloadGap {
		return store.Repository{}, false, nil
	}
	list, err := h.opts.Store.ListAllRepositories(ctx)
	if err != nil {
		return store.Repository{}, false, fmt.Errorf("list repositories: %w", err)
	}
	m := make(map[string]store.Repository, len(list))
	for _, r := range list {
		m[r.ID] = r
	}
	h.mu.Lock()
	h.repos, h.loaded = m, h.opts.Now()
	h.mu.Unlock()
	r, ok = m[id]
	return r, ok, nil
}

// ServeHTTP implements http.Handler. Everything that can refuse a delivery
// without its body does so before reading it: the method, the declared
// length, the repository, its secret and the signature headers. Anyone can
// send a body, so only a delivery that names a registered repository with
// plausible credentials gets one of the MaxConcurrent body slots.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if r.Method != http.MethodPost {
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "webhooks are POSTed")
		return
	}
	if r.ContentLength > h.opts.MaxBody {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("payload of %d bytes is over the limit of %d", r.ContentLength, h.opts.MaxBody))
		return
	}
	id := repoID(r)
	repo, ok, err := h.lookup(ctx, id)
	if err != nil {
		h.log.Error("webhook: repository lookup failed", "repo", id, "err", err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", "store unavailable")
		return
	}
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", "no such repository")
		return
	}
	log := h.log.With("tenant", repo.Tenant, "repo", repo.ID)
	secret, err := h.opts.Store.WebhookSecret(ctx, repo.Tenant, repo.ID)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "not_found", "no such repository")
		return
	}
	if err != nil {
		log.Error("webhook: read secret failed", "err", err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", "store unavailable")
		return
	}
	v, err := newVerifier(r.Header, []byte(secret.Reveal()))
	if err != nil {
		rejectSignature(log, w, r, err)
		return
	}
	release, ok := h.bodies.acquire(r.ContentLength, h.opts.MaxBody)
	if !ok {
		log.Warn("webhook refused: too many deliveries being read", "remote", r.RemoteAddr)
		w.Header().Set("Retry-After", strconv.Itoa(int(retryAfter/time.Second)))
		writeError(w, http.StatusServiceUnavailable, "unavailable", "too many webhook deliveries in progress; retry later")
		return
	}
	defer release()
	body, err := h.readBody(w, r, v)
	if err != nil {
		log.Warn("webhook rejected", "err", err, "remote", r.RemoteAddr)
		if errors.Is(err, errTooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, "too_large", err.Error())
			return
		}
		writeError(w, http.StatusBadRequest, "bad_request", "read payload: "+err.Error())
		return
	}
	if err := v.verify(); err != nil {
		rejectSignature(log, w, r, err)
		return
	}
	ev, err := Parse(r.Header, body)
	if err != nil {
		log.Warn("webhook rejected", "err", err)
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	log = log.With("forge", ev.Forge, "event", ev.Name, "delivery", ev.DeliveryID)
	switch ev.Kind {
	case KindPing:
		writeJSON(w, http.StatusOK, reply{Status: "pong"})
		return
	case KindIgnored:
		log.Info("webhook ignored", "reason", ev.Reason)
		writeJSON(w, http.StatusAccepted, reply{Status: "ignored", Reason: ev.Reason})
		return
	case KindPush:
		if tracked := trackedBranch(repo, ev); tracked != "" && ev.Branch != tracked {
			log.Info("webhook ignored", "reason", "push to untracked branch "+ev.Branch)
			writeJSON(w, http.StatusAccepted, reply{Status: "ignored", Reason: "branch " + ev.Branch + " is not tracked"})
			return
		}
	case KindPullRequest, KindPullRequestClosed:
		if tracked := trackedBranch(repo, ev); tracked != "" && ev.BaseRef != "" && ev.BaseRef != tracked {
			log.Info("webhook ignored", "reason", "pull request into untracked branch "+ev.BaseRef)
			writeJSON(w, http.StatusAccepted, reply{Status: "ignored", Reason: "base " + ev.BaseRef + " is not tracked"})
			return
		}
	}
	if ev.DeliveryID != "" {
		dup, err := h.opts.Store.RecordDelivery(ctx, string(ev.Forge), repo.ID+"/"+ev.DeliveryID, h.opts.Now())
		if err != nil {
			log.Error("webhook: record delivery failed", "err", err)
			writeError(w, http.StatusServiceUnavailable, "unavailable", "store unavailable")
			return
		}
		if dup {
			log.Info("webhook duplicate delivery ignored")
			writeJSON(w, http.StatusOK, reply{Status: "duplicate"})
			return
		}
	}
	// A captured delivery can be sent again with a new delivery ID or
	// none; its signature still verifies, its body is what gives it away.
	dup, err := h.opts.Store.RecordPayload(ctx, repo.ID, payloadHash(ev, body), h.opts.Now(), h.opts.ReplayWindow)
	if err != nil {
		log.Error("webhook: record payload failed", "err", err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", "store unavailable")
		return
	}
	if dup {
		log.Warn("webhook replay ignored: the same payload was accepted before", "remote", r.RemoteAddr)
		writeJSON(w, http.StatusOK, reply{Status: "duplicate", Reason: "payload accepted before"})
		return
	}
	h.hand(ctx, log, repo, ev)
	writeJSON(w, http.StatusAccepted, reply{Status: "accepted"})
}

// payloadHash identifies a verified delivery by its forge, event and body.
func payloadHash(ev Event, body []byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", ev.Forge, ev.Name)
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// retryAfter is what a delivery refused for lack of a body slot is told.
const retryAfter = 5 * time.Second

func rejectSignature(log *slog.Logger, w http.ResponseWriter, r *http.Request, err error) {
	log.Warn("webhook rejected", "err", err, "remote", r.RemoteAddr)
	if errors.Is(err, ErrUnknownForge) {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	writeError(w, http.StatusUnauthorized, "unauthorized", "bad signature")
}

var errTooLarge = errors.New("payload too large")

// readBody reads at most MaxBody bytes within BodyTimeout, feeding the
// verifier as it goes.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request, v *verifier) ([]byte, error) {
	// A network deadline, so wall-clock time. Not every writer supports
	// deadlines (httptest's recorder does not); the server's own
	// ReadTimeout still applies then.
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(h.opts.BodyTimeout)) == nil {
		defer func() { _ = rc.SetReadDeadline(time.Time{}) }() // the connection may serve more requests
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 && r.ContentLength <= h.opts.MaxBody {
		// The slot reserved this much already; growing by doubling
		// instead would hold up to twice as much while copying.
		buf.Grow(int(r.ContentLength))
	}
	n, err := io.Copy(&buf, io.TeeReader(io.LimitReader(r.Body, h.opts.MaxBody+1), v))
	var mbe *http.MaxBytesError
	switch {
	case n > h.opts.MaxBody || errors.As(err, &mbe):
		return nil, fmt.Errorf("%w: over the limit of %d bytes", errTooLarge, h.opts.MaxBody)
	case err != nil:
		return nil, err
	}
	return buf.Bytes(), nil
}

// bodySlots caps the deliveries whose bodies are being read at once, by
// count and by bytes reserved (the declared length, or the limit when the
// length is not declared), so a burst of large deliveries cannot take the
// process's memory.
type bodySlots struct {
	mu       sync.Mutex
	n, maxN  int
	bytes    int64
	maxBytes int64
}

func (s *bodySlots) acquire(declared, limit int64) (release func(), ok bool) {
	size := limit
	if declared >= 0 {
		size = declared
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// One delivery always fits when nothing else is read, whatever its size.
	if s.n >= s.maxN || (s.n > 0 && s.bytes+size > s.maxBytes) {
		return nil, false
	}
	s.n++
	s.bytes += size
	return func() {
		s.mu.Lock()
		s.n--
		s.bytes -= size
		s.mu.Unlock()
	}, true
}

// trackedBranch is the repository's branch, or the forge's default branch
// when the repository tracks the default ("" when unknown: accept).
func trackedBranch(repo store.Repository, ev Event) string {
	if repo.Branch != "" {
		return repo.Branch
	}
	return ev.DefaultBranch
}

// hand queues the delivery's work with the sink. A delivery the sink
// does not queue (its queue full) is dropped with a log line and still
// answered 202: the forge would not redeliver it anyway, and polling
// catches up.
func (h *Handler) hand(ctx context.Context, log *slog.Logger, repo store.Repository, ev Event) {
	switch ev.Kind {
	case KindPush:
		res, err := h.opts.Sink.Trigger(ctx, repo.Tenant, repo.ID, "")
		if err == nil && !res.Queued {
			log.Info("webhook delivery not queued", "reason", res.Message)
		} else if err != nil {
			log.Error("webhook: hand-off failed; delivery dropped (polling will catch up)", "err", err)
		}
	case KindPullRequest:
		preview := h.opts.Sink.Preview
		if ls, ok := h.opts.Sink.(LabelSink); ok && ev.LabelsKnown {
			preview = func(ctx context.Context, tenant, repoID string, pr int, sha string) error {
				return ls.PreviewLabels(ctx, tenant, repoID, pr, sha, ev.Labels)
			}
		}
		if err := preview(ctx, repo.Tenant, repo.ID, ev.PR, ev.HeadSHA); err != nil {
			log.Error("webhook: hand-off failed; delivery dropped", "pr", ev.PR, "err", err)
		}
	case KindPullRequestClosed:
		if cs, ok := h.opts.Sink.(ClosedSink); ok {
			if err := cs.PreviewClosed(ctx, repo.Tenant, repo.ID, ev.PR, ev.Merged); err != nil {
				log.Error("webhook: hand-off failed; delivery dropped", "pr", ev.PR, "err", err)
			}
		}
	}
}

// Run forgets delivery IDs older than DeliveryRetention, at once and then
// hourly, until ctx ends.
func (h *Handler) Run(ctx context.Context) {
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	for {
		h.prune(ctx)
		select {
		case <-ctx.Done():
			return
		case <-prune.C:
		}
	}
}

func (h *Handler) prune(ctx context.Context) {
	n, err := h.opts.Store.PruneDeliveries(ctx, h.opts.Now().Add(-DeliveryRetention))
	if err != nil && ctx.Err() == nil {
		h.log.Warn("prune webhook deliveries", "err", err)
	} else if n > 0 {
		h.log.Debug("pruned webhook deliveries", "count", n)
	}
}
