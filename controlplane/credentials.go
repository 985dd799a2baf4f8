package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/nkudo/nkudo/api"
	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/store"
)

// ---- credentials (tenant-owned, write-only secrets) ----

func credentialView(c store.Credential) api.Credential {
	return api.Credential{
		Name: c.Name, Kind: string(c.Kind), Host: c.Host, Fingerprint: c.Fingerprint,
		HasKnownHosts: c.KnownHosts != "", CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt,
	}
}

func (s *Server) handlePutCredential(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req api.PutCredentialRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.Secret == "" {
		return badRequest("field \"secret\" is required")
	}
	if req.Host == "" {
		return badRequest("field \"host\" is required: the credential is sent to that host only")
	}
	if !store.CredentialKind(req.Kind).Valid() {
		return badRequest("field \"kind\" %q: want token, basic or ssh-key", req.Kind)
	}
	cred, err := s.store.PutCredential(r.Context(), c.actor(), store.Credential{
		Tenant: c.tenant, Name: r.PathValue("name"), Kind: store.CredentialKind(req.Kind),
		Host: req.Host, KnownHosts: req.KnownHosts,
	}, store.Secret(req.Secret))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, credentialView(cred))
	return nil
}

func (s *Server) handleListCredentials(w http.ResponseWriter, r *http.Request, c *caller) error {
	cs, err := s.store.ListCredentials(r.Context(), c.tenant)
	if err != nil {
		return err
	}
	out := make([]api.Credential, 0, len(cs))
	for _, cr := range cs {
		out = append(out, credentialView(cr))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleDeleteCredential(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := s.store.DeleteCredential(r.Context(), c.actor(), c.tenant, r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// checkRepoCredentials refuses a repository whose credential references
// name no credential of its own tenant, or one that may not be sent to
// the repository's URL (another host, plain http). The reconciler checks
// the same again at every use; this check gives the caller a clear 400
// naming the field instead of a failed fetch later.
func (s *Server) checkRepoCredentials(ctx context.Context, repo store.Repository) error {
	refs := []struct{ field, ref, target string }{
		{"credentialsRef", repo.CredentialsRef, repo.URL},
	}
	if repo.ForgeKind != store.ForgeGitNotes && repo.ForgeKind != store.ForgeNone {
		refs = append(refs, struct{ field, ref, target string }{"forgeCredentialsRef", repo.ForgeCredentialsRef, forge.APIBase(string(repo.ForgeKind), repo.ForgeAPIURL)})
	}
	for _, r := range refs {
		if r.ref == "" {
			continue
		}
		cred, err := s.store.GetCredential(ctx, repo.Tenant, r.ref)
		if errors.Is(err, store.ErrNotFound) {
			return badRequest("field %q: no credential %q in this tenant (create it with PUT %s)", r.field, r.ref, api.Path(api.PathCredential, r.ref))
		}
		if err != nil {
			return fmt.Errorf("check %s: %w", r.field, err)
		}
		if err := store.CheckCredentialUse(cred, r.target, s.opts.AllowInsecureCredentials); err != nil {
			return badRequest("field %q: %v", r.field, err)
		}
	}
	return nil
}
