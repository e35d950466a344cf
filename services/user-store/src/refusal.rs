//! What a refused login costs. Every refusal must cost the same, whoever the email belongs to
//! (a migrated user, a deleted one, one backfilled with their legacy hash, a locked email, an
//! email nobody has), or the time of the answer tells which accounts exist: one verification
//! at the store's argon2id parameters and, where some users still hold a legacy hash, one
//! verification of a legacy hash.
//!
//! While users are being imported the legacy connector spends the legacy share (the
//! coordinator asks it). Once the store decides alone (AUTHORITATIVE), the store spends it
//! itself, against one of its own backfilled hashes: those came from the legacy store, so
//! they cost what the legacy store's checks cost, and nobody outside can choose them.

use crate::repository::Repository;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use trickle_password::{HashFormat, HashPool, Password, PoolError, StoredHash};

/// How many backfilled hashes are timed to choose the legacy share.
const SAMPLE: i64 = 7;
/// How often the choice is made again (backfills run, users move off their legacy hashes).
const REFRESH: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct RefusalCost {
    hasher: HashPool,
    legacy: Arc<RwLock<LegacyShare>>,
}

#[derive(Debug, Default)]
struct LegacyShare {
    /// A stored hash in a legacy format, of median cost; `None` when no user holds one.
    hash: Option<StoredHash>,
    chosen_at: Option<Instant>,
}

impl RefusalCost {
    pub fn new(hasher: HashPool) -> Self {
        Self {
            hasher,
            legacy: Arc::default(),
        }
    }

    /// Spend a refusal's cost on `password`: the store's share (a dummy argon2id hash) unless
    /// `store_share_paid`, and the legacy share when `legacy_share` is asked for and some
    /// user still holds a legacy hash.
    pub async fn spend(
        &self,
        password: Password,
        store_share_paid: bool,
        legacy_share: bool,
    ) -> Result<(), PoolError> {
        if !store_share_paid {
            self.hasher.verify_dummy(password.clone()).await?;
        }
        if legacy_share && let Some(hash) = self.legacy_hash() {
            self.hasher.verify(password, hash).await?;
        }
        Ok(())
    }

    fn legacy_hash(&self) -> Option<StoredHash> {
        self.legacy.read().ok().and_then(|share| share.hash.clone())
    }

    /// Whether the legacy share should be chosen again (and mark it as being chosen).
    pub fn refresh_due(&self) -> bool {
        // Every login asks: a read lock answers the usual "not yet" without making logins
        // queue on the write lock.
        let recent = |share: &LegacyShare| share.chosen_at.is_some_and(|at| at.elapsed() < REFRESH);
        if self.legacy.read().map_or(true, |share| recent(&share)) {
            return false;
        }
        let Ok(mut share) = self.legacy.write() else {
            return false;
        };
        if share.chosen_at.is_some_and(|at| at.elapsed() < REFRESH) {
            return false;
        }
        share.chosen_at = Some(Instant::now());
        true
    }

    /// Choose again at the next chance (this replica just stored legacy hashes; the other
    /// replicas catch up within [`REFRESH`]).
    pub fn mark_stale(&self) {
        if let Ok(mut share) = self.legacy.write() {
            share.chosen_at = None;
        }
    }

    /// Choose the legacy share from the store's own legacy-format hashes.
    pub async fn refresh(&self, repository: &Repository) {
        let stored = match repository.legacy_format_hashes(SAMPLE).await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(%error, "cannot read backfilled hashes to price refused logins; trying again later");
                if let Ok(mut share) = self.legacy.write() {
                    share.chosen_at = None;
                }
                return;
            }
        };
        let sample = stored
            .iter()
            .filter_map(|s| StoredHash::parse(s, HashFormat::Auto).ok())
            .collect::<Vec<_>>();
        let chosen = self.hasher.representative(sample).await;
        if let Ok(mut share) = self.legacy.write() {
            share.hash = chosen;
        }
    }

    /// Refresh in the background when due; the refusal at hand does not wait for it.
    pub fn refresh_when_due(&self, repository: &Repository) {
        if self.refresh_due() {
            let this = self.clone();
            let repository = repository.clone();
            tokio::spawn(async move { this.refresh(&repository).await });
        }
    }
}
