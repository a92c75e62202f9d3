//! The overview's chart: detections per hour, stacked by action, laid out
//! here as SVG rectangles (no chart library, no script): the template
//! draws them, the stylesheet colours them by class.

use std::collections::BTreeMap;

use crate::store::Buckets;

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
}
