//! Small `.mmdb` files built from a readable list, so that tests never need a
//! downloaded database.
//!
//! ```
//! use vigil_geoip::testdb::{Layout, TestDb, TestRecord};
//!
//! let bytes = TestDb::new(Layout::GeoLite2)
//!     .network(
//!         "81.2.69.0/24",
//!         TestRecord::new().country("GB").city("London").location(51.5142, -0.0931).accuracy_km(10),
//!     )
//!     .network("2001:db8::/32", TestRecord::new().country("DE").asn(3320).org("Deutsche Telekom AG"))
//!     .build()
//!     .unwrap();
//! assert!(bytes.len() > 100);
//! ```
//!
//! The writer is our own rather than the `maxminddb-writer` crate (0.1.3):
//! that crate writes metadata the reader rejects unless every field is set
//! by hand (format major version 0), puts IPv4 networks of an IPv6 database
//! at the top of the tree (`1.2.0.0/16` lands at `102::/16`) instead of
//! under `::/96`, lets a shorter network inserted after a longer one erase
//! it, and brings a second `thiserror`. The format is small — a binary trie,
//! 16 zero bytes, a data section, a metadata map — and this file writes only
//! the types the layouts use. It has no dependencies, so the module is
//! always compiled and other crates' tests use it without a feature.
//!
//! Format: <https://maxmind.github.io/MaxMind-DB/>.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

/// The field names a database uses. See the crate docs for the full list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// MaxMind GeoLite2/GeoIP2 (also DB-IP's Lite `.mmdb` files):
    /// `country.iso_code`, `city.names.en`, `location.{latitude, longitude,
    /// accuracy_radius}` (doubles, `uint16`), `autonomous_system_number`
    /// (`uint32`), `autonomous_system_organization`.
    GeoLite2,
    /// The ip-location-db packages: top-level `country_code`, `city`,
    /// `latitude`/`longitude` (32-bit floats), `state1`, `state2`,
    /// `postcode`, `timezone` (empty strings when unknown),
    /// `autonomous_system_number`, `autonomous_system_organization`.
    IpLocationDb,
}

/// What the database says about one network. Unset fields are left out of
/// the record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestRecord {
    /// Country code as written to the file (not validated: tests may write
    /// bad ones).
    pub country: Option<String>,
    /// City name.
    pub city: Option<String>,
    /// Latitude and longitude in degrees.
    pub location: Option<(f64, f64)>,
    /// Accuracy radius in km; only the GeoLite2 layout has the field.
    pub accuracy_km: Option<u16>,
    /// Autonomous system number.
    pub asn: Option<u32>,
    /// Autonomous system organisation.
    pub org: Option<String>,
}

/// A database under construction: a layout and a list of networks.
#[derive(Debug, Clone)]
pub struct TestDb {
    layout: Layout,
    ip_version: u16,
    pointers: bool,
    database_type: Option<String>,
    build_epoch: u64,
    networks: Vec<(String, TestRecord)>,
}

/// Why a [`TestDb`] could not be built or written.
#[derive(Debug, thiserror::Error)]
pub enum TestDbError {
    /// A network is not `address/prefix` or a bare address.
    #[error("{0:?} is not a network (address/prefix) or an address")]
    BadNetwork(String),
    /// An IPv6 network in an IPv4-only database.
    #[error("{0} is IPv6 but the database is IPv4-only")]
    Ipv6InIpv4Database(String),
    /// A string or the data section exceeds what the format can address.
    #[error("database too large for the MaxMind DB format")]
    TooLarge,
    /// Writing the file failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A data-section value: only the types the layouts use.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Str(String),
    Double(f64),
    Float(f32),
    U16(u16),
    U32(u32),
    U64(u64),
    Map(Vec<(&'static str, Value)>),
    Array(Vec<Value>),
}

/// One child pointer of a search-tree node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Empty,
    Node(usize),
    Data(usize),
}

const METADATA_MARKER: &[u8] = b"\xAB\xCD\xEFMaxMind.com";

// === impl TestRecord ===

impl TestRecord {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the country code.
    pub fn country(mut self, code: &str) -> Self {
        self.country = Some(code.to_owned());
        self
    }

    /// Sets the city name.
    pub fn city(mut self, name: &str) -> Self {
        self.city = Some(name.to_owned());
        self
    }

    /// Sets the coordinates, in degrees.
    pub fn location(mut self, lat: f64, lon: f64) -> Self {
        self.location = Some((lat, lon));
        self
    }

    /// Sets the accuracy radius, in km.
    pub fn accuracy_km(mut self, km: u16) -> Self {
        self.accuracy_km = Some(km);
        self
    }

    /// Sets the AS number.
    pub fn asn(mut self, asn: u32) -> Self {
        self.asn = Some(asn);
        self
    }

    /// Sets the AS organisation.
    pub fn org(mut self, org: &str) -> Self {
        self.org = Some(org.to_owned());
        self
    }

    fn is_city(&self) -> bool {
        self.city.is_some() || self.location.is_some()
    }

    fn to_value(&self, layout: Layout) -> Value {
        let text = |s: &Option<String>| Value::Str(s.clone().unwrap_or_default());
        let mut fields = Vec::new();
        match layout {
            Layout::GeoLite2 => {
                if let Some(city) = &self.city {
                    fields.push(("city", names_map(city, 2_643_743)));
                }
                if let Some(code) = &self.country {
                    // Real files carry more per country; a few extra keys keep
                    // the reader's skipping honest.
                    let country = Value::Map(vec![
                        ("geoname_id", Value::U32(2_635_167)),
                        ("iso_code", Value::Str(code.clone())),
                        ("names", Value::Map(vec![("en", Value::Str(code.clone()))])),
                    ]);
                    fields.push(("continent", names_map("Europe", 6_255_148)));
                    fields.push(("country", country.clone()));
                    fields.push(("registered_country", country));
                }
                if let Some((lat, lon)) = self.location {
                    let mut location = Vec::new();
                    if let Some(km) = self.accuracy_km {
                        location.push(("accuracy_radius", Value::U16(km)));
                    }
                    location.push(("latitude", Value::Double(lat)));
                    location.push(("longitude", Value::Double(lon)));
                    location.push(("time_zone", Value::Str("Europe/London".into())));
                    fields.push(("location", Value::Map(location)));
                }
            }
            Layout::IpLocationDb => {
                if self.is_city() {
                    fields.push(("city", text(&self.city)));
                    fields.push(("postcode", Value::Str(String::new())));
                    fields.push(("timezone", Value::Str(String::new())));
                    fields.push(("country_code", text(&self.country)));
                    fields.push(("state1", Value::Str(String::new())));
                    fields.push(("state2", Value::Str(String::new())));
                    if let Some((lat, lon)) = self.location {
                        // The producer writes float32; the narrowing is the point.
                        #[allow(clippy::cast_possible_truncation, reason = "f32 is the layout")]
                        let (lat, lon) = (lat as f32, lon as f32);
                        fields.push(("latitude", Value::Float(lat)));
                        fields.push(("longitude", Value::Float(lon)));
                    }
                } else if let Some(code) = &self.country {
                    fields.push(("country_code", Value::Str(code.clone())));
                }
            }
        }
        if self.asn.is_some() || self.org.is_some() {
            fields.push((
                "autonomous_system_number",
                Value::U32(self.asn.unwrap_or(0)),
            ));
            fields.push(("autonomous_system_organization", text(&self.org)));
        }
        Value::Map(fields)
    }
}

fn names_map(name: &str, geoname_id: u32) -> Value {
    Value::Map(vec![
        ("geoname_id", Value::U32(geoname_id)),
        (
            "names",
            Value::Map(vec![
                ("de", Value::Str(name.to_owned())),
                ("en", Value::Str(name.to_owned())),
                ("ja", Value::Str(name.to_owned())),
            ]),
        ),
    ])
}

// === impl TestDb ===

impl TestDb {
    /// An empty IPv6 database (which also holds IPv4 networks, under
    /// `::/96`) in `layout`.
    pub fn new(layout: Layout) -> Self {
        Self {
            layout,
            ip_version: 6,
            pointers: true,
            database_type: None,
            build_epoch: 1_700_000_000,
            networks: Vec::new(),
        }
    }

    /// Makes the database IPv4-only (`ip_version` 4), as ip-location-db's
    /// `*-ipv4.mmdb` files are.
    pub fn ipv4_only(mut self) -> Self {
        self.ip_version = 4;
        self
    }

    /// Writes every value inline instead of sharing strings and maps
    /// through pointers. Real files share them (a GeoLite2 record is mostly
    /// pointers), and so does `TestDb` by default; this is for testing that
    /// readers cope with both.
    pub fn without_pointers(mut self) -> Self {
        self.pointers = false;
        self
    }

    /// Sets the metadata `database_type`. By default it follows the layout
    /// and contents: `GeoLite2-City`/`-Country`/`-ASN`, or `city ipv4`,
    /// `country ipv6`, `asn ipv4`, ... for ip-location-db.
    pub fn database_type(mut self, database_type: &str) -> Self {
        self.database_type = Some(database_type.to_owned());
        self
    }

    /// Sets the metadata `build_epoch`, in seconds since the Unix epoch.
    pub fn build_epoch(mut self, secs: u64) -> Self {
        self.build_epoch = secs;
        self
    }

    /// Adds a network, `"a.b.c.d/n"`, `"x::/n"` or a bare address. A more
    /// specific network wins over a less specific one whatever the order;
    /// between equal networks the last one added wins. Host bits are ignored.
    pub fn network(mut self, network: &str, record: TestRecord) -> Self {
        self.networks.push((network.to_owned(), record));
        self
    }

    /// Adds a network; the `&mut` form of [`network`](Self::network), for
    /// loops.
    pub fn push(&mut self, network: &str, record: TestRecord) {
        self.networks.push((network.to_owned(), record));
    }

    /// The database file's bytes.
    pub fn build(&self) -> Result<Vec<u8>, TestDbError> {
        let networks = self
            .networks
            .iter()
            .map(|(text, record)| Ok((self.tree_path(text)?, record.to_value(self.layout))))
            .collect::<Result<Vec<_>, TestDbError>>()?;
        assemble(networks, self.pointers, |node_count, record_size| {
            self.metadata(node_count, record_size)
        })
    }

    /// Builds the database and writes it to `path`.
    pub fn write(&self, path: &Path) -> Result<(), TestDbError> {
        let bytes = self.build()?;
        std::fs::write(path, bytes).map_err(|source| TestDbError::Write {
            path: path.to_owned(),
            source,
        })
    }

    /// The network as a 128-bit tree key (bits from the top) and the number
    /// of bits that name it. IPv4 networks sit under `::/96` in an IPv6
    /// tree, where readers look for them.
    fn tree_path(&self, text: &str) -> Result<(u128, u32), TestDbError> {
        let bad = || TestDbError::BadNetwork(text.to_owned());
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u32 = match prefix {
            Some(p) => p.trim().parse().map_err(|_| bad())?,
            None => width,
        };
        if prefix > width {
            return Err(bad());
        }
        let (key, bits) = match addr {
            IpAddr::V4(v4) if self.ip_version == 4 => (u128::from(u32::from(v4)) << 96, prefix),
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), 96 + prefix),
            IpAddr::V6(_) if self.ip_version == 4 => {
                return Err(TestDbError::Ipv6InIpv4Database(text.to_owned()));
            }
            IpAddr::V6(v6) => (u128::from(v6), prefix),
        };
        let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
        Ok((key & mask, bits))
    }

    fn metadata(&self, node_count: u32, record_size: u16) -> Value {
        let database_type = self.database_type.clone().unwrap_or_else(|| {
            let records = || self.networks.iter().map(|(_, r)| r);
            let kind = if records().any(TestRecord::is_city) {
                "city"
            } else if records().any(|r| r.country.is_some()) {
                "country"
            } else {
                "asn"
            };
            match self.layout {
                Layout::GeoLite2 => match kind {
                    "city" => "GeoLite2-City".into(),
                    "country" => "GeoLite2-Country".into(),
                    _ => "GeoLite2-ASN".into(),
                },
                Layout::IpLocationDb => format!("{kind} ipv{}", self.ip_version),
            }
        });
        Value::Map(vec![
            ("binary_format_major_version", Value::U16(2)),
            ("binary_format_minor_version", Value::U16(0)),
            ("build_epoch", Value::U64(self.build_epoch)),
            ("database_type", Value::Str(database_type)),
            (
                "description",
                Value::Map(vec![("en", Value::Str("vigil-geoip test database".into()))]),
            ),
            ("ip_version", Value::U16(self.ip_version)),
            ("languages", Value::Array(vec![Value::Str("en".into())])),
            ("node_count", Value::U32(node_count)),
            ("record_size", Value::U16(record_size)),
        ])
    }
}

/// Lays out a database: the search tree for `networks` (tree key, bit
/// count, record), the data section with identical records stored once, and
/// the metadata `metadata(node_count, record_size)` gives.
fn assemble(
    mut networks: Vec<((u128, u32), Value)>,
    pointers: bool,
    metadata: impl FnOnce(u32, u16) -> Value,
) -> Result<Vec<u8>, TestDbError> {
    // Shorter prefixes first, so that a longer one splits their leaf instead
    // of being overwritten; the sort is stable, so later duplicates win.
    networks.sort_by_key(|((_, bits), _)| *bits);

    let mut section = DataSection {
        data: Vec::new(),
        stored: HashMap::new(),
        pointers,
    };
    let mut tree = vec![[Slot::Empty; 2]];
    for ((key, bits), value) in networks {
        let offset = section.store(&value)?;
        insert(&mut tree, key, bits, offset);
    }
    let data = section.data;

    let node_count = tree.len();
    let largest = node_count + 16 + data.len();
    let record_size: u16 = match largest {
        n if n < 1 << 24 => 24,
        n if n < 1 << 28 => 28,
        n if u32::try_from(n).is_ok() => 32,
        _ => return Err(TestDbError::TooLarge),
    };
    let mut out = Vec::with_capacity(node_count * 8 + data.len() + 512);
    let pointer = |slot: Slot| match slot {
        Slot::Empty => node_count,
        Slot::Node(n) => n,
        Slot::Data(offset) => node_count + 16 + offset,
    };
    for [left, right] in &tree {
        write_node(&mut out, record_size, pointer(*left), pointer(*right));
    }
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(METADATA_MARKER);
    let node_count = u32::try_from(node_count).map_err(|_| TestDbError::TooLarge)?;
    encode(&metadata(node_count, record_size), &mut out)?;
    Ok(out)
}

/// An IPv6 database in which every address maps to `value`: for testing how
/// readers cope with records no layout writes.
#[cfg(test)]
pub(crate) fn single_record_db(value: Value, pointers: bool) -> Vec<u8> {
    let db = TestDb::new(Layout::GeoLite2);
    let bytes = assemble(vec![((0, 0), value)], pointers, |n, size| {
        db.metadata(n, size)
    });
    bytes.unwrap_or_default()
}

/// Points the path of `bits` bits of `key` at data `offset`, splitting any
/// shorter network's leaf on the way so that its other half keeps its data.
fn insert(tree: &mut Vec<[Slot; 2]>, key: u128, bits: u32, offset: usize) {
    let bit = |i: u32| usize::from((key >> (127 - i)) & 1 == 1);
    if bits == 0 {
        tree[0] = [Slot::Data(offset); 2];
        return;
    }
    let mut node = 0;
    for i in 0..bits - 1 {
        node = match tree[node][bit(i)] {
            Slot::Node(next) => next,
            inherited => {
                let next = tree.len();
                tree.push([inherited; 2]);
                tree[node][bit(i)] = Slot::Node(next);
                next
            }
        };
    }
    tree[node][bit(bits - 1)] = Slot::Data(offset);
}

fn write_node(out: &mut Vec<u8>, record_size: u16, left: usize, right: usize) {
    // Every pointer was checked against the record size's range in `build`.
    let (l, r) = (left.to_be_bytes(), right.to_be_bytes());
    let n = l.len();
    match record_size {
        24 => {
            out.extend_from_slice(&l[n - 3..]);
            out.extend_from_slice(&r[n - 3..]);
        }
        28 => {
            out.extend_from_slice(&l[n - 3..]);
            out.push(((l[n - 4] & 0x0F) << 4) | (r[n - 4] & 0x0F));
            out.extend_from_slice(&r[n - 3..]);
        }
        _ => {
            out.extend_from_slice(&l[n - 4..]);
            out.extend_from_slice(&r[n - 4..]);
        }
    }
}

/// The data section being written: each distinct value is stored once, and
/// with `pointers` strings and containers inside a value are stored on their
/// own and referred to by pointer, as MaxMind's writer does.
struct DataSection {
    data: Vec<u8>,
    stored: HashMap<Vec<u8>, usize>,
    pointers: bool,
}

impl DataSection {
    /// Stores `value` (once) and returns its offset in the section.
    fn store(&mut self, value: &Value) -> Result<usize, TestDbError> {
        let mut encoded = Vec::new();
        self.encode(value, &mut encoded)?;
        let data = &mut self.data;
        Ok(*self.stored.entry(encoded).or_insert_with_key(|bytes| {
            let at = data.len();
            data.extend_from_slice(bytes);
            at
        }))
    }

    fn encode(&mut self, value: &Value, out: &mut Vec<u8>) -> Result<(), TestDbError> {
        match value {
            Value::Map(fields) => {
                control(out, 7, fields.len())?;
                for (key, value) in fields {
                    self.child(&Value::Str((*key).to_owned()), out)?;
                    self.child(value, out)?;
                }
                Ok(())
            }
            Value::Array(items) => {
                control(out, 11, items.len())?;
                items.iter().try_for_each(|item| self.child(item, out))
            }
            scalar => encode(scalar, out),
        }
    }

    /// A value inside another: behind a pointer if it is worth sharing.
    fn child(&mut self, value: &Value, out: &mut Vec<u8>) -> Result<(), TestDbError> {
        let shared = match value {
            Value::Str(s) => s.len() > 2,
            Value::Map(_) | Value::Array(_) => true,
            _ => false,
        };
        if self.pointers && shared {
            let offset = self.store(value)?;
            pointer(out, offset)
        } else {
            self.encode(value, out)
        }
    }
}

/// A pointer to `offset` in the data section, in the shortest of the four
/// widths: 11, 19 and 27 bits (each range biased past the previous one) or 32.
fn pointer(out: &mut Vec<u8>, offset: usize) -> Result<(), TestDbError> {
    let offset = u32::try_from(offset).map_err(|_| TestDbError::TooLarge)?;
    let (size_bits, value): (u8, u32) = match offset {
        0..2_048 => (0, offset),
        2_048..526_336 => (1, offset - 2_048),
        526_336..134_744_064 => (2, offset - 526_336),
        _ => (3, offset),
    };
    let bytes = value.to_be_bytes();
    // Sizes 0-2 keep the value's top three bits in the control byte and
    // 1-3 bytes after it; size 3 puts all four bytes after it.
    let (top, rest) = match size_bits {
        3 => (0, &bytes[..]),
        s => (
            bytes[usize::from(2 - s)] & 0x07,
            &bytes[usize::from(3 - s)..],
        ),
    };
    out.push(0x20 | (size_bits << 3) | top);
    out.extend_from_slice(rest);
    Ok(())
}

/// Appends the data-section encoding of `value`.
fn encode(value: &Value, out: &mut Vec<u8>) -> Result<(), TestDbError> {
    match value {
        Value::Str(s) => {
            control(out, 2, s.len())?;
            out.extend_from_slice(s.as_bytes());
        }
        Value::Double(f) => {
            control(out, 3, 8)?;
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::U16(n) => unsigned(out, 5, &n.to_be_bytes())?,
        Value::U32(n) => unsigned(out, 6, &n.to_be_bytes())?,
        Value::Map(fields) => {
            control(out, 7, fields.len())?;
            for (key, value) in fields {
                control(out, 2, key.len())?;
                out.extend_from_slice(key.as_bytes());
                encode(value, out)?;
            }
        }
        Value::U64(n) => unsigned(out, 9, &n.to_be_bytes())?,
        Value::Array(items) => {
            control(out, 11, items.len())?;
            for item in items {
                encode(item, out)?;
            }
        }
        Value::Float(f) => {
            control(out, 15, 4)?;
            out.extend_from_slice(&f.to_be_bytes());
        }
    }
    Ok(())
}

/// An unsigned integer in as few big-endian bytes as it needs.
fn unsigned(out: &mut Vec<u8>, type_id: u8, be: &[u8]) -> Result<(), TestDbError> {
    let significant = &be[be.iter().take_while(|b| **b == 0).count()..];
    control(out, type_id, significant.len())?;
    out.extend_from_slice(significant);
    Ok(())
}

/// A control byte: type in the top 3 bits (7 + an extra byte for types above
/// 7), size in the low 5, with 1–3 extra size bytes above 28.
fn control(out: &mut Vec<u8>, type_id: u8, size: usize) -> Result<(), TestDbError> {
    let (size_bits, extra): (u8, Vec<u8>) = match size {
        0..=28 => (
            u8::try_from(size).map_err(|_| TestDbError::TooLarge)?,
            Vec::new(),
        ),
        29..=284 => (
            29,
            vec![u8::try_from(size - 29).map_err(|_| TestDbError::TooLarge)?],
        ),
        285..=65_820 => {
            let rest = u16::try_from(size - 285).map_err(|_| TestDbError::TooLarge)?;
            (30, rest.to_be_bytes().to_vec())
        }
        65_821..=16_843_036 => {
            let rest = u32::try_from(size - 65_821).map_err(|_| TestDbError::TooLarge)?;
            (31, rest.to_be_bytes()[1..].to_vec())
        }
        _ => return Err(TestDbError::TooLarge),
    };
    if type_id <= 7 {
        out.push((type_id << 5) | size_bits);
    } else {
        out.push(size_bits);
        out.push(type_id - 7);
    }
    out.extend_from_slice(&extra);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use maxminddb::Reader;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn number(reader: &Reader<Vec<u8>>, addr: &str) -> Option<u32> {
        #[derive(serde::Deserialize)]
        struct Asn {
            autonomous_system_number: u32,
        }
        let found = reader.lookup(ip(addr)).unwrap();
        found
            .decode::<Asn>()
            .unwrap()
            .map(|a| a.autonomous_system_number)
    }

    fn asn_db() -> TestDb {
        TestDb::new(Layout::GeoLite2)
            .network("10.0.0.0/8", TestRecord::new().asn(8))
            .network("10.1.2.0/24", TestRecord::new().asn(24))
            .network("10.1.0.0/16", TestRecord::new().asn(16))
            .network("2001:db8::/32", TestRecord::new().asn(32))
            .network("2001:db8:1::1", TestRecord::new().asn(128))
    }

    #[test]
    fn the_reader_accepts_and_verifies_what_we_write() {
        for db in [
            asn_db(),
            asn_db().build_epoch(0),
            TestDb::new(Layout::IpLocationDb),
        ] {
            let reader = Reader::from_source(db.build().unwrap()).unwrap();
            reader.verify().unwrap();
        }
    }

    #[test]
    fn longest_prefix_wins_whatever_the_insertion_order() {
        let reader = Reader::from_source(asn_db().build().unwrap()).unwrap();
        assert_eq!(number(&reader, "10.9.9.9"), Some(8));
        assert_eq!(number(&reader, "10.1.9.9"), Some(16));
        assert_eq!(number(&reader, "10.1.2.3"), Some(24));
        assert_eq!(number(&reader, "11.0.0.1"), None);
        assert_eq!(number(&reader, "2001:db8:1::1"), Some(128));
        assert_eq!(number(&reader, "2001:db8:1::2"), Some(32));
        assert_eq!(number(&reader, "2001:db9::1"), None);
        // IPv4 lives under ::/96, where the reader looks for it.
        assert_eq!(number(&reader, "::10.1.2.3"), Some(24));
        assert_eq!(reader.metadata().ip_version, 6);
        assert_eq!(reader.metadata().database_type, "GeoLite2-ASN");
    }

    #[test]
    fn ipv4_only_databases_reject_ipv6_networks() {
        let db = TestDb::new(Layout::IpLocationDb)
            .ipv4_only()
            .network("192.0.2.0/24", TestRecord::new().asn(64496));
        let reader = Reader::from_source(db.build().unwrap()).unwrap();
        assert_eq!(reader.metadata().ip_version, 4);
        assert_eq!(reader.metadata().database_type, "asn ipv4");
        assert_eq!(number(&reader, "192.0.2.1"), Some(64496));
        let err = db
            .network("2001:db8::/32", TestRecord::new())
            .build()
            .unwrap_err();
        assert!(matches!(err, TestDbError::Ipv6InIpv4Database(_)), "{err}");
    }

    #[test]
    fn bad_networks_are_named() {
        for bad in ["10.0.0.0/33", "nope/8", "10.0.0.0/x", "2001:db8::/129", ""] {
            let err = TestDb::new(Layout::GeoLite2)
                .network(bad, TestRecord::new())
                .build()
                .unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn whole_address_space_and_host_bits() {
        let db = TestDb::new(Layout::GeoLite2)
            .network("::/0", TestRecord::new().asn(1))
            .network("198.51.100.77/24", TestRecord::new().asn(2));
        let reader = Reader::from_source(db.build().unwrap()).unwrap();
        assert_eq!(number(&reader, "2001:db8::1"), Some(1));
        assert_eq!(number(&reader, "198.51.100.1"), Some(2));
        assert_eq!(number(&reader, "192.0.2.1"), Some(1));
    }

    #[test]
    fn nodes_are_laid_out_as_the_spec_says() {
        let node = |size| {
            let mut out = Vec::new();
            write_node(&mut out, size, 0x0123_4567, 0x0ABC_DEF1);
            out
        };
        assert_eq!(node(24), [0x23, 0x45, 0x67, 0xBC, 0xDE, 0xF1]);
        // 28 bits: the middle byte holds the left's top nibble, then the right's.
        assert_eq!(node(28), [0x23, 0x45, 0x67, 0x1A, 0xBC, 0xDE, 0xF1]);
        assert_eq!(node(32), [0x01, 0x23, 0x45, 0x67, 0x0A, 0xBC, 0xDE, 0xF1]);
    }

    #[test]
    fn large_databases_switch_to_28_bit_records() {
        // 60 000 distinct records of ~330 bytes put data pointers past 2^24,
        // and the pointers inside records into the 27-bit width.
        let mut db = TestDb::new(Layout::GeoLite2);
        let padding = "x".repeat(300);
        for i in 0..60_000u32 {
            let [_, a, b, c] = i.to_be_bytes();
            let org = format!("{i} {padding}");
            db.push(
                &format!("10.{a}.{b}.{c}"),
                TestRecord::new().asn(i + 1).org(&org),
            );
        }
        let reader = Reader::from_source(db.build().unwrap()).unwrap();
        assert_eq!(reader.metadata().record_size, 28);
        assert_eq!(number(&reader, "10.0.234.95"), Some(60_000));
        assert_eq!(number(&reader, "10.0.0.0"), Some(1));
    }

    #[test]
    fn pointers_use_the_shortest_width() {
        for (offset, expected) in [
            (0, vec![0x20, 0x00]),
            (2_047, vec![0x27, 0xFF]),
            (2_048, vec![0x28, 0x00, 0x00]),
            (526_335, vec![0x2F, 0xFF, 0xFF]),
            (526_336, vec![0x30, 0x00, 0x00, 0x00]),
            (134_744_063, vec![0x37, 0xFF, 0xFF, 0xFF]),
            (134_744_064, vec![0x38, 0x08, 0x08, 0x08, 0x00]),
        ] {
            let mut out = Vec::new();
            pointer(&mut out, offset).unwrap();
            assert_eq!(out, expected, "{offset}");
        }
    }

    #[test]
    fn sizes_encode_in_the_right_width() {
        for (size, expected) in [
            (0, vec![0x40]),
            (28, vec![0x5C]),
            (29, vec![0x5D, 0]),
            (284, vec![0x5D, 255]),
            (285, vec![0x5E, 0, 0]),
            (65_821, vec![0x5F, 0, 0, 0]),
        ] {
            let mut out = Vec::new();
            control(&mut out, 2, size).unwrap();
            assert_eq!(out, expected, "{size}");
        }
        let mut out = Vec::new();
        control(&mut out, 11, 1).unwrap();
        assert_eq!(out, vec![0x01, 0x04], "extended type");
        assert!(matches!(
            control(&mut Vec::new(), 2, 16_843_037),
            Err(TestDbError::TooLarge)
        ));
    }
}
