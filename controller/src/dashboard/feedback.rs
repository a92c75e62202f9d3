//! `GET /dashboard/precision`: what operators' labels say about the
//! detections (`docs/dashboard.md`, Feedback pipeline) — per reason and per
//! rule, how many detections were confirmed a compromise and how many
//! marked a false positive, in all and per quarter of the period; and
//! charted per UTC day (or week).

use std::sync::Arc;

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::chart::{Data, Series};
use super::view::{Nav, time};
use super::{PageError, operator, page, query};
use crate::api::{App, now_secs};
use crate::feedback::{self, LABELLED_CAP, RULE_CAP, Row, Split, Tally};

/// The period shown when none is asked for: four weeks.
const DEFAULT_DAYS: u64 = 28;

/// The longest period shown.
const MAX_DAYS: u64 = 365;

/// Buckets of the period in the tables.
const BUCKETS: usize = 4;

/// Buckets of the period in the charts: a day each up to this many days,
/// a week each beyond (at most 53).
const DAILY_UP_TO: u64 = 60;

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
    /// Labelled detections per day (or week), stacked by label.
    labels_chart: Data,
    /// Precision per day (or week), where an operator labelled any.
    precision_chart: Data,
    /// `day` or `week`.
    per: &'static str,
}

/// The charts of `all` over buckets of `step` seconds from `starts`:
/// labels stacked, and precision.
fn charts(all: &Row, starts: &[u64], step: u64) -> (Data, Data) {
    #[allow(clippy::cast_precision_loss, reason = "counts far below 2^53")]
    let series = |label: &str, class: &'static str, pick: fn(&Tally) -> u64| Series {
        label: label.to_owned(),
        class,
        values: all.buckets.iter().map(|t| Some(pick(t) as f64)).collect(),
    };
    let labels = Data {
        kind: "stacked",
        t: starts.to_vec(),
        step,
        series: vec![
            series("confirmed", "l-confirmed", |t| t.confirmed),
            series("false positive", "l-false_positive", |t| t.false_positive),
            series("passed step-up", "l-step_up_passed", |t| t.step_up_passed),
        ],
        max: None,
        unit: "",
    };
    let precision = Data {
        kind: "lines",
        t: starts.to_vec(),
        step,
        series: vec![Series {
            label: "precision".to_owned(),
            class: "l-confirmed",
            values: all
                .buckets
                .iter()
                .map(|t| t.precision().map(|p| (p * 1_000.0).round() / 10.0))
                .collect(),
        }],
        max: Some(100),
        unit: "%",
    };
    (labels, precision)
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
    let (per_days, per) = if days <= DAILY_UP_TO {
        (1, "day")
    } else {
        (7, "week")
    };
    let [p, by_day] = feedback::measure_each(
        &app.store,
        [
            Split::even(now, days, BUCKETS),
            Split::calendar(now, days, per_days),
        ],
    )
    .await?;
    let (labels_chart, precision_chart) = charts(&by_day.all, &by_day.starts, per_days * 86_400);
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
        labels_chart,
        precision_chart,
        per,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_charts_carry_each_days_labels_and_precision_only_where_labelled() {
        let tally = |confirmed, false_positive, step_up_passed| Tally {
            confirmed,
            false_positive,
            step_up_passed,
        };
        let all = Row {
            name: "all".to_owned(),
            total: tally(4, 2, 1),
            buckets: vec![tally(3, 1, 0), tally(0, 0, 1), tally(1, 1, 0)],
        };
        let (labels, precision) = charts(&all, &[0, 86_400, 172_800], 86_400);
        assert_eq!((labels.kind, labels.step), ("stacked", 86_400));
        let values = |d: &Data, i: usize| d.series[i].values.clone();
        assert_eq!(values(&labels, 0), vec![Some(3.0), Some(0.0), Some(1.0)]);
        assert_eq!(values(&labels, 1), vec![Some(1.0), Some(0.0), Some(1.0)]);
        assert_eq!(values(&labels, 2), vec![Some(0.0), Some(1.0), Some(0.0)]);
        assert_eq!(labels.series[0].label, "confirmed");
        // 3 of 4, none labelled by an operator (a passed step-up is not
        // a label), 1 of 2.
        assert_eq!(values(&precision, 0), vec![Some(75.0), None, Some(50.0)]);
        assert_eq!((precision.max, precision.unit), (Some(100), "%"));
    }
}
