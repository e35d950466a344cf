-- Login attempts being checked right now, per throttle key: an attempt is admitted only while
-- failures + attempts in flight stay under the limit, in the same statement that counts it,
-- so a burst of parallel guesses cannot all pass the check before the first failure lands.
-- in_flight_since: when the latest attempt was admitted; attempts admitted long before it
-- (a replica that died mid-login) are forgotten.
ALTER TABLE login_throttle ADD COLUMN in_flight INTEGER NOT NULL DEFAULT 0;
ALTER TABLE login_throttle ADD COLUMN in_flight_since TEXT;
