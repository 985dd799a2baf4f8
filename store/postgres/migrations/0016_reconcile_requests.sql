-- Reconcile requests (a webhook push, an API trigger) that a replica has
-- accepted, so that one dying before it reconciled does not lose them:
-- requested counts the requests, handled is the count the last finished
-- reconcile attempt covered. While requested > handled and no replica
-- holds the repository's reconcile lease, any replica adopts the request.
-- Counters, not times, so no clock decides.
CREATE TABLE reconcile_requests (
	repo_id   TEXT PRIMARY KEY REFERENCES repositories (id) ON DELETE CASCADE,
	tenant    TEXT NOT NULL,
	requested BIGINT NOT NULL,
	handled   BIGINT NOT NULL DEFAULT 0
);
