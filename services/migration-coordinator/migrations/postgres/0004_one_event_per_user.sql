-- A user migrates once (by login, reset or backfill; a deleted user's id is never reused):
-- one ledger row per user, so a replayed backfill page can write its rows again safely.
CREATE UNIQUE INDEX migration_events_user ON migration_events (user_id);
