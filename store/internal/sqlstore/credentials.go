package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nkudo/nkudo/store"
)

const credCols = `tenant, name, kind, host, fingerprint, known_hosts, created_at, updated_at`

func scanCred(r Row) (store.Credential, error) {
	var c store.Credential
	var kind string
	var created, updated int64
	err := r.Scan(&c.Tenant, &c.Name, &kind, &c.Host, &c.Fingerprint, &c.KnownHosts, &created, &updated)
	c.Kind = store.CredentialKind(kind)
	c.CreatedAt, c.UpdatedAt = tm(created), tm(updated)
	return c, err
}

// credAudit is the audit detail of a credential: never the secret.
func credAudit(c store.Credential) map[string]any {
	return map[string]any{"name": c.Name, "kind": c.Kind, "host": c.Host, "fingerprint": c.Fingerprint}
}

// PutCredential implements store.Credentials.
func (s *Store) PutCredential(ctx context.Context, actor store.Actor, c store.Credential, secret store.Secret) (store.Credential, error) {
	if !store.ValidCredentialName(c.Name) {
		return store.Credential{}, fmt.Errorf("put credential: %w", errInvalid("name %q: want 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit", c.Name))
	}
	fail := func(err error) (store.Credential, error) {
		return store.Credential{}, fmt.Errorf("put credential %s/%s: %w", c.Tenant, c.Name, err)
	}
	if !c.Kind.Valid() {
		return fail(errInvalid("kind %q: want token, basic or ssh-key", c.Kind))
	}
	host, err := store.NormalizeCredentialHost(c.Host)
	if err != nil {
		return fail(err)
	}
	c.Host = host
	if strings.TrimSpace(secret.Reveal()) == "" {
		return fail(errInvalid("secret is required"))
	}
	if c.Kind == store.CredentialBasic && !strings.Contains(secret.Reveal(), ":") {
		return fail(errInvalid("secret: a basic credential is \"user:password\""))
	}
	if c.Kind != store.CredentialSSHKey && c.KnownHosts != "" {
		return fail(errInvalid("knownHosts: only an ssh-key credential has known_hosts"))
	}
	c.Fingerprint = store.CredentialFingerprint(secret)
	sealed, err := s.key.Seal(secret.Reveal(), credentialAD(c.Tenant, c.Name)...)
	if err != nil {
		return fail(err)
	}
	var out store.Credential
	err = s.write(ctx, func(t *wtx) error {
		if err := s.tenantExists(ctx, t, c.Tenant); err != nil {
			return err
		}
		action := "credential.update"
		if _, err := s.getCred(ctx, t, c.Tenant, c.Name); errors.Is(err, store.ErrNotFound) {
			action = "credential.create"
		} else if err != nil {
			return err
		}
		now := us(t.now)
		_, err := t.Exec(ctx, `INSERT INTO credentials (tenant, name, kind, host, fingerprint, known_hosts, secret, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
			ON CONFLICT (tenant, name) DO UPDATE SET kind = excluded.kind, host = excluded.host, fingerprint = excluded.fingerprint,
				known_hosts = excluded.known_hosts, secret = excluded.secret, updated_at = excluded.updated_at`,
			c.Tenant, c.Name, string(c.Kind), c.Host, c.Fingerprint, c.KnownHosts, sealed, now)
		if err != nil {
			return err
		}
		out, err = s.getCred(ctx, t, c.Tenant, c.Name)
		if err != nil {
			return err
		}
		t.audit(c.Tenant, actor, action, "credential/"+c.Name, credAudit(out))
		return nil
	})
	if err != nil {
		return fail(err)
	}
	return out, nil
}

func (s *Store) getCred(ctx context.Context, c Conn, tenant, name string) (store.Credential, error) {
	cr, err := scanCred(c.QueryRow(ctx, `SELECT `+credCols+` FROM credentials WHERE tenant = $1 AND name = $2`, tenant, name))
	return cr, s.notFound(err)
}

// GetCredential implements store.Credentials.
func (s *Store) GetCredential(ctx context.Context, tenant, name string) (store.Credential, error) {
	var cr store.Credential
	err := s.read1(ctx, func(c Conn) (err error) {
		cr, err = s.getCred(ctx, c, tenant, name)
		return err
	})
	if err != nil {
		return store.Credential{}, fmt.Errorf("get credential %s/%s: %w", tenant, name, err)
	}
	return cr, nil
}

// ListCredentials implements store.Credentials.
func (s *Store) ListCredentials(ctx context.Context, tenant string) ([]store.Credential, error) {
	out, err := readAll(ctx, s, scanCred, `SELECT `+credCols+` FROM credentials WHERE tenant = $1 ORDER BY name`, tenant)
	if err != nil {
		return nil, fmt.Errorf("list credentials of %s: %w", tenant, err)
	}
	return out, nil
}

// DeleteCredential implements store.Credentials.
func (s *Store) DeleteCredential(ctx context.Context, actor store.Actor, tenant, name string) error {
	err := s.write(ctx, func(t *wtx) error {
		n, err := t.Exec(ctx, `DELETE FROM credentials WHERE tenant = $1 AND name = $2`, tenant, name)
		if err != nil {
			return err
		}
		if n == 0 {
			return store.ErrNotFound
		}
		t.audit(tenant, actor, "credential.delete", "credential/"+name, nil)
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete credential %s/%s: %w", tenant, name, err)
	}
	return nil
}

// CredentialSecret implements store.Credentials.
func (s *Store) CredentialSecret(ctx context.Context, tenant, name string) (store.Credential, store.Secret, error) {
	var cr store.Credential
	var sealed string
	err := s.read(ctx, func(c Conn) (err error) {
		if cr, err = s.getCred(ctx, c, tenant, name); err != nil {
			return err
		}
		return c.QueryRow(ctx, `SELECT secret FROM credentials WHERE tenant = $1 AND name = $2`, tenant, name).Scan(&sealed)
	})
	if err != nil {
		return store.Credential{}, "", fmt.Errorf("credential %s/%s: %w", tenant, name, err)
	}
	v, err := s.key.Open(sealed, credentialAD(tenant, name)...)
	if err != nil {
		return store.Credential{}, "", fmt.Errorf("credential %s/%s: %w", tenant, name, err)
	}
	return cr, store.Secret(v), nil
}
