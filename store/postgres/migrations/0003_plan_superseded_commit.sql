-- The commit whose desired state superseded a plan: the newer plan's
-- commit, or the commit that cancelled the plan without storing a new one
-- (its site needed nothing, or its plan was refused).
ALTER TABLE plans ADD COLUMN superseded_commit TEXT NOT NULL DEFAULT '';
