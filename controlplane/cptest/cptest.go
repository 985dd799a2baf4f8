// Package cptest runs a real n-kudo control plane inside a test: real TLS
// on 127.0.0.1, a dev PKI in t.TempDir, and a real store (SQLite by default,
// a throw-away Postgres with Options.Postgres). Integration tests of the
// agent, the GitOps loop and the API itself build on it.
//
// Typical use:
//
//	env := cptest.Start(t, cptest.Options{})
//	acme := env.NewTenant("acme")  // tenant + tenant-scoped token + client
//	env.NewSite("acme", "store-1") // site record
//
//	// An agent under test enrolls itself with the printed command's parts:
//	tok := env.EnrollmentToken("acme", "store-1") // tok.Token, tok.CAFingerprint, env.URL
//
//	// Or let cptest enroll a site (fresh key, CSR, pinned CA) and get an mTLS client:
//	agent := env.Enroll("acme", "store-2")
//	agent.Client.Heartbeat(ctx, api.HeartbeatRequest{…})
//	site, _ := acme.Client.GetSite(ctx, "store-2")
//
// More:
//   - ForEachBackend runs a test body as "sqlite" and "postgres" subtests.
//   - Env.Restart stops server and store gracefully and starts both again on
//     the same data and address (crash, restart and reconnect tests).
//   - Options.ReplicaOf starts a second replica on the same Postgres database
//     and CA (multi-replica tests).
//   - Options.Clock moves the server's clock (token expiry without sleeping);
//     Env.IssueCert mints certificates straight from the CA (expired ones,
//     identities the server never issued); Env.Raw and Env.HTTPClient send
//     raw requests; CreatePlan builds a plan to seed with Env.Store.
//   - Options.Reconciler and Webhooks wire the GitOps hooks;
//     Options.Configure adjusts any other server option.
//   - Env.Store and Env.PKI give direct access (seed plans, check state).
//
// A test binary that uses Postgres must stop the shared cluster at the end:
// func TestMain(m *testing.M) { cptest.Main(m) }.
//
// Everything is torn down with t.Cleanup. Helpers fail the test on error
// (t.Fatal), so they must be called from the test goroutine.
package cptest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane"
	"github.com/nkudo/nkudo/internal/pgtest"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/pki"
	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/backend"
	"github.com/nkudo/nkudo/store/seal"
)

// Options configure Start. The zero value is a SQLite-backed server with
// default settings and no GitOps hooks.
type Options struct {
	// Postgres runs on a fresh database of the throw-away cluster of
	// internal/pgtest (skipping loudly when Postgres is unavailable, unless
	// NKUDO_TEST_POSTGRES=require).
	Postgres bool
	// DatabaseURL, when set, overrides both (an existing database).
	DatabaseURL string
	// ReplicaOf starts a second replica of another Env: the same database
	// and CA (and admin token), its own listener and process state, as in a
	// multi-replica deployment. The other Env must use Postgres.
	ReplicaOf *Env

	// Reconciler and Webhooks are handed to the server (nil = not wired).
	Reconciler controlplane.Reconciler
	Webhooks   http.Handler

	// Configure adjusts the server options before each (re)start, for
	// example to tighten the enrollment rate limit or inject a clock.
	Configure func(*controlplane.Options)
	// Clock, when set, is the server's clock (tests move it forward to
	// expire tokens without sleeping). Certificates use real time.
	Clock *Clock
	// ClientCertTTL is the lifetime of agent certificates (0 = pki default).
	ClientCertTTL time.Duration

	// Logger receives the server's logs (nil: the test log at warn level,
	// or debug when NKUDO_TEST_LOG=debug).
	Logger *slog.Logger
}

// Env is a running control plane and handles to drive it.
type Env struct {
	t    testing.TB
	opts Options

	// URL is the server's base URL ("https://127.0.0.1:<port>").
	URL string
	// DataDir holds the SQLite file and the dev PKI (a replica uses the
	// PKI of the Env it replicates).
	DataDir string
	// DatabaseURL is the store's URL ("" for SQLite in DataDir).
	DatabaseURL string
	// CAPool trusts the server; CAFingerprint is its "sha256:…" pin.
	CAPool        *x509.CertPool
	CAFingerprint string
	// PKI is the CA the server uses (tests mint special certificates with it).
	PKI *pki.Authority
	// AdminToken is an admin-scope API token; Admin is a client using it.
	AdminToken string
	Admin      *api.Client

	pkiDir  string
	keyFile string // "" = the key in DataDir (generated on first start)

	mu     sync.Mutex
	store  store.Store
	server *controlplane.Server
	addr   string
	cancel context.CancelFunc
	done   chan error
	logger *slog.Logger
}

// Start runs a control plane for the duration of the test.
func Start(t testing.TB, opts Options) *Env {
	t.Helper()
	e := &Env{t: t, opts: opts, DataDir: t.TempDir(), DatabaseURL: opts.DatabaseURL, addr: "127.0.0.1:0"}
	e.pkiDir = filepath.Join(e.DataDir, "pki")
	if r := opts.ReplicaOf; r != nil {
		if r.DatabaseURL == "" {
			t.Fatal("cptest: ReplicaOf needs an Env on Postgres (SQLite serves one process)")
		}
		e.DatabaseURL, e.pkiDir = r.DatabaseURL, r.pkiDir
		// Replicas share the secret key, as production replicas must.
		e.keyFile = filepath.Join(r.DataDir, seal.DefaultKeyFile)
	}
	if e.DatabaseURL == "" && opts.Postgres {
		e.DatabaseURL = pgtest.URL(t)
	}
	e.logger = opts.Logger
	if e.logger == nil {
		e.logger = testLogger(t)
	}
	e.start()
	t.Cleanup(e.stop)

	if r := opts.ReplicaOf; r != nil {
		e.AdminToken = r.AdminToken
		e.Admin = e.UserClient(r.AdminToken, "")
		return e
	}
	tok, err := controlplane.CreateAPIToken(t.Context(), e.Store(), store.Actor{Kind: store.ActorAdmin, ID: "cptest"},
		api.CreateTokenRequest{Admin: true, Name: "cptest admin"}, time.Now())
	if err != nil {
		t.Fatalf("cptest: create admin token: %v", err)
	}
	e.AdminToken = tok.Token
	e.Admin = e.UserClient(tok.Token, "")
	return e
}

// start opens the store and PKI and serves; it is called again by Restart.
func (e *Env) start() {
	t := e.t
	t.Helper()
	ctx := t.Context()
	// The audit key beside the dev CA, as `nkudo serve` keeps it (replicas
	// share the directory, so they share the key).
	key, err := pki.LoadAuditKey(filepath.Join(e.pkiDir, pki.AuditKeyFile), true)
	if err != nil {
		t.Fatalf("cptest: audit key: %v", err)
	}
	st, err := backend.OpenWith(ctx, e.DatabaseURL, e.DataDir, backend.OpenOptions{Logger: e.logger, SecretKeyFile: e.keyFile,
		AuditKey: store.AuditKey(key.Key), AuditKeyFresh: key.Fresh})
	if err != nil {
		t.Fatalf("cptest: open store: %v", err)
	}
	if err := key.Commit(); err != nil {
		st.Close()
		t.Fatalf("cptest: audit key: %v", err)
	}
	authority, err := pki.Load(pki.Config{DevDir: e.pkiDir, ClientCertTTL: e.opts.ClientCertTTL}, e.logger)
	if err != nil {
		st.Close()
		t.Fatalf("cptest: load PKI: %v", err)
	}
	o := controlplane.Options{
		Store: st, PKI: authority, Logger: e.logger,
		Reconciler: e.opts.Reconciler, Webhooks: e.opts.Webhooks,
		ShutdownTimeout: 5 * time.Second,
		// Test repositories are local: opt in, as nkudo serve
		// --allow-local-sources does, with the data dir still protected.
		AllowLocalSources: true,
		ProtectedDirs:     []string{e.DataDir},
		ImageDir:          filepath.Join(e.DataDir, "images"),
	}
	if e.opts.Clock != nil {
		o.Now = e.opts.Clock.Now
	}
	if e.opts.Configure != nil {
		e.opts.Configure(&o)
	}
	srv, err := controlplane.New(o)
	if err != nil {
		st.Close()
		t.Fatalf("cptest: new server: %v", err)
	}
	ln, err := listen(e.addr)
	if err != nil {
		st.Close()
		t.Fatalf("cptest: listen on %s: %v", e.addr, err)
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln) }()

	e.mu.Lock()
	e.store, e.server, e.cancel, e.done = st, srv, cancel, done
	e.addr = ln.Addr().String()
	e.mu.Unlock()
	e.PKI = authority
	e.URL = "https://" + e.addr
	e.CAPool = authority.Pool()
	e.CAFingerprint = authority.Fingerprint()
	e.waitReady()
}

// listen retries briefly: after Restart the old socket may linger.
func listen(addr string) (net.Listener, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			return ln, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *Env) waitReady() {
	t := e.t
	t.Helper()
	c, err := api.NewClient(api.ClientConfig{BaseURL: e.URL, RootCAs: e.CAPool})
	if err != nil {
		t.Fatalf("cptest: client: %v", err)
	}
	// An open HTTP/2 connection would hold a later shutdown for a second.
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := c.Health(t.Context(), true)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cptest: server not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop shuts the server down gracefully and closes the store.
func (e *Env) stop() {
	e.mu.Lock()
	cancel, done, st := e.cancel, e.done, e.store
	e.cancel, e.done = nil, nil
	e.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	if err := <-done; err != nil {
		e.t.Errorf("cptest: server stopped with error: %v", err)
	}
	if err := st.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
		e.t.Errorf("cptest: close store: %v", err)
	}
}

// Stop stops the server and closes the store for good, as a replica that
// goes away does (failover tests); its address refuses connections after.
func (e *Env) Stop() {
	e.t.Helper()
	e.stop()
}

// Restart stops the server and the store (gracefully: in-flight requests
// finish, long-polls return) and starts both again on the same data and
// the same address, so clients reconnect to the same URL.
func (e *Env) Restart() {
	e.t.Helper()
	e.stop()
	e.start()
}

// Store is the server's store (a new one after Restart).
func (e *Env) Store() store.Store {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.store
}

// Server is the running server (a new one after Restart).
func (e *Env) Server() *controlplane.Server {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.server
}

// UserClient returns a client with a bearer token ("" = anonymous); tenant
// is sent in the Nkudo-Tenant header (for admin tokens; "" = none).
func (e *Env) UserClient(token, tenant string) *api.Client {
	c, err := api.NewClient(api.ClientConfig{BaseURL: e.URL, Token: token, Tenant: tenant, RootCAs: e.CAPool})
	if err != nil {
		e.t.Fatalf("cptest: client: %v", err)
	}
	e.t.Cleanup(c.CloseIdleConnections)
	return c
}

// AgentClient returns an mTLS client presenting cert.
func (e *Env) AgentClient(cert tls.Certificate) *api.Client {
	c, err := api.NewClient(api.ClientConfig{BaseURL: e.URL, RootCAs: e.CAPool,
		Certificate: func() (*tls.Certificate, error) { return &cert, nil }})
	if err != nil {
		e.t.Fatalf("cptest: agent client: %v", err)
	}
	e.t.Cleanup(c.CloseIdleConnections)
	return c
}

// Tenant is a tenant created by NewTenant, with a tenant-scoped token.
type Tenant struct {
	ID     string
	Token  string
	Client *api.Client
}

// NewTenant creates a tenant and a tenant-scoped API token.
func (e *Env) NewTenant(id string) Tenant {
	e.t.Helper()
	ctx := e.t.Context()
	if _, err := e.Admin.CreateTenant(ctx, api.CreateTenantRequest{ID: id}); err != nil {
		e.t.Fatalf("cptest: create tenant %s: %v", id, err)
	}
	tok, err := e.Admin.CreateToken(ctx, api.CreateTokenRequest{Tenant: id, Name: "cptest"})
	if err != nil {
		e.t.Fatalf("cptest: create token for %s: %v", id, err)
	}
	return Tenant{ID: id, Token: tok.Token, Client: e.UserClient(tok.Token, "")}
}

// tenantClient acts on tenant through the admin token.
func (e *Env) tenantClient(tenant string) *api.Client { return e.UserClient(e.AdminToken, tenant) }

// NewSite registers a site of tenant.
func (e *Env) NewSite(tenant, name string) api.Site {
	e.t.Helper()
	s, err := e.tenantClient(tenant).CreateSite(e.t.Context(), name)
	if err != nil {
		e.t.Fatalf("cptest: create site %s/%s: %v", tenant, name, err)
	}
	return s
}

// EnrollmentToken creates a one-time enrollment token for an existing site.
func (e *Env) EnrollmentToken(tenant, site string) api.EnrollmentToken {
	e.t.Helper()
	tok, err := e.tenantClient(tenant).CreateEnrollmentToken(e.t.Context(), site, 0)
	if err != nil {
		e.t.Fatalf("cptest: enrollment token for %s/%s: %v", tenant, site, err)
	}
	return tok
}

// Agent is an enrolled site identity: its key, certificate and an mTLS client.
type Agent struct {
	Tenant, Site string
	Key          *ecdsa.PrivateKey
	Cert         tls.Certificate
	Enrollment   api.CertResponse
	Client       *api.Client
}

// Enroll enrolls site (creating it first when it does not exist) the way
// an agent does: fresh key, CSR, one-time token pinned to the CA
// fingerprint. It returns the agent's identity with an mTLS client.
func (e *Env) Enroll(tenant, site string) *Agent {
	e.t.Helper()
	ctx := e.t.Context()
	if _, err := e.tenantClient(tenant).GetSite(ctx, site); errors.Is(err, api.ErrNotFound) {
		e.NewSite(tenant, site)
	}
	tok := e.EnrollmentToken(tenant, site)
	key, csr := e.newCSR(site)
	pinned, err := api.NewClient(api.ClientConfig{BaseURL: e.URL, CAFingerprint: tok.CAFingerprint})
	if err != nil {
		e.t.Fatal(err)
	}
	defer pinned.CloseIdleConnections()
	resp, err := pinned.Enroll(ctx, api.EnrollRequest{Token: tok.Token, CSR: string(csr)})
	if err != nil {
		e.t.Fatalf("cptest: enroll %s/%s: %v", tenant, site, err)
	}
	cert, err := KeyPair(key, []byte(resp.Certificate))
	if err != nil {
		e.t.Fatal(err)
	}
	return &Agent{Tenant: tenant, Site: site, Key: key, Cert: cert, Enrollment: resp, Client: e.AgentClient(cert)}
}

// newCSR makes a fresh agent key and a CSR for site.
func (e *Env) newCSR(site string) (*ecdsa.PrivateKey, []byte) {
	e.t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		e.t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, site)
	if err != nil {
		e.t.Fatal(err)
	}
	return key, csr
}

// KeyPair combines a key with a PEM certificate into a tls.Certificate.
func KeyPair(key *ecdsa.PrivateKey, certPEM []byte) (tls.Certificate, error) {
	keyPEM, err := pki.EncodeKeyPEM(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// IssueCert mints a client certificate for tenant/site straight from the
// CA, valid from notBefore for ttl, without touching the store. Tests use
// it for expired certificates and for identities the server never issued.
func (e *Env) IssueCert(tenant, site string, notBefore time.Time, ttl time.Duration) tls.Certificate {
	e.t.Helper()
	key, csr := e.newCSR(site)
	iss, err := e.PKI.SignAt(csr, pki.Identity{Tenant: tenant, Site: site}, notBefore, ttl)
	if err != nil {
		e.t.Fatal(err)
	}
	cert, err := KeyPair(key, iss.CertPEM)
	if err != nil {
		e.t.Fatal(err)
	}
	return cert
}

// testLogger logs to the test log; it goes quiet once the test is over, so
// a late line from a server goroutine cannot fail the run.
func testLogger(t testing.TB) *slog.Logger {
	lvl := slog.LevelWarn
	if strings.EqualFold(os.Getenv("NKUDO_TEST_LOG"), "debug") {
		lvl = slog.LevelDebug
	}
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl}))
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

var _ io.Writer = (*testWriter)(nil)

// Main runs a test binary's tests and then stops the throw-away Postgres
// cluster, if one was started. Call it from TestMain.
func Main(m *testing.M) { pgtest.Main(m) }

// ForEachBackend runs fn as two subtests, "sqlite" and "postgres", with the
// Options that select each backend. The Postgres subtest skips loudly when
// Postgres is unavailable (fails with NKUDO_TEST_POSTGRES=require).
func ForEachBackend(t *testing.T, fn func(t *testing.T, o Options)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, Options{}) })
	t.Run("postgres", func(t *testing.T) { fn(t, Options{Postgres: true}) })
}

// HTTPClient is a raw HTTP client trusting the server, presenting cert when
// non-nil: for requests the typed client cannot make (malformed bodies).
func (e *Env) HTTPClient(cert *tls.Certificate) *http.Client {
	tc := &tls.Config{RootCAs: e.CAPool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		c := *cert
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// Clock is a settable clock: real time plus an offset that only grows.
type Clock struct {
	mu     sync.Mutex
	offset time.Duration
}

// Now is the current time plus the offset.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// Raw sends one request with an optional client certificate and bearer
// token and returns the status and body, for requests the typed client
// cannot make (malformed bodies, unknown paths, wrong methods).
func (e *Env) Raw(cert *tls.Certificate, token, method, path string, body []byte) (int, string) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(e.t.Context(), method, e.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.HTTPClient(cert).Do(req)
	if err != nil {
		e.t.Fatalf("cptest: %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// CreatePlan builds a plan that creates (and starts) one small VM per name
// at a site, with IDs derived from tenant, site and names, for seeding the
// store with env.Store().StorePlan.
func CreatePlan(tenant, site string, inventoryVersion int64, vms ...string) model.Plan {
	spec := model.VMSpec{State: model.VMRunning, CPUs: 1, MemoryMiB: 256}
	p := model.Plan{Tenant: tenant, Site: site, InventoryVersion: inventoryVersion}
	var ids []string
	for _, vm := range vms {
		id := shortHash(tenant, site, vm, "create")
		ids = append(ids, id)
		p.Actions = append(p.Actions, model.Action{ID: id, Operation: model.OpCreate, VM: vm, Reason: model.ReasonMissing, Spec: &spec, SpecHash: spec.Hash()})
	}
	p.ID = shortHash(append([]string{tenant, site}, ids...)...)
	return p
}

func shortHash(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(sum[:16])
}
