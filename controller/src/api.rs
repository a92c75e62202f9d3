//! The controller's HTTP API (`docs/controller.md`): the sync stream and
//! event intake for edge nodes (a node's bearer token), and the admin API
//! (the admin's bearer token). Every error is JSON `{"error", "message"}`
//! with its status, from one place ([`ApiError`]).

use crate::bcl::logout as bcl_logout;
use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};

use crate::ssf::transmit as tx;
// An operator's confirmed compromise (`crate::ssf::transmit::compromise`).
use crate::ssf::transmit::compromise::confirmed_compromise as confirm;
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use vigil_engine::UserKey;
use vigil_fleet::{
    Change, EventBatch, Frame, MAX_BATCH, MAX_EVENTS, NodeEvent, NodeEventKind, SessionId, UserId,
    VERSION, VERSION_HEADER, write_frame,
};
use vigil_fleet::{
    MAX_RULES_BYTES, MAX_RULES_PROBLEM_BYTES, MAX_RULES_PROBLEMS, RULES_BUNDLE_FILE,
};

// The admin API for security teams.
use crate::admin::{
    false_positive, keep_name, list_users, trust_device, trust_network, user_detail,
};
use crate::config::{Config, Node, token_hash};
// Outbound calls: dead letters, universal logout.
use crate::logout::{get_logout, list_logouts, logout_user};
use crate::metrics::Metrics;
use crate::store::{Intake, Store, StoreError};
use crate::tail::{Published, Tail};
use crate::tls::Peer;
use crate::webhooks::{delete_dead, list_dead, retry_dead};

/// A quiet stream gets a heartbeat this often.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// Largest request body: an event batch.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The controller's shared state.
#[derive(Debug)]
pub struct App {
    /// The store.
    pub store: Store,
    /// The config in force.
    pub config: Config,
    /// The head committed by this process, for the tail to wake on.
    pub head: watch::Sender<u64>,
    /// Events each node posted in its current minute, by allowance
    /// ([`Allowance`]).
    pub posted: std::sync::Mutex<
        std::collections::HashMap<(String, Allowance), (tokio::time::Instant, u32)>,
    >,
    /// Nodes disabled through the admin API (in the store, shared by every
    /// replica; refreshed every [`NODES_REFRESH`]); a change wakes the
    /// watch of every open stream.
    pub disabled: watch::Sender<Arc<HashSet<String>>>,
    /// The one reader of the log, whose frames every stream shares.
    pub tail: Arc<Tail>,
    /// The metrics.
    pub metrics: Metrics,
    /// Admin changes on their way to the committer ([`committer`]).
    commits: mpsc::Sender<Pending>,
    /// The Shared Signals receiver ([`crate::ssf`]).
    pub ssf: crate::ssf::Receiver,
    /// Outbound calls: webhooks and universal logout targets
    /// ([`crate::outbox`]); `None` when none is configured.
    pub outbox: Option<Arc<crate::outbox::Outbox>>,
    /// The Shared Signals transmitter ([`crate::ssf::transmit`]).
    pub ssf_tx: crate::ssf::transmit::Runtime,
    /// The controller's signing keys (`[signing]`), when configured.
    pub signer: Option<Arc<crate::signing::Signer>>,
    /// The back-channel logout receiver ([`crate::bcl`]).
    pub bcl: crate::bcl::Receiver,
    /// What this process saw of each node, for the dashboard's fleet
    /// health ([`crate::dashboard::fleet`]).
    pub fleet: crate::dashboard::fleet::Fleet,
    /// The dashboard's sessions ([`crate::dashboard::session`]).
    pub dashboard: crate::dashboard::session::Sessions,
}

/// An admin change waiting to be committed, and where its sequence (and
/// the head after its transaction) goes; `None` if the store failed.
type Pending = (Change, oneshot::Sender<Option<(u64, u64)>>);

/// Admin changes are committed by one task, as many as are waiting (up to
/// [`MAX_BATCH`]) in one transaction: concurrent single-change calls share
/// a commit instead of queueing for the log's head row one by one.
async fn committer(store: Store, metrics: Metrics, mut waiting: mpsc::Receiver<Pending>) {
    while let Some(first) = waiting.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_BATCH {
            match waiting.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        let changes: Vec<Change> = group.iter().map(|(c, _)| c.clone()).collect();
        let started = tokio::time::Instant::now();
        match store.append(&changes, now_secs()).await {
            Ok(head) => {
                metrics
                    .commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                let first = head + 1 - changes.len() as u64;
                for ((_, reply), seq) in group.into_iter().zip(first..) {
                    let _ = reply.send(Some((seq, head)));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, changes = changes.len(), "store failed; admin changes not committed");
                for (_, reply) in group {
                    let _ = reply.send(None);
                }
            }
        }
    }
}

/// How often a replica rereads the nodes disabled through any replica.
pub const NODES_REFRESH: Duration = Duration::from_secs(1);

impl App {
    /// The controller's state over `store` with `config`, its log at
    /// `head`; `drop_seq` is the test hook of [`crate::tail::DROP_SEQ_ENV`].
    /// Starts its committer task: call it within a Tokio runtime.
    pub fn new(
        store: Store,
        config: Config,
        head: u64,
        drop_seq: Option<u64>,
    ) -> Result<App, prometheus::Error> {
        let metrics = Metrics::new()?;
        let (commits, waiting) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(committer(store.clone(), metrics.clone(), waiting));
        let ssf = crate::ssf::Receiver::new(&config.ssf, &config.ssf_inbound, &config.gtr, &store);
        let outbox = (!config.webhooks.is_empty() || !config.logout.apps.is_empty()).then(|| {
            Arc::new(crate::outbox::Outbox::new(
                store.clone(),
                config.outbox.clone(),
                &config.webhooks,
                &config.logout.apps,
                Some(Arc::new(crate::logout::Signing {
                    signer: config.signing.clone(),
                    ttl: config.logout.token_ttl,
                })),
                metrics.clone(),
            ))
        });
        let ssf_tx = crate::ssf::transmit::Runtime::new(config.ssf_tx.as_ref());
        let signer = config.signing.clone();
        let bcl = crate::bcl::Receiver::new(&config.backchannel_logout);
        Ok(App {
            outbox,
            store,
            config,
            head: watch::channel(head).0,
            posted: std::sync::Mutex::default(),
            disabled: watch::channel(Arc::default()).0,
            tail: Arc::new(Tail::new(head, drop_seq)),
            metrics,
            commits,
            ssf,
            ssf_tx,
            signer,
            bcl,
            fleet: crate::dashboard::fleet::Fleet::default(),
            dashboard: crate::dashboard::session::Sessions::default(),
        })
    }

    /// Takes the store's set of disabled nodes, waking the streams when it
    /// changed.
    pub async fn refresh_disabled(&self) -> Result<(), StoreError> {
        let now = self.store.disabled_nodes().await?;
        self.disabled.send_if_modified(|held| {
            if **held == now {
                return false;
            }
            *held = Arc::new(now);
            true
        });
        Ok(())
    }

    /// Gives back to `node`'s revocations or marks allowance this minute
    /// what a batch reserved ([`App::allow_events`]) and did not use.
    fn give_back(&self, node: &str, allowance: Allowance, unused: u32) {
        let mut posted = self
            .posted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(entry) = posted.get_mut(&(node.to_owned(), allowance)) {
            entry.1 = entry.1.saturating_sub(unused);
        }
    }

    /// Counts a batch's events posted by `node` against its minute's
    /// allowances; `Err` names the first one it would go beyond (nothing is
    /// counted then). Revocations are judged in the store: the batch
    /// reserves what is left of the minute's revocations (returned; a
    /// concurrent batch of the node's finds none left), and what it did
    /// not use is given back after ([`App::give_back`]). A
    /// batch is refused for its revocations only when the minute's
    /// allowance is partly used: one with more revocations than the whole
    /// allowance is taken in a fresh minute, its revocations beyond the
    /// allowance refused, so that no batch is refused for ever. Binding
    /// records' compromised marks are reserved the same way from an
    /// allowance of their own (returned second), but never refuse a batch:
    /// a mark beyond it is answered to be posted again
    /// ([`vigil_fleet::EventAck::retry`]), so that a node whose own
    /// sessions are marked by the hundred (a thief cloning his own) neither
    /// holds back its revocations nor loses a victim's mark.
    fn allow_events(&self, node: &str, events: &[NodeEvent]) -> Result<(u32, u32), Allowance> {
        let count = |a: Allowance| {
            let n = events
                .iter()
                .filter(|e| Allowance::of(&e.kind) == a)
                .count();
            u32::try_from(n).unwrap_or(u32::MAX)
        };
        let wanted = [
            (Allowance::Events, count(Allowance::Events)),
            (Allowance::Sightings, count(Allowance::Sightings)),
            (Allowance::Revocations, count(Allowance::Revocations)),
            (Allowance::Bindings, count(Allowance::Bindings)),
        ];
        let marks = events
            .iter()
            .any(|e| matches!(&e.kind, NodeEventKind::SessionBinding(r) if r.compromised));
        let mut posted = self
            .posted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = tokio::time::Instant::now();
        for (allowance, n) in wanted {
            let entry = posted
                .entry((node.to_owned(), allowance))
                .or_insert((now, 0));
            if now.duration_since(entry.0) >= Duration::from_secs(60) {
                *entry = (now, 0);
            }
            let over = entry.1.saturating_add(n) > allowance.per_minute(&self.config);
            // A batch larger than a whole allowance is taken in a fresh
            // minute: never refused for ever.
            let fresh =
                matches!(allowance, Allowance::Revocations | Allowance::Bindings) && entry.1 == 0;
            if over && !fresh {
                return Err(allowance);
            }
        }
        let mut reserved = 0;
        for (allowance, n) in wanted {
            if let Some(entry) = posted.get_mut(&(node.to_owned(), allowance)) {
                if allowance == Allowance::Revocations {
                    let limit = allowance.per_minute(&self.config);
                    reserved = limit.saturating_sub(entry.1);
                    entry.1 = limit;
                } else {
                    entry.1 = entry.1.saturating_add(n);
                }
            }
        }
        let mut marks_reserved = 0;
        if marks {
            let limit = Allowance::Marks.per_minute(&self.config);
            let entry = posted
                .entry((node.to_owned(), Allowance::Marks))
                .or_insert((now, 0));
            if now.duration_since(entry.0) >= Duration::from_secs(60) {
                *entry = (now, 0);
            }
            marks_reserved = limit.saturating_sub(entry.1);
            entry.1 = limit;
        }
        Ok((reserved, marks_reserved))
    }
}

/// Which per-node allowance an event counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Allowance {
    /// Revocations, detections and anything else a stolen node token could
    /// harm users with: `node_events_per_minute`.
    Events,
    /// Session records and observations of users:
    /// `node_sightings_per_minute`.
    Sightings,
    /// Session revocations a node decided, and session records that
    /// become revocations: `node_revocations_per_minute`, apart from the
    /// rest, so that a stolen node token ends at most that many sessions
    /// a minute however it spends its other allowances.
    Revocations,
    /// Binding records (advances and marks alike):
    /// `node_sightings_per_minute`, counted apart from the node's other
    /// sightings, so that a burst of rotations holds back no session
    /// record and no revocation.
    Bindings,
    /// Binding records' new compromised marks:
    /// `node_revocations_per_minute`, counted apart from revocations.
    /// Never a reason to refuse a batch: a mark beyond it waits on the
    /// node ([`vigil_fleet::EventAck::retry`]).
    Marks,
}

impl Allowance {
    fn of(kind: &NodeEventKind) -> Allowance {
        match kind {
            NodeEventKind::SessionRevoked { .. } => Allowance::Revocations,
            // A confirmation replaces a baseline whatever its age: rare in
            // real traffic, and counted with what can harm.
            NodeEventKind::SessionBaseline {
                confirmed: false, ..
            } => Allowance::Sightings,
            // What a node learnt of a user is a sighting too: real traffic
            // sends one a session and one a move of network. A trusted
            // value is never evicted and never counts against the user on
            // any node: counted with what can harm.
            NodeEventKind::UserLearned { trusted: false, .. } => Allowance::Sightings,
            // One a session per rotation; its mark is judged apart
            // (`Allowance::Marks`, in the store).
            NodeEventKind::SessionBinding(_) => Allowance::Bindings,
            _ => Allowance::Events,
        }
    }

    fn per_minute(self, config: &Config) -> u32 {
        match self {
            Allowance::Events => config.node_events_per_minute,
            Allowance::Sightings => config.node_sightings_per_minute,
            Allowance::Revocations | Allowance::Marks => config.budgets.revocations_per_minute,
            Allowance::Bindings => config.node_sightings_per_minute,
        }
    }

    fn key(self) -> &'static str {
        match self {
            Allowance::Events => "node_events_per_minute",
            Allowance::Sightings => "node_sightings_per_minute",
            Allowance::Revocations => "node_revocations_per_minute",
            Allowance::Bindings => "node_sightings_per_minute (binding records)",
            Allowance::Marks => "node_revocations_per_minute (compromised marks)",
        }
    }
}

/// An API error: its status, stable code and message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Every problem found, when there are several (a rule bundle's);
    /// the body's `problems` when not empty.
    problems: Vec<serde_json::Value>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            problems: Vec::new(),
        }
    }

    /// The status it answers with.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// What it says, for a person (the dashboard's error page).
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token or client certificate is required",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "store failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store failed; try again",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({"error": self.code, "message": self.message});
        if !self.problems.is_empty() {
            body["problems"] = serde_json::Value::Array(self.problems);
        }
        (
            self.status,
            [(header::CACHE_CONTROL, "no-store")],
            Json(body),
        )
            .into_response()
    }
}

/// The router.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/v1/sync", get(sync))
        .route("/v1/events", post(events))
        .route("/v1/admin/log", get(log_bounds))
        .route("/v1/admin/sessions/revoke", post(revoke_session))
        .route("/v1/admin/users/revoke", post(revoke_user))
        .route("/v1/admin/users/erase", post(erase_user))
        .route("/v1/admin/nodes", get(list_nodes))
        .route("/v1/admin/nodes/disable", post(disable_node))
        .route("/v1/admin/nodes/enable", post(enable_node))
        .route("/v1/admin/users/risk", post(user_risk))
        .route("/v1/admin/users/step-up", post(step_up_user))
        .route("/v1/admin/users", get(list_users))
        .route("/v1/admin/users/detail", post(user_detail))
        .route("/v1/admin/users/trust-device", post(trust_device))
        .route("/v1/admin/users/trust-network", post(trust_network))
        .route("/v1/admin/detections/false-positive", post(false_positive))
        .route("/v1/admin/detections/confirmed-compromise", post(confirm))
        .route("/v1/admin/ssf/transmit/streams", get(tx::admin_streams))
        .route("/v1/admin/rules", get(list_rules))
        .route("/v1/admin/rules", post(publish_rules))
        .route("/v1/admin/rules/{version}", get(get_rules))
        .route("/v1/admin/rules/rollback", post(rollback_rules))
        .route("/v1/ssf/push/{transmitter}", post(crate::ssf::push))
        .route("/v1/admin/outbox/dead", get(list_dead))
        .route("/v1/admin/outbox/retry", post(retry_dead))
        .route("/v1/admin/outbox/delete", post(delete_dead))
        .route("/v1/admin/users/logout", post(logout_user))
        .route("/v1/admin/logouts", get(list_logouts))
        .route("/v1/admin/logouts/{id}", get(get_logout))
        // The Shared Signals transmitter (`crate::ssf::transmit`).
        .route("/.well-known/ssf-configuration", get(tx::metadata))
        .route("/v1/ssf/streams", get(tx::read_streams))
        .route("/v1/ssf/streams", post(tx::create_stream))
        .route("/v1/ssf/streams", patch(tx::update_stream))
        .route("/v1/ssf/streams", put(tx::replace_stream))
        .route("/v1/ssf/streams", delete(tx::delete_stream))
        .route("/v1/ssf/status", get(tx::get_status))
        .route("/v1/ssf/status", post(tx::set_status))
        .route("/v1/ssf/subjects/add", post(tx::add_subject))
        .route("/v1/ssf/subjects/remove", post(tx::remove_subject))
        .route("/v1/ssf/verify", post(tx::verify))
        .route("/v1/ssf/poll/{stream_id}", post(tx::deliver::poll))
        .route("/v1/oidc/backchannel-logout/{provider}", post(bcl_logout))
        .route("/v1/admin/ssf/streams", get(crate::ssf::status::streams))
        .route("/v1/global-token-revocation", post(crate::ssf::gtr::revoke))
        .route("/v1/admin/audit", get(crate::admin_audit::list))
        .merge(crate::dashboard::router(&app))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            crate::admin_audit::audit_admin,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The API's OpenAPI document (`controller/api/openapi.json`, committed;
/// a test holds it to the routes).
pub const OPENAPI: &str = include_str!("../api/openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// The public halves of the controller's signing keys (`[signing]`), for
/// the peers that verify what it signs; `404` when it signs nothing.
/// Peers may cache it for five minutes: a key is published before it signs
/// (`docs/controller.md`, "Signing keys").
async fn jwks(State(app): State<Arc<App>>) -> Response {
    match &app.signer {
        Some(signer) => (
            [
                (header::CONTENT_TYPE, "application/jwk-set+json"),
                (header::CACHE_CONTROL, "public, max-age=300"),
            ],
            signer.jwks().to_string(),
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_configured",
            "this controller has no [signing] keys",
        )
        .into_response(),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The node a request's credentials name, if enabled: its client
/// certificate (verified in the TLS handshake), its bearer token, or both.
/// Every credential presented must be valid and name the same one node: an
/// unknown certificate is refused as an unknown token is, even beside a
/// good token. Tokens are compared as their SHA-256: the stored form,
/// which says nothing of the token.
fn node<'a>(app: &'a App, headers: &HeaderMap, peer: &Peer) -> Result<&'a Node, ApiError> {
    let nodes = &app.config.nodes;
    let by_cert = match &peer.cert {
        None => None,
        Some(cert) => {
            let mut named = nodes.iter().filter(|n| cert.names(n));
            match (named.next(), named.next()) {
                (Some(n), None) => Some(n),
                _ => return Err(ApiError::unauthorized()),
            }
        }
    };
    let by_token = match bearer(headers) {
        None => None,
        Some(token) => {
            let hash = token_hash(token);
            let named = nodes.iter().find(|n| n.token_sha256 == Some(hash));
            Some(named.ok_or_else(ApiError::unauthorized)?)
        }
    };
    let node = match (by_cert, by_token) {
        (Some(a), Some(b)) if a.name == b.name => a,
        (Some(n), None) | (None, Some(n)) => n,
        _ => return Err(ApiError::unauthorized()),
    };
    if node.disabled || app.disabled.borrow().contains(&node.name) {
        return Err(ApiError::unauthorized());
    }
    Ok(node)
}

/// The operator: the admin bearer token, or over HTTPS with
/// `client_ca_file` the client certificate `admin_certificate_sha256`
/// pins. As for nodes, every credential presented must be valid: a wrong
/// token is refused beside the admin's certificate, and a certificate that
/// is not the admin's (a node's) is refused beside the admin's token.
pub(crate) fn admin(app: &App, headers: &HeaderMap, peer: &Peer) -> Result<(), ApiError> {
    let by_cert = match (&peer.cert, app.config.admin_certificate_sha256) {
        (None, _) => None,
        (Some(cert), Some(pin)) if cert.sha256() == pin => Some(true),
        // A node's certificate, or any other: not the admin's. Without a
        // pin every client certificate is a node's, and the token decides.
        (Some(_), Some(_)) => Some(false),
        (Some(_), None) => None,
    };
    let by_token = bearer(headers).map(|token| token_hash(token) == app.config.admin_token);
    match (by_cert, by_token) {
        (Some(true), None | Some(true)) | (None, Some(true)) => Ok(()),
        _ => Err(ApiError::unauthorized()),
    }
}

/// Reads a JSON body, after the caller is authenticated: an unknown
/// caller learns nothing about what a good body looks like.
pub(crate) fn json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_body", e.to_string()))
}

/// `GET /metrics`: Prometheus text; counts and durations only
/// (`crate::metrics`), so it needs no token.
async fn metrics(State(app): State<Arc<App>>) -> Response {
    crate::feedback::refresh_metrics(&app).await;
    (
        [
            (header::CONTENT_TYPE, "text/plain; version=0.0.4"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        app.metrics.render(),
    )
        .into_response()
}

/// Commits an admin change, with whatever others are waiting
/// ([`committer`]), and wakes the tail; its sequence number.
pub(crate) async fn commit(app: &App, change: Change) -> Result<u64, ApiError> {
    let unavailable = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store failed; try again",
        )
    };
    let (reply, answer) = oneshot::channel();
    app.commits
        .send((change, reply))
        .await
        .map_err(|_| unavailable())?;
    let (seq, head) = answer.await.ok().flatten().ok_or_else(unavailable)?;
    app.head.send_replace(head);
    Ok(seq)
}

/// The `since` of a sync query: absent is 0; anything but one decimal
/// `since` (a second one, a sign, a non-digit) is refused rather than
/// guessed at.
fn since_of(query: Option<&str>) -> Result<u64, ApiError> {
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "expected ?since=<decimal>",
        )
    };
    let mut since = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let value = pair.strip_prefix("since=").ok_or_else(bad)?;
        if since.is_some() || value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        since = Some(value.parse::<u64>().map_err(|_| bad())?);
    }
    Ok(since.unwrap_or(0))
}

/// The protocol version a node speaks ([`VERSION_HEADER`]; absent is 1),
/// and the one this controller answers in: the node's, or this
/// controller's own when the node's is newer.
fn version_of(headers: &HeaderMap) -> Result<u32, ApiError> {
    let Some(value) = headers.get(VERSION_HEADER) else {
        return Ok(1);
    };
    let v = value
        .to_str()
        .ok()
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|v| *v >= 1)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "version",
                format!("{VERSION_HEADER}: a protocol version from 1"),
            )
        })?;
    Ok(v.min(VERSION))
}

/// `GET /v1/sync?since=N`: the stream of changes after `N`, or a snapshot
/// first when `N` is zero, behind the log's oldest, or ahead of its head.
async fn sync(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    // Subscribed to the disabled nodes before the node is judged: a
    // disable landing after the judgement wakes the watch below, and
    // never slips between the two unseen.
    let mut disabled = app.disabled.subscribe();
    let node = node(&app, &headers, &peer)?.name.clone();
    let since = since_of(query.as_deref())?;
    let v = version_of(&headers)?;
    // Subscribed before anything is read: no frame published from here on
    // is missed.
    let live = app.tail.subscribe();
    let bounds = app.store.bounds().await?;
    let snapshot = since == 0 || since.saturating_add(1) < bounds.oldest || since > bounds.head;
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(8);
    tracing::info!(node, since, head = bounds.head, snapshot, "node subscribed");
    // Disabled while the store was read: refused as at the door.
    if disabled.borrow_and_update().contains(&node) {
        return Err(ApiError::unauthorized());
    }
    let name = node.clone();
    app.fleet.opened(&node, now_secs());
    let mut task = tokio::spawn(async move {
        app.metrics.subscribers.inc();
        let ended = stream(&app, &node, &tx, live, v, since, snapshot, bounds).await;
        app.metrics.subscribers.dec();
        app.fleet.closed(&node);
        if let Err(e) = ended {
            tracing::info!(node, error = %e, "stream ended");
        }
    });
    // A node disabled through the admin API loses its open stream at once.
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut task => return,
                changed = disabled.changed() => {
                    if changed.is_err() || disabled.borrow_and_update().contains(&name) {
                        task.abort();
                        tracing::warn!(node = name, "stream ended: the node was disabled");
                        return;
                    }
                }
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-store")
        .body(body)
        .unwrap_or_default())
}

/// Why a stream stopped.
#[derive(Debug, thiserror::Error)]
enum StreamEnd {
    #[error("the node went away")]
    Gone,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the log has a gap at {0}")]
    Gap(u64),
}

type Tx = mpsc::Sender<Result<Bytes, Infallible>>;

async fn send(tx: &Tx, frame: &Frame) -> Result<(), StreamEnd> {
    send_bytes(tx, Bytes::from(write_frame(frame))).await
}

async fn send_bytes(tx: &Tx, bytes: Bytes) -> Result<(), StreamEnd> {
    if bytes.is_empty() {
        return Ok(());
    }
    tx.send(Ok(bytes)).await.map_err(|_| StreamEnd::Gone)
}

/// One node's stream: the hello, a snapshot if due, then the changes after
/// its cursor — the tail's shared frames ([`crate::tail`]) whenever the
/// next one starts right after the cursor, and the stream's own reads of
/// the store otherwise (joining behind, or lagging) up to a frame boundary.
#[allow(clippy::too_many_arguments)] // One call site; a struct would only rename them.
async fn stream(
    app: &App,
    node: &str,
    tx: &Tx,
    mut live: broadcast::Receiver<Published>,
    v: u32,
    since: u64,
    snapshot: bool,
    bounds: crate::store::Bounds,
) -> Result<(), StreamEnd> {
    send(
        tx,
        &Frame::Hello {
            v,
            head: bounds.head,
            oldest: bounds.oldest,
            snapshot,
        },
    )
    .await?;
    let mut cursor = since;
    if snapshot {
        let (seq, mut changes) = app.store.snapshot().await?;
        changes.retain(|c| c.in_snapshot_of(v));
        // A rule bundle in a chunk of its own (`Change::travels_alone`),
        // after the rest.
        let (alone, together): (Vec<Change>, Vec<Change>) =
            changes.into_iter().partition(Change::travels_alone);
        for chunk in together.chunks(MAX_BATCH).chain(alone.chunks(1)) {
            send(
                tx,
                &Frame::Snapshot {
                    seq,
                    changes: chunk.to_vec(),
                },
            )
            .await?;
        }
        send(tx, &Frame::SnapshotEnd { seq }).await?;
        cursor = seq;
    }
    cursor = catch_up(app, tx, v, cursor, app.tail.published()).await?;
    app.fleet.sent(node, cursor);
    let mut last_sent = tokio::time::Instant::now();
    loop {
        let next = tokio::select! {
            next = live.recv() => next,
            () = tokio::time::sleep_until(last_sent + HEARTBEAT) => {
                send(tx, &Frame::Heartbeat { head: cursor }).await?;
                last_sent = tokio::time::Instant::now();
                continue;
            }
            () = tx.closed() => return Err(StreamEnd::Gone),
        };
        match next {
            Ok(frame) if frame.last <= cursor => continue,
            // A node of an older version reads the store, each change as
            // it can take it (`Change::for_version`).
            Ok(frame) if v < VERSION => cursor = catch_up(app, tx, v, cursor, frame.last).await?,
            Ok(frame) if frame.first == cursor + 1 => {
                send_bytes(tx, frame.bytes).await?;
                app.metrics.sent("shared", frame.last - cursor);
                cursor = frame.last;
            }
            // Frames this stream did not see (it joined or caught up
            // between them), or one that overlaps its cursor.
            Ok(frame) => cursor = catch_up(app, tx, v, cursor, frame.last).await?,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                app.metrics.lagged.inc();
                cursor = catch_up(app, tx, v, cursor, app.tail.published()).await?;
            }
            Err(broadcast::error::RecvError::Closed) => return Err(StreamEnd::Gone),
        }
        app.fleet.sent(node, cursor);
        last_sent = tokio::time::Instant::now();
    }
}

/// Reads the store from `cursor` up to `to` (a frame boundary of the
/// tail's) and sends it; returns the new cursor. The log's numbers are
/// contiguous by construction (store.rs); a hole here is compaction
/// overtaking a slow node: the stream ends and the node resyncs.
async fn catch_up(app: &App, tx: &Tx, v: u32, mut cursor: u64, to: u64) -> Result<u64, StreamEnd> {
    while cursor < to {
        let limit = usize::try_from(to - cursor).map_or(MAX_BATCH, |n| n.min(MAX_BATCH));
        let batch = app.store.since(cursor, limit).await.inspect_err(|_| {
            app.metrics.store_read_errors.inc();
        })?;
        let Some(&(first, _)) = batch.first() else {
            break;
        };
        if first != cursor + 1 {
            return Err(StreamEnd::Gap(cursor + 1));
        }
        let n = batch.len() as u64;
        let batch = if v < VERSION {
            batch
                .into_iter()
                .map(|(seq, c)| (seq, c.for_version(v)))
                .collect()
        } else {
            batch
        };
        send_bytes(tx, app.tail.encode(batch)).await?;
        app.metrics.sent("store", n);
        cursor = first + n - 1;
    }
    Ok(cursor)
}

/// `POST /v1/events`: a node's events, taken once each.
async fn events(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let node = node(&app, &headers, &peer)?.name.clone();
    app.fleet.events(&node, now_secs());
    let batch: EventBatch = json(&body)?;
    if !(1..=VERSION).contains(&batch.v) || batch.events.iter().any(|e| e.kind.since() > batch.v) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "version",
            format!(
                "protocol version {} with only its kinds of events; this controller speaks 1 to {VERSION}",
                batch.v
            ),
        ));
    }
    if batch.events.len() > MAX_EVENTS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("at most {MAX_EVENTS} events"),
        ));
    }
    if batch
        .events
        .iter()
        .any(|e| e.id.is_empty() || e.id.len() > 128)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_event_id",
            "event ids are 1 to 128 bytes",
        ));
    }
    if let Some(bad) = batch.events.iter().find_map(|e| event_problem(&e.kind)) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_event", bad));
    }
    let (revocations_left, marks_left) = match app.allow_events(&node, &batch.events) {
        Ok(reserved) => reserved,
        Err(allowance) => {
            app.metrics
                .events("rate_limited", batch.events.len() as u64);
            tracing::warn!(
                node,
                events = batch.events.len(),
                allowance = allowance.key(),
                "node over its allowance per minute; batch refused"
            );
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "at most {} per node per minute ({})",
                    allowance.per_minute(&app.config),
                    allowance.key()
                ),
            ));
        }
    };
    let intake = Intake {
        detection_window: app.config.detection_window,
        max_session_age: app.config.keep_sessions,
        revocations_left,
        marks_left,
        keep_profiles: app.config.keep_profiles,
        budgets: app.config.budgets,
        rotating: app.config.key_ids.previous.is_some(),
        keep_counts: app.config.keep_detections,
    };
    let started = tokio::time::Instant::now();
    let taken = app
        .store
        .take_events(&node, &batch.events, now_secs(), intake)
        .await;
    let (used, marked) = taken
        .as_ref()
        .map_or((0, 0), |(_, taken, _)| (taken.revocations, taken.marks));
    app.give_back(
        &node,
        Allowance::Revocations,
        revocations_left.saturating_sub(used),
    );
    app.give_back(&node, Allowance::Marks, marks_left.saturating_sub(marked));
    let (ack, taken, head) = taken?;
    if taken.malformed > 0 {
        tracing::warn!(
            node,
            records = taken.malformed,
            "binding records no node writes (generation or nonce 0) refused; the rest taken"
        );
    }
    if !ack.retry.is_empty() {
        app.metrics.refused(
            &node,
            "marks_rate_limited",
            u64::try_from(ack.retry.len()).unwrap_or(u64::MAX),
        );
        tracing::warn!(
            node,
            marks = ack.retry.len(),
            "compromised marks beyond the node's marks this minute: advances taken, marks to be posted again"
        );
    }
    if taken.ignored > 0 {
        tracing::debug!(
            node,
            ignored = taken.ignored,
            "session records that changed nothing"
        );
    }
    if taken.unvouched_over_budget > 0 {
        app.metrics
            .unvouched
            .with_label_values(&[node.as_str()])
            .inc_by(u64::from(taken.unvouched_over_budget));
        tracing::warn!(
            node,
            revocations = taken.unvouched_over_budget,
            "a node's revocations on its own baselines beyond node_vouched_revocations_per_day: taken unvouched"
        );
    }
    for (refusal, n) in taken.refusals() {
        app.metrics.refused(&node, refusal.as_str(), u64::from(n));
        if refusal.is_revocation() {
            tracing::warn!(
                node,
                reason = refusal.as_str(),
                revocations = n,
                "a node's revocations without evidence refused: not streamed"
            );
        } else {
            tracing::info!(
                node,
                reason = refusal.as_str(),
                observations = n,
                "a node's observations beyond its daily budget ignored"
            );
        }
    }
    app.metrics
        .commit_seconds
        .observe(started.elapsed().as_secs_f64());
    app.metrics.events("taken", ack.accepted as u64);
    app.metrics.events("duplicate", ack.duplicates as u64);
    app.head.send_replace(head);
    // After the commit, for every detection of the batch: a batch posted
    // again (no ack reached the node) enqueues the same delivery ids.
    crate::webhooks::detections(&app, &node, &batch.events).await?;
    Ok(Json(ack).into_response())
}

/// What is wrong with an event's fields, if anything: every string is
/// bounded, so that a node cannot fill the store through one event.
fn event_problem(kind: &NodeEventKind) -> Option<&'static str> {
    let short = |s: &str, max: usize| !s.is_empty() && s.len() <= max;
    match kind {
        NodeEventKind::Detection {
            reference,
            route,
            rule,
            action,
            score,
            reasons,
            facts,
            ..
        } => {
            if let Some(problem) = facts
                .as_deref()
                .and_then(vigil_fleet::RequestFacts::problem)
            {
                return Some(problem);
            }
            let ok = short(reference, 64)
                && short(route, 128)
                && rule.as_deref().is_none_or(|r| short(r, 128))
                && short(action, 32)
                && *score <= 100
                && reasons.len() <= 32
                && reasons.iter().all(|(code, _)| short(code, 64));
            (!ok).then_some(
                "a detection's reference (64), route (128), rule (128), action (32) and \
                 reason codes (64, at most 32) are bounded; score 0 to 100",
            )
        }
        NodeEventKind::Counts(counts) => counts.problem(),
        NodeEventKind::UserLearned { which, .. } => (*which >= 0x40)
            .then_some("an observation's `which` names features 0 to 5 only (below 0x40)"),
        NodeEventKind::RulesBundle {
            sha256, problems, ..
        } => {
            let ok = sha256.len() == 64
                && sha256
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                && problems.len() <= MAX_RULES_PROBLEMS
                && problems.iter().all(|p| p.len() <= MAX_RULES_PROBLEM_BYTES);
            (!ok).then_some(
                "a rule bundle report's sha256 is 64 lower-case hex digits; at most 32 \
                 problems of at most 1024 bytes",
            )
        }
        _ => None,
    }
}

async fn log_bounds(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin(&app, &headers, &peer)?;
    let b = app.store.bounds().await?;
    Ok(Json(serde_json::json!({"head": b.head, "oldest": b.oldest})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeSession {
    /// The session key, 32 hex digits (as in the proxy's logs and events).
    session: String,
}

async fn revoke_session(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin(&app, &headers, &peer)?;
    let req: RevokeSession = json(&body)?;
    let session = SessionId::parse(&req.session).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_session",
            "expected 32 lower-case hex digits",
        )
    })?;
    let seq = revoke_one_session(&app, session, "admin_api").await?;
    Ok(Json(serde_json::json!({"seq": seq})).into_response())
}

/// Revokes `session` on every node, an operator's word, as
/// `POST /v1/admin/sessions/revoke` does and the dashboard's form for a
/// responder; `by` names the caller in the log and the webhook
/// (`admin_api`, `dashboard`). The change's sequence number.
pub(crate) async fn revoke_one_session(
    app: &App,
    session: SessionId,
    by: &str,
) -> Result<u64, ApiError> {
    let seq = commit(
        app,
        // An operator's word: every node keeps it, seen the session or not.
        Change::SessionRevoked {
            session,
            at: now_secs(),
            vouched: true,
        },
    )
    .await?;
    let shown = session.to_string();
    tracing::info!(session = %shown.get(..8).unwrap_or(""), seq, by, "session revoked by an operator");
    crate::webhooks::revocation(app, crate::webhooks::Revoked::Session(&session), by, seq).await?;
    Ok(seq)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRef {
    /// The user's name as the app names it to Vigil.
    user: String,
}

pub(crate) fn user_id(app: &App, name: &str) -> Result<UserId, ApiError> {
    let name = vigil_engine::valid_user_name(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_user",
            "a user name of 1 to 256 visible characters",
        )
    })?;
    Ok(UserId(
        UserKey::for_name(&app.config.hash_key, name).as_u64(),
    ))
}

async fn revoke_user(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin(&app, &headers, &peer)?;
    let req: UserRef = json(&body)?;
    let user = user_id(&app, &req.user)?;
    let now = now_secs();
    keep_name(&app, user, &req.user).await?;
    let seq = app.store.revoke_user(user, now, now).await?;
    app.head.send_replace(seq);
    tracing::info!(user = %user, seq, "every session of a user revoked by the admin API");
    crate::webhooks::revocation(
        &app,
        crate::webhooks::Revoked::User(user, Some(&req.user)),
        "admin_api",
        seq,
    )
    .await?;
    Ok(Json(serde_json::json!({"seq": seq})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeRef {
    node: String,
}

/// `GET /v1/admin/nodes`: the configured nodes, each with whether it is
/// disabled, and by what (the config, or the admin API).
async fn list_nodes(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin(&app, &headers, &peer)?;
    app.refresh_disabled().await?;
    let disabled = app.disabled.borrow().clone();
    let mut nodes: Vec<_> = app
        .config
        .nodes
        .iter()
        .map(|n| {
            serde_json::json!({
                "node": n.name,
                "disabled": n.disabled || disabled.contains(&n.name),
                "disabled_by": if n.disabled { "config" } else if disabled.contains(&n.name) { "admin_api" } else { "" },
            })
        })
        .collect();
    add_rules_status(&app, &mut nodes).await?;
    Ok(Json(serde_json::json!({ "nodes": nodes })).into_response())
}

async fn set_node(
    app: &App,
    headers: &HeaderMap,
    peer: &Peer,
    body: &Bytes,
    disabled: bool,
) -> Result<Response, ApiError> {
    admin(app, headers, peer)?;
    let req: NodeRef = json(body)?;
    if !app.config.nodes.iter().any(|n| n.name == req.node) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_node",
            "no node of that name in the config",
        ));
    }
    app.store
        .set_node_disabled(&req.node, disabled, now_secs())
        .await?;
    app.refresh_disabled().await?;
    tracing::warn!(
        node = req.node,
        disabled,
        "node credential changed by the admin API"
    );
    Ok(Json(serde_json::json!({"node": req.node, "disabled": disabled})).into_response())
}

/// `POST /v1/admin/nodes/disable`: the node's token is refused and its
/// open streams ended, on every replica within [`NODES_REFRESH`].
async fn disable_node(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    set_node(&app, &headers, &peer, &body, true).await
}

/// `POST /v1/admin/nodes/enable`: undoes the admin API's disable (not the
/// config's).
async fn enable_node(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    set_node(&app, &headers, &peer, &body, false).await
}

/// `POST /v1/admin/users/erase`: the user's data erased everywhere
/// (`docs/privacy.md`): their sessions ended, their records, detections and
/// risk deleted, earlier changes naming them scrubbed from the log, and
/// every node told to forget them.
async fn erase_user(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin(&app, &headers, &peer)?;
    let req: UserRef = json(&body)?;
    let user = user_id(&app, &req.user)?;
    let seq = commit(
        &app,
        Change::UserErased {
            user,
            at: now_secs(),
        },
    )
    .await?;
    // Universal logouts of the user, and their calls still owed.
    app.store.forget_logouts(&user.to_string()).await?;
    // The audit rows naming the user's key (the dashboard's actions on
    // them) keep who did what, not to whom.
    app.store.scrub_audit(&user.to_string()).await?;
    // The key, not the name: the name is what is being erased.
    tracing::info!(user = %user, seq, "a user's data erased by the admin API");
    Ok(Json(serde_json::json!({"seq": seq})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRisk {
    user: String,
    /// 0 to 100; 0 clears.
    points: u8,
    /// How long it holds.
    ttl_seconds: u64,
}

async fn user_risk(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin(&app, &headers, &peer)?;
    let req: UserRisk = json(&body)?;
    if req.points > 100 || req.ttl_seconds > 365 * 86_400 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_risk",
            "points 0 to 100, ttl_seconds at most a year",
        ));
    }
    let user = user_id(&app, &req.user)?;
    let now = now_secs();
    keep_name(&app, user, &req.user).await?;
    let seq = commit(
        &app,
        Change::UserRisk {
            user,
            points: req.points,
            until: now.saturating_add(req.ttl_seconds),
            at: now,
        },
    )
    .await?;
    Ok(Json(serde_json::json!({"seq": seq})).into_response())
}

/// `POST /v1/admin/users/step-up` `{"user"}`: every session of the user
/// open now must pass a step-up (a fresh sign-in at the identity
/// provider) at its next request, on every node (change `user_step_up`).
async fn step_up_user(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin(&app, &headers, &peer)?;
    let req: UserRef = json(&body)?;
    let user = user_id(&app, &req.user)?;
    let now = now_secs();
    keep_name(&app, user, &req.user).await?;
    let seq = commit(&app, Change::UserStepUp { user, at: now }).await?;
    tracing::info!(user = %user, seq, "a step-up asked of a user's sessions by the admin API");
    Ok(Json(serde_json::json!({"seq": seq})).into_response())
}

// === rule bundles ===

/// The problems `text` has as a rule file, each as `vigil-proxy check`
/// reports it (`bundle.toml:LINE:COLUMN: rule "NAME": …`); empty when it
/// compiles. What only a node can check (the routes it names, a way to
/// step up or sign in on each route it reaches) is checked on each node.
fn rules_problems(text: &str) -> Vec<serde_json::Value> {
    let files = [(std::path::PathBuf::from(RULES_BUNDLE_FILE), text.to_owned())];
    match vigil_rules::RuleSet::parse_files(&files) {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .0
            .iter()
            .map(|e| {
                serde_json::json!({
                    "line": e.line,
                    "column": e.column,
                    "rule": e.rule,
                    "message": e.message,
                    "text": e.to_string(),
                })
            })
            .collect(),
    }
}

fn rules_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "rules_too_large",
        format!(
            "a rule bundle is at most {MAX_RULES_BYTES} bytes of text, and fits one line of the sync stream once JSON-escaped"
        ),
    )
}

/// `POST /v1/admin/rules`: the body (a rule file's text, at most
/// [`MAX_RULES_BYTES`]) becomes the next version of the rule bundle, in
/// force on every node that takes its rules from the controller — if it
/// compiles: otherwise `400 invalid_rules` with every problem, and nothing
/// is stored.
async fn publish_rules(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    admin(&app, &headers, &peer)?;
    // Read only now, after the token, and never past the bound.
    let bytes = axum::body::to_bytes(body, MAX_RULES_BYTES)
        .await
        .map_err(|_| rules_too_large())?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "a rule file is UTF-8 text",
        )
    })?;
    // Compiling is CPU work of up to tens of milliseconds: off the
    // runtime's threads.
    let owned = text.to_owned();
    let problems = tokio::task::spawn_blocking(move || rules_problems(&owned))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the rule file could not be checked",
            )
        })?;
    if !problems.is_empty() {
        let mut e = ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_rules",
            format!(
                "the rule file has {} problem(s); nothing was published",
                problems.len()
            ),
        );
        e.problems = problems;
        return Err(e);
    }
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()));
    let now = now_secs();
    let change = Change::RulesBundle {
        version: u64::MAX,
        sha256: sha256.clone(),
        created_at: now,
        text: text.to_owned(),
    };
    if !change.fits_in_a_frame() {
        return Err(rules_too_large());
    }
    let (version, seq) = app.store.publish_rules(text, &sha256, now).await?;
    app.head.send_replace(seq);
    tracing::info!(
        version,
        seq,
        sha256,
        "rule bundle published by the admin API"
    );
    Ok(Json(serde_json::json!({"version": version, "sha256": sha256, "seq": seq})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesVersion {
    version: u64,
}

fn unknown_version() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_version",
        "no rule bundle of that version was published",
    )
}

/// `POST /v1/admin/rules/rollback` `{"version":N}`: the stored bundle `N`
/// is published again as the one in force (a new change; its version
/// number stays `N`).
async fn rollback_rules(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin(&app, &headers, &peer)?;
    let req: RulesVersion = json(&body)?;
    let (bundle, seq) = app
        .store
        .republish_rules(req.version, now_secs())
        .await?
        .ok_or_else(unknown_version)?;
    app.head.send_replace(seq);
    tracing::warn!(
        version = bundle.version,
        seq,
        "rule bundle rolled back by the admin API"
    );
    Ok(
        Json(serde_json::json!({"version": bundle.version, "sha256": bundle.sha256, "seq": seq}))
            .into_response(),
    )
}

/// `GET /v1/admin/rules`: every version published, and which is in force.
async fn list_rules(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin(&app, &headers, &peer)?;
    let bundles = app.store.rule_bundles().await?;
    let in_force = bundles.iter().max_by_key(|b| b.seq).map(|b| b.version);
    let list: Vec<_> = bundles
        .iter()
        .map(|b| {
            serde_json::json!({
                "version": b.version,
                "sha256": b.sha256,
                "created_at": b.created_at,
                "in_force": Some(b.version) == in_force,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({"in_force": in_force, "bundles": list})).into_response())
}

/// `GET /v1/admin/rules/{version}`: one version with its text.
async fn get_rules(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    Path(version): Path<String>,
) -> Result<Response, ApiError> {
    admin(&app, &headers, &peer)?;
    let version: u64 = version.parse().map_err(|_| unknown_version())?;
    let bundle = app
        .store
        .rule_bundle(version)
        .await?
        .ok_or_else(unknown_version)?;
    Ok(Json(serde_json::json!({
        "version": bundle.version,
        "sha256": bundle.sha256,
        "created_at": bundle.created_at,
        "text": bundle.text,
    }))
    .into_response())
}

/// Adds to each node of `GET /v1/admin/nodes` what it last reported of
/// its rule bundles: `rules` (the version in force, `null` before any)
/// and `rules_failure` (its last rejection since, `null` when none).
async fn add_rules_status(app: &App, nodes: &mut [serde_json::Value]) -> Result<(), ApiError> {
    let reported = app.store.node_rules().await?;
    for node in nodes {
        let status = node["node"]
            .as_str()
            .and_then(|name| reported.get(name))
            .cloned()
            .unwrap_or_default();
        node["rules"] = status.applied.map_or(
            serde_json::Value::Null,
            |(v, sha, at)| serde_json::json!({"version": v, "sha256": sha, "applied_at": at}),
        );
        node["rules_failure"] = status.failure.map_or(
            serde_json::Value::Null,
            |(v, sha, problems, at)| {
                serde_json::json!({"version": v, "sha256": sha, "problems": problems, "at": at})
            },
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_fleet::read_frame;

    /// A stream whose node reads nothing while more than the broadcast
    /// channel holds is published: it lags, reads the store, and still
    /// hands over every change, in order, none skipped.
    #[tokio::test]
    async fn a_stream_that_lags_behind_the_shared_frames_skips_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hash.key"), "11".repeat(32)).unwrap();
        std::fs::write(dir.path().join("admin.token"), "admin-token-0123456789").unwrap();
        let path = dir.path().join("controller.toml");
        std::fs::write(
            &path,
            "hash_key_file = \"hash.key\"\nadmin_token_file = \"admin.token\"\n",
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        let store = Store::open(&config.store).await.unwrap();
        let app = Arc::new(App::new(store.clone(), config, 0, None).unwrap());
        let tail = tokio::spawn(crate::tail::run(
            Arc::clone(&app.tail),
            store.clone(),
            app.metrics.clone(),
            app.head.subscribe(),
            0,
            Duration::from_secs(3_600),
        ));
        // The node's queue holds one frame and nobody reads it yet.
        let (tx, mut rx) = mpsc::channel(1);
        let live = app.tail.subscribe();
        let bounds = store.bounds().await.unwrap();
        let streaming = tokio::spawn({
            let app = Arc::clone(&app);
            async move { stream(&app, "a", &tx, live, VERSION, 0, false, bounds).await }
        });
        // One frame per commit: wait for each to be published.
        let mut published = app.tail.subscribe();
        let total = (crate::tail::RING + 50) as u64;
        for i in 1..=total {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&i.to_be_bytes());
            let head = store
                .append(
                    &[Change::SessionRevoked {
                        session: SessionId(id),
                        at: 1,
                        vouched: true,
                    }],
                    1,
                )
                .await
                .unwrap();
            app.head.send_replace(head);
            while published.recv().await.unwrap().last < head {}
        }
        // Now the node reads: every change, contiguous, none skipped.
        let mut cursor = 0;
        let mut buffer = Vec::new();
        while cursor < total {
            let chunk = tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .expect("the stream goes on")
                .unwrap()
                .unwrap();
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                match read_frame(&line[..end]).unwrap() {
                    Frame::Changes { first, changes } => {
                        assert_eq!(first, cursor + 1, "no change skipped");
                        for (seq, change) in (first..).zip(&changes) {
                            let Change::SessionRevoked { session, .. } = change else {
                                panic!("{change:?}")
                            };
                            assert_eq!(session.0[..8], seq.to_be_bytes());
                        }
                        cursor = first + changes.len() as u64 - 1;
                    }
                    Frame::Hello { .. } | Frame::Heartbeat { .. } => {}
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(cursor, total);
        assert!(app.metrics.lagged.get() >= 1);
        assert!(app.metrics.frames_sent.with_label_values(&["store"]).get() >= 1);
        streaming.abort();
        tail.abort();
    }

    #[test]
    fn a_sync_query_is_one_decimal_since_or_nothing() {
        assert_eq!(since_of(None).unwrap(), 0);
        assert_eq!(since_of(Some("")).unwrap(), 0);
        assert_eq!(since_of(Some("since=42")).unwrap(), 42);
        for bad in [
            "since=1&since=2",
            "since",
            "since=-1",
            "since=+1",
            "since=",
            "since=1x",
            "other=1",
            "since=99999999999999999999",
        ] {
            assert!(since_of(Some(bad)).is_err(), "{bad}");
        }
    }
}
