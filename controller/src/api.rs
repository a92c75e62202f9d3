//! The controller's HTTP API (`docs/controller.md`): the sync stream and
//! event intake for edge nodes (a node's bearer token), and the admin API
//! (the admin's bearer token). Every error is JSON `{"error", "message"}`
//! with its status, from one place ([`ApiError`]).

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use vigil_engine::UserKey;
use vigil_fleet::{
    Change, EventBatch, Frame, MAX_BATCH, MAX_EVENTS, NodeEvent, NodeEventKind, SessionId, UserId,
    VERSION, VERSION_HEADER, write_frame,
};

use crate::config::{Config, Node, token_hash};
use crate::store::{Intake, Store, StoreError};

/// A quiet stream gets a heartbeat this often.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// How often a stream looks at the store even without a local commit: the
/// fallback by which a replica learns of changes another one wrote.
const POLL: Duration = Duration::from_millis(500);

/// Largest request body: an event batch.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The controller's shared state.
#[derive(Debug)]
pub struct App {
    /// The store.
    pub store: Store,
    /// The config in force.
    pub config: Config,
    /// The head committed by this process, for streams to wake on.
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
}

/// How often a replica rereads the nodes disabled through any replica.
pub const NODES_REFRESH: Duration = Duration::from_secs(1);

impl App {
    /// The controller's state over `store` with `config`.
    pub fn new(store: Store, config: Config, head: u64) -> App {
        App {
            store,
            config,
            head: watch::channel(head).0,
            posted: std::sync::Mutex::default(),
            disabled: watch::channel(Arc::default()).0,
        }
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

    /// What is left of `node`'s events allowance this minute.
    fn events_left(&self, node: &str) -> u32 {
        let posted = self
            .posted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let used = posted
            .get(&(node.to_owned(), Allowance::Events))
            .filter(|(since, _)| since.elapsed() < Duration::from_secs(60))
            .map_or(0, |(_, n)| *n);
        self.config.node_events_per_minute.saturating_sub(used)
    }

    /// Charges `n` more to `node`'s events allowance this minute.
    fn charge_events(&self, node: &str, n: u32) {
        let mut posted = self
            .posted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(entry) = posted.get_mut(&(node.to_owned(), Allowance::Events)) {
            entry.1 = entry.1.saturating_add(n);
        }
    }

    /// Counts a batch's events posted by `node` against its minute's
    /// allowances; `Err` names the first one it would go beyond (nothing is
    /// counted then).
    fn allow_events(&self, node: &str, events: &[NodeEvent]) -> Result<(), Allowance> {
        let sightings = events
            .iter()
            .filter(|e| Allowance::of(&e.kind) == Allowance::Sightings)
            .count();
        let wanted = [
            (Allowance::Events, events.len() - sightings),
            (Allowance::Sightings, sightings),
        ];
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
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            if entry.1.saturating_add(n) > allowance.per_minute(&self.config) {
                return Err(allowance);
            }
        }
        for (allowance, n) in wanted {
            if let Some(entry) = posted.get_mut(&(node.to_owned(), allowance)) {
                entry.1 += u32::try_from(n).unwrap_or(u32::MAX);
            }
        }
        Ok(())
    }
}

/// Which per-node allowance an event counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Allowance {
    /// Revocations, detections and anything else a stolen node token could
    /// harm users with: `node_events_per_minute`.
    Events,
    /// Session records: `node_sightings_per_minute`.
    Sightings,
}

impl Allowance {
    fn of(kind: &NodeEventKind) -> Allowance {
        match kind {
            // A confirmation replaces a baseline whatever its age: rare in
            // real traffic, and counted with what can harm.
            NodeEventKind::SessionBaseline {
                confirmed: false, ..
            } => Allowance::Sightings,
            _ => Allowance::Events,
        }
    }

    fn per_minute(self, config: &Config) -> u32 {
        match self {
            Allowance::Events => config.node_events_per_minute,
            Allowance::Sightings => config.node_sightings_per_minute,
        }
    }

    fn key(self) -> &'static str {
        match self {
            Allowance::Events => "node_events_per_minute",
            Allowance::Sightings => "node_sightings_per_minute",
        }
    }
}

/// An API error: its status, stable code and message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
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
        let body = serde_json::json!({"error": self.code, "message": self.message});
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

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The node a request's token names, if enabled. Tokens are compared as
/// their SHA-256: the stored form, which says nothing of the token.
fn node<'a>(app: &'a App, headers: &HeaderMap) -> Result<&'a Node, ApiError> {
    let hash = token_hash(bearer(headers).ok_or_else(ApiError::unauthorized)?);
    app.config
        .nodes
        .iter()
        .find(|n| n.token_sha256 == hash && !n.disabled)
        .filter(|n| !app.disabled.borrow().contains(&n.name))
        .ok_or_else(ApiError::unauthorized)
}

fn admin(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = bearer(headers).ok_or_else(ApiError::unauthorized)?;
    if token_hash(token) == app.config.admin_token {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

/// Reads a JSON body, after the caller is authenticated: an unknown
/// caller learns nothing about what a good body looks like.
fn json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_body", e.to_string()))
}

/// Appends and wakes the streams.
async fn commit(app: &App, changes: &[Change]) -> Result<u64, ApiError> {
    let head = app.store.append(changes, now_secs()).await?;
    app.head.send_replace(head);
    Ok(head)
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
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let node = node(&app, &headers)?.name.clone();
    let since = since_of(query.as_deref())?;
    let v = version_of(&headers)?;
    let bounds = app.store.bounds().await?;
    let snapshot = since == 0 || since.saturating_add(1) < bounds.oldest || since > bounds.head;
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(8);
    tracing::info!(node, since, head = bounds.head, snapshot, "node subscribed");
    let mut disabled = app.disabled.subscribe();
    let name = node.clone();
    let mut task = tokio::spawn(async move {
        if let Err(e) = stream(&app, &tx, v, since, snapshot, bounds.head, bounds.oldest).await {
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

async fn send(
    tx: &mpsc::Sender<Result<Bytes, Infallible>>,
    frame: &Frame,
) -> Result<(), StreamEnd> {
    tx.send(Ok(Bytes::from(write_frame(frame))))
        .await
        .map_err(|_| StreamEnd::Gone)
}

async fn stream(
    app: &App,
    tx: &mpsc::Sender<Result<Bytes, Infallible>>,
    v: u32,
    since: u64,
    snapshot: bool,
    head: u64,
    oldest: u64,
) -> Result<(), StreamEnd> {
    let mut woken = app.head.subscribe();
    send(
        tx,
        &Frame::Hello {
            v,
            head,
            oldest,
            snapshot,
        },
    )
    .await?;
    let mut cursor = since;
    if snapshot {
        let (seq, mut changes) = app.store.snapshot().await?;
        changes.retain(|c| c.in_snapshot_of(v));
        for chunk in changes.chunks(MAX_BATCH) {
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
    let mut last_sent = tokio::time::Instant::now();
    loop {
        let batch = app.store.since(cursor, MAX_BATCH).await?;
        if let Some(&(first, _)) = batch.first() {
            // Numbers are contiguous by construction (store.rs); a hole
            // here is compaction overtaking a slow node: it resyncs.
            if first != cursor + 1 {
                return Err(StreamEnd::Gap(cursor + 1));
            }
            cursor = first + batch.len() as u64 - 1;
            let changes = batch
                .into_iter()
                .map(|(_, c)| if v < VERSION { c.for_version(v) } else { c })
                .collect();
            send(tx, &Frame::Changes { first, changes }).await?;
            last_sent = tokio::time::Instant::now();
            continue;
        }
        if last_sent.elapsed() >= HEARTBEAT {
            send(tx, &Frame::Heartbeat { head: cursor }).await?;
            last_sent = tokio::time::Instant::now();
        }
        tokio::select! {
            changed = woken.changed() => if changed.is_err() { return Err(StreamEnd::Gone) },
            () = tokio::time::sleep(POLL) => {},
            () = tx.closed() => return Err(StreamEnd::Gone),
        }
    }
}

/// `POST /v1/events`: a node's events, taken once each.
async fn events(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let node = node(&app, &headers)?.name.clone();
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
    if let Err(allowance) = app.allow_events(&node, &batch.events) {
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
    let intake = Intake {
        detection_window: app.config.detection_window,
        max_session_age: app.config.keep_sessions,
        revocations_left: app.events_left(&node),
    };
    let (ack, taken, head) = app
        .store
        .take_events(&node, &batch.events, now_secs(), intake)
        .await?;
    app.charge_events(&node, taken.revocations);
    if taken.ignored > 0 {
        tracing::debug!(
            node,
            ignored = taken.ignored,
            "session records that changed nothing"
        );
    }
    app.head.send_replace(head);
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
            ..
        } => {
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
        _ => None,
    }
}

async fn log_bounds(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    admin(&app, &headers)?;
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
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin(&app, &headers)?;
    let req: RevokeSession = json(&body)?;
    let session = SessionId::parse(&req.session).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_session",
            "expected 32 lower-case hex digits",
        )
    })?;
    let seq = commit(
        &app,
        // An operator's word: every node keeps it, seen the session or not.
        &[Change::SessionRevoked {
            session,
            at: now_secs(),
            vouched: true,
        }],
    )
    .await?;
    tracing::info!(session = %req.session.get(..8).unwrap_or(""), seq, "session revoked by the admin API");
    Ok(Json(serde_json::json!({"seq": seq})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRef {
    /// The user's name as the app names it to Vigil.
    user: String,
}

fn user_id(app: &App, name: &str) -> Result<UserId, ApiError> {
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
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin(&app, &headers)?;
    let req: UserRef = json(&body)?;
    let user = user_id(&app, &req.user)?;
    let now = now_secs();
    let seq = app.store.revoke_user(user, now, now).await?;
    app.head.send_replace(seq);
    tracing::info!(user = %user, seq, "every session of a user revoked by the admin API");
    Ok(Json(serde_json::json!({"seq": seq})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeRef {
    node: String,
}

/// `GET /v1/admin/nodes`: the configured nodes, each with whether it is
/// disabled, and by what (the config, or the admin API).
async fn list_nodes(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    admin(&app, &headers)?;
    app.refresh_disabled().await?;
    let disabled = app.disabled.borrow().clone();
    let nodes: Vec<_> = app
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
    Ok(Json(serde_json::json!({ "nodes": nodes })).into_response())
}

async fn set_node(
    app: &App,
    headers: &HeaderMap,
    body: &Bytes,
    disabled: bool,
) -> Result<Response, ApiError> {
    admin(app, headers)?;
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
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    set_node(&app, &headers, &body, true).await
}

/// `POST /v1/admin/nodes/enable`: undoes the admin API's disable (not the
/// config's).
async fn enable_node(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    set_node(&app, &headers, &body, false).await
}

/// `POST /v1/admin/users/erase`: the user's data erased everywhere
/// (`docs/privacy.md`): their sessions ended, their records, detections and
/// risk deleted, earlier changes naming them scrubbed from the log, and
/// every node told to forget them.
async fn erase_user(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin(&app, &headers)?;
    let req: UserRef = json(&body)?;
    let user = user_id(&app, &req.user)?;
    let seq = commit(
        &app,
        &[Change::UserErased {
            user,
            at: now_secs(),
        }],
    )
    .await?;
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
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin(&app, &headers)?;
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
    let seq = commit(
        &app,
        &[Change::UserRisk {
            user,
            points: req.points,
            until: now.saturating_add(req.ttl_seconds),
            at: now,
        }],
    )
    .await?;
    Ok(Json(serde_json::json!({"seq": seq})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

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
