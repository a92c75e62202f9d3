//! Device: what the client software is, from its TLS stack and its stable
//! HTTP traits, and how two observations of one session compare.
//!
//! The traits are the User-Agent's browser family and major version, the
//! operating system and device class (the ua-parser project's patterns, see
//! [`ua`]), the client hints `Sec-CH-UA-Platform` and `Sec-CH-UA-Mobile`
//! (which win over the User-Agent when sent), the primary Accept-Language
//! tag, and a coarse shape of the header set: whether the client sends
//! Chromium's client hints, fetch metadata (`Sec-Fetch-*`) and
//! Accept-Language at all. A copied User-Agent does not bring those along.
//!
//! [`DeviceId`] packs the traits that a browser's minor update leaves alone,
//! so it is equal across minor updates and equal on every node. The TLS
//! fingerprint of the connection (JA4, see [`crate::fingerprint`]) is kept
//! beside the traits and compared on its own.

mod ua;

pub(crate) use ua::fnv1a;

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;

use http::header::{ACCEPT_LANGUAGE, USER_AGENT};
use http::{HeaderMap, HeaderName};

use crate::client_ip::TrustedProxies;
use crate::fingerprint::{Ja4Form, TlsFingerprint, TlsMatch, TlsSource, UpstreamFingerprints};
use crate::ja4::Ja4;
use crate::request::RequestView;

/// Longest prefix of a header the device stage reads, in bytes. Real
/// User-Agents are well under this; longer ones are truncated, not rejected.
const MAX_TRAIT_BYTES: usize = 512;

// The traits' header names, built once: looked up by a `&str`, a name is
// validated, lower-cased and matched against the standard names on every
// request before it is hashed.
static SEC_CH_UA: HeaderName = HeaderName::from_static("sec-ch-ua");
static SEC_CH_UA_MOBILE: HeaderName = HeaderName::from_static("sec-ch-ua-mobile");
static SEC_CH_UA_PLATFORM: HeaderName = HeaderName::from_static("sec-ch-ua-platform");
static SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// Longest language tag kept.
const MAX_LANG_BYTES: usize = 16;
/// Most major versions a browser may move forward within one session and
/// still count as the same browser updated.
const MAX_UPGRADE_STEP: u16 = 2;

/// A browser family. Discriminants are stable: never reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Browser {
    /// Chromium-based Chrome (desktop, Android, iOS `CriOS`, headless).
    Chrome = 1,
    /// Microsoft Edge.
    Edge = 2,
    /// Mozilla Firefox (desktop or iOS `FxiOS`).
    Firefox = 3,
    /// Apple Safari.
    Safari = 4,
    /// Opera.
    Opera = 5,
    /// Samsung Internet.
    Samsung = 6,
    /// The curl command-line client.
    Curl = 7,
    /// Another HTTP library or tool that names itself (wget, python, Go, …).
    Tool = 8,
    /// Nothing recognised, or no User-Agent.
    Other = 9,
}

/// An operating system family. Discriminants are part of [`DeviceId`]:
/// never reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Platform {
    /// Microsoft Windows.
    Windows = 1,
    /// Apple macOS.
    MacOs = 2,
    /// Apple iOS and iPadOS.
    Ios = 3,
    /// Google Android.
    Android = 4,
    /// ChromeOS.
    ChromeOs = 5,
    /// Linux and other Unix desktops.
    Linux = 6,
    /// Not known.
    Unknown = 7,
}

/// What kind of device. Discriminants are part of [`DeviceId`]: never reuse
/// one; at most 15.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DeviceClass {
    /// A desktop or laptop browser.
    Desktop = 1,
    /// A phone.
    Mobile = 2,
    /// A tablet.
    Tablet = 3,
    /// A command-line tool or HTTP library.
    Tool = 4,
    /// A crawler that says so.
    Bot = 5,
    /// Not known.
    Unknown = 6,
}

/// A stable 64-bit identifier of a device's traits: equal traits give equal
/// ids on every node and across restarts.
///
/// Layout, high bits first: browser family (16-bit hash of the uap family
/// name), platform (8), class (4), major version (16), language (20-bit
/// hash). The major version sits in its own field so that an update can be
/// told from another browser ([`DeviceId::same_but_major`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub u64);

/// Which header families a client sends at all: stable for one browser,
/// different between browsers and tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct HeaderShape(u8);

/// What the device stage observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The fingerprint of the traits below (not of the TLS fingerprint).
    pub id: DeviceId,
    /// Browser family.
    pub browser: Browser,
    /// Browser major version, 0 when unknown.
    pub major: u16,
    /// Platform.
    pub platform: Platform,
    /// Device class.
    pub class: DeviceClass,
    /// Primary Accept-Language tag, lower case, at most 16 bytes; empty when absent.
    pub language: LanguageTag,
    /// Which header families were sent.
    pub shape: HeaderShape,
    /// The TLS fingerprint of the connection.
    pub tls: TlsFingerprint,
}

/// What a session remembers of its device: 40 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceSummary {
    /// The traits.
    pub id: DeviceId,
    /// The header shape.
    pub shape: HeaderShape,
    /// Where the TLS fingerprint came from.
    pub tls_source: TlsSource,
    /// The JA4, when known, in the form [`DeviceSummary::ja4_form`] says:
    /// the resumption-stable form of a captured hello where it differs
    /// from the spec form ([`TlsFingerprint::baseline_ja4`]).
    pub ja4: Option<Ja4>,
    /// Which form `ja4` is.
    pub ja4_form: Ja4Form,
}

/// How the HTTP traits of two observations compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TraitMatch {
    /// The same traits.
    Same,
    /// The same browser, platform, class and language, a major version or
    /// two newer: an update.
    Upgraded,
    /// Another browser, platform, class, language or header shape.
    Different,
}

/// How a request's device compares with a session's: traits and TLS apart,
/// so that each can be weighed (a copied User-Agent shows up as `traits:
/// Same, tls: Different`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceMatch {
    /// The HTTP traits.
    pub traits: TraitMatch,
    /// The TLS fingerprints.
    pub tls: TlsMatch,
}

/// A short lower-case language tag stored inline (no allocation per request).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LanguageTag {
    len: u8,
    bytes: [u8; MAX_LANG_BYTES],
}

/// The device stage.
#[derive(Debug)]
pub struct DeviceStage {
    ua: ua::UaParser,
    /// Replaced whole on reload ([`DeviceStage::set_upstream`]).
    upstream: ArcSwap<UpstreamFingerprints>,
}

// === impl DeviceStage ===

impl Clone for DeviceStage {
    fn clone(&self) -> Self {
        Self {
            ua: self.ua.clone(),
            upstream: ArcSwap::new(self.upstream.load_full()),
        }
    }
}

impl Default for DeviceStage {
    fn default() -> Self {
        Self::new(UpstreamFingerprints::default())
    }
}

impl DeviceStage {
    /// A stage that believes `upstream` fingerprint headers from trusted
    /// balancers.
    pub fn new(upstream: UpstreamFingerprints) -> Self {
        Self {
            ua: ua::UaParser::new(),
            upstream: ArcSwap::from_pointee(upstream),
        }
    }

    /// Believes `upstream` fingerprint headers from now on; requests under
    /// way finish with the ones they started with.
    pub fn set_upstream(&self, upstream: UpstreamFingerprints) {
        self.upstream.store(Arc::new(upstream));
    }

    /// Fingerprints the client of a request. Never fails: missing or garbled
    /// headers are traits too (`Other`, `Unknown`, empty language). The TLS
    /// fingerprint is a trusted balancer's, when it sent one and the peer is
    /// in a set `upstream` names; otherwise the one the proxy captured.
    pub fn observe(&self, request: &RequestView<'_>, trusted: &TrustedProxies) -> Device {
        let tls = self
            .upstream
            .load()
            .read(trusted, request.peer, request.headers)
            .unwrap_or(request.tls);
        self.traits(request.headers, tls)
    }

    /// The HTTP traits of `headers`, with `tls` as the connection's
    /// fingerprint.
    pub fn traits(&self, headers: &HeaderMap, tls: TlsFingerprint) -> Device {
        let ua = headers
            .get(USER_AGENT)
            .map(|v| bounded(v.as_bytes()))
            .unwrap_or_default();
        let t = self.ua.traits(ua);
        let platform = headers
            .get(&SEC_CH_UA_PLATFORM)
            .and_then(|v| platform_hint(bounded(v.as_bytes())))
            .unwrap_or(t.platform);
        let class = match headers.get(&SEC_CH_UA_MOBILE).map(|v| v.as_bytes()) {
            Some(b"?1") => DeviceClass::Mobile,
            _ => t.class,
        };
        let language = headers
            .get(ACCEPT_LANGUAGE)
            .map(|v| LanguageTag::primary(bounded(v.as_bytes())))
            .unwrap_or_default();
        let shape = HeaderShape::of(headers);
        let id = DeviceId::pack(t.family, platform, class, t.major, &language);
        Device {
            id,
            browser: t.browser,
            major: t.major,
            platform,
            class,
            language,
            shape,
            tls,
        }
    }
}

fn bounded(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.len().min(MAX_TRAIT_BYTES)]
}

fn platform_hint(value: &[u8]) -> Option<Platform> {
    let v = value.trim_ascii();
    let v = v.strip_prefix(b"\"").unwrap_or(v);
    let v = v.strip_suffix(b"\"").unwrap_or(v);
    let p = match v {
        b"Windows" => Platform::Windows,
        b"macOS" => Platform::MacOs,
        b"iOS" => Platform::Ios,
        b"Android" => Platform::Android,
        b"Chrome OS" | b"ChromeOS" => Platform::ChromeOs,
        b"Linux" => Platform::Linux,
        _ => return None,
    };
    Some(p)
}

// === impl Device ===

impl Device {
    /// What a session keeps of this device.
    pub fn summary(&self) -> DeviceSummary {
        let (ja4, ja4_form) = self.tls.baseline_ja4();
        DeviceSummary {
            id: self.id,
            shape: self.shape,
            tls_source: self.tls.source,
            ja4,
            ja4_form,
        }
    }

    /// Compares this request's device with a session's `baseline`.
    pub fn compare(&self, baseline: &DeviceSummary) -> DeviceMatch {
        let traits = if self.id == baseline.id && self.shape == baseline.shape {
            TraitMatch::Same
        } else if self.shape == baseline.shape && self.id.same_but_major(baseline.id) && {
            let (old, new) = (baseline.id.major(), self.id.major());
            new > old && new - old <= MAX_UPGRADE_STEP
        } {
            TraitMatch::Upgraded
        } else {
            TraitMatch::Different
        };
        let tls = self.tls.compare(&baseline.tls());
        DeviceMatch { traits, tls }
    }
}

impl DeviceSummary {
    /// No device: a session bound to a user before its first request.
    pub const NONE: DeviceSummary = DeviceSummary {
        id: DeviceId(0),
        shape: HeaderShape(0),
        tls_source: TlsSource::None,
        ja4: None,
        ja4_form: Ja4Form::Spec,
    };

    /// The TLS fingerprint as remembered, its JA4 in the field of its form
    /// (JA3 is not kept: it is never compared).
    pub fn tls(&self) -> TlsFingerprint {
        let (ja4, ja4_stable) = match self.ja4_form {
            Ja4Form::Spec => (self.ja4, None),
            Ja4Form::Stable => (None, self.ja4),
        };
        TlsFingerprint {
            source: self.tls_source,
            ja4,
            ja4_stable,
            ja3: None,
        }
    }
}

// === impl DeviceId ===

impl DeviceId {
    const MAJOR_SHIFT: u32 = 20;

    /// Packs the traits: no hashing of the whole, so fields can be compared
    /// one by one, and the id is the same on every node and release as long
    /// as the enum discriminants stay fixed (they are explicit for that).
    fn pack(
        family: u16,
        platform: Platform,
        class: DeviceClass,
        major: u16,
        lang: &LanguageTag,
    ) -> DeviceId {
        let lang = ua::fnv1a(lang.as_bytes());
        // xor-fold to the 20 bits the layout gives the language.
        let lang = u64::from((lang >> 20) ^ (lang & 0x000f_ffff));
        DeviceId(
            (u64::from(family) << 48)
                | (u64::from(platform as u8) << 40)
                | (u64::from(class as u8 & 0x0f) << 36)
                | (u64::from(major) << Self::MAJOR_SHIFT)
                | lang,
        )
    }

    /// The browser major version packed in the id.
    pub fn major(self) -> u16 {
        // The mask leaves 16 bits: the conversion cannot fail.
        u16::try_from((self.0 >> Self::MAJOR_SHIFT) & 0xffff).unwrap_or(0)
    }

    /// Whether `other` has the same traits but perhaps another major version.
    pub fn same_but_major(self, other: DeviceId) -> bool {
        let mask = !(0xffffu64 << Self::MAJOR_SHIFT);
        self.0 & mask == other.0 & mask
    }

    /// The id with its major version zeroed: one value per browser, platform,
    /// class and language, whatever the version. What a user profile counts.
    pub fn without_major(self) -> DeviceId {
        DeviceId(self.0 & !(0xffffu64 << Self::MAJOR_SHIFT))
    }

    /// The 16-bit browser family hash packed in the id.
    pub fn family(self) -> u16 {
        u16::try_from(self.0 >> 48).unwrap_or(0)
    }

    /// The platform byte packed in the id.
    pub fn platform_code(self) -> u8 {
        u8::try_from((self.0 >> 40) & 0xff).unwrap_or(0)
    }
}

// === impl HeaderShape ===

impl HeaderShape {
    const CLIENT_HINTS: u8 = 1;
    const FETCH_METADATA: u8 = 2;
    const ACCEPT_LANGUAGE: u8 = 4;

    /// The shape of a request's header set. Only families a browser sends on
    /// every request are read: Chromium's low-entropy client hints
    /// (`Sec-CH-UA`), fetch metadata (`Sec-Fetch-Site`) and Accept-Language.
    /// (Accept-Encoding is not: browsers change it for media range requests.)
    pub fn of(headers: &HeaderMap) -> Self {
        let mut bits = 0;
        if headers.contains_key(&SEC_CH_UA) {
            bits |= Self::CLIENT_HINTS;
        }
        if headers.contains_key(&SEC_FETCH_SITE) {
            bits |= Self::FETCH_METADATA;
        }
        if headers.contains_key(ACCEPT_LANGUAGE) {
            bits |= Self::ACCEPT_LANGUAGE;
        }
        Self(bits)
    }

    /// The bits, for logs: 1 client hints, 2 fetch metadata, 4 Accept-Language.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// A shape from [`HeaderShape::bits`]; unknown bits are dropped.
    pub fn from_bits(bits: u8) -> Self {
        Self(bits & (Self::CLIENT_HINTS | Self::FETCH_METADATA | Self::ACCEPT_LANGUAGE))
    }
}

// === impl LanguageTag ===

impl LanguageTag {
    /// The first language range of an Accept-Language value, lower-cased and
    /// truncated to 16 bytes; only ASCII letters, digits and `-` are kept.
    pub fn primary(value: &[u8]) -> Self {
        let mut tag = Self::default();
        let first = value
            .split(|b| *b == b',' || *b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        for b in first {
            if usize::from(tag.len) == MAX_LANG_BYTES {
                break;
            }
            if b.is_ascii_alphanumeric() || *b == b'-' {
                tag.bytes[usize::from(tag.len)] = b.to_ascii_lowercase();
                tag.len += 1;
            }
        }
        tag
    }

    /// The tag's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The tag as text; the constructor keeps only ASCII.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl fmt::Debug for LanguageTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LanguageTag({:?})", self.as_str())
    }
}

// === impl Browser, Platform ===

impl Browser {
    /// Lower-case name for logs and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Browser::Chrome => "chrome",
            Browser::Edge => "edge",
            Browser::Firefox => "firefox",
            Browser::Safari => "safari",
            Browser::Opera => "opera",
            Browser::Samsung => "samsung",
            Browser::Curl => "curl",
            Browser::Tool => "tool",
            Browser::Other => "other",
        }
    }
}

impl Platform {
    /// Lower-case name for logs and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Windows => "windows",
            Platform::MacOs => "macos",
            Platform::Ios => "ios",
            Platform::Android => "android",
            Platform::ChromeOs => "chromeos",
            Platform::Linux => "linux",
            Platform::Unknown => "unknown",
        }
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl DeviceClass {
    /// Lower-case name for logs and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceClass::Desktop => "desktop",
            DeviceClass::Mobile => "mobile",
            DeviceClass::Tablet => "tablet",
            DeviceClass::Tool => "tool",
            DeviceClass::Bot => "bot",
            DeviceClass::Unknown => "unknown",
        }
    }
}

impl TraitMatch {
    /// `same`, `upgraded` or `different`.
    pub fn as_str(self) -> &'static str {
        match self {
            TraitMatch::Same => "same",
            TraitMatch::Upgraded => "upgraded",
            TraitMatch::Different => "different",
        }
    }
}

#[cfg(test)]
mod tests;
