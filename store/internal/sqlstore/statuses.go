package sqlstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nkudo/nkudo/store"
)

const statusCols = `tenant, repo_id, commit_sha, context, state, description, target_url, updated_at, posted, posted_at`

func scanStatus(r Row) (store.CommitStatus, error) {
	var cs store.CommitStatus
	var state string
	var updated, posted int64
	err := r.Scan(&cs.Tenant, &cs.RepoID, &cs.Commit, &cs.Context, &state, &cs.Description, &cs.TargetURL, &updated, &cs.Posted, &posted)
	cs.State = store.StatusState(state)
	cs.UpdatedAt, cs.PostedAt = tm(updated), tm(posted)
	return cs, err
}

// SetCommitStatus implements store.Statuses.
func (s *Store) SetCommitStatus(ctx context.Context, tenant string, cs store.CommitStatus) (bool, error) {
	changed, err := s.setCommitStatus(ctx, tenant, cs, false)
	if err != nil {
		return false, fmt.Errorf("set status %s of %s: %w", cs.Context, cs.Commit, err)
	}
	return changed, nil
}

// SetCommitStatusOnce implements store.Statuses. The final state is kept
// by the statement's own condition, so the database arbitrates between
// replicas: the row is locked by the upsert, and a second final write
// finds the first one's state.
func (s *Store) SetCommitStatusOnce(ctx context.Context, tenant string, cs store.CommitStatus) (bool, error) {
	changed, err := s.setCommitStatus(ctx, tenant, cs, true)
	if err != nil {
		return false, fmt.Errorf("set status %s of %s once: %w", cs.Context, cs.Commit, err)
	}
	return changed, nil
}

// setCommitStatus upserts cs, writing only when something changed; with
// onlyPending, a stored status is changed only while it is pending.
func (s *Store) setCommitStatus(ctx context.Context, tenant string, cs store.CommitStatus, onlyPending bool) (bool, error) {
	if !cs.State.Valid() || cs.Commit == "" || cs.Context == "" {
		return false, errInvalid("commit, context and a valid state are required")
	}
	// $9 = '' leaves the stored state unconstrained.
	from := ""
	if onlyPending {
		from = string(store.StatePending)
	}
	var changed bool
	err := s.write(ctx, func(t *wtx) error {
		changed = false
		if _, err := s.getRepo(ctx, t, tenant, cs.RepoID); err != nil {
			return fmt.Errorf("repository %s: %w", cs.RepoID, err)
		}
		at := cs.UpdatedAt
		if at.IsZero() {
			at = t.now
		}
		n, err := t.Exec(ctx, `INSERT INTO commit_statuses (repo_id, tenant, commit_sha, context, state, description, target_url, updated_at, posted, posted_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, FALSE, 0)
			ON CONFLICT (repo_id, commit_sha, context) DO UPDATE SET state = excluded.state, description = excluded.description,
				target_url = excluded.target_url, updated_at = excluded.updated_at, posted = FALSE, posted_at = 0
			WHERE ($9 = '' OR commit_statuses.state = $9) AND (commit_statuses.state <> excluded.state OR commit_statuses.description <> excluded.description
				OR commit_statuses.target_url <> excluded.target_url)`,
			cs.RepoID, tenant, cs.Commit, cs.Context, string(cs.State), cs.Description, cs.TargetURL, us(store.Micro(at)), from)
		if err != nil {
			return err
		}
		changed = n > 0
		return nil
	})
	return changed, err
}

// MarkCommitStatusPosted implements store.Statuses.
func (s *Store) MarkCommitStatusPosted(ctx context.Context, tenant string, cs store.CommitStatus, now time.Time) error {
	err := s.write(ctx, func(t *wtx) error {
		var one int
		if err := t.QueryRow(ctx, `SELECT 1 FROM commit_statuses WHERE tenant = $1 AND repo_id = $2 AND commit_sha = $3 AND context = $4`,
			tenant, cs.RepoID, cs.Commit, cs.Context).Scan(&one); err != nil {
			return s.notFound(err)
		}
		_, err := t.Exec(ctx, `UPDATE commit_statuses SET posted = TRUE, posted_at = $1
			WHERE tenant = $2 AND repo_id = $3 AND commit_sha = $4 AND context = $5 AND state = $6 AND description = $7 AND target_url = $8`,
			us(store.Micro(now)), tenant, cs.RepoID, cs.Commit, cs.Context, string(cs.State), cs.Description, cs.TargetURL)
		return err
	})
	if err != nil {
		return fmt.Errorf("mark status %s of %s posted: %w", cs.Context, cs.Commit, err)
	}
	return nil
}

// CommitStatuses implements store.Statuses.
func (s *Store) CommitStatuses(ctx context.Context, tenant, repoID, commit string) ([]store.CommitStatus, error) {
	out, err := readAll(ctx, s, scanStatus, `SELECT `+statusCols+` FROM commit_statuses
		WHERE tenant = $1 AND repo_id = $2 AND commit_sha = $3 ORDER BY context`, tenant, repoID, commit)
	if err != nil {
		return nil, fmt.Errorf("statuses of %s: %w", commit, err)
	}
	return out, nil
}

// RecentCommitStatuses implements store.Statuses.
func (s *Store) RecentCommitStatuses(ctx context.Context, tenant, repoID string, limit int) ([]store.CommitStatus, error) {
	if limit <= 0 {
		limit = 100
	}
	out, err := readAll(ctx, s, scanStatus, `SELECT `+statusCols+` FROM commit_statuses
		WHERE tenant = $1 AND repo_id = $2 ORDER BY updated_at DESC, commit_sha, context LIMIT $3`, tenant, repoID, limit)
	if err != nil {
		return nil, fmt.Errorf("recent statuses of repository %s: %w", repoID, err)
	}
	return out, nil
}

// CommitsWithPrefix implements store.Statuses.
func (s *Store) CommitsWithPrefix(ctx context.Context, tenant, repoID, prefix string, limit int) ([]string, error) {
	// Hex only: the prefix goes into a LIKE pattern, where % and _ are wildcards.
	if len(prefix) < 4 || len(prefix) > 64 || strings.Trim(prefix, "0123456789abcdef") != "" {
		return nil, fmt.Errorf("commits with prefix %q: %w", prefix, errInvalid("want 4 to 64 lowercase hex digits"))
	}
	if limit <= 0 {
		limit = 10
	}
	out, err := readAll(ctx, s, func(r Row) (string, error) {
		var sha string
		return sha, r.Scan(&sha)
	}, `SELECT commit_sha FROM commit_statuses WHERE tenant = $1 AND ($2 = '' OR repo_id = $2) AND commit_sha LIKE $3
		UNION
		SELECT commit_sha FROM plans WHERE tenant = $1 AND ($2 = '' OR repo_id = $2) AND commit_sha LIKE $3
		ORDER BY 1 LIMIT $4`, tenant, repoID, prefix+"%", limit)
	if err != nil {
		return nil, fmt.Errorf("commits with prefix %s: %w", prefix, err)
	}
	return out, nil
}

// UnpostedCommitStatuses implements store.Statuses.
func (s *Store) UnpostedCommitStatuses(ctx context.Context, limit int) ([]store.CommitStatus, error) {
	if limit <= 0 {
		limit = 100
	}
	out, err := readAll(ctx, s, scanStatus, `SELECT `+statusCols+` FROM commit_statuses
		WHERE posted = FALSE ORDER BY updated_at, repo_id, commit_sha, context LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("unposted statuses: %w", err)
	}
	return out, nil
}

// PutPreview implements store.Statuses.
func (s *Store) PutPreview(ctx context.Context, tenant string, p store.Preview) error {
	if p.Commit == "" || p.PR <= 0 {
		return fmt.Errorf("put preview: %w", errInvalid("commit and a positive PR number are required"))
	}
	pj := store.CompactJSON(p.PlanJSON)
	if len(pj) > 0 && !json.Valid(pj) {
		return fmt.Errorf("put preview: %w", errInvalid("plan JSON is not JSON"))
	}
	invs := ""
	if p.Inventories != nil {
		b, err := json.Marshal(p.Inventories)
		if err != nil {
			return fmt.Errorf("put preview: inventories: %w", err)
		}
		invs = string(b)
	}
	err := s.write(ctx, func(t *wtx) error {
		if _, err := s.getRepo(ctx, t, tenant, p.RepoID); err != nil {
			return fmt.Errorf("repository %s: %w", p.RepoID, err)
		}
		at := p.CreatedAt
		if at.IsZero() {
			at = t.now
		}
		// A new preview takes the pull request's state: one computed after
		// the close stays closed.
		_, err := t.Exec(ctx, `INSERT INTO previews (repo_id, tenant, pr, commit_sha, summary, plan_text, plan_json, created_at,
				state, base_commit, inventories)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
				COALESCE((SELECT state FROM previews WHERE repo_id = $1 AND pr = $3 LIMIT 1), 'open'), $9, $10)
			ON CONFLICT (repo_id, pr, commit_sha) DO UPDATE SET summary = excluded.summary, plan_text = excluded.plan_text,
				plan_json = excluded.plan_json, created_at = excluded.created_at,
				base_commit = excluded.base_commit, inventories = excluded.inventories`,
			p.RepoID, tenant, p.PR, p.Commit, p.Summary, p.PlanText, string(pj), us(store.Micro(at)), p.Base, invs)
		return err
	})
	if err != nil {
		return fmt.Errorf("put preview of PR %d at %s: %w", p.PR, p.Commit, err)
	}
	return nil
}

const previewCols = `tenant, repo_id, pr, commit_sha, summary, plan_text, plan_json, created_at, state, base_commit, inventories`

func scanPreview(r Row) (store.Preview, error) {
	var p store.Preview
	var pj, state, invs string
	var at int64
	err := r.Scan(&p.Tenant, &p.RepoID, &p.PR, &p.Commit, &p.Summary, &p.PlanText, &pj, &at, &state, &p.Base, &invs)
	p.PlanJSON, p.CreatedAt, p.State = raw(pj), tm(at), store.PreviewState(state)
	if err == nil && invs != "" {
		if jerr := json.Unmarshal([]byte(invs), &p.Inventories); jerr != nil {
			err = fmt.Errorf("preview of PR %d: inventories: %w", p.PR, jerr)
		}
	}
	return p, err
}

// OpenPreviews implements store.Statuses.
func (s *Store) OpenPreviews(ctx context.Context, tenant, repoID string) ([]store.Preview, error) {
	// Every preview of a pull request has its state, so the newest of an
	// open one is among the open rows; ties on created_at go as in
	// GetPreview (lowest commit first).
	rows, err := readAll(ctx, s, scanPreview, `SELECT tenant, repo_id, pr, commit_sha, summary, '', '', created_at, state, base_commit, inventories
		FROM previews p WHERE tenant = $1 AND repo_id = $2 AND state = 'open'
			AND created_at = (SELECT MAX(created_at) FROM previews q WHERE q.repo_id = p.repo_id AND q.pr = p.pr)
		ORDER BY pr, commit_sha`, tenant, repoID)
	if err != nil {
		return nil, fmt.Errorf("open previews: %w", err)
	}
	out := rows[:0]
	for i, p := range rows {
		if i == 0 || rows[i-1].PR != p.PR {
			out = append(out, p)
		}
	}
	return out, nil
}

// SetPreviewState implements store.Statuses.
func (s *Store) SetPreviewState(ctx context.Context, tenant, repoID string, pr int, state store.PreviewState) error {
	if !state.Valid() {
		return fmt.Errorf("set preview state: %w", errInvalid("state %q is not open, closed or merged", state))
	}
	err := s.write(ctx, func(t *wtx) error {
		n, err := t.Exec(ctx, `UPDATE previews SET state = $1 WHERE tenant = $2 AND repo_id = $3 AND pr = $4`, string(state), tenant, repoID, pr)
		if err != nil {
			return err
		}
		if n == 0 {
			return store.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set state of PR %d previews to %s: %w", pr, state, err)
	}
	return nil
}

// GetPreview implements store.Statuses.
func (s *Store) GetPreview(ctx context.Context, tenant, repoID string, pr int) (store.Preview, error) {
	var p store.Preview
	err := s.read1(ctx, func(c Conn) (err error) {
		p, err = scanPreview(c.QueryRow(ctx, `SELECT `+previewCols+` FROM previews
			WHERE tenant = $1 AND repo_id = $2 AND pr = $3 ORDER BY created_at DESC, commit_sha LIMIT 1`, tenant, repoID, pr))
		return s.notFound(err)
	})
	if err != nil {
		return store.Preview{}, fmt.Errorf("preview of PR %d: %w", pr, err)
	}
	return p, nil
}

// ListPreviews implements store.Statuses.
func (s *Store) ListPreviews(ctx context.Context, tenant, repoID string) ([]store.Preview, error) {
	out, err := readAll(ctx, s, scanPreview, `SELECT `+previewCols+` FROM previews WHERE tenant = $1 AND repo_id = $2
		ORDER BY created_at DESC, pr, commit_sha`, tenant, repoID)
	if err != nil {
		return nil, fmt.Errorf("list previews: %w", err)
	}
	return out, nil
}
