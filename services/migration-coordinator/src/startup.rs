//! Building and running the migration-coordinator.

use crate::backfill::Backfiller;
use crate::breaker::LegacyBreaker;
use crate::config::MigrationConfig;
use crate::grpc::{AdminService, CoordinatorService, EventFeedService};
use crate::ledger::Ledger;
use crate::migrate_on_login::Coordinator;
use std::time::Duration;
use tonic::service::Routes;
use trickle_proto::events::v1::event_feed_server::EventFeedServer;
use trickle_proto::legacy::v1::legacy_connector_client::LegacyConnectorClient;
use trickle_proto::migration::v1::migration_admin_server::MigrationAdminServer;
use trickle_proto::migration::v1::migration_coordinator_server::MigrationCoordinatorServer;
use trickle_proto::userstore::v1::user_store_client::UserStoreClient;
use trickle_service_kit::Clock;
use trickle_service_kit::db::Db;
use trickle_service_kit::server::{self, BoundServer, MAX_DECODING_MESSAGE_SIZE};

/// Deadline of one backfill call (a page insert, or the start of the legacy stream).
const BACKFILL_CALL_TIMEOUT: Duration = Duration::from_secs(120);

pub const SERVICE_NAMES: &[&str] = &["trickle.migration.v1.MigrationCoordinator"];

/// Served on `[migration] admin_listen` only.
pub const ADMIN_SERVICE_NAMES: &[&str] = &[
    "trickle.migration.v1.MigrationAdmin",
    "trickle.events.v1.EventFeed",
];

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("[migration] database_url is not set (and no [store] database_url to share)")]
    NoDatabase,
    #[error(transparent)]
    Db(#[from] trickle_service_kit::db::DbError),
    #[error("cannot initialize the migration mode: {0}")]
    Mode(#[from] sqlx::Error),
    #[error("invalid service address: {0}")]
    Address(#[from] tonic::transport::Error),
    #[error(transparent)]
    Serve(#[from] server::ServeError),
    #[error("cannot read the listener address: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Webhook(#[from] crate::webhook::WebhookConfigError),
}

/// Connect and migrate the coordinator's database, settle the mode, bind the listener.
pub async fn build(config: &MigrationConfig) -> Result<BoundServer, StartError> {
    build_with_clock(config, Clock::system()).await
}

/// [`build`], reading time from `clock` (tests move it instead of sleeping).
pub async fn build_with_clock(
    config: &MigrationConfig,
    clock: Clock,
) -> Result<BoundServer, StartError> {
    if config.database_url.is_empty() {
        return Err(StartError::NoDatabase);
    }
    // Before anything connects: a webhook without a secret must not start half-configured.
    let webhook = crate::webhook::WebhookSettings::from_config(config)?;
    let db = Db::connect(
        "migration-coordinator",
        &config.database_url,
        config.max_connections,
    )
    .await?;
    db.migrate(&migrator_postgres(), &migrator_sqlite()).await?;
    let ledger = Ledger::open(
        db,
        config.mode,
        Duration::from_millis(config.mode_cache_ms),
        clock.clone(),
    )
    .await?;
    let mode = ledger.mode().await?;
    let legacy = LegacyConnectorClient::new(trickle_service_kit::client::channel(
        &config.legacy_url,
        Duration::from_millis(config.legacy_timeout_ms),
        &config.tls,
    )?)
    .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE);
    let store = UserStoreClient::new(trickle_service_kit::client::channel(
        &config.store_url,
        Duration::from_millis(config.store_timeout_ms),
        &config.tls,
    )?)
    .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE);
    // The backfill streams for minutes: channels of its own, without the login deadlines.
    let backfiller = Backfiller::new(
        ledger.db().clone(),
        ledger.clone(),
        LegacyConnectorClient::new(trickle_service_kit::client::channel(
            &config.legacy_url,
            BACKFILL_CALL_TIMEOUT,
            &config.tls,
        )?)
        .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
        UserStoreClient::new(trickle_service_kit::client::channel(
            &config.store_url,
            BACKFILL_CALL_TIMEOUT,
            &config.tls,
        )?)
        .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
        Duration::from_secs(config.backfill_lease_seconds.max(1)),
    );
    let supervisor = backfiller.spawn_supervisor();
    let events = crate::events::EventReader::new(
        store.clone(),
        Duration::from_millis(config.events_poll_ms.max(10)),
    );
    let webhook = webhook
        .map(|settings| {
            crate::webhook::Webhook::new(
                settings,
                events.clone(),
                ledger.db().clone(),
                clock.clone(),
            )
        })
        .transpose()?
        .map(crate::webhook::Webhook::spawn);
    let breaker = LegacyBreaker::new(
        config.legacy_breaker_failures,
        Duration::from_millis(config.legacy_breaker_open_ms),
        clock,
    );
    let coordinator = Coordinator::new(ledger, legacy, breaker, store, config.reset_verifies_email);
    let gauges =
        coordinator.spawn_gauge_refresh(Duration::from_secs(config.status_refresh_seconds));
    let listener = server::bind(&config.listen).await?;
    let admin_listener = server::bind(&config.admin_listen).await?;
    tracing::info!(mode = mode.as_str(), "migration-coordinator ready");
    let routes = Routes::new(
        MigrationCoordinatorServer::new(CoordinatorService {
            coordinator: coordinator.clone(),
        })
        .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
    );
    let admin_routes = Routes::new(
        MigrationAdminServer::new(AdminService {
            coordinator,
            backfiller,
        })
        .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
    )
    .add_service(EventFeedServer::new(EventFeedService { events }));
    let metrics = server::bind_metrics(&config.metrics_listen).await?;
    let server = BoundServer::new(listener, routes, SERVICE_NAMES)
        .with_tls(&config.tls)?
        .with_admin_listener(
            admin_listener,
            admin_routes,
            ADMIN_SERVICE_NAMES,
            &config.tls,
            &config.admin_allowed_callers,
        )?
        .with_metrics(metrics)
        .with_background(gauges)
        .with_background(supervisor);
    Ok(match webhook {
        Some(task) => server.with_background(task),
        None => server,
    })
}

pub fn migrator_postgres() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("migrations/postgres");
    migrator.dangerous_set_table_name("_trickle_coordinator_migrations");
    // A rollback runs the previous image against a schema a newer one already extended:
    // migrations are additive (expand first, contract in a later release), so a version the
    // binary does not know is not an error.
    migrator.set_ignore_missing(true);
    migrator
}

pub fn migrator_sqlite() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("migrations/sqlite");
    migrator.dangerous_set_table_name("_trickle_coordinator_migrations");
    // A rollback runs the previous image against a schema a newer one already extended:
    // migrations are additive (expand first, contract in a later release), so a version the
    // binary does not know is not an error.
    migrator.set_ignore_missing(true);
    migrator
}
