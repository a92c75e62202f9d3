//! The node's counts per minute for the controller
//! ([`vigil_fleet::NodeCounts`], `docs/dashboard.md`, Requests judged and
//! rules): requests judged by action, decisions by reason code, rules'
//! matches.
//!
//! Read from the Prometheus counters the request path already bumps
//! (`vigil_proxy_decisions_total`, `vigil_proxy_decision_reasons_total`,
//! `vigil_rules_matches_total`: atomics resolved once per generation,
//! [`crate::metrics::RequestCounters`]), once a minute, as the difference
//! from the values last sent: the request path does nothing more for it —
//! no lock, no allocation.

use std::collections::HashMap;

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use vigil_fleet::{Count, MAX_COUNTS, NodeCounts, OTHER_RULES};
use vigil_rules::{RuleAction, RuleSet};

use crate::metrics::Metrics;

/// A counter's value as read, by kind and name.
type Key = (&'static str, String);

/// The counters' values last sent, and what to read them from.
pub(super) struct Tally {
    metrics: Metrics,
    run: String,
    sent: HashMap<Key, u64>,
    /// The last minute posted: each minute of a run is posted once.
    minute: u64,
}

impl Tally {
    /// A tally reading `metrics`, sending what they counted since this run
    /// started.
    pub(super) fn new(metrics: Metrics) -> Self {
        let run: [u8; 8] = rand::random();
        Self {
            metrics,
            run: hex::encode(run),
            sent: HashMap::new(),
            minute: 0,
        }
    }

    /// What was counted since the last call, as `minute`'s counts (the
    /// minute just over); rules' actions from `rules`. `None` when nothing
    /// was counted, or `minute` is not after the last one posted (the
    /// clock stepped back): what was counted then waits for a later one.
    pub(super) fn take(&mut self, minute: u64, rules: &RuleSet) -> Option<NodeCounts> {
        if minute <= self.minute {
            return None;
        }
        let now = self.read();
        let actions: HashMap<&str, &'static str> = rules
            .rules()
            .iter()
            .map(|r| {
                let action = match r.action {
                    RuleAction::Decide(a) => a.as_str(),
                    RuleAction::Tag(_) => "tag",
                };
                (r.name.as_str(), action)
            })
            .collect();
        let mut fixed = Vec::new();
        let mut matched = Vec::new();
        for (key, value) in &now {
            let n = value.saturating_sub(self.sent.get(key).copied().unwrap_or(0));
            if n == 0 {
                continue;
            }
            let (kind, name) = key;
            let count = Count {
                kind: (*kind).to_owned(),
                name: name.clone(),
                action: None,
                n: n.min(vigil_fleet::MAX_COUNT),
            };
            if matches!(*kind, "rule" | "shadow") {
                matched.push(Count {
                    action: actions.get(name.as_str()).map(|a| (*a).to_owned()),
                    ..count
                });
            } else {
                fixed.push(count);
            }
        }
        self.sent = now;
        self.minute = minute;
        let counts = bounded(fixed, matched);
        (!counts.is_empty()).then(|| NodeCounts {
            run: self.run.clone(),
            minute,
            counts,
        })
    }

    /// Every counter's value now, by kind and name; monitored decisions
    /// (`enforced="false"`) apart from enforced ones.
    fn read(&self) -> HashMap<Key, u64> {
        let mut out = HashMap::new();
        let label = |m: &prometheus::proto::Metric, name: &str| {
            m.get_label()
                .iter()
                .find(|l| l.name() == name)
                .map(|l| l.value().to_owned())
                .unwrap_or_default()
        };
        let mut each =
            |families: Vec<MetricFamily>,
             key: &dyn Fn(&prometheus::proto::Metric) -> Option<Key>| {
                for family in families {
                    for m in family.get_metric() {
                        if let Some(k) = key(m) {
                            let v = whole(m.get_counter().value());
                            *out.entry(k).or_insert(0) += v;
                        }
                    }
                }
            };
        each(self.metrics.decisions.collect(), &|m| {
            let kind = if label(m, "enforced") == "true" {
                "action"
            } else {
                "monitored"
            };
            Some((kind, label(m, "action")))
        });
        each(self.metrics.reasons.collect(), &|m| {
            Some(("reason", label(m, "reason")))
        });
        each(self.metrics.rule_matches.collect(), &|m| {
            let kind = match label(m, "mode").as_str() {
                "enforce" => "rule",
                "shadow" => "shadow",
                _ => return None,
            };
            Some((kind, label(m, "rule")))
        });
        out
    }
}

/// An integer counter's value as collected (an `f64`, exact below 2^53:
/// 9e15 requests).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "an IntCounter's value: a whole number from 0, saturated by the cast"
)]
fn whole(v: f64) -> u64 {
    v as u64
}

/// `fixed` (actions and reasons: fixed sets, under 40) and as many of
/// `matched` (rules) as fit in [`MAX_COUNTS`], the most matched first; the
/// rules past the cap summed per kind into one [`OTHER_RULES`] entry each.
fn bounded(mut fixed: Vec<Count>, mut matched: Vec<Count>) -> Vec<Count> {
    fixed.truncate(MAX_COUNTS);
    let room = MAX_COUNTS - fixed.len();
    if matched.len() > room {
        matched.sort_by(|a, b| b.n.cmp(&a.n).then_with(|| a.name.cmp(&b.name)));
        // Two entries kept for the sums of the rest.
        let kept = room.saturating_sub(2);
        let rest = matched.split_off(kept);
        for kind in ["rule", "shadow"] {
            let n: u64 = rest.iter().filter(|c| c.kind == kind).map(|c| c.n).sum();
            if n > 0 {
                matched.push(Count {
                    kind: kind.to_owned(),
                    name: OTHER_RULES.to_owned(),
                    action: None,
                    n: n.min(vigil_fleet::MAX_COUNT),
                });
            }
        }
    }
    fixed.extend(matched);
    fixed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(kind: &str, name: &str, n: u64) -> Count {
        Count {
            kind: kind.to_owned(),
            name: name.to_owned(),
            action: None,
            n,
        }
    }

    #[test]
    fn past_the_cap_the_least_matched_rules_are_summed() {
        let fixed = vec![count("action", "allow", 10), count("reason", "new_asn", 3)];
        let matched: Vec<Count> = (0..300u64)
            .map(|i| {
                count(
                    if i % 2 == 0 { "rule" } else { "shadow" },
                    &format!("r{i}"),
                    i + 1,
                )
            })
            .collect();
        let out = bounded(fixed, matched);
        assert_eq!(out.len(), MAX_COUNTS);
        let sent: u64 = out
            .iter()
            .filter(|c| c.kind != "action" && c.kind != "reason")
            .map(|c| c.n)
            .sum();
        assert_eq!(sent, (1..=300u64).sum::<u64>(), "nothing lost, only summed");
        // The most matched is named; the least is in the sums.
        assert!(out.iter().any(|c| c.name == "r299"));
        assert!(!out.iter().any(|c| c.name == "r0"));
        let counts = NodeCounts {
            run: "0123456789abcdef".into(),
            minute: 1,
            counts: out,
        };
        assert_eq!(counts.problem(), None);
    }

    #[test]
    fn each_minute_of_a_run_is_posted_once_and_nothing_counted_is_lost() {
        let metrics = Metrics::new().unwrap();
        let rules = RuleSet::empty();
        let allow = metrics.decisions.with_label_values(&["allow", "true"]);
        let mut tally = Tally::new(metrics.clone());
        assert_eq!(tally.take(10, &rules), None, "nothing counted yet");
        allow.inc_by(3);
        let first = tally.take(11, &rules).unwrap();
        assert_eq!(first.minute, 11);
        assert_eq!(first.counts, vec![count("action", "allow", 3)]);
        allow.inc_by(2);
        // The clock stepped back, or a second turn in the same minute:
        // nothing posted, the counts wait.
        assert_eq!(tally.take(11, &rules), None);
        assert_eq!(tally.take(9, &rules), None);
        let second = tally.take(12, &rules).unwrap();
        assert_eq!(second.counts, vec![count("action", "allow", 2)]);
        assert_eq!(second.run, first.run);
    }

    #[test]
    fn under_the_cap_everything_is_named() {
        let out = bounded(
            vec![count("action", "block", 1)],
            vec![count("rule", "a", 2)],
        );
        assert_eq!(out.len(), 2);
    }
}
