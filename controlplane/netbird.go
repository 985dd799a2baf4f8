package controlplane

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/internal/egress"
	"github.com/nkudo/nkudo/netbird"
	"github.com/nkudo/nkudo/store"
)

// ---- the tenant's NetBird integration (management URL + token credential) ----

// netbirdCheckTimeout bounds the validating GET /api/groups of a set.
const netbirdCheckTimeout = 15 * time.Second

// netbirdHTTP is the client of management API calls: every address it
// dials, redirects included, passes the NetBird egress policy.
func (s *Server) netbirdHTTP() *http.Client {
	c := s.opts.NetBirdEgress.HTTPClient(30 * time.Second)
	if s.opts.NetBirdTLS != nil {
		c.Transport.(*http.Transport).TLSClientConfig = s.opts.NetBirdTLS.Clone()
	}
	return c
}

func netbirdView(n store.NetBirdIntegration, cred store.Credential, groups int) api.NetBirdIntegration {
	return api.NetBirdIntegration{URL: n.URL, Credential: n.Credential, Fingerprint: cred.Fingerprint,
		Groups: groups, CreatedAt: n.CreatedAt, UpdatedAt: n.UpdatedAt}
}

func (s *Server) handlePutNetBird(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req api.SetNetBirdIntegrationRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.Credential == "" {
		req.Credential = "netbird"
	}
	if req.Token == "" {
		return badRequest("field \"token\" is required: the service user's personal access token")
	}
	u, err := url.Parse(req.URL)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return badRequest("field \"url\" %q: want the management server's URL, e.g. https://api.netbird.io", req.URL)
	}
	if u.Scheme == "http" && !s.opts.AllowInsecureCredentials {
		return badRequest("field \"url\": refusing to send the token over plain http (use https, or start the server with --allow-insecure-credentials for local development)")
	}
	// Check the token before storing anything: a set that answers 200 works.
	nb := &netbird.Client{URL: req.URL, Token: netbird.Secret(req.Token), HTTP: s.netbirdHTTP()}
	ctx, cancel := context.WithTimeout(r.Context(), netbirdCheckTimeout)
	defer cancel()
	groups, err := nb.Groups(ctx)
	switch {
	case errors.Is(err, netbird.ErrUnauthorized):
		return badRequest("field \"token\": the management API refused it: %v", err)
	case errors.Is(err, egress.ErrDenied):
		return badRequest("field \"url\": %v", err)
	case err != nil:
		return badRequest("field \"url\": GET /api/groups failed: %v", err)
	}
	cred, err := s.store.PutCredential(r.Context(), c.actor(), store.Credential{
		Tenant: c.tenant, Name: req.Credential, Kind: store.CredentialToken, Host: u.Host,
	}, store.Secret(req.Token))
	if err != nil {
		return err
	}
	n, err := s.store.PutNetBirdIntegration(r.Context(), c.actor(), store.NetBirdIntegration{
		Tenant: c.tenant, URL: req.URL, Credential: req.Credential,
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, netbirdView(n, cred, len(groups)))
	return nil
}

func (s *Server) handleGetNetBird(w http.ResponseWriter, r *http.Request, c *caller) error {
	n, err := s.store.GetNetBirdIntegration(r.Context(), c.tenant)
	if errors.Is(err, store.ErrNotFound) {
		return notFound("netbird integration (set one with PUT " + api.PathNetBird + ")")
	}
	if err != nil {
		return err
	}
	cred, err := s.store.GetCredential(r.Context(), c.tenant, n.Credential)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	writeJSON(w, http.StatusOK, netbirdView(n, cred, 0))
	return nil
}

func (s *Server) handleDeleteNetBird(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := s.store.DeleteNetBirdIntegration(r.Context(), c.actor(), c.tenant); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// pendingNetBird is the setup key minted for the site and not used yet
// (key, which RecordHeartbeat read with the heartbeat), with the
// management URL, for the heartbeat answer; nil when there is none. The
// integration is read only when a key is pending. A failure to read it
// never fails the heartbeat: the key comes with the next one.
func (s *Server) pendingNetBird(ctx context.Context, tenant, site string, key store.Secret) *api.NetBirdConfig {
	if key == "" {
		return nil
	}
	n, err := s.store.GetNetBirdIntegration(ctx, tenant)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.log.Warn("cannot read the NetBird integration for a site's heartbeat", "tenant", tenant, "site", site, "err", err)
		}
		return nil
	}
	return &api.NetBirdConfig{ManagementURL: n.URL, SetupKey: key.Reveal()}
}
