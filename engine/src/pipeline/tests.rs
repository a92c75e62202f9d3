use std::net::IpAddr;

use http::HeaderMap;

use super::*;
use crate::score::{Reason, RiskLevel};
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
    h.insert(
        "cookie",
        http::HeaderValue::from_bytes(b"session=\xff").unwrap(),
    );
    let err = e
        .evaluate(
            &RequestView {
                peer: "192.0.2.1".parse().unwrap(),
                headers: &h,
                now_secs: 0,
            },
            &Policy::default(),
        )
        .unwrap_err();
    assert_eq!(err.code(), "cookie_not_utf8");
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
