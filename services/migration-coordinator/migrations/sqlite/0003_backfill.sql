-- Backfill jobs: importing every legacy user who never logged in. The cursor (the last
-- legacy id done) and the counters are written after each batch, so a job survives a
-- coordinator restart; the owner and heartbeat make exactly one replica run it.
CREATE TABLE backfill_jobs (
    job_id             TEXT PRIMARY KEY NOT NULL,
    state              TEXT NOT NULL CHECK (state IN ('running', 'completed', 'cancelled', 'failed')),
    batch_size         INTEGER NOT NULL,
    cursor             TEXT,
    processed          BIGINT NOT NULL DEFAULT 0,
    imported           BIGINT NOT NULL DEFAULT 0,
    skipped_existing   BIGINT NOT NULL DEFAULT 0,
    skipped_tombstoned BIGINT NOT NULL DEFAULT 0,
    unsupported        BIGINT NOT NULL DEFAULT 0,
    legacy_users_total BIGINT,
    owner              TEXT,
    heartbeat_at       TEXT,
    started_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    finished_at        TEXT,
    error              TEXT
);

-- Legacy users a backfill could not carry over (their hash format), by legacy id.
CREATE TABLE backfill_unsupported (
    job_id    TEXT NOT NULL,
    legacy_id TEXT NOT NULL,
    reason    TEXT NOT NULL,
    PRIMARY KEY (job_id, legacy_id)
);
