//! The admin listener: `/metrics`, `/healthz`, `/readyz`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use prometheus::{Encoder, TextEncoder};
use vigil_engine::Engine;

use crate::metrics::Metrics;
use crate::upstream::UpstreamGroup;

/// Serves the admin endpoints.
pub struct AdminApp {
    metrics: Metrics,
    engine: Arc<Engine>,
    upstreams: Arc<Vec<UpstreamGroup>>,
    listeners: Vec<SocketAddr>,
}

impl AdminApp {
    /// Builds the admin app over the proxy's metrics and engine; `listeners`
    /// are the proxy's addresses that readiness checks.
    pub fn new(
        metrics: Metrics,
        engine: Arc<Engine>,
        upstreams: Arc<Vec<UpstreamGroup>>,
        listeners: Vec<SocketAddr>,
    ) -> Self {
        Self {
            metrics,
            engine,
            upstreams,
            listeners,
        }
    }

    /// Ready when every proxy listener accepts a connection. Services start
    /// independently, so the admin listener answering says nothing by itself.
    async fn ready(&self) -> bool {
        for addr in &self.listeners {
            let mut target = *addr;
            if target.ip().is_unspecified() {
                target.set_ip(match target.ip() {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                });
            }
            let connect = tokio::net::TcpStream::connect(target);
            match tokio::time::timeout(Duration::from_secs(1), connect).await {
                Ok(Ok(_)) => {}
                _ => return false,
            }
        }
        true
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
        for group in self.upstreams.iter() {
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
        let len = body.len();
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .header("content-length", len)
            .body(body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}

impl std::fmt::Debug for AdminApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminApp").finish_non_exhaustive()
    }
}
