//! How the engine's sharded per-session tables (the session store and the
//! binding store) are laid out: how many shards, how many entries each,
//! and which shard a key goes to; and keeping each shard's hash table at
//! the size its cap needs.
//!
//! Memory per session is the tables', and a table of std's `HashMap`
//! (hashbrown) holds at most 7/8 of its buckets, a power of two, doubling
//! when it runs out of room. A shard whose cap lies just above 7/8 of a
//! power of two therefore sits, full, at under half load: twice the memory
//! per entry of a shard capped just below. At 1,000,000 sessions in 64
//! shards (15,625 each, over the 14,336 that 16,384 buckets hold) the
//! session table alone cost 254 bytes per session, over the budget of 256
//! before the binding's table was counted (docs/risk.md, "State and
//! memory"). So:
//!
//! * A large store (at least [`LARGE`] entries) picks its number of shards
//!   (64 to 128) so that a shard's cap is at most 15/16 of what a table of
//!   2^k buckets holds and at least 63/64 of that: full, every table is
//!   80–82% used, whatever `max_sessions` is. The 1/16 left free is what
//!   erased entries may use up between two evictions (below). Smaller
//!   stores keep their layouts: their memory is not what the budget is
//!   about.
//! * A table also doubles when erased entries use up its room: hashbrown
//!   leaves a tombstone where an erased entry sat inside a run of 16 full
//!   slots, which at a high load is often, and a table never shrinks back.
//!   Under eviction churn a full store would drift to the doubled size.
//!   [`make_space`] rebuilds such a shard at its own size instead, at most
//!   once per sixteenth of its cap inserted.

use std::collections::HashMap;
use std::hash::BuildHasher;

use crate::session::SessionKey;

/// Stores of at least this many entries get the large layout: 64 shards
/// of 1,024.
pub(crate) const LARGE: usize = 64 * 1024;
const MIN_LARGE_SHARDS: usize = 64;

/// The entries a table of `buckets` (a power of two, at least 8) holds
/// before it grows: hashbrown's 7/8.
fn fill(buckets: usize) -> usize {
    buckets / 8 * 7
}

/// The most a shard of `buckets` is filled to: 15/16 of its fill, so
/// that tombstones have room to accumulate between rebuilds.
fn target(buckets: usize) -> usize {
    fill(buckets) - fill(buckets) / 16
}

/// The number of shards and the entries each holds, for a large store of
/// `max` entries (`None` below [`LARGE`]). Never more than `max` in all.
pub(crate) fn large_layout(max: usize) -> Option<(usize, usize)> {
    if max < LARGE {
        return None;
    }
    let per = max / MIN_LARGE_SHARDS;
    let mut buckets = 1024usize;
    while let Some(twice) = buckets.checked_mul(2) {
        if target(twice) > per {
            break;
        }
        buckets = twice;
    }
    let shards = max.div_ceil(target(buckets));
    Some((shards, max / shards))
}

/// The shard of `key` among `shards`: its last two bytes (the last as the
/// low one) modulo the count, so that a power of two up to 256 picks by
/// the last byte alone, and any other count is within `shards`/65,536 of
/// uniform. Keys are keyed hashes, uniform and not chosen by clients; the
/// tables hash them by their first eight bytes, so the two are independent.
pub(crate) fn index(key: &SessionKey, shards: usize) -> usize {
    let b = key.as_bytes();
    (usize::from(b[15]) | usize::from(b[14]) << 8) % shards.max(1)
}

/// Call before a new key goes into `shard`, capped at `cap` entries (room
/// already made): if its table has no room left and holds at least half
/// its cap, the insert would double it, so it is rebuilt at the size `cap`
/// needs. That is the doubling itself when the table is legitimately full
/// (it holds `len` ≥ `cap`/2, so the size for `cap` is twice its own), and
/// for a table full of tombstones the same size again, without them.
pub(crate) fn make_space<V, S: BuildHasher + Default>(
    shard: &mut HashMap<SessionKey, V, S>,
    cap: usize,
) {
    let len = shard.len();
    if len < shard.capacity() || len < cap / 2 {
        return;
    }
    let old = std::mem::take(shard);
    let mut fresh = HashMap::with_capacity_and_hasher(cap.max(len + len / 16 + 1), S::default());
    fresh.extend(old);
    *shard = fresh;
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The smallest table that holds `n` entries, as hashbrown sizes it.
    fn buckets_for(n: usize) -> usize {
        (n * 8 / 7).next_power_of_two()
    }

    proptest! {
        /// Whatever `max_sessions` is, a large store's shards hold no more
        /// than it in all, and full, each table is 80–82% used.
        #[test]
        fn a_full_large_store_uses_its_tables_well(max in LARGE..1usize << 32) {
            let (shards, cap) = large_layout(max).unwrap();
            prop_assert!((64..=128).contains(&shards), "{shards}");
            prop_assert!(shards * cap <= max);
            let buckets = buckets_for(cap);
            let load = cap as f64 / buckets as f64;
            prop_assert!((0.80..=0.821).contains(&load), "{load} at {max}");
            // Room for a sixteenth of tombstones, and a rebuild after them
            // stays at that size.
            prop_assert!(cap + cap / 16 < fill(buckets));
            prop_assert_eq!(buckets_for(cap + cap / 16 + 1), buckets);
        }
    }

    #[test]
    fn small_stores_keep_their_layout_and_shards_pick_by_the_last_byte() {
        assert_eq!(large_layout(LARGE - 1), None);
        assert_eq!(large_layout(1_000_000), Some((75, 13_333)));
        let mut k = [0u8; 16];
        k[14] = 0xab;
        k[15] = 7;
        let key = SessionKey::from_bytes(k);
        assert_eq!(index(&key, 64), 7);
        assert_eq!(index(&key, 1), 0);
        assert_eq!(index(&key, 0), 0);
        assert_eq!(index(&key, 70), (0xab07) % 70);
    }
}
