// Package controlplane owns the n-kudo HTTPS API server: the route table,
// authentication (mTLS for agents, bearer API tokens for people), tenant
// and site scoping of every request, enrollment and certificate renewal
// through pki, the agent endpoints (heartbeat, plan long-poll, results,
// logs), the user endpoints, metrics and graceful shutdown.
//
// It composes the store and pki; the GitOps loop plugs in through the
// Reconciler and webhook hooks declared here. Desired state is read from
// the store, where the reconciler records it. HTTP handlers are
// thin adapters: they decode, call a domain method on Server that never sees
// an *http.Request, and encode the answer.
package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/ui"
	"github.com/nkudo/nkudo/internal/egress"
	"github.com/nkudo/nkudo/pki"
	"github.com/nkudo/nkudo/store"
)

// Reconciler is the GitOps loop as the API server sees it.
type Reconciler interface {
	// Trigger asks for a reconcile of one repository at ref ("" = its
	// branch). It should queue and return quickly.
	Trigger(ctx context.Context, tenantID, repoID, ref string) (api.TriggerResult, error)
	// InventoryChanged is called after a heartbeat changed a site's VM
	// inventory. It must not block: queue the work.
	InventoryChanged(ctx context.Context, tenantID, site string)
}

// Options configure a Server. Store, PKI and Logger are required; every
// other zero value means the documented default.
type Options struct {
	Store  store.Store
	PKI    *pki.Authority
	Logger *slog.Logger

	// PublicURL is how agents and forges reach this server, used in the
	// enrollment command and webhook URLs ("" = https://<request Host>).
	PublicURL string

	// Reconciler handles reconcile triggers and inventory changes (nil: the
	// reconcile endpoint answers 501 and inventory changes are not forwarded).
	Reconciler Reconciler
	// Webhooks serves POST /v1/webhooks/{repo}; it checks signatures itself
	// (nil: 501). The repository ID is in r.PathValue("repo").
	Webhooks http.Handler

	// AllowInsecureCredentials accepts repositories whose credentials
	// would travel over plain http (local development only; the
	// reconciler must be configured the same way).
	AllowInsecureCredentials bool

	// NetBirdEgress is the egress policy on calls to tenants' NetBird
	// management APIs (zero: the default refusals). NetBirdTLS, when set,
	// is their TLS configuration (tests: the fake's roots).
	NetBirdEgress egress.Policy
	NetBirdTLS    *tls.Config

	// HeartbeatRate is the total heartbeats per second the server is sized
	// for; the interval handed to agents is max(MinHeartbeatInterval,
	// sites/HeartbeatRate) (Nomad's rule). Default 50.
	HeartbeatRate float64
	// MinHeartbeatInterval is the floor of that interval. Default 10s.
	MinHeartbeatInterval time.Duration
	// HeartbeatGrace is added to a site's interval before it counts as
	// offline. Default 10s.
	HeartbeatGrace time.Duration

	// EnrollRate and EnrollBurst limit enrollment attempts per source
	// address. Defaults: one every 6s (10 per minute), burst 5.
	EnrollRate  rate.Limit
	EnrollBurst int
	// EnrollTokenTTL is the default lifetime of enrollment tokens. Default 1h.
	EnrollTokenTTL time.Duration

	// MaxBodyBytes limits request bodies. Default 1 MiB.
	MaxBodyBytes int64
	// MaxLogLineBytes cuts longer log lines, with a marker. Default 16 KiB.
	MaxLogLineBytes int
	// LogPlanQuotaBytes and LogSiteQuotaBytes bound the log kept per plan
	// and per site (line text plus store.LogLineOverhead per line); lines
	// beyond are dropped and counted. Defaults 64 MiB and 512 MiB.
	LogPlanQuotaBytes int64
	LogSiteQuotaBytes int64
	// MaxLogPageBytes bounds the line text of one page of a plan's log
	// (and of one read of a follow stream). Default 4 MiB.
	MaxLogPageBytes int64
	// MaxLongPoll caps the wait of the plan long-poll. Default 5m: a
	// parked poll costs no CPU, and every return is a request to answer
	// and a store read when the agent re-arms it.
	MaxLongPoll time.Duration
	// MaxAgentRequests bounds the agent requests served at once (a plan
	// long-poll counts until it parks); more get 503 with a Retry-After of
	// 1–10 s. Default DefaultMaxAgentRequests; negative: no bound.
	MaxAgentRequests int
	// MaxHandshakes bounds the TLS handshakes in progress; a new one waits
	// up to 3 s for a slot, then fails. Default DefaultMaxHandshakes;
	// negative: no bound.
	MaxHandshakes int
	// ShutdownTimeout bounds how long Serve waits for in-flight requests
	// once its context ends. Default 30s.
	ShutdownTimeout time.Duration

	// PerSiteMetrics exports the heartbeat lag gauge per site. Large fleets
	// turn it off (DisablePerSiteMetrics) and keep the histogram.
	DisablePerSiteMetrics bool
	// Registry receives the server's metrics (nil: a new registry with Go
	// and process collectors, as NewRegistry makes). Never the global registry.
	Registry *prometheus.Registry

	// Now is the clock (nil: time.Now).
	Now func() time.Time

	// AllowLocalSources accepts repositories whose URL is a path or
	// file:// URL on this machine (nkudo serve --allow-local-sources);
	// false refuses them. Even when true, a URL inside ProtectedDirs is
	// refused.
	AllowLocalSources bool
	// ProtectedDirs are the server's own directories (data dir: mirrors,
	// notes, credentials, PKI, database) that no repository may name.
	ProtectedDirs []string

	// ImageDir holds the content-addressed image store ("" = no image
	// store: the image routes answer 501). nkudo serve uses <data dir>/images.
	ImageDir string
	// MaxImageBytes bounds one pushed image. Default DefaultMaxImageBytes (8 GiB).
	MaxImageBytes int64
	// ImageQuotaBytes bounds the total size of one tenant's images.
	// Default DefaultImageQuotaBytes (64 GiB).
	ImageQuotaBytes int64
	// MaxImages bounds how many images one tenant holds, so its image
	// list stays small however small the images are. Default
	// DefaultMaxImages (1,000).
	MaxImages int
	// ImageGCGrace is how long an image no manifest references is kept
	// after it was pushed or last referenced. Default 24h.
	ImageGCGrace time.Duration
	// SessionIdle ends a dashboard session unused for this long. Default 15m.
	SessionIdle time.Duration
	// SignInRate and SignInBurst limit dashboard sign-in attempts per
	// client address (defaults: one every 3s, burst 10); SignInGlobalRate
	// and SignInGlobalBurst limit them over all addresses (defaults: 10/s,
	// burst 100).
	SignInRate        rate.Limit
	SignInBurst       int
	SignInGlobalRate  rate.Limit
	SignInGlobalBurst int
}

// Server is the control plane API. Create it with New; serve it with Serve
// or mount Handler under your own http.Server with TLSConfig.
type Server struct {
	opts     Options
	store    store.Store
	pki      *pki.Authority
	log      *slog.Logger
	now      func() time.Time
	routes   []Route
	handler  http.Handler
	metrics  *metrics
	limiters *limiterSet
	verified verifiedCerts
	sites    siteCounter

	waiting atomic.Int64 // plan long-polls currently waiting
	// notes coalesces fire-and-forget wake-ups into batched store writes
	// (notifier.go).
	notes *notifier
	// overload bounds handshakes and agent requests (overload.go).
	overload *overload

	// Bounds of the public routes (public.go).
	crlSlots       busySlots
	ready          readiness
	metricsHandler http.Handler // one instance, so its in-flight cap holds

	imageMu sync.Mutex // serialises placing and removing image files
	// The dashboard: its renderer and browser sessions (dashboard.go).
	ui       *ui.Renderer
	sessions *ui.Sessions
	signIns  *signInLimiter

	shutdownOnce sync.Once
	shutdown     chan struct{} // closed when the server begins shutting down
}

// New builds a Server from opts.
func New(opts Options) (*Server, error) {
	if opts.Store == nil || opts.PKI == nil || opts.Logger == nil {
		return nil, errors.New("controlplane: Store, PKI and Logger are required")
	}
	if opts.HeartbeatRate <= 0 {
		opts.HeartbeatRate = 50
	}
	if opts.MinHeartbeatInterval <= 0 {
		opts.MinHeartbeatInterval = 10 * time.Second
	}
	if opts.HeartbeatGrace <= 0 {
		opts.HeartbeatGrace = 10 * time.Second
	}
	if opts.EnrollRate <= 0 {
		opts.EnrollRate = rate.Every(6 * time.Second)
	}
	if opts.EnrollBurst <= 0 {
		opts.EnrollBurst = 5
	}
	if opts.EnrollTokenTTL <= 0 {
		opts.EnrollTokenTTL = time.Hour
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 1 << 20
	}
	if opts.MaxLogLineBytes <= 0 {
		opts.MaxLogLineBytes = 16 << 10
	}
	if opts.LogPlanQuotaBytes <= 0 {
		opts.LogPlanQuotaBytes = 64 << 20
	}
	if opts.LogSiteQuotaBytes <= 0 {
		opts.LogSiteQuotaBytes = 512 << 20
	}
	if opts.MaxLogPageBytes <= 0 {
		opts.MaxLogPageBytes = 4 << 20
	}
	if opts.MaxLongPoll <= 0 {
		opts.MaxLongPoll = 5 * time.Minute
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 30 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxImageBytes <= 0 {
		opts.MaxImageBytes = DefaultMaxImageBytes
	}
	if opts.ImageQuotaBytes <= 0 {
		opts.ImageQuotaBytes = DefaultImageQuotaBytes
	}
	if opts.MaxImages <= 0 {
		opts.MaxImages = DefaultMaxImages
	}
	if opts.ImageGCGrace <= 0 {
		opts.ImageGCGrace = DefaultImageGCGrace
	}
	s := &Server{
		opts:     opts,
		store:    opts.Store,
		pki:      opts.PKI,
		log:      opts.Logger.With("component", "controlplane"),
		now:      opts.Now,
		shutdown: make(chan struct{}),
		crlSlots: make(busySlots, publicInFlight),
	}
	s.limiters = newLimiterSet(opts.EnrollRate, opts.EnrollBurst, opts.Now)
	m, err := newMetrics(opts.Registry, !opts.DisablePerSiteMetrics)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	if s.overload, err = newOverload(opts.MaxAgentRequests, opts.MaxHandshakes, m.reg); err != nil {
		return nil, err
	}
	if s.notes, err = newNotifier(opts.Store, s.log, m.reg); err != nil {
		return nil, err
	}
	if err := m.watchCertificates(opts.PKI); err != nil {
		return nil, err
	}
	s.metricsHandler = promHandler(m.reg)
	if s.ui, err = ui.NewRenderer(); err != nil {
		return nil, err
	}
	s.sessions = &ui.Sessions{Idle: opts.SessionIdle, Now: opts.Now}
	s.signIns = signInLimiterFor(opts)
	s.routes = s.routeTable()
	s.handler = s.buildMux()
	return s, nil
}

// Handler is the server's HTTP handler (all routes, auth and metrics).
func (s *Server) Handler() http.Handler { return s.handler }

// Registry is the Prometheus registry holding the server's metrics.
func (s *Server) Registry() *prometheus.Registry { return s.metrics.reg }

// TLSConfig is the TLS configuration the server must be served with: the
// server certificate, and client certificates requested but not required,
// so user routes work without one. Agent routes verify the certificate per
// request (chain, expiry, identity, revocation), which lets an expired or
// foreign certificate get a clear JSON error instead of a failed handshake.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{s.pki.ServerCertificate()},
		ClientAuth:   tls.RequestClientCert,
		NextProtos:   []string{"h2", "http/1.1"},
	}
}

// Serve serves HTTPS on ln until ctx ends, then shuts down gracefully:
// long-polls and log streams return at once, other in-flight requests get
// up to ShutdownTimeout to finish. It returns nil after a clean shutdown.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		TLSConfig:         s.overload.tlsConfig(s.TLSConfig()),
		ConnState:         s.overload.connState,
		ReadHeaderTimeout: 10 * time.Second,
		// Bodies are small (agent reports ≤ MaxBodyBytes, forge deliveries
		// ≤ 25 MiB); a client that trickles one is cut off. No WriteTimeout:
		// long-polls and log streams answer late on purpose.
		ReadTimeout: 2 * time.Minute,
		IdleTimeout: 2 * time.Minute,
		// Each HTTP/2 connection keeps a read buffer as large as the
		// largest frame its client sent (1 MiB allowed by default); with
		// thousands of agents each parked on its own connection, the
		// protocol's minimum bounds what one large upload leaves behind.
		HTTP2:       &http.HTTP2Config{MaxReadFrameSize: 16 << 10},
		ErrorLog:    slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	srv.RegisterOnShutdown(s.beginShutdown)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(newHandshakeListener(ln, srv.TLSConfig, s.overload.handshakeFailed, s.log)) }()
	s.log.Info("serving", "addr", ln.Addr().String(), "pki_mode", s.pki.Mode())
	select {
	case err := <-errc:
		s.beginShutdown()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.ShutdownTimeout)
	defer cancel()
	s.beginShutdown()
	err := srv.Shutdown(sctx)
	<-errc
	// The handlers are done: write the wake-ups they queued.
	if werr := s.notes.wait(sctx); werr != nil {
		s.log.Warn("wake-ups not written before shutdown", "err", werr)
	}
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	s.log.Info("stopped")
	return nil
}

// LongPolls is the number of plan long-polls currently waiting (tests and
// benchmarks use it to know a poll is parked before they store a plan).
func (s *Server) LongPolls() int { return int(s.waiting.Load()) }

// beginShutdown releases waiting long-polls and log streams.
func (s *Server) beginShutdown() {
	s.shutdownOnce.Do(func() { close(s.shutdown) })
}

// heartbeatInterval is Nomad's rule: max(min, sites / rate).
func (s *Server) heartbeatInterval(ctx context.Context) time.Duration {
	n := s.sites.count(ctx, s.store, s.now(), s.log)
	iv := time.Duration(float64(n) / s.opts.HeartbeatRate * float64(time.Second))
	return max(s.opts.MinHeartbeatInterval, iv)
}

// siteCounter caches the installation's site count; a heartbeat must not
// list every site, and the interval tolerates a count half a minute old.
type siteCounter struct {
	mu   sync.Mutex
	n    int
	at   time.Time
	busy bool
}

func (c *siteCounter) count(ctx context.Context, st store.Store, now time.Time, log *slog.Logger) int {
	c.mu.Lock()
	if !c.at.IsZero() && now.Sub(c.at) < 30*time.Second || c.busy && !c.at.IsZero() {
		n := c.n
		c.mu.Unlock()
		return n
	}
	c.busy = true
	c.mu.Unlock()
	n, err := countSites(ctx, st)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.busy = false
	if err != nil {
		log.Warn("count sites for the heartbeat interval", "err", err)
		return c.n
	}
	c.n, c.at = n, now
	return n
}

func countSites(ctx context.Context, st store.Store) (int, error) {
	tenants, err := st.ListTenants(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, t := range tenants {
		sites, err := st.ListSites(ctx, t.ID)
		if err != nil {
			return 0, err
		}
		n += len(sites)
	}
	return n, nil
}

// limiterSet holds one token bucket per source address, forgetting idle ones.
type limiterSet struct {
	mu    sync.Mutex
	r     rate.Limit
	burst int
	now   func() time.Time
	m     map[string]*limiterEntry
	swept time.Time
}

type limiterEntry struct {
	lim  *rate.Limiter
	seen time.Time
}

func newLimiterSet(r rate.Limit, burst int, now func() time.Time) *limiterSet {
	return &limiterSet{r: r, burst: burst, now: now, m: map[string]*limiterEntry{}}
}

// allow reports whether addr may try now and, if not, how long to wait.
func (l *limiterSet) allow(addr string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if now.Sub(l.swept) > 10*time.Minute {
		for k, e := range l.m {
			if now.Sub(e.seen) > 10*time.Minute {
				delete(l.m, k)
			}
		}
		l.swept = now
	}
	e := l.m[addr]
	if e == nil {
		e = &limiterEntry{lim: rate.NewLimiter(l.r, l.burst)}
		l.m[addr] = e
	}
	e.seen = now
	res := e.lim.ReserveN(now, 1)
	if !res.OK() {
		return false, time.Minute
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}
