//! What a lookup tells about an address: plain, compact values with no tie to
//! the database they came from.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Accuracy radius, in kilometres, given to a [`Location`] whose database
/// states none (DB-IP Lite and the ip-location-db city files carry bare
/// coordinates). 100 km is the order of error of city-level geo-IP; it keeps
/// neighbouring-city jitter from reading as travel without hiding a flight.
pub const ASSUMED_ACCURACY_KM: u16 = 100;

/// An ISO 3166-1 alpha-2 country code, two upper-case ASCII letters.
///
/// Databases write `"ZZ"` (unknown or unspecified) for ranges they cannot
/// place; [`CountryCode::parse`] reads it as no country at all.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode([u8; 2]);

/// A place on Earth with the radius the database vouches for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Location {
    /// Latitude in degrees, -90 (south) to 90 (north), WGS 84.
    pub lat: f64,
    /// Longitude in degrees, -180 (west) to 180 (east), WGS 84.
    pub lon: f64,
    /// Radius in kilometres around the point within which the address is
    /// likely to be (MaxMind's `accuracy_radius`). [`ASSUMED_ACCURACY_KM`]
    /// when the database states none.
    pub accuracy_km: u16,
}

/// What the databases say about one address. Every field is `None` when no
/// database covers the address or the covering record lacks it.
///
/// [`GeoDatabases::lookup`](crate::GeoDatabases::lookup) — the request-path
/// call — never fills `city` or `org`, so that it allocates nothing;
/// [`GeoDatabases::describe`](crate::GeoDatabases::describe) fills them too.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GeoFacts {
    /// Country where the address is believed to be (not the country where the
    /// network is registered).
    pub country: Option<CountryCode>,
    /// City name, in English where the database has it. Only from `describe`.
    pub city: Option<Arc<str>>,
    /// Coordinates and accuracy radius.
    pub location: Option<Location>,
    /// Autonomous system number; AS 0 (unrouted) is reported as `None`.
    pub asn: Option<u32>,
    /// Name of the organisation running the autonomous system. Only from
    /// `describe`.
    pub org: Option<Arc<str>>,
}

/// A string that is not an ISO 3166-1 alpha-2 code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a two-letter country code")]
pub struct ParseCountryCodeError(String);

// === impl CountryCode ===

impl CountryCode {
    /// Reads a two-letter code, in either case. `None` for anything else and
    /// for `"ZZ"`, the code for "unknown".
    pub fn parse(code: &str) -> Option<Self> {
        match *code.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                let code = [a.to_ascii_uppercase(), b.to_ascii_uppercase()];
                (code != *b"ZZ").then_some(Self(code))
            }
            _ => None,
        }
    }

    /// The code as a string slice, e.g. `"GB"`.
    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII letters (checked in `parse`), so this is UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// The code as its two ASCII bytes.
    pub fn as_bytes(&self) -> [u8; 2] {
        self.0
    }
}

impl FromStr for CountryCode {
    type Err = ParseCountryCodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| ParseCountryCodeError(s.to_owned()))
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountryCode({})", self.as_str())
    }
}

// === impl Location ===

impl Location {
    /// A location from coordinates in degrees, or `None` unless both are
    /// finite and in range (latitude ±90, longitude ±180).
    pub fn new(lat: f64, lon: f64, accuracy_km: u16) -> Option<Self> {
        let valid = (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon);
        valid.then_some(Self {
            lat,
            lon,
            accuracy_km,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_codes_are_two_letters_upper_case() {
        assert_eq!(
            CountryCode::parse("gb").map(|c| c.to_string()),
            Some("GB".into())
        );
        assert_eq!(CountryCode::parse("US").map(|c| c.as_bytes()), Some(*b"US"));
        for bad in ["", "G", "GBR", "G1", "é", "ZZ", "zz", "--"] {
            assert_eq!(CountryCode::parse(bad), None, "{bad:?}");
        }
        assert!("XK".parse::<CountryCode>().is_ok());
        assert_eq!(
            "nope".parse::<CountryCode>().map_err(|e| e.to_string()),
            Err("\"nope\" is not a two-letter country code".into())
        );
        assert_eq!(
            format!("{:?}", CountryCode::parse("fr")),
            "Some(CountryCode(FR))"
        );
    }

    #[test]
    fn locations_must_be_on_the_globe() {
        assert!(Location::new(51.5, -0.12, 10).is_some());
        assert!(Location::new(90.0, 180.0, 0).is_some());
        for (lat, lon) in [
            (90.1, 0.0),
            (0.0, -180.5),
            (f64::NAN, 0.0),
            (0.0, f64::INFINITY),
        ] {
            assert_eq!(Location::new(lat, lon, 1), None, "{lat} {lon}");
        }
    }
}
