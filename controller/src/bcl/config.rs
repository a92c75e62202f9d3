//! `[[backchannel_logout.providers]]` in the controller's file
//! (`docs/signals.md`, OpenID Connect back-channel logout): each OpenID
//! provider whose logout tokens the controller takes. Every problem is
//! reported with its key, all at once, like the rest of the file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ssf::config::{Alg, KeySource, fetchable};
use crate::ssf::keys::parse_jwks;

/// `[backchannel_logout]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawBcl {
    #[serde(default)]
    providers: Vec<RawProvider>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: String,
    issuer: String,
    client_id: String,
    jwks_uri: Option<String>,
    jwks_file: Option<PathBuf>,
    algorithms: Option<Vec<String>>,
    max_age_seconds: Option<u64>,
    clock_skew_seconds: Option<u64>,
    #[serde(default = "yes")]
    sub_is_user: bool,
    per_minute: Option<u32>,
    jwks_cache_seconds: Option<u64>,
    jwks_refetch_seconds: Option<u64>,
}

fn yes() -> bool {
    true
}

/// A configured OpenID provider.
#[derive(Debug, Clone)]
pub struct Provider {
    /// Its name: the endpoint's last segment, in logs and metrics.
    pub name: String,
    /// Its issuer: a logout token's `iss`, exactly.
    pub issuer: String,
    /// Vigil's client id at it: a logout token's `aud` must contain it.
    pub client_id: String,
    /// Where its keys come from.
    pub keys: KeySource,
    /// Algorithms accepted.
    pub algorithms: Vec<Alg>,
    /// Oldest `iat` accepted, in seconds before now.
    pub max_age: u64,
    /// How far in the future an `iat` may be (and how far past an `exp`).
    pub clock_skew: u64,
    /// Whether `sub` is the user's name as the app names it to Vigil (the
    /// step-up's `user_claim = "sub"`); when false, only `sid` is used.
    pub sub_is_user: bool,
    /// Logout tokens taken per minute (a token bucket of this size).
    pub per_minute: u32,
    /// Keys used this long before a refetch.
    pub jwks_cache: std::time::Duration,
    /// Least time between refetches for an unknown `kid`.
    pub jwks_refetch: std::time::Duration,
}

fn ranged(
    problems: &mut Vec<String>,
    key: &str,
    value: Option<u64>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> u64 {
    let v = value.unwrap_or(default);
    if !range.contains(&v) {
        problems.push(format!(
            "{key}: {v} is out of range; expected {} to {}",
            range.start(),
            range.end()
        ));
    }
    v
}

/// Validates `[backchannel_logout]`, resolving files against `base`;
/// problems are added to `problems`, each with its key.
pub fn load(raw: RawBcl, base: &Path, problems: &mut Vec<String>) -> Vec<Provider> {
    let mut out = Vec::new();
    for (i, p) in raw.providers.iter().enumerate() {
        let at = format!("backchannel_logout.providers[{i}]");
        let before = problems.len();
        let name_ok = !p.name.is_empty()
            && p.name.len() <= 64
            && p.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            problems.push(format!(
                "{at}.name: {:?}: 1 to 64 of a-z A-Z 0-9 - _",
                p.name
            ));
        }
        if raw.providers[..i].iter().any(|o| o.name == p.name) {
            problems.push(format!("{at}.name: {:?} appears twice", p.name));
        }
        if p.issuer.is_empty() || p.issuer.len() > 1024 {
            problems.push(format!("{at}.issuer: 1 to 1024 characters"));
        }
        if raw.providers[..i].iter().any(|o| o.issuer == p.issuer) {
            problems.push(format!(
                "{at}.issuer: {:?} is another provider's: jti are deduplicated by issuer",
                p.issuer
            ));
        }
        if p.client_id.is_empty() || p.client_id.len() > 1024 {
            problems.push(format!("{at}.client_id: 1 to 1024 characters"));
        }
        let keys = match (&p.jwks_uri, &p.jwks_file) {
            (Some(uri), None) => {
                if !fetchable(uri) {
                    problems.push(format!(
                        "{at}.jwks_uri: {uri:?}: expected https://… (http:// only on loopback)"
                    ));
                }
                Some(KeySource::Uri(uri.clone()))
            }
            (None, Some(file)) => {
                let path = if file.is_absolute() {
                    file.clone()
                } else {
                    base.join(file)
                };
                match std::fs::read(path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| parse_jwks(&b))
                {
                    Ok(set) => Some(KeySource::Static(std::sync::Arc::new(set))),
                    Err(e) => {
                        problems.push(format!("{at}.jwks_file: {}: {e}", file.display()));
                        None
                    }
                }
            }
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
        if p.algorithms.as_ref().is_some_and(Vec::is_empty) {
            problems.push(format!("{at}.algorithms: at least one"));
        }
        let max_age = ranged(
            problems,
            &format!("{at}.max_age_seconds"),
            p.max_age_seconds,
            300,
            10..=86_400,
        );
        let clock_skew = ranged(
            problems,
            &format!("{at}.clock_skew_seconds"),
            p.clock_skew_seconds,
            60,
            0..=600,
        );
        let per_minute = ranged(
            problems,
            &format!("{at}.per_minute"),
            p.per_minute.map(u64::from),
            600,
            1..=100_000,
        );
        let jwks_cache = ranged(
            problems,
            &format!("{at}.jwks_cache_seconds"),
            p.jwks_cache_seconds,
            3600,
            60..=86_400,
        );
        let jwks_refetch = ranged(
            problems,
            &format!("{at}.jwks_refetch_seconds"),
            p.jwks_refetch_seconds,
            60,
            1..=3600,
        );
        if let (Some(keys), true) = (keys, problems.len() == before) {
            out.push(Provider {
                name: p.name.clone(),
                issuer: p.issuer.clone(),
                client_id: p.client_id.clone(),
                keys,
                algorithms,
                max_age,
                clock_skew,
                sub_is_user: p.sub_is_user,
                per_minute: u32::try_from(per_minute).unwrap_or(600),
                jwks_cache: std::time::Duration::from_secs(jwks_cache),
                jwks_refetch: std::time::Duration::from_secs(jwks_refetch),
            });
        }
    }
    out
}
