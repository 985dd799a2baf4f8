-- The initial schema. Times are BIGINT microseconds since the Unix epoch
-- (0 = none), JSON is TEXT (bytes round-trip exactly), and columns avoid
-- NULL except api_tokens.tenant (NULL for admin tokens).

CREATE TABLE tenants (
	id         TEXT PRIMARY KEY,
	name       TEXT NOT NULL DEFAULT '',
	created_at BIGINT NOT NULL
);

CREATE TABLE repositories (
	id                    TEXT PRIMARY KEY,
	tenant                TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
	name                  TEXT NOT NULL,
	url                   TEXT NOT NULL,
	branch                TEXT NOT NULL DEFAULT '',
	path                  TEXT NOT NULL DEFAULT '',
	credentials_ref       TEXT NOT NULL DEFAULT '',
	webhook_secret        TEXT NOT NULL DEFAULT '',
	suspended             BOOLEAN NOT NULL DEFAULT FALSE,
	forge_kind            TEXT NOT NULL DEFAULT '',
	forge_api_url         TEXT NOT NULL DEFAULT '',
	forge_project         TEXT NOT NULL DEFAULT '',
	forge_credentials_ref TEXT NOT NULL DEFAULT '',
	last_seen_commit      TEXT NOT NULL DEFAULT '',
	last_seen_at          BIGINT NOT NULL DEFAULT 0,
	last_applied_commit   TEXT NOT NULL DEFAULT '',
	last_applied_at       BIGINT NOT NULL DEFAULT 0,
	last_error            TEXT NOT NULL DEFAULT '',
	last_error_at         BIGINT NOT NULL DEFAULT 0,
	created_at            BIGINT NOT NULL,
	UNIQUE (tenant, name)
);

CREATE TABLE site_desired (
	repo_id    TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
	site       TEXT NOT NULL,
	hash       TEXT NOT NULL,
	commit_sha TEXT NOT NULL,
	updated_at BIGINT NOT NULL,
	PRIMARY KEY (repo_id, site)
);

CREATE TABLE api_tokens (
	id           TEXT PRIMARY KEY,
	tenant       TEXT REFERENCES tenants (id) ON DELETE CASCADE,
	admin        BOOLEAN NOT NULL,
	name         TEXT NOT NULL DEFAULT '',
	hash         TEXT NOT NULL UNIQUE,
	created_at   BIGINT NOT NULL,
	expires_at   BIGINT NOT NULL DEFAULT 0,
	last_used_at BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX api_tokens_tenant ON api_tokens (tenant);

CREATE TABLE sites (
	tenant             TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
	name               TEXT NOT NULL,
	created_at         BIGINT NOT NULL,
	enrolled_at        BIGINT NOT NULL DEFAULT 0,
	cert_serial        TEXT NOT NULL DEFAULT '',
	facts              TEXT NOT NULL DEFAULT '',
	last_heartbeat     BIGINT NOT NULL DEFAULT 0,
	heartbeat_interval BIGINT NOT NULL DEFAULT 0,
	inventory          TEXT NOT NULL DEFAULT '',
	inventory_hash     TEXT NOT NULL DEFAULT '',
	inventory_version  BIGINT NOT NULL DEFAULT 0,
	netbird_url        TEXT NOT NULL DEFAULT '',
	netbird_setup_key  TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (tenant, name)
);

CREATE TABLE enrollment_tokens (
	id          TEXT PRIMARY KEY,
	tenant      TEXT NOT NULL,
	site        TEXT NOT NULL,
	secret_hash TEXT NOT NULL,
	created_at  BIGINT NOT NULL,
	expires_at  BIGINT NOT NULL,
	used_at     BIGINT NOT NULL DEFAULT 0,
	FOREIGN KEY (tenant, site) REFERENCES sites (tenant, name) ON DELETE CASCADE
);
CREATE INDEX enrollment_tokens_site ON enrollment_tokens (tenant, site);

-- Revocations outlive the site: the CRL must keep listing them.
CREATE TABLE revoked_serials (
	serial     TEXT PRIMARY KEY,
	tenant     TEXT NOT NULL,
	site       TEXT NOT NULL,
	revoked_at BIGINT NOT NULL
);

CREATE TABLE plans (
	id                TEXT PRIMARY KEY,
	tenant            TEXT NOT NULL,
	site              TEXT NOT NULL,
	repo_id           TEXT NOT NULL DEFAULT '',
	commit_sha        TEXT NOT NULL DEFAULT '',
	inventory_version BIGINT NOT NULL DEFAULT 0,
	body              TEXT NOT NULL,
	status            TEXT NOT NULL,
	superseded_by     TEXT NOT NULL DEFAULT '',
	created_at        BIGINT NOT NULL,
	updated_at        BIGINT NOT NULL,
	FOREIGN KEY (tenant, site) REFERENCES sites (tenant, name) ON DELETE CASCADE
);
CREATE INDEX plans_site ON plans (tenant, site, status);
CREATE INDEX plans_commit ON plans (tenant, commit_sha);

CREATE TABLE actions (
	plan_id     TEXT NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
	id          TEXT NOT NULL,
	idx         INTEGER NOT NULL,
	body        TEXT NOT NULL,
	status      TEXT NOT NULL,
	result      TEXT NOT NULL DEFAULT '',
	error       TEXT NOT NULL DEFAULT '',
	started_at  BIGINT NOT NULL DEFAULT 0,
	finished_at BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (plan_id, id),
	UNIQUE (plan_id, idx)
);

CREATE TABLE log_lines (
	plan_id   TEXT NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
	seq       BIGINT NOT NULL,
	action_id TEXT NOT NULL DEFAULT '',
	at        BIGINT NOT NULL,
	stream    TEXT NOT NULL DEFAULT '',
	line      TEXT NOT NULL,
	PRIMARY KEY (plan_id, seq)
);

CREATE TABLE commit_statuses (
	repo_id     TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
	tenant      TEXT NOT NULL,
	commit_sha  TEXT NOT NULL,
	context     TEXT NOT NULL,
	state       TEXT NOT NULL,
	description TEXT NOT NULL DEFAULT '',
	target_url  TEXT NOT NULL DEFAULT '',
	updated_at  BIGINT NOT NULL,
	posted      BOOLEAN NOT NULL DEFAULT FALSE,
	posted_at   BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (repo_id, commit_sha, context)
);
CREATE INDEX commit_statuses_unposted ON commit_statuses (posted, updated_at);

CREATE TABLE previews (
	repo_id    TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
	tenant     TEXT NOT NULL,
	pr         INTEGER NOT NULL,
	commit_sha TEXT NOT NULL,
	summary    TEXT NOT NULL DEFAULT '',
	plan_text  TEXT NOT NULL DEFAULT '',
	plan_json  TEXT NOT NULL DEFAULT '',
	created_at BIGINT NOT NULL,
	PRIMARY KEY (repo_id, pr, commit_sha)
);

CREATE TABLE webhook_deliveries (
	forge       TEXT NOT NULL,
	delivery_id TEXT NOT NULL,
	received_at BIGINT NOT NULL,
	PRIMARY KEY (forge, delivery_id)
);
CREATE INDEX webhook_deliveries_received ON webhook_deliveries (received_at);

-- Append-only; tenant is plain text so events outlive their tenant.
CREATE TABLE audit_events (
	seq       BIGINT PRIMARY KEY,
	at        BIGINT NOT NULL,
	tenant    TEXT NOT NULL DEFAULT '',
	actor     TEXT NOT NULL,
	action    TEXT NOT NULL,
	object    TEXT NOT NULL DEFAULT '',
	detail    TEXT NOT NULL DEFAULT '',
	prev_hash TEXT NOT NULL,
	hash      TEXT NOT NULL
);
CREATE INDEX audit_events_tenant ON audit_events (tenant, seq);

-- The chain head: the last seq and hash. Appends lock it, so they take
-- turns; VerifyAudit compares it with the last row to catch a deleted tail.
CREATE TABLE audit_head (
	id   INTEGER PRIMARY KEY CHECK (id = 1),
	seq  BIGINT NOT NULL,
	hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '');

CREATE TABLE leases (
	name       TEXT PRIMARY KEY,
	holder     TEXT NOT NULL,
	expires_at BIGINT NOT NULL
);
