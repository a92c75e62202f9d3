//! Fixed one-minute windows of counts per key, in a bounded cache: the
//! window starts at a key's first hit and the entry expires with it.
//! Ours rather than `governor`'s: the step-up needs two small keyed
//! counters, and moka already bounds and expires them.

use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Counts per key over a minute.
pub(super) struct Limiter<K> {
    counts: moka::sync::Cache<K, Arc<AtomicU32>>,
}

impl<K> std::fmt::Debug for Limiter<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Send + Sync + 'static> Limiter<K> {
    /// At most `capacity` keys are tracked; beyond it the least used are
    /// forgotten (a flood of keys resets its own counters, not others').
    pub(super) fn new(capacity: u64) -> Self {
        Self {
            counts: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(Duration::from_secs(60))
                .build(),
        }
    }

    /// Counts a hit for `key`; true when it is beyond `limit` this minute.
    pub(super) fn hit(&self, key: K, limit: u32) -> bool {
        let count = self
            .counts
            .get_with(key, || Arc::new(AtomicU32::new(0)))
            .fetch_add(1, Ordering::Relaxed);
        count >= limit
    }
}
