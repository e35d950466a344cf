//! `last_login_at` is written after a login answers, in batches (`[store]
//! last_login_flush_ms`): it arrives within the bound, a stop writes what a replica still
//! holds, and a late batch never moves it back.

use crate::support::logged_in_user;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use trickle_proto::auth::v1::auth_service_client::AuthServiceClient;
use trickle_proto::auth::v1::{GetUserRequest, SignUpRequest, get_user_request::Lookup};
use trickle_tests::{Backend, TestTrickle};

on_both_backends!(last_login_at_arrives_after_the_login_and_never_moves_back);

async fn stored_last_login(
    client: &mut AuthServiceClient<Channel>,
    email: &str,
) -> Option<prost_types::Timestamp> {
    client
        .get_user(GetUserRequest {
            lookup: Some(Lookup::Email(email.into())),
        })
        .await
        .expect("get user")
        .into_inner()
        .user
        .expect("user")
        .last_login_at
}

/// Read until the stored `last_login_at` is `expected`, failing after 10 s.
async fn until_stored(
    client: &mut AuthServiceClient<Channel>,
    email: &str,
    expected: &Option<prost_types::Timestamp>,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stored = stored_last_login(client, email).await;
        if &stored == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "last_login_at of {email} is {stored:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn last_login_at_arrives_after_the_login_and_never_moves_back(backend: Backend) {
    let trickle = TestTrickle::start_with(backend, |config| {
        config.store.last_login_flush_ms = 100;
    })
    .await;
    let mut client = trickle.client().await;
    for email in ["lou@example.com", "sam@example.com"] {
        client
            .sign_up(SignUpRequest {
                email: email.into(),
                password: "a good long password".into(),
                profile: None,
            })
            .await
            .expect("sign up");
        assert_eq!(stored_last_login(&mut client, email).await, None);
    }

    // The login answers with its time; the store has it within the flush interval.
    let first = logged_in_user(&mut client, "lou@example.com", "a good long password")
        .await
        .last_login_at;
    assert!(first.is_some(), "the login answers with its time");
    until_stored(&mut client, "lou@example.com", &first).await;

    // A replica that writes only when it stops (an hour between writes).
    let slow = trickle
        .second_cluster(|config| config.store.last_login_flush_ms = 3_600_000)
        .await;
    let mut through_slow = AuthServiceClient::connect(slow.frontend.url())
        .await
        .expect("connect to the second frontend");
    let early = logged_in_user(&mut through_slow, "lou@example.com", "a good long password")
        .await
        .last_login_at;
    let sam = logged_in_user(&mut through_slow, "sam@example.com", "a good long password")
        .await
        .last_login_at;
    assert!(sam.is_some());
    // A later login of Lou through the first replica is written first.
    trickle.clock.advance(Duration::from_secs(60));
    let late = logged_in_user(&mut client, "lou@example.com", "a good long password")
        .await
        .last_login_at;
    assert!(late.as_ref().map(|t| t.seconds) > early.as_ref().map(|t| t.seconds));
    until_stored(&mut client, "lou@example.com", &late).await;
    // Not written before the stop, whatever the reads in between did.
    assert_eq!(
        stored_last_login(&mut client, "sam@example.com").await,
        None
    );

    // The stop writes what the slow replica held: Sam's login, and Lou's older one, which
    // does not replace the later time.
    slow.stop().await.expect("stop the second replica");
    assert_eq!(stored_last_login(&mut client, "sam@example.com").await, sam);
    assert_eq!(
        stored_last_login(&mut client, "lou@example.com").await,
        late
    );
}
