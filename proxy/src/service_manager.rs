//! Tells the service manager (systemd, `Type=notify`) what the process is
//! doing: ready (`READY=1`, only once every listener accepts and the
//! process listens for its signals), reloading (`RELOADING=1` with
//! `MONOTONIC_USEC`, then `READY=1` whatever the outcome: a refused config
//! leaves the running one in force, so the service is as ready as before),
//! and stopping (`STOPPING=1`).
//!
//! Every message also names this process as the main one (`MAINPID=`): after
//! a binary upgrade ([`crate::upgrade`]) the new process is the one systemd
//! must watch, and the unit's `NotifyAccess=all` lets it say so.
//!
//! Without `$NOTIFY_SOCKET` (not under systemd) every call does nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use sd_notify::NotifyState;

/// How often readiness is looked at until the process is ready.
const READY_POLL: Duration = Duration::from_millis(20);

/// How long one connection to a listener may take before the listener
/// counts as not accepting yet.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends `READY=1` once the process is ready, then ends.
#[derive(Debug)]
pub struct Readiness {
    listeners: Vec<SocketAddr>,
    signals: Arc<AtomicBool>,
}

// === impl Readiness ===

impl Readiness {
    /// Ready once `signals` is set ([`crate::reload::Signals`] listens) and
    /// every address of `listeners` (the proxy's and the admin listener)
    /// accepts a connection.
    pub fn new(listeners: Vec<SocketAddr>, signals: Arc<AtomicBool>) -> Self {
        Self { listeners, signals }
    }

    /// Whether the process is ready now.
    pub async fn is_ready(&self) -> bool {
        self.signals.load(Ordering::Acquire) && listeners_accept(&self.listeners).await
    }
}

#[async_trait]
impl BackgroundService for Readiness {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            if self.is_ready().await {
                ready("serving");
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(READY_POLL) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Whether every address accepts a TCP connection (an unspecified address
/// is tried on loopback). Services start independently, so a listener
/// configured is not yet a listener accepting.
pub async fn listeners_accept(listeners: &[SocketAddr]) -> bool {
    for addr in listeners {
        let mut target = *addr;
        if target.ip().is_unspecified() {
            target.set_ip(match target.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        let connect = tokio::net::TcpStream::connect(target);
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(_)) => {}
            _ => return false,
        }
    }
    true
}

/// `READY=1` with this process as the main one and `status` shown by
/// `systemctl status`.
pub fn ready(status: &str) {
    send(&[
        NotifyState::Ready,
        NotifyState::MainPid(std::process::id()),
        NotifyState::Status(status),
    ]);
}

/// `RELOADING=1` with the monotonic clock now, which systemd 253 and later
/// want to tell this reload from an earlier one. Follow with [`ready`].
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading the config"),
        ]),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the monotonic clock; RELOADING=1 sent without it");
            send(&[NotifyState::Reloading]);
        }
    }
}

/// `STOPPING=1`: a graceful or fast stop has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

fn send(states: &[NotifyState<'_>]) {
    // `false`: keep $NOTIFY_SOCKET, for the next message and for the
    // process an upgrade starts.
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}
