//! The `events` table: the transactional outbox. Every change to a user writes its event
//! with [`emit!`] inside the change's own transaction; the sequencer later numbers committed
//! events (`position`), one sequencer transaction at a time, so that readers see positions
//! appear in increasing order and can resume after the last one they handled.

use super::*;

/// What happened, in the store's terms. Stored by its contract name (`user.migrated`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    SignedUp,
    Migrated,
    LoggedIn,
    PasswordChanged,
    PasswordReset,
    EmailChanged,
    EmailVerified,
    Blocked,
    Unblocked,
    ProfileUpdated,
    Deleted,
    FactorEnrolled,
    FactorRemoved,
}

impl EventKind {
    pub const ALL: [EventKind; 13] = [
        EventKind::SignedUp,
        EventKind::Migrated,
        EventKind::LoggedIn,
        EventKind::PasswordChanged,
        EventKind::PasswordReset,
        EventKind::EmailChanged,
        EventKind::EmailVerified,
        EventKind::Blocked,
        EventKind::Unblocked,
        EventKind::ProfileUpdated,
        EventKind::Deleted,
        EventKind::FactorEnrolled,
        EventKind::FactorRemoved,
    ];

    /// The kind in the public contract (`trickle.events.v1.EventKind`).
    pub fn contract(self) -> trickle_proto::events::v1::EventKind {
        use trickle_proto::events::v1::EventKind as K;
        match self {
            EventKind::SignedUp => K::UserSignedUp,
            EventKind::Migrated => K::UserMigrated,
            EventKind::LoggedIn => K::LoginSucceeded,
            EventKind::PasswordChanged => K::PasswordChanged,
            EventKind::PasswordReset => K::PasswordReset,
            EventKind::EmailChanged => K::EmailChanged,
            EventKind::EmailVerified => K::EmailVerified,
            EventKind::Blocked => K::UserBlocked,
            EventKind::Unblocked => K::UserUnblocked,
            EventKind::ProfileUpdated => K::ProfileUpdated,
            EventKind::Deleted => K::UserDeleted,
            EventKind::FactorEnrolled => K::FactorEnrolled,
            EventKind::FactorRemoved => K::FactorRemoved,
        }
    }

    /// The stored name: the contract's type name (the webhook's `type`), so that one table
    /// (libs/proto) names events everywhere.
    pub fn as_str(self) -> &'static str {
        self.contract().type_name()
    }

    pub fn parse(stored: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == stored)
    }

    /// Only events about the address carry it.
    pub(super) fn carries_email(self) -> bool {
        matches!(
            self,
            EventKind::SignedUp
                | EventKind::Migrated
                | EventKind::EmailChanged
                | EventKind::EmailVerified
        )
    }
}

/// The kind-specific part of an event, stored as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventDetail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub password_rehashed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profile_fields: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub second_factor: bool,
    /// The events of a row that holds many (a backfill page's users), in position order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch: Vec<BatchedEvent>,
}

/// One event of a batch row: what differs from one user to the next.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchedEvent {
    pub event_id: String,
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// An event about to be written, in the transaction of its change.
#[derive(Debug, Clone)]
pub(crate) struct NewEvent {
    pub event_id: String,
    pub kind: EventKind,
    pub user_id: String,
    pub legacy_id: Option<String>,
    pub email: Option<String>,
    pub detail: EventDetail,
    /// 1, or the length of `detail.batch`.
    pub count: i32,
}

impl NewEvent {
    /// An event about the user of `row` (as the change left it).
    pub(super) fn about(kind: EventKind, row: &UserRow) -> Self {
        Self::for_user(
            kind,
            &row.user_id,
            row.legacy_id.as_deref(),
            &row.display_email,
        )
    }

    pub(super) fn for_user(
        kind: EventKind,
        user_id: &str,
        legacy_id: Option<&str>,
        display_email: &str,
    ) -> Self {
        Self {
            event_id: uuid::Uuid::now_v7().to_string(),
            kind,
            user_id: user_id.to_owned(),
            legacy_id: legacy_id.map(str::to_owned),
            email: kind.carries_email().then(|| display_email.to_owned()),
            detail: EventDetail::default(),
            count: 1,
        }
    }

    /// One row for many events of one kind and detail (a backfill page's USER_MIGRATED):
    /// the outbox and the sequencer write one row, not one per user. `None` without events.
    pub(super) fn batch(
        kind: EventKind,
        detail: EventDetail,
        events: Vec<BatchedEvent>,
    ) -> Option<Self> {
        let first = events.first()?.clone();
        let count = i32::try_from(events.len()).ok()?;
        Some(Self {
            event_id: first.event_id,
            kind,
            user_id: first.user_id,
            legacy_id: None,
            email: None,
            detail: EventDetail {
                batch: events,
                ..detail
            },
            count,
        })
    }

    /// The events of a user's arrival: signed up, or migrated (and, for a login migration,
    /// the login itself).
    pub(super) fn arrival(row: &UserRow) -> Vec<Self> {
        let source = row.source.clone();
        if source == Source::Signup.as_str() {
            let mut event = Self::about(EventKind::SignedUp, row);
            event.detail.source = Some(source);
            return vec![event];
        }
        let mut migrated = Self::about(EventKind::Migrated, row);
        // A login or a reset hashes the password it was given with argon2id; a backfill
        // keeps the legacy hash until the user's next login.
        migrated.detail.password_rehashed = source != Source::Backfill.as_str();
        migrated.detail.source = Some(source.clone());
        if source == Source::LoginMigration.as_str() {
            vec![migrated, Self::about(EventKind::LoggedIn, row)]
        } else {
            vec![migrated]
        }
    }

    /// A TOTP factor became active (the only kind of factor today).
    pub(super) fn factor_enrolled(row: &UserRow) -> Self {
        Self::about(EventKind::FactorEnrolled, row).with_detail(EventDetail {
            factor_kind: Some("totp".to_owned()),
            ..EventDetail::default()
        })
    }

    pub(super) fn with_detail(mut self, detail: EventDetail) -> Self {
        self.detail = detail;
        self
    }

    pub(super) fn detail_json(&self) -> String {
        serde_json::to_string(&self.detail).unwrap_or_else(|_| "{}".to_owned())
    }
}

pub(super) const INSERT_EVENT: &str = "INSERT INTO events (event_id, kind, user_id, legacy_id, email, detail, occurred_at, event_count) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// Write `$events` (anything iterable over `&NewEvent`) on the transaction `$tx`, stamped
/// `$now`: call it before the change's commit, never after.
macro_rules! emit {
    ($tx:expr, $events:expr, $now:expr) => {{
        for event in $events {
            let event: &$crate::repository::events::NewEvent = event;
            sqlx::query($crate::repository::events::INSERT_EVENT)
                .bind(&event.event_id)
                .bind(event.kind.as_str())
                .bind(&event.user_id)
                .bind(event.legacy_id.as_deref())
                .bind(event.email.as_deref())
                .bind(event.detail_json())
                .bind($now)
                .bind(event.count)
                .execute(&mut *$tx)
                .await?;
        }
    }};
}
pub(super) use emit;

/// A sequenced row of the outbox: one event, or a batch of `event_count` ending at
/// `position`.
#[derive(Debug, Clone, sqlx::FromRow)]
struct EventRow {
    position: i64,
    event_id: String,
    kind: String,
    user_id: String,
    legacy_id: Option<String>,
    email: Option<String>,
    detail: String,
    event_count: i32,
    occurred_at: DateTime<Utc>,
}

impl EventRow {
    /// Its events after position `after`, at most `room` of them.
    fn expand(self, after: i64, room: usize, out: &mut Vec<StoredEvent>) {
        // Parsed once per row: a batch's events share everything but their user.
        let kind = EventKind::parse(&self.kind);
        let mut detail: EventDetail = serde_json::from_str(&self.detail).unwrap_or_default();
        if self.event_count <= 1 {
            if out.len() >= room {
                return;
            }
            out.push(StoredEvent {
                position: self.position,
                event_id: self.event_id,
                kind,
                user_id: self.user_id,
                legacy_id: self.legacy_id,
                email: self.email,
                detail,
                occurred_at: self.occurred_at,
            });
            return;
        }
        let batch = std::mem::take(&mut detail.batch);
        let first = self.position - i64::from(self.event_count) + 1;
        for (position, event) in (first..).zip(batch) {
            if position <= after {
                continue;
            }
            if out.len() >= room {
                return;
            }
            out.push(StoredEvent {
                position,
                event_id: event.event_id,
                kind,
                user_id: event.user_id,
                legacy_id: event.legacy_id,
                email: event.email,
                detail: detail.clone(),
                occurred_at: self.occurred_at,
            });
        }
    }
}

/// A sequenced event, as read back.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub position: i64,
    pub event_id: String,
    /// `None`: a kind written by a newer replica during a rollout.
    pub kind: Option<EventKind>,
    pub user_id: String,
    pub legacy_id: Option<String>,
    pub email: Option<String>,
    pub detail: EventDetail,
    pub occurred_at: DateTime<Utc>,
}

/// Events numbered per sequencer transaction: bounded, so one pass never holds the lock long.
const SEQUENCE_BATCH: i64 = 5000;

/// Any constant works; it only has to be the same in every store replica.
const SEQUENCER_LOCK: i64 = 0x7472_6963_6b6c_6531; // "trickle1"

/// Number the committed rows that have no position yet, after the highest position, in
/// insertion order: each row's position is the last of its `event_count` events. Works on
/// both databases (UPDATE … FROM and window functions).
const SEQUENCE: &str = "UPDATE events SET position = numbered.base + numbered.running \
     FROM (SELECT event_seq, \
                  (SELECT COALESCE(MAX(position), 0) FROM events) AS base, \
                  SUM(event_count) OVER (ORDER BY event_seq) AS running \
           FROM (SELECT event_seq, event_count FROM events WHERE position IS NULL \
                 ORDER BY event_seq LIMIT $1) pending) numbered \
     WHERE events.event_seq = numbered.event_seq";

impl Repository {
    /// Give positions to committed events that have none; how many got one. Replicas may
    /// race: on PostgreSQL an advisory lock makes them take turns (two passes computing the
    /// same base would collide), on SQLite the single writer does.
    pub async fn sequence_events(&self) -> Result<u64, sqlx::Error> {
        let mut total = 0;
        loop {
            let numbered = match &self.db {
                Db::Postgres(pool) => {
                    let mut tx = pool.begin().await?;
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(SEQUENCER_LOCK)
                        .execute(&mut *tx)
                        .await?;
                    let done = sqlx::query(SEQUENCE)
                        .bind(SEQUENCE_BATCH)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    tx.commit().await?;
                    done
                }
                Db::Sqlite(pool) => sqlx::query(SEQUENCE)
                    .bind(SEQUENCE_BATCH)
                    .execute(pool)
                    .await?
                    .rows_affected(),
            };
            total += numbered;
            if numbered < SEQUENCE_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Up to `limit` sequenced events after `after`, in order (batch rows expanded).
    pub async fn list_events(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        // Few rows per query: one row may hold a whole backfill page.
        const ROWS: i64 = 16;
        let room = usize::try_from(limit).unwrap_or_default();
        let mut events = Vec::new();
        let mut cursor = after;
        while events.len() < room {
            let rows: Vec<EventRow> = with_db!(&self.db, pool => {
                sqlx::query_as(
                    "SELECT position, event_id, kind, user_id, legacy_id, email, detail, event_count, occurred_at \
                     FROM events WHERE position > $1 ORDER BY position LIMIT $2",
                )
                .bind(cursor)
                .bind(ROWS)
                .fetch_all(pool)
                .await
            })?;
            let done = rows.len() < ROWS as usize;
            for row in rows {
                cursor = row.position;
                row.expand(after, room, &mut events);
            }
            if done {
                break;
            }
        }
        Ok(events)
    }

    /// Delete sequenced events that occurred before `before`, always keeping the newest one:
    /// positions continue from it, so they never restart at 1.
    pub(crate) async fn prune_events(&self, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
        with_db!(&self.db, pool => {
            sqlx::query(
                "DELETE FROM events WHERE occurred_at < $1 AND position IS NOT NULL \
                 AND position < (SELECT MAX(position) FROM events)",
            )
            .bind(before)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })
    }
}
