//! Legacy users for the first-login scenario: seeding a legacy database.

use super::*;

#[derive(Debug, Clone, Copy)]
pub(super) enum LegacyHash {
    Bcrypt(u32),
    Argon2id,
    Pbkdf2(u32),
}

impl LegacyHash {
    pub(super) fn parse(spec: &str) -> anyhow::Result<Self> {
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

    pub(super) fn hash(self, password: &str, argon2: &Argon2Config) -> anyhow::Result<String> {
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
pub(super) async fn seed_legacy(
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
pub(super) fn redact(url: &str) -> String {
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
