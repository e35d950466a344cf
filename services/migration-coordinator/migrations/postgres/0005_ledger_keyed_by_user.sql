-- One row per migrated user, keyed by the user id alone. User ids are UUIDv7, made when
-- the user is imported, so their order is the ledger's time order: no event id and no
-- time index to maintain (a backfill writes a million rows). Rebuilt, not altered, so
-- that PostgreSQL and SQLite take the same steps.
CREATE TABLE migration_ledger (
    user_id     TEXT PRIMARY KEY NOT NULL,
    legacy_id   TEXT NOT NULL,
    source      TEXT NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL
);
INSERT INTO migration_ledger (user_id, legacy_id, source, occurred_at)
    SELECT user_id, legacy_id, source, occurred_at FROM migration_events;
DROP TABLE migration_events;
ALTER TABLE migration_ledger RENAME TO migration_events;
