//! The operator's view of the migration (`MigrationAdmin`): how far it is, the switch that
//! ends it, the ledger, and what Trickle knows about one email.

use crate::config::Mode;
use crate::error::CoordinatorError;
use crate::ledger::MigrationEvent;
use crate::migrate_on_login::Coordinator;
use crate::upstream::StoreCounts;
use chrono::{DateTime, Utc};
use trickle_proto::auth::v1 as auth;
use trickle_proto::legacy::v1 as legacy;
use trickle_service_kit::Email;

/// Where the migration stands.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub mode: Mode,
    pub counts: StoreCounts,
    pub legacy_total: Option<i64>,
    pub legacy_remaining: Option<i64>,
    pub legacy_count_error: Option<String>,
    pub failures_last_hour: Vec<(String, i64)>,
    pub failures_last_day: Vec<(String, i64)>,
    pub last_migration_at: Option<DateTime<Utc>>,
}

/// Everything known about one email.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    pub store_user: Option<auth::User>,
    pub legacy_user: Option<legacy::LegacyUser>,
    pub tombstoned: bool,
    pub mode: Mode,
    pub legacy_error: Option<String>,
}

impl Coordinator {
    async fn migration_counts(&self) -> Result<StoreCounts, CoordinatorError> {
        self.upstream.store_counts().await
    }

    /// The legacy store's user count, or why it cannot be had.
    async fn legacy_count(&self) -> Result<i64, String> {
        self.upstream.legacy_count().await
    }

    /// Publish the users-migrated and legacy-users-remaining gauges.
    pub fn publish_gauges(status: &Status) {
        let metrics = trickle_telemetry::metrics::metrics();
        let c = &status.counts;
        for (source, n) in [
            ("login_migration", c.login_migration_users),
            ("reset_migration", c.reset_migration_users),
            ("backfill", c.backfill_users),
            ("signup", c.signup_users),
        ] {
            metrics.users_migrated.with_label_values(&[source]).set(n);
        }
        metrics
            .legacy_users_remaining
            .set(status.legacy_remaining.unwrap_or(-1));
    }

    /// Refresh the gauges every `every`, for as long as the task lives.
    pub fn spawn_gauge_refresh(&self, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let coordinator = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every.max(std::time::Duration::from_secs(1)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if let Err(e) = coordinator.status().await {
                    tracing::debug!(error = %e, "cannot refresh the migration gauges");
                }
            }
        })
    }

    pub async fn status(&self) -> Result<Status, CoordinatorError> {
        let mode = self.mode().await?;
        let counts = self.migration_counts().await?;
        let (legacy_total, legacy_count_error) = if mode == Mode::Authoritative {
            // After cutover the connector may be gone: never dial it.
            (
                None,
                Some("not asked: the mode is authoritative".to_owned()),
            )
        } else {
            match self.legacy_count().await {
                Ok(total) => (Some(total), None),
                Err(why) => (None, Some(why)),
            }
        };
        let now = self.ledger.now();
        let day_ago = now - chrono::Duration::days(1);
        self.ledger.prune_failures(day_ago).await?;
        let status = Status {
            mode,
            legacy_remaining: legacy_total.map(|total| (total - counts.accounted()).max(0)),
            legacy_total,
            legacy_count_error,
            failures_last_hour: self
                .ledger
                .failures_since(now - chrono::Duration::hours(1))
                .await?,
            failures_last_day: self.ledger.failures_since(day_ago).await?,
            last_migration_at: self.ledger.last_migration_at().await?,
            counts,
        };
        Self::publish_gauges(&status);
        Ok(status)
    }

    /// Switch the mode. To AUTHORITATIVE only when no legacy user would be left behind, or
    /// with `force`. Returns the users left behind, when known.
    #[tracing::instrument(name = "migration.set_mode", skip(self))]
    pub async fn set_mode(&self, mode: Mode, force: bool) -> Result<Option<i64>, CoordinatorError> {
        let mut remaining = None;
        if mode == Mode::Authoritative && self.mode().await? == Mode::Import {
            let counts = self.migration_counts().await?;
            match self.legacy_count().await {
                Ok(total) => {
                    let left = (total - counts.accounted()).max(0);
                    remaining = Some(left);
                    if left > 0 && !force {
                        // The census says how many of them no backfill can carry.
                        let unusable_at_census = self
                            .last_preflight()
                            .await
                            .ok()
                            .flatten()
                            .map(|r| r.unusable);
                        return Err(CoordinatorError::UsersRemaining {
                            remaining: left,
                            unusable_at_census,
                        });
                    }
                }
                Err(why) if !force => return Err(CoordinatorError::RemainingUnknown(why)),
                Err(_) => {}
            }
        }
        self.ledger.set_mode(mode).await?;
        tracing::warn!(mode = mode.as_str(), force, left_behind = ?remaining, "migration mode changed");
        Ok(remaining)
    }

    pub async fn events(
        &self,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<MigrationEvent>, CoordinatorError> {
        Ok(self.ledger.list_events(before, limit).await?)
    }

    pub async fn lookup(&self, email: &Email) -> Result<Lookup, CoordinatorError> {
        let store_user = self.upstream.store_user(email).await?;
        let mut lookup = Lookup {
            store_user,
            ..Lookup::default()
        };
        match self.find_legacy_user(email).await {
            Ok(legacy) => {
                lookup.mode = legacy.mode;
                lookup.legacy_user = legacy.user.map(crate::upstream::LegacyUser::into_wire);
                lookup.tombstoned = legacy.tombstoned;
            }
            Err(CoordinatorError::LegacyUnavailable(why)) => {
                lookup.mode = self.mode().await?;
                lookup.legacy_error = Some(why);
            }
            Err(e) => return Err(e),
        }
        Ok(lookup)
    }
}
