//! Whether an access token still speaks for its user: the user exists, and has not changed
//! their password since the token was issued. The store knows; its answer is remembered for
//! a short while so that validating the same user's tokens stays cheap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trickle_service_kit::Clock;

/// At most this many users are remembered; past it the memory starts over.
const MAX_REMEMBERED: usize = 50_000;

/// What the store said of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSubject {
    /// Deleted, blocked, or never existed.
    Gone,
    /// Exists; the password last changed at this time (seconds since the epoch), if ever.
    Present { credentials_changed_at: Option<i64> },
}

impl TokenSubject {
    /// Whether a token issued at `iat` (seconds) still holds. A token issued in the same
    /// second as the change holds: `iat` has no finer grain.
    pub fn accepts(self, iat: i64) -> bool {
        match self {
            TokenSubject::Gone => false,
            TokenSubject::Present {
                credentials_changed_at,
            } => credentials_changed_at.is_none_or(|changed| iat >= changed),
        }
    }
}

/// The short memory of [`TokenSubject`]s. A deletion or a password change is seen by every
/// replica within `ttl`.
#[derive(Debug, Clone)]
pub struct SubjectCache {
    ttl: Duration,
    clock: Clock,
    entries: Arc<Mutex<HashMap<String, (Instant, TokenSubject)>>>,
}

impl SubjectCache {
    pub fn new(ttl: Duration, clock: Clock) -> Self {
        Self {
            ttl,
            clock,
            entries: Arc::default(),
        }
    }

    pub fn get(&self, user_id: &str) -> Option<TokenSubject> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().ok()?;
        let (at, subject) = entries.get(user_id)?;
        (self.clock.instant().saturating_duration_since(*at) < self.ttl).then_some(*subject)
    }

    pub fn put(&self, user_id: &str, subject: TokenSubject) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_REMEMBERED {
                entries.clear();
            }
            entries.insert(user_id.to_owned(), (self.clock.instant(), subject));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_from_before_a_password_change_or_of_a_gone_user_do_not_hold() {
        let changed = TokenSubject::Present {
            credentials_changed_at: Some(1_000),
        };
        assert!(!changed.accepts(999));
        assert!(changed.accepts(1_000));
        assert!(
            TokenSubject::Present {
                credentials_changed_at: None
            }
            .accepts(1)
        );
        assert!(!TokenSubject::Gone.accepts(i64::MAX));
        let clock = Clock::system();
        let cache = SubjectCache::new(Duration::from_secs(60), clock.clone());
        cache.put("u", TokenSubject::Gone);
        assert_eq!(cache.get("u"), Some(TokenSubject::Gone));
        clock.advance(Duration::from_secs(60));
        assert_eq!(cache.get("u"), None, "forgotten after the ttl");
        assert_eq!(SubjectCache::new(Duration::ZERO, clock).get("u"), None);
    }
}
