-- A tenant's NetBird integration: the management API's URL and the name of
-- the tenant credential (a token) holding the service user's token. The
-- token itself stays in credentials, sealed.
CREATE TABLE netbird_integrations (
	tenant     TEXT NOT NULL PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
	url        TEXT NOT NULL,
	credential TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	updated_at BIGINT NOT NULL
);

-- What the control plane remembers of each site's NetBird peer: the setup
-- key minted for it and not used yet (key sealed with the server key, the
-- tenant and site as additional data; '' when none), the peer once it
-- joined, the membership last applied and the last outcome. Rows outlive
-- their site on purpose: the peer of a deleted site is removed from the
-- NetBird account, then the row.
CREATE TABLE netbird_peers (
	tenant      TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
	site        TEXT NOT NULL,
	key_id      TEXT NOT NULL DEFAULT '',
	setup_key   TEXT NOT NULL DEFAULT '',
	key_groups  TEXT NOT NULL DEFAULT '[]',
	peer_id     TEXT NOT NULL DEFAULT '',
	groups      TEXT NOT NULL DEFAULT '[]',
	last_change TEXT NOT NULL DEFAULT '',
	last_error  TEXT NOT NULL DEFAULT '',
	updated_at  BIGINT NOT NULL,
	PRIMARY KEY (tenant, site)
);
