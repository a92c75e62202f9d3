//! The proxy's configuration: one TOML file, read strictly.
//!
//! [`Config::load`] reads a file and returns either a complete, validated
//! [`Config`] or every problem in the file at once, each with its dotted key
//! (STYLE.md 7). Unknown keys are problems. Nothing here binds sockets or
//! starts anything; certificate and key files are read to prove they load.

mod binding;
mod fields;
mod restart;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
// The engine's own types: the file's choices are the engine's settings.
use vigil_engine::{
    Action, EngineConfig, Policy, ScoreConfig, SessionConfig, SessionLimits, Thresholds,
    UserModelConfig,
};
pub use vigil_engine::{ChainStrategy, ForwardedHeaders};

pub use self::fields::Problem;
use vigil_rules::RuleSet;

use self::fields::{Fields, Problems};
pub use self::restart::{Merged, merge};
use crate::hello::CaptureSettings;

/// Prefix of the headers Vigil sends to the app (client-sent ones are removed).
pub const VIGIL_HEADER_PREFIX: &str = "vigil-";

/// Pingora itself refuses header sections above about 1 MiB; a larger
/// setting would be a promise we cannot keep.
const MAX_HEADER_BYTES_CEILING: usize = 1024 * 1024;

/// A validated proxy configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Process and runtime settings.
    pub server: Server,
    /// Logging.
    pub log: Log,
    /// The admin listener.
    pub admin: Admin,
    /// The engine: session discovery and scoring.
    pub engine: EngineConfig,
    /// Where the session hash key comes from.
    pub hash_key: HashKeySource,
    /// The retiring hash key and the user key, during and after a rotation
    /// of the session hash key.
    pub key_rotation: KeyRotation,
    /// Whether risk headers are sent to the app.
    pub risk_to_app: bool,
    /// The response header in which the app names the user of the session
    /// (`[session] user_header`); `None` when the app never does.
    pub user_header: Option<http::HeaderName>,
    /// The response header with which the app says the request's user just
    /// re-authenticated (`[session] confirm_header`).
    pub confirm_header: Option<http::HeaderName>,
    /// How often the session snapshot is written (`[session]
    /// snapshot_interval_seconds`); `None` when snapshots are off.
    pub snapshot_every: Option<Duration>,
    /// Largest request header section accepted, in bytes (names, values and
    /// line overhead). Default 64 KiB.
    pub max_header_bytes: usize,
    /// Finding the client behind proxies.
    pub client_ip: ClientIpSettings,
    /// Trusted proxy sets, in file order.
    pub trusted_proxies: Vec<TrustedSet>,
    /// Geo and ASN databases.
    pub geoip: GeoSettings,
    /// TLS fingerprinting.
    pub fingerprint: FingerprintSettings,
    /// Client-facing listeners; at least one.
    pub listeners: Vec<Listener>,
    /// Upstream groups; at least one.
    pub upstreams: Vec<Upstream>,
    /// Routes, in file order; at least one.
    pub routes: Vec<Route>,
    /// The rules in front of every route's policy, compiled: the
    /// controller's bundle in force when there is one (`rules_bundle`),
    /// else those of `[rules] dir`; empty when there are none.
    pub rules: Arc<RuleSet>,
    /// Where they were read from, for `check` and reload logs.
    pub rules_dir: Option<PathBuf>,
    /// Where the node's rules come from (`[rules] source`, default
    /// `files`); needs a restart to change.
    pub rules_source: RulesSource,
    /// The IANA time zone of `time.*` facts (`[rules] time_zone`, default
    /// `UTC`), for the rules of the files and of a bundle alike.
    pub rules_time_zone: String,
    /// The controller's rule bundle `rules` were compiled from, when one
    /// is in force (`source = "controller"` and a bundle in the state
    /// directory); `None`: the rules of `[rules] dir`.
    pub rules_bundle: Option<BundleInForce>,
    /// Vigil as an OpenID Connect relying party, for routes that step up
    /// at the identity provider (`[oidc]`); `None` when not configured.
    pub oidc: Option<Arc<Oidc>>,
    /// The fleet controller this node syncs with (`[controller]`); `None`
    /// when the node runs alone.
    pub controller: Option<Arc<Controller>>,
    /// DBSC at the edge (`[dbsc]`): endpoints, bound cookie, limits.
    pub dbsc: crate::dbsc::Settings,
}

/// Where a node's rules come from (`[rules] source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RulesSource {
    /// `files` (the default): the rule files of `[rules] dir`.
    Files,
    /// `controller`: the rule bundle the controller streams, which
    /// replaces the files' rules whole once it compiles against this
    /// config; the files' rules (or none) until the node has one
    /// (`docs/rules.md`, Bundles from the controller).
    Controller,
}

/// The controller's rule bundle a config's rules were compiled from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleInForce {
    /// Its version.
    pub version: u64,
    /// SHA-256 of its text, lower-case hex.
    pub sha256: String,
}

/// `[controller]`: the fleet controller that streams revocations and
/// user risk to this node and takes the revocations it decides
/// (`docs/controller.md`, Edge node). Needs a restart to change.
#[derive(Clone, PartialEq, Eq)]
pub struct Controller {
    /// The controller's base URL, without a trailing `/`: `https`, or
    /// `http` to a loopback host only (the node's token travels in it).
    pub url: String,
    /// The node's bearer token, read from `token_file` at load (surrounding
    /// whitespace trimmed, never empty). Never logged. None: the node
    /// proves who it is with its client certificate alone.
    pub token: Option<String>,
    /// PEM certificates to trust for the controller's TLS besides the
    /// system's (`ca_file`).
    pub ca_file: Option<PathBuf>,
    /// The node's client certificate for mutual TLS
    /// (`client_cert_file`, `client_key_file`), checked at load.
    pub client_cert: Option<ClientCert>,
    /// Most events kept (on disk, in the state directory's
    /// `controller.events/`) for the controller while it is away
    /// (`events_queue`, default 10 000, 1 to 1 000 000); the oldest are
    /// dropped, and counted, beyond it.
    pub events_queue: usize,
    /// Most bytes of events kept on disk for the controller
    /// (`events_queue_bytes`, default 64 MiB, 64 KiB to 16 GiB); the oldest
    /// are dropped past it, as past `events_queue`.
    pub events_queue_bytes: u64,
}

/// A node's client certificate for mutual TLS with its controller: files
/// read again when the client is built (the key is never held in the
/// config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// PEM certificate chain, leaf first (`client_cert_file`).
    pub cert_file: PathBuf,
    /// Its PEM private key (`client_key_file`).
    pub key_file: PathBuf,
}

impl fmt::Debug for Controller {
    // The token is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller")
            .field("url", &self.url)
            .field("token", &"…")
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("events_queue", &self.events_queue)
            .field("events_queue_bytes", &self.events_queue_bytes)
            .finish()
    }
}

/// `[oidc]`: the identity provider Vigil sends users to for a step-up,
/// and how it proves who came back (`docs/step-up.md`).
#[derive(Clone, PartialEq, Eq)]
pub struct Oidc {
    /// The issuer, as the provider's discovery document names it: `https`,
    /// or `http` on a loopback host only.
    pub issuer: String,
    /// Vigil's client id at the provider.
    pub client_id: String,
    /// The client secret, read from `client_secret_file` at load
    /// (surrounding whitespace trimmed); `None` for a public client (PKCE only).
    pub client_secret: Option<String>,
    /// The ID token claim that names the user as the app names it to
    /// Vigil: `sub` (default) or `email` (only when `email_verified`).
    pub user_claim: UserClaim,
    /// Whether the ID token must show, by its `auth_time`, that the user
    /// signed in after Vigil sent them (`require_auth_time`, default
    /// true). False only for a provider that keeps an old `auth_time` on
    /// re-authentication: then a token issued after the send is taken as
    /// fresh, trusting the provider to have honoured `prompt=login`.
    pub require_auth_time: bool,
    /// PEM certificates to trust for the provider's TLS besides the
    /// system's (`ca_file`).
    pub ca_file: Option<PathBuf>,
    /// How long a user may take at the provider (`pending_seconds`,
    /// default 600).
    pub pending: Duration,
    /// Clock difference tolerated between Vigil and the provider
    /// (`clock_skew_seconds`, default 30).
    pub clock_skew: Duration,
    /// Step-ups started per session per minute (`per_session_per_minute`,
    /// default 10).
    pub per_session_per_minute: u32,
    /// Step-ups started, and apart from them callbacks taken, per client
    /// network per minute (`per_client_per_minute`, default 60).
    pub per_client_per_minute: u32,
    /// A session sent to step up again for the same page within this long
    /// of passing a step-up is in a loop, and refused (`loop_seconds`,
    /// default 60).
    pub loop_window: Duration,
    /// Upper bound on each call to the provider (`timeout_seconds`,
    /// default 5).
    pub timeout: Duration,
}

impl fmt::Debug for Oidc {
    // The client secret is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "…"))
            .field("user_claim", &self.user_claim)
            .finish_non_exhaustive()
    }
}

/// Which ID token claim names the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserClaim {
    /// `sub`.
    Sub,
    /// `email`, when the token says `email_verified`.
    Email,
}

/// How a route steps up browsers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepUpVia {
    /// Redirect to the route's `step_up_url`; the app re-authenticates and
    /// confirms (`app_confirms`).
    Url(String),
    /// Vigil itself sends the user to `[oidc]`'s provider and takes the
    /// answer at `callback_path` on the route's own host.
    Oidc {
        /// The callback's path (`callback_path`, default
        /// `/.vigil/oidc/callback`); it must select this route.
        callback_path: String,
        /// `it_was_me`: a block page of a signed-in browser session offers
        /// a link to dispute the block by passing a step-up
        /// (`docs/step-up.md`, "It was me"). Default off.
        it_was_me: bool,
    },
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct Server {
    /// Worker threads per listener. Default: the number of cores.
    pub threads: usize,
    /// Whether worker runtimes steal work from each other. Default false.
    pub work_stealing: bool,
    /// Seconds to keep serving after SIGTERM. Default 5.
    pub grace_period: Duration,
    /// Seconds for in-flight requests at shutdown. Default 5.
    pub graceful_shutdown_timeout: Duration,
    /// Directory for state Vigil creates. Default `/var/lib/vigil`.
    pub state_dir: PathBuf,
    /// How often files named in the config (trusted proxy lists, geo
    /// databases, and the config file itself when `watch_config` is set)
    /// are checked for change. Default 30 s.
    pub file_check: Duration,
    /// Reload the config when its file's content changes, as `SIGHUP`
    /// does (for Kubernetes ConfigMaps, which are swapped under a symlink
    /// and send no signal). Default false.
    pub watch_config: bool,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// Output format. Default text.
    pub format: LogFormat,
    /// A `tracing` filter. Default `info`.
    pub level: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// Address of the admin listener. Default `127.0.0.1:9901`.
    pub listen: SocketAddr,
    /// File holding the bearer token of the `/v1` operator calls; without
    /// it those calls are refused.
    pub token_file: Option<PathBuf>,
}

/// Where the session hash key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKeySource {
    /// A file holding 32 raw bytes or 64 hex digits, created when absent.
    File(PathBuf),
    /// A fresh random key for this process only (the demo).
    Ephemeral,
}

/// A rotation of the session hash key (`[session]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRotation {
    /// `previous_hash_key_file`: the key being retired. While it is set,
    /// every credential is also hashed under it, and what the node holds
    /// under it is carried over to the current key on sight. Never created.
    pub previous: Option<PathBuf>,
    /// `user_key_file`: the key user names are hashed with. Default: the
    /// session hash key. Never created.
    pub user: Option<PathBuf>,
}

/// `[[listeners]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Unique name, for logs and metrics.
    pub name: String,
    /// Address to bind.
    pub listen: SocketAddr,
    /// Accept cleartext HTTP/2 with prior knowledge.
    pub h2c: bool,
    /// Offer HTTP/2 by ALPN (TLS listeners only).
    pub http2: bool,
    /// Certificates; a non-empty list makes this a TLS listener.
    pub certificates: Vec<Certificate>,
    /// Forwarding headers believed on this listener (from trusted peers only).
    pub forwarded: ForwardedHeaders,
    /// Connection limits: how many, how long a request head may take, and
    /// the HTTP/2 settings.
    pub limits: ListenerLimits,
    /// What a TLS listener does with a request for a host the connection's
    /// certificate does not cover (`misdirected`, default `refuse`).
    pub misdirected: Misdirected,
    /// On a cleartext listener, refuse a session whose baseline was taken
    /// over TLS (`tls_required_for_tls_sessions`, default false): a thief
    /// replaying on the cleartext port of the same Vigil erases the TLS
    /// evidence; this makes the erasure a refusal, not only a reason.
    pub tls_required_for_tls_sessions: bool,
}

/// A listener's connection limits (`max_connections`, `header_timeout_ms`,
/// `keepalive_idle_seconds`, `h2_*` in `[[listeners]]`). All need a restart to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Most connections held at once; more are closed on accept. Default
    /// 10 000, at most 1 000 000.
    pub max_connections: usize,
    /// Longest time a whole request head may take, from its first byte (from
    /// accept for a connection's first request). Default 10 s, 100 ms to
    /// 300 s.
    pub header_timeout: Duration,
    /// Longest wait, in seconds, for the next request on a kept HTTP/1
    /// connection, whatever the client's `Keep-Alive: timeout=` asks
    /// (`keepalive_idle_seconds`). Default 60, 1 to 3600.
    pub keepalive_idle_seconds: u64,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`. Default 100, 1 to 1000.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`, in decoded bytes. Default
    /// 65 536, 1024 to 1 MiB.
    pub h2_max_header_list_bytes: u32,
    /// The rapid-reset bound (CVE-2023-44487), counted twice: streams a
    /// client may reset before the proxy took them (the h2 codec closes with
    /// `ENHANCE_YOUR_CALM` beyond it), and streams of one connection that
    /// ended in an error on the client's side, net of streams served whole
    /// (Vigil closes the connection beyond it). Default 20, 1 to 1000.
    pub h2_max_pending_resets: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_timeout: Duration::from_secs(10),
            keepalive_idle_seconds: 60,
            h2_max_concurrent_streams: 100,
            h2_max_header_list_bytes: 65_536,
            h2_max_pending_resets: 20,
        }
    }
}

/// `misdirected` of a TLS listener: a request whose `Host`/`:authority` is
/// not covered by the certificate its connection was given (chosen by SNI)
/// could pick a route the TLS name did not: `docs/security.md`, Hosts and
/// certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Misdirected {
    /// Answer `421 Misdirected Request` (the default).
    #[default]
    Refuse,
    /// Route it by its host as if the connection had been made for it.
    Allow,
}

/// `[client_ip]`: how the client is found behind proxies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIpSettings {
    /// How the chain is walked.
    pub strategy: ChainStrategy,
    /// Most bytes of forwarding headers read. Default 8192.
    pub max_header_bytes: usize,
    /// Most hops read. Default 32.
    pub max_hops: usize,
    /// Send `Vigil-Client-IP` and a clean `X-Forwarded-For`/`Forwarded` to
    /// the app. Default true.
    pub to_app: bool,
    /// Request headers removed before the app, beyond the ones Vigil always
    /// removes (`forwarding::SPOOFABLE`): names an app behind Vigil trusts
    /// for the client's address, scheme or host. Lower case. Default none.
    pub strip_headers: Vec<http::HeaderName>,
}

/// `[[trusted_proxies]]`: a named set of proxy networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedSet {
    /// Unique name, reported as the client's provider (`lb`, `zscaler`, …).
    pub name: String,
    /// Networks given inline.
    pub cidrs: Vec<IpNet>,
    /// A CIDR file, re-read when it changes.
    pub file: Option<PathBuf>,
    /// The networks of `file` as read at load time.
    pub file_cidrs: Vec<IpNet>,
}

/// `[fingerprint]`: the TLS fingerprint of each connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FingerprintSettings {
    /// Read the ClientHello of every connection on TLS listeners and compute
    /// its JA4. Default true.
    pub capture: bool,
    /// Caps and store size of the capture.
    pub settings: CaptureSettings,
    /// Send `Vigil-JA4` (and `Vigil-JA3` when a balancer sent one) to the
    /// app. Default true.
    pub to_app: bool,
}

/// `[geoip]`: MaxMind DB files.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GeoSettings {
    /// City or Country databases (several for layouts split by IP version).
    pub city: Vec<PathBuf>,
    /// ASN databases.
    pub asn: Vec<PathBuf>,
}

/// A path, or a list of paths.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(PathBuf),
    Many(Vec<PathBuf>),
}

impl OneOrMany {
    fn into_vec(self, base: &Path) -> Vec<PathBuf> {
        match self {
            OneOrMany::One(p) => vec![resolve(base, p)],
            OneOrMany::Many(v) => v.into_iter().map(|p| resolve(base, p)).collect(),
        }
    }
}

/// `[[listeners.certificates]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// SNI names served with this certificate, lower case; `*.` prefixes match
    /// one or more labels.
    pub server_names: Vec<String>,
}

/// `[[upstreams]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Unique name, referenced by routes.
    pub name: String,
    /// Addresses, balanced round robin.
    pub addresses: Vec<SocketAddr>,
    /// Speak TLS to the upstream.
    pub tls: bool,
    /// SNI for upstream TLS. Default empty.
    pub sni: String,
    /// Connect timeout. Default 2 s.
    pub connect_timeout: Duration,
    /// Per-read timeout. Default 60 s.
    pub read_timeout: Duration,
    /// Health checking.
    pub health: Health,
}

/// `[upstreams.health]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Active check kind.
    pub kind: HealthKind,
    /// Active check interval; zero disables active checks. Default 5 s.
    pub interval: Duration,
    /// How long an address that failed a connection is skipped; zero
    /// disables passive checks. Default 10 s.
    pub eject: Duration,
}

/// Active health check kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthKind {
    /// A TCP connection succeeds.
    Tcp,
    /// `GET path` answers 2xx.
    Http {
        /// Path to request.
        path: String,
    },
}

/// `[[routes]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Unique name, for logs and metrics.
    pub name: String,
    /// Hosts served, lower case, without port; empty means any.
    pub hosts: Vec<String>,
    /// Path prefix, starting with `/`.
    pub path_prefix: String,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// What the route does with the engine.
    pub mode: Mode,
    /// What happens when a request cannot be evaluated.
    pub on_error: FailMode,
    /// Sign-in page for revoked sessions.
    pub login_url: Option<String>,
    /// Where `step_up` sends browsers: the route's `step_up_url`, or the
    /// identity provider (`step_up = "oidc"`); `None` when neither is set.
    pub step_up: Option<StepUpVia>,
    /// Whether this route's app is trusted to confirm a passed step-up
    /// with the confirm header (`app_confirms`, default false). On an `off`
    /// route the request is then judged (nothing applied) so that the
    /// confirmation has its facts.
    pub app_confirms: bool,
    /// Whether an `off` route still refuses revoked sessions
    /// (`revocation_check`, default true); false only for routes that must
    /// not pay even that lookup.
    pub revocation_check: bool,
    /// Risk level → action.
    pub policy: Policy,
    /// How old this node's fleet state may grow before the route treats
    /// it as stale (`stale_after`, `on_stale`); `None` (the default): never.
    pub stale: Option<Stale>,
    /// Device-bound sessions (`dbsc`, default `off`; `docs/bound-sessions.md`).
    pub dbsc: crate::dbsc::RouteDbsc,
}

/// A route's limit on the age of the node's fleet state
/// (`docs/controller.md`, Edge node): the time since a live sync stream
/// last proved the node current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stale {
    /// Seconds (`stale_after`, 10 to 604 800: at least two heartbeats).
    pub after: u64,
    /// What the route does past it (`on_stale`, default `fail_open`).
    pub on_stale: OnStale,
}

/// What a route does once the node's fleet state is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStale {
    /// Judge with what the node has, and count it (`fail_open`).
    FailOpen,
    /// Refuse with `503 fleet_stale` (`fail_closed`); `enforce` routes
    /// only: `monitor` and `off` routes never refuse for it.
    FailClosed,
}

/// A route's enforcement mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Carry out decisions.
    Enforce,
    /// Decide, log and count, but always forward.
    Monitor,
    /// Do not evaluate; forward as a plain reverse proxy.
    Off,
}

/// Fail-open or fail-closed, chosen per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Refuse what cannot be judged (400).
    Closed,
    /// Forward what cannot be judged, unjudged, and count it.
    Open,
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but is not a valid config.
    #[error("{}", display_problems(file, problems))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

fn display_problems(file: &Path, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if p.key.is_empty() {
            out.push_str(&format!("{}: {}", file.display(), p.message));
        } else {
            out.push_str(&format!("{}: {}: {}", file.display(), p.key, p.message));
        }
    }
    out
}

// === impl Mode ===

impl Mode {
    /// The mode as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor",
            Mode::Off => "off",
        }
    }
}

// === impl Config ===

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Validates config text; `path` names the file in problems and anchors
    /// relative paths inside it.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |problems| ConfigError::Invalid {
            file: path.to_owned(),
            problems,
        };
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            invalid(vec![Problem {
                key: String::new(),
                message: format!(
                    "not valid TOML: {}",
                    e.to_string().trim().replace('\n', " ")
                ),
            }])
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut p = Problems::default();
        let config = read(&table, base, &mut p);
        match config {
            Some(c) if p.is_empty() => Ok(c),
            _ => Err(invalid(p.into_vec())),
        }
    }

    /// What is valid but may not do what the operator means, one line
    /// each; `vigil-proxy check` prints them and still succeeds.
    ///
    /// Today: routes of different modes in front of one upstream. They are
    /// told apart only by host and path, which the client writes, so the
    /// client can reach the app through the laxer route unless the app
    /// itself routes by the same key (`docs/security.md`, Hosts and
    /// certificates).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (u, upstream) in self.upstreams.iter().enumerate() {
            let routes: Vec<&Route> = self.routes.iter().filter(|r| r.upstream == u).collect();
            let Some(first) = routes.first() else {
                continue;
            };
            if routes.iter().all(|r| r.mode == first.mode) {
                continue;
            }
            let list: Vec<String> = routes
                .iter()
                .map(|r| {
                    let hosts = if r.hosts.is_empty() {
                        "any host".to_owned()
                    } else {
                        r.hosts.join(", ")
                    };
                    format!(
                        "{:?} (mode {}, {hosts}, path {})",
                        r.name,
                        r.mode.as_str(),
                        r.path_prefix
                    )
                })
                .collect();
            out.push(format!(
                "upstreams {:?}: routes of different modes share it, told apart only by host or \
                 path, which the client chooses: {}; unless the app routes by the same host \
                 and path, a client can pick the laxer mode (docs/security.md, Hosts and certificates)",
                upstream.name,
                list.join("; ")
            ));
        }
        out
    }
}

// === reading ===

/// Reports `v` under `key` unless it lies in `range`: every number the
/// config takes has an upper bound, so that what `check` accepts, `run`
/// can build (a timeout of 40 billion seconds overflows the clocks of the
/// caches it configures).
fn within<T>(p: &mut Problems, key: String, v: T, range: std::ops::RangeInclusive<T>)
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if !range.contains(&v) {
        p.push(
            key,
            format!(
                "{v} is out of range; expected {} to {}",
                range.start(),
                range.end()
            ),
        );
    }
}

/// A day and a year in seconds, for the bounds of durations.
const DAY: u64 = 86_400;
const YEAR: u64 = 365 * DAY;

/// Reads every section in file order of the docs; each reader reports its
/// own problems and unknown keys, so one pass finds them all.
#[allow(
    clippy::field_reassign_with_default,
    reason = "engine settings this file does not read yet must keep their defaults"
)]
fn read(root: &toml::Table, base: &Path, p: &mut Problems) -> Option<Config> {
    let mut f = Fields::root(root);
    let server = read_server(&mut f, base, p);
    let log = read_log(&mut f, p);
    let admin = read_admin(&mut f, base, p);
    let session = read_session(&mut f, base, &server.state_dir, p);
    let (limits, max_header_bytes) = read_limits(&mut f, p);
    let score = read_risk(&mut f, &session, p);
    let mut t = f.table(p, "headers");
    let risk_to_app = t.or(p, "risk_to_app", true);
    t.finish(p);
    let client_ip = read_client_ip(&mut f, p);
    let trusted_proxies = read_trusted(&mut f, base, p);
    let geoip = read_geoip(&mut f, base, p);
    let (fingerprint, upstream_fingerprints) = read_fingerprint(&mut f, &trusted_proxies, p);
    let listeners = read_listeners(&mut f, base, p);
    check_forwarded(&listeners, &trusted_proxies, p);
    let upstreams = read_upstreams(&mut f, p);
    let has_controller = f.has("controller");
    let routes = read_routes(&mut f, &upstreams, has_controller, p);
    let read_rules = read_rules(&mut f, base, &routes, &server.state_dir, has_controller, p);
    let oidc = read_oidc(&mut f, base, p);
    check_step_up(&routes, oidc.as_ref(), p);
    let controller = read_controller(&mut f, base, p);
    let binding = binding::read_binding(&mut f, &session.cookies, p);
    let dbsc = read_dbsc(&mut f, has_controller, p);
    binding::check_cookie_names(&binding, &dbsc.cookie_name, &session.cookies, p);
    f.finish(p);

    let mut engine = EngineConfig::default();
    engine.session = SessionConfig {
        cookie_names: session.cookies,
        bearer: session.bearer,
        limits,
        ambiguous: session.ambiguous,
    };
    engine.score = score;
    engine.client_ip = client_ip_config(&client_ip, &trusted_proxies, p);
    engine.upstream_fingerprints = upstream_fingerprints;
    engine.binding = binding;
    Some(Config {
        server,
        log,
        admin,
        engine,
        hash_key: session.hash_key,
        key_rotation: session.key_rotation,
        risk_to_app,
        user_header: session.user_header,
        confirm_header: session.confirm_header,
        snapshot_every: session.snapshot_every,
        max_header_bytes,
        client_ip,
        trusted_proxies,
        geoip,
        fingerprint,
        listeners,
        upstreams,
        routes,
        rules: Arc::new(read_rules.set),
        rules_dir: read_rules.dir,
        rules_source: read_rules.source,
        rules_time_zone: read_rules.zone,
        rules_bundle: read_rules.bundle,
        oidc: oidc.map(Arc::new),
        controller: controller.map(Arc::new),
        dbsc,
    })
}

fn read_server(f: &mut Fields<'_>, base: &Path, p: &mut Problems) -> Server {
    let mut t = f.table(p, "server");
    let default_threads = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = t.or(p, "threads", default_threads);
    if !(1..=1024).contains(&threads) {
        p.push(
            t.key("threads"),
            format!("{threads} is out of range; expected 1 to 1024"),
        );
    }
    let mut secs = |t: &mut Fields<'_>, key: &'static str, default: u64, lo: u64, hi: u64| {
        let v: u64 = t.or(p, key, default);
        within(p, t.key(key), v, lo..=hi);
        Duration::from_secs(v.clamp(lo, hi))
    };
    let grace_period = secs(&mut t, "grace_period_seconds", 5, 0, 3_600);
    let graceful_shutdown_timeout = secs(&mut t, "graceful_shutdown_timeout_seconds", 5, 0, 3_600);
    let file_check = secs(&mut t, "file_check_seconds", 30, 1, DAY);
    let server = Server {
        threads,
        work_stealing: t.or(p, "work_stealing", false),
        grace_period,
        graceful_shutdown_timeout,
        state_dir: resolve(base, t.or(p, "state_dir", PathBuf::from("/var/lib/vigil"))),
        file_check,
        watch_config: t.or(p, "watch_config", false),
    };
    t.finish(p);
    server
}

fn read_log(f: &mut Fields<'_>, p: &mut Problems) -> Log {
    let mut t = f.table(p, "log");
    let format = match t.or(p, "format", "text".to_owned()).as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            p.push(
                t.key("format"),
                format!("{other:?} is not a log format; expected \"text\" or \"json\""),
            );
            LogFormat::Text
        }
    };
    let level: String = t.or(p, "level", "info".to_owned());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
        p.push(
            t.key("level"),
            format!("{level:?} is not a log filter: {e}"),
        );
    }
    let log = Log { format, level };
    t.finish(p);
    log
}

fn read_admin(f: &mut Fields<'_>, base: &Path, p: &mut Problems) -> Admin {
    let mut t = f.table(p, "admin");
    let admin = Admin {
        listen: addr(&mut t, p, "listen", false)
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9901))),
        token_file: t.opt::<PathBuf>(p, "token_file").map(|f| resolve(base, f)),
    };
    t.finish(p);
    admin
}

/// What `[session]` sets, before it is spread over the config and the
/// engine's session and score settings.
struct SessionSection {
    cookies: Vec<String>,
    bearer: bool,
    ambiguous: vigil_engine::Ambiguity,
    user_header: Option<http::HeaderName>,
    confirm_header: Option<http::HeaderName>,
    snapshot_every: Option<Duration>,
    hash_key: HashKeySource,
    key_rotation: KeyRotation,
    max_sessions: u64,
    idle: Duration,
    revocation_ttl: Duration,
}

fn read_session(
    f: &mut Fields<'_>,
    base: &Path,
    state_dir: &Path,
    p: &mut Problems,
) -> SessionSection {
    let mut t = f.table(p, "session");
    let cookies: Vec<String> = t.or(p, "cookies", vec!["session".to_owned()]);
    for (i, name) in cookies.iter().enumerate() {
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            p.push(
                format!("{}[{i}]", t.key("cookies")),
                format!("{name:?} is not a valid cookie name"),
            );
        }
    }
    let mut header = |t: &mut Fields<'_>, key: &'static str, default: &str| match t.or(
        p,
        key,
        default.to_owned(),
    ) {
        name if name.is_empty() => None,
        name => match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                p.push(t.key(key), format!("{name:?} is not a header name"));
                None
            }
        },
    };
    let user_header = header(&mut t, "user_header", "vigil-user");
    let confirm_header = header(&mut t, "confirm_header", "vigil-confirm");
    let snapshot: bool = t.or(p, "snapshot", true);
    let snapshot_interval: u64 = t.or(p, "snapshot_interval_seconds", 300);
    within(
        p,
        t.key("snapshot_interval_seconds"),
        snapshot_interval,
        1..=DAY,
    );
    let snapshot_every = snapshot.then(|| Duration::from_secs(snapshot_interval.max(1)));
    let ambiguous = match t
        .or(p, "ambiguous_credentials", "worst".to_owned())
        .as_str()
    {
        "worst" => vigil_engine::Ambiguity::Worst,
        "refuse" => vigil_engine::Ambiguity::Refuse,
        other => {
            p.push(
                t.key("ambiguous_credentials"),
                format!("{other:?} is not a choice; expected \"worst\" or \"refuse\""),
            );
            vigil_engine::Ambiguity::Worst
        }
    };
    let bearer = t.or(p, "bearer", true);
    if cookies.is_empty() && !bearer {
        p.push(
            t.key("cookies"),
            "no way to find a session: list a cookie or set bearer = true",
        );
    }
    let hash_key_file = match t.opt::<PathBuf>(p, "hash_key_file") {
        Some(file) => resolve(base, file),
        None => state_dir.join("session-hash.key"),
    };
    let key_rotation = read_key_rotation(&mut t, base, &hash_key_file, p);
    let hash_key = HashKeySource::File(hash_key_file);
    let max_sessions: u64 = t.or(p, "max_sessions", 1_000_000);
    within(p, t.key("max_sessions"), max_sessions, 1..=100_000_000);
    let idle: u64 = t.or(p, "idle_timeout_seconds", 2_592_000);
    let revocation_ttl: u64 = t.or(p, "revocation_ttl_seconds", 2_592_000);
    if revocation_ttl < idle {
        p.push(
            t.key("revocation_ttl_seconds"),
            format!(
                "{revocation_ttl} is shorter than idle_timeout_seconds ({idle}): a revoked cookie would outlive its revocation"
            ),
        );
    }
    within(p, t.key("idle_timeout_seconds"), idle, 1..=YEAR);
    within(
        p,
        t.key("revocation_ttl_seconds"),
        revocation_ttl,
        1..=5 * YEAR,
    );
    t.finish(p);
    SessionSection {
        cookies,
        bearer,
        ambiguous,
        user_header,
        confirm_header,
        snapshot_every,
        hash_key,
        key_rotation,
        max_sessions,
        idle: Duration::from_secs(idle),
        revocation_ttl: Duration::from_secs(revocation_ttl),
    }
}

/// `[session] previous_hash_key_file` and `user_key_file`: a rotation of
/// the session hash key (docs/controller.md, "Rotating the hash key").
/// The files are read when the proxy starts ([`crate::keyfile::load_keys`]);
/// here only what can be told from the names.
fn read_key_rotation(
    t: &mut Fields<'_>,
    base: &Path,
    hash_key_file: &Path,
    p: &mut Problems,
) -> KeyRotation {
    let previous = t
        .opt::<PathBuf>(p, "previous_hash_key_file")
        .map(|f| resolve(base, f));
    let user = t
        .opt::<PathBuf>(p, "user_key_file")
        .map(|f| resolve(base, f));
    if previous.as_deref() == Some(hash_key_file) {
        p.push(
            t.key("previous_hash_key_file"),
            "names the same file as hash_key_file: the previous key must be the one being retired",
        );
    }
    if previous.is_some() && user.is_none() {
        p.push(
            t.key("user_key_file"),
            "must be set while previous_hash_key_file is: user keys would otherwise change with \
             the session key, orphaning every user's history, revocation and risk in the fleet; \
             set it to the retiring key's file",
        );
    }
    KeyRotation { previous, user }
}

/// `[limits]`: the session stage's bounds and the header section's.
fn read_limits(f: &mut Fields<'_>, p: &mut Problems) -> (SessionLimits, usize) {
    let mut t = f.table(p, "limits");
    let defaults = SessionLimits::default();
    let limits = SessionLimits {
        max_cookies: t.or(p, "max_cookies", defaults.max_cookies),
        max_credential_bytes: t.or(p, "max_credential_bytes", defaults.max_credential_bytes),
    };
    within(p, t.key("max_cookies"), limits.max_cookies, 1..=10_000);
    within(
        p,
        t.key("max_credential_bytes"),
        limits.max_credential_bytes,
        16..=MAX_HEADER_BYTES_CEILING,
    );
    let max_header_bytes: usize = t.or(p, "max_header_bytes", 65_536);
    if !(1024..=MAX_HEADER_BYTES_CEILING).contains(&max_header_bytes) {
        p.push(
            t.key("max_header_bytes"),
            format!(
                "{max_header_bytes} is out of range; expected 1024 to {MAX_HEADER_BYTES_CEILING}"
            ),
        );
    }
    t.finish(p);
    (limits, max_header_bytes)
}

/// `[risk]` and `[risk.model]`; the store sizes come from `[session]`.
fn read_risk(f: &mut Fields<'_>, session: &SessionSection, p: &mut Problems) -> ScoreConfig {
    let mut t = f.table(p, "risk");
    let d = ScoreConfig::default();
    let mut seconds = |t: &mut Fields<'_>, key: &'static str, default: Duration| {
        let v: u64 = t.or(p, key, default.as_secs());
        within(p, t.key(key), v, 1..=YEAR);
        Duration::from_secs(v.clamp(1, YEAR))
    };
    let concurrent_window = seconds(&mut t, "concurrent_window_seconds", d.concurrent_window);
    let detection_window = seconds(&mut t, "detection_window_seconds", d.detection_window);
    let user_idle_timeout = seconds(&mut t, "user_idle_timeout_seconds", d.user_idle_timeout);
    let max_kmh: u16 = t.or(p, "max_kmh", d.max_kmh);
    let coarse_location_km: u16 = t.or(p, "coarse_location_km", d.coarse_location_km);
    if max_kmh < 100 {
        p.push(
            t.key("max_kmh"),
            format!("{max_kmh} is too slow for a plane; expected at least 100"),
        );
    }
    let churn_moves: u8 = t.or(p, "churn_moves", d.churn_moves);
    if !(2..=7).contains(&churn_moves) {
        p.push(
            t.key("churn_moves"),
            format!("{churn_moves} is out of range; expected 2 to 7"),
        );
    }
    let max_users: u64 = t.or(p, "max_users", d.max_users);
    within(p, t.key("max_users"), max_users, 1..=100_000_000);
    let mut points = |t: &mut Fields<'_>, key: &'static str, default: u8| {
        let v: u8 = t.or(p, key, default);
        if v > 100 {
            p.push(
                t.key(key),
                format!("{v} is out of range; expected 0 to 100"),
            );
        }
        v
    };
    let mut score = ScoreConfig {
        device_changed: points(&mut t, "device_changed", d.device_changed),
        ja4_mismatch: points(&mut t, "ja4_mismatch", d.ja4_mismatch),
        ja4_family_changed: points(&mut t, "ja4_family_changed", d.ja4_family_changed),
        tls_evidence_lost: points(&mut t, "tls_evidence_lost", d.tls_evidence_lost),
        device_upgraded: points(&mut t, "device_upgraded", d.device_upgraded),
        ip_changed: points(&mut t, "ip_changed", d.ip_changed),
        ip_changed_same_asn: points(&mut t, "ip_changed_same_asn", d.ip_changed_same_asn),
        asn_changed: points(&mut t, "asn_changed", d.asn_changed),
        country_changed: points(&mut t, "country_changed", d.country_changed),
        impossible_travel: points(&mut t, "impossible_travel", d.impossible_travel),
        concurrent_networks: points(&mut t, "concurrent_networks", d.concurrent_networks),
        network_churn: points(&mut t, "network_churn", d.network_churn),
        churn_moves,
        recent_detection: points(&mut t, "recent_detection", d.recent_detection),
        binding_reused: points(&mut t, "binding_reused", d.binding_reused),
        binding_missing: points(&mut t, "binding_missing", d.binding_missing),
        binding_invalid: points(&mut t, "binding_invalid", d.binding_invalid),
        medium_at: points(&mut t, "medium_at", d.medium_at),
        high_at: points(&mut t, "high_at", d.high_at),
        max_kmh,
        coarse_location_km,
        concurrent_window,
        detection_window,
        model: d.model,
        max_sessions: session.max_sessions,
        session_idle_timeout: session.idle,
        revocation_ttl: session.revocation_ttl,
        max_users,
        user_idle_timeout,
    };
    if score.medium_at == 0 || score.medium_at > score.high_at {
        p.push(
            t.key("medium_at"),
            format!(
                "{} must be at least 1 and at most high_at ({})",
                score.medium_at, score.high_at
            ),
        );
    }
    score.model = read_model(&mut t, p);
    t.finish(p);
    score
}

fn read_model(t: &mut Fields<'_>, p: &mut Problems) -> UserModelConfig {
    let mut mt = t.table(p, "model");
    let m = UserModelConfig::default();
    let mut model = m;
    let mut weight = |mt: &mut Fields<'_>, key: &'static str, default: u8| {
        let v: u8 = mt.or(p, key, default);
        if v > 20 {
            p.push(
                mt.key(key),
                format!("{v} points per nat is out of range; expected 0 to 20"),
            );
        }
        v
    };
    model.weights = vigil_engine::FeatureWeights {
        prefix: weight(&mut mt, "prefix_weight", m.weights.prefix),
        asn: weight(&mut mt, "asn_weight", m.weights.asn),
        country: weight(&mut mt, "country_weight", m.weights.country),
        device: weight(&mut mt, "device_weight", m.weights.device),
        browser: weight(&mut mt, "browser_weight", m.weights.browser),
        platform: weight(&mut mt, "platform_weight", m.weights.platform),
    };
    model.llr_cap = mt.or(p, "llr_cap", m.llr_cap);
    if !(1..=20).contains(&model.llr_cap) {
        p.push(
            mt.key("llr_cap"),
            format!("{} is out of range; expected 1 to 20", model.llr_cap),
        );
    }
    model.learning_sessions = mt.or(p, "learning_sessions", m.learning_sessions);
    let learning_days: u64 = mt.or(
        p,
        "learning_period_days",
        m.learning_period.as_secs() / 86_400,
    );
    within(p, mt.key("learning_period_days"), learning_days, 0..=3_650);
    model.learning_period = Duration::from_secs(learning_days.min(3_650) * 86_400);
    model.familiar_after = mt.or(p, "familiar_after", m.familiar_after);
    if model.familiar_after == 0 {
        p.push(mt.key("familiar_after"), "must be at least 1");
    }
    model.session_cap = mt.or(p, "session_cap", m.session_cap);
    if model.session_cap > 100 {
        p.push(
            mt.key("session_cap"),
            format!("{} is out of range; expected 0 to 100", model.session_cap),
        );
    }
    mt.finish(p);
    model
}

fn read_geoip(f: &mut Fields<'_>, base: &Path, p: &mut Problems) -> GeoSettings {
    let mut t = f.table(p, "geoip");
    let geoip = GeoSettings {
        city: t
            .opt::<OneOrMany>(p, "city")
            .map_or_else(Vec::new, |x| x.into_vec(base)),
        asn: t
            .opt::<OneOrMany>(p, "asn")
            .map_or_else(Vec::new, |x| x.into_vec(base)),
    };
    let paths = vigil_geoip::GeoPaths {
        geo: geoip.city.clone(),
        asn: geoip.asn.clone(),
    };
    if !paths.is_empty()
        && let Err(e) = vigil_geoip::GeoDatabases::open(&paths)
    {
        let key = if geoip.city.contains(&e.path().to_path_buf()) {
            "city"
        } else {
            "asn"
        };
        p.push(t.key(key), e.to_string());
    }
    t.finish(p);
    geoip
}

/// Forwarding headers are believed only from trusted proxies: without any,
/// a listener's choice of headers would do nothing.
fn check_forwarded(listeners: &[Listener], trusted: &[TrustedSet], p: &mut Problems) {
    for (i, l) in listeners.iter().enumerate() {
        if (l.forwarded.forwarded || l.forwarded.x_forwarded_for) && trusted.is_empty() {
            p.push(
                format!("listeners[{i}].forwarded_headers"),
                "no [[trusted_proxies]] are defined, so these headers would never be believed",
            );
        }
    }
}

fn read_fingerprint(
    f: &mut Fields<'_>,
    sets: &[TrustedSet],
    p: &mut Problems,
) -> (FingerprintSettings, vigil_engine::UpstreamFingerprints) {
    let mut t = f.table(p, "fingerprint");
    let max_hello_bytes: usize = t.or(p, "max_hello_bytes", 20_480);
    if !(1024..=65_536).contains(&max_hello_bytes) {
        p.push(
            t.key("max_hello_bytes"),
            format!("{max_hello_bytes} is out of range; expected 1024 to 65536"),
        );
    }
    let timeout_ms: u64 = t.or(p, "hello_timeout_ms", 5_000);
    if !(10..=60_000).contains(&timeout_ms) {
        p.push(
            t.key("hello_timeout_ms"),
            format!("{timeout_ms} is out of range; expected 10 to 60000"),
        );
    }
    let max_connections: u64 = t.or(p, "max_connections", 131_072);
    within(p, t.key("max_connections"), max_connections, 1..=10_000_000);
    let idle: u64 = t.or(p, "connection_idle_timeout_seconds", 3_600);
    within(
        p,
        t.key("connection_idle_timeout_seconds"),
        idle,
        1..=7 * DAY,
    );
    let settings = FingerprintSettings {
        capture: t.or(p, "capture", true),
        settings: CaptureSettings {
            max_hello_bytes,
            hello_timeout: Duration::from_millis(timeout_ms),
            max_connections,
            idle_timeout: Duration::from_secs(idle),
        },
        to_app: t.or(p, "to_app", true),
    };
    let mut header = |t: &mut Fields<'_>, key: &'static str| {
        let name: String = t.opt(p, key)?;
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) if !h.as_str().starts_with(VIGIL_HEADER_PREFIX) => Some(h),
            Ok(_) => {
                p.push(t.key(key), format!("{name:?} is Vigil's own header prefix"));
                None
            }
            Err(_) => {
                p.push(t.key(key), format!("{name:?} is not a header name"));
                None
            }
        }
    };
    let ja4_header = header(&mut t, "upstream_ja4_header");
    let ja3_header = header(&mut t, "upstream_ja3_header");
    let trusted_sets: Vec<String> = t.or(p, "upstream_trusted", Vec::new());
    for (i, name) in trusted_sets.iter().enumerate() {
        if !sets.iter().any(|s| &s.name == name) {
            p.push(
                format!("{}[{i}]", t.key("upstream_trusted")),
                format!("{name:?} is not the name of a [[trusted_proxies]] set"),
            );
        }
    }
    let has_header = ja4_header.is_some() || ja3_header.is_some();
    if has_header && trusted_sets.is_empty() {
        p.push(
            t.key("upstream_trusted"),
            "name the [[trusted_proxies]] sets allowed to send the fingerprint headers",
        );
    }
    if !has_header && !trusted_sets.is_empty() {
        p.push(
            t.key("upstream_trusted"),
            "set upstream_ja4_header or upstream_ja3_header, or remove this",
        );
    }
    t.finish(p);
    let upstream = vigil_engine::UpstreamFingerprints {
        ja4_header,
        ja3_header,
        trusted_sets,
    };
    (settings, upstream)
}

fn read_listeners(f: &mut Fields<'_>, base: &Path, p: &mut Problems) -> Vec<Listener> {
    let tables = f.tables(p, "listeners");
    if tables.is_empty() {
        p.push("listeners", "at least one [[listeners]] is required");
    }
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    let mut out = Vec::new();
    for mut t in tables {
        let name = unique_name(&mut t, p, &mut names);
        let listen = addr(&mut t, p, "listen", true);
        if let Some(a) = listen
            && !addrs.insert(a)
        {
            p.push(t.key("listen"), format!("{a} is used by another listener"));
        }
        let h2c = t.or(p, "h2c", false);
        let http2 = t.or(p, "http2", false);
        let mut forwarded = ForwardedHeaders::default();
        let names: Vec<String> = t.or(p, "forwarded_headers", Vec::new());
        for (i, name) in names.iter().enumerate() {
            match name.to_ascii_lowercase().as_str() {
                "forwarded" => forwarded.forwarded = true,
                "x-forwarded-for" => forwarded.x_forwarded_for = true,
                other => p.push(
                    format!("{}[{i}]", t.key("forwarded_headers")),
                    format!("{other:?} is not a forwarding header; expected \"forwarded\" or \"x-forwarded-for\""),
                ),
            }
        }
        let mut certificates = Vec::new();
        for mut c in t.tables(p, "certificates") {
            let cert = c
                .req::<PathBuf>(p, "cert", "a PEM certificate chain file")
                .map(|x| resolve(base, x));
            let key = c
                .req::<PathBuf>(p, "key", "a PEM private key file")
                .map(|x| resolve(base, x));
            let server_names: Vec<String> = c.or(p, "server_names", Vec::new());
            for (i, n) in server_names.iter().enumerate() {
                if !is_server_name(n) {
                    p.push(
                        format!("{}[{i}]", c.key("server_names")),
                        format!("{n:?} is not a DNS name or *.wildcard"),
                    );
                }
            }
            if let (Some(cert), Some(key)) = (&cert, &key)
                && let Err(e) = crate::tls::load_certified_key(cert, key)
            {
                p.push(c.key("cert"), e.to_string());
            }
            c.finish(p);
            if let (Some(cert), Some(key)) = (cert, key) {
                certificates.push(Certificate {
                    cert,
                    key,
                    server_names: server_names
                        .into_iter()
                        .map(|n| n.to_ascii_lowercase())
                        .collect(),
                });
            }
        }
        if http2 && certificates.is_empty() {
            p.push(t.key("http2"), "HTTP/2 by ALPN needs TLS: add [[listeners.certificates]], or use h2c for cleartext");
        }
        if h2c && !certificates.is_empty() {
            p.push(
                t.key("h2c"),
                "h2c is cleartext HTTP/2; on a TLS listener use http2 = true",
            );
        }
        let limits = read_listener_limits(&mut t, p);
        let misdirected = match t.or(p, "misdirected", "refuse".to_owned()).as_str() {
            "refuse" => Misdirected::Refuse,
            "allow" => Misdirected::Allow,
            other => {
                p.push(
                    t.key("misdirected"),
                    format!("{other:?} is not a choice; expected \"refuse\" or \"allow\""),
                );
                Misdirected::Refuse
            }
        };
        let tls_required_for_tls_sessions = t.or(p, "tls_required_for_tls_sessions", false);
        if tls_required_for_tls_sessions && !certificates.is_empty() {
            p.push(
                t.key("tls_required_for_tls_sessions"),
                "only used on a cleartext listener (this one has certificates)",
            );
        }
        if t.has("misdirected") && certificates.is_empty() {
            p.push(
                t.key("misdirected"),
                "only used on a TLS listener (with [[listeners.certificates]])",
            );
        }
        t.finish(p);
        if let (Some(name), Some(listen)) = (name, listen) {
            out.push(Listener {
                name,
                listen,
                h2c,
                http2,
                certificates,
                forwarded,
                limits,
                misdirected,
                tls_required_for_tls_sessions,
            });
        }
    }
    out
}

/// The connection limits of one `[[listeners]]` table, each checked
/// against its range.
fn read_listener_limits(t: &mut Fields<'_>, p: &mut Problems) -> ListenerLimits {
    let d = ListenerLimits::default();
    let mut ranged = |t: &mut Fields<'_>, key: &'static str, default: u64, min: u64, max: u64| {
        let v: u64 = t.or(p, key, default);
        if !(min..=max).contains(&v) {
            p.push(
                t.key(key),
                format!("{v} is out of range; expected {min} to {max}"),
            );
        }
        v.clamp(min, max)
    };
    let max_connections = ranged(t, "max_connections", 10_000, 1, 1_000_000);
    let header_timeout_ms = ranged(t, "header_timeout_ms", 10_000, 100, 300_000);
    let keepalive_idle_seconds = ranged(t, "keepalive_idle_seconds", 60, 1, 3600);
    let streams = ranged(t, "h2_max_concurrent_streams", 100, 1, 1000);
    let header_list = ranged(t, "h2_max_header_list_bytes", 65_536, 1024, 1 << 20);
    let resets = ranged(t, "h2_max_pending_resets", 20, 1, 1000);
    // The ranges above fit every target type.
    ListenerLimits {
        max_connections: usize::try_from(max_connections).unwrap_or(d.max_connections),
        header_timeout: Duration::from_millis(header_timeout_ms),
        keepalive_idle_seconds,
        h2_max_concurrent_streams: u32::try_from(streams).unwrap_or(d.h2_max_concurrent_streams),
        h2_max_header_list_bytes: u32::try_from(header_list).unwrap_or(d.h2_max_header_list_bytes),
        h2_max_pending_resets: usize::try_from(resets).unwrap_or(d.h2_max_pending_resets),
    }
}

fn read_client_ip(f: &mut Fields<'_>, p: &mut Problems) -> ClientIpSettings {
    let mut t = f.table(p, "client_ip");
    let strategy = match t.or(p, "strategy", "walk".to_owned()).as_str() {
        "walk" => {
            if t.has("trusted_hops") {
                let _ = t.opt::<u8>(p, "trusted_hops");
                p.push(t.key("trusted_hops"), "only used with strategy = \"hops\"");
            }
            ChainStrategy::Walk
        }
        "hops" => match t.req::<u8>(
            p,
            "trusted_hops",
            "the number of trusted proxies in front of Vigil",
        ) {
            Some(n) if n >= 1 => ChainStrategy::Hops(n),
            Some(_) => {
                p.push(t.key("trusted_hops"), "must be at least 1");
                ChainStrategy::Walk
            }
            None => ChainStrategy::Walk,
        },
        other => {
            p.push(
                t.key("strategy"),
                format!("{other:?} is not a strategy; expected \"walk\" or \"hops\""),
            );
            ChainStrategy::Walk
        }
    };
    let settings = ClientIpSettings {
        strategy,
        max_header_bytes: t.or(p, "max_header_bytes", 8192),
        max_hops: t.or(p, "max_hops", 32),
        to_app: t.or(p, "to_app", true),
        strip_headers: {
            let names: Vec<String> = t.or(p, "strip_headers", Vec::new());
            if names.len() > 64 {
                p.push(t.key("strip_headers"), "at most 64 names");
            }
            names
                .iter()
                .enumerate()
                .filter_map(|(i, n)| match http::HeaderName::from_bytes(n.as_bytes()) {
                    Ok(h) => Some(h),
                    Err(_) => {
                        p.push(
                            format!("{}[{i}]", t.key("strip_headers")),
                            format!("{n:?} is not a header name"),
                        );
                        None
                    }
                })
                .collect()
        },
    };
    if !(64..=65_536).contains(&settings.max_header_bytes) {
        p.push(
            t.key("max_header_bytes"),
            format!(
                "{} is out of range; expected 64 to 65536",
                settings.max_header_bytes
            ),
        );
    }
    if !(1..=256).contains(&settings.max_hops) {
        p.push(
            t.key("max_hops"),
            format!("{} is out of range; expected 1 to 256", settings.max_hops),
        );
    }
    t.finish(p);
    settings
}

/// The engine's client-IP config from the settings and the trusted sets as
/// read now (files included). Problems with the sets as a whole (too many,
/// a name too long) are reported under `trusted_proxies`.
fn client_ip_config(
    settings: &ClientIpSettings,
    sets: &[TrustedSet],
    p: &mut Problems,
) -> vigil_engine::ClientIpConfig {
    let trusted = match trusted_proxies(sets) {
        Ok(t) => t,
        Err(errors) => {
            for e in errors {
                p.push("trusted_proxies", e.to_string());
            }
            vigil_engine::TrustedProxies::default()
        }
    };
    vigil_engine::ClientIpConfig {
        // Each listener chooses its headers; the engine's default is unused.
        headers: vigil_engine::ForwardedHeaders::default(),
        strategy: settings.strategy,
        trusted,
        max_header_bytes: settings.max_header_bytes,
        max_hops: settings.max_hops,
    }
}

/// Builds the engine's trusted sets from inline and file networks.
pub fn trusted_proxies(
    sets: &[TrustedSet],
) -> Result<vigil_engine::TrustedProxies, Vec<vigil_engine::TrustedSetError>> {
    vigil_engine::TrustedProxies::new(
        sets.iter()
            .map(|s| {
                let mut nets = s.cidrs.clone();
                nets.extend(s.file_cidrs.iter().copied());
                (s.name.clone(), nets)
            })
            .collect(),
    )
}

fn read_trusted(f: &mut Fields<'_>, base: &Path, p: &mut Problems) -> Vec<TrustedSet> {
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for mut t in f.tables(p, "trusted_proxies") {
        let name = unique_name(&mut t, p, &mut names);
        let raw: Vec<String> = t.or(p, "cidrs", Vec::new());
        let mut cidrs = Vec::new();
        for (i, c) in raw.iter().enumerate() {
            match crate::cidrs::parse_one(c) {
                Some(net) => cidrs.push(net),
                None => p.push(
                    format!("{}[{i}]", t.key("cidrs")),
                    format!("{c:?} is not a CIDR or an address"),
                ),
            }
        }
        let file = t.opt::<PathBuf>(p, "file").map(|x| resolve(base, x));
        let file_cidrs = match &file {
            Some(path) => crate::cidrs::read_file(path).unwrap_or_else(|e| {
                p.push(t.key("file"), e.to_string());
                Vec::new()
            }),
            None => Vec::new(),
        };
        if raw.is_empty() && file.is_none() {
            p.push(t.key("cidrs"), "a trusted set needs cidrs, a file, or both");
        }
        t.finish(p);
        if let Some(name) = name {
            out.push(TrustedSet {
                name,
                cidrs,
                file,
                file_cidrs,
            });
        }
    }
    out
}

/// Upper bound of an upstream's `connect_timeout_ms`: one minute.
const MAX_CONNECT_TIMEOUT_MS: u64 = 60_000;
/// Upper bound of an upstream's `read_timeout_ms`: one hour.
const MAX_READ_TIMEOUT_MS: u64 = 3_600_000;

fn read_upstreams(f: &mut Fields<'_>, p: &mut Problems) -> Vec<Upstream> {
    let tables = f.tables(p, "upstreams");
    if tables.is_empty() {
        p.push("upstreams", "at least one [[upstreams]] is required");
    }
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for mut t in tables {
        let name = unique_name(&mut t, p, &mut names);
        let raw: Vec<String> = t
            .req(p, "addresses", "a list of \"ip:port\" strings")
            .unwrap_or_default();
        let mut addresses = Vec::new();
        for (i, a) in raw.iter().enumerate() {
            match a.parse::<SocketAddr>() {
                Ok(a) => addresses.push(a),
                Err(_) => p.push(
                    format!("{}[{i}]", t.key("addresses")),
                    format!("{a:?} is not an \"ip:port\" address"),
                ),
            }
        }
        if raw.is_empty() && t.has("addresses") {
            p.push(t.key("addresses"), "must list at least one address");
        }
        let tls = t.or(p, "tls", false);
        let sni = t.or(p, "sni", String::new());
        let connect_timeout = Duration::from_millis(t.or(p, "connect_timeout_ms", 2000));
        let read_timeout = Duration::from_millis(t.or(p, "read_timeout_ms", 60_000));
        // A longer wait only holds the client and a connection on a dead app;
        // beyond these the client has long given up.
        for (key, d, max) in [
            (
                "connect_timeout_ms",
                connect_timeout,
                MAX_CONNECT_TIMEOUT_MS,
            ),
            ("read_timeout_ms", read_timeout, MAX_READ_TIMEOUT_MS),
        ] {
            if d.is_zero() || d > Duration::from_millis(max) {
                p.push(
                    t.key(key),
                    format!("{} is out of range; expected 1 to {max}", d.as_millis()),
                );
            }
        }
        let mut h = t.table(p, "health");
        let kind = match h.or(p, "kind", "tcp".to_owned()).as_str() {
            "tcp" => HealthKind::Tcp,
            "http" => {
                let path: String = h.or(p, "path", "/".to_owned());
                if !path.starts_with('/') {
                    p.push(h.key("path"), format!("{path:?} must start with /"));
                }
                HealthKind::Http { path }
            }
            other => {
                p.push(
                    h.key("kind"),
                    format!("{other:?} is not a health check; expected \"tcp\" or \"http\""),
                );
                HealthKind::Tcp
            }
        };
        if kind == HealthKind::Tcp {
            // Asked for so that it is known; only meaningful for http.
            if h.opt::<String>(p, "path").is_some() {
                p.push(h.key("path"), "only used with kind = \"http\"");
            }
        }
        // 0 turns each off.
        let interval: u64 = h.or(p, "interval_seconds", 5);
        within(p, h.key("interval_seconds"), interval, 0..=3_600);
        let eject: u64 = h.or(p, "eject_seconds", 10);
        within(p, h.key("eject_seconds"), eject, 0..=3_600);
        let health = Health {
            kind,
            interval: Duration::from_secs(interval.min(3_600)),
            eject: Duration::from_secs(eject.min(3_600)),
        };
        h.finish(p);
        t.finish(p);
        if let Some(name) = name {
            out.push(Upstream {
                name,
                addresses,
                tls,
                sni,
                connect_timeout,
                read_timeout,
                health,
            });
        }
    }
    out
}

/// What `[rules]` comes to.
struct ReadRules {
    set: RuleSet,
    dir: Option<PathBuf>,
    source: RulesSource,
    zone: String,
    bundle: Option<BundleInForce>,
}

/// `[rules]`: the rule directory (relative to the config file), the
/// time zone of `time.*` facts and where the rules come from. Every
/// problem of every rule file is reported under `rules.dir`, with its own
/// file, line and column; rules that name a route that does not exist, or
/// that step up or revoke on a route with nowhere to send the user, are
/// problems too. With `source = "controller"` (which needs a
/// `[controller]`), the bundle in force in the state directory, if any,
/// replaces the files' rules, and its problems against this config are
/// reported under `rules.source`: a reload that would drop the bundle's
/// routes is refused, never a silent return to the files.
fn read_rules(
    f: &mut Fields<'_>,
    base: &Path,
    routes: &[Route],
    state_dir: &Path,
    has_controller: bool,
    p: &mut Problems,
) -> ReadRules {
    let mut t = f.table(p, "rules");
    let dir: Option<PathBuf> = t.opt::<PathBuf>(p, "dir").map(|d| base.join(d));
    let zone: String = t.or(p, "time_zone", "UTC".to_owned());
    let source_name: String = t.or(p, "source", "files".to_owned());
    let dir_key = t.key("dir");
    let zone_key = t.key("time_zone");
    let source_key = t.key("source");
    t.finish(p);
    let source = match source_name.as_str() {
        "files" => RulesSource::Files,
        "controller" => {
            if !has_controller {
                p.push(
                    source_key.clone(),
                    "source = \"controller\" needs a [controller] to take the rules from",
                );
            }
            RulesSource::Controller
        }
        other => {
            p.push(
                source_key.clone(),
                format!("{other:?} is not a rules source; expected \"files\" or \"controller\""),
            );
            RulesSource::Files
        }
    };
    let mut set = RuleSet::empty();
    if let Some(dir) = &dir {
        match RuleSet::load_dir(dir) {
            Ok(loaded) => set = loaded,
            Err(errors) => {
                for e in errors.0 {
                    p.push(dir_key.clone(), e.to_string());
                }
            }
        }
    }
    match set.clone().with_time_zone(&zone) {
        Ok(zoned) => set = zoned,
        Err(e) => p.push(zone_key, e),
    }
    for problem in route_problems(&set, routes) {
        p.push(dir_key.clone(), problem);
    }
    let mut bundle = None;
    if source == RulesSource::Controller && has_controller {
        let path = state_dir.join(crate::rules_bundle::FILE_NAME);
        match crate::rules_bundle::read(state_dir) {
            Ok(None) => {}
            Ok(Some(stored)) => match compile_bundle(&stored.text, &zone, routes) {
                Ok(compiled) => {
                    set = compiled;
                    bundle = Some(BundleInForce {
                        version: stored.version,
                        sha256: stored.sha256,
                    });
                }
                Err(problems) => {
                    for problem in problems {
                        p.push(
                            source_key.clone(),
                            format!(
                                "the controller's rule bundle v{} in force ({}) does not compile against this config: {problem}",
                                stored.version,
                                path.display()
                            ),
                        );
                    }
                }
            },
            Err(e) => p.push(source_key.clone(), format!("{}: {e}", path.display())),
        }
    }
    ReadRules {
        set,
        dir,
        source,
        zone,
        bundle,
    }
}

/// What is wrong with `set` on a node with `routes`, beyond what the rule
/// file alone shows: routes it names that do not exist, and step-up or
/// revoke rules that reach a route with nowhere to send the user.
fn route_problems(set: &RuleSet, routes: &[Route]) -> Vec<String> {
    let mut out = Vec::new();
    for rule in set.rules() {
        let at = format!(
            "{}:{}: rule {:?}",
            rule.file.display(),
            rule.line,
            rule.name
        );
        for name in &rule.scope.routes {
            if !routes.iter().any(|r| &r.name == name) {
                out.push(format!("{at}: route {name:?} does not exist"));
            }
        }
        let applies =
            |r: &&Route| rule.scope.routes.is_empty() || rule.scope.routes.contains(&r.name);
        let enforces = |action: Action| {
            rule.mode == vigil_rules::RuleMode::Enforce
                && rule.action == vigil_rules::RuleAction::Decide(action)
        };
        for route in routes.iter().filter(applies) {
            if enforces(Action::StepUp) && route.step_up.is_none() {
                out.push(format!("{at}: steps up on route {:?}, which has no step_up_url or step_up = \"oidc\" (scope the rule with `routes`, or set one)", route.name));
            }
            if enforces(Action::Revoke) && route.login_url.is_none() {
                out.push(format!("{at}: revokes on route {:?}, which has no login_url (scope the rule with `routes`, or set one)", route.name));
            }
        }
    }
    out
}

/// Compiles a rule bundle's `text` exactly as a reload compiles rule
/// files: the file alone (problems named `bundle.toml:LINE:COLUMN`), the
/// time zone `zone`, and against `routes`. Every problem, each as
/// `vigil-proxy check` words it.
pub fn compile_bundle(text: &str, zone: &str, routes: &[Route]) -> Result<RuleSet, Vec<String>> {
    let files = [(
        PathBuf::from(vigil_fleet::RULES_BUNDLE_FILE),
        text.to_owned(),
    )];
    let set = RuleSet::parse_files(&files)
        .map_err(|errors| errors.0.iter().map(ToString::to_string).collect::<Vec<_>>())?
        .with_time_zone(zone)
        .map_err(|e| vec![e])?;
    let problems = route_problems(&set, routes);
    if problems.is_empty() {
        Ok(set)
    } else {
        Err(problems)
    }
}

impl Config {
    /// This config with the rule bundle `bundle` (`version`, `sha256`,
    /// `text`) in place of its rules, if it compiles against it
    /// ([`compile_bundle`]); every problem otherwise.
    pub fn with_bundle(
        &self,
        version: u64,
        sha256: &str,
        text: &str,
    ) -> Result<Config, Vec<String>> {
        let set = compile_bundle(text, &self.rules_time_zone, &self.routes)?;
        let mut next = self.clone();
        next.rules = Arc::new(set);
        next.rules_bundle = Some(BundleInForce {
            version,
            sha256: sha256.to_owned(),
        });
        Ok(next)
    }
}

fn read_routes(
    f: &mut Fields<'_>,
    upstreams: &[Upstream],
    has_controller: bool,
    p: &mut Problems,
) -> Vec<Route> {
    let tables = f.tables(p, "routes");
    if tables.is_empty() {
        p.push("routes", "at least one [[routes]] is required");
    }
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for mut t in tables {
        let name = unique_name(&mut t, p, &mut names);
        let hosts: Vec<String> = t.or(p, "hosts", Vec::new());
        for (i, h) in hosts.iter().enumerate() {
            if !is_server_name(h) {
                p.push(
                    format!("{}[{i}]", t.key("hosts")),
                    format!("{h:?} is not a host name or *.wildcard (no port)"),
                );
            }
        }
        let path_prefix: String = t.or(p, "path_prefix", "/".to_owned());
        if !path_prefix.starts_with('/') {
            p.push(
                t.key("path_prefix"),
                format!("{path_prefix:?} must start with /"),
            );
        }
        let upstream = t
            .req::<String>(p, "upstream", "the name of an [[upstreams]] entry")
            .and_then(|u| {
                let found = upstreams.iter().position(|x| x.name == u);
                if found.is_none() {
                    let known: Vec<&str> = upstreams.iter().map(|x| x.name.as_str()).collect();
                    p.push(
                        t.key("upstream"),
                        format!("no upstream named {u:?}; defined: {}", known.join(", ")),
                    );
                }
                found
            });
        let mode = match t.or(p, "mode", "enforce".to_owned()).as_str() {
            "enforce" => Mode::Enforce,
            "monitor" => Mode::Monitor,
            "off" => Mode::Off,
            other => {
                p.push(
                    t.key("mode"),
                    format!(
                        "{other:?} is not a mode; expected \"enforce\", \"monitor\" or \"off\""
                    ),
                );
                Mode::Enforce
            }
        };
        let on_error = match t.or(p, "on_error", "closed".to_owned()).as_str() {
            "closed" => FailMode::Closed,
            "open" => FailMode::Open,
            other => {
                p.push(
                    t.key("on_error"),
                    format!("{other:?} is not a failure mode; expected \"closed\" or \"open\""),
                );
                FailMode::Closed
            }
        };
        let login_url: Option<String> = t.opt(p, "login_url");
        let step_up_url: Option<String> = t.opt(p, "step_up_url");
        let via: Option<String> = t.opt(p, "step_up");
        let callback_path: Option<String> = t.opt(p, "callback_path");
        if via.is_none() && callback_path.is_some() {
            p.push(t.key("callback_path"), "only with step_up = \"oidc\"");
        }
        let it_was_me: Option<bool> = t.opt(p, "it_was_me");
        if via.is_none() && it_was_me == Some(true) {
            p.push(
                t.key("it_was_me"),
                "only with step_up = \"oidc\": the link is answered by a step-up at the provider",
            );
        }
        let step_up = match (via.as_deref(), step_up_url) {
            (None, url) => url.map(StepUpVia::Url),
            (Some("oidc"), url) => {
                if url.is_some() {
                    p.push(
                        t.key("step_up_url"),
                        "set with step_up = \"oidc\"; a route steps up one way",
                    );
                }
                let callback_path =
                    callback_path.unwrap_or_else(|| DEFAULT_CALLBACK_PATH.to_owned());
                if !is_callback_path(&callback_path) {
                    p.push(
                        t.key("callback_path"),
                        format!("{callback_path:?} is not a plain absolute path (no query, fragment, dot segments, `//`, `%` or spaces)"),
                    );
                }
                Some(StepUpVia::Oidc {
                    callback_path,
                    it_was_me: it_was_me.unwrap_or(false),
                })
            }
            (Some(other), _) => {
                p.push(
                    t.key("step_up"),
                    format!("{other:?} is not a step-up method; expected \"oidc\" (or leave it out and set step_up_url)"),
                );
                None
            }
        };
        let app_confirms = t.or(p, "app_confirms", false);
        let revocation_check = t.or(p, "revocation_check", true);
        let stale = read_stale(&mut t, has_controller, p);
        let dbsc = read_route_dbsc(&mut t, mode, p);
        let mut pt = t.table(p, "policy");
        let medium_at: Option<u8> = pt.opt(p, "medium_at");
        let high_at: Option<u8> = pt.opt(p, "high_at");
        let thresholds = match (medium_at, high_at) {
            (None, None) => None,
            (Some(medium_at), Some(high_at))
                if (1..=high_at).contains(&medium_at) && high_at <= 100 =>
            {
                Some(Thresholds { medium_at, high_at })
            }
            (Some(m), Some(h)) => {
                p.push(
                    pt.key("medium_at"),
                    format!(
                        "{m} must be at least 1 and at most high_at ({h}), which is at most 100"
                    ),
                );
                None
            }
            _ => {
                p.push(
                    pt.key("medium_at"),
                    "set medium_at and high_at together, or neither",
                );
                None
            }
        };
        let d = Policy::default();
        let mut action = |pt: &mut Fields<'_>, key: &'static str, default: Action| match pt
            .opt::<String>(p, key)
            .map(|s| s.parse::<Action>())
        {
            None => default,
            Some(Ok(a)) => a,
            Some(Err(e)) => {
                p.push(pt.key(key), e.to_string());
                default
            }
        };
        let policy = Policy {
            low: action(&mut pt, "low", d.low),
            medium: action(&mut pt, "medium", d.medium),
            high: action(&mut pt, "high", d.high),
            thresholds,
        };
        pt.finish(p);
        let uses = |a: Action| [policy.low, policy.medium, policy.high].contains(&a);
        if uses(Action::StepUp) && step_up.is_none() {
            p.push(
                t.key("step_up_url"),
                "missing; required when the policy uses step_up (or set step_up = \"oidc\")",
            );
        }
        if uses(Action::Revoke) && login_url.is_none() {
            p.push(
                t.key("login_url"),
                "missing; required when the policy uses revoke",
            );
        }
        t.finish(p);
        if let (Some(name), Some(upstream)) = (name, upstream) {
            out.push(Route {
                name,
                hosts: hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
                path_prefix,
                upstream,
                mode,
                on_error,
                login_url,
                step_up,
                app_confirms,
                revocation_check,
                policy,
                stale,
                dbsc,
            });
        }
    }
    out
}

/// A route's `dbsc`: `off` (default), `offer` or `require`; not on an
/// `off` route, which judges nothing.
fn read_route_dbsc(t: &mut Fields<'_>, mode: Mode, p: &mut Problems) -> crate::dbsc::RouteDbsc {
    use crate::dbsc::RouteDbsc;
    let dbsc = match t.or(p, "dbsc", "off".to_owned()).as_str() {
        "off" => RouteDbsc::Off,
        "offer" => RouteDbsc::Offer,
        "require" => RouteDbsc::Require,
        other => {
            p.push(
                t.key("dbsc"),
                format!("{other:?} is not a choice; expected \"off\", \"offer\" or \"require\""),
            );
            RouteDbsc::Off
        }
    };
    if dbsc != RouteDbsc::Off && mode == Mode::Off {
        p.push(
            t.key("dbsc"),
            "needs mode \"enforce\" or \"monitor\": an off route judges no session",
        );
    }
    dbsc
}

/// `[dbsc]`: Vigil's DBSC endpoints, bound cookie and limits
/// (`docs/configuration.md`).
fn read_dbsc(f: &mut Fields<'_>, has_controller: bool, p: &mut Problems) -> crate::dbsc::Settings {
    let d = crate::dbsc::Settings::default();
    let mut t = f.table(p, "dbsc");
    let path: String = t.or(p, "path", d.path.clone());
    if !is_callback_path(&path) || path.ends_with('/') || path == "/" {
        p.push(
            t.key("path"),
            format!("{path:?} is not a plain absolute path without a trailing / (no query, fragment, dot segments, `//`, `%` or spaces)"),
        );
    }
    let cookie_name: String = t.or(p, "cookie_name", d.cookie_name.clone());
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if cookie_name.is_empty() || !cookie_name.chars().all(token) {
        p.push(
            t.key("cookie_name"),
            format!("{cookie_name:?} is not a cookie name"),
        );
    } else if !cookie_name.starts_with("__Host-") || cookie_name.len() == "__Host-".len() {
        // The prefix makes the browser refuse the cookie from a subdomain
        // or over cleartext: a bound cookie set by anyone else would prove
        // nothing, but could shadow the real one.
        p.push(
            t.key("cookie_name"),
            format!("{cookie_name:?} must start with __Host-"),
        );
    }
    let mut num = |t: &mut Fields<'_>, key: &'static str, default: u64, lo: u64, hi: u64| {
        let v: u64 = t.or(p, key, default);
        within(p, t.key(key), v, lo..=hi);
        v.clamp(lo, hi)
    };
    let cookie_lifetime = num(&mut t, "cookie_lifetime_seconds", d.cookie_lifetime, 1, DAY);
    // By default a challenge outlives the bound cookie it was handed out
    // with: the browser signs that challenge when the cookie expires.
    let challenge_lifetime = num(
        &mut t,
        "challenge_lifetime_seconds",
        cookie_lifetime + 60,
        1,
        2 * DAY,
    );
    let registration_window = num(
        &mut t,
        "registration_window_seconds",
        d.registration_window,
        1,
        600,
    );
    let max_sessions = num(
        &mut t,
        "max_sessions",
        d.max_sessions as u64,
        16,
        100_000_000,
    );
    let idle_timeout = num(
        &mut t,
        "idle_timeout_seconds",
        d.idle_timeout,
        60,
        400 * DAY,
    );
    let per_client = num(
        &mut t,
        "per_client_per_minute",
        d.per_client_per_minute.into(),
        1,
        100_000,
    );
    let per_session = num(
        &mut t,
        "per_session_per_minute",
        d.per_session_per_minute.into(),
        1,
        10_000,
    );
    let exclude_paths: Vec<String> = t.or(p, "exclude_paths", Vec::new());
    for (i, x) in exclude_paths.iter().enumerate() {
        if !x.starts_with('/') {
            p.push(
                format!("{}[{i}]", t.key("exclude_paths")),
                format!("{x:?} must start with /"),
            );
        } else if x == "/" {
            p.push(
                format!("{}[{i}]", t.key("exclude_paths")),
                "\"/\" would exclude the whole site: nothing would need a proof".to_owned(),
            );
        }
    }
    let when_cut_off = match t.or(p, "when_cut_off", "serve".to_owned()).as_str() {
        "serve" => crate::dbsc::CutOff::Serve,
        "refuse_registration" => {
            if !has_controller {
                p.push(
                    t.key("when_cut_off"),
                    "\"refuse_registration\" only with a [controller]: a node without one is never cut off",
                );
            }
            crate::dbsc::CutOff::RefuseRegistration
        }
        other => {
            p.push(
                t.key("when_cut_off"),
                format!("{other:?} is not a choice; expected \"serve\" or \"refuse_registration\""),
            );
            crate::dbsc::CutOff::Serve
        }
    };
    t.finish(p);
    crate::dbsc::Settings {
        path,
        cookie_name,
        cookie_lifetime,
        challenge_lifetime,
        registration_window,
        max_sessions: usize::try_from(max_sessions).unwrap_or(usize::MAX),
        idle_timeout,
        exclude_paths,
        per_client_per_minute: u32::try_from(per_client).unwrap_or(u32::MAX),
        per_session_per_minute: u32::try_from(per_session).unwrap_or(u32::MAX),
        when_cut_off,
    }
}

/// A route's `stale_after` and `on_stale`: only with a `[controller]`,
/// whose stream is what keeps the node current.
fn read_stale(t: &mut Fields<'_>, has_controller: bool, p: &mut Problems) -> Option<Stale> {
    let after: Option<u64> = t.opt(p, "stale_after");
    let on_stale: Option<String> = t.opt(p, "on_stale");
    let on_stale = match on_stale.as_deref() {
        None | Some("fail_open") => OnStale::FailOpen,
        Some("fail_closed") => OnStale::FailClosed,
        Some(other) => {
            p.push(
                t.key("on_stale"),
                format!("{other:?} is not a choice; expected \"fail_open\" or \"fail_closed\""),
            );
            OnStale::FailOpen
        }
    };
    if after.is_none() && t.has("on_stale") {
        p.push(t.key("on_stale"), "only with stale_after");
    }
    let after = after?;
    // A current node hears from its controller every heartbeat (5 s): less
    // than two would call a healthy node stale between two of them.
    within(p, t.key("stale_after"), after, 10..=604_800);
    if !has_controller {
        p.push(
            t.key("stale_after"),
            "only meaningful with a [controller] section: without one the node has no fleet state to grow stale",
        );
    }
    Some(Stale {
        after: after.clamp(10, 604_800),
        on_stale,
    })
}

/// Where a route takes the provider's answer unless it says otherwise.
pub const DEFAULT_CALLBACK_PATH: &str = "/.vigil/oidc/callback";

/// A path Vigil can compare with a request's normalised path byte for
/// byte: absolute, printable, no query or fragment, nothing a normaliser
/// would rewrite.
fn is_callback_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= 256
        && !path.contains("//")
        && path
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'%' | b'\\'))
        && !path.split('/').any(|s| s == "." || s == "..")
}

/// `[oidc]`, when present: every key checked, the client secret read.
fn read_oidc(f: &mut Fields<'_>, base: &Path, p: &mut Problems) -> Option<Oidc> {
    if !f.has("oidc") {
        f.table(p, "oidc");
        return None;
    }
    let mut t = f.table(p, "oidc");
    let issuer: Option<String> = t.req(p, "issuer", "the identity provider's issuer URL");
    if let Some(issuer) = &issuer
        && let Err(e) = check_outbound_url(issuer)
    {
        p.push(t.key("issuer"), e);
    }
    let client_id: Option<String> = t.req(p, "client_id", "Vigil's client id at the provider");
    if client_id.as_deref() == Some("") {
        p.push(t.key("client_id"), "empty");
    }
    let client_secret = t
        .opt::<PathBuf>(p, "client_secret_file")
        .and_then(|file| read_secret(&t, p, base, "client_secret_file", file));
    let user_claim = match t.or(p, "user_claim", "sub".to_owned()).as_str() {
        "sub" => UserClaim::Sub,
        "email" => UserClaim::Email,
        other => {
            p.push(
                t.key("user_claim"),
                format!("{other:?} is not a user claim; expected \"sub\" or \"email\" (preferred_username is not unique at a provider)"),
            );
            UserClaim::Sub
        }
    };
    let require_auth_time = t.or(p, "require_auth_time", true);
    let ca_file = read_ca_file(&mut t, p, base);
    let mut secs = |t: &mut Fields<'_>, key: &'static str, default: u64, lo: u64, hi: u64| {
        let v: u64 = t.or(p, key, default);
        within(p, t.key(key), v, lo..=hi);
        Duration::from_secs(v.clamp(lo, hi))
    };
    let pending = secs(&mut t, "pending_seconds", 600, 30, 3_600);
    let clock_skew = secs(&mut t, "clock_skew_seconds", 30, 0, 600);
    let loop_window = secs(&mut t, "loop_seconds", 60, 0, 3_600);
    let timeout = secs(&mut t, "timeout_seconds", 5, 1, 60);
    let mut per_minute = |t: &mut Fields<'_>, key: &'static str, default: u32| {
        let v: u32 = t.or(p, key, default);
        within(p, t.key(key), v, 1..=100_000);
        v.clamp(1, 100_000)
    };
    let per_session_per_minute = per_minute(&mut t, "per_session_per_minute", 10);
    let per_client_per_minute = per_minute(&mut t, "per_client_per_minute", 60);
    t.finish(p);
    Some(Oidc {
        issuer: issuer?,
        client_id: client_id?,
        client_secret,
        user_claim,
        require_auth_time,
        ca_file,
        pending,
        clock_skew,
        per_session_per_minute,
        per_client_per_minute,
        loop_window,
        timeout,
    })
}

/// `[controller]`, when present: the URL checked, the token read.
fn read_controller(f: &mut Fields<'_>, base: &Path, p: &mut Problems) -> Option<Controller> {
    if !f.has("controller") {
        f.table(p, "controller");
        return None;
    }
    let mut t = f.table(p, "controller");
    let url: Option<String> = t.req(p, "url", "the controller's base URL");
    let url = url.and_then(|url| match check_outbound_url(&url) {
        Ok(()) => Some(url.trim_end_matches('/').to_owned()),
        Err(e) => {
            p.push(t.key("url"), e);
            None
        }
    });
    let client_cert = read_client_cert(&mut t, p, base, url.as_deref());
    let token_file: Option<PathBuf> = if t.has("token_file") || client_cert.is_none() {
        t.req(
            p,
            "token_file",
            "a file holding this node's token (or client_cert_file and client_key_file)",
        )
    } else {
        None
    };
    let has_token_file = token_file.is_some();
    let token = token_file.and_then(|file| read_secret(&t, p, base, "token_file", file));
    if let Some(token) = &token
        && !token.bytes().all(|b| b.is_ascii_graphic())
    {
        // It goes into an `Authorization` header as it is.
        p.push(
            t.key("token_file"),
            "the token must be one line of printable ASCII without spaces",
        );
    }
    let ca_file = read_ca_file(&mut t, p, base);
    let events_queue: usize = t.or(p, "events_queue", 10_000);
    within(p, t.key("events_queue"), events_queue, 1..=1_000_000);
    let events_queue_bytes: u64 = t.or(p, "events_queue_bytes", 64 << 20);
    within(
        p,
        t.key("events_queue_bytes"),
        events_queue_bytes,
        (64 << 10)..=(16 << 30),
    );
    t.finish(p);
    if has_token_file && token.is_none() {
        return None;
    }
    Some(Controller {
        url: url?,
        token,
        ca_file,
        client_cert: client_cert.flatten(),
        events_queue: events_queue.clamp(1, 1_000_000),
        events_queue_bytes: events_queue_bytes.clamp(64 << 10, 16 << 30),
    })
}

/// `[controller]`'s client certificate for mutual TLS: a PEM chain
/// (`client_cert_file`) and its key (`client_key_file`), both or neither,
/// parsed and matched at load; only over https. `None`: not configured;
/// `Some(None)`: configured but with a problem.
fn read_client_cert(
    t: &mut Fields<'_>,
    p: &mut Problems,
    base: &Path,
    url: Option<&str>,
) -> Option<Option<ClientCert>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let cert_file = t
        .opt::<PathBuf>(p, "client_cert_file")
        .map(|f| resolve(base, f));
    let key_file = t
        .opt::<PathBuf>(p, "client_key_file")
        .map(|f| resolve(base, f));
    let (cert_file, key_file) = match (cert_file, key_file) {
        (None, None) => return None,
        (Some(c), Some(k)) => (c, k),
        (Some(_), None) => {
            p.push(
                t.key("client_key_file"),
                "missing; client_cert_file needs its key",
            );
            return Some(None);
        }
        (None, Some(_)) => {
            p.push(
                t.key("client_cert_file"),
                "missing; client_key_file needs its certificate",
            );
            return Some(None);
        }
    };
    if url.is_some_and(|u| !u.starts_with("https:")) {
        p.push(
            t.key("client_cert_file"),
            "a client certificate needs an https url",
        );
    }
    let chain = match std::fs::read(&cert_file) {
        Err(e) => {
            p.push(
                t.key("client_cert_file"),
                format!("{}: cannot read: {e}", cert_file.display()),
            );
            None
        }
        Ok(pem) => match CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>() {
            Ok(chain) if !chain.is_empty() => Some(chain),
            Ok(_) => {
                p.push(
                    t.key("client_cert_file"),
                    format!("{}: no PEM certificate", cert_file.display()),
                );
                None
            }
            Err(e) => {
                p.push(
                    t.key("client_cert_file"),
                    format!("{}: {e}", cert_file.display()),
                );
                None
            }
        },
    };
    let key = match std::fs::read(&key_file) {
        Err(e) => {
            p.push(
                t.key("client_key_file"),
                format!("{}: cannot read: {e}", key_file.display()),
            );
            None
        }
        // The key's bytes are never part of a message.
        Ok(pem) => match PrivateKeyDer::from_pem_slice(&pem) {
            Ok(key) => Some(key),
            Err(e) => {
                p.push(
                    t.key("client_key_file"),
                    format!(
                        "{}: no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
                        key_file.display()
                    ),
                );
                None
            }
        },
    };
    let (Some(chain), Some(key)) = (chain, key) else {
        return Some(None);
    };
    let provider = rustls::crypto::ring::default_provider();
    match rustls::sign::CertifiedKey::from_der(chain, key, &provider) {
        Ok(_) => Some(Some(ClientCert {
            cert_file,
            key_file,
        })),
        Err(rustls::Error::InconsistentKeys(_)) => {
            p.push(
                t.key("client_key_file"),
                format!(
                    "{}: not the key of the certificate in client_cert_file",
                    key_file.display()
                ),
            );
            Some(None)
        }
        Err(e) => {
            p.push(
                t.key("client_key_file"),
                format!("{}: {e}", key_file.display()),
            );
            Some(None)
        }
    }
}

/// A secret read from `file` (the value of `key`), trimmed: the client
/// secret, the node's token. An unreadable or empty file is a problem.
fn read_secret(
    t: &Fields<'_>,
    p: &mut Problems,
    base: &Path,
    key: &str,
    file: PathBuf,
) -> Option<String> {
    let file = resolve(base, file);
    match std::fs::read_to_string(&file) {
        Ok(text) if !text.trim().is_empty() => Some(text.trim().to_owned()),
        Ok(_) => {
            p.push(t.key(key), format!("{}: empty", file.display()));
            None
        }
        Err(e) => {
            p.push(t.key(key), format!("{}: cannot read: {e}", file.display()));
            None
        }
    }
}

/// `ca_file`, when set: PEM certificates trusted for an outbound
/// connection besides the system's; an unreadable file is a problem.
fn read_ca_file(t: &mut Fields<'_>, p: &mut Problems, base: &Path) -> Option<PathBuf> {
    let ca_file = t.opt::<PathBuf>(p, "ca_file").map(|f| resolve(base, f));
    if let Some(file) = &ca_file
        && let Err(e) = std::fs::read(file)
    {
        p.push(
            t.key("ca_file"),
            format!("{}: cannot read: {e}", file.display()),
        );
    }
    ca_file
}

/// A URL Vigil calls out to with a secret (the provider's issuer, the
/// controller): an absolute `https` URL without query, fragment or user
/// info, or `http` to a loopback host (tests, a sidecar).
fn check_outbound_url(issuer: &str) -> Result<(), String> {
    let url = url::Url::parse(issuer).map_err(|e| format!("{issuer:?} is not a URL: {e}"))?;
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(format!("{issuer:?}: no query, fragment or user info"));
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "{issuer:?}: expected https (http only to a loopback host)"
        )),
    }
}

/// Routes that step up with OIDC need `[oidc]`, and each callback path
/// must select its own route on every host the route serves, or the
/// provider's answer would reach another route (or the app).
fn check_step_up(routes: &[Route], oidc: Option<&Oidc>, p: &mut Problems) {
    for (i, route) in routes.iter().enumerate() {
        let Some(StepUpVia::Oidc { callback_path, .. }) = &route.step_up else {
            continue;
        };
        let key = format!("routes[{i}].step_up");
        if oidc.is_none() {
            p.push(key.clone(), "\"oidc\" needs an [oidc] section");
        }
        let hosts: Vec<&str> = if route.hosts.is_empty() {
            vec![""]
        } else {
            route.hosts.iter().map(String::as_str).collect()
        };
        for host in hosts {
            let selected = crate::routes::select(routes, host, callback_path)
                .ok()
                .and_then(|s| s.index);
            if selected != Some(i) {
                p.push(
                    format!("routes[{i}].callback_path"),
                    format!(
                        "{callback_path:?} on host {host:?} selects {}, not this route; choose a path under the route's path_prefix",
                        selected
                            .and_then(|j| routes.get(j))
                            .map_or("no route".to_owned(), |r| format!("route {:?}", r.name))
                    ),
                );
            }
        }
    }
}

fn unique_name(t: &mut Fields<'_>, p: &mut Problems, seen: &mut HashSet<String>) -> Option<String> {
    let name: String = t.req(p, "name", "a unique name")?;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        p.push(
            t.key("name"),
            format!("{name:?} must be non-empty letters, digits, - or _"),
        );
        return None;
    }
    if !seen.insert(name.clone()) {
        p.push(t.key("name"), format!("{name:?} is used twice"));
        return None;
    }
    Some(name)
}

fn addr(
    t: &mut Fields<'_>,
    p: &mut Problems,
    key: &'static str,
    required: bool,
) -> Option<SocketAddr> {
    let raw: String = if required {
        t.req(p, key, "an \"ip:port\" address")?
    } else {
        t.opt(p, key)?
    };
    match raw.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            p.push(t.key(key), format!("{raw:?} is not an \"ip:port\" address"));
            None
        }
    }
}

fn resolve(base: &Path, path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        path
    } else {
        base.join(path)
    }
}

/// RFC 6265 cookie names are RFC 7230 tokens.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_server_name(name: &str) -> bool {
    let labels = name.strip_prefix("*.").unwrap_or(name);
    !labels.is_empty()
        && labels.len() <= 253
        && labels.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_controller_tls;
