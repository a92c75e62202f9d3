//! The operator's side of the risk engine, on the admin listener:
//! authenticated `POST /v1/…` calls that revoke a user or a session
//! everywhere on this node (their requests in flight included: see
//! [`crate::open_requests`]), raise a user's risk for a while, trust a device or network for a
//! user, or mark a decision a false positive.
//!
//! Every call needs `Authorization: Bearer <token>` with the token in
//! `[admin] token_file`; without that file the calls are refused (403) and
//! only `/metrics`, `/healthz` and `/readyz` are served. The token is
//! compared through its SHA-256 digest, so the comparison's timing says
//! nothing about the token.
//!
//! A decision is named by its reference id (from the 403 page, the
//! `Vigil-Reference` header or the decision log): the proxy keeps the last
//! [`DECISIONS_KEPT`] references of refusals and their session keys for
//! [`DECISIONS_TTL`], so an operator never handles a session key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::StatusCode;
use moka::sync::Cache;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use vigil_engine::{
    DeviceId, DeviceSummary, Engine, Feedback, NetworkFacts, SessionKey, TrustedNetwork,
};

use crate::open_requests::OpenRequests;

/// References of refusals remembered for false-positive feedback.
pub const DECISIONS_KEPT: u64 = 100_000;
/// How long a refusal can be reported a false positive.
pub const DECISIONS_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Recent refusals: reference id → the session and the refused request's
/// device and network, so that a false positive adopts exactly those.
#[derive(Clone)]
pub struct Decisions(Cache<String, Refused>);

/// What is kept of a refusal (about 150 bytes).
#[derive(Debug, Clone, Copy)]
pub struct Refused {
    /// The session.
    pub session: SessionKey,
    /// The refused request's device.
    pub device: DeviceSummary,
    /// The refused request's network.
    pub network: NetworkFacts,
}

/// The admin API token, as its digest.
#[derive(Clone)]
pub struct AdminToken([u8; 32]);

/// Why the token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Reading failed.
    #[error("admin token {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Too short to resist guessing.
    #[error("admin token {path}: {len} characters; use at least 32 (e.g. `openssl rand -hex 32`)")]
    TooShort {
        /// The file.
        path: PathBuf,
        /// Characters found, after trimming.
        len: usize,
    },
}

/// Why an operator call was refused; every one answers `400` with its
/// message (see [`handle`]).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The body is not the call's JSON.
    #[error("bad request body: {0}")]
    Body(#[from] serde_json::Error),
    /// A report out of its bounds.
    #[error("points must be 0 to 100 and ttl_seconds at least 1")]
    Report,
    /// ASN 0 is reserved: no network has it.
    #[error("ASN 0 is no network")]
    AsnZero,
    /// Not an ISO 3166 alpha-2 code.
    #[error("{0:?} is not a two-letter country code")]
    Country(String),
    /// A network is one of an ASN, a prefix or a country.
    #[error("give exactly one of asn, prefix, country")]
    NetworkChoice,
    /// Not a device id as logged.
    #[error("{0:?} is not a device id (16 hex digits)")]
    Device(String),
    /// Not a session key as logged and as the controller takes them.
    #[error("{0:?} is not a session key (32 hex digits)")]
    Session(String),
    /// Not a user name as Vigil takes them.
    #[error("{0:?} is not a user name (1 to 256 visible characters)")]
    User(String),
    /// The reference is unknown here: another node's, or too old.
    #[error("no refusal {reference:?} in the last {days} days on this node", days = DECISIONS_TTL.as_secs() / 86_400)]
    NoRefusal {
        /// The reference id given.
        reference: String,
    },
    /// The engine refused the feedback.
    #[error("{context}{source}")]
    Feedback {
        /// What the feedback was about, with a trailing `": "`, or empty.
        context: String,
        /// The cause.
        source: vigil_engine::FeedbackError,
    },
}

/// One call's answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// A one-line JSON body.
    pub body: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    user: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionBody {
    /// The session key: 32 hex digits, as the controller's admin API and
    /// the decision log name sessions; never the credential.
    session: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportBody {
    user: String,
    points: u8,
    ttl_seconds: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkBody {
    user: String,
    asn: Option<u32>,
    prefix: Option<std::net::IpAddr>,
    country: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceBody {
    user: String,
    /// The device id as logged: 16 hex digits.
    device: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    reference: String,
}

// === impl Decisions ===

impl Decisions {
    /// An empty index.
    pub fn new() -> Self {
        Self(
            Cache::builder()
                .max_capacity(DECISIONS_KEPT)
                .time_to_live(DECISIONS_TTL)
                // The newest refusal is the one an operator asks about: no
                // frequency-based admission.
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .build(),
        )
    }

    /// Remembers a refusal.
    pub fn record(&self, reference: &str, refused: Refused) {
        self.0.insert(reference.to_owned(), refused);
    }

    /// The refusal kept under `reference`, if this node made it within
    /// [`DECISIONS_TTL`] and has not evicted it.
    pub fn get(&self, reference: &str) -> Option<Refused> {
        self.0.get(reference)
    }
}

impl Default for Decisions {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Decisions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decisions")
            .field("kept", &self.0.entry_count())
            .finish()
    }
}

// === impl AdminToken ===

impl AdminToken {
    /// Reads the token from `path` (surrounding whitespace ignored).
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Io {
            path: path.to_owned(),
            source,
        })?;
        let token = text.trim();
        if token.len() < 32 {
            return Err(TokenError::TooShort {
                path: path.to_owned(),
                len: token.len(),
            });
        }
        Ok(Self(Sha256::digest(token.as_bytes()).into()))
    }

    /// Whether an `Authorization` header value carries the token.
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let Some(token) = authorization
            .and_then(|v| v.strip_prefix(b"Bearer "))
            .map(<[u8]>::trim_ascii)
        else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(token).into();
        digest == self.0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

// === the calls ===

/// Carries out `POST path` with `body`, already authenticated. A
/// revocation also ends the requests in flight `open` holds of the session
/// or user.
pub fn handle(
    engine: &Engine,
    decisions: &Decisions,
    open: Option<&OpenRequests>,
    path: &str,
    body: &[u8],
    now: u64,
) -> Answer {
    let result = match path {
        "/v1/users/revoke" => revoke_user(engine, open, body, now),
        "/v1/sessions/revoke" => revoke_session(engine, open, body, now),
        "/v1/users/report" => report_user(engine, body, now),
        "/v1/users/trust-network" => trust_network(engine, body, now),
        "/v1/users/trust-device" => trust_device(engine, body, now),
        "/v1/decisions/false-positive" => false_positive(engine, decisions, body, now),
        _ => {
            return Answer {
                status: StatusCode::NOT_FOUND,
                body: error_json("no such call"),
            };
        }
    };
    // The one place a call's outcome becomes an answer.
    match result {
        Ok(done) => Answer {
            status: StatusCode::OK,
            body: serde_json::json!({ "ok": done }).to_string(),
        },
        Err(e) => Answer {
            status: StatusCode::BAD_REQUEST,
            body: error_json(&e.to_string()),
        },
    }
}

fn revoke_user(
    engine: &Engine,
    open: Option<&OpenRequests>,
    body: &[u8],
    now: u64,
) -> Result<&'static str, CallError> {
    let b: UserBody = parse(body)?;
    let user = user_key(engine, &b.user)?;
    engine.revoke_user(user, now);
    if let Some(open) = open {
        let scorer = engine.scorer();
        open.end_user(user, |s| scorer.is_revoked(s));
    }
    Ok("revoked every session bound to the user so far")
}

fn revoke_session(
    engine: &Engine,
    open: Option<&OpenRequests>,
    body: &[u8],
    now: u64,
) -> Result<&'static str, CallError> {
    let b: SessionBody = parse(body)?;
    let key = session_key(&b.session).ok_or_else(|| CallError::Session(b.session.clone()))?;
    // The operator's word: kept whatever this node knows of the session.
    engine.revoke_vouched(key, now);
    if let Some(open) = open {
        open.end_session(&key);
    }
    Ok("revoked the session")
}

/// A session key written as 32 hex digits.
fn session_key(text: &str) -> Option<SessionKey> {
    let mut bytes = [0u8; 16];
    hex::decode_to_slice(text, &mut bytes).ok()?;
    Some(SessionKey::from_bytes(bytes))
}

fn report_user(engine: &Engine, body: &[u8], now: u64) -> Result<&'static str, CallError> {
    let b: ReportBody = parse(body)?;
    if b.points > 100 || b.ttl_seconds == 0 {
        return Err(CallError::Report);
    }
    engine.report_user(
        user_key(engine, &b.user)?,
        b.points,
        Duration::from_secs(b.ttl_seconds),
        now,
    );
    Ok("reported")
}

fn trust_network(engine: &Engine, body: &[u8], now: u64) -> Result<&'static str, CallError> {
    let b: NetworkBody = parse(body)?;
    let network = match (b.asn, b.prefix, b.country) {
        (Some(0), None, None) => return Err(CallError::AsnZero),
        (Some(asn), None, None) => TrustedNetwork::Asn(asn),
        (None, Some(ip), None) => TrustedNetwork::Prefix(ip),
        (None, None, Some(c)) => match *c.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                TrustedNetwork::Country([a, b])
            }
            _ => return Err(CallError::Country(c)),
        },
        _ => return Err(CallError::NetworkChoice),
    };
    let user = user_key(engine, &b.user)?;
    engine
        .feedback(Feedback::TrustNetwork { user, network }, now)
        .map_err(|source| CallError::Feedback {
            context: String::new(),
            source,
        })?;
    Ok("network trusted for the user")
}

fn trust_device(engine: &Engine, body: &[u8], now: u64) -> Result<&'static str, CallError> {
    let b: DeviceBody = parse(body)?;
    let id = u64::from_str_radix(&b.device, 16)
        .ok()
        .filter(|_| b.device.len() == 16)
        .ok_or_else(|| CallError::Device(b.device.clone()))?;
    let user = user_key(engine, &b.user)?;
    engine
        .feedback(
            Feedback::TrustDevice {
                user,
                device: DeviceId(id),
            },
            now,
        )
        .map_err(|source| CallError::Feedback {
            context: String::new(),
            source,
        })?;
    Ok("device trusted for the user")
}

fn false_positive(
    engine: &Engine,
    decisions: &Decisions,
    body: &[u8],
    now: u64,
) -> Result<&'static str, CallError> {
    let b: DecisionBody = parse(body)?;
    let refused = decisions
        .get(&b.reference)
        .ok_or_else(|| CallError::NoRefusal {
            reference: b.reference.clone(),
        })?;
    engine
        .feedback(
            Feedback::FalsePositive {
                session: refused.session,
                device: refused.device,
                network: refused.network,
            },
            now,
        )
        .map_err(|source| CallError::Feedback {
            context: format!("refusal {:?}: ", b.reference),
            source,
        })?;
    Ok("the refused request's device and network are now the session's")
}

/// The key of a user named in a call, checked as the `Vigil-User` header is.
fn user_key(engine: &Engine, name: &str) -> Result<vigil_engine::UserKey, CallError> {
    vigil_engine::valid_user_name(name)
        .map(|n| engine.user_key(n))
        .ok_or_else(|| CallError::User(name.to_owned()))
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, CallError> {
    Ok(serde_json::from_slice(body)?)
}

/// `{"error": …}`.
pub fn error_json(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_engine::{EngineConfig, SessionHashKey};

    fn engine() -> Engine {
        Engine::new(EngineConfig::default(), SessionHashKey::from_bytes([3; 32]))
    }

    #[test]
    fn the_token_is_checked_by_digest_and_must_be_long() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "short\n").unwrap();
        assert!(matches!(
            AdminToken::load(&path),
            Err(TokenError::TooShort { len: 5, .. })
        ));
        let secret = "0123456789abcdef0123456789abcdef";
        std::fs::write(&path, format!("{secret}\n")).unwrap();
        let token = AdminToken::load(&path).unwrap();
        assert!(token.accepts(Some(format!("Bearer {secret}").as_bytes())));
        assert!(!token.accepts(Some(format!("Bearer {secret}x").as_bytes())));
        assert!(!token.accepts(Some(secret.as_bytes())));
        assert!(!token.accepts(None));
        assert!(!format!("{token:?}").contains(secret));
    }

    #[test]
    fn bad_calls_say_what_is_wrong() {
        let e = engine();
        let d = Decisions::new();
        let call = |path: &str, body: &str| handle(&e, &d, None, path, body.as_bytes(), 1);
        assert_eq!(call("/v1/nope", "{}").status, StatusCode::NOT_FOUND);
        let bad = call("/v1/users/revoke", "{\"usr\": \"a\"}");
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert!(bad.body.contains("unknown field"), "{}", bad.body);
        let bad = call(
            "/v1/users/trust-network",
            "{\"user\": \"a\", \"asn\": 1, \"country\": \"GB\"}",
        );
        assert!(bad.body.contains("exactly one"), "{}", bad.body);
        let bad = call(
            "/v1/users/trust-device",
            "{\"user\": \"a\", \"device\": \"xyz\"}",
        );
        assert!(bad.body.contains("not a device id"), "{}", bad.body);
        let bad = call("/v1/sessions/revoke", "{\"session\": \"abc\"}");
        assert!(bad.body.contains("not a session key"), "{}", bad.body);
        assert_eq!(
            call(
                "/v1/sessions/revoke",
                "{\"session\": \"000102030405060708090a0b0c0d0e0f\"}"
            )
            .status,
            StatusCode::OK
        );
        let bad = call("/v1/users/revoke", "{\"user\": \"  \"}");
        assert!(bad.body.contains("not a user name"), "{}", bad.body);
        let bad = call("/v1/decisions/false-positive", "{\"reference\": \"r-1\"}");
        assert!(bad.body.contains("no refusal"), "{}", bad.body);
        let bad = call(
            "/v1/users/report",
            "{\"user\": \"a\", \"points\": 101, \"ttl_seconds\": 5}",
        );
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            call("/v1/users/revoke", "{\"user\": \"a\"}").status,
            StatusCode::OK
        );
    }
}
