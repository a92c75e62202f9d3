//! The session hash key on disk: read it, or create it on first start.

use std::io::Write;
use std::path::{Path, PathBuf};

use vigil_engine::{HASH_KEY_LEN, SessionHashKey};

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
