//! A pushed SET's validation, in the order `docs/signals.md` gives, each
//! failure with its RFC 8935 error code.
//!
//! No JWT library decides: the signature is checked with `ring`
//! ([`Key::verifies`]; `jsonwebtoken` only checks a JWK's components when
//! the set is read), and the header and claims are read here, so that `typ`,
//! `alg` (`none` included, which a JWT crate may not even represent), `kid`
//! and the SET claims are checked in the order RFC 8935 and SSF expect and
//! answered with their own codes, and so that nothing is accepted by a
//! default of a JWT validation (which expects `exp`, which SETs
//! do not carry).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::config::{Alg, Transmitter};
use super::keys::{Key, KeyRefusal};

/// An RFC 8935 error: the `err` code and a `description`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// `invalid_request`, `invalid_key`, `invalid_issuer`,
    /// `invalid_audience`, `authentication_failed` or `access_denied`.
    pub err: &'static str,
    /// What was wrong, for the transmitter's operator.
    pub description: String,
}

fn reject(err: &'static str, description: impl Into<String>) -> Rejection {
    Rejection {
        err,
        description: description.into(),
    }
}

/// Longest `jti` kept.
const MAX_JTI: usize = 256;

/// A SET's header, read but not verified.
#[derive(Debug)]
pub struct Parsed<'a> {
    /// Its algorithm, on the allow-list.
    pub alg: Alg,
    /// Its key id.
    pub kid: String,
    signing_input: &'a str,
    signature: &'a str,
    payload: &'a str,
}

fn decode_json(part: &str, what: &str) -> Result<Map<String, Value>, Rejection> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| reject("invalid_request", format!("the {what} is not base64url")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(reject(
            "invalid_request",
            format!("the {what} is not a JSON object"),
        )),
    }
}

/// Reads the header of `set` (a JWS in compact serialization) and checks,
/// in order: `typ`, the algorithm against `t`'s allow-list, a `kid`.
pub fn parse<'a>(set: &'a str, t: &Transmitter) -> Result<Parsed<'a>, Rejection> {
    let mut parts = set.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(reject(
            "invalid_request",
            "not a JWS in compact serialization (encrypted SETs are not accepted)",
        ));
    };
    let h = decode_json(header, "JOSE header")?;
    let typ = h.get("typ").and_then(Value::as_str).unwrap_or("");
    let typ = typ.strip_prefix("application/").unwrap_or(typ);
    if !typ.eq_ignore_ascii_case("secevent+jwt") {
        return Err(reject(
            "invalid_request",
            "the typ header must be secevent+jwt (RFC 8417)",
        ));
    }
    if h.contains_key("crit") {
        return Err(reject(
            "invalid_request",
            "no critical header extension is understood",
        ));
    }
    let alg_name = h.get("alg").and_then(Value::as_str).unwrap_or("");
    if alg_name.eq_ignore_ascii_case("none") || signature.is_empty() {
        return Err(reject("authentication_failed", "unsigned SETs are refused"));
    }
    let alg = Alg::of(alg_name)
        .filter(|a| t.algorithms.contains(a))
        .ok_or_else(|| {
            let allowed: Vec<&str> = t.algorithms.iter().map(|a| a.name()).collect();
            reject(
                "invalid_key",
                format!(
                    "alg {alg_name:?} is not accepted from this transmitter (accepted: {})",
                    allowed.join(", ")
                ),
            )
        })?;
    let kid = h
        .get("kid")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty() && k.len() <= 256)
        .ok_or_else(|| reject("invalid_key", "the header names no kid"))?;
    Ok(Parsed {
        alg,
        kid: kid.to_owned(),
        signing_input: &set[..header.len() + 1 + payload.len()],
        signature,
        payload,
    })
}

/// A validated SET's claims.
#[derive(Debug, Clone)]
pub struct Claims {
    /// `jti`.
    pub jti: String,
    /// `iat`.
    pub iat: u64,
    /// The one event's type URI.
    pub event: String,
    /// Its payload.
    pub payload: Map<String, Value>,
    /// `sub_id`, if any.
    pub sub_id: Option<Map<String, Value>>,
}

/// Checks `key` fits, the signature, then the claims in order: `iss`,
/// `aud`, `iat` (against `now`), `jti`, exactly one event. `sub_id` is
/// checked by the caller, for the events it acts on.
pub fn verify(p: &Parsed<'_>, key: &Key, t: &Transmitter, now: u64) -> Result<Claims, Rejection> {
    key.check(p.alg, &p.kid, p.signing_input.as_bytes(), p.signature)
        .map_err(|why| match why {
            KeyRefusal::Unfit(what) => reject("invalid_key", what),
            KeyRefusal::BadSignature => {
                reject("authentication_failed", "the signature does not verify")
            }
        })?;
    let c = decode_json(p.payload, "claims set")?;
    if c.get("iss").and_then(Value::as_str) != Some(t.issuer.as_str()) {
        return Err(reject(
            "invalid_issuer",
            "iss is not this stream's transmitter",
        ));
    }
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => *a == t.audience,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(&t.audience)),
        _ => false,
    };
    if !aud_ok {
        return Err(reject(
            "invalid_audience",
            "aud does not name this receiver",
        ));
    }
    let iat = c
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or_else(|| reject("invalid_request", "iat is missing or not a whole number"))?;
    if iat > now.saturating_add(t.clock_skew) {
        return Err(reject("invalid_request", "iat is in the future"));
    }
    if iat.saturating_add(t.max_age) < now {
        return Err(reject(
            "invalid_request",
            format!("iat is older than {} seconds", t.max_age),
        ));
    }
    let jti = c
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty() && j.len() <= MAX_JTI)
        .ok_or_else(|| {
            reject(
                "invalid_request",
                format!("jti is missing or longer than {MAX_JTI} characters"),
            )
        })?;
    let events = c
        .get("events")
        .and_then(Value::as_object)
        .ok_or_else(|| reject("invalid_request", "events is missing"))?;
    let mut it = events.iter();
    let (Some((event, payload)), None) = (it.next(), it.next()) else {
        return Err(reject(
            "invalid_request",
            "a SET must carry exactly one event",
        ));
    };
    let payload = payload
        .as_object()
        .ok_or_else(|| reject("invalid_request", "the event's payload is not an object"))?;
    if event.len() > 256 {
        return Err(reject("invalid_request", "the event type is too long"));
    }
    let sub_id = match c.get("sub_id") {
        None => None,
        Some(Value::Object(s)) => Some(s.clone()),
        Some(_) => return Err(reject("invalid_request", "sub_id is not an object")),
    };
    Ok(Claims {
        jti: jti.to_owned(),
        iat,
        event: event.clone(),
        payload: payload.clone(),
        sub_id,
    })
}
