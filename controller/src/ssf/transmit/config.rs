//! The transmitter's configuration: `[ssf_transmitter]` and its
//! `[[ssf_transmitter.receivers]]` (`docs/signals.md`, Vigil as a
//! transmitter). Every problem is reported with its key, all at once.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{UserNames, token_hash};

/// `[ssf_transmitter]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTx {
    base_url: Option<String>,
    default_subjects: Option<String>,
    max_queue: Option<u64>,
    max_streams_per_receiver: Option<u64>,
    retry_min_ms: Option<u64>,
    retry_max_seconds: Option<u64>,
    long_poll_seconds: Option<u64>,
    redeliver_seconds: Option<u64>,
    echo_window_seconds: Option<u64>,
    oauth: Option<RawOAuth>,
    #[serde(default)]
    receivers: Vec<RawReceiver>,
}

/// `[ssf_transmitter.oauth]`: the authorization server whose access
/// tokens (client credentials) authenticate receivers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOAuth {
    issuer: String,
    jwks_uri: String,
    audience: String,
}

/// The authorization server whose access tokens authenticate receivers.
#[derive(Debug, Clone)]
pub struct OAuth {
    /// Its `iss`.
    pub issuer: String,
    /// Where its keys are.
    pub jwks_uri: String,
    /// The `aud` its tokens for this controller carry.
    pub audience: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReceiver {
    name: String,
    token_file: Option<PathBuf>,
    token_sha256: Option<String>,
    client_id: Option<String>,
    audience: Option<String>,
    subject_format: Option<String>,
    subject_issuer: Option<String>,
    #[serde(default)]
    push_endpoints: Vec<String>,
}

/// How a user is named in the SETs a receiver gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserSubject {
    /// `{"format":"opaque","id":KEY}`: the user's keyed hash, 16 hex
    /// digits, as in the admin API and the logs (the default; the only
    /// one without `user_names = "clear"`).
    OpaqueKey,
    /// `{"format":"opaque","id":NAME}`: the user name as the app names it
    /// to Vigil (needs `user_names = "clear"`).
    OpaqueName,
    /// `{"format":"email","email":NAME}`, for users whose name is an
    /// address (needs `user_names = "clear"`).
    Email,
    /// `{"format":"iss_sub","iss":ISSUER,"sub":NAME}` (needs
    /// `user_names = "clear"` and `subject_issuer`).
    IssSub(String),
}

impl UserSubject {
    /// Whether the subject needs the user's name.
    pub fn needs_name(&self) -> bool {
        !matches!(self, UserSubject::OpaqueKey)
    }
}

/// A receiver allowed to manage streams.
#[derive(Clone)]
pub struct Receiver {
    /// Its name: the owner of its streams, in logs and metrics.
    pub name: String,
    /// SHA-256 of its bearer token, if it has one.
    pub token_sha256: Option<[u8; 32]>,
    /// Its OAuth client id, when it authenticates with access tokens of
    /// `[ssf_transmitter.oauth]`.
    pub client_id: Option<String>,
    /// The `aud` of its streams' SETs.
    pub audience: String,
    /// How users are named to it.
    pub subject: UserSubject,
    /// Where its push endpoints may be: the same scheme, host and port,
    /// and a path under this one (by whole segments). The controller posts
    /// nowhere else on its behalf. Empty: push is refused.
    pub push_endpoints: Vec<url::Url>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("name", &self.name)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// The transmitter's validated config.
#[derive(Debug, Clone)]
pub struct TxConfig {
    /// Where receivers reach the controller (the endpoints of the
    /// metadata); the signing issuer when not given.
    pub base_url: Option<String>,
    /// Whether a new stream carries every subject's events (`"ALL"`, the
    /// default) or only those of subjects added (`"NONE"`).
    pub all_subjects: bool,
    /// SETs held per stream; the oldest is dropped (and counted) beyond.
    pub max_queue: u64,
    /// Streams one receiver may hold.
    pub max_streams: u64,
    /// First push retry after this many milliseconds, doubling.
    pub retry_min_ms: u64,
    /// Longest wait between two push retries, in seconds.
    pub retry_max_seconds: u64,
    /// Longest a poll without `returnImmediately` is held, in seconds.
    pub long_poll_seconds: u64,
    /// A SET handed out by a poll and not acknowledged is handed out
    /// again after this many seconds.
    pub redeliver_seconds: u64,
    /// A user's `session-revoked` is sent to a stream at most once in
    /// this many seconds (0: every time), so that two systems that revoke
    /// on each other's signal stop after one round.
    pub echo_window: u64,
    /// The authorization server, if receivers may use access tokens.
    pub oauth: Option<OAuth>,
    /// The receivers.
    pub receivers: Vec<Receiver>,
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

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn http_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some())
}

/// Validates `[ssf_transmitter]`, resolving files against `base`;
/// problems are added to `problems`, each with its key.
pub fn load(
    raw: RawTx,
    base: &Path,
    user_names: UserNames,
    problems: &mut Vec<String>,
) -> Option<TxConfig> {
    let before = problems.len();
    let at = "ssf_transmitter";
    if let Some(url) = &raw.base_url
        && !http_url(url)
    {
        problems.push(format!("{at}.base_url: {url:?}: expected https://…"));
    }
    let all_subjects = match raw.default_subjects.as_deref() {
        None | Some("ALL") => true,
        Some("NONE") => false,
        Some(other) => {
            problems.push(format!(
                "{at}.default_subjects: {other:?}: expected \"ALL\" or \"NONE\""
            ));
            true
        }
    };
    let max_queue = ranged(
        problems,
        &format!("{at}.max_queue"),
        raw.max_queue,
        10_000,
        1..=1_000_000,
    );
    let max_streams = ranged(
        problems,
        &format!("{at}.max_streams_per_receiver"),
        raw.max_streams_per_receiver,
        4,
        1..=100,
    );
    let retry_min_ms = ranged(
        problems,
        &format!("{at}.retry_min_ms"),
        raw.retry_min_ms,
        1_000,
        10..=600_000,
    );
    let retry_max_seconds = ranged(
        problems,
        &format!("{at}.retry_max_seconds"),
        raw.retry_max_seconds,
        3_600,
        1..=86_400,
    );
    let long_poll_seconds = ranged(
        problems,
        &format!("{at}.long_poll_seconds"),
        raw.long_poll_seconds,
        30,
        1..=300,
    );
    let redeliver_seconds = ranged(
        problems,
        &format!("{at}.redeliver_seconds"),
        raw.redeliver_seconds,
        60,
        1..=86_400,
    );
    let oauth = raw.oauth.as_ref().map(|o| {
        let fetchable = url::Url::parse(&o.jwks_uri).is_ok_and(|u| match u.scheme() {
            "https" => u.host().is_some(),
            "http" => match u.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            },
            _ => false,
        });
        if !fetchable {
            problems.push(format!(
                "{at}.oauth.jwks_uri: {:?}: expected https://… (http:// only on loopback)",
                o.jwks_uri
            ));
        }
        for (k, v) in [("issuer", &o.issuer), ("audience", &o.audience)] {
            if v.is_empty() || v.len() > 1024 {
                problems.push(format!("{at}.oauth.{k}: 1 to 1024 characters"));
            }
        }
        OAuth {
            issuer: o.issuer.clone(),
            jwks_uri: o.jwks_uri.clone(),
            audience: o.audience.clone(),
        }
    });
    let echo_window = ranged(
        problems,
        &format!("{at}.echo_window_seconds"),
        raw.echo_window_seconds,
        60,
        0..=3_600,
    );
    let mut receivers = Vec::new();
    for (i, r) in raw.receivers.iter().enumerate() {
        let at = format!("{at}.receivers[{i}]");
        let start = problems.len();
        if !valid_name(&r.name) {
            problems.push(format!(
                "{at}.name: {:?}: 1 to 64 of a-z A-Z 0-9 - _",
                r.name
            ));
        }
        if raw.receivers[..i].iter().any(|o| o.name == r.name) {
            problems.push(format!("{at}.name: {:?} appears twice", r.name));
        }
        let token = match (&r.token_file, &r.token_sha256) {
            (Some(file), None) => {
                let path = if file.is_absolute() {
                    file.clone()
                } else {
                    base.join(file)
                };
                match std::fs::read_to_string(&path) {
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
                }
            }
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
            (None, None) if r.client_id.is_some() => None,
            _ => {
                problems.push(format!(
                    "{at}: give one of token_file and token_sha256, or client_id (with [ssf_transmitter.oauth])"
                ));
                None
            }
        };
        if let Some(c) = &r.client_id {
            if raw.oauth.is_none() {
                problems.push(format!(
                    "{at}.client_id: needs [ssf_transmitter.oauth], the server whose tokens carry it"
                ));
            }
            if c.is_empty() || c.len() > 256 {
                problems.push(format!("{at}.client_id: 1 to 256 characters"));
            }
            if raw.receivers[..i]
                .iter()
                .any(|o| o.client_id.as_deref() == Some(c))
            {
                problems.push(format!("{at}.client_id: {c:?} is another receiver's too"));
            }
        }
        if let Some(t) = token
            && receivers
                .iter()
                .any(|o: &Receiver| o.token_sha256 == Some(t))
        {
            problems.push(format!("{at}: its token is another receiver's too"));
        }
        let audience = r.audience.clone().unwrap_or_else(|| r.name.clone());
        if audience.is_empty() || audience.len() > 1024 {
            problems.push(format!("{at}.audience: 1 to 1024 characters"));
        }
        let subject = match r.subject_format.as_deref() {
            None | Some("opaque_key") => UserSubject::OpaqueKey,
            Some("opaque_name") => UserSubject::OpaqueName,
            Some("email") => UserSubject::Email,
            Some("iss_sub") => match &r.subject_issuer {
                Some(iss) if !iss.is_empty() && iss.len() <= 1024 => {
                    UserSubject::IssSub(iss.clone())
                }
                _ => {
                    problems.push(format!(
                        "{at}.subject_issuer: the iss of iss_sub subjects (1 to 1024 characters) is required with subject_format = \"iss_sub\""
                    ));
                    UserSubject::OpaqueKey
                }
            },
            Some(other) => {
                problems.push(format!(
                    "{at}.subject_format: {other:?}: expected \"opaque_key\", \"opaque_name\", \"email\" or \"iss_sub\""
                ));
                UserSubject::OpaqueKey
            }
        };
        if subject.needs_name() && user_names != UserNames::Clear {
            problems.push(format!(
                "{at}.subject_format: user names are known only with user_names = \"clear\"; \
                 without it only \"opaque_key\" (the user's keyed hash) can be sent"
            ));
        }
        let mut push_endpoints = Vec::new();
        for (j, p) in r.push_endpoints.iter().enumerate() {
            match url::Url::parse(p) {
                Ok(u)
                    if matches!(u.scheme(), "https" | "http")
                        && u.host().is_some()
                        && u.username().is_empty()
                        && u.password().is_none()
                        && u.query().is_none()
                        && u.fragment().is_none() =>
                {
                    push_endpoints.push(u);
                }
                _ => problems.push(format!(
                    "{at}.push_endpoints[{j}]: {p:?}: expected an https:// URL (scheme, host, port and a path the endpoints are under; no query)"
                )),
            }
        }
        if problems.len() == start {
            receivers.push(Receiver {
                name: r.name.clone(),
                token_sha256: token,
                client_id: r.client_id.clone(),
                audience,
                subject,
                push_endpoints,
            });
        }
    }
    (problems.len() == before).then_some(TxConfig {
        base_url: raw.base_url.map(|u| u.trim_end_matches('/').to_owned()),
        all_subjects,
        max_queue,
        max_streams,
        retry_min_ms,
        retry_max_seconds,
        long_poll_seconds,
        redeliver_seconds,
        echo_window,
        oauth,
        receivers,
    })
}
