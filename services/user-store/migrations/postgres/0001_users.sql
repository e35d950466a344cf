-- Users: the authoritative store. `email` is normalized (lower-case) and unique;
-- `legacy_id` is unique so one legacy record can never become two accounts.
CREATE TABLE users (
    user_id        TEXT PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,
    display_email  TEXT NOT NULL,
    email_verified BOOLEAN NOT NULL DEFAULT FALSE,
    legacy_id      TEXT UNIQUE,
    password_hash  TEXT NOT NULL,
    name           TEXT,
    given_name     TEXT,
    family_name    TEXT,
    nickname       TEXT,
    picture        TEXT,
    user_metadata  JSONB NOT NULL DEFAULT '{}'::jsonb,
    app_metadata   JSONB NOT NULL DEFAULT '{}'::jsonb,
    source         TEXT NOT NULL CHECK (source IN ('signup', 'login_migration', 'reset_migration', 'backfill')),
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    last_login_at  TIMESTAMPTZ
);
