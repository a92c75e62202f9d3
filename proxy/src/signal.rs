//! `vigil-proxy reload` and `vigil-proxy upgrade`: find the running proxy by
//! its pid file and send it `SIGHUP` (reload the config, the signal
//! `systemctl reload` sends) or `SIGUSR2` (start the binary installed at
//! its path and hand it the sockets, [`crate::upgrade`]).

use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Why the running proxy could not be signalled.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// No pid file: the proxy is not running with this state_dir.
    #[error("{}: cannot read the pid file ({source}); is vigil-proxy running with this config's state_dir?", path.display())]
    PidFile {
        /// The pid file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The pid file does not hold a process id.
    #[error("{}: {text:?} is not a process id", path.display())]
    NotAPid {
        /// The pid file.
        path: PathBuf,
        /// What it holds, trimmed.
        text: String,
    },
    /// The signal could not be sent (no such process, not permitted).
    #[error("cannot signal process {pid}: {source}")]
    Kill {
        /// The process.
        pid: i32,
        /// The cause.
        source: nix::Error,
    },
}

/// Sends `SIGHUP` to the process named in `pid_file`; returns its pid.
pub fn reload(pid_file: &Path) -> Result<i32, SignalError> {
    send(pid_file, Signal::SIGHUP)
}

/// Sends `SIGUSR2` to the process named in `pid_file`; returns its pid.
pub fn upgrade(pid_file: &Path) -> Result<i32, SignalError> {
    send(pid_file, Signal::SIGUSR2)
}

fn send(pid_file: &Path, signal: Signal) -> Result<i32, SignalError> {
    let text = std::fs::read_to_string(pid_file).map_err(|source| SignalError::PidFile {
        path: pid_file.to_owned(),
        source,
    })?;
    let text = text.trim();
    let pid = text
        .parse::<i32>()
        .ok()
        .filter(|pid| *pid > 0)
        .ok_or_else(|| SignalError::NotAPid {
            path: pid_file.to_owned(),
            text: text.to_owned(),
        })?;
    kill(Pid::from_raw(pid), signal).map_err(|source| SignalError::Kill { pid, source })?;
    Ok(pid)
}
