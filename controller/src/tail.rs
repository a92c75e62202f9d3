//! Read once, encode once, fan out: the one reader of the change log in a
//! controller process (`docs/controller.md`, Fan-out).
//!
//! The tail ([`run`]) reads the changes after its cursor — when this
//! process commits (the `head` watch), when PostgreSQL notifies a commit by
//! any replica ([`listen`]), or every `poll` regardless — and encodes each
//! batch of up to [`MAX_BATCH`] changes once, as one `Frame::Changes` line
//! in [`Bytes`]. It publishes that on a broadcast channel of [`RING`]
//! frames, and every caught-up stream writes the same bytes. A stream that
//! is behind what the channel still holds (it lagged, or joined at an older
//! cursor) reads the store for itself up to a frame boundary, then takes
//! the shared frames again (`crate::api`); its own reads check the log's
//! contiguity as before, so a gap still ends the stream.
//!
//! **Memory bound:** the channel holds at most [`RING`] frames of at most
//! [`MAX_BATCH`] changes (a session revocation is about 100 bytes of
//! JSON): about 25 MiB at the very worst, shared by every stream; a stream
//! adds its own queue of 8 frames.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, broadcast, watch};
use vigil_fleet::{Change, Frame, MAX_BATCH, write_frame};

use crate::metrics::Metrics;
use crate::store::{NOTIFY_CHANNEL, Store};

/// Frames the broadcast channel keeps for streams that are slow to take
/// them: at 10,000 changes a second in frames of 1,000, 25 seconds.
pub const RING: usize = 256;

/// The environment variable that makes the controller leave one change
/// out of every live stream (never out of a snapshot): a test of the
/// nodes' gap detection. Logged as a warning at start.
pub const DROP_SEQ_ENV: &str = "VIGIL_CONTROLLER_TEST_DROP_SEQ";

/// One encoded batch of changes, `first` to `last`.
#[derive(Debug, Clone)]
pub struct Published {
    /// The sequence of its first change.
    pub first: u64,
    /// The sequence of its last change.
    pub last: u64,
    /// The frame's line(s), ready to write.
    pub bytes: Bytes,
}

/// The tail's shared side: what streams subscribe to.
#[derive(Debug)]
pub struct Tail {
    frames: broadcast::Sender<Published>,
    /// The `last` of the newest frame published.
    published: watch::Sender<u64>,
    /// Wakes the tail: a notification from another replica.
    wake: Notify,
    /// The test hook: this change is left out of live streams.
    drop_seq: Option<u64>,
}

impl Tail {
    /// A tail that has published everything up to `head`.
    pub fn new(head: u64, drop_seq: Option<u64>) -> Tail {
        Tail {
            frames: broadcast::channel(RING).0,
            published: watch::channel(head).0,
            wake: Notify::new(),
            drop_seq,
        }
    }

    /// The frames published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.frames.subscribe()
    }

    /// The `last` of the newest frame published: a frame boundary.
    pub fn published(&self) -> u64 {
        *self.published.borrow()
    }

    /// Makes the tail read the store now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The changes of `batch` (contiguous, from its first) as frame lines,
    /// leaving out the test hook's change if it is among them.
    pub fn encode(&self, batch: Vec<(u64, Change)>) -> Bytes {
        encode(batch, self.drop_seq)
    }
}

/// The test hook's sequence from its environment variable's value: a
/// positive decimal, or nothing.
pub fn drop_seq_from(value: Option<&str>) -> Option<u64> {
    value?.trim().parse().ok().filter(|n| *n > 0)
}

fn encode(batch: Vec<(u64, Change)>, drop_seq: Option<u64>) -> Bytes {
    let Some(&(first, _)) = batch.first() else {
        return Bytes::new();
    };
    let mut out = Vec::new();
    let mut part_first = first;
    let mut part = Vec::with_capacity(batch.len());
    for (seq, change) in batch {
        // A rule bundle goes in a frame of its own
        // (`Change::travels_alone`): the frame before it ends here.
        let alone = change.travels_alone();
        if Some(seq) == drop_seq || alone {
            if !part.is_empty() {
                out.extend(write_frame(&Frame::Changes {
                    first: part_first,
                    changes: std::mem::take(&mut part),
                }));
            }
            part_first = seq + 1;
            if alone && Some(seq) != drop_seq {
                out.extend(write_frame(&Frame::Changes {
                    first: seq,
                    changes: vec![change],
                }));
            }
            continue;
        }
        part.push(change);
    }
    if !part.is_empty() {
        out.extend(write_frame(&Frame::Changes {
            first: part_first,
            changes: part,
        }));
    }
    Bytes::from(out)
}

/// The tail's loop: from `head` (what the process found at start), reads
/// what is new whenever `committed` changes, the tail is woken, or `poll`
/// passes, and publishes it. Store errors are counted and retried at the
/// next wake or poll.
pub async fn run(
    tail: Arc<Tail>,
    store: Store,
    metrics: Metrics,
    mut committed: watch::Receiver<u64>,
    head: u64,
    poll: Duration,
) {
    let mut cursor = head;
    metrics.head.set(i64::try_from(head).unwrap_or(i64::MAX));
    loop {
        loop {
            let batch = match store.since(cursor, MAX_BATCH).await {
                Ok(batch) => batch,
                Err(e) => {
                    metrics.store_read_errors.inc();
                    tracing::warn!(error = %e, cursor, "the tail could not read the log");
                    break;
                }
            };
            let Some(&(first, _)) = batch.first() else {
                break;
            };
            let n = batch.len() as u64;
            let last = first + n - 1;
            // Numbers are contiguous (store.rs); a jump here is compaction
            // overtaking the tail. Published as it is: a stream whose
            // cursor does not meet it reads the store and ends at the gap.
            if first != cursor + 1 {
                tracing::warn!(
                    expected = cursor + 1,
                    got = first,
                    "the tail found a gap in the log"
                );
            }
            metrics.frame_changes.observe(n as f64);
            let bytes = tail.encode(batch);
            // No receiver is not an error: no stream is open.
            let _ = tail.frames.send(Published { first, last, bytes });
            tail.published.send_replace(last);
            metrics.head.set(i64::try_from(last).unwrap_or(i64::MAX));
            cursor = last;
        }
        tokio::select! {
            changed = committed.changed() => if changed.is_err() { return },
            () = tail.wake.notified() => {},
            () = tokio::time::sleep(poll) => {},
        }
    }
}

/// Listens for PostgreSQL's notifications of commits (any replica's) and
/// wakes the tail for each. A lost connection is reconnected with backoff
/// (0.5 s doubling to 30 s), and the tail woken after it, since what was
/// notified meanwhile is lost; the tail's poll covers the time between.
/// `first` is the listener connected at start, if it could be.
pub async fn listen(url: String, tail: Arc<Tail>, metrics: Metrics, mut first: Option<PgListener>) {
    const MIN: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(30);
    let mut backoff = MIN;
    loop {
        let listener = match first.take() {
            Some(l) => Ok(l),
            None => connect(&url).await,
        };
        match listener {
            Ok(mut listener) => {
                tail.wake();
                loop {
                    match listener.try_recv().await {
                        Ok(Some(_)) => {
                            backoff = MIN;
                            metrics.notifications.inc();
                            tail.wake();
                        }
                        Ok(None) => {
                            tracing::warn!("change notifications: connection lost; reconnecting");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "change notifications failed; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "change notifications: cannot listen; polling meanwhile");
            }
        }
        tail.wake();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX);
    }
}

/// A listener on the change channel at `url`.
pub async fn connect(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(NOTIFY_CHANNEL).await?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_fleet::{SessionId, read_frame};

    fn batch(first: u64, n: u8) -> Vec<(u64, Change)> {
        (0..n)
            .map(|i| {
                (
                    first + u64::from(i),
                    Change::SessionRevoked {
                        session: SessionId([i; 16]),
                        at: 1,
                        vouched: true,
                    },
                )
            })
            .collect()
    }

    fn frames(bytes: &Bytes) -> Vec<(u64, usize)> {
        bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| match read_frame(l).unwrap() {
                Frame::Changes { first, changes } => (first, changes.len()),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_batch_is_one_frame() {
        assert_eq!(frames(&encode(batch(5, 3), None)), vec![(5, 3)]);
        assert_eq!(frames(&encode(batch(5, 3), Some(9))), vec![(5, 3)]);
    }

    #[test]
    fn the_dropped_change_leaves_a_gap_the_node_can_see() {
        // In the middle: two frames, the second starting after it.
        assert_eq!(frames(&encode(batch(5, 3), Some(6))), vec![(5, 1), (7, 1)]);
        // First or last: one frame without it.
        assert_eq!(frames(&encode(batch(5, 3), Some(5))), vec![(6, 2)]);
        assert_eq!(frames(&encode(batch(5, 3), Some(7))), vec![(5, 2)]);
        // Alone: nothing at all.
        assert!(encode(batch(5, 1), Some(5)).is_empty());
    }

    /// A rule bundle (up to 256 KiB of text) never shares a frame, so no
    /// frame outgrows a line.
    #[test]
    fn a_rule_bundle_is_a_frame_of_its_own() {
        let mut b = batch(5, 3);
        b.insert(
            1,
            (
                6,
                Change::RulesBundle {
                    version: 1,
                    sha256: "0".repeat(64),
                    created_at: 1,
                    text: "a".repeat(vigil_fleet::MAX_RULES_BYTES),
                },
            ),
        );
        b[2].0 = 7;
        b[3].0 = 8;
        assert_eq!(frames(&encode(b, None)), vec![(5, 1), (6, 1), (7, 2)]);
    }

    #[test]
    fn the_hook_is_a_positive_decimal_or_off() {
        assert_eq!(drop_seq_from(Some("42")), Some(42));
        assert_eq!(drop_seq_from(Some(" 7\n")), Some(7));
        for off in [None, Some(""), Some("0"), Some("-1"), Some("x")] {
            assert_eq!(drop_seq_from(off), None, "{off:?}");
        }
    }
}
