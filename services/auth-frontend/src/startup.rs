//! Building and running the auth-frontend.

use crate::auth::AuthFlows;
use crate::config::{FrontendConfig, TokenConfig};
use crate::grpc::AuthApi;
use crate::mode::ModeWatch;
use crate::tokens::{KeyError, TokenIssuer};
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::service::Routes;
use trickle_proto::auth::v1::auth_service_server::AuthServiceServer;
use trickle_proto::migration::v1::migration_coordinator_client::MigrationCoordinatorClient;
use trickle_proto::userstore::v1::user_store_client::UserStoreClient;
use trickle_service_kit::server::{self, MAX_DECODING_MESSAGE_SIZE, RunningServer};

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
}

#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    flows: AuthFlows,
}

impl Application {
    pub async fn build(config: &FrontendConfig, tokens: &TokenConfig) -> Result<Self, StartError> {
        let tokens = TokenIssuer::from_config(tokens)?;
        let timeout = Duration::from_millis(config.upstream_timeout_ms);
        let store = UserStoreClient::new(server::channel(&config.store_url, timeout)?)
            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE);
        let coordinator =
            MigrationCoordinatorClient::new(server::channel(&config.coordinator_url, timeout)?)
                .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE);
        let mode = ModeWatch::start(
            coordinator.clone(),
            Duration::from_millis(config.mode_refresh_ms),
        );
        let listener = server::bind(&config.listen).await?;
        tracing::info!(listen = %listener.local_addr()?, "auth-frontend ready");
        Ok(Self {
            listener,
            flows: AuthFlows::new(store, coordinator, tokens, mode),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    fn routes(flows: AuthFlows) -> Routes {
        Routes::new(
            AuthServiceServer::new(AuthApi { flows })
                .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
        )
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        server::serve(
            self.listener,
            Self::routes(self.flows),
            SERVICE_NAMES,
            shutdown,
        )
        .await?;
        Ok(())
    }

    pub fn spawn(self) -> Result<RunningServer, StartError> {
        Ok(RunningServer::spawn(
            self.listener,
            Self::routes(self.flows),
            SERVICE_NAMES,
        )?)
    }
}
