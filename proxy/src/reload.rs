//! Whole-config reload: `SIGHUP` (what `systemctl reload` sends), the
//! `vigil-proxy reload` command (which sends it), and, when
//! `[server] watch_config` is set, a change of the config file's content.
//!
//! A reload reads the file again and validates it exactly as `check` does.
//! A file with problems changes nothing: every problem is logged at warn and
//! the failure counted. A valid file becomes the next [`Generation`] —
//! routes, policies, upstream groups, risk weights, trusted proxy sets,
//! fingerprint headers, certificates — for requests that start after it;
//! requests in flight finish with the generation they started with.
//! Settings that need new sockets, would re-key sessions or resize a store
//! keep their running values and are reported as needing a restart
//! ([`crate::config::merge`]).
//!
//! Every outcome is counted in
//! `vigil_proxy_config_reloads_total{result="applied"|"partial"|"failed"}`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora_core::services::background::BackgroundService;
use sha2::{Digest, Sha256};
use tokio::signal::unix::{SignalKind, signal};
use vigil_engine::Engine;

use crate::config::{Config, ConfigError, Merged, merge};
use crate::generation::{ApplyLock, Current, Generation, GenerationError};
use crate::metrics::Metrics;
use crate::service_manager;
use crate::tls::{ListenerCertificates, SniResolver, TlsError};
use crate::upgrade::Upgrader;

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The process was started without a config file (the demo).
    #[error("this process was started without a config file")]
    NoFile,
    /// The file could not be read or has problems.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener's certificates could not be loaded again.
    #[error("listener {listener}: {source}")]
    Tls {
        /// The listener.
        listener: String,
        /// The cause.
        source: TlsError,
    },
    /// An upstream group or the admin token could not be built.
    #[error(transparent)]
    Generation(#[from] GenerationError),
}

/// What a reload did.
#[derive(Debug)]
pub enum Outcome {
    /// Everything in the file is in force.
    Applied,
    /// Everything is in force but these keys, which need a restart.
    Partial {
        /// The dotted keys.
        restart: Vec<String>,
    },
    /// Nothing changed.
    Failed(ReloadError),
}

/// Reloads the config file into the running process.
pub struct ConfigReloader {
    path: Option<PathBuf>,
    engine: Arc<Engine>,
    current: Current,
    metrics: Metrics,
    /// The TLS listeners' certificates, by listener name.
    certificates: Vec<(String, Arc<ListenerCertificates>)>,
    apply: ApplyLock,
    /// SHA-256 of the config text last read, for [`ConfigWatch`].
    seen: Mutex<Option<[u8; 32]>>,
    /// The controller's rule bundles (`[rules] source = "controller"`): a
    /// bundle this node rejected is tried again after a reload.
    rules: Option<Arc<crate::rules_bundle::BundleApplier>>,
}

/// Listens for `SIGHUP` (reload) and `SIGUSR2` (start a new binary and hand
/// it the sockets, [`crate::upgrade`]) next to Pingora's own signals:
/// `SIGTERM` (graceful stop), `SIGINT` (fast stop) and `SIGQUIT` (hand the
/// sockets to a new binary started with `run --upgrade`). Each is told to
/// the service manager ([`crate::service_manager`]).
#[derive(Debug)]
pub struct Signals {
    reloader: Arc<ConfigReloader>,
    listening: Arc<AtomicBool>,
    upgrader: Option<Upgrader>,
}

/// Reloads the config when its file's content changes and
/// `[server] watch_config` is set.
#[derive(Debug)]
pub struct ConfigWatch {
    reloader: Arc<ConfigReloader>,
    every: Duration,
}

// === impl ConfigReloader ===

impl ConfigReloader {
    /// A reloader of the file at `path` (`None`: reloads fail, there is no
    /// file) into `current` and `engine`; `certificates` are the TLS
    /// listeners'.
    pub fn new(
        path: Option<PathBuf>,
        engine: Arc<Engine>,
        current: Current,
        metrics: Metrics,
        certificates: Vec<(String, Arc<ListenerCertificates>)>,
        apply: ApplyLock,
    ) -> Self {
        let seen = path.as_deref().and_then(digest_of);
        Self {
            path,
            engine,
            current,
            metrics,
            certificates,
            apply,
            seen: Mutex::new(seen),
            rules: None,
        }
    }

    /// Tries the latest rule bundle again after each reload that applied,
    /// if `applier` rejected it ([`crate::rules_bundle::BundleApplier::retry`]).
    pub fn with_rules(mut self, applier: Arc<crate::rules_bundle::BundleApplier>) -> Self {
        self.rules = Some(applier);
        self
    }

    /// Reloads the file, logs and counts the outcome, and returns it.
    pub fn reload(&self) -> Outcome {
        let outcome = match self.try_reload() {
            Ok(restart) if restart.is_empty() => Outcome::Applied,
            Ok(restart) => Outcome::Partial { restart },
            Err(e) => Outcome::Failed(e),
        };
        let file = self
            .path
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let result = match &outcome {
            Outcome::Applied => {
                tracing::info!(file, "config reloaded");
                "applied"
            }
            Outcome::Partial { restart } => {
                for key in restart {
                    tracing::warn!(
                        file,
                        key,
                        "config reloaded but this setting needs a restart; its running value stays"
                    );
                }
                tracing::info!(
                    file,
                    "config reloaded, but for settings that need a restart"
                );
                "partial"
            }
            Outcome::Failed(ReloadError::Config(ConfigError::Invalid { problems, .. })) => {
                for problem in problems {
                    tracing::warn!(file, key = %problem.key, problem = %problem.message, "config reload refused");
                }
                tracing::warn!(
                    file,
                    problems = problems.len(),
                    "config reload refused; the running config stays"
                );
                "failed"
            }
            Outcome::Failed(e) => {
                tracing::warn!(file, error = %e, "config reload failed; the running config stays");
                "failed"
            }
        };
        self.metrics
            .config_reloads
            .with_label_values(&[result])
            .inc();
        if let (Some(rules), Outcome::Applied | Outcome::Partial { .. }) = (&self.rules, &outcome) {
            rules.retry();
        }
        outcome
    }

    /// Reads, validates, merges and applies the file; returns the keys that
    /// need a restart. Everything fallible happens before anything is
    /// replaced, so an error leaves the running config whole.
    fn try_reload(&self) -> Result<Vec<String>, ReloadError> {
        let path = self.path.as_deref().ok_or(ReloadError::NoFile)?;
        // Reloads are rare; holding the lock across the file read keeps a
        // SIGHUP and the file watch from applying the same file twice over
        // each other.
        let _apply = self.apply.lock().unwrap_or_else(PoisonError::into_inner);
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        // Remembered even when the file is bad: the watch retries only
        // once the file changes again.
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Sha256::digest(text.as_bytes()).into());
        let next = Config::parse(&text, path)?;
        let running = self.current.load_full();
        let Merged { config, restart } = merge(&running.config, next);

        let mut resolvers = Vec::with_capacity(self.certificates.len());
        for (name, certificates) in &self.certificates {
            // The merge keeps the running listener set, so every TLS
            // listener is still there, and still TLS.
            let Some(listener) = config.listeners.iter().find(|l| &l.name == name) else {
                continue;
            };
            let resolver =
                SniResolver::load(&listener.certificates).map_err(|source| ReloadError::Tls {
                    listener: name.clone(),
                    source,
                })?;
            resolvers.push((certificates, resolver));
        }
        let generation = Generation::new(config, Some(&running), &self.metrics)?;

        crate::logging::set_level(&generation.config.log.level);
        self.engine.reconfigure(generation.config.engine.clone());
        for (certificates, resolver) in resolvers {
            certificates.replace(resolver);
        }
        self.current.store(Arc::new(generation));
        Ok(restart)
    }

    /// Whether the file's content differs from what was last read. An
    /// unreadable file (a ConfigMap mid-swap) is no change.
    fn file_changed(&self) -> bool {
        let Some(now) = self.path.as_deref().and_then(digest_of) else {
            return false;
        };
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) != Some(now)
    }
}

fn digest_of(path: &std::path::Path) -> Option<[u8; 32]> {
    let bytes = std::fs::read(path).ok()?;
    Some(Sha256::digest(&bytes).into())
}

impl std::fmt::Debug for ConfigReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigReloader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

// === impl Signals ===

impl Signals {
    /// Reloads with `reloader` on `SIGHUP`; sets `listening` once every
    /// signal is being listened for (the admin listener's readiness waits
    /// for it, so a reload sent to a ready proxy is never lost).
    pub fn new(reloader: Arc<ConfigReloader>, listening: Arc<AtomicBool>) -> Self {
        Self {
            reloader,
            listening,
            upgrader: None,
        }
    }

    /// Starts a successor with `upgrader` on `SIGUSR2`; without one the
    /// signal is logged and ignored.
    pub fn with_upgrader(mut self, upgrader: Upgrader) -> Self {
        self.upgrader = Some(upgrader);
        self
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let streams = (
            signal(SignalKind::hangup()),
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::user_defined2()),
        );
        let (Ok(mut hangup), Ok(mut quit), Ok(mut terminate), Ok(mut interrupt), Ok(mut upgrade)) =
            streams
        else {
            tracing::warn!("cannot listen for SIGHUP; config reload by signal is off");
            self.listening.store(true, Ordering::Release);
            return pingora_core::server::UnixShutdownSignalWatch.recv().await;
        };
        self.listening.store(true, Ordering::Release);
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    // On the main thread, which does nothing else: a reload
                    // takes milliseconds and a stop signal waits for it.
                    // READY=1 whatever the outcome: a refused file leaves
                    // the running config, and the process as ready as it was.
                    service_manager::reloading();
                    let status = match self.reloader.reload() {
                        Outcome::Applied => "serving; config reloaded",
                        Outcome::Partial { .. } => "serving; config reloaded but for settings that need a restart",
                        Outcome::Failed(_) => "serving; config reload refused, the running config stays",
                    };
                    service_manager::ready(status);
                }
                _ = upgrade.recv() => {
                    let Some(upgrader) = &self.upgrader else {
                        tracing::warn!("SIGUSR2: binary upgrade is off in this process");
                        continue;
                    };
                    match upgrader.start_successor().await {
                        Ok(pid) => {
                            tracing::info!(pid, "binary upgrade: handing the sockets to the new process");
                            return ShutdownSignal::GracefulUpgrade;
                        }
                        Err(e) => tracing::warn!(error = %e, "binary upgrade failed; this process serves on"),
                    }
                }
                _ = quit.recv() => return ShutdownSignal::GracefulUpgrade,
                _ = terminate.recv() => {
                    service_manager::stopping();
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = interrupt.recv() => {
                    service_manager::stopping();
                    return ShutdownSignal::FastShutdown;
                }
            }
        }
    }
}

/// Makes `SIGHUP` harmless from now on, before the proxy listens for it:
/// its default action would end the process. Pingora only starts listening
/// once every service has started, and a `systemctl reload` may come sooner.
pub fn ignore_hangup_until_listening() {
    // Inside a runtime already (an embedding test), register there.
    if tokio::runtime::Handle::try_current().is_ok() {
        if let Err(e) = signal(SignalKind::hangup()) {
            tracing::warn!(error = %e, "cannot take over SIGHUP");
        }
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build();
    match runtime {
        // Registering installs tokio's process-wide handler, which stays
        // after this runtime is gone; the signals it records meanwhile are
        // dropped.
        Ok(rt) => rt.block_on(async {
            if let Err(e) = signal(SignalKind::hangup()) {
                tracing::warn!(error = %e, "cannot take over SIGHUP");
            }
        }),
        Err(e) => tracing::warn!(error = %e, "cannot take over SIGHUP"),
    }
}

// === impl ConfigWatch ===

impl ConfigWatch {
    /// Checks the file every `every`.
    pub fn new(reloader: Arc<ConfigReloader>, every: Duration) -> Self {
        Self { reloader, every }
    }
}

#[async_trait]
impl BackgroundService for ConfigWatch {
    async fn start(&self, shutdown: ShutdownWatch) {
        crate::periodic::every(self.every, shutdown, || {
            // Read from the generation in force: the key itself reloads.
            if self.reloader.current.load().config.server.watch_config
                && self.reloader.file_changed()
            {
                self.reloader.reload();
            }
        })
        .await;
    }
}
