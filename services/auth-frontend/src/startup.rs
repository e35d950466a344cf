//! Building and running the auth-frontend.

use crate::auth::AuthFlows;
use crate::config::{FrontendConfig, TokenConfig};
use crate::grpc::AuthApi;
use crate::mode::ModeWatch;
use crate::tokens::{KeyError, TokenIssuer};
use std::time::Duration;
use tonic::service::Routes;
use trickle_proto::auth::v1::auth_service_server::AuthServiceServer;
use trickle_proto::migration::v1::migration_coordinator_client::MigrationCoordinatorClient;
use trickle_proto::userstore::v1::user_factors_client::UserFactorsClient;
use trickle_proto::userstore::v1::user_store_client::UserStoreClient;
use trickle_service_kit::Clock;
use trickle_service_kit::callers::CallerPolicy;
use trickle_service_kit::server::{self, BoundServer, MAX_DECODING_MESSAGE_SIZE};

pub const SERVICE_NAMES: &[&str] = &["trickle.auth.v1.AuthService"];

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("invalid service address: {0}")]
    Address(#[from] tonic::transport::Error),
    #[error(transparent)]
    Serve(#[from] server::ServeError),
    #[error("cannot read the listener address: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "[frontend.privileged_callers] names certificate identities, but [frontend.public_tls] \
         is off, so callers have none: turn on public_tls or remove privileged_callers"
    )]
    PrivilegedWithoutTls,
}

/// Load the signing key, prepare the (lazy) channels to the store and coordinator, bind.
pub async fn build(
    config: &FrontendConfig,
    tokens: &TokenConfig,
) -> Result<BoundServer, StartError> {
    build_with_clock(config, tokens, Clock::system()).await
}

/// [`build`], reading time from `clock` (tests move it instead of sleeping).
pub async fn build_with_clock(
    config: &FrontendConfig,
    tokens: &TokenConfig,
    clock: Clock,
) -> Result<BoundServer, StartError> {
    let tokens = TokenIssuer::from_config(tokens)?;
    let timeout = Duration::from_millis(config.upstream_timeout_ms);
    let store_channel =
        trickle_service_kit::client::channel(&config.store_url, timeout, &config.tls)?;
    let factors = UserFactorsClient::new(store_channel.clone());
    let store =
        UserStoreClient::new(store_channel).max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE);
    let coordinator = MigrationCoordinatorClient::new(trickle_service_kit::client::channel(
        &config.coordinator_url,
        timeout,
        &config.tls,
    )?)
    .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE);
    let mode = ModeWatch::start(
        coordinator.clone(),
        Duration::from_millis(config.mode_refresh_ms),
    );
    let listener = server::bind(&config.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, "auth-frontend ready");
    let email_hash_key = (!config.telemetry_email_hash_key.is_empty())
        .then(|| config.telemetry_email_hash_key.as_bytes().to_vec());
    let subjects = crate::revocation::SubjectCache::new(
        Duration::from_millis(config.token_subject_cache_ms),
        clock.clone(),
    );
    let flows = AuthFlows::new(
        crate::upstream::Upstreams::new(store, factors, coordinator),
        tokens,
        mode,
        email_hash_key,
        subjects,
        clock,
    );
    let routes = Routes::new(
        AuthServiceServer::new(AuthApi { flows })
            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
    );
    let metrics = server::bind_metrics(&config.metrics_listen).await?;
    let server = BoundServer::new(listener, routes, SERVICE_NAMES)
        .with_tls(&config.public_tls)?
        .with_reflection(config.reflection)
        .with_metrics(metrics);
    if !config.public_tls.is_enabled() {
        if config.privileged_callers.is_set() {
            return Err(StartError::PrivilegedWithoutTls);
        }
        return Ok(server);
    }
    // With client certificates, privileged RPCs are decided per caller identity.
    Ok(server.with_callers(CallerPolicy {
        default: config.public_tls.allowed_callers.clone(),
        per_method: config.privileged_callers.per_method(),
    }))
}
