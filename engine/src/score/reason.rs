//! Reasons and levels: why a request scored what it did ([`Reason`]), the
//! coarse level policies map to actions ([`RiskLevel`]), and the [`Risk`]
//! each of a request's three risks comes to.

use std::fmt;

use super::ScoreConfig;

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
    /// The session's baseline has a TLS fingerprint but this request brings
    /// no TLS evidence (a cleartext listener of the same Vigil, a
    /// connection whose capture was lost): the evidence was erased.
    TlsEvidenceLost,
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
    /// The user must pass a step-up on every session opened before a
    /// point in time (an operator's or a partner's ask: a changed
    /// credential, a lowered assurance level), and this session has not
    /// since. No points: the decision is at least `step_up` whatever the
    /// policy or rules say ([`Reason::forces_step_up`]).
    StepUpRequired,
    /// The rotating binding (docs/bound-sessions.md): a superseded
    /// generation of Vigil's companion cookie came after its successor was
    /// presented, outside the grace: two holders of one cookie jar.
    BindingReused,
    /// The session's binding was presented before, and this request
    /// brings none: someone holds the app's cookie without its companion.
    BindingMissing,
    /// The companion cookie does not unseal, is sent twice, or names
    /// another session.
    BindingInvalid,
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

    pub(super) fn from_contributions(config: &ScoreConfig, reasons: Vec<Contribution>) -> Self {
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
    /// Adds `contribution` to the session risk, its score and level
    /// recomputed under `config`.
    pub(crate) fn add_session(&mut self, config: &ScoreConfig, contribution: Contribution) {
        let mut reasons = std::mem::take(&mut self.session.reasons);
        reasons.push(contribution);
        self.session = Risk::from_contributions(config, reasons);
    }

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

// === impl Reason, RiskLevel ===

impl Reason {
    /// Every reason, for metrics initialisation and docs.
    pub const ALL: [Reason; 21] = [
        Reason::DeviceChanged,
        Reason::Ja4Mismatch,
        Reason::DeviceUpgraded,
        Reason::TlsEvidenceLost,
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
        Reason::StepUpRequired,
        Reason::BindingReused,
        Reason::BindingMissing,
        Reason::BindingInvalid,
    ];

    /// The stable code of this reason.
    pub fn code(self) -> &'static str {
        match self {
            Reason::DeviceChanged => "device_changed",
            Reason::Ja4Mismatch => "ja4_mismatch",
            Reason::DeviceUpgraded => "device_upgraded",
            Reason::TlsEvidenceLost => "tls_evidence_lost",
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
            Reason::StepUpRequired => "step_up_required",
            Reason::BindingReused => "binding_reused",
            Reason::BindingMissing => "binding_missing",
            Reason::BindingInvalid => "binding_invalid",
        }
    }

    /// Whether the reason is a fact rather than a weight: the request is
    /// refused whatever the policy says.
    pub fn is_final(self) -> bool {
        matches!(self, Reason::Revoked | Reason::UserRevoked)
    }

    /// Whether the reason is an ask rather than a weight: the decision is
    /// at least `step_up` whatever the policy or rules say (a `block` or
    /// `revoke` they choose stands).
    pub fn forces_step_up(self) -> bool {
        matches!(self, Reason::StepUpRequired)
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
