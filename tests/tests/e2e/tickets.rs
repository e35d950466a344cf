//! Reset tickets: bound to the email they were sent to, and used up together — a completed
//! reset or a password change revokes every other outstanding reset ticket of the user.

use crate::support::assert_status;
use tonic::Code;
use trickle_proto::auth::v1::auth_service_client::AuthServiceClient;
use trickle_proto::auth::v1::{
    ChangeEmailRequest, ChangePasswordRequest, CreatePasswordResetTicketRequest,
    ResetPasswordRequest,
};
use trickle_service_kit::rpc::reason;
use trickle_tests::{Backend, TestTrickle};

async fn ticket(client: &mut AuthServiceClient<tonic::transport::Channel>, email: &str) -> String {
    client
        .create_password_reset_ticket(CreatePasswordResetTicketRequest {
            email: email.into(),
        })
        .await
        .expect("ticket")
        .into_inner()
        .ticket
}

fn reset(ticket: &str, password: &str) -> ResetPasswordRequest {
    ResetPasswordRequest {
        ticket: ticket.into(),
        new_password: password.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_ticket_dies_with_an_email_change() {
    let trickle = TestTrickle::start(Backend::Sqlite).await;
    trickle
        .legacy_user(8901, "frank@example.com", "franks-password")
        .await;
    let user = trickle
        .login_ok("frank@example.com", "franks-password")
        .await
        .user
        .expect("user");
    let mut client = trickle.client().await;
    let old_ticket = ticket(&mut client, "frank@example.com").await;
    client
        .change_email(ChangeEmailRequest {
            user_id: user.user_id.clone(),
            new_email: "frank.new@example.com".into(),
        })
        .await
        .expect("email changed");
    let status = client
        .reset_password(reset(&old_ticket, "someone else's choice"))
        .await
        .expect_err("a ticket sent to the old address");
    assert_status(&status, Code::InvalidArgument, reason::TICKET_INVALID);
    trickle
        .login_ok("frank.new@example.com", "franks-password")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_or_a_password_change_revokes_the_other_tickets() {
    let trickle = TestTrickle::start(Backend::Sqlite).await;
    trickle
        .legacy_user(8902, "gina@example.com", "ginas-password")
        .await;
    let user = trickle
        .login_ok("gina@example.com", "ginas-password")
        .await
        .user
        .expect("user");
    let mut client = trickle.client().await;

    let (first, second) = (
        ticket(&mut client, "gina@example.com").await,
        ticket(&mut client, "gina@example.com").await,
    );
    client
        .reset_password(reset(&first, "the first reset wins"))
        .await
        .expect("reset");
    let status = client
        .reset_password(reset(&second, "a second reset"))
        .await
        .expect_err("revoked by the first reset");
    assert_status(&status, Code::FailedPrecondition, reason::TICKET_USED);

    let third = ticket(&mut client, "gina@example.com").await;
    client
        .change_password(ChangePasswordRequest {
            user_id: user.user_id.clone(),
            old_password: "the first reset wins".into(),
            new_password: "changed by gina herself".into(),
        })
        .await
        .expect("password changed");
    let status = client
        .reset_password(reset(&third, "an old ticket's choice"))
        .await
        .expect_err("revoked by the password change");
    assert_status(&status, Code::FailedPrecondition, reason::TICKET_USED);
    trickle
        .login_ok("gina@example.com", "changed by gina herself")
        .await;
}
