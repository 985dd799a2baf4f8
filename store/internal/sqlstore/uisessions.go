package sqlstore

import (
	"context"
	"fmt"
	"time"

	"github.com/nkudo/nkudo/store"
)

const uiSessionCols = `id_hash, token_hash, tenant, created_at, seen_at`

func scanUISession(r Row) (store.UISession, error) {
	var u store.UISession
	var created, seen int64
	err := r.Scan(&u.IDHash, &u.TokenHash, &u.Tenant, &created, &seen)
	u.CreatedAt, u.SeenAt = tm(created), tm(seen)
	return u, err
}

// CreateUISession implements store.UISessions.
func (s *Store) CreateUISession(ctx context.Context, u store.UISession, l store.UISessionLimits, now time.Time) error {
	switch {
	case u.IDHash == "":
		return fmt.Errorf("create dashboard session: %w", errInvalid("idHash is empty"))
	case u.TokenHash == "":
		return fmt.Errorf("create dashboard session: %w", errInvalid("tokenHash is empty"))
	case u.Tenant == "":
		return fmt.Errorf("create dashboard session: %w", errInvalid("tenant is empty"))
	}
	err := s.write(ctx, func(t *wtx) error {
		if err := s.tenantExists(ctx, t, u.Tenant); err != nil {
			return err
		}
		if l.Idle > 0 {
			if _, err := t.Exec(ctx, `DELETE FROM ui_sessions WHERE seen_at < $1`, us(now.Add(-l.Idle))); err != nil {
				return err
			}
		}
		if l.Lifetime > 0 {
			if _, err := t.Exec(ctx, `DELETE FROM ui_sessions WHERE created_at < $1`, us(now.Add(-l.Lifetime))); err != nil {
				return err
			}
		}
		// Make room: the token's least recently used sessions beyond its
		// bound, then the least recently used of all beyond the total.
		if l.PerToken > 0 {
			if err := s.trimUISessions(ctx, t, `WHERE token_hash = $1`, []any{u.TokenHash}, l.PerToken-1); err != nil {
				return err
			}
		}
		if l.Max > 0 {
			if err := s.trimUISessions(ctx, t, ``, nil, l.Max-1); err != nil {
				return err
			}
		}
		_, err := t.Exec(ctx, `INSERT INTO ui_sessions (`+uiSessionCols+`) VALUES ($1, $2, $3, $4, $5)`,
			u.IDHash, u.TokenHash, u.Tenant, us(store.Micro(now)), us(store.Micro(now)))
		return s.conflict(err)
	})
	if err != nil {
		return fmt.Errorf("create dashboard session for tenant %s: %w", u.Tenant, err)
	}
	return nil
}

// trimUISessions deletes the least recently used sessions matching where
// (with args) until at most keep remain.
func (s *Store) trimUISessions(ctx context.Context, t *wtx, where string, args []any, keep int) error {
	var n int
	if err := t.QueryRow(ctx, `SELECT COUNT(*) FROM ui_sessions `+where, args...).Scan(&n); err != nil {
		return err
	}
	if n <= keep {
		return nil
	}
	lim := fmt.Sprintf("$%d", len(args)+1)
	_, err := t.Exec(ctx, `DELETE FROM ui_sessions WHERE id_hash IN (SELECT id_hash FROM ui_sessions `+where+`
		ORDER BY seen_at, id_hash LIMIT `+lim+`)`, append(args, n-keep)...)
	return err
}

// GetUISession implements store.UISessions.
func (s *Store) GetUISession(ctx context.Context, idHash string, l store.UISessionLimits, now time.Time, touch bool) (store.UISession, error) {
	var u store.UISession
	err := s.read1(ctx, func(c Conn) (err error) {
		u, err = scanUISession(c.QueryRow(ctx, `SELECT `+uiSessionCols+` FROM ui_sessions WHERE id_hash = $1`, idHash))
		return s.notFound(err)
	})
	if err != nil {
		return store.UISession{}, fmt.Errorf("get dashboard session: %w", err)
	}
	if l.Idle > 0 && now.Sub(u.SeenAt) > l.Idle || l.Lifetime > 0 && now.Sub(u.CreatedAt) > l.Lifetime {
		if err := s.DeleteUISession(ctx, idHash); err != nil {
			return store.UISession{}, err
		}
		return store.UISession{}, fmt.Errorf("get dashboard session: ended by its idle timeout or lifetime: %w", store.ErrNotFound)
	}
	if touch && now.Sub(u.SeenAt) > store.UISessionTouch {
		u.SeenAt = store.Micro(now)
		err := s.write(ctx, func(t *wtx) error {
			_, err := t.Exec(ctx, `UPDATE ui_sessions SET seen_at = $1 WHERE id_hash = $2 AND seen_at < $1`, us(u.SeenAt), idHash)
			return err
		})
		if err != nil {
			return store.UISession{}, fmt.Errorf("touch dashboard session: %w", err)
		}
	}
	return u, nil
}

// DeleteUISession implements store.UISessions.
func (s *Store) DeleteUISession(ctx context.Context, idHash string) error {
	err := s.write(ctx, func(t *wtx) error {
		_, err := t.Exec(ctx, `DELETE FROM ui_sessions WHERE id_hash = $1`, idHash)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete dashboard session: %w", err)
	}
	return nil
}
