//! Logs with `tracing`, as text or JSON, to stderr. Pingora's own `log`
//! records are bridged in. The level filter can be replaced while running
//! (a config reload), the format only at start.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::{Log, LogFormat};

/// The handle of the installed filter, for [`set_level`].
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(log: &Log) {
    // Validated when the config was read; fall back rather than fail here.
    let filter = EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true);
    let fmt = match log.format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    match tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
    {
        Ok(()) => {
            let _ = FILTER.set(handle);
        }
        Err(e) => eprintln!("vigil-proxy: logging already initialised: {e}"),
    }
}

/// Filters logs with `level` (a `tracing` filter, validated with the
/// config) from now on. Does nothing before [`init`].
pub fn set_level(level: &str) {
    let Some(handle) = FILTER.get() else { return };
    match EnvFilter::try_new(level) {
        Ok(filter) => {
            if let Err(e) = handle.reload(filter) {
                tracing::warn!(error = %e, "log level not changed");
            }
        }
        Err(e) => tracing::warn!(level, error = %e, "log level not changed"),
    }
}
