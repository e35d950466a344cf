-- Failed logins per (normalized) email, shared by every replica: after too many failures in
-- a window the email is locked for a while, whether or not a user has it (so the lock
-- says nothing about which accounts exist).
CREATE TABLE login_throttle (
    email             TEXT PRIMARY KEY NOT NULL,
    failures          INTEGER NOT NULL,
    window_started_at TEXT NOT NULL,
    locked_until      TEXT
);
