//! Answers remembered on the request path, so that a client's every
//! request does not walk the databases' trees and decode records again.
//!
//! A lookup is a walk of up to 128 tree nodes and the decoding of a record
//! in each database, spread over a file of tens of megabytes: 0.8 µs when
//! the bench keeps it in the CPU's caches, about 2 µs inside a busy proxy
//! (docs/performance.md, "Geo lookups, remembered"), where a client sends
//! request after request from the same address. Two tables take most of
//! that away:
//!
//! - each set of databases keeps the facts of the last [`ADDRESS_SLOTS`]
//!   addresses asked for (no tree walk, no decoding);
//! - each open file keeps the last [`RECORD_SLOTS`] records it decoded, by
//!   their place in the file's data section. Networks share records (every
//!   address of a city's networks points at the city's one record; an
//!   operator's networks at its one AS record), so an address not seen
//!   before still skips the decoding, the larger part of a lookup, when a
//!   neighbour's request decoded its record.
//!
//! Written here rather than taken from `moka` (which the engine uses for
//! sessions): what this needs is smaller than a cache with eviction
//! policies. It is a direct-mapped table. Each key has one slot, chosen
//! by a keyed hash (the process's random SipHash key, so a client cannot
//! aim its addresses at another client's slot); the slot holds one key
//! and its answer, and another key that hashes there simply takes it.
//! Nothing to evict, no housekeeping, memory fixed at the slots given; a
//! hit is a hash, an uncontended lock and a comparison. A slot that another
//! thread holds is never waited for: that lookup reads the files.
//!
//! It only ever answers what the files it belongs to would: the address
//! table is part of one immutable [`GeoDatabases`](crate::GeoDatabases)
//! set and a reload builds a new set with an empty one; the record table
//! is part of one open file, and a file that changed is opened again with
//! an empty one. Names are not kept (the request path does not read them;
//! `describe` always reads the files).

use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;

use crate::facts::GeoFacts;

/// Slots of a set's address table (1.75 MiB). One slot per address, so
/// addresses that meet in a slot take turns: of 4,000 clients' addresses
/// about 22 % are evicted so, of 10,000 about half (4,096 slots kept 9 %
/// of 10,000).
pub(crate) const ADDRESS_SLOTS: usize = 16_384;

/// Slots of a file's record table (0.5 MiB).
pub(crate) const RECORD_SLOTS: usize = 4096;

/// A set's answers by address.
pub(crate) type FactsCache = DirectMapped<IpAddr, GeoFacts>;

/// One slot: the key it answers for, and the answer.
type Slot<K, V> = Mutex<Option<(K, V)>>;

/// A table of the last answer per key; see the module docs. Its `Debug`
/// shows the size, never the keys it holds.
pub(crate) struct DirectMapped<K, V> {
    slots: Box<[Slot<K, V>]>,
    keys: RandomState,
}

// === impl DirectMapped ===

impl<K, V> Default for DirectMapped<K, V> {
    /// No slots: caches nothing.
    fn default() -> Self {
        Self {
            slots: Box::default(),
            keys: RandomState::new(),
        }
    }
}

impl<K, V> std::fmt::Debug for DirectMapped<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectMapped")
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Copy, V: Clone> DirectMapped<K, V> {
    /// A table of `slots` slots; none caches nothing.
    pub(crate) fn with_slots(slots: usize) -> Self {
        Self {
            slots: (0..slots).map(|_| Mutex::new(None)).collect(),
            keys: RandomState::new(),
        }
    }

    /// The answer for `key`, from its slot when the slot holds `key`,
    /// otherwise from `look_up`, kept in the slot.
    pub(crate) fn get(&self, key: K, look_up: impl FnOnce() -> V) -> V {
        if self.slots.is_empty() {
            return look_up();
        }
        // The hash's low bits pick the slot (the modulo is below `len`,
        // so it fits a usize).
        let len = self.slots.len();
        let index = usize::try_from(self.keys.hash_one(key) % len as u64).unwrap_or(0);
        // Held by another thread, or poisoned (a decoding that panicked
        // while holding it — the decoder is written not to): read the files
        // instead. A slot only ever holds a whole (key, answer) pair.
        let Ok(mut slot) = self.slots[index].try_lock() else {
            return look_up();
        };
        if let Some((held, answer)) = &*slot
            && *held == key
        {
            return answer.clone();
        }
        let answer = look_up();
        *slot = Some((key, answer.clone()));
        answer
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::net::Ipv4Addr;

    use proptest::prelude::*;

    use super::*;
    use crate::facts::CountryCode;

    /// Facts that name their address: a wrong slot shows as a wrong answer.
    fn facts_of(ip: IpAddr) -> GeoFacts {
        let IpAddr::V4(v4) = ip else {
            unreachable!("the tests use IPv4")
        };
        GeoFacts {
            asn: Some(u32::from(v4)),
            country: CountryCode::parse("GB"),
            ..GeoFacts::default()
        }
    }

    #[test]
    fn a_repeated_address_is_answered_from_its_slot() {
        let cache = FactsCache::with_slots(ADDRESS_SLOTS);
        let calls = Cell::new(0);
        let ip = IpAddr::V4(Ipv4Addr::new(81, 2, 69, 1));
        let look = || {
            calls.set(calls.get() + 1);
            facts_of(ip)
        };
        assert_eq!(cache.get(ip, look), facts_of(ip));
        assert_eq!(cache.get(ip, look), facts_of(ip));
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn no_slots_always_reads_the_files() {
        let cache = FactsCache::with_slots(0);
        let calls = Cell::new(0);
        let ip = IpAddr::V4(Ipv4Addr::new(81, 2, 69, 1));
        for _ in 0..3 {
            cache.get(ip, || {
                calls.set(calls.get() + 1);
                facts_of(ip)
            });
        }
        assert_eq!(calls.get(), 3);
    }

    proptest! {
        /// Addresses fighting over two slots, in any order: every answer is
        /// the address's own, never its slot's previous holder's.
        #[test]
        fn every_answer_is_the_addresses_own(order in prop::collection::vec(0u32..16, 1..200)) {
            let cache = FactsCache::with_slots(2);
            for n in order {
                let ip = IpAddr::V4(Ipv4Addr::from(0x5102_4500 + n));
                prop_assert_eq!(cache.get(ip, || facts_of(ip)), facts_of(ip));
            }
        }
    }
}
