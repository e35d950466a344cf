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
        database_url: format!("sqlite://{}", dir.path().join("store.db").display()),
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
