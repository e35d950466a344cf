//! Second factors: enrolling a TOTP authenticator, and the second step of a login. A login
//! whose password is right for a user with a factor ends in a challenge, not a login; the
//! challenge and a code finish it. Wrong codes count toward the account's throttle exactly
//! as wrong passwords do (the same counters, admitted and settled the same way), so a
//! password holder gets as few code guesses as a stranger gets password guesses.

use super::*;
use crate::factors::{self, FactorKeys};
use crate::repository::{FactorRow, HeldImport, NewFactor, PendingImportRow, VerifiedBy};
use trickle_password::totp::{Totp, TotpAlgorithm, TotpParams, TotpSecret};

/// What the store needs for second factors.
#[derive(Debug, Clone)]
pub struct FactorSettings {
    /// `None`: no key configured, nothing can be enrolled.
    pub keys: Option<FactorKeys>,
    /// Shown by authenticator apps.
    pub issuer: String,
    pub challenge_ttl: Duration,
}

impl Default for FactorSettings {
    fn default() -> Self {
        Self {
            keys: None,
            issuer: "Trickle".into(),
            challenge_ttl: Duration::from_secs(300),
        }
    }
}

/// A secret to show to the user once.
#[derive(Debug)]
pub struct Enrollment {
    pub secret: TotpSecret,
    pub otpauth_uri: String,
    pub params: TotpParams,
}

/// How a second step ended.
#[derive(Debug)]
pub enum MfaOutcome {
    /// `migrated`: this code completed a login migration held for it.
    Verified {
        user: User,
        method: MfaMethod,
        migrated: bool,
    },
    WrongCode,
    ChallengeInvalid,
    Throttled {
        retry_after: Duration,
    },
    Blocked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MfaMethod {
    Totp,
    RecoveryCode,
}

impl Users {
    fn factor_keys(&self) -> Result<&FactorKeys, StoreError> {
        self.factors
            .keys
            .as_ref()
            .ok_or(StoreError::FactorsNotConfigured)
    }

    fn now_unix(&self) -> u64 {
        u64::try_from(self.repository.now().timestamp()).unwrap_or(0)
    }

    /// Open a stored factor.
    fn open_factor(&self, user_id: &str, row: &FactorRow) -> Result<Totp, StoreError> {
        let secret = self
            .factor_keys()?
            .open(&row.key_id, user_id, &row.secret_ciphertext)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let params = TotpParams {
            algorithm: TotpAlgorithm::parse(&row.algorithm).ok_or_else(|| {
                StoreError::Internal(format!("factor of user {user_id}: unknown algorithm"))
            })?,
            digits: u32::try_from(row.digits).unwrap_or(0),
            period_seconds: u32::try_from(row.period_seconds).unwrap_or(0),
        };
        Totp::new(secret, params)
            .map_err(|e| StoreError::Internal(format!("factor of user {user_id}: {e}")))
    }

    /// A new secret for `user_id`, not active until confirmed.
    #[tracing::instrument(name = "user_store.enroll_totp", skip_all, fields(trickle.user.id = %user_id))]
    pub async fn enroll_totp(&self, user_id: &str) -> Result<Enrollment, StoreError> {
        let keys = self.factor_keys()?;
        let user = self
            .repository
            .find_by_id(user_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        if user.mfa_enrolled {
            return Err(StoreError::FactorExists);
        }
        let params = TotpParams::default();
        let secret = TotpSecret::generate().map_err(|e| StoreError::Internal(e.to_string()))?;
        let (key_id, sealed) = keys.seal(user_id, &secret).map_err(StoreError::Internal)?;
        let stored = self
            .repository
            .put_unconfirmed_factor(&NewFactor {
                user_id,
                key_id: &key_id,
                secret_ciphertext: &sealed,
                algorithm: params.algorithm.as_str(),
                digits: i32::try_from(params.digits).unwrap_or(6),
                period_seconds: i32::try_from(params.period_seconds).unwrap_or(30),
            })
            .await?;
        if !stored {
            // Confirmed concurrently, or deleted.
            return Err(match self.repository.find_by_id(user_id).await? {
                Some(_) => StoreError::FactorExists,
                None => StoreError::NotFound,
            });
        }
        let factor = Totp::new(secret, params).map_err(|e| StoreError::Internal(e.to_string()))?;
        let otpauth_uri = factor
            .otpauth_uri(&self.factors.issuer, &user.display_email)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        Ok(Enrollment {
            secret: factor.secret,
            otpauth_uri,
            params,
        })
    }

    /// Activate the enrolled factor with a code from it; the user's new recovery codes.
    #[tracing::instrument(name = "user_store.confirm_totp", skip_all, fields(trickle.user.id = %user_id))]
    pub async fn confirm_totp(
        &self,
        user_id: &str,
        code: &str,
    ) -> Result<(User, Vec<String>), StoreError> {
        let row = match self.repository.factor(user_id).await? {
            Some(row) if row.confirmed_at.is_none() => row,
            Some(_) => return Err(StoreError::FactorExists),
            None => {
                return Err(match self.repository.find_by_id(user_id).await? {
                    Some(_) => StoreError::FactorNotFound,
                    None => StoreError::NotFound,
                });
            }
        };
        let factor = self.open_factor(user_id, &row)?;
        let step = factor
            .verify(code, self.now_unix())
            .ok_or(StoreError::InvalidMfaCode)?;
        let codes = (0..factors::RECOVERY_CODES)
            .map(|_| factors::generate_recovery_code())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let hashes: Vec<String> = codes
            .iter()
            .filter_map(|code| factors::normalize_recovery_code(code))
            .map(|code| factors::recovery_code_hash(&code))
            .collect();
        let user = self
            .repository
            .confirm_factor(user_id, i64::try_from(step).unwrap_or(i64::MAX), &hashes)
            .await?
            .ok_or(StoreError::FactorNotFound)?;
        tracing::info!(trickle.user.id = %user_id, "second factor enrolled");
        Ok((user, codes))
    }

    /// Remove the user's factor and recovery codes.
    #[tracing::instrument(name = "user_store.remove_factor", skip_all, fields(trickle.user.id = %user_id))]
    pub async fn remove_factor(&self, user_id: &str) -> Result<User, StoreError> {
        match self.repository.remove_factor(user_id).await? {
            Some((user, true)) => {
                tracing::info!(trickle.user.id = %user_id, "second factor removed");
                Ok(user)
            }
            Some((_, false)) => Err(StoreError::FactorNotFound),
            None => Err(StoreError::NotFound),
        }
    }

    /// Seal `factor` for `user_id` with the current key: the row to store.
    pub(super) fn seal<'a>(
        &self,
        user_id: &'a str,
        factor: &Totp,
        sealed: &'a mut (String, Vec<u8>),
    ) -> Result<NewFactor<'a>, StoreError> {
        *sealed = self
            .factor_keys()?
            .seal(user_id, &factor.secret)
            .map_err(StoreError::Internal)?;
        Ok(NewFactor {
            user_id,
            key_id: &sealed.0,
            secret_ciphertext: &sealed.1,
            algorithm: factor.params.algorithm.as_str(),
            digits: i32::try_from(factor.params.digits).unwrap_or(6),
            period_seconds: i32::try_from(factor.params.period_seconds).unwrap_or(30),
        })
    }

    /// A login migration of a user with a legacy second factor: nothing is imported on the
    /// password. What the import will write is held (the password already hashed) until a
    /// code from the factor ([`Users::verify_mfa`]); the challenge to send it with.
    pub(super) async fn hold_import_for_mfa(
        &self,
        import: &Import,
        factor: &Totp,
    ) -> Result<Ticket, StoreError> {
        let password_hash = self.hasher.hash(import.password.clone()).await?;
        let password_change_required = self.migrated_password_needs_change(&import.password).await;
        let user_id = uuid::Uuid::now_v7().to_string();
        let mut sealed = Default::default();
        let new_factor = self.seal(&user_id, factor, &mut sealed)?;
        let challenge = Ticket::generate().map_err(|e| StoreError::Internal(e.to_string()))?;
        let ttl = chrono::Duration::from_std(self.factors.challenge_ttl)
            .unwrap_or(chrono::Duration::minutes(5));
        self.repository
            .insert_pending_import(
                (
                    &tickets::ticket_hash(challenge.expose()),
                    self.repository.now() + ttl,
                ),
                (&import.legacy_id, import.email.normalized()),
                &HeldImport {
                    display_email: import.email.display().to_owned(),
                    email_verified: import.email_verified,
                    profile: import.profile.clone(),
                    blocked: import.blocked,
                    password_change_required,
                },
                &password_hash,
                &new_factor,
            )
            .await?;
        Ok(challenge)
    }

    /// Import a legacy user together with their second factor (a password reset, the
    /// backfill: no code to ask for), in one transaction. `None`: the email or legacy id is
    /// taken.
    pub(super) async fn insert_with_factor(
        &self,
        new: &NewUser<'_>,
        factor: &Totp,
    ) -> Result<Option<User>, StoreError> {
        let user_id = uuid::Uuid::now_v7().to_string();
        let mut sealed = Default::default();
        let new_factor = self.seal(&user_id, factor, &mut sealed)?;
        Ok(self
            .repository
            .insert_with_factor(new, &new_factor, 0, None)
            .await?)
    }

    /// A challenge for the second step of `user`'s login.
    pub(super) async fn begin_challenge(
        &self,
        user: &User,
        source: Option<&AttemptSource>,
    ) -> Result<Ticket, StoreError> {
        let challenge = Ticket::generate().map_err(|e| StoreError::Internal(e.to_string()))?;
        let ttl = chrono::Duration::from_std(self.factors.challenge_ttl)
            .unwrap_or(chrono::Duration::minutes(5));
        self.repository
            .insert_challenge(
                &tickets::ticket_hash(challenge.expose()),
                &user.user_id,
                &user.email,
                source.map(AttemptSource::digest),
                self.repository.now() + ttl,
            )
            .await?;
        Ok(challenge)
    }

    /// The second step of a login: a code (TOTP, or a recovery code) for a challenge.
    #[tracing::instrument(name = "user_store.verify_mfa", skip_all, fields(trickle.user.id, trickle.mfa.method))]
    pub async fn verify_mfa(
        &self,
        challenge: &str,
        code: &str,
        client: Option<&ClientId>,
    ) -> Result<MfaOutcome, StoreError> {
        if !tickets::is_well_formed(challenge) {
            return Ok(MfaOutcome::ChallengeInvalid);
        }
        let challenge_hash = tickets::ticket_hash(challenge);
        let Some(row) = self.repository.find_challenge(&challenge_hash).await? else {
            return match self.repository.find_pending_import(&challenge_hash).await? {
                Some(held) => {
                    self.verify_held_import(&challenge_hash, held, code, client)
                        .await
                }
                None => Ok(MfaOutcome::ChallengeInvalid),
            };
        };
        let now = self.repository.now();
        if row.used_at.is_some()
            || row.expires_at <= now
            || row.wrong_codes >= crate::repository::MAX_WRONG_CODES
        {
            return Ok(MfaOutcome::ChallengeInvalid);
        }
        tracing::Span::current().record("trickle.user.id", row.user_id.as_str());
        if let Some(retry_after) = self.throttle.client_lock(client).await? {
            return Ok(MfaOutcome::Throttled { retry_after });
        }
        let email = Email::parse(&row.email)
            .map_err(|_| StoreError::Internal("a challenge holds an unreadable email".into()))?;
        let source = row.attempt_source.clone().map(AttemptSource::from_digest);
        // Counted before it is checked, on the counters of the login it finishes.
        if let Admission::Refused(retry_after) =
            self.throttle.admit(&email, source.as_ref()).await?
        {
            return Ok(MfaOutcome::Throttled { retry_after });
        }
        let checked = self.check_code(&challenge_hash, &row.user_id, code).await;
        let settled = match &checked {
            Ok(MfaOutcome::Verified { .. }) => AttemptOutcome::Succeeded,
            Ok(MfaOutcome::WrongCode) => AttemptOutcome::Failed,
            _ => AttemptOutcome::Undecided,
        };
        self.throttle
            .settle(&email, source.as_ref(), client, settled)
            .await?;
        if matches!(checked, Ok(MfaOutcome::WrongCode)) {
            self.repository.count_wrong_code(&challenge_hash).await?;
        }
        checked
    }

    async fn check_code(
        &self,
        challenge_hash: &str,
        user_id: &str,
        code: &str,
    ) -> Result<MfaOutcome, StoreError> {
        let Some(row) = self
            .repository
            .factor(user_id)
            .await?
            .filter(|row| row.confirmed_at.is_some())
        else {
            // Removed since the password was checked: the login starts over.
            return Ok(MfaOutcome::ChallengeInvalid);
        };
        let factor = self.open_factor(user_id, &row)?;
        let code = code.trim();
        let (verified, recovery_hash, method) =
            if trickle_password::totp::is_code(code, factor.params.digits) {
                match factor.verify(code, self.now_unix()) {
                    Some(step) => (
                        VerifiedBy::TotpStep(i64::try_from(step).unwrap_or(i64::MAX)),
                        None,
                        MfaMethod::Totp,
                    ),
                    None => return Ok(MfaOutcome::WrongCode),
                }
            } else {
                match factors::normalize_recovery_code(code) {
                    Some(normalized) => (
                        VerifiedBy::RecoveryCode,
                        Some(factors::recovery_code_hash(&normalized)),
                        MfaMethod::RecoveryCode,
                    ),
                    None => return Ok(MfaOutcome::WrongCode),
                }
            };
        match self
            .repository
            .complete_challenge(challenge_hash, user_id, verified, recovery_hash.as_deref())
            .await?
        {
            None => return Ok(MfaOutcome::ChallengeInvalid),
            // A code already used (a replayed TOTP step, a spent recovery code).
            Some(false) => return Ok(MfaOutcome::WrongCode),
            Some(true) => {}
        }
        self.reseal_if_rotated(user_id, &row, &factor).await;
        tracing::Span::current().record(
            "trickle.mfa.method",
            match method {
                MfaMethod::Totp => "totp",
                MfaMethod::RecoveryCode => "recovery_code",
            },
        );
        let user = self
            .repository
            .find_by_id(user_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        if user.blocked {
            return Ok(MfaOutcome::Blocked);
        }
        Ok(MfaOutcome::Verified {
            user,
            method,
            migrated: false,
        })
    }

    /// The second step of a login migration held for the legacy factor: a right code
    /// imports the user with the factor, in one transaction; nothing else imports anything.
    async fn verify_held_import(
        &self,
        challenge_hash: &str,
        held: PendingImportRow,
        code: &str,
        client: Option<&ClientId>,
    ) -> Result<MfaOutcome, StoreError> {
        if held.used_at.is_some()
            || held.expires_at <= self.repository.now()
            || held.wrong_codes >= crate::repository::MAX_WRONG_CODES
        {
            return Ok(MfaOutcome::ChallengeInvalid);
        }
        if let Some(retry_after) = self.throttle.client_lock(client).await? {
            return Ok(MfaOutcome::Throttled { retry_after });
        }
        let email = Email::parse(&held.email)
            .map_err(|_| StoreError::Internal("a held import has an unreadable email".into()))?;
        if let Admission::Refused(retry_after) = self.throttle.admit(&email, None).await? {
            return Ok(MfaOutcome::Throttled { retry_after });
        }
        let checked = self.import_held(challenge_hash, &held, code.trim()).await;
        let settled = match &checked {
            Ok(MfaOutcome::Verified { .. }) => AttemptOutcome::Succeeded,
            Ok(MfaOutcome::WrongCode) => AttemptOutcome::Failed,
            _ => AttemptOutcome::Undecided,
        };
        self.throttle.settle(&email, None, client, settled).await?;
        if matches!(checked, Ok(MfaOutcome::WrongCode)) {
            self.repository
                .count_wrong_pending_code(challenge_hash)
                .await?;
        }
        checked
    }

    async fn import_held(
        &self,
        challenge_hash: &str,
        held: &PendingImportRow,
        code: &str,
    ) -> Result<MfaOutcome, StoreError> {
        let factor = self.open_factor(&held.user_id, &held.factor.as_row())?;
        let Some(step) = factor.verify(code, self.now_unix()) else {
            // A legacy user has no recovery codes here yet: only their authenticator counts.
            return Ok(MfaOutcome::WrongCode);
        };
        let import: HeldImport = serde_json::from_str(&held.import_json)
            .map_err(|e| StoreError::Internal(format!("a held import is unreadable: {e}")))?;
        let email = Email::parse(&import.display_email)
            .map_err(|_| StoreError::Internal("a held import has an unreadable email".into()))?;
        let new = NewUser {
            email: &email,
            email_verified: import.email_verified,
            legacy_id: Some(&held.legacy_id),
            password_hash: &held.password_hash,
            profile: &import.profile,
            source: Source::LoginMigration,
            blocked: import.blocked,
            password_change_required: import.password_change_required,
        };
        let new_factor = NewFactor {
            user_id: &held.user_id,
            key_id: &held.factor.key_id,
            secret_ciphertext: &held.factor.secret_ciphertext,
            algorithm: &held.factor.algorithm,
            digits: held.factor.digits,
            period_seconds: held.factor.period_seconds,
        };
        let Some(user) = self
            .repository
            .insert_with_factor(
                &new,
                &new_factor,
                i64::try_from(step).unwrap_or(i64::MAX),
                Some(challenge_hash),
            )
            .await?
        else {
            // Consumed meanwhile, or the user arrived another way (a concurrent login's
            // code, a reset): the next login finds them in the store.
            return Ok(MfaOutcome::ChallengeInvalid);
        };
        tracing::Span::current().record("trickle.user.id", user.user_id.as_str());
        tracing::info!(trickle.user.id = %user.user_id, trickle.legacy.id = %held.legacy_id, "user migrated on login with their second factor");
        if user.blocked {
            return Ok(MfaOutcome::Blocked);
        }
        Ok(MfaOutcome::Verified {
            user,
            method: MfaMethod::Totp,
            migrated: true,
        })
    }

    /// A factor sealed with a key that is no longer current is resealed with the current
    /// one, so that old keys can be retired once every active user has logged in.
    async fn reseal_if_rotated(&self, user_id: &str, row: &FactorRow, factor: &Totp) {
        let Ok(keys) = self.factor_keys() else {
            return;
        };
        if row.key_id == keys.current_id() {
            return;
        }
        let resealed = match keys.seal(user_id, &factor.secret) {
            Ok((key_id, sealed)) => {
                self.repository
                    .reseal_factor(user_id, &row.secret_ciphertext, &key_id, &sealed)
                    .await
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reseal a second-factor secret");
                return;
            }
        };
        if let Err(e) = resealed {
            tracing::warn!(error = %e, "cannot reseal a second-factor secret");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::throttle::LoginThrottle;
    use trickle_service_kit::Clock;

    async fn users_with_keys(
        repository: &Repository,
        dir: &std::path::Path,
        current: &str,
    ) -> Users {
        let throttle = Throttle {
            failures: 10,
            window: Duration::from_secs(900),
            lockout: Duration::from_secs(900),
        };
        let hasher = HashPool::new(
            "test",
            trickle_password::Argon2Config {
                memory_kib: 1024,
                iterations: 1,
                parallelism: 1,
            },
            1,
            4,
        )
        .expect("pool");
        let keys = FactorKeys::load("", &dir.display().to_string(), current)
            .expect("keys")
            .expect("set");
        Users::new(
            repository.clone(),
            hasher,
            TicketLifetimes {
                password_reset: Duration::from_secs(60),
                email_verification: Duration::from_secs(60),
            },
            LoginThrottle::new(repository.clone(), throttle, 100, throttle),
        )
        .with_factors(FactorSettings {
            keys: Some(keys),
            ..FactorSettings::default()
        })
    }

    /// Key rotation as the README promises it: a factor sealed with a key that is no longer
    /// current still works, and its next good code reseals it with the current key, so the
    /// old key can be retired.
    #[tokio::test]
    async fn a_factor_sealed_with_an_old_key_is_resealed_by_its_next_code() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Clock::system();
        let repository = crate::repository::test_repository(dir.path(), clock.clone()).await;
        let user = crate::repository::test_user(&repository, "rotate@example.com", "unused").await;
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).expect("keys dir");
        std::fs::write(
            keys.join("2025"),
            crate::factors::generate_key().expect("rng"),
        )
        .expect("key");
        let before = users_with_keys(&repository, &keys, "2025").await;
        let enrollment = before.enroll_totp(&user.user_id).await.expect("enroll");
        let factor = Totp::new(enrollment.secret, enrollment.params).expect("factor");
        let now = || u64::try_from(clock.unix_seconds()).expect("after 1970");
        before
            .confirm_totp(&user.user_id, &factor.code_at(now()))
            .await
            .expect("confirm");
        let key_of = || async {
            repository
                .factor(&user.user_id)
                .await
                .expect("read")
                .expect("factor")
                .key_id
        };
        assert_eq!(key_of().await, "2025");

        // A new key becomes current; the old one stays to open what it sealed.
        std::fs::write(
            keys.join("2026"),
            crate::factors::generate_key().expect("rng"),
        )
        .expect("key");
        let after = users_with_keys(&repository, &keys, "2026").await;
        let user = repository
            .find_by_id(&user.user_id)
            .await
            .expect("read")
            .expect("user");
        let challenge = after.begin_challenge(&user, None).await.expect("challenge");
        clock.advance(Duration::from_secs(30));
        let outcome = after
            .verify_mfa(challenge.expose(), &factor.code_at(now()), None)
            .await
            .expect("verify");
        assert!(
            matches!(outcome, MfaOutcome::Verified { .. }),
            "{outcome:?}"
        );
        assert_eq!(key_of().await, "2026", "resealed with the current key");

        // With the old key gone, the factor still opens.
        std::fs::remove_file(keys.join("2025")).expect("retire");
        let retired = users_with_keys(&repository, &keys, "2026").await;
        let challenge = retired
            .begin_challenge(&user, None)
            .await
            .expect("challenge");
        clock.advance(Duration::from_secs(30));
        let outcome = retired
            .verify_mfa(challenge.expose(), &factor.code_at(now()), None)
            .await
            .expect("verify");
        assert!(
            matches!(outcome, MfaOutcome::Verified { .. }),
            "{outcome:?}"
        );
    }
}
