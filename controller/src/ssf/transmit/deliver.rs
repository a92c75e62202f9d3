//! Delivery (`docs/signals.md`, Vigil as a transmitter): the loop that
//! derives SETs from the change log and pushes them (RFC 8935), and the
//! poll endpoint (RFC 8936). At least once: a SET leaves its queue only
//! when the receiver took it (a push's `202`, a poll's `ack`) or refused
//! it (a push's `400`, a poll's `setErrs`, recorded); any other answer is
//! tried again after an exponential back-off.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{POLL, PUSH, authenticated, bad, body_of, events, json_response, owned};
use crate::api::{ApiError, App, now_secs};
use crate::store::ssf_tx::TxStream;

/// Changes read per fan-out transaction.
const FAN_OUT_BATCH: usize = 500;
/// SETs pushed per stream per round.
const PUSH_BATCH: usize = 64;
/// SETs of one stream pushed at once (RFC 8935 carries one SET a
/// request; a receiver deduplicates by `jti`, and SETs are independent:
/// order within a group is not kept).
const IN_FLIGHT: usize = 8;
/// How long a controller holds a stream's pushes.
const LEASE: Duration = Duration::from_secs(60);
/// The deliverer looks at least this often (other replicas' commits
/// without a notification, back-offs come due).
const TICK: Duration = Duration::from_millis(250);
/// Most SETs one poll returns.
const MAX_POLL: u64 = 100;
/// Most acknowledgements and errors one poll carries.
const MAX_ACKS: usize = 1_000;
/// Largest push answer read.
const MAX_ANSWER: usize = 16 * 1024;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The client pushes go out with: rustls with ring, no redirects (a
/// receiver's endpoint is checked against its `push_endpoints`; a
/// redirect would go around it), every call bounded in time.
pub fn http_client() -> Option<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| tracing::warn!(error = %e, "no HTTP client for SSF pushes"))
        .ok()
}

fn count(app: &App, receiver: &str, result: &str, n: u64) {
    if n > 0 {
        app.metrics
            .ssf_tx_sets
            .with_label_values(&[receiver, result])
            .inc_by(n);
    }
}

/// The deliverer: runs while the controller does (`app` dropped: it
/// ends). Fans the log out into the streams' queues, then pushes what is
/// due; again when woken (a commit, something enqueued) or every
/// [`TICK`].
pub async fn run(app: Weak<App>) {
    let (wake, mut published) = match app.upgrade() {
        Some(a) => (Arc::clone(&a.ssf_tx.wake), a.tail.subscribe()),
        None => return,
    };
    // Each stream's pushes run on a task of their own, so that a slow
    // receiver holds up neither the fan-out nor the other streams; owned
    // here, so that they end with this loop.
    let mut pushing: tokio::task::JoinSet<()> = tokio::task::JoinSet::new();
    let mut in_flight: InFlight = HashMap::new();
    let ended = |in_flight: &mut InFlight,
                 done: Result<(tokio::task::Id, ()), tokio::task::JoinError>| {
        // A task that ended any way (a panic included) frees its stream.
        let id = match done {
            Ok((id, ())) => id,
            Err(e) => e.id(),
        };
        in_flight.remove(&id);
    };
    loop {
        while let Some(done) = pushing.try_join_next_with_id() {
            ended(&mut in_flight, done);
        }
        {
            let Some(app) = app.upgrade() else { return };
            fan_out(&app).await;
            push_due(&app, &mut pushing, &mut in_flight).await;
        }
        tokio::select! {
            _ = published.recv() => {}
            () = wake.notified() => {}
            () = tokio::time::sleep(TICK) => {}
            Some(done) = pushing.join_next_with_id(), if !pushing.is_empty() => {
                ended(&mut in_flight, done);
            }
        }
    }
}

/// Enqueues what the changes after the cursor are, until none is left.
pub async fn fan_out(app: &App) {
    let Some(tx) = app.config.ssf_tx.as_ref() else {
        return;
    };
    loop {
        let receivers = &tx.receivers;
        let mut counted: Vec<(String, String)> = Vec::new();
        let done = app
            .store
            .ssf_tx_fan_out(FAN_OUT_BATCH, tx.max_queue, now_secs(), tx.echo_window, |input| {
                if input.gap {
                    tracing::warn!(
                        "SSF transmitter: changes were compacted away before they were sent; their events are lost"
                    );
                }
                let plan = events::plan(input, receivers, tx.echo_window);
                for (stream, _, _) in &plan.enqueue {
                    let owner = input
                        .streams
                        .iter()
                        .find(|s| &s.stream_id == stream)
                        .map_or_else(String::new, |s| s.client.clone());
                    counted.push((owner, stream.clone()));
                }
                plan
            })
            .await;
        match done {
            Ok(done) => {
                for (owner, _) in &counted {
                    count(app, owner, "enqueued", 1);
                }
                for (stream, dropped) in &done.dropped {
                    let owner = counted
                        .iter()
                        .find(|(_, s)| s == stream)
                        .map_or("-", |(o, _)| o.as_str());
                    tracing::warn!(
                        receiver = owner,
                        stream,
                        dropped,
                        "SSF stream queue full: its oldest SETs dropped"
                    );
                    count(app, owner, "dropped", *dropped);
                }
                if done.enqueued > 0 {
                    app.ssf_tx.queued.send_modify(|n| *n = n.wrapping_add(1));
                }
                if done.changes < FAN_OUT_BATCH {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "SSF transmitter: changes not fanned out; tried again");
                return;
            }
        }
    }
}

/// Starts pushing what is due on every push stream whose lease this
/// controller takes and that it is not pushing already, one task per
/// stream.
async fn push_due(
    app: &Arc<App>,
    pushing: &mut tokio::task::JoinSet<()>,
    in_flight: &mut InFlight,
) {
    let now = now_ms();
    let due = match app.store.ssf_tx_due(&app.ssf_tx.owner, now).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "SSF transmitter: due streams not read");
            return;
        }
    };
    for stream in due {
        // Being pushed by this controller already (its lease is ours).
        if in_flight.values().any(|s| *s == stream.stream_id) {
            continue;
        }
        let config: Value = serde_json::from_str(&stream.config).unwrap_or(Value::Null);
        if config["delivery"]["method"].as_str() != Some(PUSH) {
            continue;
        }
        let lease = now.saturating_add(u64::try_from(LEASE.as_millis()).unwrap_or(u64::MAX));
        match app
            .store
            .ssf_tx_lease(&stream.stream_id, &app.ssf_tx.owner, now, lease)
            .await
        {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "SSF transmitter: lease not taken");
                continue;
            }
        }
        let app = Arc::clone(app);
        let id = stream.stream_id.clone();
        let task = pushing.spawn(async move {
            push_stream(&app, &stream, &config).await;
            if let Err(e) = app
                .store
                .ssf_tx_release(&stream.stream_id, &app.ssf_tx.owner)
                .await
            {
                tracing::warn!(error = %e, "SSF transmitter: lease not released");
            }
        });
        in_flight.insert(task.id(), id);
    }
}

/// The streams this controller is pushing, by task.
type InFlight = HashMap<tokio::task::Id, String>;

/// What became of one push.
enum Pushed {
    /// Taken (`202`).
    Taken,
    /// Refused for good (`400` with `err`).
    Refused(String, String),
    /// Anything else: tried again later.
    Retry(String),
}

/// Pushes the head of a stream's queue, [`IN_FLIGHT`] SETs at a time:
/// each taken or refused leaves the queue; a failure sets the stream's
/// back-off and ends the round (the others of its group are recorded).
async fn push_stream(app: &Arc<App>, stream: &TxStream, config: &Value) {
    let Some(tx) = app.config.ssf_tx.as_ref() else {
        return;
    };
    let Some(http) = app.ssf_tx.client.clone() else {
        return;
    };
    let Some(url) = config["delivery"]["endpoint_url"].as_str() else {
        return;
    };
    let authorization = config["delivery"]["authorization_header"]
        .as_str()
        .map(str::to_owned);
    let receiver = stream.client.as_str();
    let queued = match app
        .store
        .ssf_tx_peek(&stream.stream_id, PUSH_BATCH, None)
        .await
    {
        Ok(q) => q,
        Err(e) => {
            tracing::warn!(error = %e, "SSF transmitter: queue not read");
            return;
        }
    };
    let started = tokio::time::Instant::now();
    for group in queued.chunks(IN_FLIGHT) {
        // Well inside the lease: no other controller pushes this stream
        // while this one may still be.
        if started.elapsed() > LEASE / 2 {
            return;
        }
        let mut pushes = tokio::task::JoinSet::new();
        for (i, set) in group.iter().enumerate() {
            let claims: Value = serde_json::from_str(&set.claims).unwrap_or(Value::Null);
            let (app, http, url, authorization) = (
                Arc::clone(app),
                http.clone(),
                url.to_owned(),
                authorization.clone(),
            );
            pushes.spawn(async move {
                let outcome = match super::sign_off_runtime(&app, claims).await {
                    Ok(jwt) => push_one(&http, &url, authorization.as_deref(), jwt).await,
                    Err(e) => Pushed::Retry(format!("not signed: {e}")),
                };
                (i, outcome)
            });
        }
        let mut outcomes: Vec<(usize, Pushed)> = pushes.join_all().await;
        outcomes.sort_by_key(|(i, _)| *i);
        let mut failed = None;
        for (i, outcome) in outcomes {
            let set = &group[i];
            let now = now_secs();
            match outcome {
                // Counted once recorded: what the metric says the store holds.
                Pushed::Taken => {
                    if let Err(e) = app
                        .store
                        .ssf_tx_done(&stream.stream_id, &set.jti, None, now)
                        .await
                    {
                        tracing::warn!(error = %e, "SSF transmitter: delivery not recorded; sent again");
                        return;
                    }
                    count(app, receiver, "delivered", 1);
                }
                Pushed::Refused(err, description) => {
                    tracing::warn!(
                        receiver,
                        stream = stream.stream_id,
                        jti = set.jti,
                        err,
                        description,
                        "SSF receiver refused a SET; not sent again"
                    );
                    if let Err(e) = app
                        .store
                        .ssf_tx_done(&stream.stream_id, &set.jti, Some((&err, &description)), now)
                        .await
                    {
                        tracing::warn!(error = %e, "SSF transmitter: refusal not recorded");
                        return;
                    }
                    count(app, receiver, "refused", 1);
                }
                Pushed::Retry(why) => {
                    count(app, receiver, "retry", 1);
                    failed.get_or_insert(why);
                }
            }
        }
        if let Some(why) = failed {
            let failures = stream.failures.min(30);
            let wait = tx
                .retry_min_ms
                .saturating_mul(1u64 << failures)
                .min(tx.retry_max_seconds.saturating_mul(1_000));
            tracing::info!(
                receiver,
                stream = stream.stream_id,
                why,
                retry_in_ms = wait,
                "SSF push failed; tried again after back-off"
            );
            if let Err(e) = app
                .store
                .ssf_tx_failed(&stream.stream_id, now_ms().saturating_add(wait))
                .await
            {
                tracing::warn!(error = %e, "SSF transmitter: back-off not recorded");
            }
            return;
        }
    }
}

async fn push_one(
    http: &reqwest::Client,
    url: &str,
    authorization: Option<&str>,
    jwt: String,
) -> Pushed {
    let mut request = http
        .post(url)
        .header(header::CONTENT_TYPE, "application/secevent+jwt")
        .header(header::ACCEPT, "application/json")
        .body(jwt);
    if let Some(a) = authorization {
        request = request.header(header::AUTHORIZATION, a);
    }
    let mut response = match request.send().await {
        Ok(r) => r,
        Err(e) => return Pushed::Retry(e.without_url().to_string()),
    };
    let status = response.status();
    if status.is_success() {
        return Pushed::Taken;
    }
    if status != StatusCode::BAD_REQUEST {
        return Pushed::Retry(format!("answered {status}"));
    }
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        if body.len() + chunk.len() > MAX_ANSWER {
            break;
        }
        body.extend_from_slice(&chunk);
    }
    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let field = |k: &str, max: usize| {
        answer[k]
            .as_str()
            .map(|s| s.chars().take(max).collect::<String>())
    };
    Pushed::Refused(
        field("err", 64).unwrap_or_else(|| "invalid_request".to_owned()),
        field("description", 1024).unwrap_or_default(),
    )
}

/// `POST /v1/ssf/poll/{stream_id}` (RFC 8936): takes the receiver's
/// `ack`s and `setErrs`, then answers `{"sets": {jti: SET}, "moreAvailable"}`
/// with up to `maxEvents` (at most 100) SETs not handed out within
/// `redeliver_seconds`; without `returnImmediately`, an empty answer waits
/// up to `long_poll_seconds` for one. A paused stream hands out nothing
/// (its SETs wait).
pub async fn poll(
    State(app): State<Arc<App>>,
    Path(stream_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (tx, receiver, _, _) = authenticated(&app, &headers).await?;
    let stream = owned(&app, receiver, &stream_id).await?;
    let config: Value = serde_json::from_str(&stream.config).unwrap_or(Value::Null);
    if config["delivery"]["method"].as_str() != Some(POLL) {
        return Err(bad("this stream is delivered by push"));
    }
    let body = if body.is_empty() {
        Map::new()
    } else {
        body_of(&body)?
    };
    let max = match body.get("maxEvents") {
        None => MAX_POLL,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| bad("maxEvents: a whole number"))?
            .min(MAX_POLL),
    };
    let immediately = match body.get("returnImmediately") {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| bad("returnImmediately: true or false"))?,
    };
    let acks: Vec<&str> = match body.get("ack") {
        None => Vec::new(),
        Some(Value::Array(a)) if a.len() <= MAX_ACKS => a
            .iter()
            .map(|j| j.as_str().ok_or_else(|| bad("ack: jti strings")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad(format!("ack: at most {MAX_ACKS} jti strings"))),
    };
    let errs: Vec<(&String, &Value)> = match body.get("setErrs") {
        None => Vec::new(),
        Some(Value::Object(m)) if m.len() <= MAX_ACKS => m.iter().collect(),
        Some(_) => return Err(bad(format!("setErrs: an object of at most {MAX_ACKS}"))),
    };
    let now = now_secs();
    let name = receiver.name.as_str();
    for jti in acks {
        let n = app.store.ssf_tx_done(&stream_id, jti, None, now).await?;
        count(&app, name, "delivered", n);
    }
    for (jti, e) in errs {
        let err: String = e["err"]
            .as_str()
            .unwrap_or("invalid_request")
            .chars()
            .take(64)
            .collect();
        let description: String = e["description"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(1024)
            .collect();
        let n = app
            .store
            .ssf_tx_done(&stream_id, jti, Some((&err, &description)), now)
            .await?;
        count(&app, name, "refused", n);
    }
    let mut queued = app.ssf_tx.queued.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(tx.long_poll_seconds);
    loop {
        // Read again each time: a pause or a disable while waiting holds.
        let status = owned(&app, receiver, &stream_id).await?.status;
        let ready = if status == "enabled" && max > 0 {
            let before = now_ms().saturating_sub(tx.redeliver_seconds.saturating_mul(1_000));
            let limit = usize::try_from(max + 1).unwrap_or(usize::MAX);
            app.store
                .ssf_tx_peek(&stream_id, limit, Some(before))
                .await?
        } else {
            Vec::new()
        };
        if !ready.is_empty() {
            let more = ready.len() as u64 > max;
            let mut sets = Map::new();
            let mut seqs = Vec::new();
            for set in ready.into_iter().take(usize::try_from(max).unwrap_or(0)) {
                let claims: Value = serde_json::from_str(&set.claims).unwrap_or(Value::Null);
                let jwt = super::sign_off_runtime(&app, claims).await.map_err(|e| {
                    tracing::warn!(error = e, "SSF transmitter: SET not signed");
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "SETs cannot be signed now; poll again",
                    )
                })?;
                sets.insert(set.jti, json!(jwt));
                seqs.push(set.seq);
            }
            app.store
                .ssf_tx_mark_sent(&stream_id, &seqs, now_ms())
                .await?;
            count(&app, name, "polled", seqs.len() as u64);
            return Ok(json_response(
                StatusCode::OK,
                json!({"sets": sets, "moreAvailable": more}),
            ));
        }
        if immediately || max == 0 || tokio::time::Instant::now() >= deadline {
            return Ok(json_response(
                StatusCode::OK,
                json!({"sets": {}, "moreAvailable": false}),
            ));
        }
        // Woken by this process's enqueues; another replica's are seen
        // at the next look, every second.
        let wait = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .min(Duration::from_secs(1));
        let _ = tokio::time::timeout(wait, queued.changed()).await;
    }
}
