//! Binary upgrade without a refused connection, under a service manager.
//!
//! Pingora's graceful upgrade has a new process, started with `--upgrade`,
//! wait on the upgrade socket for the listening sockets that the old one
//! sends on `SIGQUIT`. Started by hand, that new process would be outside
//! the systemd service (its cgroup), and systemd would count the service
//! stopped when the old process exits. So on `SIGUSR2` (what `vigil-proxy
//! upgrade` sends) the running process starts its own successor — the
//! binary at the path it was itself started from, where the new build has
//! just been installed — with `run --config FILE --upgrade`, waits until
//! the successor waits on the upgrade socket, then hands the sockets over
//! as on `SIGQUIT` and stops gracefully. The successor, once ready, tells
//! systemd it is the main process ([`crate::service_manager::ready`]).
//!
//! A successor that exits or does not reach the upgrade socket in time
//! changes nothing: the running process keeps its sockets and serves on.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// How long a successor may take to reach the upgrade socket: it loads its
/// config, certificates and geo databases, and restores the session
/// snapshot, first.
const SUCCESSOR_DEADLINE: Duration = Duration::from_secs(120);

/// How often the successor is looked at meanwhile.
const POLL: Duration = Duration::from_millis(20);

/// Why no successor took over.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The process was started without a config file (the demo).
    #[error("this process was started without a config file")]
    NoFile,
    /// The path of this process's binary is unknown.
    #[error("the path this binary was started from is unknown")]
    NoBinary,
    /// The successor could not be started.
    #[error("cannot start {}: {source}", binary.display())]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The successor exited before taking the sockets (a bad config, say:
    /// its log says why).
    #[error("the new process exited with {0} before taking the sockets")]
    Exited(ExitStatus),
    /// The successor did not reach the upgrade socket in time; it was
    /// killed.
    #[error("the new process did not wait for the sockets within {0:?}; it was stopped")]
    Timeout(Duration),
}

/// Starts this process's successor.
#[derive(Debug, Clone)]
pub struct Upgrader {
    binary: Option<PathBuf>,
    config: Option<PathBuf>,
    upgrade_sock: PathBuf,
}

// === impl Upgrader ===

impl Upgrader {
    /// A successor runs the binary this process was started from with
    /// `config` (`None`: upgrades fail), and waits on `upgrade_sock`.
    pub fn new(config: Option<PathBuf>, upgrade_sock: PathBuf) -> Self {
        Self {
            binary: own_binary(),
            config,
            upgrade_sock,
        }
    }

    /// Starts the successor and returns its pid once it waits on the
    /// upgrade socket; the caller then hands the sockets over.
    pub async fn start_successor(&self) -> Result<u32, UpgradeError> {
        let config = self.config.as_deref().ok_or(UpgradeError::NoFile)?;
        let binary = self.binary.as_deref().ok_or(UpgradeError::NoBinary)?;
        // The successor binds the socket afresh; one left by an earlier
        // upgrade must not pass for it.
        let _ = std::fs::remove_file(&self.upgrade_sock);
        let mut child = Command::new(binary)
            .arg("run")
            .arg("--config")
            .arg(config)
            .arg("--upgrade")
            .stdin(Stdio::null())
            .spawn()
            .map_err(|source| UpgradeError::Spawn {
                binary: binary.to_owned(),
                source,
            })?;
        let pid = child.id();
        tracing::info!(
            pid,
            binary = %binary.display(),
            "binary upgrade: new process started; it takes the sockets once it waits on the upgrade socket"
        );
        let deadline = Instant::now() + SUCCESSOR_DEADLINE;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(UpgradeError::Exited(status));
            }
            if is_socket(&self.upgrade_sock) {
                // Not waited for: it outlives this process, which the
                // service manager then no longer watches.
                return Ok(pid);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(UpgradeError::Timeout(SUCCESSOR_DEADLINE));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// The path this process was started from, as given (`/usr/bin/vigil-proxy`
/// rather than what a symlink there pointed to at start, so that a new
/// build installed at that path, or a link moved to one, is what an
/// upgrade runs); a bare name is resolved by the kernel's record.
fn own_binary() -> Option<PathBuf> {
    let given = PathBuf::from(std::env::args_os().next()?);
    if given.components().count() > 1 {
        if given.is_absolute() {
            Some(given)
        } else {
            std::env::current_dir().ok().map(|dir| dir.join(given))
        }
    } else {
        std::env::current_exe().ok()
    }
}
