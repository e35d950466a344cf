//! Every format against vectors made by the reference implementations
//! (tests/vectors/generate.py): the right password verifies, a wrong one does not, a
//! corrupted hash does not parse — and the form the store keeps after a backfill verifies
//! the same way.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde::Deserialize;
use std::collections::HashMap;
use trickle_password::{DigestTemplate, HashFormat, StoredHash};

#[derive(Deserialize)]
struct File {
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    format: HashFormat,
    source: String,
    hash: String,
    password: String,
    valid: bool,
    #[serde(default)]
    corrupted: bool,
    salt: Option<String>,
    template: Option<DigestTemplate>,
}

const VECTORS: &str = include_str!("../../../tests/vectors/password-hashes.json");

#[test]
fn every_format_verifies_its_reference_vectors() {
    let file: File = serde_json::from_str(VECTORS).expect("vectors");
    let mut right: HashMap<String, usize> = HashMap::new();
    let mut non_ascii: HashMap<String, usize> = HashMap::new();
    let mut corrupted: HashMap<String, usize> = HashMap::new();
    for v in &file.vectors {
        let name = format!("{:?}", v.format);
        let parsed =
            StoredHash::parse_with(&v.hash, v.salt.as_deref(), v.format, v.template.as_ref());
        if v.corrupted {
            assert!(
                parsed.is_err(),
                "{name}: corrupted hash {:?} parsed",
                v.hash
            );
            *corrupted.entry(name).or_default() += 1;
            continue;
        }
        let parsed = parsed.unwrap_or_else(|e| panic!("{name} from {}: {e}", v.source));
        assert_eq!(
            parsed.verify_password(&v.password),
            v.valid,
            "{name} from {}: {:?}",
            v.source,
            v.hash
        );

        // Self-describing formats are found by `auto` too.
        if !matches!(
            v.format,
            HashFormat::AspnetMembershipSha1 | HashFormat::SaltedDigest
        ) {
            let auto = StoredHash::parse(&v.hash, HashFormat::Auto)
                .unwrap_or_else(|e| panic!("auto {name}: {e}"));
            assert_eq!(auto.verify_password(&v.password), v.valid, "auto {name}");
        }
        // What a backfill hands the store verifies there without the connector's config.
        match parsed.portable() {
            Some(portable) => {
                let in_store = StoredHash::parse(portable, HashFormat::Auto)
                    .unwrap_or_else(|e| panic!("portable {name}: {e}"));
                assert_eq!(
                    in_store.verify_password(&v.password),
                    v.valid,
                    "portable {name}"
                );
            }
            None => assert!(
                v.template.as_ref().is_some_and(|t| !t.hmac_key.is_empty()),
                "{name}: only keyed digests stay with the connector"
            ),
        }
        if v.valid {
            *right.entry(name.clone()).or_default() += 1;
            if !v.password.is_ascii() {
                *non_ascii.entry(name).or_default() += 1;
            }
        }
    }
    for (format, n) in &right {
        assert!(*n >= 5, "{format}: only {n} vectors");
        assert!(
            non_ascii.get(format).copied().unwrap_or(0) >= 1,
            "{format}: no non-ASCII password"
        );
    }
    assert!(right.len() >= 16, "formats covered: {:?}", right.keys());
    assert!(corrupted.len() >= 10, "corrupted cases: {corrupted:?}");
}
