//! The one configuration file: defaults, then the TOML file, then `TRICKLE_…` environment
//! variables (`TRICKLE_STORE__DATABASE_URL` sets `[store] database_url`). Unknown keys are
//! rejected, wherever they come from.

use anyhow::Context as _;
use serde::Deserialize;
use std::path::Path;
use trickle_auth_frontend::{FrontendConfig, TokenConfig};
use trickle_legacy_connector::LegacyConfig;
use trickle_migration_coordinator::MigrationConfig;
use trickle_user_store::StoreConfig;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub frontend: FrontendConfig,
    pub store: StoreConfig,
    pub legacy: LegacyConfig,
    pub migration: MigrationConfig,
    pub tokens: TokenConfig,
    /// `[server]`: drain delay after SIGTERM, connection age (every service).
    pub server: trickle_service_kit::server::ServingConfig,
}

const ENV_PREFIX: &str = "TRICKLE_";

/// Which sections a file (or the environment) set explicitly, so `trickle dev` keeps its
/// embedded defaults for the rest.
#[derive(Debug, Default, Clone)]
pub struct Explicit {
    pub table: toml::Table,
}

impl Explicit {
    pub fn has(&self, section: &str, key: &str) -> bool {
        self.table
            .get(section)
            .and_then(|s| s.as_table())
            .is_some_and(|s| s.contains_key(key))
    }
}

/// Load the configuration from `file` (if any) and the process environment.
pub fn load(file: Option<&Path>) -> anyhow::Result<(Config, Explicit)> {
    load_from(file, std::env::vars())
}

pub fn load_from(
    file: Option<&Path>,
    env: impl Iterator<Item = (String, String)>,
) -> anyhow::Result<(Config, Explicit)> {
    let mut table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("cannot read the configuration file {}", path.display())
            })?;
            toml::from_str::<toml::Table>(&text)
                .with_context(|| format!("{} is not valid TOML", path.display()))?
        }
        None => toml::Table::new(),
    };
    // Variables whose text was read as a number or a boolean, in case the key wants text.
    let mut typed: Vec<(Vec<String>, String)> = Vec::new();
    for (name, raw) in env {
        let Some(path) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        // Only names with a section separator are configuration; TRICKLE_TEST_… and the
        // like belong to other tools.
        if !path.contains("__") {
            continue;
        }
        let keys: Vec<String> = path.split("__").map(str::to_lowercase).collect();
        let value = parse_env_value(&raw);
        if !value.is_str() {
            typed.push((keys.clone(), raw));
        }
        set_path(&mut table, &keys, value).with_context(|| {
            format!("environment variable {name} does not name a configuration key")
        })?;
    }
    loop {
        match toml::Value::Table(table.clone()).try_into::<Config>() {
            Ok(config) => return Ok((config, Explicit { table })),
            Err(error) => {
                // A password of digits is text: when a key refuses the number, give it the
                // text it was set to.
                let message = error.to_string();
                let Some(at) = typed.iter().position(|(keys, raw)| {
                    message.contains(&format!("`{}`", keys.join(".")))
                        || message.contains(&format!("`{}`", raw.trim()))
                }) else {
                    anyhow::bail!(
                        "invalid configuration (file or TRICKLE_… environment variables): {}",
                        without_values(&message)
                    );
                };
                let (keys, raw) = typed.remove(at);
                set_path(&mut table, &keys, toml::Value::String(raw))?;
            }
        }
    }
}

/// A configuration error without the values it quotes: the value of a mistyped key may be a
/// secret (a password in the wrong variable), and errors reach logs.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    // serde quotes the offending value after "invalid type: <kind> " or "invalid value:
    // <kind> ", in backticks or double quotes.
    while let Some(at) = rest.find("invalid ") {
        let (before, after) = rest.split_at(at);
        out.push_str(before);
        let Some(colon) = after.find(": ") else {
            out.push_str(after);
            return out;
        };
        out.push_str(&after[..colon + 2]);
        let tail = &after[colon + 2..];
        let kind_end = tail.find([' ', ',']).unwrap_or(tail.len());
        out.push_str(&tail[..kind_end]);
        let tail = &tail[kind_end..];
        let trimmed = tail.trim_start();
        let quote = trimmed.chars().next();
        rest = match quote {
            Some(q @ ('`' | '"')) => match trimmed[1..].find(q) {
                Some(end) => &trimmed[end + 2..],
                None => "",
            },
            _ => tail,
        };
    }
    out.push_str(rest);
    out
}

fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) -> anyhow::Result<()> {
    match keys {
        [] => anyhow::bail!("empty key"),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(inner) => set_path(inner, rest, value),
                _ => anyhow::bail!("{first} is not a section"),
            }
        }
    }
}

/// `2000` is a number, `true` a boolean, anything else a string (URLs, PEM keys).
fn parse_env_value(raw: &str) -> toml::Value {
    if let Ok(b) = raw.parse::<bool>() {
        return toml::Value::Boolean(b);
    }
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    toml::Value::String(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn env_overrides_file_and_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("trickle.toml");
        std::fs::write(
            &file,
            "[store]\ndatabase_url = \"sqlite://a.db\"\n[legacy]\nquery_timeout_ms = 500\n",
        )
        .expect("write");
        let (config, explicit) = load_from(
            Some(&file),
            env(&[
                ("TRICKLE_STORE__DATABASE_URL", "postgres://x/y"),
                ("TRICKLE_STORE__ARGON2__ITERATIONS", "3"),
                ("TRICKLE_STORE__HASH_PRIORITY", "nice"),
                ("TRICKLE_TEST_POSTGRES_URL", "ignored"),
            ]),
        )
        .expect("loads");
        assert_eq!(&*config.store.database_url, "postgres://x/y");
        assert_eq!(config.store.argon2.iterations, 3);
        assert_eq!(
            config.store.hash_priority,
            trickle_password::HashPriority::Nice
        );
        assert_eq!(
            config.legacy.hash_priority,
            trickle_password::HashPriority::Idle
        );
        assert_eq!(config.legacy.query_timeout_ms, 500);
        assert_eq!(config.frontend.listen, "127.0.0.1:50051");
        assert!(explicit.has("store", "database_url"));
        assert!(!explicit.has("legacy", "database_url"));
    }

    /// A secret that looks like a number stays text, and a mistyped value never appears in
    /// the error.
    #[test]
    fn numeric_secrets_stay_text_and_errors_quote_no_value() {
        let (config, _) = load_from(
            None,
            env(&[
                ("TRICKLE_FRONTEND__TELEMETRY_EMAIL_HASH_KEY", "31415926535"),
                ("TRICKLE_STORE__MAX_CONNECTIONS", "7"),
            ]),
        )
        .expect("loads");
        assert_eq!(config.frontend.telemetry_email_hash_key, "31415926535");
        assert_eq!(config.store.max_connections, 7);
        let err = load_from(
            None,
            env(&[(
                "TRICKLE_STORE__MAX_CONNECTIONS",
                "s3cr3t-in-the-wrong-variable",
            )]),
        )
        .expect_err("not a number");
        let text = format!("{err:#}");
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("max_connections"), "{text}");
    }

    /// Nothing secret in a Debug string: database passwords, the signing key, HMAC keys, the
    /// legacy web service's password.
    #[test]
    fn the_configuration_prints_no_secret() {
        let (config, _) = load_from(
            None,
            env(&[
                (
                    "TRICKLE_STORE__DATABASE_URL",
                    "postgres://u:store-secret@db/app",
                ),
                (
                    "TRICKLE_MIGRATION__DATABASE_URL",
                    "postgres://u:coord-secret@db/app",
                ),
                (
                    "TRICKLE_LEGACY__DATABASE_URL",
                    "mysql://u:legacy-secret@db/app",
                ),
                ("TRICKLE_LEGACY__HTTP__PASSWORD", "http-secret"),
                ("TRICKLE_LEGACY__SALTED_DIGEST__ALGORITHM", "sha1"),
                ("TRICKLE_LEGACY__SALTED_DIGEST__HMAC_KEY", "hmac-secret"),
                ("TRICKLE_TOKENS__SIGNING_KEY", "pem-secret"),
                (
                    "TRICKLE_FRONTEND__TELEMETRY_EMAIL_HASH_KEY",
                    "email-hash-secret",
                ),
            ]),
        )
        .expect("loads");
        let printed = format!("{config:?} {config:#?}");
        for secret in [
            "store-secret",
            "coord-secret",
            "legacy-secret",
            "http-secret",
            "hmac-secret",
            "pem-secret",
            "email-hash-secret",
        ] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert!(printed.contains("postgres://u:***@db/app"), "{printed}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = load_from(None, env(&[("TRICKLE_STORE__DATABASE_ULR", "x")])).expect_err("typo");
        assert!(format!("{err:#}").contains("database_ulr"), "{err:#}");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "[frontnd]\nlisten = \"x\"\n").expect("write");
        assert!(load_from(Some(&file), env(&[])).is_err());
    }
}

#[cfg(test)]
mod example_file {
    /// The documented example configuration must stay loadable.
    #[test]
    fn the_example_configuration_loads() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/config/trickle.example.toml");
        let (config, _) = super::load_from(Some(&path), std::iter::empty()).expect("example loads");
        assert_eq!(config.store.argon2.memory_kib, 19_456);
        assert!(config.legacy.find_user.contains("email = ?"));
    }

    /// So must the Kubernetes base's: a typo there is a crash loop in every pod.
    #[test]
    fn the_kubernetes_configuration_loads() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/k8s/base/trickle.toml");
        let (config, _) =
            super::load_from(Some(&path), std::iter::empty()).expect("k8s config loads");
        assert_eq!(config.migration.admin_listen, "0.0.0.0:50055");
        assert!(config.frontend.store_url.contains("-headless"));
        assert_eq!(config.tokens.current_key, "signing-key.pem");
        assert_eq!(config.server.drain_delay_ms, 10_000);
    }
}
