-- The transactional outbox (see the PostgreSQL migration). SQLite has one writer at a time,
-- but the same sequencer gives positions on both databases.
CREATE TABLE events (
    event_seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    position    INTEGER UNIQUE,
    event_id    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    legacy_id   TEXT,
    email       TEXT,
    detail      TEXT NOT NULL DEFAULT '{}',
    event_count INTEGER NOT NULL DEFAULT 1,
    occurred_at TEXT NOT NULL
);
CREATE INDEX events_unsequenced ON events (event_seq) WHERE position IS NULL;
