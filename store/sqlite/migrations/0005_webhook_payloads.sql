-- Hashes of verified webhook bodies per repository: a captured delivery
-- replayed with a new or no delivery ID is recognised by its body.
CREATE TABLE webhook_payloads (
	repo_id     TEXT NOT NULL,
	body_sha256 TEXT NOT NULL,
	received_at BIGINT NOT NULL,
	PRIMARY KEY (repo_id, body_sha256)
);
CREATE INDEX webhook_payloads_received ON webhook_payloads (received_at);
