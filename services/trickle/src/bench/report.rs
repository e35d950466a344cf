//! What a run found, and how it is printed.

use super::*;

#[derive(Debug, Serialize)]
pub struct Report {
    pub cores: usize,
    /// The services' hashing threads, when the run was told (`--hash-threads`): the floors
    /// are then measured at exactly that count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_threads: Option<usize>,
    /// Whether refused callers waited for the service's RetryInfo delay (false with
    /// `--ignore-retry-info`).
    pub honors_retry_info: bool,
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
    /// The thread counts measured: 1, 2, … cores, or the one count of `--hash-threads`.
    pub threads: Vec<usize>,
    /// Operations per second at each of `threads`.
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
    /// Where the CPU went while the scenario ran (warm-up included), with --watch-pid.
    pub cpu: Option<CpuShare>,
}

/// CPU time used while a scenario ran, in seconds: the watched processes' hashing threads,
/// their other threads (gRPC, database drivers, token signing), and this bench client. On a
/// saturated machine, `hashing_share` bounds the ratio a login scenario can reach: the floor
/// hashes on every core, and everything else a login needs comes out of that.
#[derive(Debug, Clone, Serialize)]
pub struct CpuShare {
    pub hashing_seconds: f64,
    pub other_seconds: f64,
    pub bench_seconds: f64,
    pub hashing_share: Option<f64>,
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
                .zip(&f.threads)
                .map(|(v, threads)| format!("{threads} thr {v:.1}/s"))
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
        if let Some(cpu) = &s.cpu {
            let total = cpu.hashing_seconds + cpu.other_seconds + cpu.bench_seconds;
            let pct = |v: f64| if total > 0.0 { 100.0 * v / total } else { 0.0 };
            let _ = writeln!(
                out,
                "{:<15} CPU: hashing {:.1} %, the services' other threads {:.1} %, this client {:.1} %",
                "",
                pct(cpu.hashing_seconds),
                pct(cpu.other_seconds),
                pct(cpu.bench_seconds)
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
