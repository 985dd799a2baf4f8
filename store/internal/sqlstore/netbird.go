package sqlstore

import (
	"context"
	"encoding/json"
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

func netbirdPeerAD(tenant, site string) []string { return []string{"netbird-peer", tenant, site} }

const nbPeerCols = `tenant, site, key_id, setup_key, key_groups, peer_id, groups, last_change, last_error, updated_at`

func (s *Store) scanNetBirdPeer(r Row) (store.NetBirdPeer, error) {
	var p store.NetBirdPeer
	var sealed, keyGroups, groups string
	var updated int64
	if err := r.Scan(&p.Tenant, &p.Site, &p.KeyID, &sealed, &keyGroups, &p.PeerID, &groups, &p.LastChange, &p.LastError, &updated); err != nil {
		return p, err
	}
	p.UpdatedAt = tm(updated)
	if err := json.Unmarshal([]byte(keyGroups), &p.KeyGroups); err != nil {
		return p, fmt.Errorf("key_groups: %w", err)
	}
	if err := json.Unmarshal([]byte(groups), &p.Groups); err != nil {
		return p, fmt.Errorf("groups: %w", err)
	}
	if sealed != "" {
		v, err := s.key.Open(sealed, netbirdPeerAD(p.Tenant, p.Site)...)
		if err != nil {
			return p, fmt.Errorf("setup key of %s/%s: %w", p.Tenant, p.Site, err)
		}
		p.SetupKey = store.Secret(v)
	}
	return p, nil
}

// PutNetBirdPeer implements store.NetBird.
func (s *Store) PutNetBirdPeer(ctx context.Context, p store.NetBirdPeer) error {
	sealed := ""
	if p.SetupKey != "" {
		var err error
		if sealed, err = s.key.Seal(p.SetupKey.Reveal(), netbirdPeerAD(p.Tenant, p.Site)...); err != nil {
			return fmt.Errorf("put netbird peer %s/%s: %w", p.Tenant, p.Site, err)
		}
	}
	list := func(v []string) string {
		if v == nil {
			v = []string{}
		}
		b, _ := json.Marshal(v)
		return string(b)
	}
	err := s.write(ctx, func(t *wtx) error {
		if err := s.tenantExists(ctx, t, p.Tenant); err != nil {
			return err
		}
		_, err := t.Exec(ctx, `INSERT INTO netbird_peers (`+nbPeerCols+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
			ON CONFLICT (tenant, site) DO UPDATE SET key_id = excluded.key_id, setup_key = excluded.setup_key,
				key_groups = excluded.key_groups, peer_id = excluded.peer_id, groups = excluded.groups,
				last_change = excluded.last_change, last_error = excluded.last_error, updated_at = excluded.updated_at`,
			p.Tenant, p.Site, p.KeyID, sealed, list(p.KeyGroups), p.PeerID, list(p.Groups), p.LastChange, p.LastError, us(t.now))
		return err
	})
	if err != nil {
		return fmt.Errorf("put netbird peer %s/%s: %w", p.Tenant, p.Site, err)
	}
	return nil
}

// GetNetBirdPeer implements store.NetBird.
func (s *Store) GetNetBirdPeer(ctx context.Context, tenant, site string) (store.NetBirdPeer, error) {
	var p store.NetBirdPeer
	err := s.read1(ctx, func(c Conn) (err error) {
		p, err = s.scanNetBirdPeer(c.QueryRow(ctx, `SELECT `+nbPeerCols+` FROM netbird_peers WHERE tenant = $1 AND site = $2`, tenant, site))
		return s.notFound(err)
	})
	if err != nil {
		return store.NetBirdPeer{}, fmt.Errorf("get netbird peer %s/%s: %w", tenant, site, err)
	}
	return p, nil
}

// ListNetBirdPeers implements store.NetBird.
func (s *Store) ListNetBirdPeers(ctx context.Context, tenant string) ([]store.NetBirdPeer, error) {
	out, err := readAll(ctx, s, s.scanNetBirdPeer, `SELECT `+nbPeerCols+` FROM netbird_peers WHERE tenant = $1 ORDER BY site`, tenant)
	if err != nil {
		return nil, fmt.Errorf("list netbird peers of %s: %w", tenant, err)
	}
	return out, nil
}

// DeleteNetBirdPeer implements store.NetBird.
func (s *Store) DeleteNetBirdPeer(ctx context.Context, tenant, site string) error {
	err := s.write(ctx, func(t *wtx) error {
		n, err := t.Exec(ctx, `DELETE FROM netbird_peers WHERE tenant = $1 AND site = $2`, tenant, site)
		if err == nil && n == 0 {
			err = store.ErrNotFound
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("delete netbird peer %s/%s: %w", tenant, site, err)
	}
	return nil
}
