//! One test's Trickle: the four services on `127.0.0.1:0` over fresh databases, with a clock
//! the test can move.

use crate::capture::capture_logs;
use crate::databases::{Backend, LegacyDb, LegacyRecord, StoreDb, bcrypt};
use std::sync::Arc;
use tonic::transport::Channel;
use trickle::config::Config;
use trickle::services::Cluster;
use trickle_proto::auth::v1::auth_service_client::AuthServiceClient;
use trickle_proto::migration::v1::migration_admin_client::MigrationAdminClient;
use trickle_service_kit::Clock;

/// One test's Trickle: databases and the four services. Fields drop in order: the services
/// stop before their databases are dropped.
pub struct TestTrickle {
    pub cluster: Cluster,
    /// The time all four services read: a test moves it forward (a ticket expires, a lock
    /// ends, the breaker's pause passes) instead of sleeping.
    pub clock: Clock,
    pub config: Config,
    pub signing_key_pem: String,
    pub legacy: LegacyDb,
    pub store: StoreDb,
    pub dir: Arc<tempfile::TempDir>,
}

/// For tests that load the hashing pools on purpose: deadlines that a busy two-core machine
/// cannot miss (the deadline tests keep the short ones).
pub fn generous_deadlines(config: &mut Config) {
    config.legacy.query_timeout_ms = 20_000;
    config.migration.legacy_timeout_ms = 30_000;
    config.migration.store_timeout_ms = 30_000;
    config.frontend.upstream_timeout_ms = 40_000;
}

/// Settings a test may change before the services start.
pub fn base_config(store: &StoreDb, legacy: &LegacyDb, signing_key_pem: &str) -> Config {
    let mut config = Config::default();
    config.frontend.listen = "127.0.0.1:0".into();
    config.store.listen = "127.0.0.1:0".into();
    config.legacy.listen = "127.0.0.1:0".into();
    config.migration.listen = "127.0.0.1:0".into();
    config.migration.admin_listen = "127.0.0.1:0".into();
    config.frontend.metrics_listen = "127.0.0.1:0".into();
    config.store.metrics_listen = "127.0.0.1:0".into();
    config.legacy.metrics_listen = "127.0.0.1:0".into();
    config.migration.metrics_listen = "127.0.0.1:0".into();
    config.store.database_url = store.database.url.clone().into();
    config.migration.database_url = store.database.url.clone().into();
    config.legacy.database_url = legacy.database.url.clone().into();
    config.legacy.find_user = legacy.find_user.clone();
    config.legacy.count_users = "SELECT COUNT(*) FROM users".into();
    config.legacy.list_users = legacy.list_users.clone();
    config.migration.backfill_lease_seconds = 1;
    // Tests switch modes and watch other replicas follow: keep the caches short.
    config.migration.mode_cache_ms = 200;
    config.frontend.mode_refresh_ms = 200;
    config.legacy.query_timeout_ms = 1500;
    config.migration.legacy_timeout_ms = 2500;
    config.tokens.signing_key = signing_key_pem.to_owned();
    config.store.factor_key = trickle_user_store::config::FactorKeySetting(format!(
        "test-key:{}",
        trickle_user_store::factors::generate_key().expect("random factor key")
    ));
    config
}

impl TestTrickle {
    /// A legacy user whose password is stored as bcrypt (cost 10).
    pub async fn legacy_user(&self, legacy_id: i64, email: &str, password: &str) {
        self.legacy
            .insert(&LegacyRecord::new(legacy_id, email, bcrypt(password)))
            .await;
    }

    /// Log in through the public API (plain gRPC to the frontend), expecting success.
    pub async fn login_ok(
        &self,
        email: &str,
        password: &str,
    ) -> trickle_proto::auth::v1::LoginResponse {
        self.client()
            .await
            .login(trickle_proto::auth::v1::LoginRequest {
                email: email.into(),
                password: password.into(),
                attempt_source: String::new(),
            })
            .await
            .unwrap_or_else(|status| panic!("login of {email}: {status:?}"))
            .into_inner()
    }

    /// Fresh databases and the four services on them.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let legacy = LegacyDb::create(backend, &dir).await;
        Self::start_with_legacy(backend, dir, legacy, adjust).await
    }

    /// Start on a legacy database the test built itself (an app's real schema).
    pub async fn start_with_legacy(
        backend: Backend,
        dir: Arc<tempfile::TempDir>,
        legacy: LegacyDb,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        capture_logs();
        let store = StoreDb::create(backend, &dir).await;
        let signing_key_pem =
            trickle_auth_frontend::tokens::generate_signing_key_pem().expect("signing key");
        let mut config = base_config(&store, &legacy, &signing_key_pem);
        adjust(&mut config);
        let clock = Clock::system();
        let cluster = Cluster::start_with_clock(&config, clock.clone())
            .await
            .expect("start the four services");
        Self {
            cluster,
            clock,
            config,
            signing_key_pem,
            legacy,
            store,
            dir,
        }
    }

    pub async fn client(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::connect(self.cluster.frontend.url())
            .await
            .expect("connect to the frontend")
    }

    pub async fn admin(&self) -> MigrationAdminClient<Channel> {
        MigrationAdminClient::connect(self.cluster.coordinator.admin_url())
            .await
            .expect("connect to the coordinator")
    }

    /// Start a second set of services on the same store database, with `adjust` applied
    /// (another replica, or one whose legacy database is unreachable).
    pub async fn second_cluster(&self, adjust: impl FnOnce(&mut Config)) -> Cluster {
        let mut config = self.config.clone();
        adjust(&mut config);
        // The same clock: replicas of one deployment agree on the time.
        Cluster::start_with_clock(&config, self.clock.clone())
            .await
            .expect("start the second set of services")
    }
}
