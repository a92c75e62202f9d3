//! The dashboard's charts. Each is laid out here twice: as SVG rectangles
//! the template draws and the stylesheet colours by class — what a
//! browser without script shows, and what a screen reader reads, bar by
//! bar — and as the [`Data`] the dashboard's script hands to the chart
//! library (uPlot, served from the binary), which draws the same figures
//! with axes, a legend and a cursor that reads each bucket's values.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::{Buckets, RiskInputs};

/// What the dashboard's script draws a chart from: the `data-chart`
/// attribute of its figure, as JSON (HTML-escaped in the attribute like
/// every other value).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Data {
    /// `stacked` (bars, each series on the one before), `bars` (one
    /// series) or `lines`.
    pub(crate) kind: &'static str,
    /// Each bucket's start, seconds since the Unix epoch.
    pub(crate) t: Vec<u64>,
    /// Each bucket's length in seconds.
    pub(crate) step: u64,
    /// The series, bottom of the stack first.
    pub(crate) series: Vec<Series>,
    /// The value axis's top when fixed (a score's 100); from the data when
    /// `None`.
    pub(crate) max: Option<u64>,
    /// Written after each value in the legend (`%`), or empty.
    pub(crate) unit: &'static str,
}

/// One series of a [`Data`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Series {
    pub(crate) label: String,
    /// A class of the stylesheet whose `background-color` is the series'
    /// colour (`a-block`, `s-0`).
    pub(crate) class: &'static str,
    /// One per bucket of [`Data::t`]; `None`: nothing to show there.
    pub(crate) values: Vec<Option<f64>>,
}

impl Data {
    /// The JSON the template puts in `data-chart`.
    pub(crate) fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// Colour classes of series that have no meaning of their own (reasons):
/// `s-0` to `s-7` in the stylesheet, then `s-other`.
pub(crate) const PALETTE: [&str; 8] = ["s-0", "s-1", "s-2", "s-3", "s-4", "s-5", "s-6", "s-7"];

/// Counts per bucket of many names (reasons), as lines: the `top` names
/// with the most in all, each its own series, the rest summed as `other`;
/// the `count` buckets of `bucket` seconds ending with the one holding
/// `now`. Also every name's total, most first.
pub(crate) fn lines(
    buckets: &Buckets,
    now: u64,
    bucket: u64,
    count: u32,
    top: usize,
) -> (Data, Vec<(String, u64)>) {
    let bucket = bucket.max(1);
    let count = count.max(1);
    let last = now / bucket * bucket;
    let first = last.saturating_sub(bucket * u64::from(count - 1));
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for names in buckets.counts.range(first..=last).map(|(_, n)| n) {
        for (name, n) in names {
            let total = totals.entry(name.as_str()).or_insert(0);
            *total = total.saturating_add(*n);
        }
    }
    let mut ranked: Vec<(String, u64)> =
        totals.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let named = ranked.len().min(top.min(PALETTE.len()));
    let t: Vec<u64> = (0..count).map(|i| first + u64::from(i) * bucket).collect();
    let value = |start: u64, pick: &dyn Fn(&str) -> bool| -> Option<f64> {
        let n = buckets.counts.get(&start).map_or(0u64, |names| {
            names
                .iter()
                .filter(|(name, _)| pick(name))
                .fold(0u64, |s, (_, n)| s.saturating_add(*n))
        });
        #[allow(clippy::cast_precision_loss, reason = "counts far below 2^53")]
        Some(n as f64)
    };
    let mut series: Vec<Series> = ranked
        .iter()
        .take(named)
        .zip(PALETTE)
        .map(|((name, _), class)| Series {
            label: name.clone(),
            class,
            values: t.iter().map(|s| value(*s, &|n| n == name)).collect(),
        })
        .collect();
    if ranked.len() > named {
        let shown: Vec<&str> = ranked.iter().take(named).map(|(n, _)| n.as_str()).collect();
        series.push(Series {
            label: "other".to_owned(),
            class: "s-other",
            values: t
                .iter()
                .map(|s| value(*s, &|n| !shown.contains(&n)))
                .collect(),
        });
    }
    (
        Data {
            kind: "lines",
            t,
            step: bucket,
            series,
            max: None,
            unit: "",
        },
        ranked,
    )
}

/// Width of the drawing, in SVG units.
pub(crate) const WIDTH: u32 = 720;
/// Height of the bars' area.
pub(crate) const HEIGHT: u32 = 160;

/// Actions drawn with a colour of their own; others are `other`.
const ACTIONS: [&str; 5] = ["revoke", "block", "step_up", "allow", "other"];

/// One bar segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bar {
    pub(crate) x: u32,
    pub(crate) y: u32,
    pub(crate) w: u32,
    pub(crate) h: u32,
    /// A CSS class: `a-` and one of [`ACTIONS`].
    pub(crate) class: &'static str,
    /// The tooltip and accessible name: `19:00Z block: 3`.
    pub(crate) title: String,
}

/// The chart.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chart {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) bars: Vec<Bar>,
    /// Hour labels under every sixth bucket: x and text.
    pub(crate) labels: Vec<(u32, String)>,
    /// The most detections in one bucket (the scale's top).
    pub(crate) max: u64,
    /// Every action drawn, with its class and total.
    pub(crate) legend: Vec<(&'static str, &'static str, u64)>,
    /// The same, for the chart library.
    pub(crate) data: Data,
}

fn class_of(action: &str) -> (&'static str, &'static str) {
    match action {
        "revoke" => ("revoke", "a-revoke"),
        "block" => ("block", "a-block"),
        "step_up" => ("step_up", "a-step_up"),
        "allow" => ("allow", "a-allow"),
        _ => ("other", "a-other"),
    }
}

/// The chart of `buckets` for the `count` buckets of `bucket` seconds
/// ending with the one holding `now`.
pub(crate) fn chart(buckets: &Buckets, now: u64, bucket: u64, count: u32) -> Chart {
    let bucket = bucket.max(1);
    let count = count.max(1);
    let last = now / bucket * bucket;
    let first = last.saturating_sub(bucket * u64::from(count - 1));
    let mut columns: Vec<BTreeMap<&'static str, u64>> = vec![BTreeMap::new(); count as usize];
    let mut totals: BTreeMap<&'static str, u64> = BTreeMap::new();
    for (start, actions) in buckets.counts.range(first..=last) {
        let i = usize::try_from((start - first) / bucket).unwrap_or(0);
        let Some(column) = columns.get_mut(i) else {
            continue;
        };
        for (action, n) in actions {
            let (name, _) = class_of(action);
            let cell = column.entry(name).or_insert(0);
            *cell = cell.saturating_add(*n);
            let total = totals.entry(name).or_insert(0);
            *total = total.saturating_add(*n);
        }
    }
    let max = columns
        .iter()
        .map(|c| c.values().fold(0u64, |t, n| t.saturating_add(*n)))
        .max()
        .unwrap_or(0);
    let w = WIDTH / count;
    let mut bars = Vec::new();
    let mut labels = Vec::new();
    for (i, column) in columns.iter().enumerate() {
        let i = u32::try_from(i).unwrap_or(0);
        let x = i * w;
        let start = first + u64::from(i) * bucket;
        let hour = super::view::time(start);
        let hour = hour.get(11..16).unwrap_or("").to_owned();
        if i % 6 == 0 {
            labels.push((x, format!("{hour}Z")));
        }
        let mut top = HEIGHT;
        for name in ACTIONS {
            let Some(&n) = column.get(name) else { continue };
            // At least one unit tall: a single detection is visible.
            let h = u32::try_from(n.saturating_mul(u64::from(HEIGHT)) / max.max(1))
                .unwrap_or(HEIGHT)
                .clamp(1, HEIGHT);
            top = top.saturating_sub(h);
            bars.push(Bar {
                x: x + 1,
                y: top,
                w: w.saturating_sub(2).max(1),
                h,
                class: class_of(name).1,
                title: format!("{hour}Z {name}: {n}"),
            });
        }
    }
    let legend: Vec<(&'static str, &'static str, u64)> = ACTIONS
        .iter()
        .filter_map(|name| totals.get(name).map(|n| (*name, class_of(name).1, *n)))
        .collect();
    // Bottom of the stack first, as the SVG stacks them.
    let series = legend
        .iter()
        .map(|(name, class, _)| Series {
            label: (*name).to_owned(),
            class,
            #[allow(clippy::cast_precision_loss, reason = "counts far below 2^53")]
            values: columns
                .iter()
                .map(|c| Some(c.get(name).copied().unwrap_or(0) as f64))
                .collect(),
        })
        .collect();
    let data = Data {
        kind: "stacked",
        t: (0..count).map(|i| first + u64::from(i) * bucket).collect(),
        step: bucket,
        series,
        max: None,
        unit: "",
    };
    Chart {
        width: WIDTH,
        height: HEIGHT,
        bars,
        labels,
        max,
        legend,
        data,
    }
}

// === a user's entity risk over time ===

/// A user's entity risk per hour: each hour's bar is the highest it was
/// in the hour, rebuilt from what the store holds now.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RiskChart {
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// One bar per hour with risk (class `risk`), on a fixed scale of 100.
    pub(crate) bars: Vec<Bar>,
    /// A date under the first hour of each day: x and text.
    pub(crate) labels: Vec<(u32, String)>,
    /// The highest it was over the period.
    pub(crate) peak: u64,
    /// The same, for the chart library.
    pub(crate) data: Data,
}

/// Entity risk at `t` as the controller counts it: the nodes that caught
/// the user (enforced detections not marked false positive) within
/// `window` before it, at most three, times `weight`; plus risk points
/// standing at `t`; at most 100. A clear (a passed step-up) leaves out the
/// detections before it from then on.
fn entity_at(t: u64, inputs: &RiskInputs, window: u64, weight: u8) -> u64 {
    let nodes: std::collections::BTreeSet<&str> = inputs
        .detections
        .iter()
        .filter(|(at, _)| *at <= t && at.saturating_add(window) > t)
        .filter(|(at, _)| inputs.cleared_at.is_none_or(|c| t < c || *at >= c))
        .map(|(_, node)| node.as_str())
        .collect();
    let counted = u64::try_from(nodes.len().min(3)).unwrap_or(3) * u64::from(weight);
    let points = inputs
        .risk
        .filter(|(_, since, until)| *since <= t && t < *until)
        .map_or(0, |(p, _, _)| u64::from(p));
    (counted + points).min(100)
}

/// The chart of `hours` hours ending with the one holding `now`.
pub(crate) fn risk_chart(
    inputs: &RiskInputs,
    now: u64,
    window: u64,
    weight: u8,
    hours: u32,
) -> RiskChart {
    const HOUR: u64 = 3_600;
    let hours = hours.max(1);
    let first = (now / HOUR * HOUR).saturating_sub(HOUR * u64::from(hours - 1));
    let w = (WIDTH / hours).max(1);
    let mut bars = Vec::new();
    let mut labels = Vec::new();
    let mut peak = 0;
    let mut t = Vec::with_capacity(hours as usize);
    let mut values = Vec::with_capacity(hours as usize);
    for i in 0..hours {
        let start = first + u64::from(i) * HOUR;
        let end = (start + HOUR - 1).min(now);
        // The risk only rises at a detection or when points are set, and
        // falls in between: its highest in the hour is at one of those or
        // at the hour's start.
        let mut samples = vec![start, end];
        samples.extend(
            inputs
                .detections
                .iter()
                .map(|(at, _)| *at)
                .filter(|at| (start..=end).contains(at)),
        );
        if let Some((_, since, _)) = inputs.risk
            && (start..=end).contains(&since)
        {
            samples.push(since);
        }
        let value = samples
            .iter()
            .map(|t| entity_at(*t, inputs, window, weight))
            .max()
            .unwrap_or(0);
        peak = peak.max(value);
        t.push(start);
        #[allow(clippy::cast_precision_loss, reason = "at most 100")]
        values.push(Some(value as f64));
        let x = i * w;
        let when = super::view::time(start);
        if start.is_multiple_of(86_400) {
            labels.push((x, when.get(5..10).unwrap_or("").to_owned()));
        }
        if value > 0 {
            let h = u32::try_from(value * u64::from(HEIGHT) / 100)
                .unwrap_or(HEIGHT)
                .clamp(1, HEIGHT);
            bars.push(Bar {
                x,
                y: HEIGHT - h,
                w,
                h,
                class: "risk",
                title: format!("{}Z: {value}", when.get(..16).unwrap_or("")),
            });
        }
    }
    RiskChart {
        width: w * hours,
        height: HEIGHT,
        bars,
        labels,
        peak,
        data: Data {
            kind: "bars",
            t,
            step: HOUR,
            series: vec![Series {
                label: "entity risk".to_owned(),
                class: "risk",
                values,
            }],
            max: Some(100),
            unit: "",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_stack_by_action_and_scale_to_the_busiest_hour() {
        let mut b = Buckets::default();
        let now = 100 * 3_600 + 10;
        b.counts
            .entry(100 * 3_600)
            .or_default()
            .insert("block".into(), 4);
        b.counts
            .entry(100 * 3_600)
            .or_default()
            .insert("revoke".into(), 4);
        b.counts
            .entry(99 * 3_600)
            .or_default()
            .insert("weird<x>".into(), 2);
        // Outside the 24 hours: not drawn.
        b.counts
            .entry(10 * 3_600)
            .or_default()
            .insert("block".into(), 99);
        let c = chart(&b, now, 3_600, 24);
        assert_eq!(c.max, 8);
        assert_eq!(c.bars.len(), 3);
        let revoke = &c.bars[1];
        assert_eq!((revoke.class, revoke.h, revoke.y), ("a-revoke", 80, 80));
        let block = &c.bars[2];
        assert_eq!((block.class, block.h, block.y), ("a-block", 80, 0));
        assert_eq!(c.bars[0].class, "a-other");
        assert_eq!(c.bars[0].title, "03:00Z other: 2");
        assert_eq!(
            c.legend,
            vec![
                ("revoke", "a-revoke", 4),
                ("block", "a-block", 4),
                ("other", "a-other", 2)
            ]
        );
        assert_eq!(c.labels.len(), 4);
        // The chart library's data: the same counts per hour, bottom of
        // the stack first, one value per bucket.
        assert_eq!(c.data.kind, "stacked");
        assert_eq!(c.data.t.len(), 24);
        assert_eq!(c.data.t[23], 100 * 3_600);
        assert_eq!(c.data.t[0], 77 * 3_600);
        let labels: Vec<&str> = c.data.series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["revoke", "block", "other"]);
        assert_eq!(c.data.step, 3_600);
        assert_eq!(c.data.series[1].values[23], Some(4.0));
        assert_eq!(c.data.series[1].values[22], Some(0.0));
        assert_eq!(c.data.series[2].values[22], Some(2.0));
        // An action outside the engine's four is drawn as `other`: its
        // name is never shown.
        assert!(!c.data.json().contains("weird"), "{}", c.data.json());
    }

    #[test]
    fn reasons_are_lines_of_the_most_frequent_and_the_rest_as_other() {
        let mut b = Buckets::default();
        let hour = 3_600;
        let now = 50 * hour + 5;
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let n = 10 - u64::try_from(i).unwrap_or(0);
            b.counts
                .entry(50 * hour)
                .or_default()
                .insert((*name).into(), n);
        }
        b.counts.entry(49 * hour).or_default().insert("c".into(), 5);
        let (data, totals) = lines(&b, now, hour, 24, 2);
        assert_eq!(data.kind, "lines");
        assert_eq!(
            totals,
            vec![
                ("c".to_owned(), 13),
                ("a".to_owned(), 10),
                ("b".to_owned(), 9)
            ]
        );
        let labels: Vec<&str> = data.series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["c", "a", "other"]);
        assert_eq!(data.series[0].values[22], Some(5.0));
        assert_eq!(data.series[0].values[23], Some(8.0));
        assert_eq!(data.series[2].values[23], Some(9.0));
        assert_eq!(data.series[2].class, "s-other");
        // Nothing: no series, every name's total empty.
        let (empty, none) = lines(&Buckets::default(), now, hour, 24, 8);
        assert!(empty.series.is_empty() && none.is_empty());
    }

    #[test]
    fn no_detections_is_an_empty_chart() {
        let c = chart(&Buckets::default(), 0, 3_600, 24);
        assert_eq!(c.max, 0);
        assert!(c.bars.is_empty());
    }

    #[test]
    fn entity_risk_counts_nodes_in_the_window_and_points_and_a_clear() {
        let hour = 3_600;
        let now = 200 * hour + 30;
        let inputs = RiskInputs {
            // Two nodes within the window an hour ago; the same node twice
            // counts once; one long before, outside it.
            detections: vec![
                (199 * hour + 100, "a".into()),
                (199 * hour + 50, "b".into()),
                (199 * hour + 40, "a".into()),
                (150 * hour, "a".into()),
            ],
            risk: Some((7, 200 * hour, 300 * hour)),
            cleared_at: None,
        };
        let c = risk_chart(&inputs, now, hour, 30, 24);
        // Hour 199: two nodes (60); hour 200: the window still holds both
        // at its start (60) and the points are set (67).
        let titles: Vec<&str> = c.bars.iter().map(|b| b.title.as_str()).collect();
        assert_eq!(titles.len(), 2, "{titles:?}");
        assert!(titles[0].ends_with("Z: 60"), "{titles:?}");
        assert!(titles[1].ends_with("Z: 67"), "{titles:?}");
        assert_eq!(c.peak, 67);
        assert_eq!(c.bars[1].h, 67 * HEIGHT / 100);
        // A clear at 199h + 60 leaves out the two before it from then on.
        let cleared = RiskInputs {
            cleared_at: Some(199 * hour + 60),
            ..inputs
        };
        assert_eq!(entity_at(199 * hour + 100, &cleared, hour, 30), 30);
        assert_eq!(entity_at(199 * hour + 55, &cleared, hour, 30), 60);
    }
}
