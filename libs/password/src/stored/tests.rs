//! Parsing, verification and cost of every stored-hash family.

use super::*;

mod parsing {
    use super::*;

    fn verify(stored: &str, password: &str) -> bool {
        let hash = StoredHash::parse(stored, HashFormat::Auto).expect("parses");
        hash.verify(&mut Scratch::default(), 1 << 20, password.as_bytes())
    }

    // Vectors produced by the reference implementations, not by this crate:
    // bcrypt.hashpw(b"password", gensalt(4)) (Python bcrypt), Django 5's
    // make_password("correct horse"), argon2-cffi PasswordHasher(t=1, m=1024, p=1).hash("pässwörd").
    // The full set, per format, is in tests/vectors (see tests/vectors/generate.py).
    const BCRYPT_2B: &str = "$2b$04$qNfuqQRa6pvV465bs0i8MuQgpfGq/QdX9J.UDjEMrSx5motZzhXQK";
    const DJANGO: &str =
        "pbkdf2_sha256$1000000$hjZviU2rfKZb8h3ni18KjQ$cFjf41KwwN9deZy48DGkP87G2+no8aimGEp4snJXhzk=";
    const ARGON2_CFFI: &str = "$argon2id$v=19$m=1024,t=1,p=1$xqYH3E9892/9d5YtledHrg$afUNDguUbm4dSht18KO5FRbrygHaU0lVx3c/rLlNMCc";

    /// Inputs the fuzzer (tests/fuzz, target stored_hash) found to panic the LDAP parser
    /// when the format is set explicitly: refused now, like any other malformed value.
    #[test]
    fn ldap_values_without_a_leading_brace_are_refused_not_panicked_on() {
        for stored in [
            "\u{FFFD}2x$uuuueuuu}uuu",
            "}SSHA}abcd",
            "x}",
            "{SSHA",
            "{}",
            "é}",
        ] {
            assert!(
                StoredHash::parse(stored, HashFormat::Ldap).is_err(),
                "{stored:?} should be refused"
            );
        }
        assert!(StoredHash::parse("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", HashFormat::Ldap).is_ok());
    }

    #[test]
    fn parse_errors_show_only_a_prefix() {
        let err = StoredHash::parse("$2b$10$abcdefghijklmnopqrstuvwxyz", HashFormat::Auto)
            .expect_err("too short for bcrypt");
        assert_eq!(err.prefix, "$2b$");
        assert!(!err.to_string().contains("abcdef"));
        let err = StoredHash::parse("5f4dcc3b5aa765d61d8327deb882cf99", HashFormat::Auto)
            .expect_err("plain digests are never guessed");
        assert_eq!(err.prefix, "5f4d");
    }

    #[test]
    fn reference_vectors() {
        assert!(verify(BCRYPT_2B, "password"));
        assert!(!verify(BCRYPT_2B, "Password"));
        assert!(verify(DJANGO, "correct horse"));
        assert!(!verify(DJANGO, "correct horse "));
        assert!(verify(ARGON2_CFFI, "pässwörd"));
        assert!(!verify(ARGON2_CFFI, "passwörd"));
    }

    #[test]
    fn argon2_phc_round_trip_and_upgrade_rules() {
        let config = Argon2Config {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        };
        let mut scratch = Scratch::default();
        let phc =
            crate::argon2id::hash(&config, &mut scratch, "pässwörd".as_bytes()).expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        let parsed = StoredHash::parse(&phc, HashFormat::Argon2).expect("parses");
        assert_eq!(parsed.scheme(), HashScheme::Argon2id);
        assert!(parsed.verify(&mut scratch, 1024, "pässwörd".as_bytes()));
        assert!(!parsed.verify(&mut scratch, 1024, "passwörd".as_bytes()));
        assert!(!parsed.needs_upgrade(&config));
        assert!(parsed.needs_upgrade(&Argon2Config::default()));
        assert!(
            StoredHash::parse(BCRYPT_2B, HashFormat::Bcrypt)
                .expect("bcrypt")
                .needs_upgrade(&config)
        );
    }

    /// The vector Firebase publishes with its scrypt (github.com/firebase/scrypt): project
    /// parameters, a user's salt and hash, and the password `user1password`.
    #[test]
    fn firebase_scrypt_verifies_the_published_vector() {
        let stored = "$firebase-scrypt$ln=14,r=8,p=1,sep=Bw==,\
            key=jxspr8Ki0RYycVU8zykbdLGjFQ3McFUH0uiiTvC8pVMXAn210wjLNmdZJzxUECKbm0QsEmYUSDzZvpjeJ9WmXA==\
            $42xEC+ixf3L2lw==\
            $lSrfV15cpx95/sZS2W9c9Kp6i/LVgQNDNC/qzrCnh1SAyZvqmZqAjTdn3aoItz+VHjoZilo78198JAdRuid5lQ==";
        let parsed = StoredHash::parse(stored, HashFormat::Auto).expect("readable");
        assert_eq!(parsed.scheme(), HashScheme::FirebaseScrypt);
        assert_eq!(parsed.portable(), Some(stored));
        assert!(parsed.verify_password("user1password"));
        assert!(!parsed.verify_password("user2password"));
        // A signer key of another length than the hash is refused, not verified.
        let short = stored.replace(
            "jxspr8Ki0RYycVU8zykbdLGjFQ3McFUH0uiiTvC8pVMXAn210wjLNmdZJzxUECKbm0QsEmYUSDzZvpjeJ9WmXA==",
            "AAAA",
        );
        assert!(StoredHash::parse(&short, HashFormat::Auto).is_err());
    }

    #[test]
    fn corrupted_hashes_are_rejected_not_verified() {
        for bad in [
            "$2b$99$qNfuqQRa6pvV465bs0i8MuQgpfGq/QdX9J.UDjEMrSx5motZzhXQK",
            "$argon2id$v=19$m=4294967295,t=1,p=1$c29tZXNhbHQ$aGFzaA",
            "pbkdf2_sha256$0$salt$aGFzaA==",
            "pbkdf2_sha256$1000$salt$!!!",
            "$scrypt$ln=40,r=8,p=1$c2FsdA$aGFzaA",
            "$6$rounds=999999999$salt$hash",
            "$P$Bshort",
            "{SSHA}not base64!",
            "",
        ] {
            assert!(StoredHash::parse(bad, HashFormat::Auto).is_err(), "{bad}");
        }
    }

    #[test]
    fn digests_from_columns_become_portable_unless_keyed() {
        let template = DigestTemplate {
            algorithm: DigestAlgorithm::Sha256,
            salt_position: SaltPosition::After,
            encoding: DigestEncoding::Hex,
            hmac_key: String::new(),
        };
        let digest = hex(&sha2::Sha256::digest(b"hunter2pepper"));
        let parsed = StoredHash::parse_with(
            &digest,
            Some("pepper"),
            HashFormat::SaltedDigest,
            Some(&template),
        )
        .expect("parses");
        assert!(parsed.verify(&mut Scratch::default(), 0, b"hunter2"));
        let portable = parsed.portable().expect("portable").to_owned();
        let again = StoredHash::parse(&portable, HashFormat::Auto).expect("the store can read it");
        assert!(again.verify(&mut Scratch::default(), 0, b"hunter2"));
        assert!(!again.verify(&mut Scratch::default(), 0, b"hunter3"));
        let keyed = DigestTemplate {
            hmac_key: "k".into(),
            ..template
        };
        let mac = hex(&hmac::<sha2::Sha256>(b"k", b"hunter2pepper"));
        let parsed =
            StoredHash::parse_with(&mac, Some("pepper"), HashFormat::SaltedDigest, Some(&keyed))
                .expect("parses");
        assert!(parsed.verify(&mut Scratch::default(), 0, b"hunter2"));
        assert!(
            parsed.portable().is_none(),
            "the key stays with the connector"
        );
    }
}

mod cost {
    use super::*;

    #[test]
    fn each_family_reports_its_cost_and_the_caps_refuse_what_is_above_them() {
        let limits = HashLimits::default();
        let bcrypt = StoredHash::parse(
            &crate::legacy_formats::bcrypt("pw", 4).expect("bcrypt"),
            HashFormat::Auto,
        )
        .expect("parse");
        assert_eq!(bcrypt.cost().bcrypt_cost, Some(4));
        assert!(bcrypt.cost().exceeds(&limits).is_none());
        let strict = HashLimits {
            max_bcrypt_cost: 3,
            ..limits
        };
        assert!(
            bcrypt
                .cost()
                .exceeds(&strict)
                .is_some_and(|why| why.contains("max_bcrypt_cost"))
        );

        let pbkdf2 = StoredHash::parse(
            "pbkdf2_sha256$870000$c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g=",
            HashFormat::Auto,
        )
        .expect("parse");
        assert_eq!(pbkdf2.cost().iterations, 870_000);
        assert!(pbkdf2.cost().exceeds(&limits).is_none());
        let few_rounds = HashLimits {
            max_iterations: 100_000,
            ..limits
        };
        assert!(
            pbkdf2
                .cost()
                .exceeds(&few_rounds)
                .is_some_and(|why| why.contains("870000"))
        );

        // argon2 with 256 MiB: above the default 64 MiB.
        let argon2 = StoredHash::parse(
            "$argon2id$v=19$m=262144,t=3,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA",
            HashFormat::Auto,
        )
        .expect("parse");
        assert_eq!(argon2.cost().memory_kib, 262_144);
        assert!(
            argon2
                .cost()
                .exceeds(&limits)
                .is_some_and(|why| why.contains("max_memory_kib"))
        );

        let sha512 =
            StoredHash::parse("$6$rounds=656000$salt$hash", HashFormat::Auto).expect("parse");
        assert_eq!(sha512.cost().iterations, 656_000);
    }
}
