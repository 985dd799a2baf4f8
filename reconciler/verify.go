package reconciler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/nkudo/nkudo/forge"
	"github.com/nkudo/nkudo/internal/commitsig"
	"github.com/nkudo/nkudo/store"
)

// checkSignature enforces repo's signature policy on commit head before
// anything of it is loaded. An untrusted commit is an invalid one (an
// *Error of ReasonInvalid wrapping ErrInvalidCommit): nkudo/validate
// failure, lastError, nothing changes, and the last applied (verified)
// commit stays desired. A verified commit that is new to the repository is
// audited with its signer.
func (r *Reconciler) checkSignature(ctx context.Context, repo store.Repository, head plumbing.Hash) error {
	if !repo.Verify.Enabled() {
		return nil
	}
	commit := head.String()
	signer, err := r.verifyCommits(repo, head, repo.LastAppliedCommit)
	if err != nil {
		return signatureError(err)
	}
	if repo.LastAppliedCommit == commit {
		return nil // audited when it was first verified
	}
	detail, _ := json.Marshal(map[string]any{"commit": commit, "mode": repo.Verify.Mode, "signer": signer})
	if _, err := r.store.AppendAudit(ctx, store.AuditEvent{
		Tenant: repo.Tenant, Actor: r.actor.String(), Action: "repository.verify",
		Object: "repository/" + repo.ID, Detail: detail,
	}); err != nil {
		return fmt.Errorf("audit signer of %s: %w", short(commit), err)
	}
	return nil
}

// previewSignature is checkSignature for a pull-request head: it posts
// the same nkudo/validate failure and returns the reason ("" = trusted),
// but records nothing on the repository.
func (r *Reconciler) previewSignature(ctx context.Context, repo store.Repository, head plumbing.Hash) (string, error) {
	if !repo.Verify.Enabled() {
		return "", nil
	}
	if _, err := r.verifyCommits(repo, head, repo.LastAppliedCommit); err != nil {
		var uerr *commitsig.UnverifiedError
		if !errors.As(err, &uerr) {
			return "", signatureError(err)
		}
		r.setStatus(ctx, repo, head.String(), forge.ContextValidate, store.StateFailure, uerr.Error())
		return uerr.Error(), nil
	}
	return "", nil
}

// signatureError classifies a failed verification: an untrusted commit is
// invalid; anything else (a policy that no longer parses, a commit missing
// from the mirror) could not be checked and may pass when tried again.
func signatureError(err error) *Error {
	var uerr *commitsig.UnverifiedError
	if errors.As(err, &uerr) {
		return newError(ReasonInvalid, uerr.Error(), fmt.Errorf("%w: %w", ErrInvalidCommit, err))
	}
	return newError(ReasonRead, "could not verify the commit: "+err.Error(), err)
}

// verifyCommits checks head (mode head) or every commit reachable from
// head but not from base (mode all; base is the last verified commit, ""
// or absent from the mirror: head alone) and returns head's signer.
func (r *Reconciler) verifyCommits(repo store.Repository, head plumbing.Hash, base string) (commitsig.Signer, error) {
	keys, err := commitsig.Parse(repo.Verify.AllowedSigners, repo.Verify.GPGKeys)
	if err != nil {
		return commitsig.Signer{}, fmt.Errorf("signature policy of %s: %w", repo.ID, err)
	}
	m, err := r.mirrors.Mirror(repo.ID, repo.URL)
	if err != nil {
		return commitsig.Signer{}, err
	}
	return m.VerifyHistory(keys, head, base, repo.Verify.Mode == store.VerifyAll)
}
