//! What the connector decodes from a legacy database's second-factor columns, on arbitrary
//! input: TOTP secrets (base32, hex), algorithm names, codes against any parameters, PHP's
//! serialized strings and arrays (WordPress capabilities), and Laravel's encrypted values.
//! A legacy database is data we do not control: none of it may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trickle_legacy_connector::{laravel, php};
use trickle_password::totp::{Totp, TotpAlgorithm, TotpParams, TotpSecret};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let _ = TotpAlgorithm::parse(&text);
    let _ = php::unserialize_string(&text);
    let _ = php::true_keys_of_array(&text);
    if let Ok(key) = laravel::AppKey::parse("base64:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=") {
        let _ = laravel::decrypt(&key, &text);
    }
    let secret = if selector % 2 == 0 {
        TotpSecret::from_base32(&text)
    } else {
        TotpSecret::from_hex(&text)
    };
    let params = TotpParams {
        algorithm: match selector % 3 {
            0 => TotpAlgorithm::Sha1,
            1 => TotpAlgorithm::Sha256,
            _ => TotpAlgorithm::Sha512,
        },
        digits: u32::from(selector % 12),
        period_seconds: u32::from(selector),
    };
    let secret = secret.or_else(|_| TotpSecret::from_bytes(rest.to_vec()));
    if let Ok(secret) = secret
        && let Ok(factor) = Totp::new(secret, params)
    {
        let now = u64::from_le_bytes(
            rest.iter()
                .copied()
                .chain(std::iter::repeat(0))
                .take(8)
                .collect::<Vec<u8>>()
                .try_into()
                .unwrap_or([0; 8]),
        );
        let code = factor.code_at(now);
        assert!(factor.verify(&code, now).is_some(), "a code verifies at its own time");
        let _ = factor.verify(&text, now);
    }
});
