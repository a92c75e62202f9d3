//! What the dashboard reads beyond the admin API's queries
//! (`docs/dashboard.md`): detections by reference id and newest first,
//! detections counted per time bucket and action, reason counts, and
//! sessions by key prefix. Every list is bounded by its caller's `limit`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use sqlx::Row;
use vigil_engine::SessionState;
use vigil_fleet::{Record, UserId};

use super::admin::parse_reasons;
use super::{DetectionRow, Store, StoreError, to_i64, to_u64};

/// A detection with what the admin API's row leaves out: its user and
/// its confirmed-compromise label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectionFacts {
    /// The row as the admin API shows it.
    pub row: DetectionRow,
    /// Its user, when the session was bound.
    pub user: Option<UserId>,
    /// When an operator confirmed it a compromise, if they did.
    pub confirmed_compromise_at: Option<u64>,
}

/// A session as the search finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionHit {
    /// The session key, 32 hex digits.
    pub session: String,
    /// Its user, when bound.
    pub user: Option<UserId>,
    /// The node whose record is held.
    pub node: Option<String>,
    /// Its record, when one is held.
    pub state: Option<SessionState>,
}

/// Detections counted per bucket of time and action.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Buckets {
    /// Bucket start (seconds since the Unix epoch) → action → count.
    pub counts: BTreeMap<u64, BTreeMap<String, u64>>,
}

pub(super) const DETECTION_COLUMNS: &str = "node, reference, session, route, rule, action, enforced, score, \
     reasons, at, false_positive, user_key, confirmed_compromise";

pub(super) fn facts(row: &sqlx::any::AnyRow) -> Result<DetectionFacts, sqlx::Error> {
    let reasons: String = row.try_get(8)?;
    Ok(DetectionFacts {
        row: DetectionRow {
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
        },
        user: row
            .try_get::<Option<String>, _>(11)?
            .as_deref()
            .and_then(UserId::parse),
        confirmed_compromise_at: row.try_get::<Option<i64>, _>(12)?.map(to_u64),
    })
}

// === impl Store ===

impl Store {
    /// Every detection with `reference` (one per node that reported it;
    /// at most `limit`), by node.
    pub async fn detections_by_reference(
        &self,
        reference: &str,
        limit: usize,
    ) -> Result<Vec<DetectionFacts>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DETECTION_COLUMNS} FROM detections WHERE reference = $1 ORDER BY node LIMIT $2"
        )))
        .bind(reference)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(facts).collect::<Result<_, _>>()?)
    }

    /// Up to `limit` detections newest first (ties by node then reference,
    /// both descending), of `user` only when given: those after `before`
    /// (a keyset page: the last row of the page before), then from the
    /// `offset`th of those (links made before cursors); whether more
    /// follow.
    pub async fn recent_detections(
        &self,
        limit: usize,
        user: Option<UserId>,
        before: Option<&DetectionCursor>,
        offset: u64,
    ) -> Result<(Vec<DetectionFacts>, bool), StoreError> {
        let user = user.map(|u| u.to_string());
        let mut sql = format!("SELECT {DETECTION_COLUMNS} FROM detections WHERE 1 = 1");
        if user.is_some() {
            sql.push_str(" AND user_key = $1");
        }
        sql.push_str(&page_clause(usize::from(user.is_some()), before, true));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(u) = &user {
            q = q.bind(u.as_str());
        }
        read_page(&self.pool, q, limit, before, Some(offset)).await
    }

    /// Detections since `since` (seconds since the Unix epoch), counted
    /// per `bucket` seconds and action.
    pub async fn detection_buckets(&self, since: u64, bucket: u64) -> Result<Buckets, StoreError> {
        let bucket = bucket.max(1);
        let rows = sqlx::query(
            "SELECT at / $2 AS b, action, COUNT(*) FROM detections WHERE at >= $1 \
             GROUP BY b, action ORDER BY b, action",
        )
        .bind(to_i64(since))
        .bind(to_i64(bucket))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Buckets::default();
        for row in rows {
            let b = to_u64(row.try_get(0)?).saturating_mul(bucket);
            let action: String = row.try_get(1)?;
            let n = to_u64(row.try_get(2)?);
            out.counts.entry(b).or_default().insert(action, n);
        }
        Ok(out)
    }

    /// Reason codes of the newest `cap` detections since `since`, each
    /// with the detections it was among; and how many detections were
    /// read (at most `cap`: when it is `cap`, older ones went uncounted).
    pub async fn reason_counts(
        &self,
        since: u64,
        cap: usize,
    ) -> Result<(BTreeMap<String, u64>, usize), StoreError> {
        let rows =
            sqlx::query("SELECT reasons FROM detections WHERE at >= $1 ORDER BY at DESC LIMIT $2")
                .bind(to_i64(since))
                .bind(i64::try_from(cap).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await?;
        let mut counts = BTreeMap::new();
        for row in &rows {
            let reasons: String = row.try_get(0)?;
            for (code, _) in parse_reasons(&reasons) {
                *counts.entry(code).or_insert(0) += 1;
            }
        }
        Ok((counts, rows.len()))
    }

    /// Sessions whose key starts with `prefix` (lower-case hex, checked
    /// by the caller), held records first then sessions known only from
    /// detections; at most `limit`.
    pub async fn sessions_by_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<SessionHit>, StoreError> {
        // Keys are lower-case hex: every key starting with the prefix is
        // at least the prefix and below the prefix followed by `g` (above
        // every hex digit). A range, unlike LIKE, is read from the keys'
        // index on both stores. Anything but lower-case hex is refused
        // rather than trusted.
        if !prefix
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Ok(Vec::new());
        }
        let upper = format!("{prefix}g");
        let limit_i = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut hits = Vec::new();
        for row in sqlx::query(
            "SELECT session, user_key, node, record FROM session_baselines \
             WHERE session >= $1 AND session < $2 ORDER BY session LIMIT $3",
        )
        .bind(prefix)
        .bind(upper.as_str())
        .bind(limit_i)
        .fetch_all(&self.pool)
        .await?
        {
            let record: String = row.try_get(3)?;
            hits.push(SessionHit {
                session: row.try_get(0)?,
                user: row
                    .try_get::<Option<String>, _>(1)?
                    .as_deref()
                    .and_then(UserId::parse),
                node: row.try_get(2)?,
                state: Record::parse(&record)
                    .and_then(|r| SessionState::decode(&r.0).ok())
                    .map(|(_, s)| s),
            });
        }
        if hits.len() < limit {
            for row in sqlx::query(
                "SELECT session, MAX(user_key) FROM detections WHERE session >= $1 AND session < $2 \
                 AND NOT EXISTS (SELECT 1 FROM session_baselines b WHERE b.session = detections.session) \
                 GROUP BY session ORDER BY session LIMIT $3",
            )
            .bind(prefix)
            .bind(upper.as_str())
            .bind(i64::try_from(limit - hits.len()).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?
            {
                hits.push(SessionHit {
                    session: row.try_get(0)?,
                    user: row
                        .try_get::<Option<String>, _>(1)?
                        .as_deref()
                        .and_then(UserId::parse),
                    node: None,
                    state: None,
                });
            }
        }
        Ok(hits)
    }

    /// The record held of `session` (32 hex digits), if any: what the
    /// detection page shows of the session's device and network.
    pub async fn session_record(&self, session: &str) -> Result<Option<SessionHit>, StoreError> {
        let hits = self.sessions_by_prefix(session, 1).await?;
        Ok(hits.into_iter().find(|h| h.session == session))
    }
}

/// One line of the audit trail: an operator's action through the
/// dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Random, 32 hex digits.
    pub id: String,
    /// When (seconds since the Unix epoch).
    pub at: u64,
    /// The session's identity (`admin token`, `viewer token 1a2b3c4d`).
    pub who: String,
    /// `viewer` or `responder`.
    pub role: String,
    /// The client's address, when known.
    pub client: Option<String>,
    /// `sign-in`, `sign-out`, or an action (`false-positive`, …).
    pub action: String,
    /// What it was done to: a reference id, a session or user key.
    pub target: String,
    /// How it ended: what the operator was told.
    pub outcome: String,
}

impl Store {
    /// Adds `entry` to the audit trail.
    pub async fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit (id, at, who, role, client, action, target, outcome) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(entry.id.as_str())
        .bind(to_i64(entry.at))
        .bind(entry.who.as_str())
        .bind(entry.role.as_str())
        .bind(entry.client.clone())
        .bind(entry.action.as_str())
        .bind(entry.target.as_str())
        .bind(entry.outcome.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Scrubs the audit rows whose target is `target` (an erased user's
    /// key): the rows stay (who did what, when), naming nobody.
    pub async fn scrub_audit(&self, target: &str) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE audit SET target = '(erased user)', outcome = '(erased)' WHERE target = $1",
        )
        .bind(target)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Deletes the audit rows older than `before` (`keep_audit_days`).
    pub async fn expire_audit(&self, before: u64) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM audit WHERE at < $1")
            .bind(to_i64(before))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Up to `limit` audit entries from the `offset`th, newest first;
    /// whether more follow.
    pub async fn audit_entries(
        &self,
        limit: usize,
        offset: u64,
    ) -> Result<(Vec<AuditEntry>, bool), StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, who, role, client, action, target, outcome FROM audit \
             ORDER BY at DESC, id LIMIT $1 OFFSET $2",
        )
        .bind(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX))
        .bind(to_i64(offset))
        .fetch_all(&self.pool)
        .await?;
        let more = rows.len() > limit;
        let mut list = Vec::with_capacity(rows.len().min(limit));
        for row in rows.iter().take(limit) {
            list.push(AuditEntry {
                id: row.try_get(0)?,
                at: to_u64(row.try_get(1)?),
                who: row.try_get(2)?,
                role: row.try_get(3)?,
                client: row.try_get(4)?,
                action: row.try_get(5)?,
                target: row.try_get(6)?,
                outcome: row.try_get(7)?,
            });
        }
        Ok((list, more))
    }

    /// Up to `limit` audit entries newest first (ties by id, descending):
    /// those after `before` (a keyset page), then from the `offset`th of
    /// those (links made before cursors); whether more follow.
    pub async fn audit_page(
        &self,
        limit: usize,
        before: Option<&AuditCursor>,
        offset: u64,
    ) -> Result<(Vec<AuditEntry>, bool), StoreError> {
        let columns = "SELECT id, at, who, role, client, action, target, outcome FROM audit";
        let order = "ORDER BY at DESC, id DESC";
        let limit_i = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let rows =
            match before {
                Some(c) => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{columns} WHERE at <= $1 AND (at, id) < ($1, $2) {order} LIMIT $3 OFFSET $4"
                )))
                .bind(to_i64(c.at))
                .bind(c.id.as_str())
                .bind(limit_i)
                .bind(to_i64(offset))
                .fetch_all(&self.pool)
                .await?,
                None => {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "{columns} {order} LIMIT $1 OFFSET $2"
                    )))
                    .bind(limit_i)
                    .bind(to_i64(offset))
                    .fetch_all(&self.pool)
                    .await?
                }
            };
        let more = rows.len() > limit;
        let mut list = Vec::with_capacity(rows.len().min(limit));
        for row in rows.iter().take(limit) {
            list.push(AuditEntry {
                id: row.try_get(0)?,
                at: to_u64(row.try_get(1)?),
                who: row.try_get(2)?,
                role: row.try_get(3)?,
                client: row.try_get(4)?,
                action: row.try_get(5)?,
                target: row.try_get(6)?,
                outcome: row.try_get(7)?,
            });
        }
        Ok((list, more))
    }
}

/// A page of a user's timeline ([`Store::user_timeline`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimelinePage {
    /// Newest first; the last second whole.
    pub entries: Vec<TimelineEntry>,
    /// The `before` of the next page (the last entry's second), when more
    /// are held.
    pub next: Option<u64>,
    /// A second of this page (its last) of which one source holds more
    /// than [`TIMELINE_SECOND_CAP`] things beyond the page, and what it
    /// holds (`detection`, `trusted`…): the next page starts before that
    /// second, so the rest of it is not listed.
    pub crowded: Option<(u64, &'static str)>,
}

/// How many things of one source the timeline reads beyond a page, so
/// that a page's last second is whole.
pub const TIMELINE_SECOND_CAP: usize = 200;

/// The oldest time, and what, of a source's read that found more than
/// `fetch` (one more than that was asked for: so it holds more than it
/// read): the entries it pushed are `out[from..]`, newest first.
fn cut_at(out: &[TimelineEntry], from: usize, fetch: usize) -> Option<(u64, &'static str)> {
    (out.len().saturating_sub(from) > fetch)
        .then(|| out.last().map(|e| (e.at, e.what)))
        .flatten()
}

// === keyset cursors ===

/// Where a keyset page of detections starts: after the detection with
/// this key, newest first. Written `AT-NODE-REFERENCE`, the node and
/// reference as lower-case hex of their bytes (any text, safe in a URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectionCursor {
    /// Its time (seconds since the Unix epoch).
    pub at: u64,
    /// The node that reported it.
    pub node: String,
    /// Its reference id.
    pub reference: String,
}

/// Where a keyset page of the audit trail starts: after the entry with
/// this time and id. Written `AT-ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCursor {
    /// Its time.
    pub at: u64,
    /// Its id (hex).
    pub id: String,
}

/// Where a keyset page of a user's sessions starts: after the session
/// with this first sight and key, newest first seen (ties by key,
/// descending). Written `FIRST_SEEN-SESSION`, the key as held (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCursor {
    /// When it was first seen (seconds since the Unix epoch).
    pub first_seen: u64,
    /// Its session key.
    pub session: String,
}

impl SessionCursor {
    /// Reads `FIRST_SEEN-SESSION`; what is wrong with it otherwise.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (first_seen, session) = time_and_hex(
            s,
            "a sessions cursor is TIME-SESSION",
            "the session of a cursor",
        )?;
        Ok(Self {
            first_seen,
            session,
        })
    }
}

impl std::fmt::Display for SessionCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first_seen, self.session)
    }
}

/// What follows a query of detections after its own `n` parameters: the
/// rows after `before` (`at <= …` first: the range of the index that the
/// comparison of the whole key then narrows, on either store), newest
/// first with ties by node then reference, both descending, and the limit
/// (and an offset, when `offset`). [`read_page`] binds them.
pub(super) fn page_clause(n: usize, before: Option<&DetectionCursor>, offset: bool) -> String {
    let mut sql = String::new();
    let mut n = n;
    if before.is_some() {
        let _ = write!(
            sql,
            " AND at <= ${a} AND (at, node, reference) < (${a}, ${b}, ${c})",
            a = n + 1,
            b = n + 2,
            c = n + 3
        );
        n += 3;
    }
    let _ = write!(
        sql,
        " ORDER BY at DESC, node DESC, reference DESC LIMIT ${}",
        n + 1
    );
    if offset {
        let _ = write!(sql, " OFFSET ${}", n + 2);
    }
    sql
}

/// Binds what [`page_clause`] wrote after `q`'s own parameters — the
/// cursor, one row more than `limit` (to learn whether more follow), the
/// offset — and reads the page: up to `limit` detections, and whether more
/// follow.
pub(super) async fn read_page<'q>(
    pool: &sqlx::AnyPool,
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    limit: usize,
    before: Option<&'q DetectionCursor>,
    offset: Option<u64>,
) -> Result<(Vec<DetectionFacts>, bool), StoreError> {
    let mut q = q;
    if let Some(c) = before {
        q = q
            .bind(to_i64(c.at))
            .bind(c.node.as_str())
            .bind(c.reference.as_str());
    }
    q = q.bind(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX));
    if let Some(o) = offset {
        q = q.bind(to_i64(o));
    }
    let rows = q.fetch_all(pool).await?;
    let more = rows.len() > limit;
    let list = rows
        .iter()
        .take(limit)
        .map(facts)
        .collect::<Result<_, _>>()?;
    Ok((list, more))
}

/// Longest node name or reference a cursor carries (bytes).
const MAX_CURSOR_PART: usize = 256;

fn cursor_time(s: &str) -> Result<u64, String> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("a cursor starts with its time: decimal seconds".to_owned());
    }
    s.parse::<u64>()
        .ok()
        .filter(|t| i64::try_from(*t).is_ok())
        .ok_or_else(|| "the time of a cursor is out of range".to_owned())
}

/// Reads `TIME-HEX` (a cursor naming a row by its time and a key of 1 to
/// 64 lower-case hex digits): `shape` when it is not that, `what` and why
/// when its key is bad.
fn time_and_hex(s: &str, shape: &str, what: &str) -> Result<(u64, String), String> {
    let Some((at, key)) = s.split_once('-') else {
        return Err(shape.to_owned());
    };
    if key.is_empty()
        || key.len() > 64
        || !key
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!("{what} is 1 to 64 lower-case hex digits"));
    }
    Ok((cursor_time(at)?, key.to_owned()))
}

fn cursor_text(s: &str, what: &str) -> Result<String, String> {
    let bad =
        || format!("the {what} of a cursor is lower-case hex of at most {MAX_CURSOR_PART} bytes");
    if s.is_empty()
        || s.len() > MAX_CURSOR_PART * 2
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(bad());
    }
    let bytes = hex::decode(s).map_err(|_| bad())?;
    String::from_utf8(bytes).map_err(|_| format!("the {what} of a cursor is not UTF-8"))
}

impl DetectionCursor {
    /// The cursor of the page after `row`.
    pub fn after(row: &super::DetectionRow) -> Self {
        Self {
            at: row.at,
            node: row.node.clone(),
            reference: row.reference.clone(),
        }
    }

    /// Reads `AT-NODE-REFERENCE`; what is wrong with it otherwise.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = s.split('-');
        let (Some(at), Some(node), Some(reference), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("a detections cursor is TIME-NODE-REFERENCE".to_owned());
        };
        Ok(Self {
            at: cursor_time(at)?,
            node: cursor_text(node, "node")?,
            reference: cursor_text(reference, "reference")?,
        })
    }
}

impl std::fmt::Display for DetectionCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-{}-{}",
            self.at,
            hex::encode(&self.node),
            hex::encode(&self.reference)
        )
    }
}

impl AuditCursor {
    /// The cursor of the page after `entry`.
    pub fn after(entry: &AuditEntry) -> Self {
        Self {
            at: entry.at,
            id: entry.id.clone(),
        }
    }

    /// Reads `AT-ID`; what is wrong with it otherwise.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (at, id) = time_and_hex(s, "an audit cursor is TIME-ID", "the id of an audit cursor")?;
        Ok(Self { at, id })
    }
}

impl std::fmt::Display for AuditCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.at, self.id)
    }
}

// === a user's timeline and risk history ===

/// One thing that happened to a user, as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    /// When (seconds since the Unix epoch).
    pub at: u64,
    /// What: `session first seen`, `detection`, `false positive`,
    /// `confirmed compromise`, `step-up passed`, `trusted`, `session
    /// revoked`, `user revoked`, `risk points`, `step-up asked`,
    /// `universal logout`.
    pub what: &'static str,
    /// Its subject: a session key, a detection's reference and action, a
    /// trusted value, points, who asked.
    pub detail: String,
    /// A detection's reference, for its link.
    pub reference: Option<String>,
}

/// What a user's entity risk is rebuilt from: their enforced detections
/// not marked false positive (time and node), newest first, and the
/// standing risk points and clear.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RiskInputs {
    /// Enforced detections since the period's start, newest first; at
    /// most the cap asked for.
    pub detections: Vec<(u64, String)>,
    /// The user's risk points: points, since, until.
    pub risk: Option<(u8, u64, u64)>,
    /// When their detections were last cleared (a passed step-up): only
    /// later ones count after it.
    pub cleared_at: Option<u64>,
}

impl Store {
    /// A page of the things the store holds of `user` with a time, newest
    /// first, older than `before` (seconds since the Unix epoch; all when
    /// `None`): the newest `limit`, and every other of the last one's
    /// second, so that a page ends between seconds and the next one,
    /// before that second, misses nothing. Each source is read newest
    /// first, at most `limit` + [`TIMELINE_SECOND_CAP`] of it, one indexed
    /// query each.
    pub async fn user_timeline(
        &self,
        user: UserId,
        limit: usize,
        before: Option<u64>,
    ) -> Result<TimelinePage, StoreError> {
        let key = user.to_string();
        let fetch = limit.saturating_add(TIMELINE_SECOND_CAP);
        // One more than read in full, to learn whether a source holds more.
        let lim = i64::try_from(fetch.saturating_add(1)).unwrap_or(i64::MAX);
        let before = before.map_or(i64::MAX, to_i64);
        // Sources holding more than they were read for: the oldest time
        // each read, and what they hold.
        let mut cut: Vec<(u64, &'static str)> = Vec::new();
        let mut out: Vec<TimelineEntry> = Vec::new();
        let entry = |at: i64, what: &'static str, detail: String, reference: Option<String>| {
            TimelineEntry {
                at: to_u64(at),
                what,
                detail,
                reference,
            }
        };
        let mut tx = self.pool.begin().await?;
        let from = out.len();
        for row in sqlx::query(
            "SELECT first_seen, session FROM session_baselines WHERE user_key = $1 \
             AND first_seen < $3 ORDER BY first_seen DESC LIMIT $2",
        )
        .bind(key.as_str())
        .bind(lim)
        .bind(before)
        .fetch_all(&mut *tx)
        .await?
        {
            out.push(entry(
                row.try_get(0)?,
                "session first seen",
                row.try_get(1)?,
                None,
            ));
        }
        cut.extend(cut_at(&out, from, fetch));
        let from = out.len();
        for row in sqlx::query(
            "SELECT at, reference, action, enforced, node FROM detections WHERE user_key = $1 \
             AND at < $3 ORDER BY at DESC LIMIT $2",
        )
        .bind(key.as_str())
        .bind(lim)
        .bind(before)
        .fetch_all(&mut *tx)
        .await?
        {
            let reference: String = row.try_get(1)?;
            let action: String = row.try_get(2)?;
            let enforced = row.try_get::<i64, _>(3)? != 0;
            let node: String = row.try_get(4)?;
            out.push(entry(
                row.try_get(0)?,
                "detection",
                format!(
                    "{action}{} on node {node}",
                    if enforced { "" } else { " (not enforced)" }
                ),
                Some(reference),
            ));
        }
        cut.extend(cut_at(&out, from, fetch));
        // Labels: each kind's newest, through the user's detections.
        for (column, what) in [
            ("false_positive", "false positive"),
            ("confirmed_compromise", "confirmed compromise"),
            ("stepped_up", "step-up passed"),
        ] {
            let from = out.len();
            for row in sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {column}, reference FROM detections WHERE user_key = $1 \
                 AND {column} IS NOT NULL AND {column} < $3 ORDER BY {column} DESC LIMIT $2"
            )))
            .bind(key.as_str())
            .bind(lim)
            .bind(before)
            .fetch_all(&mut *tx)
            .await?
            {
                let reference: String = row.try_get(1)?;
                out.push(entry(row.try_get(0)?, what, String::new(), Some(reference)));
            }
            cut.extend(cut_at(&out, from, fetch));
        }
        let from = out.len();
        for row in sqlx::query(
            "SELECT at, what, value FROM user_trust WHERE user_key = $1 AND at < $3 \
             ORDER BY at DESC LIMIT $2",
        )
        .bind(key.as_str())
        .bind(lim)
        .bind(before)
        .fetch_all(&mut *tx)
        .await?
        {
            let what: String = row.try_get(1)?;
            let value: String = row.try_get(2)?;
            out.push(entry(
                row.try_get(0)?,
                "trusted",
                format!("{what} {value}"),
                None,
            ));
        }
        cut.extend(cut_at(&out, from, fetch));
        // The user's sessions revoked: those held and those caught.
        let from = out.len();
        for row in sqlx::query(
            "SELECT r.at, r.session FROM revoked_sessions r WHERE r.session IN \
             (SELECT session FROM session_baselines WHERE user_key = $1 \
              UNION SELECT session FROM detections WHERE user_key = $1 AND session IS NOT NULL) \
             AND r.at < $3 ORDER BY r.at DESC LIMIT $2",
        )
        .bind(key.as_str())
        .bind(lim)
        .bind(before)
        .fetch_all(&mut *tx)
        .await?
        {
            out.push(entry(
                row.try_get(0)?,
                "session revoked",
                row.try_get(1)?,
                None,
            ));
        }
        cut.extend(cut_at(&out, from, fetch));
        for (sql, what) in [
            (
                "SELECT at, '' FROM revoked_users WHERE user_key = $1 AND at < $2",
                "user revoked",
            ),
            (
                "SELECT at, '' FROM user_step_ups WHERE user_key = $1 AND at < $2",
                "step-up asked",
            ),
            (
                "SELECT at, CAST(points AS TEXT) FROM user_risk WHERE user_key = $1 AND at < $2",
                "risk points",
            ),
        ] {
            if let Some(row) = sqlx::query(sql)
                .bind(key.as_str())
                .bind(before)
                .fetch_optional(&mut *tx)
                .await?
            {
                out.push(entry(row.try_get(0)?, what, row.try_get(1)?, None));
            }
        }
        let from = out.len();
        for row in sqlx::query(
            "SELECT created, by_whom FROM logouts WHERE user_key = $1 AND created < $3 \
             ORDER BY created DESC LIMIT $2",
        )
        .bind(key.as_str())
        .bind(lim)
        .bind(before)
        .fetch_all(&mut *tx)
        .await?
        {
            let by: String = row.try_get(1)?;
            out.push(entry(
                row.try_get(0)?,
                "universal logout",
                format!("by {by}"),
                None,
            ));
        }
        cut.extend(cut_at(&out, from, fetch));
        tx.commit().await?;
        out.sort_by(|a, b| {
            b.at.cmp(&a.at)
                .then_with(|| a.what.cmp(b.what))
                .then_with(|| a.detail.cmp(&b.detail))
                .then_with(|| a.reference.cmp(&b.reference))
        });
        // The newest `limit`, and the rest of the last one's second.
        let mut take = out.len().min(limit);
        if let Some(last) = take.checked_sub(1).map(|i| out[i].at) {
            while out.get(take).is_some_and(|e| e.at == last) {
                take += 1;
            }
        }
        let more = out.len() > take;
        out.truncate(take);
        let last = out.last().map(|e| e.at);
        // A source cut in the page's last second (it cannot be cut in a
        // later one: it read more than the page holds) may hold more of
        // that second than it read: said, not hidden.
        let crowded = last.and_then(|l| {
            cut.iter()
                .find(|(c, _)| *c >= l)
                .map(|(_, what)| (l, *what))
        });
        Ok(TimelinePage {
            next: if more || crowded.is_some() {
                last
            } else {
                None
            },
            entries: out,
            crowded,
        })
    }

    /// What `user`'s entity risk since `since` is rebuilt from; at most
    /// `cap` detections, the newest.
    pub async fn risk_inputs(
        &self,
        user: UserId,
        since: u64,
        cap: usize,
    ) -> Result<RiskInputs, StoreError> {
        let key = user.to_string();
        let mut tx = self.pool.begin().await?;
        let mut out = RiskInputs::default();
        for row in sqlx::query(
            "SELECT at, node FROM detections WHERE user_key = $1 AND at >= $2 AND enforced = 1 \
             AND false_positive IS NULL ORDER BY at DESC LIMIT $3",
        )
        .bind(key.as_str())
        .bind(to_i64(since))
        .bind(i64::try_from(cap).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?
        {
            out.detections
                .push((to_u64(row.try_get(0)?), row.try_get::<String, _>(1)?));
        }
        if let Some(row) =
            sqlx::query("SELECT points, at, until FROM user_risk WHERE user_key = $1")
                .bind(key.as_str())
                .fetch_optional(&mut *tx)
                .await?
        {
            out.risk = Some((
                u8::try_from(to_u64(row.try_get(0)?)).unwrap_or(100),
                to_u64(row.try_get(1)?),
                to_u64(row.try_get(2)?),
            ));
        }
        out.cleared_at =
            sqlx::query("SELECT until FROM user_detections WHERE user_key = $1 AND count = 0")
                .bind(key.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| row.try_get::<i64, _>(0))
                .transpose()?
                .map(to_u64);
        tx.commit().await?;
        Ok(out)
    }
}
