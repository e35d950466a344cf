-- File imports (MigrationAdmin.ImportUsers): one row per import id (the CLI's is the
-- format and the file's SHA-256). next_position and the counters are written after each
-- page, so a run broken off by a crash resumes there; the owner is the run writing it, so
-- that a second run of the same import takes over and the first one stops. Users not
-- imported are listed in backfill_unsupported under the import id.
CREATE TABLE import_jobs (
    import_id          TEXT PRIMARY KEY NOT NULL,
    format             TEXT NOT NULL,
    state              TEXT NOT NULL CHECK (state IN ('running', 'completed', 'failed')),
    next_position      BIGINT NOT NULL DEFAULT 0,
    imported           BIGINT NOT NULL DEFAULT 0,
    skipped_existing   BIGINT NOT NULL DEFAULT 0,
    skipped_tombstoned BIGINT NOT NULL DEFAULT 0,
    unsupported        BIGINT NOT NULL DEFAULT 0,
    owner              TEXT NOT NULL,
    started_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    finished_at        TEXT,
    error              TEXT
);
