//! When an open-loop request leaves: a wait until an instant, to the
//! microsecond.
//!
//! tokio's timers tick in whole milliseconds, and a parked runtime sleeps
//! in `epoll_wait` with a millisecond timeout rounded up, so a request due
//! at `t` left anywhere up to two milliseconds after `t`. Latency runs from
//! `t` (coordinated omission), so that lateness was every request's latency
//! too: against a bare origin at 1,000 requests per second, p50 830 µs and
//! p99 1.6 ms, where issue 17's p99 goal asks to tell enforcing from
//! passthrough by 50 µs. A `timerfd` on `CLOCK_MONOTONIC` (the clock
//! of `std::time::Instant` on Linux), registered with the worker's own
//! reactor, wakes the worker within microseconds of the instant and costs
//! no thread of its own. The crates that wrap one for tokio
//! (`tokio-timerfd`, `tokio-hrtime`) are single-maintainer 0.x crates that
//! would bring three or four crates for the same two system calls; nix,
//! already in the workspace, has the timer, and this is the rest.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// A one-shot timer on the current runtime's reactor, re-armed for each
/// wait. One per worker; `&mut` because one wait at a time. Where no
/// timerfd can be had or one fails (never seen on Linux), it says so once
/// and waits on tokio's millisecond timer instead: the run's `sent_late`
/// then shows the price.
#[derive(Debug)]
pub struct Pacer {
    /// `None` once it has fallen back to tokio's timer.
    fd: Option<AsyncFd<Timer>>,
    /// Waits that found their instant ahead and armed the timer, and
    /// firings read (the tests hold each such wait to end on a firing).
    armed: u64,
    fired: u64,
}

/// nix's `TimerFd` as tokio's `AsyncFd` takes it (by raw descriptor).
#[derive(Debug)]
struct Timer(TimerFd);

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

// === impl Pacer ===

impl Pacer {
    /// A pacer on the current tokio runtime (which needs its I/O driver).
    #[expect(
        clippy::new_without_default,
        reason = "it registers with the current runtime: not a plain default"
    )]
    pub fn new() -> Self {
        let fd = Self::timer()
            .inspect_err(|e| {
                eprintln!("no microsecond timer ({e}): sends are paced to the millisecond")
            })
            .ok();
        Self {
            fd,
            armed: 0,
            fired: 0,
        }
    }

    /// Whether waits end on the microsecond timer (not tokio's).
    pub fn is_precise(&self) -> bool {
        self.fd.is_some()
    }

    /// Returns once `at` has passed (at once when it has), never before.
    pub async fn until(&mut self, at: Instant) {
        if self.fd.is_some() {
            match self.on_timer(at).await {
                Ok(()) => return,
                Err(e) => {
                    eprintln!(
                        "the microsecond timer failed ({e}): sends are paced to the millisecond"
                    );
                    self.fd = None;
                }
            }
        }
        tokio::time::sleep_until(at).await;
    }

    fn timer() -> io::Result<AsyncFd<Timer>> {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // `AsyncFd::new` is deprecated (tokio pull request 8587) because it
        // cannot know that a type keeps the descriptor it registered; its
        // replacement is `unsafe`, which this workspace forbids. The
        // promise it asks for holds here: `TimerFd` has no method that
        // closes or replaces its descriptor, and `Timer` and `Pacer::fd`
        // are private, never handed out by `get_mut` or `into_inner`.
        #[expect(
            deprecated,
            reason = "the invariant holds (above); unsafe is forbidden"
        )]
        AsyncFd::new(Timer(fd))
    }

    /// [`Pacer::until`] on the timerfd.
    async fn on_timer(&mut self, at: Instant) -> io::Result<()> {
        let Some(fd) = self.fd.as_ref() else {
            return Err(io::Error::other("no timer"));
        };
        let mut armed = false;
        loop {
            let now = Instant::now();
            if now >= at {
                return Ok(());
            }
            // Relative to now rather than absolute: `Instant` does not
            // expose its clock reading, and the few nanoseconds between
            // the two readings only make the wake later, never earlier.
            // Never zero (that would disarm the timer and the wait would
            // never end): `at > now` here.
            fd.get_ref().0.set(
                Expiration::OneShot(TimeSpec::from_duration(at - now)),
                TimerSetTimeFlags::empty(),
            )?;
            if !armed {
                armed = true;
                self.armed += 1;
            }
            let mut ready = fd.readable().await?;
            // Reading the expiration count disarms the readiness; a stale
            // readiness (a timer re-armed after it fired) reads nothing
            // and is cleared by `try_io`, and the loop waits again.
            match ready.try_io(|fd| fd.get_ref().0.wait().map_err(io::Error::from)) {
                Ok(read) => {
                    read?;
                    self.fired += 1;
                    ready.clear_ready();
                }
                Err(_would_block) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test")]
    use std::time::Duration;

    use super::*;

    /// A lost wake-up fails the test instead of hanging it (tokio's own
    /// timer, far beyond any wait here).
    const HANG: Duration = Duration::from_secs(10);

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    async fn wait(pacer: &mut Pacer, at: Instant) {
        tokio::time::timeout(HANG, pacer.until(at))
            .await
            .expect("the timer's wake-up was lost");
        assert!(pacer.is_precise(), "fell back to tokio's timer");
    }

    #[test]
    fn each_wait_ends_on_the_timer_and_never_before_its_instant() {
        runtime().block_on(async {
            let mut pacer = Pacer::new();
            let start = Instant::now();
            // Spaced below tokio's millisecond tick, where its own timer
            // could not tell them apart.
            for i in 1..=200u32 {
                let at = start + Duration::from_micros(u64::from(i) * 37);
                wait(&mut pacer, at).await;
                assert!(Instant::now() >= at, "woke before instant {i}");
            }
            // Every wait that found its instant ahead was ended by the
            // timer's firing (not by tokio's timer, nor a spin, nor a
            // stale readiness).
            assert!(pacer.armed > 0);
            assert_eq!(pacer.fired, pacer.armed);
        });
    }

    #[test]
    fn a_past_instant_returns_at_once_and_the_timer_is_reusable_after_it() {
        runtime().block_on(async {
            let mut pacer = Pacer::new();
            let now = Instant::now();
            wait(&mut pacer, now - Duration::from_millis(5)).await;
            wait(&mut pacer, now).await;
            assert_eq!((pacer.armed, pacer.fired), (0, 0), "nothing to wait for");
            let at = Instant::now() + Duration::from_millis(20);
            wait(&mut pacer, at).await;
            assert!(Instant::now() >= at);
            assert_eq!((pacer.armed, pacer.fired), (1, 1));
        });
    }

    #[test]
    fn a_timer_that_fired_unread_does_not_end_the_next_wait_early() {
        runtime().block_on(async {
            let mut pacer = Pacer::new();
            // Armed, left to fire with nobody reading: its readiness is
            // stale when the next wait begins.
            let fd = pacer.fd.as_ref().unwrap();
            fd.get_ref()
                .0
                .set(
                    Expiration::OneShot(TimeSpec::from_duration(Duration::from_micros(1))),
                    TimerSetTimeFlags::empty(),
                )
                .unwrap();
            let fired = tokio::time::timeout(HANG, fd.readable())
                .await
                .unwrap()
                .unwrap();
            drop(fired);
            let at = Instant::now() + Duration::from_millis(20);
            wait(&mut pacer, at).await;
            assert!(Instant::now() >= at);
            // Re-arming dropped the unread firing: one read, the wait's own.
            assert_eq!((pacer.armed, pacer.fired), (1, 1));
        });
    }
}
