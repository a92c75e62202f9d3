//! One immutable set of open databases, and lookups against it.

use std::fs::{self, File};
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use maxminddb::Reader;

use crate::cache::{ADDRESS_SLOTS, DirectMapped, FactsCache, RECORD_SLOTS};
use crate::error::{DatabaseRole, GeoError};
use crate::facts::GeoFacts;
use crate::record::{Raw, Record};

/// Largest database file read, in bytes (1 GiB). GeoLite2-City is about
/// 60 MB and the largest commercial files a few hundred; anything bigger is a
/// wrong path, and the whole file is held in memory.
pub const MAX_DATABASE_BYTES: u64 = 1 << 30;

/// The database files that make up one set. Either list may be empty; the
/// facts that its files would give are then `None`.
///
/// Each list takes several files because some distributions split one
/// database by address family (ip-location-db ships `*-ipv4.mmdb` and
/// `*-ipv6.mmdb`): for each address the files of a list are consulted in
/// order, files that cannot hold the address (IPv4-only files for an IPv6
/// address) are skipped, and the first file with a record for it answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeoPaths {
    /// City or Country databases (GeoLite2-City, GeoIP2-Country,
    /// dbip-city-lite, ip-location-db `*-city-*`/`*-country-*`, ...).
    pub geo: Vec<PathBuf>,
    /// ASN databases (GeoLite2-ASN, dbip-asn-lite, ip-location-db `asn-*`).
    pub asn: Vec<PathBuf>,
}

/// One immutable set of open databases: cheap to share (`Arc`), never
/// changed once built. [`GeoIp`](crate::GeoIp) swaps whole sets on reload.
///
/// Each field of a [`GeoFacts`] comes from the geo files first (country,
/// city, location) or the ASN files first (AS number and organisation, taken
/// together), falling back to the other list for databases that carry both.
#[derive(Debug, Default)]
pub struct GeoDatabases {
    geo: Vec<Arc<Database>>,
    asn: Vec<Arc<Database>>,
    paths: GeoPaths,
    /// The request path's answers for recent addresses, from these files
    /// only: a new set starts empty.
    cache: FactsCache,
}

/// Facts about one open database file, for logs and the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatabaseInfo<'a> {
    /// Which list the file is in.
    pub role: DatabaseRole,
    /// The file, as configured.
    pub path: &'a Path,
    /// The `database_type` from the file's metadata, e.g. `GeoLite2-City`,
    /// `DBIP-City-Lite`, `city ipv4`.
    pub database_type: &'a str,
    /// When the database was built, in seconds since the Unix epoch.
    pub build_epoch: u64,
    /// 4 for IPv4-only files, 6 for files that hold both families.
    pub ip_version: u16,
    /// Bytes of memory the file occupies (its whole length).
    pub bytes: usize,
}

/// One open file.
#[derive(Debug)]
struct Database {
    role: DatabaseRole,
    path: PathBuf,
    reader: Reader<Vec<u8>>,
    bytes: usize,
    stamp: FileStamp,
    /// The request path's records (without names) by their offset in this
    /// file's data section: records are shared between networks, so an
    /// address seen for the first time is often decoded already.
    records: DirectMapped<usize, Option<Raw<'static>>>,
}

/// What identifies one version of a file on disk. Any difference means the
/// file was replaced or rewritten: a new inode (an atomic rename, as
/// geoipupdate and Kubernetes volume updates do), a new length or mtime, or a
/// new ctime (an in-place copy that preserved the mtime). The one change it
/// can miss is an in-place rewrite to the same length within one tick of the
/// kernel's file clock (a few ms) of the previous write; writers that rename
/// a new file into place always get a new inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

// === impl GeoPaths ===

impl GeoPaths {
    /// No files: every lookup gives empty facts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a City or Country database file.
    pub fn with_geo(mut self, path: impl Into<PathBuf>) -> Self {
        self.geo.push(path.into());
        self
    }

    /// Adds an ASN database file.
    pub fn with_asn(mut self, path: impl Into<PathBuf>) -> Self {
        self.asn.push(path.into());
        self
    }

    /// Whether no file is configured.
    pub fn is_empty(&self) -> bool {
        self.geo.is_empty() && self.asn.is_empty()
    }
}

// === impl GeoDatabases ===

impl GeoDatabases {
    /// Opens every file of `paths`, reading each whole into memory. Fails on
    /// the first file that is missing, unreadable, larger than
    /// [`MAX_DATABASE_BYTES`] or not a MaxMind DB file, naming it.
    pub fn open(paths: &GeoPaths) -> Result<Self, GeoError> {
        let open_all = |role, list: &[PathBuf]| -> Result<Vec<Arc<Database>>, GeoError> {
            list.iter()
                .map(|path| Database::open(role, path).map(Arc::new))
                .collect()
        };
        Ok(Self::of(
            open_all(DatabaseRole::Geo, &paths.geo)?,
            open_all(DatabaseRole::Asn, &paths.asn)?,
            paths.clone(),
        ))
    }

    fn of(geo: Vec<Arc<Database>>, asn: Vec<Arc<Database>>, paths: GeoPaths) -> Self {
        // A set of no files answers nothing, at once.
        let slots = if geo.is_empty() && asn.is_empty() {
            0
        } else {
            ADDRESS_SLOTS
        };
        Self {
            geo,
            asn,
            paths,
            cache: FactsCache::with_slots(slots),
        }
    }

    /// Country, location and AS number of `ip`, without names: the
    /// request-path lookup. It never fails and never allocates; an address no
    /// database covers, or a record that cannot be decoded, gives `None`
    /// fields. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are looked up as
    /// the IPv4 address they carry.
    ///
    /// The answers for recent addresses are remembered (`crate::cache`, up
    /// to 16,384), so a client's next request from the same address reads
    /// no file, and each file's recently decoded records too, so a new
    /// address in a known city or network decodes nothing.
    pub fn lookup(&self, ip: IpAddr) -> GeoFacts {
        let ip = ip.to_canonical();
        self.cache.get(ip, || self.facts::<false>(ip))
    }

    /// Like [`lookup`](Self::lookup), and also the city and organisation
    /// names (one allocation each): for the CLI, logs and event details.
    pub fn describe(&self, ip: IpAddr) -> GeoFacts {
        self.facts::<true>(ip)
    }

    /// The files this set was opened from.
    pub fn paths(&self) -> &GeoPaths {
        &self.paths
    }

    /// Whether the set holds no database at all.
    pub fn is_empty(&self) -> bool {
        self.geo.is_empty() && self.asn.is_empty()
    }

    /// The open files, geo files first, in configured order.
    pub fn databases(&self) -> impl Iterator<Item = DatabaseInfo<'_>> {
        self.geo.iter().chain(&self.asn).map(|db| db.info())
    }

    /// A new set in which every file whose [`FileStamp`] changed is opened
    /// again and the others are shared with `self`, with the paths of the
    /// re-opened files; `None` when nothing changed. Fails, changing nothing,
    /// if any file is missing or a changed one cannot be opened.
    pub(crate) fn refreshed(&self) -> Result<Option<(Self, Vec<PathBuf>)>, GeoError> {
        let mut reopened = Vec::new();
        let mut refresh = |list: &[Arc<Database>]| -> Result<Vec<Arc<Database>>, GeoError> {
            list.iter()
                .map(|db| {
                    let stamp = fs::metadata(&db.path)
                        .map(|meta| FileStamp::of(&meta))
                        .map_err(|source| GeoError::Read {
                            role: db.role,
                            path: db.path.clone(),
                            source,
                        })?;
                    if stamp == db.stamp {
                        return Ok(Arc::clone(db));
                    }
                    let fresh = Database::open(db.role, &db.path)?;
                    reopened.push(db.path.clone());
                    Ok(Arc::new(fresh))
                })
                .collect()
        };
        let geo = refresh(&self.geo)?;
        let asn = refresh(&self.asn)?;
        if reopened.is_empty() {
            return Ok(None);
        }
        Ok(Some((Self::of(geo, asn, self.paths.clone()), reopened)))
    }

    fn facts<const NAMES: bool>(&self, ip: IpAddr) -> GeoFacts {
        let ip = ip.to_canonical();
        let geo = first_record::<NAMES>(&self.geo, ip).unwrap_or_default();
        let asn = first_record::<NAMES>(&self.asn, ip).unwrap_or_default();
        // AS number and organisation travel together, so a name is never
        // paired with another database's number.
        let network = if asn.asn.is_some() { &asn } else { &geo };
        GeoFacts {
            country: geo.country.or(asn.country),
            city: geo.city.or(asn.city).map(Arc::from),
            location: geo.location().or_else(|| asn.location()),
            asn: network.asn,
            org: network.org.map(Arc::from),
        }
    }
}

/// The record of the first file in `list` that has one for `ip`.
fn first_record<const NAMES: bool>(list: &[Arc<Database>], ip: IpAddr) -> Option<Raw<'_>> {
    list.iter().find_map(|db| db.record::<NAMES>(ip))
}

// === impl Database ===

impl Database {
    fn open(role: DatabaseRole, path: &Path) -> Result<Self, GeoError> {
        let read_error = |source| GeoError::Read {
            role,
            path: path.to_owned(),
            source,
        };
        let too_large = |len| GeoError::TooLarge {
            role,
            path: path.to_owned(),
            len,
        };
        let mut file = File::open(path).map_err(read_error)?;
        // Stamp the handle we read, not the path: if the file is replaced
        // while we read it, the next reload sees a different stamp.
        let meta = file.metadata().map_err(read_error)?;
        if meta.len() > MAX_DATABASE_BYTES {
            return Err(too_large(meta.len()));
        }
        let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        // The cap holds even if the file grows while we read it.
        let read = (&mut file)
            .take(MAX_DATABASE_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(read_error)?;
        if u64::try_from(read).unwrap_or(u64::MAX) > MAX_DATABASE_BYTES {
            return Err(too_large(u64::try_from(read).unwrap_or(u64::MAX)));
        }
        let reader = Reader::from_source(buf).map_err(|e| GeoError::Invalid {
            role,
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            role,
            path: path.to_owned(),
            reader,
            bytes: read,
            stamp: FileStamp::of(&meta),
            records: DirectMapped::with_slots(RECORD_SLOTS),
        })
    }

    /// The record for `ip`, or `None` when the file has none, cannot hold
    /// the address, or the record does not decode.
    #[inline]
    fn record<const NAMES: bool>(&self, ip: IpAddr) -> Option<Raw<'_>> {
        if ip.is_ipv6() && self.reader.metadata().ip_version == 4 {
            return None;
        }
        let found = self.reader.lookup(ip).ok()?;
        let decode = || Some(found.decode::<Record<'_, NAMES>>().ok()??.0);
        if NAMES {
            return decode();
        }
        // No data for the address: no offset, nothing to remember.
        let offset = found.offset()?;
        self.records
            .get(offset, || decode().map(Raw::without_names))
    }

    fn info(&self) -> DatabaseInfo<'_> {
        let meta = self.reader.metadata();
        DatabaseInfo {
            role: self.role,
            path: &self.path,
            database_type: &meta.database_type,
            build_epoch: meta.build_epoch,
            ip_version: meta.ip_version,
            bytes: self.bytes,
        }
    }
}

// === impl FileStamp ===

impl FileStamp {
    fn of(meta: &fs::Metadata) -> Self {
        #[cfg(unix)]
        let (dev, ino, ctime) = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino(), (meta.ctime(), meta.ctime_nsec()))
        };
        #[cfg(not(unix))]
        let (dev, ino, ctime) = (0, 0, (0, 0));
        Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            dev,
            ino,
            ctime,
        }
    }
}
