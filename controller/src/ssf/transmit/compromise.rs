//! `POST /v1/admin/detections/confirmed-compromise`: an operator's word
//! that a detection caught a real compromise — the counterpart of the
//! false-positive feedback (`crate::admin::false_positive`). The label is
//! recorded on the detection, every user it names is revoked everywhere,
//! and each stream that asked for it gets a RISC `credential-compromise`
//! (beside the CAEP `session-revoked` the revocation itself becomes), all
//! in one transaction: done once, however often it is reported.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::events;
use crate::api::{ApiError, App, admin, json, now_secs};
use crate::tls::Peer;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Confirmed {
    /// The detection's reference id, as on the refusal page.
    reference: String,
    /// The RISC credential type compromised; `password` when not given.
    credential_type: Option<String>,
}

/// The handler: `200` with the users revoked (their keys) and whether it
/// was marked now; `404` for a reference no detection has; `400` for a
/// bad body.
pub async fn confirmed_compromise(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin(&app, &headers, &peer)?;
    let req: Confirmed = json(&body)?;
    let done = confirm(
        &app,
        &req.reference,
        req.credential_type.as_deref(),
        "the admin API",
    )
    .await?;
    Ok(Json(done).into_response())
}

/// Confirms the detections with `reference` a compromise, as the admin
/// API's call does and the dashboard's form for a responder (`by`,
/// logged); the API's answer.
pub(crate) async fn confirm(
    app: &App,
    reference: &str,
    credential_type: Option<&str>,
    by: &str,
) -> Result<serde_json::Value, ApiError> {
    crate::admin::check_reference(reference)?;
    let credential_type = credential_type.unwrap_or("password");
    if !events::CREDENTIAL_TYPES.contains(&credential_type) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_credential_type",
            format!(
                "credential_type is one of RISC's: {}",
                events::CREDENTIAL_TYPES.join(", ")
            ),
        ));
    }
    let now = now_secs();
    let receivers = app
        .config
        .ssf_tx
        .as_ref()
        .map_or(&[][..], |t| &t.receivers[..]);
    let max_queue = app.config.ssf_tx.as_ref().map_or(1, |t| t.max_queue);
    let done = app
        .store
        .confirm_compromise(reference, now, max_queue, |input, users| {
            events::compromise(input, users, receivers, credential_type, reference, now)
        })
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_reference",
                "no detection with that reference is held",
            )
        })?;
    if done.changed {
        app.head.send_replace(done.head);
        app.ssf_tx.notify();
        tracing::warn!(
            %reference,
            users = done.users.len(),
            sets = done.enqueued,
            by,
            "a compromise confirmed: its users revoked"
        );
    }
    let users: Vec<String> = done.users.iter().map(ToString::to_string).collect();
    Ok(json!({
        "reference": reference,
        "changed": done.changed,
        "users": users,
        "seq": done.head,
    }))
}
