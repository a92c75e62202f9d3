//! The one periodic loop of the proxy's background work: session snapshots,
//! the idle-session sweep, and the checks of files named in the config.

use std::time::Duration;

use pingora_core::server::ShutdownWatch;

/// Runs `f` every `period` until shutdown. The first run is one period
/// after the start: everything was just loaded.
pub(crate) async fn every(period: Duration, mut shutdown: ShutdownWatch, mut f: impl FnMut()) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // An interval's first tick fires at once.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => f(),
            _ = shutdown.changed() => return,
        }
    }
}
