//! The changes applied from the sync stream since the last session
//! snapshot, on disk (`controller.journal` in the state directory), so
//! that a node killed outright (SIGKILL, power loss) between two snapshots
//! still holds, when it starts again, every revocation it had applied —
//! the controller may be away when it does.
//!
//! **Write-ahead.** Each frame the stream applies is one
//! [record](super::records) appended and `fsync`'d *before* it is carried
//! out on the engine, and before `applied` moves: whatever the snapshot
//! writer reads as `applied` is in the journal (or in the snapshot). The
//! record holds the frame's changes and where they put the node:
//! [`Entry::Deltas`] (changes `first..=last`), [`Entry::Chunk`] (part of a
//! full snapshot), [`Entry::Whole`] (the full snapshot ended: the node
//! holds everything up to `seq`). Heartbeats are not journaled.
//!
//! **Replay.** At start, after the session snapshot is restored and
//! before anything is served, every entry is applied again in order
//! (revocations are idempotent; user risk is last-writer-wins, and the
//! journal is a contiguous run of frames, so the last one wins here too),
//! and [`replayed_cursor`] says what the node then holds: it moves from
//! the snapshot's cursor only over deltas that follow on without a gap, or
//! to a whole snapshot's sequence. The cursor never claims more than what
//! was restored and replayed.
//!
//! **Compaction.** Once a session snapshot holding everything up to `A` is
//! in place and its cursor written, the entries up to the last one that
//! ends at or below `A` are dropped ([`Journal::compact`]): usually all of
//! them, and the file is emptied.
//!
//! One case is left to the stream: when the controller's log was replaced
//! (its head behind the node's cursor, a full resync), a snapshot written
//! during the resync may record the old log's cursor and drop entries of
//! the new one; the node's next stream then finds the controller behind
//! that cursor and resyncs whole again.
//!
//! **Authenticated.** Records are checked with a MAC under a key derived
//! from the session hash key, as the snapshot is: an entry made under
//! another key, or edited, ends the journal there (cut, logged).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vigil_fleet::Change;

use super::records::{Codec, HEADER};

/// The journal's file name in the state directory.
pub const FILE_NAME: &str = "controller.journal";

/// The largest record: a frame is at most one line of the stream
/// ([`vigil_fleet::MAX_LINE_BYTES`], 1 MiB); its entry holds the same
/// changes, in much the same JSON.
const MAX_RECORD: u32 = 2 << 20;

/// One applied frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
pub enum Entry {
    /// Changes `first..=last` of the log.
    Deltas {
        /// The first change's sequence.
        first: u64,
        /// The last change's sequence.
        last: u64,
        /// The changes.
        changes: Vec<Change>,
    },
    /// Part of a full snapshot.
    Chunk {
        /// The changes.
        changes: Vec<Change>,
    },
    /// A full snapshot ended: the node holds everything up to `seq`.
    Whole {
        /// The snapshot's sequence.
        seq: u64,
    },
}

/// The journal file, open for appending.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    codec: Codec,
    /// Each record's end offset and the sequence its entry ends at (`None`
    /// for a chunk), in file order.
    index: Vec<(u64, Option<u64>)>,
    len: u64,
}

/// What opening found.
#[derive(Debug, Default)]
pub struct Opened {
    /// The entries, in order, to replay.
    pub entries: Vec<Entry>,
    /// Bytes of a torn, corrupt or foreign tail cut off.
    pub cut_bytes: u64,
}

/// The cursor after replaying `entries` over a node that held everything
/// up to `restored` (0: nothing).
pub fn replayed_cursor(restored: u64, entries: &[Entry]) -> u64 {
    let mut cursor = restored;
    let mut broken = false;
    for entry in entries {
        match *entry {
            Entry::Whole { seq } => {
                cursor = seq;
                broken = false;
            }
            Entry::Deltas { first, last, .. } => {
                if !broken && first <= cursor.saturating_add(1) {
                    cursor = cursor.max(last);
                } else {
                    broken = true;
                }
            }
            Entry::Chunk { .. } => {}
        }
    }
    cursor
}

// === impl Entry ===

impl Entry {
    /// The entry for a frame's `changes`, which put the node at `then`
    /// when it is set (`crate::fleet_sync::Action::Apply`).
    pub fn of(changes: &[Change], then: Option<u64>) -> Self {
        match then {
            None => Entry::Chunk {
                changes: changes.to_vec(),
            },
            Some(seq) if changes.is_empty() => Entry::Whole { seq },
            Some(last) => Entry::Deltas {
                first: last.saturating_sub(changes.len() as u64 - 1),
                last,
                changes: changes.to_vec(),
            },
        }
    }

    /// The changes to apply again.
    pub fn changes(&self) -> &[Change] {
        match self {
            Entry::Deltas { changes, .. } | Entry::Chunk { changes } => changes,
            Entry::Whole { .. } => &[],
        }
    }

    fn ends_at(&self) -> Option<u64> {
        match *self {
            Entry::Deltas { last, .. } => Some(last),
            Entry::Whole { seq } => Some(seq),
            Entry::Chunk { .. } => None,
        }
    }
}

// === impl Journal ===

impl Journal {
    /// Opens the journal at `path` (created, mode 0600, if missing) with
    /// records checked under `key`, and reads what it holds; a tail that
    /// does not verify is cut off.
    pub fn open(path: &Path, key: [u8; 32]) -> std::io::Result<(Self, Opened)> {
        let codec = Codec::keyed(key, MAX_RECORD);
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let decoded = codec.decode(&bytes);
        let mut opened = Opened::default();
        let mut index = Vec::new();
        let mut end = 0u64;
        let mut valid = 0u64;
        for record in decoded.records {
            end += (HEADER + record.len()) as u64;
            // Whole and authentic but not understood: a newer version's.
            // The journal ends there, as for a bad record.
            let Ok(entry) = serde_json::from_slice::<Entry>(record) else {
                break;
            };
            index.push((end, entry.ends_at()));
            opened.entries.push(entry);
            valid = end;
        }
        let mut options = OpenOptions::new();
        options.read(true).append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(path)?;
        if valid < bytes.len() as u64 {
            opened.cut_bytes = bytes.len() as u64 - valid;
            file.set_len(valid)?;
            file.sync_all()?;
        }
        Ok((
            Self {
                path: path.to_owned(),
                file,
                codec,
                index,
                len: valid,
            },
            opened,
        ))
    }

    /// Appends `entry` and makes it durable before returning.
    pub fn append(&mut self, entry: &Entry) -> std::io::Result<()> {
        let payload = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        let mut record = Vec::with_capacity(HEADER + payload.len());
        if !self.codec.encode(&payload, &mut record) {
            return Err(std::io::Error::other(format!(
                "a journal entry of {} bytes, more than {}",
                payload.len(),
                self.codec.max()
            )));
        }
        if let Err(e) = self
            .file
            .write_all(&record)
            .and_then(|()| self.file.sync_data())
        {
            // Whatever of it reached the file is cut now, so that later
            // records follow a whole one and the index stays true.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += record.len() as u64;
        self.index.push((self.len, entry.ends_at()));
        Ok(())
    }

    /// Drops the entries a snapshot holding everything up to `applied`
    /// makes redundant: those up to the last one ending at or below it.
    pub fn compact(&mut self, applied: u64) -> std::io::Result<()> {
        let Some(keep_from) = self
            .index
            .iter()
            .rposition(|(_, ends)| ends.is_some_and(|s| s <= applied))
        else {
            return Ok(());
        };
        let cut = self.index.get(keep_from).map_or(0, |(end, _)| *end);
        if cut == self.len {
            self.file.set_len(0)?;
            self.file.sync_all()?;
            self.len = 0;
            self.index.clear();
            return Ok(());
        }
        // Some frames came after: they move to a new file, put in place
        // by a rename.
        let mut rest = Vec::new();
        {
            use std::io::{Read, Seek, SeekFrom};
            let mut reader = &self.file;
            reader.seek(SeekFrom::Start(cut))?;
            reader.read_to_end(&mut rest)?;
        }
        let tmp = self.path.with_extension("journal.tmp");
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut out = options.open(&tmp)?;
        out.write_all(&rest)?;
        out.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        let mut options = OpenOptions::new();
        options.read(true).append(true);
        self.file = options.open(&self.path)?;
        self.index.drain(..=keep_from);
        for (end, _) in &mut self.index {
            *end -= cut;
        }
        self.len -= cut;
        Ok(())
    }

    /// Bytes of the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use vigil_fleet::SessionId;

    const KEY: [u8; 32] = [9; 32];

    fn revoke(i: u8) -> Change {
        Change::SessionRevoked {
            session: SessionId([i; 16]),
            at: 1_700_000_000,
            vouched: true,
        }
    }

    fn deltas(first: u64, n: u8) -> Entry {
        let changes: Vec<Change> = (0..n)
            .map(|i| revoke(u8::try_from(first).unwrap() + i))
            .collect();
        Entry::of(&changes, Some(first + u64::from(n) - 1))
    }

    #[test]
    fn entries_of_frames() {
        assert_eq!(
            Entry::of(&[revoke(1), revoke(2)], Some(8)),
            Entry::Deltas {
                first: 7,
                last: 8,
                changes: vec![revoke(1), revoke(2)]
            }
        );
        assert_eq!(Entry::of(&[], Some(5)), Entry::Whole { seq: 5 });
        assert_eq!(
            Entry::of(&[revoke(1)], None),
            Entry::Chunk {
                changes: vec![revoke(1)]
            }
        );
    }

    #[test]
    fn what_was_appended_is_read_back_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let (mut j, opened) = Journal::open(&path, KEY).unwrap();
        assert!(opened.entries.is_empty());
        j.append(&deltas(1, 2)).unwrap();
        j.append(&deltas(3, 1)).unwrap();
        // No close, no flush beyond the appends' own: as after SIGKILL.
        std::mem::forget(j);
        let (_, opened) = Journal::open(&path, KEY).unwrap();
        assert_eq!(opened.entries, vec![deltas(1, 2), deltas(3, 1)]);
        assert_eq!(replayed_cursor(0, &opened.entries), 3);
    }

    #[test]
    fn a_torn_tail_is_cut_and_appends_follow_the_last_whole_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let (mut j, _) = Journal::open(&path, KEY).unwrap();
        j.append(&deltas(1, 1)).unwrap();
        j.append(&deltas(2, 1)).unwrap();
        drop(j);
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let (mut j, opened) = Journal::open(&path, KEY).unwrap();
        assert_eq!(opened.entries, vec![deltas(1, 1)]);
        assert!(opened.cut_bytes > 0);
        j.append(&deltas(2, 2)).unwrap();
        drop(j);
        let (_, opened) = Journal::open(&path, KEY).unwrap();
        assert_eq!(opened.entries, vec![deltas(1, 1), deltas(2, 2)]);
        assert_eq!(opened.cut_bytes, 0);
    }

    #[test]
    fn a_journal_made_under_another_key_is_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let (mut j, _) = Journal::open(&path, [1; 32]).unwrap();
        j.append(&deltas(1, 1)).unwrap();
        drop(j);
        let (_, opened) = Journal::open(&path, KEY).unwrap();
        assert!(opened.entries.is_empty());
        assert!(opened.cut_bytes > 0);
    }

    #[test]
    fn compaction_keeps_what_came_after_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let (mut j, _) = Journal::open(&path, KEY).unwrap();
        j.append(&deltas(1, 2)).unwrap();
        j.append(&deltas(3, 2)).unwrap();
        j.append(&deltas(5, 1)).unwrap();
        // A snapshot holding up to 4: the entry for 5 stays.
        j.compact(4).unwrap();
        j.append(&deltas(6, 1)).unwrap();
        drop(j);
        let (mut j, opened) = Journal::open(&path, KEY).unwrap();
        assert_eq!(opened.entries, vec![deltas(5, 1), deltas(6, 1)]);
        assert_eq!(replayed_cursor(4, &opened.entries), 6);
        // A snapshot holding everything: the file is emptied.
        j.compact(6).unwrap();
        assert!(j.is_empty());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        // A snapshot older than every entry drops nothing.
        j.append(&deltas(7, 1)).unwrap();
        j.compact(3).unwrap();
        assert_eq!(
            Journal::open(&path, KEY).unwrap().1.entries,
            vec![deltas(7, 1)]
        );
    }

    #[test]
    fn the_cursor_never_crosses_a_gap() {
        // Restored at 10; the journal starts at 12: 11 is missing.
        assert_eq!(replayed_cursor(10, &[deltas(12, 2)]), 10);
        // Entries the snapshot already holds, then more.
        assert_eq!(replayed_cursor(10, &[deltas(8, 3), deltas(11, 2)]), 12);
        // Without a snapshot only a whole one moves it.
        assert_eq!(replayed_cursor(0, &[deltas(5, 1)]), 0);
        let full = [
            Entry::of(&[revoke(1)], None),
            Entry::Whole { seq: 20 },
            deltas(21, 1),
        ];
        assert_eq!(replayed_cursor(0, &full), 21);
        // A snapshot begun and not ended moves nothing.
        assert_eq!(replayed_cursor(10, &[Entry::of(&[revoke(1)], None)]), 10);
        // After a gap, deltas that look contiguous with the old cursor do
        // not count until a whole snapshot.
        assert_eq!(replayed_cursor(10, &[deltas(13, 1), deltas(11, 1)]), 10);
    }
}
