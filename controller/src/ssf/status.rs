//! Each stream's status as this process saw it (its last poll, its last
//! error), beside what the store keeps for every replica (its last SET,
//! its last verification): `GET /v1/admin/ssf/streams`.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::api::App;

/// What this process saw of a stream.
#[derive(Debug, Default)]
pub struct Status(Mutex<Seen>);

#[derive(Debug, Default, Clone)]
struct Seen {
    last_poll: Option<u64>,
    last_error: Option<(u64, String)>,
}

/// Longest error description kept.
const MAX_ERROR: usize = 512;

impl Status {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A poll made at `now`, and its failure if it failed.
    pub fn polled(&self, now: u64, error: Option<&String>) {
        let mut s = self.seen();
        s.last_poll = Some(now);
        if let Some(e) = error {
            s.last_error = Some((now, truncate(&format!("poll: {e}"))));
        }
    }

    /// A SET not taken at `now`, and why.
    pub fn error(&self, now: u64, what: &str) {
        self.seen().last_error = Some((now, truncate(what)));
    }
}

fn truncate(s: &str) -> String {
    let mut end = s.len().min(MAX_ERROR);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// `GET /v1/admin/ssf/streams`: every configured transmitter, its
/// delivery, and its status (admin bearer).
pub async fn streams(
    State(app): State<Arc<App>>,
    peer: crate::tls::Peer,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = crate::api::admin(&app, &headers, &peer) {
        return e.into_response();
    }
    let mut out = Vec::new();
    let mut streams: Vec<_> = app.ssf.streams().collect();
    streams.sort_by(|a, b| a.t.name.cmp(&b.t.name));
    for s in streams {
        let record = match app.store.ssf_stream(&s.t.name).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "stream status not read");
                return (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(json!({"error": "the store failed"})),
                )
                    .into_response();
            }
        };
        let seen = s.status.seen().clone();
        out.push(json!({
            "name": s.t.name,
            "issuer": s.t.issuer,
            "delivery": if s.t.poll.is_some() { "poll" } else { "push" },
            "last_set": record.as_ref().map(|r| r.last_set),
            "last_verification": record.as_ref().and_then(|r| r.verification.as_ref()).map(|(at, state)| json!({"at": at, "state": state})),
            "last_poll": seen.last_poll,
            "last_error": seen.last_error.map(|(at, d)| json!({"at": at, "description": d})),
        }));
    }
    axum::Json(json!({ "streams": Value::Array(out) })).into_response()
}
