-- Hashes of verified webhook bodies per repository: a captured delivery
-- replayed with a new or no delivery ID is recognised by its body.
CREATE TABLE webhook_payloads (
	repo_id     TEXT NOT NULL,
	body_sha256 TEXT NOT NULL,
	received_at BIGINT NOT NULL,
	PRIMARY KEY (repo_id, body_sha256)
);
CREATE INDEX webhook_payloads_received ON webhook_payloads (received_at);

-- What each plan's log holds, counted against the per-plan and per-site
-- log quotas, and what was dropped once a quota was reached.
CREATE TABLE log_usage (
	plan_id       TEXT PRIMARY KEY REFERENCES plans (id) ON DELETE CASCADE,
	tenant        TEXT NOT NULL,
	site          TEXT NOT NULL,
	bytes         BIGINT NOT NULL DEFAULT 0,
	dropped_lines BIGINT NOT NULL DEFAULT 0,
	dropped_bytes BIGINT NOT NULL DEFAULT 0,
	closed        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX log_usage_site ON log_usage (tenant, site);
INSERT INTO log_usage (plan_id, tenant, site, bytes)
	SELECT p.id, p.tenant, p.site, SUM(octet_length(l.line) + 64)
	FROM plans p JOIN log_lines l ON l.plan_id = p.id
	GROUP BY p.id, p.tenant, p.site;
