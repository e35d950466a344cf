//! Presets for the legacy apps Trickle migrates most: their real schemas, turned into the
//! `find_user`, `count_users` and `list_users` queries and the hash format, for the
//! database kind the `database_url` names (placeholders and quoting differ).

use crate::config::{CursorKind, LegacyConfig};
use crate::error::LegacyError;
use serde::Deserialize;
use trickle_password::HashFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// `wp_users` (phpass `$P$`, WordPress 6.8 `$wp$`, bcrypt); `table_prefix` default `wp_`.
    Wordpress,
    /// `auth_user` (pbkdf2_sha256, bcrypt_sha256, argon2, …); only active users.
    Django,
    /// `users` with `email_verified_at` (bcrypt `$2y$`).
    Laravel,
    /// `AspNetUsers` with `NormalizedEmail` and `EmailConfirmed` (Identity v2/v3 hashes).
    AspnetIdentity,
    /// `aspnet_Membership` joined to `aspnet_Users` (SHA-1 with `PasswordSalt`,
    /// `PasswordFormat = 1`).
    AspnetMembership,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Postgres,
    MySql,
    Sqlite,
}

fn kind(url: &str) -> Result<Kind, LegacyError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Kind::Postgres)
    } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
        Ok(Kind::MySql)
    } else if url.starts_with("sqlite:") {
        Ok(Kind::Sqlite)
    } else {
        Err(LegacyError::Config(
            "[legacy] database_url must be postgres://, mysql:// or sqlite:// for a preset".into(),
        ))
    }
}

/// The generic query when neither a preset nor `find_user` is given.
const DEFAULT_FIND_USER: &str = "SELECT id, email, password_hash FROM users WHERE lower(email) = ?";

/// Fill in what the preset defines and the operator left empty.
pub fn resolve(config: &LegacyConfig) -> Result<LegacyConfig, LegacyError> {
    let mut resolved = config.clone();
    let Some(preset) = config.preset else {
        if resolved.find_user.trim().is_empty() {
            resolved.find_user = DEFAULT_FIND_USER.into();
        }
        return Ok(resolved);
    };
    let kind = kind(&config.database_url)?;
    // Placeholders: `?` for MySQL and SQLite, `$n` for PostgreSQL.
    let (p1, p2) = if kind == Kind::Postgres {
        ("$1", "$2")
    } else {
        ("?", "?")
    };
    // Identifiers with capitals need quotes on PostgreSQL (Npgsql creates them quoted).
    let q = |ident: &str| {
        if kind == Kind::Postgres {
            format!("\"{ident}\"")
        } else {
            ident.to_owned()
        }
    };
    let prefix = config.table_prefix.clone().unwrap_or_else(|| {
        if preset == Preset::Wordpress {
            "wp_".into()
        } else {
            String::new()
        }
    });
    // The prefix is pasted into SQL: an identifier, nothing else.
    if !prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
        || prefix.len() > 64
    {
        return Err(LegacyError::Config(
            "[legacy] table_prefix may hold only letters, digits and '_' (at most 64)".into(),
        ));
    }
    let table = |name: &str| q(&format!("{prefix}{name}"));
    let factors = config.preset_factors.unwrap_or(match preset {
        Preset::Django => false,
        // Fortify's secrets can be read only with the app's key.
        Preset::Laravel => !config.laravel_app_key.0.trim().is_empty(),
        _ => true,
    });
    let (mut select, from, by_email, key, cursor, format) = match preset {
        Preset::Wordpress => (
            "SELECT ID AS id, user_email AS email, user_pass AS password_hash, display_name AS name, \
             user_nicename AS nickname"
                .to_owned(),
            table("users"),
            format!("lower(user_email) = {p1}"),
            "ID".to_owned(),
            CursorKind::Integer,
            HashFormat::Auto,
        ),
        Preset::Django => (
            // An inactive account (is_active = false) migrates blocked: its owner cannot log
            // in, as in the app, and the store keeps the account instead of losing it.
            "SELECT id, email, password AS password_hash, first_name AS given_name, last_name AS family_name, \
             username AS nickname, NOT is_active AS blocked"
                .to_owned(),
            table("auth_user"),
            format!("lower(email) = {p1}"),
            "id".to_owned(),
            CursorKind::Integer,
            HashFormat::Auto,
        ),
        Preset::Laravel => (
            "SELECT id, email, password AS password_hash, name, (email_verified_at IS NOT NULL) AS email_verified"
                .to_owned(),
            table("users"),
            format!("lower(email) = {p1}"),
            "id".to_owned(),
            CursorKind::Integer,
            HashFormat::Auto,
        ),
        Preset::AspnetIdentity => (
            format!(
                "SELECT {} AS id, {} AS email, {} AS password_hash, {} AS email_verified, {} AS nickname",
                q("Id"),
                q("Email"),
                q("PasswordHash"),
                q("EmailConfirmed"),
                q("UserName")
            ),
            table("AspNetUsers"),
            // Identity keeps the email upper-cased in NormalizedEmail, indexed.
            format!("{} = UPPER({p1})", q("NormalizedEmail")),
            q("Id"),
            CursorKind::Text,
            HashFormat::AspnetIdentity,
        ),
        Preset::AspnetMembership => (
            format!(
                // A member not approved or locked out cannot log in to the app: '!' makes
                // the row "no usable password" here too (refused like a wrong password).
                "SELECT u.{} AS id, m.{} AS email, \
                 CASE WHEN m.{} = 1 AND m.{} = 0 THEN m.{} ELSE '!' END AS password_hash, \
                 m.{} AS password_salt, u.{} AS nickname",
                q("UserId"),
                q("Email"),
                q("IsApproved"),
                q("IsLockedOut"),
                q("Password"),
                q("PasswordSalt"),
                q("UserName")
            ),
            format!(
                "{} m JOIN {} u ON u.{} = m.{} WHERE m.{} = 1 AND",
                table("aspnet_Membership"),
                table("aspnet_Users"),
                q("UserId"),
                q("UserId"),
                q("PasswordFormat")
            ),
            format!("m.{} = {p1}", q("LoweredEmail")),
            format!("u.{}", q("UserId")),
            CursorKind::Text,
            HashFormat::AspnetMembershipSha1,
        ),
    };
    // The app's own second factors, as `totp_*` columns (see the connector's find_user).
    if factors {
        if let Some(columns) = factor_columns(preset, &table, &q) {
            select.push_str(&columns);
        }
        match preset {
            // django-otp keeps keys in hex.
            Preset::Django => resolved.totp_secret_encoding = crate::config::TotpEncoding::Hex,
            // Fortify encrypts them with the app's key.
            Preset::Laravel => {
                resolved.totp_secret_encoding = crate::config::TotpEncoding::Laravel;
            }
            _ => {}
        }
    }
    // `from` either ends in a table (then WHERE follows) or in "… AND" (a filter of its own).
    let (find_where, list_where) = if from.ends_with(" AND") {
        (format!("{from} {by_email}"), format!("{from} {key} > {p1}"))
    } else {
        (
            format!("{from} WHERE {by_email}"),
            format!("{from} WHERE {key} > {p1}"),
        )
    };
    let count_from = from
        .trim_end_matches(" AND")
        .trim_end_matches(" WHERE")
        .to_owned();
    let set = |current: &mut String, value: String| {
        if current.trim().is_empty() {
            *current = value;
        }
    };
    set(
        &mut resolved.find_user,
        format!("{select} FROM {find_where}"),
    );
    set(
        &mut resolved.count_users,
        format!("SELECT COUNT(*) FROM {count_from}"),
    );
    set(
        &mut resolved.list_users,
        format!("{select} FROM {list_where} ORDER BY {key} LIMIT {p2}"),
    );
    if config.hash_format == HashFormat::Auto {
        resolved.hash_format = format;
    }
    resolved.list_users_cursor = cursor;
    // Roles where the app keeps them in tables of its own.
    let find_roles = match preset {
        // Groups, and the two flags Django's admin itself checks.
        Preset::Django => Some(format!(
            "SELECT r.role FROM (\
               SELECT ug.user_id AS user_id, g.name AS role FROM {} ug JOIN {} g ON g.id = ug.group_id \
               UNION ALL SELECT id, 'staff' FROM {} WHERE is_staff = TRUE \
               UNION ALL SELECT id, 'superuser' FROM {} WHERE is_superuser = TRUE\
             ) r WHERE r.user_id = {p1}",
            table("auth_user_groups"),
            table("auth_group"),
            table("auth_user"),
            table("auth_user")
        )),
        Preset::AspnetIdentity => Some(format!(
            "SELECT r.{} AS role FROM {} ur JOIN {} r ON r.{} = ur.{} WHERE ur.{} = {p1}",
            q("Name"),
            table("AspNetUserRoles"),
            table("AspNetRoles"),
            q("Id"),
            q("RoleId"),
            q("UserId")
        )),
        // WordPress keeps a user's roles as a PHP-serialized array in the
        // `{prefix}capabilities` user meta (the connector reads its true keys).
        Preset::Wordpress => Some(format!(
            "SELECT meta_value AS role FROM {} WHERE user_id = {p1} AND meta_key = '{prefix}capabilities'",
            table("usermeta")
        )),
        // Laravel and Membership apps have no standard role tables.
        Preset::Laravel | Preset::AspnetMembership => None,
    };
    if let Some(find_roles) = find_roles {
        set(&mut resolved.find_roles, find_roles);
    }
    Ok(resolved)
}

/// The columns that read a user's TOTP factor where the app keeps it: correlated subqueries
/// (an app may keep several devices; the first confirmed one is taken).
fn factor_columns(
    preset: Preset,
    table: &dyn Fn(&str) -> String,
    q: &dyn Fn(&str) -> String,
) -> Option<String> {
    match preset {
        // django-otp: a confirmed TOTPDevice (hex key; step, digits and t0 per device).
        Preset::Django => {
            let device = |column: &str| {
                format!(
                    "(SELECT d.{column} FROM {devices} d WHERE d.user_id = {users}.id AND d.confirmed = TRUE \
                     ORDER BY d.id LIMIT 1)",
                    devices = table("otp_totp_totpdevice"),
                    users = table("auth_user"),
                )
            };
            Some(format!(
                ", {} AS totp_secret, {} AS totp_digits, {} AS totp_period, {} AS totp_t0",
                device("key"),
                device("digits"),
                device("step"),
                device("t0")
            ))
        }
        // The Two Factor plugin: the TOTP key in user meta, used only while the TOTP
        // provider is among the user's enabled ones (a PHP-serialized array).
        Preset::Wordpress => {
            let meta = table("usermeta");
            let users = table("users");
            Some(format!(
                ", (SELECT k.meta_value FROM {meta} k WHERE k.user_id = {users}.ID \
                   AND k.meta_key = '_two_factor_totp_key' \
                   AND EXISTS (SELECT 1 FROM {meta} p WHERE p.user_id = {users}.ID \
                     AND p.meta_key = '_two_factor_enabled_providers' \
                     AND p.meta_value LIKE '%Two_Factor_Totp%') \
                   LIMIT 1) AS totp_secret"
            ))
        }
        // ASP.NET Core Identity: the authenticator key in AspNetUserTokens, for users with
        // TwoFactorEnabled.
        Preset::AspnetIdentity => Some(format!(
            ", CASE WHEN {enabled} = TRUE THEN (SELECT t.{value} FROM {tokens} t \
               WHERE t.{user_id} = {users}.{id} AND t.{provider} = '[AspNetUserStore]' \
               AND t.{name} = 'AuthenticatorKey') END AS totp_secret",
            enabled = q("TwoFactorEnabled"),
            value = q("Value"),
            tokens = table("AspNetUserTokens"),
            user_id = q("UserId"),
            users = table("AspNetUsers"),
            id = q("Id"),
            provider = q("LoginProvider"),
            name = q("Name"),
        )),
        // Laravel Fortify: the secret encrypted with the app's APP_KEY (decrypted by the
        // connector with `laravel_app_key`).
        Preset::Laravel => Some(", two_factor_secret AS totp_secret".to_owned()),
        // Membership apps have no standard second factor.
        Preset::AspnetMembership => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(preset: Preset, url: &str) -> LegacyConfig {
        let config = LegacyConfig {
            preset: Some(preset),
            database_url: url.into(),
            find_user: String::new(),
            ..LegacyConfig::default()
        };
        resolve(&config).expect("resolves")
    }

    #[test]
    fn presets_follow_the_database_kind() {
        let wp = with(Preset::Wordpress, "mysql://x/wp");
        assert!(
            wp.find_user
                .contains("FROM wp_users WHERE lower(user_email) = ?"),
            "{}",
            wp.find_user
        );
        assert!(
            wp.list_users.ends_with("WHERE ID > ? ORDER BY ID LIMIT ?"),
            "{}",
            wp.list_users
        );
        let identity = with(Preset::AspnetIdentity, "postgres://x/app");
        assert!(
            identity
                .find_user
                .contains("FROM \"AspNetUsers\" WHERE \"NormalizedEmail\" = UPPER($1)"),
            "{}",
            identity.find_user
        );
        assert_eq!(identity.list_users_cursor, CursorKind::Text);
        let membership = with(Preset::AspnetMembership, "sqlite://m.db");
        assert!(
            membership
                .count_users
                .contains("WHERE m.PasswordFormat = 1"),
            "{}",
            membership.count_users
        );
        assert!(
            !membership.count_users.ends_with("AND"),
            "{}",
            membership.count_users
        );
        let django = with(Preset::Django, "postgres://x/app");
        assert!(
            django.list_users.contains("NOT is_active AS blocked"),
            "{}",
            django.list_users
        );
        // An explicit query wins over the preset's.
        let custom = LegacyConfig {
            preset: Some(Preset::Laravel),
            database_url: "mysql://x".into(),
            find_user: "SELECT 1".into(),
            ..LegacyConfig::default()
        };
        assert_eq!(resolve(&custom).expect("resolves").find_user, "SELECT 1");
    }

    #[test]
    fn a_table_prefix_is_an_identifier_and_nothing_else() {
        for hostile in ["wp_; DROP TABLE users; --", "a b", "x\"y", "p`"] {
            let config = LegacyConfig {
                preset: Some(Preset::Wordpress),
                table_prefix: Some(hostile.into()),
                database_url: "mysql://u@localhost/app".into(),
                ..LegacyConfig::default()
            };
            let err = resolve(&config).expect_err(hostile);
            assert!(err.to_string().contains("table_prefix"), "{err}");
        }
        let fine = LegacyConfig {
            preset: Some(Preset::Wordpress),
            table_prefix: Some("blog2_".into()),
            database_url: "mysql://u@localhost/app".into(),
            ..LegacyConfig::default()
        };
        assert!(
            resolve(&fine)
                .expect("resolves")
                .find_user
                .contains("blog2_users")
        );
    }
}
