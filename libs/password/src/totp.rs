//! RFC 6238 time-based one-time passwords: the second factor users bring from their
//! authenticator apps. The arithmetic is `totp-rs`'s; what is ours is the policy: which
//! parameters are accepted, ±1 step of clock skew, codes compared as the step they belong to
//! (so a caller can refuse a step already used), and secrets that never print.

use zeroize::Zeroizing;

/// The HMAC of a factor. SHA-1 is what nearly every authenticator app implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TotpAlgorithm {
    #[default]
    Sha1,
    Sha256,
    Sha512,
}

impl TotpAlgorithm {
    /// As in otpauth URIs: `SHA1`, `SHA256`, `SHA512`.
    pub fn as_str(self) -> &'static str {
        match self {
            TotpAlgorithm::Sha1 => "SHA1",
            TotpAlgorithm::Sha256 => "SHA256",
            TotpAlgorithm::Sha512 => "SHA512",
        }
    }

    /// `SHA1`, `sha-256`, `HmacSHA512`… (the spellings legacy apps store).
    pub fn parse(name: &str) -> Option<Self> {
        let name: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_uppercase();
        match name.trim_start_matches("HMAC") {
            "SHA1" => Some(TotpAlgorithm::Sha1),
            "SHA256" => Some(TotpAlgorithm::Sha256),
            "SHA512" => Some(TotpAlgorithm::Sha512),
            _ => None,
        }
    }

    fn library(self) -> totp_rs::Algorithm {
        match self {
            TotpAlgorithm::Sha1 => totp_rs::Algorithm::SHA1,
            TotpAlgorithm::Sha256 => totp_rs::Algorithm::SHA256,
            TotpAlgorithm::Sha512 => totp_rs::Algorithm::SHA512,
        }
    }
}

/// How codes are derived from a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotpParams {
    pub algorithm: TotpAlgorithm,
    /// 6 to 8.
    pub digits: u32,
    /// Seconds per step (30 almost everywhere).
    pub period_seconds: u32,
}

impl Default for TotpParams {
    fn default() -> Self {
        Self {
            algorithm: TotpAlgorithm::Sha1,
            digits: 6,
            period_seconds: 30,
        }
    }
}

/// Why a factor cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    #[error("a TOTP code has 6 to 8 digits, not {0}")]
    Digits(u32),
    #[error("a TOTP period is 1 to 3600 seconds, not {0}")]
    Period(u32),
    #[error("a TOTP secret must be 10 to 128 bytes, not {0}")]
    SecretLength(usize),
    #[error("the TOTP secret is not valid {0}")]
    Encoding(&'static str),
    #[error("unknown TOTP algorithm (SHA1, SHA256 or SHA512)")]
    Algorithm,
    #[error("cannot build the otpauth URI: {0}")]
    Uri(String),
    #[error("no random numbers: {0}")]
    Random(String),
}

impl TotpParams {
    pub fn check(&self) -> Result<(), TotpError> {
        if !(6..=8).contains(&self.digits) {
            return Err(TotpError::Digits(self.digits));
        }
        if !(1..=3600).contains(&self.period_seconds) {
            return Err(TotpError::Period(self.period_seconds));
        }
        Ok(())
    }
}

/// A factor's shared secret (raw bytes). Its `Debug` prints nothing; wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

/// Legacy apps store secrets of 80 bits (Google Authenticator's classic 16 base32
/// characters) and up; RFC 4226 recommends 160, which new secrets have.
const MIN_SECRET_BYTES: usize = 10;
const MAX_SECRET_BYTES: usize = 128;
const NEW_SECRET_BYTES: usize = 20;

impl TotpSecret {
    /// 160 random bits.
    pub fn generate() -> Result<Self, TotpError> {
        let mut bytes = Zeroizing::new(vec![0u8; NEW_SECRET_BYTES]);
        getrandom::fill(&mut bytes).map_err(|e| TotpError::Random(e.to_string()))?;
        Ok(Self(bytes))
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, TotpError> {
        let bytes = Zeroizing::new(bytes);
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&bytes.len()) {
            return Err(TotpError::SecretLength(bytes.len()));
        }
        Ok(Self(bytes))
    }

    /// RFC 4648 base32, case-insensitive, with or without padding, spaces and dashes
    /// ignored (as apps display secrets in groups).
    pub fn from_base32(text: &str) -> Result<Self, TotpError> {
        let cleaned: String = text
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '='))
            .collect::<String>()
            .to_ascii_uppercase();
        let secret = totp_rs::Secret::try_from_base32(&cleaned)
            .map_err(|_| TotpError::Encoding("base32"))?;
        Self::from_bytes(secret.as_ref().to_vec())
    }

    /// Hexadecimal (django-otp's `key`).
    pub fn from_hex(text: &str) -> Result<Self, TotpError> {
        let text = text.trim();
        if !text.len().is_multiple_of(2) {
            return Err(TotpError::Encoding("hex"));
        }
        let bytes = (0..text.len())
            .step_by(2)
            .map(|i| {
                text.get(i..i + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or(TotpError::Encoding("hex"))?;
        Self::from_bytes(bytes)
    }

    pub fn expose_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Base32 without padding, as authenticator apps take it.
    pub fn to_base32(&self) -> Zeroizing<String> {
        Zeroizing::new(
            totp_rs::Secret::from(self.0.to_vec())
                .to_base32()
                .trim_end_matches('=')
                .to_owned(),
        )
    }
}

/// Steps of clock skew accepted either side of now (RFC 6238 §5.2's recommendation).
pub const SKEW_STEPS: u64 = 1;

/// A factor: a secret and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Totp {
    pub secret: TotpSecret,
    pub params: TotpParams,
}

impl Totp {
    pub fn new(secret: TotpSecret, params: TotpParams) -> Result<Self, TotpError> {
        params.check()?;
        Ok(Self { secret, params })
    }

    fn library(&self) -> totp_rs::Totp {
        totp_rs::Builder::new()
            .with_algorithm(self.params.algorithm.library())
            .with_digits(u8::try_from(self.params.digits).unwrap_or(6))
            .with_step_duration(u64::from(self.params.period_seconds))
            .with_skew(0)
            .with_secret(self.secret.0.to_vec())
            .build_noncompliant()
    }

    /// The step (time / period) that `unix_seconds` falls in.
    pub fn step_at(&self, unix_seconds: u64) -> u64 {
        unix_seconds / u64::from(self.params.period_seconds.max(1))
    }

    /// The code for the step `unix_seconds` falls in.
    pub fn code_at(&self, unix_seconds: u64) -> String {
        self.library().generate(unix_seconds).to_string()
    }

    /// The step `code` belongs to, if it is the code of the current step or one step either
    /// side. Compared in constant time by the library. The caller must refuse a step at or
    /// below the last one it accepted: a code is good for one login.
    pub fn verify(&self, code: &str, unix_seconds: u64) -> Option<u64> {
        if !is_code(code, self.params.digits) {
            return None;
        }
        let totp = self.library();
        let now = self.step_at(unix_seconds);
        let period = u64::from(self.params.period_seconds);
        // Newest first: with two matching steps (never in practice), the later one is used up.
        // Checked: a time near the end of u64 (a corrupt clock, a fuzzer) must not overflow.
        (now.saturating_sub(SKEW_STEPS)..=now.saturating_add(SKEW_STEPS))
            .rev()
            .find(|step| {
                step.checked_mul(period)
                    .is_some_and(|at| totp.check(code, at).is_some())
            })
    }

    /// `otpauth://totp/ISSUER:ACCOUNT?secret=…` (Key Uri Format), for a QR code.
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> Result<String, TotpError> {
        // The format reserves ':' as the separator of issuer and account.
        let clean = |s: &str| s.replace(':', " ");
        totp_rs::Builder::new()
            .with_algorithm(self.params.algorithm.library())
            .with_digits(u8::try_from(self.params.digits).unwrap_or(6))
            .with_step_duration(u64::from(self.params.period_seconds))
            .with_secret(self.secret.0.to_vec())
            .with_issuer(Some(clean(issuer)))
            .with_account_name(clean(account))
            .build_noncompliant()
            .to_url()
            .map_err(|e| TotpError::Uri(e.to_string()))
    }
}

/// Whether `code` looks like a code of `digits` digits (spaces allowed between groups).
pub fn is_code(code: &str, digits: u32) -> bool {
    code.len() == digits as usize && code.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B: the test secret is "12345678901234567890" (ASCII) for SHA-1,
    /// 32 bytes for SHA-256 and 64 for SHA-512; 8 digits, 30 s.
    #[test]
    fn rfc_6238_test_vectors() {
        let cases: &[(u64, &str, &str, &str)] = &[
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        let seed = |len: usize| b"1234567890".iter().copied().cycle().take(len).collect();
        let factor = |algorithm, len| {
            Totp::new(
                TotpSecret::from_bytes(seed(len)).expect("secret"),
                TotpParams {
                    algorithm,
                    digits: 8,
                    period_seconds: 30,
                },
            )
            .expect("params")
        };
        for (time, sha1, sha256, sha512) in cases {
            assert_eq!(factor(TotpAlgorithm::Sha1, 20).code_at(*time), *sha1);
            assert_eq!(factor(TotpAlgorithm::Sha256, 32).code_at(*time), *sha256);
            assert_eq!(factor(TotpAlgorithm::Sha512, 64).code_at(*time), *sha512);
        }
    }

    #[test]
    fn codes_are_accepted_one_step_either_side_and_say_their_step() {
        let factor =
            Totp::new(TotpSecret::generate().expect("rng"), TotpParams::default()).expect("params");
        let now = 1_700_000_015;
        let step = factor.step_at(now);
        assert_eq!(factor.verify(&factor.code_at(now), now), Some(step));
        assert_eq!(
            factor.verify(&factor.code_at(now - 30), now),
            Some(step - 1)
        );
        assert_eq!(
            factor.verify(&factor.code_at(now + 30), now),
            Some(step + 1)
        );
        assert_eq!(factor.verify(&factor.code_at(now - 60), now), None);
        assert_eq!(factor.verify(&factor.code_at(now + 60), now), None);
        assert_eq!(factor.verify("12345", now), None);
        assert_eq!(factor.verify("abcdef", now), None);
        // The end of time neither overflows nor refuses the code of its own step.
        let end = u64::MAX;
        assert!(factor.verify(&factor.code_at(end), end).is_some());
    }

    #[test]
    fn secrets_parse_from_base32_and_hex_and_never_print() {
        let secret = TotpSecret::from_base32("jbsw y3dp ehpk 3pxp").expect("base32");
        assert_eq!(secret.expose_bytes(), b"Hello!\xde\xad\xbe\xef");
        assert_eq!(secret.to_base32().as_str(), "JBSWY3DPEHPK3PXP");
        let hex = TotpSecret::from_hex("48656c6c6f21deadbeef").expect("hex");
        assert_eq!(hex.expose_bytes(), secret.expose_bytes());
        assert!(TotpSecret::from_hex("4865zz").is_err());
        assert!(
            TotpSecret::from_base32("JBSWY3DP").is_err(),
            "5 bytes is too short"
        );
        assert!(!format!("{secret:?}").contains("JBSW"));
        let factor = Totp::new(secret, TotpParams::default()).expect("params");
        assert!(!format!("{factor:?}").contains("Hello"));
        let uri = factor
            .otpauth_uri("Trickle", "ada@example.com")
            .expect("uri");
        assert!(
            uri.starts_with("otpauth://totp/Trickle:ada%40example.com?"),
            "{uri}"
        );
        assert!(uri.contains("secret=JBSWY3DPEHPK3PXP"), "{uri}");
    }

    #[test]
    fn algorithm_names_and_params_are_checked() {
        assert_eq!(TotpAlgorithm::parse("sha-256"), Some(TotpAlgorithm::Sha256));
        assert_eq!(
            TotpAlgorithm::parse("HmacSHA512"),
            Some(TotpAlgorithm::Sha512)
        );
        assert_eq!(TotpAlgorithm::parse("md5"), None);
        let nine_digits = TotpParams {
            digits: 9,
            ..TotpParams::default()
        };
        assert!(nine_digits.check().is_err());
        let no_period = TotpParams {
            period_seconds: 0,
            ..TotpParams::default()
        };
        assert!(no_period.check().is_err());
    }
}
