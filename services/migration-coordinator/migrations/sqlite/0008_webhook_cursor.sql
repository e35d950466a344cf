-- Where the webhook stands (see the PostgreSQL migration).
CREATE TABLE webhook_cursor (
    endpoint    TEXT PRIMARY KEY NOT NULL,
    position    BIGINT NOT NULL DEFAULT 0,
    owner       TEXT,
    lease_until TEXT,
    updated_at  TEXT NOT NULL
);
