package sqlstore

import (
	"context"
	"fmt"

	"github.com/nkudo/nkudo/store"
)

// CreateTenant implements store.Tenants.
func (s *Store) CreateTenant(ctx context.Context, actor store.Actor, tn store.Tenant) (store.Tenant, error) {
	if !store.ValidName(tn.ID) {
		return store.Tenant{}, fmt.Errorf("create tenant %q: %w", tn.ID, errInvalid("id must be a DNS label"))
	}
	err := s.write(ctx, func(t *wtx) error {
		tn.CreatedAt = t.now
		if _, err := t.Exec(ctx, `INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)`,
			tn.ID, tn.Name, us(tn.CreatedAt)); err != nil {
			return s.conflict(err)
		}
		t.audit(tn.ID, actor, "tenant.create", "tenant/"+tn.ID, map[string]string{"name": tn.Name})
		return nil
	})
	if err != nil {
		return store.Tenant{}, fmt.Errorf("create tenant %s: %w", tn.ID, err)
	}
	return tn, nil
}

const tenantCols = `id, name, created_at`

func scanTenant(r Row) (store.Tenant, error) {
	var tn store.Tenant
	var at int64
	err := r.Scan(&tn.ID, &tn.Name, &at)
	tn.CreatedAt = tm(at)
	return tn, err
}

// GetTenant implements store.Tenants.
func (s *Store) GetTenant(ctx context.Context, id string) (store.Tenant, error) {
	var tn store.Tenant
	err := s.read1(ctx, func(c Conn) error {
		var err error
		tn, err = scanTenant(c.QueryRow(ctx, `SELECT `+tenantCols+` FROM tenants WHERE id = $1`, id))
		return s.notFound(err)
	})
	if err != nil {
		return store.Tenant{}, fmt.Errorf("get tenant %s: %w", id, err)
	}
	return tn, nil
}

// ListTenants implements store.Tenants.
func (s *Store) ListTenants(ctx context.Context) ([]store.Tenant, error) {
	out, err := readAll(ctx, s, scanTenant, `SELECT `+tenantCols+` FROM tenants ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	return out, nil
}

// DeleteTenant implements store.Tenants. Foreign keys cascade the purge;
// the tenant's certificates are revoked.
func (s *Store) DeleteTenant(ctx context.Context, actor store.Actor, id string) error {
	err := s.write(ctx, func(t *wtx) error {
		// Certificates outlive nothing of the tenant: revoke them all (the
		// CRL keeps listing them) before the sites cascade away. The sites
		// are locked first, as IssueSiteCertificate locks its site, so no
		// renewal records a certificate between the two.
		if _, err := t.Exec(ctx, `SELECT name FROM sites WHERE tenant = $1`+s.d.ForUpdate, id); err != nil {
			return err
		}
		if _, err := t.Exec(ctx, `INSERT INTO revoked_serials (serial, tenant, site, revoked_at)
			SELECT serial, tenant, site, $2 FROM site_certificates WHERE tenant = $1
			ON CONFLICT (serial) DO NOTHING`, id, us(t.now)); err != nil {
			return err
		}
		if _, err := t.Exec(ctx, `DELETE FROM site_certificates WHERE tenant = $1`, id); err != nil {
			return err
		}
		n, err := t.Exec(ctx, `DELETE FROM tenants WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if n == 0 {
			return store.ErrNotFound
		}
		t.audit(id, actor, "tenant.delete", "tenant/"+id, nil)
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete tenant %s: %w", id, err)
	}
	return nil
}

// tenantExists returns ErrNotFound (wrapped) when the tenant is absent.
func (s *Store) tenantExists(ctx context.Context, c Conn, tenant string) error {
	var one int
	if err := c.QueryRow(ctx, `SELECT 1 FROM tenants WHERE id = $1`, tenant).Scan(&one); err != nil {
		return fmt.Errorf("tenant %s: %w", tenant, s.notFound(err))
	}
	return nil
}

// lockSite returns ErrNotFound (wrapped) when the site is absent, and
// locks its row where the dialect has row locks: writes about one site
// (heartbeats, plans) serialise on it.
func (s *Store) lockSite(ctx context.Context, c Conn, tenant, site string) error {
	var one int
	if err := c.QueryRow(ctx, `SELECT 1 FROM sites WHERE tenant = $1 AND name = $2`+s.d.ForUpdate, tenant, site).Scan(&one); err != nil {
		return fmt.Errorf("site %s/%s: %w", tenant, site, s.notFound(err))
	}
	return nil
}
