//! The `login_throttle` table: one row per counter (see `ThrottleKey`), admitted, settled
//! and locked in single statements so that every replica counts every attempt.

use super::*;

/// One throttle counter as it stands (a row of `login_throttle`, by key: an email, an
/// (email, source), or a calling client).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct ThrottleRow {
    pub failures: i64,
    pub window_started_at: DateTime<Utc>,
    pub locked_until: Option<DateTime<Utc>>,
    /// Attempts admitted and not settled yet, and when the latest was admitted.
    pub in_flight: i64,
    pub in_flight_since: Option<DateTime<Utc>>,
}

impl Repository {
    /// Count one failure (a new window when the last one is over, or when the last lock has
    /// expired); lock the email when the count reaches `max`. One statement, so concurrent
    /// failures on any replica all count.
    pub(crate) async fn record_failure(
        &self,
        key: &ThrottleKey,
        max: i64,
        window: chrono::Duration,
        lockout: chrono::Duration,
        ends_attempt: bool,
    ) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        let now = self.clock.now();
        let window_start = now - window;
        let locked_until = now + lockout;
        with_db!(&self.db, pool => {
            sqlx::query_scalar(
                // A count starts over when its window is over or its lock has expired; a
                // lock in force is kept as it is (attempts during it do not extend it).
                "INSERT INTO login_throttle (email, failures, window_started_at, locked_until) \
                 VALUES ($1, 1, $2, CASE WHEN 1 >= $5 THEN $4 ELSE NULL END) \
                 ON CONFLICT (email) DO UPDATE SET \
                   failures = CASE WHEN login_throttle.window_started_at < $3 \
                       OR (login_throttle.locked_until IS NOT NULL AND login_throttle.locked_until <= $2) \
                     THEN 1 ELSE login_throttle.failures + 1 END, \
                   window_started_at = CASE WHEN login_throttle.window_started_at < $3 \
                       OR (login_throttle.locked_until IS NOT NULL AND login_throttle.locked_until <= $2) \
                     THEN $2 ELSE login_throttle.window_started_at END, \
                   locked_until = CASE \
                     WHEN login_throttle.locked_until IS NOT NULL AND login_throttle.locked_until > $2 THEN login_throttle.locked_until \
                     WHEN (CASE WHEN login_throttle.window_started_at < $3 \
                         OR (login_throttle.locked_until IS NOT NULL AND login_throttle.locked_until <= $2) \
                       THEN 1 ELSE login_throttle.failures + 1 END) >= $5 THEN $4 \
                     ELSE NULL END, \
                   in_flight = CASE WHEN login_throttle.in_flight > $6 THEN login_throttle.in_flight - $6 ELSE 0 END \
                 RETURNING locked_until",
            )
            .bind(key.as_str())
            .bind(now)
            .bind(window_start)
            .bind(locked_until)
            .bind(max)
            .bind(i32::from(ends_attempt))
            .fetch_one(pool)
            .await
        })
    }

    /// Admit one login attempt for `key`, counting it as in flight, if the key is not locked
    /// and its failures in the current window plus the attempts in flight stay under `max`.
    /// One statement, so that parallel attempts on any replica are each counted before any
    /// of them is checked. Attempts admitted before `stale_before` are forgotten (whoever
    /// admitted them died before settling). `true` when admitted.
    pub(crate) async fn admit_attempt(
        &self,
        key: &ThrottleKey,
        max: i64,
        window: chrono::Duration,
        stale_before: DateTime<Utc>,
    ) -> Result<bool, sqlx::Error> {
        let now = self.clock.now();
        let window_start = now - window;
        // A count starts over when its window is over or its lock has expired.
        const RESET: &str = "(login_throttle.window_started_at < $3 \
            OR (login_throttle.locked_until IS NOT NULL AND login_throttle.locked_until <= $2))";
        const STALE: &str =
            "(login_throttle.in_flight_since IS NULL OR login_throttle.in_flight_since < $4)";
        let sql = format!(
            "INSERT INTO login_throttle \
               (email, failures, window_started_at, locked_until, in_flight, in_flight_since) \
             VALUES ($1, 0, $2, NULL, 1, $2) \
             ON CONFLICT (email) DO UPDATE SET \
               failures = CASE WHEN {RESET} THEN 0 ELSE login_throttle.failures END, \
               window_started_at = CASE WHEN {RESET} THEN $2 ELSE login_throttle.window_started_at END, \
               locked_until = CASE WHEN {RESET} THEN NULL ELSE login_throttle.locked_until END, \
               in_flight = CASE WHEN {STALE} THEN 1 ELSE login_throttle.in_flight + 1 END, \
               in_flight_since = $2 \
             WHERE NOT (login_throttle.locked_until IS NOT NULL AND login_throttle.locked_until > $2) \
               AND (CASE WHEN {RESET} THEN 0 ELSE login_throttle.failures END) \
                 + (CASE WHEN {STALE} THEN 0 ELSE login_throttle.in_flight END) < $5 \
             RETURNING in_flight"
        );
        with_db!(&self.db, pool => {
            sqlx::query_scalar::<_, i32>(sqlx::AssertSqlSafe(sql))
                .bind(key.as_str())
                .bind(now)
                .bind(window_start)
                .bind(stale_before)
                .bind(max)
                .fetch_optional(pool)
                .await
                .map(|admitted| admitted.is_some())
        })
    }

    /// A key's counters as they stand: failures, when the window started, until when it is
    /// locked, attempts in flight and when the latest was admitted. A read, so that attempts
    /// waiting their turn look without taking the row's write lock.
    pub(crate) async fn attempt_state(
        &self,
        key: &ThrottleKey,
    ) -> Result<Option<ThrottleRow>, sqlx::Error> {
        with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT CAST(failures AS BIGINT) AS failures, window_started_at, locked_until, \
                   CAST(in_flight AS BIGINT) AS in_flight, in_flight_since \
                 FROM login_throttle WHERE email = $1",
            )
            .bind(key.as_str())
            .fetch_optional(pool)
            .await
        })
    }

    /// An admitted attempt is over without a failure: `succeeded` forgets the key's failures
    /// (a right password), otherwise it only stops counting as in flight.
    pub(crate) async fn end_attempt(
        &self,
        key: &ThrottleKey,
        succeeded: bool,
    ) -> Result<(), sqlx::Error> {
        let sql = if succeeded {
            "UPDATE login_throttle SET failures = 0, locked_until = NULL, \
               in_flight = CASE WHEN in_flight > 0 THEN in_flight - 1 ELSE 0 END WHERE email = $1"
        } else {
            "UPDATE login_throttle SET \
               in_flight = CASE WHEN in_flight > 0 THEN in_flight - 1 ELSE 0 END WHERE email = $1"
        };
        with_db!(&self.db, pool => {
            sqlx::query(sql).bind(key.as_str()).execute(pool).await.map(drop)
        })
    }

    /// Delete throttle rows whose window started before `before` and that lock nothing any
    /// more: they no longer count toward anything.
    pub(crate) async fn prune_throttle(&self, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
        let now = self.clock.now();
        with_db!(&self.db, pool => {
            sqlx::query(
                "DELETE FROM login_throttle WHERE window_started_at < $1 \
                 AND (locked_until IS NULL OR locked_until < $2)",
            )
            .bind(before)
            .bind(now)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })
    }

    /// Forget an email's failures, from every source (keys `"{email} source:…"`; a range,
    /// not LIKE: emails may hold `_` and `%`).
    pub(crate) async fn clear_failures(&self, email: &str) -> Result<(), sqlx::Error> {
        let first = format!("{email} source:");
        let after = format!("{email} source;");
        with_db!(&self.db, pool => {
            sqlx::query("DELETE FROM login_throttle WHERE email = $1 OR (email >= $2 AND email < $3)")
                .bind(email)
                .bind(first)
                .bind(after)
                .execute(pool)
                .await
                .map(|_| ())
        })
    }
}
