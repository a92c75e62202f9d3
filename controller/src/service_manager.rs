//! Tells the service manager (systemd, `Type=notify`) that the controller
//! is ready (`READY=1`: the store is open and migrated and the listener
//! accepts) or stopping (`STOPPING=1`). Without `$NOTIFY_SOCKET` (not under
//! systemd) every call does nothing.
//!
//! The controller has no config reload: its config is read once, at start
//! (TLS certificates are reread from their files on their own), so its unit
//! has no `ExecReload` and `SIGHUP` is logged and otherwise ignored.

use sd_notify::NotifyState;

/// `READY=1` with `status` shown by `systemctl status`.
pub fn ready(status: &str) {
    send(&[
        NotifyState::Ready,
        NotifyState::MainPid(std::process::id()),
        NotifyState::Status(status),
    ]);
}

/// `STOPPING=1`: a graceful stop has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}
