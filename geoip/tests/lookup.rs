//! Lookups against databases built here, in every supported layout.

// Test code: a failed unwrap is a failed test. clippy.toml allows these in
// #[test] functions; this also covers the helpers here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use vigil_geoip::testdb::{Layout, TestDb, TestRecord};
use vigil_geoip::{
    ASSUMED_ACCURACY_KM, CountryCode, DatabaseRole, GeoDatabases, GeoError, GeoFacts, GeoPaths,
    Location,
};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn cc(code: &str) -> Option<CountryCode> {
    CountryCode::parse(code)
}

fn write(dir: &Path, name: &str, db: &TestDb) -> PathBuf {
    let path = dir.join(name);
    db.write(&path).unwrap();
    path
}

/// GeoLite2-City and GeoLite2-ASN with a London network, a Berlin IPv6
/// network and a Paris /16 with a more specific Lyon /24 inside it.
fn geolite2(dir: &Path) -> GeoPaths {
    let city = TestDb::new(Layout::GeoLite2)
        .network(
            "81.2.69.0/24",
            TestRecord::new()
                .country("GB")
                .city("London")
                .location(51.5142, -0.0931)
                .accuracy_km(10),
        )
        .network(
            "2a02:8100::/32",
            TestRecord::new()
                .country("DE")
                .city("Berlin")
                .location(52.52, 13.405)
                .accuracy_km(50),
        )
        .network(
            "90.0.0.0/16",
            TestRecord::new()
                .country("FR")
                .city("Paris")
                .location(48.8566, 2.3522)
                .accuracy_km(20),
        )
        .network(
            "90.0.7.0/24",
            TestRecord::new()
                .country("FR")
                .city("Lyon")
                .location(45.764, 4.8357)
                .accuracy_km(5),
        );
    let asn = TestDb::new(Layout::GeoLite2)
        .network(
            "81.2.64.0/20",
            TestRecord::new().asn(20712).org("Andrews & Arnold Ltd"),
        )
        .network(
            "2a02:8100::/28",
            TestRecord::new().asn(3209).org("Vodafone GmbH"),
        );
    GeoPaths::new()
        .with_geo(write(dir, "GeoLite2-City.mmdb", &city))
        .with_asn(write(dir, "GeoLite2-ASN.mmdb", &asn))
}

#[test]
fn geolite2_city_and_asn_together() {
    let dir = tempfile::tempdir().unwrap();
    let dbs = GeoDatabases::open(&geolite2(dir.path())).unwrap();

    let london = dbs.describe(ip("81.2.69.160"));
    assert_eq!(
        london,
        GeoFacts {
            country: cc("GB"),
            city: Some("London".into()),
            location: Location::new(51.5142, -0.0931, 10),
            asn: Some(20712),
            org: Some("Andrews & Arnold Ltd".into()),
        }
    );
    // The request-path lookup is the same without the names.
    assert_eq!(
        dbs.lookup(ip("81.2.69.160")),
        GeoFacts {
            city: None,
            org: None,
            ..london
        }
    );

    // Longest prefix wins.
    let lyon = dbs.describe(ip("90.0.7.1"));
    assert_eq!(lyon.city.as_deref(), Some("Lyon"));
    assert_eq!(lyon.location.map(|l| l.accuracy_km), Some(5));
    assert_eq!(dbs.describe(ip("90.0.8.1")).city.as_deref(), Some("Paris"));
    // Covered by the city database only.
    assert_eq!(dbs.lookup(ip("90.0.8.1")).asn, None);
    // Covered by the ASN database only.
    let asn_only = dbs.lookup(ip("81.2.64.1"));
    assert_eq!((asn_only.country, asn_only.asn), (None, Some(20712)));
}

/// `lookup` remembers recent answers per address (16,384 slots): asked
/// again — straight away, after thousands of other addresses took slots,
/// and in its IPv4-mapped IPv6 form — it still gives what the files say.
#[test]
fn remembered_answers_are_the_files_answers() {
    let dir = tempfile::tempdir().unwrap();
    let dbs = GeoDatabases::open(&geolite2(dir.path())).unwrap();
    let files = |text: &str| GeoFacts {
        city: None,
        org: None,
        ..dbs.describe(ip(text))
    };
    let probes = [
        "81.2.69.160",
        "81.2.64.1",
        "90.0.7.1",
        "90.0.8.1",
        "2a02:8100::1",
        "192.0.2.1",
    ];
    for _ in 0..2 {
        for probe in probes {
            assert_eq!(dbs.lookup(ip(probe)), files(probe), "{probe}");
        }
        // 20,000 addresses across the networks, each asked twice.
        for n in 0u32..20_000 {
            let text = format!("90.0.{}.{}", (n >> 8) & 0xff, n & 0xff);
            let first = dbs.lookup(ip(&text));
            assert_eq!(dbs.lookup(ip(&text)), first);
            assert_eq!(first, files(&text), "{text}");
        }
    }
    assert_eq!(dbs.lookup(ip("::ffff:81.2.69.160")), files("81.2.69.160"));
}

/// Each file also remembers its decoded records by their place in the
/// file (4,096 slots), and networks share records: 600 networks point at 12
/// shared city records and 300 more at records of their own, over an ASN
/// file whose 40 records cover only some of them, with a city file that
/// also carries AS numbers for a few. Addresses asked in any order (far
/// more of them than the address table holds; records that meet in a slot
/// take turns) each get their own network's facts, never a neighbour's or
/// a shared record's for a network that has its own. The tables' slots
/// come from per-process hash keys, so a failing order is not replayed by
/// a later run: the failure message has it.
#[test]
fn remembered_records_are_each_networks_own() {
    let dir = tempfile::tempdir().unwrap();
    let shared = |k: u32| {
        TestRecord::new()
            .country(["GB", "FR", "DE"][(k % 3) as usize])
            .city(&format!("Shared {k}"))
            .location(40.0 + f64::from(k), 2.0 * f64::from(k))
            .accuracy_km(10 + u16::try_from(k).unwrap())
    };
    let own = |n: u32| {
        let mut r = TestRecord::new()
            .country("JP")
            .city(&format!("Own {n}"))
            .location(-30.0 + f64::from(n) * 0.1, 100.0 + f64::from(n) * 0.1)
            .accuracy_km(u16::try_from(n % 500).unwrap() + 1);
        if n.is_multiple_of(7) {
            r = r.asn(4_200_000_000 + n).org(&format!("City-carried {n}"));
        }
        r
    };
    let net = |n: u32| format!("10.{}.{}.0/24", n >> 8, n & 0xff);
    let mut city = TestDb::new(Layout::GeoLite2);
    let mut asn = TestDb::new(Layout::GeoLite2);
    for n in 0..900u32 {
        city.push(&net(n), if n < 600 { shared(n % 12) } else { own(n) });
        if !n.is_multiple_of(3) {
            asn.push(
                &net(n),
                TestRecord::new()
                    .asn(64_512 + n % 40)
                    .org(&format!("Org {}", n % 40)),
            );
        }
    }
    let dbs = GeoDatabases::open(
        &GeoPaths::new()
            .with_geo(write(dir.path(), "city.mmdb", &city))
            .with_asn(write(dir.path(), "asn.mmdb", &asn)),
    )
    .unwrap();
    proptest::proptest!(|(order in proptest::collection::vec((0u32..920, 0u8..=255), 1..3000))| {
        for (n, host) in order {
            let text = format!("10.{}.{}.{host}", n >> 8, n & 0xff);
            let files = GeoFacts { city: None, org: None, ..dbs.describe(ip(&text)) };
            proptest::prop_assert_eq!(dbs.lookup(ip(&text)), files, "{}", text);
        }
    });
}

#[test]
fn ipv6_and_ipv4_mapped_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let dbs = GeoDatabases::open(&geolite2(dir.path())).unwrap();

    let berlin = dbs.describe(ip("2a02:8100:1234::1"));
    assert_eq!(berlin.country, cc("DE"));
    assert_eq!(berlin.city.as_deref(), Some("Berlin"));
    assert_eq!(berlin.location, Location::new(52.52, 13.405, 50));
    assert_eq!(
        (berlin.asn, berlin.org.as_deref()),
        (Some(3209), Some("Vodafone GmbH"))
    );
    // In the /28 of the AS but outside the /32 of the city.
    let outside = dbs.lookup(ip("2a02:8101::1"));
    assert_eq!((outside.country, outside.asn), (None, Some(3209)));

    // The test database has no ::ffff:0:0/96 alias (as real GeoLite2 files
    // do); the lookup unwraps the mapped address itself.
    assert_eq!(
        dbs.describe(ip("::ffff:81.2.69.160")),
        dbs.describe(ip("81.2.69.160"))
    );
    assert_eq!(dbs.lookup(ip("::ffff:81.2.69.160")).country, cc("GB"));
}

#[test]
fn inline_and_shared_values_read_the_same() {
    // Real files share strings and maps through pointers; test databases do
    // too unless told not to. The reader must not care.
    let dir = tempfile::tempdir().unwrap();
    let record = TestRecord::new()
        .country("JP")
        .city("Tokyo")
        .location(35.6762, 139.6503)
        .accuracy_km(20)
        .asn(2516)
        .org("KDDI CORPORATION");
    for layout in [Layout::GeoLite2, Layout::IpLocationDb] {
        let facts: Vec<GeoFacts> = [true, false]
            .into_iter()
            .map(|pointers| {
                let mut db = TestDb::new(layout)
                    .network("1.0.16.0/20", record.clone())
                    .network("1.0.32.0/20", record.clone().city("Osaka"));
                if !pointers {
                    db = db.without_pointers();
                }
                let name = format!("{layout:?}-{pointers}.mmdb");
                let paths = GeoPaths::new().with_geo(write(dir.path(), &name, &db));
                GeoDatabases::open(&paths).unwrap().describe(ip("1.0.16.1"))
            })
            .collect();
        assert_eq!(facts[0], facts[1], "{layout:?}");
        assert_eq!(facts[0].city.as_deref(), Some("Tokyo"), "{layout:?}");
        assert_eq!(facts[0].asn, Some(2516), "{layout:?}");
    }
}

#[test]
fn addresses_in_no_database_have_no_facts() {
    let dir = tempfile::tempdir().unwrap();
    let dbs = GeoDatabases::open(&geolite2(dir.path())).unwrap();
    for addr in [
        "192.0.2.1",
        "10.0.0.1",
        "2001:db8::1",
        "::1",
        "0.0.0.0",
        "::",
    ] {
        assert_eq!(dbs.describe(ip(addr)), GeoFacts::default(), "{addr}");
    }
}

#[test]
fn ip_location_db_split_files() {
    let dir = tempfile::tempdir().unwrap();
    let city = |db: TestDb| {
        db.network(
            "81.2.69.0/24",
            TestRecord::new()
                .country("GB")
                .city("London")
                .location(51.5142, -0.0931),
        )
        // A country-level record: empty city, no coordinates.
        .network("5.5.0.0/16", TestRecord::new().country("SE"))
    };
    let city_v4 = city(TestDb::new(Layout::IpLocationDb).ipv4_only());
    let city_v6 = TestDb::new(Layout::IpLocationDb).network(
        "2a02:8100::/32",
        TestRecord::new()
            .country("DE")
            .city("Berlin")
            .location(52.52, 13.405),
    );
    let asn_v4 = TestDb::new(Layout::IpLocationDb)
        .ipv4_only()
        .network(
            "81.2.64.0/20",
            TestRecord::new().asn(20712).org("Andrews & Arnold Ltd"),
        )
        // The producer writes AS 0 and an empty name when it has none.
        .network("5.5.0.0/16", TestRecord::new().org(""));
    let asn_v6 = TestDb::new(Layout::IpLocationDb).network(
        "2a02:8100::/28",
        TestRecord::new().asn(3209).org("Vodafone GmbH"),
    );
    let paths = GeoPaths::new()
        .with_geo(write(dir.path(), "dbip-city-ipv4.mmdb", &city_v4))
        .with_geo(write(dir.path(), "dbip-city-ipv6.mmdb", &city_v6))
        .with_asn(write(dir.path(), "asn-ipv4.mmdb", &asn_v4))
        .with_asn(write(dir.path(), "asn-ipv6.mmdb", &asn_v6));
    let dbs = GeoDatabases::open(&paths).unwrap();

    let london = dbs.describe(ip("81.2.69.160"));
    assert_eq!(london.country, cc("GB"));
    assert_eq!(london.city.as_deref(), Some("London"));
    assert_eq!(
        (london.asn, london.org.as_deref()),
        (Some(20712), Some("Andrews & Arnold Ltd"))
    );
    // Coordinates are 32-bit floats in this layout, and there is no radius.
    let location = london.location.unwrap();
    assert!((location.lat - 51.5142).abs() < 1e-5, "{location:?}");
    assert!((location.lon + 0.0931).abs() < 1e-5, "{location:?}");
    assert_eq!(location.accuracy_km, ASSUMED_ACCURACY_KM);

    // IPv6 goes to the IPv6 files; the IPv4-only ones are skipped.
    let berlin = dbs.describe(ip("2a02:8100::1"));
    assert_eq!((berlin.country, berlin.asn), (cc("DE"), Some(3209)));
    assert_eq!(berlin.city.as_deref(), Some("Berlin"));
    assert_eq!(dbs.describe(ip("::ffff:81.2.69.160")), london);

    // Empty strings and AS 0 are no facts.
    assert_eq!(
        dbs.describe(ip("5.5.5.5")),
        GeoFacts {
            country: cc("SE"),
            ..GeoFacts::default()
        }
    );
    assert_eq!(dbs.describe(ip("2001:db8::1")), GeoFacts::default());
}

#[test]
fn country_only_databases() {
    let dir = tempfile::tempdir().unwrap();
    for (name, db) in [
        ("GeoLite2-Country.mmdb", TestDb::new(Layout::GeoLite2)),
        (
            "geolite2-country-ipv4.mmdb",
            TestDb::new(Layout::IpLocationDb).ipv4_only(),
        ),
    ] {
        let db = db
            .network("81.2.69.0/24", TestRecord::new().country("GB"))
            .network("90.0.0.0/16", TestRecord::new().country("fr"));
        let paths = GeoPaths::new().with_geo(write(dir.path(), name, &db));
        let dbs = GeoDatabases::open(&paths).unwrap();
        assert_eq!(
            dbs.describe(ip("81.2.69.1")),
            GeoFacts {
                country: cc("GB"),
                ..GeoFacts::default()
            },
            "{name}"
        );
        assert_eq!(dbs.lookup(ip("90.0.1.1")).country, cc("FR"), "{name}");
        // An IPv6 address against an IPv4-only file is simply not covered.
        assert_eq!(dbs.lookup(ip("2001:db8::1")), GeoFacts::default(), "{name}");
    }
}

#[test]
fn dbip_lite_has_no_accuracy_radius() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(Layout::GeoLite2)
        .database_type("DBIP-City-Lite")
        .network(
            "81.2.69.0/24",
            TestRecord::new()
                .country("GB")
                .city("London")
                .location(51.5142, -0.0931),
        );
    let paths = GeoPaths::new().with_geo(write(dir.path(), "dbip-city-lite.mmdb", &db));
    let dbs = GeoDatabases::open(&paths).unwrap();
    assert_eq!(
        dbs.lookup(ip("81.2.69.1")).location,
        Location::new(51.5142, -0.0931, ASSUMED_ACCURACY_KM)
    );
    let info: Vec<_> = dbs.databases().collect();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].database_type, "DBIP-City-Lite");
    assert_eq!(info[0].role, DatabaseRole::Geo);
    assert_eq!(info[0].ip_version, 6);
    assert_eq!(info[0].build_epoch, 1_700_000_000);
    assert_eq!(
        info[0].bytes as u64,
        std::fs::metadata(info[0].path).unwrap().len()
    );
}

#[test]
fn a_city_database_with_asn_fields_serves_both() {
    // Some files carry both (ip-location-db's combined builds, GeoIP2
    // Enterprise): with no ASN database the geo file's numbers are used.
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(Layout::GeoLite2).network(
        "81.2.69.0/24",
        TestRecord::new()
            .country("GB")
            .asn(20712)
            .org("Andrews & Arnold Ltd"),
    );
    let paths = GeoPaths::new().with_geo(write(dir.path(), "combined.mmdb", &db));
    let facts = GeoDatabases::open(&paths)
        .unwrap()
        .describe(ip("81.2.69.1"));
    assert_eq!((facts.country, facts.asn), (cc("GB"), Some(20712)));
    assert_eq!(facts.org.as_deref(), Some("Andrews & Arnold Ltd"));
}

#[test]
fn no_databases_no_facts() {
    let dbs = GeoDatabases::open(&GeoPaths::new()).unwrap();
    assert!(dbs.is_empty());
    assert_eq!(dbs.describe(ip("81.2.69.1")), GeoFacts::default());
    assert_eq!(dbs.databases().count(), 0);
}

#[test]
fn missing_and_corrupt_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let good = geolite2(dir.path());
    let valid = std::fs::read(&good.geo[0]).unwrap();

    let missing = dir.path().join("nope.mmdb");
    let err = GeoDatabases::open(&GeoPaths::new().with_asn(&missing)).unwrap_err();
    assert!(
        matches!(
            err,
            GeoError::Read {
                role: DatabaseRole::Asn,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.path(), missing);
    let message = err.to_string();
    assert!(message.starts_with(&format!(
        "ASN database {}: cannot read: ",
        missing.display()
    )));

    let cases: [(&str, Vec<u8>); 4] = [
        ("empty.mmdb", Vec::new()),
        ("text.mmdb", b"this is not a database\n".to_vec()),
        ("truncated.mmdb", valid[..valid.len() / 2].to_vec()),
        ("no-tree.mmdb", valid[valid.len() - 200..].to_vec()),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = GeoDatabases::open(&good.clone().with_geo(&path)).unwrap_err();
        assert!(
            matches!(
                err,
                GeoError::Invalid {
                    role: DatabaseRole::Geo,
                    ..
                }
            ),
            "{name}: {err:?}"
        );
        let message = err.to_string();
        let prefix = format!(
            "geo database {}: not a valid MaxMind DB file: ",
            path.display()
        );
        assert!(message.starts_with(&prefix), "{message}");
    }

    // A directory is not a database either.
    let err = GeoDatabases::open(&GeoPaths::new().with_geo(dir.path())).unwrap_err();
    assert!(matches!(err, GeoError::Read { .. }), "{err:?}");
}

#[test]
fn lookups_on_random_bytes_after_a_valid_header_never_panic() {
    // Keep the tree and metadata of a real file but scribble over its data
    // section: lookups must come back empty, not panic.
    let dir = tempfile::tempdir().unwrap();
    let paths = geolite2(dir.path());
    let mut bytes = std::fs::read(&paths.geo[0]).unwrap();
    let marker = b"\xAB\xCD\xEFMaxMind.com";
    let metadata_at = bytes
        .windows(marker.len())
        .rposition(|w| w == marker)
        .unwrap();
    let mut seed = 0x9E37_79B9u32;
    let data_start = metadata_at.saturating_sub(400);
    for byte in &mut bytes[data_start..metadata_at] {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        *byte = seed.to_be_bytes()[0];
    }
    let path = dir.path().join("scribbled.mmdb");
    std::fs::write(&path, bytes).unwrap();
    let dbs = GeoDatabases::open(&GeoPaths::new().with_geo(&path)).unwrap();
    for addr in [
        "81.2.69.160",
        "90.0.7.1",
        "90.0.8.1",
        "2a02:8100::1",
        "192.0.2.1",
    ] {
        let _ = dbs.describe(ip(addr));
        let _ = dbs.lookup(ip(addr));
    }
}
