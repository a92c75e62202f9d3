//! `[outbox]` and `[[webhooks]]` in the controller's file
//! (`docs/webhooks.md`): every problem reported with its key, all at once,
//! like the rest of the file.

use std::path::Path;

use serde::Deserialize;
use url::Url;

/// `[outbox]`: how every outbound call is delivered.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawOutbox {
    poll_ms: Option<u64>,
    timeout_ms: Option<u64>,
    max_attempts: Option<u32>,
    max_age_seconds: Option<u64>,
    backoff_base_ms: Option<u64>,
    backoff_max_ms: Option<u64>,
    max_queue: Option<u64>,
    max_dead_letters: Option<u64>,
    #[serde(default)]
    allow_http_loopback: bool,
}

/// `[[webhooks]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    name: String,
    url: String,
    secret_file: std::path::PathBuf,
    events: Vec<String>,
    detection_min_score: Option<u8>,
    detection_actions: Option<Vec<String>>,
    #[serde(default)]
    detection_enforced_only: bool,
    max_concurrency: Option<usize>,
}

/// How calls are delivered (`[outbox]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How often the queue is read for calls due (`poll_ms`, 10 to
    /// 60,000, default 500); a call enqueued by this replica wakes it at
    /// once.
    pub poll: std::time::Duration,
    /// The whole of one attempt, connection to the end of the answer's
    /// head (`timeout_ms`, 100 to 60,000, default 10,000).
    pub timeout: std::time::Duration,
    /// Attempts before a call is given up (`max_attempts`, 1 to 100,
    /// default 12).
    pub max_attempts: u32,
    /// Seconds after which a failing call is given up, whatever its
    /// attempts (`max_age_seconds`, 60 to 2,592,000, default 86,400).
    pub max_age: u64,
    /// The first retry's delay (`backoff_base_ms`, 10 to 3,600,000,
    /// default 1,000); doubled each attempt, up to `backoff_max_ms`
    /// (default 600,000), each delay drawn between half and all of it.
    pub backoff_base_ms: u64,
    /// The longest delay between two attempts.
    pub backoff_max_ms: u64,
    /// Calls pending per endpoint beyond which a new one is stored as a
    /// dead letter (`max_queue`, 1 to 1,000,000, default 10,000).
    pub max_queue: u64,
    /// Dead letters kept per endpoint, newest first (`max_dead_letters`,
    /// 1 to 1,000,000, default 10,000).
    pub max_dead_letters: u64,
    /// `http://` to a loopback address is allowed (`allow_http_loopback`,
    /// default false: `https://` only).
    pub allow_http_loopback: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            poll: std::time::Duration::from_millis(500),
            timeout: std::time::Duration::from_secs(10),
            max_attempts: 12,
            max_age: 86_400,
            backoff_base_ms: 1_000,
            backoff_max_ms: 600_000,
            max_queue: 10_000,
            max_dead_letters: 10_000,
            allow_http_loopback: false,
        }
    }
}

/// What a webhook is told of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A node's detection ([`Filter`] narrows which).
    Detection,
    /// A session or every session of a user revoked by the controller.
    Revocation,
    /// A Shared Signals SET acted on.
    Signal,
    /// A universal logout and its targets.
    Logout,
}

impl EventKind {
    /// Its name in config and bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Detection => "detection",
            EventKind::Revocation => "revocation",
            EventKind::Signal => "signal",
            EventKind::Logout => "logout",
        }
    }
}

/// Which detections a webhook is told of.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    /// The score at or above which (0 to 100, default 0).
    pub min_score: u8,
    /// The actions (none: any).
    pub actions: Vec<String>,
    /// Only those carried out (not a monitoring route's or a shadow
    /// rule's).
    pub enforced_only: bool,
}

/// A remediation webhook.
#[derive(Clone)]
pub struct Webhook {
    /// Its name (1 to 64 of a-z A-Z 0-9 - _).
    pub name: String,
    /// Where it is POSTed.
    pub url: Url,
    /// The HMAC-SHA256 key (the secret file's text, trimmed).
    pub secret: Vec<u8>,
    /// What it is told of.
    pub events: Vec<EventKind>,
    /// Which detections.
    pub filter: Filter,
    /// Calls to it in flight at once, per replica (1 to 64, default 4).
    pub max_concurrency: usize,
}

impl std::fmt::Debug for Webhook {
    // The secret is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("url", &self.url.as_str())
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

/// Whether `name` is 1 to 64 of a-z A-Z 0-9 - _.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `url` as an endpoint may be: `https://`, or `http://` to a loopback
/// address when `allow_http_loopback`; no credentials, no fragment.
pub fn endpoint_url(
    key: &str,
    url: &str,
    allow_http_loopback: bool,
    problems: &mut Vec<String>,
) -> Option<Url> {
    let Ok(parsed) = Url::parse(url) else {
        problems.push(format!("{key}: {url:?} is not a URL"));
        return None;
    };
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    let ok = match parsed.scheme() {
        "https" => parsed.host().is_some(),
        "http" if loopback && allow_http_loopback => true,
        "http" if loopback => {
            problems.push(format!(
                "{key}: {url:?}: http:// to loopback needs [outbox] allow_http_loopback = true"
            ));
            return None;
        }
        _ => false,
    };
    if !ok {
        problems.push(format!("{key}: {url:?}: expected https://"));
        return None;
    }
    if !parsed.username().is_empty() || parsed.password().is_some() || parsed.fragment().is_some() {
        problems.push(format!(
            "{key}: {url:?}: no credentials or fragment in the URL"
        ));
        return None;
    }
    Some(parsed)
}

/// Reads a secret file (`file` as the config names it, relative to
/// `base`): at least 32 characters once trimmed.
pub fn read_secret(
    key: &str,
    base: &Path,
    file: &Path,
    problems: &mut Vec<String>,
) -> Option<Vec<u8>> {
    let path = if file.is_absolute() {
        file.to_owned()
    } else {
        base.join(file)
    };
    match std::fs::read_to_string(path) {
        Ok(t) if t.trim().len() >= 32 => Some(t.trim().as_bytes().to_vec()),
        Ok(_) => {
            problems.push(format!(
                "{key}: {}: a secret of at least 32 characters",
                file.display()
            ));
            None
        }
        Err(e) => {
            problems.push(format!("{key}: {}: {e}", file.display()));
            None
        }
    }
}

/// `[outbox]`'s settings.
pub fn settings(raw: &RawOutbox, problems: &mut Vec<String>) -> Settings {
    let d = Settings::default();
    let mut range = |key: &str, v: Option<u64>, default: u64, min: u64, max: u64| {
        let v = v.unwrap_or(default);
        if !(min..=max).contains(&v) {
            problems.push(format!(
                "outbox.{key}: {v} is out of range; expected {min} to {max}"
            ));
        }
        v
    };
    let poll = range("poll_ms", raw.poll_ms, 500, 10, 60_000);
    let timeout = range("timeout_ms", raw.timeout_ms, 10_000, 100, 60_000);
    let max_attempts = range(
        "max_attempts",
        raw.max_attempts.map(u64::from),
        u64::from(d.max_attempts),
        1,
        100,
    );
    let max_age = range(
        "max_age_seconds",
        raw.max_age_seconds,
        d.max_age,
        60,
        30 * 86_400,
    );
    let base = range(
        "backoff_base_ms",
        raw.backoff_base_ms,
        d.backoff_base_ms,
        10,
        3_600_000,
    );
    let max = range(
        "backoff_max_ms",
        raw.backoff_max_ms,
        d.backoff_max_ms.max(base),
        base,
        86_400_000,
    );
    let max_queue = range("max_queue", raw.max_queue, d.max_queue, 1, 1_000_000);
    let max_dead_letters = range(
        "max_dead_letters",
        raw.max_dead_letters,
        d.max_dead_letters,
        1,
        1_000_000,
    );
    Settings {
        poll: std::time::Duration::from_millis(poll),
        timeout: std::time::Duration::from_millis(timeout),
        max_attempts: u32::try_from(max_attempts).unwrap_or(d.max_attempts),
        max_age,
        backoff_base_ms: base,
        backoff_max_ms: max,
        max_queue,
        max_dead_letters,
        allow_http_loopback: raw.allow_http_loopback,
    }
}

/// `[[webhooks]]`, each checked; files relative to `base`.
pub fn webhooks(
    raw: &[RawWebhook],
    settings: &Settings,
    base: &Path,
    problems: &mut Vec<String>,
) -> Vec<Webhook> {
    let mut out = Vec::new();
    for (i, w) in raw.iter().enumerate() {
        let key = |k: &str| format!("webhooks[{i}].{k}");
        let before = problems.len();
        if !valid_name(&w.name) {
            problems.push(format!(
                "{}: {:?}: 1 to 64 of a-z A-Z 0-9 - _",
                key("name"),
                w.name
            ));
        }
        if raw[..i].iter().any(|o| o.name == w.name) {
            problems.push(format!("{}: {:?} appears twice", key("name"), w.name));
        }
        let url = endpoint_url(&key("url"), &w.url, settings.allow_http_loopback, problems);
        let secret = read_secret(&key("secret_file"), base, &w.secret_file, problems);
        let mut events = Vec::new();
        if w.events.is_empty() {
            problems.push(format!(
                "{}: name at least one of \"detection\", \"revocation\", \"signal\", \"logout\"",
                key("events")
            ));
        }
        for e in &w.events {
            let kind = match e.as_str() {
                "detection" => EventKind::Detection,
                "revocation" => EventKind::Revocation,
                "signal" => EventKind::Signal,
                "logout" => EventKind::Logout,
                "step_up_failure" => {
                    problems.push(format!(
                        "{}: \"step_up_failure\": the controller does not learn of failed \
                         step-ups (nodes do not report them); not available in this version",
                        key("events")
                    ));
                    continue;
                }
                other => {
                    problems.push(format!(
                        "{}: {other:?}: expected \"detection\", \"revocation\", \"signal\" or \"logout\"",
                        key("events")
                    ));
                    continue;
                }
            };
            if events.contains(&kind) {
                problems.push(format!("{}: {e:?} appears twice", key("events")));
            }
            events.push(kind);
        }
        let actions = w.detection_actions.clone().unwrap_or_default();
        for a in &actions {
            if !["allow", "step_up", "block", "revoke"].contains(&a.as_str()) {
                problems.push(format!(
                    "{}: {a:?}: expected \"allow\", \"step_up\", \"block\" or \"revoke\"",
                    key("detection_actions")
                ));
            }
        }
        let min_score = w.detection_min_score.unwrap_or(0);
        if min_score > 100 {
            problems.push(format!(
                "{}: {min_score} is out of range; expected 0 to 100",
                key("detection_min_score")
            ));
        }
        let max_concurrency = w.max_concurrency.unwrap_or(4);
        if !(1..=64).contains(&max_concurrency) {
            problems.push(format!(
                "{}: {max_concurrency} is out of range; expected 1 to 64",
                key("max_concurrency")
            ));
        }
        if problems.len() > before {
            continue;
        }
        if let (Some(url), Some(secret)) = (url, secret) {
            out.push(Webhook {
                name: w.name.clone(),
                url,
                secret,
                events,
                filter: Filter {
                    min_score,
                    actions,
                    enforced_only: w.detection_enforced_only,
                },
                max_concurrency,
            });
        }
    }
    out
}
