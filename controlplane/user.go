package controlplane

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/controlplane/maintenance"
	"github.com/nkudo/nkudo/diff"
	"github.com/nkudo/nkudo/model"
	"github.com/nkudo/nkudo/pki"
	"github.com/nkudo/nkudo/store"
)

// ---- conversions (store → wire) ----

func tenantView(t store.Tenant) api.Tenant {
	return api.Tenant{ID: t.ID, Name: t.Name, CreatedAt: t.CreatedAt}
}

func tokenView(t store.APIToken) api.APIToken {
	return api.APIToken{ID: t.ID, Tenant: t.Tenant, Admin: t.Admin, Name: t.Name, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, LastUsedAt: t.LastUsedAt}
}

func (s *Server) repoView(r store.Repository, base string) api.Repository {
	return api.Repository{
		ID: r.ID, Tenant: r.Tenant, Name: r.Name, URL: r.URL, Branch: r.Branch, Path: r.Path,
		HasWebhookSecret: r.HasWebhookSecret, Suspended: r.Suspended,
		ForgeKind: string(r.ForgeKind), ForgeAPIURL: r.ForgeAPIURL, ForgeProject: r.ForgeProject,
		LastSeenCommit: r.LastSeenCommit, LastAppliedCommit: r.LastAppliedCommit, LastError: r.LastError,
		CreatedAt: r.CreatedAt, WebhookURL: base + api.Path(api.PathWebhook, r.ID),
		CredentialsRef: r.CredentialsRef, ForgeCredentialsRef: r.ForgeCredentialsRef,
		Verify: verifyView(r.Verify), DestructiveLabel: r.DestructiveLabel,
	}
}

// siteView renders a site; the NetBird setup key is never part of it.
func (s *Server) siteView(ctx context.Context, st store.Site) (api.Site, error) {
	now := s.now()
	v := api.Site{
		Tenant: st.Tenant, Name: st.Name, CreatedAt: st.CreatedAt, EnrolledAt: st.EnrolledAt,
		CertSerial: st.CertSerial, LastHeartbeat: st.LastHeartbeat,
		HeartbeatInterval: api.Duration(st.HeartbeatInterval), InventoryVersion: st.InventoryVersion,
		NetBirdManagementURL: st.NetBirdManagementURL, NetBirdConfigured: st.HasNetBirdSetupKey,
	}
	if len(st.Facts) > 0 {
		var f api.HostFacts
		if err := json.Unmarshal(st.Facts, &f); err == nil {
			f = f.Typed() // facts stored before the typed fields existed
			v.Facts = &f
		}
	}
	if !st.LastHeartbeat.IsZero() {
		age := max(0, now.Sub(st.LastHeartbeat))
		v.HeartbeatAge = api.Duration(age.Round(time.Millisecond))
		iv := st.HeartbeatInterval
		if iv <= 0 {
			iv = s.opts.MinHeartbeatInterval
		}
		v.Online = age <= iv+s.opts.HeartbeatGrace
	}
	if st.CertSerial != "" {
		rev, err := s.store.IsSerialRevoked(ctx, st.CertSerial)
		if err != nil {
			return api.Site{}, err
		}
		v.Revoked = rev
	}
	switch p, err := s.store.GetNetBirdPeer(ctx, st.Tenant, st.Name); {
	case err == nil:
		v.NetBirdSync = &api.NetBirdSync{PeerID: p.PeerID, Groups: p.Groups, KeyPending: p.SetupKey != "",
			LastChange: p.LastChange, LastError: p.LastError, UpdatedAt: p.UpdatedAt}
	case !errors.Is(err, store.ErrNotFound):
		return api.Site{}, err
	}
	return v, nil
}

// baseURL is how clients reach this server, for commands and webhook URLs.
func (s *Server) baseURL(r *http.Request) string {
	if s.opts.PublicURL != "" {
		return strings.TrimRight(s.opts.PublicURL, "/")
	}
	return "https://" + r.Host
}

// ---- operational ----

func (s *Server) handleHealthz(w http.ResponseWriter, _ *http.Request, _ *caller) error {
	writeJSON(w, http.StatusOK, api.Health{Status: "ok"})
	return nil
}

func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request, _ *caller) error {
	select {
	case <-s.shutdown:
		writeJSON(w, http.StatusServiceUnavailable, api.Health{Status: "unavailable", Error: "shutting down"})
		return nil
	default:
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if err := s.ready.check(ctx, s.now(), s.store.Ping); err != nil {
		s.log.Warn("readiness: database unreachable", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, api.Health{Status: "unavailable", Error: "database unreachable"})
		return nil
	}
	writeJSON(w, http.StatusOK, api.Health{Status: "ok"})
	return nil
}

func (s *Server) handleCA(w http.ResponseWriter, _ *http.Request, _ *caller) error {
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(s.pki.CAPEM())
	return nil
}

// handleCRL serves the CRL, DER by default or PEM with ?format=pem.
func (s *Server) handleCRL(w http.ResponseWriter, r *http.Request, _ *caller) error {
	release, err := s.crlSlots.enter("CRL")
	if err != nil {
		return err
	}
	defer release()
	der, err := s.CRL(r.Context())
	if err != nil {
		return err
	}
	if r.URL.Query().Get("format") == "pem" || strings.Contains(r.Header.Get("Accept"), "application/x-pem-file") {
		w.Header().Set("Content-Type", "application/x-pem-file")
		_ = pem.Encode(w, &pem.Block{Type: "X509 CRL", Bytes: der})
		return nil
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	_, _ = w.Write(der)
	return nil
}

// CRL returns the current revocation list, DER-encoded and signed by the CA.
func (s *Server) CRL(ctx context.Context) ([]byte, error) {
	revoked, err := s.store.ListRevokedSerials(ctx)
	if err != nil {
		return nil, err
	}
	list := make([]pki.Revoked, 0, len(revoked))
	for _, r := range revoked {
		list = append(list, pki.Revoked{Serial: r.Serial, RevokedAt: r.RevokedAt})
	}
	return s.pki.CRL(list, time.Hour)
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request, _ *caller) error {
	s.metricsHandler.ServeHTTP(w, r)
	return nil
}

func (s *Server) handleWebhook(w http.ResponseWriter, r *http.Request, _ *caller) error {
	if s.opts.Webhooks == nil {
		return errorf(http.StatusNotImplemented, api.CodeNotImplemented, "webhooks are not enabled on this server")
	}
	s.opts.Webhooks.ServeHTTP(w, r)
	return nil
}

// ---- tenants and tokens ----

func (s *Server) handleCreateTenant(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req api.CreateTenantRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if !store.ValidName(req.ID) {
		return badRequest("field \"id\" %q: want a DNS label (a-z, 0-9, '-', at most 63 characters)", req.ID)
	}
	t, err := s.store.CreateTenant(r.Context(), c.actor(), store.Tenant{ID: req.ID, Name: req.Name})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, tenantView(t))
	return nil
}

func (s *Server) handleListTenants(w http.ResponseWriter, r *http.Request, _ *caller) error {
	ts, err := s.store.ListTenants(r.Context())
	if err != nil {
		return err
	}
	out := make([]api.Tenant, 0, len(ts))
	for _, t := range ts {
		out = append(out, tenantView(t))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleGetTenant(w http.ResponseWriter, r *http.Request, c *caller) error {
	id := r.PathValue("tenant")
	if !c.admin && id != c.tenant {
		return notFound("tenant " + id)
	}
	t, err := s.store.GetTenant(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, tenantView(t))
	return nil
}

// handleDeleteTenant offboards a tenant the way `nkudo admin tenant delete
// --purge` does: its agents' certificates are revoked before its data is
// deleted, so a still-running agent is refused at once, also if a tenant
// and site of the same names are created again.
func (s *Server) handleDeleteTenant(w http.ResponseWriter, r *http.Request, c *caller) error {
	tenant := r.PathValue("tenant")
	res, err := maintenance.PurgeTenant(r.Context(), s.store, c.actor(), tenant, s.now())
	if err != nil {
		return err
	}
	s.log.Info("tenant deleted", "tenant", tenant, "revokedCertificates", len(res.Revoked), "actor", c.actor().String())
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// checkTTL refuses a "ttl" that was given but is not positive: a zero or
// negative lifetime is a mistake, never "does not expire" (leaving the
// field out asks for the default). Handlers decode "ttl" into a pointer
// field of their body, which shadows the request type's own, to tell
// "ttl":"0s" from no ttl.
func checkTTL(ttl *api.Duration) error {
	if ttl != nil && *ttl <= 0 {
		return badRequest("field \"ttl\" %s: want a positive duration (leave it out for the default)", ttl.D())
	}
	return nil
}

func (s *Server) handleCreateToken(w http.ResponseWriter, r *http.Request, c *caller) error {
	var body struct {
		api.CreateTokenRequest
		TTL *api.Duration `json:"ttl"`
	}
	if err := decode(r, &body); err != nil {
		return err
	}
	if err := checkTTL(body.TTL); err != nil {
		return err
	}
	req := body.CreateTokenRequest
	if body.TTL != nil {
		req.TTL = *body.TTL
	}
	resp, err := CreateAPIToken(r.Context(), s.store, c.actor(), req, s.now())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, resp)
	return nil
}

// CreateAPIToken mints a bearer token for a tenant or the admin scope and
// stores its hash. The token is in the response only; `nkudo admin token
// create` uses this too.
func CreateAPIToken(ctx context.Context, st store.Store, actor store.Actor, req api.CreateTokenRequest, now time.Time) (api.CreateTokenResponse, error) {
	if req.Admin == (req.Tenant != "") {
		return api.CreateTokenResponse{}, badRequest("set exactly one of \"tenant\" and \"admin\"")
	}
	if req.TTL < 0 {
		return api.CreateTokenResponse{}, badRequest("field \"ttl\" %s: want a positive duration (0 = does not expire)", req.TTL.D())
	}
	secret, err := store.NewSecret()
	if err != nil {
		return api.CreateTokenResponse{}, err
	}
	tok := apiTokenPrefix + secret
	t := store.APIToken{Tenant: req.Tenant, Admin: req.Admin, Name: req.Name}
	if req.TTL > 0 {
		t.ExpiresAt = now.Add(req.TTL.D())
	}
	t, err = st.CreateAPIToken(ctx, actor, t, store.HashSecret(tok))
	if err != nil {
		return api.CreateTokenResponse{}, err
	}
	return api.CreateTokenResponse{APIToken: tokenView(t), Token: tok}, nil
}

func (s *Server) handleListTokens(w http.ResponseWriter, r *http.Request, c *caller) error {
	ts, err := s.store.ListAPITokens(r.Context(), c.tenant)
	if err != nil {
		return err
	}
	out := make([]api.APIToken, 0, len(ts))
	for _, t := range ts {
		out = append(out, tokenView(t))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleDeleteToken(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := s.store.DeleteAPIToken(r.Context(), c.actor(), c.tenant, r.PathValue("token")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// ---- repositories ----

var forgeKinds = []store.ForgeKind{store.ForgeNone, store.ForgeGitHub, store.ForgeGitea, store.ForgeGitLab, store.ForgeGitNotes}

func (s *Server) handleCreateRepo(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req api.CreateRepoRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	u, err := url.Parse(req.URL)
	if req.URL == "" || err != nil || (u.Scheme == "" && !strings.Contains(req.URL, ":")) {
		return badRequest("field \"url\" %q: want a git URL (https://…, ssh://…, file://… or user@host:path)", req.URL)
	}
	if err := s.checkRepoSource(req.URL); err != nil {
		return err
	}
	if req.WebhookSecret == "" {
		return badRequest("field \"webhookSecret\" is required: deliveries are verified with it")
	}
	if !slices.Contains(forgeKinds, store.ForgeKind(req.ForgeKind)) {
		return badRequest("field \"forgeKind\" %q: want github, gitea, gitlab, gitnotes or empty", req.ForgeKind)
	}
	name := req.Name
	if name == "" {
		name = strings.TrimSuffix(path.Base(strings.TrimRight(req.URL, "/")), ".git")
	}
	in := store.Repository{
		Tenant: c.tenant, Name: name, URL: req.URL, Branch: req.Branch, Path: req.Path,
		CredentialsRef: req.CredentialsRef, ForgeKind: store.ForgeKind(req.ForgeKind),
		ForgeAPIURL: req.ForgeAPIURL, ForgeProject: req.ForgeProject, ForgeCredentialsRef: req.ForgeCredentialsRef,
	}
	if err := s.checkRepoCredentials(r.Context(), in); err != nil {
		return err
	}
	repo, err := s.store.CreateRepository(r.Context(), c.actor(), in, store.Secret(req.WebhookSecret))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, s.repoView(repo, s.baseURL(r)))
	return nil
}

func (s *Server) handleListRepos(w http.ResponseWriter, r *http.Request, c *caller) error {
	rs, err := s.store.ListRepositories(r.Context(), c.tenant)
	if err != nil {
		return err
	}
	out := make([]api.Repository, 0, len(rs))
	for _, repo := range rs {
		out = append(out, s.repoView(repo, s.baseURL(r)))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleGetRepo(w http.ResponseWriter, r *http.Request, c *caller) error {
	repo, err := s.store.GetRepository(r.Context(), c.tenant, r.PathValue("repo"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.repoView(repo, s.baseURL(r)))
	return nil
}

func (s *Server) handleUpdateRepo(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req api.UpdateRepoRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	u := store.RepositoryUpdate{Branch: req.Branch, Path: req.Path, Suspended: req.Suspended}
	if req.WebhookSecret != nil {
		if *req.WebhookSecret == "" {
			return badRequest("field \"webhookSecret\" cannot be cleared: deliveries are verified with it")
		}
		sec := store.Secret(*req.WebhookSecret)
		u.WebhookSecret = &sec
	}
	if req.CredentialsRef != nil || req.ForgeCredentialsRef != nil {
		cur, err := s.store.GetRepository(r.Context(), c.tenant, r.PathValue("repo"))
		if err != nil {
			return err
		}
		if req.CredentialsRef != nil {
			cur.CredentialsRef = *req.CredentialsRef
		}
		if req.ForgeCredentialsRef != nil {
			cur.ForgeCredentialsRef = *req.ForgeCredentialsRef
		}
		if err := s.checkRepoCredentials(r.Context(), cur); err != nil {
			return err
		}
		u.CredentialsRef, u.ForgeCredentialsRef = req.CredentialsRef, req.ForgeCredentialsRef
	}
	if req.Verify != nil {
		v, err := verifyPolicy(*req.Verify)
		if err != nil {
			return err
		}
		u.Verify = &v
	}
	u.DestructiveLabel = req.DestructiveLabel
	repo, err := s.store.UpdateRepository(r.Context(), c.actor(), c.tenant, r.PathValue("repo"), u)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.repoView(repo, s.baseURL(r)))
	return nil
}

func (s *Server) handleDeleteRepo(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := s.store.DeleteRepository(r.Context(), c.actor(), c.tenant, r.PathValue("repo")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) handleReconcile(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req api.ReconcileRequest
	if err := decodeOptional(r, &req); err != nil {
		return err
	}
	res, err := s.Reconcile(r.Context(), c, r.PathValue("repo"), req.Ref)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, res)
	return nil
}

// Reconcile hands a trigger to the Reconciler after checking the
// repository is the caller's, and audits it.
func (s *Server) Reconcile(ctx context.Context, c *caller, repoID, ref string) (api.TriggerResult, error) {
	if _, err := s.store.GetRepository(ctx, c.tenant, repoID); err != nil {
		return api.TriggerResult{}, err
	}
	if s.opts.Reconciler == nil {
		return api.TriggerResult{}, errorf(http.StatusNotImplemented, api.CodeNotImplemented, "reconciling is not enabled on this server")
	}
	res, err := s.opts.Reconciler.Trigger(ctx, c.tenant, repoID, ref)
	if err != nil {
		return api.TriggerResult{}, err
	}
	if _, err := s.store.AppendAudit(ctx, store.AuditEvent{
		Tenant: c.tenant, Actor: c.actor().String(), Action: "repo.reconcile",
		Object: "repo/" + repoID, Detail: store.Detail(map[string]string{"ref": ref}),
	}); err != nil {
		return api.TriggerResult{}, err
	}
	return res, nil
}

func (s *Server) handleCommitStatuses(w http.ResponseWriter, r *http.Request, c *caller) error {
	repoID := r.PathValue("repo")
	if _, err := s.store.GetRepository(r.Context(), c.tenant, repoID); err != nil {
		return err
	}
	commit, err := s.resolveCommit(r.Context(), c.tenant, repoID, r.PathValue("commit"))
	if err != nil {
		return err
	}
	sts, err := s.store.CommitStatuses(r.Context(), c.tenant, repoID, commit)
	if err != nil {
		return err
	}
	out := make([]api.CommitStatus, 0, len(sts))
	for _, st := range sts {
		out = append(out, api.CommitStatus{RepoID: st.RepoID, Commit: st.Commit, Context: st.Context, State: string(st.State),
			Description: st.Description, TargetURL: st.TargetURL, UpdatedAt: st.UpdatedAt, Posted: st.Posted})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleListPreviews(w http.ResponseWriter, r *http.Request, c *caller) error {
	repoID := r.PathValue("repo")
	if _, err := s.store.GetRepository(r.Context(), c.tenant, repoID); err != nil {
		return err
	}
	ps, err := s.store.ListPreviews(r.Context(), c.tenant, repoID)
	if err != nil {
		return err
	}
	if ps == nil {
		ps = []api.Preview{} // an empty list, not null
	}
	writeJSON(w, http.StatusOK, ps)
	return nil
}

func (s *Server) handleGetPreview(w http.ResponseWriter, r *http.Request, c *caller) error {
	pr, err := strconv.Atoi(r.PathValue("pr"))
	if err != nil || pr <= 0 {
		return badRequest("pull request number %q: want a positive integer", r.PathValue("pr"))
	}
	p, err := s.store.GetPreview(r.Context(), c.tenant, r.PathValue("repo"), pr)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, p)
	return nil
}

// ---- sites ----

func (s *Server) handleCreateSite(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req api.CreateSiteRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if !store.ValidName(req.Name) {
		return badRequest("field \"name\" %q: want a DNS label (a-z, 0-9, '-', at most 63 characters)", req.Name)
	}
	st, err := s.store.CreateSite(r.Context(), c.actor(), c.tenant, req.Name)
	if err != nil {
		return err
	}
	v, err := s.siteView(r.Context(), st)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, v)
	return nil
}

func (s *Server) handleListSites(w http.ResponseWriter, r *http.Request, c *caller) error {
	sts, err := s.store.ListSites(r.Context(), c.tenant)
	if err != nil {
		return err
	}
	out := make([]api.Site, 0, len(sts))
	for _, st := range sts {
		v, err := s.siteView(r.Context(), st)
		if err != nil {
			return err
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleGetSite(w http.ResponseWriter, r *http.Request, c *caller) error {
	st, err := s.store.GetSite(r.Context(), c.tenant, r.PathValue("site"))
	if err != nil {
		return err
	}
	v, err := s.siteView(r.Context(), st)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) handleDeleteSite(w http.ResponseWriter, r *http.Request, c *caller) error {
	site := r.PathValue("site")
	if err := s.store.DeleteSite(r.Context(), c.actor(), c.tenant, site); err != nil {
		return err
	}
	s.metrics.forgetSite(c.tenant, site)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// handleSetNetBird stores the site's NetBird settings. The setup key goes
// to the store and to the agent at enrollment and renewal, nowhere else.
func (s *Server) handleSetNetBird(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req api.SetNetBirdRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.ManagementURL != "" {
		if u, err := url.Parse(req.ManagementURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return badRequest("field \"managementUrl\": want an http(s) URL")
		}
	}
	if err := s.store.SetSiteNetBird(r.Context(), c.actor(), c.tenant, r.PathValue("site"), req.ManagementURL, store.Secret(req.SetupKey)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) handleRevokeSite(w http.ResponseWriter, r *http.Request, c *caller) error {
	serial, err := RevokeSite(r.Context(), s.store, c.actor(), c.tenant, r.PathValue("site"), s.now())
	if err != nil {
		return err
	}
	s.log.Info("site certificate revoked", "tenant", c.tenant, "site", r.PathValue("site"), "serial", serial, "actor", c.actor().String())
	writeJSON(w, http.StatusOK, api.RevokeResponse{Site: r.PathValue("site"), Serial: serial})
	return nil
}

// RevokeSite revokes every certificate of the site, the current one and
// any older one still within its validity; the agent's next request is
// refused, and a renewal in flight is refused too (the store serialises
// the two on the site). `nkudo admin site revoke` uses it too.
func RevokeSite(ctx context.Context, st store.Store, actor store.Actor, tenant, site string, now time.Time) (string, error) {
	s, err := st.GetSite(ctx, tenant, site)
	if err != nil {
		return "", err
	}
	if s.CertSerial == "" {
		return "", errorf(http.StatusConflict, api.CodeConflict, "site %s has no certificate to revoke (never enrolled)", site)
	}
	revoked, err := st.RevokeSiteCertificates(ctx, actor, tenant, site, now)
	if err != nil {
		return "", err
	}
	// The newest revoked serial is the current one unless a renewal
	// recorded another between the read above and the revocation.
	if after, err := st.GetSite(ctx, tenant, site); err == nil && slices.Contains(revoked, after.CertSerial) {
		return after.CertSerial, nil
	}
	return s.CertSerial, nil
}

// maxEnrollTokenTTL keeps enrollment tokens short-lived even on request.
const maxEnrollTokenTTL = 7 * 24 * time.Hour

func (s *Server) handleCreateEnrollmentToken(w http.ResponseWriter, r *http.Request, c *caller) error {
	var body struct {
		api.CreateEnrollmentTokenRequest
		TTL *api.Duration `json:"ttl"`
	}
	if err := decodeOptional(r, &body); err != nil {
		return err
	}
	if err := checkTTL(body.TTL); err != nil {
		return err
	}
	req := body.CreateEnrollmentTokenRequest
	if body.TTL != nil {
		req.TTL = *body.TTL
	}
	tok, err := s.CreateEnrollmentToken(r.Context(), c.actor(), c.tenant, r.PathValue("site"), req.TTL.D(), s.baseURL(r))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, tok)
	return nil
}

// CreateEnrollmentToken mints a one-time token for a site, valid for ttl
// (0 = the default), with the command to run on the edge host.
func (s *Server) CreateEnrollmentToken(ctx context.Context, actor store.Actor, tenant, site string, ttl time.Duration, base string) (api.EnrollmentToken, error) {
	if ttl == 0 {
		ttl = s.opts.EnrollTokenTTL
	}
	if ttl < 0 || ttl > maxEnrollTokenTTL {
		return api.EnrollmentToken{}, badRequest("field \"ttl\" %s: want between 1s and %s", ttl, maxEnrollTokenTTL)
	}
	id, secret, token, err := store.NewEnrollmentToken()
	if err != nil {
		return api.EnrollmentToken{}, err
	}
	t, err := s.store.CreateEnrollmentToken(ctx, actor, store.EnrollmentToken{ID: id, Tenant: tenant, Site: site, ExpiresAt: s.now().Add(ttl)}, store.HashSecret(secret))
	if err != nil {
		return api.EnrollmentToken{}, err
	}
	fp := s.pki.Fingerprint()
	return api.EnrollmentToken{
		ID: t.ID, Tenant: t.Tenant, Site: t.Site, Token: token, ExpiresAt: t.ExpiresAt, CAFingerprint: fp,
		Command: fmt.Sprintf("nkudo-edge enroll --control-plane %s --token %s --ca-hash %s", base, token, fp),
	}, nil
}

func (s *Server) handleSiteVMs(w http.ResponseWriter, r *http.Request, c *caller) error {
	v, err := s.SiteVMs(r.Context(), c.tenant, r.PathValue("site"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// SiteVMs joins the site's desired VMs, as last planned and recorded in
// the store (so any replica answers, with or without a git mirror), with
// the site's last reported inventory, by VM name.
func (s *Server) SiteVMs(ctx context.Context, tenant, site string) (api.SiteVMs, error) {
	inv, err := s.store.Inventory(ctx, tenant, site)
	if err != nil {
		return api.SiteVMs{}, err
	}
	out := api.SiteVMs{Site: site, Reported: inv.Reported, InventoryVersion: inv.Version, VMs: []api.VMView{}}
	byName := map[string]*api.VMView{}
	var names []string
	view := func(name string) *api.VMView {
		if v := byName[name]; v != nil {
			return v
		}
		v := &api.VMView{Name: name}
		byName[name] = v
		names = append(names, name)
		return v
	}
	ds, err := s.store.DesiredState(ctx, tenant, site)
	switch {
	case errors.Is(err, store.ErrNotFound):
		// Never planned from a repository: desired unknown.
	case err != nil:
		return api.SiteVMs{}, fmt.Errorf("desired state of %s: %w", site, err)
	case ds.AppliedCommit != "":
		// The commit shown is the repository's last valid one: the
		// desired state in force, though it may not have touched this site.
		out.DesiredKnown, out.DesiredCommit = true, ds.AppliedCommit
		for _, vm := range ds.VMs {
			spec := vm.Spec
			view(vm.Name).Desired = &spec
		}
	}
	for _, vm := range inv.VMs {
		actual := vm
		view(vm.Name).Actual = &actual
	}
	slices.Sort(names)
	for _, n := range names {
		v := byName[n]
		v.InSync = diff.InSync(v.Desired, v.Actual)
		out.VMs = append(out.VMs, *v)
	}
	return out, nil
}

func (s *Server) handleSitePlans(w http.ResponseWriter, r *http.Request, c *caller) error {
	site := r.PathValue("site")
	if _, err := s.store.GetSite(r.Context(), c.tenant, site); err != nil {
		return err
	}
	return s.listPlans(w, r, c, store.PlanFilter{Site: site})
}

// ---- plans, logs, audit ----

func (s *Server) handleListPlans(w http.ResponseWriter, r *http.Request, c *caller) error {
	q := r.URL.Query()
	commit, err := s.resolveCommit(r.Context(), c.tenant, q.Get("repo"), q.Get("commit"))
	if err != nil {
		return err
	}
	return s.listPlans(w, r, c, store.PlanFilter{Site: q.Get("site"), Commit: commit, RepoID: q.Get("repo"), Status: model.PlanStatus(q.Get("status"))})
}

// resolveCommit expands a short hex commit (4 to 39 digits, as the CLI
// prints 12) to the one full SHA with a status or plan that starts with
// it; anything else is returned as given. ErrNotFound when no commit
// matches, ErrInvalid when several do.
func (s *Server) resolveCommit(ctx context.Context, tenant, repoID, commit string) (string, error) {
	prefix := strings.ToLower(commit)
	if len(prefix) < 4 || len(prefix) >= 40 || strings.Trim(prefix, "0123456789abcdef") != "" {
		return commit, nil
	}
	shas, err := s.store.CommitsWithPrefix(ctx, tenant, repoID, prefix, 3)
	if err != nil {
		return "", err
	}
	switch len(shas) {
	case 0:
		return "", fmt.Errorf("no commit starting with %s has a status or a plan: %w", commit, store.ErrNotFound)
	case 1:
		return shas[0], nil
	}
	for i := range shas {
		shas[i] = shas[i][:min(len(shas[i]), len(prefix)+4)] + "…"
	}
	return "", fmt.Errorf("commit %s is ambiguous: it starts %s; give more digits: %w", commit, strings.Join(shas, ", "), store.ErrInvalid)
}

func (s *Server) listPlans(w http.ResponseWriter, r *http.Request, c *caller, f store.PlanFilter) error {
	limit, err := queryInt(r, "limit", 100)
	if err != nil {
		return err
	}
	f.Limit = int(min(limit, 1000))
	ps, err := s.store.ListPlans(r.Context(), c.tenant, f)
	if err != nil {
		return err
	}
	if ps == nil {
		ps = []api.Plan{} // an empty list, not null
	}
	writeJSON(w, http.StatusOK, ps)
	return nil
}

func (s *Server) handleGetPlan(w http.ResponseWriter, r *http.Request, c *caller) error {
	p, err := s.store.GetPlan(r.Context(), c.tenant, r.PathValue("plan"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, p)
	return nil
}

func (s *Server) handlePlanLogs(w http.ResponseWriter, r *http.Request, c *caller) error {
	plan := r.PathValue("plan")
	after, err := queryInt(r, "after", 0)
	if err != nil {
		return err
	}
	if r.URL.Query().Get("follow") == "true" {
		return s.followLogs(w, r, c.tenant, plan, after)
	}
	limit, err := queryInt(r, "limit", 1000)
	if err != nil {
		return err
	}
	maxBytes, err := queryInt(r, "maxBytes", s.opts.MaxLogPageBytes)
	if err != nil {
		return err
	}
	if maxBytes <= 0 {
		return badRequest("maxBytes %d: want a positive number of bytes", maxBytes)
	}
	lines, more, err := s.store.LogPage(r.Context(), c.tenant, plan, after, int(min(limit, 5000)), min(maxBytes, s.opts.MaxLogPageBytes))
	if err != nil {
		return err
	}
	if lines == nil {
		lines = []api.LogLine{} // an empty page, not null
	}
	page := api.LogPage{Lines: lines}
	for _, g := range store.Gaps(lines, after) {
		page.Gaps = append(page.Gaps, api.LogGap{PlanID: plan, From: g[0], To: g[1]})
	}
	if more {
		page.Next = lines[len(lines)-1].Seq
	} else {
		u, err := s.store.LogUsage(r.Context(), c.tenant, plan)
		if err != nil {
			return err
		}
		if u.Closed != "" {
			page.Dropped = &api.LogDropped{Lines: u.DroppedLines, Bytes: u.DroppedBytes, Quota: string(u.Closed)}
		}
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// followLogs streams a plan's lines as newline-delimited JSON until the
// plan is finished and drained, the client goes away, or the server shuts
// down. It subscribes before each read, so no line is missed.
func (s *Server) followLogs(w http.ResponseWriter, r *http.Request, tenant, plan string, after int64) error {
	ctx := r.Context()
	if _, err := s.store.GetPlan(ctx, tenant, plan); err != nil {
		return err
	}
	ch, unsubscribe := s.store.Subscribe(ctx, store.LogTopic(plan))
	defer unsubscribe()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	enc := json.NewEncoder(w)
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		lines, _, err := s.store.LogPage(ctx, tenant, plan, after, 1000, s.opts.MaxLogPageBytes)
		if err != nil {
			return nil // the status is sent; a broken stream ends it
		}
		for _, l := range lines {
			if err := enc.Encode(l); err != nil {
				return nil
			}
			after = l.Seq
		}
		if len(lines) > 0 {
			_ = rc.Flush()
			continue
		}
		p, err := s.store.GetPlan(ctx, tenant, plan)
		if err != nil {
			return nil
		}
		// An agent sends logs and results on separate queues, so lines can
		// land after the plan has finished: keep draining until the stream
		// has been quiet for followLogsGrace after the end.
		var quiet <-chan time.Time
		if finished(p.Status) {
			quiet = time.After(followLogsGrace)
		}
		select {
		case <-quiet:
			return nil
		case <-ch:
		case <-keepalive.C:
			if _, err := w.Write([]byte("\n")); err != nil {
				return nil
			}
			_ = rc.Flush()
		case <-s.shutdown:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// followLogsGrace is how long a follow stream of a finished plan waits for
// late lines before it ends.
const followLogsGrace = 2 * time.Second

func finished(st model.PlanStatus) bool {
	return st == model.PlanSucceeded || st == model.PlanFailed || st == model.PlanSuperseded
}

func (s *Server) handleAudit(w http.ResponseWriter, r *http.Request, c *caller) error {
	after, err := queryInt(r, "after", 0)
	if err != nil {
		return err
	}
	limit, err := queryInt(r, "limit", 100)
	if err != nil {
		return err
	}
	evs, err := s.store.ListAudit(r.Context(), c.tenant, after, int(min(limit, 1000)))
	if err != nil {
		return err
	}
	out := make([]api.AuditEvent, 0, len(evs))
	for _, e := range evs {
		out = append(out, api.AuditEvent{Seq: e.Seq, Time: e.Time, Tenant: e.Tenant, Actor: e.Actor, Action: e.Action, Object: e.Object, Detail: e.Detail, PrevHash: e.PrevHash, Hash: e.Hash, MAC: e.MAC})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func promHandler(reg *prometheus.Registry) http.Handler {
	// Anyone can scrape; a burst of scrapes beyond the cap gets 503.
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, MaxRequestsInFlight: publicInFlight})
}

// handleAuditVerify recomputes the audit chain: an edited, inserted or
// deleted row shows as the first broken link, and with the server's audit
// key so does an edit re-chained by someone without it.
func (s *Server) handleAuditVerify(w http.ResponseWriter, r *http.Request, _ *caller) error {
	v, err := s.store.VerifyAudit(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.AuditVerification{Events: v.Events, OK: v.OK(), FirstBroken: v.FirstBroken, Reason: v.Reason,
		KeyedFrom: v.KeyedFrom, KeyChecked: v.KeyChecked, HeadHash: v.HeadHash, HeadMAC: v.HeadMAC})
	return nil
}
