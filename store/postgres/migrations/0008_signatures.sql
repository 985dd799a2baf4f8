-- Commit signature policy per repository (public keys only, so stored as
-- they are): verify_mode is '' (off), 'head' or 'all'; verify_ssh is git's
-- allowed_signers text and verify_gpg an armoured OpenPGP key ring.
ALTER TABLE repositories ADD COLUMN verify_mode TEXT NOT NULL DEFAULT '';
ALTER TABLE repositories ADD COLUMN verify_ssh TEXT NOT NULL DEFAULT '';
ALTER TABLE repositories ADD COLUMN verify_gpg TEXT NOT NULL DEFAULT '';
