//! `GET /dashboard/precision`: what operators' labels say about the
//! detections (`docs/dashboard.md`, Feedback pipeline) — per reason and per
//! rule, how many detections were confirmed a compromise and how many
//! marked a false positive, in all and per week (a quarter of the period).

use std::sync::Arc;

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::view::{Nav, time};
use super::{PageError, operator, page, query};
use crate::api::{App, now_secs};
use crate::feedback::{self, LABELLED_CAP, RULE_CAP, Row, Tally};

/// The period shown when none is asked for: four weeks.
const DEFAULT_DAYS: u64 = 28;

/// The longest period shown.
const MAX_DAYS: u64 = 365;

/// Buckets of the period.
const BUCKETS: usize = 4;

/// One row as shown.
struct PrecisionRow {
    name: String,
    confirmed: u64,
    false_positive: u64,
    step_up_passed: u64,
    precision: String,
    /// Per bucket: `confirmed / false positive (precision)`.
    buckets: Vec<String>,
}

#[derive(Template)]
#[template(path = "dashboard/precision.html")]
struct PrecisionPage {
    nav: Nav,
    days: u64,
    since: String,
    starts: Vec<String>,
    all: PrecisionRow,
    reasons: Vec<PrecisionRow>,
    rules: Vec<PrecisionRow>,
    capped: bool,
    labelled_cap: usize,
    rule_cap: usize,
}

fn percent(t: &Tally) -> String {
    t.precision()
        .map_or_else(|| "-".to_owned(), |p| format!("{:.1}%", p * 100.0))
}

fn view(row: &Row) -> PrecisionRow {
    PrecisionRow {
        name: row.name.clone(),
        confirmed: row.total.confirmed,
        false_positive: row.total.false_positive,
        step_up_passed: row.total.step_up_passed,
        precision: percent(&row.total),
        buckets: row
            .buckets
            .iter()
            .map(|t| {
                if t.labelled() + t.step_up_passed == 0 {
                    "-".to_owned()
                } else {
                    format!(
                        "{} / {} ({}) · {} passed",
                        t.confirmed,
                        t.false_positive,
                        percent(t),
                        t.step_up_passed
                    )
                }
            })
            .collect(),
    }
}

/// `GET /dashboard/precision?days=N` (1 to 365; 28 when not given).
pub(crate) async fn precision(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let operator = operator(&app, &headers)?;
    let q = query(raw.as_deref(), &["days"])?;
    let days = match q.get("days") {
        None => DEFAULT_DAYS,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|d| (1..=MAX_DAYS).contains(d) && !v.starts_with('+'))
            .ok_or_else(|| PageError::BadRequest(format!("days is 1 to {MAX_DAYS}")))?,
    };
    let now = now_secs();
    let p = feedback::measure(&app.store, now, days, BUCKETS).await?;
    page(&PrecisionPage {
        nav: operator.nav(),
        days,
        since: time(p.starts.first().copied().unwrap_or(now)),
        starts: p.starts.iter().map(|s| time(*s)).collect(),
        all: view(&p.all),
        reasons: p.reasons.iter().map(view).collect(),
        rules: p.rules.iter().map(view).collect(),
        capped: p.capped,
        labelled_cap: LABELLED_CAP,
        rule_cap: RULE_CAP,
    })
}
