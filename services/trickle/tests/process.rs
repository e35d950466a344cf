//! The `trickle` binary as operators run it: a real process, real signals, real scrapes.
//! (One integration-test binary for this crate.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use trickle_proto::auth::v1::LoginRequest;
use trickle_proto::auth::v1::auth_service_client::AuthServiceClient;

/// `trickle dev` on free ports, in a data directory of its own.
struct DevProcess {
    child: Child,
    api: String,
    metrics: String,
    _data: tempfile::TempDir,
}

impl DevProcess {
    fn start() -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_trickle"))
            .args(["dev", "--data-dir"])
            .arg(data.path())
            .env("TRICKLE_FRONTEND__LISTEN", "127.0.0.1:0")
            .env("TRICKLE_MIGRATION__LISTEN", "127.0.0.1:0")
            .env("TRICKLE_FRONTEND__METRICS_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start trickle dev");
        let stdout = child.stdout.take().expect("stdout");
        let (mut api, mut metrics) = (None, None);
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read stdout");
            if let Some(addr) = line.strip_prefix("  public API (auth-frontend)") {
                api = Some(format!("http://{}", addr.trim()));
            }
            if let Some(url) = line.strip_prefix("  metrics (Prometheus)") {
                metrics = Some(url.trim().to_owned());
            }
            if line.starts_with("Press Ctrl-C") {
                break;
            }
        }
        Self {
            child,
            api: api.expect("frontend address printed"),
            metrics: metrics.expect("metrics address printed"),
            _data: data,
        }
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn login(email: &str, password: &str) -> LoginRequest {
    LoginRequest {
        email: email.into(),
        password: password.into(),
    }
}

const DEMO: [(&str, &str); 3] = [
    ("alice@example.com", "wonderland-1865"),
    ("bob@example.com", "builder-can-we-fix-it"),
    ("carol@example.com", "christmas-carol-1843"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_logins_refuses_new_ones_and_exits_zero() {
    let mut dev = DevProcess::start();
    let client = AuthServiceClient::connect(dev.api.clone())
        .await
        .expect("connect");

    // First logins: a legacy check, an import and an argon2 hash each — long enough to be
    // in flight when the signal arrives.
    let in_flight: Vec<_> = (0..9)
        .map(|i| {
            let mut client = client.clone();
            let (email, password) = DEMO[i % 3];
            tokio::spawn(async move {
                let result = client.login(login(email, password)).await;
                (result, Instant::now())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let signalled = Instant::now();
    dev.terminate();

    let mut finished_after_signal = 0;
    for task in in_flight {
        let (result, done_at) = task.await.expect("task");
        result.expect("every in-flight login completes");
        finished_after_signal += usize::from(done_at > signalled);
    }
    assert!(
        finished_after_signal > 0,
        "some logins were still in flight at SIGTERM, and finished"
    );

    // A new call while draining or after: refused quickly, never hanging.
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        let mut client = client.clone();
        client.login(login(DEMO[0].0, DEMO[0].1)).await
    })
    .await
    .expect("answered quickly");
    assert!(
        refused.is_err(),
        "a new login after SIGTERM must be refused"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = dev.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "trickle did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    eprintln!("shutdown after SIGTERM took {:?}", signalled.elapsed());
}

/// `GET /metrics`, over a plain HTTP/1.1 connection like Prometheus's scraper.
async fn scrape(url: &str) -> String {
    let address = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to /metrics");
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_owned()
}

/// Samples by name and label set.
fn samples(page: &str) -> HashMap<(String, BTreeMap<String, String>), f64> {
    let mut out = HashMap::new();
    for line in page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let labels = rest
                    .trim_end_matches('}')
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once("=\"").expect("label");
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        out.insert((name, labels), value.parse().expect("value"));
    }
    out
}

fn sample(
    page: &HashMap<(String, BTreeMap<String, String>), f64>,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    page.get(&(name.to_owned(), labels)).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_scripted_run_and_pass_promtool() {
    let dev = DevProcess::start();
    let mut client = AuthServiceClient::connect(dev.api.clone())
        .await
        .expect("connect");
    let before = samples(&scrape(&dev.metrics).await);
    assert_eq!(
        sample(&before, "trickle_logins_total", &[("result", "migrated")]),
        0.0
    );

    let (email, password) = DEMO[0];
    assert!(
        client
            .login(login(email, password))
            .await
            .expect("first login")
            .into_inner()
            .migrated
    );
    client
        .login(login(email, password))
        .await
        .expect("second login");
    client
        .login(login(email, "wrong"))
        .await
        .expect_err("wrong password");
    client
        .login(login("nobody@example.com", "whatever"))
        .await
        .expect_err("unknown");

    let page = scrape(&dev.metrics).await;
    let after = samples(&page);
    let logins = |result| sample(&after, "trickle_logins_total", &[("result", result)]);
    assert_eq!(logins("migrated"), 1.0);
    assert_eq!(logins("success"), 1.0);
    assert_eq!(logins("invalid_credentials"), 2.0);
    let migrations = |outcome| {
        sample(
            &after,
            "trickle_migrations_total",
            &[("outcome", outcome), ("source", "login")],
        )
    };
    assert_eq!(migrations("migrated"), 1.0);
    assert_eq!(migrations("legacy_rejected"), 1.0);
    let grpc = |code| {
        sample(
            &after,
            "trickle_grpc_server_request_duration_seconds_count",
            &[
                ("code", code),
                ("method", "Login"),
                ("service", "trickle.auth.v1.AuthService"),
            ],
        )
    };
    assert_eq!(grpc("0"), 2.0);
    assert_eq!(grpc("16"), 2.0, "UNAUTHENTICATED");
    assert!(
        sample(
            &after,
            "trickle_password_hash_duration_seconds_count",
            &[("operation", "verify"), ("scheme", "bcrypt")]
        ) >= 2.0
    );
    assert!(
        sample(
            &after,
            "trickle_password_hash_duration_seconds_count",
            &[("operation", "hash"), ("scheme", "argon2id")]
        ) >= 1.0
    );
    assert!(
        sample(
            &after,
            "trickle_legacy_request_duration_seconds_count",
            &[("operation", "find_user")]
        ) >= 2.0
    );
    assert_eq!(
        sample(
            &after,
            "trickle_hash_pool_queue_depth",
            &[("pool", "user-store")]
        ),
        0.0,
        "nothing left queued"
    );
    assert!(
        sample(
            &after,
            "trickle_hash_pool_capacity",
            &[("pool", "user-store")]
        ) > 0.0
    );
    for line in page.lines() {
        assert!(
            !line.contains("example.com") && !line.contains(password),
            "a label holds personal data: {line}"
        );
    }

    // The exposition must satisfy Prometheus' own linter. CI installs promtool; a developer
    // without it is told, not silently skipped.
    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    match promtool {
        Ok(mut child) => {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(page.as_bytes())
                .expect("write");
            let output = child.wait_with_output().expect("promtool");
            assert!(
                output.status.success(),
                "promtool check metrics failed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Err(e) => {
            assert!(
                std::env::var("CI").is_err(),
                "promtool is required in CI: {e}"
            );
            eprintln!(
                "promtool not installed ({e}); install Debian's `prometheus` to lint the exposition"
            );
        }
    }
}
