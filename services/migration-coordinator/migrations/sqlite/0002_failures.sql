-- Failed migrations by reason, for the status operators watch. Rows older than a day are
-- pruned when the status is read.
CREATE TABLE migration_failures (
    failure_id  TEXT PRIMARY KEY NOT NULL,
    reason      TEXT NOT NULL,
    occurred_at TEXT NOT NULL
);
CREATE INDEX migration_failures_occurred_at ON migration_failures (occurred_at);
