//! `vigil-proxy geoip lookup` against databases built in the test.

// Test code: a failed expect is a failed test.
#![allow(clippy::expect_used)]

use std::process::{Command, Stdio};

use vigil_geoip::testdb::{Layout, TestDb, TestRecord};

fn lookup(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vigil-proxy"))
        .args(["geoip", "lookup"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run vigil-proxy")
}

#[test]
fn prints_country_city_and_asn_for_an_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let city = dir.path().join("city.mmdb");
    let asn = dir.path().join("asn.mmdb");
    TestDb::new(Layout::IpLocationDb)
        .network(
            "2a02:c7c::/32",
            TestRecord::new()
                .country("GB")
                .city("Manchester")
                .location(53.48, -2.24),
        )
        .write(&city)
        .expect("write city db");
    TestDb::new(Layout::IpLocationDb)
        .network(
            "2a02:c7c::/32",
            TestRecord::new().asn(64512).org("Example Transit"),
        )
        .write(&asn)
        .expect("write asn db");

    let out = lookup(&[
        "2a02:c7c::1",
        "--city",
        city.to_str().expect("utf-8 path"),
        "--asn",
        asn.to_str().expect("utf-8 path"),
    ]);

    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "country   GB",
        "city      Manchester",
        "AS64512",
        "Example Transit",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
}

#[test]
fn a_missing_database_is_a_clear_error() {
    let out = lookup(&["192.0.2.1", "--city", "/nonexistent/city.mmdb"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/city.mmdb") && err.contains("cannot read"),
        "{err}"
    );
}
