//! Distance and travel speed between two sightings of a session, and whether
//! the move between them is physically possible.
//!
//! Geo-IP places an address only within a radius, so two requests from one
//! desk can land tens of kilometres apart. [`travel`] therefore measures the
//! *effective* distance, `max(0, distance - accuracy_a - accuracy_b)`: the
//! least the user must have moved. Only that distance is turned into a speed
//! and compared with [`TravelConfig::max_kmh`].
//!
//! Every function is total: NaN, infinite or out-of-range inputs give NaN or
//! [`Travel::Unknown`], never a panic, and zero elapsed time never divides by
//! zero.

use crate::facts::Location;

/// Mean Earth radius in kilometres (IUGG R1), the radius of the sphere the
/// haversine formula works on. Error against the ellipsoid is below 0.5 %.
pub const EARTH_MEAN_RADIUS_KM: f64 = 6371.0088;

/// Default fastest plausible travel, in km/h: a little above an airliner's
/// cruise (about 900 km/h).
pub const DEFAULT_MAX_KMH: f64 = 1000.0;

/// A location and when it was seen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sighting {
    /// Where, with the database's accuracy radius.
    pub location: Location,
    /// When, in seconds since the Unix epoch.
    pub at_secs: u64,
}

/// How [`travel`] judges speed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TravelConfig {
    /// Fastest plausible speed in km/h; faster is [`Travel::Impossible`].
    /// Default [`DEFAULT_MAX_KMH`].
    pub max_kmh: f64,
}

/// The verdict on the move between two sightings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Travel {
    /// The accuracy circles overlap: no evidence of movement.
    Stationary,
    /// A move at a possible speed.
    Plausible {
        /// Effective distance in km (after subtracting both radii).
        km: f64,
        /// Effective speed in km/h.
        kmh: f64,
    },
    /// A move faster than [`TravelConfig::max_kmh`]; `kmh` is infinite when
    /// both sightings have the same timestamp.
    Impossible {
        /// Effective distance in km (after subtracting both radii).
        km: f64,
        /// Effective speed in km/h.
        kmh: f64,
    },
    /// A coordinate was not finite or out of range, or the elapsed time was
    /// NaN: no verdict either way.
    Unknown,
}

// === impl TravelConfig ===

impl Default for TravelConfig {
    fn default() -> Self {
        Self {
            max_kmh: DEFAULT_MAX_KMH,
        }
    }
}

/// Great-circle distance in km between two points given in degrees
/// (haversine on a sphere of [`EARTH_MEAN_RADIUS_KM`]). NaN if any input is.
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let half_dlat = (lat2 - lat1).to_radians() / 2.0;
    let half_dlon = (lon2 - lon1).to_radians() / 2.0;
    let h = half_dlat.sin().powi(2)
        + lat1.to_radians().cos() * lat2.to_radians().cos() * half_dlon.sin().powi(2);
    // Rounding can push h a hair outside [0, 1] for antipodal points;
    // clamping keeps asin defined. NaN passes through `clamp` unchanged.
    2.0 * EARTH_MEAN_RADIUS_KM * h.clamp(0.0, 1.0).sqrt().asin()
}

/// Great-circle distance in km between the centres of two locations,
/// ignoring their accuracy radii.
pub fn distance_km(a: &Location, b: &Location) -> f64 {
    haversine_km(a.lat, a.lon, b.lat, b.lon)
}

/// Speed in km/h needed to cover the great-circle distance between `a` and
/// `b` (radii ignored) in `seconds`. The sign of `seconds` is ignored; zero
/// seconds gives 0 for the same point and infinity otherwise; NaN in, NaN
/// out.
pub fn speed_kmh(a: &Location, b: &Location, seconds: f64) -> f64 {
    kmh(distance_km(a, b), seconds)
}

/// Judges the move from `a` to `b` in `elapsed_secs` (either sign), taking
/// both accuracy radii off the distance first (see the module docs).
pub fn classify(a: &Location, b: &Location, elapsed_secs: f64, config: &TravelConfig) -> Travel {
    let on_globe = |l: &Location| Location::new(l.lat, l.lon, l.accuracy_km).is_some();
    if !on_globe(a) || !on_globe(b) || elapsed_secs.is_nan() {
        return Travel::Unknown;
    }
    let slack = f64::from(a.accuracy_km) + f64::from(b.accuracy_km);
    let km = (distance_km(a, b) - slack).max(0.0);
    if km == 0.0 {
        return Travel::Stationary;
    }
    let kmh = kmh(km, elapsed_secs);
    if kmh > config.max_kmh {
        Travel::Impossible { km, kmh }
    } else {
        Travel::Plausible { km, kmh }
    }
}

/// Judges the move between two sightings, in whichever order they happened.
pub fn travel(a: &Sighting, b: &Sighting, config: &TravelConfig) -> Travel {
    // Exact in i128; the f64 is exact below 2^53 s (285 million years).
    let elapsed = (i128::from(b.at_secs) - i128::from(a.at_secs)) as f64;
    classify(&a.location, &b.location, elapsed, config)
}

fn kmh(km: f64, seconds: f64) -> f64 {
    if km.is_nan() || seconds.is_nan() {
        return f64::NAN;
    }
    if km == 0.0 {
        return 0.0;
    }
    let hours = seconds.abs() / 3600.0;
    if hours == 0.0 {
        f64::INFINITY
    } else {
        km / hours
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at(lat: f64, lon: f64, accuracy_km: u16) -> Location {
        Location {
            lat,
            lon,
            accuracy_km,
        }
    }

    const LONDON: (f64, f64) = (51.5074, -0.1278);
    const NEW_YORK: (f64, f64) = (40.7128, -74.0060);
    const PARIS: (f64, f64) = (48.8566, 2.3522);
    const TOKYO: (f64, f64) = (35.6762, 139.6503);
    const HOUR: u64 = 3600;

    #[test]
    fn london_to_new_york_is_about_5570_km() {
        let km = haversine_km(LONDON.0, LONDON.1, NEW_YORK.0, NEW_YORK.1);
        assert!((km - 5570.0).abs() < 10.0, "{km}");
    }

    #[test]
    fn paris_to_tokyo_in_two_hours_is_impossible_in_fourteen_plausible() {
        let paris = at(PARIS.0, PARIS.1, 20);
        let tokyo = at(TOKYO.0, TOKYO.1, 20);
        let km = distance_km(&paris, &tokyo);
        assert!((km - 9712.0).abs() < 15.0, "{km}");
        let seen = |location, at_secs| Sighting { location, at_secs };
        let start = 1_700_000_000;
        let config = TravelConfig::default();

        match travel(&seen(paris, start), &seen(tokyo, start + 2 * HOUR), &config) {
            Travel::Impossible { km, kmh } => {
                assert!((km - (9712.0 - 40.0)).abs() < 15.0, "{km}");
                assert!((kmh - km / 2.0).abs() < 1e-6, "{kmh}");
            }
            other => panic!("expected impossible, got {other:?}"),
        }
        match travel(
            &seen(paris, start),
            &seen(tokyo, start + 14 * HOUR),
            &config,
        ) {
            Travel::Plausible { kmh, .. } => assert!((680.0..700.0).contains(&kmh), "{kmh}"),
            other => panic!("expected plausible, got {other:?}"),
        }
        // Order does not matter.
        assert!(matches!(
            travel(&seen(tokyo, start + 2 * HOUR), &seen(paris, start), &config),
            Travel::Impossible { .. }
        ));
    }

    #[test]
    fn jitter_inside_the_accuracy_radii_is_stationary() {
        // Two addresses in London, 0.18 degrees of latitude (about 20 km) apart,
        // each placed within 50 km; seen a minute apart.
        let a = at(LONDON.0, LONDON.1, 50);
        let b = at(LONDON.0 + 0.18, LONDON.1, 50);
        let km = distance_km(&a, &b);
        assert!((km - 20.0).abs() < 0.2, "{km}");
        assert_eq!(
            classify(&a, &b, 60.0, &TravelConfig::default()),
            Travel::Stationary
        );
        // The same move with exact positions is 1200 km/h: impossible.
        let exact = |l: Location| Location {
            accuracy_km: 0,
            ..l
        };
        assert!(matches!(
            classify(&exact(a), &exact(b), 60.0, &TravelConfig::default()),
            Travel::Impossible { .. }
        ));
    }

    #[test]
    fn zero_elapsed_time_does_not_divide_by_zero() {
        let london = at(LONDON.0, LONDON.1, 10);
        let new_york = at(NEW_YORK.0, NEW_YORK.1, 10);
        let config = TravelConfig::default();
        assert_eq!(classify(&london, &london, 0.0, &config), Travel::Stationary);
        match classify(&london, &new_york, 0.0, &config) {
            Travel::Impossible { kmh, .. } => assert_eq!(kmh, f64::INFINITY),
            other => panic!("expected impossible, got {other:?}"),
        }
        assert_eq!(speed_kmh(&london, &london, 0.0), 0.0);
        assert_eq!(speed_kmh(&london, &new_york, 0.0), f64::INFINITY);
        assert_eq!(
            speed_kmh(&london, &new_york, -3600.0),
            speed_kmh(&london, &new_york, 3600.0)
        );
        assert_eq!(speed_kmh(&london, &new_york, f64::INFINITY), 0.0);
        assert!(speed_kmh(&london, &new_york, f64::NAN).is_nan());
    }

    #[test]
    fn bad_inputs_are_unknown() {
        let london = at(LONDON.0, LONDON.1, 10);
        let config = TravelConfig::default();
        for bad in [
            at(f64::NAN, 0.0, 0),
            at(0.0, f64::INFINITY, 0),
            at(91.0, 0.0, 0),
        ] {
            assert_eq!(classify(&london, &bad, 60.0, &config), Travel::Unknown);
            assert_eq!(classify(&bad, &london, 60.0, &config), Travel::Unknown);
        }
        assert_eq!(
            classify(&london, &london, f64::NAN, &config),
            Travel::Unknown
        );
    }

    #[test]
    fn far_apart_timestamps_do_not_overflow() {
        let london = Sighting {
            location: at(LONDON.0, LONDON.1, 0),
            at_secs: 0,
        };
        let new_york = Sighting {
            location: at(NEW_YORK.0, NEW_YORK.1, 0),
            at_secs: u64::MAX,
        };
        assert!(matches!(
            travel(&london, &new_york, &TravelConfig::default()),
            Travel::Plausible { .. }
        ));
    }

    fn latitude() -> impl Strategy<Value = f64> {
        -90.0..=90.0f64
    }

    fn longitude() -> impl Strategy<Value = f64> {
        -180.0..=180.0f64
    }

    proptest! {
        #[test]
        fn distance_is_a_symmetric_non_negative_bounded_metric(
            lat1 in latitude(), lon1 in longitude(), lat2 in latitude(), lon2 in longitude(),
        ) {
            let ab = haversine_km(lat1, lon1, lat2, lon2);
            let ba = haversine_km(lat2, lon2, lat1, lon1);
            prop_assert!(ab >= 0.0, "{ab}");
            prop_assert!((ab - ba).abs() <= 1e-9 * ab.max(1.0), "{ab} vs {ba}");
            prop_assert!(ab <= std::f64::consts::PI * EARTH_MEAN_RADIUS_KM + 1e-6, "{ab}");
            prop_assert_eq!(haversine_km(lat1, lon1, lat1, lon1), 0.0);
        }

        #[test]
        fn classification_never_panics(
            lat1 in proptest::num::f64::ANY, lon1 in proptest::num::f64::ANY,
            lat2 in proptest::num::f64::ANY, lon2 in proptest::num::f64::ANY,
            acc1 in any::<u16>(), acc2 in any::<u16>(),
            elapsed in proptest::num::f64::ANY, max_kmh in proptest::num::f64::ANY,
            t1 in any::<u64>(), t2 in any::<u64>(),
        ) {
            let a = at(lat1, lon1, acc1);
            let b = at(lat2, lon2, acc2);
            let config = TravelConfig { max_kmh };
            let verdict = classify(&a, &b, elapsed, &config);
            if let Travel::Plausible { km, kmh } | Travel::Impossible { km, kmh } = verdict {
                prop_assert!(km > 0.0 && km.is_finite(), "{km}");
                prop_assert!(kmh >= 0.0, "{kmh}");
            }
            let _ = travel(
                &Sighting { location: a, at_secs: t1 },
                &Sighting { location: b, at_secs: t2 },
                &config,
            );
            let _ = speed_kmh(&a, &b, elapsed);
        }

        #[test]
        fn valid_inputs_always_get_a_verdict(
            lat1 in latitude(), lon1 in longitude(), lat2 in latitude(), lon2 in longitude(),
            acc1 in any::<u16>(), acc2 in any::<u16>(), t1 in any::<u64>(), t2 in any::<u64>(),
        ) {
            let a = Sighting { location: at(lat1, lon1, acc1), at_secs: t1 };
            let b = Sighting { location: at(lat2, lon2, acc2), at_secs: t2 };
            prop_assert_ne!(travel(&a, &b, &TravelConfig::default()), Travel::Unknown);
        }
    }
}
