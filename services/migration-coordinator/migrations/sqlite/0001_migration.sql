-- The migration mode, one row. Every coordinator replica reads it from here, so a change is
-- seen by all of them without a restart.
CREATE TABLE migration_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    mode       TEXT NOT NULL CHECK (mode IN ('import', 'authoritative')),
    updated_at TEXT NOT NULL
);

-- The ledger: one row per user moved into the store.
CREATE TABLE migration_events (
    event_id    TEXT PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL,
    legacy_id   TEXT NOT NULL,
    source      TEXT NOT NULL,
    occurred_at TEXT NOT NULL
);
CREATE INDEX migration_events_occurred_at ON migration_events (occurred_at);
