//! The controller's store: the change log and the state it builds, in
//! SQLite (one file, the default) or PostgreSQL (several replicas), through
//! one code path on sqlx's `Any` driver and one schema
//! (`controller/migrations/`), applied at start.
//!
//! **Contiguous, commit-ordered sequence numbers.** Every writing
//! transaction first updates the single row of `log_head` (`head = head +
//! n`), which locks it until commit: no two transactions hold numbers at
//! once, so numbers are handed out in commit order, and a transaction that
//! rolls back gives its numbers back with it. A reader that sees change `n`
//! committed therefore sees every change below `n`, and a gap in what a node
//! receives always means a loss — never a number skipped or committed late,
//! which a database sequence would allow.

use std::str::FromStr;

use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Row, Transaction};
use std::collections::HashMap;

use vigil_engine::{Learnt, ProfileRecord, SessionState};
use vigil_fleet::{
    Change, DbscBinding, DbscKey, EventAck, MAX_POPULATION_COUNTERS, NodeEvent, NodeEventKind,
    POPULATION_FEATURES, Record, SessionId, UserId,
};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be reached.
    #[error("store: {0}")]
    Db(#[from] sqlx::Error),
    /// Applying the schema failed.
    #[error("store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored record could not be read back.
    #[error("store record {seq}: {problem}")]
    Record {
        /// The change's sequence number.
        seq: u64,
        /// What is wrong with it.
        problem: String,
    },
}

/// Which database the store is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One SQLite file.
    Sqlite,
    /// PostgreSQL, possibly shared by several controllers.
    Postgres,
}

/// The log's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The newest sequence committed (0: none yet).
    pub head: u64,
    /// The oldest sequence still in the log.
    pub oldest: u64,
}

/// How the store judges what nodes post (from the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intake {
    /// Enforced detections of a user within this many seconds are counted
    /// together ([`Change::UserDetections`]); the engine's
    /// `detection_window`.
    pub detection_window: u64,
    /// A session record whose last use is older than this many seconds is
    /// refused: no node keeps an idle session that long.
    pub max_session_age: u64,
    /// Revocations this batch may still make: the node's decided
    /// revocations (each one posted counts, taken or refused) and records
    /// of sessions bound to a user revoked since. What is left of the
    /// node's `node_revocations_per_minute`; beyond it a decided
    /// revocation is refused ([`Refusal::RateLimited`]) and a record
    /// changes nothing.
    pub revocations_left: u32,
    /// New compromised marks (binding records) this batch may still make:
    /// what is left of the node's marks this minute, counted apart from
    /// its revocations (`node_revocations_per_minute` each), so that
    /// neither starves the other. Beyond it a record is taken without its
    /// mark and its id answered in [`EventAck::retry`]: the node posts the
    /// mark again later.
    pub marks_left: u32,
    /// An observation of a user ([`NodeEventKind::UserLearned`]) made
    /// longer than this many seconds ago is refused: the controller
    /// forgets a history unused that long (`keep_profiles_days`).
    pub keep_profiles: u64,
    /// The node's daily budgets of observations of users.
    pub budgets: crate::config::NodeBudgets,
    /// The fleet is rotating its hash key (the controller has a previous
    /// key): a node's revocation with no evidence of its own session key
    /// is taken unvouched (`docs/controller.md`, Rotating the hash key).
    pub rotating: bool,
    /// Nodes' counts of a minute older than this many seconds are ignored
    /// (`keep_detections_days`: what the expiry would delete at once).
    pub keep_counts: u64,
}

/// Why the intake refused a node's event (`docs/controller.md`, Intake
/// rules): counted per node and reason, never streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A revocation naming no evidence (no reference).
    NoEvidence,
    /// A revocation whose reference names no detection of this node.
    UnknownReference,
    /// Its detection is of another session (or of none).
    OtherSession,
    /// Its detection was not carried out (a monitoring or shadow route).
    NotEnforced,
    /// Its detection's action is not `revoke`.
    NotRevoking,
    /// Its detection, the revocation or the baseline held name different
    /// users.
    OtherUser,
    /// Beyond the node's revocations this minute
    /// (`node_revocations_per_minute`).
    RateLimited,
    /// An observation beyond the node's budget of the user's today
    /// (`node_observations_per_user_per_day`).
    ObservationBudget,
    /// A session-opening observation beyond the node's budget of the
    /// user's today (`node_new_sessions_per_user_per_day`).
    NewSessionBudget,
    /// An observation of a user without a fleet history beyond the node's
    /// budget of such users today (`node_new_users_per_day`).
    NewUserBudget,
    /// A DBSC binding for a session the controller holds another binding
    /// of (the first registration stays), or one naming a session it has
    /// no binding of as its root.
    DbscConflict,
}

impl Refusal {
    /// Every reason, in the order of [`Taken::refused`].
    pub const ALL: [Refusal; 11] = [
        Refusal::NoEvidence,
        Refusal::UnknownReference,
        Refusal::OtherSession,
        Refusal::NotEnforced,
        Refusal::NotRevoking,
        Refusal::OtherUser,
        Refusal::RateLimited,
        Refusal::ObservationBudget,
        Refusal::NewSessionBudget,
        Refusal::NewUserBudget,
        Refusal::DbscConflict,
    ];

    /// Its name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NoEvidence => "no_evidence",
            Refusal::UnknownReference => "unknown_reference",
            Refusal::OtherSession => "other_session",
            Refusal::NotEnforced => "not_enforced",
            Refusal::NotRevoking => "not_revoking",
            Refusal::OtherUser => "other_user",
            Refusal::RateLimited => "rate_limited",
            Refusal::ObservationBudget => "observation_budget",
            Refusal::NewSessionBudget => "new_session_budget",
            Refusal::NewUserBudget => "new_user_budget",
            Refusal::DbscConflict => "dbsc_conflict",
        }
    }

    /// Whether it refused a revocation (else an observation).
    pub fn is_revocation(self) -> bool {
        !matches!(
            self,
            Refusal::ObservationBudget
                | Refusal::NewSessionBudget
                | Refusal::NewUserBudget
                | Refusal::DbscConflict
        )
    }

    fn index(self) -> usize {
        Refusal::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Most observations of one user taken from one batch: a node's batch
/// cannot rewrite a user's history in one go (more are ignored; real
/// traffic learns a user once a session and once a move of network).
pub const MAX_LEARNT_PER_USER: u32 = 16;

/// What became of the events of one batch, beyond the ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Taken {
    /// Session records that became the session's baseline.
    pub baselines: usize,
    /// Session records that changed nothing (a baseline seen earlier
    /// stands) or were refused (not a record of this release, a first
    /// sighting in the future or too old).
    pub ignored: usize,
    /// Detections recorded.
    pub detections: usize,
    /// Revocations made or refused (the node's decided ones, each posted,
    /// and records that became revocations); charged to the node's
    /// `node_revocations_per_minute`.
    pub revocations: u32,
    /// Observations of users added to their histories and the population.
    pub learnt: usize,
    /// Events refused by the intake rules, per [`Refusal::ALL`].
    pub refused: [u32; Refusal::ALL.len()],
    /// Revocations vouched for on a baseline this node recorded itself,
    /// charged to its `node_vouched_revocations_per_day`.
    pub vouched_own: u32,
    /// Revocations taken unvouched because that budget was spent.
    pub unvouched_over_budget: u32,
    /// Binding records that changed the fleet's binding of their session.
    pub bindings: usize,
    /// New compromised marks taken; charged to the node's marks this
    /// minute.
    pub marks: u32,
    /// Binding records refused as no node writes them (generation or
    /// nonce 0): each alone, the rest of the batch taken.
    pub malformed: u32,
}

impl Taken {
    fn refuse(&mut self, why: Refusal) {
        if let Some(n) = self.refused.get_mut(why.index()) {
            *n = n.saturating_add(1);
        }
    }

    /// Each reason with how many events it refused, those refusing some.
    pub fn refusals(&self) -> impl Iterator<Item = (Refusal, u32)> + '_ {
        Refusal::ALL
            .iter()
            .zip(self.refused)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (*r, n))
    }
}

/// What the store holds of a session's baseline.
#[derive(Debug, Clone)]
struct Held {
    first_seen: u64,
    user: Option<UserId>,
    record: Record,
    confirmed: bool,
}

/// A rule bundle as stored ([`Change::RulesBundle`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleBundle {
    /// Its version, 1, 2, … in order of publication.
    pub version: u64,
    /// SHA-256 of its text, lower-case hex.
    pub sha256: String,
    /// When it was first published (seconds since the Unix epoch).
    pub created_at: u64,
    /// The change that last published it (its publication or a rollback
    /// to it): the bundle in force has the highest.
    pub seq: u64,
    /// The rule file's text; empty in [`Store::rule_bundles`]' list.
    pub text: String,
}

/// What a node last reported of the rule bundles it was sent
/// ([`NodeEventKind::RulesBundle`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeRules {
    /// The version it applied last (its rules now), with its SHA-256 and
    /// when; `None` before it applied any.
    pub applied: Option<(u64, String, u64)>,
    /// Its last rejection since then: version, SHA-256, the problems, and
    /// when; cleared when it applies one.
    pub failure: Option<(u64, String, Vec<String>, u64)>,
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

mod admin;
pub mod bcl;
pub mod bindings;
pub mod counts;
mod dashboard;
mod facts;
pub mod idp_sessions;
pub mod labels;
pub mod outbox;
pub mod ssf;
pub mod ssf_tx;

pub use admin::{
    DetectionRow, FalsePositive, FalsePositivePlan, RiskyUser, SessionRow, TrustRow, UserDetail,
};
pub use dashboard::{
    AuditCursor, AuditEntry, Buckets, DetectionCursor, DetectionFacts, RiskInputs, SessionCursor,
    SessionHit, TIMELINE_SECOND_CAP, TimelineEntry, TimelinePage,
};
pub use facts::{IpRange, StoredFacts, ip_key};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    /// Opens the store at `url` (`sqlite://PATH`, created if missing, or
    /// `postgres://…`) and applies the schema.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let url = match backend {
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                // One writer at a time anyway; readers share the file.
                Backend::Sqlite => 4,
                Backend::Postgres => 16,
            })
            .connect(&url)
            .await?;
        if backend == Backend::Sqlite {
            // Readers do not wait for the writer, and a commit is durable.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        MIGRATOR.run(&pool).await?;
        Ok(Store { pool, backend })
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool, for [`crate::copy`].
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The log's bounds now.
    pub async fn bounds(&self) -> Result<Bounds, StoreError> {
        let row = sqlx::query("SELECT head, oldest FROM log_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(Bounds {
            head: to_u64(row.try_get(0)?),
            oldest: to_u64(row.try_get(1)?),
        })
    }

    /// Appends `changes` in one transaction; returns the sequence of the
    /// last (the head), or the head unchanged for none.
    pub async fn append(&self, changes: &[Change], now: u64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let head = append_in(&mut tx, changes, now).await?;
        tx.commit().await?;
        Ok(head)
    }

    /// Ends every session of `user` everywhere (universal logout): the
    /// user's revocation, and in the same transaction the revocation of
    /// each session the store holds a baseline of for them — so that a
    /// node that no longer holds one of them (evicted, never learnt) ends
    /// it too. Returns the head after.
    pub async fn revoke_user(&self, user: UserId, at: u64, now: u64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let head = revoke_user_in(&mut tx, user, at, now).await?;
        tx.commit().await?;
        Ok(head)
    }

    /// Asks every session of `user` first seen at or before `at` to pass a
    /// step-up at its next request, on every node ([`Change::UserStepUp`]).
    /// Returns the head after.
    pub async fn step_up_user(&self, user: UserId, at: u64, now: u64) -> Result<u64, StoreError> {
        self.append(&[Change::UserStepUp { user, at }], now).await
    }

    /// Takes a node's events: each not taken before (by node and id)
    /// is judged and may become changes, all in one transaction. Returns
    /// what was taken and the head after.
    ///
    /// - A decided revocation becomes a session revocation only on the
    ///   node's evidence, within what is left of its revocations this
    ///   minute ([`judge_revocation`]; refused otherwise, counted in
    ///   [`Taken::refused`] and the ack's `refused`).
    /// - A session record becomes the session's baseline when the store has
    ///   none, when it was seen earlier than the one held (a thief's first
    ///   sighting on another node gives way to the owner's), when it binds
    ///   an unbound session seen at the same time, or when its user passed
    ///   a step-up on it (`confirmed`). A record of a session bound to a
    ///   user revoked since it was first seen becomes that session's
    ///   revocation instead. Records of revoked sessions change nothing.
    /// - A detection is recorded with its facts; an enforced one of a bound
    ///   user recounts the user's recent detections, streamed when the
    ///   count changes.
    /// - An observation of a user is added to the user's history and the
    ///   population (sums, `docs/controller.md`, Histories), unless it is
    ///   an operator's trust (not a sighting; never trust from a node), is
    ///   from the future, older than `keep_profiles`, made before the
    ///   user's erasure, or beyond [`MAX_LEARNT_PER_USER`] of the user in
    ///   the batch (ignored), or beyond one of the node's daily budgets
    ///   (refused: [`Histories::observe`]); each user touched is one
    ///   [`Change::UserProfile`], the counters touched a few
    ///   [`Change::Population`].
    pub async fn take_events(
        &self,
        node: &str,
        events: &[NodeEvent],
        now: u64,
        intake: Intake,
    ) -> Result<(EventAck, Taken, u64), StoreError> {
        let mut tx = self.pool.begin().await?;
        // The log's lock first: what is judged below (revoked users and
        // sessions, baselines held) cannot change before this commits.
        sqlx::query("UPDATE log_head SET head = head WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        let mut ack = EventAck::default();
        let mut taken = Taken::default();
        let mut changes = Vec::new();
        // Baselines taken earlier in this batch, not yet in the table.
        let mut pending: HashMap<SessionId, Held> = HashMap::new();
        // DBSC bindings taken earlier in this batch, and by which node.
        let mut dbsc_pending: HashMap<SessionId, DbscBinding> = HashMap::new();
        let mut dbsc_nodes: Vec<(SessionId, String)> = Vec::new();
        // Bindings joined earlier in this batch, not yet in the table.
        let mut bindings_pending: HashMap<SessionId, vigil_fleet::BindingRecord> = HashMap::new();
        let mut recount: Vec<UserId> = Vec::new();
        let mut cleared: Vec<UserId> = Vec::new();
        let mut histories = Histories::new(node, now, intake.budgets);
        histories.prefetch(&mut tx, events).await?;
        let mut new_ids = take_ids(&mut tx, node, events, now).await?;
        let day = now / 86_400;
        let vouched_left = intake
            .budgets
            .vouched_revocations_per_day
            .saturating_sub(vouched_spent(&mut tx, node, day).await?);
        for event in events {
            // Each id once: a second of the same in one batch is a
            // duplicate too.
            if !matches!(event.kind, NodeEventKind::SessionBinding(_))
                && !new_ids.remove(event.id.as_str())
            {
                ack.duplicates += 1;
                continue;
            }
            ack.accepted += 1;
            match &event.kind {
                // Only on this node's evidence; vouched when the evidence
                // binds the session to the user the fleet holds it for.
                NodeEventKind::SessionRevoked {
                    session,
                    user,
                    reference,
                    at,
                } => {
                    let judged = if taken.revocations >= intake.revocations_left {
                        Err(Refusal::RateLimited)
                    } else {
                        taken.revocations += 1;
                        judge_revocation(
                            &mut tx,
                            node,
                            &pending,
                            *session,
                            *user,
                            reference.as_deref(),
                        )
                        .await?
                    };
                    // While the fleet rotates its hash key, a node tells
                    // revocations it re-keyed on sight, and the twin of
                    // each it decides under the retiring key: neither can
                    // name evidence of its own session key (the controller
                    // never sees the cookie that links the two keys). They
                    // are taken unvouched, within the revocation budget —
                    // no more than a node could do with a detection it
                    // made up — and only during a rotation.
                    let judged = match judged {
                        Err(Refusal::NoEvidence | Refusal::OtherSession) if intake.rotating => {
                            Ok((false, Poster::Other))
                        }
                        judged => judged,
                    };
                    // A vouched revocation on a baseline this node
                    // recorded itself is the node's word twice over: a
                    // stolen token could make up the session, its
                    // baseline, its detection and its revocation in one
                    // batch. Such vouching is bounded a day; beyond, the
                    // revocation is taken unvouched — still streamed, kept
                    // by nodes in the budget that made-up cookies share.
                    let judged = match judged {
                        Ok((true, Poster::This)) if taken.vouched_own >= vouched_left => {
                            taken.unvouched_over_budget += 1;
                            Ok(false)
                        }
                        Ok((true, Poster::This)) => {
                            taken.vouched_own += 1;
                            Ok(true)
                        }
                        judged => judged.map(|(vouched, _)| vouched),
                    };
                    match judged {
                        Ok(vouched) => changes.push(Change::SessionRevoked {
                            session: *session,
                            at: (*at).min(now),
                            vouched,
                        }),
                        Err(why) => {
                            taken.refuse(why);
                            ack.refused += 1;
                        }
                    }
                }
                NodeEventKind::SessionBaseline {
                    record,
                    confirmed,
                    false_positive,
                    disputed,
                } => {
                    let revocations_left =
                        intake.revocations_left.saturating_sub(taken.revocations);
                    match judge_baseline(
                        &mut tx,
                        &pending,
                        record,
                        *confirmed,
                        now,
                        intake,
                        revocations_left > 0,
                    )
                    .await?
                    {
                        Judged::Baseline(session, held) => {
                            changes.push(Change::SessionBaseline {
                                record: held.record.clone(),
                                confirmed: held.confirmed,
                            });
                            // The user proved themselves: the fleet's count
                            // of their detections starts over, as the
                            // node's own does. A record an operator's false
                            // positive confirmed is no such proof: that
                            // call lowered the count by its own detection
                            // already, and the user's other detections
                            // (another session's theft) stand.
                            if *confirmed
                                && !*false_positive
                                && let Some(user) = held.user
                            {
                                cleared.push(user);
                                labels::step_up_passed(&mut tx, user, session, now).await?;
                                if let Some(reference) = disputed {
                                    labels::disputed(&mut tx, node, user, session, reference, now)
                                        .await?;
                                }
                            }
                            pending.insert(session, held);
                            taken.baselines += 1;
                        }
                        Judged::Revoke(session) => {
                            changes.push(Change::SessionRevoked {
                                session,
                                at: now,
                                vouched: true,
                            });
                            taken.revocations += 1;
                        }
                        Judged::Nothing => taken.ignored += 1,
                    }
                }
                NodeEventKind::Detection {
                    reference,
                    session,
                    user,
                    route,
                    rule,
                    action,
                    enforced,
                    score,
                    reasons,
                    at,
                    facts,
                } => {
                    let reasons = reasons
                        .iter()
                        .map(|(code, points)| format!("{code}:{points}"))
                        .collect::<Vec<_>>()
                        .join(",");
                    let q = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "INSERT INTO detections (node, reference, session, user_key, route, rule, \
                         action, enforced, score, reasons, at, {}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
                         $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24) \
                         ON CONFLICT (node, reference) DO NOTHING",
                        facts::FACT_COLUMNS
                    )));
                    facts::FactColumns::of(facts.as_deref())
                        .bind(
                            q.bind(node)
                                .bind(reference.as_str())
                                .bind(session.map(|s| s.to_string()))
                                .bind(user.map(|u| u.to_string()))
                                .bind(route.as_str())
                                .bind(rule.clone())
                                .bind(action.as_str())
                                .bind(i64::from(*enforced))
                                .bind(i64::from(*score))
                                .bind(reasons)
                                .bind(to_i64((*at).min(now))),
                        )
                        .execute(&mut *tx)
                        .await?;
                    taken.detections += 1;
                    if let (true, Some(user)) = (*enforced, user)
                        && !recount.contains(user)
                    {
                        recount.push(*user);
                    }
                }
                NodeEventKind::UserLearned {
                    user,
                    values,
                    which,
                    new_session,
                    trusted,
                    at,
                } => {
                    // What a node says an operator trusted is no sighting:
                    // the user was not seen, an operator spoke. Trust that
                    // came from the fleet is echoed back by every node
                    // that applies it, and would count once a node.
                    let learnt = (!*trusted
                        && *at <= now.saturating_add(300)
                        && *at >= now.saturating_sub(intake.keep_profiles))
                    .then(|| {
                        Some(Learnt {
                            user: vigil_engine::UserKey::from_u64(user.0)?,
                            values: *values,
                            which: *which & 0x3f,
                            new_session: *new_session,
                            // A node's word is a sighting, never trust:
                            // with one stolen node token, trusted values
                            // (never evicted, first in every join) would
                            // make an attacker's device or network the
                            // user's on every node for good. Trust across
                            // the fleet comes from the admin API alone.
                            trust: false,
                            at: (*at).min(now),
                        })
                    })
                    .flatten();
                    let observed = match learnt {
                        Some(learnt) => histories.observe(&mut tx, *user, &learnt).await?,
                        None => Observed::Ignored,
                    };
                    match observed {
                        Observed::Taken => taken.learnt += 1,
                        Observed::Ignored => taken.ignored += 1,
                        Observed::Refused(why) => {
                            taken.refuse(why);
                            ack.refused += 1;
                        }
                    }
                }
                NodeEventKind::RulesBundle {
                    version,
                    sha256,
                    applied,
                    problems,
                    at,
                } => {
                    record_node_rules(
                        &mut tx,
                        node,
                        *version,
                        sha256,
                        *applied,
                        problems,
                        (*at).min(now),
                    )
                    .await?;
                }
                NodeEventKind::IdpSession {
                    session,
                    user,
                    idp_session,
                    at,
                } => {
                    if let Err(why) = idp_sessions::take(
                        &mut tx,
                        &pending,
                        *session,
                        *user,
                        *idp_session,
                        (*at).min(now),
                    )
                    .await?
                    {
                        taken.refuse(why);
                        ack.refused += 1;
                    }
                }
                // The first binding of a session is kept: the same again
                // (another node's echo, a retry) changes nothing, another
                // one is refused.
                NodeEventKind::DbscBound { binding } => {
                    match judge_dbsc(&mut tx, &dbsc_pending, binding).await? {
                        Ok(true) => {
                            dbsc_pending.insert(binding.session, binding.clone());
                            dbsc_nodes.push((binding.session, node.to_owned()));
                            changes.push(Change::DbscBound {
                                binding: DbscBinding {
                                    at: binding.at.min(now),
                                    ..binding.clone()
                                },
                            });
                        }
                        Ok(false) => taken.ignored += 1,
                        Err(why) => {
                            taken.refuse(why);
                            ack.refused += 1;
                        }
                    }
                }
                // Joined with what the fleet holds: only a record that
                // changes it is streamed. A compromised mark refuses the
                // session on every node, as a revocation ends it: each new
                // one counts against the node's revocations this minute,
                // and beyond them the record is taken without its mark.
                NodeEventKind::SessionBinding(record) => {
                    let mut record = *record;
                    if !bindings::to_engine(&record).is_valid() {
                        // Refused alone: the rest of the batch is taken.
                        ack.refused += 1;
                        taken.malformed += 1;
                        continue;
                    }
                    let mut judged =
                        bindings::judge(&mut tx, &bindings_pending, &record, now).await?;
                    if matches!(judged, bindings::Judged::Joined { marks: true, .. })
                        && taken.marks >= intake.marks_left
                    {
                        // Not lost: the advance is taken now, the mark
                        // when the node posts it again (`retry`).
                        ack.retry.push(event.id.clone());
                        record.compromised = false;
                        judged = bindings::judge(&mut tx, &bindings_pending, &record, now).await?;
                    }
                    match judged {
                        bindings::Judged::Joined { record, marks } => {
                            if marks {
                                taken.marks += 1;
                            }
                            changes.push(Change::SessionBinding(record));
                            bindings_pending.insert(record.session, record);
                            taken.bindings += 1;
                        }
                        bindings::Judged::Nothing => taken.ignored += 1,
                    }
                }
                NodeEventKind::Counts(counts) => {
                    counts::take(&mut tx, node, counts, now, intake.keep_counts).await?;
                }
                // A later version's event: its id is remembered, nothing
                // else is done.
                NodeEventKind::Unknown => {}
            }
        }
        histories.spend(&mut tx).await?;
        histories.changes(&mut tx, &mut changes).await?;
        for user in &cleared {
            changes.push(Change::UserDetections {
                user: *user,
                count: 0,
                until: now,
            });
        }
        for user in recount {
            if cleared.contains(&user) {
                continue;
            }
            if let Some(change) = recount_detections(&mut tx, user, now, intake).await? {
                changes.push(change);
            }
        }
        let head = append_in(&mut tx, &changes, now).await?;
        admin::set_baseline_node(&mut tx, node, pending.keys()).await?;
        for (session, node) in &dbsc_nodes {
            sqlx::query("UPDATE dbsc_bindings SET node = $1 WHERE session = $2")
                .bind(node.as_str())
                .bind(session.to_string())
                .execute(&mut *tx)
                .await?;
        }
        if taken.vouched_own > 0 {
            sqlx::query(
                "INSERT INTO node_day_budget (node, day, new_users, vouched) VALUES ($1, $2, 0, $3) \
                 ON CONFLICT (node, day) DO UPDATE SET vouched = node_day_budget.vouched + excluded.vouched",
            )
            .bind(node)
            .bind(to_i64(day))
            .bind(i64::from(taken.vouched_own))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok((ack, taken, head))
    }

    /// Deletes what is past its retention: session baselines not updated
    /// for `keep_sessions` seconds, detections older than
    /// `keep_detections`, detection counts lapsed, nodes' daily budgets
    /// before yesterday. Nodes are not told:
    /// each forgets idle sessions on its own, sooner.
    pub async fn expire(
        &self,
        now: u64,
        keep_sessions: u64,
        keep_detections: u64,
    ) -> Result<u64, StoreError> {
        let mut n = 0;
        for (sql, before) in [
            (
                "DELETE FROM session_baselines WHERE updated < $1",
                now.saturating_sub(keep_sessions),
            ),
            (
                "DELETE FROM idp_sessions WHERE at < $1",
                now.saturating_sub(keep_sessions),
            ),
            (
                "DELETE FROM dbsc_bindings WHERE at < $1",
                now.saturating_sub(keep_sessions),
            ),
            (
                "DELETE FROM session_bindings WHERE updated < $1",
                now.saturating_sub(keep_sessions),
            ),
            (
                "DELETE FROM detections WHERE at < $1",
                now.saturating_sub(keep_detections),
            ),
            // Nodes' counts per minute: kept as long as the detections.
            (
                "DELETE FROM node_counts WHERE minute < $1",
                now.saturating_sub(keep_detections) / 60,
            ),
            ("DELETE FROM user_detections WHERE until < $1", now),
            // Logout token ids past the age at which their tokens are
            // refused anyway.
            ("DELETE FROM bcl_jtis WHERE keep_until < $1", now),
            // A node's budgets of yesterday and today are kept.
            (
                "DELETE FROM node_user_budget WHERE day < $1",
                (now / 86_400).saturating_sub(1),
            ),
            (
                "DELETE FROM node_day_budget WHERE day < $1",
                (now / 86_400).saturating_sub(1),
            ),
        ] {
            n += sqlx::query(sql)
                .bind(to_i64(before))
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(n)
    }

    /// Up to `limit` changes after `after`, in order.
    pub async fn since(&self, after: u64, limit: usize) -> Result<Vec<(u64, Change)>, StoreError> {
        let rows =
            sqlx::query("SELECT seq, body FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(to_i64(after))
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                let seq = to_u64(row.try_get(0)?);
                let body: String = row.try_get(1)?;
                let change = serde_json::from_str(&body).map_err(|e| StoreError::Record {
                    seq,
                    problem: e.to_string(),
                })?;
                Ok((seq, change))
            })
            .collect()
    }

    /// The whole state as changes, as of the returned sequence, read in
    /// one consistent view.
    pub async fn snapshot(&self) -> Result<(u64, Vec<Change>), StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        let head = to_u64(
            sqlx::query("SELECT head FROM log_head WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?,
        );
        let mut out = Vec::new();
        for row in sqlx::query("SELECT session, at, vouched FROM revoked_sessions ORDER BY seq")
            .fetch_all(&mut *tx)
            .await?
        {
            let session: String = row.try_get(0)?;
            let Some(session) = SessionId::parse(&session) else {
                continue;
            };
            out.push(Change::SessionRevoked {
                session,
                at: to_u64(row.try_get(1)?),
                vouched: row.try_get::<i64, _>(2)? != 0,
            });
        }
        for row in sqlx::query("SELECT user_key, at FROM revoked_users ORDER BY seq")
            .fetch_all(&mut *tx)
            .await?
        {
            let user: String = row.try_get(0)?;
            let Some(user) = UserId::parse(&user) else {
                continue;
            };
            out.push(Change::UserRevoked {
                user,
                at: to_u64(row.try_get(1)?),
            });
        }
        for row in sqlx::query("SELECT user_key, at FROM user_step_ups ORDER BY seq")
            .fetch_all(&mut *tx)
            .await?
        {
            let user: String = row.try_get(0)?;
            let Some(user) = UserId::parse(&user) else {
                continue;
            };
            out.push(Change::UserStepUp {
                user,
                at: to_u64(row.try_get(1)?),
            });
        }
        for row in sqlx::query("SELECT user_key, points, until, at FROM user_risk ORDER BY seq")
            .fetch_all(&mut *tx)
            .await?
        {
            let user: String = row.try_get(0)?;
            let Some(user) = UserId::parse(&user) else {
                continue;
            };
            out.push(Change::UserRisk {
                user,
                points: u8::try_from(row.try_get::<i64, _>(1)?).unwrap_or(100),
                until: to_u64(row.try_get(2)?),
                at: to_u64(row.try_get(3)?),
            });
        }
        // After the user revocations: a session bound before its user's
        // revocation is among the revoked sessions above, and what is
        // here was bound after it.
        for row in sqlx::query("SELECT record, confirmed FROM session_baselines ORDER BY seq")
            .fetch_all(&mut *tx)
            .await?
        {
            let record: String = row.try_get(0)?;
            let Some(record) = Record::parse(&record) else {
                continue;
            };
            out.push(Change::SessionBaseline {
                record,
                confirmed: row.try_get::<i64, _>(1)? != 0,
            });
        }
        // Registered sessions before those that inherited their binding.
        for row in sqlx::query(
            "SELECT session, dbsc_id, root, public_key, at FROM dbsc_bindings \
             ORDER BY (root IS NOT NULL), seq",
        )
        .fetch_all(&mut *tx)
        .await?
        {
            let session: String = row.try_get(0)?;
            let id: String = row.try_get(1)?;
            let root: Option<String> = row.try_get(2)?;
            let key: String = row.try_get(3)?;
            let (Some(session), Some(id), Some(key)) = (
                SessionId::parse(&session),
                SessionId::parse(&id),
                DbscKey::parse(&key),
            ) else {
                continue;
            };
            out.push(Change::DbscBound {
                binding: DbscBinding {
                    session,
                    id,
                    root: root.as_deref().and_then(SessionId::parse),
                    key,
                    at: to_u64(row.try_get(4)?),
                },
            });
        }
        for row in sqlx::query(
            "SELECT user_key, count, until FROM user_detections WHERE count > 0 ORDER BY seq",
        )
        .fetch_all(&mut *tx)
        .await?
        {
            let user: String = row.try_get(0)?;
            let Some(user) = UserId::parse(&user) else {
                continue;
            };
            out.push(Change::UserDetections {
                user,
                count: u8::try_from(row.try_get::<i64, _>(1)?).unwrap_or(u8::MAX),
                until: to_u64(row.try_get(2)?),
            });
        }
        for row in sqlx::query("SELECT user_key, record FROM user_profiles ORDER BY seq")
            .fetch_all(&mut *tx)
            .await?
        {
            let user: String = row.try_get(0)?;
            let record: String = row.try_get(1)?;
            let (Some(user), Some(record)) = (UserId::parse(&user), Record::parse(&record)) else {
                continue;
            };
            out.push(Change::UserProfile { user, record });
        }
        let totals = population_totals(&mut tx).await?;
        if totals.iter().any(|&t| t > 0) {
            let counters: Vec<(u32, u32)> = sqlx::query(
                "SELECT cell, count FROM population_counters WHERE count > 0 ORDER BY cell",
            )
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| -> Result<(u32, u32), sqlx::Error> {
                Ok((
                    u32::try_from(row.try_get::<i64, _>(0)?).unwrap_or(u32::MAX),
                    u32::try_from(row.try_get::<i64, _>(1)?).unwrap_or(u32::MAX),
                ))
            })
            .collect::<Result<_, _>>()?;
            out.extend(population_changes(&totals, &counters));
        }
        out.extend(bindings::snapshot(&mut tx).await?);
        out.extend(admin::trust_snapshot(&mut tx).await?);
        // Only the bundle in force: each replaces the one before whole.
        if let Some(bundle) = bundle_in_force(&mut tx).await? {
            out.push(bundle.into_change());
        }
        tx.commit().await?;
        Ok((head, out))
    }

    /// Deletes users' histories not updated for `keep_profiles` seconds,
    /// and the erasures older than that (an observation that old is
    /// refused anyway). Nodes are not told: each forgets a profile unused
    /// for its `user_idle_timeout` on its own.
    pub async fn expire_profiles(&self, now: u64, keep_profiles: u64) -> Result<u64, StoreError> {
        let before = to_i64(now.saturating_sub(keep_profiles));
        let mut n = 0;
        for sql in [
            "DELETE FROM user_profiles WHERE updated < $1",
            "DELETE FROM erased_users WHERE at < $1",
        ] {
            n += sqlx::query(sql)
                .bind(before)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(n)
    }

    /// The fleet's record of `user`'s history, if it holds one.
    pub async fn user_profile(&self, user: UserId) -> Result<Option<ProfileRecord>, StoreError> {
        let row = sqlx::query("SELECT record FROM user_profiles WHERE user_key = $1")
            .bind(user.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => Record::parse(&row.try_get::<String, _>(0)?)
                .and_then(|r| ProfileRecord::decode(&r.0)),
            None => None,
        })
    }

    /// Publishes a rule bundle of `text` (validated by the caller) as the
    /// next version, in force from its change on; returns the version and
    /// the change's sequence.
    pub async fn publish_rules(
        &self,
        text: &str,
        sha256: &str,
        now: u64,
    ) -> Result<(u64, u64), StoreError> {
        let mut tx = self.pool.begin().await?;
        // The log's lock first: two publications get two versions, in the
        // order of their changes.
        sqlx::query("UPDATE log_head SET head = head WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        let version = to_u64(
            sqlx::query("SELECT COALESCE(MAX(version), 0) FROM rule_bundles")
                .fetch_one(&mut *tx)
                .await?
                .try_get::<i64, _>(0)?,
        ) + 1;
        let change = Change::RulesBundle {
            version,
            sha256: sha256.to_owned(),
            created_at: now,
            text: text.to_owned(),
        };
        let head = append_in(&mut tx, &[change], now).await?;
        tx.commit().await?;
        Ok((version, head))
    }

    /// Publishes the stored bundle `version` again, as the one in force
    /// (a rollback); returns it and the change's sequence, or `None` for a
    /// version never published.
    pub async fn republish_rules(
        &self,
        version: u64,
        now: u64,
    ) -> Result<Option<(RuleBundle, u64)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE log_head SET head = head WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        let Some(bundle) = read_bundle(&mut tx, Some(version)).await? else {
            return Ok(None);
        };
        let head = append_in(&mut tx, &[bundle.clone().into_change()], now).await?;
        tx.commit().await?;
        Ok(Some((
            RuleBundle {
                seq: head,
                ..bundle
            },
            head,
        )))
    }

    /// Every bundle published, oldest version first, without their texts.
    pub async fn rule_bundles(&self) -> Result<Vec<RuleBundle>, StoreError> {
        sqlx::query("SELECT version, sha256, created_at, seq FROM rule_bundles ORDER BY version")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                Ok(RuleBundle {
                    version: to_u64(row.try_get(0)?),
                    sha256: row.try_get(1)?,
                    created_at: to_u64(row.try_get(2)?),
                    seq: to_u64(row.try_get(3)?),
                    text: String::new(),
                })
            })
            .collect()
    }

    /// The bundle `version` with its text, if it was published.
    pub async fn rule_bundle(&self, version: u64) -> Result<Option<RuleBundle>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let bundle = read_bundle(&mut tx, Some(version)).await?;
        tx.commit().await?;
        Ok(bundle)
    }

    /// What each node last reported of its rule bundles, by node name.
    pub async fn node_rules(&self) -> Result<HashMap<String, NodeRules>, StoreError> {
        let mut out = HashMap::new();
        for row in sqlx::query(
            "SELECT node, version, sha256, applied_at, failed_version, failed_sha256, failure, \
             failed_at FROM node_rules",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let node: String = row.try_get(0)?;
            let applied = match (
                row.try_get::<Option<i64>, _>(1)?,
                row.try_get::<Option<String>, _>(2)?,
                row.try_get::<Option<i64>, _>(3)?,
            ) {
                (Some(v), Some(sha), Some(at)) => Some((to_u64(v), sha, to_u64(at))),
                _ => None,
            };
            let failure = match (
                row.try_get::<Option<i64>, _>(4)?,
                row.try_get::<Option<String>, _>(5)?,
                row.try_get::<Option<String>, _>(6)?,
                row.try_get::<Option<i64>, _>(7)?,
            ) {
                (Some(v), Some(sha), Some(problems), Some(at)) => Some((
                    to_u64(v),
                    sha,
                    serde_json::from_str(&problems).unwrap_or_default(),
                    to_u64(at),
                )),
                _ => None,
            };
            out.insert(node, NodeRules { applied, failure });
        }
        Ok(out)
    }

    /// The nodes an operator disabled through the admin API.
    pub async fn disabled_nodes(&self) -> Result<std::collections::HashSet<String>, StoreError> {
        sqlx::query("SELECT name FROM disabled_nodes")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| Ok(row.try_get::<String, _>(0)?))
            .collect()
    }

    /// Disables node `name`, or enables it again.
    pub async fn set_node_disabled(
        &self,
        name: &str,
        disabled: bool,
        now: u64,
    ) -> Result<(), StoreError> {
        if disabled {
            sqlx::query(
                "INSERT INTO disabled_nodes (name, at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(to_i64(now))
            .execute(&self.pool)
            .await?;
        } else {
            sqlx::query("DELETE FROM disabled_nodes WHERE name = $1")
                .bind(name)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Deletes the log's changes older than the newest `keep` and moves
    /// `oldest` up: a node further behind gets a snapshot. Returns how many
    /// were deleted.
    pub async fn compact(&self, keep: u64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("UPDATE log_head SET oldest = CASE WHEN head > $1 THEN head - $1 + 1 ELSE oldest END WHERE id = 1 RETURNING oldest")
            .bind(to_i64(keep))
            .fetch_one(&mut *tx)
            .await?;
        let oldest: i64 = row.try_get(0)?;
        let deleted = sqlx::query("DELETE FROM changes WHERE seq < $1")
            .bind(oldest)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }
}

/// The PostgreSQL channel every writing transaction notifies at commit,
/// with the new head as its payload.
pub const NOTIFY_CHANNEL: &str = "vigil_changes";

/// Log rows per `INSERT` statement: one round trip (and one statement to
/// plan) for many rows, well inside SQLite's and PostgreSQL's limits on
/// bound parameters (3 a row).
const ROWS_PER_INSERT: usize = 250;

/// Inserts the log rows of `changes`, numbered from `first`, a few hundred
/// to a statement.
async fn insert_log_rows(
    tx: &mut Transaction<'static, Any>,
    first: i64,
    changes: &[Change],
    now: u64,
) -> Result<(), StoreError> {
    let mut seq = first;
    for chunk in changes.chunks(ROWS_PER_INSERT) {
        let mut sql = String::from("INSERT INTO changes (seq, at, body) VALUES ");
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            let p = 3 * i;
            sql.push_str(&format!("(${}, ${}, ${})", p + 1, p + 2, p + 3));
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for change in chunk {
            let body = serde_json::to_string(change).map_err(|e| StoreError::Record {
                seq: to_u64(seq),
                problem: e.to_string(),
            })?;
            query = query.bind(seq).bind(to_i64(now)).bind(body);
            seq += 1;
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// [`Store::revoke_user`] inside `tx`, shared with the Shared Signals
/// receiver ([`ssf`]), whose deduplication row commits with it.
async fn revoke_user_in(
    tx: &mut Transaction<'static, Any>,
    user: UserId,
    at: u64,
    now: u64,
) -> Result<u64, StoreError> {
    sqlx::query("UPDATE log_head SET head = head WHERE id = 1")
        .execute(&mut **tx)
        .await?;
    let mut changes = vec![Change::UserRevoked { user, at }];
    for row in sqlx::query("SELECT session FROM session_baselines WHERE user_key = $1 ORDER BY seq")
        .bind(user.to_string())
        .fetch_all(&mut **tx)
        .await?
    {
        let session: String = row.try_get(0)?;
        if let Some(session) = SessionId::parse(&session) {
            changes.push(Change::SessionRevoked {
                session,
                at,
                vouched: true,
            });
        }
    }
    append_in(tx, &changes, now).await
}

/// Appends inside `tx`: the head row first (taking its lock), then each
/// change and the state it builds.
async fn append_in(
    tx: &mut Transaction<'static, Any>,
    changes: &[Change],
    now: u64,
) -> Result<u64, StoreError> {
    let n = i64::try_from(changes.len()).unwrap_or(i64::MAX);
    let head: i64 = sqlx::query("UPDATE log_head SET head = head + $1 WHERE id = 1 RETURNING head")
        .bind(n)
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?;
    let first = head - n + 1;
    insert_log_rows(tx, first, changes, now).await?;
    if n > 0 && tx.backend_name() == "PostgreSQL" {
        // Delivered at commit, to every replica listening (`crate::tail`).
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NOTIFY_CHANNEL)
            .bind(head.to_string())
            .execute(&mut **tx)
            .await?;
    }
    // Session revocations, the bulk of the log, are written together
    // after the rest ([`insert_revocations`]).
    let mut revoked: HashMap<SessionId, (u64, i64, bool)> = HashMap::new();
    // User revocations not written yet: a run of them is written when a
    // change of another kind (but a session revocation, written last
    // anyway) comes, so that every change sees the ones before it.
    let mut users_revoked: Vec<(UserId, u64, i64)> = Vec::new();
    for (seq, change) in (first..).zip(changes) {
        if !matches!(
            change,
            Change::UserRevoked { .. } | Change::SessionRevoked { .. }
        ) && !users_revoked.is_empty()
        {
            insert_user_revocations(tx, &users_revoked).await?;
            users_revoked.clear();
        }
        match change {
            Change::SessionRevoked {
                session,
                at,
                vouched,
            } => {
                revoked
                    .entry(*session)
                    .and_modify(|held| held.2 |= *vouched)
                    .or_insert((*at, seq, *vouched));
            }
            Change::UserRevoked { user, at } => {
                // Written together with the run of user revocations it is
                // in (a group commit of SETs or admin calls is mostly
                // that): three statements for the run, not per user.
                users_revoked.push((*user, *at, seq));
                continue;
            }
            Change::UserStepUp { user, at } => {
                // The latest ask wins; an earlier one changes nothing (as
                // on a node).
                sqlx::query(
                    "INSERT INTO user_step_ups (user_key, at, seq) VALUES ($1, $2, $3) \
                     ON CONFLICT (user_key) DO UPDATE SET \
                     at = CASE WHEN excluded.at > user_step_ups.at THEN excluded.at ELSE user_step_ups.at END, \
                     seq = excluded.seq",
                )
                .bind(user.to_string())
                .bind(to_i64(*at))
                .bind(seq)
                .execute(&mut **tx)
                .await?;
            }
            Change::SessionBaseline { record, confirmed } => {
                let Ok((key, state)) = SessionState::decode(&record.0) else {
                    // Judged before it was appended; nothing else writes one.
                    continue;
                };
                sqlx::query(
                    "INSERT INTO session_baselines (session, user_key, first_seen, record, confirmed, seq, updated) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (session) DO UPDATE SET user_key = excluded.user_key, \
                     first_seen = excluded.first_seen, record = excluded.record, \
                     confirmed = excluded.confirmed, seq = excluded.seq, updated = excluded.updated",
                )
                .bind(SessionId(*key.as_bytes()).to_string())
                .bind(state.user().map(|u| UserId(u.as_u64()).to_string()))
                .bind(to_i64(state.first_seen()))
                .bind(record.to_string())
                .bind(i64::from(*confirmed))
                .bind(seq)
                .bind(to_i64(now))
                .execute(&mut **tx)
                .await?;
            }
            Change::SessionBinding(record) => {
                bindings::write(tx, record, seq, now).await?;
            }
            Change::UserDetections { user, count, until } => {
                sqlx::query(
                    "INSERT INTO user_detections (user_key, count, until, seq) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (user_key) DO UPDATE SET count = excluded.count, \
                     until = excluded.until, seq = excluded.seq",
                )
                .bind(user.to_string())
                .bind(i64::from(*count))
                .bind(to_i64(*until))
                .bind(seq)
                .execute(&mut **tx)
                .await?;
            }
            Change::UserErased { user, at } => {
                let key = user.to_string();
                // The user's sessions end, by their keys alone.
                sqlx::query(
                    "INSERT INTO revoked_sessions (session, at, seq, vouched) \
                     SELECT session, $1, $2, 1 FROM session_baselines WHERE user_key = $3 \
                     ON CONFLICT (session) DO UPDATE SET vouched = 1",
                )
                .bind(to_i64(*at))
                .bind(seq)
                .bind(key.as_str())
                .execute(&mut **tx)
                .await?;
                // Observations of the user made before now, still queued
                // on a node, must not bring their history back.
                sqlx::query(
                    "INSERT INTO erased_users (user_key, at) VALUES ($1, $2) \
                     ON CONFLICT (user_key) DO UPDATE SET at = excluded.at",
                )
                .bind(key.as_str())
                .bind(to_i64(now.max(*at)))
                .execute(&mut **tx)
                .await?;
                sqlx::query(
                    "DELETE FROM dbsc_bindings WHERE session IN \
                     (SELECT session FROM session_baselines WHERE user_key = $1)",
                )
                .bind(key.as_str())
                .execute(&mut **tx)
                .await?;
                for table in [
                    "session_baselines",
                    "detections",
                    "user_risk",
                    "user_detections",
                    "revoked_users",
                    "user_step_ups",
                    "idp_sessions",
                    "user_profiles",
                    // What the admin API kept of them: trusted devices
                    // and networks, the name. Their false-positive marks
                    // went with their detections, above.
                    "user_trust",
                    "user_names",
                    // What nodes taught of them today.
                    "node_user_budget",
                ] {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DELETE FROM {table} WHERE user_key = $1"
                    )))
                    .bind(key.as_str())
                    .execute(&mut **tx)
                    .await?;
                }
                // Earlier changes naming the user, or holding a record of
                // theirs (the user key's little-endian bytes in hex), say
                // nothing any more; their numbers stay, so a node catching
                // up sees no gap, and this erasure, after them, ends what
                // they did. This change keeps the key until compaction.
                let nothing =
                    serde_json::to_string(&Change::nothing()).map_err(|e| StoreError::Record {
                        seq: to_u64(seq),
                        problem: e.to_string(),
                    })?;
                let in_record: String = user
                    .0
                    .to_le_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                sqlx::query(
                    "UPDATE changes SET body = $1 WHERE seq <> $2 AND (body LIKE $3 OR body LIKE $4)",
                )
                .bind(nothing)
                .bind(seq)
                .bind(format!("%\"user\":\"{key}\"%"))
                .bind(format!("%\"record\":\"%{in_record}%"))
                .execute(&mut **tx)
                .await?;
            }
            Change::UserProfile { user, record } => {
                sqlx::query(
                    "INSERT INTO user_profiles (user_key, record, seq, updated) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (user_key) DO UPDATE SET record = excluded.record, \
                     seq = excluded.seq, updated = excluded.updated",
                )
                .bind(user.to_string())
                .bind(record.to_string())
                .bind(seq)
                .bind(to_i64(now))
                .execute(&mut **tx)
                .await?;
            }
            Change::Population { totals, counters } => {
                write_population(tx, totals, counters).await?;
            }
            Change::RulesBundle {
                version,
                sha256,
                created_at,
                text,
            } => {
                // A rollback publishes a stored version again: only its
                // number in the log moves.
                sqlx::query(
                    "INSERT INTO rule_bundles (version, text, sha256, created_at, seq) \
                     VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (version) DO UPDATE SET seq = excluded.seq",
                )
                .bind(to_i64(*version))
                .bind(text.as_str())
                .bind(sha256.as_str())
                .bind(to_i64(*created_at))
                .bind(seq)
                .execute(&mut **tx)
                .await?;
            }
            // Never written: the controller appends only kinds it knows.
            Change::Unknown => {}
            // Judged before it was appended: the first binding stays.
            Change::DbscBound { binding } => {
                sqlx::query(
                    "INSERT INTO dbsc_bindings (session, dbsc_id, root, public_key, node, at, seq) \
                     VALUES ($1, $2, $3, $4, '', $5, $6) ON CONFLICT (session) DO NOTHING",
                )
                .bind(binding.session.to_string())
                .bind(binding.id.to_string())
                .bind(binding.root.map(|r| r.to_string()))
                .bind(binding.key.to_string())
                .bind(to_i64(binding.at))
                .bind(seq)
                .execute(&mut **tx)
                .await?;
            }
            Change::DeviceTrusted { user, device, at } => {
                admin::insert_trust(tx, *user, "device", &device.to_string(), *at, seq).await?;
            }
            Change::NetworkTrusted { user, network, at } => {
                if let Some((what, value)) = admin::trust_row(network) {
                    admin::insert_trust(tx, *user, what, &value, *at, seq).await?;
                }
            }
            // The marks are written with it ([`Store::false_positive`]).
            Change::FalsePositive { .. } => {}
            Change::UserRisk {
                user, points: 0, ..
            } => {
                sqlx::query("DELETE FROM user_risk WHERE user_key = $1")
                    .bind(user.to_string())
                    .execute(&mut **tx)
                    .await?;
            }
            Change::UserRisk {
                user,
                points,
                until,
                at,
            } => {
                sqlx::query(
                    "INSERT INTO user_risk (user_key, points, until, at, seq) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (user_key) DO UPDATE SET points = excluded.points, \
                     until = excluded.until, at = excluded.at, seq = excluded.seq",
                )
                .bind(user.to_string())
                .bind(i64::from(*points))
                .bind(to_i64(*until))
                .bind(to_i64(*at))
                .bind(seq)
                .execute(&mut **tx)
                .await?;
            }
        }
    }
    if !users_revoked.is_empty() {
        insert_user_revocations(tx, &users_revoked).await?;
    }
    insert_revocations(tx, &revoked).await?;
    Ok(to_u64(head))
}

/// Users' histories and population counts touched by one batch, before
/// they become changes: one [`Change::UserProfile`] per user touched and
/// the population's counters touched, in as few [`Change::Population`]
/// as [`MAX_POPULATION_COUNTERS`] allows.
struct Histories {
    /// Per user, in the order first touched: the profile (`None` until an
    /// observation is taken), the time of the user's erasure (0: none),
    /// and the observations taken from this batch.
    users: Vec<(UserId, Option<ProfileRecord>, u64, u32)>,
    /// Increments per population counter.
    counters: HashMap<u32, u32>,
    /// Increments per feature's total.
    totals: [u64; POPULATION_FEATURES],
    /// The node whose observations these are.
    node: String,
    /// Today (UTC days since the epoch): the budgets' day.
    day: u64,
    /// The node's daily budgets.
    budgets: crate::config::NodeBudgets,
    /// Per user: the node's observations and session-opening ones today,
    /// as held before this batch, and those this batch took.
    spent: HashMap<UserId, Spent>,
    /// Users the node started a fleet history for today, before this
    /// batch and in it.
    new_users: (u32, u32),
}

/// A node's observations of one user today ([`Histories::spent`]).
#[derive(Debug, Clone, Copy, Default)]
struct Spent {
    held: (u32, u32),
    taken: (u32, u32),
}

/// What became of an observation.
enum Observed {
    /// Added to the user's history and the population.
    Taken,
    /// Changed nothing: made before the user's erasure, or beyond
    /// [`MAX_LEARNT_PER_USER`] of the batch.
    Ignored,
    /// Beyond a budget of the node's.
    Refused(Refusal),
}

impl Histories {
    fn new(node: &str, now: u64, budgets: crate::config::NodeBudgets) -> Histories {
        Histories {
            users: Vec::new(),
            counters: HashMap::new(),
            totals: [0; POPULATION_FEATURES],
            node: node.to_owned(),
            day: now / 86_400,
            budgets,
            spent: HashMap::new(),
            new_users: (0, 0),
        }
    }

    /// Reads what the store holds of every user the batch's observations
    /// name — their histories and erasures — a few hundred users to a
    /// statement, not two round trips per user under the log's lock.
    async fn prefetch(
        &mut self,
        tx: &mut Transaction<'static, Any>,
        events: &[NodeEvent],
    ) -> Result<(), StoreError> {
        let mut users: Vec<UserId> = events
            .iter()
            .filter_map(|e| match e.kind {
                NodeEventKind::UserLearned { user, .. } => Some(user),
                _ => None,
            })
            .collect();
        users.sort_unstable();
        users.dedup();
        for chunk in users.chunks(CELLS_PER_STATEMENT) {
            let list: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let mut held: HashMap<String, (Option<ProfileRecord>, u64)> = HashMap::new();
            for (sql, erasures) in [
                ("SELECT user_key, record FROM user_profiles", false),
                ("SELECT user_key, at FROM erased_users", true),
            ] {
                let sql = format!("{sql} WHERE user_key IN ({})", list.join(", "));
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for user in chunk {
                    query = query.bind(user.to_string());
                }
                for row in query.fetch_all(&mut **tx).await? {
                    let entry = held.entry(row.try_get::<String, _>(0)?).or_default();
                    if erasures {
                        entry.1 = to_u64(row.try_get(1)?);
                    } else {
                        entry.0 = Record::parse(&row.try_get::<String, _>(1)?)
                            .and_then(|r| ProfileRecord::decode(&r.0));
                    }
                }
            }
            for user in chunk {
                let (profile, erased_at) = held.remove(&user.to_string()).unwrap_or_default();
                self.users.push((*user, profile, erased_at, 0));
            }
            let sql = format!(
                "SELECT user_key, observations, new_sessions FROM node_user_budget \
                 WHERE node = $1 AND day = $2 AND user_key IN ({})",
                (3..chunk.len() + 3)
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(self.node.as_str())
                .bind(to_i64(self.day));
            for user in chunk {
                query = query.bind(user.to_string());
            }
            for row in query.fetch_all(&mut **tx).await? {
                let Some(user) = UserId::parse(&row.try_get::<String, _>(0)?) else {
                    continue;
                };
                let count = |i| -> Result<u32, sqlx::Error> {
                    Ok(u32::try_from(row.try_get::<i64, _>(i)?).unwrap_or(u32::MAX))
                };
                self.spent.entry(user).or_default().held = (count(1)?, count(2)?);
            }
        }
        if !users.is_empty() {
            self.new_users.0 = self.new_users_held(tx).await?;
        }
        Ok(())
    }

    /// Users the node started a fleet history for today, as held.
    async fn new_users_held(&self, tx: &mut Transaction<'static, Any>) -> Result<u32, StoreError> {
        Ok(
            sqlx::query("SELECT new_users FROM node_day_budget WHERE node = $1 AND day = $2")
                .bind(self.node.as_str())
                .bind(to_i64(self.day))
                .fetch_optional(&mut **tx)
                .await?
                .map(|row| row.try_get::<i64, _>(0))
                .transpose()?
                .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
        )
    }

    /// Adds `learnt` to the user's history (as [`Histories::prefetch`]
    /// read it, or from the store now for a user it did not) and to the
    /// population.
    /// Changes nothing when the user was erased after it was made or the
    /// batch already brought [`MAX_LEARNT_PER_USER`] of theirs (ignored),
    /// or when it is beyond one of the node's daily budgets (refused):
    /// observations of the user, session-opening ones, users without a
    /// fleet history.
    async fn observe(
        &mut self,
        tx: &mut Transaction<'static, Any>,
        user: UserId,
        learnt: &Learnt,
    ) -> Result<Observed, StoreError> {
        let i = match self.users.iter().position(|(u, ..)| *u == user) {
            Some(i) => i,
            None => {
                let key = user.to_string();
                let erased_at = sqlx::query("SELECT at FROM erased_users WHERE user_key = $1")
                    .bind(key.as_str())
                    .fetch_optional(&mut **tx)
                    .await?
                    .map(|row| row.try_get::<i64, _>(0))
                    .transpose()?
                    .map_or(0, to_u64);
                let held = sqlx::query("SELECT record FROM user_profiles WHERE user_key = $1")
                    .bind(key.as_str())
                    .fetch_optional(&mut **tx)
                    .await?
                    .map(|row| row.try_get::<String, _>(0))
                    .transpose()?
                    .and_then(|r| Record::parse(&r))
                    .and_then(|r| ProfileRecord::decode(&r.0));
                self.users.push((user, held, erased_at, 0));
                self.users.len() - 1
            }
        };
        let Some((_, profile, erased_at, taken)) = self.users.get_mut(i) else {
            return Ok(Observed::Ignored);
        };
        if learnt.at <= *erased_at || *taken >= MAX_LEARNT_PER_USER {
            return Ok(Observed::Ignored);
        }
        let spent = self.spent.entry(user).or_default();
        let observations = spent.held.0.saturating_add(spent.taken.0);
        let sessions = spent.held.1.saturating_add(spent.taken.1);
        if observations >= self.budgets.observations_per_user_per_day {
            return Ok(Observed::Refused(Refusal::ObservationBudget));
        }
        if learnt.new_session && sessions >= self.budgets.new_sessions_per_user_per_day {
            return Ok(Observed::Refused(Refusal::NewSessionBudget));
        }
        if profile.is_none() {
            if self.new_users.0.saturating_add(self.new_users.1) >= self.budgets.new_users_per_day {
                return Ok(Observed::Refused(Refusal::NewUserBudget));
            }
            self.new_users.1 += 1;
        }
        spent.taken.0 += 1;
        spent.taken.1 += u32::from(learnt.new_session);
        *taken += 1;
        profile
            .get_or_insert_with(|| ProfileRecord::new(learnt.at))
            .observe(learnt);
        for (_, cell) in vigil_engine::population_cells(learnt) {
            let c = self.counters.entry(cell).or_insert(0);
            *c = c.saturating_add(1);
        }
        for (k, total) in self.totals.iter_mut().enumerate() {
            if learnt.which & (1 << k) != 0 && learnt.values.get(k).is_some_and(|&v| v != 0) {
                *total += 1;
            }
        }
        Ok(Observed::Taken)
    }

    /// Adds what this batch took to the node's budgets of today.
    async fn spend(&self, tx: &mut Transaction<'static, Any>) -> Result<(), StoreError> {
        let rows: Vec<(&UserId, &Spent)> =
            self.spent.iter().filter(|(_, s)| s.taken.0 > 0).collect();
        for chunk in rows.chunks(CELLS_PER_STATEMENT) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let p = 5 * i;
                    format!(
                        "(${}, ${}, ${}, ${}, ${})",
                        p + 1,
                        p + 2,
                        p + 3,
                        p + 4,
                        p + 5
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO node_user_budget (node, day, user_key, observations, new_sessions) \
                 VALUES {} ON CONFLICT (node, day, user_key) DO UPDATE SET \
                 observations = node_user_budget.observations + excluded.observations, \
                 new_sessions = node_user_budget.new_sessions + excluded.new_sessions",
                values.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (user, spent) in chunk {
                query = query
                    .bind(self.node.as_str())
                    .bind(to_i64(self.day))
                    .bind(user.to_string())
                    .bind(i64::from(spent.taken.0))
                    .bind(i64::from(spent.taken.1));
            }
            query.execute(&mut **tx).await?;
        }
        if self.new_users.1 > 0 {
            sqlx::query(
                "INSERT INTO node_day_budget (node, day, new_users) VALUES ($1, $2, $3) \
                 ON CONFLICT (node, day) DO UPDATE SET \
                 new_users = node_day_budget.new_users + excluded.new_users",
            )
            .bind(self.node.as_str())
            .bind(to_i64(self.day))
            .bind(i64::from(self.new_users.1))
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// The changes: each touched user's profile, then the population's
    /// touched counters with their new counts (the store's plus this
    /// batch's) and every feature's new total.
    async fn changes(
        self,
        tx: &mut Transaction<'static, Any>,
        changes: &mut Vec<Change>,
    ) -> Result<(), StoreError> {
        // Only users an observation of this batch was taken for: the
        // others were read ahead and are unchanged.
        for (user, profile, _, taken) in &self.users {
            if let (Some(profile), 1..) = (profile, taken) {
                changes.push(Change::UserProfile {
                    user: *user,
                    record: Record(profile.encode().to_vec()),
                });
            }
        }
        if self.counters.is_empty() {
            return Ok(());
        }
        let mut totals = population_totals(tx).await?;
        for (total, add) in totals.iter_mut().zip(self.totals) {
            *total = total.saturating_add(add);
        }
        let mut cells: Vec<(u32, u32)> = self.counters.into_iter().collect();
        cells.sort_unstable();
        let mut counted = Vec::with_capacity(cells.len());
        for chunk in cells.chunks(CELLS_PER_STATEMENT) {
            let list: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT cell, count FROM population_counters WHERE cell IN ({})",
                list.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (cell, _) in chunk {
                query = query.bind(i64::from(*cell));
            }
            let mut held = HashMap::new();
            for row in query.fetch_all(&mut **tx).await? {
                held.insert(row.try_get::<i64, _>(0)?, row.try_get::<i64, _>(1)?);
            }
            for &(cell, add) in chunk {
                let before = held
                    .get(&i64::from(cell))
                    .map_or(0, |&n| u32::try_from(n).unwrap_or(u32::MAX));
                counted.push((cell, before.saturating_add(add)));
            }
        }
        changes.extend(population_changes(&totals, &counted));
        Ok(())
    }
}

/// Counters per statement reading or writing the population.
const CELLS_PER_STATEMENT: usize = 500;

/// Each feature's total sightings held.
async fn population_totals(
    tx: &mut Transaction<'static, Any>,
) -> Result<[u64; POPULATION_FEATURES], StoreError> {
    let mut totals = [0u64; POPULATION_FEATURES];
    for row in sqlx::query("SELECT feature, total FROM population_totals")
        .fetch_all(&mut **tx)
        .await?
    {
        let k = usize::try_from(row.try_get::<i64, _>(0)?).unwrap_or(usize::MAX);
        if let Some(t) = totals.get_mut(k) {
            *t = to_u64(row.try_get(1)?);
        }
    }
    Ok(totals)
}

/// `counters` as population changes of at most [`MAX_POPULATION_COUNTERS`]
/// each, every one with all the totals.
fn population_changes(totals: &[u64; POPULATION_FEATURES], counters: &[(u32, u32)]) -> Vec<Change> {
    counters
        .chunks(MAX_POPULATION_COUNTERS)
        .map(|chunk| Change::Population {
            totals: totals.to_vec(),
            counters: chunk.to_vec(),
        })
        .collect()
}

/// Writes a population change: each total and counter takes the larger
/// of the one held and the one given (counts only grow; a change applied
/// twice, or out of order, changes nothing).
async fn write_population(
    tx: &mut Transaction<'static, Any>,
    totals: &[u64],
    counters: &[(u32, u32)],
) -> Result<(), StoreError> {
    let totals: Vec<(i64, i64)> = totals
        .iter()
        .take(POPULATION_FEATURES)
        .enumerate()
        .map(|(k, &t)| (i64::try_from(k).unwrap_or(0), to_i64(t)))
        .collect();
    let counters: Vec<(i64, i64)> = counters
        .iter()
        .filter(|(cell, _)| *cell < vigil_engine::POPULATION_CELLS)
        .map(|&(cell, count)| (i64::from(cell), i64::from(count)))
        .collect();
    for (table, key, value, rows) in [
        ("population_totals", "feature", "total", &totals),
        ("population_counters", "cell", "count", &counters),
    ] {
        for chunk in rows.chunks(CELLS_PER_STATEMENT) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
                .collect();
            let sql = format!(
                "INSERT INTO {table} ({key}, {value}) VALUES {} \
                 ON CONFLICT ({key}) DO UPDATE SET {value} = CASE \
                 WHEN excluded.{value} > {table}.{value} THEN excluded.{value} \
                 ELSE {table}.{value} END",
                values.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (k, v) in chunk {
                query = query.bind(*k).bind(*v);
            }
            query.execute(&mut **tx).await?;
        }
    }
    Ok(())
}

/// What a node's session record comes to.
enum Judged {
    /// The session's baseline is now `Held` (the record's, the held one
    /// with the record's binding, or both joined).
    Baseline(SessionId, Held),
    /// The record is of a session bound to a user revoked since it was
    /// first seen: the session is revoked.
    Revoke(SessionId),
    /// Nothing changes.
    Nothing,
}

/// Event ids per statement: 3 parameters each.
const IDS_PER_STATEMENT: usize = 500;

/// Records the node's event ids not taken before, in as few statements as
/// the batch allows; returns those that were new.
async fn take_ids(
    tx: &mut Transaction<'static, Any>,
    node: &str,
    events: &[NodeEvent],
    now: u64,
) -> Result<std::collections::HashSet<String>, StoreError> {
    let mut new = std::collections::HashSet::new();
    // A binding record is a join: taken twice it changes nothing the
    // second time, so its id is not kept (one a session per rotation
    // would outgrow every other row of the store).
    let events: Vec<&NodeEvent> = events
        .iter()
        .filter(|e| !matches!(e.kind, NodeEventKind::SessionBinding(_)))
        .collect();
    for chunk in events.chunks(IDS_PER_STATEMENT) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
            .collect();
        let sql = format!(
            "INSERT INTO node_events (node, id, at) VALUES {} \
             ON CONFLICT (node, id) DO NOTHING RETURNING id",
            values.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for event in chunk {
            query = query.bind(node).bind(event.id.as_str()).bind(to_i64(now));
        }
        for row in query.fetch_all(&mut **tx).await? {
            new.insert(row.try_get::<String, _>(0)?);
        }
    }
    Ok(new)
}

/// Rows of session revocations per statement: 4 parameters each, well
/// inside both databases' limits.
const REVOCATIONS_PER_STATEMENT: usize = 500;

/// Writes the batch's session revocations, one statement per
/// [`REVOCATIONS_PER_STATEMENT`] (and drops their baselines): a row each
/// would make the commit, not the stream, the limit. A later vouched
/// revocation of a session vouches for it; nothing takes a vouch back.
/// Users revoked in a run of [`Change::UserRevoked`], each with its time
/// and sequence, in three statements per [`USERS_PER_STATEMENT`]: their
/// rows (the last of a user in the run wins, as one by one it would), the
/// revocation of each session the store holds a baseline of for them — so
/// that a node starting from a snapshot ends those too, learning their
/// baselines after the user's revocation — and those baselines' removal.
async fn insert_user_revocations(
    tx: &mut Transaction<'static, Any>,
    users: &[(UserId, u64, i64)],
) -> Result<(), StoreError> {
    let mut last: HashMap<UserId, (u64, i64)> = HashMap::new();
    for (user, at, seq) in users {
        last.insert(*user, (*at, *seq));
    }
    let rows: Vec<(&UserId, &(u64, i64))> = last.iter().collect();
    for chunk in rows.chunks(USERS_PER_STATEMENT) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
            .collect();
        let values = values.join(", ");
        let bind = |sql: String| {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (user, (at, seq)) in chunk {
                query = query.bind(user.to_string()).bind(to_i64(*at)).bind(*seq);
            }
            query
        };
        bind(format!(
            "INSERT INTO revoked_users (user_key, at, seq) VALUES {values} \
             ON CONFLICT (user_key) DO UPDATE SET at = excluded.at, seq = excluded.seq"
        ))
        .execute(&mut **tx)
        .await?;
        // `WHERE true`: SQLite reads an upsert's SELECT … JOIN … ON
        // ambiguously without a WHERE.
        bind(format!(
            "WITH revoked (user_key, at, seq) AS (VALUES {values}) \
             INSERT INTO revoked_sessions (session, at, seq, vouched) \
             SELECT b.session, r.at, r.seq, 1 FROM session_baselines b \
             JOIN revoked r ON b.user_key = r.user_key WHERE true \
             ON CONFLICT (session) DO UPDATE SET vouched = 1"
        ))
        .execute(&mut **tx)
        .await?;
        let list: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM session_baselines WHERE user_key IN ({})",
            list.join(", ")
        )));
        for (user, _) in chunk {
            query = query.bind(user.to_string());
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// User revocations written by one statement (three values each).
const USERS_PER_STATEMENT: usize = 300;

async fn insert_revocations(
    tx: &mut Transaction<'static, Any>,
    revoked: &HashMap<SessionId, (u64, i64, bool)>,
) -> Result<(), StoreError> {
    let rows: Vec<(&SessionId, &(u64, i64, bool))> = revoked.iter().collect();
    for chunk in rows.chunks(REVOCATIONS_PER_STATEMENT) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| {
                format!(
                    "(${}, ${}, ${}, ${})",
                    4 * i + 1,
                    4 * i + 2,
                    4 * i + 3,
                    4 * i + 4
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO revoked_sessions (session, at, seq, vouched) VALUES {} \
             ON CONFLICT (session) DO UPDATE SET vouched = CASE \
             WHEN excluded.vouched > revoked_sessions.vouched THEN excluded.vouched \
             ELSE revoked_sessions.vouched END",
            values.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (session, (at, seq, vouched)) in chunk {
            query = query
                .bind(session.to_string())
                .bind(to_i64(*at))
                .bind(*seq)
                .bind(i64::from(*vouched));
        }
        query.execute(&mut **tx).await?;
        let list: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "DELETE FROM session_baselines WHERE session IN ({})",
            list.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (session, _) in chunk {
            query = query.bind(session.to_string());
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Judges a node's session record (see [`Store::take_events`]).
///
/// The baseline is the earliest sighting's, or a confirmed one's (and a
/// confirmed baseline gives way only to another confirmed one); the
/// binding is whichever record named a user — never undone, and a record
/// naming another user than the one held changes nothing. The two are
/// joined into one record ([`SessionState::with_user`]).
async fn judge_baseline(
    tx: &mut Transaction<'static, Any>,
    pending: &HashMap<SessionId, Held>,
    record: &Record,
    confirmed: bool,
    now: u64,
    intake: Intake,
    may_revoke: bool,
) -> Result<Judged, StoreError> {
    let Ok((key, state)) = SessionState::decode(&record.0) else {
        return Ok(Judged::Nothing);
    };
    let first_seen = state.first_seen();
    // Nodes' clocks differ by a little; a sighting in the future, or a
    // session idle for longer than any node keeps one, is not taken.
    if first_seen > now.saturating_add(300)
        || state.last_seen() > now.saturating_add(300)
        || state.last_seen() < now.saturating_sub(intake.max_session_age)
    {
        return Ok(Judged::Nothing);
    }
    let session = SessionId(*key.as_bytes());
    let id = session.to_string();
    if sqlx::query("SELECT 1 FROM revoked_sessions WHERE session = $1")
        .bind(id.as_str())
        .fetch_optional(&mut **tx)
        .await?
        .is_some()
    {
        return Ok(Judged::Nothing);
    }
    let user = state.user().map(|u| UserId(u.as_u64()));
    if let Some(user) = user {
        let revoked_at = sqlx::query("SELECT at FROM revoked_users WHERE user_key = $1")
            .bind(user.to_string())
            .fetch_optional(&mut **tx)
            .await?
            .map(|row| row.try_get::<i64, _>(0))
            .transpose()?
            .map(to_u64);
        if revoked_at.is_some_and(|at| at >= first_seen) {
            return Ok(if may_revoke {
                Judged::Revoke(session)
            } else {
                Judged::Nothing
            });
        }
    }
    let held = match pending.get(&session) {
        Some(held) => Some(held.clone()),
        None => {
            let row = sqlx::query(
                "SELECT first_seen, user_key, record, confirmed FROM session_baselines WHERE session = $1",
            )
            .bind(id.as_str())
            .fetch_optional(&mut **tx)
            .await?;
            match row {
                None => None,
                Some(row) => {
                    let user: Option<String> = row.try_get(1)?;
                    let record: String = row.try_get(2)?;
                    Record::parse(&record)
                        .map(|record| Held {
                            first_seen: 0,
                            user: user.as_deref().and_then(UserId::parse),
                            record,
                            confirmed: false,
                        })
                        .map(|held| -> Result<Held, sqlx::Error> {
                            Ok(Held {
                                first_seen: to_u64(row.try_get(0)?),
                                confirmed: row.try_get::<i64, _>(3)? != 0,
                                ..held
                            })
                        })
                        .transpose()?
                }
            }
        }
    };
    let Some(held) = held else {
        return Ok(Judged::Baseline(
            session,
            Held {
                first_seen,
                user,
                record: record.clone(),
                confirmed,
            },
        ));
    };
    if held.user.is_some() && user.is_some() && held.user != user {
        tracing::warn!(
            session = %id.get(..8).unwrap_or(""),
            "a session record names another user than the one held; ignored"
        );
        return Ok(Judged::Nothing);
    }
    let baseline = if held.confirmed {
        confirmed
    } else {
        confirmed || first_seen < held.first_seen
    };
    let binds = held.user.is_none() && user.is_some();
    if !baseline && !binds {
        // Still in use somewhere: kept as long as it is.
        sqlx::query("UPDATE session_baselines SET updated = $1 WHERE session = $2")
            .bind(to_i64(now))
            .bind(id.as_str())
            .execute(&mut **tx)
            .await?;
        return Ok(Judged::Nothing);
    }
    let (base, first_seen, confirmed) = if baseline {
        (record, first_seen, confirmed)
    } else {
        (&held.record, held.first_seen, held.confirmed)
    };
    let user = user.or(held.user);
    let Ok(joined) = SessionState::with_user(
        &base.0,
        user.and_then(|u| vigil_engine::UserKey::from_u64(u.0)),
    ) else {
        return Ok(Judged::Nothing);
    };
    Ok(Judged::Baseline(
        session,
        Held {
            first_seen,
            user,
            record: Record(joined.to_vec()),
            confirmed,
        },
    ))
}

/// Judges a node's decided revocation of `session` (see
/// [`Store::take_events`] and `docs/controller.md`, Intake rules): taken
/// only on the node's own evidence — `reference` names a detection this
/// node posted before (earlier in this batch, or in an earlier one) of
/// this very session, enforced, whose action was `revoke`. Taken, it is
/// vouched when the evidence binds the session to the user the fleet
/// holds it for: the baseline held (recorded by any node) names a user,
/// and the detection and the revocation name that same user. A
/// detection, the revocation or the baseline naming different users
/// refuses it. Returns whether it is vouched and which node recorded the
/// baseline held, or why it is refused.
async fn judge_revocation(
    tx: &mut Transaction<'static, Any>,
    node: &str,
    pending: &HashMap<SessionId, Held>,
    session: SessionId,
    user: Option<UserId>,
    reference: Option<&str>,
) -> Result<Result<(bool, Poster), Refusal>, StoreError> {
    let Some(reference) = reference else {
        return Ok(Err(Refusal::NoEvidence));
    };
    let Some(row) = sqlx::query(
        "SELECT session, user_key, action, enforced FROM detections \
         WHERE node = $1 AND reference = $2",
    )
    .bind(node)
    .bind(reference)
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(Err(Refusal::UnknownReference));
    };
    let detected: Option<String> = row.try_get(0)?;
    if detected.as_deref().and_then(SessionId::parse) != Some(session) {
        return Ok(Err(Refusal::OtherSession));
    }
    if row.try_get::<i64, _>(3)? == 0 {
        return Ok(Err(Refusal::NotEnforced));
    }
    if row.try_get::<String, _>(2)? != "revoke" {
        return Ok(Err(Refusal::NotRevoking));
    }
    let detected_user = row
        .try_get::<Option<String>, _>(1)?
        .as_deref()
        .and_then(UserId::parse);
    // A baseline taken earlier in this batch is this node's; one held
    // with no poster recorded (taken before posters were) is counted as
    // this node's too: the budget, not the benefit of the doubt.
    let (held, poster) = match pending.get(&session) {
        Some(held) => (held.user, Poster::This),
        None => {
            let row =
                sqlx::query("SELECT user_key, node FROM session_baselines WHERE session = $1")
                    .bind(session.to_string())
                    .fetch_optional(&mut **tx)
                    .await?;
            match row {
                None => (None, Poster::This),
                Some(row) => {
                    let user = row
                        .try_get::<Option<String>, _>(0)?
                        .as_deref()
                        .and_then(UserId::parse);
                    let by = row.try_get::<Option<String>, _>(1)?;
                    let poster = match by {
                        Some(by) if by != node => Poster::Other,
                        _ => Poster::This,
                    };
                    (user, poster)
                }
            }
        }
    };
    let named = [held, detected_user, user];
    let mut users = named.iter().flatten();
    if let Some(first) = users.next()
        && users.any(|u| u != first)
    {
        return Ok(Err(Refusal::OtherUser));
    }
    Ok(Ok((
        held.is_some() && named.iter().all(Option::is_some),
        poster,
    )))
}

/// Which node recorded the baseline a revocation is judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Poster {
    /// The node posting the revocation (or no baseline, or none named).
    This,
    /// Another node.
    Other,
}

/// Revocations `node` had vouched for on its own baselines on `day`.
async fn vouched_spent(
    tx: &mut Transaction<'static, Any>,
    node: &str,
    day: u64,
) -> Result<u32, StoreError> {
    Ok(
        sqlx::query("SELECT vouched FROM node_day_budget WHERE node = $1 AND day = $2")
            .bind(node)
            .bind(to_i64(day))
            .fetch_optional(&mut **tx)
            .await?
            .map(|row| row.try_get::<i64, _>(0))
            .transpose()?
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
    )
}

/// Counts the nodes that caught the user (enforced detections) within the
/// window — nodes, not detections: one node, or one stolen node token,
/// raises a user's risk by one step at most — and returns the change to
/// stream when the count differs from the one streamed last.
async fn recount_detections(
    tx: &mut Transaction<'static, Any>,
    user: UserId,
    now: u64,
    intake: Intake,
) -> Result<Option<Change>, StoreError> {
    let since = now.saturating_sub(intake.detection_window);
    // A clear (count 0) holds its time in `until`: only later ones count.
    let cleared_at =
        sqlx::query("SELECT until FROM user_detections WHERE user_key = $1 AND count = 0")
            .bind(user.to_string())
            .fetch_optional(&mut **tx)
            .await?
            .map(|row| row.try_get::<i64, _>(0))
            .transpose()?
            .map_or(0, to_u64);
    let row = sqlx::query(
        "SELECT COUNT(DISTINCT node), MAX(at) FROM detections \
         WHERE user_key = $1 AND enforced = 1 AND at > $2 AND at >= $3 \
         AND false_positive IS NULL",
    )
    .bind(user.to_string())
    .bind(to_i64(since))
    .bind(to_i64(cleared_at))
    .fetch_one(&mut **tx)
    .await?;
    let count = u8::try_from(to_u64(row.try_get(0)?)).unwrap_or(u8::MAX);
    let Some(latest) = row.try_get::<Option<i64>, _>(1)? else {
        return Ok(None);
    };
    let until = to_u64(latest).saturating_add(intake.detection_window);
    let streamed = sqlx::query("SELECT count, until FROM user_detections WHERE user_key = $1")
        .bind(user.to_string())
        .fetch_optional(&mut **tx)
        .await?
        .map(|row| -> Result<(i64, i64), sqlx::Error> { Ok((row.try_get(0)?, row.try_get(1)?)) })
        .transpose()?;
    if streamed.is_some_and(|(c, u)| to_u64(c) == u64::from(count) && to_u64(u) == until) {
        return Ok(None);
    }
    Ok(Some(Change::UserDetections { user, count, until }))
}

// === rule bundles ===

impl RuleBundle {
    fn into_change(self) -> Change {
        Change::RulesBundle {
            version: self.version,
            sha256: self.sha256,
            created_at: self.created_at,
            text: self.text,
        }
    }
}

/// The bundle `version` (`None`: the one in force), with its text.
async fn read_bundle(
    tx: &mut Transaction<'static, Any>,
    version: Option<u64>,
) -> Result<Option<RuleBundle>, StoreError> {
    let query = match version {
        Some(v) => sqlx::query(
            "SELECT version, sha256, created_at, seq, text FROM rule_bundles WHERE version = $1",
        )
        .bind(to_i64(v)),
        None => sqlx::query(
            "SELECT version, sha256, created_at, seq, text FROM rule_bundles ORDER BY seq DESC LIMIT 1",
        ),
    };
    query
        .fetch_optional(&mut **tx)
        .await?
        .map(|row| {
            Ok(RuleBundle {
                version: to_u64(row.try_get(0)?),
                sha256: row.try_get(1)?,
                created_at: to_u64(row.try_get(2)?),
                seq: to_u64(row.try_get(3)?),
                text: row.try_get(4)?,
            })
        })
        .transpose()
}

/// The bundle in force: the one published last.
async fn bundle_in_force(
    tx: &mut Transaction<'static, Any>,
) -> Result<Option<RuleBundle>, StoreError> {
    read_bundle(tx, None).await
}

/// Records what `node` reports of a bundle: applied, it is the node's
/// version in force (and its last failure is cleared); rejected, its last
/// failure. A report of a bundle never published (version and hash) is
/// ignored: a node cannot claim rules the controller never sent.
async fn record_node_rules(
    tx: &mut Transaction<'static, Any>,
    node: &str,
    version: u64,
    sha256: &str,
    applied: bool,
    problems: &[String],
    at: u64,
) -> Result<(), StoreError> {
    let known = sqlx::query("SELECT 1 FROM rule_bundles WHERE version = $1 AND sha256 = $2")
        .bind(to_i64(version))
        .bind(sha256)
        .fetch_optional(&mut **tx)
        .await?
        .is_some();
    if !known {
        tracing::debug!(
            node,
            version,
            "a node reported a rule bundle never published; ignored"
        );
        return Ok(());
    }
    sqlx::query("INSERT INTO node_rules (node) VALUES ($1) ON CONFLICT (node) DO NOTHING")
        .bind(node)
        .execute(&mut **tx)
        .await?;
    if applied {
        sqlx::query(
            "UPDATE node_rules SET version = $1, sha256 = $2, applied_at = $3, \
             failed_version = NULL, failed_sha256 = NULL, failure = NULL, failed_at = NULL \
             WHERE node = $4",
        )
        .bind(to_i64(version))
        .bind(sha256)
        .bind(to_i64(at))
        .bind(node)
        .execute(&mut **tx)
        .await?;
    } else {
        let problems = serde_json::to_string(problems).unwrap_or_else(|_| "[]".to_owned());
        tracing::warn!(
            node,
            version,
            problems = problems.as_str(),
            "a node rejected a rule bundle; it keeps its rules"
        );
        sqlx::query(
            "UPDATE node_rules SET failed_version = $1, failed_sha256 = $2, failure = $3, \
             failed_at = $4 WHERE node = $5",
        )
        .bind(to_i64(version))
        .bind(sha256)
        .bind(problems)
        .bind(to_i64(at))
        .bind(node)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" => Ok(Backend::Postgres),
            other => Err(format!(
                "{other:?} is not a store; expected sqlite or postgres"
            )),
        }
    }
}

/// Judges a node's DBSC binding: `Ok(true)` to take it (the session has
/// no binding yet; an inherited one names a session that has), `Ok(false)`
/// when the very same binding is held (nothing to do), and a refusal when
/// another binding is held for the session, or the root has none.
async fn judge_dbsc(
    tx: &mut Transaction<'static, Any>,
    pending: &HashMap<SessionId, DbscBinding>,
    binding: &DbscBinding,
) -> Result<Result<bool, Refusal>, StoreError> {
    let held = |id: &str, key: &str, root: Option<String>| {
        id == binding.id.to_string()
            && key == binding.key.to_string()
            && root == binding.root.map(|r| r.to_string())
    };
    if let Some(p) = pending.get(&binding.session) {
        return Ok(if p == binding {
            Ok(false)
        } else {
            Err(Refusal::DbscConflict)
        });
    }
    let row = sqlx::query("SELECT dbsc_id, public_key, root FROM dbsc_bindings WHERE session = $1")
        .bind(binding.session.to_string())
        .fetch_optional(&mut **tx)
        .await?;
    if let Some(row) = row {
        let (id, key, root): (String, String, Option<String>) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        return Ok(if held(&id, &key, root) {
            Ok(false)
        } else {
            Err(Refusal::DbscConflict)
        });
    }
    // An inherited binding must be the root's: same id and key.
    if let Some(root) = binding.root {
        let root_held = match pending.get(&root) {
            Some(p) => Some((p.id.to_string(), p.key.to_string())),
            None => sqlx::query(
                "SELECT dbsc_id, public_key FROM dbsc_bindings WHERE session = $1 AND root IS NULL",
            )
            .bind(root.to_string())
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| -> Result<(String, String), sqlx::Error> {
                Ok((r.try_get(0)?, r.try_get(1)?))
            })
            .transpose()?,
        };
        if root_held != Some((binding.id.to_string(), binding.key.to_string())) {
            return Ok(Err(Refusal::DbscConflict));
        }
    }
    Ok(Ok(true))
}
