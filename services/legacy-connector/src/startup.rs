//! Building and running the legacy-connector.

use crate::backend::LegacyBackend;
use crate::config::{Backend, LegacyConfig};
use crate::error::LegacyError;
use crate::grpc::LegacyConnectorService;
use crate::http::HttpBackend;
use crate::sql::SqlBackend;
use tonic::service::Routes;
use trickle_password::{Argon2Config, HashPool};
use trickle_proto::legacy::v1::legacy_connector_server::LegacyConnectorServer;
use trickle_service_kit::server::{self, BoundServer, MAX_DECODING_MESSAGE_SIZE};

pub const SERVICE_NAMES: &[&str] = &["trickle.legacy.v1.LegacyConnector"];

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] LegacyError),
    #[error("cannot start the password verification pool: {0}")]
    HashPool(#[from] trickle_password::PoolError),
    #[error(transparent)]
    Serve(#[from] server::ServeError),
    #[error("cannot read the listener address: {0}")]
    Io(#[from] std::io::Error),
}

/// Check the configuration, prepare the (lazy) legacy pool, bind the listener.
pub async fn build(config: &LegacyConfig) -> Result<BoundServer, StartError> {
    // The connector only verifies; its pool's argon2 parameters only shape the dummy hash
    // used before a refusal hash is chosen from real legacy hashes (see `dummy_hash`).
    let hasher = HashPool::with_priority(
        "legacy-connector",
        Argon2Config::default(),
        config.hash_workers,
        config.hash_queue,
        config.hash_priority,
    )?;
    let backend = match config.backend {
        Backend::Sql => {
            let sql = SqlBackend::new(&crate::presets::resolve(config)?, hasher)?;
            sql.check_tls().await?;
            // Before serving: the first refused logins must already cost what later ones do.
            sql.choose_refusal_hash().await;
            LegacyBackend::Sql(sql)
        }
        Backend::Http => LegacyBackend::Http(HttpBackend::new(
            &config.http,
            std::time::Duration::from_millis(config.query_timeout_ms.max(1)),
            config.hash_limits,
        )?),
    };
    let listener = server::bind(&config.listen).await?;
    tracing::info!(backend = ?config.backend, hash_format = ?config.hash_format, "legacy-connector ready");
    let routes = Routes::new(
        LegacyConnectorServer::new(LegacyConnectorService { backend })
            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
    );
    let metrics = server::bind_metrics(&config.metrics_listen).await?;
    Ok(BoundServer::new(listener, routes, SERVICE_NAMES)
        .with_tls(&config.tls)?
        .with_metrics(metrics))
}
