//! What `trickle admin import` reads from export files, on arbitrary input: a line of
//! Trickle's jsonl format, an Auth0, Firebase or Keycloak user, and an Auth0
//! `custom_password_hash` rewritten into a stored form. An export file is data we do not control: none of it may panic, and every
//! hash the rewriting produces must be one the store reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trickle_password::{Auth0CustomHash, HashFormat, StoredHash, auth0_custom_hash};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = trickle::import::parse_trickle_line(text, 1);
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    let _ = trickle::import::parse_auth0_user(value.clone(), 1);
    let _ = trickle::import::parse_keycloak_user(value.clone(), 1);
    let firebase = trickle::import::FirebaseHashParams {
        hash_key: "jxspr8Ki0RYycVU8zykbdLGjFQ3McFUH0uiiTvC8pVMXAn210wjLNmdZJzxUECKbm0QsEmYUSDzZvpjeJ9WmXA=="
            .into(),
        salt_separator: "Bw==".into(),
        rounds: 8,
        mem_cost: 14,
        ..Default::default()
    };
    let _ = trickle::import::parse_firebase_user(value.clone(), 1, Some(&firebase));
    if let Ok(hash) = serde_json::from_value::<Auth0CustomHash>(value)
        && let Ok(stored) = auth0_custom_hash(&hash)
    {
        assert!(
            StoredHash::parse(&stored, HashFormat::Auto).is_ok(),
            "a rewritten hash the store cannot read"
        );
    }
});
