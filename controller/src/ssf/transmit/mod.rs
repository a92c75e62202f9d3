//! The OpenID Shared Signals transmitter (`docs/signals.md`, Vigil as a
//! transmitter): receivers configured in `[[ssf_transmitter.receivers]]`
//! discover it at `/.well-known/ssf-configuration` (SSF 1.0 §7), manage
//! their streams through the stream management API (§8), and get CAEP and
//! RISC SETs, signed with the controller's signing key, pushed (RFC 8935)
//! or by polling (RFC 8936).
//!
//! Events are derived from the change log ([`events`]), so that every
//! path that commits a revocation is sent once; each stream has its own
//! queue in the store, bounded, delivered at least once ([`deliver`]).

pub mod compromise;
pub mod config;
pub mod deliver;
pub mod events;
pub mod oauth;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, watch};

use crate::api::{ApiError, App, now_secs};
use crate::store::ssf_tx::TxStream;
use config::{Receiver, TxConfig};

/// RFC 8935 push delivery.
pub const PUSH: &str = "urn:ietf:rfc:8935";
/// RFC 8936 poll delivery.
pub const POLL: &str = "urn:ietf:rfc:8936";

/// Largest stream management body read.
const MAX_BODY: usize = 16 * 1024;
/// Events a stream may request.
const MAX_EVENTS_REQUESTED: usize = 32;
/// Subjects a stream may record.
pub const MAX_SUBJECTS: u64 = 10_000;
/// Least seconds between two verification requests of a stream
/// (`min_verification_interval`).
pub const MIN_VERIFICATION_INTERVAL: u64 = 5;

/// The transmitter's state at run time.
#[derive(Debug)]
pub struct Runtime {
    /// Its id as a lease owner: unique to this process.
    pub owner: String,
    /// Woken when this process enqueued something or a stream changed
    /// (the deliverer pushes; long polls look again).
    pub queued: watch::Sender<u64>,
    /// Woken when the deliverer should look at once.
    pub wake: Arc<Notify>,
    /// When each stream last asked for a verification.
    verified: std::sync::Mutex<HashMap<String, tokio::time::Instant>>,
    /// The client pushes go out with.
    pub client: Option<reqwest::Client>,
    /// The authorization server's keys, when receivers may use access
    /// tokens.
    oauth_keys: Option<crate::ssf::keys::Keys>,
}

impl Runtime {
    /// The runtime of `config`.
    pub fn new(config: Option<&TxConfig>) -> Runtime {
        Runtime {
            owner: events::new_id(),
            queued: watch::channel(0).0,
            wake: Arc::new(Notify::new()),
            verified: std::sync::Mutex::default(),
            client: config.and_then(|_| deliver::http_client()),
            oauth_keys: config.and_then(|c| c.oauth.as_ref()).map(|o| {
                crate::ssf::keys::Keys::new(
                    crate::ssf::config::KeySource::Uri(o.jwks_uri.clone()),
                    Duration::from_secs(3_600),
                    Duration::from_secs(60),
                    crate::ssf::keys::client(),
                )
            }),
        }
    }

    /// Tells the deliverer and long polls that something was enqueued.
    pub fn notify(&self) {
        self.queued.send_modify(|n| *n = n.wrapping_add(1));
        self.wake.notify_one();
    }
}

// === signing ===

/// The issuer of everything the controller signs (`[signing] issuer`),
/// when it signs.
pub fn issuer(app: &App) -> Option<String> {
    app.signer.as_ref().map(|s| s.issuer().to_owned())
}

/// Signs a SET's claims with the controller's current key (`typ`
/// `secevent+jwt`), adding `iss` and `iat` (now): a SET sent again after
/// a key rotation is signed with the new key.
pub fn sign(app: &App, mut claims: Value) -> Result<String, String> {
    let signer = app.signer.as_ref().ok_or("no [signing] key")?;
    claims["iss"] = json!(signer.issuer());
    claims["iat"] = json!(now_secs());
    signer
        .sign("secevent+jwt", &claims)
        .map_err(|e| e.to_string())
}

/// [`sign`] on a blocking thread: an RSA signature is CPU work the
/// runtime's threads should not wait on.
pub async fn sign_off_runtime(app: &Arc<App>, claims: Value) -> Result<String, String> {
    let app = Arc::clone(app);
    tokio::task::spawn_blocking(move || sign(&app, claims))
        .await
        .map_err(|e| e.to_string())?
}

// === helpers ===

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such stream of this receiver",
    )
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
}

/// The transmitter's config and the base of its URLs, or `404` when it
/// is not configured or cannot sign.
fn configured(app: &App) -> Result<(&TxConfig, String, String), ApiError> {
    let none = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this controller is not a Shared Signals transmitter",
        )
    };
    let tx = app.config.ssf_tx.as_ref().ok_or_else(none)?;
    let iss = issuer(app).ok_or_else(none)?;
    let base = tx
        .base_url
        .clone()
        .unwrap_or_else(|| iss.trim_end_matches('/').to_owned());
    Ok((tx, iss, base))
}

/// The transmitter's config, the issuer and the base of its URLs, and
/// the receiver a request's bearer token names: `401` without one (also
/// when no transmitter is configured: an unknown caller learns nothing).
async fn authenticated<'a>(
    app: &'a App,
    headers: &HeaderMap,
) -> Result<(&'a TxConfig, &'a Receiver, String, String), ApiError> {
    let unauthorized = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a receiver's bearer token is required",
        )
    };
    let tx = app.config.ssf_tx.as_ref().ok_or_else(unauthorized)?;
    let receiver = match client(tx, headers) {
        Ok(r) => r,
        Err(e) => match (&tx.oauth, &app.ssf_tx.oauth_keys, bearer(headers)) {
            (Some(o), Some(keys), Some(token)) if token.matches('.').count() == 2 => {
                match oauth::client_of(token, &o.issuer, &o.audience, keys, now_secs()).await {
                    Ok(id) => tx
                        .receivers
                        .iter()
                        .find(|r| r.client_id.as_deref() == Some(id.as_str()))
                        .ok_or_else(unauthorized)?,
                    Err(why) => {
                        tracing::info!(why, "SSF receiver access token refused");
                        return Err(e);
                    }
                }
            }
            _ => return Err(e),
        },
    };
    let (_, iss, base) = configured(app)?;
    Ok((tx, receiver, iss, base))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
}

/// The receiver a request's bearer token names (by its SHA-256).
fn client<'a>(tx: &'a TxConfig, headers: &HeaderMap) -> Result<&'a Receiver, ApiError> {
    let hash = bearer(headers).map(crate::config::token_hash);
    tx.receivers
        .iter()
        .find(|r| r.token_sha256.is_some() && r.token_sha256 == hash)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a receiver's bearer token is required",
            )
        })
}

fn body_of(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("at most {MAX_BODY} bytes"),
        ));
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(bad("the body is not a JSON object")),
    }
}

fn stream_id_of_query(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "stream_id")
        .map(|(_, v)| v.into_owned())
}

fn stream_id_of_body(body: &Map<String, Value>) -> Result<String, ApiError> {
    body.get("stream_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 64)
        .map(str::to_owned)
        .ok_or_else(|| bad("stream_id is required"))
}

/// The stream `id` if `receiver` owns it: another receiver's stream is
/// `404` as a stream that does not exist (SSF 1.0 §8.1.1: no stream of
/// that id *for this receiver*), so that ids are not confirmed to others.
async fn owned(app: &App, receiver: &Receiver, id: &str) -> Result<TxStream, ApiError> {
    match app.store.ssf_tx_stream(id).await? {
        Some(s) if s.client == receiver.name => Ok(s),
        _ => Err(not_found()),
    }
}

/// What a receiver supplied, checked: `events_requested`, `delivery`,
/// `description`; transmitter-supplied members are ignored.
fn receiver_supplied(
    receiver: &Receiver,
    body: &Map<String, Value>,
    base: &Option<Map<String, Value>>,
) -> Result<Map<String, Value>, ApiError> {
    let mut out = base.clone().unwrap_or_default();
    if let Some(events) = body.get("events_requested") {
        let list = events
            .as_array()
            .filter(|l| l.len() <= MAX_EVENTS_REQUESTED)
            .filter(|l| {
                l.iter()
                    .all(|e| e.as_str().is_some_and(|s| !s.is_empty() && s.len() <= 256))
            })
            .ok_or_else(|| {
                bad(format!(
                    "events_requested: at most {MAX_EVENTS_REQUESTED} event type URIs"
                ))
            })?;
        out.insert("events_requested".into(), Value::Array(list.clone()));
    }
    if let Some(d) = body.get("description") {
        let d = d
            .as_str()
            .filter(|d| d.len() <= 1024)
            .ok_or_else(|| bad("description: a string of at most 1024 bytes"))?;
        out.insert("description".into(), json!(d));
    }
    if let Some(delivery) = body.get("delivery") {
        let d = delivery
            .as_object()
            .ok_or_else(|| bad("delivery: an object"))?;
        let method = d.get("method").and_then(Value::as_str).unwrap_or("");
        let mut kept = Map::new();
        match method {
            PUSH => {
                let url = d
                    .get("endpoint_url")
                    .and_then(Value::as_str)
                    .filter(|u| u.len() <= 2048)
                    .ok_or_else(|| bad("delivery.endpoint_url is required for push"))?;
                let parsed =
                    url::Url::parse(url).map_err(|_| bad("delivery.endpoint_url is not a URL"))?;
                let allowed = receiver
                    .push_endpoints
                    .iter()
                    .any(|p| endpoint_under(p, &parsed));
                if !allowed {
                    return Err(bad(
                        "delivery.endpoint_url is not one this receiver may push to (push_endpoints)",
                    ));
                }
                kept.insert("endpoint_url".into(), json!(parsed.as_str()));
                if let Some(a) = d.get("authorization_header") {
                    let a = a
                        .as_str()
                        .filter(|a| a.len() <= 4096 && !a.chars().any(char::is_control))
                        .ok_or_else(|| bad("delivery.authorization_header: at most 4096 bytes"))?;
                    kept.insert("authorization_header".into(), json!(a));
                }
            }
            POLL => {}
            _ => {
                return Err(bad(format!("delivery.method: expected {PUSH} or {POLL}")));
            }
        }
        kept.insert("method".into(), json!(method));
        out.insert("delivery".into(), Value::Object(kept));
    }
    if !out.contains_key("delivery") {
        out.insert("delivery".into(), json!({"method": POLL}));
    }
    if !out.contains_key("events_requested") {
        out.insert("events_requested".into(), json!([]));
    }
    Ok(out)
}

/// Whether `url` is under `allowed`: the same scheme, host and port (a
/// string prefix would let `https://idp.example` reach
/// `https://idp.example.evil.net`), no user info, and a path under the
/// allowed one by whole segments.
fn endpoint_under(allowed: &url::Url, url: &url::Url) -> bool {
    let (base, path) = (allowed.path(), url.path());
    let under = path.starts_with(base)
        && (base.ends_with('/') || path.len() == base.len() || path[base.len()..].starts_with('/'));
    url.scheme() == allowed.scheme()
        && url.host_str() == allowed.host_str()
        && url.port_or_known_default() == allowed.port_or_known_default()
        && url.username().is_empty()
        && url.password().is_none()
        && under
}

/// A stream's configuration as the receiver reads it (SSF 1.0 §8.1.1):
/// the authorization header it gave is not echoed.
fn view(stream: &TxStream, receiver: &Receiver, iss: &str, base: &str) -> Value {
    let config: Value = serde_json::from_str(&stream.config).unwrap_or(json!({}));
    let method = config["delivery"]["method"].as_str().unwrap_or(POLL);
    let delivery = if method == PUSH {
        json!({"method": PUSH, "endpoint_url": config["delivery"]["endpoint_url"]})
    } else {
        json!({"method": POLL, "endpoint_url": format!("{base}/v1/ssf/poll/{}", stream.stream_id)})
    };
    let mut out = json!({
        "stream_id": stream.stream_id,
        "iss": iss,
        "aud": receiver.audience,
        "delivery": delivery,
        "events_supported": events::supported(),
        "events_requested": config.get("events_requested").cloned().unwrap_or(json!([])),
        "events_delivered": events::delivered(&config),
        "min_verification_interval": MIN_VERIFICATION_INTERVAL,
    });
    if let Some(d) = config.get("description") {
        out["description"] = d.clone();
    }
    out
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(body),
    )
        .into_response()
}

// === handlers ===

/// `GET /.well-known/ssf-configuration` (SSF 1.0 §7.1).
pub(crate) async fn metadata(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let (tx, iss, base) = configured(&app)?;
    let mut schemes = vec![json!({"spec_urn": "urn:ietf:rfc:6750"})];
    if tx.oauth.is_some() {
        schemes.push(json!({"spec_urn": "urn:ietf:rfc:6749"}));
    }
    Ok(json_response(
        StatusCode::OK,
        json!({
            "spec_version": "1_0",
            "issuer": iss,
            "jwks_uri": format!("{base}/.well-known/jwks.json"),
            "delivery_methods_supported": [PUSH, POLL],
            "configuration_endpoint": format!("{base}/v1/ssf/streams"),
            "status_endpoint": format!("{base}/v1/ssf/status"),
            "add_subject_endpoint": format!("{base}/v1/ssf/subjects/add"),
            "remove_subject_endpoint": format!("{base}/v1/ssf/subjects/remove"),
            "verification_endpoint": format!("{base}/v1/ssf/verify"),
            "authorization_schemes": schemes,
            "default_subjects": if tx.all_subjects { "ALL" } else { "NONE" },
        }),
    ))
}

/// `POST /v1/ssf/streams`: creates a stream (`201` with its
/// configuration); `409` when the receiver holds its most already.
pub(crate) async fn create_stream(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (tx, receiver, iss, base) = authenticated(&app, &headers).await?;
    let body = body_of(&body)?;
    let supplied = receiver_supplied(receiver, &body, &None)?;
    let id = events::new_id();
    let config = Value::Object(supplied).to_string();
    let now = now_secs();
    if !app
        .store
        .ssf_tx_create(
            &id,
            &receiver.name,
            &config,
            tx.all_subjects,
            tx.max_streams,
            now,
        )
        .await?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_streams",
            format!(
                "this receiver holds {} streams already (max_streams_per_receiver)",
                tx.max_streams
            ),
        ));
    }
    tracing::info!(receiver = receiver.name, stream = id, "SSF stream created");
    let stream = owned(&app, receiver, &id).await?;
    Ok(json_response(
        StatusCode::CREATED,
        view(&stream, receiver, &iss, &base),
    ))
}

/// `GET /v1/ssf/streams[?stream_id=…]`: one stream, or every stream of
/// the receiver.
pub(crate) async fn read_streams(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (_, receiver, iss, base) = authenticated(&app, &headers).await?;
    match stream_id_of_query(query.as_deref()) {
        Some(id) => {
            let stream = owned(&app, receiver, &id).await?;
            Ok(json_response(
                StatusCode::OK,
                view(&stream, receiver, &iss, &base),
            ))
        }
        None => {
            let all = app.store.ssf_tx_streams(&receiver.name).await?;
            let list: Vec<Value> = all.iter().map(|s| view(s, receiver, &iss, &base)).collect();
            Ok(json_response(StatusCode::OK, Value::Array(list)))
        }
    }
}

async fn change_stream(
    app: &App,
    headers: &HeaderMap,
    body: &Bytes,
    replace: bool,
) -> Result<Response, ApiError> {
    let (_, receiver, iss, base) = authenticated(app, headers).await?;
    let body = body_of(body)?;
    let id = stream_id_of_body(&body)?;
    let stream = owned(app, receiver, &id).await?;
    let held = if replace {
        None
    } else {
        match serde_json::from_str(&stream.config) {
            Ok(Value::Object(m)) => Some(m),
            _ => None,
        }
    };
    let supplied = receiver_supplied(receiver, &body, &held)?;
    app.store
        .ssf_tx_set_config(&id, &Value::Object(supplied).to_string(), now_secs())
        .await?;
    app.ssf_tx.notify();
    let stream = owned(app, receiver, &id).await?;
    Ok(json_response(
        StatusCode::OK,
        view(&stream, receiver, &iss, &base),
    ))
}

/// `PATCH /v1/ssf/streams`: the members given replace the stream's.
pub(crate) async fn update_stream(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    change_stream(&app, &headers, &body, false).await
}

/// `PUT /v1/ssf/streams`: the stream's receiver-supplied members are
/// replaced whole.
pub(crate) async fn replace_stream(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    change_stream(&app, &headers, &body, true).await
}

/// `DELETE /v1/ssf/streams?stream_id=…`: `204`, its queue with it.
pub(crate) async fn delete_stream(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (_, receiver, _, _) = authenticated(&app, &headers).await?;
    let id = stream_id_of_query(query.as_deref()).ok_or_else(|| bad("stream_id is required"))?;
    owned(&app, receiver, &id).await?;
    app.store.ssf_tx_delete(&id).await?;
    tracing::info!(receiver = receiver.name, stream = id, "SSF stream deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn status_view(stream: &TxStream) -> Value {
    let mut out = json!({"stream_id": stream.stream_id, "status": stream.status});
    if let Some(r) = &stream.reason {
        out["reason"] = json!(r);
    }
    out
}

/// `GET /v1/ssf/status?stream_id=…`.
pub(crate) async fn get_status(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (_, receiver, _, _) = authenticated(&app, &headers).await?;
    let id = stream_id_of_query(query.as_deref()).ok_or_else(|| bad("stream_id is required"))?;
    let stream = owned(&app, receiver, &id).await?;
    Ok(json_response(StatusCode::OK, status_view(&stream)))
}

/// `POST /v1/ssf/status` `{"stream_id","status","reason"}`: `enabled`
/// delivers, `paused` holds events in the queue, `disabled` drops them
/// (and the queue).
pub(crate) async fn set_status(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (_, receiver, _, _) = authenticated(&app, &headers).await?;
    let body = body_of(&body)?;
    let id = stream_id_of_body(&body)?;
    owned(&app, receiver, &id).await?;
    let status = body
        .get("status")
        .and_then(Value::as_str)
        .filter(|s| matches!(*s, "enabled" | "paused" | "disabled"))
        .ok_or_else(|| bad("status: enabled, paused or disabled"))?;
    let reason = match body.get("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) if r.len() <= 1024 => Some(r.as_str()),
        Some(_) => return Err(bad("reason: a string of at most 1024 bytes")),
    };
    app.store
        .ssf_tx_set_status(&id, status, reason, now_secs())
        .await?;
    app.ssf_tx.notify();
    tracing::info!(
        receiver = receiver.name,
        stream = id,
        status,
        "SSF stream status set"
    );
    let stream = owned(&app, receiver, &id).await?;
    Ok(json_response(StatusCode::OK, status_view(&stream)))
}

async fn subject(app: &App, headers: &HeaderMap, body: &Bytes, add: bool) -> Result<(), ApiError> {
    let (_, receiver, _, _) = authenticated(app, headers).await?;
    let body = body_of(body)?;
    let id = stream_id_of_body(&body)?;
    owned(app, receiver, &id).await?;
    let key = body
        .get("subject")
        .and_then(Value::as_object)
        .and_then(events::subject_key)
        .ok_or_else(|| {
            bad("subject: a subject identifier of format opaque, email, iss_sub or complex (by its user)")
        })?;
    if add && app.store.ssf_tx_subject_count(&id).await? >= MAX_SUBJECTS {
        return Err(bad(format!(
            "a stream records at most {MAX_SUBJECTS} subjects"
        )));
    }
    app.store.ssf_tx_subject(&id, &key, add).await?;
    Ok(())
}

/// `POST /v1/ssf/subjects/add`: `200`; the subject's events are sent on
/// the stream.
pub(crate) async fn add_subject(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    subject(&app, &headers, &body, true).await?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /v1/ssf/subjects/remove`: `204`; the subject's events are no
/// longer sent on the stream.
pub(crate) async fn remove_subject(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    subject(&app, &headers, &body, false).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/ssf/verify` `{"stream_id","state"}`: `204`, and a
/// verification SET with the `state` is queued on the stream; `429` when
/// asked again within [`MIN_VERIFICATION_INTERVAL`].
pub(crate) async fn verify(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (tx, receiver, _, _) = authenticated(&app, &headers).await?;
    let body = body_of(&body)?;
    let id = stream_id_of_body(&body)?;
    let stream = owned(&app, receiver, &id).await?;
    let state = match body.get("state") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= 256 => Some(s.clone()),
        Some(_) => return Err(bad("state: a string of at most 256 bytes")),
    };
    {
        let mut last = app
            .ssf_tx
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = tokio::time::Instant::now();
        if last.get(&id).is_some_and(|t| {
            now.duration_since(*t) < Duration::from_secs(MIN_VERIFICATION_INTERVAL)
        }) {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!("one verification per {MIN_VERIFICATION_INTERVAL} seconds"),
            ));
        }
        // Bounded by the streams there are; forgotten ones go at the
        // next request of a stream deleted meanwhile.
        last.retain(|_, t| now.duration_since(*t) < Duration::from_secs(MIN_VERIFICATION_INTERVAL));
        last.insert(id.clone(), now);
    }
    if stream.status != "disabled" {
        let jti = events::new_id();
        let mut payload = json!({});
        if let Some(state) = state {
            payload["state"] = json!(state);
        }
        let claims = events::claims(
            receiver,
            &jti,
            json!({"format": "opaque", "id": id}),
            &events::verification(),
            payload,
        );
        let dropped = app
            .store
            .ssf_tx_enqueue(&id, &jti, &claims.to_string(), tx.max_queue)
            .await?;
        let count = |result: &str, n: u64| {
            app.metrics
                .ssf_tx_sets
                .with_label_values(&[receiver.name.as_str(), result])
                .inc_by(n);
        };
        count("enqueued", 1);
        count("dropped", dropped);
        app.ssf_tx.notify();
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/admin/ssf/transmit/streams` (the admin token): every receiver's
/// streams (at most 1,000) with what an operator needs to see one that is
/// stuck: status, delivery (never the receiver's authorization header),
/// events delivered, SETs queued, dropped from a full queue, push failures
/// in a row and the next try, and the last ten SETs the receiver refused.
pub(crate) async fn admin_streams(
    State(app): State<Arc<App>>,
    peer: crate::tls::Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    crate::api::admin(&app, &headers, &peer)?;
    let mut out = Vec::new();
    for s in app.store.ssf_tx_all_streams().await? {
        let config: Value = serde_json::from_str(&s.config).unwrap_or(json!({}));
        let refused: Vec<Value> = app
            .store
            .ssf_tx_refused(&s.stream_id, 10)
            .await?
            .into_iter()
            .map(|(jti, err, description, at)| {
                json!({"jti": jti, "err": err, "description": description, "at": at})
            })
            .collect();
        out.push(json!({
            "stream_id": s.stream_id,
            "receiver": s.client,
            "status": s.status,
            "reason": s.reason,
            "delivery": {
                "method": config["delivery"]["method"],
                "endpoint_url": config["delivery"]["endpoint_url"],
            },
            "events_delivered": events::delivered(&config),
            "all_subjects": s.all_subjects,
            "queued": app.store.ssf_tx_queued(&s.stream_id).await?,
            "dropped": s.dropped,
            "failures": s.failures,
            "next_try_ms": s.next_try,
            "refused": refused,
        }));
    }
    Ok(json_response(StatusCode::OK, json!({"streams": out})))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::endpoint_under;

    #[test]
    fn a_push_endpoint_is_under_an_allowed_one_by_origin_and_whole_segments() {
        let allowed = url::Url::parse("https://idp.example/ssf").unwrap();
        let ok = |u: &str| endpoint_under(&allowed, &url::Url::parse(u).unwrap());
        assert!(ok("https://idp.example/ssf"));
        assert!(ok("https://idp.example/ssf/push/1"));
        assert!(ok("https://idp.example:443/ssf/x"));
        assert!(!ok("https://idp.example.evil.net/ssf"));
        assert!(!ok("https://idp.example/ssfevil"));
        assert!(!ok("https://idp.example:8443/ssf"));
        assert!(!ok("http://idp.example/ssf"));
        assert!(!ok("https://user:pw@idp.example/ssf"));
        assert!(!ok("https://other.example/ssf"));
        let root = url::Url::parse("https://idp.example").unwrap();
        assert!(endpoint_under(
            &root,
            &url::Url::parse("https://idp.example/any/path").unwrap()
        ));
    }
}
