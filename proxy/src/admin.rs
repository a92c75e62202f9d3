//! The admin listener: `/metrics`, `/healthz`, `/readyz`, and the
//! authenticated operator calls under `/v1/` ([`crate::operator`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use prometheus::{Encoder, TextEncoder};
use vigil_engine::Engine;

use crate::generation::Current;
use crate::metrics::Metrics;
use crate::open_requests::OpenRequests;
use crate::operator::{self, Decisions};

/// Serves the admin endpoints.
pub struct AdminApp {
    metrics: Metrics,
    engine: Arc<Engine>,
    current: Current,
    listeners: Vec<SocketAddr>,
    /// Set once the process listens for `SIGHUP`: before that a reload
    /// signal would be lost.
    signals: Arc<AtomicBool>,
    decisions: Decisions,
    /// Requests in flight, which the operator's revocations end.
    open: Option<OpenRequests>,
    /// Held while a scrape copies the engine's counters.
    catching_up: Arc<std::sync::Mutex<()>>,
}

impl AdminApp {
    /// Builds the admin app over the proxy's metrics, engine and config
    /// generation; `listeners` are the proxy's addresses and `signals` the
    /// flag of [`crate::reload::Signals`], both of which readiness checks.
    pub fn new(
        metrics: Metrics,
        engine: Arc<Engine>,
        current: Current,
        listeners: Vec<SocketAddr>,
        signals: Arc<AtomicBool>,
    ) -> Self {
        Self {
            catching_up: Arc::default(),
            metrics,
            engine,
            current,
            listeners,
            signals,
            decisions: Decisions::new(),
            open: None,
        }
    }

    /// Serves the operator calls (`POST /v1/…`, see [`crate::operator`])
    /// over `decisions` to holders of the generation's admin token; without
    /// a token they are refused.
    pub fn with_operator_api(mut self, decisions: Decisions) -> Self {
        self.decisions = decisions;
        self
    }

    /// Ends the requests in flight `open` holds when the operator revokes
    /// their session or user, and reports how many it holds.
    pub fn with_open_requests(mut self, open: OpenRequests) -> Self {
        self.open = Some(open);
        self
    }

    /// An authenticated operator call.
    async fn operator_call(&self, session: &mut ServerSession) -> (StatusCode, Vec<u8>) {
        let req = session.req_header();
        // The generation in force: a reload may have rotated the token.
        let generation = self.current.load();
        let Some(token) = &generation.admin_token else {
            return (
                StatusCode::FORBIDDEN,
                operator::error_json("operator calls are off: set [admin] token_file").into_bytes(),
            );
        };
        let authorization = req
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !token.accepts(authorization) {
            return (
                StatusCode::UNAUTHORIZED,
                operator::error_json("missing or wrong bearer token").into_bytes(),
            );
        }
        if req.method != http::Method::POST {
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                operator::error_json("use POST").into_bytes(),
            );
        }
        let path = req.uri.path().to_owned();
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) if body.len() + chunk.len() <= operator::MAX_BODY_BYTES => {
                    body.extend_from_slice(&chunk);
                }
                Ok(Some(_)) => {
                    return (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        operator::error_json("body over 16 KiB").into_bytes(),
                    );
                }
                Ok(None) => break,
                Err(_) => {
                    return (
                        StatusCode::BAD_REQUEST,
                        operator::error_json("body unreadable").into_bytes(),
                    );
                }
            }
        }
        let answer = operator::handle(
            &self.engine,
            &self.decisions,
            self.open.as_ref(),
            &path,
            &body,
            crate::proxy::now_secs(),
        );
        tracing::info!(
            target: "vigil::admin",
            call = %path,
            status = answer.status.as_u16(),
            "operator call"
        );
        (answer.status, answer.body.into_bytes())
    }

    /// Ready when the process listens for its signals and every proxy
    /// listener accepts a connection. Services start independently, so the
    /// admin listener answering says nothing by itself.
    async fn ready(&self) -> bool {
        self.signals.load(Ordering::Acquire)
            && crate::service_manager::listeners_accept(&self.listeners).await
    }

    fn metrics_text(&self) -> Result<Vec<u8>, prometheus::Error> {
        let scorer = self.engine.scorer();
        scorer.run_pending_tasks();
        self.metrics
            .sessions_tracked
            .set(i64::try_from(scorer.tracked_sessions()).unwrap_or(i64::MAX));
        self.metrics
            .sessions_revoked
            .set(i64::try_from(scorer.revoked_sessions()).unwrap_or(i64::MAX));
        self.metrics
            .users_tracked
            .set(i64::try_from(scorer.tracked_users()).unwrap_or(i64::MAX));
        if let Some(open) = &self.open {
            self.metrics
                .open_requests_tracked
                .set(i64::try_from(open.len()).unwrap_or(i64::MAX));
        }
        {
            // One scrape at a time brings the engine's counters up, or two
            // would both add the same difference.
            let _one = self
                .catching_up
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            crate::metrics::catch_up(&self.metrics.evaluations, self.engine.evaluations());
            let (minted, _) = scorer.minted_revocations();
            self.metrics
                .revocations_minted
                .set(i64::try_from(minted).unwrap_or(i64::MAX));
            if let Some(sink) = self.engine.events() {
                crate::metrics::catch_up(&self.metrics.events_dropped, sink.dropped());
                crate::metrics::catch_up(&self.metrics.events_lost, sink.lost());
            }
        }
        // Only the groups in force: a reload may have removed some.
        self.metrics.upstream_healthy.reset();
        for group in &self.current.load().upstreams {
            let healthy = i64::try_from(group.healthy_addresses()).unwrap_or(i64::MAX);
            self.metrics
                .upstream_healthy
                .with_label_values(&[&group.config.name])
                .set(healthy);
        }
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.metrics.registry.gather(), &mut out)?;
        Ok(out)
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        if session.req_header().uri.path().starts_with("/v1/") {
            let (status, body) = self.operator_call(session).await;
            return respond(status, "application/json", body);
        }
        let (status, content_type, body) = match session.req_header().uri.path() {
            "/metrics" => match self.metrics_text() {
                Ok(body) => (StatusCode::OK, "text/plain; version=0.0.4", body),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot encode metrics");
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        b"metrics unavailable\n".to_vec(),
                    )
                }
            },
            // The process is up and answering.
            "/healthz" => (StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" => {
                if self.ready().await {
                    (StatusCode::OK, "text/plain", b"ready\n".to_vec())
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        b"not ready\n".to_vec(),
                    )
                }
            }
            _ => (StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        };
        respond(status, content_type, body)
    }
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let len = body.len();
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", len)
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

impl std::fmt::Debug for AdminApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminApp").finish_non_exhaustive()
    }
}
