//! Decide: map a risk to an action with the route's policy.
//!
//! Rules written in CEL will sit in front of this table and win when they
//! match; the table stays as the default.

use std::fmt;
use std::str::FromStr;

use crate::score::{Reason, Risk, RiskLevel};

/// What the proxy does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
        }
    }
}

impl Policy {
    /// The action for `risk`. A revoked session is refused whatever the
    /// policy says: revocation is not a risk to weigh but a fact.
    pub fn decide(&self, risk: &Risk) -> Action {
        if risk.has(Reason::Revoked) {
            return Action::Block;
        }
        match risk.level {
            RiskLevel::Low => self.low,
            RiskLevel::Medium => self.medium,
            RiskLevel::High => self.high,
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
    use crate::score::Contribution;

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
        };
        assert_eq!(
            p.decide(&risk(RiskLevel::High, &[Reason::Revoked])),
            Action::Block
        );
    }

    #[test]
    fn action_names_round_trip() {
        for a in Action::ALL {
            assert_eq!(a.as_str().parse::<Action>(), Ok(a));
        }
        assert!("deny".parse::<Action>().is_err());
    }
}
