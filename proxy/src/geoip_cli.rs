//! `vigil-proxy geoip lookup`: what Vigil sees for an address.

use std::fmt::Write;
use std::net::IpAddr;

use vigil_geoip::{DatabaseRole, GeoDatabases};

/// A readable report of the facts the databases hold for `ip`, and of the
/// databases themselves.
pub fn report(dbs: &GeoDatabases, ip: IpAddr) -> String {
    let facts = dbs.describe(ip);
    let mut out = String::new();
    let none = "-";
    let _ = writeln!(out, "{ip}");
    let _ = writeln!(
        out,
        "  country   {}",
        facts
            .country
            .map_or_else(|| none.to_owned(), |c| c.to_string())
    );
    let _ = writeln!(out, "  city      {}", facts.city.as_deref().unwrap_or(none));
    match facts.location {
        Some(l) => {
            let _ = writeln!(
                out,
                "  location  {:.4}, {:.4} (within {} km)",
                l.lat, l.lon, l.accuracy_km
            );
        }
        None => {
            let _ = writeln!(out, "  location  {none}");
        }
    }
    let _ = writeln!(
        out,
        "  asn       {}",
        facts
            .asn
            .map_or_else(|| none.to_owned(), |a| format!("AS{a}"))
    );
    let _ = writeln!(out, "  org       {}", facts.org.as_deref().unwrap_or(none));
    let _ = writeln!(out, "databases:");
    let mut any = false;
    for db in dbs.databases() {
        any = true;
        let role = match db.role {
            DatabaseRole::Geo => "geo",
            DatabaseRole::Asn => "asn",
        };
        let _ = writeln!(
            out,
            "  {role:<4} {} ({}, IPv{}, built {} s after the epoch)",
            db.path.display(),
            db.database_type,
            db.ip_version,
            db.build_epoch
        );
    }
    if !any {
        let _ = writeln!(out, "  none configured");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_geoip::GeoPaths;
    use vigil_geoip::testdb::{Layout, TestDb, TestRecord};

    #[test]
    fn reports_city_and_asn_facts() {
        let dir = tempfile::tempdir().unwrap();
        let city = dir.path().join("city.mmdb");
        let asn = dir.path().join("asn.mmdb");
        TestDb::new(Layout::GeoLite2)
            .network(
                "81.2.69.0/24",
                TestRecord::default()
                    .country("GB")
                    .city("London")
                    .location(51.5142, -0.0931)
                    .accuracy_km(50),
            )
            .write(&city)
            .unwrap();
        TestDb::new(Layout::GeoLite2)
            .network(
                "81.2.69.0/24",
                TestRecord::default().asn(64500).org("Example Net"),
            )
            .write(&asn)
            .unwrap();
        let dbs = GeoDatabases::open(&GeoPaths {
            geo: vec![city],
            asn: vec![asn],
        })
        .unwrap();
        let text = report(&dbs, "81.2.69.160".parse().unwrap());
        for want in [
            "country   GB",
            "city      London",
            "51.5142, -0.0931 (within 50 km)",
            "AS64500",
            "Example Net",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
        let miss = report(&dbs, "192.0.2.1".parse().unwrap());
        assert!(miss.contains("country   -"), "{miss}");
    }
}
