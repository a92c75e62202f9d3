//! A user's history and the population model across the fleet
//! (`docs/risk.md`, fleet-wide history).
//!
//! Each node learns a user's profile and the population's frequencies from
//! the requests it serves ([`Scorer::commit`]). So that a user known on one
//! node is known on every node, each learning is told as a [`Learnt`]
//! (the engine's [`crate::Event::UserLearned`]); the controller adds the
//! observations up into one [`ProfileRecord`] per user and one population
//! — sums, with [`ProfileRecord::observe`] and [`population_cells`] — and
//! streams them back. A node takes what it receives by a *join* (the
//! maximum of each number, [`Scorer::join_profile`],
//! [`Scorer::join_population`]): the controller's numbers are sums that
//! include the node's own observations once they are delivered, so the
//! maximum converges on the fleet's sum and never counts one twice, in
//! whatever order and however often records arrive.

use std::sync::{Arc, Mutex, PoisonError};

use super::profile::{ALL, FEATURES, Feature, Features, Population, UserProfile};
use super::{Scorer, UserKey, secs32};

/// Features of the model, as numbered in [`Learnt::values`] and
/// [`Learnt::which`]: client prefix, ASN, country, device, browser,
/// platform.
pub const PROFILE_FEATURES: usize = FEATURES;

/// Counters of the population model across its features: the cells
/// [`population_cells`] names are below this.
#[allow(
    clippy::cast_possible_truncation,
    reason = "6 × 65,536 = 393,216, far below u32::MAX; a const cannot use try_from"
)]
pub const POPULATION_CELLS: u32 = (FEATURES * Population::CELLS_PER_FEATURE) as u32;

/// What a node learnt of a bound user from one allowed request: the
/// request's feature values and which of them were learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learnt {
    /// The user.
    pub user: UserKey,
    /// The feature values, each folded or hashed to a `u32` (0: unknown),
    /// in the order of [`PROFILE_FEATURES`].
    pub values: [u32; PROFILE_FEATURES],
    /// Which features were learnt: bit `k` for feature `k` (a login learns
    /// all six, `0x3f`; a move of network the first three, `0x07`).
    pub which: u8,
    /// The first request of a session of the user (counted toward the
    /// learning period).
    pub new_session: bool,
    /// The values were trusted by an operator (a false positive's).
    pub trust: bool,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

/// A user's profile in its fixed record form ([`ProfileRecord::LEN`]
/// bytes), for the controller to add observations to and for nodes to join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileRecord(UserProfile);

// === impl Learnt ===

impl Learnt {
    pub(crate) fn new(
        user: UserKey,
        features: &Features,
        which: &[Feature],
        new_session: bool,
        trust: bool,
        at: u64,
    ) -> Self {
        Self {
            user,
            values: features.0,
            which: which.iter().fold(0, |m, &f| m | 1 << f as u8),
            new_session,
            trust,
            at,
        }
    }

    fn features(&self) -> impl Iterator<Item = Feature> + '_ {
        ALL.into_iter()
            .filter(move |&f| self.which & (1 << f as u8) != 0)
    }
}

// === impl ProfileRecord ===

impl ProfileRecord {
    /// Bytes of [`ProfileRecord::encode`].
    pub const LEN: usize = UserProfile::RECORD_LEN;

    /// An empty profile first seen at `at` (seconds since the Unix epoch).
    pub fn new(at: u64) -> Self {
        Self(UserProfile::new(secs32(at)))
    }

    /// Reads a record; `None` unless it is exactly [`ProfileRecord::LEN`]
    /// bytes. Any bytes of that length are a profile.
    pub fn decode(record: &[u8]) -> Option<Self> {
        UserProfile::decode(record).map(Self)
    }

    /// The record: fixed length, little endian.
    pub fn encode(&self) -> [u8; Self::LEN] {
        self.0.encode()
    }

    /// Adds one observation, as the node that made it did: one more
    /// sighting of each learnt value (and one more session when it opened
    /// one), trusted values marked. An observation first seen earlier than
    /// the profile moves its first sighting back.
    pub fn observe(&mut self, learnt: &Learnt) {
        let now = secs32(learnt.at);
        let features = Features(learnt.values);
        let which: Vec<Feature> = learnt.features().collect();
        if learnt.new_session {
            self.0.add_session();
        }
        self.0.observe(&features, &which, now);
        if learnt.trust {
            for &f in &which {
                self.0.trust(f, features.get(f), now);
            }
        }
        self.0.first_seen_by(now);
    }

    /// Joins `other` into this one ([`UserProfile::join`]): the maximum of
    /// every number, the strongest values kept.
    pub fn join(&mut self, other: &ProfileRecord) {
        self.0.join(&other.0);
    }

    /// Sessions counted.
    pub fn sessions(&self) -> u32 {
        self.0.sessions()
    }

    /// Sightings of feature `k` (of [`PROFILE_FEATURES`]) counted, and how
    /// often `value` of it was seen (0 when not kept).
    pub fn count(&self, k: usize, value: u32) -> (u32, u16) {
        match ALL.get(k) {
            Some(&f) => (self.0.seen(f), self.0.count(f, value).0),
            None => (0, 0),
        }
    }
}

/// The population counters one observation adds one to, with the feature
/// each counts (the index into a population's totals): four per learnt
/// value that is known. Numbered below [`POPULATION_CELLS`].
pub fn population_cells(learnt: &Learnt) -> Vec<(usize, u32)> {
    learnt
        .features()
        .filter(|&f| learnt.values[f as usize] != 0)
        .flat_map(|f| {
            Population::cells(f, learnt.values[f as usize])
                .into_iter()
                .map(move |cell| (f as usize, cell))
        })
        .collect()
}

// === impl Scorer ===

impl Scorer {
    /// Joins the fleet's record of `user`'s history into the profile this
    /// node holds (creating it), by [`ProfileRecord::join`]. Returns false,
    /// changing nothing, for a record that is not [`ProfileRecord::LEN`]
    /// bytes.
    pub fn join_profile(&self, user: UserKey, record: &[u8], now_secs: u64) -> bool {
        let Some(received) = UserProfile::decode(record) else {
            return false;
        };
        let now = secs32(now_secs);
        let profile = self
            .profiles
            .get_with(user, || Arc::new(Mutex::new(UserProfile::new(now))));
        // A profile made just now for the join takes the received first
        // sighting: the join keeps the earlier.
        profile
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join(&received);
        true
    }

    /// Joins the fleet's population counts ([`Population::join`]): per
    /// feature the larger total, per counter (numbered as by
    /// [`population_cells`]) the larger count.
    pub fn join_population(&self, totals: &[u64], counters: &[(u32, u32)]) {
        self.population.join(totals, counters);
    }

    /// The profile held for `user`, as a record.
    pub fn profile_record(&self, user: &UserKey) -> Option<[u8; ProfileRecord::LEN]> {
        let profile = self.profiles.get(user)?;
        let p = profile.lock().unwrap_or_else(PoisonError::into_inner);
        Some(p.encode())
    }

    /// The population's total sightings of feature `k` and the count held
    /// by counter `cell`, for tests and diagnostics.
    pub fn population_count(&self, k: usize, cell: u32) -> (u64, u32) {
        let total = ALL.get(k).map_or(0, |&f| self.population.total(f));
        (total, self.population.counter(cell))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn user() -> UserKey {
        UserKey::from_u64(42).unwrap_or_else(|| unreachable!("42 is a user key"))
    }

    /// Observations with few distinct values, so that no profile evicts
    /// (the sum is then exact) and values repeat across nodes.
    fn observations() -> impl Strategy<Value = Vec<Learnt>> {
        proptest::collection::vec(
            (
                proptest::array::uniform6(1u32..5),
                prop_oneof![Just(0x3fu8), Just(0x07u8)],
                any::<bool>(),
                0u64..1_000_000,
            ),
            0..30,
        )
        .prop_map(|v| {
            v.into_iter()
                .map(|(values, which, new_session, at)| Learnt {
                    user: user(),
                    values,
                    which,
                    new_session,
                    trust: false,
                    at: 1_700_000_000 + at,
                })
                .collect()
        })
    }

    fn sum(observations: &[Learnt]) -> ProfileRecord {
        let mut p = ProfileRecord::new(u64::from(u32::MAX));
        for o in observations {
            p.observe(o);
        }
        p
    }

    /// Every number the model reads: sessions, sightings per feature and
    /// each value's count.
    fn numbers(p: &ProfileRecord) -> Vec<(u32, u16)> {
        let mut out = vec![(p.sessions(), 0)];
        for k in 0..PROFILE_FEATURES {
            for v in 0..6 {
                out.push(p.count(k, v));
            }
        }
        out
    }

    proptest! {
        #[test]
        fn profile_join_is_commutative_and_idempotent(a in observations(), b in observations()) {
            let (a, b) = (sum(&a), sum(&b));
            let mut ab = a.clone();
            ab.join(&b);
            let mut ba = b.clone();
            ba.join(&a);
            prop_assert_eq!(&ab, &ba);
            let mut again = ab.clone();
            again.join(&b);
            again.join(&a);
            prop_assert_eq!(&again, &ab);
            prop_assert_eq!(ProfileRecord::decode(&ab.encode()), Some(ab.clone()));
        }

        /// Two nodes learn, the controller adds up what both posted; a
        /// node joining the controller's record, before or after its own
        /// learning and however often, ends with the fleet's sum.
        #[test]
        fn profile_join_after_delivery_is_the_fleets_sum(a in observations(), b in observations()) {
            let fleet = sum(&[a.clone(), b.clone()].concat());
            let mut node_a = sum(&a);
            node_a.join(&fleet);
            node_a.join(&fleet);
            prop_assert_eq!(numbers(&node_a), numbers(&fleet));
            // Node B heard of A's part first, then learnt its own and
            // received the sum.
            let mut node_b = sum(&a);
            for o in &b {
                node_b.observe(o);
            }
            node_b.join(&fleet);
            prop_assert!(numbers(&node_b).iter().zip(numbers(&fleet)).all(|(n, f)| n.0 >= f.0 && n.1 >= f.1));
        }
    }

    proptest! {
        /// A record received from the fleet is untrusted bytes: any bytes
        /// of the length are a profile, any other length is refused, and
        /// joining what was decoded never panics and is idempotent.
        #[test]
        fn any_received_record_decodes_or_is_refused_and_joins_idempotently(
            bytes in proptest::collection::vec(any::<u8>(), 0..2 * ProfileRecord::LEN),
        ) {
            match ProfileRecord::decode(&bytes) {
                Some(p) => {
                    prop_assert_eq!(bytes.len(), ProfileRecord::LEN);
                    let mut once = p.clone();
                    once.join(&p);
                    let mut twice = once.clone();
                    twice.join(&p);
                    prop_assert_eq!(once, twice);
                }
                None => prop_assert_ne!(bytes.len(), ProfileRecord::LEN),
            }
            let scorer = Scorer::new(crate::ScoreConfig::default());
            prop_assert_eq!(
                scorer.join_profile(user(), &bytes, 0),
                bytes.len() == ProfileRecord::LEN
            );
        }
    }

    #[test]
    fn a_record_of_another_length_is_refused() {
        let scorer = Scorer::new(crate::ScoreConfig::default());
        let record = sum(&[]).encode();
        assert!(!scorer.join_profile(user(), &record[1..], 0));
        assert!(!scorer.join_profile(user(), &[record.as_slice(), &[0]].concat(), 0));
        assert_eq!(scorer.profile_record(&user()), None);
        assert!(scorer.join_profile(user(), &record, 0));
    }

    /// The node's side of an erasure: the fleet's record joined before it
    /// is forgotten with the user. (The controller scrubs the earlier
    /// records from its log and refuses observations made before the
    /// erasure, so none arrives after it: controller tests.)
    #[test]
    fn an_erased_user_forgets_the_fleets_history_too() {
        let scorer = Scorer::new(crate::ScoreConfig::default());
        let mut fleet = ProfileRecord::new(1_700_000_000);
        fleet.observe(&Learnt {
            user: user(),
            values: [1, 2, 3, 4, 5, 6],
            which: 0x3f,
            new_session: true,
            trust: false,
            at: 1_700_000_000,
        });
        assert!(scorer.join_profile(user(), &fleet.encode(), 1_700_000_100));
        assert_eq!(scorer.profile_record(&user()), Some(fleet.encode()));
        scorer.erase_user(user(), 1_700_000_200);
        assert_eq!(scorer.profile_record(&user()), None);
    }

    #[test]
    fn population_join_takes_the_larger_count_and_skips_cells_out_of_range() {
        let scorer = Scorer::new(crate::ScoreConfig::default());
        let learnt = Learnt {
            user: user(),
            values: [7, 0, 0, 0, 0, 0],
            which: 0x3f,
            new_session: true,
            trust: false,
            at: 0,
        };
        let cells = population_cells(&learnt);
        assert_eq!(cells.len(), 4, "four rows for the one known value");
        let counters: Vec<(u32, u32)> = cells.iter().map(|&(_, c)| (c, 5)).collect();
        scorer.join_population(&[5], &counters);
        scorer.join_population(&[3], &[(cells[0].1, 2), (POPULATION_CELLS, 9)]);
        assert_eq!(scorer.population_count(0, cells[0].1), (5, 5));
        assert_eq!(scorer.population_count(0, POPULATION_CELLS), (5, 0));
    }
}
