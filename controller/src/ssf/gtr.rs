//! The inbound global token revocation endpoint
//! (draft-parecki-oauth-global-token-revocation, the shape Okta's
//! Universal Logout uses): `POST /v1/global-token-revocation` with
//! `{"sub_id": {…}}` from a configured peer (an identity provider, a
//! security tool), authenticated by a static bearer (kept as its SHA-256)
//! or a signed JWT bearer of the peer's issuer; every session of the user
//! ends on every node, as the admin API's `users/revoke` does
//! (`docs/signals.md`, Global token revocation).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};
use vigil_engine::UserKey;
use vigil_fleet::UserId;

use super::config::{Alg, KeySource, Rate, fetchable, ranged, rate};
use super::keys::{KeyError, Keys, parse_jwks};
use super::limit;
use crate::api::{App, now_secs};
use crate::config::token_hash;

/// Largest request body read.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// `[global_token_revocation]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawGtr {
    #[serde(default)]
    peers: Vec<RawPeer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: String,
    token_file: Option<PathBuf>,
    token_sha256: Option<String>,
    issuer: Option<String>,
    audience: Option<String>,
    jwks_uri: Option<String>,
    jwks_file: Option<PathBuf>,
    algorithms: Option<Vec<String>>,
    max_age_seconds: Option<u64>,
    clock_skew_seconds: Option<u64>,
    subjects: Option<Vec<String>>,
    subject_issuers: Option<Vec<String>>,
    #[serde(default)]
    lowercase_email: bool,
    rate_per_second: Option<f64>,
    burst: Option<u64>,
}

/// How a peer authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    /// A static bearer, by its SHA-256.
    Token([u8; 32]),
    /// A JWT bearer signed by the peer's issuer.
    Jwt {
        /// Its `iss`, exactly.
        issuer: String,
        /// Ours: its `aud` must contain it.
        audience: String,
        /// Where its keys come from.
        keys: KeySource,
        /// Algorithms accepted.
        algorithms: Vec<Alg>,
        /// Oldest `iat` accepted, in seconds.
        max_age: u64,
        /// Clock skew allowed on `iat` and `exp`.
        clock_skew: u64,
    },
}

/// A configured peer.
#[derive(Clone)]
pub struct Peer {
    /// Its name, in logs and metrics.
    pub name: String,
    /// How it authenticates.
    pub auth: Auth,
    /// Subject formats it may name users by: `email`, `iss_sub`, `opaque`.
    pub subjects: Vec<String>,
    /// `iss` of the `iss_sub` subjects accepted.
    pub subject_issuers: Vec<String>,
    /// Email addresses lower-cased first.
    pub lowercase_email: bool,
    /// Its rate limit.
    pub rate: Rate,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Validates `[global_token_revocation]`; problems added to `problems`,
/// each with its key.
pub fn load(raw: RawGtr, base: &Path, problems: &mut Vec<String>) -> Vec<Peer> {
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_owned()
        } else {
            base.join(p)
        }
    };
    let mut out = Vec::new();
    for (i, p) in raw.peers.iter().enumerate() {
        let at = format!("global_token_revocation.peers[{i}]");
        let before = problems.len();
        if p.name.is_empty()
            || p.name.len() > 64
            || !p
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            problems.push(format!(
                "{at}.name: {:?}: 1 to 64 of a-z A-Z 0-9 - _",
                p.name
            ));
        }
        if raw.peers[..i].iter().any(|o| o.name == p.name) {
            problems.push(format!("{at}.name: {:?} appears twice", p.name));
        }
        let jwt = p.issuer.is_some()
            || p.audience.is_some()
            || p.jwks_uri.is_some()
            || p.jwks_file.is_some();
        let token = p.token_file.is_some() || p.token_sha256.is_some();
        let auth = match (token, jwt) {
            (true, false) => static_token(p, &at, &resolve, problems).map(Auth::Token),
            (false, true) => jwt_auth(p, &at, &resolve, problems),
            _ => {
                problems.push(format!(
                    "{at}: give a static bearer (token_file or token_sha256) or a JWT bearer's issuer, audience and keys (jwks_uri or jwks_file), not both"
                ));
                None
            }
        };
        if let Some(Auth::Jwt { issuer, .. }) = &auth
            && out
                .iter()
                .any(|o: &Peer| matches!(&o.auth, Auth::Jwt { issuer: i, .. } if i == issuer))
        {
            problems.push(format!("{at}.issuer: {issuer:?} is another peer's"));
        }
        let mut subjects = Vec::new();
        for s in p
            .subjects
            .clone()
            .unwrap_or_else(|| vec!["email".into(), "iss_sub".into()])
        {
            if !["email", "iss_sub", "opaque"].contains(&s.as_str()) {
                problems.push(format!(
                    "{at}.subjects: {s:?}: expected \"email\", \"iss_sub\" or \"opaque\""
                ));
            } else if !subjects.contains(&s) {
                subjects.push(s);
            }
        }
        if subjects.is_empty() {
            problems.push(format!("{at}.subjects: at least one"));
        }
        let subject_issuers = match (&p.subject_issuers, &p.issuer) {
            (Some(list), _) => list.clone(),
            (None, Some(issuer)) => vec![issuer.clone()],
            (None, None) => {
                if subjects.iter().any(|s| s == "iss_sub") {
                    problems.push(format!(
                        "{at}.subject_issuers: required for iss_sub subjects with a static bearer"
                    ));
                }
                Vec::new()
            }
        };
        let rate = rate(
            problems,
            &format!("{at}.rate_per_second"),
            &format!("{at}.burst"),
            p.rate_per_second,
            p.burst,
            10.0,
        );
        if let (Some(auth), true) = (auth, problems.len() == before) {
            out.push(Peer {
                name: p.name.clone(),
                auth,
                subjects,
                subject_issuers,
                lowercase_email: p.lowercase_email,
                rate,
            });
        }
    }
    out
}

fn static_token(
    p: &RawPeer,
    at: &str,
    resolve: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Vec<String>,
) -> Option<[u8; 32]> {
    for (set, key) in [
        (p.algorithms.is_some(), "algorithms"),
        (p.max_age_seconds.is_some(), "max_age_seconds"),
        (p.clock_skew_seconds.is_some(), "clock_skew_seconds"),
    ] {
        if set {
            problems.push(format!("{at}.{key}: only with a JWT bearer"));
        }
    }
    match (&p.token_file, &p.token_sha256) {
        (Some(file), None) => match std::fs::read_to_string(resolve(file)) {
            Ok(tok) if tok.trim().len() >= 16 => Some(token_hash(&tok)),
            Ok(_) => {
                problems.push(format!(
                    "{at}.token_file: {}: a token of at least 16 characters",
                    file.display()
                ));
                None
            }
            Err(e) => {
                problems.push(format!("{at}.token_file: {}: {e}", file.display()));
                None
            }
        },
        (None, Some(hash)) => match hex::decode(hash)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
        {
            Some(h) => Some(h),
            None => {
                problems.push(format!(
                    "{at}.token_sha256: expected 64 hex digits (vigil-controller hash-token)"
                ));
                None
            }
        },
        _ => {
            problems.push(format!("{at}: give one of token_file and token_sha256"));
            None
        }
    }
}

fn jwt_auth(
    p: &RawPeer,
    at: &str,
    resolve: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Vec<String>,
) -> Option<Auth> {
    let issuer = match &p.issuer {
        Some(i) if !i.is_empty() && i.len() <= 1024 => Some(i.clone()),
        Some(_) => {
            problems.push(format!("{at}.issuer: 1 to 1024 characters"));
            None
        }
        None => {
            problems.push(format!("{at}.issuer: required with a JWT bearer"));
            None
        }
    };
    let audience = match &p.audience {
        Some(a) if !a.is_empty() && a.len() <= 1024 => Some(a.clone()),
        Some(_) => {
            problems.push(format!("{at}.audience: 1 to 1024 characters"));
            None
        }
        None => {
            problems.push(format!("{at}.audience: required with a JWT bearer"));
            None
        }
    };
    let keys = match (&p.jwks_uri, &p.jwks_file) {
        (Some(uri), None) => {
            if fetchable(uri) {
                Some(KeySource::Uri(uri.clone()))
            } else {
                problems.push(format!(
                    "{at}.jwks_uri: {uri:?}: expected https://… (http:// only on loopback)"
                ));
                None
            }
        }
        (None, Some(file)) => match std::fs::read(resolve(file))
            .map_err(|e| e.to_string())
            .and_then(|b| parse_jwks(&b))
        {
            Ok(set) => Some(KeySource::Static(Arc::new(set))),
            Err(e) => {
                problems.push(format!("{at}.jwks_file: {}: {e}", file.display()));
                None
            }
        },
        _ => {
            problems.push(format!("{at}: give exactly one of jwks_uri and jwks_file"));
            None
        }
    };
    let mut algorithms = Vec::new();
    for a in p.algorithms.clone().unwrap_or_else(|| vec!["RS256".into()]) {
        match Alg::of(&a) {
            Some(alg) if !algorithms.contains(&alg) => algorithms.push(alg),
            Some(_) => {}
            None => problems.push(format!(
                "{at}.algorithms: {a:?}: expected \"RS256\" or \"ES256\""
            )),
        }
    }
    if algorithms.is_empty() {
        problems.push(format!("{at}.algorithms: at least one"));
    }
    let max_age = ranged(
        problems,
        &format!("{at}.max_age_seconds"),
        p.max_age_seconds,
        300,
        10..=3600,
    );
    let clock_skew = ranged(
        problems,
        &format!("{at}.clock_skew_seconds"),
        p.clock_skew_seconds,
        60,
        0..=600,
    );
    Some(Auth::Jwt {
        issuer: issuer?,
        audience: audience?,
        keys: keys?,
        algorithms,
        max_age,
        clock_skew,
    })
}

/// The endpoint's state: each peer with its keys (for a JWT bearer) and
/// its rate limit.
#[derive(Debug, Default)]
pub struct Inbound {
    peers: Vec<(Peer, Option<Keys>, limit::Limiter<()>)>,
}

impl Inbound {
    /// The state of `peers`.
    pub fn new(peers: &[Peer]) -> Inbound {
        let client = if peers.iter().any(|p| {
            matches!(
                &p.auth,
                Auth::Jwt {
                    keys: KeySource::Uri(_),
                    ..
                }
            )
        }) {
            super::keys::client()
        } else {
            None
        };
        Inbound {
            peers: peers
                .iter()
                .map(|p| {
                    let keys = match &p.auth {
                        Auth::Jwt { keys, .. } => Some(Keys::new(
                            keys.clone(),
                            Duration::from_secs(3600),
                            Duration::from_secs(60),
                            client.clone(),
                        )),
                        Auth::Token(_) => None,
                    };
                    (p.clone(), keys, limit::Limiter::new(p.rate, 1))
                })
                .collect(),
        }
    }
}

fn answer(status: StatusCode, error: &str, description: &str) -> Response {
    let mut r = (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({"error": error, "error_description": description})),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

fn unauthorized() -> Response {
    answer(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "a valid bearer token of a configured peer is required",
    )
}

/// `POST /v1/global-token-revocation`: `204` when every session of the
/// subject's user is revoked (whether Vigil has seen the user or not);
/// `400` malformed; `401` no or a bad bearer; `403` a subject the peer may
/// not name; `422` a subject format not supported; `429` over a rate;
/// `503` the store failed.
pub async fn revoke(
    State(app): State<Arc<App>>,
    peer: crate::tls::Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let count = |label: &str, result: &str| {
        app.metrics
            .ssf_sets
            .with_label_values(&[label, result])
            .inc();
    };
    if let Err(retry) = app.ssf.check_source(&peer) {
        count("-", "rate_limited");
        return limit::too_many(retry);
    }
    let Some(token) = super::bearer(&headers) else {
        count("-", "unauthorized");
        return unauthorized();
    };
    let now = now_secs();
    let (p, _, limiter) = match authenticate(&app.ssf.gtr, token, now).await {
        Ok(state) => state,
        Err(Unauthenticated::Invalid) => {
            count("-", "unauthorized");
            return unauthorized();
        }
        Err(Unauthenticated::KeysUnavailable) => {
            count("-", "unavailable");
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the peer's keys could not be fetched; try again",
            );
        }
    };
    let label = format!("gtr:{}", p.name);
    if let Err(retry) = limiter.check(&()) {
        count(&label, "rate_limited");
        return limit::too_many(retry);
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        count(&label, "invalid_request");
        return answer(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("a body of at most {MAX_BODY_BYTES} bytes"),
        );
    };
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    let sub_id = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(mut o)) if json_type => match o.remove("sub_id") {
            Some(Value::Object(s)) => s,
            _ => {
                count(&label, "invalid_request");
                return answer(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "sub_id is missing or not an object",
                );
            }
        },
        _ => {
            count(&label, "invalid_request");
            return answer(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "a JSON object (Content-Type application/json) with sub_id",
            );
        }
    };
    let name = match user_name(p, &sub_id) {
        Ok(n) => n,
        Err((status, error, description)) => {
            count(&label, error);
            return answer(status, error, description);
        }
    };
    let user = UserId(UserKey::for_name(&app.config.hash_key, &name).as_u64());
    if crate::admin::keep_name(&app, user, &name).await.is_err() {
        count(&label, "unavailable");
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the store failed; try again",
        );
    }
    match app.store.revoke_user(user, now, now).await {
        Ok(seq) => {
            app.head.send_if_modified(|h| {
                let newer = seq > *h;
                if newer {
                    *h = seq;
                }
                newer
            });
            count(&label, "accepted");
            tracing::info!(peer = %p.name, user = %user, seq, "every session of a user revoked by global token revocation");
            (
                StatusCode::NO_CONTENT,
                [(header::CACHE_CONTROL, "no-store")],
            )
                .into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "store failed; global token revocation not taken");
            count(&label, "unavailable");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the store failed; try again",
            )
        }
    }
}

type PeerState = (Peer, Option<Keys>, limit::Limiter<()>);

/// Why a bearer authenticated no peer.
enum Unauthenticated {
    /// Not a configured peer's (`401`).
    Invalid,
    /// A JWT of a configured issuer whose keys could not be fetched, none
    /// held (`503`: the peer tries again).
    KeysUnavailable,
}

/// The peer `token` authenticates: a static bearer by its hash, or a JWT
/// bearer by its issuer, verified.
async fn authenticate<'a>(
    inbound: &'a Inbound,
    token: &str,
    now: u64,
) -> Result<&'a PeerState, Unauthenticated> {
    let by_hash = || {
        let hash = token_hash(token);
        inbound
            .peers
            .iter()
            .find(|(p, _, _)| matches!(p.auth, Auth::Token(h) if h == hash))
            .ok_or(Unauthenticated::Invalid)
    };
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return by_hash();
    }
    match verify_jwt(inbound, token, &parts, now).await {
        Ok(Some(state)) => Ok(state),
        // A static token may hold two dots too.
        Ok(None) => by_hash(),
        Err(()) => Err(Unauthenticated::KeysUnavailable),
    }
}

/// A JWT bearer's peer, verified; `Err` when its keys are unavailable.
async fn verify_jwt<'a>(
    inbound: &'a Inbound,
    token: &str,
    parts: &[&str],
    now: u64,
) -> Result<Option<&'a PeerState>, ()> {
    let Some((peer_state, keys, claims_ok, alg, kid)) = jwt_peer(inbound, parts, now) else {
        return Ok(None);
    };
    let key = match keys.key(&kid).await {
        Ok(k) => k,
        Err(KeyError::Unknown) => return Ok(None),
        Err(KeyError::Unavailable(_)) => return Err(()),
    };
    let signing_input = &token[..parts[0].len() + 1 + parts[1].len()];
    Ok((claims_ok
        && key
            .check(alg, &kid, signing_input.as_bytes(), parts[2])
            .is_ok())
    .then_some(peer_state))
}

type JwtPeer<'a> = (&'a PeerState, &'a Keys, bool, Alg, String);

/// The peer a JWT names by its `iss`, its keys, whether its claims hold
/// (checked before the signature but answered after, all as one 401), its
/// algorithm and `kid`.
fn jwt_peer<'a>(inbound: &'a Inbound, parts: &[&str], now: u64) -> Option<JwtPeer<'a>> {
    let claims = decode(parts[1])?;
    let iss = claims.get("iss").and_then(Value::as_str)?;
    let state = inbound
        .peers
        .iter()
        .find(|(p, _, _)| matches!(&p.auth, Auth::Jwt { issuer, .. } if issuer == iss))?;
    let (
        Peer {
            auth:
                Auth::Jwt {
                    audience,
                    algorithms,
                    max_age,
                    clock_skew,
                    ..
                },
            ..
        },
        Some(keys),
        _,
    ) = state
    else {
        return None;
    };
    let header = decode(parts[0])?;
    if header.contains_key("crit") {
        return None;
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Alg::of)
        .filter(|a| algorithms.contains(a))?;
    let kid = header.get("kid").and_then(Value::as_str)?.to_owned();
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == audience,
        Some(Value::Array(l)) => l.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    };
    let exp = claims.get("exp").and_then(Value::as_u64)?;
    let iat = claims.get("iat").and_then(Value::as_u64)?;
    let fresh = exp.saturating_add(*clock_skew) >= now
        && iat <= now.saturating_add(*clock_skew)
        && iat.saturating_add(*max_age) >= now;
    Some((state, keys, aud_ok && fresh, alg, kid))
}

fn decode(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

type Refusal = (StatusCode, &'static str, &'static str);

/// The user name `sub_id` names for `p`: `422` for a format Vigil does
/// not support, `403` for one the peer may not use (or an `iss_sub` of an
/// issuer it may not name), `400` for a subject missing its members.
fn user_name(p: &Peer, sub: &Map<String, Value>) -> Result<String, Refusal> {
    let format = sub.get("format").and_then(Value::as_str).unwrap_or("");
    let simple = if format == "complex" {
        sub.get("user").and_then(Value::as_object).ok_or((
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported_subject",
            "a complex sub_id without a user cannot be mapped",
        ))?
    } else {
        sub
    };
    let field = |k: &str| simple.get(k).and_then(Value::as_str);
    let format = field("format").unwrap_or("");
    if !["email", "iss_sub", "opaque"].contains(&format) {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported_subject",
            "the sub_id format is not supported (email, iss_sub, opaque, complex with a user)",
        ));
    }
    if !p.subjects.iter().any(|s| s == format) {
        return Err((
            StatusCode::FORBIDDEN,
            "access_denied",
            "this peer may not name users by this subject format",
        ));
    }
    let missing = (
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "the subject is missing a member of its format",
    );
    let name = match format {
        "email" => {
            let e = field("email").ok_or(missing)?;
            if p.lowercase_email {
                e.to_lowercase()
            } else {
                e.to_owned()
            }
        }
        "iss_sub" => {
            let (Some(iss), Some(sub)) = (field("iss"), field("sub")) else {
                return Err(missing);
            };
            if !p.subject_issuers.iter().any(|i| i == iss) {
                return Err((
                    StatusCode::FORBIDDEN,
                    "access_denied",
                    "this peer may not name users of this issuer",
                ));
            }
            sub.to_owned()
        }
        _ => field("id").ok_or(missing)?.to_owned(),
    };
    vigil_engine::valid_user_name(&name)
        .map(str::to_owned)
        .ok_or((
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the subject is not a user name of 1 to 256 visible characters",
        ))
}
