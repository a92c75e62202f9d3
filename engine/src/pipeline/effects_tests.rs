//! Decide, then effect: the verdict's effects as data, applied as the
//! route's mode allows; the response side judged against the request's
//! verdict; events for every state change.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName};

use super::*;
use crate::events::{self, EventStreams};
use crate::request::{RequestFacts, ResponseView};
use crate::score::Reason;
use crate::session::SessionHashKey;

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const T: u64 = 1_700_000_000;

fn engine() -> (Engine, EventStreams) {
    let (sink, streams) = events::channel(1024, 1024);
    let e =
        Engine::new(EngineConfig::default(), SessionHashKey::from_bytes([9; 32])).with_events(sink);
    (e, streams)
}

fn revoking() -> Policy {
    Policy {
        high: Action::Revoke,
        ..Policy::default()
    }
}

fn headers(cookie: Option<&str>, ua: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(c) = cookie {
        h.insert("cookie", c.parse().unwrap());
    }
    h.insert("user-agent", ua.parse().unwrap());
    h
}

fn decide(e: &Engine, p: &Policy, cookie: Option<&str>, ua: &str, peer: &str, at: u64) -> Verdict {
    let h = headers(cookie, ua);
    let peer: IpAddr = peer.parse().unwrap();
    let view = RequestView {
        peer,
        headers: &h,
        now_secs: at,
        tls: Default::default(),
        facts: RequestFacts {
            route: "app",
            ..Default::default()
        },
    };
    e.decide(&view, p, ForwardedHeaders::default()).unwrap()
}

fn run(e: &Engine, mode: Enforcement, v: &Verdict) -> Applied {
    e.apply(
        v,
        &Decision {
            enforcement: mode,
            route: "app",
            reference: Some(Reference(7)),
            rule: None,
            tags: None,
        },
    )
}

/// A session's state as judged: without the store's idle-expiry clock,
/// which every read refreshes.
fn state(e: &Engine, key: &SessionKey) -> Option<crate::score::SessionState> {
    e.scorer().session(key).map(|mut s| {
        s.touched = 0;
        s
    })
}

fn drain(streams: &EventStreams) -> Vec<Arc<Event>> {
    streams.observe.try_iter().collect()
}

fn kinds(events: &[Arc<Event>]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind()).collect()
}

const USER: &str = "vigil-user";
const CONFIRM: &str = "vigil-confirm";

/// The headers the app names its user and confirms a step-up in.
static USER_H: HeaderName = HeaderName::from_static(USER);
static CONFIRM_H: HeaderName = HeaderName::from_static(CONFIRM);

fn response(headers: &HeaderMap, confirms: bool) -> ResponseView<'_> {
    ResponseView {
        headers,
        now_secs: T,
        user_header: Some(&USER_H),
        confirm_header: Some(&CONFIRM_H),
        app_confirms: confirms,
    }
}

#[test]
fn deciding_changes_nothing() {
    let (e, streams) = engine();
    let p = revoking();
    run(
        &e,
        Enforcement::Enforce,
        &decide(&e, &p, Some("session=a"), FIREFOX, "192.0.2.1", T),
    );
    // The whole state, idle clock included: reading is not using.
    let before = e.scorer().session(&e.key_for_credential(b"a").unwrap());
    drain(&streams);
    let replay = decide(&e, &p, Some("session=a"), CHROME, "203.0.113.5", T + 60);
    assert_eq!(replay.action, Action::Revoke);
    assert_eq!(replay.effects.revokes(), [replay.session.unwrap().key]);
    assert!(!e.scorer().is_revoked(&replay.session.unwrap().key));
    assert_eq!(e.scorer().session(&replay.session.unwrap().key), before);
    assert!(drain(&streams).is_empty());
}

#[test]
fn monitor_never_revokes_and_learns_only_what_it_would_allow() {
    let (e, streams) = engine();
    let p = revoking();
    // The owner, then a replay from another device, on a monitoring route.
    let owner = decide(&e, &p, Some("session=m"), FIREFOX, "192.0.2.1", T);
    assert_eq!(
        run(&e, Enforcement::Monitor, &owner),
        Applied {
            learnt: true,
            ..Applied::default()
        }
    );
    let key = owner.session.unwrap().key;
    let baseline = state(&e, &key);
    let replay = decide(&e, &p, Some("session=m"), CHROME, "203.0.113.5", T + 60);
    assert_eq!(replay.action, Action::Revoke);
    assert_eq!(run(&e, Enforcement::Monitor, &replay), Applied::default());
    // No revocation, no baseline change.
    assert!(!e.scorer().is_revoked(&key));
    assert_eq!(state(&e, &key), baseline);
    let told = drain(&streams);
    assert_eq!(kinds(&told), ["session_seen", "detection"]);
    let Event::Detection(d) = &*told[1] else {
        panic!()
    };
    assert!(!d.enforced);
    assert_eq!(d.reference, Reference(7));
    assert_eq!(&*d.route, "app");
    assert_eq!(d.verdict, replay);
    assert_eq!(told[1].class(), events::EventClass::Observability);

    // The route is switched to enforce: the owner is still allowed, the
    // same replay is refused and revokes.
    let owner = decide(&e, &p, Some("session=m"), FIREFOX, "192.0.2.1", T + 120);
    assert_eq!(owner.action, Action::Allow);
    run(&e, Enforcement::Enforce, &owner);
    let replay = decide(&e, &p, Some("session=m"), CHROME, "203.0.113.5", T + 180);
    assert_eq!(replay.action, Action::Revoke);
    assert!(run(&e, Enforcement::Enforce, &replay).revoked);
    assert!(e.scorer().is_revoked(&key));
    let told = drain(&streams);
    assert_eq!(kinds(&told), ["detection", "session_revoked"]);
}

#[test]
fn a_monitored_detection_counts_nothing_against_the_user() {
    let (e, _streams) = engine();
    let p = Policy::default();
    let key = e.key_for_credential(b"u1").unwrap();
    e.bind_user(key, "uma", T);
    run(
        &e,
        Enforcement::Enforce,
        &decide(&e, &p, Some("session=u1"), FIREFOX, "192.0.2.1", T),
    );
    let thief = decide(&e, &p, Some("session=u1"), CHROME, "203.0.113.5", T + 60);
    assert_eq!(thief.action, Action::Block);
    assert!(thief.effects.records_detection());
    assert!(!run(&e, Enforcement::Monitor, &thief).detection_recorded);
    let owner = decide(&e, &p, Some("session=u1"), FIREFOX, "192.0.2.1", T + 120);
    assert!(!owner.risk.has(Reason::RecentDetections));
    // Enforced, the same detection counts.
    assert!(run(&e, Enforcement::Enforce, &thief).detection_recorded);
    let owner = decide(&e, &p, Some("session=u1"), FIREFOX, "192.0.2.1", T + 180);
    assert!(owner.risk.has(Reason::RecentDetections));
}

#[test]
fn off_applies_nothing() {
    let (e, streams) = engine();
    let v = decide(&e, &revoking(), Some("session=o"), FIREFOX, "192.0.2.1", T);
    assert_eq!(run(&e, Enforcement::Off, &v), Applied::default());
    assert_eq!(e.scorer().session(&v.session.unwrap().key), None);
    assert!(drain(&streams).is_empty());
}

#[test]
fn a_session_is_baselined_at_issuance_so_the_thief_who_comes_first_is_judged() {
    let (e, streams) = engine();
    let p = Policy::default();
    // The victim signs in: an anonymous request, the app sets the cookie.
    let login = decide(&e, &p, None, FIREFOX, "192.0.2.1", T);
    run(&e, Enforcement::Enforce, &login);
    let mut resp = HeaderMap::new();
    resp.append(
        "set-cookie",
        "session=fresh; Path=/; HttpOnly".parse().unwrap(),
    );
    resp.append("set-cookie", "theme=dark".parse().unwrap());
    resp.insert(USER, "vera@example.com".parse().unwrap());
    let done = e.respond(&login, &response(&resp, false), Enforcement::Enforce);
    assert_eq!(done.issued, 1);
    assert!(!done.bound);
    let told = drain(&streams);
    assert_eq!(kinds(&told), ["session_issued"]);
    // The thief, who stole the cookie at issuance, uses it first.
    let thief = decide(&e, &p, Some("session=fresh"), CHROME, "203.0.113.5", T + 5);
    assert_eq!(thief.action, Action::Block);
    assert!(thief.risk.has(Reason::DeviceChanged));
    run(&e, Enforcement::Enforce, &thief);
    // The victim is not the one refused.
    let victim = decide(&e, &p, Some("session=fresh"), FIREFOX, "192.0.2.1", T + 10);
    assert_eq!(victim.action, Action::Allow);
    assert_eq!(victim.user, Some(e.user_key("vera@example.com")));
    assert!(
        victim.risks.login.is_some(),
        "login risk still judged at first use"
    );
}

#[test]
fn a_known_session_set_again_keeps_its_baseline() {
    let (e, _streams) = engine();
    let p = Policy::default();
    let owner = decide(&e, &p, Some("session=k"), FIREFOX, "192.0.2.1", T);
    run(&e, Enforcement::Enforce, &owner);
    let key = owner.session.unwrap().key;
    let before = state(&e, &key);
    // A request the thief got through somehow (low risk on a lenient
    // route) whose response re-sets the same cookie: no re-baseline.
    let lenient = Policy {
        high: Action::Allow,
        ..Policy::default()
    };
    let thief = decide(
        &e,
        &lenient,
        Some("session=k"),
        CHROME,
        "203.0.113.5",
        T + 5,
    );
    let mut resp = HeaderMap::new();
    resp.append("set-cookie", "session=k; Max-Age=3600".parse().unwrap());
    let done = e.respond(&thief, &response(&resp, false), Enforcement::Monitor);
    assert_eq!(done.issued, 0);
    assert_eq!(state(&e, &key), before);
}

#[test]
fn deleted_and_foreign_cookies_open_no_session() {
    let (e, _streams) = engine();
    let mut resp = HeaderMap::new();
    for c in [
        &b"session=; Path=/"[..],
        b"session=gone; Max-Age=0",
        b"session=old; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        b"other=x",
        b"no equals sign",
        b"session=\xff\xfe",
    ] {
        resp.append("set-cookie", http::HeaderValue::from_bytes(c).unwrap());
    }
    let fx = e.response_effects(&response(&resp, false));
    assert!(fx.issued.is_empty(), "{fx:?}");
}

#[test]
fn the_user_header_binds_the_requests_session_and_must_be_one_usable_name() {
    let (e, streams) = engine();
    let p = Policy::default();
    let v = decide(&e, &p, Some("session=b"), FIREFOX, "192.0.2.1", T);
    run(&e, Enforcement::Enforce, &v);
    drain(&streams);
    let mut resp = HeaderMap::new();
    resp.insert(USER, " bo ".parse().unwrap());
    let done = e.respond(&v, &response(&resp, false), Enforcement::Enforce);
    assert!(done.bound);
    assert_eq!(
        e.scorer().session(&v.session.unwrap().key).unwrap().user(),
        Some(e.user_key("bo"))
    );
    assert_eq!(kinds(&drain(&streams)), ["session_bound"]);
    // Two names, or none usable: nothing bound, and said.
    for values in [&["a", "b"][..], &[""], &["x\ty"]] {
        let mut resp = HeaderMap::new();
        for v in values {
            resp.append(USER, v.parse().unwrap());
        }
        let fx = e.response_effects(&response(&resp, false));
        assert_eq!(fx.user, None, "{values:?}");
        assert!(fx.bad_user, "{values:?}");
    }
}

#[test]
fn a_confirmation_counts_only_as_one_and_only_from_an_app_trusted_to_confirm() {
    let (e, streams) = engine();
    let p = Policy {
        medium: Action::StepUp,
        ..Policy::default()
    };
    let home = decide(&e, &p, Some("session=c"), FIREFOX, "192.0.2.1", T);
    run(&e, Enforcement::Enforce, &home);
    let key = home.session.unwrap().key;
    let baseline = state(&e, &key);
    // The re-authentication page is on an `off` route: decided, not applied.
    let away = decide(
        &e,
        &p,
        Some("session=c"),
        FIREFOX,
        "198.51.100.20",
        T + 3600,
    );
    assert_eq!(away.action, Action::StepUp);
    drain(&streams);
    for (value, trusted) in [("0", true), ("yes", true), ("1 ", true), ("1", false)] {
        let mut resp = HeaderMap::new();
        resp.insert(CONFIRM, value.parse().unwrap());
        let done = e.respond(&away, &response(&resp, trusted), Enforcement::Off);
        assert!(!done.confirmed, "{value:?} trusted={trusted}");
        assert_eq!(state(&e, &key), baseline);
    }
    let mut twice = HeaderMap::new();
    twice.append(CONFIRM, "1".parse().unwrap());
    twice.append(CONFIRM, "1".parse().unwrap());
    assert!(!e.response_effects(&response(&twice, true)).confirm);
    let mut resp = HeaderMap::new();
    resp.insert(CONFIRM, "1".parse().unwrap());
    let done = e.respond(&away, &response(&resp, true), Enforcement::Off);
    assert!(done.confirmed);
    assert_eq!(kinds(&drain(&streams)), ["confirmed"]);
    let after = decide(
        &e,
        &p,
        Some("session=c"),
        FIREFOX,
        "198.51.100.20",
        T + 3700,
    );
    assert_eq!(after.action, Action::Allow);
    assert!(after.risk.reasons.is_empty());
}

#[test]
fn a_would_be_refusal_on_a_monitoring_route_binds_and_confirms_nothing() {
    let (e, _streams) = engine();
    let p = Policy::default();
    run(
        &e,
        Enforcement::Enforce,
        &decide(&e, &p, Some("session=w"), FIREFOX, "192.0.2.1", T),
    );
    let thief = decide(&e, &p, Some("session=w"), CHROME, "203.0.113.5", T + 60);
    assert_eq!(thief.action, Action::Block);
    let key = thief.session.unwrap().key;
    let before = state(&e, &key);
    let mut resp = HeaderMap::new();
    resp.insert(USER, "mallory".parse().unwrap());
    resp.insert(CONFIRM, "1".parse().unwrap());
    resp.append("set-cookie", "session=w2".parse().unwrap());
    let done = e.respond(&thief, &response(&resp, true), Enforcement::Monitor);
    assert_eq!(done, Responded::default());
    assert_eq!(state(&e, &key), before);
    assert_eq!(
        e.scorer().session(&e.key_for_credential(b"w2").unwrap()),
        None
    );
}

#[test]
fn operator_calls_are_told() {
    let (e, streams) = engine();
    let p = Policy::default();
    let key = e.key_for_credential(b"op").unwrap();
    e.bind_user(key, "olga", T);
    run(
        &e,
        Enforcement::Enforce,
        &decide(&e, &p, Some("session=op"), FIREFOX, "192.0.2.1", T),
    );
    let olga = e.user_key("olga");
    e.report_user(olga, 40, std::time::Duration::from_secs(60), T + 1);
    e.feedback(
        crate::score::Feedback::TrustNetwork {
            user: olga,
            network: crate::score::TrustedNetwork::Asn(64500),
        },
        T + 2,
    )
    .unwrap();
    e.revoke_user(olga, T + 3);
    let other = e.key_for_credential(b"x").unwrap();
    e.revoke(other, T + 4);
    let told = drain(&streams);
    assert_eq!(
        kinds(&told),
        [
            "session_bound",
            "user_learned",
            "session_seen",
            "partner_reported",
            "user_learned",
            "feedback_applied",
            "user_revoked",
            "session_revoked"
        ]
    );
    assert_eq!(
        *told[3],
        Event::PartnerReported {
            user: olga,
            points: 40,
            until: T + 61,
            at: T + 1
        }
    );
    let Event::UserLearned(trusted) = &*told[4] else {
        panic!("{:?}", told[4])
    };
    assert_eq!(
        (
            trusted.user,
            trusted.which,
            trusted.trust,
            trusted.new_session
        ),
        (olga, 0b10, true, false),
        "the trusted ASN, for the fleet"
    );
    assert_eq!(
        *told[6],
        Event::UserRevoked {
            user: olga,
            sessions: 1,
            at: T + 3
        }
    );
    // Every one of them is for the fleet too.
    assert_eq!(streams.fleet.try_iter().count(), 8);
}

#[test]
fn evaluations_are_counted_once_per_decision() {
    let (e, _streams) = engine();
    let p = Policy::default();
    let v = decide(&e, &p, Some("session=n"), FIREFOX, "192.0.2.1", T);
    run(&e, Enforcement::Enforce, &v);
    let mut resp = HeaderMap::new();
    resp.insert(USER, "nora".parse().unwrap());
    resp.insert(CONFIRM, "1".parse().unwrap());
    e.respond(&v, &response(&resp, true), Enforcement::Enforce);
    e.confirm(&v);
    assert_eq!(e.evaluations(), 1);
}

#[test]
fn a_known_session_set_again_with_a_user_is_bound_and_told() {
    let (e, streams) = engine();
    let p = Policy::default();
    let v = decide(&e, &p, Some("session=kb"), FIREFOX, "192.0.2.1", T);
    run(&e, Enforcement::Enforce, &v);
    drain(&streams);
    let mut resp = HeaderMap::new();
    resp.append("set-cookie", "session=kb; Max-Age=3600".parse().unwrap());
    resp.insert(USER, "kim".parse().unwrap());
    let done = e.respond(&v, &response(&resp, false), Enforcement::Enforce);
    assert_eq!(done.issued, 0);
    let key = v.session.unwrap().key;
    assert_eq!(
        e.scorer().session(&key).unwrap().user(),
        Some(e.user_key("kim"))
    );
    let told = drain(&streams);
    assert_eq!(
        *told[0],
        Event::SessionBound {
            session: key,
            user: e.user_key("kim"),
            at: T
        }
    );
    assert_eq!(told.len(), 1);
}

#[test]
fn max_age_wins_over_a_past_expires() {
    let (e, _streams) = engine();
    let mut resp = HeaderMap::new();
    resp.append(
        "set-cookie",
        "session=live; Max-Age=3600; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
            .parse()
            .unwrap(),
    );
    let fx = e.response_effects(&response(&resp, false));
    assert_eq!(
        fx.issued.as_slice(),
        [e.key_for_credential(b"live").unwrap()]
    );
}

#[test]
fn an_app_naming_the_user_on_every_response_binds_once() {
    let (e, streams) = engine();
    let p = Policy::default();
    let mut resp = HeaderMap::new();
    resp.insert(USER, "ria".parse().unwrap());
    resp.append("set-cookie", "session=ri; Max-Age=600".parse().unwrap());
    for i in 0..5 {
        let v = decide(&e, &p, Some("session=ri"), FIREFOX, "192.0.2.1", T + i);
        run(&e, Enforcement::Enforce, &v);
        e.respond(&v, &response(&resp, false), Enforcement::Enforce);
    }
    let told = drain(&streams);
    // The second request is the bound session's login: learnt, once.
    assert_eq!(
        kinds(&told),
        ["session_seen", "session_bound", "user_learned"]
    );
}

#[test]
fn of_several_credentials_the_worst_decides_and_only_it_is_charged() {
    let (e, _streams) = engine();
    let p = revoking();
    // Two sessions of the same browser (cookies of two paths).
    run(
        &e,
        Enforcement::Enforce,
        &decide(&e, &p, Some("session=one"), FIREFOX, "192.0.2.1", T),
    );
    run(
        &e,
        Enforcement::Enforce,
        &decide(&e, &p, Some("session=two"), FIREFOX, "192.0.2.1", T),
    );
    let one = e.key_for_credential(b"one").unwrap();
    let two = e.key_for_credential(b"two").unwrap();
    // Both together from the same browser: allowed, both learnt.
    let both = decide(
        &e,
        &p,
        Some("session=one; session=two"),
        FIREFOX,
        "192.0.2.1",
        T + 60,
    );
    assert_eq!(both.action, Action::Allow);
    assert!(both.effects.learns());
    // A thief sends a fresh decoy next to the stolen one.
    let thief = decide(
        &e,
        &p,
        Some("session=decoy; session=one"),
        CHROME,
        "203.0.113.5",
        T + 120,
    );
    assert_eq!(thief.action, Action::Revoke);
    assert_eq!(thief.session.map(|s| s.key), Some(one));
    run(&e, Enforcement::Enforce, &thief);
    assert!(e.scorer().is_revoked(&one));
    assert!(!e.scorer().is_revoked(&two));
    // The decoy learnt nothing: it has no baseline to adopt later.
    assert_eq!(
        e.scorer().session(&e.key_for_credential(b"decoy").unwrap()),
        None
    );
}

#[test]
fn an_unreadable_request_still_refuses_a_readable_revoked_credential() {
    let (e, _streams) = engine();
    let p = Policy::default();
    let key = e.key_for_credential(b"dead").unwrap();
    e.revoke(key, T);
    let mut h = HeaderMap::new();
    h.append("cookie", "session=dead".parse().unwrap());
    h.append("authorization", "Bearer a".parse().unwrap());
    h.append("authorization", "Bearer b".parse().unwrap());
    h.insert("user-agent", FIREFOX.parse().unwrap());
    let view = RequestView {
        peer: "192.0.2.1".parse().unwrap(),
        headers: &h,
        now_secs: T + 1,
        tls: Default::default(),
        facts: Default::default(),
    };
    let v = e.decide(&view, &p, ForwardedHeaders::default()).unwrap();
    assert_eq!(v.action, Action::Block);
    assert!(v.risk.has(Reason::Revoked));
    // Without the revoked cookie, the same bytes are a problem to report.
    let mut fine = h.clone();
    fine.remove("cookie");
    fine.append("cookie", "session=fine".parse().unwrap());

    let view = RequestView {
        headers: &fine,
        ..view
    };
    assert_eq!(
        e.decide(&view, &p, ForwardedHeaders::default()),
        Err(crate::RequestError::Session(
            crate::SessionError::SeveralAuthorizations
        ))
    );
}

#[test]
fn a_revoked_decoy_shields_no_stolen_credential_beside_it() {
    let (e, _streams) = engine();
    let p = revoking();
    run(
        &e,
        Enforcement::Enforce,
        &decide(&e, &p, Some("session=victim"), FIREFOX, "192.0.2.1", T),
    );
    let decoy = e.key_for_credential(b"decoy").unwrap();
    e.revoke(decoy, T);
    let victim = e.key_for_credential(b"victim").unwrap();
    // The thief's replay carries a revoked decoy beside the stolen cookie.
    let v = decide(
        &e,
        &p,
        Some("session=decoy; session=victim"),
        CHROME,
        "203.0.113.5",
        T + 60,
    );
    assert_eq!(v.credentials, 2);
    assert_eq!(v.effects.revokes(), [victim]);
    run(&e, Enforcement::Enforce, &v);
    // The stolen credential earned its own revocation.
    assert!(e.scorer().is_revoked(&victim));
}

#[test]
fn with_two_credentials_nothing_is_bound_or_confirmed() {
    let (e, _streams) = engine();
    let p = Policy::default();
    run(
        &e,
        Enforcement::Enforce,
        &decide(&e, &p, Some("session=own"), FIREFOX, "192.0.2.1", T),
    );
    run(
        &e,
        Enforcement::Enforce,
        &decide(&e, &p, Some("session=vic"), FIREFOX, "192.0.2.1", T),
    );
    let both = decide(
        &e,
        &p,
        Some("session=own; session=vic"),
        FIREFOX,
        "192.0.2.1",
        T + 5,
    );
    assert_eq!(both.credentials, 2);
    let mut resp = HeaderMap::new();
    resp.insert(USER, "mallory".parse().unwrap());
    resp.insert(CONFIRM, "1".parse().unwrap());
    let done = e.respond(&both, &response(&resp, true), Enforcement::Off);
    assert!(!done.confirmed);
    let done = e.respond(&both, &response(&resp, true), Enforcement::Enforce);
    assert!(!done.bound && !done.confirmed);
}
