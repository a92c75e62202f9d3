//! Universal logout (`docs/signals.md`, Universal logout): one operator
//! call ends every session of a user on every edge node (the admin API's
//! user revocation) and asks each configured app to end its own, through
//! the outbox ([`crate::outbox`]) — a global token revocation request, an
//! OIDC back-channel logout token, or a signed webhook — each target's
//! result recorded under the logout's id.

use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use crate::api::{ApiError, App, admin, json, now_secs, user_id};
use crate::config::UserNames;
use crate::outbox::config::{endpoint_url, read_secret, valid_name};
use crate::outbox::{app_endpoint, new_id, now_ms};
use crate::store::outbox::{Claimed, LogoutRecord, NewDelivery, TargetResult};
use crate::tls::Peer;

/// The OIDC Back-Channel Logout event.
pub const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Longest life of a signed token sent to an app (`token_ttl_seconds`).
const MAX_TOKEN_TTL: u64 = 600;

/// `[logout]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLogout {
    token_ttl_seconds: Option<u64>,
    #[serde(default)]
    apps: Vec<RawApp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    name: String,
    kind: String,
    url: String,
    subject: Option<String>,
    subject_issuer: Option<String>,
    audience: Option<String>,
    client_id: Option<String>,
    bearer_token_file: Option<std::path::PathBuf>,
    secret_file: Option<std::path::PathBuf>,
    max_concurrency: Option<usize>,
}

/// How an app is asked to log a user out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppKind {
    /// `POST {"sub_id": …}` (draft-parecki-oauth-global-token-revocation,
    /// the shape of Okta's Universal Logout), with a bearer: a JWT Vigil
    /// signs (`aud` the app's `audience`), or a static token.
    GlobalTokenRevocation {
        /// The signed bearer's `aud`.
        audience: String,
        /// A static bearer instead of a signed one.
        bearer: Option<String>,
    },
    /// An OIDC Back-Channel Logout 1.0 `logout_token`, form-encoded.
    BackchannelLogout {
        /// The token's `aud`: the app's client id at Vigil-as-issuer.
        client_id: String,
    },
    /// A signed webhook (`docs/webhooks.md`) of type `logout`.
    Webhook {
        /// Its HMAC key.
        secret: Vec<u8>,
    },
}

impl AppKind {
    /// Its name in config and results.
    pub fn as_str(&self) -> &'static str {
        match self {
            AppKind::GlobalTokenRevocation { .. } => "global_token_revocation",
            AppKind::BackchannelLogout { .. } => "backchannel_logout",
            AppKind::Webhook { .. } => "webhook",
        }
    }
}

/// How the app knows the user: a subject built from the user's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `{"format":"email","email":NAME}`.
    Email,
    /// `{"format":"iss_sub","iss":ISSUER,"sub":NAME}`.
    IssSub(String),
    /// `{"format":"opaque","id":NAME}`.
    Opaque,
}

impl Subject {
    /// The RFC 9493 subject identifier of `name`.
    pub fn of(&self, name: &str) -> Value {
        match self {
            Subject::Email => json!({"format": "email", "email": name}),
            Subject::IssSub(iss) => json!({"format": "iss_sub", "iss": iss, "sub": name}),
            Subject::Opaque => json!({"format": "opaque", "id": name}),
        }
    }
}

/// A configured app a universal logout calls.
#[derive(Clone)]
pub struct AppTarget {
    /// Its name (1 to 64 of a-z A-Z 0-9 - _).
    pub name: String,
    /// How it is called.
    pub kind: AppKind,
    /// Where.
    pub url: Url,
    /// How it knows the user.
    pub subject: Subject,
    /// Calls to it in flight at once, per replica (1 to 16, default 2).
    pub max_concurrency: usize,
}

impl std::fmt::Debug for AppTarget {
    // Bearers and secrets are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppTarget")
            .field("name", &self.name)
            .field("kind", &self.kind.as_str())
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

/// `[logout]` validated.
#[derive(Debug, Clone, Default)]
pub struct LogoutConfig {
    /// The apps, in the file's order.
    pub apps: Vec<AppTarget>,
    /// Life of a signed token (`token_ttl_seconds`, 10 to 600, default
    /// 120).
    pub token_ttl: u64,
}

/// `[logout]`'s problems pushed, each with its key.
pub fn load(
    raw: &RawLogout,
    settings: &crate::outbox::Settings,
    signing: bool,
    base: &Path,
    problems: &mut Vec<String>,
) -> LogoutConfig {
    let token_ttl = raw.token_ttl_seconds.unwrap_or(120);
    if !(10..=MAX_TOKEN_TTL).contains(&token_ttl) {
        problems.push(format!(
            "logout.token_ttl_seconds: {token_ttl} is out of range; expected 10 to {MAX_TOKEN_TTL}"
        ));
    }
    let mut apps = Vec::new();
    for (i, a) in raw.apps.iter().enumerate() {
        let key = |k: &str| format!("logout.apps[{i}].{k}");
        let before = problems.len();
        if !valid_name(&a.name) || a.name == "nodes" {
            problems.push(format!(
                "{}: {:?}: 1 to 64 of a-z A-Z 0-9 - _, not \"nodes\"",
                key("name"),
                a.name
            ));
        }
        if raw.apps[..i].iter().any(|o| o.name == a.name) {
            problems.push(format!("{}: {:?} appears twice", key("name"), a.name));
        }
        let url = endpoint_url(&key("url"), &a.url, settings.allow_http_loopback, problems);
        let subject = match a.subject.as_deref() {
            None | Some("email") => Subject::Email,
            Some("opaque") => Subject::Opaque,
            Some("iss_sub") => match &a.subject_issuer {
                Some(iss) if !iss.is_empty() => Subject::IssSub(iss.clone()),
                _ => {
                    problems.push(format!(
                        "{}: needed with subject = \"iss_sub\"",
                        key("subject_issuer")
                    ));
                    Subject::Email
                }
            },
            Some(other) => {
                problems.push(format!(
                    "{}: {other:?}: expected \"email\", \"iss_sub\" or \"opaque\"",
                    key("subject")
                ));
                Subject::Email
            }
        };
        let unused = |field: &str, set: bool, problems: &mut Vec<String>| {
            if set {
                problems.push(format!("{}: not used by kind {:?}", key(field), a.kind));
            }
        };
        let kind = match a.kind.as_str() {
            "global_token_revocation" => {
                unused("client_id", a.client_id.is_some(), problems);
                unused("secret_file", a.secret_file.is_some(), problems);
                let bearer = a.bearer_token_file.as_deref().and_then(|f| {
                    read_secret(&key("bearer_token_file"), base, f, problems)
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                });
                if a.bearer_token_file.is_none() && !signing {
                    problems.push(format!(
                        "{}: a signed bearer needs [signing] (or give bearer_token_file)",
                        key("kind")
                    ));
                }
                let audience = a
                    .audience
                    .clone()
                    .or_else(|| url.as_ref().map(|u| u.as_str().to_owned()))
                    .unwrap_or_default();
                Some(AppKind::GlobalTokenRevocation { audience, bearer })
            }
            "backchannel_logout" => {
                unused("audience", a.audience.is_some(), problems);
                unused("bearer_token_file", a.bearer_token_file.is_some(), problems);
                unused("secret_file", a.secret_file.is_some(), problems);
                if !signing {
                    problems.push(format!(
                        "{}: a logout_token is signed: needs [signing]",
                        key("kind")
                    ));
                }
                match &a.client_id {
                    Some(c) if !c.is_empty() && c.len() <= 256 => {
                        Some(AppKind::BackchannelLogout {
                            client_id: c.clone(),
                        })
                    }
                    _ => {
                        problems.push(format!(
                            "{}: the app's client id (1 to 256 characters) is needed",
                            key("client_id")
                        ));
                        None
                    }
                }
            }
            "webhook" => {
                unused("audience", a.audience.is_some(), problems);
                unused("client_id", a.client_id.is_some(), problems);
                unused("bearer_token_file", a.bearer_token_file.is_some(), problems);
                match &a.secret_file {
                    Some(f) => read_secret(&key("secret_file"), base, f, problems)
                        .map(|secret| AppKind::Webhook { secret }),
                    None => {
                        problems.push(format!(
                            "{}: needed by kind \"webhook\"",
                            key("secret_file")
                        ));
                        None
                    }
                }
            }
            other => {
                problems.push(format!(
                    "{}: {other:?}: expected \"global_token_revocation\", \"backchannel_logout\" or \"webhook\"",
                    key("kind")
                ));
                None
            }
        };
        let max_concurrency = a.max_concurrency.unwrap_or(2);
        if !(1..=16).contains(&max_concurrency) {
            problems.push(format!(
                "{}: {max_concurrency} is out of range; expected 1 to 16",
                key("max_concurrency")
            ));
        }
        if problems.len() > before {
            continue;
        }
        if let (Some(kind), Some(url)) = (kind, url) {
            apps.push(AppTarget {
                name: a.name.clone(),
                kind,
                url,
                subject,
                max_concurrency,
            });
        }
    }
    LogoutConfig { apps, token_ttl }
}

/// What signs the tokens of outbound logout calls, and their life.
#[derive(Debug)]
pub struct Signing {
    /// The controller's signing keys (`[signing]`).
    pub signer: Option<Arc<crate::signing::Signer>>,
    /// Life of a token, seconds.
    pub ttl: u64,
}

/// The request that delivers `call` to `app`.
pub fn request(
    client: &reqwest::Client,
    app: &AppTarget,
    call: &Claimed,
    signing: Option<&Signing>,
) -> Result<reqwest::RequestBuilder, String> {
    let stored: Value =
        serde_json::from_str(&call.body).map_err(|e| format!("bad stored call: {e}"))?;
    match &app.kind {
        AppKind::Webhook { secret } => {
            let t = now_ms() / 1000;
            Ok(client
                .post(app.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(
                    "vigil-signature",
                    crate::outbox::signature(secret, t, call.body.as_bytes()),
                )
                .header("vigil-delivery", &call.id)
                .body(call.body.clone()))
        }
        AppKind::GlobalTokenRevocation { audience, bearer } => {
            let body = json!({"sub_id": stored["sub_id"]}).to_string();
            let bearer = match bearer {
                Some(b) => b.clone(),
                None => sign_bearer(signing, audience, &stored)?,
            };
            Ok(client
                .post(app.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .bearer_auth(bearer)
                .body(body))
        }
        AppKind::BackchannelLogout { client_id } => {
            let token = sign_logout_token(signing, client_id, &stored)?;
            let body = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("logout_token", &token)
                .finish();
            Ok(client
                .post(app.url.clone())
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body))
        }
    }
}

/// The bearer of a global token revocation request: a JWT the controller
/// signs (`typ` `JWT`): `iss` the signing issuer, `aud` the app's
/// `audience`, `iat`, `exp` (`token_ttl_seconds` later), a fresh `jti`.
fn sign_bearer(
    signing: Option<&Signing>,
    audience: &str,
    _stored: &Value,
) -> Result<String, String> {
    let (signer, ttl) = signer_of(signing)?;
    let now = now_secs();
    let claims = json!({
        "iss": signer.issuer(),
        "aud": audience,
        "iat": now,
        "exp": now + ttl,
        "jti": new_id(),
    });
    signer.sign("JWT", &claims).map_err(|e| e.to_string())
}

/// An OIDC Back-Channel Logout 1.0 `logout_token` (`typ` `logout+jwt`):
/// `iss` the signing issuer, `aud` the app's client id, `iat`, `exp`,
/// a fresh `jti`, `sub` the user's name as the app knows it, the
/// back-channel logout event; never a `nonce`. No `sid`: the controller
/// does not know the app's session ids, so every session of `sub` ends.
fn sign_logout_token(
    signing: Option<&Signing>,
    client_id: &str,
    stored: &Value,
) -> Result<String, String> {
    let (signer, ttl) = signer_of(signing)?;
    let sub = stored["sub"].as_str().ok_or("bad stored call: no sub")?;
    let now = now_secs();
    let claims = json!({
        "iss": signer.issuer(),
        "aud": client_id,
        "iat": now,
        "exp": now + ttl,
        "jti": new_id(),
        "sub": sub,
        "events": {BACKCHANNEL_EVENT: {}},
    });
    signer
        .sign("logout+jwt", &claims)
        .map_err(|e| e.to_string())
}

fn signer_of(signing: Option<&Signing>) -> Result<(&crate::signing::Signer, u64), String> {
    let s = signing.ok_or("no [signing] key configured")?;
    let signer = s.signer.as_deref().ok_or("no [signing] key configured")?;
    Ok((signer, s.ttl))
}

// === the admin API ===

/// The target every logout has: the fleet's revocation.
pub const NODES: &str = "nodes";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogoutRequest {
    /// The user's name as the app names it to Vigil.
    user: String,
}

/// A record as the admin API shows it.
fn record_json(r: &LogoutRecord) -> Value {
    json!({
        "id": r.id,
        "user": r.user_key,
        "by": r.by,
        "created_at": r.created,
        "seq": r.seq,
        "targets": r.targets.iter().map(|t| json!({
            "target": t.target,
            "kind": t.kind,
            "state": t.state,
            "detail": t.detail,
            "attempts": t.attempts,
            "updated_at": t.updated,
        })).collect::<Vec<_>>(),
    })
}

/// `POST /v1/admin/users/logout` `{"user"}`: universal logout. Every
/// session of the user is revoked on every node (as `users/revoke`), and
/// each configured app is called through the outbox; the answer is the
/// logout's record, its targets' first results.
pub async fn logout_user(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin(&app, &headers, &peer)?;
    if body.len() > 16 * 1024 {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "at most 16384 bytes",
        ));
    }
    let req: LogoutRequest = json(&body)?;
    let shown = universal_logout(&app, &req.user, "admin_api").await?;
    Ok(Json(shown).into_response())
}

/// Universal logout of the user named `name`, as
/// `POST /v1/admin/users/logout` does and the dashboard's form for a
/// responder: `by` is recorded as who asked (`admin_api`,
/// `dashboard:<identity>`). The logout's record as the API shows it.
pub(crate) async fn universal_logout(app: &App, name: &str, by: &str) -> Result<Value, ApiError> {
    let user = user_id(app, name)?;
    let name = vigil_engine::valid_user_name(name).unwrap_or(name);
    let now = now_secs();
    crate::admin::keep_name(app, user, name).await?;
    let seq = app.store.revoke_user(user, now, now).await?;
    app.head.send_replace(seq);
    let (id, shown) = record_apps(app, user, name, by, seq).await?;
    tracing::info!(user = %user, seq, logout = id, by, "universal logout by an operator");
    crate::webhooks::revocation(
        app,
        crate::webhooks::Revoked::User(user, Some(name)),
        &format!("logout:{id}"),
        seq,
    )
    .await?;
    crate::webhooks::logout(app, &shown, &id).await?;
    Ok(shown)
}

/// Universal logout asked by a Shared Signals transmitter (an event whose
/// action is `logout`): the fleet's revocation is committed with the SET,
/// at `seq`; this records the logout and calls each app, as
/// `users/logout` does. `by` is `ssf:<transmitter>`.
pub(crate) async fn apps(
    app: &App,
    user: vigil_fleet::UserId,
    name: &str,
    by: &str,
    seq: u64,
) -> Result<(), ApiError> {
    let name = vigil_engine::valid_user_name(name).unwrap_or(name);
    let (id, shown) = record_apps(app, user, name, by, seq).await?;
    tracing::info!(user = %user, seq, logout = id, by, "universal logout by a signal");
    crate::webhooks::logout(app, &shown, &id).await?;
    Ok(())
}

/// Records a universal logout of `user`, whose fleet revocation is at
/// `seq`, with a target per configured app, and queues each app's call.
/// Returns its id and its record as shown.
async fn record_apps(
    app: &App,
    user: vigil_fleet::UserId,
    name: &str,
    by: &str,
    seq: u64,
) -> Result<(String, Value), ApiError> {
    let now = now_secs();
    let id = new_id();
    let mut targets = vec![TargetResult {
        target: NODES.to_owned(),
        kind: "fleet_revocation".to_owned(),
        state: "delivered".to_owned(),
        detail: Some(format!(
            "every session revoked on every node through the sync stream (change {seq})"
        )),
        attempts: 1,
        updated: now,
    }];
    // Bodies are built first, their ids inside: a webhook's body names its
    // delivery.
    let mut calls: Vec<(String, String, String, &'static str)> = Vec::new();
    for a in &app.config.logout.apps {
        if app.config.user_names != UserNames::Clear {
            targets.push(TargetResult {
                target: a.name.clone(),
                kind: a.kind.as_str().to_owned(),
                state: "not_supported".to_owned(),
                detail: Some(
                    "user_names is \"keyed\": the controller keeps no user name, and the app \
                     knows the user by name only"
                        .to_owned(),
                ),
                attempts: 0,
                updated: now,
            });
            continue;
        }
        let delivery = new_id();
        let sub_id = a.subject.of(name);
        let stored = match &a.kind {
            AppKind::Webhook { .. } => json!({
                "version": crate::webhooks::VERSION,
                "id": delivery,
                "type": "logout",
                "occurred_at": now,
                "logout": {
                    "id": id,
                    "user": {"key": user.to_string(), "name": name},
                    "sub_id": sub_id,
                    "by": by,
                },
            }),
            _ => json!({"sub_id": sub_id, "sub": name}),
        };
        targets.push(TargetResult {
            target: a.name.clone(),
            kind: a.kind.as_str().to_owned(),
            state: "pending".to_owned(),
            detail: None,
            attempts: 0,
            updated: now,
        });
        calls.push((
            delivery,
            app_endpoint(&a.name),
            stored.to_string(),
            a.kind.as_str(),
        ));
    }
    // As the store lists them.
    targets.sort_by(|a, b| a.target.cmp(&b.target));
    let deliveries: Vec<NewDelivery<'_>> = calls
        .iter()
        .map(|(d, endpoint, body, kind)| NewDelivery {
            id: d,
            endpoint,
            kind,
            body,
            logout_id: Some(&id),
        })
        .collect();
    let record = LogoutRecord {
        id: id.clone(),
        user_key: user.to_string(),
        by: by.to_owned(),
        created: now,
        seq,
        targets,
    };
    app.store
        .record_logout(&record, &deliveries, now_ms())
        .await?;
    if let Some(outbox) = &app.outbox {
        outbox.wake();
    }
    let shown = record_json(&record);
    Ok((id, shown))
}

fn unknown_logout() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_logout",
        "no universal logout has that id",
    )
}

/// `GET /v1/admin/logouts/{id}`: one logout with each target's result now.
pub async fn get_logout(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    admin(&app, &headers, &peer)?;
    if id.len() > 64 {
        return Err(unknown_logout());
    }
    let record = app.store.logout(&id).await?.ok_or_else(unknown_logout)?;
    Ok(Json(record_json(&record)).into_response())
}

/// Most logouts listed for one user.
const MAX_LISTED: usize = 100;

/// `GET /v1/admin/logouts?user=NAME` (or `?key=HEX`): a user's logouts,
/// newest first (at most 100), each with its targets.
pub async fn list_logouts(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    admin(&app, &headers, &peer)?;
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "expected ?user=<name> or ?key=<16 hex digits>, once",
        )
    };
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let [(k, v)] = pairs.as_slice() else {
        return Err(bad());
    };
    let user = match k.as_str() {
        "user" => user_id(&app, v)?,
        "key" => vigil_fleet::UserId::parse(v).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    let mut out = Vec::new();
    for id in app.store.logouts_of(&user.to_string(), MAX_LISTED).await? {
        if let Some(r) = app.store.logout(&id).await? {
            out.push(record_json(&r));
        }
    }
    Ok(Json(json!({"user": user.to_string(), "logouts": out})).into_response())
}
