//! Why a database set could not be opened or reloaded.

use std::fmt;
use std::path::PathBuf;

/// Which slot of a [`GeoPaths`](crate::GeoPaths) a file fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatabaseRole {
    /// A City or Country database: country, city, coordinates.
    Geo,
    /// An ASN database: AS number and organisation.
    Asn,
}

/// A database file that cannot be used. Each variant names the file, its
/// role and the problem, so the message alone tells an operator what to fix.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// The file could not be opened, inspected or read (missing, permission).
    #[error("{role} {}: cannot read: {source}", path.display())]
    Read {
        /// The file's role.
        role: DatabaseRole,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_DATABASE_BYTES`](crate::MAX_DATABASE_BYTES).
    #[error(
        "{role} {}: {len} bytes, more than the limit of {}",
        path.display(),
        crate::MAX_DATABASE_BYTES
    )]
    TooLarge {
        /// The file's role.
        role: DatabaseRole,
        /// The file.
        path: PathBuf,
        /// Its length in bytes.
        len: u64,
    },
    /// The file is not a usable MaxMind DB file (truncated, corrupt, another
    /// format).
    #[error("{role} {}: not a valid MaxMind DB file: {reason}", path.display())]
    Invalid {
        /// The file's role.
        role: DatabaseRole,
        /// The file.
        path: PathBuf,
        /// What the reader found wrong.
        reason: String,
    },
}

// === impl DatabaseRole ===

impl fmt::Display for DatabaseRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Geo => "geo database",
            Self::Asn => "ASN database",
        })
    }
}

// === impl GeoError ===

impl GeoError {
    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Read { path, .. } | Self::TooLarge { path, .. } | Self::Invalid { path, .. } => {
                path
            }
        }
    }
}
