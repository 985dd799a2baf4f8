package sqlstore

import (
	"context"
	"fmt"

	"github.com/nkudo/nkudo/store"
)

// RequestReconcile implements store.Coordination.
func (s *Store) RequestReconcile(ctx context.Context, tenant, repoID string) error {
	if tenant == "" || repoID == "" {
		return fmt.Errorf("request reconcile: %w", errInvalid("tenant and repository are required"))
	}
	err := s.write(ctx, func(t *wtx) error {
		_, err := t.Exec(ctx, `INSERT INTO reconcile_requests (repo_id, tenant, requested) VALUES ($1, $2, 1)
			ON CONFLICT (repo_id) DO UPDATE SET requested = reconcile_requests.requested + 1`, repoID, tenant)
		return err
	})
	if err != nil {
		return fmt.Errorf("request reconcile of %s: %w", repoID, err)
	}
	return nil
}

// ReconcileRequested implements store.Coordination.
func (s *Store) ReconcileRequested(ctx context.Context, repoID string) (int64, error) {
	var n int64
	err := s.read1(ctx, func(c Conn) error {
		err := c.QueryRow(ctx, `SELECT requested FROM reconcile_requests WHERE repo_id = $1`, repoID).Scan(&n)
		if s.b.IsNoRows(err) {
			return nil
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("reconcile requests of %s: %w", repoID, err)
	}
	return n, nil
}

// ReconcileHandled implements store.Coordination.
func (s *Store) ReconcileHandled(ctx context.Context, repoID string, seq int64) error {
	if seq <= 0 {
		return nil // no request to cover
	}
	err := s.write(ctx, func(t *wtx) error {
		_, err := t.Exec(ctx, `UPDATE reconcile_requests SET handled = $1 WHERE repo_id = $2 AND handled < $1`, seq, repoID)
		return err
	})
	if err != nil {
		return fmt.Errorf("reconcile handled of %s: %w", repoID, err)
	}
	return nil
}

// PendingReconciles implements store.Coordination. On a single-process
// database a lease held by a holder this Store never granted belongs to an
// earlier process (see takeOverStale): its requests are pending too.
func (s *Store) PendingReconciles(ctx context.Context, leasePrefix string) ([]store.ReconcileRequest, error) {
	type row struct {
		req    store.ReconcileRequest
		holder string
	}
	rows, err := readAll(ctx, s, func(r Row) (row, error) {
		var x row
		err := r.Scan(&x.req.Tenant, &x.req.RepoID, &x.req.Requested, &x.req.Handled, &x.holder)
		return x, err
	}, `SELECT r.tenant, r.repo_id, r.requested, r.handled, COALESCE(l.holder, '')
		FROM reconcile_requests r
		JOIN repositories p ON p.id = r.repo_id AND NOT p.suspended
		LEFT JOIN leases l ON l.name = CAST($1 AS TEXT) || r.repo_id AND l.expires_at > `+s.d.NowMicros+`
		WHERE r.requested > r.handled ORDER BY r.repo_id`, leasePrefix)
	if err != nil {
		return nil, fmt.Errorf("pending reconciles: %w", err)
	}
	var out []store.ReconcileRequest
	for _, x := range rows {
		if x.holder != "" {
			if _, mine := s.holders.Load(x.holder); mine || !s.processLeases {
				continue // a live replica is on it
			}
		}
		out = append(out, x.req)
	}
	return out, nil
}
