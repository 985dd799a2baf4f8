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

// CreateUISignInCode implements store.UISessions.
func (s *Store) CreateUISignInCode(ctx context.Context, c store.UISignInCode, l store.UISignInCodeLimits, now time.Time) error {
	switch {
	case c.CodeHash == "":
		return fmt.Errorf("create sign-in code: %w", errInvalid("codeHash is empty"))
	case c.TokenHash == "":
		return fmt.Errorf("create sign-in code: %w", errInvalid("tokenHash is empty"))
	case c.Tenant == "":
		return fmt.Errorf("create sign-in code: %w", errInvalid("tenant is empty"))
	case c.ExpiresAt.IsZero():
		return fmt.Errorf("create sign-in code: %w", errInvalid("expiresAt is zero"))
	}
	err := s.write(ctx, func(t *wtx) error {
		// The tenant's row is locked so that concurrent creations count
		// each other's codes against PerTenant.
		var one int
		if err := t.QueryRow(ctx, `SELECT 1 FROM tenants WHERE id = $1`+s.d.ForUpdate, c.Tenant).Scan(&one); err != nil {
			return fmt.Errorf("tenant %s: %w", c.Tenant, s.notFound(err))
		}
		if _, err := t.Exec(ctx, `DELETE FROM ui_signin_codes WHERE expires_at < $1`, us(now)); err != nil {
			return err
		}
		if l.PerToken > 0 {
			// The token's newest PerToken-1 codes stay valid.
			if _, err := t.Exec(ctx, `DELETE FROM ui_signin_codes WHERE token_hash = $1 AND code_hash NOT IN
				(SELECT code_hash FROM ui_signin_codes WHERE token_hash = $1 ORDER BY expires_at DESC, code_hash LIMIT $2)`,
				c.TokenHash, l.PerToken-1); err != nil {
				return err
			}
		}
		if l.PerTenant > 0 {
			var n int
			if err := t.QueryRow(ctx, `SELECT COUNT(*) FROM ui_signin_codes WHERE tenant = $1`, c.Tenant).Scan(&n); err != nil {
				return err
			}
			if n >= l.PerTenant {
				return fmt.Errorf("%w: tenant %s has %d live sign-in links, the most it may have", store.ErrQuota, c.Tenant, n)
			}
		}
		_, err := t.Exec(ctx, `INSERT INTO ui_signin_codes (code_hash, token_hash, tenant, expires_at) VALUES ($1, $2, $3, $4)`,
			c.CodeHash, c.TokenHash, c.Tenant, us(store.Micro(c.ExpiresAt)))
		return s.conflict(err)
	})
	if err != nil {
		return fmt.Errorf("create sign-in code for tenant %s: %w", c.Tenant, err)
	}
	return nil
}

// RedeemUISignInCode implements store.UISessions. The read and the delete
// are one transaction with the row locked, so of two concurrent redeems
// exactly one gets the code.
func (s *Store) RedeemUISignInCode(ctx context.Context, codeHash string, now time.Time) (store.UISignInCode, error) {
	var c store.UISignInCode
	err := s.write(ctx, func(t *wtx) error {
		var exp int64
		if err := t.QueryRow(ctx, `SELECT code_hash, token_hash, tenant, expires_at FROM ui_signin_codes WHERE code_hash = $1`+s.d.ForUpdate,
			codeHash).Scan(&c.CodeHash, &c.TokenHash, &c.Tenant, &exp); err != nil {
			return s.notFound(err)
		}
		c.ExpiresAt = tm(exp)
		n, err := t.Exec(ctx, `DELETE FROM ui_signin_codes WHERE code_hash = $1`, codeHash)
		if err != nil {
			return err
		}
		if n != 1 {
			return store.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return store.UISignInCode{}, fmt.Errorf("redeem sign-in code: %w", err)
	}
	if now.After(c.ExpiresAt) {
		return store.UISignInCode{}, fmt.Errorf("redeem sign-in code: expired at %s: %w", c.ExpiresAt.Format(time.RFC3339), store.ErrNotFound)
	}
	return c, nil
}
