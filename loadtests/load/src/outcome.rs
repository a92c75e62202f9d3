//! What a response says about the request: served by the app, refused by
//! Vigil (a detection), or failed.
//!
//! Vigil marks every answer of its own with a `Vigil-Reference` header
//! (`docs/answers.md`); the app's responses never carry it (Vigil removes
//! client- and app-sent `Vigil-*` headers). A refusal is therefore a
//! response with that header and one of these statuses:
//!
//! | status | also | refusal |
//! | --- | --- | --- |
//! | 403 | | `block` |
//! | 303 | no `Set-Cookie` | `step_up` (browser) |
//! | 401 | `WWW-Authenticate: … insufficient_user_authentication` | `step_up` (bearer, RFC 9470) |
//! | 303 | `Set-Cookie` clearing the session | `revoke` |
//! | 401 | otherwise | `session_ended` (revoked earlier) |
//!
//! Every other answer with a reference is an error of kind `vigil_<status>`
//! (`vigil_429` for too many open requests, `vigil_502` when the app is
//! unreachable, …); a response without one is the app's: `2xx`/`3xx` are
//! served, anything else is an error of kind `status_<status>`.

use http::{HeaderMap, StatusCode};
use serde::Serialize;

/// The header every answer of Vigil's own carries.
pub const REFERENCE: &str = "vigil-reference";

/// How Vigil refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// Step-up: a redirect to re-authenticate, or RFC 9470's 401.
    StepUp,
    /// 403 with a reference.
    Block,
    /// The session was revoked by this request.
    Revoke,
    /// The session had been revoked before.
    SessionEnded,
}

/// What one request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The app answered.
    Served,
    /// Vigil refused it.
    Refused(Refusal),
    /// An error, by kind (`vigil_502`, `status_500`, `connect`, `timeout`, …).
    Error(String),
}

/// Classifies a response by its status and headers, as the table above.
pub fn classify(status: StatusCode, headers: &HeaderMap) -> Outcome {
    let from_vigil = headers.contains_key(REFERENCE);
    if !from_vigil {
        return if status.is_success() || status.is_redirection() {
            Outcome::Served
        } else {
            Outcome::Error(format!("status_{}", status.as_u16()))
        };
    }
    match status {
        StatusCode::FORBIDDEN => Outcome::Refused(Refusal::Block),
        StatusCode::SEE_OTHER if headers.contains_key(http::header::SET_COOKIE) => {
            Outcome::Refused(Refusal::Revoke)
        }
        StatusCode::SEE_OTHER => Outcome::Refused(Refusal::StepUp),
        StatusCode::UNAUTHORIZED => {
            let step_up = headers
                .get_all(http::header::WWW_AUTHENTICATE)
                .iter()
                .any(|v| {
                    v.to_str()
                        .is_ok_and(|s| s.contains("insufficient_user_authentication"))
                });
            Outcome::Refused(if step_up {
                Refusal::StepUp
            } else {
                Refusal::SessionEnded
            })
        }
        other => Outcome::Error(format!("vigil_{}", other.as_u16())),
    }
}

// === impl Refusal ===

impl Refusal {
    /// Stable name, as in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::StepUp => "step_up",
            Refusal::Block => "block",
            Refusal::Revoke => "revoke",
            Refusal::SessionEnded => "session_ended",
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test")]
    use super::*;
    use http::HeaderValue;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn the_apps_own_403_is_not_a_detection() {
        assert_eq!(
            classify(StatusCode::FORBIDDEN, &h(&[])),
            Outcome::Error("status_403".into())
        );
        assert_eq!(classify(StatusCode::FOUND, &h(&[])), Outcome::Served);
    }

    #[test]
    fn vigils_answers_are_told_apart() {
        let r = ("vigil-reference", "5f0c1a9e2b7d4c31");
        assert_eq!(
            classify(StatusCode::FORBIDDEN, &h(&[r])),
            Outcome::Refused(Refusal::Block)
        );
        assert_eq!(
            classify(StatusCode::SEE_OTHER, &h(&[r, ("location", "/step-up")])),
            Outcome::Refused(Refusal::StepUp)
        );
        assert_eq!(
            classify(
                StatusCode::SEE_OTHER,
                &h(&[r, ("set-cookie", "session=; Max-Age=0; Path=/; HttpOnly")])
            ),
            Outcome::Refused(Refusal::Revoke)
        );
        assert_eq!(
            classify(
                StatusCode::UNAUTHORIZED,
                &h(&[
                    r,
                    (
                        "www-authenticate",
                        "Bearer error=\"insufficient_user_authentication\""
                    )
                ])
            ),
            Outcome::Refused(Refusal::StepUp)
        );
        assert_eq!(
            classify(StatusCode::UNAUTHORIZED, &h(&[r])),
            Outcome::Refused(Refusal::SessionEnded)
        );
        assert_eq!(
            classify(StatusCode::BAD_GATEWAY, &h(&[r])),
            Outcome::Error("vigil_502".into())
        );
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &h(&[r])),
            Outcome::Error("vigil_429".into())
        );
    }
}
