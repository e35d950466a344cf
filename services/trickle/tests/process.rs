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
    /// `trickle admin`'s address.
    admin: String,
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
            .env("TRICKLE_MIGRATION__ADMIN_LISTEN", "127.0.0.1:0")
            .env("TRICKLE_FRONTEND__METRICS_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start trickle dev");
        let stdout = child.stdout.take().expect("stdout");
        let (mut api, mut metrics, mut admin) = (None, None, None);
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read stdout");
            if let Some(addr) = line.strip_prefix("  public API (auth-frontend)") {
                api = Some(format!("http://{}", addr.trim()));
            }
            if let Some(addr) = line.strip_prefix("  operators (trickle admin)") {
                admin = Some(format!("http://{}", addr.trim()));
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
            admin: admin.expect("operators' address printed"),
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
        attempt_source: String::new(),
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
    // Signal only once all nine calls are in the frontend: a connection still in the listen
    // backlog when the listener closes is reset by the kernel, which no server can drain.
    let in_frontend = Instant::now() + Duration::from_secs(30);
    loop {
        let page = samples(&scrape(&dev.metrics).await);
        let login = |name: &str| -> f64 {
            page.iter()
                .filter(|((n, labels), _)| {
                    n == name
                        && labels.get("service").map(String::as_str)
                            == Some("trickle.auth.v1.AuthService")
                        && labels.get("method").map(String::as_str) == Some("Login")
                })
                .map(|(_, value)| value)
                .sum()
        };
        let in_flight = login("trickle_grpc_server_in_flight_requests");
        let answered = login("trickle_grpc_server_request_duration_seconds_count");
        if in_flight + answered >= 9.0 {
            assert!(in_flight > 0.0, "every login finished before the signal");
            break;
        }
        assert!(
            Instant::now() < in_frontend,
            "the logins never reached the frontend"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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
    let login_in_flight = (
        "trickle_grpc_server_in_flight_requests".to_owned(),
        BTreeMap::from([
            ("method".to_owned(), "Login".to_owned()),
            (
                "service".to_owned(),
                "trickle.auth.v1.AuthService".to_owned(),
            ),
        ]),
    );
    assert_eq!(
        after.get(&login_in_flight),
        Some(&0.0),
        "four logins came and went"
    );
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

// ---- faults: services as separate processes, killed with SIGKILL ------------------------

/// The four services as four `trickle serve` processes on fixed loopback ports, on a fresh
/// PostgreSQL store and a MariaDB legacy database, so that one of them can be killed and
/// started again on the same address while the others keep running.
struct Deployment {
    env: Vec<(String, String)>,
    processes: HashMap<&'static str, Child>,
    ports: HashMap<&'static str, u16>,
    frontend: String,
    /// The legacy connector's /metrics (it counts the legacy hashes it verified).
    connector_metrics: String,
    /// Between the coordinator and the store, when asked for (it starts out holding every
    /// connection without answering).
    store_proxy: Option<trickle_tests::SwitchableProxy>,
    legacy: trickle_tests::LegacyDb,
    store: trickle_tests::StoreDb,
    dir: std::sync::Arc<tempfile::TempDir>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl Deployment {
    /// `proxy_the_store`: the coordinator reaches the store through a [`SwitchableProxy`]
    /// that plays dead until switched on.
    ///
    /// [`SwitchableProxy`]: trickle_tests::SwitchableProxy
    async fn start(proxy_the_store: bool) -> Self {
        use trickle_tests::{Backend, LegacyDb, StoreDb};
        let dir = std::sync::Arc::new(tempfile::tempdir().expect("tempdir"));
        let legacy = LegacyDb::create(Backend::PostgresMariaDb, &dir).await;
        let store = StoreDb::create(Backend::PostgresMariaDb, &dir).await;
        let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
        let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
        let url = |i: usize| format!("http://127.0.0.1:{}", ports[i]);
        let store_proxy = if proxy_the_store {
            Some(trickle_tests::SwitchableProxy::start(addr(1), false).await)
        } else {
            None
        };
        let coordinator_store_url = store_proxy
            .as_ref()
            .map_or_else(|| url(1), |p| format!("http://{}", p.addr));
        let key = trickle_auth_frontend::tokens::generate_signing_key_pem().expect("key");
        let env: Vec<(String, String)> = [
            ("TRICKLE_FRONTEND__LISTEN", addr(0)),
            ("TRICKLE_STORE__LISTEN", addr(1)),
            ("TRICKLE_LEGACY__LISTEN", addr(2)),
            ("TRICKLE_MIGRATION__LISTEN", addr(3)),
            ("TRICKLE_MIGRATION__ADMIN_LISTEN", "127.0.0.1:0".into()),
            ("TRICKLE_FRONTEND__STORE_URL", url(1)),
            ("TRICKLE_FRONTEND__COORDINATOR_URL", url(3)),
            ("TRICKLE_MIGRATION__STORE_URL", coordinator_store_url),
            ("TRICKLE_MIGRATION__LEGACY_URL", url(2)),
            ("TRICKLE_FRONTEND__METRICS_LISTEN", String::new()),
            ("TRICKLE_STORE__METRICS_LISTEN", String::new()),
            ("TRICKLE_LEGACY__METRICS_LISTEN", addr(4)),
            ("TRICKLE_MIGRATION__METRICS_LISTEN", String::new()),
            ("TRICKLE_STORE__DATABASE_URL", store.database.url.clone()),
            ("TRICKLE_LEGACY__DATABASE_URL", legacy.database.url.clone()),
            ("TRICKLE_LEGACY__FIND_USER", legacy.find_user.clone()),
            ("TRICKLE_LEGACY__LIST_USERS", legacy.list_users.clone()),
            (
                "TRICKLE_LEGACY__COUNT_USERS",
                "SELECT COUNT(*) FROM users".into(),
            ),
            ("TRICKLE_TOKENS__SIGNING_KEY", key),
            // Breaking things is the point here: no circuit breaker in the way, and
            // deadlines a loaded two-core machine cannot miss.
            ("TRICKLE_MIGRATION__LEGACY_BREAKER_FAILURES", "0".into()),
            ("TRICKLE_MIGRATION__STORE_TIMEOUT_MS", "20000".into()),
            ("TRICKLE_FRONTEND__UPSTREAM_TIMEOUT_MS", "30000".into()),
            ("RUST_LOG", "warn".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let status = Command::new(env!("CARGO_BIN_EXE_trickle"))
            .arg("migrate")
            .envs(env.iter().cloned())
            .stderr(Stdio::null())
            .status()
            .expect("trickle migrate");
        assert!(status.success(), "trickle migrate failed");
        let mut deployment = Self {
            env,
            processes: HashMap::new(),
            ports: HashMap::from([
                ("frontend", ports[0]),
                ("user-store", ports[1]),
                ("legacy-connector", ports[2]),
                ("coordinator", ports[3]),
            ]),
            frontend: url(0),
            connector_metrics: url(4),
            store_proxy,
            legacy,
            store,
            dir,
        };
        for service in ["user-store", "legacy-connector", "coordinator", "frontend"] {
            deployment.launch(service).await;
        }
        deployment
    }

    /// Start `service` and wait until it listens.
    async fn launch(&mut self, service: &'static str) {
        let child = Command::new(env!("CARGO_BIN_EXE_trickle"))
            .args(["serve", service])
            .envs(self.env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.path().join(format!("{service}.log")))
                    .map_or_else(|_| Stdio::null(), Stdio::from),
            )
            .spawn()
            .expect("start a service");
        self.processes.insert(service, child);
        let port = self.ports[service];
        if !listening(port).await {
            panic!("{service} does not listen on port {port}:\n{}", self.logs());
        }
    }

    /// Set an environment variable of the services started from now on.
    fn set_env(&mut self, name: &str, value: String) {
        self.env.retain(|(k, _)| k != name);
        self.env.push((name.to_owned(), value));
    }

    /// SIGKILL: no drain, no flush, no goodbye.
    fn kill(&mut self, service: &'static str) {
        let mut child = self.processes.remove(service).expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }

    /// What the services wrote to standard error, for a failing test's message.
    fn logs(&self) -> String {
        let mut out = String::new();
        for service in ["user-store", "legacy-connector", "coordinator", "frontend"] {
            let log = std::fs::read_to_string(self.dir.path().join(format!("{service}.log")))
                .unwrap_or_default();
            out.push_str(&format!("--- {service}\n{log}\n"));
        }
        out
    }

    async fn client(&self) -> AuthServiceClient<tonic::transport::Channel> {
        AuthServiceClient::connect(self.frontend.clone())
            .await
            .expect("connect to the frontend")
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for child in self.processes.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        drop(LogsOnFailure(self.dir.path()));
    }
}

/// Prints every service's log (the `*.log` files in a directory) when the test fails: the
/// directory is a temporary one and goes with the test, and a failure seen once in CI must
/// be diagnosable from its output. Declare it after the directory, so that it drops first.
struct LogsOnFailure<'a>(&'a std::path::Path);

impl Drop for LogsOnFailure<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut logs: Vec<_> = std::fs::read_dir(self.0)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
            .collect();
        logs.sort();
        for path in logs {
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            eprintln!("--- {}\n{log}", path.display());
        }
    }
}

/// A service process that is killed when it goes out of scope, so that a failing test does
/// not leave it running beside the tests after it.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether something listens on `port` within 30 s.
async fn listening(port: u16) -> bool {
    listening_on([127, 0, 0, 1].into(), port).await
}

/// Whether something listens on `ip:port` within 30 s.
async fn listening_on(ip: std::net::IpAddr, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect((ip, port)).await.is_err() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

fn legacy_users(count: i64) -> Vec<(i64, String, String)> {
    // One cheap bcrypt for all (cost 4): the faults, not the hashing, are under test.
    let hash = trickle_password::legacy_formats::bcrypt("legacy-password", 4).expect("bcrypt");
    (1..=count)
        .map(|id| (id, format!("user{id}@example.com"), hash.clone()))
        .collect()
}

/// Every store user is a whole import: one row per legacy user, with its legacy id, the
/// legacy email and a password hash, and no row for anyone the legacy store lacks.
async fn assert_every_user_is_whole(store: &trickle_tests::StoreDb, legacy_count: i64) {
    let rows: Vec<(String, Option<String>, String)> =
        sqlx::query_as("SELECT email, legacy_id, password_hash FROM users")
            .fetch_all(&store.pool)
            .await
            .expect("read users");
    let mut seen = std::collections::HashSet::new();
    for (email, legacy_id, hash) in &rows {
        let legacy_id = legacy_id
            .as_deref()
            .expect("every user came from the legacy store");
        assert_eq!(email, &format!("user{legacy_id}@example.com"));
        assert!(
            legacy_id
                .parse::<i64>()
                .is_ok_and(|id| (1..=legacy_count).contains(&id))
        );
        assert!(!hash.is_empty());
        assert!(seen.insert(email.clone()), "{email} has two rows");
    }
}

/// The user-store process is SIGKILLed in the middle of a stream of first logins and
/// started again: logins fail cleanly while it is gone, every login that answered success
/// left exactly one whole user, and the frontend and coordinator (never restarted) serve
/// everyone once the store is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_store_killed_mid_load_loses_nothing_and_recovers() {
    let mut deployment = Deployment::start(false).await;
    const USERS: i64 = 80;
    deployment.legacy.insert_many(&legacy_users(USERS)).await;
    let client = deployment.client().await;

    // Eight callers log the legacy users in, round and round, before, during and after the
    // store's death; each login is recorded with when it started.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let next = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (mut client, next, stop) = (client.clone(), next.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answered = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let id = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % USERS + 1;
                    let at = started.elapsed();
                    let result = client
                        .login(login(&format!("user{id}@example.com"), "legacy-password"))
                        .await;
                    answered.push((id, at, result.map(|r| r.into_inner().migrated)));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                answered
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = started.elapsed();
    deployment.kill("user-store");
    tokio::time::sleep(Duration::from_millis(700)).await;
    deployment.launch("user-store").await;
    let back_at = started.elapsed();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);

    let mut succeeded = std::collections::BTreeSet::new();
    let (mut before, mut after) = (0, 0);
    let mut failures = BTreeMap::new();
    for worker in workers {
        for (id, at, result) in worker.await.expect("worker") {
            match result {
                Ok(_) => {
                    succeeded.insert(id);
                    before += usize::from(at < killed_at);
                    after += usize::from(at > back_at);
                }
                Err(status) => *failures.entry(format!("{:?}", status.code())).or_insert(0) += 1,
            }
        }
    }
    eprintln!(
        "store killed mid-load: {before} logins succeeded before the kill, {after} after the \
         restart ({} users in all), failures {failures:?}",
        succeeded.len()
    );
    assert!(
        failures.keys().all(|code| code == "Unavailable"),
        "a store that is gone is UNAVAILABLE, nothing else: {failures:?}"
    );
    assert!(!failures.is_empty(), "the kill must have hit some logins");
    assert!(
        before > 0 && after > 0,
        "logins succeed before the kill and after the restart"
    );
    for id in &succeeded {
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE email = $1")
            .bind(format!("user{id}@example.com"))
            .fetch_one(&deployment.store.pool)
            .await
            .expect("count");
        assert_eq!(rows, 1, "user{id} logged in, so it has exactly one row");
    }
    assert_every_user_is_whole(&deployment.store, USERS).await;

    // Recovery without restarting anyone else: every legacy user logs in now.
    let mut client = client.clone();
    for id in 1..=USERS {
        client
            .login(login(&format!("user{id}@example.com"), "legacy-password"))
            .await
            .unwrap_or_else(|s| panic!("user{id} after the store came back: {s:?}"));
    }
    assert_eq!(deployment.store.user_count().await, USERS);
    assert_every_user_is_whole(&deployment.store, USERS).await;
}

/// The coordinator is SIGKILLed after the legacy store said yes and before the import
/// reached the user-store (a proxy holds the coordinator's connection to the store): the
/// login fails cleanly, no user exists, and once a coordinator runs again the next login
/// migrates the user, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_killed_between_legacy_check_and_import_leaves_no_partial_user() {
    let mut deployment = Deployment::start(true).await;
    deployment.legacy.insert_many(&legacy_users(1)).await;
    let mut client = deployment.client().await;
    let login_task = {
        let mut client = client.clone();
        tokio::spawn(async move {
            client
                .login(login("user1@example.com", "legacy-password"))
                .await
        })
    };
    // The legacy connector verifies user1's bcrypt hash; right after it says yes the
    // coordinator sends the import, which the proxy holds. Kill it then.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = samples(&scrape(&deployment.connector_metrics).await);
        let verified = sample(
            &page,
            "trickle_password_hash_duration_seconds_count",
            &[("operation", "verify"), ("scheme", "bcrypt")],
        );
        if verified >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the legacy check never happened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!login_task.is_finished(), "the login waits for its import");
    deployment.kill("coordinator");
    let status = login_task
        .await
        .expect("task")
        .expect_err("the login cannot succeed without its coordinator");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(deployment.store.user_count().await, 0, "no partial user");

    // A coordinator again (the proxy now forwards): user1 migrates, exactly once.
    if let Some(proxy) = &deployment.store_proxy {
        proxy.alive.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    deployment.launch("coordinator").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let response = loop {
        match client
            .login(login("user1@example.com", "legacy-password"))
            .await
        {
            Ok(r) => break r.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("user1 cannot log in after the restart: {s:?}"),
        }
    };
    assert!(response.migrated);
    assert_eq!(deployment.store.user_count().await, 1);
    assert_every_user_is_whole(&deployment.store, 1).await;
    assert_eq!(deployment.store.migration_event_count().await, 1);
}

/// `trickle serve user-store` on an embedded store in `dir`, listening on `port`, with `env`.
fn serve_store(dir: &std::path::Path, port: u16, env: &[(&str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_trickle"));
    command
        .args(["serve", "user-store", "--log-format", "json"])
        .env("TRICKLE_STORE__LISTEN", format!("127.0.0.1:{port}"))
        .env("TRICKLE_STORE__METRICS_LISTEN", "")
        .env(
            "TRICKLE_STORE__DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.join("store.db").display()),
        )
        .env("RUST_LOG", "info")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// Any telemetry misconfiguration is one line on stderr and exit code 1 — never a panic
/// (exit 101), whatever the variables say.
#[test]
fn bad_telemetry_settings_are_one_line_start_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: [(&str, Vec<(&str, String)>); 4] = [
        (
            "invalid endpoint",
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://bad endpoint".into())],
        ),
        (
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            vec![
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    "https://collector:4317".into(),
                ),
                (
                    "OTEL_EXPORTER_OTLP_CERTIFICATE",
                    "/nonexistent/ca.pem".into(),
                ),
            ],
        ),
        (
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
            vec![
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    "https://collector:4317".into(),
                ),
                (
                    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                    "/nonexistent/client.pem".into(),
                ),
            ],
        ),
        (
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
            vec![
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "https://collector:4317".into(),
                ),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                    "/nonexistent/ca.pem".into(),
                ),
            ],
        ),
    ];
    for (expected, env) in cases {
        let out = serve_store(dir.path(), free_port(), &env)
            .output()
            .expect("run trickle");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{expected}: {stderr}");
        assert!(!stderr.contains("panicked"), "{expected}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{expected}: one line: {stderr}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(expected),
            "{expected}: {stderr}"
        );
    }
}

/// Spans reach a collector that serves TLS with a CA the test made, through the standard
/// variables (CA file, headers with an API key); the key reaches the collector and no log.
/// An https:// endpoint used to panic every service at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_collector_over_tls() {
    use trickle_proto::userstore::v1::user_store_client::UserStoreClient;
    use trickle_proto::userstore::v1::{GetUserRequest, get_user_request};
    let pki = trickle_tests::TestPki::create();
    let sink = trickle_tests::start_otlp_sink(Some(&pki.service));
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let api_key = "vendor-key-that-must-never-be-logged";
    let log_path = dir.path().join("store.log");
    let mut child = serve_store(
        dir.path(),
        port,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", sink.endpoint.clone()),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", pki.ca_file()),
            ("OTEL_EXPORTER_OTLP_HEADERS", format!("x-api-key={api_key}")),
            ("OTEL_SERVICE_NAME", "trickle-user-store-tls-test".into()),
        ],
    )
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log_path).expect("log file"))
    .spawn()
    .expect("start trickle serve user-store");
    assert!(listening(port).await, "the store did not start");
    let mut store = UserStoreClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect");
    let _ = store
        .get_user(GetUserRequest {
            lookup: Some(get_user_request::Lookup::Email("nobody@example.com".into())),
        })
        .await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("wait");
    let logs = std::fs::read_to_string(&log_path).expect("logs");
    assert!(exit.success(), "exit {exit:?}: {logs}");
    assert!(
        sink.service_names()
            .iter()
            .any(|name| name == "trickle-user-store-tls-test"),
        "no spans arrived over TLS: {logs}"
    );
    assert!(
        sink.api_keys
            .lock()
            .expect("keys")
            .iter()
            .any(|k| k == api_key),
        "the exporter sent OTEL_EXPORTER_OTLP_HEADERS"
    );
    assert!(!logs.contains(api_key), "the API key was logged: {logs}");
}

/// `[server] drain_delay_ms`: after SIGTERM the service keeps accepting new connections and
/// reporting SERVING for the delay (while Kubernetes takes the pod out of every endpoint
/// list), then reports NOT_SERVING, drains and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_keeps_serving_for_the_drain_delay_then_exits() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut child = serve_store(
        dir.path(),
        port,
        &[("TRICKLE_SERVER__DRAIN_DELAY_MS", "3000".into())],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("start trickle serve user-store");
    assert!(listening(port).await, "the store did not start");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let signalled = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A caller that only now learns of this replica still gets served.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("url")
        .connect()
        .await
        .expect("a new connection during the drain delay");
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health during the drain delay")
        .into_inner();
    assert!(
        signalled.elapsed() < Duration::from_millis(2500),
        "too slow to tell"
    );
    assert_eq!(health.status, ServingStatus::Serving as i32);

    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "did not exit after the delay");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
    assert!(
        signalled.elapsed() >= Duration::from_millis(3000),
        "exited before the drain delay ended"
    );
}

/// A name in /etc/hosts that resolves to the addresses the test sets — what a headless
/// Service's DNS record is in Kubernetes (the ready pods), edited as the endpoints controller
/// would. Rewritten atomically (other tests resolve `localhost` meanwhile) and removed on
/// drop. Needs root, as CI runs.
struct ServiceName {
    name: String,
}

impl ServiceName {
    fn new(addresses: &[std::net::IpAddr]) -> Self {
        let name = format!("store-{}.trickle.test", std::process::id());
        let service = Self { name };
        service.set(addresses);
        service
    }

    fn set(&self, addresses: &[std::net::IpAddr]) {
        let hosts = std::fs::read_to_string("/etc/hosts").expect("read /etc/hosts");
        let mut text: String = hosts
            .lines()
            .filter(|line| !line.split_whitespace().any(|word| word == self.name))
            .map(|line| format!("{line}\n"))
            .collect();
        for address in addresses {
            text.push_str(&format!("{address} {}\n", self.name));
        }
        let staged = format!("/etc/.hosts.{}", std::process::id());
        std::fs::write(&staged, text).unwrap_or_else(|e| {
            panic!("this test gives a service name two addresses in /etc/hosts and must run as root (as CI does): {e}")
        });
        std::fs::rename(&staged, "/etc/hosts").expect("replace /etc/hosts");
    }
}

impl Drop for ServiceName {
    fn drop(&mut self) {
        self.set(&[]);
    }
}

/// Authenticate calls a store replica has served, from its /metrics.
async fn authentications(metrics: &str) -> f64 {
    let page = samples(&scrape(metrics).await);
    page.iter()
        .filter(|((name, labels), _)| {
            name == "trickle_grpc_server_request_duration_seconds_count"
                && labels.get("method").map(String::as_str) == Some("Authenticate")
        })
        .map(|(_, value)| value)
        .sum()
}

/// Two user-store replicas behind one service name (two addresses, as a headless Service's
/// DNS record lists its pods): the frontend and the coordinator spread 200 logins over both
/// (each serves at least 30 %); then a rolling restart of both replicas under a steady login
/// load — the address leaves the name, SIGTERM, drain delay, drain, new process, the address
/// comes back — loses no login, and each new replica receives calls within the re-resolution
/// interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_replicas_share_logins_and_a_rolling_restart_loses_none() {
    use trickle_tests::{Backend, LegacyDb, StoreDb};
    let dir = tempfile::tempdir().expect("tempdir");
    let _logs = LogsOnFailure(dir.path());
    let shared = std::sync::Arc::new(tempfile::tempdir().expect("tempdir"));
    let legacy = LegacyDb::create(Backend::PostgresMariaDb, &shared).await;
    let store = StoreDb::create(Backend::PostgresMariaDb, &shared).await;
    // One port on two loopback addresses, like two pods behind one Service port.
    let ips: [std::net::IpAddr; 2] = [[127, 0, 0, 2].into(), [127, 0, 0, 3].into()];
    let port = loop {
        let first = std::net::TcpListener::bind((ips[0], 0)).expect("bind");
        let port = first.local_addr().expect("addr").port();
        if std::net::TcpListener::bind((ips[1], port)).is_ok() {
            break port;
        }
    };
    let replicas = [(ips[0], free_port()), (ips[1], free_port())];
    let service = ServiceName::new(&ips);
    let (frontend, legacy_port, coordinator) = (free_port(), free_port(), free_port());
    let service_url = format!("http://{}:{port}", service.name);
    let key = trickle_auth_frontend::tokens::generate_signing_key_pem().expect("key");
    let common: Vec<(String, String)> = [
        ("TRICKLE_FRONTEND__LISTEN", format!("127.0.0.1:{frontend}")),
        ("TRICKLE_LEGACY__LISTEN", format!("127.0.0.1:{legacy_port}")),
        (
            "TRICKLE_MIGRATION__LISTEN",
            format!("127.0.0.1:{coordinator}"),
        ),
        ("TRICKLE_MIGRATION__ADMIN_LISTEN", "127.0.0.1:0".into()),
        ("TRICKLE_FRONTEND__STORE_URL", service_url.clone()),
        ("TRICKLE_MIGRATION__STORE_URL", service_url),
        (
            "TRICKLE_FRONTEND__COORDINATOR_URL",
            format!("http://127.0.0.1:{coordinator}"),
        ),
        (
            "TRICKLE_MIGRATION__LEGACY_URL",
            format!("http://127.0.0.1:{legacy_port}"),
        ),
        ("TRICKLE_FRONTEND__METRICS_LISTEN", String::new()),
        ("TRICKLE_LEGACY__METRICS_LISTEN", String::new()),
        ("TRICKLE_MIGRATION__METRICS_LISTEN", String::new()),
        ("TRICKLE_STORE__DATABASE_URL", store.database.url.clone()),
        ("TRICKLE_LEGACY__DATABASE_URL", legacy.database.url.clone()),
        ("TRICKLE_LEGACY__FIND_USER", legacy.find_user.clone()),
        ("TRICKLE_TOKENS__SIGNING_KEY", key),
        // Longer than the channels' re-resolution interval (2 s).
        ("TRICKLE_SERVER__DRAIN_DELAY_MS", "3000".into()),
        ("TRICKLE_FRONTEND__UPSTREAM_TIMEOUT_MS", "30000".into()),
        ("TRICKLE_MIGRATION__STORE_TIMEOUT_MS", "20000".into()),
        ("RUST_LOG", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let spawn = |service: &str, name: &str, extra: &[(&str, String)]| {
        let child = Command::new(env!("CARGO_BIN_EXE_trickle"))
            .args(["serve", service])
            .envs(common.iter().cloned())
            .envs(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())))
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.path().join(format!("{name}.log")))
                    .map_or_else(|_| Stdio::null(), Stdio::from),
            )
            .spawn()
            .expect("start a service");
        KillOnDrop(child)
    };
    let spawn_store = |index: usize| {
        let (ip, metrics) = replicas[index];
        spawn(
            "user-store",
            &format!("user-store-{index}"),
            &[
                ("TRICKLE_STORE__LISTEN", format!("{ip}:{port}")),
                (
                    "TRICKLE_STORE__METRICS_LISTEN",
                    format!("127.0.0.1:{metrics}"),
                ),
            ],
        )
    };
    let mut stores = [spawn_store(0), spawn_store(1)];
    let others = [
        spawn("legacy-connector", "legacy-connector", &[]),
        spawn("coordinator", "coordinator", &[]),
        spawn("frontend", "frontend", &[]),
    ];
    for ip in ips {
        assert!(
            listening_on(ip, port).await,
            "a store replica did not start"
        );
    }
    for port in [legacy_port, coordinator, frontend] {
        assert!(listening(port).await, "a service did not start");
    }
    let metrics_url = |index: usize| format!("http://127.0.0.1:{}/metrics", replicas[index].1);

    const USERS: i64 = 20;
    legacy.insert_many(&legacy_users(USERS)).await;
    let client = AuthServiceClient::connect(format!("http://127.0.0.1:{frontend}"))
        .await
        .expect("connect");
    for id in 1..=USERS {
        client
            .clone()
            .login(login(&format!("user{id}@example.com"), "legacy-password"))
            .await
            .unwrap_or_else(|s| panic!("first login of user{id}: {s:?}"));
    }

    // 200 logins of migrated users (the store alone answers them), four callers.
    let before = [
        authentications(&metrics_url(0)).await,
        authentications(&metrics_url(1)).await,
    ];
    let next = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (mut client, next) = (client.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if n >= 200 {
                        break;
                    }
                    let id = n % USERS + 1;
                    client
                        .login(login(&format!("user{id}@example.com"), "legacy-password"))
                        .await
                        .unwrap_or_else(|s| panic!("login of user{id}: {s:?}"));
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.expect("caller");
    }
    let served = [
        authentications(&metrics_url(0)).await - before[0],
        authentications(&metrics_url(1)).await - before[1],
    ];
    let total = served[0] + served[1];
    eprintln!("200 logins over two replicas: {served:?}");
    assert!(total >= 200.0, "every login asked the store: {served:?}");
    for (index, count) in served.iter().enumerate() {
        assert!(
            *count >= 0.3 * total,
            "replica {index} served {count} of {total} logins: {served:?}"
        );
    }

    // A rolling restart under a steady load.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|worker| {
            let (mut client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, Vec::new());
                let mut n = worker;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let id = n % USERS + 1;
                    n += 4;
                    match client
                        .login(login(&format!("user{id}@example.com"), "legacy-password"))
                        .await
                    {
                        Ok(_) => ok += 1,
                        Err(status) => {
                            failed.push(format!("{:?}: {}", status.code(), status.message()))
                        }
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    for index in 0..2 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let other = 1 - index;
        // The endpoints controller drops the pod from the name as the kubelet signals it.
        service.set(&[ips[other]]);
        let status = Command::new("kill")
            .args(["-TERM", &stores[index].0.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let exit = stores[index].0.wait().expect("wait");
        assert!(exit.success(), "replica {index} exit {exit:?}");
        stores[index] = spawn_store(index);
        assert!(
            listening_on(ips[index], port).await,
            "replica {index} restarted"
        );
        let fresh = authentications(&metrics_url(index)).await;
        service.set(&ips);
        // Within a couple of connection ages the new process gets calls.
        let deadline = Instant::now() + Duration::from_secs(10);
        while authentications(&metrics_url(index)).await <= fresh {
            assert!(
                Instant::now() < deadline,
                "the restarted replica {index} received no call"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut ok, mut failed) = (0, Vec::new());
    for worker in load {
        let (o, f) = worker.await.expect("worker");
        ok += o;
        failed.extend(f);
    }
    eprintln!(
        "rolling restart of both store replicas: {ok} logins, {} failed",
        failed.len()
    );
    assert!(ok > 0, "the load ran");
    assert!(
        failed.is_empty(),
        "logins lost in the rolling restart: {failed:?}"
    );
    drop(others);
    drop(stores);
}

/// `trickle login` as a newcomer runs it against `trickle dev`: the demo user with a legacy
/// second factor is asked for a code after the password (here from standard input, the code
/// from `trickle totp-code`), migrates with it, and the token says how they logged in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickle_login_asks_the_demo_user_with_a_factor_for_a_code() {
    let dev = DevProcess::start();
    let (_, email, password, secret) = trickle::dev::DEMO_TOTP_USER;
    let trickle = |args: &[&str], stdin: &str| {
        use std::io::Write as _;
        let mut child = Command::new(env!("CARGO_BIN_EXE_trickle"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run trickle");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        let output = child.wait_with_output().expect("wait");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, code, _) = trickle(&["totp-code", secret], "");
    assert!(ok && code.trim().len() == 6, "{code}");

    // A wrong code: refused, and said so.
    let (ok, _, stderr) = trickle(
        &["login", email, "--addr", &dev.api],
        &format!("{password}\n000000\n"),
    );
    assert!(!ok && stderr.contains("INVALID_MFA_CODE"), "{stderr}");

    let (ok, stdout, stderr) = trickle(
        &["login", email, "--addr", &dev.api],
        &format!("{password}\n{}\n", code.trim()),
    );
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("migrated now    yes"), "{stdout}");
    assert!(stdout.contains("amr pwd otp mfa"), "{stdout}");

    // The migration, as other services see it: `trickle admin watch`.
    let (ok, stdout, stderr) = trickle(
        &[
            "admin", "--addr", &dev.admin, "--json", "watch", "--kind", "migrated", "--count", "1",
        ],
        "",
    );
    assert!(ok, "{stdout}\n{stderr}");
    let event: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(
        (&event["type"], &event["source"], &event["email"]),
        (
            &serde_json::json!("user.migrated"),
            &serde_json::json!("login_migration"),
            &serde_json::json!(email)
        ),
        "{event}"
    );
    assert!(!stdout.contains(password));
    let (ok, _, stderr) = trickle(
        &["admin", "--addr", &dev.admin, "watch", "--kind", "nonsense"],
        "",
    );
    assert!(!ok && stderr.contains("not an event kind"), "{stderr}");
}

/// Events across a SIGKILLed coordinator *process*: a WatchEvents stream resumed after the
/// last position it saw misses nothing, and the webhook, whose receiver was failing before
/// the kill, delivers every event once the receiver recovers (changes made while no
/// coordinator ran included: the outbox is in the store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_webhooks_survive_a_killed_coordinator_process() {
    use std::sync::atomic::Ordering;
    use trickle_proto::auth::v1::SignUpRequest;
    use trickle_proto::events::v1::WatchEventsRequest;
    use trickle_proto::events::v1::event_feed_client::EventFeedClient;
    let receiver = std::sync::Arc::new(trickle_tests::Receiver::default());
    receiver.failing.store(true, Ordering::SeqCst);
    let url = trickle_tests::serve_receiver(receiver.clone()).await;
    let mut deployment = Deployment::start(false).await;
    let admin = format!("127.0.0.1:{}", free_port());
    deployment.kill("coordinator");
    for (name, value) in [
        ("TRICKLE_MIGRATION__WEBHOOK_URL", url),
        (
            "TRICKLE_MIGRATION__WEBHOOK_SECRET",
            trickle_tests::WEBHOOK_SECRET.to_owned(),
        ),
        ("TRICKLE_MIGRATION__WEBHOOK_BACKOFF_MS", "100".into()),
        ("TRICKLE_MIGRATION__WEBHOOK_BACKOFF_MAX_MS", "400".into()),
        ("TRICKLE_MIGRATION__WEBHOOK_MAX_ATTEMPTS", "10000".into()),
        ("TRICKLE_MIGRATION__WEBHOOK_LEASE_SECONDS", "1".into()),
        ("TRICKLE_MIGRATION__EVENTS_POLL_MS", "100".into()),
        ("TRICKLE_MIGRATION__ADMIN_LISTEN", admin.clone()),
    ] {
        deployment.set_env(name, value);
    }
    deployment.launch("coordinator").await;
    let mut client = deployment.client().await;
    let emails: Vec<String> = (1..=4).map(|n| format!("hooked{n}@example.com")).collect();
    for email in &emails {
        client
            .sign_up(SignUpRequest {
                email: email.clone(),
                password: "a hooked password".into(),
                profile: None,
            })
            .await
            .unwrap_or_else(|s| panic!("sign-up: {s:?}"));
    }
    let watch = |after: i64, count: usize| {
        let admin = format!("http://{admin}");
        async move {
            let mut feed = EventFeedClient::connect(admin).await.expect("connect");
            let mut stream = feed
                .watch_events(WatchEventsRequest {
                    after_position: after,
                    kinds: vec![],
                })
                .await
                .expect("watch")
                .into_inner();
            let mut positions = Vec::new();
            while positions.len() < count {
                let next = tokio::time::timeout(Duration::from_secs(30), stream.message())
                    .await
                    .expect("an event within 30 s")
                    .expect("stream")
                    .expect("not ended");
                positions.push(next.event.expect("event").position);
            }
            positions
        }
    };
    assert_eq!(watch(0, 4).await, [1, 2, 3, 4]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.attempts.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the webhook never tried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // SIGKILL mid-retry; the users log in meanwhile (the store alone serves them).
    deployment.kill("coordinator");
    for email in &emails {
        client
            .login(login(email, "a hooked password"))
            .await
            .expect("a store user logs in without the coordinator");
    }
    deployment.launch("coordinator").await;
    assert_eq!(
        watch(4, 4).await,
        [5, 6, 7, 8],
        "resumed after the last position seen"
    );

    receiver.failing.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let (delivered, _) = receiver.delivered();
        let mut positions: Vec<i64> = delivered
            .values()
            .map(|e| e["position"].as_i64().expect("position"))
            .collect();
        positions.sort_unstable();
        if positions == (1..=8).collect::<Vec<i64>>() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "delivered so far: {positions:?}\n{}",
            deployment.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(receiver.bad_signatures.load(Ordering::SeqCst), 0);
}
