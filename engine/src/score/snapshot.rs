//! Snapshots and records: the node's state as one file to restore after a
//! restart ([`Scorer::snapshot`], [`Scorer::restore`]), and a session's
//! state as a record for a snapshot or another node ([`Scorer::export`],
//! [`Scorer::import`]).

use std::sync::{Arc, Mutex, PoisonError};

use super::entity::EntityState;
use super::profile::UserProfile;
use super::{RecordError, Revocation, Scorer, SessionState, UserKey, secs32};
use crate::session::SessionKey;

/// A snapshot starts with this, then the counts of sessions, revocations,
/// profiles and entity flags (u64, little endian), then the session
/// records, the revocations (key, time, user key or 0), the profiles (user
/// key, profile record) and the entity flags (user key, record).
const SNAPSHOT_MAGIC: &[u8; 8] = b"VIGILSS4";
/// The previous release's snapshots: the same but for entity records
/// without a step-up time ([`EntityState::RECORD_LEN_V1`] bytes). Still
/// restored, so that an upgrade keeps every session and flag.
const SNAPSHOT_MAGIC_V2: &[u8; 8] = b"VIGILSS3";
/// The release before: version 1 session records
/// ([`SessionState::RECORD_LEN_V1`] bytes) and entity records as above.
const SNAPSHOT_MAGIC_V1: &[u8; 8] = b"VIGILSS2";
const SNAPSHOT_HEADER: usize = 40;
const REVOCATION_LEN: usize = 32;

/// What [`Scorer::restore`] took in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Restored {
    /// Sessions restored.
    pub sessions: u64,
    /// Revocations restored.
    pub revocations: u64,
    /// User profiles restored.
    pub users: u64,
    /// Records skipped: not decodable, or revocations out of their time.
    pub refused: u64,
}

/// A snapshot that cannot be restored at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// It does not start with the snapshot header.
    #[error("not a Vigil session snapshot")]
    NotASnapshot,
    /// Its length does not match the counts in its header.
    #[error(
        "the snapshot announces {sessions} sessions and {revocations} revocations but holds {bytes} bytes of them"
    )]
    Length {
        /// Sessions announced.
        sessions: usize,
        /// Revocations announced.
        revocations: usize,
        /// Bytes after the header.
        bytes: usize,
    },
}

// === impl Scorer ===

impl Scorer {
    /// The session's state as a record ([`SessionState::encode`]).
    pub fn export(&self, key: &SessionKey) -> Option<[u8; SessionState::RECORD_LEN]> {
        self.sessions.peek(key).map(|s| s.encode(key))
    }

    /// Every session's record, for a snapshot.
    pub fn export_all(&self) -> Vec<[u8; SessionState::RECORD_LEN]> {
        self.sessions
            .entries()
            .iter()
            .map(|(k, s)| s.encode(k))
            .collect()
    }

    /// The node's state as one snapshot, to restore after a restart with
    /// [`Scorer::restore`]: a header (`VIGILSS4`, then the counts of
    /// sessions, revocations, user profiles and entity flags as u64), the
    /// session records ([`SessionState::encode`]), each revocation as the
    /// session key, its time and the revoked user's key (0 for a session
    /// revoked alone), each profile as the user key and a fixed 320-byte
    /// record, each entity flag as the user key and 12 bytes. The
    /// population sketches are not in it: they refill as users sign in.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        // Writing to memory cannot fail.
        let _ = self.write_snapshot(&mut out);
        out.into_inner()
    }

    /// Twice the largest snapshot this scorer could write with its stores
    /// full (the `moka` caches may run over their bound until their
    /// housekeeping catches up): a larger file is not one of its snapshots.
    pub fn max_snapshot_bytes(&self) -> u64 {
        let c = self.config.load();
        let per_session = (SessionState::RECORD_LEN + REVOCATION_LEN) as u64;
        let per_user = (16 + UserProfile::RECORD_LEN + EntityState::RECORD_LEN) as u64;
        (SNAPSHOT_HEADER as u64)
            .saturating_add(c.max_sessions.saturating_mul(per_session))
            .saturating_add(
                super::minted_budget(c.max_sessions).saturating_mul(REVOCATION_LEN as u64),
            )
            .saturating_add(c.max_users.saturating_mul(per_user))
            .saturating_mul(2)
    }

    /// Streams [`Scorer::snapshot`] into `w`, a shard of sessions at a time
    /// (so that it needs no copy of the whole store), then goes back to
    /// write the counts into the header.
    pub fn write_snapshot<W: std::io::Write + std::io::Seek>(
        &self,
        w: &mut W,
    ) -> std::io::Result<()> {
        let start = w.stream_position()?;
        w.write_all(&[0u8; SNAPSHOT_HEADER])?;
        let mut counts = [0u64; 4];
        let mut failed = Ok(());
        self.sessions.for_each_shard(|entries| {
            for (key, state) in entries {
                if failed.is_ok() {
                    failed = w.write_all(&state.encode(key));
                    counts[0] += 1;
                }
            }
        });
        failed?;
        // Both budgets; restored into the main one (the file's size is
        // bounded all the same).
        for (key, r) in self.revoked.iter().chain(self.minted.iter()) {
            w.write_all(key.as_bytes())?;
            w.write_all(&r.at.to_le_bytes())?;
            w.write_all(&r.by_user.map_or(0, UserKey::as_u64).to_le_bytes())?;
            counts[1] += 1;
        }
        for (user, profile) in self.profiles.iter() {
            let record = profile
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .encode();
            w.write_all(&user.as_u64().to_le_bytes())?;
            w.write_all(&record)?;
            counts[2] += 1;
        }
        for (user, entity) in self.entities.iter() {
            w.write_all(&user.as_u64().to_le_bytes())?;
            w.write_all(&entity.encode())?;
            counts[3] += 1;
        }
        let end = w.stream_position()?;
        w.seek(std::io::SeekFrom::Start(start))?;
        w.write_all(SNAPSHOT_MAGIC)?;
        for n in counts {
            w.write_all(&n.to_le_bytes())?;
        }
        w.seek(std::io::SeekFrom::Start(end))?;
        Ok(())
    }

    /// Takes in a [`Scorer::snapshot`] at `now_secs`: every session record
    /// that decodes (as [`Scorer::import`]), every revocation still within
    /// its time, every user profile and entity flag. A file that is not a
    /// snapshot, or whose length does not match its counts, is refused
    /// whole; a record that does not decode is skipped and counted. The
    /// earlier releases' snapshots (`VIGILSS3`, `VIGILSS2`)
    /// are restored too.
    pub fn restore(&self, snapshot: &[u8], now_secs: u64) -> Result<Restored, SnapshotError> {
        let (header, body) = snapshot
            .split_at_checked(SNAPSHOT_HEADER)
            .ok_or(SnapshotError::NotASnapshot)?;
        let (record_len, entity_len) = match &header[..8] {
            m if m == SNAPSHOT_MAGIC => (SessionState::RECORD_LEN, EntityState::RECORD_LEN),
            m if m == SNAPSHOT_MAGIC_V2 => (SessionState::RECORD_LEN, EntityState::RECORD_LEN_V1),
            m if m == SNAPSHOT_MAGIC_V1 => {
                (SessionState::RECORD_LEN_V1, EntityState::RECORD_LEN_V1)
            }
            _ => return Err(SnapshotError::NotASnapshot),
        };
        let count = |i: usize| {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(&header[8 + 8 * i..16 + 8 * i]);
            usize::try_from(u64::from_le_bytes(eight)).unwrap_or(usize::MAX)
        };
        let counts = [count(0), count(1), count(2), count(3)];
        let sizes = [
            record_len,
            REVOCATION_LEN,
            8 + UserProfile::RECORD_LEN,
            8 + entity_len,
        ];
        let lengths: Option<Vec<usize>> = counts
            .iter()
            .zip(sizes)
            .map(|(n, size)| n.checked_mul(size))
            .collect();
        let total = lengths
            .as_ref()
            .and_then(|l| l.iter().try_fold(0usize, |a, b| a.checked_add(*b)));
        let (Some(lengths), Some(total)) = (lengths, total) else {
            return Err(SnapshotError::Length {
                sessions: counts[0],
                revocations: counts[1],
                bytes: body.len(),
            });
        };
        if total != body.len() {
            return Err(SnapshotError::Length {
                sessions: counts[0],
                revocations: counts[1],
                bytes: body.len(),
            });
        }
        let (records, rest) = body.split_at(lengths[0]);
        let (revoked, rest) = rest.split_at(lengths[1]);
        let (profiles, entities) = rest.split_at(lengths[2]);
        let mut restored = Restored::default();
        for record in records.chunks_exact(record_len) {
            match self.import(record, now_secs) {
                Ok(_) => restored.sessions += 1,
                Err(_) => restored.refused += 1,
            }
        }
        let config = self.config.load();
        let ttl = config
            .revocation_ttl
            .max(config.session_idle_timeout)
            .as_secs();
        for entry in revoked.chunks_exact(REVOCATION_LEN) {
            let (key, times) = entry.split_at(16);
            let (at, user) = times.split_at(8);
            let mut key_bytes = [0u8; 16];
            key_bytes.copy_from_slice(key);
            let at = u64_of(at);
            let by_user = UserKey::from_u64(u64_of(user));
            // A clock behind the snapshot's must not drop a revocation: the
            // time is brought back to now, not refused.
            let at = at.min(now_secs);
            if at.saturating_add(ttl) <= now_secs {
                restored.refused += 1;
                continue;
            }
            let key = SessionKey::from_bytes(key_bytes);
            self.sessions.remove(&key);
            self.revoked.insert(key, Revocation { at, by_user });
            restored.revocations += 1;
        }
        for entry in profiles.chunks_exact(8 + UserProfile::RECORD_LEN) {
            let (user, record) = entry.split_at(8);
            match (UserKey::from_u64(u64_of(user)), UserProfile::decode(record)) {
                (Some(user), Some(profile)) => {
                    self.profiles.insert(user, Arc::new(Mutex::new(profile)));
                    restored.users += 1;
                }
                _ => restored.refused += 1,
            }
        }
        for entry in entities.chunks_exact(8 + entity_len) {
            let (user, record) = entry.split_at(8);
            match (UserKey::from_u64(u64_of(user)), EntityState::decode(record)) {
                (Some(user), Some(entity)) => self.entities.insert(user, entity),
                _ => restored.refused += 1,
            }
        }
        Ok(restored)
    }

    /// Takes in a session's record from a snapshot or another node, at
    /// `now_secs`. A revoked session stays revoked; a record older than the
    /// state held is ignored; times ahead of `now_secs` are brought back to
    /// it.
    pub fn import(&self, record: &[u8], now_secs: u64) -> Result<SessionKey, RecordError> {
        let (key, mut state) = SessionState::decode(record)?;
        let now = secs32(now_secs);
        state.first_seen = state.first_seen.min(now);
        state.last_seen = state.last_seen.min(now);
        state.moved_at = state.moved_at.min(now);
        state.stepped_up_at = state.stepped_up_at.min(now);
        state.touched = state.last_seen;
        if self.is_revoked(&key) {
            return Ok(key);
        }
        self.sessions
            .update(key, state.last_seen, |held| match held {
                Some(held) if held.last_seen > state.last_seen => *held,
                _ => state,
            });
        Ok(key)
    }

    /// Takes in a session's record streamed from the fleet (another node
    /// saw the session first, bound it, or its user passed a step-up there,
    /// `confirmed`), at `now_secs`, without emitting events: the fleet
    /// already knows.
    ///
    /// Unlike [`Scorer::import`], the most recent state does not win: the
    /// *earliest baseline* does. A thief who replays a stolen cookie on this
    /// node before the owner's sighting on another arrives gets a baseline
    /// here first; the owner's, seen earlier, replaces it when it comes, so
    /// that the thief's next request is judged against the owner's device
    /// and network. A confirmed record's baseline replaces the one held
    /// whatever its age: the user proved themselves on that device. This
    /// node's own counters (requests, last seen) stand. A binding is taken
    /// when the session is unbound here; the user's revocation count is
    /// this node's own, as of now (each node counts the revocations it
    /// applied; the controller revokes outright a session bound before its
    /// user's revocation).
    pub fn adopt(
        &self,
        record: &[u8],
        confirmed: bool,
        now_secs: u64,
    ) -> Result<(SessionKey, Adopted), RecordError> {
        let (key, mut state) = SessionState::decode(record)?;
        if self.is_revoked(&key) {
            return Ok((key, Adopted::Revoked));
        }
        let now = secs32(now_secs);
        state.first_seen = state.first_seen.min(now);
        state.last_seen = state.last_seen.min(now);
        state.moved_at = state.moved_at.min(now);
        // Only a confirmed record speaks for a step-up (rules read its
        // age): any other could carry a made-up one.
        state.stepped_up_at = if confirmed {
            state.stepped_up_at.min(now)
        } else {
            0
        };
        // As fresh as its last use, not as its arrival: a resync that
        // brings a month of records must not push out the sessions in use
        // here. One idle for longer than this node keeps sessions is not
        // taken.
        if now.saturating_sub(state.last_seen) >= self.sessions.idle() {
            return Ok((key, Adopted::Kept));
        }
        state.touched = state.last_seen;
        if let Some(user) = state.user {
            state.generation = self.entities.get(&user).map_or(0, |e| e.generation);
        }
        let mut adopted = Adopted::Kept;
        self.sessions.update(key, state.last_seen, |held| {
            let Some(held) = held else {
                adopted = Adopted::New;
                return state;
            };
            let mut next = *held;
            // A session bound here to one user is never given the baseline
            // of a record naming another.
            if held.user.is_some() && state.user.is_some() && held.user != state.user {
                return next;
            }
            let baselined = state.has(SessionState::BASELINED);
            let earlier = baselined
                && (!held.has(SessionState::BASELINED) || state.first_seen < held.first_seen);
            if baselined && (confirmed || earlier) {
                next.set_device(&state.device());
                next.network = state.network;
                next.place = state.place;
                next.previous = state.previous;
                next.moved_at = state.moved_at;
                next.first_seen = held.first_seen.min(state.first_seen);
                next.stepped_up_at = held.stepped_up_at.max(state.stepped_up_at);
                next.flags = (held.flags & (SessionState::LOGIN_SCORED | SessionState::VOUCHED))
                    | (state.flags & !SessionState::LOGIN_SCORED);
                adopted = Adopted::Baseline;
            }
            if next.user.is_none() && state.user.is_some() {
                next.user = state.user;
                next.generation = state.generation;
                next.flags &= !SessionState::LOGIN_SCORED;
                if adopted == Adopted::Kept {
                    adopted = Adopted::Bound;
                }
            }
            next
        });
        Ok((key, adopted))
    }
}

/// What [`Scorer::adopt`] did with another node's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopted {
    /// The session was new here: the record is its state now.
    New,
    /// The record's baseline replaced the one held: it was seen earlier
    /// (the owner's first sighting, not a thief's who reached this node
    /// first), or its user proved themselves on it.
    Baseline,
    /// The session held here was unbound; it is bound to the record's user
    /// now.
    Bound,
    /// What this node holds stands.
    Kept,
    /// The session is revoked here: nothing was taken in.
    Revoked,
}

/// A little-endian u64 from up to 8 bytes (0 for fewer: lengths are checked
/// before).
fn u64_of(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_le_bytes).unwrap_or(0)
}
