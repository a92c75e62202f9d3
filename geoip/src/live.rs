//! The live handle: the current database set, swapped whole on reload.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::databases::{GeoDatabases, GeoPaths};
use crate::error::GeoError;
use crate::facts::GeoFacts;

/// The geo databases a process uses now. Lookups read the current
/// [`GeoDatabases`] without locking; [`reload`](Self::reload) replaces it
/// whole. The type runs no thread and no timer: its owner (the proxy's
/// background task) decides when to call `reload`.
#[derive(Debug)]
pub struct GeoIp {
    current: ArcSwap<GeoDatabases>,
}

/// What a [`GeoIp::reload`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// No file changed on disk; the current set stays.
    Unchanged,
    /// Some files changed and a new set is in use.
    Reloaded {
        /// The files that were read again; the others are shared with the
        /// previous set.
        reopened: Vec<PathBuf>,
    },
}

// === impl GeoIp ===

impl GeoIp {
    /// Opens the files of `paths` (see [`GeoDatabases::open`]).
    pub fn open(paths: &GeoPaths) -> Result<Self, GeoError> {
        GeoDatabases::open(paths).map(Self::new)
    }

    /// Starts from a set that is already open.
    pub fn new(databases: GeoDatabases) -> Self {
        Self {
            current: ArcSwap::from_pointee(databases),
        }
    }

    /// [`GeoDatabases::lookup`] on the current set: country, location and
    /// AS number, no names, no allocation.
    pub fn lookup(&self, ip: IpAddr) -> GeoFacts {
        self.current.load().lookup(ip)
    }

    /// [`GeoDatabases::describe`] on the current set: also city and
    /// organisation names.
    pub fn describe(&self, ip: IpAddr) -> GeoFacts {
        self.current.load().describe(ip)
    }

    /// The current set. A request that makes several lookups takes one
    /// snapshot so that a reload cannot change the answers half-way.
    pub fn snapshot(&self) -> Arc<GeoDatabases> {
        self.current.load_full()
    }

    /// Checks every file for a change on disk (inode, length, mtime, ctime)
    /// and, if any changed, opens the changed ones and swaps in a new set.
    ///
    /// On error — a file missing, unreadable or corrupt — the current set
    /// stays in use and the error names the file; the next call tries again.
    /// Lookups running during a reload finish on the set they started with.
    /// Concurrent calls are safe but pointless; one caller should own
    /// reloading.
    pub fn reload(&self) -> Result<ReloadOutcome, GeoError> {
        let current = self.current.load_full();
        match current.refreshed()? {
            None => Ok(ReloadOutcome::Unchanged),
            Some((fresh, reopened)) => {
                self.current.store(Arc::new(fresh));
                Ok(ReloadOutcome::Reloaded { reopened })
            }
        }
    }
}
