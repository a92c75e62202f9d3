//! Geo lookups on the request path, and the travel math that follows them.
//!
//! The databases are built here: a GeoLite2-layout City file and an ASN file
//! with 4 096 IPv4 and 1 024 IPv6 networks each, 512 distinct cities and 256
//! distinct organisations, so the tree is 30-odd levels deep and the
//! records carry the keys a real GeoLite2 record does.
#![allow(
    clippy::unwrap_used,
    reason = "bench set-up: a panic is a broken bench"
)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use vigil_geoip::testdb::{Layout, TestDb, TestRecord};
use vigil_geoip::travel::{self, Sighting, TravelConfig};
use vigil_geoip::{GeoDatabases, GeoIp, GeoPaths, Location};

const V4_NETWORKS: u32 = 4096;
const V6_NETWORKS: u32 = 1024;

/// The `i`th IPv4 /24, spread over the address space; distinct for every
/// `i` below 2^24 because the multiplier's /24 part (0x97F) is odd.
fn v4_net(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(i.wrapping_mul(0x0009_7F00).wrapping_add(0x0B00_0000) & 0xFFFF_FF00)
}

fn v6_net(i: u32) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0x0db8, u16::try_from(i).unwrap(), 0, 0, 0, 0, 0)
}

fn build(dir: &Path, networks: u32, v6_networks: u32, layout: Layout) -> GeoPaths {
    let mut city = TestDb::new(layout);
    let mut asn = TestDb::new(layout);
    let place = |i: u32| {
        let c = f64::from(i % 512);
        TestRecord::new()
            .country(["GB", "FR", "DE", "US", "JP", "BR", "IN", "AU"][(i % 8) as usize])
            .city(&format!("City {}", i % 512))
            .location(-60.0 + c * 0.23, -170.0 + c * 0.66)
            .accuracy_km(u16::try_from(i % 200).unwrap() + 1)
    };
    let network = |i: u32| {
        TestRecord::new()
            .asn(64_512 + i % 256)
            .org(&format!("Org {}", i % 256))
    };
    for i in 0..networks {
        city.push(&format!("{}/24", v4_net(i)), place(i));
        asn.push(&format!("{}/22", v4_net(i)), network(i));
    }
    for i in 0..v6_networks {
        city.push(&format!("{}/48", v6_net(i)), place(i));
        asn.push(&format!("{}/32", v6_net(i)), network(i));
    }
    let (city_path, asn_path) = (dir.join("city.mmdb"), dir.join("asn.mmdb"));
    city.write(&city_path).unwrap();
    asn.write(&asn_path).unwrap();
    GeoPaths::new().with_geo(city_path).with_asn(asn_path)
}

fn lookups(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let paths = build(dir.path(), V4_NETWORKS, V6_NETWORKS, Layout::GeoLite2);
    let dbs = GeoDatabases::open(&paths).unwrap();
    let live = GeoIp::open(&paths).unwrap();

    let hits: Vec<IpAddr> = (0..V4_NETWORKS)
        .step_by(7)
        .map(|i| IpAddr::V4(Ipv4Addr::from(u32::from(v4_net(i)) + 77)))
        .collect();
    let v6_hits: Vec<IpAddr> = (0..V6_NETWORKS)
        .step_by(3)
        .map(|i| IpAddr::V6(Ipv6Addr::from(u128::from(v6_net(i)) + 0x1234)))
        .collect();
    assert!(dbs.lookup(hits[1]).country.is_some());
    assert!(dbs.lookup(hits[1]).asn.is_some());
    assert!(dbs.lookup(v6_hits[1]).location.is_some());
    let miss = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    assert!(dbs.lookup(miss).country.is_none());

    let mut group = c.benchmark_group("geoip");
    let mut n = 0;
    let mut next = |list: &[IpAddr]| {
        n += 1;
        list[n % list.len()]
    };
    // `lookup` remembers the last answers per address (16,384 slots), and
    // each file its last decoded records (4,096 slots): an address not
    // asked for lately (`_city_asn`: each of 586 networks at 250 offsets,
    // 146,500 addresses in turn) walks the files' trees, and finds its
    // networks' records (512 cities, 256 organisations) decoded already;
    // the same 586 asked again and again (`_remembered`) are answered from
    // memory. `lookup_v4_records_unshared` below is the files' whole cost.
    let mut m: u32 = 0;
    let mut fresh = |list: &[IpAddr]| {
        m = m.wrapping_add(1);
        let len = u32::try_from(list.len()).unwrap();
        let offset = (m / len) % 250;
        match list[(m % len) as usize] {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) - 77 + offset)),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) + u128::from(offset))),
        }
    };
    group.bench_function("lookup_v4_city_asn", |b| {
        b.iter(|| dbs.lookup(black_box(fresh(&hits))));
    });
    group.bench_function("lookup_v6_city_asn", |b| {
        b.iter(|| dbs.lookup(black_box(fresh(&v6_hits))));
    });
    group.bench_function("lookup_v4_remembered", |b| {
        b.iter(|| dbs.lookup(black_box(next(&hits))));
    });
    group.bench_function("lookup_miss", |b| b.iter(|| dbs.lookup(black_box(miss))));
    group.bench_function("describe_v4_with_names", |b| {
        b.iter(|| dbs.describe(black_box(next(&hits))));
    });
    group.bench_function("geoip_handle_lookup_v4", |b| {
        b.iter(|| live.lookup(black_box(next(&hits))));
    });
    group.finish();

    // The same networks in the ip-location-db layout (float32 coordinates,
    // top-level keys, split IPv4 file).
    let ild_dir = tempfile::tempdir().unwrap();
    let ild =
        GeoDatabases::open(&build(ild_dir.path(), V4_NETWORKS, 0, Layout::IpLocationDb)).unwrap();
    assert!(ild.lookup(hits[1]).location.is_some());
    c.bench_function("geoip/lookup_v4_ip_location_db", |b| {
        b.iter(|| ild.lookup(black_box(fresh(&hits))));
    });
}

/// The files' whole cost: 16,384 networks, each with a city record and an
/// AS record of its own, asked in turn at a new address each time, so that
/// neither the address table nor the record tables can answer.
fn unshared(c: &mut Criterion) {
    const NETWORKS: u32 = 16_384;
    let dir = tempfile::tempdir().unwrap();
    let mut city = TestDb::new(Layout::GeoLite2);
    let mut asn = TestDb::new(Layout::GeoLite2);
    for i in 0..NETWORKS {
        let f = f64::from(i);
        city.push(
            &format!("{}/24", v4_net(i)),
            TestRecord::new()
                .country(["GB", "FR", "DE", "US", "JP", "BR", "IN", "AU"][(i % 8) as usize])
                .city(&format!("City {i}"))
                .location(-60.0 + f * 0.007, -170.0 + f * 0.02)
                .accuracy_km(u16::try_from(i % 200).unwrap() + 1),
        );
        asn.push(
            &format!("{}/24", v4_net(i)),
            TestRecord::new().asn(64_512 + i).org(&format!("Org {i}")),
        );
    }
    let (city_path, asn_path) = (dir.path().join("city.mmdb"), dir.path().join("asn.mmdb"));
    city.write(&city_path).unwrap();
    asn.write(&asn_path).unwrap();
    let dbs = GeoDatabases::open(&GeoPaths::new().with_geo(city_path).with_asn(asn_path)).unwrap();
    let mut m: u32 = 0;
    c.bench_function("geoip/lookup_v4_records_unshared", |b| {
        b.iter(|| {
            m = m.wrapping_add(1);
            let host = (m / NETWORKS) % 250 + 1;
            let ip = Ipv4Addr::from(u32::from(v4_net(m % NETWORKS)) + host);
            dbs.lookup(black_box(IpAddr::V4(ip)))
        });
    });
}

fn open(c: &mut Criterion) {
    // A bigger file to measure what reading into memory costs per megabyte.
    let dir = tempfile::tempdir().unwrap();
    let paths = build(dir.path(), 65_536, 0, Layout::GeoLite2);
    let bytes: u64 = paths
        .geo
        .iter()
        .chain(&paths.asn)
        .map(|p| p.metadata().unwrap().len())
        .sum();
    println!("open: {} files, {:.1} MB in all", 2, bytes as f64 / 1e6);
    let mut group = c.benchmark_group("geoip");
    group.sample_size(20);
    group.bench_function("open_city_and_asn_65536_networks", |b| {
        b.iter(|| GeoDatabases::open(black_box(&paths)).unwrap());
    });
    group.finish();
}

fn travel_math(c: &mut Criterion) {
    let paris = Sighting {
        location: Location::new(48.8566, 2.3522, 20).unwrap(),
        at_secs: 1_700_000_000,
    };
    let tokyo = Sighting {
        location: Location::new(35.6762, 139.6503, 50).unwrap(),
        at_secs: 1_700_007_200,
    };
    let config = TravelConfig::default();
    let mut group = c.benchmark_group("travel");
    group.bench_function("distance_km", |b| {
        b.iter(|| travel::distance_km(black_box(&paris.location), black_box(&tokyo.location)));
    });
    group.bench_function("classify_sightings", |b| {
        b.iter(|| travel::travel(black_box(&paris), black_box(&tokyo), &config));
    });
    group.finish();
}

criterion_group!(benches, lookups, unshared, travel_math, open);
criterion_main!(benches);
