//! What the admin API for security teams reads and writes
//! (`docs/controller.md`, Admin API): users ranked by entity risk, a
//! user's sessions, devices, networks and detections, devices and networks
//! trusted for a user, false-positive marks, and user names when they are
//! kept (`user_names = "clear"`).
//!
//! Every list is bounded by its caller's `limit`; every write that
//! streams a change takes the log's lock first, as [`Store::take_events`]
//! does, so that what it judged cannot change before it commits.

use sqlx::{Any, Row, Transaction};
use vigil_engine::SessionState;
use vigil_fleet::{Change, Country, DeviceId, Record, TrustedNetwork, UserId};

use super::{Intake, SessionCursor, Store, StoreError, append_in, to_i64, to_u64};

/// Sessions whose node is set per statement.
const SESSIONS_PER_STATEMENT: usize = 500;

/// Other-node detections the engine weighs at most (its `MAX_DETECTIONS`):
/// the ranking counts no more.
const MAX_COUNTED_DETECTIONS: i64 = 3;

/// A user with some entity risk, as [`Store::risky_users`] lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskyUser {
    /// The user's key.
    pub user: UserId,
    /// The name given in an admin call, when names are kept.
    pub name: Option<String>,
    /// Nodes that caught the user recently, as last streamed (0: none in
    /// force).
    pub detections: u8,
    /// When that count lapses (seconds since the Unix epoch; 0: none).
    pub detections_until: u64,
    /// Entity-risk points an operator or partner set (0: none in force).
    pub risk_points: u8,
    /// When they lapse (0: none).
    pub risk_until: u64,
    /// When every session of the user was revoked, if ever.
    pub revoked_at: Option<u64>,
    /// The entity risk a node would score for them with the engine's
    /// default weight per detection: detections (at most 3) × the weight,
    /// plus the points; at most 100.
    pub entity_risk: u8,
}

/// One of a user's sessions, as [`Store::user_detail`] finds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// The session key, 32 hex digits.
    pub session: String,
    /// The session's record as held (none for a session known only from
    /// a detection: its baseline was dropped when it was revoked).
    pub state: Option<SessionState>,
    /// Whether the user passed a step-up on the baseline.
    pub confirmed: bool,
    /// Whether the session is revoked.
    pub revoked: bool,
    /// The node whose record is held.
    pub node: Option<String>,
}

/// One detection with its facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectionRow {
    /// The node that reported it.
    pub node: String,
    /// The decision's reference id.
    pub reference: String,
    /// The session, 32 hex digits, when the request had one.
    pub session: Option<String>,
    /// The route.
    pub route: String,
    /// The rule that decided, if a rule did.
    pub rule: Option<String>,
    /// The action decided.
    pub action: String,
    /// Whether it was carried out.
    pub enforced: bool,
    /// The risk score, 0 to 100.
    pub score: u8,
    /// Reason codes with their points.
    pub reasons: Vec<(String, u8)>,
    /// When (seconds since the Unix epoch).
    pub at: u64,
    /// When an operator marked it a false positive, if they did.
    pub false_positive_at: Option<u64>,
}

/// A device or network trusted for a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustRow {
    /// `device`, `asn`, `prefix` or `country`.
    pub what: String,
    /// Its value as in the change: 16 hex digits, a number, an address,
    /// two letters.
    pub value: String,
    /// When it was trusted.
    pub at: u64,
}

/// What the store holds of one user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserDetail {
    /// The name given in an admin call, when names are kept.
    pub name: Option<String>,
    /// Their sessions: held records, newest first seen, then sessions
    /// known only from detections (as many as fit under the limit).
    pub sessions: Vec<SessionRow>,
    /// Where the next page of held records starts ([`Store::user_sessions`]),
    /// when there are more than the limit.
    pub more_sessions: Option<SessionCursor>,
    /// Their detections, newest first.
    pub detections: Vec<DetectionRow>,
    /// Devices and networks trusted for them, oldest first.
    pub trusted: Vec<TrustRow>,
    /// The detection count last streamed and when it lapses.
    pub detection_count: Option<(u8, u64)>,
    /// Entity-risk points set and until when.
    pub risk: Option<(u8, u64)>,
    /// When every session of theirs was revoked, if ever.
    pub revoked_at: Option<u64>,
}

/// What reporting a false positive did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FalsePositive {
    /// The nodes that reported a detection with the reference.
    pub nodes: Vec<String>,
    /// Whether anything changed: `false` when every such detection was
    /// marked before (nothing is streamed again).
    pub changed: bool,
    /// The devices and networks trusted for its users, from the facts
    /// the refusing node reported with each detection (none for a
    /// detection without facts: a node of an earlier build).
    pub trusted: Vec<Change>,
    /// The detection counts streamed for its users.
    pub counts: Vec<Change>,
    /// The log's head after.
    pub head: u64,
}

/// The detections with a reference, as [`FalsePositivePlan::of`] reads them.
const FALSE_POSITIVE_ROWS: &str = "SELECT node, user_key, false_positive, device, client_ip, asn, country \
     FROM detections WHERE reference = $1 ORDER BY node";

/// What marking a reference a false positive does, from the detections
/// reported with it ([`Store::false_positive`], and its preview).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FalsePositivePlan {
    /// The nodes that reported a detection with the reference.
    pub nodes: Vec<String>,
    /// The users whose detections it unmarks from their count.
    pub users: Vec<UserId>,
    /// The devices and networks it trusts for them: none when the
    /// detections disagree (`agree`), have no facts, or were all marked.
    pub trusted: Vec<Change>,
    /// Whether every detection with the reference names the same user and
    /// the same facts. Each node names its own reference ids, so rows of
    /// one reference from two nodes need not be one decision: a hostile
    /// node can post a detection under a reference an honest node showed
    /// its user, naming another user and its own device. What is trusted
    /// must be what every row says.
    pub agree: bool,
    /// Whether a detection with it is not marked yet: otherwise marking it
    /// again changes nothing.
    pub changed: bool,
}

impl FalsePositivePlan {
    /// From the rows of [`FALSE_POSITIVE_ROWS`].
    fn of(rows: &[sqlx::any::AnyRow], now: u64) -> Result<FalsePositivePlan, sqlx::Error> {
        let mut plan = FalsePositivePlan {
            nodes: Vec::new(),
            users: Vec::new(),
            trusted: Vec::new(),
            agree: true,
            changed: false,
        };
        let mut facts: Option<(Option<UserId>, Vec<Change>)> = None;
        for row in rows {
            plan.nodes.push(row.try_get::<String, _>(0)?);
            let user = row.try_get::<Option<String>, _>(1)?;
            let user = user.as_deref().and_then(UserId::parse);
            let row_trust = match user {
                Some(user) => trust_of_facts(user, row, now)?,
                None => Vec::new(),
            };
            match &facts {
                None => facts = Some((user, row_trust.clone())),
                Some(first) => plan.agree &= *first == (user, row_trust.clone()),
            }
            if row.try_get::<Option<i64>, _>(2)?.is_none() {
                plan.changed = true;
                let Some(user) = user else {
                    continue;
                };
                if !plan.users.contains(&user) {
                    plan.users.push(user);
                }
                for change in row_trust {
                    if !plan.trusted.contains(&change) {
                        plan.trusted.push(change);
                    }
                }
            }
        }
        if !plan.agree {
            plan.trusted.clear();
        }
        Ok(plan)
    }
}

// === impl Store ===

impl Store {
    /// Up to `limit` users with some entity risk now — a detection count
    /// or risk points in force, or a revocation of every session — from
    /// the `offset`th, highest entity risk first (then more detections,
    /// more points, revoked, key). `detection_points` weighs each
    /// detection (the engine's `recent_detection`). The bool says whether
    /// more follow.
    pub async fn risky_users(
        &self,
        now: u64,
        detection_points: u8,
        limit: usize,
        offset: u64,
    ) -> Result<(Vec<RiskyUser>, bool), StoreError> {
        let rows = sqlx::query(
            "SELECT k.user_key, COALESCE(d.count, 0) AS dc, COALESCE(d.until, 0), \
             COALESCE(r.points, 0) AS rp, COALESCE(r.until, 0), v.at, n.name, \
             (CASE WHEN COALESCE(d.count, 0) > $3 THEN $3 ELSE COALESCE(d.count, 0) END) * $2 \
             + COALESCE(r.points, 0) AS score \
             FROM (SELECT user_key FROM user_detections WHERE count > 0 AND until > $1 \
                   UNION SELECT user_key FROM user_risk WHERE points > 0 AND until > $1 \
                   UNION SELECT user_key FROM revoked_users) k \
             LEFT JOIN user_detections d ON d.user_key = k.user_key AND d.count > 0 AND d.until > $1 \
             LEFT JOIN user_risk r ON r.user_key = k.user_key AND r.points > 0 AND r.until > $1 \
             LEFT JOIN revoked_users v ON v.user_key = k.user_key \
             LEFT JOIN user_names n ON n.user_key = k.user_key \
             ORDER BY score DESC, dc DESC, rp DESC, \
             CASE WHEN v.at IS NULL THEN 1 ELSE 0 END, k.user_key \
             LIMIT $4 OFFSET $5",
        )
        .bind(to_i64(now))
        .bind(i64::from(detection_points))
        .bind(MAX_COUNTED_DETECTIONS)
        .bind(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX))
        .bind(to_i64(offset))
        .fetch_all(&self.pool)
        .await?;
        let more = rows.len() > limit;
        let mut users = Vec::with_capacity(rows.len().min(limit));
        for row in rows.iter().take(limit) {
            let key: String = row.try_get(0)?;
            let Some(user) = UserId::parse(&key) else {
                continue;
            };
            let score = to_u64(row.try_get(7)?);
            users.push(RiskyUser {
                user,
                name: row.try_get(6)?,
                detections: u8::try_from(to_u64(row.try_get(1)?)).unwrap_or(u8::MAX),
                detections_until: to_u64(row.try_get(2)?),
                risk_points: u8::try_from(to_u64(row.try_get(3)?)).unwrap_or(100),
                risk_until: to_u64(row.try_get(4)?),
                revoked_at: row.try_get::<Option<i64>, _>(5)?.map(to_u64),
                entity_risk: u8::try_from(score.min(100)).unwrap_or(100),
            });
        }
        Ok((users, more))
    }

    /// A page of `user`'s held session records, newest first seen, after
    /// `before`: at most `limit`, and where the next page starts when
    /// there are more. One range of `session_baselines_user_first`,
    /// however deep.
    pub async fn user_sessions(
        &self,
        user: UserId,
        limit: usize,
        before: Option<&SessionCursor>,
    ) -> Result<(Vec<SessionRow>, Option<SessionCursor>), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let key = user.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        baselines(&mut conn, key.as_str(), limit, before).await
    }

    /// What the store holds of `user`: at most `limit` sessions and
    /// `limit` detections, newest first, read in one transaction.
    pub async fn user_detail(&self, user: UserId, limit: usize) -> Result<UserDetail, StoreError> {
        let key = user.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await?;
        let mut detail = UserDetail {
            name: sqlx::query("SELECT name FROM user_names WHERE user_key = $1")
                .bind(key.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| row.try_get::<String, _>(0))
                .transpose()?,
            ..UserDetail::default()
        };
        let (sessions, more) = baselines(&mut tx, key.as_str(), limit, None).await?;
        detail.sessions = sessions;
        detail.more_sessions = more;
        // Sessions the user was caught on whose records are gone: a
        // revoked session's baseline is dropped with its revocation.
        let room = limit.saturating_sub(i64::try_from(detail.sessions.len()).unwrap_or(0));
        if room > 0 {
            for row in sqlx::query(
                "SELECT d.session, MAX(d.at) AS latest, MAX(r.session) FROM detections d \
                 LEFT JOIN revoked_sessions r ON r.session = d.session \
                 WHERE d.user_key = $1 AND d.session IS NOT NULL AND NOT EXISTS \
                 (SELECT 1 FROM session_baselines b WHERE b.session = d.session) \
                 GROUP BY d.session ORDER BY latest DESC, d.session LIMIT $2",
            )
            .bind(key.as_str())
            .bind(room)
            .fetch_all(&mut *tx)
            .await?
            {
                detail.sessions.push(SessionRow {
                    session: row.try_get(0)?,
                    state: None,
                    confirmed: false,
                    node: None,
                    revoked: row.try_get::<Option<String>, _>(2)?.is_some(),
                });
            }
        }
        for row in sqlx::query(
            "SELECT node, reference, session, route, rule, action, enforced, score, reasons, at, \
             false_positive FROM detections WHERE user_key = $1 \
             ORDER BY at DESC, node, reference LIMIT $2",
        )
        .bind(key.as_str())
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?
        {
            let reasons: String = row.try_get(8)?;
            detail.detections.push(DetectionRow {
                node: row.try_get(0)?,
                reference: row.try_get(1)?,
                session: row.try_get(2)?,
                route: row.try_get(3)?,
                rule: row.try_get(4)?,
                action: row.try_get(5)?,
                enforced: row.try_get::<i64, _>(6)? != 0,
                score: u8::try_from(to_u64(row.try_get(7)?)).unwrap_or(100),
                reasons: parse_reasons(&reasons),
                at: to_u64(row.try_get(9)?),
                false_positive_at: row.try_get::<Option<i64>, _>(10)?.map(to_u64),
            });
        }
        for row in sqlx::query(
            "SELECT what, value, at FROM user_trust WHERE user_key = $1 ORDER BY seq LIMIT $2",
        )
        .bind(key.as_str())
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?
        {
            detail.trusted.push(TrustRow {
                what: row.try_get(0)?,
                value: row.try_get(1)?,
                at: to_u64(row.try_get(2)?),
            });
        }
        detail.detection_count =
            sqlx::query("SELECT count, until FROM user_detections WHERE user_key = $1")
                .bind(key.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| -> Result<(u8, u64), sqlx::Error> {
                    Ok((
                        u8::try_from(to_u64(row.try_get(0)?)).unwrap_or(u8::MAX),
                        to_u64(row.try_get(1)?),
                    ))
                })
                .transpose()?;
        detail.risk = sqlx::query("SELECT points, until FROM user_risk WHERE user_key = $1")
            .bind(key.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| -> Result<(u8, u64), sqlx::Error> {
                Ok((
                    u8::try_from(to_u64(row.try_get(0)?)).unwrap_or(100),
                    to_u64(row.try_get(1)?),
                ))
            })
            .transpose()?;
        detail.revoked_at = sqlx::query("SELECT at FROM revoked_users WHERE user_key = $1")
            .bind(key.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| row.try_get::<i64, _>(0))
            .transpose()?
            .map(to_u64);
        tx.commit().await?;
        Ok(detail)
    }

    /// Marks every detection with `reference` a false positive, in one
    /// transaction with what it streams: [`Change::FalsePositive`], and
    /// for each of their users whose count in force falls, a clear
    /// (count 0: nodes take a count only when it is higher than theirs)
    /// followed by the new count when it is not 0. `None`: no detection
    /// has that reference. Marking again changes nothing.
    pub async fn false_positive(
        &self,
        reference: &str,
        now: u64,
        intake: Intake,
    ) -> Result<Option<FalsePositive>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE log_head SET head = head WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(FALSE_POSITIVE_ROWS)
            .bind(reference)
            .fetch_all(&mut *tx)
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let FalsePositivePlan {
            nodes,
            users,
            trusted,
            changed,
            ..
        } = FalsePositivePlan::of(&rows, now)?;
        if !changed {
            let head = to_u64(
                sqlx::query("SELECT head FROM log_head WHERE id = 1")
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get(0)?,
            );
            tx.commit().await?;
            return Ok(Some(FalsePositive {
                nodes,
                changed,
                trusted: Vec::new(),
                counts: Vec::new(),
                head,
            }));
        }
        sqlx::query(
            "UPDATE detections SET false_positive = $1 WHERE reference = $2 AND false_positive IS NULL",
        )
        .bind(to_i64(now))
        .bind(reference)
        .execute(&mut *tx)
        .await?;
        let mut changes = vec![Change::FalsePositive {
            reference: reference.to_owned(),
            at: now,
        }];
        changes.extend(trusted.iter().cloned());
        let mut counts = Vec::new();
        for user in users {
            counts.extend(lowered_count(&mut tx, user, now, intake).await?);
        }
        changes.extend(counts.iter().cloned());
        let head = append_in(&mut tx, &changes, now).await?;
        tx.commit().await?;
        Ok(Some(FalsePositive {
            nodes,
            changed,
            trusted,
            counts,
            head,
        }))
    }

    /// What [`Store::false_positive`] would do for `reference` now, read
    /// without marking anything: the dashboard's confirmation page shows
    /// it before the operator confirms. `None`: no detection has it.
    pub async fn false_positive_preview(
        &self,
        reference: &str,
        now: u64,
    ) -> Result<Option<FalsePositivePlan>, StoreError> {
        let rows = sqlx::query(FALSE_POSITIVE_ROWS)
            .bind(reference)
            .fetch_all(&self.pool)
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(FalsePositivePlan::of(&rows, now)?))
    }

    /// Keeps `name` as `user`'s (`user_names = "clear"`).
    pub async fn remember_name(
        &self,
        user: UserId,
        name: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO user_names (user_key, name, at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_key) DO UPDATE SET name = excluded.name, at = excluded.at",
        )
        .bind(user.to_string())
        .bind(name)
        .bind(to_i64(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes every name kept (`user_names = "keyed"`); how many.
    pub async fn forget_names(&self) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM user_names")
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}

/// The changes that lower `user`'s detection count in force now that a
/// detection of theirs is a false positive: none when no count is in
/// force or it does not fall.
async fn lowered_count(
    tx: &mut Transaction<'static, Any>,
    user: UserId,
    now: u64,
    intake: Intake,
) -> Result<Vec<Change>, StoreError> {
    let key = user.to_string();
    let Some((streamed, until)) =
        sqlx::query("SELECT count, until FROM user_detections WHERE user_key = $1")
            .bind(key.as_str())
            .fetch_optional(&mut **tx)
            .await?
            .map(|row| -> Result<(u64, u64), sqlx::Error> {
                Ok((to_u64(row.try_get(0)?), to_u64(row.try_get(1)?)))
            })
            .transpose()?
    else {
        return Ok(Vec::new());
    };
    // A count of 0 is a clear at `until`: nothing in force to lower.
    if streamed == 0 || until <= now {
        return Ok(Vec::new());
    }
    // As `recount_detections` counts, without the false positives.
    let row = sqlx::query(
        "SELECT COUNT(DISTINCT node), MAX(at) FROM detections \
         WHERE user_key = $1 AND enforced = 1 AND at > $2 AND false_positive IS NULL",
    )
    .bind(key.as_str())
    .bind(to_i64(now.saturating_sub(intake.detection_window)))
    .fetch_one(&mut **tx)
    .await?;
    let count = to_u64(row.try_get(0)?).min(streamed);
    if count == streamed {
        return Ok(Vec::new());
    }
    let mut out = vec![Change::UserDetections {
        user,
        count: 0,
        until: now,
    }];
    if let Some(latest) = row.try_get::<Option<i64>, _>(1)?
        && count > 0
    {
        out.push(Change::UserDetections {
            user,
            count: u8::try_from(count).unwrap_or(u8::MAX),
            until: to_u64(latest).saturating_add(intake.detection_window),
        });
    }
    Ok(out)
}

/// Reads `code:points,code:points` as stored by the event intake.
pub(super) fn parse_reasons(text: &str) -> Vec<(String, u8)> {
    text.split(',')
        .filter_map(|pair| {
            let (code, points) = pair.rsplit_once(':')?;
            Some((code.to_owned(), points.parse().ok()?))
        })
        .collect()
}

/// The row of a trusted network: what it is and its value; `None` for a
/// network type of a later version.
pub(super) fn trust_row(network: &TrustedNetwork) -> Option<(&'static str, String)> {
    match network {
        TrustedNetwork::Asn { asn } => Some(("asn", asn.to_string())),
        TrustedNetwork::Prefix { prefix } => Some(("prefix", prefix.to_string())),
        TrustedNetwork::Country { country } => Some(("country", country.to_string())),
        TrustedNetwork::Unknown => None,
    }
}

/// What a false positive trusts for `user` fleet-wide, from the facts the
/// refusing node reported with the detection (`row`: its `device`,
/// `client_ip`, `asn` and `country` columns, from index 3): the refused
/// request's device, and its network — the client's /24 or /48, ASN and
/// country — as the refusing node itself trusts them when it carries the
/// false positive out (the engine's `Feedback::FalsePositive`). Only the
/// detection's own facts, never an operator's choice; nothing for a
/// detection without facts (a node of an earlier build reported none).
fn trust_of_facts(
    user: UserId,
    row: &sqlx::any::AnyRow,
    at: u64,
) -> Result<Vec<Change>, sqlx::Error> {
    let mut out = Vec::new();
    let device: Option<String> = row.try_get(3)?;
    if let Some(device) = device.as_deref().and_then(DeviceId::parse) {
        out.push(Change::DeviceTrusted { user, device, at });
    }
    let client: Option<String> = row.try_get(4)?;
    let mut network = |network| out.push(Change::NetworkTrusted { user, network, at });
    if let Some(ip) = client.as_deref().and_then(|c| c.parse().ok()) {
        network(TrustedNetwork::Prefix {
            prefix: crate::admin::prefix_of(ip),
        });
    }
    let asn: Option<i64> = row.try_get(5)?;
    if let Some(asn) = asn.and_then(|a| u32::try_from(a).ok()).filter(|&a| a != 0) {
        network(TrustedNetwork::Asn { asn });
    }
    let country: Option<String> = row.try_get(6)?;
    if let Some(country) = country.as_deref().and_then(Country::parse) {
        network(TrustedNetwork::Country { country });
    }
    Ok(out)
}

/// Records a device or network trusted for `user` (the state the log
/// builds, for snapshots).
pub(super) async fn insert_trust(
    tx: &mut Transaction<'static, Any>,
    user: UserId,
    what: &str,
    value: &str,
    at: u64,
    seq: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO user_trust (user_key, what, value, at, seq) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (user_key, what, value) DO UPDATE SET at = excluded.at, seq = excluded.seq",
    )
    .bind(user.to_string())
    .bind(what)
    .bind(value)
    .bind(to_i64(at))
    .bind(seq)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Every device and network trusted, as changes for a snapshot.
pub(super) async fn trust_snapshot(
    tx: &mut Transaction<'static, Any>,
) -> Result<Vec<Change>, StoreError> {
    let mut out = Vec::new();
    for row in sqlx::query("SELECT user_key, what, value, at FROM user_trust ORDER BY seq")
        .fetch_all(&mut **tx)
        .await?
    {
        let (user, what, value): (String, String, String) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let Some(user) = UserId::parse(&user) else {
            continue;
        };
        let at = to_u64(row.try_get(3)?);
        let network = match what.as_str() {
            "device" => {
                if let Some(device) = DeviceId::parse(&value) {
                    out.push(Change::DeviceTrusted { user, device, at });
                }
                continue;
            }
            "asn" => value.parse().ok().map(|asn| TrustedNetwork::Asn { asn }),
            "prefix" => value
                .parse()
                .ok()
                .map(|prefix| TrustedNetwork::Prefix { prefix }),
            "country" => Country::parse(&value).map(|country| TrustedNetwork::Country { country }),
            _ => None,
        };
        if let Some(network) = network {
            out.push(Change::NetworkTrusted { user, network, at });
        }
    }
    Ok(out)
}

/// Records `node` as the poster of the baselines it had taken in a batch.
pub(super) async fn set_baseline_node<'a>(
    tx: &mut Transaction<'static, Any>,
    node: &str,
    sessions: impl Iterator<Item = &'a vigil_fleet::SessionId>,
) -> Result<(), StoreError> {
    let sessions: Vec<String> = sessions.map(ToString::to_string).collect();
    for chunk in sessions.chunks(SESSIONS_PER_STATEMENT) {
        let list: Vec<String> = (2..chunk.len() + 2).map(|i| format!("${i}")).collect();
        let sql = format!(
            "UPDATE session_baselines SET node = $1 WHERE session IN ({})",
            list.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(node);
        for session in chunk {
            query = query.bind(session.as_str());
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// A page of the held session records of the user `key`, newest first
/// seen (ties by key, descending), after `before`; and the cursor after its
/// last row when more follow.
async fn baselines(
    conn: &mut sqlx::AnyConnection,
    key: &str,
    limit: i64,
    before: Option<&SessionCursor>,
) -> Result<(Vec<SessionRow>, Option<SessionCursor>), StoreError> {
    const COLUMNS: &str = "SELECT b.session, b.record, b.confirmed, b.node, r.session, b.first_seen \
         FROM session_baselines b LEFT JOIN revoked_sessions r ON r.session = b.session \
         WHERE b.user_key = $1";
    const ORDER: &str = " ORDER BY b.first_seen DESC, b.session DESC LIMIT $2";
    // Past the cursor, as one range of `session_baselines_user_first`:
    // `first_seen <= …` bounds it, the whole key's comparison narrows it.
    let rows =
        match before {
            Some(c) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "{COLUMNS} AND b.first_seen <= $3 AND (b.first_seen, b.session) < ($3, $4){ORDER}"
            )))
            .bind(key)
            .bind(limit.saturating_add(1))
            .bind(to_i64(c.first_seen))
            .bind(c.session.as_str())
            .fetch_all(&mut *conn)
            .await?,
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!("{COLUMNS}{ORDER}")))
                    .bind(key)
                    .bind(limit.saturating_add(1))
                    .fetch_all(&mut *conn)
                    .await?
            }
        };
    let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) > limit;
    let mut out = Vec::with_capacity(rows.len());
    let mut next = None;
    for row in rows
        .iter()
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
    {
        let record: String = row.try_get(1)?;
        let session: String = row.try_get(0)?;
        next = Some(SessionCursor {
            first_seen: to_u64(row.try_get(5)?),
            session: session.clone(),
        });
        out.push(SessionRow {
            session,
            state: Record::parse(&record)
                .and_then(|r| SessionState::decode(&r.0).ok())
                .map(|(_, state)| state),
            confirmed: row.try_get::<i64, _>(2)? != 0,
            node: row.try_get(3)?,
            revoked: row.try_get::<Option<String>, _>(4)?.is_some(),
        });
    }
    Ok((out, if more { next } else { None }))
}
