//! Poll delivery (RFC 8936): for each transmitter configured with
//! `delivery = "poll"`, one task of this process asks its poll endpoint
//! for SETs (`maxEvents`, `returnImmediately`), hands each one to the very
//! path a pushed SET takes ([`super::take`]: the same validation, the same
//! group commit, the same `jti` deduplication), and acknowledges it in
//! the next request: `ack` for each SET taken (or taken before),
//! `setErrs` with the RFC 8935 code for each SET refused. A SET that could
//! not be taken for now (keys or store unavailable) is neither: the
//! transmitter delivers it again. Failures back off exponentially, from
//! 1 s to 5 min.
//!
//! Several replicas each poll: a SET handed to two of them is acted on
//! once (the `jti` row is committed with the action; the second replica
//! finds it and acknowledges it too, which the transmitter takes as a
//! repeated acknowledgement).

use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::task::{AbortHandle, JoinSet};

use super::{MAX_SET_BYTES, Refused};
use crate::api::App;

/// Largest poll response read.
pub const MAX_POLL_BYTES: usize = 8 * 1024 * 1024;
/// The longest back-off after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Starts a poller for each polled transmitter of `app`; their handles,
/// to abort them when the controller stops.
pub fn start(app: &Arc<App>) -> Vec<AbortHandle> {
    let polled: Vec<String> = app
        .ssf
        .streams()
        .filter(|s| s.t.poll.is_some())
        .map(|s| s.t.name.clone())
        .collect();
    if polled.is_empty() {
        return Vec::new();
    }
    let Some(client) = super::keys::client() else {
        return Vec::new();
    };
    polled
        .into_iter()
        .map(|name| tokio::spawn(run(Arc::downgrade(app), name, client.clone())).abort_handle())
        .collect()
}

/// What one poll's answer held, as the next request acknowledges it.
#[derive(Debug, Default)]
struct Acks {
    ack: Vec<String>,
    errs: Map<String, Value>,
}

async fn run(app: Weak<App>, name: String, client: reqwest::Client) {
    let mut acks = Acks::default();
    let mut backoff = Duration::ZERO;
    loop {
        let Some(app) = app.upgrade() else { return };
        let Some(stream) = app.ssf.stream(&name) else {
            return;
        };
        let Some(poll) = stream.t.poll.clone() else {
            return;
        };
        let body = json!({
            "maxEvents": poll.max_events,
            "returnImmediately": true,
            "ack": acks.ack,
            "setErrs": acks.errs,
        });
        let answer = request(&client, &poll.url, &poll.token, &body).await;
        stream
            .status
            .polled(crate::api::now_secs(), answer.as_ref().err());
        let (sets, more) = match answer {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(transmitter = %name, error = %e, "poll failed");
                backoff = (backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                drop(app);
                // The acknowledgements are sent again with the next poll.
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        acks = Acks::default();
        let received = sets.len();
        let mut unavailable = false;
        let mut tasks = JoinSet::new();
        for (jti, set) in sets.into_iter().take(poll.max_events) {
            let (app, name) = (Arc::clone(&app), name.clone());
            tasks.spawn(async move {
                let result = match &set {
                    Value::String(s) if s.len() <= MAX_SET_BYTES => match app.ssf.stream(&name) {
                        Some(st) => super::take(&app, &st.t, &st.keys, s.as_bytes()).await,
                        None => Err(Refused::Unavailable("no such transmitter")),
                    },
                    Value::String(_) => Err(super::invalid(format!(
                        "a SET of at most {MAX_SET_BYTES} bytes"
                    ))),
                    _ => Err(super::invalid("the SET is not a string")),
                };
                (jti, result)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let Ok((jti, result)) = joined else { continue };
            let count = |result: &str| {
                app.metrics
                    .ssf_sets
                    .with_label_values(&[name.as_str(), result])
                    .inc();
            };
            match result {
                Ok(result) => {
                    count(result);
                    acks.ack.push(jti);
                }
                Err(Refused::Set(r)) => {
                    count(r.err);
                    stream.status.error(
                        crate::api::now_secs(),
                        &format!("{}: {}", r.err, r.description),
                    );
                    tracing::info!(transmitter = %name, err = r.err, description = %r.description, "polled SET refused");
                    acks.errs
                        .insert(jti, json!({"err": r.err, "description": r.description}));
                }
                Err(Refused::Unavailable(why)) => {
                    count("unavailable");
                    stream.status.error(crate::api::now_secs(), why);
                    unavailable = true;
                }
            }
        }
        acks.ack.sort();
        drop(app);
        if unavailable {
            backoff = (backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
            tokio::time::sleep(backoff).await;
        } else {
            backoff = Duration::ZERO;
            if received == 0 && !more && acks.ack.is_empty() && acks.errs.is_empty() {
                tokio::time::sleep(poll.interval).await;
            }
        }
    }
}

/// One poll request; the `sets` answered and `moreAvailable`.
async fn request(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
) -> Result<(Map<String, Value>, bool), String> {
    let mut response = client
        .post(url)
        .bearer_auth(token)
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| super::keys::error_chain(&e))?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(format!("answered {}", response.status()));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| super::keys::error_chain(&e))?
    {
        if bytes.len() + chunk.len() > MAX_POLL_BYTES {
            return Err(format!("an answer of more than {MAX_POLL_BYTES} bytes"));
        }
        bytes.extend_from_slice(&chunk);
    }
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))?;
    let sets = match doc.get("sets") {
        Some(Value::Object(sets)) => sets.clone(),
        _ => return Err("the answer has no \"sets\" object".into()),
    };
    if sets.keys().any(|k| k.is_empty() || k.len() > 256) {
        return Err("a SET's key is not a jti of 1 to 256 characters".into());
    }
    let more = doc
        .get("moreAvailable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok((sets, more))
}
