//! Mutual TLS between the services: with `tls` set on every service, a migration works end
//! to end over TLS on every internal hop, and the internal servers refuse a caller without a
//! certificate, or with one from another CA.

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use trickle_proto::auth::v1::LoginRequest;
use trickle_proto::userstore::v1::user_store_client::UserStoreClient;
use trickle_proto::userstore::v1::{GetUserRequest, get_user_request};
use trickle_service_kit::tls::TlsConfig;
use trickle_tests::{Backend, LegacyRecord, TestPki, TestTrickle, bcrypt};

/// A store client over TLS trusting our CA, presenting `identity` (or nothing).
async fn store_client(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: Option<&TlsConfig>,
) -> Result<UserStoreClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&id.cert_file).expect("cert"),
            std::fs::read(&id.key_file).expect("key"),
        ));
    }
    let channel = Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(UserStoreClient::new(channel))
}

async fn get_alice(
    client: Result<UserStoreClient<Channel>, tonic::transport::Error>,
) -> Result<String, String> {
    let mut client = client.map_err(|e| format!("connect: {e}"))?;
    client
        .get_user(GetUserRequest {
            lookup: Some(get_user_request::Lookup::Email("alice@example.com".into())),
        })
        .await
        .map(|r| r.into_inner().user.unwrap_or_default().email)
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_calls_need_a_certificate_from_the_trusted_ca() {
    let pki = TestPki::create();
    let trickle = TestTrickle::start_with(Backend::PostgresMariaDb, |config| {
        for tls in [
            &mut config.store.tls,
            &mut config.legacy.tls,
            &mut config.migration.tls,
            &mut config.frontend.tls,
        ] {
            *tls = pki.service.clone();
        }
    })
    .await;
    trickle
        .legacy
        .insert(&LegacyRecord::new(
            1,
            "alice@example.com",
            bcrypt("alice-password"),
        ))
        .await;

    // frontend → store, frontend → coordinator → legacy connector → coordinator → store:
    // every hop over mutual TLS.
    let response = trickle
        .client()
        .await
        .login(LoginRequest {
            email: "alice@example.com".into(),
            password: "alice-password".into(),
            attempt_source: String::new(),
        })
        .await
        .expect("a first login over mutual TLS")
        .into_inner();
    assert!(response.migrated);

    let store = trickle.cluster.store.local_addr;
    // A caller with a certificate from the trusted CA is served…
    assert_eq!(
        get_alice(store_client(store, &pki.ca_pem, Some(&pki.service)).await).await,
        Ok("alice@example.com".to_owned())
    );
    // …one without a certificate is not,
    let refused = get_alice(store_client(store, &pki.ca_pem, None).await).await;
    assert!(refused.is_err(), "no client certificate: {refused:?}");
    // nor one whose certificate another CA signed,
    let refused = get_alice(store_client(store, &pki.ca_pem, Some(&pki.rogue)).await).await;
    assert!(refused.is_err(), "rogue client certificate: {refused:?}");
    // nor a plaintext caller.
    let plain = async {
        let mut client = UserStoreClient::connect(format!("http://{store}"))
            .await
            .map_err(|e| e.to_string())?;
        client
            .get_user(GetUserRequest {
                lookup: Some(get_user_request::Lookup::Email("alice@example.com".into())),
            })
            .await
            .map_err(|s| s.to_string())
    };
    assert!(plain.await.is_err(), "plaintext caller");

    // `trickle admin` reaches the coordinator with a certificate, and not without one.
    let coordinator = format!(
        "https://{}",
        trickle
            .cluster
            .coordinator
            .admin_addr
            .expect("admin listener")
    );
    let status = trickle::admin::run_with_tls(
        &coordinator,
        &pki.service,
        trickle::admin::AdminCommand::Status,
        true,
    )
    .await
    .expect("trickle admin status over mutual TLS");
    assert!(status.contains("\"mode\""), "{status}");
    let without = trickle::admin::run_with_tls(
        &coordinator,
        &TlsConfig {
            cert_file: String::new(),
            key_file: String::new(),
            ..pki.service.clone()
        },
        trickle::admin::AdminCommand::Status,
        true,
    )
    .await;
    assert!(
        without.is_err(),
        "a half TLS setting is refused, not silently plain"
    );

    // The legacy connector and the coordinator refuse a caller without a certificate too.
    for addr in [
        trickle.cluster.legacy.as_ref().expect("running").local_addr,
        trickle.cluster.coordinator.local_addr,
    ] {
        let no_cert = async {
            let channel = Endpoint::from_shared(format!("https://{addr}"))
                .map_err(|e| e.to_string())?
                .tls_config(
                    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca_pem)),
                )
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .map_err(|s| s.to_string())
        };
        assert!(
            no_cert.await.is_err(),
            "{addr} served a caller without a certificate"
        );
    }
}

/// A half-set TLS section is an error at start, not TLS silently off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_tls_settings_stop_the_service_from_starting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = trickle_user_store::StoreConfig {
        listen: "127.0.0.1:0".into(),
        metrics_listen: String::new(),
        database_url: format!("sqlite://{}", dir.path().join("store.db").display()).into(),
        tls: TlsConfig {
            cert_file: "/nonexistent/cert.pem".into(),
            ..TlsConfig::default()
        },
        ..Default::default()
    };
    let err = trickle_user_store::build(&config)
        .await
        .expect_err("incomplete TLS");
    assert!(err.to_string().contains("ca_file"), "{err}");
}

/// The public API with client certificates: a caller without one is refused, and failed
/// logins are counted per calling client as well as per email — a client that fails too often
/// is locked out (RATE_LIMITED with a retry delay) while another client logs the same user in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_throttled_per_calling_client() {
    use trickle_proto::auth::v1::auth_service_client::AuthServiceClient;
    use trickle_service_kit::rpc;
    let pki = TestPki::create();
    let trickle = TestTrickle::start_with(Backend::PostgresMariaDb, |config| {
        config.frontend.public_tls = pki.service.clone();
        config.store.client_throttle_failures = 3;
        config.store.client_throttle_lockout_seconds = 60;
    })
    .await;
    trickle
        .legacy
        .insert(&LegacyRecord::new(
            1,
            "alice@example.com",
            bcrypt("alice-password"),
        ))
        .await;
    let addr = trickle.cluster.frontend.local_addr;
    let client_with = |identity: Option<TlsConfig>| {
        let ca = pki.ca_pem.clone();
        async move {
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
            if let Some(id) = identity {
                tls = tls.identity(Identity::from_pem(
                    std::fs::read(&id.cert_file).expect("cert"),
                    std::fs::read(&id.key_file).expect("key"),
                ));
            }
            let channel = Endpoint::from_shared(format!("https://{addr}"))?
                .tls_config(tls)?
                .connect()
                .await?;
            Ok::<_, tonic::transport::Error>(AuthServiceClient::new(channel))
        }
    };
    let login = |password: &str| LoginRequest {
        email: "alice@example.com".into(),
        password: password.into(),
        attempt_source: String::new(),
    };

    // No certificate: no login at all.
    let refused = match client_with(None).await {
        Ok(mut client) => client
            .login(login("alice-password"))
            .await
            .map(|_| ())
            .map_err(|s| s.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(
        refused.is_err(),
        "the public API served a caller without a certificate"
    );

    let mut a = client_with(Some(pki.service.clone()))
        .await
        .expect("client a");
    let mut b = client_with(Some(pki.second.clone()))
        .await
        .expect("client b");
    assert!(
        a.login(login("alice-password"))
            .await
            .expect("alice migrates")
            .into_inner()
            .migrated
    );
    for _ in 0..3 {
        let status = a.login(login("wrong-password")).await.expect_err("wrong");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }
    // Client A is locked out, even with the right password…
    let locked = a
        .login(login("alice-password"))
        .await
        .expect_err("client a locked");
    assert_eq!(locked.code(), tonic::Code::ResourceExhausted, "{locked:?}");
    assert_eq!(rpc::reason_of(&locked).as_deref(), Some("RATE_LIMITED"));
    // …while client B logs the same user in (3 failures do not lock the email).
    b.login(login("alice-password"))
        .await
        .expect("client b is not locked");
}

/// A channel over TLS to `addr`, trusting the test CA and presenting `identity`.
async fn tls_channel(addr: std::net::SocketAddr, pki: &TestPki, identity: &TlsConfig) -> Channel {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .identity(Identity::from_pem(
            std::fs::read(&identity.cert_file).expect("cert"),
            std::fs::read(&identity.key_file).expect("key"),
        ));
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("url")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connect over TLS")
}

fn assert_caller_refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(
        status.code(),
        tonic::Code::PermissionDenied,
        "{what}: {status:?}"
    );
    assert_eq!(
        trickle_service_kit::rpc::reason_of(&status).as_deref(),
        Some(trickle_service_kit::rpc::reason::CALLER_NOT_ALLOWED),
        "{what}: {status:?}"
    );
}

/// With mutual TLS, a valid certificate from the right CA is not enough: each server serves
/// only the identities its configuration names (store ← frontend, coordinator; connector ←
/// coordinator; coordinator ← frontend; admin ← operators). The whole migration still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_servers_serve_only_the_identities_they_allow() {
    use trickle_proto::legacy::v1::legacy_connector_client::LegacyConnectorClient;
    let pki = TestPki::create();
    let frontend = pki.issue("frontend.trickle.test");
    let coordinator = pki.issue("coordinator.trickle.test");
    let store = pki.issue("store.trickle.test");
    let legacy = pki.issue("legacy.trickle.test");
    let operator = pki.issue("operator.trickle.test");
    let names = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let trickle = TestTrickle::start_with(Backend::PostgresMariaDb, |config| {
        config.store.tls = TlsConfig {
            allowed_callers: names(&["frontend.trickle.test", "coordinator.trickle.test"]),
            ..store.clone()
        };
        config.legacy.tls = TlsConfig {
            allowed_callers: names(&["coordinator.trickle.test"]),
            ..legacy.clone()
        };
        config.migration.tls = TlsConfig {
            allowed_callers: names(&["frontend.trickle.test"]),
            ..coordinator.clone()
        };
        config.migration.admin_allowed_callers = names(&["operator.trickle.test"]);
        config.frontend.tls = frontend.clone();
    })
    .await;
    trickle
        .legacy_user(1, "alice@example.com", "alice-password")
        .await;
    let response = trickle
        .login_ok("alice@example.com", "alice-password")
        .await;
    assert!(response.migrated, "a first login through every allowed hop");

    let store_addr = trickle.cluster.store.local_addr;
    let get = GetUserRequest {
        lookup: Some(get_user_request::Lookup::Email("alice@example.com".into())),
    };
    let allowed = UserStoreClient::new(tls_channel(store_addr, &pki, &frontend).await)
        .get_user(get.clone())
        .await
        .expect("the frontend's identity reads the store");
    assert_eq!(
        allowed.into_inner().user.unwrap_or_default().email,
        "alice@example.com"
    );
    // The legacy connector's certificate is valid and from the right CA, but it has no
    // business with the store; neither has a stranger's.
    for (who, identity) in [("legacy connector", &legacy), ("stranger", &pki.second)] {
        assert_caller_refused(
            UserStoreClient::new(tls_channel(store_addr, &pki, identity).await)
                .get_user(get.clone())
                .await,
            who,
        );
    }
    // Only the coordinator reads the legacy store.
    let legacy_addr = trickle.cluster.legacy.as_ref().expect("running").local_addr;
    assert_caller_refused(
        LegacyConnectorClient::new(tls_channel(legacy_addr, &pki, &frontend).await)
            .count_users(trickle_proto::legacy::v1::CountUsersRequest {})
            .await,
        "the frontend calling the legacy connector",
    );
    // Health stays open to any certificate the handshake admitted (probes, tooling).
    let health = tonic_health::pb::health_client::HealthClient::new(
        tls_channel(legacy_addr, &pki, &frontend).await,
    )
    .check(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    })
    .await;
    assert!(health.is_ok(), "{health:?}");

    // The operators' API: operators only, never the frontend's certificate.
    let admin = format!(
        "https://{}",
        trickle
            .cluster
            .coordinator
            .admin_addr
            .expect("admin listener")
    );
    let status = trickle::admin::run_with_tls(
        &admin,
        &operator,
        trickle::admin::AdminCommand::Status,
        true,
    )
    .await
    .expect("an operator reads the status");
    assert!(status.contains("\"mode\""), "{status}");
    let refused = trickle::admin::run_with_tls(
        &admin,
        &frontend,
        trickle::admin::AdminCommand::Status,
        true,
    )
    .await
    .expect_err("the frontend's certificate on the admin API");
    assert!(
        format!("{refused:#}").contains("not allowed"),
        "{refused:#}"
    );
}

/// With `[frontend.public_tls]`, the RPCs that act on an account without its password are
/// allowed per calling identity: a reset ticket only for identities named for it (none by
/// default), other privileged RPCs as configured; ordinary RPCs for every certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_public_rpcs_are_allowed_per_caller_identity() {
    use trickle_proto::auth::v1::auth_service_client::AuthServiceClient;
    use trickle_proto::auth::v1::{
        CreatePasswordResetTicketRequest, DeleteUserRequest, GetUserRequest as PublicGetUser,
        SignUpRequest, get_user_request as public_lookup,
    };
    let pki = TestPki::create();
    let server = pki.issue("auth.trickle.test");
    let app = pki.issue("app.trickle.test");
    let support = pki.issue("support.trickle.test");
    let trickle = TestTrickle::start_with(Backend::Sqlite, |config| {
        config.frontend.public_tls = server.clone();
        config.frontend.privileged_callers.delete_user = Some(vec!["support.trickle.test".into()]);
        config
            .frontend
            .privileged_callers
            .create_password_reset_ticket = Some(vec!["support.trickle.test".into()]);
        config.frontend.privileged_callers.app_metadata = Some(vec!["support.trickle.test".into()]);
        config.frontend.privileged_callers.factors = Some(vec!["support.trickle.test".into()]);
    })
    .await;
    let addr = trickle.cluster.frontend.local_addr;
    let mut as_app = AuthServiceClient::new(tls_channel(addr, &pki, &app).await);
    let mut as_support = AuthServiceClient::new(tls_channel(addr, &pki, &support).await);

    let user = as_app
        .sign_up(SignUpRequest {
            email: "dora@example.com".into(),
            password: "a long passphrase".into(),
            ..Default::default()
        })
        .await
        .expect("an ordinary RPC for any certificate")
        .into_inner()
        .user
        .expect("user");
    // GetUser is privileged but not restricted here: any certificate may read.
    as_app
        .get_user(PublicGetUser {
            lookup: Some(public_lookup::Lookup::UserId(user.user_id.clone())),
        })
        .await
        .expect("get_user is open when privileged_callers leaves it out");
    let reset = || CreatePasswordResetTicketRequest {
        email: "dora@example.com".into(),
    };
    assert_caller_refused(
        as_app.create_password_reset_ticket(reset()).await,
        "app: reset ticket",
    );
    assert_caller_refused(
        as_app
            .delete_user(DeleteUserRequest {
                user_id: user.user_id.clone(),
            })
            .await,
        "app: delete user",
    );
    as_support
        .create_password_reset_ticket(reset())
        .await
        .expect("support may create reset tickets");
    // What applications decide about a user, and a user's second factor, likewise.
    let app_metadata = || trickle_proto::auth::v1::UpdateAppMetadataRequest {
        user_id: user.user_id.clone(),
        app_metadata: None,
    };
    assert_caller_refused(
        as_app.update_app_metadata(app_metadata()).await,
        "app: app_metadata",
    );
    as_support
        .update_app_metadata(app_metadata())
        .await
        .expect("support may set app_metadata");
    assert_caller_refused(
        as_app
            .remove_factor(trickle_proto::auth::v1::RemoveFactorRequest {
                user_id: user.user_id.clone(),
            })
            .await,
        "app: remove a factor",
    );

    // By default (public TLS, no privileged_callers) nobody may create a reset ticket.
    let closed = TestTrickle::start_with(Backend::Sqlite, |config| {
        config.frontend.public_tls = server.clone();
    })
    .await;
    let mut client = AuthServiceClient::new(
        tls_channel(closed.cluster.frontend.local_addr, &pki, &support).await,
    );
    assert_caller_refused(
        client.create_password_reset_ticket(reset()).await,
        "default: reset tickets are closed",
    );

    // Identities without public TLS mean nothing: a start error, not a silent allow.
    let mut config = trickle.config.clone();
    config.frontend.public_tls = TlsConfig::default();
    config.frontend.listen = "127.0.0.1:0".into();
    let err = trickle_auth_frontend::build(&config.frontend, &config.tokens)
        .await
        .expect_err("privileged_callers without public_tls");
    assert!(err.to_string().contains("public_tls"), "{err}");
}
