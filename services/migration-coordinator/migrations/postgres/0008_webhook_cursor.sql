-- Where the webhook stands: the last event position it settled (delivered, or given up on
-- after the retries), and which coordinator replica holds the delivery lease. One replica
-- delivers at a time; another takes over when the lease runs out (a crash, a rollout).
CREATE TABLE webhook_cursor (
    endpoint    TEXT PRIMARY KEY NOT NULL,
    position    BIGINT NOT NULL DEFAULT 0,
    owner       TEXT,
    lease_until TIMESTAMPTZ,
    updated_at  TIMESTAMPTZ NOT NULL
);
