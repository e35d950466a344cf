//! The legacy store behind the connector: a SQL database read with queries, or a web
//! service that checks passwords itself.

use crate::error::LegacyError;
use crate::http::HttpBackend;
use crate::sql::{LegacyUser, ListedUser, LoginOutcome, SqlBackend};
use trickle_password::Password;
use trickle_service_kit::Email;

#[derive(Debug, Clone)]
pub enum LegacyBackend {
    Sql(SqlBackend),
    Http(HttpBackend),
}

impl LegacyBackend {
    pub async fn login(
        &self,
        email: &Email,
        password: Password,
    ) -> Result<LoginOutcome, LegacyError> {
        match self {
            LegacyBackend::Sql(sql) => sql.login(email, password).await,
            LegacyBackend::Http(http) => http.login(email, password).await,
        }
    }

    pub async fn get_user(&self, email: &Email) -> Result<Option<LegacyUser>, LegacyError> {
        match self {
            LegacyBackend::Sql(sql) => sql.get_user(email).await,
            LegacyBackend::Http(http) => http.get_user(email).await,
        }
    }

    /// Spend what a refused login costs here (see the contract's EqualizeRefusedLogin). The
    /// web service checks passwords itself: asking it for the user costs one round trip to
    /// it, which is what its refusals cost as seen from here, up to its own hashing.
    pub async fn equalize_refused_login(
        &self,
        email: &Email,
        lookup_only: bool,
    ) -> Result<(), LegacyError> {
        match self {
            LegacyBackend::Sql(sql) => sql.equalize_refused_login(email, lookup_only).await,
            LegacyBackend::Http(http) => http.get_user(email).await.map(drop),
        }
    }

    /// The web service keeps its hashes: it can neither count nor list for a backfill.
    pub async fn count_users(&self) -> Result<i64, LegacyError> {
        match self {
            LegacyBackend::Sql(sql) => sql.count_users().await,
            LegacyBackend::Http(_) => Err(LegacyError::CountUnsupported),
        }
    }

    pub async fn list_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ListedUser>, LegacyError> {
        match self {
            LegacyBackend::Sql(sql) => sql.list_page(after, limit).await,
            LegacyBackend::Http(http) => http.list_page(after, limit).await,
        }
    }
}
