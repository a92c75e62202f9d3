//! Rule bundles from the controller (`[rules] source = "controller"`;
//! `docs/rules.md`, Bundles from the controller).
//!
//! The controller streams the rule bundle in force as a
//! [`vigil_fleet::Change::RulesBundle`]. [`BundleApplier::take`] compiles
//! it against the running config exactly as a reload compiles rule files
//! ([`crate::config::compile_bundle`]: the file, the time zone, the
//! routes it names and reaches). One that compiles is written to the state
//! directory ([`FILE_NAME`]) and then swapped in as the next generation,
//! as a reload swaps one; one that does not changes nothing: it is counted
//! (`vigil_proxy_rules_bundles_total{result="rejected"}`), logged at warn
//! with every problem, and reported to the controller. Either outcome is
//! reported ([`vigil_fleet::NodeEventKind::RulesBundle`]) through the
//! on-disk event queue, so the report survives a controller away and a
//! restart.
//!
//! A rejected bundle is tried again after each successful reload (the
//! operator may have added the route it names), as long as it is the
//! latest one streamed.
//!
//! **Fail-static.** The bundle written to the state directory is the one
//! in force: the config loader reads it (`crate::config`, `[rules]`), so a
//! node restarted while the controller is away enforces the same rules,
//! and a `SIGHUP` reload compiles it again against the reloaded config —
//! a reload the bundle does not compile against is refused whole (the
//! running config and bundle stay), never a silent return to the files.
//!
//! The file is written through a temporary file (mode 0600), fsync'd and
//! renamed over the old one, then the folder synced: a crash leaves the
//! old bundle or the new one whole. Its SHA-256 is checked when it is
//! read; it is not authenticated — whoever can write the state directory
//! can write the config too.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vigil_fleet::{MAX_RULES_PROBLEM_BYTES, MAX_RULES_PROBLEMS, NodeEventKind};

use crate::fleet_sync::Outbox;
use crate::generation::{ApplyLock, Current};
use crate::metrics::Metrics;

/// The bundle in force, in the state directory.
pub const FILE_NAME: &str = "controller.rules";

/// Largest bundle file read: the text (at most 256 KiB) JSON-escaped, with
/// room to spare.
const MAX_FILE_BYTES: u64 = 2 << 20;

/// A rule bundle as the controller sent it, and as it is kept on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredBundle {
    /// Its version.
    pub version: u64,
    /// SHA-256 of `text`, lower-case hex.
    pub sha256: String,
    /// When the controller first published it (Unix seconds).
    pub created_at: u64,
    /// The rule file's text.
    pub text: String,
}

/// What became of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It is the node's rules now.
    Applied,
    /// It was in force already.
    Unchanged,
    /// It does not compile against this node's config (every problem);
    /// the running rules stay.
    Rejected(Vec<String>),
}

/// Applies the bundles the controller streams ([`BundleApplier::take`]).
pub struct BundleApplier {
    current: Current,
    apply: ApplyLock,
    metrics: Metrics,
    outbox: Arc<Outbox>,
    /// The last bundle rejected and reported (version, SHA-256): the same
    /// one sent again (a resync's snapshot) is not reported twice.
    rejected: Mutex<Option<(u64, String)>>,
    /// The latest bundle streamed, when it was rejected: a reload that
    /// gives the node what it lacked (a route) tries it again
    /// ([`BundleApplier::retry`]). Cleared by any bundle taken since,
    /// so that a retry never applies one the controller moved on from.
    latest_rejected: Mutex<Option<StoredBundle>>,
}

// === impl StoredBundle ===

impl StoredBundle {
    /// Whether `sha256` is the SHA-256 of `text`.
    pub fn intact(&self) -> bool {
        sha256_hex(&self.text) == self.sha256
    }
}

/// SHA-256 of `text`, lower-case hex.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The bundle in force in `state_dir`, if one was written; an error names
/// what is wrong with the file (unreadable, too large, not a bundle, or
/// its text not matching its SHA-256).
pub fn read(state_dir: &Path) -> Result<Option<StoredBundle>, String> {
    let path = state_dir.join(FILE_NAME);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read: {e}")),
    };
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, MAX_FILE_BYTES + 1),
        &mut bytes,
    )
    .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    let bundle: StoredBundle =
        serde_json::from_slice(&bytes).map_err(|e| format!("not a rule bundle: {e}"))?;
    if !bundle.intact() {
        return Err("the bundle's text does not match its sha256".to_owned());
    }
    Ok(Some(bundle))
}

/// Writes `bundle` as the one in force in `state_dir` (see the module's
/// docs for how).
pub fn write(state_dir: &Path, bundle: &StoredBundle) -> std::io::Result<()> {
    let path = state_dir.join(FILE_NAME);
    let tmp = state_dir.join(format!("{FILE_NAME}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    let bytes = serde_json::to_vec(bundle).map_err(std::io::Error::other)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(state_dir)?.sync_all()
}

// === impl BundleApplier ===

impl BundleApplier {
    /// An applier into `current` (under `apply`, the lock reloads hold),
    /// reporting through `outbox`.
    pub fn new(current: Current, apply: ApplyLock, metrics: Metrics, outbox: Arc<Outbox>) -> Self {
        Self {
            current,
            apply,
            metrics,
            outbox,
            rejected: Mutex::new(None),
            latest_rejected: Mutex::new(None),
        }
    }

    /// Tries the latest bundle streamed again, if it was rejected: called
    /// after a reload, which may have given the node what the bundle
    /// needs. Nothing to do otherwise.
    pub fn retry(&self) {
        let latest = self
            .latest_rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(bundle) = latest {
            self.take(bundle);
        }
    }

    /// Compiles `bundle` against the running config and, if it compiles,
    /// makes it the node's rules (written to the state directory first);
    /// counts, logs and reports the outcome.
    pub fn take(&self, bundle: StoredBundle) -> Outcome {
        let outcome = self.try_take(&bundle);
        *self
            .latest_rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = match &outcome {
            Outcome::Rejected(_) => Some(bundle.clone()),
            Outcome::Applied | Outcome::Unchanged => None,
        };
        let result = match &outcome {
            Outcome::Applied => "applied",
            Outcome::Unchanged => "unchanged",
            Outcome::Rejected(_) => "rejected",
        };
        self.metrics
            .rules_bundles
            .with_label_values(&[result])
            .inc();
        match &outcome {
            Outcome::Applied => {
                tracing::info!(
                    version = bundle.version,
                    sha256 = bundle.sha256,
                    "rule bundle from the controller applied"
                );
                *self.rejected.lock().unwrap_or_else(PoisonError::into_inner) = None;
                self.report(&bundle, true, Vec::new());
            }
            Outcome::Unchanged => {}
            Outcome::Rejected(problems) => {
                for problem in problems {
                    tracing::warn!(
                        version = bundle.version,
                        problem,
                        "rule bundle from the controller rejected"
                    );
                }
                tracing::warn!(
                    version = bundle.version,
                    problems = problems.len(),
                    "rule bundle from the controller rejected; the running rules stay"
                );
                let key = (bundle.version, bundle.sha256.clone());
                let mut last = self.rejected.lock().unwrap_or_else(PoisonError::into_inner);
                if last.as_ref() != Some(&key) {
                    *last = Some(key);
                    drop(last);
                    self.report(&bundle, false, problems.clone());
                }
            }
        }
        outcome
    }

    fn try_take(&self, bundle: &StoredBundle) -> Outcome {
        // With the reloads' lock: a reload and a bundle never build on
        // the same generation over each other.
        let _apply = self.apply.lock().unwrap_or_else(PoisonError::into_inner);
        let running = self.current.load_full();
        if running
            .config
            .rules_bundle
            .as_ref()
            .is_some_and(|b| b.version == bundle.version && b.sha256 == bundle.sha256)
        {
            return Outcome::Unchanged;
        }
        if !bundle.intact() {
            return Outcome::Rejected(vec![
                "the bundle's text does not match its sha256".to_owned(),
            ]);
        }
        let config = match running
            .config
            .with_bundle(bundle.version, &bundle.sha256, &bundle.text)
        {
            Ok(config) => config,
            Err(problems) => return Outcome::Rejected(problems),
        };
        // On disk before it is in force: a restart never enforces less
        // than what ran.
        // Not in force unless on disk: a reload or restart reads the
        // bundle back from there, and would silently go back to the one
        // before while the controller lists this one as applied.
        if let Err(e) = write(&config.server.state_dir, bundle) {
            return Outcome::Rejected(vec![format!(
                "the bundle could not be written to the state directory: {e}"
            )]);
        }
        self.metrics
            .rules_bundle_version
            .set(i64::try_from(bundle.version).unwrap_or(i64::MAX));
        let next = running.with_config(config, &self.metrics);
        self.current.store(Arc::new(next));
        Outcome::Applied
    }

    fn report(&self, bundle: &StoredBundle, applied: bool, problems: Vec<String>) {
        let problems = problems
            .into_iter()
            .take(MAX_RULES_PROBLEMS)
            .map(|p| truncate(p, MAX_RULES_PROBLEM_BYTES))
            .collect();
        self.outbox.push(NodeEventKind::RulesBundle {
            version: bundle.version,
            sha256: bundle.sha256.clone(),
            applied,
            problems,
            at: crate::proxy::now_secs(),
        });
        self.outbox.commit();
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

impl std::fmt::Debug for BundleApplier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleApplier").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_written_reads_back_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let text = "[[rule]]\nname = \"x\"\npath_prefixes = [\"/x\"]\naction = \"block\"\n";
        let bundle = StoredBundle {
            version: 3,
            sha256: sha256_hex(text),
            created_at: 9,
            text: text.to_owned(),
        };
        write(dir.path(), &bundle).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(bundle.clone()));
        let damaged = StoredBundle {
            text: text.replace("block", "allow"),
            ..bundle
        };
        std::fs::write(
            dir.path().join(FILE_NAME),
            serde_json::to_vec(&damaged).unwrap(),
        )
        .unwrap();
        assert!(read(dir.path()).unwrap_err().contains("sha256"));
        std::fs::write(dir.path().join(FILE_NAME), b"{").unwrap();
        assert!(read(dir.path()).unwrap_err().contains("not a rule bundle"));
    }

    #[test]
    fn a_problem_is_cut_on_a_character_boundary() {
        assert_eq!(truncate("abc".to_owned(), 5), "abc");
        assert_eq!(truncate("aé".to_owned(), 2), "a");
    }
}
