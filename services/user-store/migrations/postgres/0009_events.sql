-- The transactional outbox: one row per change to a user, written in the same transaction as
-- the change (a change that rolls back leaves no event; one that commits always has its
-- event). event_seq is the insertion order, which is not the commit order when transactions
-- overlap; `position` is given later by the sequencer, one sequencer transaction at a time,
-- to committed rows only, so positions become visible in increasing order and a reader that
-- resumes after position N never misses an event. Positions are contiguous from 1.
-- A row may hold several events of one change (event_count: a backfill page's users, in
-- detail's "batch"); its position is then the last of theirs, the others come just before.
CREATE TABLE events (
    event_seq   BIGSERIAL PRIMARY KEY,
    position    BIGINT UNIQUE,
    event_id    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    legacy_id   TEXT,
    email       TEXT,
    detail      TEXT NOT NULL DEFAULT '{}',
    event_count INTEGER NOT NULL DEFAULT 1,
    occurred_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX events_unsequenced ON events (event_seq) WHERE position IS NULL;
