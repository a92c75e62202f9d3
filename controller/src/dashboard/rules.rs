//! What nodes count per minute, as the dashboard shows it
//! (`docs/dashboard.md`, Requests judged and rules): the overview's
//! section of requests judged per hour by action, and `GET
//! /dashboard/rules` — each rule's matches per hour over a day, each
//! shadow rule's with the action it would have taken.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::chart::{Chart, Data, chart, lines};
use super::view::{Nav, time};
use super::{PageError, operator, page, query};
use crate::api::{App, now_secs};
use crate::store::counts::RULE_ROWS_CAP;

/// An hour's bucket, in seconds.
const BUCKET_SECS: u64 = 3_600;

/// Buckets shown: a day.
const BUCKETS: u32 = 24;

/// Width of a rule's row of bars, in SVG units.
const SPARK_WIDTH: u32 = 240;

/// Height of a rule's row of bars.
const SPARK_HEIGHT: u32 = 24;

/// The overview's section: requests judged per hour over the last day,
/// every node together, stacked by the action decided; and decisions per
/// hour by the reasons they carried.
#[derive(Debug, Clone)]
pub(crate) struct Judged {
    pub(crate) chart: Chart,
    /// Requests judged in the day.
    pub(crate) total: u64,
    /// Per action decided: (action, enforced, monitored), most first.
    pub(crate) actions: Vec<(String, u64, u64)>,
    /// Decisions per hour by reason: the most frequent reasons, each a
    /// line, the rest as `other`.
    pub(crate) reasons: Data,
    /// Every reason's decisions in the day, most first.
    pub(crate) reason_totals: Vec<(String, u64)>,
}

/// The first bucket's start of the day ending with the hour of `now`.
fn day_start(now: u64) -> u64 {
    (now / BUCKET_SECS * BUCKET_SECS).saturating_sub(BUCKET_SECS * u64::from(BUCKETS - 1))
}

/// Reasons drawn as lines of their own; the rest are summed as `other`.
const REASON_LINES: usize = 8;

/// The overview's section of requests judged, as of `now`.
pub(crate) async fn judged(app: &App, now: u64) -> Result<Judged, PageError> {
    let judged = app
        .store
        .judged_buckets(day_start(now), BUCKET_SECS)
        .await?;
    let mut actions: Vec<(String, u64, u64)> = judged
        .totals
        .into_iter()
        .map(|(a, (e, m))| (a, e, m))
        .collect();
    actions.sort_by(|a, b| {
        (b.1.saturating_add(b.2))
            .cmp(&a.1.saturating_add(a.2))
            .then_with(|| a.0.cmp(&b.0))
    });
    let (reasons, reason_totals) = lines(&judged.reasons, now, BUCKET_SECS, BUCKETS, REASON_LINES);
    Ok(Judged {
        chart: chart(&judged.actions, now, BUCKET_SECS, BUCKETS),
        total: actions
            .iter()
            .fold(0u64, |t, (_, e, m)| t.saturating_add(*e).saturating_add(*m)),
        actions,
        reasons,
        reason_totals,
    })
}

/// One bar of a rule's row.
struct Spark {
    x: u32,
    y: u32,
    w: u32,
    h: u32,
    /// `19:00Z: 3`.
    title: String,
}

/// One rule as shown.
struct RuleRow {
    name: String,
    /// What it did (or would have done); `-` when unknown.
    action: String,
    /// `a-block` and the like: the bars' colour.
    class: &'static str,
    total: u64,
    bars: Vec<Spark>,
    /// Hours with matches, oldest first: `19:00Z: 3`.
    hours: Vec<String>,
}

#[derive(Template)]
#[template(path = "dashboard/rules.html")]
struct RulesPage {
    nav: Nav,
    since: String,
    now: String,
    enforced: Vec<RuleRow>,
    shadow: Vec<RuleRow>,
    capped: bool,
    cap: usize,
    width: u32,
    height: u32,
}

fn class_of(action: &str) -> &'static str {
    match action {
        "revoke" => "a-revoke",
        "block" => "a-block",
        "step_up" => "a-step_up",
        "allow" => "a-allow",
        _ => "a-other",
    }
}

/// `GET /dashboard/rules` (no query): every rule matched in the last
/// day, with its matches per hour and in all.
pub(crate) async fn rules(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let operator = operator(&app, &headers)?;
    query(raw.as_deref(), &[])?;
    let now = now_secs();
    let first = day_start(now);
    let (counts, capped) = app.store.rule_counts(first, BUCKET_SECS).await?;
    // (kind, name) → (action, hour → matches).
    let mut rules: BTreeMap<(String, String), (String, BTreeMap<u64, u64>)> = BTreeMap::new();
    for c in counts {
        let entry = rules.entry((c.kind, c.name)).or_default();
        if !c.action.is_empty() {
            entry.0 = c.action;
        }
        let cell = entry.1.entry(c.at).or_insert(0);
        *cell = cell.saturating_add(c.n);
    }
    let w = SPARK_WIDTH / BUCKETS;
    let mut enforced = Vec::new();
    let mut shadow = Vec::new();
    for ((kind, name), (action, hours)) in rules {
        let max = hours.values().copied().max().unwrap_or(0).max(1);
        let mut bars = Vec::new();
        let mut shown = Vec::new();
        for (&at, &n) in hours.range(first..) {
            let i = u32::try_from((at - first) / BUCKET_SECS).unwrap_or(BUCKETS);
            if i >= BUCKETS {
                continue;
            }
            let hour = time(at);
            let title = format!("{}Z: {n}", hour.get(11..16).unwrap_or(""));
            let h = u32::try_from(n.saturating_mul(u64::from(SPARK_HEIGHT)) / max)
                .unwrap_or(SPARK_HEIGHT)
                .clamp(1, SPARK_HEIGHT);
            bars.push(Spark {
                x: i * w + 1,
                y: SPARK_HEIGHT - h,
                w: w.saturating_sub(2).max(1),
                h,
                title: title.clone(),
            });
            shown.push(title);
        }
        let row = RuleRow {
            class: class_of(&action),
            action: if action.is_empty() {
                "-".to_owned()
            } else {
                action
            },
            total: hours.values().fold(0u64, |t, n| t.saturating_add(*n)),
            name,
            bars,
            hours: shown,
        };
        if kind == "shadow" {
            shadow.push(row);
        } else {
            enforced.push(row);
        }
    }
    for rows in [&mut enforced, &mut shadow] {
        rows.sort_by(|a, b| b.total.cmp(&a.total).then_with(|| a.name.cmp(&b.name)));
    }
    page(&RulesPage {
        nav: operator.nav(),
        since: time(first),
        now: time(now),
        enforced,
        shadow,
        capped,
        cap: RULE_ROWS_CAP,
        width: SPARK_WIDTH,
        height: SPARK_HEIGHT,
    })
}
