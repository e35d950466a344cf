//! `trickle`: one binary for every Trickle service, the laptop setup and a login client.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use trickle::{admin, bench, config, connect, dev, login, services};
use trickle_telemetry::LogFormat;

/// Trickle moves the users of a legacy user database into a new user store the first time
/// each of them logs in, without a password reset.
#[derive(Debug, Parser)]
#[command(name = "trickle", version, about, long_about = None)]
struct Cli {
    /// The TOML configuration file. Every key can also be set with TRICKLE_<SECTION>__<KEY>.
    #[arg(long, global = true, value_name = "FILE", env = "TRICKLE_CONFIG")]
    config: Option<PathBuf>,
    /// Log format: json, text, or auto (text on a terminal, json otherwise). Filter with RUST_LOG.
    #[arg(long, global = true, default_value = "auto", value_parser = ["auto", "json", "text"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one service (for Kubernetes: one Deployment per service).
    Serve {
        #[arg(value_enum)]
        service: services::Service,
    },
    /// Apply the schema migrations of the user-store and the coordinator, then exit (a
    /// Kubernetes Job before a rollout; the services also migrate when they start).
    Migrate,
    /// Run all four services on this machine with an embedded SQLite store and a demo legacy
    /// database (sections set in --config replace the embedded defaults).
    Dev {
        /// Where the embedded databases and the token signing key live.
        #[arg(long, default_value = "./trickle-data", value_name = "DIR")]
        data_dir: PathBuf,
    },
    /// Operate the migration: status, mode switch (cutover), the ledger, one user.
    Admin {
        /// The migration coordinator's operator address ([migration] admin_listen). In
        /// Kubernetes: `kubectl exec deploy/trickle-migration-coordinator -- trickle admin …`.
        #[arg(
            long,
            default_value = "http://127.0.0.1:50055",
            env = "TRICKLE_ADMIN_ADDR"
        )]
        addr: String,
        /// Print JSON instead of tables.
        #[arg(long, global = true)]
        json: bool,
        #[command(flatten)]
        tls: connect::ClientTlsArgs,
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// Log in through the public API and show the user, whether this login migrated them,
    /// and the token's claims. The password is read from a prompt or standard input.
    Login {
        email: String,
        /// The auth-frontend's address.
        #[arg(long, default_value = "http://127.0.0.1:50051", env = "TRICKLE_ADDR")]
        addr: String,
        #[command(flatten)]
        tls: connect::ClientTlsArgs,
    },
    /// Load a running Trickle through its public API (logins, first logins, sign-ups,
    /// token validation, user reads) and compare it with the password-hashing floor measured
    /// on this machine with the argon2 parameters of --config ([store] argon2).
    Bench(bench::BenchArgs),
    /// Generate a token signing key (PKCS#8 PEM, Ed25519) for a key rotation: add the file
    /// to the [tokens] keys_dir Secret, then point current_key at it (deploy/k8s/README.md).
    Keygen {
        /// Write the key to this file (created with mode 0600; refused if it exists)
        /// instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Generate a key that seals second-factor (TOTP) secrets at rest: 32 random bytes in
    /// base64. Give it to the store as `[store] factor_key = "ID:KEY"`
    /// (TRICKLE_STORE__FACTOR_KEY), or as a file named ID in `[store] factor_keys_dir`.
    GenFactorKey,
    /// Print the current TOTP code of a base32 secret, as an authenticator app would (for
    /// the `trickle dev` demo user with a second factor, and for tests). Reads the secret
    /// from standard input when it is not given.
    TotpCode { secret: Option<String> },
}

/// Logs and traces for a running service. The guard flushes traces when dropped.
fn init_telemetry(
    service_name: &str,
    format: &str,
) -> anyhow::Result<trickle_telemetry::TelemetryGuard> {
    let format = match format {
        "json" => LogFormat::Json,
        "text" => LogFormat::Text,
        _ => LogFormat::Auto,
    };
    trickle_telemetry::init(service_name, format).map_err(anyhow::Error::msg)
}

/// `trickle keygen`: a new signing key, and its kid on standard error.
fn keygen(out: Option<&std::path::Path>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let pem = trickle_auth_frontend::tokens::generate_signing_key_pem()?;
    let kid = trickle_auth_frontend::tokens::TokenIssuer::from_pem(
        &pem,
        "",
        "",
        std::time::Duration::from_secs(1),
    )?
    .current_kid()
    .to_owned();
    match out {
        Some(path) => {
            use std::io::Write as _;
            #[cfg(unix)]
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            options.mode(0o600);
            let mut file = options
                .open(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            file.write_all(pem.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote a new signing key to {} (kid {kid})", path.display());
        }
        None => {
            print!("{pem}");
            eprintln!("kid {kid}");
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen { out } => keygen(out.as_deref()),
        Command::TotpCode { secret } => login::print_totp_code(secret.as_deref()),
        Command::GenFactorKey => trickle_user_store::factors::generate_key()
            .map(|key| println!("{key}"))
            .map_err(|e| anyhow::anyhow!("no random numbers: {e}")),
        Command::Login { email, addr, tls } => login::run(&addr, &tls.config(), &email).await,
        Command::Bench(args) => match config::load(cli.config.as_deref()) {
            Ok((config, _)) => bench::run(args, config.store.argon2).await,
            Err(e) => Err(e),
        },
        Command::Admin {
            addr,
            json,
            tls,
            command,
        } => admin::run_with_tls(&addr, &tls.config(), command, json)
            .await
            .map(|out| {
                // `watch` printed as it went.
                if !out.is_empty() {
                    println!("{}", out.trim_end());
                }
            }),
        Command::Serve { service } => {
            match init_telemetry(service.telemetry_name(), &cli.log_format) {
                Ok(_guard) => match config::load(cli.config.as_deref()) {
                    Ok((config, _)) => services::serve(service, &config).await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        }
        Command::Migrate => match init_telemetry("trickle-migrate", &cli.log_format) {
            Ok(_guard) => match config::load(cli.config.as_deref()) {
                Ok((config, _)) => services::migrate(&config).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        Command::Dev { data_dir } => match init_telemetry("trickle-dev", &cli.log_format) {
            Ok(_guard) => match config::load(cli.config.as_deref()) {
                Ok((config, explicit)) => dev::run(config, &explicit, &data_dir).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
