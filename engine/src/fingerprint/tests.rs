use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use proptest::prelude::*;

use super::*;

const CHROME: &str = "t13d1516h2_8daaf6152771_02713d6af862";
/// Chrome with one extension more (a field trial): same family.
const CHROME_TRIAL: &str = "t13d1517h2_8daaf6152771_b1ff8ab2d16f";
const CURL: &str = "t13d3112h2_e8f1e7e78f70_6bebaf5329ac";

fn ja4(s: &str) -> Ja4 {
    s.parse().unwrap()
}

fn trusted() -> TrustedProxies {
    TrustedProxies::new(vec![
        (
            "cdn".to_owned(),
            vec!["10.0.0.0/8".parse::<IpNet>().unwrap()],
        ),
        ("office".to_owned(), vec!["192.168.0.0/16".parse().unwrap()]),
    ])
    .unwrap()
}

fn upstream() -> UpstreamFingerprints {
    UpstreamFingerprints {
        ja4_header: Some(HeaderName::from_static("cloudfront-viewer-ja4-fingerprint")),
        ja3_header: Some(HeaderName::from_static("cloudfront-viewer-ja3-fingerprint")),
        trusted_sets: vec!["cdn".to_owned()],
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[test]
fn ja4_parses_and_prints_back() {
    assert_eq!(ja4(CHROME).to_string(), CHROME);
    // Upper-case hex and `a` are accepted and printed in the canonical case.
    assert_eq!(
        ja4("T13D1516H2_8DAAF6152771_02713D6AF862").to_string(),
        CHROME
    );
}

#[test]
fn ja4_rejects_what_is_not_one() {
    for bad in [
        "",
        "t13d1516h2",
        "t13d1516h2_8daaf6152771",
        "t13d1516h2_8daaf6152771_02713d6af862_",
        "t13d1516h2_8daaf6152771_02713d6af86",
        "t13d1516h_8daaf6152771_02713d6af862",
        "t13d1516h2_8daaf615277g_02713d6af862",
        "t13d-516h2_8daaf6152771_02713d6af862",
        "t13d1516h2__8daaf6152771_02713d6af862",
    ] {
        assert_eq!(
            bad.parse::<Ja4>(),
            Err(ParseFingerprintError::Ja4),
            "{bad:?}"
        );
    }
}

#[test]
fn ja3_parses_32_hex_digits_only() {
    let s = "e7d705a3286e19ea42f587b344ee6865";
    assert_eq!(s.parse::<Ja3>().unwrap().to_string(), s);
    assert_eq!(
        "e7d705a3286e19ea42f587b344ee686".parse::<Ja3>(),
        Err(ParseFingerprintError::Ja3)
    );
    assert_eq!(
        "e7d705a3286e19ea42f587b344ee686z".parse::<Ja3>(),
        Err(ParseFingerprintError::Ja3)
    );
}

#[test]
fn family_is_the_stack_without_its_extensions() {
    assert!(ja4(CHROME).same_family(&ja4(CHROME_TRIAL)));
    assert!(!ja4(CHROME).same_family(&ja4(CURL)));
    // Same ciphers but another ALPN (http/1.1 only) is another client setup.
    assert!(!ja4(CHROME).same_family(&ja4("t13d1516h1_8daaf6152771_02713d6af862")));
    // No SNI: connected by address, another client.
    assert!(!ja4(CHROME).same_family(&ja4("t13i1516h2_8daaf6152771_02713d6af862")));
}

#[test]
fn comparison_covers_every_pair_of_sources() {
    let chrome = TlsFingerprint::captured(ja4(CHROME));
    let curl = TlsFingerprint::captured(ja4(CURL));
    let trial = TlsFingerprint::captured(ja4(CHROME_TRIAL));
    let none = TlsFingerprint::NONE;
    let unreadable = TlsFingerprint::unreadable();
    let upstream_chrome = TlsFingerprint {
        source: TlsSource::Upstream,
        ..chrome
    };
    let ja3_only = TlsFingerprint {
        source: TlsSource::Upstream,
        ja4: None,
        ja4_stable: None,
        ja3: Some("e7d705a3286e19ea42f587b344ee6865".parse().unwrap()),
    };

    assert_eq!(chrome.compare(&chrome), TlsMatch::Same);
    assert_eq!(upstream_chrome.compare(&chrome), TlsMatch::Same);
    assert_eq!(trial.compare(&chrome), TlsMatch::SameFamily);
    assert_eq!(curl.compare(&chrome), TlsMatch::Different);
    assert_eq!(none.compare(&chrome), TlsMatch::NoEvidence);
    assert_eq!(chrome.compare(&none), TlsMatch::NoEvidence);
    assert_eq!(unreadable.compare(&chrome), TlsMatch::Different);
    assert_eq!(chrome.compare(&unreadable), TlsMatch::Different);
    assert_eq!(unreadable.compare(&unreadable), TlsMatch::Same);
    assert_eq!(ja3_only.compare(&chrome), TlsMatch::NoEvidence);
    assert_eq!(ja3_only.compare(&ja3_only), TlsMatch::NoEvidence);
}

/// Chrome resuming its TLS session: pre_shared_key added, 17 extensions.
const CHROME_RESUMED: &str = "t13d1517h2_8daaf6152771_4b22cc4a5f4e";
/// Chrome's hello with padding: the stable form is Chrome's JA4.
const CHROME_PADDED: &str = "t13d1517h2_8daaf6152771_9e2b5d0c1a77";

/// A captured hello's two forms, as `TlsFingerprint::of_hello` gives them.
fn hello(spec: &str, stable: &str) -> TlsFingerprint {
    TlsFingerprint {
        ja4_stable: Some(ja4(stable)),
        ..TlsFingerprint::captured(ja4(spec))
    }
}

/// What a session keeps of a fingerprint, compared as the engine does.
fn against(request: &TlsFingerprint, baseline: &TlsFingerprint) -> TlsMatch {
    let (ja4, form) = baseline.baseline_ja4();
    let kept = crate::device::DeviceSummary {
        ja4,
        ja4_form: form,
        tls_source: baseline.source,
        ..crate::device::DeviceSummary::NONE
    };
    request.compare(&kept.tls())
}

#[test]
fn a_resumed_connection_matches_its_full_handshake_and_the_reverse() {
    let full = hello(CHROME, CHROME);
    let resumed = hello(CHROME_RESUMED, CHROME);
    let padded = hello(CHROME_PADDED, CHROME);
    // A full hello keeps the spec form: it is its stable form too.
    assert_eq!(full.baseline_ja4(), (Some(ja4(CHROME)), Ja4Form::Spec));
    assert_eq!(resumed.baseline_ja4(), (Some(ja4(CHROME)), Ja4Form::Stable));
    for (a, b) in [(&full, &resumed), (&resumed, &full), (&padded, &resumed)] {
        assert_eq!(against(a, b), TlsMatch::Same, "{a:?} {b:?}");
    }
    // The spec forms alone differ (what was compared before).
    assert_eq!(
        TlsFingerprint::captured(ja4(CHROME_RESUMED))
            .compare(&TlsFingerprint::captured(ja4(CHROME))),
        TlsMatch::SameFamily
    );
    // A baseline of a previous release: the spec form of a resumed hello.
    // The same resumed hello matches it; a full one is the same family.
    let old = TlsFingerprint::captured(ja4(CHROME_RESUMED));
    assert_eq!(resumed.compare(&old), TlsMatch::Same);
    assert_eq!(full.compare(&old), TlsMatch::SameFamily);
}

#[test]
fn a_thiefs_hello_still_differs_in_either_form() {
    let owner = hello(CHROME, CHROME);
    // Another stack, resumed or not.
    let curl = hello(CURL, CURL);
    let curl_resumed = hello("t13d3113h2_e8f1e7e78f70_0c0ffee0c0de", CURL);
    // Chrome's ciphers with one extension more, resumed: still only a
    // family match, never the same.
    let trial_resumed = hello("t13d1518h2_8daaf6152771_aaaaaaaaaaaa", CHROME_TRIAL);
    for (thief, want) in [
        (&curl, TlsMatch::Different),
        (&curl_resumed, TlsMatch::Different),
        (&trial_resumed, TlsMatch::SameFamily),
    ] {
        assert_eq!(against(thief, &owner), want, "{thief:?}");
        assert_eq!(against(&owner, thief), want, "{thief:?}");
    }
}

#[test]
fn a_balancers_ja4_is_compared_as_sent() {
    let upstream = |s: &str| TlsFingerprint {
        source: TlsSource::Upstream,
        ..TlsFingerprint::captured(ja4(s))
    };
    // Against a captured baseline of a hello without the left-out
    // extensions (its spec form is its stable form): the same.
    assert_eq!(
        against(&upstream(CHROME), &hello(CHROME, CHROME)),
        TlsMatch::Same
    );
    // A resumed hello's JA4 from a balancer cannot be reduced: the same
    // family only, as before.
    assert_eq!(
        against(&upstream(CHROME_RESUMED), &hello(CHROME, CHROME)),
        TlsMatch::SameFamily
    );
    assert_eq!(
        against(&upstream(CHROME), &upstream(CHROME)),
        TlsMatch::Same
    );
    assert_eq!(
        against(&upstream(CURL), &hello(CHROME_RESUMED, CHROME)),
        TlsMatch::Different
    );
}

#[test]
fn upstream_headers_are_read_from_a_trusted_balancer_only() {
    let h = headers(&[
        ("cloudfront-viewer-ja4-fingerprint", CHROME),
        (
            "cloudfront-viewer-ja3-fingerprint",
            "e7d705a3286e19ea42f587b344ee6865",
        ),
    ]);
    let cdn: IpAddr = "10.1.2.3".parse().unwrap();
    let got = upstream().read(&trusted(), cdn, &h).unwrap();
    assert_eq!(got.source, TlsSource::Upstream);
    assert_eq!(got.ja4, Some(ja4(CHROME)));
    assert_eq!(
        got.ja3.unwrap().to_string(),
        "e7d705a3286e19ea42f587b344ee6865"
    );

    // A client on the Internet sending the same headers is not believed.
    let stranger: IpAddr = "203.0.113.9".parse().unwrap();
    assert_eq!(upstream().read(&trusted(), stranger, &h), None);
    // Nor is a trusted proxy of another set (it forwards, it does not
    // terminate TLS for the client).
    let office: IpAddr = "192.168.1.1".parse().unwrap();
    assert_eq!(upstream().read(&trusted(), office, &h), None);
    // Nothing configured: nothing read.
    assert_eq!(
        UpstreamFingerprints::default().read(&trusted(), cdn, &h),
        None
    );
}

#[test]
fn malformed_upstream_values_are_ignored_one_by_one() {
    let cdn: IpAddr = "10.1.2.3".parse().unwrap();
    let h = headers(&[
        ("cloudfront-viewer-ja4-fingerprint", "not-a-ja4"),
        (
            "cloudfront-viewer-ja3-fingerprint",
            "e7d705a3286e19ea42f587b344ee6865",
        ),
    ]);
    let got = upstream().read(&trusted(), cdn, &h).unwrap();
    assert_eq!(got.ja4, None);
    assert!(got.ja3.is_some());

    // Nothing usable from the balancer: no fingerprint at all (the
    // connection's own hello would be the balancer's).
    let h = headers(&[("cloudfront-viewer-ja4-fingerprint", "x")]);
    assert_eq!(
        upstream().read(&trusted(), cdn, &h),
        Some(TlsFingerprint::NONE)
    );
    assert_eq!(
        upstream().read(&trusted(), cdn, &HeaderMap::new()),
        Some(TlsFingerprint::NONE)
    );
    // Surrounding whitespace is tolerated.
    let h = headers(&[("cloudfront-viewer-ja4-fingerprint", &format!(" {CHROME} "))]);
    assert_eq!(
        upstream().read(&trusted(), cdn, &h).unwrap().ja4,
        Some(ja4(CHROME))
    );
}

proptest! {
    #[test]
    fn ja4_parse_never_panics(s in "\\PC{0,64}") {
        let _ = s.parse::<Ja4>();
        let _ = s.parse::<Ja3>();
    }

    #[test]
    fn ja4_round_trips(a in "[a-z0-9]{10}", b in "[0-9a-f]{12}", c in "[0-9a-f]{12}") {
        let s = format!("{a}_{b}_{c}");
        let parsed: Ja4 = s.parse().unwrap();
        prop_assert_eq!(parsed.to_string(), s);
        prop_assert!(parsed.same_family(&parsed));
    }

    #[test]
    fn ja3_round_trips(s in "[0-9a-f]{32}") {
        prop_assert_eq!(s.parse::<Ja3>().unwrap().to_string(), s);
    }

    #[test]
    fn hex_is_written_as_the_formatter_writes_it(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
        let mut out = vec![0; 2 * bytes.len()];
        encode_hex(&bytes, &mut out);
        let want: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        prop_assert_eq!(String::from_utf8(out).unwrap(), want);
    }
}

#[test]
fn a_balancer_header_sent_twice_is_believed_from_neither_line() {
    // The client forged a line; the balancer appended its own.
    let h = headers(&[
        ("cloudfront-viewer-ja4-fingerprint", CHROME),
        ("cloudfront-viewer-ja4-fingerprint", CHROME),
    ]);
    let cdn: IpAddr = "10.1.2.3".parse().unwrap();
    let got = upstream().read(&trusted(), cdn, &h).unwrap();
    assert_eq!(got, TlsFingerprint::unreadable());
    assert_eq!(got.ja4, None);
}
