//! The binding across the fleet (docs/bound-sessions.md, "Across the
//! fleet"): what a node tells the others of a session's binding, how it
//! takes what they tell, and how the binding states outlive a restart.
//!
//! * A node publishes a [`FleetBinding`] when a session's binding
//!   *advances* here — the first presentation of a generation (the first
//!   binding's included), a generation learnt from another node's seal —
//!   or is *marked* compromised. Never per request, never for an issuance
//!   alone (nobody has shown it yet), never for what the fleet told it.
//!   The records wait in a queue that holds each session at most once
//!   (its state's `unsent`): the record sent is the state as it is when
//!   sent, so a newer change replaces a queued one.
//! * A node takes a fleet record with [`join`]: a join in the lattice of
//!   binding states, so that records applied in any order, any number of
//!   times, give the same state — never a lower generation, never a
//!   compromised mark undone. The controller keeps one record per session
//!   with the same join.
//! * Records are only ever made from the state a node holds, and a node's
//!   state only advances on a seal that opened under the fleet's key and
//!   names the session judged: a client can make its own session advance,
//!   never another's.

use std::io::Write;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use super::{BindingState, BindingStore};
use crate::score::secs32;
use crate::session::SessionKey;

/// A session's binding as the fleet carries it: the latest issuance a
/// node knows of, and whether two holders were seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetBinding {
    /// The session.
    pub session: SessionKey,
    /// The generation, from 1.
    pub generation: u32,
    /// Its issuance's nonce (never 0).
    pub nonce: u32,
    /// The nonce of the generation before it (0: not known).
    pub previous_nonce: u32,
    /// When it was issued (seconds since the Unix epoch).
    pub issued_at: u32,
    /// When it was first presented (seconds since the Unix epoch); 0: not
    /// presented (a record of a mark made before the presentation).
    pub presented_at: u32,
    /// Two holders were seen: every request of the session is
    /// `binding_reused`, on every node.
    pub compromised: bool,
}

/// Bytes of one binding state in a snapshot: the session key, the
/// generation, the nonces, the four times, and a flags byte.
pub const SNAPSHOT_ENTRY_LEN: usize = 16 + 4 * 6 + 1;
/// The binding section's magic, at its very end (after its count).
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"VIGILBN1";
/// The section's trailer: the count (u64 LE) and the magic.
const SECTION_TRAILER: usize = 8 + 8;
const COMPROMISED: u8 = 1;
const UNSENT: u8 = 2;
const DOMAIN_WIDE: u8 = 4;

// === impl FleetBinding ===

impl FleetBinding {
    /// Whether the record is one a node writes: a generation from 1 and a
    /// nonce. Anything else is refused where it is read.
    pub fn is_valid(&self) -> bool {
        self.generation != 0 && self.nonce != 0
    }

    /// Whether a node publishes the record: a valid one of an issuance
    /// presented, or of a mark. An issuance alone (nobody showed it yet,
    /// its response may be lost) is never published: receivers would
    /// open the lost-response allowance for the old generation early.
    pub fn is_publishable(&self) -> bool {
        self.is_valid() && (self.presented_at != 0 || self.compromised)
    }

    /// The record of `state` of `session`.
    pub(crate) fn of(session: SessionKey, state: &BindingState) -> FleetBinding {
        FleetBinding {
            session,
            generation: state.generation,
            nonce: state.nonce,
            previous_nonce: state.previous_nonce,
            issued_at: state.issued_at,
            presented_at: state.presented_at,
            compromised: state.compromised,
        }
    }

    /// The order in which issuances supersede each other: a higher
    /// generation; of one generation a presented issuance over one never
    /// presented (a successor presented anywhere ends the lost-response
    /// allowance); of two presented ones, the later issued (a re-issuance
    /// after a lost response is later than the one it replaced), then the
    /// larger nonce, so that every node picks the same.
    fn rank(&self) -> (u32, bool, u32, u32) {
        (
            self.generation,
            self.presented_at != 0,
            self.issued_at,
            self.nonce,
        )
    }

    /// The join of two records of one session: the higher-ranked issuance
    /// ([`FleetBinding::rank`]); of one issuance the earliest presentation
    /// and a known previous nonce; compromised if either is.
    /// Commutative, associative and idempotent: records merged in any
    /// order, any number of times, agree.
    pub fn join(&self, other: &FleetBinding) -> FleetBinding {
        let (hi, lo) = if self.rank() >= other.rank() {
            (self, other)
        } else {
            (other, self)
        };
        let mut out = *hi;
        if hi.rank() == lo.rank() {
            out.presented_at = earliest(hi.presented_at, lo.presented_at);
            out.previous_nonce = hi.previous_nonce.max(lo.previous_nonce);
        }
        out.compromised = self.compromised || other.compromised;
        out
    }

    /// The record with its times no later than `now` (another node's
    /// clock ahead of this one's must not lengthen a grace here).
    fn clamped(mut self, now: u32) -> FleetBinding {
        self.issued_at = self.issued_at.min(now);
        if self.presented_at != 0 {
            self.presented_at = self.presented_at.min(now).max(1);
        }
        self
    }
}

/// The earlier of two presentation times, 0 meaning never.
fn earliest(a: u32, b: u32) -> u32 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (a, b) => a.min(b),
    }
}

/// The state `held` joined with the fleet's record `r` at `now`; `None`
/// when nothing changes (nothing newer, or a session idle for longer
/// than `idle` that this node would not keep).
pub(crate) fn merge(
    held: Option<BindingState>,
    r: &FleetBinding,
    now: u32,
    idle: u32,
) -> Option<BindingState> {
    if !r.is_valid() {
        return None;
    }
    let r = r.clamped(now);
    let Some(s) = held else {
        let touched = r.issued_at.max(r.presented_at);
        if now.saturating_sub(touched) >= idle {
            return None;
        }
        return Some(BindingState {
            generation: r.generation,
            nonce: r.nonce,
            previous_nonce: r.previous_nonce,
            issued_at: r.issued_at,
            presented_at: r.presented_at,
            seen_at: touched,
            compromised: r.compromised,
            unsent: false,
            // The record carries no scope: a lost issuance of it is issued
            // again host-only, never wider than the app's cookie may be.
            domain_wide: false,
        });
    };
    let joined = FleetBinding::of(SessionKey::from_bytes([0; 16]), &s).join(&r);
    let next = BindingState {
        generation: joined.generation,
        nonce: joined.nonce,
        previous_nonce: joined.previous_nonce,
        issued_at: joined.issued_at,
        presented_at: joined.presented_at,
        compromised: joined.compromised,
        ..s
    };
    (next != s).then_some(next)
}

// === impl BindingStore ===

impl BindingStore {
    /// Queues changes for the fleet from now on (a controller is
    /// configured).
    pub(crate) fn publish(&self) {
        self.publishing.store(true, Ordering::Release);
    }

    /// [`BindingStore::update`] for a change the fleet must learn (an
    /// advance, a mark): the session is queued to be published, once.
    pub(crate) fn update_published(
        &self,
        key: SessionKey,
        now: u64,
        f: impl FnOnce(Option<BindingState>) -> Option<BindingState>,
    ) -> Option<BindingState> {
        if !self.publishing.load(Ordering::Acquire) {
            return self.update(key, now, f);
        }
        self.update(key, now, |held| {
            let mut next = f(held)?;
            // Queued once: the flag says the session is in the queue, so
            // it is set only when it is (or already was). The queue's
            // lock is taken inside the shard's, never the other way.
            next.unsent = held.is_some_and(|h| h.unsent)
                || (FleetBinding::of(key, &next).is_publishable() && self.enqueue(key));
            Some(next)
        })
    }

    /// Queues `key`; false when the queue is full (the caller leaves the
    /// state's flag unset, so that its next change queues it).
    fn enqueue(&self, key: SessionKey) -> bool {
        let mut q = self.unsent.lock().unwrap_or_else(PoisonError::into_inner);
        // At most one entry per state held (each state's `unsent`); more
        // only after evictions, which the cap bounds.
        if q.len() < self.shard_cap.saturating_mul(self.shards.len()) {
            q.push_back(key);
            true
        } else {
            false
        }
    }

    /// Takes up to `max` records waiting to be published, oldest first,
    /// each as its state is now; they are no longer waiting (see
    /// [`BindingStore::unsent_again`] for a send that failed).
    pub(crate) fn take_unsent(&self, max: usize, now: u64) -> Vec<FleetBinding> {
        let keys: Vec<SessionKey> = {
            let mut q = self.unsent.lock().unwrap_or_else(PoisonError::into_inner);
            let n = q.len().min(max);
            q.drain(..n).collect()
        };
        let now32 = secs32(now);
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let mut shard = self.shard(&key);
            let Some(s) = shard
                .get_mut(&key)
                .filter(|s| s.unsent && now32.saturating_sub(s.touched()) < self.idle)
            else {
                continue;
            };
            s.unsent = false;
            // An issuance made since it was queued (a rotation) is not
            // published until presented: its presentation queues it
            // again. Nor is anything no node writes.
            let record = FleetBinding::of(key, s);
            if record.is_publishable() {
                out.push(record);
            }
        }
        out
    }

    /// Queues again the sessions of `records` that could not be sent,
    /// unless already waiting (a newer change queued them).
    pub(crate) fn unsent_again(&self, records: &[FleetBinding]) {
        for r in records {
            let mut shard = self.shard(&r.session);
            if let Some(s) = shard.get_mut(&r.session)
                && !s.unsent
            {
                s.unsent = self.enqueue(r.session);
            }
        }
    }

    /// Records waiting to be published.
    pub(crate) fn unsent_len(&self) -> usize {
        self.unsent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Joins the fleet's record `r` into the state held at `now`; whether
    /// it changed anything. What the fleet told is not published again.
    pub(crate) fn merge(&self, r: &FleetBinding, now: u64) -> bool {
        let now32 = secs32(now);
        let idle = self.idle;
        self.update(r.session, now, |held| merge(held, r, now32, idle))
            .is_some()
    }

    /// Writes every state held as a snapshot section: the entries, then
    /// their count (u64 LE) and [`SNAPSHOT_MAGIC`]. Returns the count.
    pub(crate) fn write_snapshot<W: Write>(&self, w: &mut W) -> std::io::Result<u64> {
        let mut n = 0u64;
        for shard in self.shards.iter() {
            let entries: Vec<(SessionKey, BindingState)> = shard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(k, s)| (*k, *s))
                .collect();
            for (key, s) in entries {
                let mut e = [0u8; SNAPSHOT_ENTRY_LEN];
                e[..16].copy_from_slice(key.as_bytes());
                for (i, v) in [
                    s.generation,
                    s.nonce,
                    s.previous_nonce,
                    s.issued_at,
                    s.presented_at,
                    s.seen_at,
                ]
                .into_iter()
                .enumerate()
                {
                    e[16 + 4 * i..20 + 4 * i].copy_from_slice(&v.to_le_bytes());
                }
                e[SNAPSHOT_ENTRY_LEN - 1] = (u8::from(s.compromised) * COMPROMISED)
                    | (u8::from(s.unsent) * UNSENT)
                    | (u8::from(s.domain_wide) * DOMAIN_WIDE);
                w.write_all(&e)?;
                n += 1;
            }
        }
        w.write_all(&n.to_le_bytes())?;
        w.write_all(SNAPSHOT_MAGIC)?;
        Ok(n)
    }

    /// Takes in a section [`BindingStore::write_snapshot`] wrote, at
    /// `now`: entries idle for longer than the store keeps them, or not a
    /// state any node writes, are skipped; at most the store's bound is
    /// kept (eviction as ever). Returns (restored, skipped); `None` when
    /// the section's length does not match its count.
    pub(crate) fn restore_snapshot(&self, section: &[u8], now: u64) -> Option<(u64, u64)> {
        let (entries, trailer) =
            section.split_at_checked(section.len().checked_sub(SECTION_TRAILER)?)?;
        if trailer.get(8..)? != SNAPSHOT_MAGIC {
            return None;
        }
        let count = u64::from_le_bytes(trailer.get(..8)?.try_into().ok()?);
        if u64::try_from(entries.len()).ok()? != count.checked_mul(SNAPSHOT_ENTRY_LEN as u64)? {
            return None;
        }
        let now32 = secs32(now);
        let (mut restored, mut skipped) = (0, 0);
        for e in entries.chunks_exact(SNAPSHOT_ENTRY_LEN) {
            let u = |i: usize| {
                let mut b = [0u8; 4];
                b.copy_from_slice(&e[16 + 4 * i..20 + 4 * i]);
                u32::from_le_bytes(b)
            };
            let mut key = [0u8; 16];
            key.copy_from_slice(&e[..16]);
            let flags = e[SNAPSHOT_ENTRY_LEN - 1];
            // A clock behind the snapshot's brings times back to now.
            let s = BindingState {
                generation: u(0),
                nonce: u(1),
                previous_nonce: u(2),
                issued_at: u(3).min(now32),
                presented_at: u(4).min(now32),
                seen_at: u(5).min(now32),
                compromised: flags & COMPROMISED != 0,
                unsent: flags & UNSENT != 0,
                domain_wide: flags & DOMAIN_WIDE != 0,
            };
            if s.generation == 0 || s.nonce == 0 || now32.saturating_sub(s.touched()) >= self.idle {
                skipped += 1;
                continue;
            }
            let key = SessionKey::from_bytes(key);
            // The store's own order wins over a stale entry: a request
            // served before the restore finished is newer.
            self.update(key, now, |held| {
                let mut s = held.is_none().then_some(s)?;
                s.unsent =
                    s.unsent && FleetBinding::of(key, &s).is_publishable() && self.enqueue(key);
                Some(s)
            });
            restored += 1;
        }
        Some((restored, skipped))
    }

    /// The largest section a store of this bound writes.
    pub(crate) fn max_snapshot_bytes(&self) -> u64 {
        let max = self.shard_cap.saturating_mul(self.shards.len()) as u64;
        max.saturating_mul(SNAPSHOT_ENTRY_LEN as u64)
            .saturating_add(SECTION_TRAILER as u64)
    }
}

/// Splits a snapshot body into the scorer's bytes and the binding section
/// at its end, if it has one (a snapshot of a release before it has not).
pub fn split_snapshot(body: &[u8]) -> (&[u8], Option<&[u8]>) {
    let Some(trailer_at) = body.len().checked_sub(SECTION_TRAILER) else {
        return (body, None);
    };
    if body.get(trailer_at + 8..) != Some(SNAPSHOT_MAGIC.as_slice()) {
        return (body, None);
    }
    let count = body
        .get(trailer_at..trailer_at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(u64::MAX, u64::from_le_bytes);
    let Some(len) = count
        .checked_mul(SNAPSHOT_ENTRY_LEN as u64)
        .and_then(|l| usize::try_from(l).ok())
        .and_then(|l| l.checked_add(SECTION_TRAILER))
        .filter(|l| *l <= body.len())
    else {
        return (body, None);
    };
    let (scorer, section) = body.split_at(body.len() - len);
    (scorer, Some(section))
}

#[cfg(test)]
mod tests;
