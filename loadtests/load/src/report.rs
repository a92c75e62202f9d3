//! The report of a run: throughput, latency percentiles, errors by kind,
//! and per scenario class the detection figures; as text or JSON (and HTML,
//! [`crate::html`]).
//!
//! Per class, over the sessions the run played (a session played in two
//! laps counts twice):
//! - attack classes: **caught** — the thief got at least one refusal
//!   (step-up, block, revoke, session ended); **blocked** — at least one
//!   hard refusal; **requests until detection** — the thief's requests up
//!   to and including the first refusal (mean, median, p95 over caught
//!   sessions); **owner blocked after the replay** — the owner got a hard
//!   refusal after the thief's first request (the rotating binding's catch
//!   when the thief came first);
//! - legitimate classes: **disturbed** — the owner got at least one
//!   refusal; **blocked** — at least one hard refusal.
//!
//! Sessions with an error are kept out of the detection figures when the
//! error left them unjudged (no request of the actor in question answered).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use vigil_eval::scenario::{Label, Scenario};

use crate::plan::Plan;
use crate::stats::{SessionTally, Tally};

/// Latency figures, µs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    /// Mean.
    pub mean: f64,
    /// Percentiles.
    pub p50: u64,
    /// 90th.
    pub p90: u64,
    /// 99th.
    pub p99: u64,
    /// 99.9th.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

/// One class's detection figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassRow {
    /// The class.
    pub class: Scenario,
    /// `legit` or `attack`.
    pub label: Label,
    /// Sessions played.
    pub sessions: u64,
    /// Requests sent in them.
    pub requests: u64,
    /// Attack: sessions whose thief was refused at least once.
    pub caught: u64,
    /// Legit: sessions whose owner was refused at least once.
    pub disturbed: u64,
    /// Sessions with a hard refusal (block, revoke, ended) of the actor that matters.
    pub blocked: u64,
    /// caught / sessions (attack), disturbed / sessions (legit).
    pub rate: f64,
    /// Attack: thief requests until the first refusal, over caught sessions.
    pub until_detection: Option<Summary>,
    /// Attack: thief requests served in all.
    pub attacker_served: u64,
    /// Attack: sessions whose owner was hard-refused after the replay
    /// began (with the rotating binding, the catch of a thief who came
    /// first lands on the owner's return).
    pub owner_blocked_after_replay: u64,
}

/// Mean, median, p95 (nearest rank).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub median: u32,
    /// 95th percentile.
    pub p95: u32,
}

/// One point of the latency-over-time plot.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TimelinePoint {
    /// Seconds after the start (interval start).
    pub t: f64,
    /// Requests completed per second in the interval.
    pub rps: f64,
    /// Median, µs.
    pub p50: u64,
    /// 99th percentile, µs.
    pub p99: u64,
    /// Largest, µs.
    pub max: u64,
    /// Errors.
    pub errors: u64,
}

/// The whole report of one target.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// Target name.
    pub target: String,
    /// What load was offered (`rate 5000/s`, `concurrency 64`).
    pub load: String,
    /// Protocol and transport (`HTTP/1.1 over TLS`).
    pub transport: String,
    /// Seconds from the first send to the last completion.
    pub elapsed_secs: f64,
    /// Requests completed.
    pub requests: u64,
    /// Answered by the app.
    pub served: u64,
    /// Refused by Vigil, by kind.
    pub refusals: BTreeMap<String, u64>,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Errors / requests.
    pub error_rate: f64,
    /// Completed requests per second.
    pub throughput: f64,
    /// Latency, µs (from the intended send time in rate mode).
    pub latency: Latency,
    /// (percentile, µs) points of the latency distribution.
    pub percentiles: Vec<(f64, u64)>,
    /// Open loop: how late the generator itself sent requests after their
    /// intended times, µs (the floor under `latency`); `None` in a closed
    /// loop.
    pub sent_late: Option<Latency>,
    /// Latency over time.
    pub timeline: Vec<TimelinePoint>,
    /// Per class.
    pub classes: Vec<ClassRow>,
    /// Attack sessions caught / attack sessions.
    pub detect: Option<f64>,
    /// Legit sessions disturbed / legit sessions.
    pub disturbed: Option<f64>,
    /// Legit sessions with a hard refusal / legit sessions.
    pub legit_blocked: Option<f64>,
    /// CPU µs per request of the target's process, when a pid was given.
    pub cpu_us_per_request: Option<f64>,
    /// Connections opened (TCP, and TLS handshakes over TLS).
    pub connections: u64,
    /// Of those, TLS handshakes that resumed an earlier session.
    pub tls_resumed: u64,
}

// === impl Latency ===

impl Latency {
    /// The figures of `h`, µs; all zero when it is empty.
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self {
                mean: 0.0,
                p50: 0,
                p90: 0,
                p99: 0,
                p999: 0,
                max: 0,
            };
        }
        Self {
            mean: h.mean(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

// === impl Report ===

impl Report {
    /// Builds the report of a tally.
    pub fn new(
        target: &str,
        load: String,
        transport: String,
        plan: &Plan,
        tally: &Tally,
        elapsed: Duration,
    ) -> Self {
        let h = &tally.latency;
        let latency = Latency::of(h);
        let percentiles = if h.is_empty() {
            Vec::new()
        } else {
            // 0, 50, 75, 87.5, … up to 99.9999: the classic HDR plot.
            let mut v = Vec::new();
            let mut p = 0.0_f64;
            for _ in 0..40 {
                v.push((p * 100.0, h.value_at_quantile(p)));
                p = 1.0 - (1.0 - p) * 0.7;
                if p > 0.999_999 {
                    break;
                }
            }
            v.push((100.0, h.max()));
            v
        };
        let sent_late = (!tally.sent_late.is_empty()).then(|| Latency::of(&tally.sent_late));
        let width = tally.interval.as_secs_f64();
        let timeline = tally
            .timeline
            .iter()
            .enumerate()
            .map(|(i, it)| {
                let l = &it.latency;
                let e = l.is_empty();
                TimelinePoint {
                    t: i as f64 * width,
                    rps: l.len() as f64 / width,
                    p50: if e { 0 } else { l.value_at_quantile(0.5) },
                    p99: if e { 0 } else { l.value_at_quantile(0.99) },
                    max: if e { 0 } else { l.max() },
                    errors: it.errors,
                }
            })
            .collect();
        let classes = class_rows(plan, tally);
        let ratio = |label: Label, f: fn(&ClassRow) -> u64| {
            let rows = classes.iter().filter(|r| r.label == label);
            let (n, d) = rows.fold((0, 0), |(n, d), r| (n + f(r), d + r.sessions));
            (d > 0).then(|| n as f64 / d as f64)
        };
        let errors_total = tally.error_count();
        let secs = elapsed.as_secs_f64().max(1e-9);
        Self {
            target: target.to_owned(),
            load,
            transport,
            elapsed_secs: elapsed.as_secs_f64(),
            requests: tally.requests,
            served: tally.served,
            refusals: tally
                .refusals
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), *v))
                .collect(),
            errors: tally.errors.clone(),
            error_rate: if tally.requests == 0 {
                0.0
            } else {
                errors_total as f64 / tally.requests as f64
            },
            throughput: tally.requests as f64 / secs,
            latency,
            percentiles,
            sent_late,
            timeline,
            detect: ratio(Label::Attack, |r| r.caught),
            disturbed: ratio(Label::Legit, |r| r.disturbed),
            legit_blocked: ratio(Label::Legit, |r| r.blocked),
            classes,
            cpu_us_per_request: None,
            connections: 0,
            tls_resumed: 0,
        }
    }

    /// The report as a plain-text table.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let l = &self.latency;
        let _ = writeln!(
            o,
            "target {}: {}, {}",
            self.target, self.load, self.transport
        );
        let _ = writeln!(
            o,
            "  {} requests in {:.1} s: {:.0} req/s; {} served, {} refused, {} errors ({:.3}%)",
            self.requests,
            self.elapsed_secs,
            self.throughput,
            self.served,
            self.refusals.values().sum::<u64>(),
            self.errors.values().sum::<u64>(),
            self.error_rate * 100.0
        );
        let _ = writeln!(
            o,
            "  latency: mean {}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            fmt_us(l.mean),
            fmt_us(l.p50 as f64),
            fmt_us(l.p90 as f64),
            fmt_us(l.p99 as f64),
            fmt_us(l.p999 as f64),
            fmt_us(l.max as f64)
        );
        if let Some(late) = &self.sent_late {
            let _ = writeln!(
                o,
                "  sent late (the generator's own share of the latency): p50 {}  p99 {}  max {}",
                fmt_us(late.p50 as f64),
                fmt_us(late.p99 as f64),
                fmt_us(late.max as f64)
            );
        }
        if let Some(cpu) = self.cpu_us_per_request {
            let _ = writeln!(o, "  target process CPU: {cpu:.1} µs/request");
        }
        if self.connections > 0 {
            let _ = writeln!(
                o,
                "  connections: {} opened, {} TLS resumed",
                self.connections, self.tls_resumed
            );
        }
        if !self.refusals.is_empty() {
            let r: Vec<_> = self
                .refusals
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(o, "  refusals: {}", r.join(", "));
        }
        if !self.errors.is_empty() {
            let r: Vec<_> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(o, "  errors: {}", r.join(", "));
        }
        if !self.classes.is_empty() {
            let _ = writeln!(
                o,
                "  {:<46} {:>8} {:>9} {:>8} {:>8} {:>8}  until detection (mean/median/p95)",
                "class", "sessions", "requests", "rate", "caught/", "blocked"
            );
            let _ = writeln!(
                o,
                "  {:<46} {:>8} {:>9} {:>8} {:>8}",
                "", "", "", "", "disturbed"
            );
            for r in &self.classes {
                let n = match r.label {
                    Label::Attack => r.caught,
                    Label::Legit => r.disturbed,
                };
                let until = r
                    .until_detection
                    .as_ref()
                    .map(|s| format!("{:.2} / {} / {}", s.mean, s.median, s.p95))
                    .unwrap_or_default();
                let _ = writeln!(
                    o,
                    "  {:<46} {:>8} {:>9} {:>7.1}% {:>8} {:>8}  {}",
                    format!("{} ({})", r.class.as_str(), label_str(r.label)),
                    r.sessions,
                    r.requests,
                    r.rate * 100.0,
                    n,
                    r.blocked,
                    until
                );
            }
            let pct = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.2}%", v * 100.0));
            let _ = writeln!(
                o,
                "  hijacks caught {}   legitimate sessions disturbed {} (blocked {})",
                pct(self.detect),
                pct(self.disturbed),
                pct(self.legit_blocked)
            );
        }
        o
    }
}

fn label_str(l: Label) -> &'static str {
    match l {
        Label::Legit => "legit",
        Label::Attack => "attack",
    }
}

/// µs as the most readable unit.
pub fn fmt_us(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.2}s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{us:.0}µs")
    }
}

fn class_rows(plan: &Plan, tally: &Tally) -> Vec<ClassRow> {
    let mut by: BTreeMap<Scenario, Vec<&SessionTally>> = BTreeMap::new();
    for ((_, session), s) in &tally.sessions {
        if let Some(info) = plan
            .sessions
            .get(usize::try_from(*session).unwrap_or(usize::MAX))
        {
            by.entry(info.scenario).or_default().push(s);
        }
    }
    by.into_iter()
        .map(|(class, list)| {
            let label = class.label();
            // Judged: the actor that matters got at least one answer.
            let judged: Vec<&&SessionTally> = list
                .iter()
                .filter(|s| match label {
                    Label::Attack => s.attacker_requests > s.errors.min(s.attacker_requests),
                    Label::Legit => s.owner_requests > s.errors.min(s.owner_requests),
                })
                .collect();
            let sessions = judged.len() as u64;
            let requests = list
                .iter()
                .map(|s| u64::from(s.owner_requests + s.attacker_requests))
                .sum();
            let caught = judged.iter().filter(|s| s.attacker_refused > 0).count() as u64;
            let disturbed = judged
                .iter()
                .filter(|s| s.owner_step_ups + s.owner_blocks > 0)
                .count() as u64;
            let blocked = judged
                .iter()
                .filter(|s| match label {
                    Label::Attack => s.attacker_blocked > 0,
                    Label::Legit => s.owner_blocks > 0,
                })
                .count() as u64;
            let mut until: Vec<u32> = judged.iter().filter_map(|s| s.first_refusal).collect();
            until.sort_unstable();
            let until_detection = (label == Label::Attack && !until.is_empty()).then(|| {
                let rank = |pct: usize| {
                    let i = (pct * until.len()).div_ceil(100).clamp(1, until.len()) - 1;
                    until.get(i).copied().unwrap_or(0)
                };
                Summary {
                    mean: until.iter().map(|v| f64::from(*v)).sum::<f64>() / until.len() as f64,
                    median: rank(50),
                    p95: rank(95),
                }
            });
            let n = match label {
                Label::Attack => caught,
                Label::Legit => disturbed,
            };
            ClassRow {
                class,
                label,
                sessions,
                requests,
                caught: if label == Label::Attack { caught } else { 0 },
                disturbed: if label == Label::Legit { disturbed } else { 0 },
                blocked,
                rate: if sessions == 0 {
                    0.0
                } else {
                    n as f64 / sessions as f64
                },
                until_detection,
                owner_blocked_after_replay: if label == Label::Attack {
                    judged
                        .iter()
                        .filter(|s| s.owner_blocks_after_replay > 0)
                        .count() as u64
                } else {
                    0
                },
                attacker_served: judged
                    .iter()
                    .map(|s| {
                        u64::from(
                            s.attacker_requests
                                - s.attacker_refused
                                - s.errors.min(s.attacker_requests - s.attacker_refused),
                        )
                    })
                    .sum(),
            }
        })
        .collect()
}
