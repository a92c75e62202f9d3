//! The admin API in the audit trail (`docs/dashboard.md`, Audit): every
//! authenticated call that changes something (any method but `GET` and
//! `HEAD` under `/v1/admin/`) is a row beside the dashboard's, with who
//! (the admin token or certificate), what (the call and its target), when,
//! from where and its outcome (the status); and `GET /v1/admin/audit`
//! lists the trail.

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::{ApiError, App, admin, user_id};
use crate::tls::Peer;

/// Largest body of an admin call read for its target; larger ones are
/// refused by the call itself anyway (`MAX_BODY_BYTES` of the API).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Entries `GET /v1/admin/audit` answers at most per page.
const MAX_LIMIT: usize = 500;

/// Deepest `offset` `GET /v1/admin/audit` takes.
const MAX_OFFSET: u64 = 1_000_000;

/// The body fields naming what a call acts on, in order of preference.
const TARGET_FIELDS: [&str; 6] = ["reference", "session", "user", "node", "version", "id"];

/// Runs the call; an authenticated admin call that changes something is
/// written to the audit trail once it is answered.
pub(crate) async fn audit_admin(
    State(app): State<Arc<App>>,
    peer: Peer,
    request: Request,
    next: Next,
) -> Response {
    let changes = request.uri().path().starts_with("/v1/admin/")
        && request.method() != Method::GET
        && request.method() != Method::HEAD;
    if !changes || admin(&app, request.headers(), &peer).is_err() {
        return next.run(request).await;
    }
    let call = format!("api {} {}", request.method(), request.uri().path());
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the body is too large",
        )
        .into_response();
    };
    let target = target(&app, &call, &bytes);
    let response = next
        .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await;
    let who = if peer.cert.is_some() && app.config.admin_certificate_sha256.is_some() {
        "admin API (admin certificate)"
    } else {
        "admin API (admin token)"
    };
    let status = response.status();
    let outcome = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    crate::dashboard::audit_as(
        &app,
        who,
        "responder",
        &peer,
        &call,
        &target,
        outcome.trim_end(),
    )
    .await;
    response
}

/// What a call acts on, from its JSON body: a user as their key (never
/// the name), else the first of [`TARGET_FIELDS`] given. An erasure's is
/// not kept: the trail would name whom it erased.
fn target(app: &App, call: &str, body: &[u8]) -> String {
    if call.ends_with("/v1/admin/users/erase") {
        return "(erased user)".to_owned();
    }
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(body) else {
        return String::new();
    };
    for key in TARGET_FIELDS {
        match fields.get(key) {
            Some(serde_json::Value::String(s)) if key == "user" => {
                return user_id(app, s).map(|u| u.to_string()).unwrap_or_default();
            }
            Some(serde_json::Value::String(s)) => return s.clone(),
            Some(serde_json::Value::Number(n)) => return n.to_string(),
            _ => {}
        }
    }
    String::new()
}

/// `GET /v1/admin/audit?limit=N&offset=M`: the audit trail, newest first,
/// `limit` (1 to 500, default 100) entries from the `offset`th (at most
/// 1,000,000); `more` says whether others follow.
pub(crate) async fn list(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    admin(&app, &headers, &peer)?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", m);
    let (mut limit, mut offset) = (100usize, 0u64);
    let mut seen = Vec::new();
    for (k, v) in url::form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()) {
        if seen.contains(&k) {
            return Err(bad(format!("{k} given twice")));
        }
        match k.as_ref() {
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| bad(format!("limit: 1 to {MAX_LIMIT}")))?;
            }
            "offset" => {
                offset = v
                    .parse()
                    .ok()
                    .filter(|o| *o <= MAX_OFFSET)
                    .ok_or_else(|| bad(format!("offset: 0 to {MAX_OFFSET}")))?;
            }
            other => return Err(bad(format!("unknown parameter {other:?}"))),
        }
        seen.push(k);
    }
    let (entries, more) = app.store.audit_entries(limit, offset).await?;
    let entries: Vec<serde_json::Value> = entries
        .into_iter()
        .map(|e| {
            serde_json::json!({
                "id": e.id,
                "at": e.at,
                "who": e.who,
                "role": e.role,
                "client": e.client,
                "action": e.action,
                "target": e.target,
                "outcome": e.outcome,
            })
        })
        .collect();
    let next = more.then(|| offset + entries.len() as u64);
    Ok(Json(serde_json::json!({
        "entries": entries,
        "more": more,
        "next_offset": next,
    }))
    .into_response())
}
