//! Files named in the config — trusted proxy lists and geo databases — are
//! checked for change on a timer and reloaded in the background. A file that
//! fails to load keeps what was loaded before; the failure is logged and
//! counted (STYLE.md 8).

use std::sync::Arc;

use std::time::Duration;
use vigil_engine::Engine;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use prometheus::IntCounterVec;

/// Something that can re-read its files.
pub trait Reloadable: Send + Sync {
    /// A short, stable name for logs and the `source` metric label.
    fn name(&self) -> &'static str;

    /// Re-reads the files if they changed. `Ok(true)` when something new was
    /// loaded, `Ok(false)` when nothing changed; on `Err` the old data stays.
    fn reload(&self) -> Result<bool, String>;
}

/// The background service that drives every [`Reloadable`].
pub struct Reloader {
    every: Duration,
    sources: Vec<Box<dyn Reloadable>>,
    /// `vigil_proxy_reloads_total{source,result}`.
    counter: IntCounterVec,
}

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

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, shutdown: ShutdownWatch) {
        every(self.every, shutdown, || self.check_all()).await;
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
pub struct GeoReload(pub std::sync::Arc<vigil_geoip::GeoIp>);

impl Reloadable for GeoReload {
    fn name(&self) -> &'static str {
        "geoip"
    }

    fn reload(&self) -> Result<bool, String> {
        match self.0.reload() {
            Ok(vigil_geoip::ReloadOutcome::Unchanged) => Ok(false),
            Ok(vigil_geoip::ReloadOutcome::Reloaded { .. }) => Ok(true),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Trusted proxy sets read from files: when any file changes, every set is
/// rebuilt and the engine's client IP stage replaced whole.
#[derive(Debug)]
pub struct TrustedFiles {
    engine: std::sync::Arc<vigil_engine::Engine>,
    base: vigil_engine::ClientIpConfig,
    sets: Vec<crate::config::TrustedSet>,
    stamps: std::sync::Mutex<Vec<Option<FileStamp>>>,
}

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl TrustedFiles {
    /// Watches the files of `sets`; `base` is the client IP config the
    /// engine started with.
    pub fn new(
        engine: std::sync::Arc<vigil_engine::Engine>,
        base: vigil_engine::ClientIpConfig,
        sets: Vec<crate::config::TrustedSet>,
    ) -> Self {
        let stamps = sets
            .iter()
            .map(|s| s.file.as_deref().and_then(stamp))
            .collect();
        Self {
            engine,
            base,
            sets,
            stamps: std::sync::Mutex::new(stamps),
        }
    }

    /// Whether any set reads a file.
    pub fn watches_files(&self) -> bool {
        self.sets.iter().any(|s| s.file.is_some())
    }
}

fn stamp(path: &std::path::Path) -> Option<FileStamp> {
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

    fn reload(&self) -> Result<bool, String> {
        let now: Vec<Option<FileStamp>> = self
            .sets
            .iter()
            .map(|s| s.file.as_deref().and_then(stamp))
            .collect();
        let mut seen = self
            .stamps
            .lock()
            .map_err(|_| "trusted file state poisoned".to_owned())?;
        if *seen == now {
            return Ok(false);
        }
        let mut sets = self.sets.clone();
        for set in &mut sets {
            if let Some(path) = &set.file {
                set.file_cidrs = crate::cidrs::read_file(path).map_err(|e| e.to_string())?;
            }
        }
        let trusted = crate::config::trusted_proxies(&sets).map_err(|errors| {
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        let mut config = self.base.clone();
        config.trusted = trusted;
        self.engine.set_client_ip(config);
        *seen = now;
        Ok(true)
    }
}

/// Drops session states that idled out, once a minute, so that their memory
/// returns before the store would reuse it.
pub struct Sweeper {
    engine: Arc<Engine>,
    every: Duration,
}

impl Sweeper {
    /// A sweeper of `engine`'s session store every `every`.
    pub fn new(engine: Arc<Engine>, every: Duration) -> Self {
        Self { engine, every }
    }
}

#[async_trait]
impl BackgroundService for Sweeper {
    async fn start(&self, shutdown: ShutdownWatch) {
        every(self.every, shutdown, || {
            self.engine.scorer().sweep(crate::proxy::now_secs());
        })
        .await;
    }
}

impl std::fmt::Debug for Sweeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sweeper")
            .field("every", &self.every)
            .finish()
    }
}
