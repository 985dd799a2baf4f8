-- Content-addressed images (kernels, initramfs, firmware, disk images)
-- pushed to the control plane. The bytes live once per digest in the
-- control plane's data dir; a row says that one tenant owns that digest,
-- so two tenants pushing the same file share the bytes but never each
-- other's row. referenced_at is when the garbage collector last saw a
-- manifest of the tenant name the digest (0 = never).
CREATE TABLE images (
	tenant        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
	sha256        TEXT NOT NULL,
	name          TEXT NOT NULL,
	size          BIGINT NOT NULL,
	created_at    BIGINT NOT NULL,
	referenced_at BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (tenant, sha256)
);
CREATE INDEX images_sha256 ON images (sha256);
