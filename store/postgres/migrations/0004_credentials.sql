-- Tenant-owned credentials. secret is sealed with the server key
-- (AES-256-GCM, the tenant and name as additional data); the key is never
-- in the database. Webhook secrets and NetBird setup keys existing before
-- this migration are sealed in place when the store first opens with a key
-- (SQL cannot, having no key): see store/internal/sqlstore/sealing.go.
CREATE TABLE credentials (
	tenant      TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
	name        TEXT NOT NULL,
	kind        TEXT NOT NULL,
	host        TEXT NOT NULL,
	fingerprint TEXT NOT NULL,
	known_hosts TEXT NOT NULL DEFAULT '',
	secret      TEXT NOT NULL,
	created_at  BIGINT NOT NULL,
	updated_at  BIGINT NOT NULL,
	PRIMARY KEY (tenant, name)
);
