//! Remediation webhooks (`docs/webhooks.md`): what the controller learns —
//! a node's detection, a revocation, a Shared Signals SET acted on, a
//! universal logout — becomes a signed JSON body POSTed to each webhook
//! that asked for it, through the outbox ([`crate::outbox`]).
//!
//! The body is a contract (version 1, `docs/webhooks.md`): `version`,
//! `id` (the delivery's, the same on every attempt), `type`,
//! `occurred_at`, and one member named as the type. Its id is derived
//! from what happened where that has an id of its own (a node's event),
//! so that the same event taken twice is one delivery.

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use vigil_fleet::{NodeEvent, NodeEventKind, SessionId, UserId};

use crate::api::{ApiError, App, admin, json, now_secs};
use crate::config::UserNames;
use crate::outbox::config::EventKind;
use crate::outbox::{new_id, webhook_endpoint};
use crate::store::StoreError;
use crate::store::outbox::NewDelivery;
use crate::tls::Peer;

/// The body's version.
pub const VERSION: u32 = 1;

/// What a revocation ended.
#[derive(Debug, Clone, Copy)]
pub enum Revoked<'a> {
    /// One session.
    Session(&'a SessionId),
    /// Every session of a user; the name when the call gave one.
    User(UserId, Option<&'a str>),
    /// The sessions of a user that signed in under one identity provider
    /// session (every session of the user when none is known).
    IdpSession(UserId),
}

/// A user as a body names them: the key, and the name when names are kept.
fn user(app: &App, key: UserId, name: Option<&str>) -> Value {
    let name = name.filter(|_| app.config.user_names == UserNames::Clear);
    json!({"key": key.to_string(), "name": name})
}

/// A delivery id derived from `parts`: the same event, the same id.
fn derived_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

/// Enqueues `member` as an event of `kind` to every webhook that asked for
/// it and that `wants` (given its config); `id_of` gives each delivery's
/// id from the webhook's name.
async fn emit(
    app: &App,
    kind: EventKind,
    occurred_at: u64,
    member: &Value,
    wants: impl Fn(&crate::outbox::Webhook) -> bool,
    id_of: impl Fn(&str) -> String,
) -> Result<(), StoreError> {
    let Some(outbox) = &app.outbox else {
        return Ok(());
    };
    for w in &app.config.webhooks {
        if !w.events.contains(&kind) || !wants(w) {
            continue;
        }
        let id = id_of(&w.name);
        let body = json!({
            "version": VERSION,
            "id": id,
            "type": kind.as_str(),
            "occurred_at": occurred_at,
            kind.as_str(): member,
        })
        .to_string();
        let endpoint = webhook_endpoint(&w.name);
        outbox
            .enqueue(&NewDelivery {
                id: &id,
                endpoint: &endpoint,
                kind: "webhook",
                body: &body,
                logout_id: None,
            })
            .await?;
    }
    Ok(())
}

/// The detections of a node's batch, to the webhooks whose filter they
/// pass. Called after the batch is taken, for every detection in it (a
/// batch posted again enqueues the same ids: nothing is sent twice).
pub async fn detections(app: &App, node: &str, events: &[NodeEvent]) -> Result<(), StoreError> {
    if app.outbox.is_none() || app.config.webhooks.is_empty() {
        return Ok(());
    }
    for e in events {
        let NodeEventKind::Detection {
            reference,
            session,
            user: who,
            route,
            rule,
            action,
            enforced,
            score,
            reasons,
            at,
            ..
        } = &e.kind
        else {
            continue;
        };
        let member = json!({
            "node": node,
            "reference": reference,
            "route": route,
            "rule": rule,
            "action": action,
            "enforced": enforced,
            "score": score,
            "reasons": reasons.iter().map(|(code, points)| json!({"code": code, "points": points})).collect::<Vec<_>>(),
            "session": session.map(|s| s.to_string()),
            "user": who.map(|u| user(app, u, None)),
        });
        emit(
            app,
            EventKind::Detection,
            *at,
            &member,
            |w| {
                *score >= w.filter.min_score
                    && (w.filter.actions.is_empty() || w.filter.actions.contains(action))
                    && (*enforced || !w.filter.enforced_only)
            },
            |name| derived_id(&["detection", name, node, &e.id]),
        )
        .await?;
    }
    Ok(())
}

/// A revocation the controller committed (change `seq`), by `by`
/// (`admin_api`, `ssf:<transmitter>`, `logout:<id>`).
pub async fn revocation(
    app: &App,
    revoked: Revoked<'_>,
    by: &str,
    seq: u64,
) -> Result<(), StoreError> {
    let member = match revoked {
        Revoked::Session(s) => {
            json!({"scope": "session", "session": s.to_string(), "by": by, "seq": seq})
        }
        Revoked::IdpSession(u) => {
            json!({"scope": "idp_session", "user": user(app, u, None), "by": by, "seq": seq})
        }
        Revoked::User(u, name) => {
            json!({"scope": "user", "user": user(app, u, name), "by": by, "seq": seq})
        }
    };
    let event = new_id();
    emit(
        app,
        EventKind::Revocation,
        now_secs(),
        &member,
        |_| true,
        |name| derived_id(&["revocation", name, &event]),
    )
    .await
}

/// A Shared Signals SET acted on: `event` (its type URI) from
/// `transmitter`, and what it did (`revoke_user`, `raise_risk`,
/// `clear_risk`).
pub async fn signal(
    app: &App,
    transmitter: &str,
    jti: &str,
    event: &str,
    action: &str,
    who: Option<UserId>,
) -> Result<(), StoreError> {
    let member = json!({
        "transmitter": transmitter,
        "event": event,
        "jti": jti,
        "action": action,
        "user": who.map(|u| user(app, u, None)),
    });
    emit(
        app,
        EventKind::Signal,
        now_secs(),
        &member,
        |_| true,
        |name| derived_id(&["signal", name, transmitter, jti]),
    )
    .await
}

/// A universal logout recorded ([`crate::logout`]).
pub async fn logout(app: &App, member: &Value, logout_id: &str) -> Result<(), StoreError> {
    emit(
        app,
        EventKind::Logout,
        now_secs(),
        member,
        |_| true,
        |name| derived_id(&["logout", name, logout_id]),
    )
    .await
}

// === the admin API: dead letters ===

/// `GET /v1/admin/outbox/dead?limit=&offset=`: dead letters, newest
/// first.
pub async fn list_dead(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    admin(&app, &headers, &peer)?;
    let (limit, offset) = crate::admin::page_of(query.as_deref())?;
    let (list, more) = app.store.dead_letters(limit, offset).await?;
    let list: Vec<Value> = list
        .iter()
        .map(|d| {
            json!({
                "id": d.id,
                "endpoint": d.endpoint,
                "kind": d.kind,
                "logout": d.logout_id,
                "created_at": d.created_ms / 1000,
                "dead_at": d.dead_ms / 1000,
                "attempts": d.attempts,
                "last_error": d.last_error,
            })
        })
        .collect();
    let next_offset = more.then(|| offset + list.len() as u64);
    Ok(Json(json!({"dead_letters": list, "next_offset": next_offset})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryRef {
    id: String,
}

fn unknown_delivery() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_delivery",
        "no dead letter has that id",
    )
}

fn delivery_ref(body: &Bytes) -> Result<String, ApiError> {
    if body.len() > 1024 {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "at most 1024 bytes",
        ));
    }
    let req: DeliveryRef = json(body)?;
    if req.id.is_empty() || req.id.len() > 64 {
        return Err(unknown_delivery());
    }
    Ok(req.id)
}

/// `POST /v1/admin/outbox/retry` `{"id"}`: the dead letter is queued
/// again as new (no attempts, its age from now).
pub async fn retry_dead(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin(&app, &headers, &peer)?;
    let id = delivery_ref(&body)?;
    let endpoint = app
        .store
        .retry_dead(&id, crate::outbox::now_ms())
        .await?
        .ok_or_else(unknown_delivery)?;
    if let Some(outbox) = &app.outbox {
        if !outbox.knows(&endpoint) {
            tracing::warn!(
                endpoint,
                id,
                "dead letter retried for an endpoint no longer configured"
            );
        }
        outbox.wake();
    }
    tracing::info!(endpoint, id, "dead letter retried by the admin API");
    Ok(Json(json!({"id": id, "endpoint": endpoint, "state": "pending"})).into_response())
}

/// `POST /v1/admin/outbox/delete` `{"id"}`: the dead letter is deleted.
pub async fn delete_dead(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admin(&app, &headers, &peer)?;
    let id = delivery_ref(&body)?;
    if !app.store.delete_dead(&id).await? {
        return Err(unknown_delivery());
    }
    tracing::info!(id, "dead letter deleted by the admin API");
    Ok(Json(json!({"id": id, "deleted": true})).into_response())
}

/// A SET acted on ([`crate::ssf`]): a `signal` event, and a `revocation`
/// when it revoked the user (change `head`).
pub async fn set_taken(
    app: &App,
    transmitter: &str,
    jti: &str,
    event: &str,
    action: crate::store::ssf::SetAction,
    head: u64,
) -> Result<(), StoreError> {
    use crate::store::ssf::SetAction;
    let (name, who) = match action {
        SetAction::RevokeUser(u) => ("revoke_user", Some(u)),
        SetAction::UserRisk {
            user, points: 0, ..
        } => ("clear_risk", Some(user)),
        SetAction::UserRisk { user, .. } => ("raise_risk", Some(user)),
        SetAction::RevokeIdpSession { user, .. } => ("revoke_idp_session", Some(user)),
        SetAction::StepUp(user) => ("step_up", Some(user)),
        SetAction::Nothing => ("none", None),
    };
    signal(app, transmitter, jti, event, name, who).await?;
    let by = format!("ssf:{transmitter}");
    match action {
        SetAction::RevokeUser(u) => revocation(app, Revoked::User(u, None), &by, head).await?,
        SetAction::RevokeIdpSession { user, .. } => {
            revocation(app, Revoked::IdpSession(user), &by, head).await?;
        }
        _ => {}
    }
    Ok(())
}
