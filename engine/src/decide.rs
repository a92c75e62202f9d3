//! Decide: map a risk to an action with the route's policy, or let rules
//! decide over the request's [`Facts`].
//!
//! Rules (crate `vigil-rules`, CEL conditions) sit in front of the policy
//! table through the [`Rules`] trait and win when they match; the table is
//! the default they are given. A revoked session is refused whatever either
//! says.

use std::fmt;
use std::str::FromStr;

use smallvec::SmallVec;

use crate::client_ip::ClientIp;
use crate::device::Device;
use crate::network::{NetworkChange, NetworkFacts};
use crate::request::RequestView;
use crate::score::{Risk, RiskLevel, Risks, UserKey};

/// What the proxy does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// Forward to the app.
    Allow,
    /// Send the user to re-authenticate.
    StepUp,
    /// Refuse this request.
    Block,
    /// End the session and refuse this and every later request with it.
    Revoke,
}

/// A route's mapping from risk level to action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Action at low risk. Default `allow`.
    pub low: Action,
    /// Action at medium risk. Default `allow`.
    pub medium: Action,
    /// Action at high risk. Default `block`.
    pub high: Action,
    /// The route's own sensitivity: thresholds that replace the engine's
    /// when the level is read from the score. `None`: the engine's.
    pub thresholds: Option<Thresholds>,
}

/// Scores at which risk becomes medium and high.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Score at which risk becomes medium; at least 1.
    pub medium_at: u8,
    /// Score at which risk becomes high; at least `medium_at`.
    pub high_at: u8,
}

/// Everything rules may read of one judged credential of one request:
/// what the stages derived, borrowed from the decision under way.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The request: headers, time, and what it asks for
    /// ([`RequestView::facts`]).
    pub request: &'a RequestView<'a>,
    /// The session judged; `None` for a request without a live session
    /// (anonymous, or revoked).
    pub session: Option<SessionFacts>,
    /// How many session credentials the request carried.
    pub credentials: usize,
    /// The client and the chain it was found in.
    pub client: &'a ClientIp,
    /// The client's network: ASN and country from the geo stage.
    pub network: &'a NetworkFacts,
    /// How the network moved since the session's baseline.
    pub network_change: Option<NetworkChange>,
    /// The device observed.
    pub device: &'a Device,
    /// The request's overall risk.
    pub risk: &'a Risk,
    /// The overall level as the route reads it (its own thresholds).
    pub level: RiskLevel,
    /// Login, session and entity risk apart.
    pub risks: &'a Risks,
    /// The user the session is bound to, when known.
    pub user: Option<UserKey>,
    /// The policy table's action for this risk: what happens when no rule
    /// matches.
    pub default: Action,
}

/// What rules may read of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionFacts {
    /// No baseline yet: this is the session's first judged request.
    pub new: bool,
    /// First request, seconds since the Unix epoch.
    pub first_seen: u64,
    /// The last request before this one, seconds since the Unix epoch;
    /// `None` for a new session.
    pub last_seen: Option<u64>,
    /// Requests of the session the engine let through before this one,
    /// plus this one: 1 on its first judged request.
    pub requests: u64,
    /// When the session's user last passed a step-up on it, seconds since
    /// the Unix epoch; `None`: never.
    pub stepped_up_at: Option<u64>,
}

/// Rules in front of the policy table: given a credential's facts, the
/// action and why. Implemented by `vigil-rules`; [`NoRules`] is the table
/// alone. Called once per judged credential; must not block, allocate
/// only where it must, and never panic.
pub trait Rules: fmt::Debug + Send + Sync {
    /// The ruling for `facts` (whose `default` is the table's action).
    fn rule(&self, facts: &Facts<'_>) -> Ruling;
}

/// No rules: the policy table decides.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRules;

/// Which rule decided, and what the others would have done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruling {
    /// The action.
    pub action: Action,
    /// The index (in its rule set) of the enforcing rule that chose the
    /// action; `None` when the policy table did.
    pub rule: Option<u16>,
    /// Tags added by matching `tag` rules, one bit per tag index of the
    /// rule set (at most 64 tags).
    pub tags: u64,
    /// The shadow rules that matched, by index: what they would have done
    /// is theirs to tell; they change nothing.
    pub shadow: SmallVec<[u16; 2]>,
}

/// An action name that is not one of `allow`, `step_up`, `block`, `revoke`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown action {0:?}: expected one of allow, step_up, block, revoke")]
pub struct ParseActionError(pub String);

// === impl Policy ===

impl Default for Policy {
    fn default() -> Self {
        Self {
            low: Action::Allow,
            medium: Action::Allow,
            high: Action::Block,
            thresholds: None,
        }
    }
}

impl Policy {
    /// The action for `risk`. A revoked session (or user) is refused
    /// whatever the policy says: revocation is not a risk to weigh but a
    /// fact. A step-up asked of the user ([`Reason::forces_step_up`]) makes
    /// an `allow` a `step_up`.
    ///
    /// [`Reason::forces_step_up`]: crate::score::Reason::forces_step_up
    pub fn decide(&self, risk: &Risk) -> Action {
        if risk.reasons.iter().any(|c| c.reason.is_final()) {
            return Action::Block;
        }
        let action = match self.level(risk) {
            RiskLevel::Low => self.low,
            RiskLevel::Medium => self.medium,
            RiskLevel::High => self.high,
        };
        at_least_step_up(risk, action)
    }

    /// The level of `risk` on this route: its own, or re-read from its
    /// score under the route's thresholds.
    pub fn level(&self, risk: &Risk) -> RiskLevel {
        match self.thresholds {
            None => risk.level,
            Some(t) if risk.score >= t.high_at => RiskLevel::High,
            Some(t) if risk.score >= t.medium_at => RiskLevel::Medium,
            Some(_) => RiskLevel::Low,
        }
    }
}

/// `action`, or `step_up` in place of an `allow` when `risk` holds a
/// reason that asks for one: what rules choose cannot lower it.
pub(crate) fn at_least_step_up(risk: &Risk, action: Action) -> Action {
    if action == Action::Allow && risk.reasons.iter().any(|c| c.reason.forces_step_up()) {
        Action::StepUp
    } else {
        action
    }
}

// === impl Ruling, NoRules ===

impl Ruling {
    /// The policy table's ruling: `action`, no rule, no tags.
    pub fn table(action: Action) -> Self {
        Self {
            action,
            rule: None,
            tags: 0,
            shadow: SmallVec::new(),
        }
    }
}

impl Rules for NoRules {
    fn rule(&self, facts: &Facts<'_>) -> Ruling {
        Ruling::table(facts.default)
    }
}

// === impl Action ===

impl Action {
    /// The config and metrics name of this action.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::StepUp => "step_up",
            Action::Block => "block",
            Action::Revoke => "revoke",
        }
    }

    /// Every action, for metrics initialisation and docs.
    pub const ALL: [Action; 4] = [Action::Allow, Action::StepUp, Action::Block, Action::Revoke];
}

impl FromStr for Action {
    type Err = ParseActionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| ParseActionError(s.to_owned()))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::{Contribution, Reason};

    fn risk(level: RiskLevel, reasons: &[Reason]) -> Risk {
        Risk {
            level,
            score: 0,
            reasons: reasons
                .iter()
                .map(|r| Contribution {
                    reason: *r,
                    points: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn maps_levels_through_the_policy() {
        let p = Policy {
            low: Action::Allow,
            medium: Action::StepUp,
            high: Action::Revoke,
            thresholds: None,
        };
        assert_eq!(p.decide(&risk(RiskLevel::Low, &[])), Action::Allow);
        assert_eq!(p.decide(&risk(RiskLevel::Medium, &[])), Action::StepUp);
        assert_eq!(p.decide(&risk(RiskLevel::High, &[])), Action::Revoke);
    }

    #[test]
    fn revoked_sessions_are_refused_even_by_a_lenient_policy() {
        let p = Policy {
            low: Action::Allow,
            medium: Action::Allow,
            high: Action::Allow,
            thresholds: None,
        };
        for reason in [Reason::Revoked, Reason::UserRevoked] {
            assert_eq!(p.decide(&risk(RiskLevel::High, &[reason])), Action::Block);
        }
    }

    #[test]
    fn a_step_up_asked_of_the_user_turns_allow_into_step_up_and_no_further() {
        let p = Policy {
            low: Action::Allow,
            medium: Action::Block,
            high: Action::Revoke,
            thresholds: None,
        };
        let asked = [Reason::StepUpRequired];
        assert_eq!(p.decide(&risk(RiskLevel::Low, &asked)), Action::StepUp);
        assert_eq!(p.decide(&risk(RiskLevel::Medium, &asked)), Action::Block);
        assert_eq!(p.decide(&risk(RiskLevel::High, &asked)), Action::Revoke);
        // Revocation still wins.
        assert_eq!(
            p.decide(&risk(
                RiskLevel::Low,
                &[Reason::StepUpRequired, Reason::UserRevoked]
            )),
            Action::Block
        );
    }

    #[test]
    fn a_route_can_be_more_sensitive_than_the_engine() {
        let sensitive = Policy {
            medium: Action::StepUp,
            thresholds: Some(Thresholds {
                medium_at: 10,
                high_at: 40,
            }),
            ..Policy::default()
        };
        let mut r = risk(RiskLevel::Low, &[Reason::IpChanged]);
        r.score = 10;
        assert_eq!(Policy::default().decide(&r), Action::Allow);
        assert_eq!(sensitive.decide(&r), Action::StepUp);
        r.score = 45;
        r.level = RiskLevel::Medium;
        assert_eq!(sensitive.level(&r), RiskLevel::High);
        assert_eq!(sensitive.decide(&r), Action::Block);
    }

    #[test]
    fn action_names_round_trip() {
        for a in Action::ALL {
            assert_eq!(a.as_str().parse::<Action>(), Ok(a));
        }
        assert!("deny".parse::<Action>().is_err());
    }
}
