//! The OpenID Connect Back-Channel Logout 1.0 receiver (§2.5–2.8,
//! `docs/signals.md`): an OpenID provider posts a `logout_token` to
//! `POST /v1/oidc/backchannel-logout/{provider}` when one of its sessions
//! ends, and the Vigil sessions signed in under it (or every session of
//! the user the token names) end on every node.
//!
//! The token is the request's authentication: a provider sends no other
//! credential, so nothing is done before its signature, issuer and
//! audience are checked. Each provider's posts are rate-limited by a token
//! bucket of its own.

pub mod config;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use vigil_engine::{IdpSessionKey, UserKey};
use vigil_fleet::{IdpSessionId, UserId};

use crate::api::{App, now_secs};
use crate::ssf::config::Alg;
use crate::ssf::keys::{KeyError, KeyRefusal, Keys};
use crate::store::bcl::{LogoutOf, LogoutReceipt, LogoutTaken};
use config::Provider;

pub use config::RawBcl;

/// The event a logout token carries (§2.4).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Largest body read: a logout token is a few kilobytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Longest `jti` taken.
const MAX_JTI: usize = 256;

/// The receiver's state: each provider with its keys and its bucket.
#[derive(Debug, Default)]
pub struct Receiver {
    providers: HashMap<String, (Provider, Keys, Bucket)>,
}

/// A token bucket: `per_minute` tokens, refilled evenly.
#[derive(Debug)]
struct Bucket {
    per_minute: u32,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(per_minute: u32) -> Bucket {
        Bucket {
            per_minute,
            state: Mutex::new((f64::from(per_minute), Instant::now())),
        }
    }

    /// Takes a token; false when none is left.
    fn take(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let full = f64::from(self.per_minute);
        let refill = now.duration_since(s.1).as_secs_f64() * full / 60.0;
        s.0 = (s.0 + refill).min(full);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Receiver {
    /// The receiver of `providers`.
    pub fn new(providers: &[Provider]) -> Receiver {
        let client = if providers
            .iter()
            .any(|p| matches!(p.keys, crate::ssf::config::KeySource::Uri(_)))
        {
            crate::ssf::keys::client()
        } else {
            None
        };
        Receiver {
            providers: providers
                .iter()
                .map(|p| {
                    let keys =
                        Keys::new(p.keys.clone(), p.jwks_cache, p.jwks_refetch, client.clone());
                    (p.name.clone(), (p.clone(), keys, Bucket::new(p.per_minute)))
                })
                .collect(),
        }
    }
}

/// An answer of §2.8: `200` with no body, or an error as JSON; never
/// cached.
fn answer(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn invalid(description: impl Into<String>) -> Refused {
    Refused::Invalid(description.into())
}

enum Refused {
    /// `400 invalid_request`.
    Invalid(String),
    /// `503`: keys or store unavailable; the provider may retry.
    Unavailable(&'static str),
    /// `429`: the provider's `per_minute` is spent (by tokens it signed).
    RateLimited,
}

/// `POST /v1/oidc/backchannel-logout/{provider}` with
/// `application/x-www-form-urlencoded` `logout_token=…`: `200` when the
/// token is valid and its logout is committed; `400` with
/// `{"error":"invalid_request","error_description"}` when it is not (a
/// bad signature, issuer, audience, age, event, a `nonce`, a replayed
/// `jti`, …); `401` for a provider not configured; `413` for a body too
/// large; `429` beyond the provider's `per_minute`; `503` when its keys or
/// the store are unavailable.
pub async fn logout(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    peer: crate::tls::Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let count = |label: &str, result: &str| {
        app.metrics
            .bcl_tokens
            .with_label_values(&[label, result])
            .inc();
    };
    // The source's rate first, as for every inbound signal endpoint
    // (`[ssf] source_rate_per_second`), before anything is looked at.
    if let Err(retry) = app.ssf.check_source(&peer) {
        count("-", "rate_limited");
        return crate::ssf::limit::too_many(retry);
    }
    let Some((p, keys, bucket)) = app.bcl.providers.get(&name) else {
        // As for transmitters: a name not configured is refused before
        // anything is read.
        count("-", "unknown_provider");
        return answer(
            StatusCode::UNAUTHORIZED,
            "invalid_request",
            "no such provider",
        );
    };
    let label = p.name.as_str();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if content_type.as_deref() != Some("application/x-www-form-urlencoded") {
        count(label, "invalid_request");
        return answer(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Content-Type must be application/x-www-form-urlencoded",
        );
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        count(label, "too_large");
        return answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            &format!("a body of at most {MAX_BODY_BYTES} bytes"),
        );
    };
    match take(&app, p, keys, bucket, &bytes).await {
        Ok(result) => {
            count(label, result);
            (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")]).into_response()
        }
        Err(Refused::RateLimited) => {
            count(label, "rate_limited");
            let mut r = answer(
                StatusCode::TOO_MANY_REQUESTS,
                "temporarily_unavailable",
                "too many logout tokens from this provider; retry shortly",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            r
        }
        Err(Refused::Invalid(description)) => {
            count(label, "invalid_request");
            tracing::info!(provider = label, %description, "logout token refused");
            answer(StatusCode::BAD_REQUEST, "invalid_request", &description)
        }
        Err(Refused::Unavailable(why)) => {
            count(label, "unavailable");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                why,
            )
        }
    }
}

/// The one `logout_token` of a form body.
fn logout_token(bytes: &[u8]) -> Result<String, Refused> {
    let mut token = None;
    for (name, value) in url::form_urlencoded::parse(bytes) {
        if name == "logout_token" {
            if token.is_some() {
                return Err(invalid("logout_token is given more than once"));
            }
            token = Some(value.into_owned());
        }
    }
    token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| invalid("logout_token is missing"))
}

fn decode_json(part: &str, what: &str) -> Result<Map<String, Value>, Refused> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| invalid(format!("the {what} is not base64url")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(invalid(format!("the {what} is not a JSON object"))),
    }
}

/// Validates and takes one logout token (§2.6); the metric's result.
async fn take(
    app: &App,
    p: &Provider,
    keys: &Keys,
    bucket: &Bucket,
    bytes: &[u8],
) -> Result<&'static str, Refused> {
    let token = logout_token(bytes)?;
    let parts: Vec<&str> = token.split('.').collect();
    let [header_b64, payload_b64, signature] = parts[..] else {
        return Err(invalid(
            "the logout token is not a JWS in compact serialization",
        ));
    };
    let h = decode_json(header_b64, "header")?;
    if let Some(typ) = h.get("typ") {
        let ok = typ.as_str().is_some_and(|t| {
            t.eq_ignore_ascii_case("logout+jwt") || t.eq_ignore_ascii_case("application/logout+jwt")
        });
        if !ok {
            return Err(invalid("typ is not logout+jwt"));
        }
    }
    if h.contains_key("crit") {
        return Err(invalid("crit is not supported"));
    }
    let alg_name = h.get("alg").and_then(Value::as_str).unwrap_or("");
    if alg_name.eq_ignore_ascii_case("none") || signature.is_empty() {
        return Err(invalid("the logout token is not signed"));
    }
    let alg = Alg::of(alg_name)
        .filter(|a| p.algorithms.contains(a))
        .ok_or_else(|| invalid(format!("alg {alg_name:?} is not accepted")))?;
    let kid = h
        .get("kid")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty() && k.len() <= 256)
        .ok_or_else(|| invalid("kid is missing"))?;
    let key = match keys.key(kid).await {
        Ok(key) => key,
        Err(KeyError::Unknown) => {
            return Err(invalid(format!("no key {kid:?} in the provider's JWK Set")));
        }
        Err(KeyError::Unavailable(_)) => {
            return Err(Refused::Unavailable(
                "the provider's keys could not be fetched; try again",
            ));
        }
    };
    let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
    key.check(alg, kid, signing_input.as_bytes(), signature)
        .map_err(|why| match why {
            KeyRefusal::Unfit(what) => invalid(what),
            KeyRefusal::BadSignature => invalid("the signature does not verify"),
        })?;
    // The provider's allowance is spent only by tokens it signed: a flood
    // of junk from anyone cannot starve its real logouts (the source's
    // rate bounds the junk).
    if !bucket.take() {
        return Err(Refused::RateLimited);
    }
    let c = decode_json(payload_b64, "claims set")?;
    let now = now_secs();
    if c.get("iss").and_then(Value::as_str) != Some(p.issuer.as_str()) {
        return Err(invalid("iss is not this provider"));
    }
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => *a == p.client_id,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(&p.client_id)),
        _ => false,
    };
    if !aud_ok {
        return Err(invalid("aud does not name this client"));
    }
    let iat = c
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or_else(|| invalid("iat is missing or not a whole number"))?;
    if iat > now.saturating_add(p.clock_skew) {
        return Err(invalid("iat is in the future"));
    }
    if iat.saturating_add(p.max_age) < now {
        return Err(invalid(format!("iat is older than {} seconds", p.max_age)));
    }
    if let Some(exp) = c.get("exp") {
        let exp = exp
            .as_u64()
            .ok_or_else(|| invalid("exp is not a whole number"))?;
        if exp.saturating_add(p.clock_skew) < now {
            return Err(invalid("the logout token has expired"));
        }
    }
    let jti = c
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty() && j.len() <= MAX_JTI)
        .ok_or_else(|| {
            invalid(format!(
                "jti is missing or longer than {MAX_JTI} characters"
            ))
        })?;
    let event_ok = c
        .get("events")
        .and_then(Value::as_object)
        .and_then(|e| e.get(BACKCHANNEL_LOGOUT_EVENT))
        .is_some_and(Value::is_object);
    if !event_ok {
        return Err(invalid(format!(
            "events does not hold {BACKCHANNEL_LOGOUT_EVENT} as an object"
        )));
    }
    if c.contains_key("nonce") {
        return Err(invalid("a logout token carries no nonce"));
    }
    let text = |k: &str| -> Result<Option<&str>, Refused> {
        match c.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(invalid(format!("{k} is not a string"))),
        }
    };
    let (sub, sid) = (text("sub")?, text("sid")?);
    if sub.is_none() && sid.is_none() {
        return Err(invalid("neither sub nor sid"));
    }
    let user = match sub.filter(|_| p.sub_is_user) {
        Some(sub) => {
            let name = vigil_engine::valid_user_name(sub)
                .filter(|n| *n == sub)
                .ok_or_else(|| invalid("sub is not a user name of 1 to 256 visible characters"))?;
            Some(UserId(
                UserKey::for_name(&app.config.hash_key, name).as_u64(),
            ))
        }
        None => None,
    };
    let idp_session = match sid {
        Some(sid) => Some(
            IdpSessionKey::for_sid(&app.config.hash_key, &p.issuer, sid)
                .map(|k| IdpSessionId(k.0))
                .ok_or_else(|| invalid("sid is not 1 to 256 visible ASCII characters"))?,
        ),
        None => None,
    };
    let receipt = LogoutReceipt {
        provider: &p.name,
        issuer: &p.issuer,
        jti,
        keep_until: iat.saturating_add(p.max_age).saturating_add(p.clock_skew),
    };
    match app
        .store
        .take_logout(&receipt, LogoutOf { user, idp_session }, now)
        .await
    {
        Ok(LogoutTaken::Taken { head, by_sid }) => {
            app.head.send_if_modified(|h| {
                let newer = head > *h;
                if newer {
                    *h = head;
                }
                newer
            });
            tracing::info!(provider = %p.name, by_sid, user = user.map(|u| u.to_string()).as_deref().unwrap_or("-"), head, "logout token taken");
            Ok("accepted")
        }
        Ok(LogoutTaken::Replayed) => Err(invalid("jti was taken before: a replay")),
        Err(e) => {
            tracing::warn!(error = %e, "store failed; logout token not taken");
            Err(Refused::Unavailable("the store failed; try again"))
        }
    }
}
