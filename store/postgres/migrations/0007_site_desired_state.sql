-- Each site's desired state as last planned lives in the store, so any
-- replica answers desired-state queries without a git mirror. The per-site
-- incremental key "hash@inventoryVersion" becomes two columns, and state
-- holds the site's documents as JSON ({"site": ..., "vms": [...]}); '' =
-- recorded before this migration (filled in by the next reconcile).
ALTER TABLE site_desired ADD COLUMN inventory_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE site_desired ADD COLUMN state TEXT NOT NULL DEFAULT '';
UPDATE site_desired
	SET inventory_version = CAST(split_part(hash, '@', 2) AS BIGINT),
	    hash = split_part(hash, '@', 1)
	WHERE position('@' IN hash) > 0;
CREATE INDEX site_desired_site ON site_desired (site);
