//! The user's normal: per-user histories of request features, the whole
//! population's frequencies, and the likelihood model that compares them.
//!
//! In the spirit of Freeman et al., *Who Are You? A Statistical Approach to
//! Measuring User Authenticity* (NDSS 2016): for each feature `k` of a
//! request (client prefix, ASN, country; device, browser, platform) the
//! evidence is the likelihood ratio
//!
//! ```text
//!   p(x_k | attacker) / p(x_k | user)
//! ```
//!
//! * `p(x | user) = (c_u(x) + α·p(x)) / (n_u + α)`: the user's own history,
//!   smoothed toward the population so that a value the user never showed
//!   keeps a probability that grows with its global frequency;
//! * `p(x) = (c(x) + 1) / (n + D_k)`: the population's frequency, with `D_k`
//!   a prior number of distinct values of the feature;
//! * `p(x | attacker) = ½·p(x) + ½/D_k`: an attacker may come from anywhere —
//!   half like the population, half uniformly — so a never-seen value that
//!   is also rare globally (a hosting ASN nobody uses) weighs more than a
//!   popular one.
//!
//! The natural log of the ratio, clipped to `[0, llr_cap]` and multiplied by
//! the feature's weight (points per nat), is the feature's contribution. A
//! user's score is not trusted until they have `learning_sessions` sessions
//! over `learning_period`: until then it is computed and reported but adds
//! nothing.
//!
//! Memory: a profile keeps the [`SLOTS`] most frequent values per feature
//! (8 bytes each) — 320 bytes a user. The population is one count-min sketch
//! per feature, 4 × 16,384 atomic counters (256 KiB) each. The sketch is our
//! own: the crates on offer need `&mut self` to count (or a lock around
//! every update), where relaxed atomic increments make it lock-free.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::device::DeviceId;
use crate::network::NetworkMark;

/// Values kept per feature in a user's profile.
pub(crate) const SLOTS: usize = 6;
/// Features the model weighs.
pub(crate) const FEATURES: usize = 6;

/// The features, in the order of [`Features`] and the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feature {
    Prefix = 0,
    Asn = 1,
    Country = 2,
    Device = 3,
    Browser = 4,
    Platform = 5,
}

/// One request's feature values, each reduced to a non-zero `u32`; zero
/// means unknown and is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Features(pub [u32; FEATURES]);

/// Which features to learn or score.
pub(crate) const NETWORK: [Feature; 3] = [Feature::Prefix, Feature::Asn, Feature::Country];
pub(crate) const ALL: [Feature; FEATURES] = [
    Feature::Prefix,
    Feature::Asn,
    Feature::Country,
    Feature::Device,
    Feature::Browser,
    Feature::Platform,
];

/// Prior number of distinct values per feature (`D_k`).
const DOMAIN: [f64; FEATURES] = [200_000.0, 20_000.0, 250.0, 20_000.0, 200.0, 20.0];
/// Smoothing toward the population (`α`).
const ALPHA: f64 = 1.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Slot {
    value: u32,
    /// Sightings; the top bit marks a value an operator trusted.
    count: u16,
    /// Day of the last sighting (days since the epoch, wrapping).
    day: u16,
}

/// One user's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserProfile {
    slots: [[Slot; SLOTS]; FEATURES],
    seen: [u32; FEATURES],
    sessions: u32,
    first_seen: u32,
}

/// What the model says of one feature.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Evidence {
    pub feature: Feature,
    /// Log-likelihood ratio, clipped to `[0, cap]`.
    pub llr: f64,
}

/// A count-min sketch of feature values across every user.
pub(crate) struct Sketch {
    counters: Box<[AtomicU32]>,
}

/// The population's frequencies, one sketch per feature.
pub(crate) struct Population {
    sketches: [Sketch; FEATURES],
    totals: [AtomicU64; FEATURES],
}

// === impl Features ===

impl Features {
    /// The features of a request: its network and device.
    pub(crate) fn of(network: &NetworkMark, device: DeviceId) -> Self {
        let fold = |v: u64| {
            u32::try_from((v ^ (v >> 32)) & 0xffff_ffff)
                .unwrap_or(0)
                .max(1)
        };
        let country = network
            .country()
            .map_or(0, |c| u32::from(u16::from_be_bytes(c)));
        Self([
            network.prefix,
            network.asn,
            country,
            fold(device.without_major().0),
            u32::from(device.family()) | 0x1_0000,
            u32::from(device.platform_code()) | 0x100,
        ])
    }

    pub(crate) fn get(&self, f: Feature) -> u32 {
        self.0[f as usize]
    }
}

// === impl UserProfile ===

impl UserProfile {
    const TRUSTED: u16 = 0x8000;

    pub(crate) fn new(now: u32) -> Self {
        Self {
            slots: [[Slot::default(); SLOTS]; FEATURES],
            seen: [0; FEATURES],
            sessions: 0,
            first_seen: now,
        }
    }

    /// Records one sighting of each of `which` features. A value not kept
    /// yet takes the slot of the least seen (then least recent) value that
    /// no operator trusted.
    pub(crate) fn observe(&mut self, features: &Features, which: &[Feature], now: u32) {
        let day = day(now);
        for &f in which {
            let value = features.get(f);
            if value == 0 {
                continue;
            }
            let k = f as usize;
            self.seen[k] = self.seen[k].saturating_add(1);
            let slots = &mut self.slots[k];
            if let Some(s) = slots.iter_mut().find(|s| s.value == value) {
                let trusted = s.count & Self::TRUSTED;
                s.count = ((s.count & !Self::TRUSTED).saturating_add(1)).min(0x7fff) | trusted;
                s.day = day;
            } else if let Some(s) = slots
                .iter_mut()
                .filter(|s| s.count & Self::TRUSTED == 0)
                .min_by_key(|s| (s.count, s.day))
            {
                *s = Slot {
                    value,
                    count: 1,
                    day,
                };
            }
        }
    }

    /// Bytes of [`UserProfile::encode`].
    pub(crate) const RECORD_LEN: usize = FEATURES * (SLOTS * 8 + 4) + 8;

    /// The profile as a fixed little-endian record: per feature its slots
    /// (value u32, count u16 with the trusted bit, day u16) and sightings
    /// (u32), then sessions and first seen (u32 each).
    pub(crate) fn encode(&self) -> [u8; Self::RECORD_LEN] {
        let mut out = [0u8; Self::RECORD_LEN];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            if let Some(dst) = out.get_mut(at..at + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
            at += bytes.len();
        };
        for (slots, seen) in self.slots.iter().zip(self.seen) {
            for s in slots {
                put(&s.value.to_le_bytes());
                put(&s.count.to_le_bytes());
                put(&s.day.to_le_bytes());
            }
            put(&seen.to_le_bytes());
        }
        put(&self.sessions.to_le_bytes());
        put(&self.first_seen.to_le_bytes());
        out
    }

    /// Reads [`UserProfile::encode`] back; `None` for another length. Any
    /// values are a profile: counts and values need no check.
    pub(crate) fn decode(record: &[u8]) -> Option<Self> {
        if record.len() != Self::RECORD_LEN {
            return None;
        }
        let mut rest = record;
        let mut take = |n: usize| {
            let (head, tail) = rest.split_at_checked(n).unwrap_or((&[], &[]));
            rest = tail;
            head
        };
        let u32_of = |b: &[u8]| b.try_into().map(u32::from_le_bytes).unwrap_or(0);
        let u16_of = |b: &[u8]| b.try_into().map(u16::from_le_bytes).unwrap_or(0);
        let mut profile = Self::new(0);
        for k in 0..FEATURES {
            for slot in 0..SLOTS {
                profile.slots[k][slot] = Slot {
                    value: u32_of(take(4)),
                    count: u16_of(take(2)),
                    day: u16_of(take(2)),
                };
            }
            profile.seen[k] = u32_of(take(4));
        }
        profile.sessions = u32_of(take(4));
        profile.first_seen = u32_of(take(4));
        Some(profile)
    }

    /// Joins `other` into this profile: per value the larger count (the
    /// trusted mark if either has it) and the later day, per feature the
    /// larger number of sightings and the [`SLOTS`] strongest values
    /// (trusted first, then by count, day and value), the larger number of
    /// sessions and the earlier first sighting.
    ///
    /// Why a maximum and not a sum: the controller's record of a user is
    /// the sum of every observation the nodes posted, this node's
    /// included, so each of its numbers is at least this node's own.
    /// Once the node's observations are delivered, the maximum is the
    /// controller's sum; before, it is the larger of the two partial
    /// views, never counting anything twice however often a record is
    /// received. The join is commutative, associative and idempotent, and
    /// its slot order canonical, so order and repetition of delivery do
    /// not matter (tests: `profile_join_*`).
    pub(crate) fn join(&mut self, other: &UserProfile) {
        for k in 0..FEATURES {
            let mut merged: [Slot; 2 * SLOTS] = [Slot::default(); 2 * SLOTS];
            let mut n = 0;
            for s in self.slots[k].iter().chain(other.slots[k].iter()) {
                if s.value == 0 {
                    continue;
                }
                if let Some(m) = merged[..n].iter_mut().find(|m| m.value == s.value) {
                    let trusted = (m.count | s.count) & Self::TRUSTED;
                    m.count = (m.count & !Self::TRUSTED).max(s.count & !Self::TRUSTED) | trusted;
                    m.day = m.day.max(s.day);
                } else if let Some(m) = merged.get_mut(n) {
                    *m = *s;
                    n += 1;
                }
            }
            let kept = &mut merged[..n];
            kept.sort_unstable_by_key(|s| {
                (
                    std::cmp::Reverse(s.count & Self::TRUSTED),
                    std::cmp::Reverse(s.count & !Self::TRUSTED),
                    std::cmp::Reverse(s.day),
                    s.value,
                )
            });
            let mut slots = [Slot::default(); SLOTS];
            for (dst, src) in slots.iter_mut().zip(kept.iter()) {
                *dst = *src;
            }
            self.slots[k] = slots;
            self.seen[k] = self.seen[k].max(other.seen[k]);
        }
        self.sessions = self.sessions.max(other.sessions);
        self.first_seen = self.first_seen.min(other.first_seen);
    }

    /// Moves the first sighting back to `now` if it is later.
    pub(crate) fn first_seen_by(&mut self, now: u32) {
        self.first_seen = self.first_seen.min(now);
    }

    /// The user's sessions counted.
    pub(crate) fn sessions(&self) -> u32 {
        self.sessions
    }

    /// How often any value of feature `f` was seen.
    pub(crate) fn seen(&self, f: Feature) -> u32 {
        self.seen[f as usize]
    }

    /// Counts one more session of the user.
    pub(crate) fn add_session(&mut self) {
        self.sessions = self.sessions.saturating_add(1);
    }

    /// Marks `value` of feature `f` trusted: it never counts against the user
    /// and is never evicted.
    pub(crate) fn trust(&mut self, f: Feature, value: u32, now: u32) {
        if value == 0 {
            return;
        }
        let slots = &mut self.slots[f as usize];
        if let Some(s) = slots.iter_mut().find(|s| s.value == value) {
            s.count |= Self::TRUSTED;
            return;
        }
        let day = day(now);
        if let Some(s) = slots
            .iter_mut()
            .filter(|s| s.count & Self::TRUSTED == 0)
            .min_by_key(|s| (s.count, s.day))
        {
            *s = Slot {
                value,
                count: 1 | Self::TRUSTED,
                day,
            };
        }
    }

    /// How often the user showed `value` of feature `f`, and whether it is
    /// trusted.
    pub(crate) fn count(&self, f: Feature, value: u32) -> (u16, bool) {
        self.slots[f as usize]
            .iter()
            .find(|s| s.value == value && value != 0)
            .map_or((0, false), |s| {
                (s.count & !Self::TRUSTED, s.count & Self::TRUSTED != 0)
            })
    }

    /// Whether the value is familiar: trusted, or seen at least `after` times.
    pub(crate) fn familiar(&self, f: Feature, value: u32, after: u16) -> bool {
        let (count, trusted) = self.count(f, value);
        trusted || (value != 0 && count >= after)
    }

    /// Whether the user is still in the learning period.
    pub(crate) fn learning(&self, now: u32, min_sessions: u32, min_secs: u32) -> bool {
        self.sessions < min_sessions || now.saturating_sub(self.first_seen) < min_secs
    }

    /// The evidence of each of `which` features (unknown values skipped).
    pub(crate) fn evidence(
        &self,
        population: &Population,
        features: &Features,
        which: &[Feature],
        cap: f64,
    ) -> impl Iterator<Item = Evidence> {
        which.iter().filter_map(move |&f| {
            let value = features.get(f);
            if value == 0 {
                return None;
            }
            let (count, trusted) = self.count(f, value);
            if trusted {
                return Some(Evidence {
                    feature: f,
                    llr: 0.0,
                });
            }
            let k = f as usize;
            let d = DOMAIN[k];
            let p = population.frequency(f, value, d);
            let attacker = 0.5 * p + 0.5 / d;
            let user = (f64::from(count) + ALPHA * p) / (f64::from(self.seen[k]) + ALPHA);
            let llr = (attacker / user).ln();
            Some(Evidence {
                feature: f,
                llr: if llr.is_finite() {
                    llr.clamp(0.0, cap)
                } else {
                    cap
                },
            })
        })
    }
}

fn day(secs: u32) -> u16 {
    u16::try_from((secs / 86_400) & 0xffff).unwrap_or(0)
}

// === impl Sketch ===

impl Sketch {
    const ROWS: usize = 4;
    const WIDTH_BITS: u32 = 14;
    const WIDTH: usize = 1 << Self::WIDTH_BITS;
    /// Odd multipliers, one per row (multiplicative hashing).
    const SEEDS: [u64; Self::ROWS] = [
        0x9e37_79b9_7f4a_7c15,
        0xc2b2_ae3d_27d4_eb4f,
        0x1656_67b1_9e37_79f9,
        0xd6e8_feb8_6659_fd93,
    ];

    fn new() -> Self {
        Self {
            counters: (0..Self::ROWS * Self::WIDTH)
                .map(|_| AtomicU32::new(0))
                .collect(),
        }
    }

    fn index(row: usize, value: u32) -> usize {
        let h = (u64::from(value) | (u64::from(value) << 32)).wrapping_mul(Self::SEEDS[row]);
        let col = usize::try_from(h >> (64 - Self::WIDTH_BITS)).unwrap_or(0);
        row * Self::WIDTH + col
    }

    fn add(&self, value: u32) {
        for row in 0..Self::ROWS {
            if let Some(c) = self.counters.get(Self::index(row, value)) {
                // Saturating: a wrapped counter would make a common value rare.
                let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1));
            }
        }
    }

    /// The count of `value`: never below the truth, above it only by
    /// collisions.
    fn estimate(&self, value: u32) -> u32 {
        (0..Self::ROWS)
            .filter_map(|row| self.counters.get(Self::index(row, value)))
            .map(|c| c.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }
}

// === impl Population ===

impl Population {
    pub(crate) fn new() -> Self {
        Self {
            sketches: std::array::from_fn(|_| Sketch::new()),
            totals: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Counts one sighting of each of `which` features.
    pub(crate) fn observe(&self, features: &Features, which: &[Feature]) {
        for &f in which {
            let value = features.get(f);
            if value != 0 {
                self.sketches[f as usize].add(value);
                self.totals[f as usize].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counters of one feature's sketch.
    pub(crate) const CELLS_PER_FEATURE: usize = Sketch::ROWS * Sketch::WIDTH;

    /// The counters (numbered across features: feature × 65,536 + row ×
    /// 16,384 + column) a sighting of `value` of feature `f` adds one to.
    pub(crate) fn cells(f: Feature, value: u32) -> [u32; Sketch::ROWS] {
        let base = f as usize * Self::CELLS_PER_FEATURE;
        std::array::from_fn(|row| {
            u32::try_from(base + Sketch::index(row, value)).unwrap_or(u32::MAX)
        })
    }

    /// Joins counts from the fleet: each counter named (as by
    /// [`Population::cells`]) takes the larger of its count and the one
    /// given, each feature's total the larger of the two; counters out of
    /// range are skipped. As for profiles ([`UserProfile::join`]), the
    /// fleet's counts are sums this node's own are part of, so the maximum
    /// converges on them without counting anything twice.
    pub(crate) fn join(&self, totals: &[u64], counters: &[(u32, u32)]) {
        for (total, held) in totals.iter().zip(&self.totals) {
            held.fetch_max(*total, Ordering::Relaxed);
        }
        for &(cell, count) in counters {
            let cell = cell as usize;
            let (k, index) = (
                cell / Self::CELLS_PER_FEATURE,
                cell % Self::CELLS_PER_FEATURE,
            );
            if let Some(c) = self.sketches.get(k).and_then(|s| s.counters.get(index)) {
                c.fetch_max(count, Ordering::Relaxed);
            }
        }
    }

    /// A feature's total sightings.
    pub(crate) fn total(&self, f: Feature) -> u64 {
        self.totals[f as usize].load(Ordering::Relaxed)
    }

    /// The count held by counter `cell` (numbered as by
    /// [`Population::cells`]); 0 out of range.
    pub(crate) fn counter(&self, cell: u32) -> u32 {
        let cell = cell as usize;
        let (k, index) = (
            cell / Self::CELLS_PER_FEATURE,
            cell % Self::CELLS_PER_FEATURE,
        );
        self.sketches
            .get(k)
            .and_then(|s| s.counters.get(index))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// `p(x)`, smoothed with `domain` pseudo-values.
    fn frequency(&self, f: Feature, value: u32, domain: f64) -> f64 {
        let k = f as usize;
        let count = f64::from(self.sketches[k].estimate(value));
        let total = self.totals[k].load(Ordering::Relaxed) as f64;
        (count + 1.0) / (total + domain)
    }
}

impl std::fmt::Debug for Population {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Population")
            .field(
                "totals",
                &self
                    .totals
                    .iter()
                    .map(|t| t.load(Ordering::Relaxed))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}
