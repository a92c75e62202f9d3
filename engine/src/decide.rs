//! Decide: map a risk to an action with the route's policy.
//!
//! Rules written in CEL will sit in front of this table and win when they
//! match; the table stays as the default.

use std::fmt;
use std::str::FromStr;

use crate::score::{Risk, RiskLevel};

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
    /// fact.
    pub fn decide(&self, risk: &Risk) -> Action {
        if risk.reasons.iter().any(|c| c.reason.is_final()) {
            return Action::Block;
        }
        match self.level(risk) {
            RiskLevel::Low => self.low,
            RiskLevel::Medium => self.medium,
            RiskLevel::High => self.high,
        }
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
