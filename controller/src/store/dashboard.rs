//! What the dashboard reads beyond the admin API's queries
//! (`docs/dashboard.md`): detections by reference id and newest first,
//! detections counted per time bucket and action, reason counts, and
//! sessions by key prefix. Every list is bounded by its caller's `limit`.

use std::collections::BTreeMap;

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

    /// Up to `limit` of `user`'s detections, newest first.
    pub async fn detections_by_user(
        &self,
        user: UserId,
        limit: usize,
    ) -> Result<Vec<DetectionFacts>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DETECTION_COLUMNS} FROM detections WHERE user_key = $1 \
             ORDER BY at DESC, node, reference LIMIT $2"
        )))
        .bind(user.to_string())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(facts).collect::<Result<_, _>>()?)
    }

    /// Up to `limit` detections from the `offset`th, newest first; whether
    /// more follow.
    pub async fn recent_detections(
        &self,
        limit: usize,
        offset: u64,
    ) -> Result<(Vec<DetectionFacts>, bool), StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DETECTION_COLUMNS} FROM detections ORDER BY at DESC, node, reference LIMIT $1 OFFSET $2"
        )))
        .bind(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX))
        .bind(to_i64(offset))
        .fetch_all(&self.pool)
        .await?;
        let more = rows.len() > limit;
        let list = rows
            .iter()
            .take(limit)
            .map(facts)
            .collect::<Result<_, _>>()?;
        Ok((list, more))
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
}
