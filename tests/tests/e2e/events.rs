//! Events for other services: every change to a user is one event from the store's
//! transactional outbox, in commit order, with contiguous positions to resume from, and none
//! for a change that was refused; WatchEvents streams them and the webhook POSTs them,
//! signed, at least once, across a failing receiver and a coordinator restart.

use crate::support::alice;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use trickle_proto::auth::v1::{
    BlockUserRequest, ChangeEmailRequest, ChangePasswordRequest,
    CreateEmailVerificationTicketRequest, CreatePasswordResetTicketRequest, DeleteUserRequest,
    Profile, ResetPasswordRequest, SignUpRequest, UnblockUserRequest, UpdateProfileRequest,
    VerifyEmailRequest,
};
use trickle_proto::events::v1::event_feed_client::EventFeedClient;
use trickle_proto::events::v1::{Event, EventKind, UserSource, WatchEventsRequest};
use trickle_tests::{Backend, Receiver, TestTrickle, WEBHOOK_SECRET, serve_receiver};

on_both_backends!(every_change_is_one_event_in_commit_order,);

/// The first `count` events after `after` (only `kinds`, if any), failing after 30 s.
pub(crate) async fn watch(
    trickle: &TestTrickle,
    after: i64,
    kinds: &[EventKind],
    count: usize,
) -> Vec<Event> {
    let mut feed = EventFeedClient::connect(trickle.cluster.coordinator.admin_url())
        .await
        .expect("connect to the event feed");
    let mut stream = feed
        .watch_events(WatchEventsRequest {
            after_position: after,
            kinds: kinds.iter().map(|k| *k as i32).collect(),
        })
        .await
        .expect("watch events")
        .into_inner();
    let mut events = Vec::new();
    while events.len() < count {
        let next = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} events came: {events:#?}", events.len()))
            .expect("the stream failed")
            .expect("the stream ended");
        events.push(next.event.expect("event"));
    }
    events
}

async fn sign_up(trickle: &TestTrickle, email: &str, password: &str) -> String {
    trickle
        .client()
        .await
        .sign_up(SignUpRequest {
            email: email.into(),
            password: password.into(),
            profile: None,
        })
        .await
        .unwrap_or_else(|status| panic!("sign-up of {email}: {status:?}"))
        .into_inner()
        .user
        .expect("user")
        .user_id
}

async fn every_change_is_one_event_in_commit_order(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    alice(&trickle, "alice-legacy-password").await;
    let mut client = trickle.client().await;
    let passwords = [
        "erin-first-password",
        "erin-second-password",
        "erin-third-password",
        "alice-legacy-password",
    ];

    let erin = sign_up(&trickle, "Erin@Example.com", passwords[0]).await;
    let frank = sign_up(&trickle, "frank@example.com", "frank-password").await;
    // Refused changes write nothing: a second sign-up of the email, a taken email.
    client
        .sign_up(SignUpRequest {
            email: "erin@example.com".into(),
            password: "another-password".into(),
            profile: None,
        })
        .await
        .expect_err("the email is taken");
    trickle.login_ok("erin@example.com", passwords[0]).await;
    let alice_id = trickle
        .login_ok("alice@example.com", passwords[3])
        .await
        .user
        .expect("user")
        .user_id;
    client
        .change_password(ChangePasswordRequest {
            user_id: erin.clone(),
            old_password: passwords[0].into(),
            new_password: passwords[1].into(),
        })
        .await
        .expect("change password");
    // Refused by the store's unique constraint, inside the change's transaction: the
    // rollback takes the event with it.
    client
        .change_email(ChangeEmailRequest {
            user_id: erin.clone(),
            new_email: "FRANK@example.com".into(),
        })
        .await
        .expect_err("frank has that email");
    client
        .change_email(ChangeEmailRequest {
            user_id: erin.clone(),
            new_email: "erin.new@example.com".into(),
        })
        .await
        .expect("change email");
    let verification = client
        .create_email_verification_ticket(CreateEmailVerificationTicketRequest {
            user_id: erin.clone(),
        })
        .await
        .expect("verification ticket")
        .into_inner()
        .ticket;
    client
        .verify_email(VerifyEmailRequest {
            ticket: verification.clone(),
        })
        .await
        .expect("verify");
    let reset = client
        .create_password_reset_ticket(CreatePasswordResetTicketRequest {
            email: "erin.new@example.com".into(),
        })
        .await
        .expect("reset ticket")
        .into_inner()
        .ticket;
    client
        .reset_password(ResetPasswordRequest {
            ticket: reset.clone(),
            new_password: passwords[2].into(),
        })
        .await
        .expect("reset");
    client
        .block_user(BlockUserRequest {
            user_id: erin.clone(),
        })
        .await
        .expect("block");
    client
        .unblock_user(UnblockUserRequest {
            user_id: erin.clone(),
        })
        .await
        .expect("unblock");
    client
        .update_profile(UpdateProfileRequest {
            user_id: erin.clone(),
            profile: Some(Profile {
                name: "Erin".into(),
                ..Profile::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()],
            }),
        })
        .await
        .expect("update profile");
    client
        .delete_user(DeleteUserRequest {
            user_id: erin.clone(),
        })
        .await
        .expect("delete");

    let expected = [
        (EventKind::UserSignedUp, &erin),
        (EventKind::UserSignedUp, &frank),
        (EventKind::LoginSucceeded, &erin),
        (EventKind::UserMigrated, &alice_id),
        (EventKind::LoginSucceeded, &alice_id),
        (EventKind::PasswordChanged, &erin),
        (EventKind::EmailChanged, &erin),
        (EventKind::EmailVerified, &erin),
        (EventKind::PasswordReset, &erin),
        (EventKind::UserBlocked, &erin),
        (EventKind::UserUnblocked, &erin),
        (EventKind::ProfileUpdated, &erin),
        (EventKind::UserDeleted, &erin),
    ];
    let events = watch(&trickle, 0, &[], expected.len()).await;
    let seen: Vec<(EventKind, &String)> = events.iter().map(|e| (e.kind(), &e.user_id)).collect();
    assert_eq!(seen, expected, "{events:#?}");
    let positions: Vec<i64> = events.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=13).collect::<Vec<i64>>());
    assert_eq!(
        events
            .iter()
            .map(|e| &e.event_id)
            .collect::<HashSet<_>>()
            .len(),
        13,
        "event ids are unique"
    );

    // What each kind carries, and emails only where the event is about the address.
    // As the user spelled it (the store compares the normalized form).
    assert_eq!(events[0].email, "Erin@Example.com");
    assert_eq!(events[0].source(), UserSource::Signup);
    assert!(events[2].email.is_empty() && !events[2].password_rehashed);
    assert_eq!(
        (
            events[3].legacy_id.as_str(),
            events[3].source(),
            events[3].email.as_str()
        ),
        ("4242", UserSource::LoginMigration, "Alice@Example.com")
    );
    assert!(events[3].password_rehashed, "a login migration re-hashes");
    assert_eq!(events[6].email, "erin.new@example.com");
    assert_eq!(events[7].email, "erin.new@example.com");
    assert_eq!(events[11].profile_fields, ["name"]);
    for event in [&events[5], &events[8], &events[9], &events[10], &events[12]] {
        assert!(event.email.is_empty(), "{event:?}");
    }
    // No secret in any event.
    let printed = format!("{events:?}");
    for secret in passwords
        .iter()
        .copied()
        .chain([verification.as_str(), reset.as_str()])
    {
        assert!(!printed.contains(secret), "an event carries a secret");
    }
    assert!(!printed.contains("$argon2") && !printed.contains("$2b$"));

    // Resuming after a position starts right after it; a filter keeps positions.
    let resumed = watch(&trickle, 7, &[], 5).await;
    assert_eq!(resumed[0].position, 8);
    assert_eq!(resumed[0].event_id, events[7].event_id);
    let deletions = watch(&trickle, 0, &[EventKind::UserDeleted], 1).await;
    assert_eq!(deletions[0].position, 13);
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(45);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn webhook_config(config: &mut trickle::config::Config, url: String) {
    config.migration.webhook_url = url;
    config.migration.webhook_secret =
        trickle_migration_coordinator::config::WebhookSecret(WEBHOOK_SECRET.into());
    config.migration.webhook_batch = 4;
    config.migration.webhook_backoff_ms = 100;
    config.migration.webhook_backoff_max_ms = 400;
    config.migration.webhook_lease_seconds = 1;
    config.migration.events_poll_ms = 100;
    config.store.events_sequence_ms = 50;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_deliver_everything_across_a_failing_receiver_and_a_coordinator_restart() {
    let receiver = Arc::new(Receiver::default());
    receiver.failing.store(true, Ordering::SeqCst);
    let url = serve_receiver(receiver.clone()).await;
    let mut trickle = TestTrickle::start_with(Backend::PostgresMariaDb, |config| {
        webhook_config(config, url);
        config.migration.webhook_max_attempts = 10_000;
    })
    .await;
    // A second coordinator replica with the same webhook runs throughout: with the lease,
    // one delivers at a time. (This run would see a duplicate only if the two raced inside
    // its window; a broken lease is not caught deterministically here.)
    let _replica = trickle.second_cluster(|_| {}).await;
    let mut users = HashSet::new();
    for i in 0..6 {
        users.insert(sign_up(&trickle, &format!("hook{i}@example.com"), "a hook password").await);
    }
    // The receiver is down: the coordinator keeps trying, and settles nothing.
    until("retries", || receiver.attempts.load(Ordering::SeqCst) >= 3).await;
    assert!(receiver.accepted.lock().unwrap().is_empty());

    // The coordinator dies and comes back; the receiver is still down.
    trickle
        .cluster
        .restart_coordinator(trickle.clock.clone())
        .await
        .expect("restart the coordinator");
    let before_restart = receiver.attempts.load(Ordering::SeqCst);
    for i in 6..10 {
        users.insert(sign_up(&trickle, &format!("hook{i}@example.com"), "a hook password").await);
    }
    until("retries after the restart", || {
        receiver.attempts.load(Ordering::SeqCst) > before_restart
    })
    .await;

    // The receiver recovers: every sign-up arrives, in position order, none lost.
    receiver.failing.store(false, Ordering::SeqCst);
    until("every sign-up delivered", || {
        receiver.delivered_users("user.signed_up") == users
    })
    .await;
    let (delivered, total) = receiver.delivered();
    let positions: Vec<i64> = receiver
        .accepted
        .lock()
        .unwrap()
        .iter()
        .flat_map(|body| body["events"].as_array().unwrap().clone())
        .map(|event| event["position"].as_i64().unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "in order, each once (a crash between a POST and its cursor could repeat a batch; \
         this run had none): {positions:?}"
    );
    assert_eq!(total, delivered.len());
    assert_eq!(receiver.bad_signatures.load(Ordering::SeqCst), 0);
    let sample = delivered
        .values()
        .find(|e| e["type"] == "user.signed_up")
        .unwrap();
    assert_eq!(sample["source"], "signup");
    assert!(sample["email"].as_str().unwrap().ends_with("@example.com"));
    let bodies = serde_json::to_string(&*receiver.accepted.lock().unwrap()).unwrap();
    assert!(!bodies.contains("a hook password") && !bodies.contains("$argon2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_receiver_keeps_refusing_is_dead_lettered_and_delivery_goes_on() {
    let receiver = Arc::new(Receiver::default());
    *receiver.poison.lock().unwrap() = Some("poison@example.com".into());
    let url = serve_receiver(receiver.clone()).await;
    let trickle = TestTrickle::start_with(Backend::Sqlite, |config| {
        webhook_config(config, url);
        config.migration.webhook_batch = 1;
        config.migration.webhook_max_attempts = 3;
        config.migration.webhook_backoff_ms = 20;
    })
    .await;
    let dead_letters = || {
        trickle_telemetry::metrics::metrics()
            .webhook_events
            .with_label_values(&["dead_letter"])
            .get()
    };
    let dead_before = dead_letters();
    let first = sign_up(&trickle, "first@example.com", "a hook password").await;
    sign_up(&trickle, "poison@example.com", "a hook password").await;
    let last = sign_up(&trickle, "last@example.com", "a hook password").await;
    until("the sign-ups around the refused one", || {
        let users = receiver.delivered_users("user.signed_up");
        users.contains(&first) && users.contains(&last)
    })
    .await;
    assert_eq!(receiver.poisoned.load(Ordering::SeqCst), 3, "tried 3 times");
    assert_eq!(dead_letters() - dead_before, 1);
    assert_eq!(receiver.delivered_users("user.signed_up").len(), 2);
}

/// Sign-ups committing in parallel on two store replicas (two sequencers taking turns on
/// PostgreSQL's advisory lock), read by a stream that is running meanwhile: each event
/// arrives once, none is skipped, and positions stay contiguous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_committed_in_parallel_reach_a_running_stream_once_each() {
    let trickle = TestTrickle::start(Backend::PostgresMariaDb).await;
    let replica = trickle.second_cluster(|_| {}).await;
    let replica_client = trickle_proto::auth::v1::auth_service_client::AuthServiceClient::connect(
        replica.frontend.url(),
    )
    .await
    .expect("connect to the second replica");
    let watching = watch(&trickle, 0, &[], 24);
    let signing_up = futures::future::join_all((0..24).map(|i| {
        let trickle = &trickle;
        let mut replica_client = replica_client.clone();
        async move {
            let email = format!("parallel{i}@example.com");
            if i % 2 == 0 {
                return sign_up(trickle, &email, "a parallel password").await;
            }
            replica_client
                .sign_up(SignUpRequest {
                    email,
                    password: "a parallel password".into(),
                    profile: None,
                })
                .await
                .expect("sign-up on the second replica")
                .into_inner()
                .user
                .expect("user")
                .user_id
        }
    }));
    let (events, users) = tokio::join!(watching, signing_up);
    let positions: Vec<i64> = events.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=24).collect::<Vec<i64>>());
    let received: HashSet<String> = events.iter().map(|e| e.user_id.clone()).collect();
    assert_eq!(received, users.into_iter().collect::<HashSet<_>>());
}

/// A user with a second factor has logged in when the code is accepted, not at the password:
/// that is when LOGIN_SUCCEEDED is written, marked `second_factor`. Enrolling and removing
/// the factor are events too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_factor_login_is_an_event_once_the_code_is_accepted() {
    let trickle = TestTrickle::start(Backend::Sqlite).await;
    let mut client = trickle.client().await;
    let tess = sign_up(&trickle, "tess@example.com", "tess-password").await;
    let (_, recovery_codes, _) = crate::mfa::enroll(&trickle, &mut client, &tess).await;
    let challenge =
        crate::mfa::challenge_of(&mut client, "tess@example.com", "tess-password").await;
    // The password alone: no login yet (only the sign-up and the factor).
    let so_far = watch(&trickle, 0, &[], 2).await;
    assert_eq!(
        so_far.iter().map(Event::kind).collect::<Vec<_>>(),
        [EventKind::UserSignedUp, EventKind::FactorEnrolled]
    );
    assert_eq!(so_far[1].factor_kind, "totp");
    crate::mfa::verify(&mut client, &challenge, &recovery_codes[0])
        .await
        .expect("a recovery code completes the login");
    client
        .remove_factor(trickle_proto::auth::v1::RemoveFactorRequest {
            user_id: tess.clone(),
        })
        .await
        .expect("remove the factor");
    let rest = watch(&trickle, 2, &[], 2).await;
    assert_eq!(
        rest.iter().map(Event::kind).collect::<Vec<_>>(),
        [EventKind::LoginSucceeded, EventKind::FactorRemoved]
    );
    assert!(rest[0].second_factor && rest[0].user_id == tess);
    let printed = format!("{rest:?}{so_far:?}");
    assert!(
        !recovery_codes
            .iter()
            .any(|code| printed.contains(code.as_str()))
    );
}

/// Bad requests are INVALID_ARGUMENT; resuming before the oldest event kept (after the
/// retention deleted older ones) is FAILED_PRECONDITION with the position to resume from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_events_and_bad_requests_get_clear_errors() {
    use trickle_service_kit::rpc::{metadata_of, reason};
    let trickle = TestTrickle::start_with(Backend::Sqlite, |config| {
        config.store.prune_interval_seconds = 1;
        config.store.events_retention_hours = 1;
    })
    .await;
    let mut feed = EventFeedClient::connect(trickle.cluster.coordinator.admin_url())
        .await
        .expect("connect");
    for (after, kinds) in [(-1, vec![]), (0, vec![0]), (0, vec![999])] {
        let status = feed
            .watch_events(WatchEventsRequest {
                after_position: after,
                kinds,
            })
            .await
            .expect_err("refused");
        crate::support::assert_status(
            &status,
            tonic::Code::InvalidArgument,
            reason::INVALID_REQUEST,
        );
    }

    for i in 0..3 {
        sign_up(&trickle, &format!("old{i}@example.com"), "an old password").await;
    }
    watch(&trickle, 0, &[], 3).await;
    // Two hours later the retention deletes the first two (the newest is always kept).
    trickle.clock.advance(Duration::from_secs(2 * 3600));
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        let mut stream = feed
            .watch_events(WatchEventsRequest {
                after_position: 1,
                kinds: vec![],
            })
            .await
            .expect("stream")
            .into_inner();
        match tokio::time::timeout(Duration::from_secs(2), stream.message()).await {
            Ok(Err(status)) => break status,
            _ => {
                assert!(
                    Instant::now() < deadline,
                    "the old events were never pruned"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    crate::support::assert_status(
        &status,
        tonic::Code::FailedPrecondition,
        reason::EVENTS_PRUNED,
    );
    assert_eq!(metadata_of(&status)["oldest_position"], "3");
    // From the oldest kept, the feed goes on; later events keep counting from there.
    sign_up(&trickle, "new@example.com", "a new password").await;
    let resumed = watch(&trickle, 2, &[], 2).await;
    assert_eq!(
        resumed.iter().map(|e| e.position).collect::<Vec<_>>(),
        [3, 4]
    );
}
