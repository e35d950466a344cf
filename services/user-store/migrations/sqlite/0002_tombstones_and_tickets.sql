-- Deleted users: their legacy id and email, so that the legacy store cannot bring them back.
CREATE TABLE tombstones (
    tombstone_id TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL,
    legacy_id    TEXT UNIQUE,
    email        TEXT NOT NULL,
    deleted_at   TEXT NOT NULL
);
CREATE INDEX tombstones_email ON tombstones (email);

-- Single-use tickets (password reset, email verification), stored only as SHA-256 hashes.
-- A reset ticket names a store user, or a legacy identity (legacy_id + email) not yet
-- migrated.
CREATE TABLE tickets (
    ticket_hash TEXT PRIMARY KEY NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('password_reset', 'email_verification')),
    user_id     TEXT REFERENCES users (user_id) ON DELETE CASCADE,
    legacy_id   TEXT,
    email       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    used_at     TEXT,
    CHECK (user_id IS NOT NULL OR legacy_id IS NOT NULL)
);
CREATE INDEX tickets_user_id ON tickets (user_id);
