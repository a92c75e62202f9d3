//! Lenient decoding of one database record, whatever its layout.
//!
//! The layouts name the same facts differently (see the crate docs), so one
//! pass over the record's map picks up every name we know and skips the rest
//! without decoding it. A field of an unexpected type is dropped, never an
//! error, and numbers are taken in whatever type the file uses: ip-location-db
//! writes coordinates as 32-bit floats where MaxMind writes doubles. Only a
//! record that is not a map, or bytes that are not valid MaxMind DB data, fail
//! the record.
//!
//! `NAMES` selects whether the city and organisation strings are read. They
//! are borrowed from the database buffer, so even then decoding allocates
//! nothing; the caller copies what it keeps.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::facts::{ASSUMED_ACCURACY_KM, CountryCode, Location};

/// Longest name kept, in bytes; longer names are cut at a character boundary.
/// Real city and organisation names are well under 100 bytes.
pub(crate) const MAX_NAME_BYTES: usize = 256;

/// The facts of one record, borrowing names from the database.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Raw<'a> {
    pub(crate) country: Option<CountryCode>,
    pub(crate) city: Option<&'a str>,
    /// `location.{latitude,longitude}` (MaxMind, DB-IP).
    nested: Coordinates,
    /// Top-level `latitude`/`longitude` (ip-location-db).
    top: Coordinates,
    accuracy_km: Option<u16>,
    pub(crate) asn: Option<u32>,
    pub(crate) org: Option<&'a str>,
}

/// A record decoded with or without names; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Record<'a, const NAMES: bool>(pub(crate) Raw<'a>);

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Coordinates {
    lat: Option<f64>,
    lon: Option<f64>,
}

/// Map keys we act on; everything else is `Other` and skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Country,
    CountryCode,
    City,
    Location,
    Latitude,
    Longitude,
    AccuracyRadius,
    IsoCode,
    Names,
    English,
    Asn,
    AsOrg,
    Traits,
    Other,
}

/// Any single value, reduced to the shapes we can use.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scalar<'a> {
    Str(&'a str),
    Uint(u64),
    Int(i64),
    Float(f64),
    Other,
}

/// `country: { iso_code, .. }`.
struct CountryField(Option<CountryCode>);

/// `location: { latitude, longitude, accuracy_radius, .. }`.
struct LocationField(Coordinates, Option<u16>);

/// `city: "Paris"` (ip-location-db) or `city: { names: { en: "Paris" } }`.
struct NameField<'a>(Option<&'a str>);

/// `names: { en: .., de: .. }`: English, else the first name.
struct NamesField<'a>(Option<&'a str>);

/// `traits: { autonomous_system_number, autonomous_system_organization }`
/// (GeoIP2 Enterprise).
struct TraitsField<'a, const NAMES: bool>(Option<u32>, Option<&'a str>);

// === impl Raw ===

impl<'a> Raw<'a> {
    /// The record's location: nested coordinates win over top-level ones, and
    /// a missing radius is [`ASSUMED_ACCURACY_KM`].
    pub(crate) fn location(&self) -> Option<Location> {
        let accuracy = self.accuracy_km.unwrap_or(ASSUMED_ACCURACY_KM);
        let pick = |c: Coordinates| Location::new(c.lat?, c.lon?, accuracy);
        pick(self.nested).or_else(|| pick(self.top))
    }

    /// The record without its names (the request path's form), owning
    /// nothing of the database it was read from.
    pub(crate) fn without_names(self) -> Raw<'static> {
        Raw {
            country: self.country,
            city: None,
            nested: self.nested,
            top: self.top,
            accuracy_km: self.accuracy_km,
            asn: self.asn,
            org: None,
        }
    }
}

// === impl Record ===

impl<'de, const NAMES: bool> Deserialize<'de> for Record<'de, NAMES> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RecordVisitor<const NAMES: bool>;

        impl<'de, const NAMES: bool> Visitor<'de> for RecordVisitor<NAMES> {
            type Value = Record<'de, NAMES>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut raw = Raw::default();
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Country => {
                            raw.country = map.next_value::<CountryField>()?.0.or(raw.country);
                        }
                        Key::CountryCode => {
                            raw.country =
                                map.next_value::<Scalar<'de>>()?.country().or(raw.country);
                        }
                        Key::City if NAMES => {
                            raw.city = map.next_value::<NameField<'de>>()?.0.or(raw.city);
                        }
                        Key::Location => {
                            let LocationField(coordinates, accuracy) = map.next_value()?;
                            if coordinates.lat.is_some() && coordinates.lon.is_some() {
                                raw.nested = coordinates;
                            }
                            raw.accuracy_km = accuracy.or(raw.accuracy_km);
                        }
                        Key::Latitude => {
                            raw.top.lat =
                                map.next_value::<Scalar<'de>>()?.degrees().or(raw.top.lat);
                        }
                        Key::Longitude => {
                            raw.top.lon =
                                map.next_value::<Scalar<'de>>()?.degrees().or(raw.top.lon);
                        }
                        Key::Asn => raw.asn = map.next_value::<Scalar<'de>>()?.asn().or(raw.asn),
                        Key::AsOrg if NAMES => {
                            raw.org = map.next_value::<Scalar<'de>>()?.name().or(raw.org);
                        }
                        Key::Traits => {
                            let TraitsField::<NAMES>(asn, org) = map.next_value()?;
                            raw.asn = raw.asn.or(asn);
                            raw.org = raw.org.or(org);
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Record(raw))
            }
        }

        deserializer.deserialize_map(RecordVisitor::<NAMES>)
    }
}

// === impl Key ===

impl Key {
    fn from_bytes(key: &[u8]) -> Self {
        match key {
            b"country" => Self::Country,
            b"country_code" => Self::CountryCode,
            b"city" => Self::City,
            b"location" => Self::Location,
            b"latitude" => Self::Latitude,
            b"longitude" => Self::Longitude,
            b"accuracy_radius" => Self::AccuracyRadius,
            b"iso_code" => Self::IsoCode,
            b"names" => Self::Names,
            b"en" => Self::English,
            b"autonomous_system_number" => Self::Asn,
            b"autonomous_system_organization" => Self::AsOrg,
            b"traits" => Self::Traits,
            _ => Self::Other,
        }
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl Visitor<'_> for KeyVisitor {
            type Value = Key;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map key")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key::from_bytes(v.as_bytes()))
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Key, E> {
                Ok(Key::from_bytes(v))
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Key, E> {
                Ok(Key::Other)
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Key, E> {
                Ok(Key::Other)
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Key, E> {
                Ok(Key::Other)
            }

            fn visit_u128<E: de::Error>(self, _: u128) -> Result<Key, E> {
                Ok(Key::Other)
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Key, E> {
                Ok(Key::Other)
            }
        }

        deserializer.deserialize_identifier(KeyVisitor)
    }
}

// === impl Scalar ===

impl<'a> Scalar<'a> {
    fn country(self) -> Option<CountryCode> {
        match self {
            Self::Str(s) => CountryCode::parse(s),
            _ => None,
        }
    }

    /// Degrees from a number or a numeric string; `None` unless finite.
    fn degrees(self) -> Option<f64> {
        let value = match self {
            Self::Float(f) => f,
            // Whole-degree coordinates stored as integers; exact below 2^53.
            #[allow(clippy::cast_precision_loss, reason = "coordinates are small")]
            Self::Uint(u) => u as f64,
            #[allow(clippy::cast_precision_loss, reason = "coordinates are small")]
            Self::Int(i) => i as f64,
            Self::Str(s) => s.trim().parse().ok()?,
            Self::Other => return None,
        };
        value.is_finite().then_some(value)
    }

    /// An AS number from an integer or from `"AS15169"`/`"15169"`; AS 0
    /// (unrouted, or a failed conversion in the file's producer) is `None`.
    fn asn(self) -> Option<u32> {
        let asn = match self {
            Self::Uint(u) => u32::try_from(u).ok()?,
            Self::Int(i) => u32::try_from(i).ok()?,
            Self::Str(s) => {
                let s = s.trim();
                let digits = match s.get(..2) {
                    Some(prefix) if prefix.eq_ignore_ascii_case("AS") => &s[2..],
                    _ => s,
                };
                digits.parse().ok()?
            }
            Self::Float(_) | Self::Other => return None,
        };
        (asn != 0).then_some(asn)
    }

    /// A kilometre radius, saturating at `u16::MAX`.
    fn radius(self) -> Option<u16> {
        match self {
            Self::Uint(u) => Some(u16::try_from(u).unwrap_or(u16::MAX)),
            Self::Int(i) if i >= 0 => Some(u16::try_from(i).unwrap_or(u16::MAX)),
            Self::Float(f) if f.is_finite() && f >= 0.0 => {
                // Clamped into range first, so the cast cannot truncate.
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "clamped"
                )]
                let km = f.round().min(f64::from(u16::MAX)) as u16;
                Some(km)
            }
            _ => None,
        }
    }

    /// A non-empty name, cut to [`MAX_NAME_BYTES`].
    fn name(self) -> Option<&'a str> {
        match self {
            Self::Str(s) => {
                let s = s.trim();
                if s.is_empty() {
                    return None;
                }
                let mut end = s.len().min(MAX_NAME_BYTES);
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                Some(&s[..end])
            }
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;

        impl<'de> Visitor<'de> for ScalarVisitor {
            type Value = Scalar<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any value")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(v))
            }

            // A string the decoder could not lend out cannot be kept.
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Other)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar::Uint(v))
            }

            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
                Ok(u64::try_from(v).map_or(Scalar::Other, Scalar::Uint))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar::Int(v))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar::Float(v))
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Other)
            }

            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Self::Value, E> {
                Ok(Scalar::Other)
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Other)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                skip_seq(seq).map(|()| Scalar::Other)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                skip_map(map).map(|()| Scalar::Other)
            }
        }

        deserializer.deserialize_any(ScalarVisitor)
    }
}

// === impl CountryField, LocationField, NameField, NamesField, TraitsField ===

/// Implements `Deserialize` for a field that is expected to be a map: the
/// given `visit_map` body runs for maps, any other value is skipped and
/// yields `$default`. Written once so every map-shaped field is equally
/// lenient about what it finds instead.
macro_rules! map_field {
    (
        $ty:ident $(<$lt:lifetime>)? $(, const $names:ident)?,
        default = $default:expr,
        strings = |$s:ident| $on_str:expr,
        |$map:ident| $visit_map:block
    ) => {
        impl<'de $(, const $names: bool)?> Deserialize<'de> for $ty<$($lt,)? $($names)?> {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct FieldVisitor<$(const $names: bool)?>;

                impl<'de $(, const $names: bool)?> Visitor<'de> for FieldVisitor<$($names)?> {
                    type Value = $ty<$($lt,)? $($names)?>;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a map")
                    }

                    fn visit_map<A: MapAccess<'de>>(
                        self,
                        mut $map: A,
                    ) -> Result<Self::Value, A::Error> {
                        $visit_map
                    }

                    fn visit_borrowed_str<E: de::Error>(
                        self,
                        $s: &'de str,
                    ) -> Result<Self::Value, E> {
                        Ok($on_str)
                    }

                    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                        Ok($default)
                    }

                    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                        Ok($default)
                    }

                    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                        Ok($default)
                    }

                    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                        Ok($default)
                    }

                    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Self::Value, E> {
                        Ok($default)
                    }

                    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                        Ok($default)
                    }

                    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Self::Value, E> {
                        Ok($default)
                    }

                    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                        Ok($default)
                    }

                    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                        skip_seq(seq).map(|()| $default)
                    }
                }

                deserializer.deserialize_any(FieldVisitor::<$($names)?>)
            }
        }
    };
}

map_field!(
    CountryField,
    default = CountryField(None),
    strings = |_s| CountryField(None),
    |map| {
        let mut code = None;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::IsoCode => code = map.next_value::<Scalar<'de>>()?.country(),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(CountryField(code))
    }
);

map_field!(
    LocationField,
    default = LocationField(Coordinates::default(), None),
    strings = |_s| LocationField(Coordinates::default(), None),
    |map| {
        let mut coordinates = Coordinates::default();
        let mut accuracy = None;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Latitude => coordinates.lat = map.next_value::<Scalar<'de>>()?.degrees(),
                Key::Longitude => coordinates.lon = map.next_value::<Scalar<'de>>()?.degrees(),
                Key::AccuracyRadius => accuracy = map.next_value::<Scalar<'de>>()?.radius(),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(LocationField(coordinates, accuracy))
    }
);

map_field!(
    NameField<'de>,
    default = NameField(None),
    strings = |s| NameField(Scalar::Str(s).name()),
    |map| {
        let mut name = None;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Names => name = map.next_value::<NamesField<'de>>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(NameField(name))
    }
);

map_field!(
    NamesField<'de>,
    default = NamesField(None),
    strings = |_s| NamesField(None),
    |map| {
        let mut english = None;
        let mut first = None;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::English => english = map.next_value::<Scalar<'de>>()?.name(),
                _ if first.is_none() && english.is_none() => {
                    first = map.next_value::<Scalar<'de>>()?.name();
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(NamesField(english.or(first)))
    }
);

map_field!(
    TraitsField<'de>, const NAMES,
    default = TraitsField(None, None),
    strings = |_s| TraitsField(None, None),
    |map| {
    let mut asn = None;
    let mut org = None;
    while let Some(key) = map.next_key::<Key>()? {
        match key {
            Key::Asn => asn = map.next_value::<Scalar<'de>>()?.asn(),
            Key::AsOrg if NAMES => org = map.next_value::<Scalar<'de>>()?.name(),
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok(TraitsField(asn, org))
    }
);

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use maxminddb::Reader;

    use super::*;
    use crate::testdb::{Value, single_record_db};

    /// Decodes `value` as a record, with names, from a database that shares
    /// strings and maps through pointers and from one that does not; both
    /// must read the same.
    fn decode(value: Value) -> Option<Raw<'static>> {
        let [shared, inline] = [true, false].map(|pointers| {
            let bytes: &'static [u8] = Vec::leak(single_record_db(value.clone(), pointers));
            let reader = Box::leak(Box::new(Reader::from_source(bytes).unwrap()));
            let found = reader.lookup("192.0.2.1".parse().unwrap()).unwrap();
            found
                .decode::<Record<'static, true>>()
                .ok()
                .flatten()
                .map(|r| r.0)
        });
        assert_eq!(shared, inline);
        shared
    }

    fn map(fields: Vec<(&'static str, Value)>) -> Value {
        Value::Map(fields)
    }

    fn text(s: &str) -> Value {
        Value::Str(s.to_owned())
    }

    #[test]
    fn odd_types_are_read_where_they_make_sense() {
        let raw = decode(map(vec![
            ("country_code", text("fr")),
            (
                "city",
                map(vec![("names", map(vec![("fr", text("Lyon"))]))]),
            ),
            ("latitude", text("45.76")),
            ("longitude", Value::U16(4)),
            ("autonomous_system_number", text("AS3215")),
            ("autonomous_system_organization", text(" Orange ")),
        ]))
        .unwrap();
        assert_eq!(raw.country, CountryCode::parse("FR"));
        assert_eq!(
            raw.city,
            Some("Lyon"),
            "first name when there is no English one"
        );
        assert_eq!(
            raw.location(),
            Location::new(45.76, 4.0, ASSUMED_ACCURACY_KM)
        );
        assert_eq!((raw.asn, raw.org), (Some(3215), Some("Orange")));
    }

    #[test]
    fn fields_of_the_wrong_shape_are_skipped_not_fatal() {
        let raw = decode(map(vec![
            ("country", Value::Array(vec![text("GB"), Value::U16(1)])),
            ("city", Value::Double(1.5)),
            ("location", text("somewhere")),
            (
                "traits",
                Value::Array(vec![map(vec![("x", Value::U16(1))])]),
            ),
            ("autonomous_system_number", map(vec![("n", Value::U32(1))])),
            ("latitude", Value::Array(vec![])),
            ("longitude", Value::Float(2.0)),
            // Read in spite of all of the above, and not undone by what follows:
            ("country_code", text("GB")),
            ("country", Value::U16(7)),
        ]))
        .unwrap();
        assert_eq!(raw.country, CountryCode::parse("GB"));
        assert_eq!((raw.city, raw.location(), raw.asn), (None, None, None));
    }

    #[test]
    fn enterprise_traits_carry_the_asn() {
        let raw = decode(map(vec![(
            "traits",
            map(vec![
                ("autonomous_system_number", Value::U32(15169)),
                ("autonomous_system_organization", text("GOOGLE")),
                ("is_anycast", Value::U16(1)),
            ]),
        )]))
        .unwrap();
        assert_eq!((raw.asn, raw.org), (Some(15169), Some("GOOGLE")));
    }

    #[test]
    fn a_record_that_is_not_a_map_is_an_error_not_a_panic() {
        assert_eq!(decode(text("just a string")), None);
        assert_eq!(decode(Value::Array(vec![])), None);
    }

    #[test]
    fn asn_accepts_numbers_and_as_strings() {
        assert_eq!(Scalar::Uint(15169).asn(), Some(15169));
        assert_eq!(Scalar::Int(13335).asn(), Some(13335));
        assert_eq!(Scalar::Str("AS3320").asn(), Some(3320));
        assert_eq!(Scalar::Str("as3320").asn(), Some(3320));
        assert_eq!(Scalar::Str(" 64512 ").asn(), Some(64512));
        for bad in [
            Scalar::Uint(0),
            Scalar::Uint(u64::from(u32::MAX) + 1),
            Scalar::Int(-1),
            Scalar::Str("AS"),
            Scalar::Str("ASx"),
            Scalar::Str("é"),
            Scalar::Float(1.0),
            Scalar::Other,
        ] {
            assert_eq!(bad.asn(), None, "{bad:?}");
        }
    }

    #[test]
    fn degrees_and_radius_are_lenient_but_finite() {
        assert_eq!(Scalar::Float(51.5).degrees(), Some(51.5));
        assert_eq!(Scalar::Int(-3).degrees(), Some(-3.0));
        assert_eq!(Scalar::Str(" 2.35 ").degrees(), Some(2.35));
        assert_eq!(Scalar::Float(f64::NAN).degrees(), None);
        assert_eq!(Scalar::Str("inf").degrees(), None);
        assert_eq!(Scalar::Uint(1000).radius(), Some(1000));
        assert_eq!(Scalar::Uint(1 << 40).radius(), Some(u16::MAX));
        assert_eq!(Scalar::Float(12.6).radius(), Some(13));
        assert_eq!(Scalar::Float(1e300).radius(), Some(u16::MAX));
        assert_eq!(Scalar::Float(-1.0).radius(), None);
        assert_eq!(Scalar::Int(-5).radius(), None);
    }

    #[test]
    fn names_are_trimmed_non_empty_and_capped() {
        assert_eq!(Scalar::Str(" Paris ").name(), Some("Paris"));
        assert_eq!(Scalar::Str("").name(), None);
        assert_eq!(Scalar::Uint(3).name(), None);
        let long = "é".repeat(200); // 400 bytes, two per char
        let cut = Scalar::Str(&long).name().unwrap_or_default();
        assert_eq!(cut.len(), MAX_NAME_BYTES);
        let odd = format!("a{long}");
        let cut = Scalar::Str(&odd).name().unwrap_or_default();
        assert_eq!(cut.len(), MAX_NAME_BYTES - 1, "cut on a char boundary");
    }

    #[test]
    fn nested_coordinates_win_and_radius_defaults() {
        let raw = Raw {
            nested: Coordinates {
                lat: Some(48.85),
                lon: Some(2.35),
            },
            top: Coordinates {
                lat: Some(1.0),
                lon: Some(1.0),
            },
            ..Raw::default()
        };
        assert_eq!(
            raw.location(),
            Location::new(48.85, 2.35, ASSUMED_ACCURACY_KM)
        );
        let top_only = Raw {
            top: Coordinates {
                lat: Some(1.0),
                lon: Some(2.0),
            },
            accuracy_km: Some(5),
            ..Raw::default()
        };
        assert_eq!(top_only.location(), Location::new(1.0, 2.0, 5));
        let half = Raw {
            nested: Coordinates {
                lat: Some(1.0),
                lon: None,
            },
            ..Raw::default()
        };
        assert_eq!(half.location(), None);
    }
}
