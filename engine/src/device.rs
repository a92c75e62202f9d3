//! Device: a fingerprint of the stable HTTP traits of the client software.
//!
//! The traits are the User-Agent's browser family and major version, the
//! platform (from `Sec-CH-UA-Platform` when sent, else the User-Agent) and the
//! primary Accept-Language tag. Minor version bumps do not change the
//! fingerprint; a different browser, platform or language does.
//!
//! The User-Agent classifier here is deliberately small: one pass over the
//! words of a bounded prefix of the header, looking for a handful of products.
//! A full parser (and JA4 from the TLS ClientHello) arrive with the device
//! fingerprint work.

use std::fmt;

use http::HeaderMap;
use http::header::{ACCEPT_LANGUAGE, USER_AGENT};

/// Longest prefix of a header the device stage reads, in bytes. Real
/// User-Agents are well under this; longer ones are truncated, not rejected.
const MAX_TRAIT_BYTES: usize = 512;
/// Longest language tag kept.
const MAX_LANG_BYTES: usize = 16;

/// A browser family. Discriminants are part of [`DeviceId`]: never reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Browser {
    /// Chromium-based Chrome (desktop or iOS `CriOS`).
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

/// A stable 64-bit identifier of a device's traits: equal traits give equal
/// ids on every node and across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub u64);

/// What the device stage observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The fingerprint of the traits below.
    pub id: DeviceId,
    /// Browser family.
    pub browser: Browser,
    /// Browser major version, 0 when unknown.
    pub major: u16,
    /// Platform.
    pub platform: Platform,
    /// Primary Accept-Language tag, lower case, at most 16 bytes; empty when absent.
    pub language: LanguageTag,
}

/// A short lower-case language tag stored inline (no allocation per request).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LanguageTag {
    len: u8,
    bytes: [u8; MAX_LANG_BYTES],
}

/// The device stage.
#[derive(Debug, Clone, Default)]
pub struct DeviceStage {
    _private: (),
}

// === impl DeviceStage ===

impl DeviceStage {
    /// Fingerprints the client software of a request. Never fails: missing or
    /// garbled headers are traits too (`Other`, `Unknown`, empty language).
    pub fn observe(&self, headers: &HeaderMap) -> Device {
        let ua = headers
            .get(USER_AGENT)
            .map(|v| bounded(v.as_bytes()))
            .unwrap_or_default();
        let (browser, major, ua_platform) = classify(ua);
        let platform = headers
            .get("sec-ch-ua-platform")
            .and_then(|v| platform_hint(bounded(v.as_bytes())))
            .unwrap_or(ua_platform);
        let language = headers
            .get(ACCEPT_LANGUAGE)
            .map(|v| LanguageTag::primary(bounded(v.as_bytes())))
            .unwrap_or_default();
        let id = device_id(browser, major, platform, &language);
        Device {
            id,
            browser,
            major,
            platform,
            language,
        }
    }
}

fn bounded(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.len().min(MAX_TRAIT_BYTES)]
}

/// The id packs the traits instead of hashing them: browser, platform and
/// major version verbatim, the language tag through 32-bit FNV-1a. It is the
/// same on every node and release as long as the enum discriminants stay
/// fixed (they are explicit for that reason), and it costs nothing.
fn device_id(browser: Browser, major: u16, platform: Platform, lang: &LanguageTag) -> DeviceId {
    let lang = lang.as_bytes().iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    });
    DeviceId(
        (u64::from(browser as u8) << 56)
            | (u64::from(platform as u8) << 48)
            | (u64::from(major) << 32)
            | u64::from(lang),
    )
}

/// Product names (the part before `/`), most specific first: Edge and Opera
/// also claim Chrome, and Chrome also claims Safari.
const PRODUCTS: &[(&[u8], Browser)] = &[
    (b"Edg", Browser::Edge),
    (b"EdgA", Browser::Edge),
    (b"EdgiOS", Browser::Edge),
    (b"OPR", Browser::Opera),
    (b"SamsungBrowser", Browser::Samsung),
    (b"Firefox", Browser::Firefox),
    (b"FxiOS", Browser::Firefox),
    (b"CriOS", Browser::Chrome),
    (b"Chrome", Browser::Chrome),
    (b"curl", Browser::Curl),
    (b"Wget", Browser::Tool),
    (b"python-requests", Browser::Tool),
    (b"python-httpx", Browser::Tool),
    (b"Go-http-client", Browser::Tool),
    (b"okhttp", Browser::Tool),
];

/// Platform words of the User-Agent comment, most specific first: Android
/// UAs also say Linux.
const PLATFORMS: &[(&[u8], Platform)] = &[
    (b"Android", Platform::Android),
    (b"iPhone", Platform::Ios),
    (b"iPad", Platform::Ios),
    (b"CrOS", Platform::ChromeOs),
    (b"Windows", Platform::Windows),
    (b"Macintosh", Platform::MacOs),
    (b"Linux", Platform::Linux),
    (b"X11", Platform::Linux),
];

/// Browser, major version and platform from one pass over the words of a
/// User-Agent. A substring search per known token was measured at ~3 µs per
/// request; this is one scan.
fn classify(ua: &[u8]) -> (Browser, u16, Platform) {
    let mut product: Option<(usize, u16)> = None;
    let mut platform: Option<usize> = None;
    let mut safari = false;
    let mut version = None;
    for word in ua.split(|b| matches!(b, b' ' | b';' | b'(' | b')' | b',')) {
        if word.is_empty() {
            continue;
        }
        if let Some(slash) = word.iter().position(|b| *b == b'/') {
            let (name, rest) = word.split_at(slash);
            let rest = rest.get(1..).unwrap_or_default();
            if let Some(rank) = PRODUCTS.iter().position(|(n, _)| *n == name) {
                if product.is_none_or(|(r, _)| rank < r) {
                    product = Some((rank, major(rest)));
                }
            } else if name == b"Safari" {
                safari = true;
            } else if name == b"Version" {
                version = Some(major(rest));
            }
        } else if let Some(rank) = PLATFORMS.iter().position(|(n, _)| *n == word)
            && platform.is_none_or(|r| rank < r)
        {
            platform = Some(rank);
        }
    }
    let platform = platform.map_or(Platform::Unknown, |r| PLATFORMS[r].1);
    let (browser, major) = match (product, safari, version) {
        (Some((rank, major)), _, _) => (PRODUCTS[rank].1, major),
        // Safari names its version in `Version/x.y` next to `Safari/`.
        (None, true, Some(major)) => (Browser::Safari, major),
        _ => (Browser::Other, 0),
    };
    (browser, major, platform)
}

/// `Sec-CH-UA-Platform` is a quoted string such as `"Windows"`.
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

/// The leading decimal digits of `rest`, saturating at `u16::MAX`.
fn major(rest: &[u8]) -> u16 {
    let n = rest
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .take(5)
        .fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0'));
    u16::try_from(n).unwrap_or(u16::MAX)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn observe(pairs: &[(&'static str, &'static str)]) -> Device {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        DeviceStage::default().observe(&h)
    }

    const CHROME_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.86 Safari/537.36";
    const EDGE_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.70";
    const SAFARI_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15";
    const FIREFOX_LINUX: &str =
        "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
    const CHROME_ANDROID: &str = "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";
    const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1";

    #[test]
    fn classifies_common_user_agents() {
        let cases = [
            (CHROME_WIN, Browser::Chrome, 131, Platform::Windows),
            (EDGE_WIN, Browser::Edge, 131, Platform::Windows),
            (SAFARI_MAC, Browser::Safari, 18, Platform::MacOs),
            (FIREFOX_LINUX, Browser::Firefox, 133, Platform::Linux),
            (CHROME_ANDROID, Browser::Chrome, 131, Platform::Android),
            (SAFARI_IPHONE, Browser::Safari, 18, Platform::Ios),
            ("curl/7.88.1", Browser::Curl, 7, Platform::Unknown),
            (
                "python-requests/2.32.3",
                Browser::Tool,
                2,
                Platform::Unknown,
            ),
            ("", Browser::Other, 0, Platform::Unknown),
        ];
        for (ua, browser, major, platform) in cases {
            let d = observe(&[("user-agent", ua)]);
            assert_eq!(
                (d.browser, d.major, d.platform),
                (browser, major, platform),
                "{ua}"
            );
        }
    }

    #[test]
    fn minor_update_keeps_the_id_major_update_changes_it() {
        let a = observe(&[(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0.6778.86 Safari/537.36",
        )]);
        let b = observe(&[(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0.6778.108 Safari/537.36",
        )]);
        let c = observe(&[(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Chrome/132.0.6834.57 Safari/537.36",
        )]);
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
    }

    #[test]
    fn client_hint_platform_wins_over_user_agent() {
        let d = observe(&[
            ("user-agent", CHROME_WIN),
            ("sec-ch-ua-platform", "\"macOS\""),
        ]);
        assert_eq!(d.platform, Platform::MacOs);
        let d = observe(&[
            ("user-agent", CHROME_WIN),
            ("sec-ch-ua-platform", "\"Plan9\""),
        ]);
        assert_eq!(
            d.platform,
            Platform::Windows,
            "unknown hints fall back to the UA"
        );
    }

    #[test]
    fn language_is_part_of_the_device() {
        let en = observe(&[
            ("user-agent", FIREFOX_LINUX),
            ("accept-language", "en-US,en;q=0.5"),
        ]);
        let de = observe(&[
            ("user-agent", FIREFOX_LINUX),
            ("accept-language", "de-DE,de;q=0.9"),
        ]);
        assert_eq!(en.language.as_str(), "en-us");
        assert_ne!(en.id, de.id);
    }

    #[test]
    fn hostile_values_are_bounded() {
        let long = "9".repeat(10_000);
        let mut h = HeaderMap::new();
        h.insert("user-agent", format!("Chrome/{long}").parse().unwrap());
        h.insert("accept-language", format!("{long},en").parse().unwrap());
        let d = DeviceStage::default().observe(&h);
        assert_eq!(d.browser, Browser::Chrome);
        assert_eq!(d.major, u16::MAX);
        assert_eq!(d.language.as_bytes().len(), MAX_LANG_BYTES);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(ua in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
                                           lang in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let mut h = HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_bytes(&ua) { h.insert("user-agent", v); }
            if let Ok(v) = http::HeaderValue::from_bytes(&lang) { h.insert("accept-language", v); }
            let d = DeviceStage::default().observe(&h);
            proptest::prop_assert!(d.language.as_str().len() <= MAX_LANG_BYTES);
        }
    }
}
