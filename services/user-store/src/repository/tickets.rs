//! The `tickets` table: reset and verification tickets, stored by hash, each consumed in the
//! same transaction as the change it authorizes.

use super::*;

/// A ticket as stored (its hash is the key; the ticket itself is never stored).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct TicketRow {
    pub kind: String,
    pub user_id: Option<String>,
    pub legacy_id: Option<String>,
    pub email: String,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

impl Repository {
    pub(crate) async fn insert_ticket(
        &self,
        ticket_hash: &str,
        kind: &str,
        user_id: Option<&str>,
        legacy_id: Option<&str>,
        email: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        with_db!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO tickets (ticket_hash, kind, user_id, legacy_id, email, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(ticket_hash)
            .bind(kind)
            .bind(user_id)
            .bind(legacy_id)
            .bind(email)
            .bind(self.clock.now())
            .bind(expires_at)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    pub(crate) async fn find_ticket(
        &self,
        ticket_hash: &str,
    ) -> Result<Option<TicketRow>, sqlx::Error> {
        with_db!(&self.db, pool => {
            sqlx::query_as("SELECT kind, user_id, legacy_id, email, expires_at, used_at FROM tickets WHERE ticket_hash = $1")
                .bind(ticket_hash)
                .fetch_optional(pool)
                .await
        })
    }

    /// Consume a reset ticket and set the password of the store user it names, in one
    /// transaction. `None`: the ticket was consumed concurrently or expired (nothing changed),
    /// or the user is gone.
    pub(crate) async fn reset_password_with_ticket(
        &self,
        ticket_hash: &str,
        user_id: &str,
        password_hash: &str,
    ) -> Result<Option<User>, sqlx::Error> {
        self.consume_ticket_and_update(
            ticket_hash,
            SET_PASSWORD,
            user_id,
            password_hash,
            EventKind::PasswordReset,
        )
        .await
    }

    /// Consume a verification ticket and mark the email verified, if it is still the user's.
    pub(crate) async fn verify_email_with_ticket(
        &self,
        ticket_hash: &str,
        user_id: &str,
        email: &str,
    ) -> Result<Option<User>, sqlx::Error> {
        self.consume_ticket_and_update(
            ticket_hash,
            SET_EMAIL_VERIFIED,
            user_id,
            email,
            EventKind::EmailVerified,
        )
        .await
    }

    /// Consume a ticket and run `update` (parameters: user id, `value`, now) in one
    /// transaction with its `event`, committed only if both happened: a ticket is never used
    /// up for nothing.
    async fn consume_ticket_and_update(
        &self,
        ticket_hash: &str,
        update: &'static str,
        user_id: &str,
        value: &str,
        event: EventKind,
    ) -> Result<Option<User>, sqlx::Error> {
        let now = self.clock.now();
        let row: Option<UserRow> = with_db!(&self.db, pool => async {
            let mut tx = pool.begin().await?;
            let consumed = sqlx::query(CONSUME_TICKET).bind(ticket_hash).bind(now).execute(&mut *tx).await?.rows_affected();
            if consumed != 1 {
                return Ok(None);
            }
            let row: Option<UserRow> =
                sqlx::query_as(update).bind(user_id).bind(value).bind(now).fetch_optional(&mut *tx).await?;
            if let Some(row) = &row {
                emit!(tx, [&NewEvent::about(event, row)], now);
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(row)
        }.await)?;
        row.map(UserRow::into_user).transpose()
    }

    /// Import a legacy user with the password set by a reset ticket, consuming the ticket in
    /// the same transaction. If the legacy user was imported meanwhile (same legacy id and
    /// email), their password is replaced instead.
    pub(crate) async fn import_with_ticket(
        &self,
        ticket_hash: &str,
        new: &NewUser<'_>,
        user_id: &str,
        // The user's second factor, sealed for `user_id`: inserted active with a new user.
        factor: Option<&NewFactor<'_>>,
    ) -> Result<Option<(User, bool)>, sqlx::Error> {
        let now = self.clock.now();
        let legacy_id = new.legacy_id.unwrap_or_default();
        let result: Option<(UserRow, bool)> = with_db!(&self.db, pool => async {
            let mut tx = pool.begin().await?;
            let consumed = sqlx::query(CONSUME_TICKET).bind(ticket_hash).bind(now).execute(&mut *tx).await?.rows_affected();
            if consumed != 1 {
                return Ok(None);
            }
            let mut created: Option<UserRow> = bind_new_user!(sqlx::query_as(INSERT_USER), new, user_id, now)
                .fetch_optional(&mut *tx)
                .await?;
            if let (Some(_), Some(factor)) = (&created, factor) {
                sqlx::query(super::factors::INSERT_ACTIVE_FACTOR)
                .bind(user_id)
                .bind(factor.key_id)
                .bind(factor.secret_ciphertext)
                .bind(factor.algorithm)
                .bind(factor.digits)
                .bind(factor.period_seconds)
                .bind(0_i64)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                created = sqlx::query_as(concat!(
                    "UPDATE users SET mfa_enrolled = TRUE WHERE user_id = $1 RETURNING ",
                    user_columns!()
                ))
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
            }
            let outcome = match created {
                Some(row) => {
                    let mut events = NewEvent::arrival(&row);
                    if factor.is_some() {
                        events.push(NewEvent::factor_enrolled(&row));
                    }
                    emit!(tx, &events, now);
                    Some((row, true))
                }
                None => sqlx::query_as::<_, UserRow>(SET_PASSWORD_BY_LEGACY_ID)
                    .bind(legacy_id)
                    .bind(new.email.normalized())
                    .bind(new.password_hash)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|row| (row, false)),
            };
            if let Some((row, false)) = &outcome {
                emit!(tx, [&NewEvent::about(EventKind::PasswordReset, row)], now);
            }
            if outcome.is_some() {
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(outcome)
        }.await)?;
        result
            .map(|(row, created)| Ok((row.into_user()?, created)))
            .transpose()
    }

    /// Use up every outstanding reset ticket of a user (or, for a legacy-only identity, of
    /// the email): after a reset or a password change, an older ticket must not reset again.
    pub(crate) async fn revoke_reset_tickets(
        &self,
        user_id: &str,
        email: &str,
    ) -> Result<u64, sqlx::Error> {
        with_db!(&self.db, pool => {
            sqlx::query(
                "UPDATE tickets SET used_at = $3 WHERE kind = 'password_reset' AND used_at IS NULL \
                 AND (user_id = $1 OR (user_id IS NULL AND email = $2))",
            )
            .bind(user_id)
            .bind(email)
            .bind(self.clock.now())
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })
    }

    /// Delete tickets that expired before `before`; how many.
    pub(crate) async fn prune_tickets(&self, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
        with_db!(&self.db, pool => {
            sqlx::query("DELETE FROM tickets WHERE expires_at < $1")
                .bind(before)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })
    }
}
