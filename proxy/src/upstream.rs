//! Upstream groups: round robin over healthy addresses.
//!
//! Active health checks run in one background service, [`HealthChecks`],
//! over the groups of the config generation in force: a reload that changes
//! a group's addresses replaces the group, and the service checks the new
//! one from its next tick and forgets the old one. Passive checks are ours:
//! an address whose connection failed is skipped for `eject_seconds`, and
//! the request is retried on the next one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::{HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::{Backend, LoadBalancer, selection::RoundRobin};

use crate::config::{HealthKind, Upstream};
use crate::generation::Current;

/// How often the health service looks for groups whose check is due: the
/// resolution of `health.interval_seconds`.
const HEALTH_TICK: Duration = Duration::from_millis(250);

/// One upstream group and its health state.
pub struct UpstreamGroup {
    /// The group's config.
    pub config: Upstream,
    lb: LoadBalancer<RoundRobin>,
    /// Per address, in `config.addresses` order: until when (in ms since
    /// `epoch`) it is ejected.
    ejected_until: Vec<AtomicU64>,
    /// When (in ms since `epoch`) the next active check is due; 0 at first,
    /// so that a new group is checked at once.
    next_check: AtomicU64,
    epoch: Instant,
}

/// Runs the active health checks of every group in the generation in
/// force, each at its own interval.
pub struct HealthChecks {
    current: Current,
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
    /// Builds a group; its active checks, when on, run in [`HealthChecks`].
    pub fn new(config: Upstream) -> Result<Self, UpstreamError> {
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
        }
        let ejected_until = config.addresses.iter().map(|_| AtomicU64::new(0)).collect();
        Ok(Self {
            config,
            lb,
            ejected_until,
            next_check: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// Runs the active check of every address when one is due.
    async fn check_if_due(&self) {
        let interval = self.config.health.interval;
        let now = self.now_ms();
        if interval.is_zero() || self.next_check.load(Ordering::Relaxed) > now {
            return;
        }
        self.next_check
            .store(now.saturating_add(millis(interval)), Ordering::Relaxed);
        self.lb.backends().run_health_check(true).await;
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

// === impl HealthChecks ===

impl HealthChecks {
    /// Checks the groups of whichever generation `current` holds.
    pub fn new(current: Current) -> Self {
        Self { current }
    }

    /// One round: every group whose check is due, concurrently.
    async fn round(&self) {
        let generation = self.current.load_full();
        let mut checks = Vec::new();
        for group in &generation.upstreams {
            let group = Arc::clone(group);
            checks.push(tokio::spawn(async move { group.check_if_due().await }));
        }
        for check in checks {
            if let Err(e) = check.await {
                tracing::warn!(error = %e, "upstream health check task failed");
            }
        }
    }
}

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(HEALTH_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.round().await,
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl std::fmt::Debug for HealthChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthChecks").finish_non_exhaustive()
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
