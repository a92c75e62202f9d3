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
//!
//! **Authenticated.** The engine's bytes are followed by a trailer: a magic,
//! a generation number, the session hash key's fingerprint and a BLAKE3
//! MAC over all of it under a key derived from the session hash key. A file
//! whose MAC does not verify (edited, truncated, made under another key)
//! is set aside as `sessions.snapshot.rejected-<unix time>` — never
//! overwritten, for the operator to look at — logged at warn and counted
//! (`vigil_proxy_snapshots_rejected_total{reason}`), and the node starts
//! empty. Each write raises the generation, recorded beside the key in
//! `sessions.generation` after the snapshot is in place; a snapshot older
//! than that record (an authentic one rolled back to bring revoked
//! sessions back) is refused the same way. Someone who can write both
//! files and knows the hash key defeats this; someone who can only replace
//! both files with older copies of both does too — a rollback the node
//! cannot tell (`docs/security.md`).
//!
//! **DBSC bindings.** With DBSC in use, the node's bindings
//! (`crate::dbsc`: session key, DBSC id, public key) follow the engine's
//! bytes inside the same MAC and generation, as a section ending in its
//! length and [`DBSC_MAGIC`]; on restore at most twice `[dbsc]
//! max_sessions` entries are read. A snapshot without the section (an
//! older one) restores the engine alone.
//!
//! **The controller cursor.** With a `[controller]`, each write also
//! records in `controller.cursor` the controller sequence the engine held
//! everything up to — read before the engine's bytes are taken, written
//! after the snapshot is in place — so that a restarted node resumes the
//! sync stream where its snapshot stands, never past it
//! (`crate::fleet_sync`), with when the node was last current (its
//! staleness survives the restart); then the controller's
//! applied-changes journal drops what the snapshot now holds
//! (`crate::fleet_sync::journal`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use vigil_engine::Engine;

use crate::dbsc::Dbsc;
use crate::fleet_sync::FleetState;

/// The snapshot's file name in the state directory.
pub const FILE_NAME: &str = "sessions.snapshot";
/// The generation of the last snapshot written, beside the snapshot.
pub const GENERATION_FILE: &str = "sessions.generation";

/// Ends the DBSC section (after its length, u64 LE).
pub const DBSC_MAGIC: &[u8; 8] = b"VIGDBSCS";

/// The trailer after the engine's bytes: magic, generation (u64 LE), key
/// fingerprint, MAC.
const TRAILER_MAGIC: &[u8; 8] = b"VIGILMAC";
const TRAILER_LEN: usize = 8 + 8 + 16 + 32;

/// Why a snapshot file was set aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// No trailer: not written by this version, or truncated.
    #[error("the snapshot carries no authentication trailer")]
    Unauthenticated,
    /// Made under another session hash key.
    #[error("the snapshot was made under another session hash key")]
    OtherKey,
    /// The MAC does not verify: the file was changed.
    #[error("the snapshot's MAC does not verify: it was changed")]
    Tampered,
    /// Older than the last snapshot this node wrote.
    #[error("the snapshot is generation {found}, older than the last written ({expected})")]
    RolledBack {
        /// Its generation.
        found: u64,
        /// The generation last written.
        expected: u64,
    },
    /// Authentic, but the engine refused its contents.
    #[error("the snapshot's contents were refused")]
    Contents,
}

impl Rejected {
    /// The metric label.
    pub fn code(self) -> &'static str {
        match self {
            Rejected::Unauthenticated => "unauthenticated",
            Rejected::OtherKey => "other_key",
            Rejected::Tampered => "tampered",
            Rejected::RolledBack { .. } => "rolled_back",
            Rejected::Contents => "contents",
        }
    }
}

/// The engine's bytes of an authentic snapshot, or why it is not one.
pub fn verify<'a>(
    engine: &Engine,
    file: &'a [u8],
    generation: Option<u64>,
) -> Result<&'a [u8], Rejected> {
    let (mac_key, fingerprint) = engine.snapshot_keys();
    let split = file
        .len()
        .checked_sub(TRAILER_LEN)
        .ok_or(Rejected::Unauthenticated)?;
    let (body, trailer) = file.split_at(split);
    if trailer.get(..8) != Some(TRAILER_MAGIC.as_slice()) {
        return Err(Rejected::Unauthenticated);
    }
    let found = trailer
        .get(8..16)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes);
    if trailer.get(16..32) != Some(fingerprint.as_slice()) {
        return Err(Rejected::OtherKey);
    }
    let mac = mac_of(&mac_key, body, found, &fingerprint);
    // blake3::Hash compares in constant time.
    if trailer
        .get(32..)
        .and_then(|m| <[u8; 32]>::try_from(m).ok())
        .map(blake3::Hash::from)
        != Some(mac)
    {
        return Err(Rejected::Tampered);
    }
    if let Some(expected) = generation.filter(|g| found < *g) {
        return Err(Rejected::RolledBack { found, expected });
    }
    Ok(body)
}

fn mac_of(key: &[u8; 32], body: &[u8], generation: u64, fingerprint: &[u8; 16]) -> blake3::Hash {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(body);
    h.update(TRAILER_MAGIC);
    h.update(&generation.to_le_bytes());
    h.update(fingerprint);
    h.finalize()
}

/// The generation last written beside `path`, if recorded.
fn read_generation(path: &Path) -> Option<u64> {
    std::fs::read_to_string(generation_path(path))
        .ok()
        .and_then(|t| t.trim().parse().ok())
}

fn generation_path(path: &Path) -> PathBuf {
    path.with_file_name(GENERATION_FILE)
}

/// Moves a rejected snapshot aside, never over anything.
fn set_aside(path: &Path) -> Option<PathBuf> {
    let stamp = crate::proxy::now_secs();
    (0..100u32)
        .map(|i| {
            let name = match i {
                0 => format!("{FILE_NAME}.rejected-{stamp}"),
                i => format!("{FILE_NAME}.rejected-{stamp}-{i}"),
            };
            path.with_file_name(name)
        })
        .find(|p| !p.exists())
        .and_then(|aside| std::fs::rename(path, &aside).ok().map(|()| aside))
}

/// Writes the engine's snapshot now and then, and on shutdown.
pub struct Snapshotter {
    engine: Arc<Engine>,
    path: PathBuf,
    every: Duration,
    fleet: Option<Arc<FleetState>>,
    dbsc: Option<Arc<Dbsc>>,
}

/// Restores the snapshot at `path`, if there is one; whether one was.
/// Problems are logged, never fatal; a snapshot that is not authentic is
/// set aside and counted in `rejected`
/// (`vigil_proxy_snapshots_rejected_total{reason}`).
pub fn restore(
    engine: &Engine,
    path: &Path,
    rejected: &prometheus::IntCounterVec,
    dbsc: Option<(&Dbsc, &crate::dbsc::Settings)>,
) -> bool {
    // Each DBSC entry is at most 1 + 16 + 16 + 4 + 8 + 8 + 2 bytes and a
    // key of at most 1030.
    let dbsc_cap = dbsc.map_or(0, |(_, s)| {
        u64::try_from(s.max_sessions.saturating_mul(2 * 1085)).unwrap_or(u64::MAX) + 64
    });
    let cap = engine
        .scorer()
        .max_snapshot_bytes()
        .saturating_add(engine.max_binding_snapshot_bytes())
        .saturating_add(dbsc_cap);
    if let Ok(meta) = std::fs::metadata(path)
        && meta.len() > cap
    {
        tracing::warn!(
            path = %path.display(),
            bytes = meta.len(),
            cap,
            "session snapshot larger than these stores could ever write; starting empty"
        );
        return false;
    }
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "session snapshot not read; starting empty");
            return false;
        }
    };
    let reject = |why: Rejected| {
        rejected.with_label_values(&[why.code()]).inc();
        let aside = set_aside(path);
        tracing::warn!(
            path = %path.display(),
            set_aside = %aside.as_deref().map_or_else(|| "(not moved)".into(), |p| p.display().to_string()),
            error = %why,
            "session snapshot rejected; starting empty"
        );
    };
    let body = match verify(engine, &bytes, read_generation(path)) {
        Ok(body) => body,
        Err(why) => {
            reject(why);
            return false;
        }
    };
    // The DBSC section is last; the binding states follow the scorer's
    // bytes (a snapshot of a release before either has neither).
    let (body, section) = split_dbsc(body);
    if let (Some(section), Some((dbsc, settings))) = (section, dbsc) {
        match dbsc.restore_section(settings, section, crate::proxy::now_secs()) {
            Some(n) => tracing::info!(bindings = n, "dbsc bindings restored"),
            // The engine's part is good on its own (the MAC covered both):
            // the sessions' baselines and revocations are not lost with
            // the bindings.
            None => {
                rejected.with_label_values(&["dbsc_section"]).inc();
                tracing::warn!(
                    path = %path.display(),
                    "dbsc section of the session snapshot refused; bindings start empty"
                );
            }
        }
    }
    let (scorer, bindings) = vigil_engine::binding::fleet::split_snapshot(body);
    let now = crate::proxy::now_secs();
    match engine.scorer().restore(scorer, now) {
        Ok(r) => {
            let bindings = match bindings.map(|b| engine.restore_binding_snapshot(b, now)) {
                None => (0, 0),
                Some(Some(counts)) => counts,
                Some(None) => {
                    tracing::warn!(path = %path.display(), "session snapshot: the binding section is malformed; bindings start empty");
                    (0, 0)
                }
            };
            tracing::info!(
                path = %path.display(),
                sessions = r.sessions,
                revocations = r.revocations,
                bindings = bindings.0,
                skipped = r.refused + bindings.1,
                "session snapshot restored"
            );
            true
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "session snapshot contents refused");
            reject(Rejected::Contents);
            false
        }
    }
}

/// The engine's bytes and the DBSC section, when there is one.
fn split_dbsc(body: &[u8]) -> (&[u8], Option<&[u8]>) {
    let found = body.strip_suffix(DBSC_MAGIC.as_slice()).and_then(|rest| {
        let at = rest.len().checked_sub(8)?;
        let len = u64::from_le_bytes(rest[at..].try_into().ok()?);
        let start = at.checked_sub(usize::try_from(len).ok()?)?;
        Some((&rest[..start], &rest[start..at]))
    });
    match found {
        Some((engine, section)) => (engine, Some(section)),
        None => (body, None),
    }
}

/// One writer at a time: the timer's and the final one share the
/// temporary file.
static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Writes the engine's snapshot to `path` through a temporary file (mode
/// 0600), renamed over the old snapshot and made durable (file and folder
/// synced). Returns the bytes written.
///
/// `fleet` is the controller client's state (`crate::fleet_sync`), when a
/// controller is configured: the sequence the engine holds everything up
/// to, and when the node was last current, are read before the engine's
/// snapshot is taken and recorded in `controller.cursor` after the
/// snapshot is in place, so that the cursor never claims more than the
/// snapshot holds; then the applied-changes journal drops what the
/// snapshot holds. Without one, a cursor left from an earlier run is
/// removed: it would describe another snapshot.
pub fn write(
    engine: &Engine,
    path: &Path,
    fleet: Option<&FleetState>,
    dbsc: Option<&Dbsc>,
) -> std::io::Result<u64> {
    let _one_at_a_time = WRITING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cursor_at = fleet.map(|f| {
        (
            f.applied.load(Ordering::Acquire),
            f.current_at.load(Ordering::Acquire),
        )
    });
    let tmp = path.with_extension("snapshot.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(true);
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
    // Generations and compromised marks outlive a restart: a holder
    // without the companion is not handed a fresh generation 1.
    engine.write_binding_snapshot(&mut out)?;
    out.flush()?;
    let mut file = out
        .into_inner()
        .map_err(std::io::IntoInnerError::into_error)?;
    if let Some(dbsc) = dbsc {
        use std::io::{Seek, SeekFrom};
        // Taken after `applied` was read: it holds at least every binding
        // the cursor claims.
        let section = dbsc.snapshot_section();
        file.seek(SeekFrom::End(0))?;
        file.write_all(&section)?;
        file.write_all(&(section.len() as u64).to_le_bytes())?;
        file.write_all(DBSC_MAGIC)?;
    }
    // The engine seeks back to fill in its header, so the MAC is taken over
    // the finished bytes, read back in chunks.
    let generation = read_generation(path).unwrap_or(0).saturating_add(1);
    let (mac_key, fingerprint) = engine.snapshot_keys();
    let mut hasher = blake3::Hasher::new_keyed(&mac_key);
    {
        use std::io::{Read, Seek, SeekFrom};
        file.seek(SeekFrom::Start(0))?;
        let mut reader = std::io::BufReader::new(&file);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            hasher.update(chunk.get(..n).unwrap_or_default());
        }
        file.seek(SeekFrom::End(0))?;
    }
    hasher.update(TRAILER_MAGIC);
    hasher.update(&generation.to_le_bytes());
    hasher.update(&fingerprint);
    let mac = hasher.finalize();
    file.write_all(TRAILER_MAGIC)?;
    file.write_all(&generation.to_le_bytes())?;
    file.write_all(&fingerprint)?;
    file.write_all(mac.as_bytes())?;
    let bytes = file.metadata()?.len();
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    // The generation is recorded once its snapshot is in place: a crash in
    // between leaves a snapshot newer than the record, which is accepted.
    let gen_tmp = generation_path(path).with_extension("generation.tmp");
    std::fs::write(&gen_tmp, format!("{generation}\n"))?;
    std::fs::rename(&gen_tmp, generation_path(path))?;
    let cursor = crate::fleet_sync::cursor_path(path);
    match cursor_at {
        Some((applied, current_at)) => {
            crate::fleet_sync::write_cursor(&cursor, applied, current_at)?;
        }
        None => match std::fs::remove_file(&cursor) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        },
    }
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    if let (Some(fleet), Some((applied, _))) = (fleet, cursor_at) {
        fleet.snapshot_written(applied);
    }
    Ok(bytes)
}

impl Snapshotter {
    /// A writer of `engine`'s snapshot to `path` every `every`, with the
    /// controller cursor `fleet` when there is one (see [`write`]).
    pub fn new(
        engine: Arc<Engine>,
        path: PathBuf,
        every: Duration,
        fleet: Option<Arc<FleetState>>,
    ) -> Self {
        Self {
            engine,
            path,
            every,
            fleet,
            dbsc: None,
        }
    }

    /// Writes `dbsc`'s bindings into each snapshot.
    pub fn with_dbsc(mut self, dbsc: Arc<Dbsc>) -> Self {
        self.dbsc = Some(dbsc);
        self
    }
}

/// [`write`], with the outcome logged.
pub fn write_logged(engine: &Engine, path: &Path, fleet: Option<&FleetState>, dbsc: Option<&Dbsc>) {
    match write(engine, path, fleet, dbsc) {
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
            write_logged(
                &self.engine,
                &self.path,
                self.fleet.as_deref(),
                self.dbsc.as_deref(),
            );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dbsc::jwt::PublicKey;
    use vigil_engine::{EngineConfig, SessionHashKey, SessionKey};

    /// A snapshot written under a larger `max_sessions` than the node now
    /// runs with: the engine's part comes back whole (a revocation in it
    /// holds) and the DBSC section is cut to its bound, not the whole
    /// snapshot refused.
    #[test]
    fn a_dbsc_section_over_its_bound_is_cut_and_the_engine_part_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let key = || SessionHashKey::from_bytes([1; 32]);
        let engine = Engine::new(EngineConfig::default(), key());
        let revoked = SessionKey::from_bytes([9; 16]);
        engine.scorer().revoke(revoked, crate::proxy::now_secs());
        let dbsc = Dbsc::new(&[1; 32]);
        let now = crate::proxy::now_secs();
        for i in 0..4u8 {
            let session = SessionKey::from_bytes([i; 16]);
            let mut id = [i; 16];
            id[0] = i;
            dbsc.store()
                .bind(
                    session,
                    PublicKey::Es256(Box::new([4; 65])),
                    id,
                    now,
                    now,
                    (100, 1000),
                    false,
                )
                .unwrap();
        }
        write(&engine, &path, None, Some(&dbsc)).unwrap();

        let back = Engine::new(EngineConfig::default(), key());
        let bindings = Dbsc::new(&[1; 32]);
        let tight = crate::dbsc::Settings {
            max_sessions: 1,
            ..crate::dbsc::Settings::default()
        };
        let rejected =
            prometheus::IntCounterVec::new(prometheus::Opts::new("r", "r"), &["reason"]).unwrap();
        assert!(restore(&back, &path, &rejected, Some((&bindings, &tight))));
        assert!(back.scorer().is_revoked(&revoked));
        // 2 × max_sessions entries taken, the rest left out.
        assert_eq!(bindings.store().len(), 2);
        assert_eq!(rejected.with_label_values(&["dbsc_section"]).get(), 0);
    }
}
