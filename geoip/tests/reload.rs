//! Reload swaps the whole set when a file changes and keeps the old set when
//! the new one is broken.

// Test code: a failed unwrap is a failed test. clippy.toml allows these in
// #[test] functions; this also covers the helpers here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;
use std::path::Path;

use vigil_geoip::testdb::{Layout, TestDb, TestRecord};
use vigil_geoip::{CountryCode, GeoError, GeoIp, GeoPaths, ReloadOutcome};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn country_db(code: &str) -> TestDb {
    TestDb::new(Layout::GeoLite2).network("81.2.69.0/24", TestRecord::new().country(code))
}

fn asn_db(asn: u32) -> TestDb {
    TestDb::new(Layout::GeoLite2).network("81.2.69.0/24", TestRecord::new().asn(asn))
}

/// A different database whose file is also longer than `country_db`'s. A
/// file rewritten within the same clock tick (a few ms) as the last write,
/// possibly under a reused inode number, differs from it only by length, so
/// tests that rewrite in place or recreate a file change the length too.
fn longer_country_db(code: &str) -> TestDb {
    country_db(code).network("90.0.0.0/16", TestRecord::new().country("FR"))
}

/// Replaces `path` the way geoipupdate does: write a temporary file beside
/// it, then rename it over.
fn replace(path: &Path, db: &TestDb) {
    let tmp = path.with_extension("tmp");
    db.write(&tmp).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn country(geo: &GeoIp) -> Option<CountryCode> {
    geo.lookup(ip("81.2.69.1")).country
}

struct Fixture {
    _dir: tempfile::TempDir,
    city: std::path::PathBuf,
    asn: std::path::PathBuf,
    geo: GeoIp,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let city = dir.path().join("GeoLite2-City.mmdb");
    let asn = dir.path().join("GeoLite2-ASN.mmdb");
    country_db("GB").write(&city).unwrap();
    asn_db(20712).write(&asn).unwrap();
    let geo = GeoIp::open(&GeoPaths::new().with_geo(&city).with_asn(&asn)).unwrap();
    Fixture {
        _dir: dir,
        city,
        asn,
        geo,
    }
}

#[test]
fn unchanged_files_are_not_reloaded() {
    let f = fixture();
    let before = f.geo.snapshot();
    assert_eq!(f.geo.reload().unwrap(), ReloadOutcome::Unchanged);
    assert_eq!(f.geo.reload().unwrap(), ReloadOutcome::Unchanged);
    assert!(std::sync::Arc::ptr_eq(&before, &f.geo.snapshot()));
}

#[test]
fn a_replaced_file_is_swapped_in_and_only_it_is_read_again() {
    let f = fixture();
    let before = f.geo.snapshot();
    assert_eq!(country(&f.geo), CountryCode::parse("GB"));

    replace(&f.city, &country_db("IE"));
    assert_eq!(
        f.geo.reload().unwrap(),
        ReloadOutcome::Reloaded {
            reopened: vec![f.city.clone()]
        }
    );
    assert_eq!(country(&f.geo), CountryCode::parse("IE"));
    assert_eq!(f.geo.lookup(ip("81.2.69.1")).asn, Some(20712));
    // A snapshot taken before keeps answering from the old set.
    assert_eq!(
        before.lookup(ip("81.2.69.1")).country,
        CountryCode::parse("GB")
    );
    assert_eq!(f.geo.reload().unwrap(), ReloadOutcome::Unchanged);

    replace(&f.asn, &asn_db(64496));
    assert_eq!(
        f.geo.reload().unwrap(),
        ReloadOutcome::Reloaded {
            reopened: vec![f.asn.clone()]
        }
    );
    assert_eq!(f.geo.lookup(ip("81.2.69.1")).asn, Some(64496));
}

#[test]
fn a_file_rewritten_in_place_is_noticed() {
    let f = fixture();
    // Same inode, rewritten in place.
    std::fs::write(&f.city, longer_country_db("NL").build().unwrap()).unwrap();
    assert!(matches!(
        f.geo.reload().unwrap(),
        ReloadOutcome::Reloaded { .. }
    ));
    assert_eq!(country(&f.geo), CountryCode::parse("NL"));
}

#[test]
fn a_corrupt_file_keeps_the_old_set_until_it_is_fixed() {
    let f = fixture();
    std::fs::write(&f.city, b"half a database").unwrap();
    let err = f.geo.reload().unwrap_err();
    assert!(matches!(err, GeoError::Invalid { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&f.city.display().to_string()),
        "{err}"
    );
    assert_eq!(country(&f.geo), CountryCode::parse("GB"));
    // Still broken: still an error, still the old set.
    assert!(f.geo.reload().is_err());
    assert_eq!(country(&f.geo), CountryCode::parse("GB"));

    replace(&f.city, &country_db("FR"));
    assert!(matches!(
        f.geo.reload().unwrap(),
        ReloadOutcome::Reloaded { .. }
    ));
    assert_eq!(country(&f.geo), CountryCode::parse("FR"));
}

#[test]
fn a_missing_file_keeps_the_old_set() {
    let f = fixture();
    // The ASN file changes too, but a failed reload swaps nothing at all.
    replace(&f.asn, &asn_db(64496));
    std::fs::remove_file(&f.city).unwrap();
    let err = f.geo.reload().unwrap_err();
    assert!(matches!(err, GeoError::Read { .. }), "{err:?}");
    assert_eq!(err.path(), f.city);
    assert_eq!(country(&f.geo), CountryCode::parse("GB"));
    assert_eq!(f.geo.lookup(ip("81.2.69.1")).asn, Some(20712));

    longer_country_db("IE").write(&f.city).unwrap();
    assert_eq!(
        f.geo.reload().unwrap(),
        ReloadOutcome::Reloaded {
            reopened: vec![f.city.clone(), f.asn.clone()]
        }
    );
    assert_eq!(country(&f.geo), CountryCode::parse("IE"));
    assert_eq!(f.geo.lookup(ip("81.2.69.1")).asn, Some(64496));
}

#[test]
fn lookups_continue_while_another_thread_reloads() {
    let f = fixture();
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..20 {
                let code = if i % 2 == 0 { "IE" } else { "GB" };
                replace(&f.city, &country_db(code));
                f.geo.reload().unwrap();
            }
        });
        for _ in 0..2_000 {
            let code = country(&f.geo).map(|c| c.to_string());
            assert!(matches!(code.as_deref(), Some("GB" | "IE")), "{code:?}");
        }
    });
}
