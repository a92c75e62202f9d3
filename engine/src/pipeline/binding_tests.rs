//! The rotating binding, as the attacker would try it: a copied jar
//! replayed by a perfect clone, a jar without its companion, a forged or
//! foreign companion; and as honest browsers behave: parallel requests
//! across a rotation, a lost rotation response.

use std::net::IpAddr;

use http::HeaderMap;

use super::*;
use crate::binding::BindingConfig;
use crate::request::ResponseView;
use crate::score::Reason;

const UA: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
const NOW: u64 = 1_700_000_000;
const ROTATE: u64 = 300;
const GRACE: u64 = 30;

fn engine() -> Engine {
    let config = EngineConfig {
        binding: BindingConfig {
            enabled: true,
            rotate_after: std::time::Duration::from_secs(ROTATE),
            grace: std::time::Duration::from_secs(GRACE),
            ..BindingConfig::default()
        },
        ..EngineConfig::default()
    };
    Engine::new(config, SessionHashKey::from_bytes([7; 32]))
}

fn revoking() -> Policy {
    Policy {
        high: Action::Revoke,
        ..Policy::default()
    }
}

/// A client's cookie jar: the app's session cookie and the companion.
#[derive(Clone, Debug)]
struct Jar {
    session: String,
    companion: Option<String>,
}

impl Jar {
    fn new(session: &str) -> Self {
        Self {
            session: session.into(),
            companion: None,
        }
    }

    /// One request at `at`, judged and applied as an enforcing route
    /// does; the companion cookies of the response are kept when `keep`.
    fn send(&mut self, e: &Engine, p: &Policy, at: u64, keep: bool) -> (Verdict, usize) {
        let (v, set) = request(e, p, &self.session, self.companion.as_deref(), at);
        if keep && let Some(last) = set.last() {
            self.companion = Some(value_of(last));
        }
        (v, set.len())
    }
}

fn value_of(set_cookie: &str) -> String {
    let first = set_cookie.split(';').next().unwrap();
    first.split_once('=').unwrap().1.to_string()
}

fn request(
    e: &Engine,
    p: &Policy,
    session: &str,
    companion: Option<&str>,
    at: u64,
) -> (Verdict, SmallVec<[String; 1]>) {
    let mut h = HeaderMap::new();
    let cookie = match companion {
        Some(c) => format!("session={session}; vigil_bind={c}"),
        None => format!("session={session}"),
    };
    h.insert("cookie", cookie.parse().unwrap());
    h.insert("user-agent", UA.parse().unwrap());
    let peer: IpAddr = "192.0.2.10".parse().unwrap();
    let v = e
        .evaluate(
            &RequestView {
                peer,
                headers: &h,
                now_secs: at,
                tls: Default::default(),
                facts: Default::default(),
            },
            p,
        )
        .unwrap();
    let empty = HeaderMap::new();
    let set = e.binding_cookies(
        &v,
        &ResponseView {
            headers: &empty,
            now_secs: at,
            user_header: None,
            confirm_header: None,
            app_confirms: false,
        },
        Enforcement::Enforce,
    );
    (v, set)
}

/// A victim whose binding was issued and presented at NOW.
fn bound_victim(e: &Engine, p: &Policy) -> Jar {
    let mut v = Jar::new("victim");
    let (verdict, set) = v.send(e, p, NOW, true);
    assert_eq!(verdict.action, Action::Allow);
    assert_eq!(set, 1, "first sight issues generation 1");
    let (verdict, set) = v.send(e, p, NOW + 1, true);
    assert_eq!(verdict.action, Action::Allow);
    assert_eq!(set, 0);
    v
}

#[test]
fn a_clone_is_caught_at_the_first_rotation_when_the_victim_returns_first() {
    let e = engine();
    let p = revoking();
    let mut victim = bound_victim(&e, &p);
    let mut thief = victim.clone();
    // The victim crosses the rotation and presents the new generation.
    let (v, set) = victim.send(&e, &p, NOW + ROTATE + 1, true);
    assert_eq!((v.action, set), (Action::Allow, 1));
    let (v, _) = victim.send(&e, &p, NOW + ROTATE + 2, true);
    assert_eq!(v.action, Action::Allow);
    // The thief, outside the grace, with the superseded generation.
    let (v, set) = thief.send(&e, &p, NOW + ROTATE + 2 + GRACE, true);
    assert!(v.risk.has(Reason::BindingReused), "{:?}", v.risk);
    assert_eq!((v.action, set), (Action::Revoke, 0));
    // Revoked for both holders.
    let (v, _) = victim.send(&e, &p, NOW + ROTATE + 3 + GRACE, true);
    assert_ne!(v.action, Action::Allow);
}

#[test]
fn a_clone_is_caught_at_the_first_rotation_when_the_thief_comes_first() {
    let e = engine();
    let p = revoking();
    let mut victim = bound_victim(&e, &p);
    let mut thief = victim.clone();
    let (v, set) = thief.send(&e, &p, NOW + ROTATE + 1, true);
    assert_eq!(
        (v.action, set),
        (Action::Allow, 1),
        "the thief rotates first"
    );
    let (v, _) = thief.send(&e, &p, NOW + ROTATE + 2, true);
    assert_eq!(v.action, Action::Allow);
    let (v, _) = victim.send(&e, &p, NOW + ROTATE + 2 + GRACE, true);
    assert!(v.risk.has(Reason::BindingReused));
    assert_eq!(v.action, Action::Revoke);
    let (v, _) = thief.send(&e, &p, NOW + ROTATE + 3 + GRACE, true);
    assert_ne!(v.action, Action::Allow);
}

#[test]
fn a_thief_whose_successor_was_never_presented_is_caught_by_the_owners_reissue() {
    let e = engine();
    let p = revoking();
    let mut victim = bound_victim(&e, &p);
    let mut thief = victim.clone();
    // The thief rotates but does not come back at once.
    let (_, set) = thief.send(&e, &p, NOW + ROTATE + 1, true);
    assert_eq!(set, 1);
    // The owner comes with the old generation after the grace: it looks
    // like a lost response, so it is accepted and issued again.
    let (v, set) = victim.send(&e, &p, NOW + ROTATE + 1 + GRACE, true);
    assert_eq!((v.action, set), (Action::Allow, 1));
    let (v, _) = victim.send(&e, &p, NOW + ROTATE + 2 + GRACE, true);
    assert_eq!(v.action, Action::Allow);
    // The thief's issuance was superseded by the owner's.
    let (v, _) = thief.send(&e, &p, NOW + ROTATE + 3 + GRACE, true);
    assert!(v.risk.has(Reason::BindingReused));
    assert_eq!(v.action, Action::Revoke);
}

#[test]
fn an_owner_whose_rotation_response_was_lost_is_not_refused() {
    let e = engine();
    let p = revoking();
    let mut victim = bound_victim(&e, &p);
    let (_, set) = victim.send(&e, &p, NOW + ROTATE + 1, false);
    assert_eq!(set, 1, "rotated, but the browser never stored it");
    // Within the grace: accepted, nothing issued again yet.
    let (v, set) = victim.send(&e, &p, NOW + ROTATE + 2, true);
    assert_eq!((v.action, set), (Action::Allow, 0));
    // After it: accepted and issued again.
    let (v, set) = victim.send(&e, &p, NOW + ROTATE + 1 + GRACE, true);
    assert_eq!((v.action, set), (Action::Allow, 1));
    for t in 0..5 {
        let (v, _) = victim.send(&e, &p, NOW + ROTATE + 2 + GRACE + t, true);
        assert_eq!(v.action, Action::Allow, "{:?}", v.risk);
    }
}

#[test]
fn parallel_requests_across_a_rotation_rotate_once_and_are_all_allowed() {
    let e = engine();
    let p = revoking();
    let victim = bound_victim(&e, &p);
    let at = NOW + ROTATE + 1;
    // All judged before any is applied, as requests in flight together.
    let mut h = HeaderMap::new();
    let cookie = format!(
        "session=victim; vigil_bind={}",
        victim.companion.as_deref().unwrap()
    );
    h.insert("cookie", cookie.parse().unwrap());
    h.insert("user-agent", UA.parse().unwrap());
    let view = RequestView {
        peer: "192.0.2.10".parse().unwrap(),
        headers: &h,
        now_secs: at,
        tls: Default::default(),
        facts: Default::default(),
    };
    let verdicts: Vec<_> = (0..20)
        .map(|_| e.decide(&view, &p, ForwardedHeaders::default()).unwrap())
        .collect();
    let empty = HeaderMap::new();
    let resp = ResponseView {
        headers: &empty,
        now_secs: at,
        user_header: None,
        confirm_header: None,
        app_confirms: false,
    };
    let mut sets = 0;
    let mut new = None;
    for v in &verdicts {
        assert_eq!(v.action, Action::Allow);
        e.apply(
            v,
            &Decision {
                enforcement: Enforcement::Enforce,
                route: "r",
                reference: None,
                rule: None,
                tags: None,
            },
        );
        let set = e.binding_cookies(v, &resp, Enforcement::Enforce);
        sets += set.len();
        if let Some(s) = set.last() {
            new = Some(value_of(s));
        }
    }
    assert_eq!(sets, 1, "one rotation");
    // Stragglers with the old generation after the new one was presented,
    // within the grace, are allowed too.
    let (v, _) = request(&e, &p, "victim", new.as_deref(), at + 1);
    assert_eq!(v.action, Action::Allow);
    let (v, _) = request(&e, &p, "victim", victim.companion.as_deref(), at + GRACE);
    assert_eq!(v.action, Action::Allow);
}

#[test]
fn a_thief_with_only_the_app_cookie_is_refused() {
    let e = engine();
    let p = Policy::default();
    let _victim = bound_victim(&e, &p);
    let mut thief = Jar::new("victim");
    let (v, set) = thief.send(&e, &p, NOW + 2, true);
    assert!(v.risk.has(Reason::BindingMissing));
    assert_eq!((v.action, set), (Action::Block, 0));
}

#[test]
fn a_forged_duplicated_or_foreign_companion_is_invalid() {
    let e = engine();
    let p = Policy::default();
    let victim = bound_victim(&e, &p);
    let mut other = bound_victim_named(&e, &p, "other");
    let forged = "AQ".to_string() + &"A".repeat(100);
    for companion in [
        forged,
        "not base64!".into(),
        "x".repeat(5000),
        other.companion.take().unwrap(),
    ] {
        let (v, set) = request(&e, &p, "victim", Some(&companion), NOW + 2);
        assert!(
            v.risk.has(Reason::BindingInvalid),
            "{companion}: {:?}",
            v.risk
        );
        assert_eq!((v.action, set.len()), (Action::Block, 0));
    }
    // The companion twice, with different values.
    let mine = victim.companion.clone().unwrap();
    let mut h = HeaderMap::new();
    h.insert(
        "cookie",
        format!("session=victim; vigil_bind={mine}; vigil_bind={mine}x")
            .parse()
            .unwrap(),
    );
    h.insert("user-agent", UA.parse().unwrap());
    let v = e
        .evaluate(
            &RequestView {
                peer: "192.0.2.10".parse().unwrap(),
                headers: &h,
                now_secs: NOW + 2,
                tls: Default::default(),
                facts: Default::default(),
            },
            &p,
        )
        .unwrap();
    assert!(v.risk.has(Reason::BindingInvalid));
}

fn bound_victim_named(e: &Engine, p: &Policy, name: &str) -> Jar {
    let mut v = Jar::new(name);
    v.send(e, p, NOW, true);
    v.send(e, p, NOW + 1, true);
    assert!(v.companion.is_some());
    v
}

#[test]
fn a_node_that_never_saw_the_session_learns_its_generation_from_the_seal() {
    let a = engine();
    let b = engine();
    let p = revoking();
    let mut victim = bound_victim(&a, &p);
    let mut thief = victim.clone();
    victim.send(&a, &p, NOW + ROTATE + 1, true);
    // Node B first sees generation 2: learnt, allowed.
    let (v, _) = victim.send(&b, &p, NOW + ROTATE + 2, true);
    assert_eq!(v.action, Action::Allow, "{:?}", v.risk);
    // The thief's generation 1 at node B after the grace is reuse.
    let (v, _) = thief.send(&b, &p, NOW + ROTATE + 3 + GRACE, true);
    assert!(v.risk.has(Reason::BindingReused));
}

#[test]
fn monitor_and_off_change_and_issue_nothing() {
    let e = engine();
    let p = Policy::default();
    let mut h = HeaderMap::new();
    h.insert("cookie", "session=m".parse().unwrap());
    h.insert("user-agent", UA.parse().unwrap());
    let view = RequestView {
        peer: "192.0.2.10".parse().unwrap(),
        headers: &h,
        now_secs: NOW,
        tls: Default::default(),
        facts: Default::default(),
    };
    let v = e.decide(&view, &p, ForwardedHeaders::default()).unwrap();
    let empty = HeaderMap::new();
    let resp = ResponseView {
        headers: &empty,
        now_secs: NOW,
        user_header: None,
        confirm_header: None,
        app_confirms: false,
    };
    assert!(e.binding_cookies(&v, &resp, Enforcement::Off).is_empty());
    assert_eq!(e.bindings(), 0);
}

#[test]
fn the_app_issuing_a_session_gets_a_companion_in_its_scope() {
    let e = engine();
    let p = Policy::default();
    let (v, _) = request(&e, &p, "anon", None, NOW);
    let mut h = HeaderMap::new();
    h.insert(
        "set-cookie",
        "session=fresh; Domain=example.com; Path=/app; SameSite=None; Secure"
            .parse()
            .unwrap(),
    );
    let set = e.binding_cookies(
        &v,
        &ResponseView {
            headers: &h,
            now_secs: NOW,
            user_header: None,
            confirm_header: None,
            app_confirms: false,
        },
        Enforcement::Enforce,
    );
    assert_eq!(set.len(), 1);
    let c = &set[0];
    assert!(c.starts_with("vigil_bind="), "{c}");
    for attr in [
        "; Path=/app",
        "; Domain=example.com",
        "; Secure",
        "; HttpOnly",
        "; SameSite=None",
    ] {
        assert!(c.contains(attr), "{c} lacks {attr}");
    }
    // Presented with the new session: allowed, and it rotates in scope.
    let value = value_of(c);
    let (v, _) = request(&e, &p, "fresh", Some(&value), NOW + 1);
    assert_eq!(v.action, Action::Allow);
    let (_, set) = request(&e, &p, "fresh", Some(&value), NOW + ROTATE + 2);
    assert_eq!(set.len(), 1);
    assert!(set[0].contains("; Path=/app") && set[0].contains("; Domain=example.com"));
}
