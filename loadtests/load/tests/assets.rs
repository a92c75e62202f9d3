//! The chart library embedded in the HTML report (and served by the
//! controller's dashboard) is the one the lockfile pins: the committed
//! files hash to what `vendor/uplot/SHA256SUMS` records, and that record
//! names the tarball integrity of `vendor/package-lock.json`. With
//! `npm ci --prefix vendor`
//! run first (CI does), the committed files are also compared byte for
//! byte with the ones npm unpacked from the verified tarball.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test"
)]

use std::path::Path;

use sha2::{Digest, Sha256};

fn assets() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../vendor"))
}

#[test]
fn the_embedded_chart_library_is_the_locked_one() {
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(assets().join("package-lock.json")).unwrap())
            .unwrap();
    let entry = &lock["packages"]["node_modules/uplot"];
    let integrity = entry["integrity"].as_str().unwrap();
    assert_eq!(entry["license"], "MIT");
    let sums = std::fs::read_to_string(assets().join("uplot/SHA256SUMS")).unwrap();
    assert!(
        sums.contains(&format!("npm integrity {integrity}")),
        "SHA256SUMS is not from the locked tarball"
    );
    assert!(sums.contains(&format!("uplot-{}.tgz", entry["version"].as_str().unwrap())));
    let mut checked = 0;
    for line in sums.lines().filter(|l| !l.starts_with('#')) {
        let (hash, name) = line.split_once("  ").unwrap();
        let bytes = std::fs::read(assets().join("uplot").join(name)).unwrap();
        assert_eq!(hex::encode(Sha256::digest(&bytes)), hash, "{name} changed");
        let unpacked = match name {
            "LICENSE" => assets().join("node_modules/uplot/LICENSE"),
            other => assets().join("node_modules/uplot/dist").join(other),
        };
        if unpacked.exists() {
            assert_eq!(
                std::fs::read(&unpacked).unwrap(),
                bytes,
                "{name} differs from npm's"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 3);
}
