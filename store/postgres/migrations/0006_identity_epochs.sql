-- Identity epochs: every site row gets an epoch, a random value made when
-- the site is created, so a site deleted and created again with the same
-- name is a different identity. Every certificate issued to a site is
-- recorded with the epoch it was issued in; an agent certificate is
-- accepted only while its serial is recorded for the site's current epoch
-- and not revoked. Sites that exist today keep the empty epoch, and their
-- current certificate is recorded so running agents keep working.
ALTER TABLE sites ADD COLUMN epoch TEXT NOT NULL DEFAULT '';

CREATE TABLE site_certificates (
	serial    TEXT PRIMARY KEY,
	tenant    TEXT NOT NULL,
	site      TEXT NOT NULL,
	epoch     TEXT NOT NULL,
	issued_at BIGINT NOT NULL
);
CREATE INDEX site_certificates_site ON site_certificates (tenant, site);

-- Revocations of a site are counted, and a redeemed enrollment token
-- remembers the count it saw: a certificate for an enrollment whose token
-- was redeemed before a revocation of the site is not recorded after it.
ALTER TABLE sites ADD COLUMN revocations BIGINT NOT NULL DEFAULT 0;
ALTER TABLE enrollment_tokens ADD COLUMN site_revocations BIGINT NOT NULL DEFAULT 0;

INSERT INTO site_certificates (serial, tenant, site, epoch, issued_at)
	SELECT cert_serial, tenant, name, '', enrolled_at FROM sites WHERE cert_serial <> ''
	ON CONFLICT (serial) DO NOTHING;

-- The keyed audit chain: mac is HMAC-SHA256 under a key kept outside the
-- database (beside the CA) over the event's hash, so rewriting events and
-- recomputing every hash shows without the key. '' = written before the
-- chain was keyed (events before the audit.keyed marker).
ALTER TABLE audit_events ADD COLUMN mac TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_head ADD COLUMN mac TEXT NOT NULL DEFAULT '';
