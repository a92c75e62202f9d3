//! The scorer's configuration: the points of each reason, the thresholds
//! of the levels, the stores' sizes and lifetimes and the user model's
//! settings, with their defaults.

use std::time::Duration;

use super::RiskLevel;
use super::profile::Feature;

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
    /// Points when the session's baseline has a TLS fingerprint and the
    /// request brings no TLS evidence at all (a cleartext listener, a
    /// connection whose capture was lost): the evidence was erased, which
    /// is no proof of another device. Default 30.
    pub tls_evidence_lost: u8,
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
    /// Points when a superseded generation of the companion cookie came
    /// after its successor was presented (docs/bound-sessions.md).
    /// Default 100.
    pub binding_reused: u8,
    /// Points when a session whose binding was presented arrives without
    /// it. Default 70.
    pub binding_missing: u8,
    /// Points when the companion does not unseal, is sent twice, or names
    /// another session. Default 70.
    pub binding_invalid: u8,
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

// === impl ScoreConfig ===

impl Default for ScoreConfig {
    fn default() -> Self {
        Self {
            device_changed: 70,
            ja4_mismatch: 70,
            ja4_family_changed: 30,
            tls_evidence_lost: 30,
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
            binding_reused: 100,
            binding_missing: 70,
            binding_invalid: 70,
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
    pub(super) fn of(&self, f: Feature) -> u8 {
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
