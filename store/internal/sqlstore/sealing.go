package sqlstore

import (
	"context"
	"fmt"

	"github.com/nkudo/nkudo/store"
	"github.com/nkudo/nkudo/store/seal"
)

// The additional data of each kind of sealed secret names its row, so a
// sealed value copied to another row (another repository, site, name or
// tenant) does not open.
func webhookAD(tenant, repoID string) []string { return []string{"webhook", tenant, repoID} }
func netbirdAD(tenant, site string) []string   { return []string{"netbird", tenant, site} }
func credentialAD(tenant, name string) []string {
	return []string{"credential", tenant, name}
}

// openLegacy opens a sealed value; a value without the sealed prefix is
// plain text written before sealing existed (SealPlaintext converts those
// at open, but a replica of an older release may still write one).
func (s *Store) openLegacy(stored string, ad ...string) (store.Secret, error) {
	if stored == "" || !seal.IsSealed(stored) {
		return store.Secret(stored), nil
	}
	v, err := s.key.Open(stored, ad...)
	if err != nil {
		return "", err
	}
	return store.Secret(v), nil
}

// SealPlaintext seals the webhook secrets and NetBird setup keys stored in
// plain text (by releases before migration 0004), in one transaction, and
// returns how many it sealed. Backends call it after migrating.
func (s *Store) SealPlaintext(ctx context.Context) (int, error) {
	n := 0
	err := s.write(ctx, func(t *wtx) error {
		n = 0
		type row struct{ a, b, v string }
		collect := func(q string) ([]row, error) {
			rows, err := t.Query(ctx, q)
			if err != nil {
				return nil, err
			}
			defer rows.Close()
			var out []row
			for rows.Next() {
				var r row
				if err := rows.Scan(&r.a, &r.b, &r.v); err != nil {
					return nil, err
				}
				if !seal.IsSealed(r.v) {
					out = append(out, r)
				}
			}
			return out, rows.Err()
		}
		repos, err := collect(`SELECT tenant, id, webhook_secret FROM repositories WHERE webhook_secret <> ''`)
		if err != nil {
			return fmt.Errorf("read webhook secrets: %w", err)
		}
		sites, err := collect(`SELECT tenant, name, netbird_setup_key FROM sites WHERE netbird_setup_key <> ''`)
		if err != nil {
			return fmt.Errorf("read setup keys: %w", err)
		}
		if n := len(repos) + len(sites); n > 0 && s.ephemeralKey {
			// Sealing with a key nobody keeps would lose them.
			return fmt.Errorf("%d secrets are stored in plain text and need sealing: open the store with a secret key", n)
		}
		for _, r := range repos {
			v, err := s.key.Seal(r.v, webhookAD(r.a, r.b)...)
			if err != nil {
				return err
			}
			if _, err := t.Exec(ctx, `UPDATE repositories SET webhook_secret = $1 WHERE id = $2`, v, r.b); err != nil {
				return err
			}
		}
		for _, r := range sites {
			v, err := s.key.Seal(r.v, netbirdAD(r.a, r.b)...)
			if err != nil {
				return err
			}
			if _, err := t.Exec(ctx, `UPDATE sites SET netbird_setup_key = $1 WHERE tenant = $2 AND name = $3`, v, r.a, r.b); err != nil {
				return err
			}
		}
		n = len(repos) + len(sites)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("seal plain-text secrets: %w", err)
	}
	if n > 0 {
		s.log.Info("sealed plain-text secrets with the server key", "component", "store", "count", n, "key", s.key.ID())
	}
	return n, nil
}
