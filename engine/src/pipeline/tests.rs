use std::net::IpAddr;

use http::HeaderMap;

use super::*;
use crate::fingerprint::TlsFingerprint;
use crate::score::{Contribution, Reason, RiskLevel};
use crate::session::SessionHashKey;

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

fn engine() -> Engine {
    Engine::new(EngineConfig::default(), SessionHashKey::from_bytes([9; 32]))
}

fn req(engine: &Engine, policy: &Policy, cookie: &str, ua: &str, peer: &str) -> Verdict {
    let mut h = HeaderMap::new();
    h.insert("cookie", cookie.parse().unwrap());
    h.insert("user-agent", ua.parse().unwrap());
    let peer: IpAddr = peer.parse().unwrap();
    engine
        .evaluate(
            &RequestView {
                peer,
                headers: &h,
                now_secs: 1_700_000_000,
                tls: Default::default(),
                facts: Default::default(),
            },
            policy,
        )
        .unwrap()
}

#[test]
fn first_request_is_low_risk_and_allowed() {
    let e = engine();
    let v = req(&e, &Policy::default(), "session=a", FIREFOX, "192.0.2.1");
    assert_eq!(v.risk, Risk::none());
    assert_eq!(v.action, Action::Allow);
    e.scorer().run_pending_tasks();
    assert_eq!(e.scorer().tracked_sessions(), 1);
}

#[test]
fn same_device_same_ip_stays_low() {
    let e = engine();
    let p = Policy::default();
    req(&e, &p, "session=a", FIREFOX, "192.0.2.1");
    let v = req(&e, &p, "session=a", FIREFOX, "192.0.2.1");
    assert_eq!(v.risk.level, RiskLevel::Low);
    assert!(v.risk.reasons.is_empty());
}

#[test]
fn replay_from_another_device_is_high_and_blocked() {
    let e = engine();
    let p = Policy::default();
    req(&e, &p, "session=a", FIREFOX, "192.0.2.1");
    let v = req(&e, &p, "session=a", CHROME, "198.51.100.7");
    assert_eq!(v.risk.level, RiskLevel::High);
    assert!(v.risk.has(Reason::DeviceChanged));
    assert!(v.risk.has(Reason::IpChanged));
    assert_eq!(v.risk.score, 100);
    assert_eq!(v.action, Action::Block);
    // The blocked request taught nothing: the owner still gets in.
    let owner = req(&e, &p, "session=a", FIREFOX, "192.0.2.1");
    assert_eq!(owner.action, Action::Allow);
}

#[test]
fn reasons_explain_the_score() {
    let e = engine();
    let p = Policy::default();
    req(&e, &p, "session=a", FIREFOX, "192.0.2.1");
    for (ua, ip) in [
        (CHROME, "192.0.2.1"),
        (FIREFOX, "192.0.2.9"),
        (CHROME, "192.0.2.9"),
    ] {
        let v = req(&e, &p, "session=a", ua, ip);
        let sum: u32 = v.risk.reasons.iter().map(|c| u32::from(c.points)).sum();
        assert_eq!(u32::from(v.risk.score), sum.min(100), "{ua} {ip}");
    }
}

#[test]
fn an_allowed_move_becomes_the_new_baseline_address() {
    let e = engine();
    let p = Policy::default();
    req(&e, &p, "session=a", FIREFOX, "192.0.2.1");
    let moved = req(&e, &p, "session=a", FIREFOX, "203.0.113.5");
    assert_eq!(moved.risk.level, RiskLevel::Medium);
    assert_eq!(moved.action, Action::Allow);
    let again = req(&e, &p, "session=a", FIREFOX, "203.0.113.5");
    assert!(
        again.risk.reasons.is_empty(),
        "roamed user is not flagged forever"
    );
}

#[test]
fn revoke_ends_the_session_for_good() {
    let e = engine();
    let p = Policy {
        high: Action::Revoke,
        ..Policy::default()
    };
    req(&e, &p, "session=a", FIREFOX, "192.0.2.1");
    let v = req(&e, &p, "session=a", CHROME, "192.0.2.1");
    assert_eq!(v.action, Action::Revoke);
    let owner = req(&e, &p, "session=a", FIREFOX, "192.0.2.1");
    assert_eq!(owner.action, Action::Block);
    assert!(owner.risk.has(Reason::Revoked));
    // Other sessions are untouched.
    let other = req(&e, &p, "session=b", FIREFOX, "192.0.2.1");
    assert_eq!(other.action, Action::Allow);
}

#[test]
fn anonymous_requests_carry_no_risk() {
    let e = engine();
    let v = req(&e, &Policy::default(), "theme=dark", CHROME, "192.0.2.1");
    assert_eq!(v.session, None);
    assert_eq!(v.action, Action::Allow);
}

#[test]
fn session_errors_surface_as_request_errors() {
    let e = engine();
    let mut h = HeaderMap::new();
    h.append("authorization", "Bearer one".parse().unwrap());
    h.append("authorization", "Bearer two".parse().unwrap());
    let err = e
        .evaluate(
            &RequestView {
                peer: "192.0.2.1".parse().unwrap(),
                headers: &h,
                now_secs: 0,
                tls: Default::default(),
                facts: Default::default(),
            },
            &Policy::default(),
        )
        .unwrap_err();
    assert_eq!(err.code(), "several_authorizations");
}

#[test]
fn the_store_is_bounded() {
    let config = EngineConfig {
        score: ScoreConfig {
            max_sessions: 100,
            ..ScoreConfig::default()
        },
        ..EngineConfig::default()
    };
    let e = Engine::new(config, SessionHashKey::from_bytes([3; 32]));
    for i in 0..1000 {
        req(
            &e,
            &Policy::default(),
            &format!("session={i}"),
            FIREFOX,
            "192.0.2.1",
        );
    }
    e.scorer().run_pending_tasks();
    assert!(e.scorer().tracked_sessions() <= 100);
}

// === client IP chain through the pipeline ===

const LB: &str = "10.0.0.2";

fn chain_engine(headers: crate::ForwardedHeaders) -> Engine {
    let nets =
        |list: &[&str]| -> Vec<ipnet::IpNet> { list.iter().map(|n| n.parse().unwrap()).collect() };
    let trusted = crate::TrustedProxies::new(vec![
        ("lb".to_owned(), nets(&["10.0.0.0/24"])),
        (
            "zscaler".to_owned(),
            nets(&["185.46.212.0/22", "165.225.0.0/17", "2a03:eec0::/32"]),
        ),
    ])
    .unwrap();
    let config = EngineConfig {
        client_ip: crate::ClientIpConfig {
            headers,
            trusted,
            ..crate::ClientIpConfig::default()
        },
        ..EngineConfig::default()
    };
    Engine::new(config, SessionHashKey::from_bytes([4; 32]))
}

fn forwarded_req(engine: &Engine, peer: &str, xff: &str) -> Verdict {
    let mut h = HeaderMap::new();
    h.insert("cookie", "session=z".parse().unwrap());
    h.insert("user-agent", FIREFOX.parse().unwrap());
    h.insert("x-forwarded-for", xff.parse().unwrap());
    engine
        .evaluate(
            &RequestView {
                peer: peer.parse().unwrap(),
                headers: &h,
                now_secs: 1_700_000_000,
                tls: Default::default(),
                facts: Default::default(),
            },
            &Policy::default(),
        )
        .unwrap()
}

#[test]
fn zscaler_egress_changes_are_not_client_changes() {
    use crate::NetworkChange;
    let e = chain_engine(crate::ForwardedHeaders::X_FORWARDED_FOR);
    let first = forwarded_req(&e, LB, "198.51.100.7, 185.46.212.10");
    assert_eq!(first.client.addr, "198.51.100.7".parse::<IpAddr>().unwrap());
    assert_eq!(first.client.provider.unwrap().as_str(), "zscaler");
    assert_eq!(first.network_change, None);

    // Zscaler moved the user to another egress node; the client is the same.
    let moved = forwarded_req(&e, LB, "198.51.100.7, 165.225.4.33");
    assert_eq!(moved.network_change, Some(NetworkChange::EgressChanged));
    assert!(!moved.risk.has(Reason::IpChanged), "{:?}", moved.risk);
    assert_eq!(moved.risk, Risk::none());
    assert_eq!(moved.client.egress, Some("165.225.4.33".parse().unwrap()));

    // The allowed request moved the baseline: the new egress is now the norm.
    let again = forwarded_req(&e, LB, "198.51.100.7, 165.225.4.33");
    assert_eq!(again.network_change, Some(NetworkChange::Same));

    // A different client behind the same provider is a client change.
    let other = forwarded_req(&e, LB, "192.0.2.200, 165.225.4.33");
    assert_eq!(other.network_change, Some(NetworkChange::DifferentPrefix));
    assert!(other.risk.has(Reason::IpChanged));
}

#[test]
fn a_client_cannot_claim_the_session_owners_address() {
    let e = chain_engine(crate::ForwardedHeaders::X_FORWARDED_FOR);
    forwarded_req(&e, LB, "198.51.100.7");
    // The thief connects directly and claims to be the owner.
    let thief = forwarded_req(&e, "192.0.2.66", "198.51.100.7");
    assert_eq!(thief.client.addr, "192.0.2.66".parse::<IpAddr>().unwrap());
    assert!(thief.client.flags.headers_ignored);
    assert!(thief.risk.has(Reason::IpChanged));
}

#[test]
fn the_listener_chooses_the_headers_per_request() {
    let e = chain_engine(crate::ForwardedHeaders::NONE);
    let mut h = HeaderMap::new();
    h.insert("x-forwarded-for", "198.51.100.7".parse().unwrap());
    let view = RequestView {
        peer: LB.parse().unwrap(),
        headers: &h,
        now_secs: 0,
        tls: Default::default(),
        facts: Default::default(),
    };
    let p = Policy::default();
    let configured = e.evaluate(&view, &p).unwrap();
    assert_eq!(configured.client.addr, LB.parse::<IpAddr>().unwrap());
    let listener = e
        .evaluate_with(&view, &p, crate::ForwardedHeaders::X_FORWARDED_FOR)
        .unwrap();
    assert_eq!(
        listener.client.addr,
        "198.51.100.7".parse::<IpAddr>().unwrap()
    );
}

/// An engine whose geo stage knows two networks: one in GB on AS 64500 and
/// one in FR on AS 64501, and a second GB network on AS 64500.
fn engine_with_geo(dir: &std::path::Path) -> Engine {
    use vigil_geoip::testdb::{Layout, TestDb, TestRecord};
    let city = dir.join("city.mmdb");
    let asn = dir.join("asn.mmdb");
    TestDb::new(Layout::GeoLite2)
        .network("81.2.69.0/24", TestRecord::new().country("GB"))
        .network("81.2.70.0/24", TestRecord::new().country("GB"))
        .network("90.0.0.0/24", TestRecord::new().country("FR"))
        .write(&city)
        .unwrap();
    TestDb::new(Layout::GeoLite2)
        .network("81.2.69.0/24", TestRecord::new().asn(64500))
        .network("81.2.70.0/24", TestRecord::new().asn(64500))
        .network("90.0.0.0/24", TestRecord::new().asn(64501))
        .write(&asn)
        .unwrap();
    let geo = vigil_geoip::GeoIp::open(&vigil_geoip::GeoPaths {
        geo: vec![city],
        asn: vec![asn],
    })
    .unwrap();
    engine().with_geo(Arc::new(geo))
}

#[test]
fn the_geo_stage_tells_asn_and_country_changes_apart() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with_geo(dir.path());
    let p = Policy::default();
    req(&e, &p, "session=g", FIREFOX, "81.2.69.10");

    let same_asn = req(&e, &p, "session=g", FIREFOX, "81.2.70.10");
    assert_eq!(same_asn.network_change, Some(NetworkChange::SameAsn));

    let abroad = req(&e, &p, "session=g", FIREFOX, "90.0.0.10");
    assert_eq!(abroad.network_change, Some(NetworkChange::DifferentCountry));
}

#[test]
fn without_geo_a_new_prefix_is_not_called_a_new_country() {
    let e = engine();
    let p = Policy::default();
    req(&e, &p, "session=g", FIREFOX, "81.2.69.10");
    let moved = req(&e, &p, "session=g", FIREFOX, "90.0.0.10");
    assert_eq!(moved.network_change, Some(NetworkChange::DifferentPrefix));
}

// --- TLS fingerprint (JA4) ---

const CHROME_JA4: &str = "t13d1516h2_8daaf6152771_02713d6af862";
const CHROME_NEXT_JA4: &str = "t13d1517h2_8daaf6152771_b1ff8ab2d16f";
const PYTHON_JA4: &str = "t13d3112h2_e8f1e7e78f70_6bebaf5329ac";

fn tls_req(engine: &Engine, cookie: &str, ua: &str, tls: TlsFingerprint) -> Verdict {
    let mut h = HeaderMap::new();
    h.insert("cookie", cookie.parse().unwrap());
    h.insert("user-agent", ua.parse().unwrap());
    engine
        .evaluate(
            &RequestView {
                peer: "192.0.2.1".parse().unwrap(),
                headers: &h,
                now_secs: 1_700_000_000,
                tls,
                facts: Default::default(),
            },
            &Policy::default(),
        )
        .unwrap()
}

fn captured(ja4: &str) -> TlsFingerprint {
    TlsFingerprint::captured(ja4.parse().unwrap())
}

fn chrome(major: u16) -> String {
    format!(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.0.0 Safari/537.36"
    )
}

#[test]
fn a_copied_user_agent_on_another_tls_stack_is_caught_by_ja4_alone() {
    let e = engine();
    tls_req(&e, "session=a", CHROME, captured(CHROME_JA4));
    // Same cookie, same User-Agent, same address: only the TLS stack differs.
    let v = tls_req(&e, "session=a", CHROME, captured(PYTHON_JA4));
    assert_eq!(
        v.risk.reasons,
        vec![Contribution {
            reason: Reason::Ja4Mismatch,
            points: 70
        }]
    );
    assert_eq!(v.risk.level, RiskLevel::High);
    assert_eq!(v.action, Action::Block);
    assert_eq!(v.device.tls.ja4.unwrap().to_string(), PYTHON_JA4);
    // The victim is unaffected: the baseline did not move to the replay.
    let v = tls_req(&e, "session=a", CHROME, captured(CHROME_JA4));
    assert!(v.risk.reasons.is_empty());
}

#[test]
fn a_browser_update_is_learnt_not_blocked() {
    let e = engine();
    tls_req(&e, "session=a", &chrome(131), captured(CHROME_JA4));
    let v = tls_req(&e, "session=a", &chrome(132), captured(CHROME_NEXT_JA4));
    assert_eq!(
        v.risk.reasons,
        vec![Contribution {
            reason: Reason::DeviceUpgraded,
            points: 10
        }]
    );
    assert_eq!(v.action, Action::Allow);
    // The updated browser is the session's device now.
    let v = tls_req(&e, "session=a", &chrome(132), captured(CHROME_NEXT_JA4));
    assert!(v.risk.reasons.is_empty());
    // And the old one is no longer it.
    let v = tls_req(&e, "session=a", &chrome(131), captured(CHROME_JA4));
    assert!(v.risk.has(Reason::DeviceChanged));
}

#[test]
fn an_update_on_another_stack_is_no_update() {
    let e = engine();
    tls_req(&e, "session=a", &chrome(131), captured(CHROME_JA4));
    let v = tls_req(&e, "session=a", &chrome(132), captured(PYTHON_JA4));
    assert!(v.risk.has(Reason::DeviceChanged));
    assert!(v.risk.has(Reason::Ja4Mismatch));
    assert_eq!(v.risk.score, 100);
}

#[test]
fn extensions_changing_without_an_update_are_medium() {
    let e = engine();
    tls_req(&e, "session=a", CHROME, captured(CHROME_JA4));
    let v = tls_req(&e, "session=a", CHROME, captured(CHROME_NEXT_JA4));
    assert_eq!(
        v.risk.reasons,
        vec![Contribution {
            reason: Reason::Ja4Mismatch,
            points: 30
        }]
    );
    assert_eq!(v.risk.level, RiskLevel::Medium);
}

#[test]
fn hiding_the_hello_is_a_mismatch_not_an_escape() {
    let e = engine();
    tls_req(&e, "session=a", CHROME, captured(CHROME_JA4));
    let v = tls_req(&e, "session=a", CHROME, TlsFingerprint::unreadable());
    assert!(v.risk.has(Reason::Ja4Mismatch));
    assert_eq!(v.risk.level, RiskLevel::High);
}

#[test]
fn a_first_fingerprint_is_learnt_then_held() {
    let e = engine();
    // Opened over cleartext (no fingerprint): nothing to compare yet.
    tls_req(&e, "session=a", CHROME, TlsFingerprint::NONE);
    let v = tls_req(&e, "session=a", CHROME, captured(CHROME_JA4));
    assert!(v.risk.reasons.is_empty());
    let v = tls_req(&e, "session=a", CHROME, captured(PYTHON_JA4));
    assert!(v.risk.has(Reason::Ja4Mismatch));
    // Cleartext again erases the evidence: noted on its own, never a
    // mismatch, and the baseline keeps its fingerprint.
    let v = tls_req(&e, "session=a", CHROME, TlsFingerprint::NONE);
    assert_eq!(
        v.risk.reasons,
        vec![Contribution {
            reason: Reason::TlsEvidenceLost,
            points: 30
        }]
    );
    let v = tls_req(&e, "session=a", CHROME, captured(CHROME_JA4));
    assert!(v.risk.reasons.is_empty());
}
