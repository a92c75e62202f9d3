//! User-Agent parsing with the ua-parser project's patterns, cached.
//!
//! The `ua-parser` crate (the uap project's own Rust implementation) matches
//! the uap-core patterns (`engine/data/uap-regexes.json`) in about 5 µs per
//! User-Agent; compiling them takes ~0.1 s once per process. Browsers send
//! the same User-Agent on every request, so results are cached per value in
//! a bounded `moka` cache keyed by a SipHash of the bytes under a random
//! per-process key (a client cannot aim a collision at another's entry).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::LazyLock;

use moka::sync::Cache;

use super::{Browser, DeviceClass, Platform};

/// The uap-core patterns, as converted by `engine/data/update-uap-regexes.py`.
static PATTERNS: &str = include_str!("../../data/uap-regexes.json");

/// The compiled patterns, or `None` if they failed to load (the test
/// `patterns_load` keeps that from shipping; at run time every User-Agent
/// would then read as `Other`).
static EXTRACTOR: LazyLock<Option<ua_parser::Extractor<'static>>> = LazyLock::new(|| {
    let regexes: ua_parser::Regexes<'static> = serde_json::from_str(PATTERNS).ok()?;
    ua_parser::Extractor::try_from(regexes).ok()
});

/// Distinct User-Agents whose parse is kept.
const CACHE_ENTRIES: u64 = 16_384;

/// What a User-Agent says, reduced to the traits the device id keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct UaTraits {
    pub browser: Browser,
    /// 16-bit FNV-1a of the uap family name, so that two families the
    /// [`Browser`] enum does not name still differ.
    pub family: u16,
    pub major: u16,
    pub platform: Platform,
    pub class: DeviceClass,
}

/// The parser and its cache.
#[derive(Clone)]
pub(crate) struct UaParser {
    cache: Cache<u64, UaTraits>,
    hasher: RandomState,
}

impl UaParser {
    pub(crate) fn new() -> Self {
        Self {
            cache: Cache::builder().max_capacity(CACHE_ENTRIES).build(),
            hasher: RandomState::new(),
        }
    }

    /// The traits of `ua` (already bounded by the caller).
    pub(crate) fn traits(&self, ua: &[u8]) -> UaTraits {
        let key = self.hasher.hash_one(ua);
        if let Some(t) = self.cache.get(&key) {
            return t;
        }
        let t = parse(ua);
        self.cache.insert(key, t);
        t
    }
}

impl std::fmt::Debug for UaParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UaParser")
            .field("cached", &self.cache.entry_count())
            .finish()
    }
}

/// Parses without the cache.
pub(crate) fn parse(ua: &[u8]) -> UaTraits {
    let unknown = UaTraits {
        browser: Browser::Other,
        family: 0,
        major: 0,
        platform: Platform::Unknown,
        class: DeviceClass::Unknown,
    };
    let (Ok(ua), Some(extractor)) = (std::str::from_utf8(ua), EXTRACTOR.as_ref()) else {
        return unknown;
    };
    if ua.is_empty() {
        return unknown;
    }
    let (agent, os, device) = extractor.extract(ua);
    let (family, major) = agent
        .map(|a| (a.family.to_string(), a.major.map_or(0, major)))
        .unwrap_or_else(|| ("Other".to_owned(), 0));
    let os = os.map(|o| o.os.to_string()).unwrap_or_default();
    let device = device.map(|d| d.device.to_string()).unwrap_or_default();
    let browser = browser(&family);
    let platform = platform(&os);
    UaTraits {
        browser,
        family: fnv16(family.as_bytes()),
        major,
        platform,
        class: class(ua, browser, platform, &device),
    }
}

fn major(s: &str) -> u16 {
    s.parse::<u32>()
        .map_or(0, |n| u16::try_from(n).unwrap_or(u16::MAX))
}

fn browser(family: &str) -> Browser {
    match family {
        "Chrome"
        | "Chrome Mobile"
        | "Chrome Mobile iOS"
        | "Chrome Mobile WebView"
        | "Chromium"
        | "HeadlessChrome" => Browser::Chrome,
        "Edge" | "Edge Mobile" => Browser::Edge,
        "Firefox" | "Firefox Mobile" | "Firefox iOS" => Browser::Firefox,
        "Safari" | "Mobile Safari" | "Mobile Safari UI/WKWebView" => Browser::Safari,
        "Opera" | "Opera Mobile" => Browser::Opera,
        "Samsung Internet" => Browser::Samsung,
        "curl" => Browser::Curl,
        "Python Requests" | "Wget" | "Go-http-client" | "okhttp" | "Python-urllib"
        | "python-httpx" | "aiohttp" | "Apache-HttpClient" | "Java" | "node-fetch" => Browser::Tool,
        _ => Browser::Other,
    }
}

fn platform(os: &str) -> Platform {
    match os {
        "Windows" => Platform::Windows,
        "Mac OS X" | "macOS" => Platform::MacOs,
        "iOS" | "iPadOS" => Platform::Ios,
        "Android" => Platform::Android,
        "Chrome OS" | "ChromeOS" => Platform::ChromeOs,
        "Linux" | "Ubuntu" | "Fedora" | "Debian" | "FreeBSD" | "OpenBSD" | "NetBSD" => {
            Platform::Linux
        }
        _ => Platform::Unknown,
    }
}

/// uap names devices, not classes; the class follows from the device name,
/// the platform and the `Mobile` token browsers add on phones.
fn class(ua: &str, browser: Browser, platform: Platform, device: &str) -> DeviceClass {
    if device == "Spider" {
        return DeviceClass::Bot;
    }
    if matches!(browser, Browser::Curl | Browser::Tool) || !ua.starts_with("Mozilla/") {
        return DeviceClass::Tool;
    }
    match platform {
        Platform::Ios if device == "iPad" => DeviceClass::Tablet,
        Platform::Ios => DeviceClass::Mobile,
        Platform::Android if ua.contains("Mobile") => DeviceClass::Mobile,
        Platform::Android => DeviceClass::Tablet,
        Platform::Windows | Platform::MacOs | Platform::Linux | Platform::ChromeOs => {
            DeviceClass::Desktop
        }
        Platform::Unknown => DeviceClass::Unknown,
    }
}

/// 32-bit FNV-1a: stable across releases and nodes (the device id is
/// compared between them), which std's hashers do not promise.
pub(crate) fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

pub(crate) fn fnv16(bytes: &[u8]) -> u16 {
    let h = fnv1a(bytes);
    // xor-fold to 16 bits, as FNV's authors recommend for short hashes.
    let [a, b, c, d] = h.to_be_bytes();
    u16::from_be_bytes([a ^ c, b ^ d])
}

#[cfg(test)]
pub(crate) fn patterns_loaded() -> bool {
    EXTRACTOR.is_some()
}
