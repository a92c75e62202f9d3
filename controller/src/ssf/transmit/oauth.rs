//! Receivers authenticated by OAuth 2.0 access tokens (client
//! credentials) from a configured authorization server
//! (`[ssf_transmitter.oauth]`): a JWT (RFC 9068 shape) signed with one of
//! the server's keys — fetched from its `jwks_uri` and cached as the
//! Shared Signals receiver caches a transmitter's ([`crate::ssf::keys`]:
//! one rate-limited refetch on an unknown `kid`) —, checked in order:
//! `typ` (`at+jwt` or `JWT`), `alg` (RS256 with 2,048 bits or more, or
//! ES256), `kid`, the signature, `iss`, `aud`, `exp` and `nbf`/`iat` with a
//! small skew, then `client_id` (else `sub`) naming a configured receiver.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::ssf::config::Alg;
use crate::ssf::keys::{KeyKind, Keys, MIN_RSA_BITS};

/// Longest access token read.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Seconds of clock skew allowed on `exp`, `nbf` and `iat`.
const SKEW: u64 = 60;

fn decode(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// Why a token was refused (for the log; the caller only sees `401`).
pub type Refused = &'static str;

/// The client a valid access token names (`client_id`, else `sub`).
pub async fn client_of(
    token: &str,
    issuer: &str,
    audience: &str,
    keys: &Keys,
    now: u64,
) -> Result<String, Refused> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err("too long");
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a compact JWS");
    };
    let header = decode(h).ok_or("bad header")?;
    let typ = header.get("typ").and_then(Value::as_str).unwrap_or("JWT");
    let typ = typ.strip_prefix("application/").unwrap_or(typ);
    if !(typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("jwt")) {
        return Err("typ is not at+jwt");
    }
    if header.contains_key("crit") {
        return Err("crit");
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Alg::of)
        .ok_or("alg not accepted")?;
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty() && k.len() <= 256)
        .ok_or("no kid")?;
    let key = keys.key(kid).await.map_err(|_| "unknown kid")?;
    if !key.kind.fits(alg) || key.alg.as_deref().is_some_and(|a| a != alg.name()) {
        return Err("key does not fit alg");
    }
    if let KeyKind::Rsa(bits) = key.kind
        && bits < MIN_RSA_BITS
    {
        return Err("weak key");
    }
    let algorithm = match alg {
        Alg::Rs256 => jsonwebtoken::Algorithm::RS256,
        Alg::Es256 => jsonwebtoken::Algorithm::ES256,
    };
    let signing_input = &token[..h.len() + 1 + p.len()];
    if !matches!(
        jsonwebtoken::crypto::verify(sig, signing_input.as_bytes(), &key.decoding, algorithm),
        Ok(true)
    ) {
        return Err("signature");
    }
    let claims = decode(p).ok_or("bad claims")?;
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err("iss");
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == audience,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    };
    if !aud_ok {
        return Err("aud");
    }
    let exp = claims.get("exp").and_then(Value::as_u64).ok_or("no exp")?;
    if exp.saturating_add(SKEW) <= now {
        return Err("expired");
    }
    for k in ["nbf", "iat"] {
        if claims
            .get(k)
            .and_then(Value::as_u64)
            .is_some_and(|t| t > now.saturating_add(SKEW))
        {
            return Err("not yet valid");
        }
    }
    claims
        .get("client_id")
        .or_else(|| claims.get("sub"))
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty() && c.len() <= 256)
        .map(str::to_owned)
        .ok_or("no client_id")
}
