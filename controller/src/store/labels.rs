//! The labelled detections the feedback pipeline reads
//! (`docs/dashboard.md`, Feedback pipeline): detections an operator marked
//! a false positive or a confirmed compromise, read through the partial
//! index `detections_labelled` (migration `0022_labels.sql`), in pages
//! keyed by `(at, node, reference)` so that an export streams through
//! them without holding them all.

use sqlx::{Any, Row, Transaction};
use vigil_fleet::{SessionId, UserId};

use super::admin::parse_reasons;
use super::{Store, StoreError, to_i64, to_u64};

/// How long after a detection that asked for a step-up a passed step-up
/// on the session labels it: an hour.
pub const STEP_UP_WINDOW: u64 = 3_600;

/// Labels `session`'s unlabelled `step_up` detections of the last
/// [`STEP_UP_WINDOW`] passed (`stepped_up` = `now`): a node reported that
/// the session's user passed a step-up (a confirmed baseline). Only
/// detections that asked for a step-up: a blocked or revoked session's
/// user has nothing to pass on it. Read by the session's `user` (nodes
/// report detections of bound sessions), through the index on
/// `(user_key, at)`: a pass reads the user's detections of the hour, not
/// the fleet's.
pub(super) async fn step_up_passed(
    tx: &mut Transaction<'static, Any>,
    user: UserId,
    session: SessionId,
    now: u64,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE detections SET stepped_up = $1 WHERE user_key = $2 AND at >= $3 AND at <= $1 \
         AND session = $4 AND action = 'step_up' AND stepped_up IS NULL \
         AND false_positive IS NULL AND confirmed_compromise IS NULL",
    )
    .bind(to_i64(now))
    .bind(user.to_string())
    .bind(to_i64(now.saturating_sub(STEP_UP_WINDOW)))
    .bind(session.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// Labels the block `reference` of `node` passed (`stepped_up` = `now`):
/// its user said "it was me" on the block page and passed the step-up the
/// link started (`docs/dashboard.md`, Feedback pipeline). Only that
/// decision, only if it was this node's, of this session and user, a
/// block, within [`STEP_UP_WINDOW`] and not labelled yet: a node's word
/// about one user's pass labels no other user's decision.
pub(super) async fn disputed(
    tx: &mut Transaction<'static, Any>,
    node: &str,
    user: UserId,
    session: SessionId,
    reference: &str,
    now: u64,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE detections SET stepped_up = $1 WHERE node = $2 AND reference = $3 \
         AND user_key = $4 AND session = $5 AND action = 'block' \
         AND at >= $6 AND at <= $1 AND stepped_up IS NULL \
         AND false_positive IS NULL AND confirmed_compromise IS NULL",
    )
    .bind(to_i64(now))
    .bind(node)
    .bind(reference)
    .bind(user.to_string())
    .bind(session.to_string())
    .bind(to_i64(now.saturating_sub(STEP_UP_WINDOW)))
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// An operator's label on a detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Label {
    /// Marked a false positive: the user was who they said.
    FalsePositive,
    /// Marked a confirmed compromise: the session was stolen.
    ConfirmedCompromise,
    /// No operator's label, but the user passed a step-up on the session
    /// after the detection asked for one, or after they said "it was me"
    /// on its block page: they proved it was them (as far as the step-up
    /// proves anything: a thief holding the second factor passes too).
    StepUpPassed,
}

impl Label {
    /// `false_positive` or `confirmed_compromise`: the export's and the
    /// metrics' name.
    pub fn as_str(self) -> &'static str {
        match self {
            Label::FalsePositive => "false_positive",
            Label::ConfirmedCompromise => "confirmed_compromise",
            Label::StepUpPassed => "step_up_passed",
        }
    }

    /// The label of a detection marked at these times: an operator's
    /// label before a passed step-up; of an operator's two, the later mark
    /// is the operator's last word (a detection first taken for a false
    /// positive and later found a compromise is a compromise); marked both
    /// at the same second, a compromise. `None` for none.
    pub fn of(
        false_positive: Option<u64>,
        confirmed: Option<u64>,
        stepped_up: Option<u64>,
    ) -> Option<(Label, u64)> {
        match (false_positive, confirmed) {
            (None, None) => stepped_up.map(|t| (Label::StepUpPassed, t)),
            (Some(f), None) => Some((Label::FalsePositive, f)),
            (None, Some(c)) => Some((Label::ConfirmedCompromise, c)),
            (Some(f), Some(c)) if f > c => Some((Label::FalsePositive, f)),
            (Some(_), Some(c)) => Some((Label::ConfirmedCompromise, c)),
        }
    }
}

/// One labelled detection: the decision's facts as the node reported
/// them, and its label. No session or user key: the feedback pipeline
/// measures decisions, not people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelled {
    /// The node that decided.
    pub node: String,
    /// The decision's reference id.
    pub reference: String,
    /// When it was decided (seconds since the Unix epoch).
    pub at: u64,
    /// The route's name.
    pub route: String,
    /// The rule that decided, if one did.
    pub rule: Option<String>,
    /// The action decided.
    pub action: String,
    /// Whether it was carried out.
    pub enforced: bool,
    /// The overall score, 0 to 100.
    pub score: u8,
    /// Reason codes with their points, in the node's order.
    pub reasons: Vec<(String, u8)>,
    /// The label.
    pub label: Label,
    /// When it was labelled.
    pub labelled_at: u64,
}

/// Where a page of labelled detections ends: the next page starts after
/// it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    at: u64,
    node: String,
    reference: String,
}

/// Exactly the partial index's condition, so that both stores use it.
const LABELLED: &str =
    "(false_positive IS NOT NULL OR confirmed_compromise IS NOT NULL OR stepped_up IS NOT NULL)";

fn labelled(row: &sqlx::any::AnyRow) -> Result<Option<Labelled>, sqlx::Error> {
    let reasons: String = row.try_get(8)?;
    let fp = row.try_get::<Option<i64>, _>(9)?.map(to_u64);
    let cc = row.try_get::<Option<i64>, _>(10)?.map(to_u64);
    let su = row.try_get::<Option<i64>, _>(11)?.map(to_u64);
    let Some((label, labelled_at)) = Label::of(fp, cc, su) else {
        return Ok(None);
    };
    Ok(Some(Labelled {
        node: row.try_get(0)?,
        reference: row.try_get(1)?,
        at: to_u64(row.try_get(2)?),
        route: row.try_get(3)?,
        rule: row.try_get(4)?,
        action: row.try_get(5)?,
        enforced: row.try_get::<i64, _>(6)? != 0,
        score: u8::try_from(to_u64(row.try_get(7)?)).unwrap_or(100),
        reasons: parse_reasons(&reasons),
        label,
        labelled_at,
    }))
}

impl Store {
    /// Up to `limit` labelled detections decided in `since..until`
    /// (seconds since the Unix epoch), oldest first, after `after` (the
    /// previous page's cursor); and the cursor of this page's last one.
    pub async fn labelled_page(
        &self,
        since: u64,
        until: u64,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<(Vec<Labelled>, Option<Cursor>), StoreError> {
        let limit_i = i64::try_from(limit).unwrap_or(i64::MAX);
        let columns = "node, reference, at, route, rule, action, enforced, score, reasons, \
                       false_positive, confirmed_compromise, stepped_up";
        let rows =
            match after {
                None => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {columns} FROM detections WHERE {LABELLED} AND at >= $1 AND at < $2 \
                     ORDER BY at, node, reference LIMIT $3"
                )))
                .bind(to_i64(since))
                .bind(to_i64(until))
                .bind(limit_i)
                .fetch_all(&self.pool)
                .await?,
                Some(c) => {
                    // (at, node, reference) > the cursor, spelt out: row
                    // comparisons read alike on both stores, but this form
                    // is plainly what it means.
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {columns} FROM detections WHERE {LABELLED} AND at < $2 AND \
                     (at > $1 OR (at = $1 AND (node > $3 OR (node = $3 AND reference > $4)))) \
                     ORDER BY at, node, reference LIMIT $5"
                    )))
                    .bind(to_i64(c.at.max(since)))
                    .bind(to_i64(until))
                    .bind(c.node.as_str())
                    .bind(c.reference.as_str())
                    .bind(limit_i)
                    .fetch_all(&self.pool)
                    .await?
                }
            };
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            if let Some(l) = labelled(row)? {
                out.push(l);
            }
        }
        let cursor = out.last().map(|l| Cursor {
            at: l.at,
            node: l.node.clone(),
            reference: l.reference.clone(),
        });
        Ok((out, cursor))
    }

    /// The newest `cap` labelled detections decided since `since`, newest
    /// first: what precision is counted over. Whether more were left out
    /// (the list is then `cap` long).
    pub async fn labelled_recent(
        &self,
        since: u64,
        cap: usize,
    ) -> Result<(Vec<Labelled>, bool), StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT node, reference, at, route, rule, action, enforced, score, reasons, \
             false_positive, confirmed_compromise, stepped_up FROM detections WHERE {LABELLED} AND at >= $1 \
             ORDER BY at DESC, node, reference LIMIT $2"
        )))
        .bind(to_i64(since))
        .bind(i64::try_from(cap.saturating_add(1)).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let more = rows.len() > cap;
        let mut out = Vec::with_capacity(rows.len().min(cap));
        for row in rows.iter().take(cap) {
            if let Some(l) = labelled(row)? {
                out.push(l);
            }
        }
        Ok((out, more))
    }
}

#[cfg(test)]
mod tests {
    use super::Label;

    #[test]
    fn the_operators_later_mark_is_the_label_and_a_step_up_only_without_one() {
        assert_eq!(Label::of(None, None, None), None);
        assert_eq!(
            Label::of(None, None, Some(3)),
            Some((Label::StepUpPassed, 3))
        );
        assert_eq!(
            Label::of(Some(5), None, Some(3)),
            Some((Label::FalsePositive, 5))
        );
        assert_eq!(
            Label::of(None, Some(7), Some(9)),
            Some((Label::ConfirmedCompromise, 7))
        );
        assert_eq!(
            Label::of(Some(5), Some(7), None),
            Some((Label::ConfirmedCompromise, 7))
        );
        assert_eq!(
            Label::of(Some(9), Some(7), None),
            Some((Label::FalsePositive, 9))
        );
        assert_eq!(
            Label::of(Some(7), Some(7), None),
            Some((Label::ConfirmedCompromise, 7))
        );
    }
}
