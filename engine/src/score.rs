//! Score: this request against the session's own baseline.
//!
//! On first sight of a session the scorer records a baseline (device traits
//! and TLS fingerprint, network facts). Later requests are compared to it
//! ([`Device::compare`]) and each difference adds its
//! configured points to a score from 0 to 100, with the reason kept beside
//! its contribution so that every decision can be explained. The network is
//! compared through [`classify`](crate::classify): only a change of
//! the derived client address is `ip_changed`; a new egress node of the same
//! trusted provider (or a new path to the same client) is not. The store is a
//! pair of bounded `moka` caches: baselines expire after the idle timeout,
//! revocations after the revocation TTL.

use std::fmt;
use std::time::Duration;

use moka::sync::Cache;

use crate::device::{Device, DeviceSummary, TraitMatch};
use crate::fingerprint::{TlsMatch, TlsSource};
use crate::network::{NetworkChange, NetworkFacts};
use crate::session::SessionKey;

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
    /// The derived client address differs from the one last accepted for the
    /// session ([`NetworkChange::client_changed`]). A new egress node of the
    /// same provider is not a change of client.
    IpChanged,
    /// The session was revoked.
    Revoked,
}

/// One reason and the points it added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contribution {
    /// The reason.
    pub reason: Reason,
    /// Points added to the score.
    pub points: u8,
}

/// The risk of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Risk {
    /// Coarse level.
    pub level: RiskLevel,
    /// Sum of the contributions, capped at 100.
    pub score: u8,
    /// Each reason with its points, in the order they were found.
    pub reasons: Vec<Contribution>,
}

/// Weights and thresholds of the session scorer.
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
    /// Points when the client address changed. Default 30.
    pub ip_changed: u8,
    /// Score at which risk becomes medium. Default 30.
    pub medium_at: u8,
    /// Score at which risk becomes high. Default 60.
    pub high_at: u8,
    /// Most sessions whose baselines are kept; the least recently used go
    /// first. Default 1,000,000.
    pub max_sessions: u64,
    /// A baseline unused for this long is forgotten. Default 24 h.
    pub session_idle_timeout: Duration,
    /// How long a revocation is remembered. Default 7 days.
    pub revocation_ttl: Duration,
}

/// What the scorer remembers of a session: its device (updated only by a
/// browser update or a first TLS fingerprint), the network facts last
/// accepted and when the session was first seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Baseline {
    /// Device traits and TLS fingerprint.
    pub device: DeviceSummary,
    /// Network facts last accepted: client address, provider and egress
    /// (ASN and country once the geo stage fills them).
    pub network: NetworkFacts,
    /// First request, seconds since the Unix epoch.
    pub first_seen: u64,
}

/// The scorer and its session store.
#[derive(Clone)]
pub struct Scorer {
    config: ScoreConfig,
    baselines: Cache<SessionKey, Baseline>,
    revoked: Cache<SessionKey, u64>,
}

/// What scoring found, to be committed once the decision is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Observation {
    /// No session: nothing to remember.
    Anonymous,
    /// The session was unknown; this request's facts become its baseline.
    First(SessionKey, Baseline),
    /// The session was known; the device to remember from now on.
    Known(SessionKey, Baseline, DeviceSummary),
    /// The session is revoked.
    Revoked,
}

// === impl ScoreConfig ===

impl Default for ScoreConfig {
    fn default() -> Self {
        Self {
            device_changed: 70,
            ja4_mismatch: 70,
            ja4_family_changed: 30,
            device_upgraded: 10,
            ip_changed: 30,
            medium_at: 30,
            high_at: 60,
            max_sessions: 1_000_000,
            session_idle_timeout: Duration::from_secs(24 * 3600),
            revocation_ttl: Duration::from_secs(7 * 24 * 3600),
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

    fn from_contributions(config: &ScoreConfig, reasons: Vec<Contribution>) -> Self {
        let sum: u32 = reasons.iter().map(|c| u32::from(c.points)).sum();
        let score = u8::try_from(sum.min(100)).unwrap_or(100);
        let level = if score >= config.high_at {
            RiskLevel::High
        } else if score >= config.medium_at {
            RiskLevel::Medium
        } else {
            RiskLevel::Low
        };
        Self {
            level,
            score,
            reasons,
        }
    }
}

// === impl Scorer ===

impl Scorer {
    /// Builds a scorer with an empty store.
    pub fn new(config: ScoreConfig) -> Self {
        let baselines = Cache::builder()
            .max_capacity(config.max_sessions)
            .time_to_idle(config.session_idle_timeout)
            .build();
        let revoked = Cache::builder()
            .max_capacity(config.max_sessions)
            .time_to_live(config.revocation_ttl)
            .build();
        Self {
            config,
            baselines,
            revoked,
        }
    }

    /// Scores a request of `session` against its baseline, and says how its
    /// network moved (`None` for an anonymous, new or revoked session). Does
    /// not change the store: [`Scorer::commit`] does, once the decision is
    /// known.
    pub(crate) fn score(
        &self,
        session: Option<SessionKey>,
        device: &Device,
        network: &NetworkFacts,
        now_secs: u64,
    ) -> (Risk, Option<NetworkChange>, Observation) {
        let Some(key) = session else {
            return (Risk::none(), None, Observation::Anonymous);
        };
        if self.revoked.contains_key(&key) {
            let risk = Risk {
                level: RiskLevel::High,
                score: 100,
                reasons: vec![Contribution {
                    reason: Reason::Revoked,
                    points: 100,
                }],
            };
            return (risk, None, Observation::Revoked);
        }
        let Some(baseline) = self.baselines.get(&key) else {
            let baseline = Baseline {
                device: device.summary(),
                network: *network,
                first_seen: now_secs,
            };
            return (Risk::none(), None, Observation::First(key, baseline));
        };
        let mut reasons = Vec::new();
        let mut remember = baseline.device;
        let m = device.compare(&baseline.device);
        let mut add = |reason, points| reasons.push(Contribution { reason, points });
        match m.traits {
            TraitMatch::Same => {}
            TraitMatch::Upgraded if m.tls != TlsMatch::Different => {
                add(Reason::DeviceUpgraded, self.config.device_upgraded);
                remember = device.summary();
            }
            TraitMatch::Upgraded | TraitMatch::Different => {
                add(Reason::DeviceChanged, self.config.device_changed);
            }
        }
        match m.tls {
            TlsMatch::Same => {}
            TlsMatch::NoEvidence => {
                // A first fingerprint for a session that had none is learnt.
                if baseline.device.tls_source == TlsSource::None
                    && device.tls.source != TlsSource::None
                {
                    remember.tls_source = device.tls.source;
                    remember.ja4 = device.tls.ja4;
                }
            }
            TlsMatch::SameFamily if m.traits == TraitMatch::Upgraded => {}
            TlsMatch::SameFamily => add(Reason::Ja4Mismatch, self.config.ja4_family_changed),
            TlsMatch::Different => add(Reason::Ja4Mismatch, self.config.ja4_mismatch),
        }
        let change = network.change_from(&baseline.network);
        if change.client_changed() {
            reasons.push(Contribution {
                reason: Reason::IpChanged,
                points: self.config.ip_changed,
            });
        }
        let risk = Risk::from_contributions(&self.config, reasons);
        (
            risk,
            Some(change),
            Observation::Known(key, baseline, remember),
        )
    }

    /// Records what a decided request taught us. A first request becomes the
    /// baseline. A request that was allowed from a new network moves the
    /// baseline there (the user roamed, or the provider moved them to another
    /// egress node), but never to another device: only a browser update of
    /// the same device, or a first TLS fingerprint, is learnt. The device at
    /// first sight is what a replay cannot match.
    pub(crate) fn commit(&self, observation: Observation, network: &NetworkFacts, allowed: bool) {
        match observation {
            Observation::First(key, baseline) if allowed => self.baselines.insert(key, baseline),
            Observation::Known(key, baseline, device)
                if allowed && (baseline.network != *network || baseline.device != device) =>
            {
                self.baselines.insert(
                    key,
                    Baseline {
                        network: *network,
                        device,
                        ..baseline
                    },
                );
            }
            _ => {}
        }
    }

    /// Ends a session on this node: later requests with it score
    /// [`Reason::Revoked`]. Its baseline is dropped.
    pub fn revoke(&self, key: SessionKey, now_secs: u64) {
        self.revoked.insert(key, now_secs);
        self.baselines.invalidate(&key);
    }

    /// Whether the session is revoked on this node.
    pub fn is_revoked(&self, key: &SessionKey) -> bool {
        self.revoked.contains_key(key)
    }

    /// Approximate number of sessions with a baseline.
    pub fn tracked_sessions(&self) -> u64 {
        self.baselines.entry_count()
    }

    /// Approximate number of revoked sessions remembered.
    pub fn revoked_sessions(&self) -> u64 {
        self.revoked.entry_count()
    }

    /// Runs the caches' pending maintenance (eviction, counts). Cheap; the
    /// caches also do it on their own as they are used.
    pub fn run_pending_tasks(&self) {
        self.baselines.run_pending_tasks();
        self.revoked.run_pending_tasks();
    }
}

impl fmt::Debug for Scorer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scorer")
            .field("config", &self.config)
            .field("tracked_sessions", &self.baselines.entry_count())
            .finish_non_exhaustive()
    }
}

// === impl Reason, RiskLevel ===

impl Reason {
    /// Every reason, for metrics initialisation and docs.
    pub const ALL: [Reason; 5] = [
        Reason::DeviceChanged,
        Reason::Ja4Mismatch,
        Reason::DeviceUpgraded,
        Reason::IpChanged,
        Reason::Revoked,
    ];

    /// The stable code of this reason.
    pub fn code(self) -> &'static str {
        match self {
            Reason::DeviceChanged => "device_changed",
            Reason::Ja4Mismatch => "ja4_mismatch",
            Reason::DeviceUpgraded => "device_upgraded",
            Reason::IpChanged => "ip_changed",
            Reason::Revoked => "revoked",
        }
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
