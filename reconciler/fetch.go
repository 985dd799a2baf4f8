package reconciler

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"

	"github.com/nkudo/nkudo/source"
	"github.com/nkudo/nkudo/store"
)

// ErrNoCommit means the requested ref or commit does not exist in the source.
var ErrNoCommit = source.ErrNoCommit

// credential resolves a repository's credential reference through the
// store, by the repository's own tenant (so a row edited to name another
// tenant's credential finds nothing), and checks it may be sent to target:
// the host it is bound to, never over plain http unless the server allows
// it. It runs at every use, not only when the repository was registered.
func (r *Reconciler) credential(ctx context.Context, tenant, ref, target string) (store.Credential, store.Secret, error) {
	cred, sec, err := r.store.CredentialSecret(ctx, tenant, ref)
	if errors.Is(err, store.ErrNotFound) {
		return store.Credential{}, "", fmt.Errorf("credential %q: no such credential in tenant %s: %w", ref, tenant, store.ErrCredentialUse)
	}
	if err != nil {
		return store.Credential{}, "", err
	}
	if err := store.CheckCredentialUse(cred, target, r.opts.AllowInsecureCredentials); err != nil {
		return store.Credential{}, "", err
	}
	return cred, sec, nil
}

// auth builds the transport credentials of tenant's repository at rawURL
// from its credential reference ref ("" = anonymous).
func (r *Reconciler) auth(ctx context.Context, tenant, rawURL, ref string) (transport.AuthMethod, error) {
	if ref == "" {
		return r.mirrors.Auth(rawURL, nil, "")
	}
	cred, sec, err := r.credential(ctx, tenant, ref, rawURL)
	if err != nil {
		return nil, err
	}
	return r.mirrors.Auth(rawURL, &cred, sec)
}

// fetch resolves ref to a commit in the mirror, fetching what is missing.
func (r *Reconciler) fetch(ctx context.Context, repo store.Repository, ref string) (plumbing.Hash, error) {
	if isSHA(ref) {
		return plumbing.NewHash(ref), r.fetchSHA(ctx, repo, ref, 0)
	}
	auth, err := r.auth(ctx, repo.Tenant, repo.URL, repo.CredentialsRef)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("credentials for %s: %w", repo.ID, err)
	}
	branch := repo.Branch
	if ref != "" {
		branch = strings.TrimPrefix(ref, "refs/heads/")
	}
	return r.mirrors.FetchBranch(ctx, repo.ID, repo.URL, auth, branch)
}

// fetchSHA brings commit sha into the mirror (pr > 0: from the pull
// request's head ref too, when no branch has it). A reconcile of a commit
// and a preview of it fetch alike, so they fail alike.
func (r *Reconciler) fetchSHA(ctx context.Context, repo store.Repository, sha string, pr int) error {
	auth, err := r.auth(ctx, repo.Tenant, repo.URL, repo.CredentialsRef)
	if err != nil {
		return fmt.Errorf("credentials for %s: %w", repo.ID, err)
	}
	return r.mirrors.FetchCommit(ctx, repo.ID, repo.URL, auth, sha, pr)
}

// watchLoop reconciles local repositories shortly after a commit lands
// in them (Options.WatchLocal).
func (r *Reconciler) watchLoop(ctx context.Context) {
	r.mirrors.Watch(ctx, r.store.ListAllRepositories, func(ctx context.Context, tenant, repoID string) {
		if _, err := r.Trigger(ctx, tenant, repoID, ""); err != nil {
			r.log.Warn("watch: trigger", "repo", repoID, "err", err)
		}
	})
}
