//! The feedback pipeline (`docs/dashboard.md`, Feedback pipeline): what
//! operators' labels (false positive, confirmed compromise) say about the
//! detections — precision per reason and per rule over time, for the
//! dashboard's precision page and the controller's metrics — and the
//! export of labelled decisions that the offline evaluator replays
//! (`docs/evaluation.md`, Replaying labelled decisions).
//!
//! Bounds: precision is counted over the newest [`LABELLED_CAP`] labelled
//! detections of its period; rules are named up to [`RULE_CAP`] (the most
//! labelled), the rest counted together as `(other rules)`; reason codes
//! outside the engine's fixed set are counted as `(other)`. So the
//! metrics' label values are bounded whatever nodes send.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use serde::Serialize;
use vigil_engine::Reason;

use crate::api::{App, now_secs};
use crate::store::labels::{Label, Labelled};
use crate::store::{Store, StoreError};

/// Labelled detections counted at most per period.
pub const LABELLED_CAP: usize = 100_000;

/// Rules named at most; the others are counted together.
pub const RULE_CAP: usize = 50;

/// The name of the decisions no rule made (the route's policy table did).
pub const POLICY: &str = "(policy)";

/// The name the rules beyond [`RULE_CAP`] are counted under.
pub const OTHER_RULES: &str = "(other rules)";

/// The name reason codes outside [`Reason::ALL`] are counted under.
pub const OTHER_REASON: &str = "(other)";

/// The period the metrics count over: the last 30 days.
pub const METRICS_SECS: u64 = 30 * 86_400;

/// The metrics are recounted at most this often, however often
/// `/metrics` is scraped (it needs no token).
const METRICS_FRESH: Duration = Duration::from_secs(10);

/// Detections confirmed and marked false positive by operators, and
/// passed by their users' step-ups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Marked confirmed compromise.
    pub confirmed: u64,
    /// Marked false positive.
    pub false_positive: u64,
    /// No operator's label; the user passed a step-up after it.
    pub step_up_passed: u64,
}

impl Tally {
    fn add(&mut self, label: Label) {
        match label {
            Label::ConfirmedCompromise => self.confirmed += 1,
            Label::FalsePositive => self.false_positive += 1,
            Label::StepUpPassed => self.step_up_passed += 1,
        }
    }

    fn add_all(&mut self, other: &Tally) {
        self.confirmed += other.confirmed;
        self.false_positive += other.false_positive;
        self.step_up_passed += other.step_up_passed;
    }

    /// Detections an operator labelled.
    pub fn labelled(&self) -> u64 {
        self.confirmed + self.false_positive
    }

    /// Confirmed of those an operator labelled, 0 to 1; `None` with no
    /// operator's label. Passed step-ups are not in it: they are the
    /// user's word, not an operator's finding.
    pub fn precision(&self) -> Option<f64> {
        let n = self.labelled();
        #[allow(clippy::cast_precision_loss)]
        (n > 0).then(|| self.confirmed as f64 / n as f64)
    }
}

/// One reason's or rule's labels: in all, and per bucket of time.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The reason code or rule name.
    pub name: String,
    /// Over the whole period.
    pub total: Tally,
    /// Per bucket, oldest first.
    pub buckets: Vec<Tally>,
}

/// Precision over a period, per reason and per rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Precision {
    /// The buckets' starts (seconds since the Unix epoch), oldest first.
    pub starts: Vec<u64>,
    /// Every labelled detection, and per bucket.
    pub all: Row,
    /// Per reason code that has a label, in the engine's order, then
    /// [`OTHER_REASON`].
    pub reasons: Vec<Row>,
    /// Per rule, the most labelled first (ties by name), at most
    /// [`RULE_CAP`] named, then [`OTHER_RULES`].
    pub rules: Vec<Row>,
    /// Labelled detections beyond [`LABELLED_CAP`] were left out.
    pub capped: bool,
}

/// The stable code of `code`, when the engine knows it; [`OTHER_REASON`]
/// otherwise.
fn reason_name(code: &str) -> &'static str {
    Reason::ALL
        .iter()
        .find(|r| r.code() == code)
        .map_or(OTHER_REASON, |r| r.code())
}

/// Counts `rows` (decided at or after `since`) in `buckets` buckets of
/// `bucket_secs` from `since`; one decided later than the last bucket
/// counts in it.
pub fn precision(
    rows: &[Labelled],
    since: u64,
    bucket_secs: u64,
    buckets: usize,
    capped: bool,
) -> Precision {
    let buckets = buckets.max(1);
    let bucket_secs = bucket_secs.max(1);
    let empty = |name: &str| Row {
        name: name.to_owned(),
        total: Tally::default(),
        buckets: vec![Tally::default(); buckets],
    };
    let mut all = empty("all");
    let mut reasons: HashMap<&'static str, Row> = HashMap::new();
    let mut rules: HashMap<String, Row> = HashMap::new();
    for l in rows {
        let b = usize::try_from(l.at.saturating_sub(since) / bucket_secs)
            .unwrap_or(usize::MAX)
            .min(buckets - 1);
        let count = |row: &mut Row| {
            row.total.add(l.label);
            row.buckets[b].add(l.label);
        };
        count(&mut all);
        // A reason counts once per detection, whatever its points.
        let mut seen: Vec<&'static str> = Vec::new();
        for (code, _) in &l.reasons {
            let name = reason_name(code);
            if !seen.contains(&name) {
                seen.push(name);
                count(reasons.entry(name).or_insert_with(|| empty(name)));
            }
        }
        let rule = l.rule.as_deref().unwrap_or(POLICY);
        count(rules.entry(rule.to_owned()).or_insert_with(|| empty(rule)));
    }
    let mut reason_rows: Vec<Row> = Reason::ALL
        .iter()
        .filter_map(|r| reasons.remove(r.code()))
        .collect();
    reason_rows.extend(reasons.remove(OTHER_REASON));
    let mut rule_rows: Vec<Row> = rules.into_values().collect();
    rule_rows.sort_by(|a, b| {
        (b.total.labelled() + b.total.step_up_passed)
            .cmp(&(a.total.labelled() + a.total.step_up_passed))
            .then_with(|| a.name.cmp(&b.name))
    });
    if rule_rows.len() > RULE_CAP {
        let mut other = empty(OTHER_RULES);
        for row in rule_rows.drain(RULE_CAP..) {
            other.total.add_all(&row.total);
            for (o, t) in other.buckets.iter_mut().zip(&row.buckets) {
                o.add_all(t);
            }
        }
        rule_rows.push(other);
    }
    let step = u64::try_from(buckets).unwrap_or(u64::MAX);
    Precision {
        starts: (0..step).map(|i| since + i * bucket_secs).collect(),
        all,
        reasons: reason_rows,
        rules: rule_rows,
        capped,
    }
}

/// Precision over the `days` days before `now`, in `buckets` buckets.
pub async fn measure(
    store: &Store,
    now: u64,
    days: u64,
    buckets: usize,
) -> Result<Precision, StoreError> {
    let [p] = measure_each(store, [Split::even(now, days, buckets)]).await?;
    Ok(p)
}

/// One way to count a period: from `since`, `buckets` buckets of
/// `bucket_secs` each (a detection decided after the last counts in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub since: u64,
    pub bucket_secs: u64,
    pub buckets: usize,
}

impl Split {
    /// The `days` days before `now` in `buckets` equal parts.
    pub fn even(now: u64, days: u64, buckets: usize) -> Self {
        let period = days.max(1) * 86_400;
        Self {
            since: now.saturating_sub(period),
            bucket_secs: period.div_ceil(u64::try_from(buckets.max(1)).unwrap_or(1)),
            buckets: buckets.max(1),
        }
    }

    /// Whole UTC days (`per` = 1) or weeks of days (`per` = 7), the last
    /// ending with the UTC day of `now`: the last `days` days, today
    /// included (in weeks, `days` rounded up to whole weeks).
    pub fn calendar(now: u64, days: u64, per: u64) -> Self {
        const DAY: u64 = 86_400;
        let bucket_secs = per.max(1) * DAY;
        let buckets = days.max(1).div_ceil(per.max(1));
        let last = now / DAY * DAY - (per.max(1) - 1) * DAY;
        Self {
            since: last.saturating_sub((buckets - 1) * bucket_secs),
            bucket_secs,
            buckets: usize::try_from(buckets).unwrap_or(1),
        }
    }
}

/// Precision counted once for each of `splits` (the dashboard's table by
/// quarter and its chart by day): the labelled detections are read once,
/// from the earliest start, and each split counts those from its own.
pub async fn measure_each<const N: usize>(
    store: &Store,
    splits: [Split; N],
) -> Result<[Precision; N], StoreError> {
    let since = splits.iter().map(|s| s.since).min().unwrap_or(0);
    // Newest first: each split's rows are a prefix.
    let (rows, capped) = store.labelled_recent(since, LABELLED_CAP).await?;
    Ok(splits.map(|s| {
        let within = rows.partition_point(|l| l.at >= s.since);
        precision(&rows[..within], s.since, s.bucket_secs, s.buckets, capped)
    }))
}

/// Recounts `vigil_controller_labelled_detections` over the last
/// [`METRICS_SECS`], unless it was recounted within the last ten seconds.
/// A store error leaves the last count and is logged.
pub async fn refresh_metrics(app: &App) {
    let mut last = app.metrics.labels_counted.lock().await;
    if last.is_some_and(|t| t.elapsed() < METRICS_FRESH) {
        return;
    }
    match measure(&app.store, now_secs(), METRICS_SECS / 86_400, 1).await {
        Ok(p) => {
            let gauge = &app.metrics.labelled;
            gauge.reset();
            let set = |by: &str, row: &Row| {
                for (label, n) in [
                    (Label::ConfirmedCompromise, row.total.confirmed),
                    (Label::FalsePositive, row.total.false_positive),
                    (Label::StepUpPassed, row.total.step_up_passed),
                ] {
                    gauge
                        .with_label_values(&[by, row.name.as_str(), label.as_str()])
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
            };
            set("all", &p.all);
            for row in &p.reasons {
                set("reason", row);
            }
            for row in &p.rules {
                set("rule", row);
            }
            app.metrics.labels_capped.set(i64::from(u8::from(p.capped)));
            *last = Some(Instant::now());
        }
        Err(e) => tracing::warn!(error = %e, "labelled detections not recounted for the metrics"),
    }
}

// === export ===

/// The export format's version (`"vigil_labels"` in its first line).
pub const EXPORT_VERSION: u32 = 1;

/// Labelled detections read per page of the store while exporting.
const EXPORT_PAGE: usize = 1_000;

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exported {
    /// Labelled decisions written.
    pub decisions: u64,
    /// Every labelled decision of the period was written (`false`: the
    /// `max` was reached first).
    pub complete: bool,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The output could not be written.
    #[error("write: {0}")]
    Write(#[from] std::io::Error),
    /// A line could not be encoded.
    #[error("encode: {0}")]
    Encode(#[from] serde_json::Error),
}

#[derive(Serialize)]
struct Header {
    vigil_labels: u32,
    since: u64,
    until: u64,
    exported_at: u64,
}

#[derive(Serialize)]
struct Line<'a> {
    reference: &'a str,
    node: &'a str,
    at: u64,
    route: &'a str,
    rule: Option<&'a str>,
    action: &'a str,
    enforced: bool,
    score: u8,
    reasons: &'a [(String, u8)],
    label: &'static str,
    labelled_at: u64,
}

#[derive(Serialize)]
struct End {
    end: EndFields,
}

#[derive(Serialize)]
struct EndFields {
    decisions: u64,
    complete: bool,
}

/// Writes the labelled decisions decided in `since..until` to `out`, at
/// most `max`, as JSON Lines (`docs/evaluation.md`, The labelled-decision
/// format): a header line, one line per decision oldest first, and an end
/// line with the count — a file without its end line was cut short. Reads
/// the store a page at a time: memory stays bounded whatever the period.
/// No session or user key is written.
pub async fn export(
    store: &Store,
    since: u64,
    until: u64,
    max: u64,
    exported_at: u64,
    out: &mut impl Write,
) -> Result<Exported, ExportError> {
    serde_json::to_writer(
        &mut *out,
        &Header {
            vigil_labels: EXPORT_VERSION,
            since,
            until,
            exported_at,
        },
    )?;
    out.write_all(b"\n")?;
    let mut written = 0u64;
    let mut cursor = None;
    let mut complete = true;
    'pages: loop {
        let (page, next) = store
            .labelled_page(since, until, cursor.as_ref(), EXPORT_PAGE)
            .await?;
        for l in &page {
            if written == max {
                complete = false;
                break 'pages;
            }
            serde_json::to_writer(
                &mut *out,
                &Line {
                    reference: &l.reference,
                    node: &l.node,
                    at: l.at,
                    route: &l.route,
                    rule: l.rule.as_deref(),
                    action: &l.action,
                    enforced: l.enforced,
                    score: l.score,
                    reasons: &l.reasons,
                    label: l.label.as_str(),
                    labelled_at: l.labelled_at,
                },
            )?;
            out.write_all(b"\n")?;
            written += 1;
        }
        if page.len() < EXPORT_PAGE {
            break;
        }
        cursor = next;
    }
    serde_json::to_writer(
        &mut *out,
        &End {
            end: EndFields {
                decisions: written,
                complete,
            },
        },
    )?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(Exported {
        decisions: written,
        complete,
    })
}

/// A time on the command line: seconds since the Unix epoch, or a UTC
/// date `YYYY-MM-DD` (its midnight).
pub fn parse_time(text: &str) -> Result<u64, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map_err(|_| format!("{text:?}: too large a time"));
    }
    let bad = || format!("{text:?}: expected seconds since the Unix epoch or a date YYYY-MM-DD");
    let mut parts = text.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let y: i64 = y.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    let d: u32 = d.parse().map_err(|_| bad())?;
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d == 0 || d > days_in[(m - 1) as usize] || y < 1970 {
        return Err(bad());
    }
    // Howard Hinnant's days_from_civil.
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * i64::from(m) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(at: u64, rule: Option<&str>, reasons: &[&str], label: Label) -> Labelled {
        Labelled {
            node: "a".to_owned(),
            reference: format!("r{at}"),
            at,
            route: "app".to_owned(),
            rule: rule.map(str::to_owned),
            action: "block".to_owned(),
            enforced: true,
            score: 80,
            reasons: reasons.iter().map(|c| ((*c).to_owned(), 40)).collect(),
            label,
            labelled_at: at + 1,
        }
    }

    #[test]
    fn calendar_splits_are_whole_utc_days_or_weeks_ending_with_today() {
        let day = 86_400;
        let now = 20_000 * day + 15 * 3_600;
        let d = Split::calendar(now, 28, 1);
        assert_eq!((d.since, d.bucket_secs, d.buckets), (19_973 * day, day, 28));
        // Today is the last bucket; yesterday the one before.
        assert_eq!(d.since + 27 * day, 20_000 * day);
        let w = Split::calendar(now, 365, 7);
        assert_eq!((w.bucket_secs, w.buckets), (7 * day, 53));
        // The last week ends with today.
        assert_eq!(w.since + 53 * 7 * day, 20_001 * day);
        let one = Split::calendar(now, 1, 1);
        assert_eq!((one.since, one.buckets), (20_000 * day, 1));
        // A detection is counted in its day.
        let rows = [
            row(20_000 * day + 10, None, &[], Label::FalsePositive),
            row(19_999 * day + 10, None, &[], Label::ConfirmedCompromise),
            row(19_999 * day + 20, None, &[], Label::ConfirmedCompromise),
        ];
        let p = precision(&rows, d.since, d.bucket_secs, d.buckets, false);
        assert_eq!(p.all.buckets[27].false_positive, 1);
        assert_eq!(p.all.buckets[26].confirmed, 2);
        assert_eq!(p.starts[26], 19_999 * day);
    }

    #[test]
    fn precision_counts_each_reason_once_per_detection_and_buckets_by_time() {
        let rows = [
            row(
                100,
                None,
                &["device_changed", "device_changed"],
                Label::ConfirmedCompromise,
            ),
            row(
                150,
                Some("r1"),
                &["country_changed", "no_such_reason"],
                Label::FalsePositive,
            ),
            row(
                250,
                Some("r1"),
                &["country_changed", "device_changed"],
                Label::ConfirmedCompromise,
            ),
            // After the last bucket's end: counted in it.
            row(900, None, &["country_changed"], Label::FalsePositive),
        ];
        let p = precision(&rows, 100, 100, 2, false);
        assert_eq!(p.starts, vec![100, 200]);
        assert_eq!(
            p.all.total,
            Tally {
                confirmed: 2,
                false_positive: 2,
                step_up_passed: 0,
            }
        );
        let names: Vec<&str> = p.reasons.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["device_changed", "country_changed", OTHER_REASON]);
        assert_eq!(
            p.reasons[0].total,
            Tally {
                confirmed: 2,
                ..Tally::default()
            }
        );
        assert_eq!(
            p.reasons[1].buckets,
            vec![
                Tally {
                    false_positive: 1,
                    ..Tally::default()
                },
                Tally {
                    confirmed: 1,
                    false_positive: 1,
                    ..Tally::default()
                }
            ]
        );
        assert_eq!(p.reasons[1].total.precision(), Some(1.0 / 3.0));
        let rules: Vec<&str> = p.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(rules, [POLICY, "r1"]);
    }

    #[test]
    fn rules_beyond_the_cap_are_counted_together() {
        let rows: Vec<Labelled> = (0..RULE_CAP as u64 + 5)
            .map(|i| {
                let name = format!("rule-{i:03}");
                row(i, Some(&name), &["ip_changed"], Label::FalsePositive)
            })
            .chain([row(1, Some("rule-040"), &[], Label::ConfirmedCompromise)])
            .collect();
        let p = precision(&rows, 0, 1_000, 1, false);
        assert_eq!(p.rules.len(), RULE_CAP + 1);
        assert_eq!(p.rules[0].name, "rule-040");
        let other = p.rules.last().unwrap();
        assert_eq!(other.name, OTHER_RULES);
        assert_eq!(other.total.false_positive, 5);
    }

    #[test]
    fn times_are_seconds_or_utc_dates() {
        assert_eq!(parse_time("0"), Ok(0));
        assert_eq!(parse_time("1764720000"), Ok(1_764_720_000));
        assert_eq!(parse_time("1970-01-01"), Ok(0));
        assert_eq!(parse_time("2026-12-03"), Ok(1_796_256_000));
        assert_eq!(parse_time("2024-02-29"), Ok(1_709_164_800));
        for bad in [
            "",
            "2026-13-01",
            "2025-02-29",
            "2026-1-01",
            "yesterday",
            "-5",
            "2026-12-03T00",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
