-- A backfill page's event row holds up to 2,500 events in `detail` (a few hundred KiB of
-- JSON). PostgreSQL compressed it with pglz on every page, the largest single cost the
-- backfill paid beyond the rows themselves (docs/BENCHMARKS.md, *Backfill*). Events are
-- pruned after their retention, so they are kept out of line, uncompressed. Only new rows
-- are affected.
ALTER TABLE events ALTER COLUMN detail SET STORAGE EXTERNAL;
