-- Pull-request previews remember what they were computed against and
-- whether their pull request was closed or merged. state is the pull
-- request's ('open', 'closed', 'merged'), kept on every preview of it, so
-- a preview queued before the close and run after a restart sees the close
-- and leaves the plan comment alone. base_commit is the branch commit in
-- force then; inventories a JSON object of site → inventory version
-- ('' = not planned).
ALTER TABLE previews ADD COLUMN state TEXT NOT NULL DEFAULT 'open';
ALTER TABLE previews ADD COLUMN base_commit TEXT NOT NULL DEFAULT '';
ALTER TABLE previews ADD COLUMN inventories TEXT NOT NULL DEFAULT '';

-- The pull-request label that accepts a plan deleting or replacing VMs
-- ('' = nkudo/destructive-ok).
ALTER TABLE repositories ADD COLUMN destructive_label TEXT NOT NULL DEFAULT '';
