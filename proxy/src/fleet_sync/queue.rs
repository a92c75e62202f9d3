//! The node's events for the controller, on disk: what it decided while
//! the controller was away survives a restart and is sent when it returns
//! (`docs/controller.md`, Edge node).
//!
//! A folder (`controller.events/` in the state directory) of segment
//! files, `<first sequence, 16 hex>.seg`, each a run of
//! [records](super::records): an event (`0`, its queue sequence, its JSON —
//! the id included, so an event sent again after a restart carries the id
//! the controller has already seen and is taken once), or a *gone mark*
//! (`1`, a sequence: every event up to it was sent, or dropped). Segments
//! are only appended to; the newest is the active one, a new one is
//! started when it passes [`Limits::segment_bytes`]; a closed segment is
//! deleted when every event in it is gone, oldest first; when nothing is
//! left at all, every segment goes and the active one is emptied.
//!
//! **Bounded.** At most [`Limits::max_events`] events and
//! [`Limits::max_bytes`] bytes of them; past either the oldest are dropped
//! and counted (`vigil_proxy_fleet_events_dropped_total`).
//!
//! **Crash-safe.** Appends are written by [`Queue::write`] in groups and
//! made durable by one `fsync` per group ([`Queue::write`] hands back the
//! file to sync, so that the sync happens outside the caller's lock). A
//! torn or corrupt tail is cut when the queue is opened, never misread
//! (its records end there). Gone marks are not synced: one lost with a
//! crash sends events again, which the controller takes once.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use vigil_fleet::NodeEvent;

use super::records::{Codec, HEADER};

/// The folder's name in the state directory.
pub const DIR_NAME: &str = "controller.events";

/// The largest event record: an event is a few hundred bytes.
const MAX_RECORD: u32 = 64 * 1024;

const EVENT: u8 = 0;
const GONE: u8 = 1;

/// How much the queue holds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most events kept.
    pub max_events: usize,
    /// Most bytes of events kept (their records' size).
    pub max_bytes: u64,
    /// A segment past this size is closed and a new one started.
    pub segment_bytes: u64,
}

/// The queue: events in memory, in order, mirrored on disk.
#[derive(Debug)]
pub struct Queue {
    dir: PathBuf,
    codec: Codec,
    limits: Limits,
    /// Events not yet gone, oldest first.
    events: VecDeque<Entry>,
    /// The records' bytes of `events`.
    bytes: u64,
    next: u64,
    /// Every event up to this sequence is gone.
    gone: u64,
    /// Closed segments, oldest first, with the highest event sequence each
    /// holds (0 for none).
    closed: VecDeque<(PathBuf, u64)>,
    active: Segment,
    /// Records not yet written.
    pending: Vec<u8>,
    /// Whether `pending` holds a gone mark for `gone`.
    mark_pending: bool,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    event: NodeEvent,
    bytes: u64,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    file: File,
    len: u64,
    /// The highest event sequence in it (0 for none).
    last: u64,
}

/// What opening found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Events waiting to be sent.
    pub events: usize,
    /// Bytes of torn or corrupt tails cut off.
    pub cut_bytes: u64,
    /// Events dropped because they did not fit the limits.
    pub dropped: u64,
}

// === impl Queue ===

impl Queue {
    /// Opens the queue in `dir` (created, mode 0700, if missing), reading
    /// back what an earlier run left: torn tails cut, events already gone
    /// forgotten, the limits applied.
    pub fn open(dir: &Path, limits: Limits) -> std::io::Result<(Self, Opened)> {
        create_dir(dir)?;
        let codec = Codec::checksum(MAX_RECORD);
        let mut opened = Opened::default();
        let mut segments = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if let Some(first) = segment_first(&path) {
                segments.push((first, path));
            }
        }
        segments.sort();
        let mut events = VecDeque::new();
        let mut gone = 0;
        let mut next = 1;
        let mut closed = VecDeque::new();
        for (_, path) in segments {
            let bytes = std::fs::read(&path)?;
            let decoded = codec.decode(&bytes);
            if decoded.valid < bytes.len() {
                opened.cut_bytes += (bytes.len() - decoded.valid) as u64;
                let file = OpenOptions::new().write(true).open(&path)?;
                file.set_len(decoded.valid as u64)?;
                file.sync_all()?;
            }
            if decoded.records.is_empty() {
                std::fs::remove_file(&path)?;
                continue;
            }
            let mut last = 0;
            for record in decoded.records {
                match parse(record) {
                    Some(Record::Event(seq, event)) => {
                        last = last.max(seq);
                        next = next.max(seq.saturating_add(1));
                        let bytes = (HEADER + record.len()) as u64;
                        events.push_back(Entry { seq, event, bytes });
                    }
                    Some(Record::Gone(seq)) => {
                        gone = gone.max(seq);
                        next = next.max(seq.saturating_add(1));
                    }
                    // Whole and checked, but not understood: a newer
                    // version's record. Skipped, not guessed at.
                    None => {}
                }
            }
            closed.push_back((path, last));
        }
        events.retain(|e| e.seq > gone);
        let bytes = events.iter().map(|e| e.bytes).sum();
        let active = Segment::create(dir, next)?;
        let mut queue = Self {
            dir: dir.to_owned(),
            codec,
            limits,
            events,
            bytes,
            next,
            gone,
            closed,
            active,
            pending: Vec::new(),
            mark_pending: false,
        };
        opened.dropped = queue.enforce_limits();
        opened.events = queue.events.len();
        queue.compact()?;
        if let Some(file) = queue.write()? {
            file.sync_all()?;
        }
        sync_dir(dir)?;
        Ok((queue, opened))
    }

    /// Queues `event` (written by the next [`Queue::write`]); returns how
    /// many of the oldest were dropped to make room. An event too large to
    /// be a record is dropped itself (counted).
    pub fn push(&mut self, event: NodeEvent) -> u64 {
        let seq = self.next;
        self.next += 1;
        let mut payload = vec![EVENT];
        payload.extend_from_slice(&seq.to_le_bytes());
        if serde_json::to_writer(&mut payload, &event).is_err()
            || !self.codec.encode(&payload, &mut self.pending)
        {
            self.mark_gone(seq);
            return 1;
        }
        let bytes = (HEADER + payload.len()) as u64;
        self.events.push_back(Entry { seq, event, bytes });
        self.bytes += bytes;
        self.enforce_limits()
    }

    /// Writes what was queued since the last call, and the active segment
    /// is closed and a new one started when it is full; returns the file
    /// to `fsync` to make the group durable (`None`: nothing written).
    pub fn write(&mut self) -> std::io::Result<Option<File>> {
        if self.mark_pending {
            self.mark_pending = false;
            let mut payload = vec![GONE];
            payload.extend_from_slice(&self.gone.to_le_bytes());
            self.codec.encode(&payload, &mut self.pending);
        }
        if self.pending.is_empty() {
            return Ok(None);
        }
        let bytes = std::mem::take(&mut self.pending);
        if let Err(e) = self.active.file.write_all(&bytes) {
            // A half-written group is cut, so that later groups follow
            // whole records; its events stay queued in memory.
            let _ = self.active.file.set_len(self.active.len);
            return Err(e);
        }
        self.active.len += bytes.len() as u64;
        self.active.last = self.events.back().map_or(self.active.last, |e| e.seq);
        let written = self.active.file.try_clone()?;
        if self.active.len >= self.limits.segment_bytes {
            // The closed segment is synced now: later groups sync only
            // the new one.
            self.active.file.sync_all()?;
            let next = Segment::create(&self.dir, self.next)?;
            let old = std::mem::replace(&mut self.active, next);
            self.closed.push_back((old.path, old.last));
            sync_dir(&self.dir)?;
        }
        Ok(Some(written))
    }

    /// The oldest events, at most `max`, and the sequence of the last;
    /// `None` when empty.
    pub fn batch(&self, max: usize) -> Option<(u64, Vec<NodeEvent>)> {
        let last = self
            .events
            .get(max.min(self.events.len()).checked_sub(1)?)?
            .seq;
        let events = self
            .events
            .iter()
            .take(max)
            .map(|e| e.event.clone())
            .collect();
        Some((last, events))
    }

    /// Every event up to sequence `last` is gone (sent, or refused for
    /// good): forgotten here and, as far as segments allow, on disk.
    /// Returns how many were removed (some may have been dropped before),
    /// and whether the files could be brought along.
    pub fn remove_through(&mut self, last: u64) -> (u64, std::io::Result<()>) {
        let mut n = 0;
        while self.events.front().is_some_and(|e| e.seq <= last) {
            if let Some(e) = self.events.pop_front() {
                self.bytes -= e.bytes;
                n += 1;
            }
        }
        if last > self.gone {
            self.gone = last;
            self.mark_pending = true;
        }
        // The gone mark, unsynced: lost, it sends events again.
        let files = self.compact().and_then(|()| self.write().map(drop));
        (n, files)
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Bytes of the segment files.
    pub fn disk_bytes(&self) -> u64 {
        self.active.len
            + self
                .closed
                .iter()
                .filter_map(|(p, _)| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum::<u64>()
    }

    /// Drops the oldest events past the limits (keeping the newest);
    /// returns how many.
    fn enforce_limits(&mut self) -> u64 {
        let mut dropped = 0;
        while self.events.len() > self.limits.max_events.max(1)
            || (self.bytes > self.limits.max_bytes && self.events.len() > 1)
        {
            let Some(e) = self.events.pop_front() else {
                break;
            };
            self.bytes -= e.bytes;
            self.mark_gone(e.seq);
            dropped += 1;
        }
        dropped
    }

    fn mark_gone(&mut self, seq: u64) {
        if seq > self.gone {
            self.gone = seq;
            self.mark_pending = true;
        }
    }

    /// Deletes the closed segments, oldest first, whose events are all
    /// gone; when nothing waits, empties the active one too.
    fn compact(&mut self) -> std::io::Result<()> {
        let mut removed = false;
        while self
            .closed
            .front()
            .is_some_and(|(_, last)| *last <= self.gone)
        {
            if let Some((path, _)) = self.closed.pop_front() {
                std::fs::remove_file(&path)?;
                removed = true;
            }
        }
        if self.events.is_empty() && self.closed.is_empty() {
            // Nothing in it is needed, its gone mark included: no event
            // older than the mark is left anywhere.
            if self.active.len > 0 {
                self.active.file.set_len(0)?;
                self.active.len = 0;
                self.active.last = 0;
            }
            self.mark_pending = false;
            self.pending.clear();
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

enum Record {
    Event(u64, NodeEvent),
    Gone(u64),
}

fn parse(record: &[u8]) -> Option<Record> {
    let (&tag, rest) = record.split_first()?;
    let seq = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
    match tag {
        EVENT => serde_json::from_slice(rest.get(8..)?)
            .ok()
            .map(|e| Record::Event(seq, e)),
        GONE => Some(Record::Gone(seq)),
        _ => None,
    }
}

/// The first sequence a segment's name says, if it is a segment's name.
fn segment_first(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let hex = name.strip_suffix(".seg")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

impl Segment {
    fn create(dir: &Path, first: u64) -> std::io::Result<Self> {
        let path = dir.join(format!("{first:016x}.seg"));
        let mut options = OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            path,
            file,
            len,
            last: 0,
        })
    }
}

fn create_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use vigil_fleet::{NodeEventKind, SessionId};

    fn event(i: u64) -> NodeEvent {
        NodeEvent {
            id: format!("run-{i}"),
            kind: NodeEventKind::SessionRevoked {
                session: SessionId([u8::try_from(i % 256).unwrap(); 16]),
                user: None,
                reference: None,
                at: 1_700_000_000 + i,
            },
        }
    }

    fn limits() -> Limits {
        Limits {
            max_events: 1000,
            max_bytes: 1 << 20,
            segment_bytes: 4096,
        }
    }

    fn ids(q: &Queue) -> Vec<String> {
        q.batch(usize::MAX)
            .map(|(_, e)| e.into_iter().map(|e| e.id).collect())
            .unwrap_or_default()
    }

    fn push_all(q: &mut Queue, range: std::ops::Range<u64>) {
        for i in range {
            q.push(event(i));
        }
        if let Some(f) = q.write().unwrap() {
            f.sync_all().unwrap();
        }
    }

    #[test]
    fn events_survive_a_restart_with_their_ids() {
        let dir = tempfile::tempdir().unwrap();
        let (mut q, opened) = Queue::open(dir.path(), limits()).unwrap();
        assert_eq!(opened, Opened::default());
        push_all(&mut q, 0..5);
        drop(q);
        let (q, opened) = Queue::open(dir.path(), limits()).unwrap();
        assert_eq!(opened.events, 5);
        assert_eq!(
            ids(&q),
            (0..5).map(|i| format!("run-{i}")).collect::<Vec<_>>()
        );
    }

    #[test]
    fn sent_events_are_not_sent_again_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut q, _) = Queue::open(dir.path(), limits()).unwrap();
        push_all(&mut q, 0..5);
        let (last, batch) = q.batch(3).unwrap();
        assert_eq!(batch.len(), 3);
        assert_eq!(q.remove_through(last).0, 3);
        drop(q);
        let (q, _) = Queue::open(dir.path(), limits()).unwrap();
        assert_eq!(ids(&q), vec!["run-3", "run-4"]);
    }

    #[test]
    fn new_events_after_a_restart_come_after_the_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (mut q, _) = Queue::open(dir.path(), limits()).unwrap();
        push_all(&mut q, 0..2);
        drop(q);
        let (mut q, _) = Queue::open(dir.path(), limits()).unwrap();
        push_all(&mut q, 2..4);
        drop(q);
        let (q, _) = Queue::open(dir.path(), limits()).unwrap();
        assert_eq!(ids(&q), vec!["run-0", "run-1", "run-2", "run-3"]);
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_whole_events_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut q, _) = Queue::open(dir.path(), limits()).unwrap();
        push_all(&mut q, 0..3);
        let segment = q.active.path.clone();
        drop(q);
        let whole = std::fs::metadata(&segment).unwrap().len();
        // The third record half written, as a crash mid-write leaves it.
        let file = OpenOptions::new().write(true).open(&segment).unwrap();
        file.set_len(whole - 7).unwrap();
        drop(file);
        let (mut q, opened) = Queue::open(dir.path(), limits()).unwrap();
        assert_eq!(opened.events, 2);
        assert!(opened.cut_bytes > 0);
        assert_eq!(ids(&q), vec!["run-0", "run-1"]);
        // Appends go on from a clean end: a later open reads them all.
        push_all(&mut q, 10..11);
        drop(q);
        let (q, opened) = Queue::open(dir.path(), limits()).unwrap();
        assert_eq!(opened.cut_bytes, 0);
        assert_eq!(ids(&q), vec!["run-0", "run-1", "run-10"]);
    }

    #[test]
    fn a_corrupt_record_ends_its_segment_there() {
        let dir = tempfile::tempdir().unwrap();
        let (mut q, _) = Queue::open(dir.path(), limits()).unwrap();
        push_all(&mut q, 0..3);
        let segment = q.active.path.clone();
        drop(q);
        let mut bytes = std::fs::read(&segment).unwrap();
        let len = bytes.len();
        // A byte of the second record's payload changed.
        let second = len / 3 + HEADER + 4;
        *bytes.get_mut(second).unwrap() ^= 0xff;
        std::fs::write(&segment, &bytes).unwrap();
        let (q, opened) = Queue::open(dir.path(), limits()).unwrap();
        assert_eq!(ids(&q), vec!["run-0"]);
        assert_eq!(opened.cut_bytes, (len - len / 3) as u64);
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let small = Limits {
            max_events: 3,
            ..limits()
        };
        let (mut q, _) = Queue::open(dir.path(), small).unwrap();
        let mut dropped = 0;
        for i in 0..5 {
            dropped += q.push(event(i));
        }
        q.write().unwrap();
        assert_eq!(dropped, 2);
        assert_eq!(ids(&q), vec!["run-2", "run-3", "run-4"]);
        drop(q);
        // The drop holds across a restart.
        let (q, opened) = Queue::open(dir.path(), small).unwrap();
        assert_eq!(opened.dropped, 0);
        assert_eq!(ids(&q), vec!["run-2", "run-3", "run-4"]);
    }

    #[test]
    fn the_byte_bound_drops_the_oldest_too() {
        let dir = tempfile::tempdir().unwrap();
        let (mut q, _) = Queue::open(dir.path(), limits()).unwrap();
        push_all(&mut q, 0..1);
        let one = q.bytes;
        let tight = Limits {
            max_bytes: 2 * one,
            ..limits()
        };
        drop(q);
        let (mut q, _) = Queue::open(dir.path(), tight).unwrap();
        let dropped: u64 = (1..4).map(|i| q.push(event(i))).sum();
        assert_eq!(dropped, 2);
        assert_eq!(ids(&q), vec!["run-2", "run-3"]);
        assert!(q.bytes <= 2 * one);
    }

    #[test]
    fn a_smaller_limit_at_open_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let (mut q, _) = Queue::open(dir.path(), limits()).unwrap();
        push_all(&mut q, 0..6);
        drop(q);
        let small = Limits {
            max_events: 2,
            ..limits()
        };
        let (q, opened) = Queue::open(dir.path(), small).unwrap();
        assert_eq!(opened.dropped, 4);
        assert_eq!(ids(&q), vec!["run-4", "run-5"]);
    }

    #[test]
    fn segments_rotate_and_gone_ones_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut q, _) = Queue::open(dir.path(), limits()).unwrap();
        // About 150 bytes a record: several segments of 4 KiB.
        for i in 0..100 {
            q.push(event(i));
            q.write().unwrap();
        }
        let segments = || std::fs::read_dir(dir.path()).unwrap().count();
        assert!(segments() > 2, "{} segments", segments());
        let (last, _) = q.batch(60).unwrap();
        q.remove_through(last).1.unwrap();
        let after_half = segments();
        assert!(after_half < 5, "{after_half} segments");
        drop(q);
        let (mut q, _) = Queue::open(dir.path(), limits()).unwrap();
        assert_eq!(q.len(), 40);
        assert_eq!(ids(&q).first().map(String::as_str), Some("run-60"));
        let (last, _) = q.batch(usize::MAX).unwrap();
        q.remove_through(last).1.unwrap();
        // Everything sent: one empty active segment is all that is left.
        assert_eq!(segments(), 1);
        assert_eq!(q.disk_bytes(), 0);
        drop(q);
        let (q, opened) = Queue::open(dir.path(), limits()).unwrap();
        assert!(q.is_empty());
        assert_eq!(opened.events, 0);
    }

    #[test]
    fn files_that_are_not_segments_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("README"), "operator's note").unwrap();
        std::fs::write(dir.path().join("zz.seg"), "not hex").unwrap();
        let (q, _) = Queue::open(dir.path(), limits()).unwrap();
        assert!(q.is_empty());
        assert!(dir.path().join("README").exists());
        assert!(dir.path().join("zz.seg").exists());
    }
}
