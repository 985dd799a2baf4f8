package source

import (
	"errors"
	"fmt"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"

	"github.com/nkudo/nkudo/internal/commitsig"
)

// maxVerifyCommits bounds how many new commits VerifyHistory checks in
// one call, so a huge push cannot hold the repository's lease.
const maxVerifyCommits = 10000

// VerifyHistory checks head's signature with keys and returns its signer.
// With all, it also checks every commit reachable from head but not from
// base, the last verified commit ("" or absent from the mirror: head
// alone). The policy (which keys, which mode) and what a failure means
// are the caller's; this is the walk over the mirror's history.
// ErrNoCommit when the mirror lacks head.
func (m *Mirror) VerifyHistory(keys *commitsig.Keys, head plumbing.Hash, base string, all bool) (commitsig.Signer, error) {
	hc, err := m.repo.CommitObject(head)
	if err != nil {
		return commitsig.Signer{}, fmt.Errorf("commit %s: %w", head, ErrNoCommit)
	}
	signer, err := keys.Verify(hc)
	if err != nil || !all || !plumbing.IsHash(base) || base == head.String() {
		return signer, err
	}
	bc, err := m.repo.CommitObject(plumbing.NewHash(base))
	if err != nil {
		m.log.Warn("last verified commit is not in the mirror: verifying the head only", "repo", m.id, "commit", base)
		return signer, nil
	}
	// Everything the last verified commit reaches was verified (or came
	// before the policy); after a force push, the commits since the
	// common ancestor are the new ones.
	old := map[plumbing.Hash]bool{}
	if err := object.NewCommitPreorderIter(bc, nil, nil).ForEach(func(c *object.Commit) error {
		old[c.Hash] = true
		return nil
	}); err != nil {
		return commitsig.Signer{}, fmt.Errorf("walk history of %s: %w", base[:12], err)
	}
	n := 0
	err = object.NewCommitPreorderIter(hc, old, nil).ForEach(func(c *object.Commit) error {
		if n++; n > maxVerifyCommits {
			return fmt.Errorf("more than %d commits since the last verified one %s", maxVerifyCommits, base[:12])
		}
		if c.Hash == head {
			return nil
		}
		if _, err := keys.Verify(c); err != nil {
			return err
		}
		return nil
	})
	if errors.Is(err, storer.ErrStop) {
		err = nil
	}
	return signer, err
}
