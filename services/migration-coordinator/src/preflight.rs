//! The preflight census (`MigrationAdmin.RunPreflight`): one read-only pass over the legacy
//! store through the connector's `ListUsers`, before anyone migrates, that answers what an
//! operator needs to know first — how many users, which hash formats and what can verify
//! them, and which records will not migrate cleanly (emails that collide once compared
//! case-insensitively, emails the store refuses, legacy ids that repeat, hashes no password
//! can match).
//!
//! Nothing is written but the finished report, which `GetStatus` shows afterwards. The
//! report carries legacy ids as samples, never a hash, and emails only when asked.
//!
//! Memory: the duplicate checks keep one 64-bit digest per distinct email and per legacy
//! id (keyed afresh for each census): two hash sets of 9 bytes per slot, 20 to 40 bytes per
//! legacy user depending on where they stand in their doubling (from their layout, not a
//! measurement), freed when the census ends. Digests can collide by chance: with a million users the odds of one
//! false "collision" are about one in 40 million.

use crate::error::CoordinatorError;
use crate::migrate_on_login::Coordinator;
use prost::Message as _;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashSet};
use std::hash::BuildHasher as _;
use trickle_proto::legacy::v1 as legacy;
use trickle_proto::legacy::v1::HashStatus;
use trickle_proto::migration::v1::{PreflightFinding, PreflightHashCount, PreflightReport};
use trickle_service_kit::Email;
use trickle_service_kit::with_db;

/// What one census keeps besides counts.
#[derive(Debug, Clone, Copy)]
pub struct CensusOptions {
    /// Sample legacy ids kept per finding.
    pub sample_size: usize,
    /// Keep sample emails too.
    pub show_emails: bool,
}

/// The kinds of finding, in the order a report lists them, with what each means.
const FINDINGS: [(&str, &str); 10] = [
    (
        "email_collision",
        "another legacy user has the same email once compared case-insensitively; only the first of them to migrate keeps it, the other can no longer log in with it",
    ),
    (
        "invalid_email",
        "the email is empty, too long or not name@domain; the store refuses it, so the user cannot migrate until it is fixed",
    ),
    (
        "repeated_legacy_id",
        "the legacy id appears more than once in list_users (a join or a table without a primary key); the backfill imports it once",
    ),
    (
        "empty_hash",
        "no password hash (NULL or empty): no password matches; the user can only come over by a password reset",
    ),
    (
        "locked_hash",
        "a disabled-account marker ('!' or '*'): no password matches; the user can only come over by a password reset",
    ),
    (
        "unknown_hash_format",
        "a hash format Trickle cannot read: no password matches (a legacy store's: describe it with [legacy] hash_format or [legacy.salted_digest]; an import file's: the import lists the reason)",
    ),
    (
        "over_cost_limits",
        "the hash costs more to verify than [legacy.hash_limits] allows, so it is refused rather than verified",
    ),
    (
        "unreadable_second_factor",
        "the user's second factor cannot be read, so the record is refused (never a password-only login)",
    ),
    (
        "unreadable_record",
        "a record of the import file could not be read (not JSON, a required field missing, an unreadable second factor): it is left out",
    ),
    (
        "connector_only_hash",
        "the hash needs a key only the legacy connector holds: the user migrates on login, but the backfill cannot carry the hash",
    ),
];

fn finding_index(kind: &str) -> usize {
    FINDINGS
        .iter()
        .position(|(k, _)| *k == kind)
        .unwrap_or_default()
}

/// Counts and samples of one kind of finding.
#[derive(Debug, Default)]
struct Tally {
    users: i64,
    legacy_ids: Vec<String>,
    emails: Vec<String>,
}

/// One pass over the legacy users, fed page by page.
#[derive(Debug)]
pub struct Census {
    options: CensusOptions,
    users: i64,
    hashes: BTreeMap<(String, i32), i64>,
    store_verifiable: i64,
    connector_only: i64,
    unusable: i64,
    with_second_factor: i64,
    blocked: i64,
    tallies: Vec<Tally>,
    /// Digests of the normalized emails seen (keyed per census, so a report cannot be used
    /// to test guesses against another one).
    emails_seen: HashSet<u64>,
    legacy_ids_seen: HashSet<u64>,
    digest: RandomState,
}

impl Census {
    pub fn new(options: CensusOptions) -> Self {
        Self {
            options,
            users: 0,
            hashes: BTreeMap::new(),
            store_verifiable: 0,
            connector_only: 0,
            unusable: 0,
            with_second_factor: 0,
            blocked: 0,
            tallies: FINDINGS.iter().map(|_| Tally::default()).collect(),
            emails_seen: HashSet::new(),
            legacy_ids_seen: HashSet::new(),
            digest: RandomState::new(),
        }
    }

    pub fn users(&self) -> i64 {
        self.users
    }

    fn note(&mut self, kind: &str, legacy_id: &str, email: &str) {
        let sample_size = self.options.sample_size;
        let show_emails = self.options.show_emails;
        let Some(tally) = self.tallies.get_mut(finding_index(kind)) else {
            return;
        };
        tally.users += 1;
        if tally.legacy_ids.len() < sample_size {
            tally.legacy_ids.push(legacy_id.to_owned());
            if show_emails {
                tally.emails.push(email.to_owned());
            }
        }
    }

    /// Count a record of an import file that could not be read as a user: `where_` is its
    /// legacy id, or its line.
    pub fn observe_unreadable(&mut self, where_: &str) {
        self.users += 1;
        self.unusable += 1;
        self.note("unreadable_record", where_, "");
    }

    /// Count one listed user.
    pub fn observe(&mut self, record: &legacy::LegacyUserRecord) {
        let Some(user) = &record.user else { return };
        self.users += 1;
        let legacy_id = user.legacy_id.as_str();
        let email = user.email.as_str();
        if !self.legacy_ids_seen.insert(self.digest.hash_one(legacy_id)) {
            self.note("repeated_legacy_id", legacy_id, email);
        }
        match Email::parse(email) {
            Ok(parsed) => {
                if !self
                    .emails_seen
                    .insert(self.digest.hash_one(parsed.normalized()))
                {
                    self.note("email_collision", legacy_id, email);
                }
            }
            Err(_) => self.note("invalid_email", legacy_id, email),
        }
        if user.totp.is_some() {
            self.with_second_factor += 1;
        }
        if user.blocked {
            self.blocked += 1;
        }
        let status = hash_status(record);
        *self
            .hashes
            .entry((record.hash_scheme.clone(), status.into()))
            .or_default() += 1;
        let finding = match status {
            HashStatus::Portable => {
                self.store_verifiable += 1;
                None
            }
            HashStatus::ConnectorOnly => {
                self.connector_only += 1;
                Some("connector_only_hash")
            }
            unusable => {
                self.unusable += 1;
                Some(match unusable {
                    HashStatus::Empty => "empty_hash",
                    HashStatus::Locked => "locked_hash",
                    HashStatus::OverCostLimits => "over_cost_limits",
                    HashStatus::UnreadableFactor => "unreadable_second_factor",
                    _ => "unknown_hash_format",
                })
            }
        };
        if let Some(kind) = finding {
            self.note(kind, legacy_id, email);
        }
    }

    /// The report so far (the census is done when the pages are).
    pub fn report(&self) -> PreflightReport {
        let mut hashes: Vec<PreflightHashCount> = self
            .hashes
            .iter()
            .map(|((scheme, status), users)| PreflightHashCount {
                scheme: scheme.clone(),
                status: *status,
                users: *users,
            })
            .collect();
        hashes.sort_by_key(|h| std::cmp::Reverse(h.users));
        let findings = FINDINGS
            .iter()
            .zip(&self.tallies)
            .filter(|(_, tally)| tally.users > 0)
            .map(|((kind, description), tally)| PreflightFinding {
                kind: (*kind).to_owned(),
                description: (*description).to_owned(),
                users: tally.users,
                sample_legacy_ids: tally.legacy_ids.clone(),
                sample_emails: tally.emails.clone(),
            })
            .collect();
        PreflightReport {
            users: self.users,
            hashes,
            store_verifiable: self.store_verifiable,
            connector_only: self.connector_only,
            unusable: self.unusable,
            with_second_factor: self.with_second_factor,
            blocked: self.blocked,
            findings,
            started_at: None,
            finished_at: None,
        }
    }
}

/// A record's hash class; an older connector sets no status, so it is read off the other
/// fields (a hash is portable, anything else cannot be told apart from an unknown format).
fn hash_status(record: &legacy::LegacyUserRecord) -> HashStatus {
    match HashStatus::try_from(record.hash_status) {
        Ok(HashStatus::Unspecified) | Err(_) if !record.password_hash.is_empty() => {
            HashStatus::Portable
        }
        Ok(HashStatus::Unspecified) | Err(_) => HashStatus::UnknownFormat,
        Ok(status) => status,
    }
}

/// A census under way: the legacy connector's pages, read by [`CensusRun::run`].
pub struct CensusRun {
    coordinator: Coordinator,
    pages: tonic::Streaming<legacy::ListUsersResponse>,
    options: CensusOptions,
    /// The connector's count, when it can count (for a progress bar).
    pub legacy_users_total: Option<i64>,
    started_at: chrono::DateTime<chrono::Utc>,
}

impl std::fmt::Debug for CensusRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CensusRun")
            .field("options", &self.options)
            .field("legacy_users_total", &self.legacy_users_total)
            .field("started_at", &self.started_at)
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// Begin a census over every legacy user. Refused in AUTHORITATIVE mode (the connector
    /// may be gone), and when the connector cannot list its users.
    #[tracing::instrument(name = "migration.preflight.open", skip(self))]
    pub async fn open_census(
        &self,
        options: CensusOptions,
        batch_size: i32,
    ) -> Result<CensusRun, CoordinatorError> {
        if self.mode().await? == crate::config::Mode::Authoritative {
            return Err(CoordinatorError::LegacyDisabled);
        }
        let started_at = self.ledger.now();
        let legacy_users_total = self.upstream.legacy_count().await.ok();
        let pages = self.upstream.list_users(batch_size).await?;
        Ok(CensusRun {
            coordinator: self.clone(),
            pages,
            options,
            legacy_users_total,
            started_at,
        })
    }
}

impl CensusRun {
    /// Read every page. `progress` hears the users read after each page and answers whether
    /// the caller still listens: a census nobody waits for stops (and answers `None`). The
    /// finished report is kept for `GetStatus`.
    #[tracing::instrument(name = "migration.preflight", skip_all)]
    pub async fn run(
        mut self,
        mut progress: impl FnMut(i64) -> bool + Send,
    ) -> Result<Option<PreflightReport>, CoordinatorError> {
        let mut census = Census::new(self.options);
        while let Some(page) = self
            .pages
            .message()
            .await
            .map_err(|status| CoordinatorError::from_legacy(&status))?
        {
            for record in &page.users {
                census.observe(record);
            }
            if !progress(census.users()) {
                tracing::info!(
                    users_read = census.users(),
                    "preflight abandoned by its caller"
                );
                return Ok(None);
            }
        }
        let mut report = census.report();
        report.started_at = Some(timestamp(self.started_at));
        report.finished_at = Some(timestamp(self.coordinator.ledger.now()));
        self.coordinator.save_preflight(&report).await?;
        tracing::info!(
            users = report.users,
            unusable = report.unusable,
            findings = report.findings.len(),
            "preflight finished"
        );
        Ok(Some(report))
    }
}

impl Coordinator {
    async fn save_preflight(&self, report: &PreflightReport) -> Result<(), CoordinatorError> {
        let encoded = report.encode_to_vec();
        with_db!(self.ledger.db(), pool => {
            sqlx::query(
                "INSERT INTO preflight_reports (id, report) VALUES (1, $1) \
                 ON CONFLICT (id) DO UPDATE SET report = excluded.report",
            )
            .bind(encoded)
            .execute(pool)
            .await
            .map(|_| ())
        })?;
        Ok(())
    }

    /// The last census that ran to the end, if any.
    pub async fn last_preflight(&self) -> Result<Option<PreflightReport>, CoordinatorError> {
        let stored: Option<Vec<u8>> = with_db!(self.ledger.db(), pool => {
            sqlx::query_scalar("SELECT report FROM preflight_reports WHERE id = 1")
                .fetch_optional(pool)
                .await
        })?;
        stored
            .map(|bytes| {
                PreflightReport::decode(bytes.as_slice()).map_err(|e| {
                    CoordinatorError::Internal(format!("the stored preflight report: {e}"))
                })
            })
            .transpose()
    }
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, email: &str, status: HashStatus, scheme: &str) -> legacy::LegacyUserRecord {
        legacy::LegacyUserRecord {
            user: Some(legacy::LegacyUser {
                legacy_id: id.into(),
                email: email.into(),
                ..Default::default()
            }),
            password_hash: if status == HashStatus::Portable {
                "$2b$10$abcdefghijklmnopqrstuu5vn6HCZJnNfFp3pvDjVYGT/8Y.5pJKO".into()
            } else {
                String::new()
            },
            hash_scheme: scheme.into(),
            unsupported_reason: String::new(),
            hash_status: status.into(),
        }
    }

    fn finding<'a>(report: &'a PreflightReport, kind: &str) -> Option<&'a PreflightFinding> {
        report.findings.iter().find(|f| f.kind == kind)
    }

    #[test]
    fn every_problem_class_is_counted_with_samples_and_no_emails_unless_asked() {
        let mut census = Census::new(CensusOptions {
            sample_size: 2,
            show_emails: false,
        });
        for r in [
            record("1", "ann@example.com", HashStatus::Portable, "bcrypt"),
            record("2", "ANN@example.com", HashStatus::Portable, "bcrypt"),
            record("3", "not-an-email", HashStatus::Portable, "bcrypt"),
            record("4", "d@example.com", HashStatus::Empty, ""),
            record("4", "e@example.com", HashStatus::Locked, ""),
            record(
                "6",
                "f@example.com",
                HashStatus::ConnectorOnly,
                "salted-digest",
            ),
            record("7", "g@example.com", HashStatus::OverCostLimits, "bcrypt"),
            record("8", "h@example.com", HashStatus::UnknownFormat, ""),
            record("9", "i@example.com", HashStatus::UnreadableFactor, ""),
        ] {
            census.observe(&r);
        }
        let report = census.report();
        assert_eq!(report.users, 9);
        assert_eq!(report.store_verifiable, 3);
        assert_eq!(report.connector_only, 1);
        assert_eq!(report.unusable, 5);
        for (kind, ids) in [
            ("email_collision", vec!["2"]),
            ("invalid_email", vec!["3"]),
            ("repeated_legacy_id", vec!["4"]),
            ("empty_hash", vec!["4"]),
            ("locked_hash", vec!["4"]),
            ("connector_only_hash", vec!["6"]),
            ("over_cost_limits", vec!["7"]),
            ("unknown_hash_format", vec!["8"]),
            ("unreadable_second_factor", vec!["9"]),
        ] {
            let f = finding(&report, kind).unwrap_or_else(|| panic!("{kind} in {report:?}"));
            assert_eq!(f.sample_legacy_ids, ids, "{kind}");
            assert!(f.sample_emails.is_empty(), "{kind}: emails only when asked");
            assert!(!f.description.is_empty());
        }
        let bcrypt = report
            .hashes
            .iter()
            .find(|h| h.scheme == "bcrypt" && h.status == i32::from(HashStatus::Portable))
            .map(|h| h.users);
        assert_eq!(bcrypt, Some(3), "{:?}", report.hashes);
        let debug = format!("{report:?}");
        assert!(!debug.contains("$2b$"), "no hash in a report");
        assert!(!debug.contains("example.com"), "no email in a report");
    }

    #[test]
    fn samples_are_capped_and_emails_kept_when_asked() {
        let mut census = Census::new(CensusOptions {
            sample_size: 3,
            show_emails: true,
        });
        for i in 0..10 {
            census.observe(&record(&i.to_string(), "", HashStatus::Empty, ""));
        }
        let report = census.report();
        let invalid = finding(&report, "invalid_email").expect("invalid emails");
        assert_eq!(invalid.users, 10);
        assert_eq!(invalid.sample_legacy_ids, ["0", "1", "2"]);
        assert_eq!(invalid.sample_emails.len(), 3);
        assert!(finding(&report, "email_collision").is_none());
    }

    #[test]
    fn a_record_from_an_older_connector_is_classified_by_its_fields() {
        let mut old = record("1", "a@example.com", HashStatus::Portable, "bcrypt");
        old.hash_status = 0;
        assert_eq!(hash_status(&old), HashStatus::Portable);
        old.password_hash.clear();
        assert_eq!(hash_status(&old), HashStatus::UnknownFormat);
    }
}
