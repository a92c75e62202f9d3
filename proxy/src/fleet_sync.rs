//! The edge side of the fleet controller (`docs/controller.md`, Edge
//! node): the sync stream down, this node's revocations up.
//!
//! **Down.** [`FleetSync`] keeps `GET {url}/v1/sync?since={cursor}` open
//! and applies every change it streams to the engine: sessions and users
//! revoked, user risk set, devices and networks trusted, and false
//! positives of this node's own refusals (kept in [`Decisions`]). The stream is read through a bounded line
//! splitter ([`Lines`]) and the protocol is judged by a pure state machine
//! ([`Cursor::on_frame`]) that says what to do with each frame; the shell
//! here only does it (STYLE.md 18). A change numbered other than the next
//! one expected is never skipped: the stream is dropped and a full
//! snapshot asked for (`since=0`). A stream silent for three heartbeats is
//! dead. Reconnects back off (0.5 s doubling to 30 s, ±50 % jitter).
//!
//! **Fail-static.** Whatever happens to the controller, the node keeps
//! enforcing with what it has, and what it has survives a restart, a
//! SIGKILL included:
//!
//! - the engine's state is in the session snapshot (`crate::snapshot`);
//!   the sequence it holds everything up to (`applied`) is written beside
//!   it, in `controller.cursor`, by the snapshot writer only: `applied` is
//!   read before the engine's snapshot is taken and written after the
//!   snapshot file is in place, so the cursor never claims more than the
//!   snapshot holds. On start the cursor is read only when the snapshot
//!   was restored; otherwise the node asks for everything;
//! - every frame applied since that snapshot is in the [`journal`],
//!   appended and fsync'd before the engine has it and before `applied`
//!   moves (write-ahead), replayed at start after the snapshot and before
//!   anything is served, and compacted when the next snapshot with its
//!   cursor is in place; the replayed cursor moves only over what follows
//!   on without a gap ([`journal::replayed_cursor`]);
//! - this node's own revocations not yet taken by the controller wait in
//!   the on-disk [`queue`] and are applied again at start
//!   ([`FleetSync::replay_queued`]).
//!
//! **Staleness.** [`FleetState::current_at`] is when a live stream last
//! proved the node current ([`Cursor::current`]: past the hello and any
//! snapshot, with everything announced applied; each frame, heartbeats
//! included, proves it again). It is recorded with the cursor, so a
//! restarted node is as stale as its snapshot says (older by up to one
//! snapshot interval after a SIGKILL, never younger); a node that never
//! was current is stale from its start. Routes with `stale_after` read it
//! with one atomic load (`crate::proxy`); `on_stale = "fail_closed"`
//! refuses with `503 fleet_stale`.
//!
//! **Up.** Revocations this node decided (`RevocationCause::Decision`;
//! the ones the controller or an operator made are not echoed back) go
//! into the [`Outbox`], a bounded on-disk [`queue`] (the oldest dropped,
//! counted, when it is full), appended by the event consumer thread in
//! groups with one fsync each, and are posted to `POST {url}/v1/events` in
//! batches, again and again with the same ids (kept on disk with the
//! events, across restarts) until the controller takes them; it
//! deduplicates by id.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use prometheus::{IntCounter, IntGauge};
use tokio::sync::Notify;
use tokio::time::Instant;
use vigil_engine::{Adopted, DeviceId, Engine, Feedback, SessionKey, UserKey};
use vigil_fleet::{
    BindingRecord, Change, EventAck, EventBatch, Frame, MAX_EVENTS, MAX_LINE_BYTES, NodeEvent,
    NodeEventKind, SessionId, TrustedNetwork, VERSION, VERSION_HEADER,
};
use vigil_fleet::{MAX_POPULATION_COUNTERS, POPULATION_FEATURES};

use crate::config::Controller;
use crate::metrics::FleetMetrics;
use crate::open_requests::OpenRequests;
use crate::operator::Decisions;
use crate::outbound::{self, error_chain};

pub mod journal;
pub mod queue;
pub mod records;

use journal::Journal;
use queue::Queue;

/// The cursor's file name in the state directory, beside the session
/// snapshot.
pub const CURSOR_FILE: &str = "controller.cursor";

/// How often an idle controller sends a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// A stream with no line for three heartbeats is dead.
const SILENCE: Duration = Duration::from_secs(3 * HEARTBEAT.as_secs());
/// The first reconnect delay, doubled on each failure…
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// …up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A stream that lived this long was healthy: the back-off starts over.
const HEALTHY: Duration = Duration::from_secs(15);
/// Longest wait for a connection and for the answer's head.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a posted batch's answer.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer to a post read: room for the ids of a whole batch in
/// its `retry` ([`MAX_EVENTS`] ids of at most 128 bytes).
const MAX_ACK_BYTES: usize = 256 * 1024;
/// How often the poster looks for binding records to send when nothing
/// else wakes it: the part of the fleet's window of undetectable reuse
/// that this node adds (docs/bound-sessions.md, "Across the fleet").
const BINDINGS_EVERY: Duration = Duration::from_millis(50);
/// The protocol version that carries bindings.
const BINDINGS_SINCE: u32 = 5;
/// DBSC bindings sent again after dropped events: at most this many a
/// batch, one batch every [`RESEND_EVERY`] (3,000 a minute, half the
/// default allowance of a node's events), and a pause of
/// [`RESEND_PAUSE`] after a batch the controller did not take.
const RESEND_BATCH: usize = 50;
const RESEND_EVERY: Duration = Duration::from_secs(1);
const RESEND_PAUSE: Duration = Duration::from_secs(60);

// === the pure core ===

/// Splits a byte stream into lines of at most [`MAX_LINE_BYTES`] (without
/// the newline, and without a `\r` before it); empty lines are skipped.
#[derive(Debug, Default)]
pub struct Lines {
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for a newline.
    scanned: usize,
}

/// A line longer than [`MAX_LINE_BYTES`]: the stream is not one to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a line of more than {MAX_LINE_BYTES} bytes")]
pub struct LineTooLong;

/// Where the node stands in the controller's change log, and what each
/// frame of a stream means for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The engine holds every change up to this sequence (once the
    /// [`Action::Apply`] that set it was carried out).
    applied: u64,
    /// The newest sequence the controller announced.
    head: u64,
    /// Ask for a full snapshot on the next connect (`since=0`).
    want_snapshot: bool,
    phase: Phase,
    /// The protocol version of the controller's last hello (0: none yet).
    version: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A new stream: its hello is due.
    Hello,
    /// Inside a snapshot (as of `seq`, once its first chunk told).
    Snapshot { seq: Option<u64> },
    /// Deltas, contiguous from `applied + 1`.
    Deltas,
}

/// What to do with a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Apply `changes` to the engine, in order; then, when `then` is
    /// set, the engine holds everything up to that sequence.
    Apply {
        /// The changes.
        changes: Vec<Change>,
        /// The sequence held once they are applied.
        then: Option<u64>,
    },
    /// Nothing to apply (a hello, a heartbeat, an empty batch).
    Nothing,
    /// Drop the stream and ask for a full snapshot.
    Resync(Resync),
    /// Drop the stream and connect again from the cursor: the controller
    /// broke the protocol.
    Reconnect(Violation),
}

/// Why a full snapshot is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Resync {
    /// The stream skipped (or repeated) a sequence.
    #[error("expected change {expected}, the stream sent {got}")]
    Gap {
        /// The next sequence the node needed.
        expected: u64,
        /// The one the stream sent.
        got: u64,
    },
    /// The controller's log ends before what the node holds (its store
    /// was replaced or rolled back).
    #[error("the controller's head is {head}, behind this node's {applied}")]
    Ahead {
        /// What the node holds.
        applied: u64,
        /// The controller's head.
        head: u64,
    },
}

/// A stream that does not follow protocol v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// Another protocol version.
    #[error("the controller speaks protocol version {0}, this node {VERSION}")]
    Version(u32),
    /// The first frame was not a hello.
    #[error("a stream must start with hello")]
    NoHello,
    /// A second hello.
    #[error("a hello in the middle of a stream")]
    Hello,
    /// A full snapshot was asked for (`since=0`) and not announced.
    #[error("a snapshot was asked for and not announced")]
    NoSnapshot,
    /// Snapshot records outside a snapshot, or of two sequences in one.
    #[error("snapshot records out of place")]
    Snapshot,
    /// Deltas inside a snapshot.
    #[error("changes before the snapshot ended")]
    Deltas,
    /// A batch whose numbers run past `u64`.
    #[error("change sequence overflows")]
    Overflow,
}

impl Resync {
    /// The metric label.
    pub fn code(self) -> &'static str {
        match self {
            Resync::Gap { .. } => "gap",
            Resync::Ahead { .. } => "ahead",
        }
    }
}

/// The delay before reconnect number `attempt` (0 for the first after a
/// healthy stream): [`BACKOFF_MIN`] doubled per attempt up to
/// [`BACKOFF_MAX`], times `jitter` (0.5 to 1.5).
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let base = BACKOFF_MIN
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_MAX);
    base.mul_f64(jitter.clamp(0.5, 1.5))
}

fn jittered(attempt: u32) -> Duration {
    backoff(attempt, rand::random_range(0.5..1.5))
}

// === impl Lines ===

impl Lines {
    /// Adds `bytes` and returns the lines they complete, oldest first; an
    /// error when a line (complete or not) is longer than
    /// [`MAX_LINE_BYTES`].
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, LineTooLong> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(i) = self
            .buf
            .get(self.scanned..)
            .and_then(|rest| rest.iter().position(|b| *b == b'\n'))
        {
            let end = self.scanned + i;
            let line = self.buf.get(start..end).unwrap_or_default();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > MAX_LINE_BYTES {
                return Err(LineTooLong);
            }
            if !line.is_empty() {
                out.push(line.to_vec());
            }
            start = end + 1;
            self.scanned = start;
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        if self.buf.len() > MAX_LINE_BYTES + 1 {
            return Err(LineTooLong);
        }
        Ok(out)
    }
}

// === impl Cursor ===

impl Cursor {
    /// A node that holds everything up to `applied` (0: nothing).
    pub fn new(applied: u64) -> Self {
        Self {
            applied,
            head: applied,
            want_snapshot: applied == 0,
            phase: Phase::Hello,
            version: 0,
        }
    }

    /// The protocol version the controller answered in (0: no hello yet).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// What the node holds everything up to.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The newest sequence the controller announced.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// The `since` of the next connect: 0 when a snapshot is needed.
    pub fn since(&self) -> u64 {
        if self.want_snapshot { 0 } else { self.applied }
    }

    /// Whether the node is proved current: a stream past its hello (and
    /// snapshot) with everything the controller announced applied.
    pub fn current(&self) -> bool {
        self.phase == Phase::Deltas && self.applied >= self.head
    }

    /// A new stream begins: its hello is due.
    pub fn connected(&mut self) {
        self.phase = Phase::Hello;
    }

    /// What `frame`, the next of the stream, means. The cursor moves as
    /// if the returned action will be carried out.
    pub fn on_frame(&mut self, frame: Frame) -> Action {
        match (self.phase, frame) {
            (
                Phase::Hello,
                Frame::Hello {
                    v,
                    head,
                    oldest,
                    snapshot,
                },
            ) => {
                // The controller answers in the version the node asked
                // for (`v=` of the query) or an older one it speaks.
                if v == 0 || v > VERSION {
                    return Action::Reconnect(Violation::Version(v));
                }
                self.version = v;
                self.head = head;
                if snapshot {
                    self.phase = Phase::Snapshot { seq: None };
                    return Action::Nothing;
                }
                if self.want_snapshot {
                    return Action::Reconnect(Violation::NoSnapshot);
                }
                if head < self.applied {
                    return self.resync(Resync::Ahead {
                        applied: self.applied,
                        head,
                    });
                }
                if oldest > self.applied.saturating_add(1) {
                    return self.resync(Resync::Gap {
                        expected: self.applied.saturating_add(1),
                        got: oldest,
                    });
                }
                self.phase = Phase::Deltas;
                Action::Nothing
            }
            (Phase::Hello, _) => Action::Reconnect(Violation::NoHello),
            // A later version's frame type: never one with changes.
            (_, Frame::Unknown) => Action::Nothing,
            (_, Frame::Hello { .. }) => Action::Reconnect(Violation::Hello),
            (Phase::Snapshot { seq: current }, Frame::Snapshot { seq, changes }) => {
                if current.is_some_and(|c| c != seq) {
                    return Action::Reconnect(Violation::Snapshot);
                }
                self.phase = Phase::Snapshot { seq: Some(seq) };
                Action::Apply {
                    changes,
                    then: None,
                }
            }
            (Phase::Snapshot { seq: current }, Frame::SnapshotEnd { seq }) => {
                if current.is_some_and(|c| c != seq) {
                    return Action::Reconnect(Violation::Snapshot);
                }
                self.phase = Phase::Deltas;
                self.applied = seq;
                self.head = self.head.max(seq);
                self.want_snapshot = false;
                Action::Apply {
                    changes: Vec::new(),
                    then: Some(seq),
                }
            }
            (Phase::Snapshot { .. }, Frame::Changes { .. }) => Action::Reconnect(Violation::Deltas),
            (Phase::Deltas, Frame::Snapshot { .. } | Frame::SnapshotEnd { .. }) => {
                Action::Reconnect(Violation::Snapshot)
            }
            (Phase::Deltas, Frame::Changes { first, changes }) => {
                if changes.is_empty() {
                    return Action::Nothing;
                }
                let expected = self.applied.saturating_add(1);
                if first != expected {
                    return self.resync(Resync::Gap {
                        expected,
                        got: first,
                    });
                }
                let Some(last) = u64::try_from(changes.len() - 1)
                    .ok()
                    .and_then(|n| first.checked_add(n))
                else {
                    return Action::Reconnect(Violation::Overflow);
                };
                self.applied = last;
                self.head = self.head.max(last);
                Action::Apply {
                    changes,
                    then: Some(last),
                }
            }
            (phase, Frame::Heartbeat { head }) => {
                if phase == Phase::Deltas && head < self.applied {
                    return self.resync(Resync::Ahead {
                        applied: self.applied,
                        head,
                    });
                }
                self.head = head;
                Action::Nothing
            }
        }
    }

    fn resync(&mut self, why: Resync) -> Action {
        self.want_snapshot = true;
        Action::Resync(why)
    }
}

// === the cursor file ===

/// The cursor file beside the session snapshot at `snapshot`.
pub fn cursor_path(snapshot: &Path) -> PathBuf {
    snapshot.with_file_name(CURSOR_FILE)
}

/// What the cursor file at `path` records, if it holds it: the sequence
/// the snapshot beside it holds everything up to, and when (unix seconds)
/// the node was last known current (0: never, or a file written before
/// this was recorded).
pub fn read_cursor(path: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut words = text.split_whitespace();
    let applied = words.next()?.parse().ok()?;
    let current_at = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    Some((applied, current_at))
}

/// Records `applied` and `current_at` at `path` through a temporary file
/// (mode 0600) renamed over the old one. The caller syncs the folder.
pub fn write_cursor(path: &Path, applied: u64, current_at: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("cursor.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(format!("{applied} {current_at}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

// === the shared state ===

/// What the controller client shares with the snapshot writer and the
/// request path.
#[derive(Debug, Default)]
pub struct FleetState {
    /// The controller sequence the engine holds everything up to.
    pub applied: AtomicU64,
    /// When (unix seconds) a live stream last proved this node current —
    /// a frame read while it held everything the controller announced,
    /// heartbeats included; 0 for never. Restored from the cursor file
    /// (the snapshot's), so a restarted node's state is as old as its
    /// snapshot says, not as new as its start.
    pub current_at: AtomicU64,
    /// The applied-changes journal, with a snapshot to compact it.
    journal: Mutex<Option<Journal>>,
}

impl FleetState {
    /// A node holding everything up to `applied`, last current at
    /// `current_at`, without a journal.
    pub fn new(applied: u64, current_at: u64) -> Self {
        Self {
            applied: AtomicU64::new(applied),
            current_at: AtomicU64::new(current_at),
            journal: Mutex::new(None),
        }
    }

    /// Seconds since the node was last current, at `now` (unix seconds);
    /// a node never current is as old as `now`.
    pub fn age(&self, now: u64) -> u64 {
        now.saturating_sub(self.current_at.load(Ordering::Relaxed))
    }

    /// Whether the node's fleet state is older than `after` seconds at
    /// `now`: one atomic load.
    pub fn stale(&self, after: u64, now: u64) -> bool {
        self.age(now) > after
    }

    /// Journals from now on into `journal`.
    pub fn set_journal(&self, journal: Journal) {
        *self.lock_journal() = Some(journal);
    }

    /// Journals a frame's `changes` (see [`Action::Apply`]) and makes the
    /// entry durable; called before they are applied.
    fn journal(&self, changes: &[Change], then: Option<u64>) {
        if changes.is_empty() && then.is_none() {
            return;
        }
        if let Some(j) = self.lock_journal().as_mut()
            && let Err(e) = j.append(&journal::Entry::of(changes, then))
        {
            tracing::warn!(error = %e, "fleet sync: change not journaled; a crash before the next snapshot forgets it until the controller sends it again");
        }
    }

    /// A snapshot holding everything up to `applied` is in place with its
    /// cursor: the journal's older entries go.
    pub fn snapshot_written(&self, applied: u64) {
        if let Some(j) = self.lock_journal().as_mut()
            && let Err(e) = j.compact(applied)
        {
            tracing::warn!(error = %e, "fleet sync: the journal was not compacted; it is replayed whole at the next start");
        }
    }

    fn lock_journal(&self) -> std::sync::MutexGuard<'_, Option<Journal>> {
        self.journal.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === the outbox ===

/// Events for the controller, waiting in the on-disk [`Queue`]: bounded,
/// the oldest dropped (and counted) when full, each with an id unique to
/// this node: `<random prefix per run>-<counter>`, stored with the event,
/// so that an event sent again after a restart keeps its id.
pub struct Outbox {
    queue: Mutex<Ids>,
    prefix: String,
    ready: Notify,
    dropped: IntCounter,
    queued: IntGauge,
    outgoing: outgoing::Outgoing,
}

struct Ids {
    next: u64,
    queue: Queue,
}

impl Outbox {
    /// The outbox of the queue in `dir` (`<state_dir>/controller.events`),
    /// with what an earlier run left in it; `limits` bound it.
    pub fn open(
        dir: &Path,
        limits: queue::Limits,
        metrics: &FleetMetrics,
    ) -> std::io::Result<Self> {
        let (queue, opened) = Queue::open(dir, limits)?;
        if opened.cut_bytes > 0 {
            tracing::warn!(
                path = %dir.display(),
                bytes = opened.cut_bytes,
                "fleet events: a torn or corrupt tail of the event queue was cut off (a crash mid-write)"
            );
        }
        if opened.events > 0 {
            tracing::info!(
                events = opened.events,
                "fleet events: events from before the restart queued for the controller"
            );
        }
        metrics.events_dropped.inc_by(opened.dropped);
        metrics.events_queued.set(gauge(queue.len() as u64));
        // A fresh prefix per start: the counter starts over, the ids must
        // not repeat an earlier run's.
        let prefix: [u8; 8] = rand::random();
        Ok(Self {
            queue: Mutex::new(Ids { next: 1, queue }),
            prefix: hex::encode(prefix),
            ready: Notify::new(),
            dropped: metrics.events_dropped.clone(),
            queued: metrics.events_queued.clone(),
            outgoing: outgoing::Outgoing::default(),
        })
    }

    /// Takes an engine event, if it is one the controller wants
    /// ([`outgoing`]); durable at the next [`Outbox::commit`]. Never
    /// blocks on the network.
    pub fn offer(&self, event: &vigil_engine::Event) {
        let kinds = self.outgoing.node_events(event);
        if !kinds.is_empty() {
            self.push_all(kinds);
        }
    }

    /// Lets the outbox read session records from `engine`.
    pub fn attach(&self, engine: &Arc<Engine>) {
        self.outgoing.attach(engine);
    }

    /// Queues `kind` under the next id; durable at the next
    /// [`Outbox::commit`].
    pub fn push(&self, kind: NodeEventKind) {
        self.push_all(vec![kind]);
    }

    /// Queues `kinds` in order, in one step: no batch holds some of them
    /// without those before (a revocation's evidence, then the
    /// revocation).
    fn push_all(&self, kinds: Vec<NodeEventKind>) {
        let mut q = self.lock();
        for kind in kinds {
            let seq = q.next;
            q.next += 1;
            let dropped = q.queue.push(NodeEvent {
                id: format!("{}-{seq}", self.prefix),
                kind,
            });
            self.dropped.inc_by(dropped);
        }
    }

    /// Writes what was queued since the last commit and makes it durable
    /// (one `fsync`, outside the lock), then wakes the poster. A write
    /// that fails is logged; the events stay queued in memory and are
    /// sent all the same.
    pub fn commit(&self) {
        let (written, len) = {
            let mut q = self.lock();
            (q.queue.write(), q.queue.len())
        };
        match written.and_then(|file| file.map_or(Ok(()), |f| f.sync_data())) {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(error = %e, "fleet events: the event queue could not be written; events kept in memory only");
            }
        }
        // Counted once durable: what the gauge shows survives a crash.
        self.queued.set(gauge(len as u64));
        self.ready.notify_one();
    }

    /// Every event waiting, oldest first.
    fn queued(&self) -> Vec<NodeEvent> {
        self.lock()
            .queue
            .batch(usize::MAX)
            .map(|(_, events)| events)
            .unwrap_or_default()
    }

    /// The oldest events, at most [`MAX_EVENTS`], and the queue sequence
    /// of the last; `None` when empty.
    fn batch(&self) -> Option<(u64, Vec<NodeEvent>)> {
        self.lock().queue.batch(MAX_EVENTS)
    }

    /// Removes every event up to queue sequence `last` (some may have been
    /// dropped meanwhile); returns how many were removed.
    fn remove_through(&self, last: u64) -> u64 {
        let mut q = self.lock();
        let (n, files) = q.queue.remove_through(last);
        if let Err(e) = files {
            tracing::warn!(error = %e, "fleet events: sent events not removed from the queue's files; they may be sent again");
        }
        self.queued.set(gauge(q.queue.len() as u64));
        n
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ids> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

// === the service ===

/// Most minutes of counts a node holds for a controller that does not
/// take them: an hour.
const MAX_PENDING_COUNTS: usize = 60;

/// The controller client: the sync stream and the event poster.
pub struct FleetSync {
    engine: Arc<Engine>,
    controller: Arc<Controller>,
    client: reqwest::Client,
    /// What the engine holds and how fresh it is; read by the snapshot
    /// writer and the request path.
    state: Arc<FleetState>,
    outbox: Arc<Outbox>,
    metrics: FleetMetrics,
    /// The protocol version the controller answered in (0: not heard
    /// yet): events are posted only once it is known, and only the kinds
    /// it takes.
    version: AtomicU32,
    /// Wakes the poster when the version becomes known.
    heard: Notify,
    /// Requests in flight on this node, which the fleet's revocations end.
    open: Option<OpenRequests>,
    /// This node's recent refusals, for false positives reported at the
    /// controller ([`FleetSync::with_decisions`]); none: such reports are
    /// skipped.
    decisions: Option<Decisions>,
    /// Applies rule bundles (`[rules] source = "controller"`); `None`
    /// until attached ([`FleetSync::with_rules`]), and on a node that
    /// takes its rules from files.
    rules: Option<Arc<crate::rules_bundle::BundleApplier>>,
    /// The last bundle the journal's replay met before the applier was
    /// attached: applied when it is.
    replayed_rules: Mutex<Option<crate::rules_bundle::StoredBundle>>,
    /// DBSC bindings, which the fleet's records feed
    /// ([`FleetSync::with_dbsc`]), with the limits in force at start.
    dbsc: Option<(Arc<crate::dbsc::Dbsc>, crate::dbsc::Settings)>,
    /// Numbers the binding records posted (their ids; the controller keeps
    /// none of them: a record taken twice changes nothing).
    bindings_posted: AtomicU64,
    /// Compromised marks the controller answered in `retry` (its
    /// allowance of marks for the minute was spent), held until that
    /// minute is over: posting them again at once would only spend the
    /// node's allowance of binding records on refusals, and with it hold
    /// back every other session's records.
    parked_marks: Mutex<(u64, Vec<vigil_engine::FleetBinding>)>,
    /// The outbox's count of dropped events when this node last sent its
    /// DBSC bindings again; more dropped since (the outbox was full while
    /// the controller was away) and the next stream's hello sends them all
    /// again ([`FleetSync::dbsc_resend`]).
    dbsc_resent_at: AtomicU64,
    /// DBSC records waiting to be sent again, posted by the bindings loop
    /// a batch at a time, kept on failure.
    dbsc_resend: Mutex<Vec<vigil_fleet::DbscBinding>>,
    /// When the next batch sent again may go: one small batch a second,
    /// and a minute's pause after the controller refused or failed one,
    /// so that sending every binding again never spends the node's
    /// allowance of events nor holds up its binding records.
    dbsc_resend_next: Mutex<Option<tokio::time::Instant>>,
    /// The proxy's metrics and the generation in force, which the counts
    /// per minute are read from ([`FleetSync::with_counts`]); `None`: no
    /// counts are posted.
    counts: Option<(crate::metrics::Metrics, crate::generation::Current)>,
}

/// Why a sync stream ended.
#[derive(Debug)]
enum End {
    Connect(String),
    Unauthorized,
    Status(u16),
    Protocol(String),
    Silent,
    Closed(Option<String>),
    Resync(Resync),
}

impl End {
    fn code(&self) -> &'static str {
        match self {
            End::Connect(_) => "connect",
            End::Unauthorized => "unauthorized",
            End::Status(_) => "status",
            End::Protocol(_) => "protocol",
            End::Silent => "silent",
            End::Closed(_) => "closed",
            End::Resync(_) => "resync",
        }
    }
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Connect(e) => write!(f, "cannot connect: {e}"),
            End::Unauthorized => {
                f.write_str("the controller refused this node's token or certificate (401)")
            }
            End::Status(s) => write!(f, "the controller answered {s}"),
            End::Protocol(e) => write!(f, "protocol error: {e}"),
            End::Silent => write!(f, "no line for {}s", SILENCE.as_secs()),
            End::Closed(None) => f.write_str("the controller closed the stream"),
            End::Closed(Some(e)) => write!(f, "the stream broke: {e}"),
            End::Resync(r) => write!(f, "resync: {r}"),
        }
    }
}

/// A failed post.
enum PostError {
    /// Worth sending again.
    Retry(String),
    /// The controller will never take this batch.
    Refused(u16),
}

impl FleetSync {
    /// A client of `controller` applying to `engine`, starting from
    /// `state` (shared with the snapshot writer and the request path).
    pub fn new(
        engine: Arc<Engine>,
        controller: Arc<Controller>,
        state: Arc<FleetState>,
        outbox: Arc<Outbox>,
        metrics: FleetMetrics,
    ) -> Result<Self, String> {
        // No whole-call timeout: the sync stream lives for hours.
        let mut client = outbound::builder(controller.ca_file.as_deref(), CONNECT_TIMEOUT, None)?;
        if let Some(cert) = &controller.client_cert {
            client = client.identity(outbound::identity(cert)?);
        }
        let client = client.build().map_err(|e| error_chain(&e))?;
        metrics
            .applied
            .set(gauge(state.applied.load(Ordering::Acquire)));
        // With a controller to take them, the binding's advances and marks
        // are queued for the fleet.
        engine.publish_bindings();
        Ok(Self {
            engine,
            controller,
            client,
            state,
            outbox,
            metrics,
            version: AtomicU32::new(0),
            heard: Notify::new(),
            open: None,
            decisions: None,
            rules: None,
            replayed_rules: Mutex::new(None),
            dbsc: None,
            bindings_posted: AtomicU64::new(0),
            parked_marks: Mutex::new((0, Vec::new())),
            dbsc_resent_at: AtomicU64::new(0),
            dbsc_resend: Mutex::new(Vec::new()),
            dbsc_resend_next: Mutex::new(None),
            counts: None,
        })
    }

    /// Binds sessions in `dbsc` as the fleet's DBSC records say
    /// ([`Change::DbscBound`]).
    pub fn with_dbsc(
        mut self,
        dbsc: Arc<crate::dbsc::Dbsc>,
        settings: crate::dbsc::Settings,
    ) -> Self {
        self.dbsc = Some((dbsc, settings));
        self
    }

    /// Posts this node's counts every minute ([`vigil_fleet::NodeCounts`]),
    /// read from `metrics`, with rules' actions from the generation in
    /// force in `current`.
    pub fn with_counts(
        mut self,
        metrics: crate::metrics::Metrics,
        current: crate::generation::Current,
    ) -> Self {
        self.counts = Some((metrics, current));
        self
    }

    /// Ends the requests in flight `open` holds of every session and user
    /// the fleet revokes or erases ([`crate::open_requests`]).
    pub fn with_open_requests(mut self, open: OpenRequests) -> Self {
        self.open = Some(open);
        self
    }

    /// Ends this node's requests in flight of a session just revoked.
    fn end_session(&self, key: &SessionKey) {
        if let Some(open) = &self.open {
            open.end_session(key);
        }
    }

    /// Ends this node's requests in flight of a user just revoked or
    /// erased: filed as theirs, or of a session the engine now holds
    /// revoked.
    fn end_user(&self, user: UserKey) {
        if let Some(open) = &self.open {
            let scorer = self.engine.scorer();
            open.end_user(user, |s| scorer.is_revoked(s));
        }
    }

    /// Carries out false positives reported at the controller
    /// ([`Change::FalsePositive`]) for refusals kept in `decisions` (the
    /// operator API's own): the node that refused the request acts on it.
    pub fn with_decisions(mut self, decisions: Decisions) -> Self {
        self.decisions = Some(decisions);
        self
    }

    /// Takes the rule bundles the controller streams with `applier`
    /// (built once the first generation is), starting with the last one
    /// the journal's replay met, if any.
    pub fn with_rules(mut self, applier: Arc<crate::rules_bundle::BundleApplier>) -> Self {
        let replayed = self
            .replayed_rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(bundle) = replayed {
            applier.take(bundle);
        }
        self.rules = Some(applier);
        self
    }

    async fn sync_loop(&self, mut shutdown: ShutdownWatch) {
        let mut cursor = Cursor::new(self.state.applied.load(Ordering::Acquire));
        let mut attempt: u32 = 0;
        let mut was_up = true;
        loop {
            let started = Instant::now();
            let (end, hello) = tokio::select! {
                r = self.stream(&mut cursor) => r,
                _ = shutdown.changed() => return,
            };
            self.metrics.connected.set(0);
            self.metrics
                .reconnects
                .with_label_values(&[end.code()])
                .inc();
            let healthy = hello && started.elapsed() >= HEALTHY;
            match &end {
                End::Resync(why) => {
                    self.metrics.resyncs.with_label_values(&[why.code()]).inc();
                    tracing::info!(reason = %why, "fleet sync: asking the controller for a full snapshot");
                    attempt = 0;
                }
                _ if healthy => attempt = 0,
                _ => attempt = attempt.saturating_add(1),
            }
            // Said once when the controller goes away, not on every retry.
            if was_up && !matches!(end, End::Resync(_)) {
                tracing::warn!(
                    url = %self.controller.url,
                    error = %end,
                    applied = cursor.applied(),
                    "fleet sync: controller stream down; enforcing with what this node has"
                );
            } else {
                tracing::debug!(error = %end, "fleet sync: reconnecting");
            }
            was_up = hello;
            tokio::select! {
                () = tokio::time::sleep(jittered(attempt)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// `request` with the node's token, when it has one (a node with a
    /// client certificate alone proves who it is in the TLS handshake).
    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.controller.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// One stream, until it ends; whether its hello was read.
    async fn stream(&self, cursor: &mut Cursor) -> (End, bool) {
        let since = cursor.since();
        let url = format!("{}/v1/sync?since={since}", self.controller.url);
        let request = self
            .authorized(self.client.get(&url))
            .header(http::header::ACCEPT, "application/x-ndjson")
            .header(VERSION_HEADER, VERSION)
            .send();
        let mut response = match tokio::time::timeout(CONNECT_TIMEOUT, request).await {
            Err(_) => return (End::Connect("timed out".into()), false),
            Ok(Err(e)) => return (End::Connect(error_chain(&e)), false),
            Ok(Ok(r)) => r,
        };
        match response.status().as_u16() {
            200 => {}
            401 => return (End::Unauthorized, false),
            s => return (End::Status(s), false),
        }
        cursor.connected();
        let mut lines = Lines::default();
        let mut hello = false;
        let mut deadline = Instant::now() + SILENCE;
        loop {
            let chunk = match tokio::time::timeout_at(deadline, response.chunk()).await {
                Err(_) => return (End::Silent, hello),
                Ok(Err(e)) => return (End::Closed(Some(error_chain(&e))), hello),
                Ok(Ok(None)) => return (End::Closed(None), hello),
                Ok(Ok(Some(chunk))) => chunk,
            };
            let complete = match lines.push(&chunk) {
                Ok(l) => l,
                Err(e) => return (End::Protocol(e.to_string()), hello),
            };
            if !complete.is_empty() {
                deadline = Instant::now() + SILENCE;
            }
            for line in complete {
                let frame = match vigil_fleet::read_frame(&line) {
                    Ok(f) => f,
                    Err(e) => return (End::Protocol(e.to_string()), hello),
                };
                match cursor.on_frame(frame) {
                    Action::Apply { changes, then } => {
                        // Write-ahead: on disk before the engine has it
                        // and before `applied` says so.
                        self.state.journal(&changes, then);
                        self.apply(&changes);
                        if let Some(seq) = then {
                            self.state.applied.store(seq, Ordering::Release);
                            self.metrics.applied.set(gauge(seq));
                        }
                    }
                    Action::Nothing => {}
                    Action::Resync(why) => return (End::Resync(why), hello),
                    Action::Reconnect(v) => return (End::Protocol(v.to_string()), hello),
                }
                if cursor.current() {
                    self.state
                        .current_at
                        .store(crate::proxy::now_secs(), Ordering::Relaxed);
                }
                if !hello {
                    hello = true;
                    self.version.store(cursor.version(), Ordering::Release);
                    self.heard.notify_one();
                    self.metrics.connected.set(1);
                    self.dbsc_resend();
                    tracing::debug!(since, head = cursor.head(), "fleet sync: stream open");
                }
                self.metrics.head.set(gauge(cursor.head()));
            }
        }
    }

    /// Carries `changes` out on the engine.
    fn apply(&self, changes: &[Change]) {
        let now = crate::proxy::now_secs();
        for change in changes {
            // A controller's clock ahead of ours must not lengthen what it
            // sets here.
            let kind = match *change {
                Change::SessionRevoked {
                    session,
                    at,
                    vouched,
                } => {
                    let key = SessionKey::from_bytes(session.0);
                    if vouched {
                        self.engine.revoke_vouched(key, at.min(now));
                    } else {
                        self.engine.revoke(key, at.min(now));
                    }
                    self.end_session(&key);
                    "session_revoked"
                }
                Change::UserRevoked { user, at } => {
                    if let Some(user) = UserKey::from_u64(user.0) {
                        self.engine.revoke_user(user, at.min(now));
                        self.end_user(user);
                    }
                    "user_revoked"
                }
                Change::UserStepUp { user, at } => {
                    if let Some(user) = UserKey::from_u64(user.0) {
                        self.engine.require_step_up(user, at.min(now));
                    }
                    "user_step_up"
                }
                Change::UserRisk {
                    user,
                    points,
                    until,
                    ..
                } => {
                    if let Some(user) = UserKey::from_u64(user.0) {
                        let ttl = Duration::from_secs(until.saturating_sub(now));
                        self.engine.report_user(user, points, ttl, now);
                    }
                    "user_risk"
                }
                Change::SessionBaseline {
                    ref record,
                    confirmed,
                } => match self.engine.scorer().adopt(&record.0, confirmed, now) {
                    Ok((_, Adopted::New | Adopted::Baseline | Adopted::Bound)) => {
                        "session_baseline"
                    }
                    Ok((_, Adopted::Kept | Adopted::Revoked)) => "session_baseline_unchanged",
                    Err(e) => {
                        // A record of a later release: this node cannot
                        // judge it and does without.
                        tracing::debug!(error = %e, "fleet sync: session record not taken");
                        "session_baseline_refused"
                    }
                },
                Change::UserDetections { user, count, until } => {
                    if let Some(user) = UserKey::from_u64(user.0) {
                        self.engine.scorer().fleet_detections(
                            user,
                            count,
                            until.min(now.saturating_add(86_400)),
                            now,
                        );
                    }
                    "user_detections"
                }
                Change::UserErased { user, at } => {
                    if let Some(user) = UserKey::from_u64(user.0) {
                        self.engine.scorer().erase_user(user, at.min(now));
                        self.end_user(user);
                    }
                    "user_erased"
                }
                Change::UserProfile { user, ref record } => match UserKey::from_u64(user.0) {
                    Some(user) if self.engine.scorer().join_profile(user, &record.0, now) => {
                        "user_profile"
                    }
                    // A record of another length (a later release's):
                    // this node does without.
                    _ => "user_profile_refused",
                },
                Change::Population {
                    ref totals,
                    ref counters,
                } => {
                    // Bounded as the protocol says; a longer change is not
                    // one this version's controller writes.
                    self.engine.scorer().join_population(
                        totals.get(..POPULATION_FEATURES).unwrap_or(totals),
                        counters.get(..MAX_POPULATION_COUNTERS).unwrap_or(counters),
                    );
                    "population"
                }
                Change::DeviceTrusted { user, device, .. } => match UserKey::from_u64(user.0) {
                    Some(user) => self.feedback(
                        Feedback::TrustDevice {
                            user,
                            device: DeviceId(device.0),
                        },
                        now,
                        ("device_trusted", "device_trusted_refused"),
                    ),
                    None => "device_trusted_refused",
                },
                Change::NetworkTrusted { user, network, .. } => {
                    let network = match network {
                        TrustedNetwork::Asn { asn } => Some(vigil_engine::TrustedNetwork::Asn(asn)),
                        TrustedNetwork::Prefix { prefix } => {
                            Some(vigil_engine::TrustedNetwork::Prefix(prefix))
                        }
                        TrustedNetwork::Country { country } => {
                            Some(vigil_engine::TrustedNetwork::Country(country.0))
                        }
                        // A later version's network: this node does without.
                        TrustedNetwork::Unknown => None,
                    };
                    match (UserKey::from_u64(user.0), network) {
                        (Some(user), Some(network)) => self.feedback(
                            Feedback::TrustNetwork { user, network },
                            now,
                            ("network_trusted", "network_trusted_refused"),
                        ),
                        _ => "network_trusted_refused",
                    }
                }
                Change::FalsePositive { ref reference, .. } => {
                    // Only the node that refused the request holds its
                    // reference: it adopts the request for the session
                    // and posts the baseline, confirmed, which reaches
                    // every other node as a change of its own (the
                    // controller streams the trust for the user from the
                    // detection's facts with this change).
                    match self.decisions.as_ref().and_then(|d| d.get(reference)) {
                        Some(refused) => self.feedback(
                            Feedback::FalsePositive {
                                session: refused.session,
                                device: refused.device,
                                network: refused.network,
                            },
                            now,
                            ("false_positive", "false_positive_refused"),
                        ),
                        None => "false_positive_elsewhere",
                    }
                }
                Change::RulesBundle {
                    version,
                    ref sha256,
                    created_at,
                    ref text,
                } => {
                    let bundle = crate::rules_bundle::StoredBundle {
                        version,
                        sha256: sha256.clone(),
                        created_at,
                        text: text.clone(),
                    };
                    match &self.rules {
                        Some(rules) => match rules.take(bundle) {
                            crate::rules_bundle::Outcome::Applied => "rules_bundle",
                            crate::rules_bundle::Outcome::Unchanged => "rules_bundle_unchanged",
                            crate::rules_bundle::Outcome::Rejected(_) => "rules_bundle_rejected",
                        },
                        // Replayed from the journal at start, before the
                        // first generation; or a node on its own files.
                        None => {
                            *self
                                .replayed_rules
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner) = Some(bundle);
                            "rules_bundle_skipped"
                        }
                    }
                }
                Change::DbscBound { ref binding } => match &self.dbsc {
                    Some((dbsc, settings)) => dbsc.adopt(settings, binding, now),
                    None => "dbsc_bound_unchanged",
                },
                // Joined with what this node holds: never lower, never a
                // mark undone; not published again.
                Change::SessionBinding(ref record) => {
                    if self.engine.merge_binding(&binding_of(record), now) {
                        "session_binding"
                    } else {
                        "session_binding_unchanged"
                    }
                }
                // A later version's change: skipped, its number kept.
                Change::Unknown => "unknown",
            };
            self.metrics.changes.with_label_values(&[kind]).inc();
        }
    }

    /// Gives the engine an operator's feedback from the controller; the
    /// metric kind: `applied`, or `refused` when the engine refused it (the
    /// session was revoked since, or is no longer known).
    fn feedback(
        &self,
        feedback: Feedback,
        now: u64,
        (applied, refused): (&'static str, &'static str),
    ) -> &'static str {
        match self.engine.feedback(feedback, now) {
            Ok(()) => applied,
            Err(e) => {
                tracing::info!(error = %e, kind = applied, "fleet sync: operator feedback from the controller not applied");
                refused
            }
        }
    }

    /// Applies again what the journal holds (read at start, after the
    /// session snapshot was restored, before anything is served), and
    /// moves the cursor as far as it proves ([`journal::replayed_cursor`]).
    pub fn replay(&self, entries: &[journal::Entry]) {
        if entries.is_empty() {
            return;
        }
        let restored = self.state.applied.load(Ordering::Acquire);
        for entry in entries {
            self.apply(entry.changes());
        }
        let applied = journal::replayed_cursor(restored, entries);
        self.state.applied.store(applied, Ordering::Release);
        self.metrics.applied.set(gauge(applied));
        tracing::info!(
            entries = entries.len(),
            restored,
            applied,
            "fleet sync: journal replayed after the snapshot"
        );
    }

    /// Ends again, on the engine, the sessions this node revoked itself
    /// and has not had taken by the controller yet: they wait in the
    /// on-disk queue, and a node killed before its next snapshot would
    /// otherwise forget them until the controller streams them back.
    /// Called at start, before anything is served; the revocations are
    /// not queued again (they are not this run's decisions).
    #[allow(
        irrefutable_let_patterns,
        reason = "revocations are one kind of node event among more to come; only they are replayed"
    )]
    pub fn replay_queued(&self) {
        let now = crate::proxy::now_secs();
        let mut n = 0;
        for event in self.outbox.queued() {
            if let NodeEventKind::SessionRevoked {
                session, user, at, ..
            } = event.kind
            {
                let key = SessionKey::from_bytes(session.0);
                // As the controller vouches for it: a session bound to a
                // user.
                if user.is_some() {
                    self.engine.revoke_vouched(key, at.min(now));
                } else {
                    self.engine.revoke(key, at.min(now));
                }
                n += 1;
            }
        }
        if n > 0 {
            tracing::info!(
                revocations = n,
                "fleet events: this node's unsent revocations applied again"
            );
        }
    }

    /// Keeps `vigil_proxy_fleet_state_age_seconds` current.
    async fn age_loop(&self, mut shutdown: ShutdownWatch) {
        loop {
            let age = self.state.age(crate::proxy::now_secs());
            self.metrics.state_age.set(gauge(age));
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Once a minute, just after it turns: the counts of the minute just
    /// over, posted in a batch of their own (the same authenticated post
    /// as every event; id `c-<run>-<minute>`, so a retry is a duplicate,
    /// and the controller replaces rather than adds anyway). Held in memory
    /// until taken, at most [`MAX_PENDING_COUNTS`] minutes (the oldest
    /// dropped beyond), never in the on-disk queue: counts are telemetry,
    /// and must not take the room of revocations and detections while the
    /// controller is away. A controller of version 4 or older is sent none.
    async fn counts_loop(&self, mut shutdown: ShutdownWatch) {
        let Some((metrics, current)) = &self.counts else {
            return;
        };
        let mut tally = counts::Tally::new(metrics.clone());
        let mut pending: std::collections::VecDeque<NodeEvent> = std::collections::VecDeque::new();
        loop {
            let now = crate::proxy::now_secs();
            let next = Duration::from_secs(60 - now % 60) + Duration::from_millis(200);
            tokio::select! {
                () = tokio::time::sleep(next) => {}
                _ = shutdown.changed() => return,
            }
            let minute = (crate::proxy::now_secs() / 60).saturating_sub(1);
            let generation = current.load();
            if let Some(counts) = tally.take(minute, &generation.config.rules) {
                if pending.len() >= MAX_PENDING_COUNTS {
                    pending.pop_front();
                    tracing::debug!(
                        "fleet counts: the oldest minute held for the controller dropped"
                    );
                }
                pending.push_back(NodeEvent {
                    id: format!("c-{}-{}", counts.run, counts.minute),
                    kind: NodeEventKind::Counts(counts),
                });
            }
            if pending.is_empty() || self.version.load(Ordering::Acquire) == 0 {
                continue;
            }
            let result = tokio::select! {
                r = self.post(pending.iter().cloned().collect()) => r,
                _ = shutdown.changed() => return,
            };
            match result {
                Ok(_) => pending.clear(),
                Err(PostError::Refused(status)) => {
                    tracing::warn!(
                        status,
                        minutes = pending.len(),
                        "fleet counts: the controller refused them; dropped"
                    );
                    pending.clear();
                }
                Err(PostError::Retry(e)) => {
                    tracing::debug!(error = %e, minutes = pending.len(), "fleet counts: not delivered; held for the next minute");
                }
            }
        }
    }

    async fn post_loop(&self, mut shutdown: ShutdownWatch) {
        let mut attempt: u32 = 0;
        loop {
            // Which events the controller takes is known from its hello.
            if self.version.load(Ordering::Acquire) == 0 {
                tokio::select! {
                    () = self.heard.notified() => continue,
                    _ = shutdown.changed() => return,
                }
            }
            let Some((last, events)) = self.outbox.batch() else {
                tokio::select! {
                    () = self.outbox.ready.notified() => continue,
                    _ = shutdown.changed() => return,
                }
            };
            let count = events.len();
            let result = tokio::select! {
                r = self.post(events) => r,
                _ = shutdown.changed() => return,
            };
            match result {
                Ok(_) => {
                    self.outbox.remove_through(last);
                    self.metrics.events_sent.inc_by(count as u64);
                    attempt = 0;
                    continue;
                }
                Err(PostError::Refused(status)) => {
                    let n = self.outbox.remove_through(last);
                    self.metrics.events_dropped.inc_by(n);
                    tracing::warn!(
                        status,
                        events = n,
                        "fleet events: the controller refused a batch as malformed; dropped"
                    );
                    continue;
                }
                Err(PostError::Retry(e)) => {
                    self.metrics.events_retried.inc();
                    if attempt == 0 {
                        tracing::warn!(error = %e, events = count, "fleet events: not delivered; retrying");
                    } else {
                        tracing::debug!(error = %e, attempt, "fleet events: not delivered; retrying");
                    }
                    attempt = attempt.saturating_add(1);
                }
            }
            tokio::select! {
                () = tokio::time::sleep(jittered(attempt)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// On a stream's hello: when the outbox dropped events since the last
    /// time (it drops its oldest when full, as while the controller is
    /// away long), this node's DBSC registrations may be among them, and
    /// the other nodes would never learn those bindings. So every binding
    /// this node holds is queued to be sent again (the controller takes
    /// what it holds already as held). Rotating-binding records and marks
    /// need nothing of the kind: they wait in the engine until taken.
    fn dbsc_resend(&self) {
        let Some((dbsc, _)) = &self.dbsc else { return };
        let dropped = self.metrics.events_dropped.get();
        if dropped <= self.dbsc_resent_at.swap(dropped, Ordering::AcqRel) {
            return;
        }
        let records = dbsc.records();
        if records.is_empty() {
            return;
        }
        tracing::info!(
            bindings = records.len(),
            "fleet events: events were dropped while the controller was away; sending this node's DBSC bindings again"
        );
        *self
            .dbsc_resend
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = records;
    }

    /// Posts a batch of the DBSC records waiting to be sent again
    /// ([`FleetSync::dbsc_resend`]); how many were taken.
    async fn post_dbsc_resend(&self) -> Result<usize, String> {
        let now = tokio::time::Instant::now();
        {
            let mut next = self
                .dbsc_resend_next
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if next.is_some_and(|at| now < at) {
                return Ok(0);
            }
            *next = Some(now + RESEND_EVERY);
        }
        let batch: Vec<vigil_fleet::DbscBinding> = {
            let mut waiting = self
                .dbsc_resend
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let n = waiting.len().min(RESEND_BATCH);
            waiting.drain(..n).collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let events: Vec<NodeEvent> = batch
            .iter()
            .map(|binding| NodeEvent {
                id: format!(
                    "{}-b{}",
                    self.outbox.prefix,
                    self.bindings_posted.fetch_add(1, Ordering::Relaxed)
                ),
                kind: NodeEventKind::DbscBound {
                    binding: binding.clone(),
                },
            })
            .collect();
        match self.post(events).await {
            Ok(_) => {
                self.metrics.events_sent.inc_by(batch.len() as u64);
                Ok(batch.len())
            }
            Err(PostError::Refused(status)) => {
                tracing::warn!(
                    status,
                    records = batch.len(),
                    "fleet events: the controller refused DBSC records sent again as malformed; dropped"
                );
                Ok(0)
            }
            Err(PostError::Retry(e)) => {
                let mut waiting = self
                    .dbsc_resend
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let later = std::mem::replace(&mut *waiting, batch);
                waiting.extend(later);
                *self
                    .dbsc_resend_next
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(now + RESEND_PAUSE);
                Err(e)
            }
        }
    }

    /// Posts binding records apart from the durable queue of events, so
    /// that neither waits for the other: a refusal (429) or a failure of
    /// one leaves the other going (review finding 2).
    async fn bindings_loop(&self, mut shutdown: ShutdownWatch) {
        let mut attempt: u32 = 0;
        loop {
            // Until the controller's hello is heard (`heard` wakes one
            // waiter, the events' poster): looked at every 50 ms.
            if self.version.load(Ordering::Acquire) == 0 {
                tokio::select! {
                    () = tokio::time::sleep(BINDINGS_EVERY) => continue,
                    _ = shutdown.changed() => return,
                }
            }
            let posted = tokio::select! {
                r = async {
                    // Binding records (a compromised mark among them)
                    // first, whatever becomes of the bindings sent again:
                    // a batch of those the controller does not take
                    // pauses only them (review of the re-send, finding 1).
                    let posted = self.post_bindings().await?;
                    if let Err(e) = self.post_dbsc_resend().await {
                        tracing::debug!(error = %e, "fleet events: DBSC bindings sent again not taken; pausing them");
                    }
                    // Only binding records call for the next post at
                    // once; those sent again keep their own pace.
                    Ok::<usize, String>(posted)
                } => r,
                _ = shutdown.changed() => return,
            };
            let wait = match posted {
                // More may be waiting: at once.
                Ok(n) if n > 0 => {
                    attempt = 0;
                    continue;
                }
                Ok(_) => BINDINGS_EVERY,
                Err(e) => {
                    self.metrics.events_retried.inc();
                    tracing::debug!(error = %e, attempt, "fleet events: binding records not delivered; retrying");
                    attempt = attempt.saturating_add(1);
                    jittered(attempt)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Posts the binding records waiting (at most a batch): each session's
    /// state as it is now, once however often it advanced since the last
    /// post. Records that could not be delivered wait again; a controller
    /// of a version before bindings takes none, so they are dropped.
    /// Returns how many were delivered.
    async fn post_bindings(&self) -> Result<usize, String> {
        let now = crate::proxy::now_secs();
        {
            let mut parked = self
                .parked_marks
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !parked.1.is_empty() && now >= parked.0 {
                let marks = std::mem::take(&mut parked.1);
                self.engine.bindings_unsent_again(&marks);
            }
        }
        let records = self.engine.unsent_bindings(MAX_EVENTS, now);
        if records.is_empty() {
            return Ok(0);
        }
        if self.version.load(Ordering::Acquire) < BINDINGS_SINCE {
            return Ok(0);
        }
        let events: Vec<NodeEvent> = records
            .iter()
            .map(|r| NodeEvent {
                id: format!(
                    "{}-b{}",
                    self.outbox.prefix,
                    self.bindings_posted.fetch_add(1, Ordering::Relaxed)
                ),
                kind: NodeEventKind::SessionBinding(record_of(r)),
            })
            .collect();
        let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        match self.post(events).await {
            Ok(ack) => {
                // Marks beyond the node's allowance this minute: taken
                // without the mark, which waits to be posted again.
                let again: Vec<vigil_engine::FleetBinding> = records
                    .iter()
                    .zip(&ids)
                    .filter(|(_, id)| ack.retry.contains(id))
                    .map(|(r, _)| *r)
                    .collect();
                if !again.is_empty() {
                    tracing::debug!(
                        marks = again.len(),
                        "fleet events: compromised marks beyond the controller's allowance; posted again next minute"
                    );
                    let mut parked = self
                        .parked_marks
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    // The controller's allowance is per minute of its
                    // clock: held until the next minute of this one.
                    parked.0 = (now / 60 + 1) * 60;
                    parked.1.extend(again.iter().copied());
                }
                self.metrics
                    .events_sent
                    .inc_by((records.len() - again.len()) as u64);
                // Only what was taken counts: marks waiting do not make
                // the loop post again at once.
                Ok(records.len() - again.len())
            }
            Err(PostError::Refused(status)) => {
                self.metrics.events_dropped.inc_by(records.len() as u64);
                tracing::warn!(
                    status,
                    records = records.len(),
                    "fleet events: the controller refused binding records as malformed; dropped"
                );
                Ok(0)
            }
            Err(PostError::Retry(e)) => {
                self.engine.bindings_unsent_again(&records);
                Err(e)
            }
        }
    }

    async fn post(&self, events: Vec<NodeEvent>) -> Result<EventAck, PostError> {
        // A controller of an older version would refuse the whole batch
        // for an event it does not know: those are left out.
        let v = self.version.load(Ordering::Acquire).clamp(1, VERSION);
        let events: Vec<NodeEvent> = events.into_iter().filter(|e| e.kind.since() <= v).collect();
        if events.is_empty() {
            return Ok(EventAck::default());
        }
        let body = serde_json::to_vec(&EventBatch { v, events })
            .map_err(|e| PostError::Retry(e.to_string()))?;
        let response = self
            .authorized(
                self.client
                    .post(format!("{}/v1/events", self.controller.url)),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .timeout(POST_TIMEOUT)
            .body(body)
            .send()
            .await
            .map_err(|e| PostError::Retry(error_chain(&e)))?;
        let status = response.status().as_u16();
        match status {
            200..=299 => {}
            // Not the batch's fault: the token, a timeout, a busy server.
            401 | 403 | 408 | 429 => {
                return Err(PostError::Retry(format!(
                    "the controller answered {status}"
                )));
            }
            400..=499 => return Err(PostError::Refused(status)),
            _ => {
                return Err(PostError::Retry(format!(
                    "the controller answered {status}"
                )));
            }
        }
        // The status says the batch was taken; the ack's counts are for
        // the log, its `retry` for binding records' marks.
        let body = outbound::body(response, MAX_ACK_BYTES)
            .await
            .unwrap_or_default();
        let ack = serde_json::from_slice::<EventAck>(&body).unwrap_or_default();
        tracing::debug!(
            accepted = ack.accepted,
            duplicates = ack.duplicates,
            retry = ack.retry.len(),
            "fleet events: delivered"
        );
        Ok(ack)
    }
}

#[async_trait]
impl BackgroundService for FleetSync {
    async fn start(&self, shutdown: ShutdownWatch) {
        tokio::join!(
            self.sync_loop(shutdown.clone()),
            self.post_loop(shutdown.clone()),
            self.bindings_loop(shutdown.clone()),
            self.counts_loop(shutdown.clone()),
            self.age_loop(shutdown)
        );
    }
}

impl std::fmt::Debug for FleetSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetSync")
            .field("controller", &self.controller)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// The engine's form of a streamed binding record.
fn binding_of(r: &BindingRecord) -> vigil_engine::FleetBinding {
    vigil_engine::FleetBinding {
        session: SessionKey::from_bytes(r.session.0),
        generation: r.generation,
        nonce: r.nonce,
        previous_nonce: r.previous_nonce,
        issued_at: r.issued_at,
        presented_at: r.presented_at,
        compromised: r.compromised,
    }
}

/// The protocol's form of this node's binding record.
fn record_of(r: &vigil_engine::FleetBinding) -> BindingRecord {
    BindingRecord {
        session: SessionId(*r.session.as_bytes()),
        generation: r.generation,
        nonce: r.nonce,
        previous_nonce: r.previous_nonce,
        issued_at: r.issued_at,
        presented_at: r.presented_at,
        compromised: r.compromised,
    }
}

/// A gauge's value: sequences beyond `i64` are shown as its maximum.
fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

mod counts;
mod outgoing;
#[cfg(test)]
mod tests;
