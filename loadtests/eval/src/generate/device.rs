//! Devices: what a browser sends (User-Agent, Accept-Language, client hints,
//! fetch metadata) and its TLS stack's JA4, as a function of browser, OS,
//! version and language.
//!
//! Strings are what the browsers sent in January 2025: Chromium's reduced
//! User-Agent (`Chrome/131.0.0.0`: minor versions never show), Firefox's
//! `rv:` form, Safari's `Version/18.2`. JA4 values are those of the stacks,
//! with a change inside the family (same ciphers, other extensions) at the
//! versions where the stack added an extension: Chromium 132, Firefox 135,
//! Safari 18.

use rand::RngExt;

use super::Rng;

/// Browser and OS: one TLS stack and one header style each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    ChromeWindows,
    ChromeMac,
    ChromeLinux,
    ChromeOs,
    EdgeWindows,
    EdgeMac,
    FirefoxWindows,
    FirefoxMac,
    FirefoxLinux,
    SafariMac,
    SafariIphone,
    ChromeIphone,
    ChromeAndroid,
    SamsungAndroid,
}

/// A browser installation. Versions move with updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Device {
    pub kind: Kind,
    /// Browser major version.
    pub major: u16,
    /// Browser minor version, where the User-Agent shows it (Safari, Chrome
    /// on iOS build numbers); otherwise counted but invisible.
    pub minor: u16,
    /// For Chrome on iOS: the iOS version (its TLS stack and UA follow iOS).
    pub os_major: u16,
    /// Primary language tag, e.g. `de-DE`.
    pub lang: String,
    /// Firefox ESR: takes no major updates in this window.
    pub esr: bool,
}

/// What one request carries from its client, ready for an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub ua: String,
    pub accept_language: Option<String>,
    pub ch_platform: Option<String>,
    pub ch_mobile: Option<String>,
    pub ch_ua: Option<String>,
    pub fetch_metadata: bool,
    pub ja4: String,
}

/// The engine-visible traits of a fingerprint: used to make sure a
/// "different device" really differs in something observable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Traits {
    family: &'static str,
    major: u16,
    platform: &'static str,
    mobile: bool,
    lang: String,
    shape: (bool, bool, bool),
    ja4: String,
}

/// Non-browser TLS stacks attackers script replays with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tool {
    Curl,
    PythonRequests,
    Go,
    Node,
}

/// JA4 of Chromium up to 131.
pub(crate) const JA4_CHROMIUM_131: &str = "t13d1516h2_8daaf6152771_02713d6af862";
/// JA4 of Chromium from 132: one more extension, same ciphers.
pub(crate) const JA4_CHROMIUM_132: &str = "t13d1517h2_8daaf6152771_b6f405a00624";
/// JA4 of the Chromium in Samsung Internet 26/27 (Chromium 125).
const JA4_SAMSUNG: &str = "t13d1516h2_8daaf6152771_e5627efa2ab1";
const JA4_FIREFOX_ESR: &str = "t13d1714h2_5b57614c22b0_7121afd63204";
const JA4_FIREFOX: &str = "t13d1715h2_5b57614c22b0_3d5424432f57";
const JA4_FIREFOX_135: &str = "t13d1716h2_5b57614c22b0_eeeb8ed6e9b4";
const JA4_WEBKIT_17: &str = "t13d2013h2_a09f3c656075_7f0f34a4126d";
const JA4_WEBKIT_18: &str = "t13d2014h2_a09f3c656075_14788d8d241b";

// === impl Kind ===

impl Kind {
    pub(crate) fn is_mobile(self) -> bool {
        matches!(
            self,
            Kind::SafariIphone | Kind::ChromeIphone | Kind::ChromeAndroid | Kind::SamsungAndroid
        )
    }

    fn chromium(self) -> bool {
        matches!(
            self,
            Kind::ChromeWindows
                | Kind::ChromeMac
                | Kind::ChromeLinux
                | Kind::ChromeOs
                | Kind::EdgeWindows
                | Kind::EdgeMac
                | Kind::ChromeAndroid
                | Kind::SamsungAndroid
        )
    }

    fn firefox(self) -> bool {
        matches!(
            self,
            Kind::FirefoxWindows | Kind::FirefoxMac | Kind::FirefoxLinux
        )
    }

    /// The family name as ua-parser would give it, for [`Traits`].
    fn family(self) -> &'static str {
        match self {
            Kind::ChromeWindows | Kind::ChromeMac | Kind::ChromeLinux | Kind::ChromeOs => "Chrome",
            Kind::EdgeWindows | Kind::EdgeMac => "Edge",
            Kind::FirefoxWindows | Kind::FirefoxMac | Kind::FirefoxLinux => "Firefox",
            Kind::SafariMac => "Safari",
            Kind::SafariIphone => "Mobile Safari",
            Kind::ChromeIphone => "Chrome Mobile iOS",
            Kind::ChromeAndroid => "Chrome Mobile",
            Kind::SamsungAndroid => "Samsung Internet",
        }
    }

    fn platform(self) -> &'static str {
        match self {
            Kind::ChromeWindows | Kind::EdgeWindows | Kind::FirefoxWindows => "Windows",
            Kind::ChromeMac | Kind::EdgeMac | Kind::FirefoxMac | Kind::SafariMac => "macOS",
            Kind::ChromeLinux | Kind::FirefoxLinux => "Linux",
            Kind::ChromeOs => "Chrome OS",
            Kind::SafariIphone | Kind::ChromeIphone => "iOS",
            Kind::ChromeAndroid | Kind::SamsungAndroid => "Android",
        }
    }
}

// === impl Device ===

impl Device {
    /// A desktop browser as found in a country where `mac_percent` of
    /// desktops are Macs (StatCounter-like shares).
    pub(crate) fn desktop(rng: &mut Rng, mac_percent: u32, lang: &str) -> Self {
        let kind = if rng.random_range(0..100) < mac_percent {
            pick(
                rng,
                &[
                    (Kind::SafariMac, 45),
                    (Kind::ChromeMac, 45),
                    (Kind::FirefoxMac, 6),
                    (Kind::EdgeMac, 4),
                ],
            )
        } else {
            pick(
                rng,
                &[
                    (Kind::ChromeWindows, 62),
                    (Kind::EdgeWindows, 18),
                    (Kind::FirefoxWindows, 8),
                    (Kind::ChromeLinux, 5),
                    (Kind::FirefoxLinux, 4),
                    (Kind::ChromeOs, 3),
                ],
            )
        };
        Self::with_version(rng, kind, lang)
    }

    /// A phone browser as found in a country where `ios_percent` of phones
    /// are iPhones.
    pub(crate) fn phone(rng: &mut Rng, ios_percent: u32, lang: &str) -> Self {
        let kind = if rng.random_range(0..100) < ios_percent {
            pick(rng, &[(Kind::SafariIphone, 88), (Kind::ChromeIphone, 12)])
        } else {
            pick(
                rng,
                &[(Kind::ChromeAndroid, 85), (Kind::SamsungAndroid, 15)],
            )
        };
        Self::with_version(rng, kind, lang)
    }

    /// An attacker's own machine: mostly Windows Chrome, some Linux and
    /// Firefox, in the attacker's language.
    pub(crate) fn attacker(rng: &mut Rng, lang: &str) -> Self {
        let kind = pick(
            rng,
            &[
                (Kind::ChromeWindows, 55),
                (Kind::EdgeWindows, 8),
                (Kind::FirefoxWindows, 10),
                (Kind::ChromeMac, 8),
                (Kind::ChromeLinux, 8),
                (Kind::FirefoxLinux, 6),
                (Kind::ChromeAndroid, 5),
            ],
        );
        Self::with_version(rng, kind, lang)
    }

    /// The version spread of January 6, 2025: most browsers current, some a
    /// version or two behind, Firefox ESR and older Safari on old OSes.
    fn with_version(rng: &mut Rng, kind: Kind, lang: &str) -> Self {
        let mut d = Device {
            kind,
            major: 131,
            minor: 0,
            os_major: 18,
            lang: lang.to_owned(),
            esr: false,
        };
        match kind {
            Kind::ChromeWindows
            | Kind::ChromeMac
            | Kind::ChromeLinux
            | Kind::ChromeOs
            | Kind::EdgeWindows
            | Kind::EdgeMac
            | Kind::ChromeAndroid => {
                d.major = pick(rng, &[(131, 78), (130, 15), (129, 7)]);
            }
            Kind::ChromeIphone => {
                d.major = pick(rng, &[(131, 85), (130, 15)]);
                d.minor = rng.random_range(0..4);
                d.os_major = pick(rng, &[(18, 80), (17, 20)]);
            }
            Kind::SamsungAndroid => d.major = pick(rng, &[(27, 70), (26, 30)]),
            Kind::FirefoxWindows | Kind::FirefoxMac | Kind::FirefoxLinux => {
                d.esr = rng.random_bool(0.12);
                d.major = if d.esr {
                    128
                } else {
                    pick(rng, &[(133, 85), (132, 15)])
                };
            }
            Kind::SafariMac | Kind::SafariIphone => {
                d.major = pick(rng, &[(18, 72), (17, 25), (16, 3)]);
                d.minor = match d.major {
                    18 => pick(rng, &[(2, 75), (1, 25)]),
                    17 => pick(rng, &[(6, 80), (5, 20)]),
                    _ => 6,
                };
                d.os_major = d.major;
            }
        }
        d
    }

    /// Chrome 131 on Windows in US English: stands in where a user would
    /// have no device at all, which the generator never makes.
    pub(crate) fn fallback() -> Self {
        Device {
            kind: Kind::ChromeWindows,
            major: 131,
            minor: 0,
            os_major: 18,
            lang: "en-US".to_owned(),
            esr: false,
        }
    }

    /// Whether a major update to `major + 1` exists for this browser within
    /// the corpus's weeks (Safari majors ship once a year, in September;
    /// ESR stays put).
    pub(crate) fn can_update_major(&self) -> bool {
        match self.kind {
            Kind::SafariMac | Kind::SafariIphone => self.major < 18,
            Kind::FirefoxWindows | Kind::FirefoxMac | Kind::FirefoxLinux => !self.esr,
            _ => true,
        }
    }

    /// How many major updates (+1 each) can still happen in the corpus's
    /// weeks: Safari only up to 18, ESR none, the others as many as asked.
    pub(crate) fn major_updates_left(&self) -> u32 {
        match self.kind {
            Kind::SafariMac | Kind::SafariIphone => u32::from(18u16.saturating_sub(self.major)),
            Kind::FirefoxWindows | Kind::FirefoxMac | Kind::FirefoxLinux if self.esr => 0,
            _ => 1000,
        }
    }

    /// A major update: +1, and for Safari the OS update that brings it.
    pub(crate) fn update_major(&mut self) {
        self.major += 1;
        match self.kind {
            Kind::SafariMac | Kind::SafariIphone => {
                self.minor = if self.major == 18 { 2 } else { 0 };
                self.os_major = self.major;
            }
            Kind::ChromeIphone => self.minor = 0,
            _ => self.minor = 0,
        }
    }

    /// A minor update. Invisible in the User-Agent of Chromium (reduced UA)
    /// and Firefox; Safari shows `Version/18.x`, Chrome on iOS its build.
    pub(crate) fn update_minor(&mut self) {
        self.minor += 1;
    }

    /// The JA4 of this browser's TLS stack.
    pub(crate) fn ja4(&self) -> &'static str {
        match self.kind {
            Kind::SamsungAndroid => JA4_SAMSUNG,
            k if k.chromium() => {
                if self.major >= 132 {
                    JA4_CHROMIUM_132
                } else {
                    JA4_CHROMIUM_131
                }
            }
            k if k.firefox() => {
                if self.esr {
                    JA4_FIREFOX_ESR
                } else if self.major >= 135 {
                    JA4_FIREFOX_135
                } else {
                    JA4_FIREFOX
                }
            }
            // Safari and every iOS browser use the OS's stack.
            _ => {
                if self.os_major >= 18 {
                    JA4_WEBKIT_18
                } else {
                    JA4_WEBKIT_17
                }
            }
        }
    }

    /// What a request from this device carries.
    pub(crate) fn fingerprint(&self) -> Fingerprint {
        let m = self.major;
        let chrome_ua = |platform: &str, tail: &str| {
            format!(
                "Mozilla/5.0 ({platform}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{m}.0.0.0 {tail}"
            )
        };
        let ua = match self.kind {
            Kind::ChromeWindows => chrome_ua("Windows NT 10.0; Win64; x64", "Safari/537.36"),
            Kind::ChromeMac => chrome_ua("Macintosh; Intel Mac OS X 10_15_7", "Safari/537.36"),
            Kind::ChromeLinux => chrome_ua("X11; Linux x86_64", "Safari/537.36"),
            Kind::ChromeOs => chrome_ua("X11; CrOS x86_64 14541.0.0", "Safari/537.36"),
            Kind::EdgeWindows => chrome_ua(
                "Windows NT 10.0; Win64; x64",
                &format!("Safari/537.36 Edg/{m}.0.0.0"),
            ),
            Kind::EdgeMac => chrome_ua(
                "Macintosh; Intel Mac OS X 10_15_7",
                &format!("Safari/537.36 Edg/{m}.0.0.0"),
            ),
            Kind::ChromeAndroid => chrome_ua("Linux; Android 10; K", "Mobile Safari/537.36"),
            Kind::SamsungAndroid => format!(
                "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/{m}.0 Chrome/125.0.0.0 Mobile Safari/537.36"
            ),
            Kind::FirefoxWindows => format!(
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{m}.0) Gecko/20100101 Firefox/{m}.0"
            ),
            Kind::FirefoxMac => format!(
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:{m}.0) Gecko/20100101 Firefox/{m}.0"
            ),
            Kind::FirefoxLinux => format!(
                "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:{m}.0) Gecko/20100101 Firefox/{m}.0"
            ),
            Kind::SafariMac => format!(
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{m}.{} Safari/605.1.15",
                self.minor
            ),
            Kind::SafariIphone => format!(
                "Mozilla/5.0 (iPhone; CPU iPhone OS {m}_{} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{m}.{} Mobile/15E148 Safari/604.1",
                self.minor, self.minor
            ),
            Kind::ChromeIphone => format!(
                "Mozilla/5.0 (iPhone; CPU iPhone OS {}_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/{m}.0.{}.{} Mobile/15E148 Safari/604.1",
                self.os_major,
                6778 + 90 * u32::from(m.saturating_sub(131)),
                73 + 30 * u32::from(self.minor)
            ),
        };
        let grease = if m.is_multiple_of(2) {
            "\"Not A(Brand\";v=\"8\""
        } else {
            "\"Not_A Brand\";v=\"24\""
        };
        let ch_ua = match self.kind {
            Kind::ChromeWindows
            | Kind::ChromeMac
            | Kind::ChromeLinux
            | Kind::ChromeOs
            | Kind::ChromeAndroid => Some(format!(
                "\"Google Chrome\";v=\"{m}\", \"Chromium\";v=\"{m}\", {grease}"
            )),
            Kind::EdgeWindows | Kind::EdgeMac => Some(format!(
                "\"Microsoft Edge\";v=\"{m}\", \"Chromium\";v=\"{m}\", {grease}"
            )),
            Kind::SamsungAndroid => Some(format!(
                "\"Samsung Internet\";v=\"{m}.0\", \"Chromium\";v=\"125\", \"Not.A/Brand\";v=\"24\""
            )),
            _ => None,
        };
        let (ch_platform, ch_mobile) = if ch_ua.is_some() {
            (
                Some(format!("\"{}\"", self.kind.platform())),
                Some(if self.kind.is_mobile() { "?1" } else { "?0" }.to_owned()),
            )
        } else {
            (None, None)
        };
        Fingerprint {
            ua,
            accept_language: Some(self.accept_language()),
            ch_platform,
            ch_mobile,
            ch_ua,
            // Chromium, Firefox 90+ and Safari 16.4+ send fetch metadata.
            fetch_metadata: true,
            ja4: self.ja4().to_owned(),
        }
    }

    /// `Accept-Language` as each browser family writes it by default.
    fn accept_language(&self) -> String {
        let tag = self.lang.as_str();
        let base = tag.split('-').next().unwrap_or(tag);
        if self.kind.firefox() {
            // Firefox localised builds list the bare language first.
            if base == "en" {
                format!("{tag},en;q=0.5")
            } else {
                format!("{base},en-US;q=0.7,en;q=0.3")
            }
        } else if matches!(
            self.kind,
            Kind::SafariMac | Kind::SafariIphone | Kind::ChromeIphone
        ) {
            if base == "en" && tag != "en-US" {
                format!("{tag},en;q=0.9")
            } else if base == "en" {
                tag.to_owned()
            } else {
                format!("{tag},{base};q=0.9")
            }
        } else if base == "en" {
            format!("{tag},en;q=0.9")
        } else {
            format!("{tag},{base};q=0.9,en-US;q=0.8,en;q=0.7")
        }
    }
}

// === impl Fingerprint ===

impl Fingerprint {
    /// The traits the engine can observe: browser family, major version,
    /// platform, mobile, primary language, header shape, JA4.
    pub(crate) fn traits(&self, device: Option<&Device>) -> Traits {
        let lang = self
            .accept_language
            .as_deref()
            .and_then(|v| v.split([',', ';']).next())
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        Traits {
            family: device.map_or("", |d| d.kind.family()),
            major: device.map_or(0, |d| d.major),
            platform: device.map_or("", |d| d.kind.platform()),
            mobile: device.is_some_and(|d| d.kind.is_mobile()),
            lang,
            shape: (
                self.ch_ua.is_some(),
                self.fetch_metadata,
                self.accept_language.is_some(),
            ),
            ja4: self.ja4.clone(),
        }
    }
}

// === impl Tool ===

impl Tool {
    pub(crate) fn random(rng: &mut Rng) -> Self {
        pick(
            rng,
            &[
                (Tool::Curl, 35),
                (Tool::PythonRequests, 35),
                (Tool::Go, 20),
                (Tool::Node, 10),
            ],
        )
    }

    /// The tool's JA4 (its TLS library's ClientHello).
    pub(crate) fn ja4(self) -> &'static str {
        match self {
            Tool::Curl => "t13d3112h2_e8f1e7e78f70_b26ce05bbdd6",
            Tool::PythonRequests => "t13d1812h1_85036bcba153_b26ce05bbdd6",
            Tool::Go => "t13d1312h2_f57a46bbacb6_e7c285222651",
            Tool::Node => "t13d5911h1_a33745022dd6_1f22a2ca17c4",
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Tool::Curl => "curl",
            Tool::PythonRequests => "python-requests",
            Tool::Go => "go",
            Tool::Node => "node",
        }
    }
}

/// Picks from weighted choices.
pub(crate) fn pick<T: Copy>(rng: &mut Rng, choices: &[(T, u32)]) -> T {
    let total: u32 = choices.iter().map(|(_, w)| *w).sum();
    let mut r = rng.random_range(0..total.max(1));
    for (v, w) in choices {
        if r < *w {
            return *v;
        }
        r -= w;
    }
    // Only reachable with an empty list, which callers never pass.
    choices[choices.len() - 1].0
}

/// Every JA4 the generator can emit, for tests.
#[cfg(test)]
pub(crate) const ALL_JA4: &[&str] = &[
    JA4_CHROMIUM_131,
    JA4_CHROMIUM_132,
    JA4_SAMSUNG,
    JA4_FIREFOX_ESR,
    JA4_FIREFOX,
    JA4_FIREFOX_135,
    JA4_WEBKIT_17,
    JA4_WEBKIT_18,
];

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use vigil_engine::Ja4;

    #[test]
    fn updates_stay_in_the_stack_family_and_tools_do_not() {
        let ja4 = |s: &str| s.parse::<Ja4>().unwrap();
        assert!(ja4(JA4_CHROMIUM_131).same_family(&ja4(JA4_CHROMIUM_132)));
        assert!(ja4(JA4_CHROMIUM_131).same_family(&ja4(JA4_SAMSUNG)));
        assert!(ja4(JA4_FIREFOX).same_family(&ja4(JA4_FIREFOX_135)));
        assert!(ja4(JA4_FIREFOX).same_family(&ja4(JA4_FIREFOX_ESR)));
        assert!(ja4(JA4_WEBKIT_17).same_family(&ja4(JA4_WEBKIT_18)));
        assert!(!ja4(JA4_CHROMIUM_131).same_family(&ja4(JA4_FIREFOX)));
        for tool in [Tool::Curl, Tool::PythonRequests, Tool::Go, Tool::Node] {
            for browser in ALL_JA4 {
                assert!(!ja4(tool.ja4()).same_family(&ja4(browser)));
            }
        }
    }

    #[test]
    fn reduced_user_agents_hide_minor_updates() {
        let mut rng = Rng::seed_from_u64(3);
        let mut d = Device::with_version(&mut rng, Kind::ChromeWindows, "en-US");
        d.major = 131;
        let before = d.fingerprint();
        assert_eq!(
            before.ua,
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
        );
        d.update_minor();
        assert_eq!(d.fingerprint(), before);
        d.update_major();
        let after = d.fingerprint();
        assert!(after.ua.contains("Chrome/132.0.0.0"));
        assert_eq!(after.ja4, JA4_CHROMIUM_132);

        let mut s = Device::with_version(&mut rng, Kind::SafariMac, "de-DE");
        s.major = 18;
        s.minor = 1;
        let a = s.fingerprint();
        s.update_minor();
        let b = s.fingerprint();
        assert_ne!(a.ua, b.ua);
        assert_eq!(a.traits(Some(&s)), b.traits(Some(&s)));
        assert_eq!(a.accept_language.as_deref(), Some("de-DE,de;q=0.9"));
    }
}
