//! The receiver's configuration: `[[ssf.transmitters]]` in the
//! controller's file (`docs/signals.md`, Connecting a transmitter). Every
//! problem is reported with its key, all at once, like the rest of the
//! file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::keys::{KeySet, parse_jwks};
pub use super::limit::Rate;
use crate::config::token_hash;

/// `[ssf]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSsf {
    #[serde(default)]
    transmitters: Vec<RawTransmitter>,
    source_rate_per_second: Option<f64>,
    source_burst: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransmitter {
    name: String,
    issuer: String,
    audience: String,
    jwks_uri: Option<String>,
    jwks_file: Option<PathBuf>,
    metadata_url: Option<String>,
    #[serde(default)]
    discovery: bool,
    algorithms: Option<Vec<String>>,
    max_age_seconds: Option<u64>,
    clock_skew_seconds: Option<u64>,
    push_token_file: Option<PathBuf>,
    push_token_sha256: Option<String>,
    subjects: Option<Vec<String>>,
    subject_issuers: Option<Vec<String>>,
    #[serde(default)]
    lowercase_email: bool,
    risk_points: Option<u8>,
    risk_ttl_seconds: Option<u64>,
    jwks_cache_seconds: Option<u64>,
    jwks_refetch_seconds: Option<u64>,
    #[serde(default)]
    actions: BTreeMap<String, String>,
    rate_per_second: Option<f64>,
    burst: Option<u64>,
    delivery: Option<String>,
    poll_url: Option<String>,
    poll_token_file: Option<PathBuf>,
    poll_max_events: Option<u64>,
    poll_interval_seconds: Option<u64>,
}

/// A signing algorithm the receiver accepts, when the transmitter's
/// `algorithms` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256, keys of 2,048 bits or more: the
    /// default.
    Rs256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
}

impl Alg {
    /// Its JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }

    /// By JOSE name.
    pub fn of(name: &str) -> Option<Alg> {
        match name {
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            _ => None,
        }
    }
}

/// A subject format that names a user (`subjects`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectFormat {
    /// `{"format":"email","email":…}`: the address is the user name.
    Email,
    /// `{"format":"iss_sub","iss":…,"sub":…}`: `sub` is the user name,
    /// when `iss` is one of `subject_issuers`.
    IssSub,
    /// `{"format":"opaque","id":…}`: `id` is the user name.
    Opaque,
}

/// What an event does (`actions`, by the event's short name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Every session of the user ends everywhere.
    RevokeUser,
    /// Universal logout: what `RevokeUser` does, and each app of
    /// `[logout]` called as the admin API's `users/logout` calls it.
    Logout,
    /// The user's entity risk is raised (`risk_points` for
    /// `risk_ttl_seconds`). For `risk-level-change` and
    /// `device-compliance-change`, the payload decides: raised for a
    /// `HIGH` level or a `not-compliant` device, cleared for a `LOW`
    /// level, nothing otherwise.
    RaiseRisk,
    /// The user's entity risk is cleared.
    ClearRisk,
    /// Every session of the user must pass a step-up (a fresh sign-in at
    /// the identity provider) at its next request. For
    /// `assurance-level-change`, only when the level went down
    /// (`ssf::stepup`).
    StepUp,
    /// Accepted and counted as ignored.
    Ignore,
}

impl Action {
    fn of(name: &str) -> Option<Action> {
        match name {
            "revoke_user" => Some(Action::RevokeUser),
            "logout" => Some(Action::Logout),
            "raise_risk" => Some(Action::RaiseRisk),
            "clear_risk" => Some(Action::ClearRisk),
            "step_up" => Some(Action::StepUp),
            "ignore" => Some(Action::Ignore),
            _ => None,
        }
    }
}

/// CAEP event types (`https://schemas.openid.net/secevent/caep/event-type/NAME`).
pub const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
/// RISC event types.
pub const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";
/// SSF's own event types (verification, stream updates).
pub const SSF: &str = "https://schemas.openid.net/secevent/ssf/event-type/";

/// The events the receiver knows by short name, with their default
/// action; any other is accepted and ignored.
pub const DEFAULT_ACTIONS: &[(&str, &str, Action)] = &[
    (CAEP, "session-revoked", Action::RevokeUser),
    (RISC, "account-disabled", Action::RevokeUser),
    (RISC, "credential-compromise", Action::RevokeUser),
    (RISC, "sessions-revoked", Action::RevokeUser),
    (RISC, "account-purged", Action::RevokeUser),
    (CAEP, "risk-level-change", Action::RaiseRisk),
    (CAEP, "device-compliance-change", Action::RaiseRisk),
    (CAEP, "credential-change", Action::StepUp),
    (CAEP, "assurance-level-change", Action::StepUp),
    (CAEP, "token-claims-change", Action::StepUp),
    (CAEP, "session-established", Action::Ignore),
    (CAEP, "session-presented", Action::Ignore),
    (RISC, "account-enabled", Action::Ignore),
    (RISC, "account-credential-change-required", Action::Ignore),
    (RISC, "identifier-changed", Action::Ignore),
    (RISC, "identifier-recycled", Action::Ignore),
];

/// A configured transmitter.
#[derive(Clone)]
pub struct Transmitter {
    /// Its name: the push URL's last segment, in logs and metrics.
    pub name: String,
    /// Its `iss`.
    pub issuer: String,
    /// Ours: its SETs' `aud` must contain it.
    pub audience: String,
    /// Where its keys come from.
    pub keys: KeySource,
    /// Algorithms accepted.
    pub algorithms: Vec<Alg>,
    /// Oldest `iat` accepted, in seconds before now.
    pub max_age: u64,
    /// How far in the future an `iat` may be.
    pub clock_skew: u64,
    /// SHA-256 of the bearer token it pushes with; `None` for a polled
    /// transmitter, which cannot push.
    pub push_token_sha256: Option<[u8; 32]>,
    /// Its pushes' rate limit (`rate_per_second`, `burst`).
    pub rate: Rate,
    /// How it is polled (`delivery = "poll"`, RFC 8936); `None` for push.
    pub poll: Option<Poll>,
    /// Subject formats that name a user, in the order tried for a complex
    /// subject's `user`.
    pub subjects: Vec<SubjectFormat>,
    /// `iss` values of `iss_sub` subjects accepted.
    pub subject_issuers: Vec<String>,
    /// Email addresses are lower-cased before they become user names.
    pub lowercase_email: bool,
    /// Entity-risk points of a raised risk.
    pub risk_points: u8,
    /// How long a raised risk holds.
    pub risk_ttl: u64,
    /// How long fetched keys are used before they are fetched again.
    pub jwks_cache: std::time::Duration,
    /// The least time between two refetches for an unknown `kid`.
    pub jwks_refetch: std::time::Duration,
    /// Event type URI → action, for every known event.
    pub actions: BTreeMap<String, Action>,
}

impl std::fmt::Debug for Transmitter {
    // The token's hash stays out of logs too.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transmitter")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// How a transmitter is polled (RFC 8936).
#[derive(Clone)]
pub struct Poll {
    /// Its poll endpoint.
    pub url: String,
    /// The bearer the controller polls with (read from `poll_token_file`;
    /// held in memory only, never logged).
    pub token: String,
    /// `maxEvents` of each request.
    pub max_events: usize,
    /// How long to wait after a poll that returned nothing more.
    pub interval: std::time::Duration,
}

impl std::fmt::Debug for Poll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poll")
            .field("url", &self.url)
            .field("max_events", &self.max_events)
            .finish_non_exhaustive()
    }
}

/// The receiver's settings beside its transmitters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Inbound {
    /// Each source address's rate on the inbound signal endpoints
    /// (`ssf.source_rate_per_second`, `ssf.source_burst`).
    pub source_rate: Rate,
}

impl Default for Inbound {
    fn default() -> Self {
        Inbound {
            source_rate: Rate {
                per_second: 1000.0,
                burst: 2000.0,
            },
        }
    }
}

/// Where a transmitter's keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// Fetched from this URL, cached, refetched on an unknown `kid`.
    Uri(String),
    /// Read once from a file at start.
    Static(std::sync::Arc<KeySet>),
    /// From the `jwks_uri` of the transmitter's metadata (SSF discovery),
    /// read again at each fetch; its `issuer` must be the configured one.
    Discovered {
        /// The metadata's URL.
        metadata_url: String,
        /// The issuer it must name.
        issuer: String,
    },
}

/// Whether `uri` may be fetched from: HTTPS, or HTTP on loopback only.
pub(crate) fn fetchable(uri: &str) -> bool {
    let Ok(url) = url::Url::parse(uri) else {
        return false;
    };
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => match url.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(crate) fn ranged(
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

/// Validates `[ssf]`, resolving files against `base`; problems are added
/// to `problems`, each with its key.
pub fn load(raw: RawSsf, base: &Path, problems: &mut Vec<String>) -> (Vec<Transmitter>, Inbound) {
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_owned()
        } else {
            base.join(p)
        }
    };
    let source_rate = rate(
        problems,
        "ssf.source_rate_per_second",
        "ssf.source_burst",
        raw.source_rate_per_second,
        raw.source_burst,
        1000.0,
    );
    let mut out = Vec::new();
    for (i, t) in raw.transmitters.iter().enumerate() {
        let at = format!("ssf.transmitters[{i}]");
        let before = problems.len();
        if !valid_name(&t.name) {
            problems.push(format!(
                "{at}.name: {:?}: 1 to 64 of a-z A-Z 0-9 - _",
                t.name
            ));
        }
        if raw.transmitters[..i].iter().any(|o| o.name == t.name) {
            problems.push(format!("{at}.name: {:?} appears twice", t.name));
        }
        if t.issuer.is_empty() || t.issuer.len() > 1024 {
            problems.push(format!("{at}.issuer: 1 to 1024 characters"));
        }
        if raw.transmitters[..i].iter().any(|o| o.issuer == t.issuer) {
            problems.push(format!(
                "{at}.issuer: {:?} is another transmitter's: jti are deduplicated by issuer",
                t.issuer
            ));
        }
        if t.audience.is_empty() || t.audience.len() > 1024 {
            problems.push(format!("{at}.audience: 1 to 1024 characters"));
        }
        let metadata_url = match (&t.metadata_url, t.discovery) {
            (Some(url), false) => Some(url.clone()),
            (None, true) => well_known(&t.issuer),
            (None, false) => None,
            (Some(_), true) => {
                problems.push(format!(
                    "{at}: give metadata_url or discovery = true, not both"
                ));
                None
            }
        };
        if let Some(url) = &metadata_url
            && !fetchable(url)
        {
            problems.push(format!(
                "{at}.metadata_url: {url:?}: expected https://… (http:// only on loopback); with discovery = true, the issuer gives it"
            ));
        }
        let keys = match (&t.jwks_uri, &t.jwks_file) {
            (None, None) if metadata_url.is_some() => Some(KeySource::Discovered {
                metadata_url: metadata_url.clone().unwrap_or_default(),
                issuer: t.issuer.clone(),
            }),
            (Some(uri), None) => {
                if !fetchable(uri) {
                    problems.push(format!(
                        "{at}.jwks_uri: {uri:?}: expected https://… (http:// only on loopback)"
                    ));
                }
                Some(KeySource::Uri(uri.clone()))
            }
            (None, Some(file)) => match std::fs::read(resolve(file)) {
                Ok(bytes) => match parse_jwks(&bytes) {
                    Ok(set) => Some(KeySource::Static(std::sync::Arc::new(set))),
                    Err(e) => {
                        problems.push(format!("{at}.jwks_file: {}: {e}", file.display()));
                        None
                    }
                },
                Err(e) => {
                    problems.push(format!("{at}.jwks_file: {}: {e}", file.display()));
                    None
                }
            },
            _ => {
                problems.push(format!(
                    "{at}: give exactly one of jwks_uri, jwks_file and metadata_url (or discovery = true)"
                ));
                None
            }
        };
        let mut algorithms = Vec::new();
        for a in t.algorithms.clone().unwrap_or_else(|| vec!["RS256".into()]) {
            match Alg::of(&a) {
                Some(alg) if !algorithms.contains(&alg) => algorithms.push(alg),
                Some(_) => {}
                None => problems.push(format!(
                    "{at}.algorithms: {a:?}: expected \"RS256\" or \"ES256\""
                )),
            }
        }
        if algorithms.is_empty() && t.algorithms.as_ref().is_some_and(Vec::is_empty) {
            problems.push(format!("{at}.algorithms: at least one"));
        }
        let max_age = ranged(
            problems,
            &format!("{at}.max_age_seconds"),
            t.max_age_seconds,
            86_400,
            60..=30 * 86_400,
        );
        let clock_skew = ranged(
            problems,
            &format!("{at}.clock_skew_seconds"),
            t.clock_skew_seconds,
            60,
            0..=600,
        );
        let polled = match t.delivery.as_deref() {
            None | Some("push") => false,
            Some("poll") => true,
            Some(other) => {
                problems.push(format!(
                    "{at}.delivery: {other:?}: expected \"push\" or \"poll\""
                ));
                false
            }
        };
        let token = match (&t.push_token_file, &t.push_token_sha256) {
            (None, None) if polled => Some(None),
            (Some(file), None) => match std::fs::read_to_string(resolve(file)) {
                Ok(tok) if tok.trim().len() >= 16 => Some(Some(token_hash(&tok))),
                Ok(_) => {
                    problems.push(format!(
                        "{at}.push_token_file: {}: a token of at least 16 characters",
                        file.display()
                    ));
                    None
                }
                Err(e) => {
                    problems.push(format!("{at}.push_token_file: {}: {e}", file.display()));
                    None
                }
            },
            (None, Some(hash)) => {
                match hex::decode(hash)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                {
                    Some(h) => Some(Some(h)),
                    None => {
                        problems.push(format!(
                            "{at}.push_token_sha256: expected 64 hex digits (vigil-controller hash-token)"
                        ));
                        None
                    }
                }
            }
            _ => {
                problems.push(format!(
                    "{at}: give exactly one of push_token_file and push_token_sha256{}",
                    if polled { ", or neither" } else { "" }
                ));
                None
            }
        };
        let poll = if polled {
            load_poll(t, &at, &resolve, problems)
        } else {
            for (set, key) in [
                (t.poll_url.is_some(), "poll_url"),
                (t.poll_token_file.is_some(), "poll_token_file"),
                (t.poll_max_events.is_some(), "poll_max_events"),
                (t.poll_interval_seconds.is_some(), "poll_interval_seconds"),
            ] {
                if set {
                    problems.push(format!("{at}.{key}: only with delivery = \"poll\""));
                }
            }
            None
        };
        let rate = rate(
            problems,
            &format!("{at}.rate_per_second"),
            &format!("{at}.burst"),
            t.rate_per_second,
            t.burst,
            1000.0,
        );
        let mut subjects = Vec::new();
        for s in t
            .subjects
            .clone()
            .unwrap_or_else(|| vec!["email".into(), "iss_sub".into()])
        {
            let f = match s.as_str() {
                "email" => SubjectFormat::Email,
                "iss_sub" => SubjectFormat::IssSub,
                "opaque" => SubjectFormat::Opaque,
                _ => {
                    problems.push(format!(
                        "{at}.subjects: {s:?}: expected \"email\", \"iss_sub\" or \"opaque\""
                    ));
                    continue;
                }
            };
            if !subjects.contains(&f) {
                subjects.push(f);
            }
        }
        if subjects.is_empty() {
            problems.push(format!("{at}.subjects: at least one"));
        }
        let risk_points = t.risk_points.unwrap_or(40);
        if !(1..=100).contains(&risk_points) {
            problems.push(format!(
                "{at}.risk_points: {risk_points} is out of range; expected 1 to 100"
            ));
        }
        let risk_ttl = ranged(
            problems,
            &format!("{at}.risk_ttl_seconds"),
            t.risk_ttl_seconds,
            86_400,
            60..=365 * 86_400,
        );
        let jwks_cache = ranged(
            problems,
            &format!("{at}.jwks_cache_seconds"),
            t.jwks_cache_seconds,
            3_600,
            60..=86_400,
        );
        let jwks_refetch = ranged(
            problems,
            &format!("{at}.jwks_refetch_seconds"),
            t.jwks_refetch_seconds,
            60,
            1..=3_600,
        );
        let mut actions: BTreeMap<String, Action> = DEFAULT_ACTIONS
            .iter()
            .map(|(prefix, name, action)| (format!("{prefix}{name}"), *action))
            .collect();
        for (event, action) in &t.actions {
            let Some((prefix, _, _)) = DEFAULT_ACTIONS.iter().find(|(_, n, _)| n == event) else {
                problems.push(format!(
                    "{at}.actions.{event}: not an event the receiver knows (docs/signals.md)"
                ));
                continue;
            };
            match Action::of(action) {
                Some(a) => {
                    actions.insert(format!("{prefix}{event}"), a);
                }
                None => problems.push(format!(
                    "{at}.actions.{event}: {action:?}: expected \"revoke_user\", \"step_up\", \"raise_risk\", \"clear_risk\" or \"ignore\""
                )),
            }
        }
        if let (Some(keys), Some(push_token_sha256), true) = (keys, token, problems.len() == before)
            && (poll.is_some() || !polled)
        {
            out.push(Transmitter {
                name: t.name.clone(),
                issuer: t.issuer.clone(),
                audience: t.audience.clone(),
                keys,
                algorithms,
                max_age,
                clock_skew,
                push_token_sha256,
                rate,
                poll,
                subjects,
                subject_issuers: t
                    .subject_issuers
                    .clone()
                    .unwrap_or_else(|| vec![t.issuer.clone()]),
                lowercase_email: t.lowercase_email,
                risk_points,
                risk_ttl,
                jwks_cache: std::time::Duration::from_secs(jwks_cache),
                jwks_refetch: std::time::Duration::from_secs(jwks_refetch),
                actions,
            });
        }
    }
    (out, Inbound { source_rate })
}

/// A rate's two keys: `per_second` (0.001 to 1,000,000, default
/// `default`) and `burst` (1 to 2,000,000, default twice the rate, at
/// least 1).
pub(crate) fn rate(
    problems: &mut Vec<String>,
    rate_key: &str,
    burst_key: &str,
    per_second: Option<f64>,
    burst: Option<u64>,
    default: f64,
) -> Rate {
    let per_second = per_second.unwrap_or(default);
    if !(0.001..=1_000_000.0).contains(&per_second) {
        problems.push(format!(
            "{rate_key}: {per_second} is out of range; expected 0.001 to 1000000"
        ));
    }
    // At most two million: exact in f64, and the cast saturates anyway.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let twice = ((per_second * 2.0).ceil() as u64).max(1);
    let burst = ranged(problems, burst_key, burst, twice, 1..=2_000_000);
    #[allow(clippy::cast_precision_loss)]
    Rate {
        per_second,
        burst: burst as f64,
    }
}

/// The SSF metadata URL of `issuer`: `/.well-known/ssf-configuration`
/// inserted between its host and its path (SSF 1.0, section 7.2).
pub fn well_known(issuer: &str) -> Option<String> {
    let mut url = url::Url::parse(issuer).ok()?;
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("/.well-known/ssf-configuration{path}"));
    url.set_query(None);
    Some(url.to_string())
}

/// Most SETs asked for in one poll.
pub const MAX_POLL_EVENTS: u64 = 1000;

fn load_poll(
    t: &RawTransmitter,
    at: &str,
    resolve: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Vec<String>,
) -> Option<Poll> {
    let before = problems.len();
    let url = match &t.poll_url {
        Some(url) if fetchable(url) => Some(url.clone()),
        Some(url) => {
            problems.push(format!(
                "{at}.poll_url: {url:?}: expected https://… (http:// only on loopback)"
            ));
            None
        }
        None => {
            problems.push(format!("{at}.poll_url: required with delivery = \"poll\""));
            None
        }
    };
    let token = match &t.poll_token_file {
        Some(file) => match std::fs::read_to_string(resolve(file)) {
            Ok(tok) if !tok.trim().is_empty() && tok.trim().len() <= 4096 => {
                Some(tok.trim().to_owned())
            }
            Ok(_) => {
                problems.push(format!(
                    "{at}.poll_token_file: {}: a token of 1 to 4096 characters",
                    file.display()
                ));
                None
            }
            Err(e) => {
                problems.push(format!("{at}.poll_token_file: {}: {e}", file.display()));
                None
            }
        },
        None => {
            problems.push(format!(
                "{at}.poll_token_file: required with delivery = \"poll\""
            ));
            None
        }
    };
    let max_events = ranged(
        problems,
        &format!("{at}.poll_max_events"),
        t.poll_max_events,
        100,
        1..=MAX_POLL_EVENTS,
    );
    let interval = ranged(
        problems,
        &format!("{at}.poll_interval_seconds"),
        t.poll_interval_seconds,
        5,
        1..=3600,
    );
    match (url, token, problems.len() == before) {
        (Some(url), Some(token), true) => Some(Poll {
            url,
            token,
            max_events: usize::try_from(max_events).unwrap_or(100),
            interval: std::time::Duration::from_secs(interval),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::fetchable;

    #[test]
    fn keys_are_fetched_over_https_or_from_loopback_only() {
        assert!(fetchable("https://idp.example/jwks"));
        assert!(fetchable("http://127.0.0.1:8080/jwks"));
        assert!(fetchable("http://localhost/jwks"));
        assert!(fetchable("http://[::1]:9/jwks"));
        assert!(!fetchable("http://idp.example/jwks"));
        assert!(!fetchable("http://127.0.0.1.evil.example/jwks"));
        assert!(!fetchable("http://localhost.evil.example:80/jwks"));
        assert!(!fetchable("ftp://127.0.0.1/jwks"));
    }

    #[test]
    fn the_metadata_url_goes_between_host_and_path() {
        use super::well_known;
        assert_eq!(
            well_known("https://idp.example/realms/test").as_deref(),
            Some("https://idp.example/.well-known/ssf-configuration/realms/test")
        );
        assert_eq!(
            well_known("https://idp.example").as_deref(),
            Some("https://idp.example/.well-known/ssf-configuration")
        );
    }
}
