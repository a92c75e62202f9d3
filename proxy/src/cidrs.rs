//! CIDR list files: one network per line, for trusted proxy sets that
//! providers publish (a Zscaler or CDN egress list).
//!
//! ```text
//! # Zscaler egress, 2026-11
//! 185.46.212.0/22
//! 2a03:eec0::/32    # trailing comments are fine
//! 198.51.100.7      # a bare address is a /32 (or /128)
//! ```

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

/// Longest file read, in bytes. Provider lists are tens of kilobytes; a
/// multi-megabyte file is a mistake, not a list.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// A CIDR file that cannot be used: every bad line is listed.
#[derive(Debug, thiserror::Error)]
pub enum CidrFileError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("{path}: {len} bytes, more than the limit of {MAX_FILE_BYTES}")]
    TooLarge {
        /// The file.
        path: String,
        /// Its length.
        len: u64,
    },
    /// Lines that are not networks.
    #[error("{}", .lines.iter().map(|(n, l)| format!("{path}:{n}: {l:?} is not a CIDR or an address")).collect::<Vec<_>>().join("; "))]
    BadLines {
        /// The file.
        path: String,
        /// Line number (from 1) and text of each bad line.
        lines: Vec<(usize, String)>,
    },
}

/// Reads a CIDR file.
pub fn read_file(path: &Path) -> Result<Vec<IpNet>, CidrFileError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| CidrFileError::Read {
        path: shown.clone(),
        source,
    })?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(CidrFileError::TooLarge {
            path: shown,
            len: meta.len(),
        });
    }
    // The reported length is 0 for a device or a FIFO (`/dev/zero`): read
    // through a cap as well, or such a path would be read without end.
    let mut text = String::new();
    {
        use std::io::Read;
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_string(&mut text))
            .map_err(|source| CidrFileError::Read {
                path: shown.clone(),
                source,
            })?;
    }
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(CidrFileError::TooLarge {
            path: shown,
            len: text.len() as u64,
        });
    }
    parse(&text).map_err(|lines| CidrFileError::BadLines { path: shown, lines })
}

/// Parses CIDR-list text; the error lists every bad line.
pub fn parse(text: &str) -> Result<Vec<IpNet>, Vec<(usize, String)>> {
    let mut nets = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        match parse_one(entry) {
            Some(net) => nets.push(net),
            None => bad.push((i + 1, entry.to_owned())),
        }
    }
    if bad.is_empty() { Ok(nets) } else { Err(bad) }
}

/// A CIDR, or a bare address as a host network. Host bits are cleared:
/// `10.1.2.3/8` means `10.0.0.0/8`.
pub fn parse_one(entry: &str) -> Option<IpNet> {
    if let Ok(net) = entry.parse::<IpNet>() {
        return Some(net.trunc());
    }
    entry.parse::<IpAddr>().ok().map(IpNet::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cidrs_addresses_and_comments() {
        let nets =
            parse("# list\n10.0.0.0/8\n\n  192.0.2.7   # one host\n2001:db8::/32\n10.1.2.3/16\n")
                .unwrap();
        let shown: Vec<String> = nets.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "10.1.0.0/16"]
        );
    }

    #[test]
    fn lists_every_bad_line() {
        let bad = parse("10.0.0.0/8\nnot-a-net\n10.0.0.0/33\n::1\n").unwrap_err();
        assert_eq!(
            bad,
            vec![(2, "not-a-net".to_owned()), (3, "10.0.0.0/33".to_owned())]
        );
    }

    #[test]
    fn file_errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.txt");
        std::fs::write(&path, "10.0.0.0/8\nbogus\n").unwrap();
        let err = read_file(&path).unwrap_err().to_string();
        assert!(err.contains("z.txt:2: \"bogus\""), "{err}");
        let missing = read_file(&dir.path().join("none.txt"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("none.txt: cannot read"), "{missing}");
    }

    #[cfg(unix)]
    #[test]
    fn a_file_without_a_length_is_read_through_the_cap() {
        // /dev/zero reports length 0 and never ends: refused, not read forever.
        let err = read_file(Path::new("/dev/zero")).unwrap_err();
        assert!(matches!(err, CidrFileError::TooLarge { .. }), "{err}");
    }
}
