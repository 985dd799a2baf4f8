package controlplane

import (
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/ui"
	"github.com/nkudo/nkudo/pki"
	"github.com/nkudo/nkudo/store"
)

// AuthKind says how a route authenticates its caller.
type AuthKind string

const (
	// AuthPublic: no credentials (health, metrics, CA, CRL).
	AuthPublic AuthKind = "public"
	// AuthEnroll: a one-time enrollment token in the body, rate-limited per source address.
	AuthEnroll AuthKind = "enroll"
	// AuthAgent: an mTLS client certificate naming a tenant and a site,
	// verified and checked against revocation on every request.
	AuthAgent AuthKind = "agent"
	// AuthUser: a bearer API token; tenant tokens act on their tenant, admin
	// tokens on the tenant named by the Nkudo-Tenant header.
	AuthUser AuthKind = "user"
	// AuthAdmin: an admin-scope bearer API token.
	AuthAdmin AuthKind = "admin"
	// AuthWebhook: no bearer token; the webhook handler checks the forge signature.
	AuthWebhook AuthKind = "webhook"
	// AuthSession: a dashboard browser session (cookie), bound to one
	// tenant, whose API token is re-checked on every request. Errors are
	// answered as HTML pages.
	AuthSession AuthKind = "session"
)

// Route is one entry of the server's route table.
type Route struct {
	Method  string
	Pattern string // net/http pattern path, with {wildcards}
	Auth    AuthKind
	// TenantOptional lets an admin token call this AuthUser route without
	// naming a tenant (installation-wide views).
	TenantOptional bool
	handle         handlerFunc
	// bodyLimit replaces Options.MaxBodyBytes for this route (0 = keep):
	// the image push streams large bodies and applies its own limits.
	bodyLimit int64
}

// handlerFunc handles one authenticated request. A returned error becomes
// the JSON error envelope; handlers that return nil wrote the answer.
type handlerFunc func(w http.ResponseWriter, r *http.Request, c *caller) error

// caller is who made a request, as authentication established it.
type caller struct {
	kind AuthKind
	// User callers.
	tokenID string
	admin   bool
	tenant  string // the tenant acted on ("" = admin without a tenant)
	// Agent callers.
	id       pki.Identity
	serial   string
	notAfter time.Time
	site     store.Site
	// source is the client's IP address.
	source string
	// Dashboard session callers.
	session    *ui.Session
	sessionKey ui.SessionKey
}

func (c *caller) actor() store.Actor {
	switch {
	case c.kind == AuthAgent:
		return store.Actor{Kind: store.ActorAgent, ID: c.id.String()}
	case c.admin:
		return store.Actor{Kind: store.ActorAdmin, ID: c.tokenID}
	case c.tokenID != "":
		return store.Actor{Kind: store.ActorToken, ID: c.tokenID}
	}
	return store.Actor{Kind: store.ActorSystem, ID: "controlplane"}
}

// Routes returns the route table (a copy): every endpoint the server
// serves, with its authentication. Tests iterate it so that every route,
// present and future, is covered by the isolation suite.
func (s *Server) Routes() []Route { return append([]Route(nil), s.routes...) }

func (s *Server) routeTable() []Route {
	r := func(method, pattern string, auth AuthKind, h handlerFunc) Route {
		return Route{Method: method, Pattern: pattern, Auth: auth, handle: h}
	}
	opt := func(rt Route) Route { rt.TenantOptional = true; return rt }
	streamed := func(rt Route, limit int64) Route { rt.bodyLimit = limit; return rt }
	return append([]Route{
		r("GET", api.PathHealthz, AuthPublic, s.handleHealthz),
		r("GET", api.PathReadyz, AuthPublic, s.handleReadyz),
		r("GET", api.PathMetrics, AuthPublic, s.handleMetrics),
		r("GET", api.PathCA, AuthPublic, s.handleCA),
		r("GET", api.PathCRL, AuthPublic, s.handleCRL),

		r("POST", api.PathEnroll, AuthEnroll, s.handleEnroll),
		r("POST", api.PathAgentRenew, AuthAgent, s.handleRenew),
		r("POST", api.PathAgentHB, AuthAgent, s.handleHeartbeat),
		r("GET", api.PathAgentPlan, AuthAgent, s.handleAgentPlan),
		r("POST", api.PathAgentResults, AuthAgent, s.handleResults),
		r("POST", api.PathAgentLogs, AuthAgent, s.handleAgentLogs),

		r("POST", api.PathWebhook, AuthWebhook, s.handleWebhook),

		r("POST", api.PathTenants, AuthAdmin, s.handleCreateTenant),
		r("GET", api.PathTenants, AuthAdmin, s.handleListTenants),
		opt(r("GET", api.PathTenant, AuthUser, s.handleGetTenant)),
		r("DELETE", api.PathTenant, AuthAdmin, s.handleDeleteTenant),
		r("POST", api.PathTokens, AuthAdmin, s.handleCreateToken),
		opt(r("GET", api.PathTokens, AuthUser, s.handleListTokens)),
		opt(r("DELETE", api.PathToken, AuthUser, s.handleDeleteToken)),

		r("POST", api.PathRepos, AuthUser, s.handleCreateRepo),
		r("GET", api.PathRepos, AuthUser, s.handleListRepos),
		r("GET", api.PathRepo, AuthUser, s.handleGetRepo),
		r("PATCH", api.PathRepo, AuthUser, s.handleUpdateRepo),
		r("DELETE", api.PathRepo, AuthUser, s.handleDeleteRepo),
		r("POST", api.PathRepoReconcile, AuthUser, s.handleReconcile),
		r("GET", api.PathRepoStatuses, AuthUser, s.handleCommitStatuses),
		r("GET", api.PathRepoPreviews, AuthUser, s.handleListPreviews),
		r("GET", api.PathRepoPreview, AuthUser, s.handleGetPreview),
		r("GET", api.PathCredentials, AuthUser, s.handleListCredentials),
		r("PUT", api.PathCredential, AuthUser, s.handlePutCredential),
		r("DELETE", api.PathCredential, AuthUser, s.handleDeleteCredential),
		r("GET", api.PathNetBird, AuthUser, s.handleGetNetBird),
		r("PUT", api.PathNetBird, AuthUser, s.handlePutNetBird),
		r("DELETE", api.PathNetBird, AuthUser, s.handleDeleteNetBird),

		r("POST", api.PathSites, AuthUser, s.handleCreateSite),
		r("GET", api.PathSites, AuthUser, s.handleListSites),
		r("GET", api.PathSite, AuthUser, s.handleGetSite),
		r("DELETE", api.PathSite, AuthUser, s.handleDeleteSite),
		r("PUT", api.PathSiteNetBird, AuthUser, s.handleSetNetBird),
		r("POST", api.PathSiteRevoke, AuthUser, s.handleRevokeSite),
		r("POST", api.PathSiteEnroll, AuthUser, s.handleCreateEnrollmentToken),
		r("GET", api.PathSiteVMs, AuthUser, s.handleSiteVMs),
		r("GET", api.PathSitePlans, AuthUser, s.handleSitePlans),

		r("GET", api.PathPlans, AuthUser, s.handleListPlans),
		r("GET", api.PathPlan, AuthUser, s.handleGetPlan),
		r("GET", api.PathPlanLogs, AuthUser, s.handlePlanLogs),

		opt(r("GET", api.PathAudit, AuthUser, s.handleAudit)),
		r("GET", api.PathAuditVerify, AuthAdmin, s.handleAuditVerify),

		r("GET", api.PathAgentImage, AuthAgent, s.handleAgentImage),
		streamed(r("POST", api.PathImages, AuthUser, s.handlePushImage), s.opts.MaxImageBytes+1),
		r("GET", api.PathImages, AuthUser, s.handleListImages),
		r("GET", api.PathImage, AuthUser, s.handleGetImage),
		r("DELETE", api.PathImage, AuthUser, s.handleDeleteImage),
	}, s.dashboardRoutes()...)
}

func (s *Server) buildMux() http.Handler {
	mux := http.NewServeMux()
	// paths matches patterns without their method, to tell 405 from 404.
	paths := http.NewServeMux()
	allowed := map[string][]string{}
	for _, rt := range s.routes {
		mux.Handle(rt.Method+" "+rt.Pattern, s.wrap(rt))
		if allowed[rt.Pattern] == nil {
			paths.Handle(rt.Pattern, http.NotFoundHandler())
		}
		allowed[rt.Pattern] = append(allowed[rt.Pattern], rt.Method)
	}
	fallback := Route{Pattern: "unmatched", Auth: AuthPublic, handle: func(w http.ResponseWriter, r *http.Request, _ *caller) error {
		if _, p := paths.Handler(r); p != "" && allowed[p] != nil {
			w.Header().Set("Allow", strings.Join(allowed[p], ", "))
			return errorf(http.StatusMethodNotAllowed, api.CodeMethod, "%s %s: allowed methods are %s", r.Method, r.URL.Path, strings.Join(allowed[p], ", "))
		}
		return errorf(http.StatusNotFound, api.CodeNotFound, "no endpoint %s %s", r.Method, r.URL.Path)
	}}
	mux.Handle("/", s.wrap(fallback))
	return mux
}

// statusRecorder remembers the status for metrics and logs; Unwrap lets
// http.ResponseController reach Flush on the real writer.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (w *statusRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusRecorder) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// maxWebhookBody is GitHub's own cap on delivery payloads: a large push
// must not be refused by the body limit meant for API requests.
const maxWebhookBody = 25 << 20

// wrap applies, in order: the body size limit, authentication, the
// handler, error rendering, metrics and the request log line.
func (s *Server) wrap(rt Route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		if r.Body != nil {
			limit := s.opts.MaxBodyBytes
			if rt.Auth == AuthWebhook {
				limit = max(limit, maxWebhookBody)
			}
			if rt.bodyLimit > 0 {
				limit = rt.bodyLimit
			}
			r.Body = http.MaxBytesReader(rec, r.Body, limit)
		}
		var c *caller
		var err error
		if rt.Auth == AuthAgent {
			// Bounded before authentication, which reads the store.
			var release func()
			release, err = s.overload.enterAgent(rt.Pattern == api.PathAgentHB)
			defer release()
			r = r.WithContext(withPark(r.Context(), release))
		}
		if err == nil {
			c, err = s.authenticate(r, rt)
		}
		if err == nil {
			err = rt.handle(rec, r, c)
		}
		if err != nil {
			he, expected := toHTTPError(err)
			if !expected {
				s.log.Error("request failed", "method", r.Method, "route", rt.Pattern, "err", err)
			}
			if rec.status == 0 && rt.Auth == AuthSession {
				s.writeUIError(rec, he, c)
			} else if rec.status == 0 {
				writeErr(rec, he)
			}
		}
		if rec.status == 0 {
			rec.WriteHeader(http.StatusOK)
		}
		d := time.Since(start)
		s.metrics.httpDur.WithLabelValues(rt.Pattern, methodLabel(r.Method), strconv.Itoa(rec.status)).Observe(d.Seconds())
		if s.log.Enabled(r.Context(), slog.LevelDebug) {
			attrs := []any{"method", r.Method, "route", rt.Pattern, "status", rec.status, "duration", d}
			if c != nil && c.kind == AuthAgent {
				attrs = append(attrs, "tenant", c.id.Tenant, "site", c.id.Site)
			} else if c != nil && c.tenant != "" {
				attrs = append(attrs, "tenant", c.tenant)
			}
			s.log.Debug("request", attrs...)
		}
	})
}

func sourceAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (s *Server) authenticate(r *http.Request, rt Route) (*caller, error) {
	c := &caller{kind: rt.Auth, source: sourceAddr(r)}
	switch rt.Auth {
	case AuthPublic, AuthEnroll, AuthWebhook:
		return c, nil
	case AuthAgent:
		return c, s.authAgent(r, c)
	case AuthSession:
		return c, s.authSession(r, c)
	case AuthUser, AuthAdmin:
		if err := s.authToken(r, c); err != nil {
			return c, err
		}
		if rt.Auth == AuthAdmin && !c.admin {
			return c, errorf(http.StatusForbidden, api.CodeForbidden, "this endpoint needs an admin token")
		}
		if rt.Auth == AuthUser && c.tenant == "" && !rt.TenantOptional {
			return c, badRequest("an admin token must name the tenant to act on in the %s header", api.TenantHeader)
		}
		return c, nil
	}
	return c, errorf(http.StatusInternalServerError, api.CodeInternal, "route has no authentication")
}

// authAgent verifies the client certificate and binds the request to its
// tenant and site. Revocation is checked here, on every request, so it
// takes effect at once even on long-lived connections.
func (s *Server) authAgent(r *http.Request, c *caller) error {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return errorf(http.StatusUnauthorized, api.CodeCertInvalid, "this endpoint needs the agent's client certificate (mTLS); enroll first")
	}
	cert := r.TLS.PeerCertificates[0]
	id, err := s.verified.verify(s.pki, cert)
	if err != nil {
		return errorf(http.StatusUnauthorized, api.CodeCertInvalid, "%v", err)
	}
	ctx := r.Context()
	serial := pki.SerialString(cert.SerialNumber)
	// One statement: the site, and whether this serial is a live
	// certificate of its current epoch. A certificate of a deleted site, of
	// an earlier site of the same name, or signed for a renewal that lost
	// the race with a revocation was never recorded there and is refused.
	site, err := s.store.CheckSiteCertificate(ctx, id.Tenant, id.Site, serial)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errorf(http.StatusUnauthorized, api.CodeCertInvalid, "site %s of the certificate no longer exists", id.Site)
	case errors.Is(err, store.ErrCertRevoked):
		return errorf(http.StatusUnauthorized, api.CodeCertRevoked, "certificate %s of site %s was revoked; enroll again with a new token", serial, id.Site)
	case errors.Is(err, store.ErrCertUnknown):
		return errorf(http.StatusUnauthorized, api.CodeCertRevoked, "certificate %s was not issued to the current site %s (deleted and created again, or revoked); enroll again with a new token", serial, id.Site)
	case err != nil:
		return err
	}
	c.id, c.serial, c.notAfter, c.site, c.tenant = id, serial, cert.NotAfter, site, id.Tenant
	return nil
}

// apiTokenPrefix makes n-kudo tokens recognisable to secret scanners.
const apiTokenPrefix = "nkudo_"

func (s *Server) authToken(r *http.Request, c *caller) error {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	tok = strings.TrimSpace(tok)
	if !ok || tok == "" {
		return errorf(http.StatusUnauthorized, api.CodeUnauthorized, "missing API token: send Authorization: Bearer <token>")
	}
	now := s.now()
	t, err := s.store.APITokenByHash(r.Context(), store.HashSecret(tok), now)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errorf(http.StatusUnauthorized, api.CodeUnauthorized, "invalid API token")
	case errors.Is(err, store.ErrTokenExpired):
		return errorf(http.StatusUnauthorized, api.CodeTokenExpired, "API token expired; create a new one")
	case err != nil:
		return err
	}
	if now.Sub(t.LastUsedAt) > time.Minute {
		if err := s.store.TouchAPIToken(r.Context(), t.ID, now); err != nil {
			s.log.Warn("record token use", "token_id", t.ID, "err", err)
		}
	}
	c.tokenID, c.admin = t.ID, t.Admin
	want := r.Header.Get(api.TenantHeader)
	switch {
	case t.Admin:
		c.tenant = want
	case want != "" && want != t.Tenant:
		return errorf(http.StatusForbidden, api.CodeForbidden, "this token is scoped to tenant %s", t.Tenant)
	default:
		c.tenant = t.Tenant
	}
	return nil
}

// verifiedCerts remembers client certificates whose chain verified, so a
// busy agent connection pays the ECDSA signature check once, not on every
// heartbeat. The validity window is still checked per request, and
// revocation is checked against the store per request by authAgent.
type verifiedCerts struct {
	mu sync.Mutex
	m  map[[32]byte]pki.Identity
}

// maxVerifiedCerts bounds the cache; it is cleared when full (cheap to refill).
const maxVerifiedCerts = 100_000

func (v *verifiedCerts) verify(a *pki.Authority, cert *x509.Certificate) (pki.Identity, error) {
	if err := a.CheckValidity(cert); err != nil {
		return pki.Identity{}, err
	}
	key := sha256.Sum256(cert.Raw)
	v.mu.Lock()
	id, ok := v.m[key]
	v.mu.Unlock()
	if ok {
		return id, nil
	}
	id, err := a.VerifyClient(cert)
	if err != nil {
		return pki.Identity{}, err
	}
	v.mu.Lock()
	if v.m == nil || len(v.m) >= maxVerifiedCerts {
		v.m = make(map[[32]byte]pki.Identity)
	}
	v.m[key] = id
	v.mu.Unlock()
	return id, nil
}
