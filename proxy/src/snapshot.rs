//! Session state across restarts: the engine's snapshot
//! ([`Scorer::snapshot`](vigil_engine::Scorer::snapshot)) written to
//! `<state_dir>/sessions.snapshot` every `[session] snapshot_interval_seconds`
//! and once more after the server stops, and read back on start.
//!
//! Without it a restart forgets every baseline, revocation and user
//! history: the next request of each session — a replay included — would
//! become its baseline, a revoked cookie would work again, and every user
//! would start a new learning period. The file holds keyed
//! hashes and network hashes, never a credential, an address or a user's
//! name; it is written to a temporary file (mode 0600) and renamed over the
//! old one, so a crash mid-write leaves the previous snapshot whole. A file
//! that cannot be read is logged and left alone: the proxy starts empty
//! rather than not at all.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use vigil_engine::Engine;

/// The snapshot's file name in the state directory.
pub const FILE_NAME: &str = "sessions.snapshot";

/// Writes the engine's snapshot now and then, and on shutdown.
pub struct Snapshotter {
    engine: Arc<Engine>,
    path: PathBuf,
    every: Duration,
}

/// Restores the snapshot at `path`, if there is one. Problems are logged,
/// never fatal.
pub fn restore(engine: &Engine, path: &Path) {
    let cap = engine.scorer().max_snapshot_bytes();
    if let Ok(meta) = std::fs::metadata(path)
        && meta.len() > cap
    {
        tracing::warn!(
            path = %path.display(),
            bytes = meta.len(),
            cap,
            "session snapshot larger than these stores could ever write; starting empty"
        );
        return;
    }
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "session snapshot not read; starting empty");
            return;
        }
    };
    match engine.scorer().restore(&bytes, crate::proxy::now_secs()) {
        Ok(r) => tracing::info!(
            path = %path.display(),
            sessions = r.sessions,
            revocations = r.revocations,
            skipped = r.refused,
            "session snapshot restored"
        ),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "session snapshot refused; starting empty");
        }
    }
}

/// One writer at a time: the timer's and the final one share the
/// temporary file.
static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Writes the engine's snapshot to `path` through a temporary file (mode
/// 0600), renamed over the old snapshot and made durable (file and folder
/// synced). Returns the bytes written.
pub fn write(engine: &Engine, path: &Path) -> std::io::Result<u64> {
    let _one_at_a_time = WRITING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let tmp = path.with_extension("snapshot.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(&tmp)?;
    #[cfg(unix)]
    {
        // A leftover temporary file keeps its old mode through `open`.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    let mut out = std::io::BufWriter::new(file);
    engine.scorer().write_snapshot(&mut out)?;
    out.flush()?;
    let file = out
        .into_inner()
        .map_err(std::io::IntoInnerError::into_error)?;
    let bytes = file.metadata()?.len();
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(bytes)
}

impl Snapshotter {
    /// A writer of `engine`'s snapshot to `path` every `every`.
    pub fn new(engine: Arc<Engine>, path: PathBuf, every: Duration) -> Self {
        Self {
            engine,
            path,
            every,
        }
    }
}

/// [`write`], with the outcome logged.
pub fn write_logged(engine: &Engine, path: &Path) {
    match write(engine, path) {
        Ok(bytes) => tracing::info!(path = %path.display(), bytes, "session snapshot written"),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "session snapshot not written")
        }
    }
}

#[async_trait]
impl BackgroundService for Snapshotter {
    async fn start(&self, shutdown: ShutdownWatch) {
        // The last snapshot is written after the server has stopped
        // (`Vigil::run`), when no request can change it any more.
        crate::periodic::every(self.every, shutdown, || {
            write_logged(&self.engine, &self.path);
        })
        .await;
    }
}

impl std::fmt::Debug for Snapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshotter")
            .field("path", &self.path)
            .field("every", &self.every)
            .finish()
    }
}
