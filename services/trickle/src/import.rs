//! Export files of other identity providers, read for `trickle admin import` and
//! `trickle admin preflight --file`: each record becomes a legacy user with their hash in a
//! stored form the user store verifies (`LegacyUserRecord`, as the legacy connector lists
//! users for a backfill), or a reason it cannot be read.
//!
//! Formats:
//! - `jsonl`: Trickle's own, one user per line (see the README): `legacy_id`, `email`,
//!   `password_hash` in any format Trickle verifies, and the optional profile, `blocked`,
//!   `roles`, metadata and `totp`.
//! - `auth0`: Auth0's user export (NDJSON, one user per line) or its bulk-import file (one
//!   JSON array): `user_id`, `email`, `email_verified`, names, `blocked`, metadata,
//!   `password_hash` (bcrypt) or `custom_password_hash`, and `mfa_factors` (TOTP).
//!
//! - `firebase`: `firebase auth:export` JSON (`{"users": [...]}`): `localId`, `email`,
//!   `emailVerified`, `displayName`, `photoUrl`, `disabled`, `customAttributes`, and
//!   `passwordHash` + `salt` under the project's modified scrypt, whose parameters (from the
//!   Firebase console: Authentication → Users → Password hash parameters) come from the
//!   command line.
//! - `keycloak`: a realm export's `users`: `id`, `email`, `emailVerified`, `enabled`,
//!   `firstName`, `lastName`, `username`, `realmRoles`, and `credentials` — `password`
//!   (`pbkdf2`, `pbkdf2-sha256`, `pbkdf2-sha512`, `argon2`) and `otp` (TOTP) as factors.
//!
//! Lines are read one at a time, so memory stays flat in the file's size; a JSON array is
//! read whole (prefer NDJSON for big files).

use serde::Deserialize;
use std::io::BufRead as _;
use trickle_password::{HashFormat, HashLimits, StoredHash, Unverifiable};
use trickle_proto::legacy::v1::{HashStatus, LegacyTotp, LegacyUser, LegacyUserRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFormat {
    /// Trickle's own line format: one JSON user per line.
    Jsonl,
    /// An Auth0 user export (NDJSON) or bulk-import file (JSON array).
    Auth0,
    /// A Firebase Authentication export (`firebase auth:export users.json`), with the
    /// project's hash parameters (--hash-key, --salt-separator, --rounds, --mem-cost).
    Firebase,
    /// A Keycloak realm export (`kc.sh export`: the realm file or its `*-users-*.json`).
    Keycloak,
}

impl ImportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImportFormat::Jsonl => "jsonl",
            ImportFormat::Auth0 => "auth0",
            ImportFormat::Firebase => "firebase",
            ImportFormat::Keycloak => "keycloak",
        }
    }
}

/// A record that could not become a user: where it is (its legacy id when it has one, else
/// `line N`) and why. Never a hash or a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub legacy_id: String,
    pub reason: String,
}

pub type Record = Result<LegacyUserRecord, Unreadable>;

/// The hash algorithms `firebase auth:import --hash-algo` names. A Firebase *export* holds
/// only SCRYPT hashes (Firebase re-hashes other imported passwords at their first login, and
/// exports none until then); the others are for files written for Firebase's importer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FirebaseAlgorithm {
    /// Firebase's modified scrypt (`--hash-key`, `--salt-separator`, `--rounds`, `--mem-cost`).
    #[default]
    Scrypt,
    /// scrypt (`--mem-cost` is N, `--block-size`, `--parallelization`, `--dk-len`).
    StandardScrypt,
    Bcrypt,
    HmacSha512,
    HmacSha256,
    HmacSha1,
    HmacMd5,
    Md5,
    Sha1,
    Sha256,
    Sha512,
    /// PBKDF2 with HMAC-SHA1 (`--rounds`).
    PbkdfSha1,
    /// PBKDF2 with HMAC-SHA256 (`--rounds`).
    Pbkdf2Sha256,
}

/// `--hash-input-order`: what a digest or HMAC was computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HashInputOrder {
    /// salt (then the separator), then the password.
    SaltFirst,
    /// the password, then the salt (then the separator).
    PasswordFirst,
}

/// A Firebase project's password hash parameters, as the Firebase console and CLI name them
/// (only those the algorithm uses are set).
#[derive(Clone, Default)]
pub struct FirebaseHashParams {
    pub algorithm: FirebaseAlgorithm,
    /// `base64_signer_key` (SCRYPT) or the HMAC key: a secret; never printed.
    pub hash_key: String,
    /// `base64_salt_separator`, appended to every user's salt.
    pub salt_separator: String,
    pub rounds: u32,
    pub mem_cost: u32,
    pub block_size: u32,
    pub parallelization: u32,
    pub dk_len: u32,
    pub input_order: Option<HashInputOrder>,
}

impl std::fmt::Debug for FirebaseHashParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirebaseHashParams")
            .field("algorithm", &self.algorithm)
            .field("hash_key", &trickle_password::redacted(&self.hash_key))
            .field("salt_separator", &self.salt_separator)
            .field("rounds", &self.rounds)
            .field("mem_cost", &self.mem_cost)
            .field("block_size", &self.block_size)
            .field("parallelization", &self.parallelization)
            .field("dk_len", &self.dk_len)
            .field("input_order", &self.input_order)
            .finish()
    }
}

impl FirebaseHashParams {
    /// A user's `passwordHash` and `salt` (base64) as a stored form the store verifies.
    fn stored(&self, hash: &str, user_salt: &str) -> Result<String, (HashStatus, String)> {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::STANDARD;
        let bytes = |what: &str, value: &str| {
            engine.decode(standard_base64(value)).map_err(|_| {
                (
                    HashStatus::UnknownFormat,
                    format!("{what} is not valid base64"),
                )
            })
        };
        let nopad = |bytes: &[u8]| base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
        let expected = bytes("passwordHash", hash)?;
        // The separator goes after the salt, for every algorithm (Firebase's rule).
        let mut salt = bytes("salt", user_salt)?;
        salt.extend(bytes("the salt separator", &self.salt_separator)?);
        let digest = |name: &str, key: Option<&[u8]>| {
            let position = match self.input_order {
                Some(HashInputOrder::PasswordFirst) => "after",
                _ => "before",
            };
            let key = key
                .map(|k| {
                    format!(
                        ",key={}",
                        k.iter().map(|b| format!("{b:02x}")).collect::<String>()
                    )
                })
                .unwrap_or_default();
            format!(
                "$trickle-digest$alg={name},salt={position},pw=utf8{key}${}${}",
                nopad(&salt),
                nopad(&expected)
            )
        };
        let passlib = |id: &str| {
            let ab64 = |b: &[u8]| nopad(b).replace('+', ".");
            format!("${id}${}${}${}", self.rounds, ab64(&salt), ab64(&expected))
        };
        let key = || bytes("--hash-key", &self.hash_key);
        Ok(match self.algorithm {
            // The modified scrypt keeps the separator and the signer key in fields of their
            // own (the store's `$firebase-scrypt$` form).
            FirebaseAlgorithm::Scrypt => format!(
                "$firebase-scrypt$ln={},r={},p=1,sep={},key={}${}${}",
                self.mem_cost,
                self.rounds,
                standard_base64(&self.salt_separator),
                standard_base64(&self.hash_key),
                standard_base64(user_salt),
                standard_base64(hash)
            ),
            FirebaseAlgorithm::StandardScrypt => {
                if expected.len() != self.dk_len as usize {
                    return Err((
                        HashStatus::UnknownFormat,
                        "the hash is not --dk-len bytes long".into(),
                    ));
                }
                format!(
                    "$scrypt$ln={},r={},p={}${}${}",
                    self.mem_cost.trailing_zeros(),
                    self.block_size,
                    self.parallelization,
                    nopad(&salt),
                    nopad(&expected)
                )
            }
            // The hash is the bcrypt string itself, base64-encoded.
            FirebaseAlgorithm::Bcrypt => String::from_utf8(expected).map_err(|_| {
                (
                    HashStatus::UnknownFormat,
                    "passwordHash is not a bcrypt string".into(),
                )
            })?,
            FirebaseAlgorithm::HmacSha512 => digest("sha512", Some(&key()?)),
            FirebaseAlgorithm::HmacSha256 => digest("sha256", Some(&key()?)),
            FirebaseAlgorithm::HmacSha1 => digest("sha1", Some(&key()?)),
            FirebaseAlgorithm::HmacMd5 => digest("md5", Some(&key()?)),
            FirebaseAlgorithm::Md5 => digest("md5", None),
            FirebaseAlgorithm::Sha1 => digest("sha1", None),
            FirebaseAlgorithm::Sha256 => digest("sha256", None),
            FirebaseAlgorithm::Sha512 => digest("sha512", None),
            FirebaseAlgorithm::PbkdfSha1 => passlib("pbkdf2"),
            FirebaseAlgorithm::Pbkdf2Sha256 => passlib("pbkdf2-sha256"),
        })
    }
}

/// What reading a file needs besides its format.
#[derive(Debug, Clone, Default)]
pub struct FileOptions {
    /// For `firebase`.
    pub firebase: Option<FirebaseHashParams>,
}

/// A TOTP factor as files carry it: the secret in base32.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TotpLine {
    secret: String,
    #[serde(default)]
    algorithm: Option<String>,
    #[serde(default)]
    digits: Option<u32>,
    #[serde(default)]
    period: Option<u32>,
}

/// One line of the `jsonl` format.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrickleLine {
    legacy_id: serde_json::Value,
    email: String,
    #[serde(default)]
    email_verified: bool,
    #[serde(default)]
    password_hash: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    given_name: Option<String>,
    #[serde(default)]
    family_name: Option<String>,
    #[serde(default)]
    nickname: Option<String>,
    #[serde(default)]
    picture: Option<String>,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    user_metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    app_metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    totp: Option<TotpLine>,
}

/// One user of an Auth0 export or import file (other fields are ignored).
#[derive(Deserialize)]
struct Auth0User {
    #[serde(default)]
    user_id: Option<serde_json::Value>,
    email: String,
    #[serde(default)]
    email_verified: bool,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    given_name: Option<String>,
    #[serde(default)]
    family_name: Option<String>,
    #[serde(default)]
    nickname: Option<String>,
    #[serde(default)]
    picture: Option<String>,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    user_metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    app_metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    password_hash: Option<String>,
    #[serde(default)]
    custom_password_hash: Option<trickle_password::Auth0CustomHash>,
    #[serde(default)]
    mfa_factors: Vec<Auth0Factor>,
}

/// One user of a Firebase export (other fields are ignored).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FirebaseUser {
    local_id: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: bool,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    photo_url: Option<String>,
    #[serde(default)]
    disabled: bool,
    /// A JSON object, as a string.
    #[serde(default)]
    custom_attributes: Option<String>,
    #[serde(default)]
    password_hash: Option<String>,
    #[serde(default)]
    salt: Option<String>,
}

/// One user of a Keycloak realm export (other fields are ignored).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeycloakUser {
    id: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: bool,
    #[serde(default = "enabled")]
    enabled: bool,
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    realm_roles: Vec<String>,
    #[serde(default)]
    credentials: Vec<KeycloakCredential>,
}

fn enabled() -> bool {
    true
}

/// `secretData` and `credentialData` are JSON documents inside strings.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeycloakCredential {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    secret_data: String,
    #[serde(default)]
    credential_data: String,
}

#[derive(Deserialize)]
struct Auth0Factor {
    #[serde(default)]
    totp: Option<TotpLine>,
}

fn text_id(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn totp(line: TotpLine) -> Result<LegacyTotp, String> {
    let TotpLine {
        secret,
        algorithm,
        digits,
        period,
    } = line;
    let secret = trickle_password::totp::TotpSecret::from_base32(&secret)
        .map_err(|_| "the TOTP secret is not base32 of 10 to 128 bytes".to_owned())?
        .expose_bytes()
        .to_vec();
    Ok(LegacyTotp {
        secret,
        algorithm: algorithm.unwrap_or_default().to_ascii_uppercase(),
        digits: digits.unwrap_or(0),
        period_seconds: period.unwrap_or(0),
    })
}

/// The record the store gets: the hash classified as the connector classifies listed ones
/// (the same parser and the default cost caps).
fn record(user: LegacyUser, hash: Result<String, (HashStatus, String)>) -> LegacyUserRecord {
    let classified = hash.and_then(|stored| {
        match StoredHash::parse_within(
            &stored,
            None,
            HashFormat::Auto,
            None,
            &HashLimits::default(),
        ) {
            Ok(parsed) => Ok((stored, parsed.scheme().as_str())),
            Err(refused @ Unverifiable::Unreadable(_)) => {
                Err((HashStatus::UnknownFormat, refused.to_string()))
            }
            Err(refused @ Unverifiable::OverCostLimits { .. }) => {
                Err((HashStatus::OverCostLimits, refused.to_string()))
            }
        }
    });
    match classified {
        Ok((stored, scheme)) => LegacyUserRecord {
            user: Some(user),
            password_hash: stored,
            hash_scheme: scheme.to_owned(),
            unsupported_reason: String::new(),
            hash_status: HashStatus::Portable.into(),
        },
        Err((status, reason)) => LegacyUserRecord {
            user: Some(user),
            password_hash: String::new(),
            hash_scheme: String::new(),
            unsupported_reason: reason,
            hash_status: status.into(),
        },
    }
}

fn metadata(
    map: Option<serde_json::Map<String, serde_json::Value>>,
) -> Option<prost_types::Struct> {
    map.filter(|m| !m.is_empty())
        .map(trickle_proto::json::to_struct)
}

fn no_hash() -> Result<String, (HashStatus, String)> {
    Err((HashStatus::Empty, "no password hash in the file".into()))
}

/// One `jsonl` line.
pub fn parse_trickle_line(line: &str, line_number: u64) -> Record {
    let unreadable = |reason: String| Unreadable {
        legacy_id: format!("line {line_number}"),
        reason,
    };
    let parsed: TrickleLine =
        serde_json::from_str(line).map_err(|e| unreadable(format!("not a Trickle user: {e}")))?;
    let legacy_id = text_id(&parsed.legacy_id)
        .ok_or_else(|| unreadable("legacy_id must be a non-empty string or a number".into()))?;
    let totp = match parsed.totp.map(totp).transpose() {
        Ok(totp) => totp,
        Err(why) => {
            return Err(Unreadable {
                legacy_id,
                reason: why,
            });
        }
    };
    let hash = match parsed.password_hash.filter(|h| !h.trim().is_empty()) {
        Some(hash) => Ok(hash.trim().to_owned()),
        None => no_hash(),
    };
    let user = LegacyUser {
        legacy_id,
        email: parsed.email,
        email_verified: parsed.email_verified,
        name: parsed.name.unwrap_or_default(),
        given_name: parsed.given_name.unwrap_or_default(),
        family_name: parsed.family_name.unwrap_or_default(),
        nickname: parsed.nickname.unwrap_or_default(),
        picture: parsed.picture.unwrap_or_default(),
        blocked: parsed.blocked,
        roles: parsed.roles,
        totp,
        user_metadata: metadata(parsed.user_metadata),
        app_metadata: metadata(parsed.app_metadata),
    };
    Ok(record(user, hash))
}

/// One Auth0 user (a line of an export, or an element of an import file's array).
pub fn parse_auth0_user(value: serde_json::Value, line_number: u64) -> Record {
    let parsed: Auth0User = serde_json::from_value(value).map_err(|e| Unreadable {
        legacy_id: format!("line {line_number}"),
        reason: format!("not an Auth0 user: {e}"),
    })?;
    // Auth0 ids look like "auth0|5f7c…"; an import file may leave them out, and the email
    // (lower-cased) then names the user.
    let legacy_id = parsed
        .user_id
        .as_ref()
        .and_then(text_id)
        .unwrap_or_else(|| parsed.email.trim().to_lowercase());
    let mut factors = parsed.mfa_factors.into_iter().filter_map(|f| f.totp);
    let totp = match factors.next().map(totp).transpose() {
        Ok(totp) => totp,
        Err(why) => {
            return Err(Unreadable {
                legacy_id,
                reason: why,
            });
        }
    };
    let hash = match (parsed.password_hash, parsed.custom_password_hash) {
        (Some(hash), None) if !hash.trim().is_empty() => Ok(hash.trim().to_owned()),
        (None | Some(_), Some(custom)) => trickle_password::auth0_custom_hash(&custom)
            .map_err(|why| (HashStatus::UnknownFormat, why)),
        _ => no_hash(),
    };
    let user = LegacyUser {
        legacy_id,
        email: parsed.email,
        email_verified: parsed.email_verified,
        name: parsed.name.unwrap_or_default(),
        given_name: parsed.given_name.unwrap_or_default(),
        family_name: parsed.family_name.unwrap_or_default(),
        nickname: parsed.nickname.unwrap_or_default(),
        picture: parsed.picture.unwrap_or_default(),
        blocked: parsed.blocked,
        roles: Vec::new(),
        totp,
        user_metadata: metadata(parsed.user_metadata),
        app_metadata: metadata(parsed.app_metadata),
    };
    Ok(record(user, hash))
}

/// Base64 as Firebase may write it (web-safe or not), as standard base64.
fn standard_base64(value: &str) -> String {
    value.trim().replace('-', "+").replace('_', "/")
}

/// One Firebase user.
pub fn parse_firebase_user(
    value: serde_json::Value,
    number: u64,
    params: Option<&FirebaseHashParams>,
) -> Record {
    let parsed: FirebaseUser = serde_json::from_value(value).map_err(|e| Unreadable {
        legacy_id: format!("user {number}"),
        reason: format!("not a Firebase user: {e}"),
    })?;
    let legacy_id = parsed.local_id;
    if legacy_id.is_empty() {
        return Err(Unreadable {
            legacy_id: format!("user {number}"),
            reason: "localId is empty".into(),
        });
    }
    let app_metadata = match parsed
        .custom_attributes
        .as_deref()
        .map(serde_json::from_str)
    {
        None => None,
        Some(Ok(serde_json::Value::Object(map))) => Some(map),
        Some(_) => {
            return Err(Unreadable {
                legacy_id,
                reason: "customAttributes is not a JSON object".into(),
            });
        }
    };
    let hash = match (parsed.password_hash.filter(|h| !h.is_empty()), params) {
        (None, _) => no_hash(),
        (Some(_), None) => Err((
            HashStatus::UnknownFormat,
            "the project's hash parameters are needed: --hash-key, --salt-separator, --rounds, --mem-cost"
                .into(),
        )),
        (Some(hash), Some(p)) => p.stored(&hash, parsed.salt.as_deref().unwrap_or_default()),
    };
    let user = LegacyUser {
        legacy_id,
        email: parsed.email.unwrap_or_default(),
        email_verified: parsed.email_verified,
        name: parsed.display_name.unwrap_or_default(),
        picture: parsed.photo_url.unwrap_or_default(),
        blocked: parsed.disabled,
        app_metadata: metadata(app_metadata),
        ..LegacyUser::default()
    };
    Ok(record(user, hash))
}

/// Keycloak's `additionalParameters` values are lists of strings.
fn keycloak_parameter(data: &serde_json::Value, name: &str) -> Option<String> {
    match &data["additionalParameters"][name] {
        serde_json::Value::Array(values) => values.first()?.as_str().map(str::to_owned),
        serde_json::Value::String(value) => Some(value.clone()),
        _ => None,
    }
}

/// A Keycloak password credential as a stored form Trickle verifies.
fn keycloak_password(credential: &KeycloakCredential) -> Result<String, String> {
    use base64::Engine as _;
    let secret: serde_json::Value = serde_json::from_str(&credential.secret_data)
        .map_err(|_| "the password credential's secretData is not JSON".to_owned())?;
    let data: serde_json::Value = serde_json::from_str(&credential.credential_data)
        .map_err(|_| "the password credential's credentialData is not JSON".to_owned())?;
    let decode = |field: &str| -> Result<Vec<u8>, String> {
        let text = secret[field].as_str().unwrap_or_default();
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| format!("secretData.{field} is not base64"))
    };
    let nopad = |bytes: &[u8]| base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
    let (hash, salt) = (decode("value")?, decode("salt")?);
    let iterations = data["hashIterations"].as_u64().unwrap_or(0);
    let algorithm = data["algorithm"].as_str().unwrap_or_default();
    match algorithm {
        "pbkdf2" | "pbkdf2-sha256" | "pbkdf2-sha512" => {
            if iterations == 0 {
                return Err("hashIterations is missing".into());
            }
            // passlib's form: adapted base64 ('.' for '+').
            let ab64 = |bytes: &[u8]| nopad(bytes).replace('+', ".");
            Ok(format!(
                "${algorithm}${iterations}${}${}",
                ab64(&salt),
                ab64(&hash)
            ))
        }
        "argon2" => {
            let variant = keycloak_parameter(&data, "type").unwrap_or_else(|| "id".into());
            let version = match keycloak_parameter(&data, "version").as_deref() {
                None | Some("1.3") => 19,
                Some("1.0") => 16,
                Some(other) => return Err(format!("argon2 version {other:?} is not known")),
            };
            let memory = keycloak_parameter(&data, "memory").unwrap_or_else(|| "7168".into());
            let parallelism =
                keycloak_parameter(&data, "parallelism").unwrap_or_else(|| "1".into());
            Ok(format!(
                "$argon2{variant}$v={version}$m={memory},t={},p={parallelism}${}${}",
                iterations.max(1),
                nopad(&salt),
                nopad(&hash)
            ))
        }
        other => Err(format!("Keycloak algorithm {other:?} is not supported")),
    }
}

/// A Keycloak OTP credential as a TOTP factor (HOTP is not migrated).
fn keycloak_totp(credential: &KeycloakCredential) -> Result<LegacyTotp, String> {
    let secret: serde_json::Value = serde_json::from_str(&credential.secret_data)
        .map_err(|_| "the otp credential's secretData is not JSON".to_owned())?;
    let data: serde_json::Value = serde_json::from_str(&credential.credential_data)
        .map_err(|_| "the otp credential's credentialData is not JSON".to_owned())?;
    if data["subType"].as_str().unwrap_or("totp") != "totp" {
        return Err("an HOTP (counter) factor cannot be carried over".into());
    }
    // Keycloak keeps the secret as text; the key is its UTF-8 bytes (the QR code shows
    // them in base32).
    let key = secret["value"]
        .as_str()
        .unwrap_or_default()
        .as_bytes()
        .to_vec();
    let key = trickle_password::totp::TotpSecret::from_bytes(key)
        .map_err(|_| "the otp secret is not 10 to 128 bytes".to_owned())?;
    let algorithm = match data["algorithm"].as_str().unwrap_or("HmacSHA1") {
        "HmacSHA1" => "SHA1",
        "HmacSHA256" => "SHA256",
        "HmacSHA512" => "SHA512",
        other => return Err(format!("otp algorithm {other:?} is not known")),
    };
    let small = |field: &str| {
        data[field]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0)
    };
    Ok(LegacyTotp {
        secret: key.expose_bytes().to_vec(),
        algorithm: algorithm.into(),
        digits: small("digits"),
        period_seconds: small("period"),
    })
}

/// One Keycloak user.
pub fn parse_keycloak_user(value: serde_json::Value, number: u64) -> Record {
    let parsed: KeycloakUser = serde_json::from_value(value).map_err(|e| Unreadable {
        legacy_id: format!("user {number}"),
        reason: format!("not a Keycloak user: {e}"),
    })?;
    let legacy_id = parsed.id;
    if legacy_id.is_empty() {
        return Err(Unreadable {
            legacy_id: format!("user {number}"),
            reason: "id is empty".into(),
        });
    }
    let mut hash = no_hash();
    let mut totp = None;
    for credential in &parsed.credentials {
        match credential.kind.as_str() {
            "password" => {
                hash = keycloak_password(credential).map_err(|why| (HashStatus::UnknownFormat, why))
            }
            "otp" => match keycloak_totp(credential) {
                Ok(factor) => totp = Some(factor),
                // Never a password-only user whose factor was lost on the way.
                Err(why) => {
                    return Err(Unreadable {
                        legacy_id,
                        reason: why,
                    });
                }
            },
            _ => {}
        }
    }
    let name = [parsed.first_name.as_deref(), parsed.last_name.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let user = LegacyUser {
        legacy_id,
        email: parsed.email.unwrap_or_default(),
        email_verified: parsed.email_verified,
        name,
        given_name: parsed.first_name.unwrap_or_default(),
        family_name: parsed.last_name.unwrap_or_default(),
        nickname: parsed.username.unwrap_or_default(),
        blocked: !parsed.enabled,
        roles: parsed.realm_roles,
        totp,
        ..LegacyUser::default()
    };
    Ok(record(user, hash))
}

/// Every record of `path`, in file order, handed to `each` (which may stop the reading by
/// answering false). I/O errors end the reading; records that cannot be read are handed
/// on as [`Unreadable`].
pub fn read_file(
    path: &std::path::Path,
    format: ImportFormat,
    options: &FileOptions,
    mut each: impl FnMut(Record, u64) -> bool,
) -> anyhow::Result<()> {
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    if matches!(format, ImportFormat::Firebase | ImportFormat::Keycloak) {
        // Both are one JSON document with a `users` array (a realm export has much more).
        #[derive(Deserialize)]
        struct Export {
            #[serde(default)]
            users: Vec<serde_json::Value>,
        }
        let export: Export = serde_json::from_reader(reader).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a {} export ({{\"users\": [...]}}): {e}",
                path.display(),
                format.as_str()
            )
        })?;
        for (index, user) in export.users.into_iter().enumerate() {
            let number = u64::try_from(index).unwrap_or(u64::MAX).saturating_add(1);
            let record = match format {
                ImportFormat::Firebase => {
                    parse_firebase_user(user, number, options.firebase.as_ref())
                }
                _ => parse_keycloak_user(user, number),
            };
            if !each(record, 0) {
                break;
            }
        }
        return Ok(());
    }
    let first = reader.fill_buf()?.iter().find(|b| !b.is_ascii_whitespace());
    if format == ImportFormat::Auth0 && first == Some(&b'[') {
        let users: Vec<serde_json::Value> = serde_json::from_reader(reader)
            .map_err(|e| anyhow::anyhow!("{} is not a JSON array of users: {e}", path.display()))?;
        for (index, user) in users.into_iter().enumerate() {
            let number = u64::try_from(index).unwrap_or(u64::MAX).saturating_add(1);
            if !each(parse_auth0_user(user, number), 0) {
                break;
            }
        }
        return Ok(());
    }
    let mut line = String::new();
    let mut line_number = 0u64;
    loop {
        line.clear();
        let read = reader.read_line(&mut line)?;
        if read == 0 {
            return Ok(());
        }
        line_number += 1;
        if line.trim().is_empty() {
            continue;
        }
        let record = match format {
            ImportFormat::Jsonl => parse_trickle_line(&line, line_number),
            ImportFormat::Auth0 | ImportFormat::Firebase | ImportFormat::Keycloak => {
                match serde_json::from_str(&line) {
                    Ok(value) => parse_auth0_user(value, line_number),
                    Err(e) => Err(Unreadable {
                        legacy_id: format!("line {line_number}"),
                        reason: format!("not JSON: {e}"),
                    }),
                }
            }
        };
        if !each(record, u64::try_from(read).unwrap_or(0)) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trickle_line_becomes_a_user_with_a_portable_hash() {
        let hash = trickle_password::legacy_formats::bcrypt("pw", 4).expect("bcrypt");
        let line = format!(
            r#"{{"legacy_id": 42, "email": "Ann@Example.com", "password_hash": "{hash}", "roles": ["admin"], "totp": {{"secret": "JBSWY3DPEHPK3PXP JBSWY3DPEHPK3PXP"}}}}"#
        );
        let record = parse_trickle_line(&line, 1).expect("readable");
        assert_eq!(record.hash_status, i32::from(HashStatus::Portable));
        assert_eq!(record.hash_scheme, "bcrypt");
        let user = record.user.expect("user");
        assert_eq!(user.legacy_id, "42");
        assert_eq!(user.roles, ["admin"]);
        assert_eq!(user.totp.expect("factor").secret.len(), 20);
    }

    #[test]
    fn bad_lines_are_unreadable_with_a_reason_and_no_content() {
        for (line, why) in [
            ("not json", "not a Trickle user"),
            (r#"{"email": "a@b.c"}"#, "legacy_id"),
            (r#"{"legacy_id": "", "email": "a@b.c"}"#, "legacy_id"),
            (
                r#"{"legacy_id": "1", "email": "a@b.c", "totp": {"secret": "1!"}}"#,
                "base32",
            ),
            (
                r#"{"legacy_id": "1", "email": "a@b.c", "surprise": 1}"#,
                "unknown field",
            ),
        ] {
            let error = parse_trickle_line(line, 7).expect_err(line);
            assert!(error.reason.contains(why), "{line}: {error:?}");
        }
        let no_hash = parse_trickle_line(r#"{"legacy_id": "1", "email": "a@b.c"}"#, 1)
            .expect("a user without a hash is still a user");
        assert_eq!(no_hash.hash_status, i32::from(HashStatus::Empty));
        let garbage = parse_trickle_line(
            r#"{"legacy_id": "1", "email": "a@b.c", "password_hash": "secret-ish-garbage"}"#,
            1,
        )
        .expect("user");
        assert_eq!(garbage.hash_status, i32::from(HashStatus::UnknownFormat));
        assert!(!garbage.unsupported_reason.contains("ish-garbage"));
    }
}
