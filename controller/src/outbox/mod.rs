//! The outbox: every outbound call the controller owes — remediation
//! webhooks ([`crate::webhooks`]), universal logout targets
//! ([`crate::logout`]) — written to the store before it is attempted, and
//! delivered by a worker with retries (`docs/webhooks.md`, Delivery).
//!
//! - **Durable**: a call is a row (migration `0013_outbox.sql`); a restart
//!   or a crash loses none, and delivers again what was in flight.
//! - **One delivery at a time per row**, whichever replica: a worker
//!   claims a row with a lease past its HTTP timeout
//!   ([`crate::store::Store::claim`]; `FOR UPDATE SKIP LOCKED` on
//!   PostgreSQL), and only the lease's owner records the outcome.
//! - **Retries** with exponential back-off and jitter; after
//!   `max_attempts`, or once the next attempt would fall past
//!   `max_age_seconds`, the call is a **dead letter**, listed, retried or
//!   deleted through the admin API.
//! - **Bounded**: at most `max_queue` calls pending per endpoint (beyond,
//!   a call is dead-lettered at once and counted), `max_dead_letters`
//!   kept per endpoint, delivered rows kept a day for deduplication; the
//!   worker holds at most `max_concurrency` rows per endpoint in memory.
//! - **Careful HTTP**: `https://` only unless the config allows `http://`
//!   to loopback, no redirect followed, every attempt bounded in time, the
//!   answer's body never read.

pub mod config;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::{Notify, Semaphore};

use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::outbox::{Claimed, Enqueued, NewDelivery};

pub use config::{Settings, Webhook};

/// How long delivered calls are kept: a call enqueued again with the same
/// id within it (a node's retried batch) is not sent again.
pub const KEEP_DELIVERED: Duration = Duration::from_secs(86_400);

/// How often delivered calls and surplus dead letters are deleted.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

/// Longest error text kept for a failed attempt.
const MAX_ERROR_BYTES: usize = 256;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A fresh id: 128 random bits, 32 lower-case hex digits.
pub fn new_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// What an endpoint is.
#[derive(Debug, Clone)]
pub enum Target {
    /// A remediation webhook.
    Webhook(Webhook),
    /// A universal logout target (an app).
    App(crate::logout::AppTarget),
}

/// A configured endpoint with its concurrency limit.
#[derive(Debug)]
struct Endpoint {
    target: Target,
    permits: Arc<Semaphore>,
}

/// The outbox: its endpoints, its HTTP client, and its worker's wake-up.
#[derive(Debug)]
pub struct Outbox {
    store: Store,
    settings: Settings,
    endpoints: HashMap<String, Endpoint>,
    client: Option<reqwest::Client>,
    wake: Notify,
    /// This process's lease owner id.
    owner: String,
    metrics: Metrics,
    signing: Option<Arc<crate::logout::Signing>>,
}

/// The signature header of a webhook body: `t=<unix>,v1=<hex>`, where
/// the hex is HMAC-SHA256 under `secret` of `<unix>.<body>`.
pub fn signature(secret: &[u8], t: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length: this never fails.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The delay before attempt `attempts + 1`: `base · 2^(attempts − 1)`,
/// capped at `max`, times `jitter` (drawn in [0.5, 1]).
pub fn backoff(settings: &Settings, attempts: u64, jitter: f64) -> u64 {
    let doubling = attempts.saturating_sub(1).min(40) as u32;
    let delay = settings
        .backoff_base_ms
        .saturating_mul(1u64 << doubling)
        .min(settings.backoff_max_ms);
    // A delay below 2^53 ms: the float is exact enough.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a delay of at most a day in ms, times a factor in [0.5, 1]"
    )]
    let jittered = (delay as f64 * jitter.clamp(0.5, 1.0)) as u64;
    jittered.max(1)
}

/// The endpoint key of a webhook.
pub fn webhook_endpoint(name: &str) -> String {
    format!("webhook:{name}")
}

/// The endpoint key of a logout app.
pub fn app_endpoint(name: &str) -> String {
    format!("logout:{name}")
}

impl Outbox {
    /// The outbox over `store` for the configured webhooks and logout
    /// apps.
    pub fn new(
        store: Store,
        settings: Settings,
        webhooks: &[Webhook],
        apps: &[crate::logout::AppTarget],
        signing: Option<Arc<crate::logout::Signing>>,
        metrics: Metrics,
    ) -> Outbox {
        let mut endpoints = HashMap::new();
        for w in webhooks {
            endpoints.insert(
                webhook_endpoint(&w.name),
                Endpoint {
                    permits: Arc::new(Semaphore::new(w.max_concurrency)),
                    target: Target::Webhook(w.clone()),
                },
            );
        }
        for a in apps {
            endpoints.insert(
                app_endpoint(&a.name),
                Endpoint {
                    permits: Arc::new(Semaphore::new(a.max_concurrency)),
                    target: Target::App(a.clone()),
                },
            );
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .timeout(settings.timeout)
            .user_agent(concat!("vigil-controller/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| tracing::warn!(error = %e, "no HTTP client: outbound calls will fail"))
            .ok();
        Outbox {
            store,
            settings,
            endpoints,
            client,
            wake: Notify::new(),
            owner: new_id(),
            metrics,
            signing,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether `endpoint` is configured.
    pub fn knows(&self, endpoint: &str) -> bool {
        self.endpoints.contains_key(endpoint)
    }

    /// Enqueues a call and wakes the worker; what became of it.
    pub async fn enqueue(&self, d: &NewDelivery<'_>) -> Result<Enqueued, crate::store::StoreError> {
        let e = self
            .store
            .enqueue(d, self.settings.max_queue, now_ms())
            .await?;
        let label = match e {
            Enqueued::Pending => "pending",
            Enqueued::Duplicate => "duplicate",
            Enqueued::Overflow => {
                tracing::warn!(
                    endpoint = d.endpoint,
                    max_queue = self.settings.max_queue,
                    "outbox queue full: call dead-lettered"
                );
                "overflow"
            }
        };
        self.metrics
            .outbox_enqueued
            .with_label_values(&[d.endpoint, label])
            .inc();
        self.wake();
        Ok(e)
    }

    /// Wakes the worker: calls are due.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The worker: claims what is due for each endpoint with free
    /// permits, delivers each in a task of its own, and sleeps until woken
    /// or `poll`. Runs until aborted (with the controller's other tasks).
    pub async fn run(outbox: Arc<Outbox>) {
        let mut last_expiry = tokio::time::Instant::now();
        outbox.expire().await;
        loop {
            outbox.pass().await;
            if last_expiry.elapsed() >= EXPIRE_EVERY {
                last_expiry = tokio::time::Instant::now();
                outbox.expire().await;
            }
            tokio::select! {
                () = outbox.wake.notified() => {}
                () = tokio::time::sleep(outbox.settings.poll) => {}
            }
        }
    }

    /// One pass over the endpoints.
    async fn pass(self: &Arc<Self>) {
        let now = now_ms();
        let lease =
            now + u64::try_from(self.settings.timeout.as_millis()).unwrap_or(60_000) + 30_000;
        for (key, endpoint) in &self.endpoints {
            let free = endpoint.permits.available_permits();
            if free == 0 {
                continue;
            }
            let claimed = match self.store.claim(key, free, &self.owner, now, lease).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(endpoint = key, error = %e, "outbox: store failed; calls not claimed");
                    continue;
                }
            };
            for call in claimed {
                // Only this loop takes permits: those counted free are.
                let Ok(permit) = Arc::clone(&endpoint.permits).acquire_owned().await else {
                    return;
                };
                let outbox = Arc::clone(self);
                tokio::spawn(async move {
                    outbox.deliver(call).await;
                    drop(permit);
                    outbox.wake();
                });
            }
        }
    }

    /// Deletes delivered calls past [`KEEP_DELIVERED`] and surplus dead
    /// letters; refreshes the pending gauge.
    async fn expire(&self) {
        let keys: Vec<String> = self.endpoints.keys().cloned().collect();
        let before =
            now_ms().saturating_sub(u64::try_from(KEEP_DELIVERED.as_millis()).unwrap_or(0));
        if let Err(e) = self
            .store
            .expire_outbox(before, &keys, self.settings.max_dead_letters)
            .await
        {
            tracing::warn!(error = %e, "outbox: old calls not deleted");
        }
        match self.store.orphans_dead(&keys, now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                calls = n,
                "outbound calls to endpoints no longer configured: dead letters"
            ),
            Err(e) => tracing::warn!(error = %e, "outbox: orphaned calls not given up"),
        }
        for key in &keys {
            if let Ok(n) = self.store.pending(key).await {
                self.metrics
                    .outbox_pending
                    .with_label_values(&[key])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
    }

    /// One attempt of `call`, and its outcome recorded.
    async fn deliver(&self, call: Claimed) {
        let started = tokio::time::Instant::now();
        let outcome = self.attempt(&call).await;
        self.metrics
            .outbox_seconds
            .observe(started.elapsed().as_secs_f64());
        let now = now_ms();
        let recorded = match &outcome {
            Ok(detail) => {
                self.metrics
                    .outbox_attempts
                    .with_label_values(&[&call.endpoint, "delivered"])
                    .inc();
                self.store.delivered(&call, &self.owner, detail, now).await
            }
            Err(error) => {
                let mut error = error.clone();
                truncate(&mut error, MAX_ERROR_BYTES);
                let delay = backoff(&self.settings, call.attempts, rand::random_range(0.5..=1.0));
                let age_then = (now + delay).saturating_sub(call.created_ms) / 1000;
                let give_up = call.attempts >= u64::from(self.settings.max_attempts)
                    || age_then > self.settings.max_age;
                let result = if give_up { "dead" } else { "failed" };
                self.metrics
                    .outbox_attempts
                    .with_label_values(&[&call.endpoint, result])
                    .inc();
                if give_up {
                    tracing::warn!(
                        endpoint = call.endpoint,
                        id = call.id,
                        attempts = call.attempts,
                        error,
                        "outbound call given up: dead letter"
                    );
                } else {
                    tracing::debug!(
                        endpoint = call.endpoint,
                        id = call.id,
                        attempts = call.attempts,
                        error,
                        delay_ms = delay,
                        "outbound call failed; will retry"
                    );
                }
                self.store
                    .failed(
                        &call,
                        &self.owner,
                        &error,
                        (!give_up).then_some(now + delay),
                        now,
                    )
                    .await
            }
        };
        match recorded {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                endpoint = call.endpoint,
                id = call.id,
                "outbound call's lease ran out before its outcome was recorded"
            ),
            Err(e) => tracing::warn!(
                endpoint = call.endpoint,
                id = call.id,
                error = %e,
                "outbound call's outcome not recorded; it will be attempted again"
            ),
        }
    }

    /// Sends `call`: what was done, or why it failed.
    async fn attempt(&self, call: &Claimed) -> Result<String, String> {
        let Some(endpoint) = self.endpoints.get(&call.endpoint) else {
            return Err("endpoint no longer configured".to_owned());
        };
        let client = self.client.as_ref().ok_or("no HTTP client")?;
        let request = match &endpoint.target {
            Target::Webhook(w) => {
                let t = now_ms() / 1000;
                client
                    .post(w.url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(
                        "vigil-signature",
                        signature(&w.secret, t, call.body.as_bytes()),
                    )
                    .header("vigil-delivery", &call.id)
                    .body(call.body.clone())
            }
            Target::App(app) => crate::logout::request(client, app, call, self.signing.as_deref())?,
        };
        let answer = request
            .send()
            .await
            .map_err(|e| error_chain(&e.without_url()))?;
        let status = answer.status();
        if status.is_success() {
            return Ok(format!("HTTP {}", status.as_u16()));
        }
        if status.is_redirection() {
            return Err(format!(
                "HTTP {} (redirects are not followed)",
                status.as_u16()
            ));
        }
        Err(format!("HTTP {}", status.as_u16()))
    }
}

/// An error and its sources, one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Cuts `s` to at most `max` bytes, on a character boundary.
fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_jitter_only_shortens() {
        let s = Settings {
            backoff_base_ms: 100,
            backoff_max_ms: 1_000,
            ..Settings::default()
        };
        assert_eq!(backoff(&s, 1, 1.0), 100);
        assert_eq!(backoff(&s, 2, 1.0), 200);
        assert_eq!(backoff(&s, 4, 1.0), 800);
        assert_eq!(backoff(&s, 5, 1.0), 1_000);
        assert_eq!(backoff(&s, 500, 1.0), 1_000);
        assert_eq!(backoff(&s, 1, 0.5), 50);
        assert_eq!(backoff(&s, 1, 0.0), 50, "jitter is held to [0.5, 1]");
        assert_eq!(backoff(&s, 1, 7.0), 100);
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_timestamp_a_dot_and_the_body() {
        // RFC 4231-style check computed apart: HMAC-SHA256("key", "1.{}").
        let sig = signature(b"key", 1, b"{}");
        assert!(sig.starts_with("t=1,v1="));
        assert_eq!(sig.len(), "t=1,v1=".len() + 64);
        assert_ne!(sig, signature(b"key", 2, b"{}"));
        assert_ne!(sig, signature(b"key", 1, b"{ }"));
    }
}
