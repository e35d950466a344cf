//! `trickle bench`: load a running Trickle through its public API and compare what it does
//! with what the hashing alone allows.
//!
//! A password login is, by design, almost all argon2. So the benchmark first measures that
//! floor on this machine, with the configured parameters, by hashing in this very process at
//! 1…N threads and keeping the best (memory-hard hashing often does not scale with threads,
//! so the best count is measured, not assumed). Each login scenario is then reported as a
//! ratio of that floor. Cheap calls (`ValidateToken`, `GetUser`) are measured while a
//! background load of logins keeps the hashing saturated: they must not wait behind it.
//!
//! The floor runs while the services are idle, on the same machine; the benchmark client
//! itself takes some CPU from the services during the scenarios, which the ratio includes.

use anyhow::Context as _;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use trickle_password::{Argon2Config, HashFormat, HashPool, Password, StoredHash};
use trickle_proto::auth::v1::auth_service_client::AuthServiceClient;
use trickle_proto::auth::v1::{
    GetUserRequest, LoginRequest, SignUpRequest, ValidateTokenRequest, get_user_request,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Log in users who are already in the store (argon2id verify).
    MigratedLogin,
    /// Log in legacy users for the first time: legacy verify, then argon2id hash and import.
    /// Needs --legacy-database-url.
    FirstLogin,
    /// Validate access tokens, while --under-load logins saturate the hashing.
    ValidateToken,
    /// Read users by id, while --under-load logins saturate the hashing.
    GetUser,
    /// Create new users (argon2id hash and insert).
    SignUp,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::MigratedLogin => "migrated-login",
            Scenario::FirstLogin => "first-login",
            Scenario::ValidateToken => "validate-token",
            Scenario::GetUser => "get-user",
            Scenario::SignUp => "sign-up",
        }
    }

    fn is_cheap(self) -> bool {
        matches!(self, Scenario::ValidateToken | Scenario::GetUser)
    }
}

const ALL: [Scenario; 5] = [
    Scenario::MigratedLogin,
    Scenario::FirstLogin,
    Scenario::ValidateToken,
    Scenario::GetUser,
    Scenario::SignUp,
];

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The auth-frontend's address.
    #[arg(long, default_value = "http://127.0.0.1:50051", env = "TRICKLE_ADDR")]
    pub addr: String,
    /// Scenarios to run, in order (repeat or comma-separate). Default: all; first-login only
    /// when --legacy-database-url is given.
    #[arg(long = "scenario", value_enum, value_delimiter = ',')]
    pub scenarios: Vec<Scenario>,
    /// Concurrent callers for the login and sign-up scenarios (default: 4 per core, enough
    /// to keep every hashing thread busy).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Concurrent callers of the cheap calls (ValidateToken, GetUser).
    #[arg(long, default_value_t = 4)]
    pub cheap_concurrency: usize,
    /// Cheap calls per second, spread over their callers (0: as fast as they answer). A
    /// fixed rate measures latency under the login load; flat out, the cheap calls would
    /// take the CPU from the logins they are measured against.
    #[arg(long, default_value_t = 500.0)]
    pub cheap_rate: f64,
    /// Logins kept running in the background while the cheap calls are measured (default:
    /// 4 per core; 0 measures the cheap calls on an idle system).
    #[arg(long)]
    pub under_load: Option<usize>,
    /// Seconds each scenario is measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds each scenario runs before measuring starts (not counted).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds the hashing floor is measured at each thread count (just before each login
    /// or sign-up scenario).
    #[arg(long, default_value_t = 5.0)]
    pub floor_seconds: f64,
    /// Skip the floor measurement (no ratios).
    #[arg(long)]
    pub no_floor: bool,
    /// Store users created for the migrated-login, validate-token and get-user scenarios.
    #[arg(long, default_value_t = 64)]
    pub users: usize,
    /// The legacy database, for first-login: fresh users are inserted into its `users` table
    /// (columns id, email, password_hash; the table of `trickle dev`'s demo database and of
    /// the test suite). Their emails end in @bench.trickle.invalid.
    #[arg(long, value_name = "URL")]
    pub legacy_database_url: Option<String>,
    /// The legacy users' hash format: bcrypt:COST, argon2id (the store's parameters) or
    /// pbkdf2:ITERATIONS (Django).
    #[arg(long, default_value = "bcrypt:10")]
    pub legacy_hash: String,
    /// Processes whose resident memory is sampled during each scenario (repeatable), e.g.
    /// the `trickle dev` process or the user-store.
    #[arg(long = "watch-pid", value_name = "PID")]
    pub watch_pids: Vec<u32>,
    /// Print a JSON report instead of tables.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub tls: crate::connect::ClientTlsArgs,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub cores: usize,
    pub argon2: Argon2Params,
    pub floors: Floors,
    pub scenarios: Vec<ScenarioReport>,
}

#[derive(Debug, Serialize)]
pub struct Argon2Params {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

#[derive(Debug, Default, Serialize)]
pub struct Floors {
    /// argon2id verify with the configured parameters: the floor of a migrated login.
    pub argon2id_verify: Option<Floor>,
    /// argon2id hash: the floor of a sign-up.
    pub argon2id_hash: Option<Floor>,
    /// Legacy verify followed by an argon2id hash: the floor of a first login.
    pub first_login: Option<Floor>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    /// Operations per second at 1, 2, … threads.
    pub per_second_by_threads: Vec<f64>,
    pub best_threads: usize,
    pub best_per_second: f64,
}

#[derive(Debug, Serialize)]
pub struct ScenarioReport {
    pub scenario: Scenario,
    pub concurrency: usize,
    pub seconds: f64,
    pub ok: u64,
    /// Failed calls by gRPC code (or a bench-side reason), e.g. {"ResourceExhausted": 3}.
    pub errors: BTreeMap<String, u64>,
    pub per_second: f64,
    pub latency_ms: Latency,
    /// The floor this scenario is compared with (operations per second).
    pub floor_per_second: Option<f64>,
    /// per_second / floor_per_second.
    pub ratio: Option<f64>,
    /// Logins per second that ran in the background while a cheap call was measured.
    pub background_logins_per_second: Option<f64>,
    pub background_login_errors: Option<BTreeMap<String, u64>>,
    pub memory: Vec<ProcessMemory>,
}

#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Serialize)]
pub struct ProcessMemory {
    pub pid: u32,
    /// Resident set before the scenario started.
    pub rss_before_mib: f64,
    /// The highest resident set sampled (every 50 ms) while the scenario ran.
    pub rss_peak_mib: f64,
}

/// The argon2 parameters the store writes and verifies: from `[store] argon2` in the
/// configuration, the same file the services read.
pub async fn run(args: BenchArgs, argon2: Argon2Config) -> anyhow::Result<()> {
    let json = args.json;
    let report = execute(args, argon2, |line| {
        if !json {
            eprintln!("{line}");
        }
    })
    .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// Run the benchmark and return its report; `progress` hears what is happening.
pub async fn execute(
    args: BenchArgs,
    argon2: Argon2Config,
    progress: impl Fn(&str),
) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.duration > 0.0 && args.warmup >= 0.0 && args.floor_seconds > 0.0,
        "--duration and --floor-seconds must be positive, --warmup not negative"
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let concurrency = args.concurrency.unwrap_or(4 * cores).max(1);
    let under_load = args.under_load.unwrap_or(4 * cores);
    let scenarios: Vec<Scenario> = if args.scenarios.is_empty() {
        ALL.into_iter()
            .filter(|s| *s != Scenario::FirstLogin || args.legacy_database_url.is_some())
            .collect()
    } else {
        args.scenarios.clone()
    };
    if scenarios.contains(&Scenario::FirstLogin) && args.legacy_database_url.is_none() {
        anyhow::bail!(
            "the first-login scenario needs --legacy-database-url: it inserts fresh legacy users to migrate"
        );
    }
    let legacy_hash = LegacyHash::parse(&args.legacy_hash)?;

    let clients =
        Clients::connect(&args.addr, &args.tls.config(), concurrency.max(under_load)).await?;
    let run_id = new_run_id();
    let password = format!("bench-password-{run_id}");

    let mut floors = Floors::default();
    let floor_seconds = Duration::from_secs_f64(args.floor_seconds);
    let argon2_hash = trickle_password::legacy_formats::argon2id(&password, &argon2)
        .map_err(anyhow::Error::msg)?;

    // Users in the store for the login and cheap scenarios.
    let needs_accounts = scenarios
        .iter()
        .any(|s| *s == Scenario::MigratedLogin || s.is_cheap());
    let accounts = if needs_accounts {
        progress(&format!("signing up {} store users", args.users.max(1)));
        Accounts::create(&clients, &run_id, &password, args.users.max(1)).await?
    } else {
        Accounts::default()
    };

    let window = Window {
        warmup: Duration::from_secs_f64(args.warmup),
        measure: Duration::from_secs_f64(args.duration),
    };
    let mut reports = Vec::new();
    for scenario in scenarios {
        // The floor just before its scenario, while the services are idle: the machine's
        // speed drifts (other tenants, turbo), and a floor from minutes earlier would not
        // be the floor of this run.
        if !args.no_floor {
            let (what, job, stored) = match scenario {
                Scenario::MigratedLogin => {
                    ("argon2id verify", FloorJob::Verify, argon2_hash.clone())
                }
                Scenario::SignUp => ("argon2id hash", FloorJob::Hash, argon2_hash.clone()),
                Scenario::FirstLogin => (
                    "legacy verify + argon2id hash",
                    FloorJob::VerifyAndUpgrade,
                    legacy_hash.hash(&password, &argon2)?,
                ),
                Scenario::ValidateToken | Scenario::GetUser => {
                    ("", FloorJob::Verify, String::new())
                }
            };
            if !what.is_empty() {
                progress(&format!("measuring the floor: {what} at 1…{cores} threads"));
                let measured = floor(argon2, cores, floor_seconds, &password, &stored, job).await?;
                *match scenario {
                    Scenario::FirstLogin => &mut floors.first_login,
                    Scenario::SignUp => &mut floors.argon2id_hash,
                    _ => &mut floors.argon2id_verify,
                } = Some(measured);
            }
        }
        progress(&format!("running {}", scenario.name()));
        let memory = MemoryWatch::start(&args.watch_pids);
        let mut background = None;
        let outcome = match scenario {
            Scenario::MigratedLogin => {
                drive(
                    concurrency,
                    window,
                    login_op(&clients, &accounts, &password),
                )
                .await
            }
            Scenario::FirstLogin => {
                let url = args.legacy_database_url.as_deref().unwrap_or_default();
                let expected = floors
                    .first_login
                    .as_ref()
                    .map_or(50.0, |f| f.best_per_second);
                let count = ((expected * (args.warmup + args.duration) * 2.0) as usize)
                    .max(4 * concurrency)
                    .max(100);
                progress(&format!("inserting {count} legacy users"));
                let emails =
                    seed_legacy(url, &run_id, &password, &legacy_hash, &argon2, count).await?;
                drive(
                    concurrency,
                    window,
                    first_login_op(&clients, emails, &password),
                )
                .await
            }
            Scenario::ValidateToken | Scenario::GetUser => {
                let load = (under_load > 0).then(|| {
                    let stop = Arc::new(AtomicBool::new(false));
                    let task = tokio::spawn(drive_until(
                        under_load,
                        window,
                        None,
                        Arc::clone(&stop),
                        login_op(&clients, &accounts, &password),
                    ));
                    (stop, task)
                });
                // Let the background logins fill the hashing pool before measuring.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let outcome = if scenario == Scenario::ValidateToken {
                    drive_paced(
                        args.cheap_concurrency,
                        window,
                        args.cheap_rate,
                        validate_op(&clients, &accounts),
                    )
                    .await
                } else {
                    drive_paced(
                        args.cheap_concurrency,
                        window,
                        args.cheap_rate,
                        get_user_op(&clients, &accounts),
                    )
                    .await
                };
                if let Some((stop, task)) = load {
                    stop.store(true, Ordering::Relaxed);
                    let load = task.await.context("background load panicked")?;
                    background = Some(load);
                }
                outcome
            }
            Scenario::SignUp => {
                drive(
                    concurrency,
                    window,
                    sign_up_op(&clients, &run_id, &password),
                )
                .await
            }
        };
        let memory = memory.stop().await;
        let floor_per_second = match scenario {
            Scenario::MigratedLogin => floors.argon2id_verify.as_ref(),
            Scenario::FirstLogin => floors.first_login.as_ref(),
            Scenario::SignUp => floors.argon2id_hash.as_ref(),
            Scenario::ValidateToken | Scenario::GetUser => None,
        }
        .map(|f| f.best_per_second);
        let per_second = outcome.ok as f64 / window.measure.as_secs_f64();
        reports.push(ScenarioReport {
            scenario,
            concurrency: if scenario.is_cheap() {
                args.cheap_concurrency
            } else {
                concurrency
            },
            seconds: window.measure.as_secs_f64(),
            ok: outcome.ok,
            errors: outcome.errors.clone(),
            per_second,
            latency_ms: outcome.latency(),
            floor_per_second,
            ratio: floor_per_second.map(|f| per_second / f),
            background_logins_per_second: background
                .as_ref()
                .map(|b| b.ok as f64 / window.measure.as_secs_f64()),
            background_login_errors: background.map(|b| b.errors),
            memory,
        });
    }
    Ok(Report {
        cores,
        argon2: Argon2Params {
            memory_kib: argon2.memory_kib,
            iterations: argon2.iterations,
            parallelism: argon2.parallelism,
        },
        floors,
        scenarios: reports,
    })
}

/// Keeps the emails of two runs apart (time and process id; not a secret).
fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}{:x}", nanos % (1 << 40), std::process::id() % 4096)
}

// ---------------------------------------------------------------------------------------
// The floor

#[derive(Debug, Clone, Copy)]
enum FloorJob {
    Verify,
    Hash,
    VerifyAndUpgrade,
}

/// Operations per second of `job` at 1…`cores` hashing threads, each measured for
/// `seconds` after a short warm-up, through the same bounded pool the services use.
async fn floor(
    argon2: Argon2Config,
    cores: usize,
    seconds: Duration,
    password: &str,
    stored: &str,
    job: FloorJob,
) -> anyhow::Result<Floor> {
    let stored = StoredHash::parse(stored, HashFormat::Auto)
        .map_err(|e| anyhow::anyhow!("bench hash does not parse: {e}"))?;
    let mut by_threads = Vec::new();
    for threads in 1..=cores {
        let pool = HashPool::new("bench-floor", argon2, threads, threads)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let warmup = Instant::now() + Duration::from_millis(300);
        let deadline = warmup + seconds;
        let done = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..threads * 2 {
            let (pool, stored, password, done) = (
                pool.clone(),
                stored.clone(),
                password.to_owned(),
                Arc::clone(&done),
            );
            tasks.push(tokio::spawn(async move {
                loop {
                    let begun = Instant::now();
                    if begun >= deadline {
                        return Ok::<(), anyhow::Error>(());
                    }
                    let password = Password::new(password.clone());
                    match job {
                        FloorJob::Verify => pool.verify(password, stored.clone()).await.map(|_| ()),
                        FloorJob::Hash => pool.hash(password).await.map(|_| ()),
                        FloorJob::VerifyAndUpgrade => pool
                            .verify_and_upgrade(password, stored.clone())
                            .await
                            .map(|_| ()),
                    }
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                    // Count operations that started inside the window and ended before its end.
                    let ended = Instant::now();
                    if begun >= warmup && ended <= deadline {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for task in tasks {
            task.await.context("floor task panicked")??;
        }
        by_threads.push(done.load(Ordering::Relaxed) as f64 / seconds.as_secs_f64());
    }
    let (best_index, best) =
        by_threads
            .iter()
            .copied()
            .enumerate()
            .fold(
                (0, 0.0),
                |best, (i, v)| if v > best.1 { (i, v) } else { best },
            );
    Ok(Floor {
        per_second_by_threads: by_threads,
        best_threads: best_index + 1,
        best_per_second: best,
    })
}

// ---------------------------------------------------------------------------------------
// Load

#[derive(Debug, Clone, Copy)]
struct Window {
    warmup: Duration,
    measure: Duration,
}

#[derive(Debug, Default)]
struct Outcome {
    ok: u64,
    errors: BTreeMap<String, u64>,
    latencies: Vec<Duration>,
}

impl Outcome {
    fn merge(&mut self, other: Outcome) {
        self.ok += other.ok;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.latencies.extend(other.latencies);
    }

    fn latency(&self) -> Latency {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let at = |q: f64| -> f64 {
            if sorted.is_empty() {
                return 0.0;
            }
            let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[index].as_secs_f64() * 1000.0
        };
        Latency {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// One call of a scenario: `Err` carries the failure's name (a gRPC code or a bench reason).
type OpFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;
type Op = Arc<dyn Fn(usize, u64) -> OpFuture + Send + Sync>;

fn code_name(status: &tonic::Status) -> String {
    format!("{:?}", status.code())
}

/// Run `op` from `concurrency` callers for the window; record calls that start after the
/// warm-up and end within the window.
async fn drive(concurrency: usize, window: Window, op: Op) -> Outcome {
    drive_until(
        concurrency,
        window,
        None,
        Arc::new(AtomicBool::new(false)),
        op,
    )
    .await
}

/// `rate`: calls per second over all callers, each caller on a fixed schedule (a call that
/// runs late does not shift the later ones: latency is measured from when it started).
async fn drive_paced(concurrency: usize, window: Window, rate: f64, op: Op) -> Outcome {
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(concurrency.max(1) as f64 / rate));
    drive_until(
        concurrency,
        window,
        interval,
        Arc::new(AtomicBool::new(false)),
        op,
    )
    .await
}

async fn drive_until(
    concurrency: usize,
    window: Window,
    interval: Option<Duration>,
    stop: Arc<AtomicBool>,
    op: Op,
) -> Outcome {
    let start = Instant::now();
    let measure_from = start + window.warmup;
    let end = measure_from + window.measure;
    let mut tasks = Vec::new();
    for worker in 0..concurrency.max(1) {
        let (op, stop) = (Arc::clone(&op), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut outcome = Outcome::default();
            let mut iteration = 0u64;
            let mut refusals = 0u32;
            // Callers start spread over one interval, not all at once.
            let mut next_call =
                interval.map(|i| start + i.mul_f64(worker as f64 / concurrency.max(1) as f64));
            loop {
                if let (Some(at), Some(interval)) = (next_call, interval) {
                    tokio::time::sleep_until(at.into()).await;
                    next_call = Some(at + interval);
                }
                let begun = Instant::now();
                if begun >= end || stop.load(Ordering::Relaxed) {
                    return outcome;
                }
                let result = op(worker, iteration).await;
                iteration += 1;
                let ended = Instant::now();
                let counted = begun >= measure_from && ended <= end;
                if result.is_ok() {
                    refusals = 0;
                }
                match result {
                    Ok(()) if counted => {
                        outcome.ok += 1;
                        outcome.latencies.push(ended - begun);
                    }
                    Ok(()) => {}
                    Err(reason) => {
                        if counted {
                            *outcome.errors.entry(reason.clone()).or_default() += 1;
                        }
                        if reason == "ResourceExhausted" || reason == "Unavailable" {
                            // A polite client backs off when told the service is full:
                            // 50–100 ms after the first refusal, doubling up to 0.8–1.6 s,
                            // with jitter so that refused callers do not come back in step.
                            refusals += 1;
                            let ceiling = 50u64 << refusals.min(5);
                            let jitter = (worker as u64 * 7919 + iteration * 104_729) % ceiling;
                            tokio::time::sleep(Duration::from_millis(ceiling / 2 + jitter / 2))
                                .await;
                        }
                        if reason == "OutOfLegacyUsers" {
                            return outcome;
                        }
                    }
                }
            }
        }));
    }
    let mut total = Outcome::default();
    for task in tasks {
        match task.await {
            Ok(outcome) => total.merge(outcome),
            Err(_) => *total.errors.entry("BenchTaskPanicked".into()).or_default() += 1,
        }
    }
    total
}

/// Cheap to clone: the scenarios' calls share the connections.
#[derive(Clone)]
struct Clients {
    channels: Arc<Vec<Channel>>,
}

impl Clients {
    /// A few HTTP/2 connections, so that many callers are not all one TCP stream.
    async fn connect(
        addr: &str,
        tls: &trickle_service_kit::tls::TlsConfig,
        callers: usize,
    ) -> anyhow::Result<Self> {
        let connections = callers.div_ceil(64).clamp(1, 8);
        let mut channels = Vec::new();
        for _ in 0..connections {
            let what = "the Trickle frontend (is `trickle dev` running?)";
            channels.push(crate::connect::channel(addr, tls, what).await?);
        }
        Ok(Self {
            channels: Arc::new(channels),
        })
    }

    fn auth(&self, worker: usize) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channels[worker % self.channels.len()].clone())
    }
}

#[derive(Debug, Default)]
struct Accounts {
    emails: Vec<String>,
    user_ids: Vec<String>,
    tokens: Vec<String>,
}

impl Accounts {
    async fn create(
        clients: &Clients,
        run_id: &str,
        password: &str,
        count: usize,
    ) -> anyhow::Result<Self> {
        let mut accounts = Accounts::default();
        for i in 0..count {
            let email = format!("bench-{run_id}-u{i}@bench.trickle.invalid");
            let mut client = clients.auth(i);
            let mut attempts = 0;
            let user = loop {
                attempts += 1;
                match client
                    .sign_up(SignUpRequest {
                        email: email.clone(),
                        password: password.to_owned(),
                        profile: None,
                    })
                    .await
                {
                    Ok(r) => break r.into_inner().user.unwrap_or_default(),
                    Err(s) if s.code() == tonic::Code::ResourceExhausted && attempts < 50 => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(s) => anyhow::bail!("cannot sign up a bench user: {}", s.message()),
                }
            };
            let login = client
                .login(LoginRequest {
                    email: email.clone(),
                    password: password.to_owned(),
                    attempt_source: String::new(),
                })
                .await
                .map_err(|s| anyhow::anyhow!("a bench user cannot log in: {}", s.message()))?
                .into_inner();
            accounts.emails.push(email);
            accounts.user_ids.push(user.user_id);
            accounts.tokens.push(login.access_token);
        }
        Ok(accounts)
    }
}

fn login_op(clients: &Clients, accounts: &Accounts, password: &str) -> Op {
    let clients = clients.clone();
    let emails = Arc::new(accounts.emails.clone());
    let password = password.to_owned();
    Arc::new(move |worker, _| {
        let mut client = clients.auth(worker);
        let request = LoginRequest {
            email: emails[worker % emails.len()].clone(),
            password: password.clone(),
            attempt_source: String::new(),
        };
        Box::pin(async move {
            client
                .login(request)
                .await
                .map(|_| ())
                .map_err(|s| code_name(&s))
        })
    })
}

fn first_login_op(clients: &Clients, emails: Vec<String>, password: &str) -> Op {
    let clients = clients.clone();
    let emails = Arc::new(emails);
    let next = Arc::new(AtomicUsize::new(0));
    let password = password.to_owned();
    Arc::new(move |worker, _| {
        let mut client = clients.auth(worker);
        let index = next.fetch_add(1, Ordering::Relaxed);
        let email = emails.get(index).cloned();
        let password = password.clone();
        Box::pin(async move {
            let Some(email) = email else {
                return Err("OutOfLegacyUsers".to_owned());
            };
            let response = client
                .login(LoginRequest {
                    email,
                    password,
                    attempt_source: String::new(),
                })
                .await
                .map_err(|s| code_name(&s))?
                .into_inner();
            if response.migrated {
                Ok(())
            } else {
                Err("NotMigrated".to_owned())
            }
        })
    })
}

fn validate_op(clients: &Clients, accounts: &Accounts) -> Op {
    let clients = clients.clone();
    let tokens = Arc::new(accounts.tokens.clone());
    Arc::new(move |worker, i| {
        let mut client = clients.auth(worker);
        let access_token = tokens[(worker + i as usize) % tokens.len()].clone();
        Box::pin(async move {
            client
                .validate_token(ValidateTokenRequest { access_token })
                .await
                .map(|_| ())
                .map_err(|s| code_name(&s))
        })
    })
}

fn get_user_op(clients: &Clients, accounts: &Accounts) -> Op {
    let clients = clients.clone();
    let ids = Arc::new(accounts.user_ids.clone());
    Arc::new(move |worker, i| {
        let mut client = clients.auth(worker);
        let user_id = ids[(worker + i as usize) % ids.len()].clone();
        Box::pin(async move {
            client
                .get_user(GetUserRequest {
                    lookup: Some(get_user_request::Lookup::UserId(user_id)),
                })
                .await
                .map(|_| ())
                .map_err(|s| code_name(&s))
        })
    })
}

fn sign_up_op(clients: &Clients, run_id: &str, password: &str) -> Op {
    let clients = clients.clone();
    let run_id = run_id.to_owned();
    let password = password.to_owned();
    Arc::new(move |worker, i| {
        let mut client = clients.auth(worker);
        let request = SignUpRequest {
            email: format!("bench-{run_id}-s{worker}-{i}@bench.trickle.invalid"),
            password: password.clone(),
            profile: None,
        };
        Box::pin(async move {
            client
                .sign_up(request)
                .await
                .map(|_| ())
                .map_err(|s| code_name(&s))
        })
    })
}

// ---------------------------------------------------------------------------------------
// Legacy users for first-login

#[derive(Debug, Clone, Copy)]
enum LegacyHash {
    Bcrypt(u32),
    Argon2id,
    Pbkdf2(u32),
}

impl LegacyHash {
    fn parse(spec: &str) -> anyhow::Result<Self> {
        let (kind, arg) = spec.split_once(':').unwrap_or((spec, ""));
        let number = |default: u32| -> anyhow::Result<u32> {
            if arg.is_empty() {
                Ok(default)
            } else {
                arg.parse()
                    .with_context(|| format!("--legacy-hash {spec}: {arg} is not a number"))
            }
        };
        match kind {
            "bcrypt" => {
                let cost = number(10)?;
                anyhow::ensure!((4..=31).contains(&cost), "bcrypt cost must be 4 to 31");
                Ok(LegacyHash::Bcrypt(cost))
            }
            "argon2id" => Ok(LegacyHash::Argon2id),
            "pbkdf2" => Ok(LegacyHash::Pbkdf2(number(600_000)?.max(1))),
            _ => anyhow::bail!(
                "--legacy-hash {spec}: expected bcrypt:COST, argon2id or pbkdf2:ITERATIONS"
            ),
        }
    }

    fn hash(self, password: &str, argon2: &Argon2Config) -> anyhow::Result<String> {
        use trickle_password::legacy_formats as f;
        match self {
            LegacyHash::Bcrypt(cost) => f::bcrypt(password, cost),
            LegacyHash::Argon2id => f::argon2id(password, argon2),
            LegacyHash::Pbkdf2(iterations) => f::django_pbkdf2_sha256(password, iterations),
        }
        .map_err(anyhow::Error::msg)
    }
}

/// Insert `count` fresh users into the legacy `users` table, all with the same password
/// and hash (the verify costs the same for each; hashing thousands of bcrypts up front would
/// take longer than the benchmark).
async fn seed_legacy(
    url: &str,
    run_id: &str,
    password: &str,
    kind: &LegacyHash,
    argon2: &Argon2Config,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    use sqlx::{Connection as _, Row as _};
    sqlx::any::install_default_drivers();
    let hash = kind.hash(password, argon2)?;
    // The rows are written as SQL literals (placeholders differ between databases); every
    // value is ours, and checked to contain nothing that needs quoting.
    anyhow::ensure!(
        hash.chars()
            .all(|c| c.is_ascii_alphanumeric() || "$./+=,-_".contains(c)),
        "unexpected character in a bench hash"
    );
    let mut conn = sqlx::AnyConnection::connect(url)
        .await
        .with_context(|| format!("cannot connect to the legacy database {}", redact(url)))?;
    // PostgreSQL and SQLite cast to BIGINT; MariaDB spells it SIGNED.
    let cast = if url.starts_with("mysql") || url.starts_with("mariadb") {
        "SIGNED"
    } else {
        "BIGINT"
    };
    let max: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(COALESCE(MAX(id), 0) AS {cast}) FROM users"
    )))
    .fetch_one(&mut conn)
    .await
    .context("cannot read the legacy users table (columns id, email, password_hash)")?
    .try_get(0)?;
    let mut emails = Vec::with_capacity(count);
    for chunk_start in (0..count).step_by(500) {
        let mut sql = String::from("INSERT INTO users (id, email, password_hash) VALUES ");
        for i in chunk_start..(chunk_start + 500).min(count) {
            let email = format!("bench-{run_id}-l{i}@bench.trickle.invalid");
            if i > chunk_start {
                sql.push(',');
            }
            sql.push_str(&format!("({}, '{email}', '{hash}')", max + 1 + i as i64));
            emails.push(email);
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .context("cannot insert bench users into the legacy users table")?;
    }
    conn.close().await.ok();
    Ok(emails)
}

/// A database URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// Memory

struct MemoryWatch {
    before: Vec<(u32, f64)>,
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<Vec<f64>>>,
}

/// Resident set of a process in MiB (Linux /proc).
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

impl MemoryWatch {
    fn start(pids: &[u32]) -> Self {
        let before: Vec<(u32, f64)> = pids
            .iter()
            .map(|&pid| (pid, rss_mib(pid).unwrap_or(0.0)))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let task = (!pids.is_empty()).then(|| {
            let (stop, pids) = (Arc::clone(&stop), pids.to_vec());
            tokio::spawn(async move {
                let mut peak = vec![0.0f64; pids.len()];
                while !stop.load(Ordering::Relaxed) {
                    for (p, pid) in peak.iter_mut().zip(&pids) {
                        *p = p.max(rss_mib(*pid).unwrap_or(0.0));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                peak
            })
        });
        Self { before, stop, task }
    }

    async fn stop(self) -> Vec<ProcessMemory> {
        self.stop.store(true, Ordering::Relaxed);
        let peaks = match self.task {
            Some(task) => task.await.unwrap_or_default(),
            None => Vec::new(),
        };
        self.before
            .iter()
            .zip(peaks)
            .map(|(&(pid, before), peak)| ProcessMemory {
                pid,
                rss_before_mib: before,
                rss_peak_mib: peak,
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Output

pub fn render(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let a = &report.argon2;
    let _ = writeln!(
        out,
        "\nargon2id m={} KiB t={} p={}, {} cores",
        a.memory_kib, a.iterations, a.parallelism, report.cores
    );
    for (name, floor) in [
        ("argon2id verify", &report.floors.argon2id_verify),
        ("argon2id hash", &report.floors.argon2id_hash),
        ("legacy verify + argon2id hash", &report.floors.first_login),
    ] {
        if let Some(f) = floor {
            let by: Vec<String> = f
                .per_second_by_threads
                .iter()
                .enumerate()
                .map(|(i, v)| format!("{} thr {v:.1}/s", i + 1))
                .collect();
            let _ = writeln!(
                out,
                "floor {name:<31} {}  → best {:.1}/s at {} threads ({:.1}/s per core)",
                by.join(", "),
                f.best_per_second,
                f.best_threads,
                f.best_per_second / report.cores as f64
            );
        }
    }
    let _ = writeln!(
        out,
        "\n{:<15} {:>5} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7}  errors",
        "scenario", "conc", "ok", "per s", "p50 ms", "p95 ms", "p99 ms", "max ms", "ratio"
    );
    for s in &report.scenarios {
        let errors = if s.errors.is_empty() {
            "-".to_owned()
        } else {
            s.errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "{:<15} {:>5} {:>8} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7}  {errors}",
            s.scenario.name(),
            s.concurrency,
            s.ok,
            s.per_second,
            s.latency_ms.p50,
            s.latency_ms.p95,
            s.latency_ms.p99,
            s.latency_ms.max,
            s.ratio.map_or("-".to_owned(), |r| format!("{r:.3}")),
        );
        if let Some(bg) = s.background_logins_per_second {
            let _ = writeln!(
                out,
                "{:<15} while {bg:.1} logins/s ran in the background",
                ""
            );
        }
        for m in &s.memory {
            let _ = writeln!(
                out,
                "{:<15} pid {} resident {:.1} MiB before, peak {:.1} MiB",
                "", m.pid, m.rss_before_mib, m.rss_peak_mib
            );
        }
    }
    out
}
