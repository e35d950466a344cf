//! The webhook: every event POSTed, in order and in batches, to one HTTPS endpoint, signed
//! with HMAC-SHA256. Delivery is at least once: the position of the last settled event is
//! written after the endpoint answered 2xx, so a crash between the two sends that batch
//! again, and receivers dedupe by event `id`.
//!
//! One coordinator replica delivers at a time, under a lease in the coordinator's database;
//! another (or the same one after a restart) takes over once the lease has run out.
//!
//! A batch that keeps failing is retried with doubling waits up to `webhook_max_attempts`
//! tries, then given up: its events are counted in `trickle_webhook_events_total{outcome=
//! "dead_letter"}`, their positions logged, and delivery goes on (one bad endpoint day must
//! not stop the feed for ever). A consumer can fetch what it missed from WatchEvents.

use crate::config::MigrationConfig;
use crate::error::CoordinatorError;
use crate::events::EventReader;
use hmac::{KeyInit as _, Mac as _};
use std::time::Duration;
use tokio::task::JoinHandle;
use trickle_proto::events::v1::{Event, UserSource};
use trickle_service_kit::Clock;
use trickle_service_kit::db::Db;
use trickle_service_kit::rpc::reason;
use trickle_service_kit::with_db;

/// The signature header: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub const SIGNATURE_HEADER: &str = "Trickle-Signature";
/// Which try of this batch the POST is (1 for the first).
pub const ATTEMPT_HEADER: &str = "Trickle-Delivery-Attempt";

/// The shortest webhook secret accepted.
const MIN_SECRET_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    #[error("[migration] webhook_url {0:?} is not an http(s) URL")]
    BadUrl(String),
    #[error(
        "[migration] webhook_url must be https:// (events carry user ids and emails); plain \
         http:// is accepted only for a loopback host"
    )]
    PlainHttp,
    #[error(
        "[migration] webhook_secret must be set (at least {MIN_SECRET_BYTES} bytes) when \
         webhook_url is: receivers check the signature with it"
    )]
    NoSecret,
    #[error("cannot build the webhook's HTTP client: {0}")]
    Client(String),
}

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub url: reqwest::Url,
    secret: Vec<u8>,
    pub batch: i32,
    pub max_attempts: u32,
    pub backoff: Duration,
    pub backoff_max: Duration,
    pub timeout: Duration,
    pub lease: Duration,
}

impl WebhookSettings {
    /// The webhook of `config`, `None` when no URL is set.
    pub fn from_config(config: &MigrationConfig) -> Result<Option<Self>, WebhookConfigError> {
        let raw = config.webhook_url.trim();
        if raw.is_empty() {
            return Ok(None);
        }
        let url = reqwest::Url::parse(raw).map_err(|_| WebhookConfigError::BadUrl(redact(raw)))?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            "http" => return Err(WebhookConfigError::PlainHttp),
            _ => return Err(WebhookConfigError::BadUrl(redact(raw))),
        }
        if config.webhook_secret.0.len() < MIN_SECRET_BYTES {
            return Err(WebhookConfigError::NoSecret);
        }
        Ok(Some(Self {
            url,
            secret: config.webhook_secret.0.as_bytes().to_vec(),
            batch: i32::try_from(config.webhook_batch.clamp(1, 1000)).unwrap_or(100),
            max_attempts: config.webhook_max_attempts.max(1),
            backoff: Duration::from_millis(config.webhook_backoff_ms.max(1)),
            backoff_max: Duration::from_millis(
                config.webhook_backoff_max_ms.max(config.webhook_backoff_ms),
            ),
            timeout: Duration::from_millis(config.webhook_timeout_ms.max(1)),
            lease: Duration::from_secs(config.webhook_lease_seconds.max(1)),
        }))
    }

    /// The signature header's value for `body` sent at `timestamp` (unix seconds).
    pub fn signature(&self, timestamp: i64, body: &[u8]) -> String {
        signature(&self.secret, timestamp, body)
    }

    /// The wait after failed try number `attempt` (1-based): doubling, capped.
    fn backoff_after(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.backoff.saturating_mul(factor).min(self.backoff_max)
    }
}

/// `t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`: the timestamp is
/// signed with the body, so a receiver that refuses old timestamps refuses replays.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret)
        .expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A URL without its query and user info (either may hold a token), for error messages.
fn redact(raw: &str) -> String {
    match reqwest::Url::parse(raw) {
        Ok(url) => format!(
            "{}://{}{}",
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.path()
        ),
        Err(_) => "<unparsable>".to_owned(),
    }
}

/// One event as the webhook's JSON carries it. Field names are the contract receivers
/// parse: never rename one.
#[derive(Debug, serde::Serialize)]
struct WebhookEvent<'a> {
    id: &'a str,
    position: i64,
    #[serde(rename = "type")]
    kind: &'static str,
    occurred_at: String,
    user_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    legacy_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    email: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    password_rehashed: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    factor_kind: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    profile_fields: &'a [String],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    second_factor: bool,
}

impl<'a> From<&'a Event> for WebhookEvent<'a> {
    fn from(event: &'a Event) -> Self {
        let occurred_at = event
            .occurred_at
            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default();
        Self {
            id: &event.event_id,
            position: event.position,
            kind: event.kind().type_name(),
            occurred_at,
            user_id: &event.user_id,
            legacy_id: &event.legacy_id,
            email: &event.email,
            source: match event.source() {
                UserSource::Unspecified => None,
                UserSource::Signup => Some("signup"),
                UserSource::LoginMigration => Some("login_migration"),
                UserSource::ResetMigration => Some("reset_migration"),
                UserSource::Backfill => Some("backfill"),
            },
            password_rehashed: event.password_rehashed,
            factor_kind: &event.factor_kind,
            profile_fields: &event.profile_fields,
            second_factor: event.second_factor,
        }
    }
}

#[derive(Debug, serde::Serialize)]
struct WebhookBody<'a> {
    events: Vec<WebhookEvent<'a>>,
}

/// One event as the webhook carries it (and `trickle admin watch --json` prints it).
pub fn event_json(event: &Event) -> serde_json::Value {
    serde_json::to_value(WebhookEvent::from(event)).unwrap_or_default()
}

/// The JSON body of a POST carrying `events`.
pub fn body(events: &[Event]) -> Vec<u8> {
    let body = WebhookBody {
        events: events.iter().map(WebhookEvent::from).collect(),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

enum Delivery {
    Delivered,
    GivenUp,
    /// Another replica holds the lease now: stop, it delivers.
    LeaseLost,
}

enum Step {
    /// Delivered or skipped something: look again at once.
    Progress,
    /// Caught up, or another replica delivers: wait.
    Idle,
}

/// The webhook deliverer of one coordinator replica.
#[derive(Debug)]
pub struct Webhook {
    settings: WebhookSettings,
    client: reqwest::Client,
    reader: EventReader,
    db: Db,
    clock: Clock,
    /// This replica, as the lease's owner.
    owner: String,
    /// The cursor's key: the endpoint without query or user info.
    endpoint: String,
}

impl Webhook {
    pub fn new(
        settings: WebhookSettings,
        reader: EventReader,
        db: Db,
        clock: Clock,
    ) -> Result<Self, WebhookConfigError> {
        // rustls with ring, installed once per process (reqwest leaves the choice to us).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent("trickle-webhook")
            .build()
            .map_err(|e| WebhookConfigError::Client(e.to_string()))?;
        let endpoint = redact(settings.url.as_str());
        Ok(Self {
            settings,
            client,
            reader,
            db,
            clock,
            owner: uuid::Uuid::now_v7().to_string(),
            endpoint,
        })
    }

    /// Deliver until the server stops (the task is aborted with it).
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(async move {
            tracing::info!(endpoint = %self.endpoint, "webhook delivery started");
            let mut failing = false;
            loop {
                let wait = match self.step().await {
                    Ok(Step::Progress) => {
                        failing = false;
                        continue;
                    }
                    Ok(Step::Idle) => {
                        failing = false;
                        self.reader.poll
                    }
                    Err(error) => {
                        // Once per outage, not at every look.
                        if !failing {
                            tracing::warn!(%error, "webhook: cannot read events; retrying");
                        }
                        failing = true;
                        self.reader.poll.max(Duration::from_secs(1))
                    }
                };
                tokio::time::sleep(wait).await;
            }
        })
    }

    async fn step(&self) -> Result<Step, CoordinatorError> {
        let Some(position) = self.hold_lease().await? else {
            return Ok(Step::Idle);
        };
        let events = match self.reader.page(position, self.settings.batch).await {
            Ok(events) => events,
            Err(CoordinatorError::Refused(status))
                if trickle_service_kit::rpc::reason_of(&status).as_deref()
                    == Some(reason::EVENTS_PRUNED) =>
            {
                // Past the store's retention: what is gone cannot be sent; go on from the
                // oldest kept, and say how many were lost.
                let oldest = trickle_service_kit::rpc::metadata_of(&status)
                    .get("oldest_position")
                    .and_then(|p| p.parse::<i64>().ok())
                    .unwrap_or(position + 1);
                let lost = (oldest - 1 - position).max(0);
                tracing::warn!(
                    from = position + 1,
                    to = oldest - 1,
                    "webhook: {lost} events were pruned before they could be delivered"
                );
                trickle_telemetry::metrics::metrics()
                    .webhook_events
                    .with_label_values(&["pruned"])
                    .inc_by(u64::try_from(lost).unwrap_or_default());
                self.settle(oldest - 1).await?;
                return Ok(Step::Progress);
            }
            Err(error) => return Err(error),
        };
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(Step::Idle);
        };
        let (first, last) = (first.position, last.position);
        let outcome = match self.deliver(&events).await? {
            Delivery::Delivered => "delivered",
            Delivery::GivenUp => {
                tracing::error!(
                    first,
                    last,
                    attempts = self.settings.max_attempts,
                    "webhook: giving up on events {first}..={last} after every retry failed \
                     (counted as dead_letter; WatchEvents still has them)"
                );
                "dead_letter"
            }
            Delivery::LeaseLost => return Ok(Step::Idle),
        };
        trickle_telemetry::metrics::metrics()
            .webhook_events
            .with_label_values(&[outcome])
            .inc_by(events.len() as u64);
        self.settle(last).await?;
        Ok(Step::Progress)
    }

    /// POST `events` until a 2xx answer, the last try, or the loss of the lease.
    async fn deliver(&self, events: &[Event]) -> Result<Delivery, CoordinatorError> {
        let body = body(events);
        let metrics = trickle_telemetry::metrics::metrics();
        for attempt in 1..=self.settings.max_attempts {
            let timestamp = self.clock.now().timestamp();
            let sent = self
                .client
                .post(self.settings.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, self.settings.signature(timestamp, &body))
                .header(ATTEMPT_HEADER, attempt.to_string())
                .body(body.clone())
                .send()
                .await;
            let failure = match sent {
                Ok(response) if response.status().is_success() => return Ok(Delivery::Delivered),
                Ok(response) => {
                    tracing::warn!(
                        status = response.status().as_u16(),
                        attempt,
                        "webhook: the endpoint refused a batch"
                    );
                    "status"
                }
                Err(error) => {
                    let kind = if error.is_timeout() {
                        "timeout"
                    } else if error.is_connect() {
                        "connect"
                    } else {
                        "other"
                    };
                    // Without the URL: it may carry a token.
                    tracing::warn!(error = %error.without_url(), attempt, "webhook: POST failed");
                    kind
                }
            };
            metrics
                .webhook_failed_attempts
                .with_label_values(&[failure])
                .inc();
            if attempt == self.settings.max_attempts {
                break;
            }
            tokio::time::sleep(self.settings.backoff_after(attempt)).await;
            if self.hold_lease().await?.is_none() {
                return Ok(Delivery::LeaseLost);
            }
        }
        Ok(Delivery::GivenUp)
    }

    /// Take or renew the lease; the cursor's position when this replica holds it.
    async fn hold_lease(&self) -> Result<Option<i64>, CoordinatorError> {
        let now = self.clock.now();
        let until = now
            + chrono::Duration::from_std(self.settings.lease)
                .unwrap_or(chrono::Duration::seconds(30));
        let position: Option<i64> = with_db!(&self.db, pool => async {
            sqlx::query(
                "INSERT INTO webhook_cursor (endpoint, position, updated_at) VALUES ($1, 0, $2) \
                 ON CONFLICT (endpoint) DO NOTHING",
            )
            .bind(&self.endpoint)
            .bind(now)
            .execute(pool)
            .await?;
            sqlx::query_scalar(
                "UPDATE webhook_cursor SET owner = $2, lease_until = $3, updated_at = $4 \
                 WHERE endpoint = $1 AND (owner IS NULL OR owner = $2 OR lease_until < $4) \
                 RETURNING position",
            )
            .bind(&self.endpoint)
            .bind(&self.owner)
            .bind(until)
            .bind(now)
            .fetch_optional(pool)
            .await
        }.await)?;
        let metrics = trickle_telemetry::metrics::metrics();
        if let Some(position) = position {
            metrics.webhook_position.set(position);
        }
        Ok(position)
    }

    /// Record that every event up to `position` is settled (only while holding the lease).
    async fn settle(&self, position: i64) -> Result<(), CoordinatorError> {
        let now = self.clock.now();
        with_db!(&self.db, pool => {
            sqlx::query(
                "UPDATE webhook_cursor SET position = $3, updated_at = $4 \
                 WHERE endpoint = $1 AND owner = $2 AND position < $3",
            )
            .bind(&self.endpoint)
            .bind(&self.owner)
            .bind(position)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
        })?;
        trickle_telemetry::metrics::metrics()
            .webhook_position
            .set(position);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_the_timestamp_and_the_body() {
        // Checked against Python: hmac.new(b"0123456789abcdef", b"1700000000.{}", sha256).
        let signed = signature(b"0123456789abcdef", 1_700_000_000, b"{}");
        assert_eq!(
            signed,
            "t=1700000000,v1=e4f8e2ecae2295b2ddb2f0b5584c8275e226c0ebe9b3b819e70156bb67122e3e"
        );
        assert_ne!(signed, signature(b"0123456789abcdef", 1_700_000_001, b"{}"));
        assert_ne!(
            signed,
            signature(b"0123456789abcdef", 1_700_000_000, b"{ }")
        );
    }

    #[test]
    fn only_https_or_loopback_http_with_a_secret_is_accepted() {
        let mut config = MigrationConfig {
            webhook_url: "http://hooks.example.com/trickle".into(),
            webhook_secret: crate::config::WebhookSecret("0123456789abcdef".into()),
            ..MigrationConfig::default()
        };
        assert!(matches!(
            WebhookSettings::from_config(&config),
            Err(WebhookConfigError::PlainHttp)
        ));
        config.webhook_url = "http://127.0.0.1:9000/hook".into();
        assert!(matches!(WebhookSettings::from_config(&config), Ok(Some(_))));
        config.webhook_url = "https://hooks.example.com/trickle?token=abc".into();
        config.webhook_secret.0 = "short".into();
        let Err(refused) = WebhookSettings::from_config(&config) else {
            panic!("a short secret is refused");
        };
        assert!(matches!(refused, WebhookConfigError::NoSecret));
        assert!(!refused.to_string().contains("short"));
        config.webhook_url = String::new();
        assert!(matches!(WebhookSettings::from_config(&config), Ok(None)));
    }
}
