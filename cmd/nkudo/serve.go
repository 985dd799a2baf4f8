package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/pki"
	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/backend"
)

// StoreFlags select the database. With no URL the embedded SQLite file in
// the data dir is used, so `nkudo serve` needs no setup.
type StoreFlags struct {
	DataDir     string `help:"Directory for the SQLite database and the dev PKI." default:".nkudo" env:"NKUDO_DATA_DIR" type:"path"`
	DatabaseURL string `help:"postgres://… to use Postgres; empty or sqlite://… for the embedded SQLite file in --data-dir." env:"NKUDO_DATABASE_URL,DATABASE_URL" placeholder:"URL"`
	// SecretKeyFile is never stored in the database: a copy of the
	// database alone does not reveal the secrets in it.
	SecretKeyFile string `help:"Key that seals secrets at rest (credentials, webhook secrets, NetBird setup keys): 32 bytes, base64. Empty: <data-dir>/secret.key, generated with a warning (development). Every replica needs the same key." env:"NKUDO_SECRET_KEY_FILE" type:"path" placeholder:"FILE"`
	AuditKeyFile  string `help:"HMAC key of the audit chain, kept outside the database (default: audit.key beside CA_CERT_FILE, or in <data-dir>/pki)." env:"AUDIT_KEY_FILE" type:"path" placeholder:"FILE"`
}

// Open opens (and migrates) the store with the audit key if it exists (an
// admin command never makes one: without it, a keyed chain refuses its
// audited writes with a message naming AUDIT_KEY_FILE).
func (f StoreFlags) Open(ctx context.Context, log *slog.Logger) (store.Store, error) {
	return f.open(ctx, log, os.Getenv("CA_CERT_FILE"), false)
}

// auditKeyPath is where the audit key lives: AUDIT_KEY_FILE, else beside
// the persistent CA certificate, else in the dev PKI directory.
func (f StoreFlags) auditKeyPath(caCertFile string) string {
	switch {
	case f.AuditKeyFile != "":
		return f.AuditKeyFile
	case caCertFile != "":
		return filepath.Join(filepath.Dir(caCertFile), pki.AuditKeyFile)
	}
	return filepath.Join(f.DataDir, "pki", pki.AuditKeyFile)
}

// open opens the store keyed with the audit key at auditKeyPath(caCertFile),
// making the key when create is set and it is missing. A fresh key is moved
// into place only after the store has keyed the chain with it.
func (f StoreFlags) open(ctx context.Context, log *slog.Logger, caCertFile string, create bool) (store.Store, error) {
	path := f.auditKeyPath(caCertFile)
	key, err := pki.LoadAuditKey(path, create)
	if err != nil {
		return nil, err
	}
	if key.Key == nil {
		log.Warn("no audit key: the audit chain is not keyed by this process", "audit_key_file", path)
	}
	st, err := backend.OpenWith(ctx, f.DatabaseURL, f.DataDir, backend.OpenOptions{Logger: log, SecretKeyFile: f.SecretKeyFile,
		AuditKey: store.AuditKey(key.Key), AuditKeyFresh: key.Fresh})
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if key.Fresh {
		if err := key.Commit(); err != nil {
			st.Close()
			return nil, err
		}
		log.Warn("generated the audit chain key: back it up with the CA; without it `nkudoctl audit verify` cannot tell an intact chain from a rewritten one", "audit_key_file", path)
	}
	return st, nil
}

// PKIFlags select the CA: persistent from four files, or dev (generated
// into <data-dir>/pki) when none is given.
type PKIFlags struct {
	CACertFile           string        `help:"CA certificate (persistent PKI)." env:"CA_CERT_FILE" type:"path" placeholder:"FILE"`
	CAKeyFile            string        `help:"CA private key (persistent PKI)." env:"CA_KEY_FILE" type:"path" placeholder:"FILE"`
	ServerCertFile       string        `help:"Server certificate, issued by the CA (persistent PKI)." env:"SERVER_CERT_FILE" type:"path" placeholder:"FILE"`
	ServerKeyFile        string        `help:"Server private key (persistent PKI)." env:"SERVER_KEY_FILE" type:"path" placeholder:"FILE"`
	RequirePersistentPKI bool          `help:"Refuse to start with the dev PKI." env:"REQUIRE_PERSISTENT_PKI"`
	ServerHost           []string      `help:"Extra DNS names or IPs for the dev server certificate." env:"NKUDO_SERVER_HOSTS" placeholder:"HOST"`
	ClientCertTTL        time.Duration `help:"Lifetime of agent certificates." default:"24h" env:"NKUDO_CLIENT_CERT_TTL"`
}

// Load loads the CA.
func (f PKIFlags) Load(dataDir string, log *slog.Logger) (*pki.Authority, error) {
	a, err := pki.Load(pki.Config{
		DevDir:     filepath.Join(dataDir, "pki"),
		CACertFile: f.CACertFile, CAKeyFile: f.CAKeyFile, ServerCertFile: f.ServerCertFile, ServerKeyFile: f.ServerKeyFile,
		RequirePersistent: f.RequirePersistentPKI,
		ServerHosts:       f.ServerHost,
		ClientCertTTL:     f.ClientCertTTL,
	}, log)
	if err != nil {
		return nil, fmt.Errorf("load PKI: %w", err)
	}
	return a, nil
}

// ServeCmd runs the control plane.
type ServeCmd struct {
	StoreFlags
	PKIFlags
	GitOpsFlags
	RetentionFlags
	ImageFlags

	Listen               string        `help:"Address to listen on (HTTPS)." default:"127.0.0.1:8443" env:"NKUDO_LISTEN"`
	PublicURL            string        `help:"URL agents and forges use to reach this server (default https://<request host>)." env:"NKUDO_PUBLIC_URL" placeholder:"URL"`
	HeartbeatRate        float64       `help:"Heartbeats per second the server is sized for; the agents' interval is max(min-heartbeat-interval, sites/rate)." default:"50" env:"NKUDO_HEARTBEAT_RATE"`
	MinHeartbeatInterval time.Duration `help:"Shortest heartbeat interval handed to agents." default:"10s" env:"NKUDO_MIN_HEARTBEAT_INTERVAL"`
	EnrollPerMinute      float64       `help:"Enrollment attempts allowed per source address per minute." default:"10" env:"NKUDO_ENROLL_PER_MINUTE"`
	EnrollBurst          int           `help:"Enrollment attempts allowed in a burst per source address." default:"5" env:"NKUDO_ENROLL_BURST"`
	NoPerSiteMetrics     bool          `help:"Drop the per-site heartbeat lag gauge (large fleets); the histogram stays." env:"NKUDO_NO_PER_SITE_METRICS"`
	ShutdownTimeout      time.Duration `help:"How long in-flight requests may finish after SIGTERM." default:"30s" env:"NKUDO_SHUTDOWN_TIMEOUT"`
	DashboardIdle        time.Duration `help:"End a dashboard browser session after this long without a request." default:"15m" env:"NKUDO_DASHBOARD_IDLE"`
	MaxAgentRequests     int           `help:"Agent requests served at once (a parked plan long-poll does not count); more get 503 with Retry-After. Negative: no bound." default:"256" env:"NKUDO_MAX_AGENT_REQUESTS"`
	MaxTLSHandshakes     int           `help:"TLS handshakes in progress at once; a new one waits up to 3s for a slot, then fails. Negative: no bound." default:"64" name:"max-tls-handshakes" env:"NKUDO_MAX_TLS_HANDSHAKES"`
	DebugAddr            string        `help:"Loopback address (host:port) serving net/http/pprof under /debug/pprof/, plain HTTP without authentication. Empty: off." env:"NKUDO_DEBUG_ADDR" placeholder:"ADDR"`
}

// Run serves until the context (SIGINT/SIGTERM) ends.
func (c *ServeCmd) Run(ctx context.Context, g *Globals) error {
	log := g.Logger()
	if c.DebugAddr != "" {
		stop, err := startDebug(ctx, log, c.DebugAddr)
		if err != nil {
			return err
		}
		defer stop()
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return c.Serve(ctx, log, ln)
}

// Serve opens the store and PKI, wires the GitOps hooks and serves on ln
// until ctx ends. The demo command reuses it with its own flags.
func (c *ServeCmd) Serve(ctx context.Context, log *slog.Logger, ln net.Listener) (err error) {
	// ln is srv.Serve's to close once it runs; until then, every failure closes it.
	serving := false
	defer func() {
		if !serving {
			ln.Close()
		}
	}()
	st, err := c.open(ctx, log, c.CACertFile, true)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, st.Close()) }()
	pf := c.PKIFlags
	if u, err := url.Parse(c.PublicURL); err == nil && u.Hostname() != "" {
		// The dev server certificate must cover the name agents dial.
		pf.ServerHost = append(slices.Clone(pf.ServerHost), u.Hostname())
	}
	authority, err := pf.Load(c.DataDir, log)
	if err != nil {
		return err
	}
	opts := controlplane.Options{
		Store: st, PKI: authority, Logger: log,
		PublicURL:             c.PublicURL,
		HeartbeatRate:         c.HeartbeatRate,
		MinHeartbeatInterval:  c.MinHeartbeatInterval,
		EnrollRate:            rate.Limit(c.EnrollPerMinute / 60),
		EnrollBurst:           c.EnrollBurst,
		DisablePerSiteMetrics: c.NoPerSiteMetrics,
		ShutdownTimeout:       c.ShutdownTimeout,
		SessionIdle:           c.DashboardIdle,
		MaxAgentRequests:      c.MaxAgentRequests,
		MaxHandshakes:         c.MaxTLSHandshakes,
	}
	if err := c.ImageFlags.apply(c.DataDir, &opts); err != nil {
		return err
	}
	c.GitOpsFlags.protected = c.PKIFlags.pkiDirs()
	stopHooks, err := wireGitOps(ctx, st, log, c.DataDir, c.PublicURL, c.GitOpsFlags, &opts)
	if err != nil {
		return err
	}
	defer stopHooks()
	srv, err := controlplane.New(opts)
	if err != nil {
		return err
	}
	stopRetention, err := startRetention(ctx, st, log, srv.Registry(), c.RetentionFlags)
	if err != nil {
		return err
	}
	defer stopRetention()
	stopImageGC, err := c.ImageFlags.startImageGC(ctx, srv, log)
	if err != nil {
		return err
	}
	defer stopImageGC()
	log.Info("n-kudo control plane starting", "listen", ln.Addr().String(), "data_dir", c.DataDir,
		"database", databaseKind(c.DatabaseURL), "ca_fingerprint", authority.Fingerprint())
	serving = true
	return srv.Serve(ctx, ln)
}

// databaseKind names the backend without printing the URL (it may hold a
// password). It follows backend.OpenWith: "" and any "sqlite:" URL are SQLite.
func databaseKind(url string) string {
	if url == "" || strings.HasPrefix(url, "sqlite:") {
		return "sqlite"
	}
	return "postgres"
}

// MigrateCmd applies migrations (opening the store does) and exits.
type MigrateCmd struct {
	StoreFlags
}

// Run migrates and names the migrations it applied.
func (c *MigrateCmd) Run(ctx context.Context, g *Globals) error {
	applied, err := backend.MigrateWith(ctx, c.DatabaseURL, c.DataDir, backend.OpenOptions{Logger: g.Logger(), SecretKeyFile: c.SecretKeyFile})
	if err != nil {
		return fmt.Errorf("migrate %s: %w", backend.Redact(c.DatabaseURL), err)
	}
	if len(applied) == 0 {
		fmt.Fprintf(g.stdout, "%s database is up to date\n", databaseKind(c.DatabaseURL))
		return nil
	}
	for _, m := range applied {
		fmt.Fprintf(g.stdout, "applied %s\n", m)
	}
	return nil
}

// parseDuration parses a Go duration ("" = 0, the component's default);
// a string keeps a config file's negative "disable" value intact.
func parseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: %w", s, err)
	}
	return d, nil
}
