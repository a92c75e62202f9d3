use http::HeaderValue;

use super::*;

const CHROME_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.86 Safari/537.36";
const EDGE_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.70";
const SAFARI_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15";
const FIREFOX_LINUX: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
const CHROME_ANDROID: &str = "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";
const CHROME_ANDROID_TABLET: &str = "Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1";
const SAFARI_IPAD: &str = "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1";
const HEADLESS: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

const CHROME_JA4: &str = "t13d1516h2_8daaf6152771_02713d6af862";
const CHROME_JA4_TRIAL: &str = "t13d1517h2_8daaf6152771_b1ff8ab2d16f";
const PYTHON_JA4: &str = "t13d3112h2_e8f1e7e78f70_6bebaf5329ac";

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn observe(pairs: &[(&'static str, &str)]) -> Device {
    DeviceStage::default().traits(&headers(pairs), TlsFingerprint::NONE)
}

fn with_ja4(pairs: &[(&'static str, &str)], ja4: &str) -> Device {
    DeviceStage::default().traits(
        &headers(pairs),
        TlsFingerprint::captured(ja4.parse().unwrap()),
    )
}

#[test]
fn patterns_load() {
    assert!(ua::patterns_loaded());
}

#[test]
fn classifies_common_user_agents() {
    use Browser as B;
    use DeviceClass as C;
    use Platform as P;
    let cases = [
        (CHROME_WIN, B::Chrome, 131, P::Windows, C::Desktop),
        (EDGE_WIN, B::Edge, 131, P::Windows, C::Desktop),
        (SAFARI_MAC, B::Safari, 18, P::MacOs, C::Desktop),
        (FIREFOX_LINUX, B::Firefox, 133, P::Linux, C::Desktop),
        (CHROME_ANDROID, B::Chrome, 131, P::Android, C::Mobile),
        (CHROME_ANDROID_TABLET, B::Chrome, 131, P::Android, C::Tablet),
        (SAFARI_IPHONE, B::Safari, 18, P::Ios, C::Mobile),
        (SAFARI_IPAD, B::Safari, 18, P::Ios, C::Tablet),
        (HEADLESS, B::Chrome, 156, P::Linux, C::Desktop),
        (GOOGLEBOT, B::Other, 2, P::Unknown, C::Bot),
        ("curl/8.5.0", B::Curl, 8, P::Unknown, C::Tool),
        ("python-requests/2.32.3", B::Tool, 2, P::Unknown, C::Tool),
        ("", B::Other, 0, P::Unknown, C::Unknown),
    ];
    for (ua, browser, major, platform, class) in cases {
        let d = observe(&[("user-agent", ua)]);
        assert_eq!(
            (d.browser, d.major, d.platform, d.class),
            (browser, major, platform, class),
            "{ua}"
        );
    }
}

#[test]
fn minor_update_keeps_the_id_major_update_changes_only_the_major() {
    let ua = |v: &str| {
        format!(
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v} Safari/537.36"
        )
    };
    let a = observe(&[("user-agent", &ua("131.0.6778.86"))]);
    let b = observe(&[("user-agent", &ua("131.0.6778.108"))]);
    let c = observe(&[("user-agent", &ua("132.0.6834.57"))]);
    assert_eq!(a.id, b.id);
    assert_ne!(a.id, c.id);
    assert!(a.id.same_but_major(c.id));
    assert_eq!((a.id.major(), c.id.major()), (131, 132));
}

#[test]
fn unnamed_families_still_differ() {
    // Neither is in the Browser enum; the family hash keeps them apart.
    let a = observe(&[(
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Waterfox/6.5.0",
    )]);
    let b = observe(&[(
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Vivaldi/6.5 Chrome/120.0.0.0 Safari/537.36",
    )]);
    assert_ne!(a.id, b.id);
}

#[test]
fn client_hints_win_over_the_user_agent() {
    let d = observe(&[
        ("user-agent", CHROME_WIN),
        ("sec-ch-ua-platform", "\"macOS\""),
        ("sec-ch-ua-mobile", "?1"),
    ]);
    assert_eq!(
        (d.platform, d.class),
        (Platform::MacOs, DeviceClass::Mobile)
    );
    let d = observe(&[
        ("user-agent", CHROME_WIN),
        ("sec-ch-ua-platform", "\"Plan9\""),
        ("sec-ch-ua-mobile", "?0"),
    ]);
    assert_eq!(
        (d.platform, d.class),
        (Platform::Windows, DeviceClass::Desktop),
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
fn header_shape_tells_a_browser_from_a_copied_user_agent() {
    let browser = observe(&[
        ("user-agent", CHROME_WIN),
        ("sec-ch-ua", "\"Chromium\";v=\"131\""),
        ("sec-fetch-site", "same-origin"),
        ("accept-language", "en-US"),
    ]);
    let script = observe(&[("user-agent", CHROME_WIN), ("accept-language", "en-US")]);
    assert_eq!(browser.shape.bits(), 7);
    assert_eq!(script.shape.bits(), 4);
    assert_eq!(browser.id, script.id);
    assert_eq!(
        script.compare(&browser.summary()).traits,
        TraitMatch::Different
    );
}

#[test]
fn comparison_same_upgraded_different() {
    let chrome = |v: &str, ja4: &str| {
        with_ja4(
            &[(
                "user-agent",
                &format!(
                    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v} Safari/537.36"
                ),
            )],
            ja4,
        )
    };
    let base = chrome("131.0.6778.86", CHROME_JA4).summary();

    let m = chrome("131.0.6778.108", CHROME_JA4).compare(&base);
    assert_eq!((m.traits, m.tls), (TraitMatch::Same, TlsMatch::Same));

    let m = chrome("132.0.6834.57", CHROME_JA4_TRIAL).compare(&base);
    assert_eq!(
        (m.traits, m.tls),
        (TraitMatch::Upgraded, TlsMatch::SameFamily)
    );

    // Three majors at once, or a downgrade, is not an update in one session.
    let m = chrome("134.0.0.0", CHROME_JA4).compare(&base);
    assert_eq!(m.traits, TraitMatch::Different);
    let m = chrome("130.0.0.0", CHROME_JA4).compare(&base);
    assert_eq!(m.traits, TraitMatch::Different);

    // The victim's User-Agent copied onto another TLS stack.
    let m = chrome("131.0.6778.86", PYTHON_JA4).compare(&base);
    assert_eq!((m.traits, m.tls), (TraitMatch::Same, TlsMatch::Different));

    // Another browser on the same stack family is still another device.
    let m = with_ja4(&[("user-agent", FIREFOX_LINUX)], CHROME_JA4).compare(&base);
    assert_eq!(m.traits, TraitMatch::Different);
}

#[test]
fn upstream_fingerprint_replaces_the_captured_one_only_from_trusted_peers() {
    use std::net::IpAddr;
    let trusted = TrustedProxies::new(vec![(
        "cdn".to_owned(),
        vec!["10.0.0.0/8".parse().unwrap()],
    )])
    .unwrap();
    let stage = DeviceStage::new(UpstreamFingerprints {
        ja4_header: Some(http::HeaderName::from_static("x-ja4")),
        ja3_header: None,
        trusted_sets: vec!["cdn".to_owned()],
    });
    let h = headers(&[("user-agent", CHROME_WIN), ("x-ja4", CHROME_JA4)]);
    let captured = TlsFingerprint::captured(PYTHON_JA4.parse().unwrap());
    let view = |peer: &str| RequestView {
        peer: peer.parse::<IpAddr>().unwrap(),
        headers: &h,
        now_secs: 0,
        tls: captured,
        facts: Default::default(),
    };
    let from_cdn = stage.observe(&view("10.0.0.1"), &trusted);
    assert_eq!(from_cdn.tls.source, TlsSource::Upstream);
    assert_eq!(from_cdn.tls.ja4.unwrap().to_string(), CHROME_JA4);
    let direct = stage.observe(&view("198.51.100.1"), &trusted);
    assert_eq!(direct.tls, captured);
    // From the balancer without the header, the captured hello is the
    // balancer's: no fingerprint.
    let bare = headers(&[("user-agent", CHROME_WIN)]);
    let view = RequestView {
        peer: "10.0.0.1".parse::<IpAddr>().unwrap(),
        headers: &bare,
        now_secs: 0,
        tls: captured,
        facts: Default::default(),
    };
    assert_eq!(stage.observe(&view, &trusted).tls, TlsFingerprint::NONE);
}

#[test]
fn hostile_values_are_bounded() {
    let long = "9".repeat(10_000);
    let d = observe(&[
        ("user-agent", &format!("Mozilla/5.0 Chrome/{long}")),
        ("accept-language", &format!("{long},en")),
    ]);
    assert_eq!(d.language.as_bytes().len(), MAX_LANG_BYTES);
}

#[test]
fn cached_and_uncached_parses_agree() {
    let stage = DeviceStage::default();
    for ua in [CHROME_WIN, SAFARI_IPHONE, "curl/8.5.0", ""] {
        let h = headers(&[("user-agent", ua)]);
        let first = stage.traits(&h, TlsFingerprint::NONE);
        let second = stage.traits(&h, TlsFingerprint::NONE);
        assert_eq!(first, second);
        assert_eq!(ua::parse(ua.as_bytes()).major, first.major);
    }
}

proptest::proptest! {
    #[test]
    fn never_panics_on_arbitrary_bytes(ua in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
                                       lang in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(&ua) { h.insert("user-agent", v); }
        if let Ok(v) = HeaderValue::from_bytes(&lang) { h.insert("accept-language", v); }
        let d = DeviceStage::default().traits(&h, TlsFingerprint::NONE);
        proptest::prop_assert!(d.language.as_str().len() <= MAX_LANG_BYTES);
        proptest::prop_assert_eq!(d.compare(&d.summary()).traits, TraitMatch::Same);
    }
}
