//! Score: three risks per request, each explained by its reasons.
//!
//! * **Session risk** — this request against the session's own baseline:
//!   the device's traits and TLS fingerprint ([`Device::compare`]), the
//!   network through [`NetworkMark::change_to`] (an egress node change behind
//!   the same trusted provider is not a move), impossible travel between the
//!   places the geo stage gave, and a return to the previous network soon
//!   after leaving it (two places using one session at once: a replayed
//!   cookie).
//! * **Login risk** — the first request at which the session's user is known,
//!   against the user's history (the likelihood model of [`profile`]).
//! * **Entity risk** — the user across sessions: revoked everywhere, reported
//!   by a partner, or caught on another session recently.
//!
//! Each is a [`Risk`]: a score from 0 to 100, its level and the reasons with
//! their points; the request's overall risk adds them up. Nothing here
//! changes state: [`Scorer::commit`] learns from a request once the decision
//! says it was allowed, so a blocked replay teaches nothing.
//!
//! State is bounded: session states (96 bytes each, with a fixed record form
//! for snapshots and sync — see [`state`]) in a store of our own sized to
//! the per-session memory budget ([`store`]); user profiles (320 bytes),
//! entity flags (only for users that have some) and revocations in `moka`
//! caches; the population's frequency sketches (6 × 256 KiB).

mod profile;
mod state;
mod store;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use vigil_geoip::Location;
use vigil_geoip::travel::{Travel, TravelConfig, classify as travel};

use crate::device::{Device, DeviceId, DeviceSummary, TraitMatch};
use crate::fingerprint::{TlsMatch, TlsSource};
use crate::network::{NetworkChange, NetworkFacts, NetworkMark};
use crate::session::SessionKey;
use profile::{ALL, Evidence, Feature, Features, NETWORK, Population, UserProfile};
pub(crate) use state::{Place, secs32};
pub use state::{RecordError, SessionState, UserKey};
use store::SessionStore;

/// Risk level, the coarse summary of a score that policies map to actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RiskLevel {
    /// Below the medium threshold.
    Low,
    /// At or above the medium threshold, below the high one.
    Medium,
    /// At or above the high threshold.
    High,
}

/// Why a request scored what it did. Codes are stable: they appear in
/// headers, logs and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The device's HTTP traits (browser, platform, class, language, header
    /// shape) differ from the session's baseline, beyond an update.
    DeviceChanged,
    /// The connection's TLS fingerprint (JA4) differs from the session's:
    /// another TLS stack (full points), the same stack with other
    /// extensions and no browser update to explain it (family points), or a
    /// hello Vigil could not read where it could before (full points).
    Ja4Mismatch,
    /// The same browser a major version or two newer, on the same TLS
    /// family: an update, noted with few points.
    DeviceUpgraded,
    /// The client moved to another address: within its ASN (few points), or
    /// to a prefix whose ASN is not known (more). A new egress node of the
    /// same provider, or another address in the same /24 or /48, is not a
    /// move.
    IpChanged,
    /// The client moved to another autonomous system, in the same or an
    /// unknown country.
    AsnChanged,
    /// The client moved to another country.
    CountryChanged,
    /// The move from the last place to this one is faster than an airliner,
    /// after both places' accuracy radii are taken off the distance.
    ImpossibleTravel,
    /// The session came back to the network it left a moment ago: two
    /// places are using it at once.
    ConcurrentNetworks,
    /// The session keeps hopping to new networks minutes apart, as traffic
    /// through a rotating proxy pool does.
    NetworkChurn,
    /// The device (browser, platform, device traits) is unusual for the
    /// user, by the likelihood model.
    NewDeviceForUser,
    /// The network (prefix, ASN) is unusual for the user.
    NewNetworkForUser,
    /// The country is unusual for the user.
    NewCountryForUser,
    /// The session was revoked.
    Revoked,
    /// The user's sessions were all revoked after this one began.
    UserRevoked,
    /// A partner (identity provider, security tool) reported the user at
    /// risk.
    PartnerReported,
    /// Another session of the user was flagged high recently.
    RecentDetections,
}

/// One reason and the points it added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contribution {
    /// The reason.
    pub reason: Reason,
    /// Points added to the score.
    pub points: u8,
}

/// One risk of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Risk {
    /// Coarse level.
    pub level: RiskLevel,
    /// Sum of the contributions, capped at 100.
    pub score: u8,
    /// Each reason with its points, in the order they were found.
    pub reasons: Vec<Contribution>,
}

/// The three risks of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Risks {
    /// Login risk: only on the first request at which the session's user is
    /// known.
    pub login: Option<Risk>,
    /// Session risk: against the session's baseline.
    pub session: Risk,
    /// Entity risk: the user across sessions; none when no user is known.
    pub entity: Risk,
    /// The user is known but still in the learning period: the likelihood
    /// model's points were left out.
    pub learning: bool,
}

/// Points per nat of likelihood ratio, per feature of the user model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureWeights {
    /// Client /24 or /48. Default 2.
    pub prefix: u8,
    /// ASN. Default 3.
    pub asn: u8,
    /// Country. Default 4.
    pub country: u8,
    /// Device traits without the browser version. Default 4.
    pub device: u8,
    /// Browser family. Default 2.
    pub browser: u8,
    /// Platform. Default 2.
    pub platform: u8,
}

/// The user model's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserModelConfig {
    /// Points per nat of evidence, per feature.
    pub weights: FeatureWeights,
    /// Most nats one feature can contribute. Default 6 (a ratio of ~400).
    pub llr_cap: u8,
    /// Sessions a user needs before the model's points count. Default 5.
    pub learning_sessions: u32,
    /// Time since a user's first session before the model's points count.
    /// Default 3 days.
    pub learning_period: Duration,
    /// Sightings after which a network is familiar: moving to it mid-session
    /// is not evidence. Default 2.
    pub familiar_after: u16,
    /// Most points the model adds to a mid-session network move. Default 20.
    pub session_cap: u8,
}

/// Weights and thresholds of the risk engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreConfig {
    /// Points when the device traits changed. Default 70.
    pub device_changed: u8,
    /// Points when the JA4 is another stack's. Default 70.
    pub ja4_mismatch: u8,
    /// Points when the JA4 changed within its family with no browser update.
    /// Default 30.
    pub ja4_family_changed: u8,
    /// Points when the browser updated mid-session. Default 10.
    pub device_upgraded: u8,
    /// Points when the client moved to a prefix of unknown ASN. Default 30.
    pub ip_changed: u8,
    /// Points when the client moved within its ASN. Default 10.
    pub ip_changed_same_asn: u8,
    /// Points when the client moved to another ASN. Default 30.
    pub asn_changed: u8,
    /// Points when the client moved to another country. Default 35.
    pub country_changed: u8,
    /// Points for a move faster than `max_kmh`. Default 50.
    pub impossible_travel: u8,
    /// Fastest plausible travel in km/h. Default 1000.
    pub max_kmh: u16,
    /// An accuracy radius at or above which a place is only a country (geo
    /// databases put mobile carriers at the country's centre with a radius
    /// of about 1,000 km): travel is not judged between such a place and
    /// another in the same country. Default 100 km.
    pub coarse_location_km: u16,
    /// Points when the session returns to the network it left less than
    /// `concurrent_window` ago. Default 40.
    pub concurrent_networks: u8,
    /// Points when the session has moved to another prefix `churn_moves`
    /// times in a row, each within `concurrent_window` of the one before:
    /// the pattern of rotating proxies. Default 30.
    pub network_churn: u8,
    /// See `network_churn`. Default 3.
    pub churn_moves: u8,
    /// See `concurrent_networks`. Default 10 minutes.
    pub concurrent_window: Duration,
    /// Points per other-session detection of the user within
    /// `detection_window`, up to three. Default 15.
    pub recent_detection: u8,
    /// How long a detection raises the user's entity risk. Default 1 hour.
    pub detection_window: Duration,
    /// The user model.
    pub model: UserModelConfig,
    /// Score at which risk becomes medium. Default 30.
    pub medium_at: u8,
    /// Score at which risk becomes high. Default 60.
    pub high_at: u8,
    /// Most sessions whose state is kept; the least recently used go first.
    /// Default 1,000,000.
    pub max_sessions: u64,
    /// A session state unused for this long is forgotten. Default 30 days:
    /// at least as long as the apps keep sessions, or a cookie stolen and
    /// replayed after the owner's last visit meets no baseline.
    pub session_idle_timeout: Duration,
    /// How long a revocation is remembered; never less than
    /// `session_idle_timeout`. Default 30 days.
    pub revocation_ttl: Duration,
    /// Most user profiles kept. Default 1,000,000.
    pub max_users: u64,
    /// A profile unused for this long is forgotten. Default 90 days.
    pub user_idle_timeout: Duration,
}

/// An operator's or the user's word on a detection, taken into account from
/// the next request on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Feedback {
    /// A refusal was a false positive: the refused request's device and
    /// network become the session's baseline and are trusted for its user.
    FalsePositive {
        /// The session.
        session: SessionKey,
        /// The refused request's device.
        device: DeviceSummary,
        /// The refused request's network (ASN, country and place are looked
        /// up again).
        network: NetworkFacts,
    },
    /// This device (whatever its browser version) is the user's.
    TrustDevice {
        /// The user.
        user: UserKey,
        /// The device.
        device: DeviceId,
    },
    /// This network is the user's: moving to it is not evidence and the
    /// model does not count it against them.
    TrustNetwork {
        /// The user.
        user: UserKey,
        /// The network.
        network: TrustedNetwork,
    },
}

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

/// Why feedback could not be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FeedbackError {
    /// The session was revoked since: it stays revoked.
    #[error("the session was revoked")]
    Revoked,
    /// The session is no longer remembered on this node.
    #[error("the session is no longer known on this node")]
    NoSession,
}

/// A network an operator can trust for a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustedNetwork {
    /// Every address of an autonomous system.
    Asn(u32),
    /// The /24 (IPv4) or /48 (IPv6) holding this address.
    Prefix(IpAddr),
    /// A country (ISO 3166-1 alpha-2, either case).
    Country([u8; 2]),
}

/// What the user-level flags say; kept only for users that have one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct EntityState {
    /// How many times the user was revoked: a session bound to the user
    /// under an older count is ended.
    generation: u16,
    reported_points: u8,
    reported_until: u32,
    detections: u8,
    detections_until: u32,
}

impl EntityState {
    const RECORD_LEN: usize = 12;

    fn encode(&self) -> [u8; Self::RECORD_LEN] {
        let mut out = [0u8; Self::RECORD_LEN];
        out[..2].copy_from_slice(&self.generation.to_le_bytes());
        out[2] = self.reported_points;
        out[3] = self.detections;
        out[4..8].copy_from_slice(&self.reported_until.to_le_bytes());
        out[8..].copy_from_slice(&self.detections_until.to_le_bytes());
        out
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; Self::RECORD_LEN] = b.try_into().ok()?;
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(Self {
            generation: u16::from_le_bytes([b[0], b[1]]),
            reported_points: b[2].min(100),
            detections: b[3].min(MAX_DETECTIONS),
            reported_until: u32_at(4),
            detections_until: u32_at(8),
        })
    }
}

/// The scorer and its stores.
#[derive(Clone)]
pub struct Scorer {
    /// Behind an `ArcSwap` so that weights and thresholds can be replaced
    /// while requests run ([`Scorer::reconfigure`]); the store sizes in it
    /// stay those the stores were built with.
    /// Shared by clones, as the stores are.
    config: Arc<ArcSwap<ScoreConfig>>,
    sessions: Arc<SessionStore>,
    revoked: Cache<SessionKey, Revocation>,
    profiles: Cache<UserKey, Arc<Mutex<UserProfile>>>,
    entities: Cache<UserKey, EntityState>,
    population: Arc<Population>,
}

/// What scoring found, to be committed once the decision is known.
#[allow(
    clippy::large_enum_variant,
    reason = "lives on the stack for one request; boxing it would allocate on every request"
)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Observation {
    /// No session: nothing to remember.
    Anonymous,
    /// The session is revoked.
    Revoked,
    /// A session's request: the state to keep if it is allowed, and what to
    /// learn of the user.
    Session {
        key: SessionKey,
        prior: Option<SessionState>,
        next: SessionState,
        learn: Learn,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Learn {
    features: Features,
    which: &'static [Feature],
    /// A new session of the user (counted toward the learning period).
    new_session: bool,
    /// Learn the values as trusted (confirmed by an operator).
    trust: bool,
}

impl Observation {
    /// Whether the request carried a live session.
    pub(crate) fn is_session(&self) -> bool {
        matches!(self, Observation::Session { .. })
    }

    /// Whether committing this as allowed takes the session's first
    /// baseline.
    pub(crate) fn first_sighting(&self) -> bool {
        matches!(self, Observation::Session { prior, .. }
            if !prior.is_some_and(|p| p.has(SessionState::BASELINED)))
    }
}

/// What [`Scorer::issue`] did with a session the app set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Issued {
    /// A new session, baselined.
    New,
    /// A known session, kept as it was and bound to the named user.
    Bound,
    /// A known session, kept as it was.
    Known,
    /// A revoked session: nothing recorded.
    Revoked,
}

/// What the decision made of a request, for [`Scorer::commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commit {
    /// Allowed: learn from it.
    Allowed,
    /// Refused at high risk for what it showed (not for a revocation):
    /// count it against the user.
    Detected,
    /// Refused otherwise: nothing to learn or count.
    Refused,
}

/// What [`Scorer::score`] found.
#[derive(Debug)]
pub(crate) struct Scored {
    pub risks: Risks,
    /// The user the session is bound to.
    pub user: Option<UserKey>,
    pub change: Option<NetworkChange>,
    pub observation: Observation,
}

/// How often an unchanged session's last-seen time is rewritten, in
/// seconds: travel speed is then judged to within a minute, and a busy
/// session costs one cache write a minute, not one a request.
const LAST_SEEN_GRANULARITY: u32 = 60;
/// A revoked session: when, and the user whose revocation it was (`None`
/// when the session itself was revoked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Revocation {
    at: u64,
    by_user: Option<UserKey>,
}
/// A snapshot starts with this, then the counts of sessions, revocations,
/// profiles and entity flags (u64, little endian), then the session
/// records, the revocations (key, time, user key or 0), the profiles (user
/// key, profile record) and the entity flags (user key, record).
const SNAPSHOT_MAGIC: &[u8; 8] = b"VIGILSS2";
const SNAPSHOT_HEADER: usize = 40;

/// The session state after its user proved themselves (or an operator
/// vouched) from this device and network: they become the baseline, the
/// TLS fingerprint kept if this device showed none, the move counter reset,
/// and login judged.
fn adopt(
    held: Option<&SessionState>,
    device: &DeviceSummary,
    network: &NetworkMark,
    place: Option<Place>,
    now: u32,
) -> SessionState {
    let mut next = held
        .copied()
        .unwrap_or_else(|| SessionState::new(device, *network, place, now));
    if next.network.prefix != network.prefix && next.has(SessionState::BASELINED) {
        next.previous = next.network.prefix;
        next.moved_at = now;
    }
    let mut device = *device;
    if device.tls_source == TlsSource::None && next.tls_source != TlsSource::None {
        device.tls_source = next.tls_source;
        device.ja4 = next.ja4;
    }
    next.set_device(&device);
    next.network = *network;
    next.place = place.or(next.place);
    next.last_seen = now;
    next.flags |= SessionState::BASELINED;
    if next.user.is_some() {
        next.flags |= SessionState::LOGIN_SCORED;
    }
    next.set_moves(0);
    next
}

/// A little-endian u64 from up to 8 bytes (0 for fewer: lengths are checked
/// before).
fn u64_of(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_le_bytes).unwrap_or(0)
}
const REVOCATION_LEN: usize = 32;
/// Other-session detections counted toward entity risk.
const MAX_DETECTIONS: u8 = 3;

// === impl ScoreConfig ===

impl Default for ScoreConfig {
    fn default() -> Self {
        Self {
            device_changed: 70,
            ja4_mismatch: 70,
            ja4_family_changed: 30,
            device_upgraded: 10,
            ip_changed: 30,
            ip_changed_same_asn: 10,
            asn_changed: 30,
            country_changed: 35,
            impossible_travel: 50,
            max_kmh: 1000,
            coarse_location_km: 100,
            concurrent_networks: 40,
            network_churn: 30,
            churn_moves: 3,
            concurrent_window: Duration::from_secs(600),
            recent_detection: 15,
            detection_window: Duration::from_secs(3600),
            model: UserModelConfig::default(),
            medium_at: 30,
            high_at: 60,
            max_sessions: 1_000_000,
            session_idle_timeout: Duration::from_secs(30 * 24 * 3600),
            revocation_ttl: Duration::from_secs(30 * 24 * 3600),
            max_users: 1_000_000,
            user_idle_timeout: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

impl Default for UserModelConfig {
    fn default() -> Self {
        Self {
            weights: FeatureWeights {
                prefix: 2,
                asn: 3,
                country: 4,
                device: 4,
                browser: 2,
                platform: 2,
            },
            llr_cap: 6,
            learning_sessions: 5,
            learning_period: Duration::from_secs(3 * 24 * 3600),
            familiar_after: 2,
            session_cap: 20,
        }
    }
}

impl ScoreConfig {
    /// The level of `score` under these thresholds.
    pub fn level(&self, score: u8) -> RiskLevel {
        if score >= self.high_at {
            RiskLevel::High
        } else if score >= self.medium_at {
            RiskLevel::Medium
        } else {
            RiskLevel::Low
        }
    }
}

impl FeatureWeights {
    fn of(&self, f: Feature) -> u8 {
        match f {
            Feature::Prefix => self.prefix,
            Feature::Asn => self.asn,
            Feature::Country => self.country,
            Feature::Device => self.device,
            Feature::Browser => self.browser,
            Feature::Platform => self.platform,
        }
    }
}

// === impl Risk ===

impl Risk {
    /// No risk found.
    pub fn none() -> Self {
        Self {
            level: RiskLevel::Low,
            score: 0,
            reasons: Vec::new(),
        }
    }

    /// Whether `reason` contributed.
    pub fn has(&self, reason: Reason) -> bool {
        self.reasons.iter().any(|c| c.reason == reason)
    }

    /// The points `reason` contributed (0 when it did not).
    pub fn points(&self, reason: Reason) -> u32 {
        self.reasons
            .iter()
            .filter(|c| c.reason == reason)
            .map(|c| u32::from(c.points))
            .sum()
    }

    fn from_contributions(config: &ScoreConfig, reasons: Vec<Contribution>) -> Self {
        let sum: u32 = reasons.iter().map(|c| u32::from(c.points)).sum();
        let score = u8::try_from(sum.min(100)).unwrap_or(100);
        Self {
            level: config.level(score),
            score,
            reasons,
        }
    }
}

impl Risks {
    /// No risk of any kind.
    pub fn none() -> Self {
        Self {
            login: None,
            session: Risk::none(),
            entity: Risk::none(),
            learning: false,
        }
    }

    /// The request's overall risk: every contribution of the three, login
    /// first, then session, then entity; the score is their sum, capped.
    pub fn overall(&self, config: &ScoreConfig) -> Risk {
        let reasons = self
            .login
            .iter()
            .flat_map(|r| r.reasons.iter())
            .chain(&self.session.reasons)
            .chain(&self.entity.reasons)
            .copied()
            .collect();
        Risk::from_contributions(config, reasons)
    }
}

// === impl Scorer ===

impl Scorer {
    /// Builds a scorer with empty stores.
    pub fn new(config: ScoreConfig) -> Self {
        let sessions = Arc::new(SessionStore::new(
            config.max_sessions,
            config.session_idle_timeout,
        ));
        // Least recently used eviction everywhere: moka's default admission
        // policy turns a new entry away when the cache is full of ones used
        // more often, and a revocation, a new user or a first detection is
        // used once before it matters.
        let revoked = Cache::builder()
            .max_capacity(config.max_sessions)
            // Never shorter than a session can live, or the cookie outlives
            // its revocation.
            .time_to_live(config.revocation_ttl.max(config.session_idle_timeout))
            .eviction_policy(EvictionPolicy::lru())
            .build();
        let profiles = Cache::builder()
            .max_capacity(config.max_users)
            .time_to_idle(config.user_idle_timeout)
            .eviction_policy(EvictionPolicy::lru())
            .build();
        let entities = Cache::builder()
            .max_capacity(config.max_users)
            .time_to_idle(config.user_idle_timeout)
            .eviction_policy(EvictionPolicy::lru())
            .build();
        Self {
            config: Arc::new(ArcSwap::from_pointee(config)),
            sessions,
            revoked,
            profiles,
            entities,
            population: Arc::new(Population::new()),
        }
    }

    /// The configuration now in force.
    pub fn config(&self) -> Arc<ScoreConfig> {
        self.config.load_full()
    }

    /// Replaces weights and thresholds for requests scored from now on. The
    /// stores keep their sizes and lifetimes (`max_sessions`,
    /// `session_idle_timeout`, `revocation_ttl`, `max_users`,
    /// `user_idle_timeout` of `config` are ignored): resizing them would
    /// mean rebuilding them, and losing every session.
    pub fn reconfigure(&self, mut config: ScoreConfig) {
        let running = self.config.load();
        config.max_sessions = running.max_sessions;
        config.session_idle_timeout = running.session_idle_timeout;
        config.revocation_ttl = running.revocation_ttl;
        config.max_users = running.max_users;
        config.user_idle_timeout = running.user_idle_timeout;
        self.config.store(Arc::new(config));
    }

    /// Scores a request of `session`. Does not change the stores:
    /// [`Scorer::commit`] does, once the decision is known.
    pub(crate) fn score(
        &self,
        session: Option<SessionKey>,
        device: &Device,
        network: &NetworkMark,
        place: Option<Place>,
        now_secs: u64,
    ) -> Scored {
        let Some(key) = session else {
            return Scored {
                risks: Risks::none(),
                user: None,
                change: None,
                observation: Observation::Anonymous,
            };
        };
        // `contains_key` records no read in the cache's log (a `get` on every
        // request would run its housekeeping more often, which is the tail).
        if let Some(revocation) = self
            .revoked
            .contains_key(&key)
            .then(|| self.revoked.get(&key))
            .flatten()
        {
            let mut risks = Risks::none();
            let (reason, part) = if revocation.by_user.is_some() {
                (Reason::UserRevoked, &mut risks.entity)
            } else {
                (Reason::Revoked, &mut risks.session)
            };
            *part = Risk::from_contributions(
                &self.config.load(),
                vec![Contribution {
                    reason,
                    points: 100,
                }],
            );
            return Scored {
                risks,
                user: revocation.by_user,
                change: None,
                observation: Observation::Revoked,
            };
        }
        let now = secs32(now_secs);
        // Read without touching: the store changes only when the decision
        // is applied (`commit`).
        let prior = self.sessions.read(&key, now);
        let features = Features::of(network, device.id);
        let mut risks = Risks::none();
        let mut change = None;
        let mut learn = Learn {
            features,
            which: &[],
            new_session: false,
            trust: false,
        };
        let fresh = |base: Option<&SessionState>| SessionState {
            user: base.and_then(|s| s.user),
            first_seen: base.map_or(now, |s| s.first_seen.min(now)),
            generation: base.map_or(0, |s| s.generation),
            flags: SessionState::BASELINED,
            ..SessionState::new(&device.summary(), *network, place, now)
        };
        let mut next = match prior {
            Some(s) if s.has(SessionState::BASELINED) => {
                let (risk, moved, next) =
                    self.session_risk(&s, device, network, &features, place, now);
                risks.session = risk;
                change = Some(moved);
                if moved >= NetworkChange::SameAsn {
                    learn.which = &NETWORK;
                }
                next
            }
            _ => fresh(prior.as_ref()),
        };
        if let Some(user) = next.user {
            if !next.has(SessionState::LOGIN_SCORED) {
                let (risk, learning) = self.login_risk(user, &features, now);
                risks.login = Some(risk);
                risks.learning = learning;
                next.flags |= SessionState::LOGIN_SCORED;
                learn.which = &ALL;
                learn.new_session = true;
            }
            risks.entity = self.entity_risk(user, next.generation, now);
        }
        Scored {
            risks,
            user: next.user,
            change,
            observation: Observation::Session {
                key,
                prior,
                next,
                learn,
            },
        }
    }

    /// This request against the session's baseline; also the state to keep
    /// if the request is allowed.
    fn session_risk(
        &self,
        s: &SessionState,
        device: &Device,
        network: &NetworkMark,
        features: &Features,
        place: Option<Place>,
        now: u32,
    ) -> (Risk, NetworkChange, SessionState) {
        let c = &*self.config.load();
        let mut reasons = Vec::new();
        let mut add = |reason, points| reasons.push(Contribution { reason, points });
        let mut next = *s;
        let m = device.compare(&s.device());
        match m.traits {
            TraitMatch::Same => {}
            TraitMatch::Upgraded if m.tls != TlsMatch::Different => {
                add(Reason::DeviceUpgraded, c.device_upgraded);
                let mut upgraded = device.summary();
                if m.tls == TlsMatch::NoEvidence && s.tls_source != TlsSource::None {
                    // No TLS evidence this time: the fingerprint stays.
                    upgraded.tls_source = s.tls_source;
                    upgraded.ja4 = s.ja4;
                }
                next.set_device(&upgraded);
            }
            TraitMatch::Upgraded | TraitMatch::Different => {
                add(Reason::DeviceChanged, c.device_changed);
            }
        }
        match m.tls {
            TlsMatch::Same => {}
            TlsMatch::NoEvidence => {
                // A first fingerprint for a session that had none is learnt.
                if s.tls_source == TlsSource::None && device.tls.source != TlsSource::None {
                    next.tls_source = device.tls.source;
                    next.ja4 = device.tls.ja4;
                }
            }
            TlsMatch::SameFamily if m.traits == TraitMatch::Upgraded => {}
            TlsMatch::SameFamily => add(Reason::Ja4Mismatch, c.ja4_family_changed),
            TlsMatch::Different => add(Reason::Ja4Mismatch, c.ja4_mismatch),
        }

        let change = s.network.change_to(network);
        let window = secs32(c.concurrent_window.as_secs());
        if change >= NetworkChange::SameAsn {
            let (familiar, surprise) = match s.user {
                Some(user) => self.network_surprise(user, features, change, place, now),
                None => (false, Vec::new()),
            };
            if !familiar {
                match change {
                    NetworkChange::SameAsn => add(Reason::IpChanged, c.ip_changed_same_asn),
                    NetworkChange::DifferentPrefix => add(Reason::IpChanged, c.ip_changed),
                    NetworkChange::DifferentAsn => add(Reason::AsnChanged, c.asn_changed),
                    _ => add(Reason::CountryChanged, c.country_changed),
                }
            }
            reasons.extend(surprise);
            let coarse = |p: &Place| p.accuracy_km >= c.coarse_location_km;
            let same_country = change < NetworkChange::DifferentCountry;
            if let (Some(a), Some(b)) = (s.place, place)
                && !(same_country && (coarse(&a) || coarse(&b)))
            {
                let elapsed = f64::from(now.saturating_sub(s.last_seen));
                let config = TravelConfig {
                    max_kmh: f64::from(c.max_kmh),
                };
                if let Travel::Impossible { .. } =
                    travel(&a.location(), &b.location(), elapsed, &config)
                {
                    reasons.push(Contribution {
                        reason: Reason::ImpossibleTravel,
                        points: c.impossible_travel,
                    });
                }
            }
            if s.previous != 0
                && network.prefix == s.previous
                && now.saturating_sub(s.moved_at) <= window
            {
                reasons.push(Contribution {
                    reason: Reason::ConcurrentNetworks,
                    points: c.concurrent_networks,
                });
            }
        }
        if network.prefix != s.network.prefix {
            let quick = s.moved_at != 0 && now.saturating_sub(s.moved_at) <= window;
            let moves = if quick {
                s.moves().saturating_add(1)
            } else {
                1
            };
            if moves >= c.churn_moves && c.churn_moves > 0 {
                reasons.push(Contribution {
                    reason: Reason::NetworkChurn,
                    points: c.network_churn,
                });
            }
            next.set_moves(moves);
        }
        if *network != s.network {
            if network.prefix != s.network.prefix {
                next.previous = s.network.prefix;
                next.moved_at = now;
            }
            next.network = *network;
            next.place = place.or(s.place);
            next.last_seen = now;
        } else if now.saturating_sub(s.last_seen) >= LAST_SEEN_GRANULARITY {
            next.last_seen = now;
        }
        (Risk::from_contributions(c, reasons), change, next)
    }

    /// The first request of a user's session against their history.
    fn login_risk(&self, user: UserKey, features: &Features, now: u32) -> (Risk, bool) {
        let Some(profile) = self.profiles.get(&user) else {
            return (Risk::none(), true);
        };
        let profile = profile.lock().unwrap_or_else(PoisonError::into_inner);
        let config = self.config.load();
        let m = &config.model;
        if profile.learning(
            now,
            m.learning_sessions,
            secs32(m.learning_period.as_secs()),
        ) {
            return (Risk::none(), true);
        }
        let evidence = profile.evidence(&self.population, features, &ALL, f64::from(m.llr_cap));
        let reasons = self.model_points(evidence, 100);
        (Risk::from_contributions(&config, reasons), false)
    }

    /// Whether a mid-session move lands on a network familiar to the user
    /// (then the move is no evidence), and the model's points otherwise.
    ///
    /// A network is familiar when its prefix is (seen `familiar_after`
    /// times, or trusted), when its ASN was trusted, or when its ASN is
    /// familiar and the place is coarse or unknown: mobile carriers move a
    /// user across their prefixes all day and are placed at the country's
    /// centre, while a home or office line keeps its prefix — a new prefix
    /// of a familiar fixed-line ISP, placed at a city, is someone else's
    /// line.
    fn network_surprise(
        &self,
        user: UserKey,
        features: &Features,
        change: NetworkChange,
        place: Option<Place>,
        now: u32,
    ) -> (bool, Vec<Contribution>) {
        let Some(profile) = self.profiles.get(&user) else {
            return (false, Vec::new());
        };
        let profile = profile.lock().unwrap_or_else(PoisonError::into_inner);
        let config = self.config.load();
        let m = &config.model;
        let after = m.familiar_after;
        let asn = features.get(Feature::Asn);
        let coarse = place.is_none_or(|p| p.accuracy_km >= config.coarse_location_km);
        let network_known = profile.familiar(Feature::Prefix, features.get(Feature::Prefix), after)
            || profile.count(Feature::Asn, asn).1
            || (coarse && profile.familiar(Feature::Asn, asn, after));
        let familiar = network_known
            && (change < NetworkChange::DifferentCountry
                || profile.familiar(Feature::Country, features.get(Feature::Country), after));
        if familiar
            || profile.learning(
                now,
                m.learning_sessions,
                secs32(m.learning_period.as_secs()),
            )
        {
            return (familiar, Vec::new());
        }
        let evidence = profile.evidence(&self.population, features, &NETWORK, f64::from(m.llr_cap));
        (false, self.model_points(evidence, m.session_cap))
    }

    /// Turns the model's evidence into contributions, one per reason, the
    /// total held to `cap`.
    fn model_points(&self, evidence: impl Iterator<Item = Evidence>, cap: u8) -> Vec<Contribution> {
        let config = self.config.load();
        let w = &config.model.weights;
        let mut sums = [0.0f64; 3];
        for e in evidence {
            let slot = match e.feature {
                Feature::Prefix | Feature::Asn => 0,
                Feature::Country => 1,
                Feature::Device | Feature::Browser | Feature::Platform => 2,
            };
            sums[slot] += f64::from(w.of(e.feature)) * e.llr;
        }
        let mut left = u32::from(cap);
        let mut out = Vec::new();
        for (sum, reason) in sums.into_iter().zip([
            Reason::NewNetworkForUser,
            Reason::NewCountryForUser,
            Reason::NewDeviceForUser,
        ]) {
            #[allow(
                clippy::cast_possible_truncation,
                reason = "clamped to 0..=255 first, so the cast is exact"
            )]
            let points = (sum.round().clamp(0.0, 255.0) as u32).min(left);
            if points > 0 {
                left -= points;
                out.push(Contribution {
                    reason,
                    points: u8::try_from(points).unwrap_or(u8::MAX),
                });
            }
        }
        out
    }

    /// The user's flags, for a session bound to them under revocation
    /// `generation`.
    fn entity_risk(&self, user: UserKey, generation: u16, now: u32) -> Risk {
        let config = self.config.load();
        // Most users have no flags: `contains_key` answers without logging
        // a read (see `score`).
        let Some(e) = self
            .entities
            .contains_key(&user)
            .then(|| self.entities.get(&user))
            .flatten()
        else {
            return Risk::none();
        };
        let mut reasons = Vec::new();
        if e.generation > generation {
            reasons.push(Contribution {
                reason: Reason::UserRevoked,
                points: 100,
            });
        }
        if e.reported_until > now && e.reported_points > 0 {
            reasons.push(Contribution {
                reason: Reason::PartnerReported,
                points: e.reported_points,
            });
        }
        if e.detections_until > now && e.detections > 0 {
            let n = e.detections.min(MAX_DETECTIONS);
            reasons.push(Contribution {
                reason: Reason::RecentDetections,
                points: config.recent_detection.saturating_mul(n),
            });
        }
        Risk::from_contributions(&config, reasons)
    }

    /// Records what a decided request taught. An allowed request's state is
    /// kept (a first request becomes the baseline; a move of network, a
    /// browser update, a first TLS fingerprint are learnt — never another
    /// device), and its features are learnt for the user and the population.
    /// A refused request teaches nothing, except that a high one counts
    /// against its user for a while.
    pub(crate) fn commit(&self, observation: Observation, verdict: Commit, now_secs: u64) {
        let Observation::Session {
            key,
            prior,
            next,
            learn,
        } = observation
        else {
            return;
        };
        let now = secs32(now_secs);
        match verdict {
            Commit::Allowed => {}
            Commit::Detected => {
                if let Some(user) = next.user {
                    self.record_detection(user, now);
                }
                return;
            }
            Commit::Refused => return,
        }
        if prior == Some(next) {
            // Nothing new to keep: only mark the session used, as often as
            // its last-seen time is kept.
            if prior.is_some_and(|p| now.saturating_sub(p.touched) >= LAST_SEEN_GRANULARITY) {
                self.sessions.touch(&key, now);
            }
        } else {
            // Merged under the shard's lock: a binding or confirmation that
            // landed while this request was scored is kept, not overwritten.
            self.sessions.update(key, now, |stored| {
                let mut next = next;
                let before = prior.map_or((None, 0), |p| (p.user, p.generation));
                if let Some(stored) = stored
                    && (stored.user, stored.generation) != before
                {
                    next.user = stored.user;
                    next.generation = stored.generation;
                    next.flags = (next.flags & !SessionState::LOGIN_SCORED)
                        | (stored.flags & SessionState::LOGIN_SCORED);
                }
                next
            });
        }
        self.learn(next.user, &learn, now);
    }

    fn learn(&self, user: Option<UserKey>, learn: &Learn, now: u32) {
        // The population counts only sessions an app bound to a user:
        // anyone can open unbound sessions by the thousand to make their
        // network look common.
        let Some(user) = user else { return };
        if learn.which.is_empty() {
            return;
        }
        self.population.observe(&learn.features, learn.which);
        let profile = self
            .profiles
            .get_with(user, || Arc::new(Mutex::new(UserProfile::new(now))));
        let mut p = profile.lock().unwrap_or_else(PoisonError::into_inner);
        if learn.new_session {
            p.add_session();
        }
        p.observe(&learn.features, learn.which, now);
        if learn.trust {
            for &f in learn.which {
                p.trust(f, learn.features.get(f), now);
            }
        }
    }

    fn clear_detections(&self, user: UserKey) {
        if let Some(mut e) = self.entities.get(&user)
            && e.detections > 0
        {
            e.detections = 0;
            e.detections_until = 0;
            self.entities.insert(user, e);
        }
    }

    fn record_detection(&self, user: UserKey, now: u32) {
        let window = secs32(self.config.load().detection_window.as_secs());
        let mut e = self.entities.get(&user).unwrap_or_default();
        let until = now.saturating_add(window);
        // A replay loop would otherwise write on every request: once the
        // count is full and the window fresh, there is nothing to add.
        if e.detections >= MAX_DETECTIONS
            && e.detections_until > now
            && until.saturating_sub(e.detections_until) < LAST_SEEN_GRANULARITY
        {
            return;
        }
        e.detections = if e.detections_until > now {
            e.detections.saturating_add(1).min(MAX_DETECTIONS)
        } else {
            1
        };
        e.detections_until = until;
        self.entities.insert(user, e);
    }

    /// Binds a session to its user (the app or identity provider said who
    /// opened it). The session's next request is judged against the user's
    /// history (login risk) and counts toward it.
    /// Returns whether the binding changed anything (a session already
    /// bound to `user` is left as it is).
    pub fn bind_user(&self, key: SessionKey, user: UserKey, now_secs: u64) -> bool {
        let now = secs32(now_secs);
        if self
            .sessions
            .read(&key, now)
            .is_some_and(|s| s.user == Some(user))
        {
            return false;
        }
        let generation = self.entities.get(&user).map_or(0, |e| e.generation);
        let mut changed = true;
        self.sessions.update(key, now, |held| match held {
            Some(s) if s.user == Some(user) => {
                changed = false;
                *s
            }
            Some(s) => {
                let mut s = *s;
                s.user = Some(user);
                s.generation = generation;
                s.flags &= !SessionState::LOGIN_SCORED;
                s
            }
            None => SessionState {
                generation,
                ..SessionState::bound(user, now)
            },
        });
        changed
    }

    /// The app opened a session in a response to a request from this device
    /// and network: they are its baseline before anyone presents the new
    /// value, and it is bound to `user` when the app named one. A session
    /// already known keeps its baseline (apps re-set the same cookie to
    /// extend it) and is bound to `user` if one is named; a revoked one
    /// stays revoked. Returns what was done.
    pub(crate) fn issue(
        &self,
        key: SessionKey,
        user: Option<UserKey>,
        device: &DeviceSummary,
        network: &NetworkMark,
        place: Option<Place>,
        now_secs: u64,
    ) -> Issued {
        if self.revoked.contains_key(&key) {
            return Issued::Revoked;
        }
        let now = secs32(now_secs);
        let generation = user
            .and_then(|u| self.entities.get(&u))
            .map_or(0, |e| e.generation);
        let mut issued = false;
        self.sessions.update(key, now, |held| match held {
            Some(s) => *s,
            None => {
                issued = true;
                SessionState {
                    user,
                    generation,
                    flags: SessionState::BASELINED,
                    ..SessionState::new(device, *network, place, now)
                }
            }
        });
        match (issued, user) {
            (true, _) => Issued::New,
            (false, Some(user)) if self.bind_user(key, user, now_secs) => Issued::Bound,
            (false, Some(_)) => Issued::Known,
            (false, None) => Issued::Known,
        }
    }

    /// The session's user proved themselves from this request's device and
    /// network (a step-up passed): those become the session's baseline and
    /// are learnt for the user, and the user's recent detections are
    /// cleared. Returns the session's user, or `None` when nothing was
    /// confirmed (the session is revoked).
    pub(crate) fn confirm(
        &self,
        key: SessionKey,
        device: &Device,
        network: &NetworkMark,
        place: Option<Place>,
        now_secs: u64,
    ) -> Option<Option<UserKey>> {
        if self.revoked.contains_key(&key) {
            return None;
        }
        let now = secs32(now_secs);
        let mut next = SessionState::new(&device.summary(), *network, place, now);
        self.sessions.update(key, now, |held| {
            next = adopt(held, &device.summary(), network, place, now);
            next
        });
        let learn = Learn {
            features: Features::of(network, device.id),
            which: &ALL,
            new_session: false,
            trust: false,
        };
        self.learn(next.user, &learn, now);
        if let Some(user) = next.user {
            self.clear_detections(user);
        }
        Some(next.user)
    }

    /// Applies an operator's feedback; `place` is where the geo stage puts
    /// a false positive's network.
    pub(crate) fn feedback(
        &self,
        feedback: Feedback,
        place: Option<Place>,
        now_secs: u64,
    ) -> Result<(), FeedbackError> {
        let now = secs32(now_secs);
        let trust = |user: UserKey, values: &[(Feature, u32)]| {
            let profile = self
                .profiles
                .get_with(user, || Arc::new(Mutex::new(UserProfile::new(now))));
            let mut p = profile.lock().unwrap_or_else(PoisonError::into_inner);
            for &(f, v) in values {
                p.trust(f, v, now);
            }
        };
        match feedback {
            Feedback::FalsePositive {
                session,
                device,
                network,
            } => {
                if self.revoked.contains_key(&session) {
                    return Err(FeedbackError::Revoked);
                }
                if self.sessions.peek(&session).is_none() {
                    return Err(FeedbackError::NoSession);
                }
                let mark = network.mark();
                let mut state = SessionState::new(&device, mark, place, now);
                self.sessions.update(session, now, |held| {
                    state = adopt(held, &device, &mark, place, now);
                    state
                });
                let learn = Learn {
                    features: Features::of(&mark, device.id),
                    which: &ALL,
                    new_session: false,
                    trust: true,
                };
                self.learn(state.user, &learn, now);
                if let Some(user) = state.user {
                    self.clear_detections(user);
                }
            }
            Feedback::TrustDevice { user, device } => {
                let f = Features::of(&NetworkMark::default(), device);
                trust(
                    user,
                    &[Feature::Device, Feature::Browser, Feature::Platform].map(|k| (k, f.get(k))),
                );
            }
            Feedback::TrustNetwork { user, network } => {
                let (feature, facts) = match network {
                    TrustedNetwork::Asn(asn) => (
                        Feature::Asn,
                        NetworkMark {
                            asn,
                            ..NetworkMark::default()
                        },
                    ),
                    TrustedNetwork::Prefix(ip) => (Feature::Prefix, NetworkFacts::new(ip).mark()),
                    TrustedNetwork::Country(c) => (
                        Feature::Country,
                        NetworkMark {
                            country: [c[0].to_ascii_uppercase(), c[1].to_ascii_uppercase()],
                            ..NetworkMark::default()
                        },
                    ),
                };
                let value = Features::of(&facts, DeviceId(0)).get(feature);
                trust(user, &[(feature, value)]);
            }
        }
        Ok(())
    }

    /// Ends a session on this node: later requests with it score
    /// [`Reason::Revoked`]. Its state is dropped.
    pub fn revoke(&self, key: SessionKey, now_secs: u64) {
        self.revoked.insert(
            key,
            Revocation {
                at: now_secs,
                by_user: None,
            },
        );
        self.sessions.remove(&key);
    }

    /// Ends every session bound to `user` so far (universal logout): their
    /// later requests score [`Reason::UserRevoked`]. Sessions bound to the
    /// user afterwards (the user signed in again) are not affected: each
    /// binding records how many revocations the user had had.
    /// Returns how many sessions were ended on this node.
    pub fn revoke_user(&self, user: UserKey, now_secs: u64) -> u64 {
        // Each session bound to the user is revoked outright, so that the
        // revocation holds even if its state is later evicted; the count
        // covers sessions bound while the scan runs.
        let keys = self.sessions.keys_where(|s| s.user == Some(user));
        let ended = keys.len() as u64;
        for key in keys {
            self.revoked.insert(
                key,
                Revocation {
                    at: now_secs,
                    by_user: Some(user),
                },
            );
            self.sessions.remove(&key);
        }
        let mut e = self.entities.get(&user).unwrap_or_default();
        e.generation = e.generation.saturating_add(1);
        self.entities.insert(user, e);
        ended
    }

    /// A partner reported the user at risk: `points` of entity risk
    /// ([`Reason::PartnerReported`]) on every session of theirs for `ttl`.
    pub fn report_user(&self, user: UserKey, points: u8, ttl: Duration, now_secs: u64) {
        let mut e = self.entities.get(&user).unwrap_or_default();
        e.reported_points = points.min(100);
        e.reported_until = secs32(now_secs.saturating_add(ttl.as_secs()));
        self.entities.insert(user, e);
    }

    /// Whether the session is revoked on this node.
    pub fn is_revoked(&self, key: &SessionKey) -> bool {
        self.revoked.contains_key(key)
    }

    /// The state kept for a session.
    pub fn session(&self, key: &SessionKey) -> Option<SessionState> {
        self.sessions.peek(key)
    }

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
    /// [`Scorer::restore`]: a header (`VIGILSS2`, then the counts of
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
        for (key, r) in self.revoked.iter() {
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
    /// whole; a record that does not decode is skipped and counted.
    pub fn restore(&self, snapshot: &[u8], now_secs: u64) -> Result<Restored, SnapshotError> {
        let (header, body) = snapshot
            .split_at_checked(SNAPSHOT_HEADER)
            .ok_or(SnapshotError::NotASnapshot)?;
        if &header[..8] != SNAPSHOT_MAGIC {
            return Err(SnapshotError::NotASnapshot);
        }
        let count = |i: usize| {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(&header[8 + 8 * i..16 + 8 * i]);
            usize::try_from(u64::from_le_bytes(eight)).unwrap_or(usize::MAX)
        };
        let counts = [count(0), count(1), count(2), count(3)];
        let sizes = [
            SessionState::RECORD_LEN,
            REVOCATION_LEN,
            8 + UserProfile::RECORD_LEN,
            8 + EntityState::RECORD_LEN,
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
        for record in records.chunks_exact(SessionState::RECORD_LEN) {
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
        for entry in entities.chunks_exact(8 + EntityState::RECORD_LEN) {
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
        state.touched = state.last_seen;
        if self.revoked.contains_key(&key) {
            return Ok(key);
        }
        self.sessions
            .update(key, state.last_seen, |held| match held {
                Some(held) if held.last_seen > state.last_seen => *held,
                _ => state,
            });
        Ok(key)
    }

    /// Approximate number of sessions with a state.
    pub fn tracked_sessions(&self) -> u64 {
        self.sessions.len()
    }

    /// Approximate number of user profiles.
    pub fn tracked_users(&self) -> u64 {
        self.profiles.entry_count()
    }

    /// Approximate number of revoked sessions remembered.
    pub fn revoked_sessions(&self) -> u64 {
        self.revoked.entry_count()
    }

    /// Drops the session states idle for the timeout at `now_secs`. The
    /// store also drops them as it is used; this returns their memory
    /// sooner. The proxy calls it once a minute.
    pub fn sweep(&self, now_secs: u64) {
        self.sessions.sweep(secs32(now_secs));
    }

    /// Runs the caches' pending maintenance (eviction, counts). Cheap; the
    /// caches also do it on their own as they are used.
    pub fn run_pending_tasks(&self) {
        self.revoked.run_pending_tasks();
        self.profiles.run_pending_tasks();
        self.entities.run_pending_tasks();
    }
}

impl fmt::Debug for Scorer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scorer")
            .field("config", &self.config.load())
            .field("sessions", &self.sessions)
            .field("tracked_users", &self.profiles.entry_count())
            .finish_non_exhaustive()
    }
}

// === impl Place ===

impl Place {
    /// The geo stage's location, at `f32` precision (a metre or so).
    /// The geo stage's location in hundredths of a degree; `None` off the
    /// globe.
    pub(crate) fn from_location(l: &Location) -> Option<Self> {
        let on_globe = l.lat.abs() <= 90.0 && l.lon.abs() <= 180.0;
        #[allow(
            clippy::cast_possible_truncation,
            reason = "in range (checked just above; NaN fails the check): at most ±18,000"
        )]
        let hundredths = |deg: f64| (deg * 100.0).round() as i16;
        on_globe.then(|| Self {
            lat: hundredths(l.lat),
            lon: hundredths(l.lon),
            accuracy_km: l.accuracy_km,
        })
    }

    fn location(self) -> Location {
        Location {
            lat: f64::from(self.lat) / 100.0,
            lon: f64::from(self.lon) / 100.0,
            accuracy_km: self.accuracy_km,
        }
    }
}

// === impl Reason, RiskLevel ===

impl Reason {
    /// Every reason, for metrics initialisation and docs.
    pub const ALL: [Reason; 16] = [
        Reason::DeviceChanged,
        Reason::Ja4Mismatch,
        Reason::DeviceUpgraded,
        Reason::IpChanged,
        Reason::AsnChanged,
        Reason::CountryChanged,
        Reason::ImpossibleTravel,
        Reason::ConcurrentNetworks,
        Reason::NetworkChurn,
        Reason::NewDeviceForUser,
        Reason::NewNetworkForUser,
        Reason::NewCountryForUser,
        Reason::Revoked,
        Reason::UserRevoked,
        Reason::PartnerReported,
        Reason::RecentDetections,
    ];

    /// The stable code of this reason.
    pub fn code(self) -> &'static str {
        match self {
            Reason::DeviceChanged => "device_changed",
            Reason::Ja4Mismatch => "ja4_mismatch",
            Reason::DeviceUpgraded => "device_upgraded",
            Reason::IpChanged => "ip_changed",
            Reason::AsnChanged => "asn_changed",
            Reason::CountryChanged => "country_changed",
            Reason::ImpossibleTravel => "impossible_travel",
            Reason::ConcurrentNetworks => "concurrent_networks",
            Reason::NetworkChurn => "network_churn",
            Reason::NewDeviceForUser => "new_device_for_user",
            Reason::NewNetworkForUser => "new_network_for_user",
            Reason::NewCountryForUser => "new_country_for_user",
            Reason::Revoked => "revoked",
            Reason::UserRevoked => "user_revoked",
            Reason::PartnerReported => "partner_reported",
            Reason::RecentDetections => "recent_detections",
        }
    }

    /// Whether the reason is a fact rather than a weight: the request is
    /// refused whatever the policy says.
    pub fn is_final(self) -> bool {
        matches!(self, Reason::Revoked | Reason::UserRevoked)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl RiskLevel {
    /// `low`, `medium` or `high`.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Low => "low",
            RiskLevel::Medium => "medium",
            RiskLevel::High => "high",
        }
    }
}

impl fmt::Display for RiskLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
