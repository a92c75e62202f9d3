//! The session hash key on disk: read it, or create it on first start; and
//! the keys of a rotation beside it (docs/controller.md, "Rotating the hash
//! key").

use std::io::Write;
use std::path::{Path, PathBuf};

use vigil_engine::{Engine, EngineConfig, HASH_KEY_LEN, SessionHashKey};

use crate::config::KeyRotation;

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading, creating or writing failed.
    #[error("session hash key {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file exists but holds neither 32 raw bytes nor 64 hex digits.
    #[error("session hash key {path}: expected 32 raw bytes or 64 hex digits, found {len} bytes")]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The keys of a rotation cannot be used: every problem, each naming
    /// its file.
    #[error("session hash keys: {}", .0.join("; "))]
    Rotation(Vec<String>),
}

/// The keys a node hashes with.
#[derive(Debug, Clone)]
pub struct Keys {
    /// `hash_key_file`: every session credential is hashed under it.
    pub current: SessionHashKey,
    /// `previous_hash_key_file`: the key being retired.
    pub previous: Option<SessionHashKey>,
    /// `user_key_file`: user names are hashed under it (default: the
    /// current key).
    pub user: Option<SessionHashKey>,
}

// === impl Keys ===

impl Keys {
    /// An engine hashing with these keys.
    pub fn engine(&self, config: EngineConfig) -> Engine {
        let mut engine = Engine::new(config, self.current.clone());
        if let Some(previous) = &self.previous {
            engine = engine.with_previous_hash_key(previous.clone());
        }
        if let Some(user) = &self.user {
            engine = engine.with_user_key(user.clone());
        }
        engine
    }
}

/// Reads the session hash key at `current` (created when absent, as
/// [`load_or_create`]) and the keys `rotation` names, which must exist: a
/// key being retired or pinned for users is never made up. Reports every
/// problem at once, each with its file; a previous key equal to the current
/// one is a mistake (the rotation would not be one).
pub fn load_keys(current: &Path, rotation: &KeyRotation) -> Result<Keys, KeyFileError> {
    let mut problems = Vec::new();
    let mut read = |key: &str, path: &Path| match load(path) {
        Ok(k) => Some(k),
        Err(e) => {
            problems.push(format!("session.{key}: {e}"));
            None
        }
    };
    let previous = rotation
        .previous
        .as_deref()
        .and_then(|p| read("previous_hash_key_file", p));
    let user = rotation
        .user
        .as_deref()
        .and_then(|p| read("user_key_file", p));
    let current = match load_or_create(current) {
        Ok(k) => Some(k),
        Err(e) => {
            problems.push(format!("session.hash_key_file: {e}"));
            None
        }
    };
    if let (Some(c), Some(p), Some(path)) = (&current, &previous, &rotation.previous)
        && c == p
    {
        problems.push(format!(
            "session.previous_hash_key_file: {}: holds the same key as hash_key_file; \
             the previous key must be the one being retired",
            path.display()
        ));
    }
    match current {
        Some(current) if problems.is_empty() => Ok(Keys {
            current,
            previous,
            user,
        }),
        _ => Err(KeyFileError::Rotation(problems)),
    }
}

/// Reads the key at `path`, which must exist.
fn load(path: &Path) -> Result<SessionHashKey, KeyFileError> {
    let bytes = std::fs::read(path).map_err(|source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&bytes).ok_or(KeyFileError::Malformed {
        path: path.to_owned(),
        len: bytes.len(),
    })
}

/// Reads the key at `path`, or creates the file (mode 0600, parent
/// directories 0700) with a fresh random key when it does not exist.
pub fn load_or_create(path: &Path) -> Result<SessionHashKey, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::read(path) {
        Ok(bytes) => parse(&bytes).ok_or(KeyFileError::Malformed {
            path: path.to_owned(),
            len: bytes.len(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; HASH_KEY_LEN] = rand::random();
            if let Some(dir) = path.parent() {
                create_private_dir(dir).map_err(io)?;
            }
            let mut file = private_file(path).map_err(io)?;
            file.write_all(hex::encode(key).as_bytes()).map_err(io)?;
            file.write_all(b"\n").map_err(io)?;
            file.sync_all().map_err(io)?;
            tracing::info!(path = %path.display(), "created a new session hash key");
            Ok(SessionHashKey::from_bytes(key))
        }
        Err(e) => Err(io(e)),
    }
}

fn parse(bytes: &[u8]) -> Option<SessionHashKey> {
    if let Ok(raw) = <[u8; HASH_KEY_LEN]>::try_from(bytes) {
        return Some(SessionHashKey::from_bytes(raw));
    }
    let mut key = [0u8; HASH_KEY_LEN];
    hex::decode_to_slice(bytes.trim_ascii(), &mut key).ok()?;
    Some(SessionHashKey::from_bytes(key))
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotation(previous: Option<&Path>, user: Option<&Path>) -> KeyRotation {
        KeyRotation {
            previous: previous.map(Path::to_owned),
            user: user.map(Path::to_owned),
        }
    }

    #[test]
    fn a_previous_key_equal_to_the_current_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("k2");
        let copy = dir.path().join("k2-copy");
        std::fs::write(&current, "02".repeat(32)).unwrap();
        std::fs::write(&copy, [2u8; 32]).unwrap();
        let err = load_keys(&current, &rotation(Some(&copy), Some(&copy))).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains("session.previous_hash_key_file")
                && shown.contains("k2-copy")
                && shown.contains("holds the same key as hash_key_file"),
            "{shown}"
        );
    }

    #[test]
    fn every_unusable_key_file_is_named_at_once_and_none_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("k2");
        std::fs::write(&current, [2u8; 32]).unwrap();
        let missing = dir.path().join("retired.key");
        let short = dir.path().join("users.key");
        std::fs::write(&short, b"0102").unwrap();
        let err = load_keys(&current, &rotation(Some(&missing), Some(&short))).unwrap_err();
        let KeyFileError::Rotation(problems) = &err else {
            panic!("{err}");
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("session.previous_hash_key_file: session hash key "));
        assert!(problems[0].contains("retired.key"), "{}", problems[0]);
        assert!(problems[1].starts_with("session.user_key_file: session hash key "));
        assert!(problems[1].contains("users.key") && problems[1].contains("found 4 bytes"));
        assert!(!missing.exists(), "a retired key is never made up");
    }

    #[test]
    fn a_rotation_loads_both_keys_and_pins_the_user_key() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = dir.path().join("k1");
        let k2 = dir.path().join("k2");
        std::fs::write(&k1, [1u8; 32]).unwrap();
        std::fs::write(&k2, [2u8; 32]).unwrap();
        let keys = load_keys(&k2, &rotation(Some(&k1), Some(&k1))).unwrap();
        let engine = keys.engine(EngineConfig::default());
        let ids = engine.hash_key_ids();
        assert_eq!(ids.current, SessionHashKey::from_bytes([2; 32]).id());
        assert_eq!(ids.previous, Some(SessionHashKey::from_bytes([1; 32]).id()));
        assert_eq!(ids.user, SessionHashKey::from_bytes([1; 32]).id());
        let before = Engine::new(EngineConfig::default(), SessionHashKey::from_bytes([1; 32]));
        assert_eq!(engine.user_key("alice"), before.user_key("alice"));
        // Without a rotation, as before.
        let plain = load_keys(&k2, &KeyRotation::default()).unwrap();
        assert!(plain.previous.is_none() && plain.user.is_none());
    }

    #[test]
    fn creates_then_reads_back_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/session-hash.key");
        let first = load_or_create(&path).unwrap();
        let again = load_or_create(&path).unwrap();
        assert_eq!(first.as_bytes(), again.as_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn accepts_raw_and_hex_rejects_other() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        std::fs::write(&raw, [7u8; 32]).unwrap();
        assert_eq!(load_or_create(&raw).unwrap().as_bytes(), &[7u8; 32]);
        let hexed = dir.path().join("hex");
        std::fs::write(&hexed, format!("{}\n", "07".repeat(32))).unwrap();
        assert_eq!(load_or_create(&hexed).unwrap().as_bytes(), &[7u8; 32]);
        let bad = dir.path().join("bad");
        std::fs::write(&bad, b"short").unwrap();
        assert!(matches!(
            load_or_create(&bad),
            Err(KeyFileError::Malformed { len: 5, .. })
        ));
    }
}
