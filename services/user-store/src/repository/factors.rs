//! The `user_factors`, `recovery_codes` and `mfa_challenges` tables. Every step that
//! completes a login with a code consumes the challenge and uses up the code (the TOTP step,
//! or the recovery code) in one transaction, so that neither can serve twice, whatever the
//! number of replicas.

use super::*;

/// A factor as stored: the secret still sealed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct FactorRow {
    pub key_id: String,
    pub secret_ciphertext: Vec<u8>,
    pub algorithm: String,
    pub digits: i32,
    pub period_seconds: i32,
    pub confirmed_at: Option<DateTime<Utc>>,
}

/// A factor being enrolled.
pub(crate) struct NewFactor<'a> {
    pub user_id: &'a str,
    pub key_id: &'a str,
    pub secret_ciphertext: &'a [u8],
    pub algorithm: &'a str,
    pub digits: i32,
    pub period_seconds: i32,
}

/// A challenge as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct ChallengeRow {
    pub user_id: String,
    pub email: String,
    pub attempt_source: Option<String>,
    pub wrong_codes: i32,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

/// What used up a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VerifiedBy {
    /// This TOTP step (only later steps are accepted from now on).
    TotpStep(i64),
    /// A recovery code, by its hash.
    RecoveryCode,
}

/// What a held login migration will import, besides the hash and the factor.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct HeldImport {
    pub display_email: String,
    pub email_verified: bool,
    pub profile: Profile,
    pub blocked: bool,
    pub password_change_required: bool,
}

/// A login migration held for the second factor, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct PendingImportRow {
    pub user_id: String,
    pub legacy_id: String,
    pub email: String,
    pub import_json: String,
    pub password_hash: String,
    #[sqlx(flatten)]
    pub factor: PendingFactor,
    pub wrong_codes: i32,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

/// The sealed factor of a held import (the columns of [`FactorRow`] but confirmation).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct PendingFactor {
    pub key_id: String,
    pub secret_ciphertext: Vec<u8>,
    pub algorithm: String,
    pub digits: i32,
    pub period_seconds: i32,
}

impl PendingFactor {
    pub fn as_row(&self) -> FactorRow {
        FactorRow {
            key_id: self.key_id.clone(),
            secret_ciphertext: self.secret_ciphertext.clone(),
            algorithm: self.algorithm.clone(),
            digits: self.digits,
            period_seconds: self.period_seconds,
            confirmed_at: None,
        }
    }
}

/// Wrong codes after which a challenge is spent.
pub(crate) const MAX_WRONG_CODES: i32 = 5;

/// A factor inserted active with its user (an import): $1 user, $2 key id, $3 sealed secret,
/// $4 algorithm, $5 digits, $6 period, $7 last used step, $8 now.
pub(super) const INSERT_ACTIVE_FACTOR: &str = "INSERT INTO user_factors (user_id, kind, key_id, \
     secret_ciphertext, algorithm, digits, period_seconds, last_used_step, created_at, confirmed_at) \
     VALUES ($1, 'totp', $2, $3, $4, $5, $6, $7, $8, $8)";

const CONSUME_CHALLENGE: &str = "UPDATE mfa_challenges SET used_at = $2 \
     WHERE challenge_hash = $1 AND used_at IS NULL AND expires_at > $2 AND wrong_codes < $3";

impl Repository {
    pub(crate) async fn factor(&self, user_id: &str) -> Result<Option<FactorRow>, sqlx::Error> {
        with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT key_id, secret_ciphertext, algorithm, digits, period_seconds, confirmed_at \
                 FROM user_factors WHERE user_id = $1",
            )
            .bind(user_id)
            .fetch_optional(pool)
            .await
        })
    }

    /// Store a factor to confirm, replacing an unconfirmed one. `false` when the user already
    /// has a confirmed factor (or no longer exists).
    pub(crate) async fn put_unconfirmed_factor(
        &self,
        factor: &NewFactor<'_>,
    ) -> Result<bool, sqlx::Error> {
        let now = self.clock.now();
        with_db!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO user_factors (user_id, kind, key_id, secret_ciphertext, algorithm, digits, \
                   period_seconds, last_used_step, created_at, confirmed_at) \
                 SELECT user_id, 'totp', $2, $3, $4, $5, $6, 0, $7, NULL FROM users \
                   WHERE user_id = $1 AND NOT mfa_enrolled \
                 ON CONFLICT (user_id) DO UPDATE SET key_id = excluded.key_id, \
                   secret_ciphertext = excluded.secret_ciphertext, algorithm = excluded.algorithm, \
                   digits = excluded.digits, period_seconds = excluded.period_seconds, \
                   last_used_step = 0, created_at = excluded.created_at \
                 WHERE user_factors.confirmed_at IS NULL",
            )
            .bind(factor.user_id)
            .bind(factor.key_id)
            .bind(factor.secret_ciphertext)
            .bind(factor.algorithm)
            .bind(factor.digits)
            .bind(factor.period_seconds)
            .bind(now)
            .execute(pool)
            .await
            .map(|done| done.rows_affected() == 1)
        })
    }

    /// Activate the unconfirmed factor (the code of `step` proved it), replace the recovery
    /// codes and mark the user enrolled, in one transaction. `None`: nothing to confirm (a
    /// concurrent confirmation or removal won).
    pub(crate) async fn confirm_factor(
        &self,
        user_id: &str,
        step: i64,
        recovery_code_hashes: &[String],
    ) -> Result<Option<User>, sqlx::Error> {
        let now = self.clock.now();
        let row: Option<UserRow> = with_db!(&self.db, pool => async {
            let mut tx = pool.begin().await?;
            let confirmed = sqlx::query(
                "UPDATE user_factors SET confirmed_at = $2, last_used_step = $3 \
                 WHERE user_id = $1 AND confirmed_at IS NULL",
            )
            .bind(user_id)
            .bind(now)
            .bind(step)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if confirmed != 1 {
                return Ok(None);
            }
            sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            for hash in recovery_code_hashes {
                sqlx::query("INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)")
                    .bind(user_id)
                    .bind(hash)
                    .execute(&mut *tx)
                    .await?;
            }
            let row: Option<UserRow> = sqlx::query_as(concat!(
                "UPDATE users SET mfa_enrolled = TRUE, updated_at = $2 WHERE user_id = $1 RETURNING ",
                user_columns!()
            ))
            .bind(user_id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = &row {
                emit!(tx, [&NewEvent::factor_enrolled(row)], now);
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(row)
        }.await)?;
        row.map(UserRow::into_user).transpose()
    }

    /// Remove the user's factor (confirmed or not), their recovery codes and open
    /// challenges. `None` when there is no such user; the bool says whether a factor was
    /// removed.
    pub(crate) async fn remove_factor(
        &self,
        user_id: &str,
    ) -> Result<Option<(User, bool)>, sqlx::Error> {
        let now = self.clock.now();
        let row: Option<(UserRow, bool)> = with_db!(&self.db, pool => async {
            let mut tx = pool.begin().await?;
            let removed = sqlx::query("DELETE FROM user_factors WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            for table in [
                "DELETE FROM recovery_codes WHERE user_id = $1",
                "DELETE FROM mfa_challenges WHERE user_id = $1",
            ] {
                sqlx::query(table).bind(user_id).execute(&mut *tx).await?;
            }
            let row: Option<UserRow> = sqlx::query_as(concat!(
                "UPDATE users SET mfa_enrolled = FALSE, \
                   updated_at = CASE WHEN mfa_enrolled THEN $2 ELSE updated_at END \
                 WHERE user_id = $1 RETURNING ",
                user_columns!()
            ))
            .bind(user_id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if let (Some(row), 1) = (&row, removed) {
                let event = NewEvent::about(EventKind::FactorRemoved, row).with_detail(EventDetail {
                    factor_kind: Some("totp".to_owned()),
                    ..EventDetail::default()
                });
                emit!(tx, [&event], now);
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(row.map(|row| (row, removed == 1)))
        }.await)?;
        row.map(|(row, removed)| Ok((row.into_user()?, removed)))
            .transpose()
    }

    /// Reseal a factor's secret (key rotation), if it is still the one read.
    pub(crate) async fn reseal_factor(
        &self,
        user_id: &str,
        old_ciphertext: &[u8],
        key_id: &str,
        ciphertext: &[u8],
    ) -> Result<(), sqlx::Error> {
        with_db!(&self.db, pool => {
            sqlx::query(
                "UPDATE user_factors SET key_id = $3, secret_ciphertext = $4 \
                 WHERE user_id = $1 AND secret_ciphertext = $2",
            )
            .bind(user_id)
            .bind(old_ciphertext)
            .bind(key_id)
            .bind(ciphertext)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    pub(crate) async fn insert_challenge(
        &self,
        challenge_hash: &str,
        user_id: &str,
        email: &str,
        attempt_source: Option<&str>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        with_db!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO mfa_challenges (challenge_hash, user_id, email, attempt_source, \
                   wrong_codes, created_at, expires_at) VALUES ($1, $2, $3, $4, 0, $5, $6)",
            )
            .bind(challenge_hash)
            .bind(user_id)
            .bind(email)
            .bind(attempt_source)
            .bind(self.clock.now())
            .bind(expires_at)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    pub(crate) async fn find_challenge(
        &self,
        challenge_hash: &str,
    ) -> Result<Option<ChallengeRow>, sqlx::Error> {
        with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT user_id, email, attempt_source, wrong_codes, expires_at, used_at \
                 FROM mfa_challenges WHERE challenge_hash = $1",
            )
            .bind(challenge_hash)
            .fetch_optional(pool)
            .await
        })
    }

    /// Count a wrong code against the challenge.
    pub(crate) async fn count_wrong_code(&self, challenge_hash: &str) -> Result<(), sqlx::Error> {
        with_db!(&self.db, pool => {
            sqlx::query("UPDATE mfa_challenges SET wrong_codes = wrong_codes + 1 WHERE challenge_hash = $1")
                .bind(challenge_hash)
                .execute(pool)
                .await
                .map(|_| ())
        })
    }

    /// Consume the challenge and use up what the code proved, in one transaction. `Ok(None)`
    /// when the challenge was consumed, spent or expired meanwhile; `Ok(Some(false))` when
    /// the code was used already (an earlier or the same TOTP step, a used recovery code):
    /// nothing changed then.
    pub(crate) async fn complete_challenge(
        &self,
        challenge_hash: &str,
        user_id: &str,
        verified: VerifiedBy,
        recovery_code_hash: Option<&str>,
    ) -> Result<Option<bool>, sqlx::Error> {
        let now = self.clock.now();
        with_db!(&self.db, pool => async {
            let mut tx = pool.begin().await?;
            let consumed = sqlx::query(CONSUME_CHALLENGE)
                .bind(challenge_hash)
                .bind(now)
                .bind(MAX_WRONG_CODES)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if consumed != 1 {
                return Ok(None);
            }
            let used = match verified {
                VerifiedBy::TotpStep(step) => sqlx::query(
                    "UPDATE user_factors SET last_used_step = $2 \
                     WHERE user_id = $1 AND confirmed_at IS NOT NULL AND last_used_step < $2",
                )
                .bind(user_id)
                .bind(step)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
                VerifiedBy::RecoveryCode => sqlx::query(
                    "UPDATE recovery_codes SET used_at = $3 \
                     WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
                )
                .bind(user_id)
                .bind(recovery_code_hash.unwrap_or_default())
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
            };
            if used != 1 {
                // Rolled back: the challenge stays open for a right code.
                return Ok(Some(false));
            }
            // The login of a user with a second factor succeeds here, not at the password.
            let legacy_id: Option<(Option<String>,)> =
                sqlx::query_as("SELECT legacy_id FROM users WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some((legacy_id,)) = legacy_id {
                let event = NewEvent::for_user(EventKind::LoggedIn, user_id, legacy_id.as_deref(), "")
                    .with_detail(EventDetail { second_factor: true, ..EventDetail::default() });
                emit!(tx, [&event], now);
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some(true))
        }.await)
    }

    /// Delete challenges and held imports that expired before `before`; how many.
    pub(crate) async fn prune_challenges(&self, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
        let mut pruned = 0;
        for sql in [
            "DELETE FROM mfa_challenges WHERE expires_at < $1",
            "DELETE FROM pending_imports WHERE expires_at < $1",
        ] {
            pruned += with_db!(&self.db, pool => {
                sqlx::query(sql)
                    .bind(before)
                    .execute(pool)
                    .await
                    .map(|done| done.rows_affected())
            })?;
        }
        Ok(pruned)
    }

    /// Insert a user with an active factor (`last_used_step`: the step of the code that
    /// proved it, 0 when none did), in one transaction: never the user without the factor.
    /// With `pending`, the held import it completes is consumed in the same transaction.
    /// `None`: the user's email or legacy id is taken (nothing written), or the held import
    /// was consumed, spent or expired meanwhile.
    pub(crate) async fn insert_with_factor(
        &self,
        new: &NewUser<'_>,
        factor: &NewFactor<'_>,
        last_used_step: i64,
        pending: Option<&str>,
    ) -> Result<Option<User>, sqlx::Error> {
        let now = self.clock.now();
        let row: Option<UserRow> = with_db!(&self.db, pool => async {
            let mut tx = pool.begin().await?;
            if let Some(challenge_hash) = pending {
                let consumed = sqlx::query(
                    "UPDATE pending_imports SET used_at = $2 \
                     WHERE challenge_hash = $1 AND used_at IS NULL AND expires_at > $2 AND wrong_codes < $3",
                )
                .bind(challenge_hash)
                .bind(now)
                .bind(MAX_WRONG_CODES)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if consumed != 1 {
                    return Ok(None);
                }
            }
            let created: Option<UserRow> =
                bind_new_user!(sqlx::query_as(INSERT_USER), new, factor.user_id, now)
                    .fetch_optional(&mut *tx)
                    .await?;
            if created.is_none() {
                return Ok(None);
            }
            sqlx::query(INSERT_ACTIVE_FACTOR)
            .bind(factor.user_id)
            .bind(factor.key_id)
            .bind(factor.secret_ciphertext)
            .bind(factor.algorithm)
            .bind(factor.digits)
            .bind(factor.period_seconds)
            .bind(last_used_step)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let row: Option<UserRow> = sqlx::query_as(concat!(
                "UPDATE users SET mfa_enrolled = TRUE WHERE user_id = $1 RETURNING ",
                user_columns!()
            ))
            .bind(factor.user_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = &row {
                let mut events = NewEvent::arrival(row);
                for event in &mut events {
                    // A held login migration completes with the code: a second-factor login.
                    event.detail.second_factor = event.kind == EventKind::LoggedIn;
                }
                events.push(NewEvent::factor_enrolled(row));
                emit!(tx, &events, now);
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(row)
        }.await)?;
        row.map(UserRow::into_user).transpose()
    }

    /// Hold a login migration for the second factor.
    pub(crate) async fn insert_pending_import(
        &self,
        challenge: (&str, DateTime<Utc>),
        (legacy_id, email): (&str, &str),
        import: &HeldImport,
        password_hash: &str,
        factor: &NewFactor<'_>,
    ) -> Result<(), sqlx::Error> {
        let (challenge_hash, expires_at) = challenge;
        let import_json =
            serde_json::to_string(import).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        with_db!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO pending_imports (challenge_hash, user_id, legacy_id, email, import_json, \
                   password_hash, key_id, secret_ciphertext, algorithm, digits, period_seconds, \
                   wrong_codes, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, $12, $13)",
            )
            .bind(challenge_hash)
            .bind(factor.user_id)
            .bind(legacy_id)
            .bind(email)
            .bind(&import_json)
            .bind(password_hash)
            .bind(factor.key_id)
            .bind(factor.secret_ciphertext)
            .bind(factor.algorithm)
            .bind(factor.digits)
            .bind(factor.period_seconds)
            .bind(self.clock.now())
            .bind(expires_at)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    pub(crate) async fn find_pending_import(
        &self,
        challenge_hash: &str,
    ) -> Result<Option<PendingImportRow>, sqlx::Error> {
        with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT user_id, legacy_id, email, import_json, password_hash, key_id, \
                   secret_ciphertext, algorithm, digits, period_seconds, wrong_codes, expires_at, used_at \
                 FROM pending_imports WHERE challenge_hash = $1",
            )
            .bind(challenge_hash)
            .fetch_optional(pool)
            .await
        })
    }

    pub(crate) async fn count_wrong_pending_code(
        &self,
        challenge_hash: &str,
    ) -> Result<(), sqlx::Error> {
        with_db!(&self.db, pool => {
            sqlx::query("UPDATE pending_imports SET wrong_codes = wrong_codes + 1 WHERE challenge_hash = $1")
                .bind(challenge_hash)
                .execute(pool)
                .await
                .map(|_| ())
        })
    }
}
