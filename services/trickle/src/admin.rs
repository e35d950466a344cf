//! `trickle admin`: the operator's CLI over `trickle.migration.v1.MigrationAdmin` on the
//! coordinator. Human-readable tables by default, `--json` for scripts; every failure is a
//! clear message and a non-zero exit.

use crate::import::{
    FileOptions, FirebaseAlgorithm, FirebaseHashParams, HashInputOrder, ImportFormat, Unreadable,
    read_file,
};
use serde_json::json;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use tonic::transport::Channel;
use trickle_migration_coordinator::preflight::{Census, CensusOptions};
use trickle_proto::auth::v1 as auth;
use trickle_proto::legacy::v1::HashStatus;
use trickle_proto::migration::v1::migration_admin_client::MigrationAdminClient;
use trickle_proto::migration::v1::{
    Backfill, BackfillState, CancelBackfillRequest, FailureCount, GetBackfillRequest,
    GetStatusRequest, ListMigrationEventsRequest, LookupUserRequest, Mode, PreflightReport,
    RunPreflightRequest, SetModeRequest, StartBackfillRequest,
};
use trickle_proto::migration::v1::{GetImportRequest, Import, ImportUsersRequest, UnsupportedUser};
use trickle_service_kit::rpc;
use trickle_service_kit::tls::TlsConfig;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdminCommand {
    /// Where the migration stands: mode, users migrated by source, legacy users remaining,
    /// failures in the last hour and day.
    Status,
    /// Switch the migration mode. `authoritative` ends the migration: the legacy store is no
    /// longer asked, and is refused while legacy users remain unless --force.
    SetMode {
        #[arg(value_parser = ["import", "authoritative"])]
        mode: String,
        /// Switch to authoritative even though legacy users would be left behind.
        #[arg(long)]
        force: bool,
    },
    /// The ledger of migrations, newest first.
    Events {
        /// How many events (at most 1000).
        #[arg(long, default_value_t = 20)]
        limit: i32,
        /// Continue from the token the previous page printed.
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Follow what happens to users, as other services see it: sign-ups, migrations, logins,
    /// password and email changes, blocks, deletions, second factors.
    ///
    /// Prints one event per line (JSON lines with --json), oldest first, then new ones as
    /// they happen, until interrupted or --count events were printed. To resume, pass the
    /// last position printed as --after.
    Watch {
        /// Start after this position (0: the oldest event the store keeps).
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// Only events of this kind (repeatable): signed_up, migrated, logged_in,
        /// password_changed, password_reset, email_changed, email_verified, blocked,
        /// unblocked, profile_updated, deleted, factor_enrolled, factor_removed.
        #[arg(long = "kind", value_name = "KIND")]
        kinds: Vec<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Everything Trickle knows about one email: in the store, in the legacy store, deleted.
    User { email: String },
    /// Import every legacy user who never logged in, with their legacy hashes.
    Backfill {
        #[command(subcommand)]
        action: BackfillAction,
    },
    /// A read-only census of the legacy store: what the migration will meet.
    ///
    /// Best run before the migration starts. Counts users by hash format and what can
    /// verify them, and finds the records that will not migrate cleanly (emails that
    /// collide case-insensitively, invalid emails, repeated legacy ids, hashes no password
    /// can match), with sample legacy ids. Writes nothing but the report, which
    /// `trickle admin status` shows afterwards.
    Preflight {
        /// Users per page read from the legacy store.
        #[arg(long, default_value_t = 1000)]
        batch_size: i32,
        /// Sample legacy ids kept per finding (at most 1000).
        #[arg(long, default_value_t = 10)]
        samples: i32,
        /// Show sample emails as well. Off by default, since reports end up in tickets.
        #[arg(long)]
        show_emails: bool,
        /// Read an export file here instead of the legacy store (no service is called).
        #[arg(long, requires = "format")]
        file: Option<std::path::PathBuf>,
        /// The file's format (with --file).
        #[arg(long, value_enum)]
        format: Option<ImportFormat>,
        #[command(flatten)]
        firebase: FirebaseArgs,
    },
    /// Import the users of another identity provider's export file, with their hashes.
    ///
    /// Each record goes into the store the way the backfill puts legacy users there: with
    /// their hash (verified by the store at their first login, then upgraded to argon2id),
    /// profile, metadata, blocked flag and TOTP factor. Users the store already has (by
    /// legacy id or email) and deleted ones are skipped and counted, so running the same
    /// file again is safe; an import broken off resumes where it stopped when run again.
    Import {
        /// The file's format.
        #[arg(long, value_enum)]
        format: ImportFormat,
        /// The export file.
        file: std::path::PathBuf,
        /// Read and check every record and print what an import would meet (the preflight
        /// report of the file); write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Users per page sent to the store (at most 2500; a page is also cut at 2 MiB).
        #[arg(long, default_value_t = 2500)]
        batch_size: usize,
        /// Names the import, to resume it (default: the format and the file's SHA-256).
        #[arg(long)]
        import_id: Option<String>,
        #[command(flatten)]
        firebase: FirebaseArgs,
    },
}

/// A Firebase project's password hash parameters (Firebase console: Authentication → Users →
/// ⋮ → Password hash parameters), named as `firebase auth:import` names them.
#[derive(Clone, Default, clap::Args)]
pub struct FirebaseArgs {
    /// The hash algorithm (default SCRYPT, the only one a Firebase export holds; the others
    /// are for files written for `firebase auth:import`, with the same flags).
    #[arg(long, value_enum, ignore_case = true)]
    pub hash_algo: Option<FirebaseAlgorithm>,
    /// base64_signer_key (a secret of the project), or the HMAC key for HMAC_* (base64).
    #[arg(long, env = "TRICKLE_FIREBASE_HASH_KEY", hide_env_values = true)]
    pub hash_key: Option<String>,
    /// base64_salt_separator (appended to every salt).
    #[arg(long)]
    pub salt_separator: Option<String>,
    /// rounds (SCRYPT; PBKDF_SHA1 and PBKDF2_SHA256; 1 for MD5 and SHA*).
    #[arg(long)]
    pub rounds: Option<u32>,
    /// mem_cost (SCRYPT), or N (STANDARD_SCRYPT).
    #[arg(long)]
    pub mem_cost: Option<u32>,
    /// STANDARD_SCRYPT's r.
    #[arg(long)]
    pub block_size: Option<u32>,
    /// STANDARD_SCRYPT's p.
    #[arg(long)]
    pub parallelization: Option<u32>,
    /// STANDARD_SCRYPT's derived key length in bytes.
    #[arg(long)]
    pub dk_len: Option<u32>,
    /// What digests and HMACs were computed over (required for MD5, SHA*, HMAC_*).
    #[arg(long, value_enum, ignore_case = true)]
    pub hash_input_order: Option<HashInputOrder>,
}

impl std::fmt::Debug for FirebaseArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirebaseArgs")
            .field("hash_algo", &self.hash_algo)
            .field("hash_key", &self.hash_key.as_ref().map(|_| "<redacted>"))
            .field("salt_separator", &self.salt_separator)
            .field("rounds", &self.rounds)
            .field("mem_cost", &self.mem_cost)
            .field("block_size", &self.block_size)
            .field("parallelization", &self.parallelization)
            .field("dk_len", &self.dk_len)
            .field("hash_input_order", &self.hash_input_order)
            .finish()
    }
}

impl FirebaseArgs {
    /// The file options: the Firebase parameters when all four are given; some but not all
    /// is a mistake worth stopping for.
    fn file_options(&self, format: ImportFormat) -> anyhow::Result<FileOptions> {
        let given = [
            self.hash_key.is_some(),
            self.salt_separator.is_some(),
            self.rounds.is_some(),
            self.mem_cost.is_some(),
        ];
        let others = [
            ("--hash-algo", self.hash_algo.is_some()),
            ("--block-size", self.block_size.is_some()),
            ("--parallelization", self.parallelization.is_some()),
            ("--dk-len", self.dk_len.is_some()),
            ("--hash-input-order", self.hash_input_order.is_some()),
        ];
        if format != ImportFormat::Firebase {
            if given.iter().any(|g| *g) || others.iter().any(|(_, g)| *g) {
                anyhow::bail!(
                    "--hash-algo, --hash-key, --salt-separator, --rounds, --mem-cost and the \
                     other hash flags are for --format firebase"
                );
            }
            return Ok(FileOptions::default());
        }
        let algorithm = self.hash_algo.unwrap_or_default();
        if algorithm != FirebaseAlgorithm::Scrypt {
            return self.other_algorithm(algorithm).map(|params| FileOptions {
                firebase: Some(params),
            });
        }
        if let Some((flag, _)) = others.iter().skip(1).find(|(_, g)| *g) {
            anyhow::bail!("{flag} is not used by --hash-algo SCRYPT");
        }
        let (Some(hash_key), Some(salt_separator), Some(rounds), Some(mem_cost)) = (
            self.hash_key.clone(),
            self.salt_separator.clone(),
            self.rounds,
            self.mem_cost,
        ) else {
            if given.iter().any(|g| *g) {
                anyhow::bail!(
                    "give all four of --hash-key, --salt-separator, --rounds and --mem-cost (the project's password hash parameters)"
                );
            }
            // Without them every hash is listed as unusable: a census still says who is there.
            return Ok(FileOptions::default());
        };
        if !(1..=8).contains(&rounds) || !(1..=14).contains(&mem_cost) {
            anyhow::bail!("--rounds must be 1 to 8 and --mem-cost 1 to 14, as Firebase allows");
        }
        Ok(FileOptions {
            firebase: Some(FirebaseHashParams {
                hash_key,
                salt_separator,
                rounds,
                mem_cost,
                ..FirebaseHashParams::default()
            }),
        })
    }

    /// The parameters of an algorithm other than SCRYPT: each one's flags required, any
    /// other refused (a flag that does nothing is a misunderstanding worth stopping for).
    fn other_algorithm(&self, algorithm: FirebaseAlgorithm) -> anyhow::Result<FirebaseHashParams> {
        use FirebaseAlgorithm as A;
        let name = clap::ValueEnum::to_possible_value(&algorithm)
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default();
        let hmac = matches!(
            algorithm,
            A::HmacSha512 | A::HmacSha256 | A::HmacSha1 | A::HmacMd5
        );
        let digest = matches!(algorithm, A::Md5 | A::Sha1 | A::Sha256 | A::Sha512);
        let pbkdf2 = matches!(algorithm, A::PbkdfSha1 | A::Pbkdf2Sha256);
        let standard = algorithm == A::StandardScrypt;
        for (flag, given, used) in [
            ("--hash-key", self.hash_key.is_some(), hmac),
            ("--rounds", self.rounds.is_some(), digest || pbkdf2),
            ("--mem-cost", self.mem_cost.is_some(), standard),
            ("--block-size", self.block_size.is_some(), standard),
            (
                "--parallelization",
                self.parallelization.is_some(),
                standard,
            ),
            ("--dk-len", self.dk_len.is_some(), standard),
            (
                "--hash-input-order",
                self.hash_input_order.is_some(),
                hmac || digest,
            ),
        ] {
            match (given, used) {
                (true, false) => anyhow::bail!("{flag} is not used by --hash-algo {name}"),
                (false, true) => anyhow::bail!(
                    "--hash-algo {name} needs {flag}, as given to `firebase auth:import`{}",
                    if flag == "--hash-input-order" {
                        " (SALT_FIRST or PASSWORD_FIRST: Trickle does not guess it)"
                    } else {
                        ""
                    }
                ),
                _ => {}
            }
        }
        let rounds = self.rounds.unwrap_or_default();
        if digest && rounds != 1 {
            anyhow::bail!(
                "--rounds {rounds} with {name}: only single digests (--rounds 1) are imported; \
                 Firebase does not document how more rounds chain, and a guess would lock \
                 every user out"
            );
        }
        if pbkdf2 && !(1..=10_000_000).contains(&rounds) {
            anyhow::bail!("--rounds must be between 1 and 10000000 for {name}");
        }
        let n = self.mem_cost.unwrap_or_default();
        if standard && (n < 2 || !n.is_power_of_two()) {
            anyhow::bail!("--mem-cost (scrypt's N) must be a power of two for STANDARD_SCRYPT");
        }
        Ok(FirebaseHashParams {
            algorithm,
            hash_key: self.hash_key.clone().unwrap_or_default(),
            salt_separator: self.salt_separator.clone().unwrap_or_default(),
            rounds,
            mem_cost: n,
            block_size: self.block_size.unwrap_or_default(),
            parallelization: self.parallelization.unwrap_or_default(),
            dk_len: self.dk_len.unwrap_or_default(),
            input_order: self.hash_input_order,
        })
    }
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum BackfillAction {
    /// Start a backfill (or resume the last one that did not complete) and follow it with a
    /// progress bar until it ends.
    Start {
        /// Users per batch (one bulk insert each).
        #[arg(long, default_value_t = 1000)]
        batch_size: i32,
        /// Return at once instead of following the progress.
        #[arg(long)]
        detach: bool,
    },
    /// A backfill's progress (the latest by default).
    Status {
        #[arg(long, default_value = "")]
        job_id: String,
    },
    /// Stop the running backfill after its current batch (start resumes it).
    Cancel {
        #[arg(long, default_value = "")]
        job_id: String,
    },
}

fn backfill_state(state: i32) -> &'static str {
    match BackfillState::try_from(state) {
        Ok(BackfillState::Running) => "running",
        Ok(BackfillState::Completed) => "completed",
        Ok(BackfillState::Cancelled) => "cancelled",
        Ok(BackfillState::Failed) => "failed",
        _ => "unknown",
    }
}

fn backfill_json(b: &Backfill) -> serde_json::Value {
    json!({
        "job_id": b.job_id, "state": backfill_state(b.state), "batch_size": b.batch_size,
        "processed": b.processed, "imported": b.imported, "skipped_existing": b.skipped_existing,
        "skipped_tombstoned": b.skipped_tombstoned, "unsupported": b.unsupported,
        "unsupported_users": b.unsupported_users.iter().map(|u| json!({"legacy_id": u.legacy_id, "reason": u.reason})).collect::<Vec<_>>(),
        "legacy_users_total": b.legacy_users_total, "users_per_second": b.users_per_second,
        "started_at": time(b.started_at.as_ref()), "finished_at": b.finished_at.as_ref().map(|t| time(Some(t))),
        "error": (!b.error.is_empty()).then_some(&b.error),
    })
}

fn backfill_table(b: &Backfill) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<22}{}", "backfill", b.job_id);
    let _ = writeln!(out, "{:<22}{}", "state", backfill_state(b.state));
    let total = b
        .legacy_users_total
        .map_or_else(|| "?".to_owned(), |t| t.to_string());
    let _ = writeln!(
        out,
        "{:<22}{} of {}",
        "legacy users read", b.processed, total
    );
    let _ = writeln!(out, "{:<22}{}", "imported", b.imported);
    let _ = writeln!(out, "{:<22}{}", "already in the store", b.skipped_existing);
    let _ = writeln!(out, "{:<22}{}", "deleted (skipped)", b.skipped_tombstoned);
    let _ = writeln!(out, "{:<22}{}", "unsupported hashes", b.unsupported);
    for u in b.unsupported_users.iter().take(10) {
        let _ = writeln!(out, "  legacy id {:<12} {}", u.legacy_id, u.reason);
    }
    if b.unsupported > 10 {
        let _ = writeln!(out, "  … (--json lists up to 1000)");
    }
    let _ = writeln!(out, "{:<22}{:.0} users/s", "rate", b.users_per_second);
    let _ = writeln!(out, "{:<22}{}", "started", time(b.started_at.as_ref()));
    if let Some(finished) = &b.finished_at {
        let _ = writeln!(out, "{:<22}{}", "finished", time(Some(finished)));
    }
    if !b.error.is_empty() {
        let _ = writeln!(out, "{:<22}{}", "error", b.error);
    }
    out
}

/// Follow a running backfill: a progress bar with rate and ETA on a terminal, a plain line
/// every few seconds otherwise (logs, CI).
async fn follow(
    client: &mut MigrationAdminClient<Channel>,
    job_id: &str,
) -> anyhow::Result<Backfill> {
    let terminal = std::io::stderr().is_terminal();
    let mut last_line = std::time::Instant::now();
    loop {
        let b = client
            .get_backfill(GetBackfillRequest {
                job_id: job_id.to_owned(),
            })
            .await
            .map_err(explain)?
            .into_inner()
            .backfill
            .unwrap_or_default();
        let done = backfill_state(b.state) != "running";
        let total = b.legacy_users_total.filter(|t| *t > 0);
        let eta = match (total, b.users_per_second) {
            (Some(total), rate) if rate > 0.0 => {
                format!("ETA {:.0}s", ((total - b.processed).max(0) as f64) / rate)
            }
            _ => "ETA ?".into(),
        };
        if terminal {
            let fraction = total.map_or(0.0, |t| (b.processed as f64 / t as f64).min(1.0));
            let filled = (fraction * 30.0) as usize;
            eprint!(
                "\r[{}{}] {:>3.0}% {}/{} · {:.0} users/s · {}   ",
                "#".repeat(filled),
                " ".repeat(30 - filled),
                fraction * 100.0,
                b.processed,
                total.map_or_else(|| "?".to_owned(), |t| t.to_string()),
                b.users_per_second,
                eta
            );
            if done {
                eprintln!();
            }
        } else if done || last_line.elapsed() >= std::time::Duration::from_secs(5) {
            eprintln!(
                "backfill {}: {} · {} read · {} imported · {:.0} users/s · {}",
                b.job_id,
                backfill_state(b.state),
                b.processed,
                b.imported,
                b.users_per_second,
                eta
            );
            last_line = std::time::Instant::now();
        }
        if done {
            return Ok(b);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Who can verify a hash of this class, for people.
fn verified_by(status: i32) -> &'static str {
    match HashStatus::try_from(status) {
        Ok(HashStatus::Portable) => "the store",
        Ok(HashStatus::ConnectorOnly) => "the connector only",
        Ok(HashStatus::Empty) => "nothing: empty",
        Ok(HashStatus::Locked) => "nothing: locked",
        Ok(HashStatus::OverCostLimits) => "nothing: over the cost caps",
        Ok(HashStatus::UnreadableFactor) => "nothing: unreadable second factor",
        _ => "nothing: unknown format",
    }
}

fn status_name(status: i32) -> &'static str {
    match HashStatus::try_from(status) {
        Ok(HashStatus::Portable) => "store_verifiable",
        Ok(HashStatus::ConnectorOnly) => "connector_only",
        Ok(HashStatus::Empty) => "empty",
        Ok(HashStatus::Locked) => "locked",
        Ok(HashStatus::OverCostLimits) => "over_cost_limits",
        Ok(HashStatus::UnreadableFactor) => "unreadable_second_factor",
        _ => "unknown_format",
    }
}

fn preflight_json(r: &PreflightReport) -> serde_json::Value {
    json!({
        "users": r.users,
        "store_verifiable": r.store_verifiable,
        "connector_only": r.connector_only,
        "unusable": r.unusable,
        "with_second_factor": r.with_second_factor,
        "blocked": r.blocked,
        "hashes": r.hashes.iter().map(|h| json!({
            "scheme": (!h.scheme.is_empty()).then_some(&h.scheme),
            "status": status_name(h.status),
            "users": h.users,
        })).collect::<Vec<_>>(),
        "findings": r.findings.iter().map(|f| {
            let mut finding = json!({
                "kind": f.kind, "users": f.users, "description": f.description,
                "sample_legacy_ids": f.sample_legacy_ids,
            });
            if !f.sample_emails.is_empty() {
                finding["sample_emails"] = json!(f.sample_emails);
            }
            finding
        }).collect::<Vec<_>>(),
        "started_at": r.started_at.as_ref().map(|t| time(Some(t))),
        "finished_at": r.finished_at.as_ref().map(|t| time(Some(t))),
    })
}

fn preflight_table(r: &PreflightReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<32}{:>10}", "legacy users", r.users);
    for (what, n, meaning) in [
        (
            "  the store can verify",
            r.store_verifiable,
            "the backfill can carry them",
        ),
        (
            "  only the connector verifies",
            r.connector_only,
            "they migrate on login only",
        ),
        (
            "  no password can match",
            r.unusable,
            "only a password reset brings them over",
        ),
        ("  with a second factor", r.with_second_factor, ""),
        ("  blocked in the legacy app", r.blocked, ""),
    ] {
        let _ = writeln!(
            out,
            "{what:<32}{n:>10}{}",
            if meaning.is_empty() || n == 0 {
                String::new()
            } else {
                format!("   ({meaning})")
            }
        );
    }
    let _ = writeln!(out, "\n{:<32}{:>10}   verified by", "hash format", "users");
    for h in &r.hashes {
        let scheme = if h.scheme.is_empty() { "-" } else { &h.scheme };
        let _ = writeln!(
            out,
            "  {scheme:<30}{:>10}   {}",
            h.users,
            verified_by(h.status)
        );
    }
    let _ = writeln!(
        out,
        "\n{:<32}{:>10}   sample legacy ids",
        "finding", "users"
    );
    if r.findings.is_empty() {
        let _ = writeln!(out, "  none: every user can migrate as they are");
    }
    for f in &r.findings {
        let _ = writeln!(
            out,
            "  {:<30}{:>10}   {}",
            f.kind,
            f.users,
            f.sample_legacy_ids.join(", ")
        );
        if !f.sample_emails.is_empty() {
            let _ = writeln!(out, "  {:<43}{}", "", f.sample_emails.join(", "));
        }
        let _ = writeln!(out, "    {}", f.description);
    }
    let _ = writeln!(
        out,
        "\nfinished {} (started {})",
        time(r.finished_at.as_ref()),
        time(r.started_at.as_ref())
    );
    out
}

/// Follow a census: a progress bar on a terminal, a line every few seconds otherwise.
async fn run_preflight(
    client: &mut MigrationAdminClient<Channel>,
    request: RunPreflightRequest,
) -> anyhow::Result<PreflightReport> {
    let mut stream = client
        .run_preflight(request)
        .await
        .map_err(explain)?
        .into_inner();
    let terminal = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let mut last_line = started;
    while let Some(message) = stream.message().await.map_err(explain)? {
        if let Some(report) = message.report {
            if terminal {
                eprintln!();
            }
            return Ok(report);
        }
        let total = message.legacy_users_total.filter(|t| *t > 0);
        let rate = message.users_read as f64 / started.elapsed().as_secs_f64().max(0.001);
        if terminal {
            let fraction = total.map_or(0.0, |t| (message.users_read as f64 / t as f64).min(1.0));
            let filled = (fraction * 30.0) as usize;
            eprint!(
                "\r[{}{}] {:>3.0}% {}/{} users read · {rate:.0} users/s   ",
                "#".repeat(filled),
                " ".repeat(30 - filled),
                fraction * 100.0,
                message.users_read,
                total.map_or_else(|| "?".to_owned(), |t| t.to_string()),
            );
        } else if last_line.elapsed() >= std::time::Duration::from_secs(5) {
            eprintln!(
                "preflight: {} users read · {rate:.0} users/s",
                message.users_read
            );
            last_line = std::time::Instant::now();
        }
    }
    anyhow::bail!("the coordinator ended the preflight without a report")
}

/// A census of an export file, done here: nothing is sent anywhere.
fn file_preflight(
    path: &std::path::Path,
    format: ImportFormat,
    file_options: &FileOptions,
    options: CensusOptions,
) -> anyhow::Result<PreflightReport> {
    let started = chrono::Utc::now();
    let mut census = Census::new(options);
    read_file(path, format, file_options, |record, _| {
        match record {
            Ok(record) => census.observe(&record),
            Err(Unreadable { legacy_id, .. }) => census.observe_unreadable(&legacy_id),
        }
        true
    })?;
    let mut report = census.report();
    let stamp = |t: chrono::DateTime<chrono::Utc>| prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    };
    report.started_at = Some(stamp(started));
    report.finished_at = Some(stamp(chrono::Utc::now()));
    Ok(report)
}

/// `format:sha256` of the file: the same file names the same import, so a second run resumes.
fn file_import_id(path: &std::path::Path, format: ImportFormat) -> anyhow::Result<String> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    let mut digest = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        digest.update(&buffer[..n]);
    }
    let hex: String = digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("{}:{hex}", format.as_str()))
}

fn import_json(i: &Import) -> serde_json::Value {
    json!({
        "import_id": i.import_id, "format": i.format, "state": backfill_state(i.state),
        "records": i.next_position, "imported": i.imported, "skipped_existing": i.skipped_existing,
        "skipped_tombstoned": i.skipped_tombstoned, "skipped_already_done": i.skipped_already_done,
        "unsupported": i.unsupported,
        "unsupported_users": i.unsupported_users.iter().map(|u| json!({"legacy_id": u.legacy_id, "reason": u.reason})).collect::<Vec<_>>(),
        "users_per_second": i.users_per_second,
        "started_at": time(i.started_at.as_ref()), "finished_at": i.finished_at.as_ref().map(|t| time(Some(t))),
        "error": (!i.error.is_empty()).then_some(&i.error),
    })
}

fn import_table(i: &Import) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<26}{}", "import", i.import_id);
    let _ = writeln!(out, "{:<26}{}", "state", backfill_state(i.state));
    let _ = writeln!(out, "{:<26}{}", "records read", i.next_position);
    let _ = writeln!(out, "{:<26}{}", "imported", i.imported);
    let _ = writeln!(out, "{:<26}{}", "already in the store", i.skipped_existing);
    let _ = writeln!(out, "{:<26}{}", "deleted (skipped)", i.skipped_tombstoned);
    if i.skipped_already_done > 0 {
        let _ = writeln!(
            out,
            "{:<26}{}",
            "done by an earlier run", i.skipped_already_done
        );
    }
    let _ = writeln!(out, "{:<26}{}", "not imported", i.unsupported);
    for u in i.unsupported_users.iter().take(10) {
        let _ = writeln!(out, "  {:<24}{}", u.legacy_id, u.reason);
    }
    if i.unsupported > 10 {
        let _ = writeln!(out, "  … (--json lists up to 1000)");
    }
    let _ = writeln!(out, "{:<26}{:.0} records/s", "rate", i.users_per_second);
    if !i.error.is_empty() {
        let _ = writeln!(out, "{:<26}{}", "error", i.error);
    }
    out
}

/// A page of an import is sent once it holds this much (encoded), whatever --batch-size says.
const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// Stream a file to the coordinator a page at a time, with a progress bar on a terminal.
async fn run_import(
    client: &mut MigrationAdminClient<Channel>,
    path: &std::path::Path,
    format: ImportFormat,
    file_options: FileOptions,
    batch_size: usize,
    import_id: String,
) -> anyhow::Result<Import> {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let (pages, receiver) = tokio::sync::mpsc::channel::<ImportUsersRequest>(4);
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let read_bytes = progress.clone();
    let reader_path = path.to_owned();
    let reader_id = import_id.clone();
    // The file is read on a thread of its own: parsing is blocking work, and the channel
    // keeps at most a few pages ahead of the coordinator.
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let new_page = |first_position| ImportUsersRequest {
            import_id: reader_id.clone(),
            format: format.as_str().to_owned(),
            first_position,
            users: Vec::new(),
            unsupported: Vec::new(),
            last_page: false,
        };
        let mut page = new_page(0);
        let mut page_bytes = 0usize;
        let mut position = 0i64;
        let mut sent_ok = true;
        read_file(&reader_path, format, &file_options, |record, bytes| {
            read_bytes.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
            page_bytes += match record {
                Ok(user) => {
                    let size = prost::Message::encoded_len(&user);
                    page.users.push(user);
                    size
                }
                Err(Unreadable { legacy_id, reason }) => {
                    let unsupported = UnsupportedUser { legacy_id, reason };
                    let size = prost::Message::encoded_len(&unsupported);
                    page.unsupported.push(unsupported);
                    size
                }
            };
            position += 1;
            // Each page is one store transaction: big pages mean fewer commits. The byte
            // cap keeps a page of users with large metadata under the 4 MiB message limit.
            if page.users.len() + page.unsupported.len() >= batch_size
                || page_bytes >= MAX_PAGE_BYTES
            {
                page_bytes = 0;
                let full = std::mem::replace(&mut page, new_page(position));
                sent_ok = pages.blocking_send(full).is_ok();
            }
            sent_ok
        })?;
        // The last page goes even when empty: it says the file was read to its end.
        if sent_ok {
            page.last_page = true;
            let _ = pages.blocking_send(page);
        }
        Ok(())
    });
    let terminal = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let ticker = tokio::spawn(async move {
        let mut last_line = std::time::Instant::now();
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let done = progress.load(std::sync::atomic::Ordering::Relaxed);
            let fraction = if size > 0 {
                (done as f64 / size as f64).min(1.0)
            } else {
                0.0
            };
            if terminal {
                let filled = (fraction * 30.0) as usize;
                eprint!(
                    "\r[{}{}] {:>3.0}% of the file · {:.0}s   ",
                    "#".repeat(filled),
                    " ".repeat(30 - filled),
                    fraction * 100.0,
                    started.elapsed().as_secs_f64()
                );
            } else if last_line.elapsed() >= std::time::Duration::from_secs(5) {
                eprintln!("import: {:.0}% of the file read", fraction * 100.0);
                last_line = std::time::Instant::now();
            }
        }
    });
    let answer = client
        .import_users(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await;
    ticker.abort();
    if terminal {
        eprintln!();
    }
    let read = reader
        .await
        .map_err(|e| anyhow::anyhow!("the file reader failed: {e}"))?;
    let import = answer
        .map_err(explain)?
        .into_inner()
        .import
        .unwrap_or_default();
    read?;
    Ok(import)
}

fn mode_name(mode: i32) -> &'static str {
    match Mode::try_from(mode) {
        Ok(Mode::Import) => "import",
        Ok(Mode::Authoritative) => "authoritative",
        _ => "unknown",
    }
}

fn source_name(source: i32) -> &'static str {
    match auth::Source::try_from(source) {
        Ok(auth::Source::Signup) => "signup",
        Ok(auth::Source::LoginMigration) => "login",
        Ok(auth::Source::ResetMigration) => "reset",
        Ok(auth::Source::Backfill) => "backfill",
        _ => "unknown",
    }
}

fn time(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".into())
}

/// `trickle admin watch`: print events as they come (the stream never ends on its own).
async fn watch(
    channel: Channel,
    after: i64,
    kinds: &[String],
    count: Option<u64>,
    as_json: bool,
) -> anyhow::Result<String> {
    use std::io::Write as _;
    use trickle_proto::events::v1::WatchEventsRequest;
    use trickle_proto::events::v1::event_feed_client::EventFeedClient;
    let mut wanted = Vec::new();
    for name in kinds {
        match trickle_proto::events::v1::EventKind::from_type_name(name) {
            Some(kind) => wanted.push(kind as i32),
            None => {
                anyhow::bail!("{name:?} is not an event kind (see `trickle admin watch --help`)")
            }
        }
    }
    let mut stream = EventFeedClient::new(channel)
        .watch_events(WatchEventsRequest {
            after_position: after,
            kinds: wanted,
        })
        .await
        .map_err(explain)?
        .into_inner();
    let mut printed = 0;
    let mut stdout = std::io::stdout().lock();
    if !as_json {
        writeln!(
            stdout,
            "{:>9}  {:<22}{:<24}{:<38}{:<12}details",
            "position", "time", "type", "user_id", "legacy_id"
        )?;
    }
    while count.is_none_or(|count| printed < count) {
        let Some(response) = stream.message().await.map_err(explain)? else {
            break;
        };
        let Some(event) = response.event else {
            continue;
        };
        if as_json {
            writeln!(
                stdout,
                "{}",
                trickle_migration_coordinator::webhook::event_json(&event)
            )?;
        } else {
            let mut details = Vec::new();
            let json = trickle_migration_coordinator::webhook::event_json(&event);
            for key in [
                "email",
                "source",
                "password_rehashed",
                "second_factor",
                "factor_kind",
                "profile_fields",
            ] {
                if let Some(value) = json.get(key) {
                    details.push(format!("{key}={value}"));
                }
            }
            writeln!(
                stdout,
                "{:>9}  {:<22}{:<24}{:<38}{:<12}{}",
                event.position,
                time(event.occurred_at.as_ref()),
                event.kind().type_name(),
                event.user_id,
                if event.legacy_id.is_empty() {
                    "-"
                } else {
                    &event.legacy_id
                },
                details.join(" ")
            )?;
        }
        stdout.flush()?;
        printed += 1;
    }
    Ok(String::new())
}

/// A gRPC failure as an operator should read it.
fn explain(status: tonic::Status) -> anyhow::Error {
    let reason = rpc::reason_of(&status).unwrap_or_else(|| "-".into());
    let mut message = format!(
        "{} ({:?}, reason {reason})",
        status.message(),
        status.code()
    );
    for v in rpc::field_violations(&status) {
        let _ = write!(message, "\n  {}: {}", v.field, v.description);
    }
    anyhow::anyhow!(message)
}

/// Commands that read only a local file: no service is called. Anything else comes back.
async fn run_local(
    command: AdminCommand,
    as_json: bool,
) -> Result<anyhow::Result<String>, AdminCommand> {
    let run = async move |command| -> anyhow::Result<String> {
        match command {
            AdminCommand::Preflight {
                file: Some(file),
                format: Some(format),
                samples,
                show_emails,
                firebase,
                ..
            } => {
                let options = CensusOptions {
                    sample_size: usize::try_from(samples.clamp(1, 1000)).unwrap_or(10),
                    show_emails,
                };
                let file_options = firebase.file_options(format)?;
                let report = tokio::task::spawn_blocking(move || {
                    file_preflight(&file, format, &file_options, options)
                })
                .await??;
                if as_json {
                    return Ok(preflight_json(&report).to_string());
                }
                Ok(preflight_table(&report))
            }
            AdminCommand::Import {
                format,
                file,
                dry_run: true,
                firebase,
                ..
            } => {
                let options = CensusOptions {
                    sample_size: 10,
                    show_emails: false,
                };
                let file_options = firebase.file_options(format)?;
                let report = tokio::task::spawn_blocking(move || {
                    file_preflight(&file, format, &file_options, options)
                })
                .await??;
                if as_json {
                    return Ok(json!({"dry_run": true, "would_import_at_most": report.store_verifiable, "report": preflight_json(&report)}).to_string());
                }
                Ok(format!(
                    "dry run: nothing was written. At most {} users would be imported (fewer if the store already has some).\n\n{}",
                    report.store_verifiable,
                    preflight_table(&report)
                ))
            }
            _ => unreachable!("only local commands come here"),
        }
    };
    match command {
        AdminCommand::Preflight {
            file: Some(_),
            format: Some(_),
            ..
        }
        | AdminCommand::Import { dry_run: true, .. } => Ok(run(command).await),
        other => Err(other),
    }
}

/// Run one admin command against the coordinator at `address`; returns what to print.
pub async fn run(address: &str, command: AdminCommand, as_json: bool) -> anyhow::Result<String> {
    run_with_tls(address, &TlsConfig::default(), command, as_json).await
}

/// [`run`], presenting a client certificate when the coordinator requires one.
pub async fn run_with_tls(
    address: &str,
    tls: &TlsConfig,
    command: AdminCommand,
    as_json: bool,
) -> anyhow::Result<String> {
    let command = match run_local(command, as_json).await {
        Ok(printed) => return printed,
        Err(command) => command,
    };
    let channel =
        crate::connect::channel(address, tls, "the migration coordinator (use --addr)").await?;
    // Channels are cheap handles to one connection.
    let mut client = MigrationAdminClient::new(channel.clone());
    match command {
        AdminCommand::Watch {
            after,
            kinds,
            count,
        } => watch(channel, after, &kinds, count, as_json).await,
        AdminCommand::Status => {
            let s = client
                .get_status(GetStatusRequest {})
                .await
                .map_err(explain)?
                .into_inner();
            let failures = |rows: &[FailureCount]| -> serde_json::Value {
                rows.iter()
                    .map(|f| (f.reason.clone(), json!(f.count)))
                    .collect::<serde_json::Map<_, _>>()
                    .into()
            };
            if as_json {
                return Ok(json!({
                    "mode": mode_name(s.mode),
                    "migrated": {"login": s.migrated_on_login, "reset": s.migrated_on_reset, "backfill": s.migrated_by_backfill},
                    "signed_up": s.signed_up,
                    "tombstoned_legacy_users": s.tombstoned_legacy_users,
                    "legacy_users_total": s.legacy_users_total,
                    "legacy_users_remaining": s.legacy_users_remaining,
                    "legacy_count_error": (!s.legacy_count_error.is_empty()).then_some(&s.legacy_count_error),
                    "failures_last_hour": failures(&s.failures_last_hour),
                    "failures_last_day": failures(&s.failures_last_day),
                    "last_migration_at": s.last_migration_at.as_ref().map(|t| time(Some(t))),
                    "last_preflight": s.last_preflight.as_ref().map(preflight_json),
                })
                .to_string());
            }
            let count = |n: Option<i64>| n.map_or_else(|| "unknown".to_owned(), |n| n.to_string());
            let mut out = String::new();
            let _ = writeln!(out, "{:<28}{}", "mode", mode_name(s.mode));
            let _ = writeln!(out, "{:<28}{}", "migrated on login", s.migrated_on_login);
            let _ = writeln!(
                out,
                "{:<28}{}",
                "migrated on password reset", s.migrated_on_reset
            );
            let _ = writeln!(
                out,
                "{:<28}{}",
                "migrated by backfill", s.migrated_by_backfill
            );
            let _ = writeln!(out, "{:<28}{}", "signed up in Trickle", s.signed_up);
            let _ = writeln!(
                out,
                "{:<28}{}",
                "deleted (legacy users)", s.tombstoned_legacy_users
            );
            let _ = writeln!(out, "{:<28}{}", "legacy users", count(s.legacy_users_total));
            let _ = writeln!(
                out,
                "{:<28}{}",
                "legacy users remaining",
                count(s.legacy_users_remaining)
            );
            if !s.legacy_count_error.is_empty() {
                let _ = writeln!(out, "{:<28}({})", "", s.legacy_count_error);
            }
            let _ = writeln!(
                out,
                "{:<28}{}",
                "last migration",
                time(s.last_migration_at.as_ref())
            );
            let _ = writeln!(out, "failed migrations            last hour   last day");
            if s.failures_last_day.is_empty() {
                let _ = writeln!(out, "  none");
            }
            for day in &s.failures_last_day {
                let hour = s
                    .failures_last_hour
                    .iter()
                    .find(|h| h.reason == day.reason)
                    .map_or(0, |h| h.count);
                let _ = writeln!(out, "  {:<26}{:>9}   {:>8}", day.reason, hour, day.count);
            }
            match &s.last_preflight {
                Some(p) => {
                    let _ = writeln!(
                        out,
                        "{:<28}{}: {} users, {} no password can match, {} findings \
                         (trickle admin preflight --json for the details)",
                        "last preflight",
                        time(p.finished_at.as_ref()),
                        p.users,
                        p.unusable,
                        p.findings.iter().map(|f| f.users).sum::<i64>()
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "{:<28}never run (trickle admin preflight)",
                        "last preflight"
                    );
                }
            }
            Ok(out)
        }
        AdminCommand::SetMode { mode, force } => {
            let wanted = if mode == "authoritative" {
                Mode::Authoritative
            } else {
                Mode::Import
            };
            let answer = client
                .set_mode(SetModeRequest {
                    mode: wanted.into(),
                    force,
                })
                .await
                .map_err(explain)?
                .into_inner();
            if as_json {
                return Ok(json!({"mode": mode_name(answer.mode), "legacy_users_remaining": answer.legacy_users_remaining}).to_string());
            }
            let mut out = format!("mode is now {}\n", mode_name(answer.mode));
            if let Some(left) = answer.legacy_users_remaining.filter(|n| *n > 0) {
                let _ = writeln!(
                    out,
                    "{left} legacy users were left behind and can no longer log in"
                );
            }
            Ok(out)
        }
        AdminCommand::Events { limit, page_token } => {
            let page = client
                .list_migration_events(ListMigrationEventsRequest {
                    page_size: limit,
                    page_token,
                })
                .await
                .map_err(explain)?
                .into_inner();
            if as_json {
                let events: Vec<_> = page
                    .events
                    .iter()
                    .map(|e| {
                        json!({"event_id": e.event_id, "user_id": e.user_id, "legacy_id": e.legacy_id,
                               "source": source_name(e.source), "occurred_at": time(e.occurred_at.as_ref())})
                    })
                    .collect();
                return Ok(
                    json!({"events": events, "next_page_token": page.next_page_token}).to_string(),
                );
            }
            let mut out = format!(
                "{:<22}{:<10}{:<38}{}\n",
                "time", "source", "user_id", "legacy_id"
            );
            for e in &page.events {
                let _ = writeln!(
                    out,
                    "{:<22}{:<10}{:<38}{}",
                    time(e.occurred_at.as_ref()),
                    source_name(e.source),
                    e.user_id,
                    e.legacy_id
                );
            }
            if page.events.is_empty() {
                out.push_str("no migrations yet\n");
            }
            if !page.next_page_token.is_empty() {
                let _ = writeln!(
                    out,
                    "more: trickle admin events --page-token {}",
                    page.next_page_token
                );
            }
            Ok(out)
        }
        AdminCommand::Backfill { action } => {
            let b = match action {
                BackfillAction::Start { batch_size, detach } => {
                    let started = client
                        .start_backfill(StartBackfillRequest { batch_size })
                        .await
                        .map_err(explain)?
                        .into_inner()
                        .backfill
                        .unwrap_or_default();
                    if detach {
                        started
                    } else {
                        follow(&mut client, &started.job_id).await?
                    }
                }
                BackfillAction::Status { job_id } => client
                    .get_backfill(GetBackfillRequest { job_id })
                    .await
                    .map_err(explain)?
                    .into_inner()
                    .backfill
                    .unwrap_or_default(),
                BackfillAction::Cancel { job_id } => client
                    .cancel_backfill(CancelBackfillRequest { job_id })
                    .await
                    .map_err(explain)?
                    .into_inner()
                    .backfill
                    .unwrap_or_default(),
            };
            if as_json {
                return Ok(backfill_json(&b).to_string());
            }
            Ok(backfill_table(&b))
        }
        AdminCommand::Import {
            format,
            file,
            // Dry runs were answered by run_local.
            dry_run: _,
            batch_size,
            import_id,
            firebase,
        } => {
            let file_options = firebase.file_options(format)?;
            if !(1..=2500).contains(&batch_size) {
                anyhow::bail!("--batch-size must be between 1 and 2500");
            }
            let import_id = match import_id {
                Some(id) => id,
                None => {
                    let path = file.clone();
                    tokio::task::spawn_blocking(move || file_import_id(&path, format)).await??
                }
            };
            if let Ok(earlier) = client
                .get_import(GetImportRequest {
                    import_id: import_id.clone(),
                })
                .await
                && let Some(earlier) = earlier.into_inner().import
                && backfill_state(earlier.state) != "completed"
            {
                eprintln!(
                    "resuming import {import_id} after record {} (an earlier run stopped there)",
                    earlier.next_position
                );
            }
            let import = run_import(
                &mut client,
                &file,
                format,
                file_options,
                batch_size,
                import_id,
            )
            .await?;
            if as_json {
                return Ok(import_json(&import).to_string());
            }
            Ok(import_table(&import))
        }
        AdminCommand::Preflight {
            batch_size,
            samples,
            show_emails,
            ..
        } => {
            let report = run_preflight(
                &mut client,
                RunPreflightRequest {
                    batch_size,
                    sample_size: samples,
                    show_emails,
                },
            )
            .await?;
            if as_json {
                return Ok(preflight_json(&report).to_string());
            }
            Ok(preflight_table(&report))
        }
        AdminCommand::User { email } => {
            let found = client
                .lookup_user(LookupUserRequest { email })
                .await
                .map_err(explain)?
                .into_inner();
            if as_json {
                let store = found.store_user.as_ref().map(|u| {
                    json!({"user_id": u.user_id, "email": u.email, "legacy_id": u.legacy_id,
                           "source": source_name(u.source), "email_verified": u.email_verified,
                           "created_at": time(u.created_at.as_ref()), "last_login_at": time(u.last_login_at.as_ref())})
                });
                let legacy = found
                    .legacy_user
                    .as_ref()
                    .map(|u| json!({"legacy_id": u.legacy_id, "email": u.email}));
                return Ok(json!({"mode": mode_name(found.mode), "store": store, "legacy": legacy,
                                 "tombstoned": found.tombstoned,
                                 "legacy_error": (!found.legacy_error.is_empty()).then_some(&found.legacy_error)})
                .to_string());
            }
            let mut out = String::new();
            match &found.store_user {
                Some(u) => {
                    let _ = writeln!(out, "in the store        yes");
                    let _ = writeln!(out, "  user_id           {}", u.user_id);
                    let _ = writeln!(
                        out,
                        "  email             {}{}",
                        u.email,
                        if u.email_verified { " (verified)" } else { "" }
                    );
                    let _ = writeln!(
                        out,
                        "  legacy_id         {}",
                        if u.legacy_id.is_empty() {
                            "-"
                        } else {
                            &u.legacy_id
                        }
                    );
                    let _ = writeln!(out, "  source            {}", source_name(u.source));
                    let _ = writeln!(out, "  created           {}", time(u.created_at.as_ref()));
                    let _ = writeln!(
                        out,
                        "  last login        {}",
                        time(u.last_login_at.as_ref())
                    );
                }
                None => {
                    let _ = writeln!(out, "in the store        no");
                }
            }
            let legacy = match (&found.legacy_user, found.tombstoned) {
                (Some(u), _) => format!("yes (legacy_id {})", u.legacy_id),
                (None, true) => "yes, but the user was deleted from the store (tombstone)".into(),
                (None, false) if !found.legacy_error.is_empty() => {
                    format!("unknown: {}", found.legacy_error)
                }
                (None, false) if found.mode == i32::from(Mode::Authoritative) => {
                    "not asked (mode is authoritative)".into()
                }
                (None, false) => "no".into(),
            };
            let _ = writeln!(out, "in the legacy store {legacy}");
            Ok(out)
        }
    }
}
