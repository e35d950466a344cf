//! The tonic layer: proto ⇄ domain conversions only.

use crate::config::Mode;
use crate::error::CoordinatorError;
use crate::migrate_on_login::{Coordinator, MigrationOutcome};
use tonic::{Request, Response, Status};
use trickle_password::Password;
use trickle_proto::migration::v1::{
    self as pb, FindLegacyUserRequest, FindLegacyUserResponse, GetModeRequest, GetModeResponse,
    MigrateOnLoginRequest, MigrateOnLoginResponse, migrate_on_login_response::Outcome,
    migration_coordinator_server::MigrationCoordinator,
};
use trickle_service_kit::Email;
use trickle_service_kit::rpc::Violations;

#[derive(Debug, Clone)]
pub(crate) struct CoordinatorService {
    pub coordinator: Coordinator,
}

fn mode_to_proto(mode: Mode) -> pb::Mode {
    match mode {
        Mode::Import => pb::Mode::Import,
        Mode::Authoritative => pb::Mode::Authoritative,
    }
}

#[tonic::async_trait]
impl MigrationCoordinator for CoordinatorService {
    async fn migrate_on_login(
        &self,
        request: Request<MigrateOnLoginRequest>,
    ) -> Result<Response<MigrateOnLoginResponse>, Status> {
        let MigrateOnLoginRequest { email, password } = request.into_inner();
        let mut violations = Violations::default();
        let email = violations.check("email", Email::parse(&email));
        let password = Password::new(password);
        violations.check("password", password.check_presented());
        let Some(email) = email.filter(|_| violations.is_empty()) else {
            return Err(CoordinatorError::InvalidRequest(violations.into_vec()).into());
        };
        let (outcome, user) = match self.coordinator.migrate_on_login(&email, password).await? {
            MigrationOutcome::Migrated(user) => (Outcome::Migrated, Some(user)),
            MigrationOutcome::AlreadyMigrated(user) => (Outcome::AlreadyMigrated, Some(user)),
            MigrationOutcome::LegacyRejected => (Outcome::LegacyRejected, None),
            MigrationOutcome::Conflict => (Outcome::Conflict, None),
            MigrationOutcome::NotImporting => (Outcome::NotImporting, None),
        };
        Ok(Response::new(MigrateOnLoginResponse {
            outcome: outcome.into(),
            user,
        }))
    }

    async fn find_legacy_user(
        &self,
        request: Request<FindLegacyUserRequest>,
    ) -> Result<Response<FindLegacyUserResponse>, Status> {
        let FindLegacyUserRequest { email } = request.into_inner();
        let mut violations = Violations::default();
        let Some(email) = violations.check("email", Email::parse(&email)) else {
            return Err(CoordinatorError::InvalidRequest(violations.into_vec()).into());
        };
        let (found, mode) = self.coordinator.find_legacy_user(&email).await?;
        Ok(Response::new(FindLegacyUserResponse {
            found,
            mode: mode_to_proto(mode).into(),
        }))
    }

    async fn get_mode(
        &self,
        request: Request<GetModeRequest>,
    ) -> Result<Response<GetModeResponse>, Status> {
        let GetModeRequest {} = request.into_inner();
        let mode = self.coordinator.mode().await?;
        Ok(Response::new(GetModeResponse {
            mode: mode_to_proto(mode).into(),
        }))
    }
}
