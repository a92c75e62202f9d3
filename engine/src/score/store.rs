//! The session store: a sharded, bounded hash map of [`SessionState`]s with
//! idle expiry and approximate least-recently-used eviction.
//!
//! Our own rather than a `moka` cache, because of memory: a `moka` entry
//! costs about 300 bytes of bookkeeping on top of key and value (measured:
//! 433 bytes per 136-byte entry at a million entries), which alone breaks
//! the budget of 256 bytes per tracked session. Here an entry is the 16-byte
//! key and the 104-byte state in the table itself, nothing else: 121 bytes
//! with the control byte. A large store's shards are sized so that, full,
//! their tables are 80–82% used: about 150 bytes per session at capacity
//! (`crate::shards`; before, a million sessions sat at a table doubling's
//! worst point, 254 bytes, 263 measured with the allocator's share).
//!
//! * Keys are keyed BLAKE3 hashes ([`SessionKey`]), uniform and not chosen by
//!   clients, so the table hashes them by taking their first eight bytes
//!   (no second hash), and the shard is picked by their last two
//!   ([`crate::shards::index`]).
//! * Each shard holds at most its share of `max_sessions`. When a full shard
//!   must take a new key, it drops the entries idle for longer than the
//!   timeout, and if that is not enough, the least recently used sixteenth
//!   (the age threshold is found with a linear-time selection over the
//!   shard's ages). The pass is O(shard) and runs once per sixteenth of a
//!   shard's inserts: amortised, a few dozen nanoseconds an insert.
//! * Expiry is by the request clock the engine is given (`now_secs`), so the
//!   engine stays a pure function of its inputs: an entry idle past the
//!   timeout is gone at its next read, and [`SessionStore::sweep`] drops the
//!   rest.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::state::{SessionState, secs32};
use crate::session::SessionKey;
use crate::shards;

/// Most shards; a small store has fewer, so that shards are never tiny.
const MAX_SHARDS: usize = 64;
const MIN_SHARD: usize = 1024;

/// Takes a session key's first eight bytes as its hash (see the module docs).
#[derive(Debug, Default, Clone, Copy)]
struct KeyHasher(u64);

type Shard = HashMap<SessionKey, SessionState, BuildHasherDefault<KeyHasher>>;

/// The bounded session store.
pub(crate) struct SessionStore {
    shards: Box<[Mutex<Shard>]>,
    shard_cap: usize,
    idle: u32,
}

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut eight = [0u8; 8];
        let n = bytes.len().min(8);
        eight[..n].copy_from_slice(&bytes[..n]);
        self.0 = self.0.rotate_left(17) ^ u64::from_le_bytes(eight);
    }
}

impl SessionStore {
    pub(crate) fn new(max_sessions: u64, idle: Duration) -> Self {
        let max = usize::try_from(max_sessions).unwrap_or(usize::MAX).max(1);
        let (shards, shard_cap) = shards::large_layout(max).unwrap_or_else(|| {
            let shards = (max / MIN_SHARD).clamp(1, MAX_SHARDS);
            // Rounded down: the store never holds more than `max_sessions`.
            (shards, max / shards)
        });
        Self {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            shard_cap,
            idle: secs32(idle.as_secs()).max(1),
        }
    }

    fn shard(&self, key: &SessionKey) -> std::sync::MutexGuard<'_, Shard> {
        let i = shards::index(key, self.shards.len());
        // A poisoned shard still holds consistent entries: each is replaced
        // whole.
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Seconds after which an untouched session is gone.
    pub(crate) fn idle(&self) -> u32 {
        self.idle
    }

    /// The session's state, if it has one that has not idled out by `now`,
    /// changing nothing: deciding must not change the store.
    pub(crate) fn read(&self, key: &SessionKey, now: u32) -> Option<SessionState> {
        self.shard(key)
            .get(key)
            .filter(|s| now.saturating_sub(s.touched) < self.idle)
            .copied()
    }

    /// Counts a request of the session (if it is held) and marks it used
    /// at `now` when it was last marked `every` seconds ago or more: the
    /// commit of a request that changed nothing else.
    pub(crate) fn count(&self, key: &SessionKey, now: u32, every: u32) {
        if let Some(entry) = self.shard(key).get_mut(key) {
            entry.requests = entry.requests.saturating_add(1);
            if now.saturating_sub(entry.touched) >= every {
                entry.touched = now;
            }
        }
    }

    /// The session's state, without marking it used or expiring it.
    pub(crate) fn peek(&self, key: &SessionKey) -> Option<SessionState> {
        self.shard(key).get(key).copied()
    }

    /// Replaces the session's state with `f` of the one held (none if it
    /// idled out), in one step under the shard's lock, used at `now`.
    pub(crate) fn update(
        &self,
        key: SessionKey,
        now: u32,
        f: impl FnOnce(Option<&SessionState>) -> SessionState,
    ) {
        let mut shard = self.shard(&key);
        let held = shard
            .get(&key)
            .filter(|s| now.saturating_sub(s.touched) < self.idle);
        let mut state = f(held);
        state.touched = state.touched.max(now);
        if !shard.contains_key(&key) {
            if shard.len() >= self.shard_cap {
                self.make_room(&mut shard, now);
            }
            shards::make_space(&mut shard, self.shard_cap);
        }
        shard.insert(key, state);
    }

    pub(crate) fn remove(&self, key: &SessionKey) {
        self.shard(key).remove(key);
    }

    fn make_room(&self, shard: &mut Shard, now: u32) {
        let idle = self.idle;
        shard.retain(|_, s| now.saturating_sub(s.touched) < idle);
        // Stop only if a sixteenth came free: otherwise a shard where a
        // session idles out now and then would scan on every insert.
        if shard.len() + (self.shard_cap / 16).max(1) <= self.shard_cap {
            return;
        }
        // The exact 1/16 quantile of the shard's ages: everything older
        // goes, and entries of exactly that age until the sixteenth is made.
        let mut ages: Vec<u32> = shard.values().map(|s| s.touched).collect();
        let quota = (ages.len() / 16).max(1);
        if ages.len() < quota {
            return;
        }
        let (older, &mut threshold, _) = ages.select_nth_unstable(quota - 1);
        let mut ties = quota - older.iter().filter(|t| **t < threshold).count();
        shard.retain(|_, s| {
            if s.touched < threshold {
                false
            } else if s.touched == threshold && ties > 0 {
                ties -= 1;
                false
            } else {
                true
            }
        });
    }

    /// Drops every state idle for the timeout at `now`.
    pub(crate) fn sweep(&self, now: u32) {
        for shard in &*self.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.retain(|_, s| now.saturating_sub(s.touched) < self.idle);
        }
    }

    /// Sessions held.
    pub(crate) fn len(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len() as u64)
            .sum()
    }

    /// Calls `f` with a copy of each shard's entries in turn: the shard is
    /// locked only while it is copied, and only one shard is copied at a
    /// time, so a snapshot of a million sessions needs one shard's worth of
    /// memory, not the store's.
    pub(crate) fn for_each_shard(&self, mut f: impl FnMut(&[(SessionKey, SessionState)])) {
        let mut copy = Vec::new();
        for shard in &*self.shards {
            copy.clear();
            copy.extend(
                shard
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .map(|(k, s)| (*k, *s)),
            );
            f(&copy);
        }
    }

    /// The keys of the sessions `pred` holds of.
    pub(crate) fn keys_where(&self, pred: impl Fn(&SessionState) -> bool) -> Vec<SessionKey> {
        let mut keys = Vec::new();
        for shard in &*self.shards {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            keys.extend(shard.iter().filter(|(_, s)| pred(s)).map(|(k, _)| *k));
        }
        keys
    }

    /// A copy of every entry, shard by shard (each shard is locked only
    /// while it is copied).
    pub(crate) fn entries(&self) -> Vec<(SessionKey, SessionState)> {
        let mut out = Vec::new();
        for shard in &*self.shards {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            out.extend(shard.iter().map(|(k, s)| (*k, *s)));
        }
        out
    }

    /// Most sessions held.
    pub(crate) fn capacity(&self) -> u64 {
        (self.shard_cap * self.shards.len()) as u64
    }
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore")
            .field("capacity", &self.capacity())
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::DeviceSummary;
    use crate::network::NetworkMark;

    fn key(i: u64) -> SessionKey {
        // Spread like the real keys: hash the counter.
        let h = blake3::hash(&i.to_le_bytes());
        let mut k = [0u8; 16];
        k.copy_from_slice(&h.as_bytes()[..16]);
        SessionKey::from_bytes(k)
    }

    fn state(now: u32) -> SessionState {
        SessionState::new(&DeviceSummary::NONE, NetworkMark::default(), None, now)
    }

    #[test]
    fn holds_no_more_than_its_capacity_and_keeps_the_recent() {
        let store = SessionStore::new(8_192, Duration::from_secs(1_000_000));
        for i in 0..20_000u32 {
            store.update(key(u64::from(i)), i, |_| state(i));
            // A few sessions stay busy all along.
            for hot in 0..10 {
                store.count(&key(hot), i, 0);
            }
        }
        assert!(store.len() <= store.capacity(), "{}", store.len());
        assert!(store.len() >= store.capacity() * 7 / 8, "{}", store.len());
        for hot in 0..10 {
            assert!(
                store.read(&key(hot), 20_000).is_some(),
                "busy session {hot} evicted"
            );
        }
        // The newest are all there; the oldest idle ones are gone.
        assert!((19_900..20_000).all(|i| store.peek(&key(i)).is_some()));
        let old = (10..1_000)
            .filter(|i| store.peek(&key(*i)).is_some())
            .count();
        assert!(old < 50, "{old} of the oldest kept, {} held", store.len());
        assert_eq!(store.shards.len(), 8);
    }

    #[test]
    fn idle_entries_expire_on_read_and_on_sweep() {
        let store = SessionStore::new(100, Duration::from_secs(60));
        store.update(key(1), 0, |_| state(0));
        store.update(key(2), 0, |_| state(0));
        assert!(store.read(&key(1), 59).is_some());
        // Reading does not count as use; counting a request does.
        store.count(&key(1), 59, 0);
        assert!(store.read(&key(1), 100).is_some());
        assert!(store.read(&key(2), 100).is_none());
        store.sweep(1_000);
        assert_eq!(store.len(), 0);
    }

    /// The memory budget's attack: a full large store churned by a flood
    /// of new sessions (each evicting, erased entries piling up as
    /// tombstones) and by revocations keeps every shard's table at the
    /// size its cap needs; without the rebuild the tables doubled and
    /// never shrank, back to the ~250 bytes a session of the worst
    /// doubling point (`crate::shards`).
    #[test]
    fn a_churned_full_store_keeps_its_tables_at_their_size() {
        let max = crate::shards::LARGE;
        let store = SessionStore::new(max as u64, Duration::from_secs(1_000_000));
        let (shards, cap) = crate::shards::large_layout(max).unwrap();
        assert_eq!((store.shards.len(), store.shard_cap), (shards, cap));
        // The most a table of the size for `cap` holds before it grows.
        let room = (cap * 8 / 7).next_power_of_two() / 8 * 7;
        let largest = || {
            store
                .shards
                .iter()
                .map(|s| s.lock().unwrap().capacity())
                .max()
                .unwrap()
        };
        for i in 0..(4 * max) as u64 {
            let now = u32::try_from(i / 64).unwrap();
            store.update(key(i), now, |_| state(now));
            // Every third session is revoked a little later.
            if i % 3 == 0 && i >= 300 {
                store.remove(&key(i - 300));
            }
        }
        assert!(store.len() >= store.capacity() * 3 / 4, "{}", store.len());
        assert!(largest() <= room, "{} > {room}", largest());
    }

    #[test]
    fn entries_of_the_same_age_are_evicted_a_few_at_a_time() {
        let store = SessionStore::new(640, Duration::from_secs(1_000));
        for i in 0..5_000u64 {
            store.update(key(i), 7, |_| state(7));
        }
        assert!(store.len() > 500, "{}", store.len());
    }
}
