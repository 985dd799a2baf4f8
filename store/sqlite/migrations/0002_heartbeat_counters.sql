-- Counters that let a heartbeat be one UPDATE statement: every heartbeat
-- increments heartbeat_seq, and a heartbeat that changed the inventory sets
-- inventory_changed_seq to the same value, so RETURNING tells whether the
-- VM set changed without reading the row first.
ALTER TABLE sites ADD COLUMN heartbeat_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sites ADD COLUMN inventory_changed_seq BIGINT NOT NULL DEFAULT 0;
