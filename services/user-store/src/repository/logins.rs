//! A login's writes when `last_login_at` is batched (`[store] last_login_flush_ms`): the
//! event at once, `last_login_at` later, many logins in one statement.

use super::*;

/// Logins per statement of a batched `last_login_at` write (two bound values each).
const LAST_LOGINS_PER_STATEMENT: usize = 500;

impl Repository {
    /// The LOGIN_SUCCEEDED event of a login at `at` whose `last_login_at` is written later:
    /// one statement, no transaction. None for a user with a second factor (theirs is written
    /// when the code is accepted).
    pub(crate) async fn record_login_event(
        &self,
        user: &User,
        at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        if user.mfa_enrolled {
            return Ok(());
        }
        let event = NewEvent::for_user(
            EventKind::LoggedIn,
            &user.user_id,
            user.legacy_id.as_deref(),
            &user.display_email,
        );
        with_db!(&self.db, pool => async {
            // Outside a transaction: the event is the login's only write.
            let mut connection = pool.acquire().await?;
            emit!(connection, [&event], at);
            Ok::<_, sqlx::Error>(())
        }.await)
    }

    /// Write the `last_login_at` of many logins (user id, time of the login). A time never
    /// moves back: two replicas' batches may arrive in either order. A user deleted since is
    /// skipped.
    pub(crate) async fn record_last_logins(
        &self,
        logins: &[(String, DateTime<Utc>)],
    ) -> Result<(), sqlx::Error> {
        for chunk in logins.chunks(LAST_LOGINS_PER_STATEMENT) {
            match &self.db {
                Db::Postgres(pool) => {
                    let (ids, times): (Vec<&str>, Vec<DateTime<Utc>>) =
                        chunk.iter().map(|(id, at)| (id.as_str(), *at)).unzip();
                    sqlx::query(
                        "UPDATE users SET last_login_at = GREATEST(users.last_login_at, v.at) \
                         FROM (SELECT user_id, max(at) AS at \
                               FROM unnest($1::text[], $2::timestamptz[]) AS l(user_id, at) \
                               GROUP BY user_id) AS v \
                         WHERE users.user_id = v.user_id",
                    )
                    .bind(ids)
                    .bind(times)
                    .execute(pool)
                    .await?;
                }
                Db::Sqlite(pool) => {
                    // SQLite stores times as RFC 3339 text, which sorts as time does.
                    let values = vec!["(?, ?)"; chunk.len()].join(", ");
                    let sql = format!(
                        "UPDATE users SET last_login_at = CASE \
                           WHEN users.last_login_at IS NULL OR users.last_login_at < v.at \
                           THEN v.at ELSE users.last_login_at END \
                         FROM (SELECT column1 AS user_id, max(column2) AS at \
                               FROM (VALUES {values}) GROUP BY column1) AS v \
                         WHERE users.user_id = v.user_id"
                    );
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for (user_id, at) in chunk {
                        query = query.bind(user_id).bind(at);
                    }
                    query.execute(pool).await?;
                }
            }
        }
        Ok(())
    }
}
