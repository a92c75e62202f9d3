//! The overview's chart: detections per hour, stacked by action, laid out
//! here as SVG rectangles (no chart library, no script): the template
//! draws them, the stylesheet colours them by class.

use std::collections::BTreeMap;

use crate::store::{Buckets, RiskInputs};

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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    let legend = ACTIONS
        .iter()
        .filter_map(|name| totals.get(name).map(|n| (*name, class_of(name).1, *n)))
        .collect();
    Chart {
        width: WIDTH,
        height: HEIGHT,
        bars,
        labels,
        max,
        legend,
    }
}

// === a user's entity risk over time ===

/// A user's entity risk per hour: each hour's bar is the highest it was
/// in the hour, rebuilt from what the store holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RiskChart {
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// One bar per hour with risk (class `risk`), on a fixed scale of 100.
    pub(crate) bars: Vec<Bar>,
    /// A date under the first hour of each day: x and text.
    pub(crate) labels: Vec<(u32, String)>,
    /// The highest it was over the period.
    pub(crate) peak: u64,
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
