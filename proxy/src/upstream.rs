//! Upstream groups: round robin over healthy addresses.
//!
//! Active health checks are Pingora's load balancer running as a background
//! service. Passive checks are ours: an address whose connection failed is
//! skipped for `eject_seconds`, and the request is retried on the next one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pingora_core::services::background::{GenBackgroundService, background_service};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::{HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::{Backend, LoadBalancer, selection::RoundRobin};

use crate::config::{HealthKind, Upstream};

/// The background service running a group's active health checks.
pub type HealthService = GenBackgroundService<LoadBalancer<RoundRobin>>;

/// One upstream group and its health state.
pub struct UpstreamGroup {
    /// The group's config.
    pub config: Upstream,
    lb: Arc<LoadBalancer<RoundRobin>>,
    /// Per address, in `config.addresses` order: until when (in ms since
    /// `epoch`) it is ejected.
    ejected_until: Vec<AtomicU64>,
    epoch: Instant,
}

/// Why a group could not be built.
#[derive(Debug, thiserror::Error)]
#[error("upstream {name}: {reason}")]
pub struct UpstreamError {
    name: String,
    reason: String,
}

// === impl UpstreamGroup ===

impl UpstreamGroup {
    /// Builds a group and, when active checks are on, the background service
    /// that runs them; add it to the server.
    pub fn new(config: Upstream) -> Result<(Self, Option<HealthService>), UpstreamError> {
        let err = |reason: String| UpstreamError {
            name: config.name.clone(),
            reason,
        };
        let mut lb = LoadBalancer::<RoundRobin>::try_from_iter(config.addresses.iter().copied())
            .map_err(|e| err(e.to_string()))?;
        if !config.health.interval.is_zero() {
            match &config.health.kind {
                HealthKind::Tcp => lb.set_health_check(TcpHealthCheck::new()),
                HealthKind::Http { path } => {
                    let mut hc = HttpHealthCheck::new(&config.sni, config.tls);
                    hc.req = RequestHeader::build("GET", path.as_bytes(), None)
                        .map_err(|e| err(e.to_string()))?;
                    lb.set_health_check(Box::new(hc));
                }
            }
            lb.health_check_frequency = Some(config.health.interval);
            lb.parallel_health_check = true;
        }
        let ejected_until = config.addresses.iter().map(|_| AtomicU64::new(0)).collect();
        let (lb, service) = if config.health.interval.is_zero() {
            (Arc::new(lb), None)
        } else {
            let service = background_service(&format!("health {}", config.name), lb);
            (service.task(), Some(service))
        };
        let group = Self {
            config,
            lb,
            ejected_until,
            epoch: Instant::now(),
        };
        Ok((group, service))
    }

    /// The next healthy, non-ejected address as a peer, or `None` when there
    /// is none.
    pub fn select(&self) -> Option<Box<HttpPeer>> {
        let now = self.now_ms();
        let n = self.config.addresses.len();
        let backend = self.lb.select_with(b"", n.max(1) * 2, |b, healthy| {
            healthy && !self.is_ejected(b, now)
        })?;
        Some(Box::new(self.peer(&backend)))
    }

    /// Addresses that are neither failing their active check nor ejected.
    pub fn healthy_addresses(&self) -> usize {
        let now = self.now_ms();
        let backends = self.lb.backends();
        backends
            .get_backend()
            .iter()
            .filter(|b| backends.ready(b) && !self.is_ejected(b, now))
            .count()
    }

    /// Skips `addr` for the configured eject period after a failed connection.
    pub fn eject(&self, addr: &SocketAddr) {
        if self.config.health.eject.is_zero() {
            return;
        }
        if let Some(i) = self.config.addresses.iter().position(|a| a == addr) {
            let until = self
                .now_ms()
                .saturating_add(millis(self.config.health.eject));
            self.ejected_until[i].store(until, Ordering::Relaxed);
        }
    }

    fn is_ejected(&self, backend: &Backend, now: u64) -> bool {
        let Some(addr) = backend.addr.as_inet() else {
            return false;
        };
        self.config
            .addresses
            .iter()
            .position(|a| a == addr)
            .is_some_and(|i| self.ejected_until[i].load(Ordering::Relaxed) > now)
    }

    fn peer(&self, backend: &Backend) -> HttpPeer {
        let mut peer = HttpPeer::new(backend, self.config.tls, self.config.sni.clone());
        peer.options.connection_timeout = Some(self.config.connect_timeout);
        peer.options.read_timeout = Some(self.config.read_timeout);
        peer.options.write_timeout = Some(self.config.read_timeout);
        peer
    }

    fn now_ms(&self) -> u64 {
        millis(self.epoch.elapsed())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl std::fmt::Debug for UpstreamGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamGroup")
            .field("name", &self.config.name)
            .field("addresses", &self.config.addresses)
            .finish_non_exhaustive()
    }
}
