//! The ticket flows: password reset (of a store user, or of a legacy user the coordinator
//! then imports with the ticket) and email verification. Tickets are single use, expire on
//! the store's clock, and die with a password change, a reset or an email change.

use super::*;

#[derive(Debug)]
pub enum RedeemResetOutcome {
    Reset(User),
    /// A legacy-only identity: the coordinator must import it with the ticket.
    NeedsImport {
        legacy_id: String,
        email: String,
    },
}

/// How long tickets stay valid.
#[derive(Debug, Clone, Copy)]
pub struct TicketLifetimes {
    pub password_reset: Duration,
    pub email_verification: Duration,
}

impl Users {
    /// Import a legacy-only user whose password is being reset: the new password, the ticket
    /// consumed in the same transaction. A user who migrated since gets the new password.
    #[tracing::instrument(name = "user_store.import_on_reset", skip_all, fields(trickle.legacy.id = %import.legacy_id))]
    pub async fn import_on_reset(
        &self,
        import: Import,
        ticket: &str,
    ) -> Result<ImportOutcome, StoreError> {
        let hash = tickets::ticket_hash(ticket);
        let row = self
            .valid_ticket(ticket, &hash, tickets::KIND_PASSWORD_RESET)
            .await?;
        if row.user_id.is_some()
            || row.legacy_id.as_deref() != Some(import.legacy_id.as_str())
            || row.email != import.email.normalized()
        {
            return Err(StoreError::TicketInvalid);
        }
        if self
            .repository
            .is_legacy_id_tombstoned(&import.legacy_id)
            .await?
        {
            return Ok(ImportOutcome::Tombstoned);
        }
        let password_hash = self.hasher.hash(import.password.clone()).await?;
        // A password chosen through a reset is a new one, checked by the new-password policy.
        let new_user = import.new_user(&password_hash, false);
        // The legacy second factor moves with the user (the reset proved the email, not the
        // factor: logins still ask for a code).
        let user_id = uuid::Uuid::now_v7().to_string();
        let mut sealed = Default::default();
        let factor = match &import.totp {
            Some(totp) => Some(self.seal(&user_id, totp, &mut sealed)?),
            None => None,
        };
        match self
            .repository
            .import_with_ticket(&hash, &new_user, &user_id, factor.as_ref())
            .await?
        {
            Some((user, true)) => Ok(ImportOutcome::Created(user)),
            Some((user, false)) => Ok(ImportOutcome::AlreadyImported(user)),
            // Consumed or expired concurrently, or the legacy id now belongs to a user under
            // another email: say which, nothing was written.
            None => match self
                .valid_ticket(ticket, &hash, tickets::KIND_PASSWORD_RESET)
                .await
            {
                Ok(_) => Ok(ImportOutcome::Conflict),
                Err(e) => Err(e),
            },
        }
    }

    /// A ticket that exists, is of `kind`, unused and unexpired.
    async fn valid_ticket(
        &self,
        ticket: &str,
        hash: &str,
        kind: &str,
    ) -> Result<TicketRow, StoreError> {
        if !tickets::is_well_formed(ticket) {
            return Err(StoreError::TicketInvalid);
        }
        let row = self
            .repository
            .find_ticket(hash)
            .await?
            .ok_or(StoreError::TicketInvalid)?;
        if row.kind != kind {
            return Err(StoreError::TicketInvalid);
        }
        if row.used_at.is_some() {
            return Err(StoreError::TicketUsed);
        }
        if row.expires_at <= self.repository.now() {
            return Err(StoreError::TicketExpired);
        }
        Ok(row)
    }

    async fn issue_ticket(
        &self,
        kind: &str,
        user_id: Option<&str>,
        legacy_id: Option<&str>,
        email: &str,
        lifetime: Duration,
    ) -> Result<(Ticket, DateTime<Utc>), StoreError> {
        let ticket = Ticket::generate()
            .map_err(|e| StoreError::Internal(format!("no randomness for a ticket: {e}")))?;
        let expires_at = self.repository.now()
            + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::hours(1));
        self.repository
            .insert_ticket(
                &tickets::ticket_hash(ticket.expose()),
                kind,
                user_id,
                legacy_id,
                email,
                expires_at,
            )
            .await?;
        Ok((ticket, expires_at))
    }

    /// A reset ticket for the store user with `email`, or — `legacy_id` set — for a user only
    /// the legacy store has.
    #[tracing::instrument(name = "user_store.create_password_reset_ticket", skip_all)]
    pub async fn create_password_reset_ticket(
        &self,
        email: &Email,
        legacy_id: Option<&str>,
    ) -> Result<(Ticket, DateTime<Utc>), StoreError> {
        let lifetime = self.lifetimes.password_reset;
        if let Some(user) = self.repository.find_by_email(email.normalized()).await? {
            return self
                .issue_ticket(
                    tickets::KIND_PASSWORD_RESET,
                    Some(&user.user_id),
                    None,
                    &user.email,
                    lifetime,
                )
                .await;
        }
        let Some(legacy_id) = legacy_id else {
            return Err(StoreError::NotFound);
        };
        // Deleted, or migrated under another email since: the legacy email no longer leads
        // to an account.
        if self.repository.is_legacy_id_tombstoned(legacy_id).await?
            || self
                .repository
                .find_by_legacy_id(legacy_id)
                .await?
                .is_some()
        {
            return Err(StoreError::NotFound);
        }
        self.issue_ticket(
            tickets::KIND_PASSWORD_RESET,
            None,
            Some(legacy_id),
            email.normalized(),
            lifetime,
        )
        .await
    }

    /// Set a new password with a reset ticket.
    #[tracing::instrument(name = "user_store.redeem_password_reset", skip_all)]
    pub async fn redeem_password_reset(
        &self,
        ticket: &str,
        password: Password,
    ) -> Result<RedeemResetOutcome, StoreError> {
        let hash = tickets::ticket_hash(ticket);
        let row = self
            .valid_ticket(ticket, &hash, tickets::KIND_PASSWORD_RESET)
            .await?;
        let user_id = match (&row.user_id, &row.legacy_id) {
            // A ticket is for the email it was sent to: after an email change it resets
            // nothing (the old address may belong to someone else by now).
            (Some(user_id), _) => match self.repository.find_credentials_by_id(user_id).await? {
                Some((user, _)) if user.email == row.email => user_id.clone(),
                _ => return Err(StoreError::TicketInvalid),
            },
            (None, Some(legacy_id)) => match self.repository.find_by_legacy_id(legacy_id).await? {
                // Migrated between ticket and reset: the same account, if still under the
                // email the ticket was issued for.
                Some(user) if user.email == row.email => user.user_id,
                Some(_) => return Err(StoreError::TicketInvalid),
                None => {
                    return Ok(RedeemResetOutcome::NeedsImport {
                        legacy_id: legacy_id.clone(),
                        email: row.email,
                    });
                }
            },
            (None, None) => return Err(StoreError::TicketInvalid),
        };
        let password_hash = self.hasher.hash(password).await?;
        match self
            .repository
            .reset_password_with_ticket(&hash, &user_id, &password_hash)
            .await?
        {
            Some(user) => {
                // Whoever proved they own the email is no longer locked out by a guesser,
                // and no other reset ticket of theirs works any more.
                self.throttle.clear(&row.email).await?;
                self.repository
                    .revoke_reset_tickets(&user.user_id, &row.email)
                    .await?;
                Ok(RedeemResetOutcome::Reset(user))
            }
            None => self
                .valid_ticket(ticket, &hash, tickets::KIND_PASSWORD_RESET)
                .await
                .and(Err(StoreError::TicketInvalid)),
        }
    }

    pub async fn create_email_verification_ticket(
        &self,
        user_id: &str,
    ) -> Result<(Ticket, DateTime<Utc>), StoreError> {
        let user = self.get_by_id(user_id).await?;
        self.issue_ticket(
            tickets::KIND_EMAIL_VERIFICATION,
            Some(&user.user_id),
            None,
            &user.email,
            self.lifetimes.email_verification,
        )
        .await
    }

    /// Mark the email verified, if the ticket was issued for the user's current email.
    pub async fn redeem_email_verification(&self, ticket: &str) -> Result<User, StoreError> {
        let hash = tickets::ticket_hash(ticket);
        let row = self
            .valid_ticket(ticket, &hash, tickets::KIND_EMAIL_VERIFICATION)
            .await?;
        let user_id = row.user_id.ok_or(StoreError::TicketInvalid)?;
        match self
            .repository
            .verify_email_with_ticket(&hash, &user_id, &row.email)
            .await?
        {
            Some(user) => Ok(user),
            // The email changed since the ticket was issued, or the ticket was used meanwhile.
            None => self
                .valid_ticket(ticket, &hash, tickets::KIND_EMAIL_VERIFICATION)
                .await
                .and(Err(StoreError::TicketInvalid)),
        }
    }
}
