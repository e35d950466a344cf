//! The web-service legacy backend (Basic Auth, JSON, optional TLS with a private CA) against a
//! real HTTP server started by the test, including every way it can fail.

use crate::support::{assert_status, login, login_refused};
use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::Code;
use trickle_legacy_connector::config::Backend as LegacyBackend;
use trickle_proto::auth::v1::{GetUserRequest, SignUpRequest, get_user_request::Lookup};
use trickle_service_kit::rpc::reason;
use trickle_tests::{Backend, TestTrickle};

const BASIC: &str = "trickle:s3cret";
const WEB_TOTP_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DP";

fn profile(id: &str, email: &str) -> String {
    format!(
        r#"{{"user_id": "{id}", "email": "{email}", "email_verified": true, "name": "Web User", "nickname": "web"}}"#
    )
}

/// A bcrypt hash of `web2-password` (cost 4), made once.
fn web2_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        trickle_password::legacy_formats::bcrypt("web2-password", 4).expect("bcrypt")
    })
}

/// The listing endpoint: users after `after` (by id), at most `limit`.
fn listing(query: &str) -> String {
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
    };
    let limit: usize = param("limit").and_then(|l| l.parse().ok()).unwrap_or(1000);
    let after = param("after").unwrap_or_default();
    let users = [
        // The service keeps this hash to itself: only POST /login can check it.
        (
            "w-1",
            r#"{"user_id": "w-1", "email": "web@example.com"}"#.to_owned(),
        ),
        (
            "w-2",
            format!(
                r#"{{"user_id": "w-2", "email": "web2@example.com", "password_hash": "{}"}}"#,
                web2_hash()
            ),
        ),
        (
            "w-4",
            r#"{"user_id": "w-4", "email": "badtotp@example.com", "totp_secret": "not base32!"}"#
                .to_owned(),
        ),
    ];
    let page: Vec<String> = users
        .into_iter()
        .filter(|(id, _)| *id > after.as_str())
        .take(limit)
        .map(|(_, profile)| profile)
        .collect();
    format!(r#"{{"users": [{}]}}"#, page.join(", "))
}

/// The legacy app's endpoints, as Auth0's Basic Auth template expects them.
async fn legacy_app(
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let reply = |status: u16, body: String| {
        Ok(hyper::Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(body)))
            .expect("response"))
    };
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(BASIC)
    );
    if request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        != Some(expected.as_str())
    {
        // Wrong service credentials: a configuration problem, not a wrong password.
        return reply(403, "forbidden".into());
    }
    match (request.method().as_str(), request.uri().path()) {
        ("POST", "/api/login") => {
            let body = request
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            let credentials: serde_json::Value = serde_json::from_slice(&body).expect("json");
            let (email, password) = (
                credentials["email"].as_str().unwrap_or_default(),
                credentials["password"].as_str().unwrap_or_default(),
            );
            match email {
                "web@example.com" if password == "web-password" => {
                    reply(200, profile("w-1", "Web@Example.com"))
                }
                // A second factor in the profile (base32, SHA-1, 6 digits, 30 s by default).
                "totp@example.com" if password == "totp-password" => reply(
                    200,
                    format!(
                        r#"{{"user_id": "w-3", "email": "totp@example.com", "totp_secret": "{WEB_TOTP_SECRET}"}}"#
                    ),
                ),
                // A second factor nobody can read: refused loudly, never a password-only login.
                "badtotp@example.com" => reply(
                    200,
                    r#"{"user_id": "w-4", "email": "badtotp@example.com", "totp_secret": "not base32!"}"#
                        .into(),
                ),
                "broken@example.com" => reply(500, "internal error".into()),
                "teapot@example.com" => reply(418, "short and stout".into()),
                "garbage@example.com" => reply(200, "this is not json".into()),
                "noid@example.com" => reply(200, r#"{"email": "noid@example.com"}"#.into()),
                "slow@example.com" => {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    reply(200, profile("w-9", "slow@example.com"))
                }
                _ => reply(401, "wrong email or password".into()),
            }
        }
        ("GET", "/api/users") if request.uri().query().unwrap_or_default().contains("limit=") => {
            reply(200, listing(request.uri().query().unwrap_or_default()))
        }
        ("GET", "/api/users") => {
            let query = request.uri().query().unwrap_or_default();
            if query == "email=web2%40example.com" {
                reply(200, profile("w-2", "web2@example.com"))
            } else {
                reply(404, "no such user".into())
            }
        }
        _ => reply(404, "not here".into()),
    }
}

/// Serve the legacy app on loopback, over TLS when given a server certificate and key.
async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let scheme = if tls.is_some() {
        "https://localhost"
    } else {
        "http://127.0.0.1"
    };
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(legacy_app);
                let builder = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            let _ = builder
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await;
                        }
                    }
                    None => {
                        let _ = builder
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    }
                }
            });
        }
    });
    format!("{scheme}:{port}/api")
}

async fn start(base_url: &str, basic: &str, ca_file: &str) -> TestTrickle {
    let (username, password) = basic.split_once(':').expect("user:password");
    let (base_url, username, password, ca_file) = (
        base_url.to_owned(),
        username.to_owned(),
        password.to_owned(),
        ca_file.to_owned(),
    );
    TestTrickle::start_with(Backend::Sqlite, move |config| {
        config.legacy.backend = LegacyBackend::Http;
        config.legacy.http.base_url = base_url;
        config.legacy.http.username = username;
        config.legacy.http.password = password;
        config.legacy.http.ca_file = ca_file;
        config.legacy.query_timeout_ms = 500;
        // Five failures in a row are the point of this test; the breaker has its own.
        config.migration.legacy_breaker_failures = 0;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_backend_migrates_and_fails_loudly() {
    let base_url = serve(None).await;
    let trickle = start(&base_url, BASIC, "").await;
    let mut client = trickle.client().await;

    let migrated = client
        .login(login("WEB@example.com", "web-password"))
        .await
        .expect("login")
        .into_inner();
    assert!(migrated.migrated);
    let user = migrated.user.expect("user");
    assert_eq!(
        (user.legacy_id.as_str(), user.display_email.as_str()),
        ("w-1", "Web@Example.com")
    );
    assert!(user.email_verified);

    for (email, password) in [
        ("web@example.com", "wrong"),
        ("nobody@example.com", "whatever"),
    ] {
        // web@ is in the store now; nobody@ is rejected by the web service (401).
        login_refused(
            &mut client,
            email,
            password,
            Code::Unauthenticated,
            reason::INVALID_CREDENTIALS,
        )
        .await;
    }
    // A profile with a second factor: a code from it is needed before anything moves.
    let challenge =
        crate::mfa::challenge_of(&mut client, "totp@example.com", "totp-password").await;
    assert_eq!(trickle.store.user_count().await, 1);
    let factor = crate::mfa::authenticator(WEB_TOTP_SECRET);
    let with_factor = crate::mfa::verify(
        &mut client,
        &challenge,
        &factor.code_at(crate::mfa::now(&trickle)),
    )
    .await
    .expect("the web profile's factor");
    assert!(with_factor.migrated && with_factor.user.expect("user").mfa_enrolled);

    for email in [
        "badtotp@example.com",
        "broken@example.com",
        "teapot@example.com",
        "garbage@example.com",
        "noid@example.com",
    ] {
        login_refused(
            &mut client,
            email,
            "whatever",
            Code::Unavailable,
            reason::LEGACY_UNAVAILABLE,
        )
        .await;
    }
    let started = Instant::now();
    login_refused(
        &mut client,
        "slow@example.com",
        "whatever",
        Code::Unavailable,
        reason::LEGACY_UNAVAILABLE,
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "cut off at the deadline, not after {:?}",
        started.elapsed()
    );

    // Get User: the lookup falls back to the web service; sign-up respects it.
    let found = client
        .get_user(GetUserRequest {
            lookup: Some(Lookup::Email("web2@example.com".into())),
        })
        .await
        .expect("found")
        .into_inner();
    assert!(!found.migrated);
    assert_eq!(found.user.expect("user").legacy_id, "w-2");
    let status = client
        .sign_up(SignUpRequest {
            email: "web2@example.com".into(),
            password: "a long password".into(),
            profile: None,
        })
        .await
        .expect_err("a legacy user");
    assert_status(&status, Code::AlreadyExists, reason::EMAIL_EXISTS);
    assert_eq!(trickle.store.user_count().await, 2);

    // Wrong Basic Auth credentials are a configuration problem, never "wrong password".
    let misconfigured = start(&base_url, "trickle:wrong", "").await;
    let status = misconfigured
        .client()
        .await
        .login(login("web2@example.com", "x"))
        .await
        .expect_err("403");
    assert_status(&status, Code::Unavailable, reason::LEGACY_UNAVAILABLE);
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let status = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl {args:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_backend_over_tls_trusts_the_configured_ca() {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    // A private CA and a server certificate for localhost, made for this test.
    let dir = tempfile::tempdir().expect("tempdir");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir.path(),
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=Trickle Test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        dir.path(),
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.path().join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    openssl(
        dir.path(),
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );

    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.path().join("server.pem"))
            .expect("certs")
            .collect::<Result<_, _>>()
            .expect("certs");
    let key = PrivateKeyDer::from_pem_file(dir.path().join("server.key")).expect("key");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("tls config");
    let base_url = serve(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await;

    let ca_file = dir.path().join("ca.pem").display().to_string();
    let trusting = start(&base_url, BASIC, &ca_file).await;
    let migrated = trusting
        .client()
        .await
        .login(login("web@example.com", "web-password"))
        .await
        .expect("login over TLS")
        .into_inner();
    assert!(migrated.migrated);

    // Without the CA the certificate is not trusted: unavailable, never a wrong password.
    let distrusting = start(&base_url, BASIC, "").await;
    let status = distrusting
        .client()
        .await
        .login(login("web@example.com", "web-password"))
        .await
        .expect_err("untrusted");
    assert_status(&status, Code::Unavailable, reason::LEGACY_UNAVAILABLE);
}

/// With `list_users`, the web service's listing feeds the preflight census and the backfill:
/// a user whose hash the service keeps is "connector only", one it hands over is carried by
/// the backfill and verified by the store, an unreadable factor makes the record unusable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_backend_lists_users_for_the_census_and_the_backfill() {
    use trickle_proto::migration::v1::RunPreflightRequest;
    let base_url = serve(None).await;
    let (username, password) = BASIC.split_once(':').expect("user:password");
    let (username, password) = (username.to_owned(), password.to_owned());
    let trickle = TestTrickle::start_with(Backend::Sqlite, move |config| {
        config.legacy.backend = LegacyBackend::Http;
        config.legacy.http.base_url = base_url;
        config.legacy.http.username = username;
        config.legacy.http.password = password;
        config.legacy.http.list_users = true;
    })
    .await;
    let mut stream = trickle
        .admin()
        .await
        .run_preflight(RunPreflightRequest {
            batch_size: 2,
            sample_size: 0,
            show_emails: false,
        })
        .await
        .expect("census")
        .into_inner();
    let mut report = None;
    while let Some(message) = stream.message().await.expect("progress") {
        assert_eq!(
            message.legacy_users_total, None,
            "a web service cannot count"
        );
        report = message.report.or(report);
    }
    let report = report.expect("a report");
    assert_eq!(report.users, 3, "{report:?}");
    assert_eq!(report.connector_only, 1, "{report:?}");
    assert_eq!(report.store_verifiable, 1, "{report:?}");
    assert_eq!(report.unusable, 1, "{report:?}");
    let kinds: Vec<(&str, &[String])> = report
        .findings
        .iter()
        .map(|f| (f.kind.as_str(), f.sample_legacy_ids.as_slice()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("unreadable_second_factor", &["w-4".to_owned()][..]),
            ("connector_only_hash", &["w-1".to_owned()][..]),
        ]
    );

    let backfill = crate::backfill::run_to_end(&trickle).await;
    assert_eq!(backfill.imported, 1, "{backfill:?}");
    assert_eq!(backfill.unsupported, 2, "{backfill:?}");
    // The store verifies the handed-over hash itself.
    let user = trickle
        .login_ok("web2@example.com", "web2-password")
        .await
        .user
        .expect("user");
    assert_eq!(user.legacy_id, "w-2");
    assert_eq!(
        user.source,
        i32::from(trickle_proto::auth::v1::Source::Backfill)
    );
}
