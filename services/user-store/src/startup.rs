//! Building and running the user-store: connect, migrate, start the hashing pool, bind.

use crate::config::StoreConfig;
use crate::grpc::UserStoreService;
use crate::grpc_factors::UserFactorsService;
use crate::last_logins::LastLogins;
use crate::repository::Repository;
use crate::users::{FactorSettings, Throttle, TicketLifetimes, Users};
use std::time::Duration;
use tonic::service::Routes;
use trickle_password::HashPool;
use trickle_proto::userstore::v1::user_factors_server::UserFactorsServer;
use trickle_proto::userstore::v1::user_store_server::UserStoreServer;
use trickle_service_kit::Clock;
use trickle_service_kit::db::Db;
use trickle_service_kit::server::{self, BoundServer, MAX_DECODING_MESSAGE_SIZE};

pub const SERVICE_NAMES: &[&str] = &[
    "trickle.userstore.v1.UserStore",
    "trickle.userstore.v1.UserFactors",
];

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] trickle_service_kit::db::DbError),
    #[error("cannot start the password hashing pool: {0}")]
    HashPool(#[from] trickle_password::PoolError),
    #[error(transparent)]
    Serve(#[from] server::ServeError),
    #[error("cannot read the listener address: {0}")]
    Io(#[from] std::io::Error),
    #[error("[store] breached_passwords: {0}")]
    Breached(#[from] trickle_password::BreachedError),
    #[error(transparent)]
    FactorKeys(#[from] crate::factors::FactorKeyError),
}

/// Connect and migrate the database, start the hashing pool, bind the listener.
pub async fn build(config: &StoreConfig) -> Result<BoundServer, StartError> {
    build_with_clock(config, Clock::system()).await
}

/// [`build`], reading time from `clock` (tests move it instead of sleeping).
pub async fn build_with_clock(
    config: &StoreConfig,
    clock: Clock,
) -> Result<BoundServer, StartError> {
    let db = Db::connect("user-store", &config.database_url, config.max_connections).await?;
    db.migrate(&migrator_postgres(), &migrator_sqlite()).await?;
    let hasher = HashPool::with_priority(
        "user-store",
        config.argon2,
        config.hash_workers,
        config.hash_queue,
        config.hash_priority,
    )?;
    tracing::info!(
        database = db.kind(),
        hash_workers = hasher.workers(),
        argon2_memory_kib = config.argon2.memory_kib,
        argon2_iterations = config.argon2.iterations,
        "user-store ready"
    );
    let lifetimes = TicketLifetimes {
        password_reset: Duration::from_secs(config.reset_ticket_ttl_seconds.max(1)),
        email_verification: Duration::from_secs(config.verification_ticket_ttl_seconds.max(1)),
    };
    let throttle = Throttle {
        failures: config.login_throttle_failures,
        window: Duration::from_secs(config.login_throttle_window_seconds.max(1)),
        lockout: Duration::from_secs(config.login_throttle_lockout_seconds.max(1)),
    };
    let client_throttle = Throttle {
        failures: config.client_throttle_failures,
        window: Duration::from_secs(config.client_throttle_window_seconds.max(1)),
        lockout: Duration::from_secs(config.client_throttle_lockout_seconds.max(1)),
    };
    let repository = Repository::new(db, clock);
    let retention = (config.prune_interval_seconds > 0).then(|| {
        crate::retention::Retention {
            interval: Duration::from_secs(config.prune_interval_seconds),
            tickets_after: Duration::from_secs(config.prune_tickets_after_seconds),
            throttle_window: throttle.window.max(client_throttle.window),
            events_after: Duration::from_secs(config.events_retention_hours.saturating_mul(3600)),
        }
        .spawn(repository.clone())
    });
    let sequencer = crate::events::spawn_sequencer(
        repository.clone(),
        Duration::from_millis(config.events_sequence_ms.max(10)),
    );
    let login_throttle = crate::throttle::LoginThrottle::new(
        repository.clone(),
        throttle,
        config.login_throttle_email_ceiling,
        client_throttle,
    );
    let breached = (!config.breached_passwords.is_empty())
        .then(|| trickle_password::BreachedPasswords::open(&config.breached_passwords))
        .transpose()?;
    let factor_keys = crate::factors::FactorKeys::load(
        &config.factor_key.0,
        &config.factor_keys_dir,
        &config.current_factor_key,
    )?;
    if factor_keys.is_none() {
        tracing::info!(
            "no [store] factor_key or factor_keys_dir: second factors cannot be enrolled"
        );
    }
    let factors = FactorSettings {
        keys: factor_keys,
        issuer: config.totp_issuer.clone(),
        challenge_ttl: Duration::from_secs(config.mfa_challenge_ttl_seconds.max(1)),
    };
    let (last_logins, last_login_writer) = match config.last_login_flush_ms {
        0 => (None, None),
        ms => {
            let (buffer, writer) = LastLogins::spawn(repository.clone(), Duration::from_millis(ms));
            (Some(buffer), Some(writer))
        }
    };
    let users = Users::new(repository, hasher, lifetimes, login_throttle)
        .with_breached_passwords(breached)
        .with_factors(factors)
        .with_last_logins(last_logins);
    // Before the listener is bound: the first refusal must already cost what later ones do,
    // and a bound port is what readiness checks take for "serving".
    users.prepare().await;
    let listener = server::bind(&config.listen).await?;
    let routes = Routes::new(
        UserStoreServer::new(UserStoreService {
            users: users.clone(),
        })
        .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
    )
    .add_service(UserFactorsServer::new(UserFactorsService { users }));
    let metrics = server::bind_metrics(&config.metrics_listen).await?;
    let server = BoundServer::new(listener, routes, SERVICE_NAMES)
        .with_tls(&config.tls)?
        .with_metrics(metrics)
        .with_background(sequencer);
    // After the last call, so that every login it answered is written.
    let server = match last_login_writer {
        Some(writer) => server.with_final_step(writer.stop()),
        None => server,
    };
    Ok(match retention {
        Some(task) => server.with_background(task),
        None => server,
    })
}

/// The schema migrations, embedded. Each service keeps its own migrations table so the
/// store and the coordinator can share one database.
pub fn migrator_postgres() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("migrations/postgres");
    migrator.dangerous_set_table_name("_trickle_store_migrations");
    // A rollback runs the previous image against a schema a newer one already extended:
    // migrations are additive (expand first, contract in a later release), so a version the
    // binary does not know is not an error.
    migrator.set_ignore_missing(true);
    migrator
}

pub fn migrator_sqlite() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("migrations/sqlite");
    migrator.dangerous_set_table_name("_trickle_store_migrations");
    // A rollback runs the previous image against a schema a newer one already extended:
    // migrations are additive (expand first, contract in a later release), so a version the
    // binary does not know is not an error.
    migrator.set_ignore_missing(true);
    migrator
}
