package sqlstore

import (
	"context"
	"fmt"
	"time"

	"github.com/nkudo/nkudo/store"
)

const apiTokenCols = `id, COALESCE(tenant, ''), admin, name, created_at, expires_at, last_used_at`

func scanAPIToken(r Row) (store.APIToken, error) {
	var k store.APIToken
	var created, expires, used int64
	err := r.Scan(&k.ID, &k.Tenant, &k.Admin, &k.Name, &created, &expires, &used)
	k.CreatedAt, k.ExpiresAt, k.LastUsedAt = tm(created), tm(expires), tm(used)
	return k, err
}

// nullable maps "" to SQL NULL (admin tokens have no tenant row to reference).
func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// CreateAPIToken implements store.Tokens.
func (s *Store) CreateAPIToken(ctx context.Context, actor store.Actor, k store.APIToken, hash string) (store.APIToken, error) {
	if hash == "" || (k.Tenant == "" && !k.Admin) {
		return store.APIToken{}, fmt.Errorf("create api token: %w", errInvalid("a hash and a tenant or admin scope are required"))
	}
	if k.ID == "" {
		id, err := store.NewID()
		if err != nil {
			return store.APIToken{}, err
		}
		k.ID = id
	}
	k.ExpiresAt = store.Micro(k.ExpiresAt)
	k.LastUsedAt = time.Time{}
	err := s.write(ctx, func(t *wtx) error {
		if k.Tenant != "" {
			if err := s.tenantExists(ctx, t, k.Tenant); err != nil {
				return err
			}
		}
		k.CreatedAt = t.now
		if _, err := t.Exec(ctx, `INSERT INTO api_tokens (id, tenant, admin, name, hash, created_at, expires_at, last_used_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, 0)`,
			k.ID, nullable(k.Tenant), k.Admin, k.Name, hash, us(k.CreatedAt), us(k.ExpiresAt)); err != nil {
			return s.conflict(err)
		}
		t.audit(k.Tenant, actor, "apitoken.create", "apitoken/"+k.ID, map[string]any{"name": k.Name, "admin": k.Admin})
		return nil
	})
	if err != nil {
		return store.APIToken{}, fmt.Errorf("create api token %q: %w", k.Name, err)
	}
	return k, nil
}

// APITokenByHash implements store.Tokens.
func (s *Store) APITokenByHash(ctx context.Context, hash string, now time.Time) (store.APIToken, error) {
	var k store.APIToken
	err := s.read1(ctx, func(c Conn) error {
		var stored string
		var created, expires, used int64
		err := c.QueryRow(ctx, `SELECT id, COALESCE(tenant, ''), admin, name, created_at, expires_at, last_used_at, hash
			FROM api_tokens WHERE hash = $1`, hash).Scan(&k.ID, &k.Tenant, &k.Admin, &k.Name, &created, &expires, &used, &stored)
		if err != nil {
			return s.notFound(err)
		}
		k.CreatedAt, k.ExpiresAt, k.LastUsedAt = tm(created), tm(expires), tm(used)
		if !store.EqualHash(stored, hash) {
			return store.ErrNotFound
		}
		if !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt) {
			return store.ErrTokenExpired
		}
		return nil
	})
	if err != nil {
		return store.APIToken{}, fmt.Errorf("look up api token: %w", err)
	}
	return k, nil
}

// TouchAPIToken implements store.Tokens.
func (s *Store) TouchAPIToken(ctx context.Context, id string, now time.Time) error {
	err := s.write(ctx, func(t *wtx) error {
		n, err := t.Exec(ctx, `UPDATE api_tokens SET last_used_at = $1 WHERE id = $2`, us(store.Micro(now)), id)
		if err == nil && n == 0 {
			err = store.ErrNotFound
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("touch api token %s: %w", id, err)
	}
	return nil
}

// ListAPITokens implements store.Tokens.
func (s *Store) ListAPITokens(ctx context.Context, tenant string) ([]store.APIToken, error) {
	q := `SELECT ` + apiTokenCols + ` FROM api_tokens WHERE tenant = $1 ORDER BY created_at, id`
	args := []any{tenant}
	if tenant == "" {
		q = `SELECT ` + apiTokenCols + ` FROM api_tokens WHERE tenant IS NULL ORDER BY created_at, id`
		args = nil
	}
	out, err := readAll(ctx, s, scanAPIToken, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list api tokens of %q: %w", tenant, err)
	}
	return out, nil
}

// DeleteAPIToken implements store.Tokens.
func (s *Store) DeleteAPIToken(ctx context.Context, actor store.Actor, tenant, id string) error {
	q := `DELETE FROM api_tokens WHERE id = $1 AND tenant = $2`
	args := []any{id, tenant}
	if tenant == "" {
		q = `DELETE FROM api_tokens WHERE id = $1 AND tenant IS NULL`
		args = args[:1]
	}
	err := s.write(ctx, func(t *wtx) error {
		n, err := t.Exec(ctx, q, args...)
		if err != nil {
			return err
		}
		if n == 0 {
			return store.ErrNotFound
		}
		t.audit(tenant, actor, "apitoken.delete", "apitoken/"+id, nil)
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete api token %s: %w", id, err)
	}
	return nil
}

const enrollCols = `id, tenant, site, created_at, expires_at, used_at`

func scanEnroll(r Row) (store.EnrollmentToken, error) {
	var e store.EnrollmentToken
	var created, expires, used int64
	err := r.Scan(&e.ID, &e.Tenant, &e.Site, &created, &expires, &used)
	e.CreatedAt, e.ExpiresAt, e.UsedAt = tm(created), tm(expires), tm(used)
	return e, err
}

// CreateEnrollmentToken implements store.Tokens.
func (s *Store) CreateEnrollmentToken(ctx context.Context, actor store.Actor, e store.EnrollmentToken, secretHash string) (store.EnrollmentToken, error) {
	if e.ID == "" || secretHash == "" || e.ExpiresAt.IsZero() {
		return store.EnrollmentToken{}, fmt.Errorf("create enrollment token: %w", errInvalid("id, secret hash and expiry are required"))
	}
	e.ExpiresAt = store.Micro(e.ExpiresAt)
	e.UsedAt = time.Time{}
	err := s.write(ctx, func(t *wtx) error {
		if err := s.lockSite(ctx, t, e.Tenant, e.Site); err != nil {
			return err
		}
		e.CreatedAt = t.now
		if _, err := t.Exec(ctx, `INSERT INTO enrollment_tokens (id, tenant, site, secret_hash, created_at, expires_at, used_at)
			VALUES ($1, $2, $3, $4, $5, $6, 0)`, e.ID, e.Tenant, e.Site, secretHash, us(e.CreatedAt), us(e.ExpiresAt)); err != nil {
			return s.conflict(err)
		}
		t.audit(e.Tenant, actor, "enrollmenttoken.create", "site/"+e.Site, map[string]any{"id": e.ID, "expiresAt": e.ExpiresAt})
		return nil
	})
	if err != nil {
		return store.EnrollmentToken{}, fmt.Errorf("create enrollment token for %s/%s: %w", e.Tenant, e.Site, err)
	}
	return e, nil
}

// RedeemEnrollmentToken implements store.Tokens. The compare-and-set is
// "UPDATE … WHERE used_at = 0": whichever transaction updates the row
// first wins; the other sees no row changed and reports ErrTokenUsed.
func (s *Store) RedeemEnrollmentToken(ctx context.Context, id, secretHash string, now time.Time) (store.EnrollmentToken, error) {
	now = store.Micro(now)
	var e store.EnrollmentToken
	var redeemErr error
	err := s.write(ctx, func(t *wtx) error {
		redeemErr = nil
		var stored string
		var created, expires, used int64
		err := t.QueryRow(ctx, `SELECT id, tenant, site, created_at, expires_at, used_at, secret_hash
			FROM enrollment_tokens WHERE id = $1`, id).Scan(&e.ID, &e.Tenant, &e.Site, &created, &expires, &used, &stored)
		if err != nil {
			return s.notFound(err)
		}
		e.CreatedAt, e.ExpiresAt, e.UsedAt = tm(created), tm(expires), tm(used)
		if !store.EqualHash(stored, secretHash) {
			return store.ErrNotFound
		}
		// Outcomes that change nothing are returned after the (empty)
		// transaction commits, so they are never retried or audited.
		if used != 0 {
			redeemErr = store.ErrTokenUsed
			return nil
		}
		if !now.Before(e.ExpiresAt) {
			redeemErr = store.ErrTokenExpired
			return nil
		}
		n, err := t.Exec(ctx, `UPDATE enrollment_tokens SET used_at = $1,
			site_revocations = (SELECT revocations FROM sites WHERE sites.tenant = enrollment_tokens.tenant AND sites.name = enrollment_tokens.site)
			WHERE id = $2 AND used_at = 0`, us(now), id)
		if err != nil {
			return err
		}
		if n == 0 {
			redeemErr = store.ErrTokenUsed
			return nil
		}
		e.UsedAt = now
		t.audit(e.Tenant, store.Actor{Kind: store.ActorEnroll, ID: id}, "enrollmenttoken.redeem", "site/"+e.Site, nil)
		return nil
	})
	if err == nil {
		err = redeemErr
	}
	if err != nil {
		return store.EnrollmentToken{}, fmt.Errorf("redeem enrollment token %s: %w", id, err)
	}
	return e, nil
}

// CheckEnrollmentToken implements store.Tokens: RedeemEnrollmentToken's
// checks, in the same order, without the redemption.
func (s *Store) CheckEnrollmentToken(ctx context.Context, id, secretHash string, now time.Time) (store.EnrollmentToken, error) {
	now = store.Micro(now)
	var e store.EnrollmentToken
	err := s.read1(ctx, func(c Conn) error {
		var stored string
		var created, expires, used int64
		err := c.QueryRow(ctx, `SELECT id, tenant, site, created_at, expires_at, used_at, secret_hash
			FROM enrollment_tokens WHERE id = $1`, id).Scan(&e.ID, &e.Tenant, &e.Site, &created, &expires, &used, &stored)
		if err != nil {
			return s.notFound(err)
		}
		e.CreatedAt, e.ExpiresAt, e.UsedAt = tm(created), tm(expires), tm(used)
		switch {
		case !store.EqualHash(stored, secretHash):
			return store.ErrNotFound
		case used != 0:
			return store.ErrTokenUsed
		case !now.Before(e.ExpiresAt):
			return store.ErrTokenExpired
		}
		return nil
	})
	if err != nil {
		return store.EnrollmentToken{}, fmt.Errorf("check enrollment token %s: %w", id, err)
	}
	return e, nil
}

// ListEnrollmentTokens implements store.Tokens.
func (s *Store) ListEnrollmentTokens(ctx context.Context, tenant string) ([]store.EnrollmentToken, error) {
	out, err := readAll(ctx, s, scanEnroll, `SELECT `+enrollCols+` FROM enrollment_tokens WHERE tenant = $1 ORDER BY created_at DESC, id`, tenant)
	if err != nil {
		return nil, fmt.Errorf("list enrollment tokens of %s: %w", tenant, err)
	}
	return out, nil
}

// DeleteEnrollmentToken implements store.Tokens.
func (s *Store) DeleteEnrollmentToken(ctx context.Context, actor store.Actor, tenant, id string) error {
	err := s.write(ctx, func(t *wtx) error {
		n, err := t.Exec(ctx, `DELETE FROM enrollment_tokens WHERE tenant = $1 AND id = $2`, tenant, id)
		if err != nil {
			return err
		}
		if n == 0 {
			return store.ErrNotFound
		}
		t.audit(tenant, actor, "enrollmenttoken.delete", "enrollmenttoken/"+id, nil)
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete enrollment token %s: %w", id, err)
	}
	return nil
}
