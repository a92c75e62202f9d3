//! Nodes' counts per minute (`docs/dashboard.md`, Requests judged and
//! rules; [`vigil_fleet::NodeCounts`]): requests judged by action,
//! decisions by reason code, rules' matches. Kept per node, run of the
//! node, minute, kind and name (migration `0024_node_counts.sql`); a count
//! posted again replaces its row, so that a retried batch never counts
//! twice.

use std::collections::BTreeMap;

use sqlx::{Any, Row, Transaction};
use vigil_fleet::{COUNT_KINDS, NodeCounts};

use super::{Buckets, Store, StoreError, to_i64, to_u64};

/// How far ahead of the controller's clock a node's minute may be and
/// still be kept: two minutes. Further ahead, the counts are ignored (a
/// node's clock gone wrong must not fill tomorrow's chart).
pub const AHEAD_SECS: u64 = 120;

/// Oldest minute kept from a post: 65 minutes before the controller's
/// clock. A node holds at most the last 60 minutes it could not post, so
/// nothing it sends honestly is older; a hostile node cannot backdate
/// rows over the whole retention.
pub const BEHIND_SECS: u64 = 65 * 60;

/// Most runs of one node counted in one minute: a node that restarts
/// within a minute is two runs; a node inventing runs gets no more rows.
pub const RUNS_PER_MINUTE: i64 = 2;

/// Most rows the rules page reads (rule, kind, hour): 200 rules matched
/// in every hour of a day in both modes is 9,600.
pub const RULE_ROWS_CAP: usize = 20_000;

/// Takes `counts` from `node`: each entry of a kind this build knows
/// replaces the row of its node, run, minute, kind and name. Counts of a
/// minute ahead of `now` by more than [`AHEAD_SECS`], or older than `keep`
/// seconds, are ignored; returns the rows written. The counts were checked
/// ([`NodeCounts::problem`]) when the batch was read.
pub(super) async fn take(
    tx: &mut Transaction<'static, Any>,
    node: &str,
    counts: &NodeCounts,
    now: u64,
    keep: u64,
) -> Result<u64, StoreError> {
    let at = counts.minute.saturating_mul(60);
    if at > now.saturating_add(AHEAD_SECS) || at.saturating_add(keep.min(BEHIND_SECS)) < now {
        return Ok(0);
    }
    let runs: i64 = sqlx::query(
        "SELECT COUNT(DISTINCT run) FROM node_counts \
         WHERE node = $1 AND minute = $2 AND run <> $3",
    )
    .bind(node)
    .bind(to_i64(counts.minute))
    .bind(counts.run.as_str())
    .fetch_one(&mut **tx)
    .await?
    .try_get(0)?;
    if runs >= RUNS_PER_MINUTE {
        return Ok(0);
    }
    // A minute posted again is the same minute resent: it replaces what
    // its run posted for it, so that a run holds at most one post's
    // entries (MAX_COUNTS) per minute whatever it sends.
    sqlx::query("DELETE FROM node_counts WHERE node = $1 AND run = $2 AND minute = $3")
        .bind(node)
        .bind(counts.run.as_str())
        .bind(to_i64(counts.minute))
        .execute(&mut **tx)
        .await?;
    let mut written = 0;
    for c in counts.counts.iter().filter(|c| {
        COUNT_KINDS.contains(&c.kind.as_str())
            // Reason codes are the engine's fixed set; a code outside it
            // (a later build's) is left out rather than kept as a name a
            // node chose.
            && (c.kind != "reason"
                || vigil_engine::Reason::ALL
                    .iter()
                    .any(|r| r.code() == c.name))
    }) {
        written += sqlx::query(
            "INSERT INTO node_counts (node, run, minute, kind, name, action, n) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (node, run, minute, kind, name) \
             DO UPDATE SET action = excluded.action, n = excluded.n",
        )
        .bind(node)
        .bind(counts.run.as_str())
        .bind(to_i64(counts.minute))
        .bind(c.kind.as_str())
        .bind(c.name.as_str())
        .bind(c.action.as_deref().unwrap_or(""))
        .bind(to_i64(c.n))
        .execute(&mut **tx)
        .await?
        .rows_affected();
    }
    Ok(written)
}

/// One rule's matches in one bucket, as the rules page reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCount {
    /// `rule` (it decided) or `shadow` (recorded only).
    pub kind: String,
    /// The rule's name, or [`vigil_fleet::OTHER_RULES`].
    pub name: String,
    /// What it did or would have done (`""`: the node no longer held it).
    pub action: String,
    /// The bucket's start (seconds since the Unix epoch).
    pub at: u64,
    /// Matches, every node together.
    pub n: u64,
}

/// Requests judged as nodes count them, per bucket: what
/// [`Store::judged_buckets`] reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Judged {
    /// Requests judged per action decided, enforced and monitored together.
    pub actions: Buckets,
    /// Per action over the period: `(enforced, monitored)`.
    pub totals: BTreeMap<String, (u64, u64)>,
    /// Decisions that carried each reason code.
    pub reasons: Buckets,
}

impl Store {
    /// Requests judged since `since` (seconds since the Unix epoch; whole
    /// minutes), every node together, per `bucket` seconds and action
    /// decided — enforced and monitored together — and the totals of the
    /// period per action as `(enforced, monitored)`; and the decisions that
    /// carried each reason code, per bucket. One grouped query: reasons
    /// are the engine's fixed set, so at most about 40 rows a bucket.
    pub async fn judged_buckets(&self, since: u64, bucket: u64) -> Result<Judged, StoreError> {
        let per = (bucket / 60).max(1);
        let rows = sqlx::query(
            "SELECT minute / $2 AS b, kind, name, CAST(SUM(n) AS BIGINT) FROM node_counts \
             WHERE minute >= $1 AND kind IN ('action', 'monitored', 'reason') \
             GROUP BY b, kind, name ORDER BY b, kind, name",
        )
        .bind(to_i64(since / 60))
        .bind(to_i64(per))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Judged::default();
        for row in rows {
            let b = to_u64(row.try_get(0)?).saturating_mul(per * 60);
            let kind: String = row.try_get(1)?;
            let name: String = row.try_get(2)?;
            let n = to_u64(row.try_get(3)?);
            let into = match kind.as_str() {
                "reason" => &mut out.reasons,
                "action" | "monitored" => {
                    let total = out.totals.entry(name.clone()).or_default();
                    if kind == "action" {
                        total.0 = total.0.saturating_add(n);
                    } else {
                        total.1 = total.1.saturating_add(n);
                    }
                    &mut out.actions
                }
                _ => continue,
            };
            let cell = into.counts.entry(b).or_default().entry(name).or_insert(0);
            *cell = cell.saturating_add(n);
        }
        Ok(out)
    }

    /// Rules' matches since `since`, every node together, per `bucket`
    /// seconds, at most [`RULE_ROWS_CAP`] rows (by kind and name); and
    /// whether the cap cut them.
    pub async fn rule_counts(
        &self,
        since: u64,
        bucket: u64,
    ) -> Result<(Vec<RuleCount>, bool), StoreError> {
        let per = (bucket / 60).max(1);
        let rows = sqlx::query(
            "SELECT kind, name, MAX(action), minute / $2 AS b, CAST(SUM(n) AS BIGINT) \
             FROM node_counts WHERE minute >= $1 AND kind IN ('rule', 'shadow') \
             GROUP BY kind, name, b ORDER BY kind, name, b LIMIT $3",
        )
        .bind(to_i64(since / 60))
        .bind(to_i64(per))
        .bind(i64::try_from(RULE_ROWS_CAP + 1).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let capped = rows.len() > RULE_ROWS_CAP;
        let mut out = Vec::with_capacity(rows.len().min(RULE_ROWS_CAP));
        for row in rows.iter().take(RULE_ROWS_CAP) {
            out.push(RuleCount {
                kind: row.try_get(0)?,
                name: row.try_get(1)?,
                action: row.try_get(2)?,
                at: to_u64(row.try_get(3)?).saturating_mul(per * 60),
                n: to_u64(row.try_get(4)?),
            });
        }
        Ok((out, capped))
    }
}
