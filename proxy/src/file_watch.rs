//! Files named in the config — trusted proxy lists and geo databases — are
//! checked for change on a timer and reloaded in the background. A file that
//! fails to load keeps what was loaded before; the failure is logged and
//! counted (STYLE.md 8). The config file itself is reloaded by
//! [`crate::reload`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use prometheus::IntCounterVec;
use vigil_engine::Engine;

use crate::generation::{ApplyLock, Current};

/// Something that can re-read its files.
pub trait Reloadable: Send + Sync {
    /// A short, stable name for logs and the `source` metric label.
    fn name(&self) -> &'static str;

    /// Re-reads the files if they changed. `Ok(true)` when something new was
    /// loaded, `Ok(false)` when nothing changed; on `Err` the old data stays.
    fn reload(&self) -> Result<bool, FileReloadError>;
}

/// Why a watched file could not be reloaded; what was loaded before stays.
#[derive(Debug, thiserror::Error)]
pub enum FileReloadError {
    /// A geo database.
    #[error(transparent)]
    Geo(#[from] vigil_geoip::GeoError),
    /// A trusted proxy list file.
    #[error("trusted_proxies {set}: {source}")]
    TrustedFile {
        /// The set whose file failed.
        set: String,
        /// The cause.
        source: crate::cidrs::CidrFileError,
    },
    /// The sets, read again, are not usable together.
    #[error("trusted_proxies: {}", list(.0))]
    TrustedSets(Vec<vigil_engine::TrustedSetError>),
}

/// The background service that drives every [`Reloadable`].
pub struct Reloader {
    every: Duration,
    sources: Vec<Box<dyn Reloadable>>,
    /// `vigil_proxy_reloads_total{source,result}`.
    counter: IntCounterVec,
}

// === impl Reloader ===

impl Reloader {
    /// Checks `sources` every `every`, counting outcomes in `counter`.
    pub fn new(every: Duration, sources: Vec<Box<dyn Reloadable>>, counter: IntCounterVec) -> Self {
        Self {
            every,
            sources,
            counter,
        }
    }

    /// Runs one round of checks; public so that tests and a future admin
    /// endpoint can trigger it.
    pub fn check_all(&self) {
        for source in &self.sources {
            let result = match source.reload() {
                Ok(true) => {
                    tracing::info!(source = source.name(), "reloaded");
                    "reloaded"
                }
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(source = source.name(), error = %e, "reload failed; keeping the previous data");
                    "failed"
                }
            };
            self.counter
                .with_label_values(&[source.name(), result])
                .inc();
        }
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, shutdown: ShutdownWatch) {
        crate::periodic::every(self.every, shutdown, || self.check_all()).await;
    }
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("every", &self.every)
            .field(
                "sources",
                &self.sources.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Geo databases: [`vigil_geoip::GeoIp::reload`] does the change detection
/// and keeps the old set on failure.
#[derive(Debug)]
pub struct GeoReload(pub Arc<vigil_geoip::GeoIp>);

impl Reloadable for GeoReload {
    fn name(&self) -> &'static str {
        "geoip"
    }

    fn reload(&self) -> Result<bool, FileReloadError> {
        match self.0.reload()? {
            vigil_geoip::ReloadOutcome::Unchanged => Ok(false),
            vigil_geoip::ReloadOutcome::Reloaded { .. } => Ok(true),
        }
    }
}

/// Trusted proxy sets read from files: when any file changes, every set of
/// the config generation in force is rebuilt and the engine's client IP
/// stage replaced whole.
#[derive(Debug)]
pub struct TrustedFiles {
    engine: Arc<Engine>,
    current: Current,
    apply: ApplyLock,
    /// The files as last loaded, in set order.
    seen: Mutex<Vec<(PathBuf, Option<FileStamp>)>>,
}

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
}

// === impl TrustedFiles ===

impl TrustedFiles {
    /// Watches the files of the trusted sets of whichever generation
    /// `current` holds; `apply` keeps it from interleaving with a config
    /// reload.
    pub fn new(engine: Arc<Engine>, current: Current, apply: ApplyLock) -> Self {
        let seen = Mutex::new(stamps(&current));
        Self {
            engine,
            current,
            apply,
            seen,
        }
    }
}

fn stamps(current: &Current) -> Vec<(PathBuf, Option<FileStamp>)> {
    current
        .load()
        .config
        .trusted_proxies
        .iter()
        .filter_map(|s| s.file.clone())
        .map(|path| {
            let stamp = stamp(&path);
            (path, stamp)
        })
        .collect()
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

impl Reloadable for TrustedFiles {
    fn name(&self) -> &'static str {
        "trusted_proxies"
    }

    fn reload(&self) -> Result<bool, FileReloadError> {
        // A poisoned lock only means another reload panicked; the data it
        // guards is replaced whole, never left half-written.
        let _apply = self
            .apply
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = stamps(&self.current);
        if *seen == now {
            return Ok(false);
        }
        let generation = self.current.load();
        let mut sets = generation.config.trusted_proxies.clone();
        for set in &mut sets {
            if let Some(path) = &set.file {
                set.file_cidrs = crate::cidrs::read_file(path).map_err(|source| {
                    FileReloadError::TrustedFile {
                        set: set.name.clone(),
                        source,
                    }
                })?;
            }
        }
        let trusted =
            crate::config::trusted_proxies(&sets).map_err(FileReloadError::TrustedSets)?;
        let mut config = generation.config.engine.client_ip.clone();
        config.trusted = trusted;
        self.engine.set_client_ip(config);
        *seen = now;
        Ok(true)
    }
}

fn list(errors: &[vigil_engine::TrustedSetError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
