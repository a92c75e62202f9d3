//! The controller's configuration: one TOML file. Unknown keys and bad
//! values are problems; the file's problems that can be found together are
//! reported together, each with its key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use vigil_engine::SessionHashKey;

/// A validated config.
#[derive(Clone)]
pub struct Config {
    /// Where the API listens.
    pub listen: SocketAddr,
    /// The store's URL: `sqlite://PATH` or `postgres://…`.
    pub store: String,
    /// The key user names are hashed with (`user_key_file`, else
    /// `hash_key_file`): user names in admin calls become the keys every
    /// node computes. The controller hashes no session.
    pub hash_key: SessionHashKey,
    /// The public ids of the configured keys, for logs and the admin API.
    pub key_ids: vigil_engine::HashKeyIds,
    /// SHA-256 of the admin token.
    pub admin_token: [u8; 32],
    /// The operator's client certificate (SHA-256 of its DER,
    /// `admin_certificate_sha256`): over HTTPS with `client_ca_file`, it
    /// stands for the admin token.
    pub admin_certificate_sha256: Option<[u8; 32]>,
    /// The edge nodes allowed to sync, each with its token's SHA-256.
    pub nodes: Vec<Node>,
    /// Changes kept in the log; older ones are compacted away and a node
    /// further behind gets a snapshot.
    pub keep_changes: u64,
    /// Events a node may post per minute; beyond it its posts are answered
    /// `429` until the minute is over. A stolen node token can end sessions
    /// at this pace at most, and the operator sees it.
    pub node_events_per_minute: u32,
    /// Session records (sightings, bindings, confirmations) a node may post
    /// per minute, counted apart from the events above: a busy node opens
    /// sessions by the thousand, and a record can only move a session's
    /// baseline earlier, never end it.
    pub node_sightings_per_minute: u32,
    /// Seconds within which a user's enforced detections on any node are
    /// counted together as entity risk on every node (the engine's
    /// `detection_window`).
    pub detection_window: u64,
    /// Seconds a session's baseline is kept after its last update; also
    /// the oldest first sighting a node may report.
    pub keep_sessions: u64,
    /// Seconds a detection and its facts are kept.
    pub keep_detections: u64,
    /// Seconds a user's fleet-wide history (profile) is kept after its
    /// last update (`keep_profiles_days`, 1 to 3,650, default 90: the
    /// engine's `user_idle_timeout`); also the oldest observation a node
    /// may report.
    pub keep_profiles: u64,
    /// Seconds an audit row is kept (`keep_audit_days`, 1 to 3,650,
    /// default 365).
    pub keep_audit: u64,
    /// How often this controller reads the store for changes nobody told
    /// it of: another replica's, when the PostgreSQL notification that
    /// should have woken it was lost (its listener's connection down), or
    /// another process's on SQLite.
    pub poll: std::time::Duration,
    /// The test hook: this change is left out of every live stream. From
    /// the environment ([`crate::tail::DROP_SEQ_ENV`]), never the file.
    pub test_drop_seq: Option<u64>,
    /// Whether user names given in admin calls are kept beside their keys
    /// (`user_names`, default [`UserNames::Keyed`]; `docs/privacy.md`).
    pub user_names: UserNames,
    /// The Shared Signals transmitters whose SETs are received
    /// (`[[ssf.transmitters]]`, `docs/signals.md`).
    pub ssf: Vec<crate::ssf::config::Transmitter>,
    /// The OpenID providers whose back-channel logout tokens are taken
    /// (`[[backchannel_logout.providers]]`, `docs/signals.md`).
    pub backchannel_logout: Vec<crate::bcl::config::Provider>,
    /// The receiver's other settings (`[ssf]`: per-source rate limits).
    pub ssf_inbound: crate::ssf::config::Inbound,
    /// The global token revocation endpoint's peers
    /// (`[[global_token_revocation.peers]]`, `docs/signals.md`).
    pub gtr: Vec<crate::ssf::gtr::Peer>,
    /// HTTPS (`[tls]`): without it the API is plain HTTP.
    pub tls: Option<crate::tls::Tls>,
    /// The controller's signing keys and issuer (`[signing]`): what it
    /// signs SETs, logout tokens and bearers with. Without it, nothing
    /// that must be signed is sent.
    pub signing: Option<std::sync::Arc<crate::signing::Signer>>,
    /// What one node may do to the fleet's state: its revocations a
    /// minute, its observations of users a day.
    pub budgets: NodeBudgets,
    /// How outbound calls are delivered (`[outbox]`, `docs/webhooks.md`).
    pub outbox: crate::outbox::Settings,
    /// Remediation webhooks (`[[webhooks]]`, `docs/webhooks.md`).
    pub webhooks: Vec<crate::outbox::Webhook>,
    /// Universal logout's targets (`[logout]`, `docs/signals.md`).
    pub logout: crate::logout::LogoutConfig,
    /// The Shared Signals transmitter (`[ssf_transmitter]`,
    /// `docs/signals.md`): none when not configured.
    pub ssf_tx: Option<crate::ssf::transmit::config::TxConfig>,
    /// The dashboard (`[dashboard]`, `docs/dashboard.md`).
    pub dashboard: crate::dashboard::DashboardConfig,
}

/// Per-node bounds on what a node's word can change (`docs/controller.md`,
/// Intake rules): what one stolen node token can do at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeBudgets {
    /// Session revocations a node may post per minute (its decided ones,
    /// and records that become revocations), apart from its other events
    /// (`node_revocations_per_minute`, default 300).
    pub revocations_per_minute: u32,
    /// Observations of one user a node may add to the user's history per
    /// UTC day (`node_observations_per_user_per_day`, default 64).
    pub observations_per_user_per_day: u32,
    /// Of those, observations opening a session
    /// (`node_new_sessions_per_user_per_day`, default 24).
    pub new_sessions_per_user_per_day: u32,
    /// Users a node may start a fleet history for (users with none yet)
    /// per UTC day (`node_new_users_per_day`, default 20000).
    pub new_users_per_day: u32,
    /// Revocations a node may have vouched for per UTC day on a baseline
    /// it recorded itself (`node_vouched_revocations_per_day`, default
    /// 1000); beyond, they are taken unvouched. Revocations on a baseline
    /// another node recorded are vouched regardless.
    pub vouched_revocations_per_day: u32,
}

impl NodeBudgets {
    /// The budgets of `raw`, each default or checked against its bounds.
    fn of(raw: &Raw, problems: &mut Vec<String>) -> NodeBudgets {
        let mut key = |name: &str, value: Option<u32>, default: u32, max: u32| {
            let v = value.unwrap_or(default);
            if !(1..=max).contains(&v) {
                problems.push(format!("{name}: {v} is out of range; expected 1 to {max}"));
            }
            v
        };
        NodeBudgets {
            revocations_per_minute: key(
                "node_revocations_per_minute",
                raw.node_revocations_per_minute,
                300,
                1_000_000,
            ),
            observations_per_user_per_day: key(
                "node_observations_per_user_per_day",
                raw.node_observations_per_user_per_day,
                64,
                100_000,
            ),
            new_sessions_per_user_per_day: key(
                "node_new_sessions_per_user_per_day",
                raw.node_new_sessions_per_user_per_day,
                24,
                100_000,
            ),
            new_users_per_day: key(
                "node_new_users_per_day",
                raw.node_new_users_per_day,
                20_000,
                10_000_000,
            ),
            vouched_revocations_per_day: key(
                "node_vouched_revocations_per_day",
                raw.node_vouched_revocations_per_day,
                1_000,
                1_000_000,
            ),
        }
    }
}

/// What the controller keeps of the user names given in admin calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserNames {
    /// Only the keyed hash of a name is stored and shown (`"keyed"`, the
    /// default); names kept under `"clear"` before are deleted at start.
    #[default]
    Keyed,
    /// Names given in admin calls are stored and shown beside their keys
    /// (`"clear"`), until the user's erasure.
    Clear,
}

/// An edge node allowed to sync. It proves who it is with any one of the
/// credentials given: its token, or its client certificate (both
/// certificate keys must match when both are given).
#[derive(Debug, Clone)]
pub struct Node {
    /// Its name, in logs and in the events it posts.
    pub name: String,
    /// SHA-256 of its token; none: no token names it.
    pub token_sha256: Option<[u8; 32]>,
    /// SHA-256 of its client certificate's DER (a pin).
    pub certificate_sha256: Option<[u8; 32]>,
    /// A DNS name (or IP address) its client certificate, issued by
    /// `[tls] client_ca_file`, carries as a subject alternative name.
    pub certificate_san: Option<rustls::pki_types::ServerName<'static>>,
    /// A disabled node's token is refused at once.
    pub disabled: bool,
}

impl std::fmt::Debug for Config {
    // Secrets and key material are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("store", &self.store)
            .field("nodes", &self.nodes.len())
            .field("keep_changes", &self.keep_changes)
            .field("poll", &self.poll)
            .field("user_names", &self.user_names)
            .field("tls", &self.tls)
            .field("signing", &self.signing)
            .finish_non_exhaustive()
    }
}

/// Why a config could not be used: every problem found, each with its key.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {}", .problems.join("; "))]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// `key: problem`, one each.
    pub problems: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: Option<SocketAddr>,
    store: Option<String>,
    hash_key_file: PathBuf,
    previous_hash_key_file: Option<PathBuf>,
    user_key_file: Option<PathBuf>,
    admin_token_file: PathBuf,
    admin_certificate_sha256: Option<String>,
    keep_changes: Option<u64>,
    node_events_per_minute: Option<u32>,
    node_sightings_per_minute: Option<u32>,
    detection_window_seconds: Option<u64>,
    keep_sessions_days: Option<u64>,
    keep_detections_days: Option<u64>,
    keep_profiles_days: Option<u64>,
    keep_audit_days: Option<u64>,
    poll_ms: Option<u64>,
    user_names: Option<String>,
    node_revocations_per_minute: Option<u32>,
    node_observations_per_user_per_day: Option<u32>,
    node_new_sessions_per_user_per_day: Option<u32>,
    node_new_users_per_day: Option<u32>,
    node_vouched_revocations_per_day: Option<u32>,
    #[serde(default)]
    nodes: Vec<RawNode>,
    #[serde(default)]
    ssf: crate::ssf::RawSsf,
    #[serde(default)]
    backchannel_logout: crate::bcl::RawBcl,
    #[serde(default)]
    global_token_revocation: crate::ssf::gtr::RawGtr,
    tls: Option<crate::tls::RawTls>,
    #[serde(default)]
    outbox: crate::outbox::config::RawOutbox,
    #[serde(default)]
    webhooks: Vec<crate::outbox::config::RawWebhook>,
    #[serde(default)]
    logout: crate::logout::RawLogout,
    ssf_transmitter: Option<crate::ssf::transmit::config::RawTx>,
    signing: Option<crate::signing::RawSigning>,
    #[serde(default)]
    dashboard: crate::dashboard::config::RawDashboard,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    token_sha256: Option<String>,
    certificate_sha256: Option<String>,
    certificate_san: Option<String>,
    #[serde(default)]
    disabled: bool,
}

/// SHA-256 of a token as stored: what `vigil-controller hash-token` prints.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let fail = |problems: Vec<String>| ConfigError {
            file: path.to_owned(),
            problems,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| fail(vec![format!("cannot read: {e}")]))?;
        let raw: Raw = toml::from_str(&text)
            .map_err(|e| fail(vec![e.to_string().trim().replace('\n', " ")]))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };
        let mut problems = Vec::new();

        let keys = read_keys(&raw, &resolve, &mut problems);
        let admin_token = match std::fs::read_to_string(resolve(&raw.admin_token_file)) {
            Ok(t) if t.trim().len() >= 16 => Some(token_hash(&t)),
            Ok(_) => {
                problems.push(format!(
                    "admin_token_file: {}: a token of at least 16 characters",
                    raw.admin_token_file.display()
                ));
                None
            }
            Err(e) => {
                problems.push(format!(
                    "admin_token_file: {}: {e}",
                    raw.admin_token_file.display()
                ));
                None
            }
        };
        let mut nodes = Vec::new();
        for (i, n) in raw.nodes.iter().enumerate() {
            let name_ok = !n.name.is_empty()
                && n.name.len() <= 64
                && n.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !name_ok {
                problems.push(format!(
                    "nodes[{i}].name: {:?}: 1 to 64 of a-z A-Z 0-9 - _",
                    n.name
                ));
            }
            if raw.nodes[..i].iter().any(|o| o.name == n.name) {
                problems.push(format!("nodes[{i}].name: {:?} appears twice", n.name));
            }
            if let Some(node) = node_credentials(i, n, &mut problems) {
                nodes.push(node);
            }
        }
        let tls = raw
            .tls
            .as_ref()
            .and_then(|t| crate::tls::load(t, resolve, &mut problems));
        let signing = raw
            .signing
            .as_ref()
            .and_then(|s| crate::signing::load(s, &resolve, &mut problems))
            .map(std::sync::Arc::new);
        check_node_certificates(&raw, &mut problems);
        let admin_certificate_sha256 = admin_certificate(&raw, &mut problems);
        let keep_changes = raw.keep_changes.unwrap_or(1_000_000);
        if !(1_000..=100_000_000).contains(&keep_changes) {
            problems.push(format!(
                "keep_changes: {keep_changes} is out of range; expected 1000 to 100000000"
            ));
        }
        let node_events_per_minute = raw.node_events_per_minute.unwrap_or(6_000);
        if !(1..=1_000_000).contains(&node_events_per_minute) {
            problems.push(format!(
                "node_events_per_minute: {node_events_per_minute} is out of range; expected 1 to 1000000"
            ));
        }
        let node_sightings_per_minute = raw.node_sightings_per_minute.unwrap_or(120_000);
        if !(1..=10_000_000).contains(&node_sightings_per_minute) {
            problems.push(format!(
                "node_sightings_per_minute: {node_sightings_per_minute} is out of range; expected 1 to 10000000"
            ));
        }
        let detection_window = raw.detection_window_seconds.unwrap_or(3600);
        if !(60..=7 * 86_400).contains(&detection_window) {
            problems.push(format!(
                "detection_window_seconds: {detection_window} is out of range; expected 60 to 604800"
            ));
        }
        let keep_sessions_days = raw.keep_sessions_days.unwrap_or(30);
        if !(1..=3650).contains(&keep_sessions_days) {
            problems.push(format!(
                "keep_sessions_days: {keep_sessions_days} is out of range; expected 1 to 3650"
            ));
        }
        let keep_detections_days = raw.keep_detections_days.unwrap_or(90);
        if !(1..=3650).contains(&keep_detections_days) {
            problems.push(format!(
                "keep_detections_days: {keep_detections_days} is out of range; expected 1 to 3650"
            ));
        }
        let keep_audit_days = raw.keep_audit_days.unwrap_or(365);
        if !(1..=3650).contains(&keep_audit_days) {
            problems.push(format!(
                "keep_audit_days: {keep_audit_days} is out of range; expected 1 to 3650"
            ));
        }
        let keep_profiles_days = raw.keep_profiles_days.unwrap_or(90);
        if !(1..=3650).contains(&keep_profiles_days) {
            problems.push(format!(
                "keep_profiles_days: {keep_profiles_days} is out of range; expected 1 to 3650"
            ));
        }
        let poll_ms = raw.poll_ms.unwrap_or(1_000);
        if !(10..=3_600_000).contains(&poll_ms) {
            problems.push(format!(
                "poll_ms: {poll_ms} is out of range; expected 10 to 3600000"
            ));
        }
        let user_names = match raw.user_names.as_deref() {
            None | Some("keyed") => UserNames::Keyed,
            Some("clear") => UserNames::Clear,
            Some(other) => {
                problems.push(format!(
                    "user_names: {other:?}: expected \"keyed\" or \"clear\""
                ));
                UserNames::Keyed
            }
        };
        let budgets = NodeBudgets::of(&raw, &mut problems);
        let outbox = crate::outbox::config::settings(&raw.outbox, &mut problems);
        let webhooks = crate::outbox::config::webhooks(&raw.webhooks, &outbox, base, &mut problems);
        let logout =
            crate::logout::load(&raw.logout, &outbox, signing.is_some(), base, &mut problems);
        let backchannel_logout =
            crate::bcl::config::load(raw.backchannel_logout, base, &mut problems);
        let (ssf, ssf_inbound) = crate::ssf::config::load(raw.ssf, base, &mut problems);
        let gtr = crate::ssf::gtr::load(raw.global_token_revocation, base, &mut problems);
        if raw.ssf_transmitter.is_some() && raw.signing.is_none() {
            problems.push(
                "ssf_transmitter: the transmitter signs its SETs with the [signing] keys; configure [signing]"
                    .to_owned(),
            );
        }
        let ssf_tx = raw
            .ssf_transmitter
            .and_then(|t| crate::ssf::transmit::config::load(t, base, user_names, &mut problems));
        let store = raw
            .store
            .unwrap_or_else(|| format!("sqlite://{}", base.join("controller.db").display()));
        if !(store.starts_with("sqlite:")
            || store.starts_with("postgres:")
            || store.starts_with("postgresql:"))
        {
            problems.push(format!(
                "store: {store:?}: expected sqlite://PATH or postgres://…"
            ));
        }
        let dashboard = raw
            .dashboard
            .validate(admin_token.as_ref(), base, &mut problems);
        match (keys, admin_token, problems.is_empty()) {
            (Some((hash_key, key_ids)), Some(admin_token), true) => Ok(Config {
                listen: raw
                    .listen
                    .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9700))),
                store,
                hash_key,
                key_ids,
                admin_token,
                admin_certificate_sha256,
                nodes,
                keep_changes,
                node_events_per_minute,
                node_sightings_per_minute,
                detection_window,
                keep_sessions: keep_sessions_days * 86_400,
                keep_detections: keep_detections_days * 86_400,
                keep_profiles: keep_profiles_days * 86_400,
                keep_audit: keep_audit_days * 86_400,
                poll: std::time::Duration::from_millis(poll_ms),
                test_drop_seq: crate::tail::drop_seq_from(
                    std::env::var(crate::tail::DROP_SEQ_ENV).ok().as_deref(),
                ),
                user_names,
                ssf,
                backchannel_logout,
                ssf_inbound,
                gtr,
                tls,
                signing,
                budgets,
                outbox,
                webhooks,
                logout,
                ssf_tx,
                dashboard,
            }),
            _ => Err(fail(problems)),
        }
    }
}

/// `hash_key_file`, `previous_hash_key_file` and `user_key_file`: the key
/// user names are hashed with and the ids of all three. The rules are the
/// nodes' (docs/controller.md, "Rotating the hash key"): a previous key
/// must differ from the current one, and while one is set `user_key_file`
/// must be too, or user keys would change with the session key.
fn read_keys(
    raw: &Raw,
    resolve: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Vec<String>,
) -> Option<(SessionHashKey, vigil_engine::HashKeyIds)> {
    let mut read = |key: &str, file: &Path| match std::fs::read(resolve(file)) {
        Ok(bytes) => parse_key(&bytes).or_else(|| {
            problems.push(format!(
                "{key}: {}: expected 32 raw bytes or 64 hex digits",
                file.display()
            ));
            None
        }),
        Err(e) => {
            problems.push(format!("{key}: {}: {e}", file.display()));
            None
        }
    };
    let current = read("hash_key_file", &raw.hash_key_file);
    let previous = raw
        .previous_hash_key_file
        .as_deref()
        .map(|f| read("previous_hash_key_file", f));
    let user = raw
        .user_key_file
        .as_deref()
        .map(|f| read("user_key_file", f));
    if let (Some(c), Some(Some(p)), Some(file)) = (&current, &previous, &raw.previous_hash_key_file)
        && c == p
    {
        problems.push(format!(
            "previous_hash_key_file: {}: holds the same key as hash_key_file; the previous key \
             must be the one being retired",
            file.display()
        ));
    }
    if previous.is_some() && user.is_none() {
        problems.push(
            "user_key_file: must be set while previous_hash_key_file is: user keys would \
             otherwise change with the session key; set it to the retiring key's file"
                .to_owned(),
        );
    }
    let current = current?;
    let previous = previous.map(|p| p.map(|k| k.id()));
    let user = match user {
        Some(user) => user?,
        None => current.clone(),
    };
    let ids = vigil_engine::HashKeyIds {
        current: current.id(),
        previous: match previous {
            Some(p) => Some(p?),
            None => None,
        },
        user: user.id(),
    };
    Some((user, ids))
}

/// A `[[nodes]]` entry's credentials: a token's hash, a certificate, or
/// both; problems pushed under `nodes[i].…`.
fn node_credentials(i: usize, n: &RawNode, problems: &mut Vec<String>) -> Option<Node> {
    let sha256 = |key: &str, value: &Option<String>, problems: &mut Vec<String>, hint: &str| {
        let value = value.as_deref()?;
        let parsed = hex::decode(value)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok());
        if parsed.is_none() {
            problems.push(format!("nodes[{i}].{key}: expected 64 hex digits ({hint})"));
        }
        Some(parsed)
    };
    let token = sha256(
        "token_sha256",
        &n.token_sha256,
        problems,
        "vigil-controller hash-token",
    );
    let pin = sha256(
        "certificate_sha256",
        &n.certificate_sha256,
        problems,
        "SHA-256 of the certificate's DER",
    );
    let san = n.certificate_san.as_deref().map(|san| {
        let parsed = crate::tls::parse_san(san);
        if parsed.is_none() {
            problems.push(format!(
                "nodes[{i}].certificate_san: {san:?} is not a DNS name or IP address"
            ));
        }
        parsed
    });
    if token.is_none() && pin.is_none() && san.is_none() {
        problems.push(format!(
            "nodes[{i}]: no credential; expected token_sha256, certificate_sha256 or certificate_san"
        ));
    }
    if matches!(token, Some(None)) || matches!(pin, Some(None)) || matches!(san, Some(None)) {
        return None;
    }
    Some(Node {
        name: n.name.clone(),
        token_sha256: token.flatten(),
        certificate_sha256: pin.flatten(),
        certificate_san: san.flatten(),
        disabled: n.disabled,
    })
}

/// `admin_certificate_sha256`: 64 hex digits pinning the operator's client
/// certificate, which needs `[tls] client_ca_file` (it is verified in the
/// handshake) and is no node's.
fn admin_certificate(raw: &Raw, problems: &mut Vec<String>) -> Option<[u8; 32]> {
    let value = raw.admin_certificate_sha256.as_deref()?;
    let pin = hex::decode(value)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok());
    if pin.is_none() {
        problems.push(
            "admin_certificate_sha256: expected 64 hex digits (SHA-256 of the certificate's DER)"
                .to_owned(),
        );
    }
    if !raw
        .tls
        .as_ref()
        .is_some_and(crate::tls::RawTls::verifies_clients)
    {
        problems.push(
            "admin_certificate_sha256: needs [tls] client_ca_file, which client certificates are verified against"
                .to_owned(),
        );
    }
    if raw.nodes.iter().any(|n| {
        n.certificate_sha256
            .as_deref()
            .is_some_and(|v| v.eq_ignore_ascii_case(value))
    }) {
        problems.push(format!(
            "admin_certificate_sha256: {value:?} is a node's certificate too"
        ));
    }
    pin
}

/// Node certificates need `[tls] client_ca_file` to be verified, and one
/// certificate name names one node.
fn check_node_certificates(raw: &Raw, problems: &mut Vec<String>) {
    let verified = raw
        .tls
        .as_ref()
        .is_some_and(crate::tls::RawTls::verifies_clients);
    for (i, n) in raw.nodes.iter().enumerate() {
        for (key, value) in [
            ("certificate_sha256", &n.certificate_sha256),
            ("certificate_san", &n.certificate_san),
        ] {
            let Some(value) = value else { continue };
            if !verified {
                problems.push(format!(
                    "nodes[{i}].{key}: needs [tls] client_ca_file, which node certificates are verified against"
                ));
            }
            let same = |o: &RawNode| {
                let other = if key == "certificate_san" {
                    &o.certificate_san
                } else {
                    &o.certificate_sha256
                };
                other
                    .as_deref()
                    .is_some_and(|v| v.eq_ignore_ascii_case(value))
            };
            if raw.nodes[..i].iter().any(same) {
                problems.push(format!("nodes[{i}].{key}: {value:?} is another node's too"));
            }
        }
    }
}

fn parse_key(bytes: &[u8]) -> Option<SessionHashKey> {
    if let Ok(raw) = <[u8; 32]>::try_from(bytes) {
        return Some(SessionHashKey::from_bytes(raw));
    }
    let text = std::str::from_utf8(bytes).ok()?.trim();
    let raw = <[u8; 32]>::try_from(hex::decode(text).ok()?).ok()?;
    Some(SessionHashKey::from_bytes(raw))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn load(extra: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hash.key"), "11".repeat(32)).unwrap();
        std::fs::write(dir.path().join("admin.token"), "admin-token-0123456789").unwrap();
        let path = dir.path().join("controller.toml");
        std::fs::write(
            &path,
            format!("hash_key_file = \"hash.key\"\nadmin_token_file = \"admin.token\"\n{extra}"),
        )
        .unwrap();
        Config::load(&path)
    }

    #[test]
    fn histories_are_kept_ninety_days_unless_told_within_bounds() {
        assert_eq!(load("").unwrap().keep_profiles, 90 * 86_400);
        assert_eq!(
            load("keep_profiles_days = 7").unwrap().keep_profiles,
            7 * 86_400
        );
        for bad in ["0", "3651"] {
            let e = load(&format!("keep_profiles_days = {bad}")).unwrap_err();
            assert_eq!(
                e.problems,
                [format!(
                    "keep_profiles_days: {bad} is out of range; expected 1 to 3650"
                )]
            );
        }
    }

    fn load_with(files: &[(&str, &str)], extra: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        std::fs::write(dir.path().join("admin.token"), "admin-token-0123456789").unwrap();
        let path = dir.path().join("controller.toml");
        std::fs::write(
            &path,
            format!("admin_token_file = \"admin.token\"\n{extra}"),
        )
        .unwrap();
        Config::load(&path)
    }

    #[test]
    fn a_rotation_keeps_user_keys_on_the_pinned_key() {
        let k1 = "11".repeat(32);
        let k2 = "22".repeat(32);
        let c = load_with(
            &[("k1", &k1), ("k2", &k2)],
            "hash_key_file = \"k2\"\nprevious_hash_key_file = \"k1\"\nuser_key_file = \"k1\"\n",
        )
        .unwrap();
        let before = load_with(&[("k1", &k1)], "hash_key_file = \"k1\"\n").unwrap();
        assert_eq!(c.hash_key.as_bytes(), before.hash_key.as_bytes());
        assert_eq!(
            c.key_ids.current,
            SessionHashKey::from_bytes([0x22; 32]).id()
        );
        assert_eq!(c.key_ids.previous, Some(before.key_ids.current));
        assert_eq!(c.key_ids.user, before.key_ids.current);
        assert_eq!(before.key_ids.previous, None);
    }

    #[test]
    fn rotation_mistakes_are_reported_together_with_their_files() {
        let k1 = "11".repeat(32);
        let e = load_with(
            &[("k1", &k1), ("k1-copy", &k1)],
            "hash_key_file = \"k1\"\nprevious_hash_key_file = \"k1-copy\"\n",
        )
        .unwrap_err();
        assert_eq!(
            e.problems,
            [
                "previous_hash_key_file: k1-copy: holds the same key as hash_key_file; the \
                 previous key must be the one being retired",
                "user_key_file: must be set while previous_hash_key_file is: user keys would \
                 otherwise change with the session key; set it to the retiring key's file",
            ]
        );
        let e = load_with(
            &[("k2", &"22".repeat(32)), ("short", "0102")],
            "hash_key_file = \"k2\"\nprevious_hash_key_file = \"gone\"\nuser_key_file = \"short\"\n",
        )
        .unwrap_err();
        assert_eq!(e.problems.len(), 2, "{:?}", e.problems);
        assert!(e.problems[0].starts_with("previous_hash_key_file: gone: "));
        assert_eq!(
            e.problems[1],
            "user_key_file: short: expected 32 raw bytes or 64 hex digits"
        );
    }

    #[test]
    fn a_nodes_budgets_have_defaults_and_bounds_each_named() {
        let c = load("").unwrap();
        assert_eq!(
            c.budgets,
            NodeBudgets {
                revocations_per_minute: 300,
                observations_per_user_per_day: 64,
                new_sessions_per_user_per_day: 24,
                new_users_per_day: 20_000,
                vouched_revocations_per_day: 1_000,
            }
        );
        let e = load(
            "node_revocations_per_minute = 0
node_observations_per_user_per_day = 100001
             node_new_sessions_per_user_per_day = 0
node_new_users_per_day = 10000001
node_vouched_revocations_per_day = 0",
        )
        .unwrap_err();
        assert_eq!(
            e.problems,
            [
                "node_revocations_per_minute: 0 is out of range; expected 1 to 1000000",
                "node_observations_per_user_per_day: 100001 is out of range; expected 1 to 100000",
                "node_new_sessions_per_user_per_day: 0 is out of range; expected 1 to 100000",
                "node_new_users_per_day: 10000001 is out of range; expected 1 to 10000000",
                "node_vouched_revocations_per_day: 0 is out of range; expected 1 to 1000000",
            ]
        );
    }

    #[test]
    fn user_names_are_keyed_unless_clear_is_chosen() {
        assert_eq!(load("").unwrap().user_names, UserNames::Keyed);
        assert_eq!(
            load("user_names = \"keyed\"").unwrap().user_names,
            UserNames::Keyed
        );
        assert_eq!(
            load("user_names = \"clear\"").unwrap().user_names,
            UserNames::Clear
        );
        let e = load("user_names = \"plain\"\nkeep_changes = 1").unwrap_err();
        assert_eq!(
            e.problems,
            vec![
                "keep_changes: 1 is out of range; expected 1000 to 100000000".to_owned(),
                "user_names: \"plain\": expected \"keyed\" or \"clear\"".to_owned(),
            ]
        );
    }
}
