-- Placeholder that keeps the migration versions contiguous; it is replaced
-- by the real version 0004 when that migration is merged.
SELECT 1;
