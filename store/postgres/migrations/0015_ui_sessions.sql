-- Dashboard browser sessions, shared by every control-plane replica. A
-- session is found by the SHA-256 of its cookie value (id_hash); the value
-- itself is never stored. token_hash is the hash of the API token the
-- session was opened with, which the control plane re-checks on every
-- request. Sessions go with their tenant.
CREATE TABLE ui_sessions (
	id_hash    TEXT PRIMARY KEY,
	token_hash TEXT NOT NULL,
	tenant     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
	created_at BIGINT NOT NULL,
	seen_at    BIGINT NOT NULL
);
CREATE INDEX ui_sessions_token ON ui_sessions (token_hash, seen_at);
CREATE INDEX ui_sessions_seen ON ui_sessions (seen_at);

-- Single-use dashboard sign-in codes: a link that signs a browser in
-- without carrying the API token. Kept by hash; consumed on first use.
CREATE TABLE ui_signin_codes (
	code_hash  TEXT PRIMARY KEY,
	token_hash TEXT NOT NULL,
	tenant     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
	expires_at BIGINT NOT NULL
);
