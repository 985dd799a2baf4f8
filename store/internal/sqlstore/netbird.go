package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"github.com/nkudo/nkudo/store"
)

const nbCols = `tenant, url, credential, created_at, updated_at`

func scanNetBird(r Row) (store.NetBirdIntegration, error) {
	var n store.NetBirdIntegration
	var created, updated int64
	err := r.Scan(&n.Tenant, &n.URL, &n.Credential, &created, &updated)
	n.CreatedAt, n.UpdatedAt = tm(created), tm(updated)
	return n, err
}

func (s *Store) getNetBird(ctx context.Context, c Conn, tenant string) (store.NetBirdIntegration, error) {
	n, err := scanNetBird(c.QueryRow(ctx, `SELECT `+nbCols+` FROM netbird_integrations WHERE tenant = $1`, tenant))
	return n, s.notFound(err)
}

// PutNetBirdIntegration implements store.NetBird.
func (s *Store) PutNetBirdIntegration(ctx context.Context, actor store.Actor, n store.NetBirdIntegration) (store.NetBirdIntegration, error) {
	fail := func(err error) (store.NetBirdIntegration, error) {
		return store.NetBirdIntegration{}, fmt.Errorf("put netbird integration of %s: %w", n.Tenant, err)
	}
	u, err := url.Parse(n.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fail(errInvalid("url %q: want the management server's http(s) URL, without credentials or query", n.URL))
	}
	if !store.ValidCredentialName(n.Credential) {
		return fail(errInvalid("credential %q: not a credential name", n.Credential))
	}
	var out store.NetBirdIntegration
	err = s.write(ctx, func(t *wtx) error {
		if err := s.tenantExists(ctx, t, n.Tenant); err != nil {
			return err
		}
		if _, err := s.getCred(ctx, t, n.Tenant, n.Credential); err != nil {
			return fmt.Errorf("credential %q: %w", n.Credential, err)
		}
		action := "netbird.update"
		if _, err := s.getNetBird(ctx, t, n.Tenant); errors.Is(err, store.ErrNotFound) {
			action = "netbird.create"
		} else if err != nil {
			return err
		}
		_, err := t.Exec(ctx, `INSERT INTO netbird_integrations (tenant, url, credential, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $4)
			ON CONFLICT (tenant) DO UPDATE SET url = excluded.url, credential = excluded.credential, updated_at = excluded.updated_at`,
			n.Tenant, n.URL, n.Credential, us(t.now))
		if err != nil {
			return err
		}
		if out, err = s.getNetBird(ctx, t, n.Tenant); err != nil {
			return err
		}
		t.audit(n.Tenant, actor, action, "netbird", map[string]any{"url": out.URL, "credential": out.Credential})
		return nil
	})
	if err != nil {
		return fail(err)
	}
	return out, nil
}

// GetNetBirdIntegration implements store.NetBird.
func (s *Store) GetNetBirdIntegration(ctx context.Context, tenant string) (store.NetBirdIntegration, error) {
	var n store.NetBirdIntegration
	err := s.read1(ctx, func(c Conn) (err error) {
		n, err = s.getNetBird(ctx, c, tenant)
		return err
	})
	if err != nil {
		return store.NetBirdIntegration{}, fmt.Errorf("get netbird integration of %s: %w", tenant, err)
	}
	return n, nil
}

// DeleteNetBirdIntegration implements store.NetBird.
func (s *Store) DeleteNetBirdIntegration(ctx context.Context, actor store.Actor, tenant string) error {
	err := s.write(ctx, func(t *wtx) error {
		n, err := t.Exec(ctx, `DELETE FROM netbird_integrations WHERE tenant = $1`, tenant)
		if err != nil {
			return err
		}
		if n == 0 {
			return store.ErrNotFound
		}
		t.audit(tenant, actor, "netbird.delete", "netbird", nil)
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete netbird integration of %s: %w", tenant, err)
	}
	return nil
}
