//! The open-loop schedule: request `i` is meant to leave at `i / rate`
//! seconds after the start, whatever happened to the requests before it.
//! Latency is measured from that intended time, so a stalled target shows
//! up as latency instead of silently lowering the rate the generator
//! offers (coordinated omission).

use std::time::Duration;

/// A fixed request rate, in requests per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    rate: u64,
}

/// The rate was zero.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the rate must be at least 1 request per second")]
pub struct ZeroRate;

// === impl Schedule ===

impl Schedule {
    /// A schedule of `rate` requests per second (at least 1).
    pub fn new(rate: u64) -> Result<Self, ZeroRate> {
        if rate == 0 {
            return Err(ZeroRate);
        }
        Ok(Self { rate })
    }

    /// Requests per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// When request `i` (from 0) is meant to be sent, after the start.
    /// Exact to the nanosecond: `i * 1e9 / rate`, rounded down.
    pub fn intended(&self, i: u64) -> Duration {
        let ns = u128::from(i) * 1_000_000_000 / u128::from(self.rate);
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// How many requests are due by `elapsed` after the start: every `i`
    /// with `intended(i) <= elapsed`.
    pub fn due(&self, elapsed: Duration) -> u64 {
        let n = elapsed.as_nanos() * u128::from(self.rate) / 1_000_000_000;
        u64::try_from(n).unwrap_or(u64::MAX).saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test")]
    use super::*;

    #[test]
    fn intended_times_are_evenly_spaced_from_the_start() {
        let s = Schedule::new(4).unwrap();
        let times: Vec<_> = (0..5).map(|i| s.intended(i)).collect();
        assert_eq!(
            times,
            [0, 250, 500, 750, 1000].map(Duration::from_millis).to_vec()
        );
    }

    #[test]
    fn rates_that_do_not_divide_a_second_do_not_drift() {
        let s = Schedule::new(3).unwrap();
        assert_eq!(s.intended(1), Duration::from_nanos(333_333_333));
        assert_eq!(s.intended(2), Duration::from_nanos(666_666_666));
        // A million requests later the schedule is still exact: the time is
        // computed from i, never accumulated.
        assert_eq!(s.intended(3_000_000), Duration::from_secs(1_000_000));
    }

    #[test]
    fn due_counts_every_request_whose_time_has_come() {
        let s = Schedule::new(1000).unwrap();
        assert_eq!(s.due(Duration::ZERO), 1);
        assert_eq!(s.due(Duration::from_micros(999)), 1);
        assert_eq!(s.due(Duration::from_millis(1)), 2);
        assert_eq!(s.due(Duration::from_secs(1)), 1001);
        for i in [0, 1, 7, 999, 123_456] {
            // Request i is due exactly at its intended time, not before.
            assert_eq!(s.due(s.intended(i)), i + 1);
            assert!(s.due(s.intended(i + 1) - Duration::from_nanos(1)) == i + 1);
        }
    }

    #[test]
    fn a_late_wake_up_sends_the_backlog_at_once() {
        // The dispatcher slept 50 ms instead of 1: every request whose time
        // passed is due now, none is dropped, none invented.
        let s = Schedule::new(10_000).unwrap();
        assert_eq!(s.due(Duration::from_millis(50)), 501);
    }

    #[test]
    fn zero_rate_is_refused() {
        assert_eq!(Schedule::new(0), Err(ZeroRate));
    }
}
