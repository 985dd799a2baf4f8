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
