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

mod floor;
mod load;
mod memory;
mod report;
mod scenarios;
mod seeding;

use floor::*;
use load::*;
use memory::*;
pub use report::*;
use scenarios::*;
use seeding::*;

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
    /// Seconds each scenario is measured: a call counts when it ends within them, whenever
    /// it started (the rate is what the service completes per second).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds each scenario runs before measuring starts (calls ending in them are not
    /// counted).
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
    /// the `trickle dev` process or the user-store; their CPU time in the measured window is
    /// reported too, split between their hashing threads and the rest (Linux).
    #[arg(long = "watch-pid", value_name = "PID")]
    pub watch_pids: Vec<u32>,
    /// The hashing threads the services were started with (their `hash_workers`), for a
    /// scaling table: the floor is then measured at exactly this many threads instead of the
    /// best of 1…cores, and the report records the count.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub hash_threads: Option<u16>,
    /// Callers refused with RESOURCE_EXHAUSTED ignore the service's RetryInfo delay and
    /// only back off exponentially (50–100 ms doubling up to 0.8–1.6 s): what refusals
    /// cost when clients do not read error details.
    #[arg(long)]
    pub ignore_retry_info: bool,
    /// Print a JSON report instead of tables.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub tls: crate::connect::ClientTlsArgs,
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

    let backoff = if args.ignore_retry_info {
        Backoff::Exponential
    } else {
        Backoff::Polite
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
                let threads = match args.hash_threads {
                    Some(n) => {
                        progress(&format!("measuring the floor: {what} at {n} threads"));
                        FloorThreads::Exactly(usize::from(n))
                    }
                    None => {
                        progress(&format!("measuring the floor: {what} at 1…{cores} threads"));
                        FloorThreads::UpTo(cores)
                    }
                };
                let measured =
                    floor(argon2, threads, floor_seconds, &password, &stored, job).await?;
                *match scenario {
                    Scenario::FirstLogin => &mut floors.first_login,
                    Scenario::SignUp => &mut floors.argon2id_hash,
                    _ => &mut floors.argon2id_verify,
                } = Some(measured);
            }
        }
        progress(&format!("running {}", scenario.name()));
        let mut memory = MemoryWatch::start(&args.watch_pids);
        let mut background = None;
        let outcome = match scenario {
            Scenario::MigratedLogin => {
                memory.measure_window(window);
                drive(
                    concurrency,
                    window,
                    backoff,
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
                memory.measure_window(window);
                drive(
                    concurrency,
                    window,
                    backoff,
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
                        backoff,
                        Arc::clone(&stop),
                        login_op(&clients, &accounts, &password),
                    ));
                    (stop, task)
                });
                // Let the background logins fill the hashing pool before measuring.
                tokio::time::sleep(Duration::from_millis(300)).await;
                memory.measure_window(window);
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
                memory.measure_window(window);
                drive(
                    concurrency,
                    window,
                    backoff,
                    sign_up_op(&clients, &run_id, &password),
                )
                .await
            }
        };
        let cpu = memory.cpu();
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
            cpu,
        });
    }
    Ok(Report {
        cores,
        hash_threads: args.hash_threads.map(usize::from),
        honors_retry_info: !args.ignore_retry_info,
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
