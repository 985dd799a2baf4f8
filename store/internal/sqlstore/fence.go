package sqlstore

import (
	"context"
	"fmt"

	"github.com/nkudo/nkudo/store"
)

// checkFence is the first statement of a fenced write's transaction (see
// store.WithLease): ErrLeaseLost unless the lease in ctx is still held by
// its holder and unexpired; nothing to check when ctx carries none. On
// Postgres the lease row stays locked until the transaction ends, so the
// AcquireLease of a takeover waits for this write instead of overtaking
// it; SQLite has one writer, so the check and the write are one step anyway.
func (s *Store) checkFence(ctx context.Context, t *wtx) error {
	l, ok := store.LeaseOf(ctx)
	if !ok {
		return nil
	}
	var holder string
	err := t.QueryRow(ctx, `SELECT holder FROM leases WHERE name = $1 AND holder = $2 AND expires_at > `+s.d.NowMicros+s.d.ForUpdate,
		l.Name, l.Holder).Scan(&holder)
	if s.b.IsNoRows(err) {
		return fmt.Errorf("lease %s of %s: %w", l.Name, l.Holder, store.ErrLeaseLost)
	}
	if err != nil {
		return fmt.Errorf("check lease %s: %w", l.Name, err)
	}
	return nil
}
