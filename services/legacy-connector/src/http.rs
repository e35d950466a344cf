//! The web-service backend: Auth0's "web service accessed by Basic Auth" template. The legacy
//! app answers two endpoints and keeps its hashes to itself:
//!
//! - `POST {base_url}/login` with `{"email", "password"}` → 200 and the user's profile JSON,
//!   401 or 404 for bad credentials;
//! - `GET {base_url}/users?email=…` → 200 and the profile, or 404;
//! - with `list_users = true`, `GET {base_url}/users?after=…&limit=…` → 200 and
//!   `{"users": [profile, …]}`: the next `limit` users after the legacy id `after` (absent on
//!   the first page), in the service's own stable order, for the preflight census and the
//!   backfill. A profile may carry `password_hash` in a format Trickle verifies; without one,
//!   only the service can check the user's password (they migrate on login).
//!
//! Anything else — another status, a malformed body, a timeout, a TLS failure — is
//! UNAVAILABLE with a reason, never a silent "wrong password".

use crate::error::LegacyError;
use crate::sql::{HashProblem, LegacyUser, ListedUser, LoginOutcome, UnusableHash};
use serde::Deserialize;
use std::time::Duration;
use trickle_password::Password;
use trickle_password::totp::{Totp, TotpAlgorithm, TotpParams, TotpSecret};
use trickle_password::{HashFormat, StoredHash};
use trickle_service_kit::Email;

/// `[legacy.http]`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `https://legacy.example.com/api/trickle` (the endpoints are appended).
    pub base_url: String,
    /// Basic Auth user; empty: no Authorization header.
    pub username: String,
    /// Basic Auth password; better from `TRICKLE_LEGACY__HTTP__PASSWORD`.
    pub password: String,
    /// A PEM CA certificate to trust (a private CA) in addition to the system roots.
    pub ca_file: String,
    /// The service answers the listing endpoint (`GET /users?after=…&limit=…`).
    pub list_users: bool,
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("base_url", &self.base_url)
            .field("username", &self.username)
            .field("password", &trickle_password::redacted(&self.password))
            .field("ca_file", &self.ca_file)
            .field("list_users", &self.list_users)
            .finish()
    }
}

/// The profile the web service answers with. `id` (or Auth0's `user_id`) and `email` are
/// required; the rest is optional.
#[derive(Debug, Deserialize)]
struct Profile {
    #[serde(alias = "user_id")]
    id: serde_json::Value,
    email: String,
    #[serde(default)]
    email_verified: bool,
    name: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
    nickname: Option<String>,
    picture: Option<String>,
    /// The account is disabled in the legacy system.
    #[serde(default)]
    blocked: bool,
    /// Roles or groups: they land in `app_metadata.roles`.
    #[serde(default)]
    roles: Vec<String>,
    /// The user's TOTP secret, base32, when they have a second factor; with optional
    /// `totp_algorithm` (SHA1), `totp_digits` (6) and `totp_period` (30).
    totp_secret: Option<SecretText>,
    totp_algorithm: Option<String>,
    totp_digits: Option<u32>,
    totp_period: Option<u32>,
    /// Free-form data, as in Auth0's profiles.
    #[serde(default)]
    user_metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    app_metadata: serde_json::Map<String, serde_json::Value>,
    /// Only in listings: the user's hash, when the service hands it over.
    password_hash: Option<SecretText>,
}

/// One page of the listing endpoint.
#[derive(Debug, Deserialize)]
struct ListedProfiles {
    users: Vec<Profile>,
}

/// A secret in the web service's answer: `Debug` says only whether it is set.
#[derive(Deserialize)]
#[serde(transparent)]
struct SecretText(String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(trickle_password::redacted(&self.0))
    }
}

impl Profile {
    /// The second factor, if the profile carries one. One that cannot be read is an error:
    /// the user must not get in on the password alone.
    fn totp(&self) -> Result<Option<Totp>, LegacyError> {
        let Some(secret) = self.totp_secret.as_ref().filter(|s| !s.0.trim().is_empty()) else {
            return Ok(None);
        };
        let unreadable = |why: String| {
            LegacyError::Http(format!("the profile's second factor is unreadable: {why}"))
        };
        let algorithm = match &self.totp_algorithm {
            None => TotpAlgorithm::Sha1,
            Some(name) => TotpAlgorithm::parse(name)
                .ok_or_else(|| unreadable(format!("totp_algorithm {name:?}")))?,
        };
        let params = TotpParams {
            algorithm,
            digits: self.totp_digits.unwrap_or(6),
            period_seconds: self.totp_period.unwrap_or(30),
        };
        let secret = TotpSecret::from_base32(&secret.0).map_err(|e| unreadable(e.to_string()))?;
        Totp::new(secret, params)
            .map(Some)
            .map_err(|e| unreadable(e.to_string()))
    }
}

#[derive(Clone)]
pub struct HttpBackend {
    client: reqwest::Client,
    login_url: String,
    users_url: String,
    username: String,
    password: Option<String>,
    list_users: bool,
    hash_limits: trickle_password::HashLimits,
}

impl std::fmt::Debug for HttpBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpBackend")
            .field("login_url", &self.login_url)
            .field("users_url", &self.users_url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl HttpBackend {
    pub fn new(
        config: &HttpConfig,
        timeout: Duration,
        hash_limits: trickle_password::HashLimits,
    ) -> Result<Self, LegacyError> {
        if config.base_url.trim().is_empty() {
            return Err(LegacyError::Config(
                "[legacy.http] base_url is not set".into(),
            ));
        }
        // rustls with ring, installed once per process (reqwest leaves the choice to us).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent("trickle-legacy-connector");
        if !config.ca_file.is_empty() {
            let pem = std::fs::read(&config.ca_file).map_err(|e| {
                LegacyError::Config(format!(
                    "cannot read [legacy.http] ca_file {}: {e}",
                    config.ca_file
                ))
            })?;
            let certificate = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                LegacyError::Config(format!(
                    "[legacy.http] ca_file is not a PEM certificate: {e}"
                ))
            })?;
            builder = builder.add_root_certificate(certificate);
        }
        let client = builder
            .build()
            .map_err(|e| LegacyError::Config(format!("cannot build the HTTP client: {e}")))?;
        let base = config.base_url.trim_end_matches('/');
        Ok(Self {
            client,
            login_url: format!("{base}/login"),
            users_url: format!("{base}/users"),
            username: config.username.clone(),
            password: (!config.password.is_empty()).then(|| config.password.clone()),
            list_users: config.list_users,
            hash_limits,
        })
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if self.username.is_empty() {
            request
        } else {
            request.basic_auth(&self.username, self.password.as_deref())
        }
    }

    async fn send(
        &self,
        operation: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<Option<LegacyUser>, LegacyError> {
        let metrics = trickle_telemetry::metrics::metrics();
        let started = std::time::Instant::now();
        let result = self.exchange(request).await;
        metrics
            .legacy_request_duration
            .with_label_values(&[operation])
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            let reason = if matches!(e, LegacyError::Timeout(_)) {
                "timeout"
            } else {
                "unavailable"
            };
            metrics.legacy_errors.with_label_values(&[reason]).inc();
        }
        result
    }

    /// `Ok(None)`: the service said no (401/404).
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<Option<LegacyUser>, LegacyError> {
        let response = self.authorize(request).send().await.map_err(|e| {
            if e.is_timeout() {
                LegacyError::Timeout(0)
            } else {
                LegacyError::Http(format!("request failed: {}", without_url(&e)))
            }
        })?;
        match response.status().as_u16() {
            200 => {}
            401 | 404 => return Ok(None),
            status => {
                return Err(LegacyError::Http(format!(
                    "the legacy web service answered HTTP {status}"
                )));
            }
        }
        let body = response.bytes().await.map_err(|e| {
            LegacyError::Http(format!("cannot read the answer: {}", without_url(&e)))
        })?;
        let profile: Profile = serde_json::from_slice(&body).map_err(|e| {
            LegacyError::Http(format!(
                "the legacy web service answered malformed JSON: {e}"
            ))
        })?;
        let totp = profile.totp()?;
        user_from_profile(profile, totp).map(Some)
    }

    /// One page of the listing endpoint (`list_users = true`).
    #[tracing::instrument(name = "legacy.list_users", skip_all)]
    pub async fn list_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ListedUser>, LegacyError> {
        if !self.list_users {
            return Err(LegacyError::ListUnsupported);
        }
        let mut query = vec![("limit", limit.to_string())];
        if let Some(after) = after {
            query.push(("after", after.to_owned()));
        }
        let request = self.client.get(&self.users_url).query(&query);
        let metrics = trickle_telemetry::metrics::metrics();
        let started = std::time::Instant::now();
        let response = self.authorize(request).send().await.map_err(|e| {
            if e.is_timeout() {
                LegacyError::Timeout(0)
            } else {
                LegacyError::Http(format!("request failed: {}", without_url(&e)))
            }
        });
        metrics
            .legacy_request_duration
            .with_label_values(&["list_users"])
            .observe(started.elapsed().as_secs_f64());
        let response = response?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(LegacyError::Http(format!(
                "the legacy web service answered HTTP {status} to a listing"
            )));
        }
        let body = response.bytes().await.map_err(|e| {
            LegacyError::Http(format!("cannot read the answer: {}", without_url(&e)))
        })?;
        let page: ListedProfiles = serde_json::from_slice(&body).map_err(|e| {
            LegacyError::Http(format!(
                "the legacy web service answered a malformed listing: {e}"
            ))
        })?;
        if page.users.len() > limit {
            return Err(LegacyError::Http(format!(
                "the legacy web service listed {} users for a page of {limit}",
                page.users.len()
            )));
        }
        page.users
            .into_iter()
            .map(|mut profile| {
                let password_hash = profile.password_hash.take();
                // An unreadable factor makes the record unusable, never a page failure.
                let (totp, factor_error) = match profile.totp() {
                    Ok(totp) => (totp, None),
                    Err(e) => (None, Some(e.to_string())),
                };
                let user = user_from_profile(profile, totp)?;
                let hash = match (factor_error, password_hash) {
                    (Some(why), _) => Err(UnusableHash::new(HashProblem::UnreadableFactor, why)),
                    (None, None) => Err(UnusableHash::new(
                        HashProblem::ConnectorOnly,
                        "the web service verifies this password itself (POST /login)",
                    )),
                    (None, Some(hash)) => self.portable(hash.0.trim()),
                };
                Ok(ListedUser { user, hash })
            })
            .collect()
    }

    /// A listed hash as the store will keep it, or why it cannot be.
    fn portable(&self, hash: &str) -> Result<(String, &'static str), UnusableHash> {
        if hash.is_empty() {
            return Err(UnusableHash::new(
                HashProblem::Empty,
                "an empty password_hash",
            ));
        }
        let parsed =
            StoredHash::parse_within(hash, None, HashFormat::Auto, None, &self.hash_limits)?;
        Ok((hash.to_owned(), parsed.scheme().as_str()))
    }
}

/// A profile as a legacy user.
fn user_from_profile(profile: Profile, totp: Option<Totp>) -> Result<LegacyUser, LegacyError> {
    let legacy_id = match profile.id {
        serde_json::Value::String(s) if !s.is_empty() => s,
        serde_json::Value::Number(n) => n.to_string(),
        _ => {
            return Err(LegacyError::Http(
                "the legacy web service's profile has no usable id".into(),
            ));
        }
    };
    let mut user = LegacyUser {
        legacy_id,
        totp,
        email: profile.email,
        email_verified: profile.email_verified,
        name: profile.name,
        given_name: profile.given_name,
        family_name: profile.family_name,
        nickname: profile.nickname,
        picture: profile.picture,
        blocked: profile.blocked,
        roles: profile.roles,
        user_metadata: profile.user_metadata,
        app_metadata: profile.app_metadata,
    };
    user.cap_metadata();
    Ok(user)
}

impl HttpBackend {
    #[tracing::instrument(name = "legacy.login", skip_all)]
    pub async fn login(
        &self,
        email: &Email,
        password: Password,
    ) -> Result<LoginOutcome, LegacyError> {
        let body = serde_json::json!({ "email": email.normalized(), "password": password.expose_secret() });
        let request = self.client.post(&self.login_url).json(&body);
        Ok(match self.send("login", request).await? {
            // The service must answer for the email it was asked about.
            Some(user) if user.email.trim().to_lowercase() == email.normalized() => {
                LoginOutcome::Authenticated(user)
            }
            Some(_) => {
                tracing::warn!(
                    "the legacy web service answered with another user's email; refusing"
                );
                LoginOutcome::Rejected
            }
            None => LoginOutcome::Rejected,
        })
    }

    #[tracing::instrument(name = "legacy.get_user", skip_all)]
    pub async fn get_user(&self, email: &Email) -> Result<Option<LegacyUser>, LegacyError> {
        let request = self
            .client
            .get(&self.users_url)
            .query(&[("email", email.normalized())]);
        Ok(self
            .send("get_user", request)
            .await?
            .filter(|u| u.email.trim().to_lowercase() == email.normalized()))
    }
}

/// reqwest's errors print the URL, whose query holds an email: keep only the cause.
fn without_url(error: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    let mut detail = String::new();
    while let Some(e) = source {
        detail = e.to_string();
        source = e.source();
    }
    if detail.is_empty() {
        "connection failed".into()
    } else {
        detail
    }
}
