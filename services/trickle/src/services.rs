//! Starting the four services from one configuration, alone (`trickle serve`) or together on
//! loopback (`trickle dev`).

use crate::config::Config;
use anyhow::Context as _;
use trickle_service_kit::Clock;
use trickle_service_kit::server::RunningServer;

/// The four services of one Trickle, each serving real gRPC on its own address.
#[derive(Debug)]
pub struct Cluster {
    pub frontend: RunningServer,
    pub store: RunningServer,
    /// `None` once stopped on its own with [`Cluster::stop_legacy_connector`].
    pub legacy: Option<RunningServer>,
    pub coordinator: RunningServer,
    /// The coordinator's settings as started (with the store's and the connector's actual
    /// addresses), for [`Cluster::restart_coordinator`].
    coordinator_config: trickle_migration_coordinator::MigrationConfig,
    serving: trickle_service_kit::server::ServingConfig,
}

impl Cluster {
    /// Start store and legacy connector first (their addresses may be port 0), then the
    /// coordinator and the frontend pointed at them.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        Self::start_with_clock(config, Clock::system()).await
    }

    /// [`Cluster::start`], all four services reading time from `clock` (tests move it).
    pub async fn start_with_clock(config: &Config, clock: Clock) -> anyhow::Result<Self> {
        let store = trickle_user_store::build_with_clock(&config.store, clock.clone())
            .await
            .context("starting the user-store")?;
        // https:// when the called service requires mutual TLS.
        let scheme = |tls: &trickle_service_kit::tls::TlsConfig| {
            if tls.is_enabled() { "https" } else { "http" }
        };
        let store_url = format!("{}://{}", scheme(&config.store.tls), store.local_addr()?);
        let legacy = trickle_legacy_connector::build(&config.legacy)
            .await
            .context("starting the legacy-connector")?;
        let legacy_url = format!("{}://{}", scheme(&config.legacy.tls), legacy.local_addr()?);
        let mut migration = config.migration.clone();
        migration.store_url = store_url.clone();
        migration.legacy_url = legacy_url;
        if migration.database_url.is_empty() {
            migration.database_url = config.store.database_url.clone();
        }
        let coordinator =
            trickle_migration_coordinator::build_with_clock(&migration, clock.clone())
                .await
                .context("starting the migration-coordinator")?;
        let mut frontend_config = config.frontend.clone();
        frontend_config.store_url = store_url;
        frontend_config.coordinator_url = format!(
            "{}://{}",
            scheme(&config.migration.tls),
            coordinator.local_addr()?
        );
        let frontend =
            trickle_auth_frontend::build_with_clock(&frontend_config, &config.tokens, clock)
                .await
                .context("starting the auth-frontend")?;
        let serving = &config.server;
        Ok(Self {
            store: store.with_serving(serving).spawn()?,
            legacy: Some(legacy.with_serving(serving).spawn()?),
            coordinator: coordinator.with_serving(serving).spawn()?,
            frontend: frontend.with_serving(serving).spawn()?,
            coordinator_config: migration,
            serving: serving.clone(),
        })
    }

    /// Stop the coordinator and start a new one on the same addresses and database, as a
    /// crash and a restart of its pod would: whatever it had in memory is gone.
    pub async fn restart_coordinator(&mut self, clock: Clock) -> anyhow::Result<()> {
        let mut config = self.coordinator_config.clone();
        config.listen = self.coordinator.local_addr.to_string();
        if let Some(admin) = self.coordinator.admin_addr {
            config.admin_listen = admin.to_string();
        }
        if let Some(metrics) = self.coordinator.metrics_addr {
            config.metrics_listen = metrics.to_string();
        }
        self.coordinator.stop_in_place().await?;
        self.coordinator = trickle_migration_coordinator::build_with_clock(&config, clock)
            .await
            .context("restarting the migration-coordinator")?
            .with_serving(&self.serving)
            .spawn()?;
        Ok(())
    }

    /// Stop only the legacy connector, as operators do after cutover (and tests do to prove
    /// that migrated users no longer need it).
    pub async fn stop_legacy_connector(&mut self) -> anyhow::Result<()> {
        if let Some(legacy) = self.legacy.take() {
            legacy.stop().await?;
        }
        Ok(())
    }

    /// Stop the frontend first so no new work arrives, then the rest.
    pub async fn stop(self) -> anyhow::Result<()> {
        let Cluster {
            frontend,
            store,
            legacy,
            coordinator,
            ..
        } = self;
        frontend.stop().await?;
        coordinator.stop().await?;
        if let Some(legacy) = legacy {
            legacy.stop().await?;
        }
        store.stop().await?;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    /// The public API (trickle.auth.v1.AuthService).
    Frontend,
    /// Users and password hashes (trickle.userstore.v1.UserStore).
    UserStore,
    /// Reads the legacy user database (trickle.legacy.v1.LegacyConnector).
    LegacyConnector,
    /// Mode, migration on login, ledger (trickle.migration.v1.MigrationCoordinator).
    Coordinator,
}

impl Service {
    /// The default `service.name` of its telemetry (`OTEL_SERVICE_NAME` overrides it).
    pub fn telemetry_name(self) -> &'static str {
        match self {
            Service::Frontend => "trickle-auth-frontend",
            Service::UserStore => "trickle-user-store",
            Service::LegacyConnector => "trickle-legacy-connector",
            Service::Coordinator => "trickle-migration-coordinator",
        }
    }
}

/// Run one service until SIGTERM or Ctrl-C.
pub async fn serve(service: Service, config: &Config) -> anyhow::Result<()> {
    let serving = config.server.clone();
    let shutdown = async move { serving.shutdown_signal().await };
    let serving = &config.server;
    match service {
        Service::Frontend => {
            trickle_auth_frontend::build(&config.frontend, &config.tokens)
                .await?
                .with_serving(serving)
                .run_until_stopped(shutdown)
                .await?
        }
        Service::UserStore => {
            trickle_user_store::build(&config.store)
                .await?
                .with_serving(serving)
                .run_until_stopped(shutdown)
                .await?
        }
        Service::LegacyConnector => {
            trickle_legacy_connector::build(&config.legacy)
                .await?
                .with_serving(serving)
                .run_until_stopped(shutdown)
                .await?
        }
        Service::Coordinator => {
            let mut migration = config.migration.clone();
            if migration.database_url.is_empty() {
                migration.database_url = config.store.database_url.clone();
            }
            trickle_migration_coordinator::build(&migration)
                .await?
                .with_serving(serving)
                .run_until_stopped(shutdown)
                .await?
        }
    }
    Ok(())
}

/// Apply the store's and the coordinator's schema migrations (idempotent).
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    use trickle_service_kit::db::Db;
    let store = Db::connect("user-store", &config.store.database_url, 1).await?;
    store
        .migrate(
            &trickle_user_store::startup::migrator_postgres(),
            &trickle_user_store::startup::migrator_sqlite(),
        )
        .await?;
    println!("user-store schema is up to date ({})", store.kind());
    let coordinator_url = if config.migration.database_url.is_empty() {
        &config.store.database_url
    } else {
        &config.migration.database_url
    };
    let coordinator = Db::connect("migration-coordinator", coordinator_url, 1).await?;
    coordinator
        .migrate(
            &trickle_migration_coordinator::startup::migrator_postgres(),
            &trickle_migration_coordinator::startup::migrator_sqlite(),
        )
        .await?;
    println!(
        "migration-coordinator schema is up to date ({})",
        coordinator.kind()
    );
    Ok(())
}
