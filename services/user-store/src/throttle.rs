//! Failed-login throttling, shared by every replica through the `login_throttle` table.
//!
//! Each login attempt is *admitted* before its password is checked: one statement counts it
//! as in flight, only while the key is not locked and its failures plus the attempts in
//! flight stay under the limit. A burst of parallel guesses is therefore counted in full
//! before any of them is hashed, and no more of them are checked than the limit allows. When
//! the check is done the attempt is *settled*: a wrong password becomes a failure (and locks
//! the key at the limit); a right one forgets the failures. An attempt that finds the limit
//! taken by attempts in flight waits for them to settle (up to 5 s): a burst of right
//! passwords goes through in turns, a burst of guesses ends in the lock, never past it.
//!
//! The counters an attempt counts toward: with an attempt source (the end user's address,
//! as the calling service knows it), (email, source) at `failures` and the email across all
//! sources at the higher `email_ceiling`, so that a guesser elsewhere cannot lock the owner
//! out until the ceiling; without one (and for ChangePassword), the email at `failures`.
//! Their keys all start with the email (`"{email}"`, `"{email} source:{digest}"`,
//! `"{email} source:*"`), so that clearing an email's failures reaches every one of them.
//! The calling client (its certificate) is counted apart, failures only.

use crate::error::StoreError;
use crate::model::ThrottleKey;
use crate::repository::Repository;
use chrono::Utc;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use trickle_service_kit::Email;

/// One counter's rule: failures within `window` that lock for `lockout`; 0 disables.
#[derive(Debug, Clone, Copy)]
pub struct Throttle {
    pub failures: u32,
    pub window: Duration,
    pub lockout: Duration,
}

impl Throttle {
    pub fn enabled(&self) -> bool {
        self.failures > 0
    }
}

/// The longest an attempt waits for attempts in flight to settle before it is refused.
const MAX_ADMISSION_WAIT: Duration = Duration::from_secs(5);

/// How long after its admission an attempt never settled stops counting (its replica or
/// its caller died): longer than any login may take.
const STALE_ATTEMPT: Duration = Duration::from_secs(120);

/// A caller of the public API, as the frontend identified it: `sha256:<hex>` of its TLS
/// client certificate. Its failures are counted in the same table as emails', under a key
/// no normalized email can equal (emails have no spaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId(ThrottleKey);

impl ClientId {
    /// `None` for an empty id (caller unknown); an id longer than 128 bytes is refused.
    pub fn parse(id: &str) -> Result<Option<Self>, &'static str> {
        if id.is_empty() {
            Ok(None)
        } else if id.len() > 128 || id.chars().any(char::is_whitespace) {
            Err("must be at most 128 bytes without whitespace")
        } else {
            Ok(Some(Self(ThrottleKey::client(id))))
        }
    }

    fn key(&self) -> &ThrottleKey {
        &self.0
    }
}

/// One counter a login attempt counts toward: its row and its limits.
#[derive(Debug, Clone)]
struct Counter {
    key: ThrottleKey,
    limits: Throttle,
}

/// Where a login attempt comes from, as the calling service knows it (the end user's IP
/// address, a device id). Personal data: only a digest of it is kept, and never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct AttemptSource(String);

impl std::fmt::Debug for AttemptSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttemptSource(..)")
    }
}

impl AttemptSource {
    /// `None` for an empty source (unknown).
    pub fn parse(source: &str) -> Result<Option<Self>, &'static str> {
        if source.is_empty() {
            return Ok(None);
        }
        if source.len() > 256 || source.chars().any(char::is_control) {
            return Err("must be at most 256 bytes without control characters");
        }
        Ok(Some(Self::of(source)))
    }

    /// The digest, as kept with a login's second-factor challenge.
    pub fn digest(&self) -> &str {
        &self.0
    }

    /// A source from its kept digest.
    pub(crate) fn from_digest(digest: String) -> Self {
        Self(digest)
    }

    fn of(source: &str) -> Self {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(source.as_bytes());
        Self(digest.iter().take(16).map(|b| format!("{b:02x}")).collect())
    }
}

/// How an admitted attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Failed,
    Succeeded,
    /// Nobody could tell (the legacy store did not answer, or an error).
    Undecided,
}

/// The answer to "may this attempt be checked?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Locked (for that long), or as many attempts in flight as failures still allowed
    /// for longer than an attempt waits (retry in a second).
    Refused(Duration),
}

#[derive(Debug, Clone)]
pub struct LoginThrottle {
    repository: Repository,
    email: Throttle,
    /// Failures per email from all sources together, when attempts name their source.
    email_ceiling: u32,
    client: Throttle,
    /// Attempts of this replica waiting to be admitted, by their first counter's key: a
    /// settle of that key wakes one of them (those of other replicas see it when their pause
    /// ends).
    waiting: Arc<std::sync::Mutex<HashMap<ThrottleKey, Arc<Notify>>>>,
}

impl LoginThrottle {
    pub fn new(
        repository: Repository,
        email: Throttle,
        email_ceiling: u32,
        client: Throttle,
    ) -> Self {
        Self {
            repository,
            email,
            email_ceiling: email_ceiling.max(email.failures),
            client,
            waiting: Arc::default(),
        }
    }

    /// The counters an attempt counts toward, most specific first.
    fn counters(&self, email: &Email, source: Option<&AttemptSource>) -> Vec<Counter> {
        if !self.email.enabled() {
            return Vec::new();
        }
        let email = email.normalized();
        match source {
            Some(source) => vec![
                Counter {
                    key: ThrottleKey::email_from_source(email, &source.0),
                    limits: self.email,
                },
                Counter {
                    key: ThrottleKey::email_ceiling(email),
                    limits: Throttle {
                        failures: self.email_ceiling,
                        ..self.email
                    },
                },
            ],
            None => vec![Counter {
                key: ThrottleKey::email(email),
                limits: self.email,
            }],
        }
    }

    /// How long the calling client is still locked, if it is.
    pub async fn client_lock(
        &self,
        client: Option<&ClientId>,
    ) -> Result<Option<Duration>, StoreError> {
        match client.filter(|_| self.client.enabled()) {
            Some(client) => Ok(self
                .repository
                .attempt_state(client.key())
                .await?
                .and_then(|row| lock_left(row.locked_until, self.repository.now()))),
            None => Ok(None),
        }
    }

    /// Admit an attempt on every counter, or on none. An attempt that finds the limit taken
    /// by attempts still in flight (not by failures) waits for them to settle, up to
    /// [`MAX_ADMISSION_WAIT`]: they may well be right passwords (one user's devices at once,
    /// a burst of first logins), and the answer to a right password must not be "retry".
    pub async fn admit(
        &self,
        email: &Email,
        source: Option<&AttemptSource>,
    ) -> Result<Admission, StoreError> {
        let counters = self.counters(email, source);
        let Some(Counter { key: first_key, .. }) = counters.first() else {
            return Ok(Admission::Admitted);
        };
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(5);
        let mut turn: Option<Arc<Notify>> = None;
        let answer = loop {
            // The first try goes straight to the write (one statement on a login's path); a
            // retry looks first.
            match self.try_admit(&counters, turn.is_some()).await {
                Ok(Admission::Refused(wait))
                    if wait.is_zero() && started.elapsed() < MAX_ADMISSION_WAIT =>
                {
                    let notify = turn.get_or_insert_with(|| self.wait_turn(first_key));
                    let _ = tokio::time::timeout(pause, notify.notified()).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Ok(Admission::Refused(wait)) if wait.is_zero() => {
                    break Ok(Admission::Refused(Duration::from_secs(1)));
                }
                answer => break answer,
            }
        };
        if let Some(notify) = turn {
            self.leave_turn(first_key, notify);
        }
        answer
    }

    fn wait_turn(&self, key: &ThrottleKey) -> Arc<Notify> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(waiting.entry(key.clone()).or_default())
    }

    fn leave_turn(&self, key: &ThrottleKey, notify: Arc<Notify>) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        drop(notify);
        // Ours and the map's were the last: nobody else waits on this key.
        if waiting.get(key).is_some_and(|n| Arc::strong_count(n) == 1) {
            waiting.remove(key);
        }
    }

    /// Wake one attempt of this replica waiting on `key`, if any.
    fn next_turn(&self, key: &ThrottleKey) {
        let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(notify) = waiting.get(key) {
            notify.notify_one();
        }
    }

    /// One try: `Refused(ZERO)` when the limit is taken by attempts in flight, not a lock.
    async fn try_admit(
        &self,
        counters: &[Counter],
        look_first: bool,
    ) -> Result<Admission, StoreError> {
        let now = self.repository.now();
        let stale_before = now - chrono_duration(STALE_ATTEMPT);
        // A look first, for attempts waiting their turn: one that would be refused is refused
        // without a write, so that many waiting on one email do not queue on its row's lock.
        for Counter { key, limits } in counters.iter().filter(|_| look_first) {
            let window = chrono_duration(limits.window);
            if let Some(row) = self.repository.attempt_state(key).await? {
                if let Some(left) = lock_left(row.locked_until, self.repository.now()) {
                    return Ok(Admission::Refused(left));
                }
                let expired = row.window_started_at < now - window || row.locked_until.is_some();
                let stale = row.in_flight_since.is_none_or(|at| at < stale_before);
                let taken =
                    if expired { 0 } else { row.failures } + if stale { 0 } else { row.in_flight };
                if taken >= i64::from(limits.failures) {
                    return Ok(Admission::Refused(Duration::ZERO));
                }
            }
        }
        for (admitted, Counter { key, limits }) in counters.iter().enumerate() {
            let window = chrono_duration(limits.window);
            if self
                .repository
                .admit_attempt(key, i64::from(limits.failures), window, stale_before)
                .await?
            {
                continue;
            }
            for earlier in &counters[..admitted] {
                self.repository.end_attempt(&earlier.key, false).await?;
            }
            let wait = self
                .repository
                .attempt_state(key)
                .await?
                .and_then(|row| lock_left(row.locked_until, self.repository.now()))
                .unwrap_or_default();
            return Ok(Admission::Refused(wait));
        }
        Ok(Admission::Admitted)
    }

    /// Settle an admitted attempt; a failure also counts toward the calling client. `Some`
    /// when this failure locked a counter: for how long.
    pub async fn settle(
        &self,
        email: &Email,
        source: Option<&AttemptSource>,
        client: Option<&ClientId>,
        outcome: AttemptOutcome,
    ) -> Result<Option<Duration>, StoreError> {
        let mut locked = None;
        for Counter { key, limits } in self.counters(email, source) {
            match outcome {
                AttemptOutcome::Failed => {
                    let until = self.count_failure(&key, &limits, true).await?;
                    if let Some(left) = lock_left(until, self.repository.now()) {
                        locked = locked.max(Some(left));
                    }
                }
                AttemptOutcome::Succeeded => self.repository.end_attempt(&key, true).await?,
                AttemptOutcome::Undecided => self.repository.end_attempt(&key, false).await?,
            }
        }
        if let Some(first) = self.counters(email, source).first() {
            self.next_turn(&first.key);
        }
        if locked.is_some() {
            tracing::warn!("too many failed logins for one email: locked for a while");
        }
        if outcome == AttemptOutcome::Failed
            && let Some(client) = client.filter(|_| self.client.enabled())
            && self
                .count_failure(client.key(), &self.client, false)
                .await?
                .is_some()
        {
            tracing::warn!(
                client = client.key().as_str(),
                "too many failed logins through one client: locked for a while"
            );
        }
        Ok(locked)
    }

    /// Forget every failure of an email, from every source (its owner proved who they are).
    pub async fn clear(&self, email: &str) -> Result<(), StoreError> {
        Ok(self.repository.clear_failures(email).await?)
    }

    async fn count_failure(
        &self,
        key: &ThrottleKey,
        throttle: &Throttle,
        ends_attempt: bool,
    ) -> Result<Option<chrono::DateTime<Utc>>, StoreError> {
        Ok(self
            .repository
            .record_failure(
                key,
                i64::from(throttle.failures),
                chrono_duration(throttle.window),
                chrono_duration(throttle.lockout),
                ends_attempt,
            )
            .await?)
    }
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::minutes(15))
}

/// How long a lock until `locked_until` still holds, if it does.
fn lock_left(
    locked_until: Option<chrono::DateTime<Utc>>,
    now: chrono::DateTime<Utc>,
) -> Option<Duration> {
    let left = locked_until? - now;
    (left > chrono::Duration::zero()).then(|| left.to_std().unwrap_or_default())
}
