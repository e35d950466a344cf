//! `trickle dev`: the whole system on a laptop. Four services over real gRPC on loopback, an
//! embedded SQLite store, and a demo legacy database whose users migrate on first login.

use crate::config::{Config, Explicit};
use crate::services::Cluster;
use anyhow::Context as _;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _};
use std::path::Path;
use std::str::FromStr;
use trickle_password::{Argon2Config, legacy_formats};

/// Demo users of the legacy database: (email as the legacy app stored it, password, format).
pub const DEMO_USERS: &[(&str, &str, &str, &str)] = &[
    ("1001", "Alice@Example.com", "wonderland-1865", "bcrypt"),
    (
        "1002",
        "bob@example.com",
        "builder-can-we-fix-it",
        "argon2id",
    ),
    (
        "1003",
        "carol@example.com",
        "christmas-carol-1843",
        "django pbkdf2_sha256",
    ),
];

/// A demo user with a TOTP second factor in the legacy app: (id, email, password, base32
/// secret). Their first login asks for a code and moves the factor with them.
pub const DEMO_TOTP_USER: (&str, &str, &str, &str) = (
    "1004",
    "dana@example.com",
    "two-factors-are-better",
    "ORZGSY3LNRSS2ZDFNVXS25DPORYCCIJB",
);

/// Fill in the embedded defaults for every part `explicit` did not set.
pub fn embedded_config(
    mut config: Config,
    explicit: &Explicit,
    data_dir: &Path,
) -> anyhow::Result<Config> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let url = |name: &str| format!("sqlite://{}", data_dir.join(name).display()).into();
    if !explicit.has("store", "database_url") {
        config.store.database_url = url("store.db");
    }
    if !explicit.has("migration", "database_url") && !explicit.has("store", "database_url") {
        config.migration.database_url = url("coordinator.db");
    }
    // The store and the connector are internal: any free port on loopback. The coordinator
    // keeps its default address, where `trickle admin` looks for it.
    for (section, key, value) in [
        ("store", "listen", &mut config.store.listen),
        ("legacy", "listen", &mut config.legacy.listen),
    ] {
        if !explicit.has(section, key) {
            *value = "127.0.0.1:0".into();
        }
    }
    // grpcurl against the laptop setup, as the README shows.
    if !explicit.has("frontend", "reflection") {
        config.frontend.reflection = true;
    }
    // One process, one metrics registry: serve it once, next to the public API.
    for (section, value) in [
        ("frontend", &mut config.frontend.metrics_listen),
        ("store", &mut config.store.metrics_listen),
        ("legacy", &mut config.legacy.metrics_listen),
        ("migration", &mut config.migration.metrics_listen),
    ] {
        if !explicit.has(section, "metrics_listen") {
            *value = if section == "frontend" {
                "127.0.0.1:9100".into()
            } else {
                String::new()
            };
        }
    }
    if !explicit.has("legacy", "database_url") {
        config.legacy.database_url = url("legacy-demo.db");
        config.legacy.find_user = "SELECT id, email, password_hash, email_verified, name, given_name, family_name, nickname, \
             totp_secret FROM users WHERE lower(email) = ?"
            .into();
        config.legacy.count_users = "SELECT COUNT(*) FROM users".into();
        config.legacy.list_users = "SELECT id, email, password_hash, email_verified, name, given_name, family_name, nickname, \
             totp_secret FROM users WHERE id > ? ORDER BY id LIMIT ?"
            .into();
    }
    if config.tokens.signing_key.is_empty() && config.tokens.signing_key_file.is_empty() {
        let key_file = data_dir.join("signing-key.pem");
        if !key_file.exists() {
            let pem = trickle_auth_frontend::tokens::generate_signing_key_pem()?;
            write_private(&key_file, &pem)?;
        }
        config.tokens.signing_key_file = key_file.display().to_string();
    }
    // Second factors work out of the box too: a key sealing TOTP secrets, kept with the data.
    if config.store.factor_key.0.is_empty() && config.store.factor_keys_dir.is_empty() {
        let keys_dir = data_dir.join("factor-keys");
        std::fs::create_dir_all(&keys_dir)
            .with_context(|| format!("cannot create {}", keys_dir.display()))?;
        let key_file = keys_dir.join("dev");
        if !key_file.exists() {
            let key = trickle_user_store::factors::generate_key()
                .map_err(|e| anyhow::anyhow!("no random numbers: {e}"))?;
            write_private(&key_file, &key)?;
        }
        config.store.factor_keys_dir = keys_dir.display().to_string();
        config.store.current_factor_key = "dev".into();
    }
    Ok(config)
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

/// Create and seed the demo legacy database unless it exists (a data directory from before
/// second factors gets the factor column and the demo user with one).
pub async fn seed_demo_legacy(data_dir: &Path) -> anyhow::Result<()> {
    let path = data_dir.join("legacy-demo.db");
    if path.exists() {
        return add_demo_factor(&path).await;
    }
    let mut conn = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
        .create_if_missing(true)
        .connect()
        .await
        .context("cannot create the demo legacy database")?;
    sqlx::query(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL, password_hash TEXT NOT NULL, \
         email_verified INTEGER NOT NULL DEFAULT 0, name TEXT, given_name TEXT, family_name TEXT, nickname TEXT, \
         totp_secret TEXT)",
    )
    .execute(&mut conn)
    .await?;
    let legacy_argon2 = Argon2Config {
        memory_kib: 19_456,
        iterations: 2,
        parallelism: 1,
    };
    for (id, email, password, format) in DEMO_USERS {
        let hash = match *format {
            "bcrypt" => legacy_formats::bcrypt(password, 10),
            "argon2id" => legacy_formats::argon2id(password, &legacy_argon2),
            _ => legacy_formats::django_pbkdf2_sha256(password, 100_000),
        }
        .map_err(anyhow::Error::msg)?;
        let given = email.split('@').next().unwrap_or_default();
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, email_verified, name, given_name, family_name, nickname) \
             VALUES (?, ?, ?, 1, ?, ?, 'Legacy', ?)",
        )
        .bind(id.parse::<i64>()?)
        .bind(*email)
        .bind(hash)
        .bind(format!("{given} Legacy"))
        .bind(given)
        .bind(given.to_lowercase())
        .execute(&mut conn)
        .await?;
    }
    conn.close().await?;
    add_demo_factor(&path).await
}

/// The demo user with a second factor (and, in an older demo database, its column).
async fn add_demo_factor(path: &Path) -> anyhow::Result<()> {
    let mut conn = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
        .connect()
        .await
        .context("cannot open the demo legacy database")?;
    let has_column: bool = sqlx::query_scalar(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('users') WHERE name = 'totp_secret'",
    )
    .fetch_one(&mut conn)
    .await?;
    if !has_column {
        sqlx::query("ALTER TABLE users ADD COLUMN totp_secret TEXT")
            .execute(&mut conn)
            .await?;
    }
    let (id, email, password, secret) = DEMO_TOTP_USER;
    let hash = legacy_formats::bcrypt(password, 10).map_err(anyhow::Error::msg)?;
    sqlx::query(
        "INSERT OR IGNORE INTO users (id, email, password_hash, email_verified, name, given_name, \
           family_name, nickname, totp_secret) VALUES (?, ?, ?, 1, 'Dana Legacy', 'Dana', 'Legacy', 'dana', ?)",
    )
    .bind(id.parse::<i64>()?)
    .bind(email)
    .bind(hash)
    .bind(secret)
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    Ok(())
}

pub async fn run(config: Config, explicit: &Explicit, data_dir: &Path) -> anyhow::Result<()> {
    let uses_demo = !explicit.has("legacy", "database_url");
    let config = embedded_config(config, explicit, data_dir)?;
    if uses_demo {
        seed_demo_legacy(data_dir).await?;
    }
    let cluster = Cluster::start(&config).await?;
    println!();
    println!("Trickle is running (all four services, real gRPC on loopback).");
    println!();
    println!(
        "  public API (auth-frontend)   {}",
        cluster.frontend.local_addr
    );
    println!(
        "  user-store                   {}",
        cluster.store.local_addr
    );
    println!(
        "  migration-coordinator        {}",
        cluster.coordinator.local_addr
    );
    if let Some(admin) = cluster.coordinator.admin_addr {
        println!("  operators (trickle admin)    {admin}");
    }
    if let Some(legacy) = &cluster.legacy {
        println!("  legacy-connector             {}", legacy.local_addr);
    }
    if let Some(metrics) = cluster.frontend.metrics_addr {
        println!("  metrics (Prometheus)         http://{metrics}/metrics");
    }
    println!("  data directory               {}", data_dir.display());
    if uses_demo {
        println!();
        println!("Demo users in the legacy database (they move to the store on first login):");
        for (_, email, password, format) in DEMO_USERS {
            println!("  {email:<22} password {password:<24} ({format})");
        }
        let (_, email, password, secret) = DEMO_TOTP_USER;
        println!("  {email:<22} password {password:<24} (bcrypt, and a TOTP second factor)");
        println!();
        println!("Try it from another terminal:");
        println!("  trickle login alice@example.com          # first login: migrated = true");
        println!("  trickle login alice@example.com          # again: served by the store");
        println!("  trickle login {email}           # asks for a code after the password:");
        println!("  trickle totp-code {secret}   # prints the current code");
        println!(
            "    (or add otpauth://totp/Trickle%20demo:{email}?secret={secret} to an authenticator app)"
        );
        println!(
            "  trickle admin watch                      # what other services see: sign-ups, migrations, logins…"
        );
    }
    println!();
    println!("Press Ctrl-C to stop.");
    trickle_service_kit::server::shutdown_signal().await;
    cluster.stop().await
}
