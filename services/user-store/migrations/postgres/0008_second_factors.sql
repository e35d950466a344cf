-- Second factors (TOTP). One per user. The secret is encrypted (AES-256-GCM) with the key
-- named by key_id, bound to the user id; a database read yields no usable secret. A factor
-- is active once confirmed with a code; last_used_step keeps a code from being used twice.
ALTER TABLE users ADD COLUMN mfa_enrolled BOOLEAN NOT NULL DEFAULT FALSE;

CREATE TABLE user_factors (
    user_id           TEXT PRIMARY KEY NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    kind              TEXT NOT NULL CHECK (kind IN ('totp')),
    key_id            TEXT NOT NULL,
    secret_ciphertext BYTEA NOT NULL,
    algorithm         TEXT NOT NULL,
    digits            INTEGER NOT NULL,
    period_seconds    INTEGER NOT NULL,
    last_used_step    BIGINT NOT NULL DEFAULT 0,
    created_at        TIMESTAMPTZ NOT NULL,
    confirmed_at      TIMESTAMPTZ
);

-- Recovery codes: generated when a factor is confirmed, shown once, stored as SHA-256 (they
-- carry 80 random bits), each usable once.
CREATE TABLE recovery_codes (
    user_id   TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    used_at   TIMESTAMPTZ,
    PRIMARY KEY (user_id, code_hash)
);

-- The second step of a login: a single-use challenge handed out when the password was right,
-- stored only as its SHA-256. attempt_source is the login's source digest, so that wrong
-- codes count where wrong passwords do.
CREATE TABLE mfa_challenges (
    challenge_hash TEXT PRIMARY KEY NOT NULL,
    user_id        TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    email          TEXT NOT NULL,
    attempt_source TEXT,
    wrong_codes    INTEGER NOT NULL DEFAULT 0,
    created_at     TIMESTAMPTZ NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL,
    used_at        TIMESTAMPTZ
);
CREATE INDEX mfa_challenges_expires_at ON mfa_challenges (expires_at);

-- A login migration held for the second factor: the legacy password was right and the legacy
-- user has a TOTP factor, so nothing is imported until a code from it. Holds what the import
-- will write (the argon2id hash of the password just verified, the profile as JSON, the
-- factor sealed like user_factors under the user id chosen now), for minutes.
CREATE TABLE pending_imports (
    challenge_hash    TEXT PRIMARY KEY NOT NULL,
    user_id           TEXT NOT NULL,
    legacy_id         TEXT NOT NULL,
    email             TEXT NOT NULL,
    import_json       TEXT NOT NULL,
    password_hash     TEXT NOT NULL,
    key_id            TEXT NOT NULL,
    secret_ciphertext BYTEA NOT NULL,
    algorithm         TEXT NOT NULL,
    digits            INTEGER NOT NULL,
    period_seconds    INTEGER NOT NULL,
    wrong_codes       INTEGER NOT NULL DEFAULT 0,
    created_at        TIMESTAMPTZ NOT NULL,
    expires_at        TIMESTAMPTZ NOT NULL,
    used_at           TIMESTAMPTZ
);
CREATE INDEX pending_imports_expires_at ON pending_imports (expires_at);
