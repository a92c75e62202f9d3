//! What one worker records during a run, and how workers' records merge.
//!
//! Each worker thread keeps its own [`Tally`] (no locks on the hot path);
//! the run merges them at the end. Latency histograms are HDR histograms in
//! microseconds, 1 µs to 60 s at three significant digits; a value beyond
//! is recorded as 60 s. The timeline keeps a coarser histogram (two
//! digits) per interval for the latency-over-time plot.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use hdrhistogram::Histogram;
use vigil_eval::scenario::Actor;

use crate::outcome::{Outcome, Refusal};

/// Highest latency recorded exactly, in microseconds (60 s).
pub const MAX_MICROS: u64 = 60_000_000;

/// One interval of the timeline.
#[derive(Debug, Clone)]
pub struct Interval {
    /// Latency of the requests that completed in it, µs.
    pub latency: Histogram<u64>,
    /// Errors among them.
    pub errors: u64,
}

/// One session's course in a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionTally {
    /// Requests of the owner (logins included).
    pub owner_requests: u32,
    /// Owner requests Vigil stepped up.
    pub owner_step_ups: u32,
    /// Owner requests Vigil blocked, revoked or found ended.
    pub owner_blocks: u32,
    /// Of those, the ones after the thief's first request: with the
    /// rotating binding, a thief who came first is caught on the owner's
    /// return (docs/bound-sessions.md).
    pub owner_blocks_after_replay: u32,
    /// Requests of the thief.
    pub attacker_requests: u32,
    /// Thief requests refused in any way.
    pub attacker_refused: u32,
    /// Thief requests blocked, revoked or found ended.
    pub attacker_blocked: u32,
    /// 1-based index among the thief's requests of the first refusal.
    pub first_refusal: Option<u32>,
    /// Requests that ended in an error (not judged).
    pub errors: u32,
}

/// A worker's records.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Latency of every completed request, µs from its intended send time.
    pub latency: Histogram<u64>,
    /// Open loop only: how late the generator itself sent each request,
    /// µs from its intended send time (or from the end of the loop's last
    /// wait for an in-flight slot, a wait the target caused, when later)
    /// to the moment the request's own task began, before it waits for the
    /// session's previous request or a connection (the target's). The
    /// floor under [`Tally::latency`]: what the generator cannot tell apart.
    pub sent_late: Histogram<u64>,
    /// Per interval of [`Tally::interval`], by completion time.
    pub timeline: Vec<Interval>,
    /// Width of a timeline interval.
    pub interval: Duration,
    /// Requests completed (any outcome).
    pub requests: u64,
    /// Requests the app answered.
    pub served: u64,
    /// Refusals by kind.
    pub refusals: BTreeMap<Refusal, u64>,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Sessions, by `(round, session index)`.
    pub sessions: HashMap<(u32, u32), SessionTally>,
}

/// A histogram of the run's layout; creation cannot fail for these
/// constant bounds, the fallback only satisfies the type.
pub fn histogram(digits: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, digits)
        .unwrap_or_else(|_| Histogram::new(digits.min(5)).unwrap_or_else(|_| empty_histogram()))
}

/// `d` in whole microseconds, at most [`MAX_MICROS`].
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .min(MAX_MICROS)
}

fn empty_histogram() -> Histogram<u64> {
    // `new(0)` is always valid in hdrhistogram (0..=5 digits).
    #[allow(clippy::unwrap_used, reason = "0 significant digits is always valid")]
    Histogram::new(0).unwrap()
}

// === impl Tally ===

impl Tally {
    /// An empty tally with a timeline of `interval`-wide steps.
    pub fn new(interval: Duration) -> Self {
        Self {
            latency: histogram(3),
            sent_late: histogram(3),
            timeline: Vec::new(),
            interval: interval.max(Duration::from_millis(10)),
            requests: 0,
            served: 0,
            refusals: BTreeMap::new(),
            errors: BTreeMap::new(),
            sessions: HashMap::new(),
        }
    }

    /// Records one completed request: its latency from the intended send
    /// time, when it completed (after the start), who sent it and what it
    /// came to.
    pub fn record(
        &mut self,
        latency: Duration,
        completed: Duration,
        session: (u32, u32),
        actor: Actor,
        outcome: &Outcome,
    ) {
        let micros = micros(latency).max(1);
        self.latency.saturating_record(micros);
        let slot = usize::try_from(completed.as_nanos() / self.interval.as_nanos().max(1))
            .unwrap_or(usize::MAX)
            .min(100_000);
        if self.timeline.len() <= slot {
            self.timeline.resize_with(slot + 1, || Interval {
                latency: histogram(2),
                errors: 0,
            });
        }
        if let Some(i) = self.timeline.get_mut(slot) {
            i.latency.saturating_record(micros);
            i.errors += u64::from(matches!(outcome, Outcome::Error(_)));
        }
        self.requests += 1;
        let s = self.sessions.entry(session).or_default();
        match actor {
            Actor::Owner => s.owner_requests += 1,
            Actor::Attacker => s.attacker_requests += 1,
        }
        match outcome {
            Outcome::Served => self.served += 1,
            Outcome::Refused(r) => {
                *self.refusals.entry(*r).or_default() += 1;
                let hard = *r != Refusal::StepUp;
                match actor {
                    Actor::Owner if hard => {
                        s.owner_blocks += 1;
                        s.owner_blocks_after_replay += u32::from(s.attacker_requests > 0);
                    }
                    Actor::Owner => s.owner_step_ups += 1,
                    Actor::Attacker => {
                        s.attacker_refused += 1;
                        s.attacker_blocked += u32::from(hard);
                        if s.first_refusal.is_none() {
                            s.first_refusal = Some(s.attacker_requests);
                        }
                    }
                }
            }
            Outcome::Error(kind) => {
                s.errors += 1;
                *self.errors.entry(kind.clone()).or_default() += 1;
            }
        }
    }

    /// Records how late the generator sent a request (open loop; see
    /// [`Tally::sent_late`]).
    pub fn record_sent_late(&mut self, late: Duration) {
        self.sent_late.saturating_record(micros(late));
    }

    /// Moves the timeline `by` later (whole intervals, rounded down): a
    /// round that started `by` after the first one is charted where it ran.
    pub fn delay(&mut self, by: Duration) {
        let n = usize::try_from(by.as_nanos() / self.interval.as_nanos().max(1))
            .unwrap_or(usize::MAX)
            .min(100_000usize.saturating_sub(self.timeline.len()));
        if n == 0 || self.timeline.is_empty() {
            return;
        }
        let mut shifted = Vec::with_capacity(n + self.timeline.len());
        shifted.resize_with(n, || Interval {
            latency: histogram(2),
            errors: 0,
        });
        shifted.append(&mut self.timeline);
        self.timeline = shifted;
    }

    /// Adds `other`'s records to these. Histograms merge losslessly;
    /// sessions seen by both add up (a session lives on one worker, so in
    /// practice they are disjoint).
    pub fn merge(&mut self, other: &Tally) {
        // Same bounds on both sides: `add` only fails on a value beyond
        // this histogram's range, which the shared layout rules out.
        let _ = self.latency.add(&other.latency);
        let _ = self.sent_late.add(&other.sent_late);
        let factor = other.interval.as_nanos().max(1) / self.interval.as_nanos().max(1);
        for (i, interval) in other.timeline.iter().enumerate() {
            let slot = i * usize::try_from(factor.max(1)).unwrap_or(1);
            if self.timeline.len() <= slot {
                self.timeline.resize_with(slot + 1, || Interval {
                    latency: histogram(2),
                    errors: 0,
                });
            }
            if let Some(mine) = self.timeline.get_mut(slot) {
                let _ = mine.latency.add(&interval.latency);
                mine.errors += interval.errors;
            }
        }
        self.requests += other.requests;
        self.served += other.served;
        for (k, v) in &other.refusals {
            *self.refusals.entry(*k).or_default() += v;
        }
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.sessions {
            let s = self.sessions.entry(*k).or_default();
            s.owner_requests += v.owner_requests;
            s.owner_step_ups += v.owner_step_ups;
            s.owner_blocks += v.owner_blocks;
            s.owner_blocks_after_replay += v.owner_blocks_after_replay;
            s.attacker_refused += v.attacker_refused;
            s.attacker_blocked += v.attacker_blocked;
            s.first_refusal = match (s.first_refusal, v.first_refusal) {
                (Some(a), Some(b)) => Some(a.min(s.attacker_requests + b)),
                (None, Some(b)) => Some(s.attacker_requests + b),
                (a, None) => a,
            };
            s.attacker_requests += v.attacker_requests;
            s.errors += v.errors;
        }
    }

    /// Errors in all.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test")]
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_later_round_is_charted_after_the_first_not_on_top_of_it() {
        let interval = Duration::from_secs(1);
        let mut first = Tally::new(interval);
        first.record(ms(1), ms(500), (0, 0), Actor::Owner, &Outcome::Served);
        let mut second = Tally::new(interval);
        second.record(ms(9), ms(500), (1, 0), Actor::Owner, &Outcome::Served);
        // The second round began 3.2 s after the first.
        second.delay(ms(3_200));
        let mut all = Tally::new(interval);
        all.merge(&first);
        all.merge(&second);
        let counts: Vec<u64> = all.timeline.iter().map(|i| i.latency.len()).collect();
        assert_eq!(counts, [1, 0, 0, 1]);
        // Each where it ran: 1 ms in the first second, 9 ms in the fourth.
        assert!(all.timeline[0].latency.max() < 2_000);
        assert!(all.timeline[3].latency.min() > 8_000);
    }

    #[test]
    fn merged_histograms_equal_one_that_saw_everything() {
        let mut a = Tally::new(Duration::from_secs(1));
        let mut b = Tally::new(Duration::from_secs(1));
        let mut all = Tally::new(Duration::from_secs(1));
        for i in 0..1000u64 {
            let lat = Duration::from_micros(50 + i * 37 % 5000);
            let done = ms(i * 3);
            let t = if i % 3 == 0 { &mut a } else { &mut b };
            t.record(
                lat,
                done,
                (0, u32::try_from(i % 7).unwrap()),
                Actor::Owner,
                &Outcome::Served,
            );
            all.record(
                lat,
                done,
                (0, u32::try_from(i % 7).unwrap()),
                Actor::Owner,
                &Outcome::Served,
            );
            // Zero late included: a request sent on time.
            let late = Duration::from_micros(i * 13 % 700);
            t.record_sent_late(late);
            all.record_sent_late(late);
        }
        a.merge(&b);
        assert_eq!(a.latency.len(), 1000);
        assert_eq!(a.sent_late.len(), 1000);
        assert_eq!(a.sent_late.min(), 0);
        for q in [0.5, 0.99, 1.0] {
            assert_eq!(
                a.sent_late.value_at_quantile(q),
                all.sent_late.value_at_quantile(q)
            );
        }
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                a.latency.value_at_quantile(q),
                all.latency.value_at_quantile(q)
            );
        }
        assert_eq!(a.latency.max(), all.latency.max());
        assert_eq!(a.latency.min(), all.latency.min());
        assert_eq!(a.timeline.len(), all.timeline.len());
        for (x, y) in a.timeline.iter().zip(&all.timeline) {
            assert_eq!(x.latency.len(), y.latency.len());
            assert_eq!(x.latency.max(), y.latency.max());
        }
        assert_eq!(a.requests, 1000);
        assert_eq!(a.sessions, all.sessions);
    }

    #[test]
    fn latencies_beyond_the_range_are_kept_as_the_maximum() {
        let mut t = Tally::new(Duration::from_secs(1));
        t.record(
            Duration::from_secs(3600),
            ms(0),
            (0, 0),
            Actor::Owner,
            &Outcome::Served,
        );
        t.record(
            Duration::ZERO,
            ms(0),
            (0, 0),
            Actor::Owner,
            &Outcome::Served,
        );
        assert_eq!(t.latency.len(), 2);
        assert!(t.latency.max() >= MAX_MICROS);
        assert_eq!(t.latency.min(), 1);
    }

    #[test]
    fn the_first_refusal_of_the_thief_is_counted_in_its_own_requests() {
        let mut t = Tally::new(Duration::from_secs(1));
        let s = (0, 1);
        t.record(ms(1), ms(1), s, Actor::Owner, &Outcome::Served);
        t.record(ms(1), ms(1), s, Actor::Attacker, &Outcome::Served);
        t.record(
            ms(1),
            ms(1),
            s,
            Actor::Attacker,
            &Outcome::Refused(Refusal::StepUp),
        );
        t.record(
            ms(1),
            ms(1),
            s,
            Actor::Attacker,
            &Outcome::Refused(Refusal::Block),
        );
        t.record(
            ms(1),
            ms(1),
            s,
            Actor::Attacker,
            &Outcome::Error("connect".into()),
        );
        let got = t.sessions[&s];
        assert_eq!(got.first_refusal, Some(2));
        assert_eq!(got.attacker_requests, 4);
        assert_eq!(got.attacker_refused, 2);
        assert_eq!(got.attacker_blocked, 1);
        assert_eq!(got.errors, 1);
        assert_eq!(t.errors["connect"], 1);
    }
}
