//! Stored password hashes in every format legacy apps commonly used, parsed once into a typed
//! value and verified in constant time.
//!
//! Self-describing strings (`$2b$…`, `$argon2id$…`, `pbkdf2_sha256$…`, `{SSHA}…`, …) are
//! recognized by `HashFormat::Auto`. Bare digests (hex or base64 of MD5/SHA-x, optionally
//! salted from another column) look alike, so Auto refuses to guess them: name them with
//! `salted_digest` and a [`DigestTemplate`], or `aspnet_membership_sha1`.
//!
//! This file holds the types and the one dispatch over every family (parse, verify, cost,
//! upgrade) — longer than the others on purpose, so that adding a family shows every place
//! it must be handled in one match each. Each family's parsing and hashing is in a file of
//! its own (`bcrypt_hash`, `scrypt_hash`, `pbkdf2_hash`, `aspnet`, `phpass`, `crypt`, `ldap`,
//! `digest`); the tests are in `tests.rs`.

use crate::argon2id::{Argon2Config, Argon2Hash, Scratch};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use serde::Deserialize;
use sha2::Digest as _;
use subtle::ConstantTimeEq;

mod aspnet;
mod bcrypt_hash;
mod crypt;
mod digest;
mod exports;
mod ldap;
mod pbkdf2_hash;
mod phpass;
mod scrypt_hash;
#[cfg(test)]
mod tests;

use aspnet::*;
use bcrypt_hash::*;
use crypt::*;
use digest::*;
pub use exports::{Auth0CustomHash, auth0_custom_hash};
use ldap::*;
use pbkdf2_hash::*;
use phpass::*;
use scrypt_hash::*;

/// Which format the stored hashes are in: named, or detected from each string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashFormat {
    /// Detect each string's format from its prefix.
    #[default]
    Auto,
    /// `$2a$`, `$2b$`, `$2y$` bcrypt.
    Bcrypt,
    /// `$argon2id$`, `$argon2i$`, `$argon2d$` PHC strings.
    Argon2,
    /// `$scrypt$ln=…,r=…,p=…$salt$hash` PHC strings.
    Scrypt,
    /// `$pbkdf2-sha256$`, `$pbkdf2-sha512$`, `$pbkdf2$` (SHA-1) PHC strings (passlib).
    Pbkdf2,
    /// Django `pbkdf2_sha256$…`.
    DjangoPbkdf2Sha256,
    /// Django `pbkdf2_sha1$…`.
    DjangoPbkdf2Sha1,
    /// Django `bcrypt_sha256$…`.
    DjangoBcryptSha256,
    /// Django `argon2$…`.
    DjangoArgon2,
    /// ASP.NET Identity v2 (PBKDF2-SHA1, 1000 iterations) and v3 base64 blobs.
    AspnetIdentity,
    /// phpass `$P$` / `$H$` (WordPress before 6.8, phpBB).
    Phpass,
    /// Drupal 7 `$S$`.
    Drupal7,
    /// WordPress 6.8+ `$wp$2y$…`.
    WordpressBcrypt,
    /// crypt(3) `$6$`, `$5$`, `$1$`.
    Crypt,
    /// LDAP RFC 2307 `{SSHA}`, `{SHA}`, `{SSHA256}`, `{SSHA512}`, `{MD5}`, `{SMD5}`.
    Ldap,
    /// ASP.NET Membership `PasswordFormat = 1`: base64 SHA-1 over salt + UTF-16LE password;
    /// the salt (base64) comes from the `password_salt` column.
    AspnetMembershipSha1,
    /// A digest of the password and an optional salt column, described by a template.
    SaltedDigest,
}

/// How an app built a salted digest: `[legacy.salted_digest]`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestTemplate {
    /// `md5`, `sha1`, `sha256` or `sha512`.
    pub algorithm: DigestAlgorithm,
    /// Where the salt goes: `before` or `after` the password.
    #[serde(default)]
    pub salt_position: SaltPosition,
    /// How the stored digest is written: `hex` or `base64`.
    #[serde(default)]
    pub encoding: DigestEncoding,
    /// With a key, the digest is an HMAC under it. Such hashes can be checked by the
    /// connector but not handed to the store (the key stays with the connector).
    #[serde(default)]
    pub hmac_key: String,
}

impl std::fmt::Debug for DigestTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestTemplate")
            .field("algorithm", &self.algorithm)
            .field("salt_position", &self.salt_position)
            .field("encoding", &self.encoding)
            .field("hmac_key", &crate::redacted(&self.hmac_key))
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestAlgorithm {
    Md5,
    Sha1,
    Sha256,
    Sha512,
    // Found in other identity providers' exports (Auth0's custom hashes).
    Md4,
    Sha224,
    Sha384,
    Ripemd160,
    Whirlpool,
}

/// How a digest's password was turned into bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PasswordBytes {
    Utf8,
    /// ASP.NET Membership, and Node's `utf16le`/`ucs2`.
    Utf16Le,
    /// Node's `latin1`/`binary`: one byte per character; a password with a character past
    /// U+00FF cannot have been hashed this way, so it never matches.
    Latin1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaltPosition {
    #[default]
    Before,
    After,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestEncoding {
    #[default]
    Hex,
    Base64,
}

/// The scheme a stored hash uses: a bounded set, safe for logs and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashScheme {
    Argon2id,
    Argon2i,
    Argon2d,
    Bcrypt,
    Scrypt,
    FirebaseScrypt,
    Pbkdf2Sha1,
    Pbkdf2Sha256,
    Pbkdf2Sha512,
    DjangoBcryptSha256,
    AspnetIdentityV2,
    AspnetIdentityV3,
    Phpass,
    Drupal7,
    WordpressBcrypt,
    Sha512Crypt,
    Sha256Crypt,
    Md5Crypt,
    Ldap,
    AspnetMembershipSha1,
    SaltedDigest,
}

impl HashScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            HashScheme::Argon2id => "argon2id",
            HashScheme::Argon2i => "argon2i",
            HashScheme::Argon2d => "argon2d",
            HashScheme::Bcrypt => "bcrypt",
            HashScheme::Scrypt => "scrypt",
            HashScheme::FirebaseScrypt => "firebase_scrypt",
            HashScheme::Pbkdf2Sha1 => "pbkdf2_sha1",
            HashScheme::Pbkdf2Sha256 => "pbkdf2_sha256",
            HashScheme::Pbkdf2Sha512 => "pbkdf2_sha512",
            HashScheme::DjangoBcryptSha256 => "django_bcrypt_sha256",
            HashScheme::AspnetIdentityV2 => "aspnet_identity_v2",
            HashScheme::AspnetIdentityV3 => "aspnet_identity_v3",
            HashScheme::Phpass => "phpass",
            HashScheme::Drupal7 => "drupal7",
            HashScheme::WordpressBcrypt => "wordpress_bcrypt",
            HashScheme::Sha512Crypt => "sha512_crypt",
            HashScheme::Sha256Crypt => "sha256_crypt",
            HashScheme::Md5Crypt => "md5_crypt",
            HashScheme::Ldap => "ldap",
            HashScheme::AspnetMembershipSha1 => "aspnet_membership_sha1",
            HashScheme::SaltedDigest => "salted_digest",
        }
    }
}

/// A stored hash that could not be parsed. Carries only the first characters of the string,
/// enough for an operator to recognize the format and never enough to leak the hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored password hash starting with {prefix:?} is not a valid {expected} hash")]
pub struct ParseHashError {
    pub prefix: String,
    pub expected: &'static str,
}

impl ParseHashError {
    fn new(stored: &str, expected: &'static str) -> Self {
        // At most 4 characters: "$2b$", "$arg", "pbkd" identify a format; more would start
        // revealing salt or cost details of a real user's hash.
        Self {
            prefix: stored.chars().take(4).collect(),
            expected,
        }
    }
}

/// Parameters a stored hash may not exceed: a stored hash is data, and a corrupted or hostile
/// one must not make a hashing thread spin for minutes or allocate without bound.
const MAX_ITERATIONS: u32 = 10_000_000;
const MAX_SCRYPT_MEMORY: u64 = 1 << 30;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Prf {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BcryptInput {
    /// The password as it is.
    Plain,
    /// Django's bcrypt_sha256: the hex SHA-256 of the password.
    Sha256Hex,
    /// WordPress 6.8: base64 of HMAC-SHA384 keyed "wp-sha384".
    WordpressHmacSha384,
}

/// `[legacy.hash_limits]`: the most verifying one stored hash may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HashLimits {
    /// Memory of one verification (argon2 `m`, scrypt 128·N·r), in KiB.
    pub max_memory_kib: u64,
    /// Rounds of an iterated hash (PBKDF2 iterations, crypt `rounds=`, phpass 2^n, argon2
    /// `t`, scrypt N).
    pub max_iterations: u64,
    /// bcrypt's cost factor (2^cost rounds).
    pub max_bcrypt_cost: u32,
    /// argon2's and scrypt's parallelism `p`.
    pub max_parallelism: u32,
}

impl Default for HashLimits {
    /// 64 MiB, 5 million rounds, bcrypt 16: above every default of the apps Trickle knows
    /// (Django 5.2's 1,000,000 PBKDF2 rounds, Laravel's bcrypt 12, argon2's 19–64 MiB), and
    /// within the connector's memory limit with two hashing threads.
    fn default() -> Self {
        Self {
            max_memory_kib: 64 * 1024,
            max_iterations: 5_000_000,
            max_bcrypt_cost: 16,
            max_parallelism: 8,
        }
    }
}

/// What verifying a stored hash costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HashCost {
    pub memory_kib: u64,
    /// Rounds of the underlying function, all of them: PBKDF2 iterations times the blocks
    /// its output length needs, scrypt N times p, argon2 t.
    pub iterations: u64,
    pub bcrypt_cost: Option<u32>,
    pub parallelism: u32,
}

impl HashCost {
    /// Why this cost is over `limits`, if it is (safe to log: parameters only).
    pub fn exceeds(&self, limits: &HashLimits) -> Option<String> {
        if self.memory_kib > limits.max_memory_kib {
            return Some(format!(
                "needs {} KiB to verify, above max_memory_kib = {}",
                self.memory_kib, limits.max_memory_kib
            ));
        }
        if self.iterations > limits.max_iterations {
            return Some(format!(
                "needs {} rounds, above max_iterations = {}",
                self.iterations, limits.max_iterations
            ));
        }
        if self.parallelism > limits.max_parallelism {
            return Some(format!(
                "has parallelism {}, above max_parallelism = {}",
                self.parallelism, limits.max_parallelism
            ));
        }
        match self.bcrypt_cost {
            Some(cost) if cost > limits.max_bcrypt_cost => Some(format!(
                "has bcrypt cost {cost}, above max_bcrypt_cost = {}",
                limits.max_bcrypt_cost
            )),
            _ => None,
        }
    }
}

/// The cost digits of a bcrypt string (`$2b$12$…` → 12).
fn bcrypt_cost(hash: &str) -> Option<u32> {
    hash.split('$').nth(2)?.parse().ok()
}

/// A parsed stored hash.
#[derive(Clone)]
pub struct StoredHash {
    inner: Inner,
    /// A self-contained string the user-store can keep and verify later (backfill); `None`
    /// when the hash needs a secret only the connector holds.
    portable: Option<String>,
}

#[derive(Clone)]
enum Inner {
    Argon2(Argon2Hash),
    Bcrypt {
        hash: String,
        input: BcryptInput,
    },
    Scrypt {
        params: scrypt::Params,
        salt: Vec<u8>,
        expected: Vec<u8>,
        /// Firebase's modified scrypt: the derived key encrypts the project's signer key.
        firebase: Option<FirebaseScrypt>,
    },
    Pbkdf2 {
        prf: Prf,
        iterations: u32,
        salt: Vec<u8>,
        expected: Vec<u8>,
        scheme: HashScheme,
    },
    Phpass {
        drupal: bool,
        count_log2: u32,
        salt: String,
        expected: String,
    },
    // (the ident, `$P$`, `$H$` or `$S$`, is the first three characters of `expected`)
    ShaCrypt {
        hash: String,
        sha512: bool,
    },
    Md5Crypt {
        salt: String,
        expected: String,
    },
    Digest(DigestHash),
}

#[derive(Clone)]
struct DigestHash {
    algorithm: DigestAlgorithm,
    salt: Vec<u8>,
    salt_first: bool,
    password_bytes: PasswordBytes,
    hmac_key: Option<Vec<u8>>,
    expected: Vec<u8>,
    scheme: HashScheme,
}

impl std::fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredHash({})", self.scheme().as_str())
    }
}

fn b64_any(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    STANDARD_NO_PAD.decode(s).ok()
}

/// passlib's "adapted base64": `.` instead of `+`, no padding.
fn ab64(s: &str) -> Option<Vec<u8>> {
    b64_any(&s.replace('.', "+"))
}

const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a stored hash will not be verified as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unverifiable {
    /// Not a hash of the expected format (the error shows its first characters only).
    #[error(transparent)]
    Unreadable(ParseHashError),
    /// Readable, but verifying it would cost more than the limits allow.
    #[error("the stored {} hash {why}", scheme.as_str())]
    OverCostLimits { scheme: HashScheme, why: String },
}

impl StoredHash {
    /// [`StoredHash::parse_with`], then held against `limits`: a stored hash is data, and
    /// one that would take a hashing thread for minutes (or a pod past its memory limit) is
    /// refused rather than verified. The one check every reader of legacy hashes makes.
    pub fn parse_within(
        stored: &str,
        salt: Option<&str>,
        format: HashFormat,
        template: Option<&DigestTemplate>,
        limits: &HashLimits,
    ) -> Result<Self, Unverifiable> {
        let parsed =
            Self::parse_with(stored, salt, format, template).map_err(Unverifiable::Unreadable)?;
        match parsed.cost().exceeds(limits) {
            Some(why) => Err(Unverifiable::OverCostLimits {
                scheme: parsed.scheme(),
                why,
            }),
            None => Ok(parsed),
        }
    }

    /// Parse `stored` as `format` (self-describing formats only; see [`StoredHash::parse_with`]).
    pub fn parse(stored: &str, format: HashFormat) -> Result<Self, ParseHashError> {
        Self::parse_with(stored, None, format, None)
    }

    /// Parse `stored`, with the salt column and digest template the format may need.
    pub fn parse_with(
        stored: &str,
        salt: Option<&str>,
        format: HashFormat,
        template: Option<&DigestTemplate>,
    ) -> Result<Self, ParseHashError> {
        let format = match format {
            HashFormat::Auto => Self::detect(stored).ok_or_else(|| {
                ParseHashError::new(stored, "recognized (name bare digests with hash_format)")
            })?,
            named => named,
        };
        let self_contained = |inner: Inner| StoredHash {
            inner,
            portable: Some(stored.to_owned()),
        };
        let parsed =
            match format {
                HashFormat::Auto => None,
                HashFormat::Argon2 => Argon2Hash::parse(stored)
                    .map(Inner::Argon2)
                    .map(self_contained),
                HashFormat::DjangoArgon2 => stored
                    .strip_prefix("argon2")
                    .and_then(Argon2Hash::parse)
                    .map(Inner::Argon2)
                    .map(self_contained),
                HashFormat::Bcrypt => parse_bcrypt(stored).map(|hash| {
                    self_contained(Inner::Bcrypt {
                        hash,
                        input: BcryptInput::Plain,
                    })
                }),
                HashFormat::DjangoBcryptSha256 => stored
                    .strip_prefix("bcrypt_sha256$")
                    .and_then(parse_bcrypt)
                    .map(|hash| {
                        self_contained(Inner::Bcrypt {
                            hash,
                            input: BcryptInput::Sha256Hex,
                        })
                    }),
                HashFormat::WordpressBcrypt => stored
                    .strip_prefix("$wp")
                    .and_then(parse_bcrypt)
                    .map(|hash| {
                        self_contained(Inner::Bcrypt {
                            hash,
                            input: BcryptInput::WordpressHmacSha384,
                        })
                    }),
                HashFormat::Scrypt => parse_scrypt(stored).map(self_contained),
                HashFormat::Pbkdf2 => parse_pbkdf2_phc(stored).map(self_contained),
                HashFormat::DjangoPbkdf2Sha256 => {
                    parse_django_pbkdf2(stored, "pbkdf2_sha256", Prf::Sha256).map(self_contained)
                }
                HashFormat::DjangoPbkdf2Sha1 => {
                    parse_django_pbkdf2(stored, "pbkdf2_sha1", Prf::Sha1).map(self_contained)
                }
                HashFormat::AspnetIdentity => parse_aspnet_identity(stored).map(self_contained),
                HashFormat::Phpass => parse_phpass(stored, false).map(self_contained),
                HashFormat::Drupal7 => parse_phpass(stored, true).map(self_contained),
                HashFormat::Crypt => parse_crypt(stored).map(self_contained),
                HashFormat::Ldap => parse_ldap(stored).map(self_contained),
                HashFormat::AspnetMembershipSha1 => parse_membership(stored, salt),
                // The store's own form (from a backfill) carries everything; a legacy column
                // needs the template.
                HashFormat::SaltedDigest if stored.starts_with("$trickle-digest$") => {
                    parse_portable_digest(stored)
                }
                HashFormat::SaltedDigest => match template {
                    Some(template) => parse_template(stored, salt, template),
                    None => {
                        return Err(ParseHashError {
                            prefix: String::new(),
                            expected: "salted digest ([legacy.salted_digest] is not configured)",
                        });
                    }
                },
            };
        parsed.ok_or_else(|| ParseHashError::new(stored, format_name(format)))
    }

    fn detect(stored: &str) -> Option<HashFormat> {
        let starts = |p: &str| stored.starts_with(p);
        let upper: String = stored
            .chars()
            .take(10)
            .collect::<String>()
            .to_ascii_uppercase();
        Some(
            if ["$2a$", "$2b$", "$2y$", "$2x$"].iter().any(|p| starts(p)) {
                HashFormat::Bcrypt
            } else if starts("$argon2") {
                HashFormat::Argon2
            } else if starts("$scrypt$") || starts("$firebase-scrypt$") {
                HashFormat::Scrypt
            } else if starts("$pbkdf2") {
                HashFormat::Pbkdf2
            } else if starts("pbkdf2_sha256$") {
                HashFormat::DjangoPbkdf2Sha256
            } else if starts("pbkdf2_sha1$") {
                HashFormat::DjangoPbkdf2Sha1
            } else if starts("bcrypt_sha256$") {
                HashFormat::DjangoBcryptSha256
            } else if starts("argon2$") {
                HashFormat::DjangoArgon2
            } else if starts("$P$") || starts("$H$") {
                HashFormat::Phpass
            } else if starts("$S$") {
                HashFormat::Drupal7
            } else if starts("$wp$") {
                HashFormat::WordpressBcrypt
            } else if starts("$6$") || starts("$5$") || starts("$1$") {
                HashFormat::Crypt
            } else if starts("{")
                && [
                    "{SSHA}",
                    "{SHA}",
                    "{SSHA256}",
                    "{SSHA512}",
                    "{MD5}",
                    "{SMD5}",
                ]
                .iter()
                .any(|p| upper.starts_with(p))
            {
                HashFormat::Ldap
            } else if starts("$trickle-digest$") {
                HashFormat::SaltedDigest
            } else if looks_like_aspnet_identity(stored) {
                HashFormat::AspnetIdentity
            } else {
                return None;
            },
        )
    }

    pub fn scheme(&self) -> HashScheme {
        match &self.inner {
            Inner::Argon2(h) => match h.algorithm {
                argon2::Algorithm::Argon2id => HashScheme::Argon2id,
                argon2::Algorithm::Argon2i => HashScheme::Argon2i,
                argon2::Algorithm::Argon2d => HashScheme::Argon2d,
            },
            Inner::Bcrypt {
                input: BcryptInput::Plain,
                ..
            } => HashScheme::Bcrypt,
            Inner::Bcrypt {
                input: BcryptInput::Sha256Hex,
                ..
            } => HashScheme::DjangoBcryptSha256,
            Inner::Bcrypt {
                input: BcryptInput::WordpressHmacSha384,
                ..
            } => HashScheme::WordpressBcrypt,
            Inner::Scrypt { firebase: None, .. } => HashScheme::Scrypt,
            Inner::Scrypt {
                firebase: Some(_), ..
            } => HashScheme::FirebaseScrypt,
            Inner::Pbkdf2 { scheme, .. } => *scheme,
            Inner::Phpass { drupal: false, .. } => HashScheme::Phpass,
            Inner::Phpass { drupal: true, .. } => HashScheme::Drupal7,
            Inner::ShaCrypt { sha512: true, .. } => HashScheme::Sha512Crypt,
            Inner::ShaCrypt { sha512: false, .. } => HashScheme::Sha256Crypt,
            Inner::Md5Crypt { .. } => HashScheme::Md5Crypt,
            Inner::Digest(d) => d.scheme,
        }
    }

    /// What verifying this hash costs, to hold against [`HashLimits`].
    pub fn cost(&self) -> HashCost {
        match &self.inner {
            Inner::Argon2(h) => HashCost {
                memory_kib: u64::from(h.params.m_cost()),
                iterations: u64::from(h.params.t_cost()),
                parallelism: h.params.p_cost(),
                ..HashCost::default()
            },
            Inner::Bcrypt { hash, .. } => HashCost {
                memory_kib: 4,
                bcrypt_cost: bcrypt_cost(hash),
                ..HashCost::default()
            },
            Inner::Scrypt { params, .. } => {
                let n = 1u64 << params.log_n();
                HashCost {
                    memory_kib: 128 * n * u64::from(params.r()) / 1024,
                    iterations: n.saturating_mul(u64::from(params.p())),
                    parallelism: params.p(),
                    ..HashCost::default()
                }
            }
            Inner::Pbkdf2 {
                prf,
                iterations,
                expected,
                ..
            } => {
                // Each block of output is a full run of the iterations.
                let block = match prf {
                    Prf::Sha1 => 20,
                    Prf::Sha256 => 32,
                    Prf::Sha512 => 64,
                };
                let blocks = expected.len().div_ceil(block).max(1) as u64;
                HashCost {
                    iterations: u64::from(*iterations).saturating_mul(blocks),
                    ..HashCost::default()
                }
            }
            Inner::Phpass { count_log2, .. } => HashCost {
                iterations: 1u64 << (*count_log2).min(63),
                ..HashCost::default()
            },
            Inner::ShaCrypt { hash, .. } => HashCost {
                iterations: hash
                    .get(3..)
                    .and_then(|rest| rest.strip_prefix("rounds="))
                    .and_then(|rest| rest.split('$').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(5000),
                ..HashCost::default()
            },
            Inner::Md5Crypt { .. } => HashCost {
                iterations: 1000,
                ..HashCost::default()
            },
            Inner::Digest(_) => HashCost::default(),
        }
    }

    /// Whether a successful login should re-hash the password with the current argon2id
    /// parameters.
    pub fn needs_upgrade(&self, config: &Argon2Config) -> bool {
        match &self.inner {
            Inner::Argon2(h) => config.is_weaker(h.algorithm, h.version, &h.params),
            _ => true,
        }
    }

    /// A self-contained form the user-store can keep and verify natively (backfill), or
    /// `None` when verifying needs a secret the connector holds (an HMAC key).
    pub fn portable(&self) -> Option<&str> {
        self.portable.as_deref()
    }

    /// Check a password outside the hashing pool (tools and tests; services use
    /// [`crate::HashPool`], which keeps this off the async threads).
    pub fn verify_password(&self, password: &str) -> bool {
        self.verify(&mut Scratch::default(), 0, password.as_bytes())
    }

    pub(crate) fn verify(
        &self,
        scratch: &mut Scratch,
        keep_blocks: usize,
        password: &[u8],
    ) -> bool {
        match &self.inner {
            Inner::Argon2(h) => h.verify(scratch, keep_blocks, password),
            Inner::Bcrypt { hash, input } => {
                // bcrypt::verify compares in constant time and, like the PHP/Python/C
                // implementations legacy apps used, only looks at the first 72 bytes.
                let prepared = match input {
                    BcryptInput::Plain => password.to_vec(),
                    BcryptInput::Sha256Hex => hex(&sha2::Sha256::digest(password)).into_bytes(),
                    BcryptInput::WordpressHmacSha384 => STANDARD
                        .encode(hmac::<sha2::Sha384>(b"wp-sha384", password))
                        .into_bytes(),
                };
                bcrypt::verify(prepared, hash).unwrap_or(false)
            }
            Inner::Scrypt {
                params,
                salt,
                expected,
                firebase: None,
            } => {
                let mut out = vec![0u8; expected.len()];
                scrypt::scrypt(password, salt, params, &mut out).is_ok()
                    && bool::from(out.ct_eq(expected))
            }
            Inner::Scrypt {
                params,
                salt,
                expected,
                firebase: Some(firebase),
            } => firebase.verify(params, salt, expected, password),
            Inner::Pbkdf2 {
                prf,
                iterations,
                salt,
                expected,
                ..
            } => {
                let mut out = vec![0u8; expected.len()];
                match prf {
                    Prf::Sha1 => {
                        pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, salt, *iterations, &mut out)
                    }
                    Prf::Sha256 => {
                        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, *iterations, &mut out)
                    }
                    Prf::Sha512 => {
                        pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password, salt, *iterations, &mut out)
                    }
                }
                bool::from(out.ct_eq(expected))
            }
            Inner::Phpass {
                drupal,
                count_log2,
                salt,
                expected,
            } => {
                let computed = phpass(password, &expected[..3], salt, *count_log2, *drupal);
                bool::from(computed.as_bytes().ct_eq(expected.as_bytes()))
            }
            Inner::ShaCrypt { hash, .. } => {
                use sha_crypt::PasswordVerifier as _;
                sha_crypt::ShaCrypt::default()
                    .verify_password(password, hash.as_str())
                    .is_ok()
            }
            Inner::Md5Crypt { salt, expected } => bool::from(
                md5_crypt(password, salt.as_bytes())
                    .as_bytes()
                    .ct_eq(expected.as_bytes()),
            ),
            Inner::Digest(d) => d.verify(password),
        }
    }
}

fn format_name(format: HashFormat) -> &'static str {
    match format {
        HashFormat::Auto => "recognized",
        HashFormat::Bcrypt => "bcrypt",
        HashFormat::Argon2 => "argon2 PHC",
        HashFormat::Scrypt => "scrypt PHC",
        HashFormat::Pbkdf2 => "PBKDF2 PHC",
        HashFormat::DjangoPbkdf2Sha256 => "Django pbkdf2_sha256",
        HashFormat::DjangoPbkdf2Sha1 => "Django pbkdf2_sha1",
        HashFormat::DjangoBcryptSha256 => "Django bcrypt_sha256",
        HashFormat::DjangoArgon2 => "Django argon2",
        HashFormat::AspnetIdentity => "ASP.NET Identity",
        HashFormat::Phpass => "phpass",
        HashFormat::Drupal7 => "Drupal 7",
        HashFormat::WordpressBcrypt => "WordPress bcrypt",
        HashFormat::Crypt => "crypt(3)",
        HashFormat::Ldap => "LDAP",
        HashFormat::AspnetMembershipSha1 => {
            "ASP.NET Membership SHA-1 (with a password_salt column)"
        }
        HashFormat::SaltedDigest => "salted digest",
    }
}

/// The four fields of a `$id$params$salt$hash` string (PHC and the store's own forms):
/// exactly four, after an empty first one.
fn dollar_fields(stored: &str) -> Option<(&str, &str, &str, &str)> {
    let mut parts = stored.split('$');
    let ("", Some(id), Some(params), Some(salt), Some(hash), None) = (
        parts.next()?,
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    Some((id, params, salt, hash))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn hmac<D>(key: &[u8], message: &[u8]) -> Vec<u8>
where
    D: hmac::digest::Digest + hmac::digest::block_api::BlockSizeUser + Clone,
    hmac::SimpleHmac<D>: hmac::KeyInit + hmac::Mac,
{
    use hmac::{KeyInit, Mac as _};
    match <hmac::SimpleHmac<D> as KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}
