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
        // The companion kept: the last one set (not an expiry).
        let last = set.iter().rev().find(|c| !value_of(c).is_empty());
        if keep && let Some(last) = last {
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
    // As a browser holds a host-wide companion: under the `__Host-` name.
    let cookie = match companion {
        Some(c) => format!("session={session}; __Host-vigil_bind={c}"),
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
    assert_eq!(v.action, Action::Block, "revoked: refused");
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
    assert_eq!(v.action, Action::Block, "revoked: refused");
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
        "session=victim; __Host-vigil_bind={}",
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
    let _victim = bound_victim(&e, &p);
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
    // More companions than are read: refused unread.
    let many: Vec<String> = (0..5).map(|i| format!("vigil_bind=x{i}")).collect();
    let (v, set) = exchange(
        &e,
        &p,
        &format!("session=victim; {}", many.join("; ")),
        NOW + 2,
        Enforcement::Enforce,
        None,
        200,
    );
    assert!(v.risk.has(Reason::BindingInvalid), "{:?}", v.risk);
    assert_eq!((v.action, set.len()), (Action::Block, 0));
}

/// A sibling host tosses companions onto the parent domain (junk, and its
/// own session's valid seal): the owner's browser sends them beside its
/// own. The seal naming the owner's session decides; the rest is ignored.
/// A value hidden inside another cookie's value is no companion.
#[test]
fn tossed_companions_beside_the_owners_change_nothing() {
    let e = engine();
    let p = Policy::default();
    let victim = bound_victim(&e, &p);
    let attacker = bound_victim_named(&e, &p, "attacker");
    let mine = victim.companion.clone().unwrap();
    let theirs = attacker.companion.clone().unwrap();
    for cookie in [
        format!("vigil_bind=junk; session=victim; vigil_bind={mine}"),
        format!(
            "vigil_bind={theirs}; session=victim; vigil_bind={mine}; vigil_bind=AQ{}",
            "A".repeat(100)
        ),
        format!("session=victim; vigil_bind={mine}; prefs=a,vigil_bind=junk"),
    ] {
        let (v, _) = exchange(&e, &p, &cookie, NOW + 2, Enforcement::Enforce, None, 200);
        assert_eq!(v.action, Action::Allow, "{cookie}: {:?}", v.risk);
    }
    // Only the attacker's seal: invalid for the owner's session.
    let (v, _) = exchange(
        &e,
        &p,
        &format!("session=victim; vigil_bind={theirs}"),
        NOW + 2,
        Enforcement::Enforce,
        None,
        200,
    );
    assert!(v.risk.has(Reason::BindingInvalid), "{:?}", v.risk);
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
    // Not host-wide: no `__Host-` prefix (a browser would refuse it).
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

/// One request judged and applied as a route in `mode` does, answered by
/// a response of `status` carrying the app's `set_cookie` (if any).
fn exchange(
    e: &Engine,
    p: &Policy,
    cookie: &str,
    at: u64,
    mode: Enforcement,
    set_cookie: Option<&str>,
    status: u16,
) -> (Verdict, SmallVec<[String; 1]>) {
    exchange_for(e, p, cookie, at, mode, set_cookie, status, "")
}

/// [`exchange`] of a request for `host`.
#[allow(
    clippy::too_many_arguments,
    reason = "a test helper spelling out one exchange"
)]
fn exchange_for(
    e: &Engine,
    p: &Policy,
    cookie: &str,
    at: u64,
    mode: Enforcement,
    set_cookie: Option<&str>,
    status: u16,
    host: &str,
) -> (Verdict, SmallVec<[String; 1]>) {
    let mut h = HeaderMap::new();
    h.insert("cookie", cookie.parse().unwrap());
    h.insert("user-agent", UA.parse().unwrap());
    let view = RequestView {
        peer: "192.0.2.10".parse().unwrap(),
        headers: &h,
        now_secs: at,
        tls: Default::default(),
        facts: crate::request::RequestFacts {
            host,
            ..Default::default()
        },
    };
    let v = e.decide(&view, p, ForwardedHeaders::default()).unwrap();
    e.apply(
        &v,
        &Decision {
            enforcement: mode,
            route: "r",
            reference: None,
            rule: None,
            tags: None,
        },
    );
    let mut rh = HeaderMap::new();
    if let Some(c) = set_cookie {
        rh.insert("set-cookie", c.parse().unwrap());
    }
    let set = e.binding_cookies_for_status(
        &v,
        &ResponseView {
            headers: &rh,
            now_secs: at,
            user_header: None,
            confirm_header: None,
            app_confirms: false,
        },
        mode,
        status,
    );
    (v, set)
}

fn jar_cookie(j: &Jar) -> String {
    match &j.companion {
        Some(c) => format!("session={}; __Host-vigil_bind={c}", j.session),
        None => format!("session={}", j.session),
    }
}

/// Under the default policy (high risk blocks, nothing revokes), the
/// holder who comes first after the theft must not keep the session: once
/// reuse is seen, every request of the session is refused as reuse,
/// whatever generation — or none — it brings.
#[test]
fn under_the_default_policy_a_thief_who_rotates_first_does_not_keep_the_session() {
    let e = engine();
    let p = Policy::default();
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
    // The owner's superseded generation gives the copy away.
    let (v, set) = victim.send(&e, &p, NOW + ROTATE + 2 + GRACE, true);
    assert!(v.risk.has(Reason::BindingReused), "{:?}", v.risk);
    assert_eq!((v.action, set), (Action::Block, 0));
    // From now on both holders are refused as reuse, with their newest
    // generation, the old one, or none at all, long after.
    for at in [NOW + ROTATE + 3 + GRACE, NOW + 10 * ROTATE] {
        for (who, jar) in [("thief", &mut thief), ("victim", &mut victim)] {
            let (v, set) = jar.send(&e, &p, at, true);
            assert!(v.risk.has(Reason::BindingReused), "{who}: {:?}", v.risk);
            assert_eq!((v.action, set), (Action::Block, 0), "{who}");
        }
    }
    let (v, set) = Jar::new("victim").send(&e, &p, NOW + 10 * ROTATE, true);
    assert!(v.risk.has(Reason::BindingReused), "{:?}", v.risk);
    assert_eq!((v.action, set), (Action::Block, 0), "no companion");
}

#[test]
fn under_the_default_policy_a_victim_who_rotates_first_is_not_left_with_the_thief() {
    let e = engine();
    let p = Policy::default();
    let mut victim = bound_victim(&e, &p);
    let mut thief = victim.clone();
    let (v, set) = victim.send(&e, &p, NOW + ROTATE + 1, true);
    assert_eq!((v.action, set), (Action::Allow, 1));
    let (v, _) = victim.send(&e, &p, NOW + ROTATE + 2, true);
    assert_eq!(v.action, Action::Allow);
    let (v, set) = thief.send(&e, &p, NOW + ROTATE + 2 + GRACE, true);
    assert!(v.risk.has(Reason::BindingReused));
    assert_eq!((v.action, set), (Action::Block, 0));
    // The session is ended for both: the owner signs in again.
    for (who, jar) in [("victim", &mut victim), ("thief", &mut thief)] {
        let (v, set) = jar.send(&e, &p, NOW + ROTATE + 3 + GRACE, true);
        assert!(v.risk.has(Reason::BindingReused), "{who}: {:?}", v.risk);
        assert_eq!((v.action, set), (Action::Block, 0), "{who}");
    }
}

/// The owner's last response carried g+1, never presented; the thief
/// brings g after the grace and is issued g+1 again. The owner's g+1
/// then shows the copy — and the thief's own g+1 is refused from then on.
#[test]
fn a_thief_reissued_the_owners_unpresented_successor_is_refused_once_the_owner_returns() {
    let e = engine();
    let p = Policy::default();
    let mut victim = bound_victim(&e, &p);
    let mut thief = victim.clone();
    let (_, set) = victim.send(&e, &p, NOW + ROTATE + 1, true);
    assert_eq!(set, 1, "the owner holds g+1 and goes away");
    let (v, set) = thief.send(&e, &p, NOW + ROTATE + 1 + GRACE, true);
    assert_eq!(
        (v.action, set),
        (Action::Allow, 1),
        "looks like a lost response"
    );
    let (v, _) = thief.send(&e, &p, NOW + ROTATE + 2 + GRACE, true);
    assert_eq!(v.action, Action::Allow);
    let (v, _) = victim.send(&e, &p, NOW + ROTATE + 3 + GRACE, true);
    assert!(v.risk.has(Reason::BindingReused));
    assert_eq!(v.action, Action::Block);
    let (v, set) = thief.send(&e, &p, NOW + ROTATE + 4 + GRACE, true);
    assert!(v.risk.has(Reason::BindingReused), "{:?}", v.risk);
    assert_eq!((v.action, set), (Action::Block, 0));
}

/// Two nodes share no state but the keys. Requests of one browser that
/// cross a rotation on both nodes at once are each rotated by their node:
/// the two successors are identical, so whichever the browser keeps is
/// good on both nodes, then and after.
#[test]
fn two_nodes_rotating_one_session_at_once_issue_the_same_successor() {
    let a = engine();
    let b = engine();
    let p = Policy::default();
    let mut victim = bound_victim(&a, &p);
    // Generation 2, presented at both nodes (node B learns it).
    let (_, set) = victim.send(&a, &p, NOW + ROTATE + 1, true);
    assert_eq!(set, 1);
    let (v, _) = victim.send(&a, &p, NOW + ROTATE + 2, true);
    assert_eq!(v.action, Action::Allow);
    let (v, _) = victim.send(&b, &p, NOW + ROTATE + 3, true);
    assert_eq!(v.action, Action::Allow, "{:?}", v.risk);
    // Both rotate generation 2 at once.
    let at = NOW + 2 * ROTATE + 10;
    let (va, sa) = request(&a, &p, "victim", victim.companion.as_deref(), at);
    let (vb, sb) = request(&b, &p, "victim", victim.companion.as_deref(), at);
    assert_eq!(
        (va.action, sa.len(), vb.action, sb.len()),
        (Action::Allow, 1, Action::Allow, 1)
    );
    let sealer = &a.binding.as_ref().unwrap().sealer;
    let (from_a, from_b) = (
        sealer.unseal(value_of(&sa[0]).as_bytes()).unwrap(),
        sealer.unseal(value_of(&sb[0]).as_bytes()).unwrap(),
    );
    assert_eq!((from_a.generation, from_a.nonce), (3, from_b.nonce));
    // The browser keeps B's; it is presented at A, then at both long after
    // the grace: never reuse.
    victim.companion = Some(value_of(&sb[0]));
    for (i, node) in [&a, &b, &a, &b].into_iter().enumerate() {
        let t = at + 1 + GRACE * u64::try_from(i).unwrap();
        let (v, _) = victim.send(node, &p, t, true);
        assert_eq!(v.action, Action::Allow, "{i}: {:?}", v.risk);
    }
}

/// A companion no key of this node opens (the fleet's key changed, an older
/// format) for a session this node holds nothing for proves nothing: it is
/// replaced like a missing one, not refused.
#[test]
fn a_seal_no_key_opens_for_an_unknown_session_is_replaced_not_refused() {
    let other = Engine::new(
        EngineConfig {
            binding: BindingConfig {
                enabled: true,
                ..BindingConfig::default()
            },
            ..EngineConfig::default()
        },
        SessionHashKey::from_bytes([9; 32]),
    );
    let p = Policy::default();
    let old = bound_victim(&other, &p).companion.unwrap();
    let e = engine();
    let (v, set) = request(&e, &p, "victim", Some(&old), NOW);
    assert_eq!((v.action, set.len()), (Action::Allow, 1), "{:?}", v.risk);
    let mut jar = Jar {
        session: "victim".into(),
        companion: Some(value_of(&set[0])),
    };
    let (v, set) = jar.send(&e, &p, NOW + 1, true);
    assert_eq!((v.action, set), (Action::Allow, 0));
    // Once a binding is held, the same foreign seal is invalid.
    let (v, _) = request(&e, &p, "victim", Some(&old), NOW + 2);
    assert!(v.risk.has(Reason::BindingInvalid), "{:?}", v.risk);
    assert_eq!(v.action, Action::Block);
}

/// A flood of made-up session values the app answers with 401 binds
/// nothing, so it cannot push real bindings out of the store.
#[test]
fn an_apps_refusal_of_a_made_up_session_binds_nothing() {
    let e = engine();
    let p = Policy::default();
    for i in 0..50 {
        let (v, set) = exchange(
            &e,
            &p,
            &format!("session=junk{i}"),
            NOW,
            Enforcement::Enforce,
            None,
            401,
        );
        assert_eq!((v.action, set.len()), (Action::Allow, 0));
    }
    assert_eq!(e.bindings(), 0);
    let (_, set) = exchange(&e, &p, "session=real", NOW, Enforcement::Enforce, None, 302);
    assert_eq!(set.len(), 1);
    assert_eq!(e.bindings(), 1);
}

/// An app that re-sends its session cookie on every response (a rolling
/// expiry) opens no session: its sessions still rotate, and a copy is
/// still caught.
#[test]
fn a_rolling_session_cookie_still_rotates_and_a_copy_is_caught() {
    let e = engine();
    let p = Policy::default();
    let roll = "session=victim; Path=/; Max-Age=1800; HttpOnly";
    let send = |jar: &mut Jar, at: u64| {
        let (v, set) = exchange(
            &e,
            &p,
            &jar_cookie(jar),
            at,
            Enforcement::Enforce,
            Some(roll),
            200,
        );
        if let Some(c) = set.iter().rev().find(|c| !value_of(c).is_empty()) {
            jar.companion = Some(value_of(c));
        }
        (v, set.len())
    };
    let mut victim = Jar::new("victim");
    assert_eq!(send(&mut victim, NOW).1, 1);
    assert_eq!(send(&mut victim, NOW + 1).1, 0);
    let mut thief = victim.clone();
    let (v, set) = send(&mut victim, NOW + ROTATE + 1);
    assert_eq!(
        (v.action, set),
        (Action::Allow, 1),
        "rotated despite the app's Set-Cookie"
    );
    assert_eq!(send(&mut victim, NOW + ROTATE + 2).0.action, Action::Allow);
    let (v, set) = send(&mut thief, NOW + ROTATE + 2 + GRACE);
    assert!(v.risk.has(Reason::BindingReused), "{:?}", v.risk);
    assert_eq!((v.action, set), (Action::Block, 0));
}

/// A monitored route acts on nothing: reuse seen there is told, never
/// marked, so the owner goes on; an `off` route issues and records nothing.
#[test]
fn monitor_never_marks_a_session_and_off_binds_nothing() {
    let e = engine();
    let p = Policy::default();
    let (_, set) = exchange(&e, &p, "session=m", NOW, Enforcement::Off, None, 200);
    assert!(set.is_empty());
    assert_eq!(e.bindings(), 0);
    let mut victim = bound_victim(&e, &p);
    let thief = victim.clone();
    victim.send(&e, &p, NOW + ROTATE + 1, true);
    victim.send(&e, &p, NOW + ROTATE + 2, true);
    let (v, set) = exchange(
        &e,
        &p,
        &jar_cookie(&thief),
        NOW + ROTATE + 2 + GRACE,
        Enforcement::Monitor,
        None,
        200,
    );
    assert!(v.risk.has(Reason::BindingReused), "{:?}", v.risk);
    assert_eq!(
        (v.action, set.len()),
        (Action::Block, 0),
        "judged, not acted on"
    );
    let (v, _) = victim.send(&e, &p, NOW + ROTATE + 3 + GRACE, true);
    assert_eq!(v.action, Action::Allow, "{:?}", v.risk);
    // The same request on an enforcing route marks the session.
    let (v, _) = exchange(
        &e,
        &p,
        &jar_cookie(&thief),
        NOW + ROTATE + 4 + GRACE,
        Enforcement::Enforce,
        None,
        200,
    );
    assert_eq!(v.action, Action::Block);
    let (v, _) = victim.send(&e, &p, NOW + ROTATE + 5 + GRACE, true);
    assert!(v.risk.has(Reason::BindingReused), "{:?}", v.risk);
    assert_eq!(v.action, Action::Block);
}

/// A sibling host (or a thief holding one) tosses a companion onto the
/// parent domain under the bare name: `Domain=example.com` reaches the
/// owner's browser beside the owner's `__Host-` companion, which a sibling
/// cannot set. The tossed one is never read for the owner's session, so it
/// neither spoils the owner's binding (junk, another session's seal) nor
/// replaces it: not even the thief's own later generation of the owner's
/// session, which would otherwise make the owner present the thief's
/// generation and hide the two holders.
#[test]
fn a_companion_tossed_under_the_bare_name_cannot_spoil_or_replace_the_owners() {
    let e = engine();
    let p = Policy::default();
    let victim = bound_victim(&e, &p);
    let other = bound_victim_named(&e, &p, "other");
    let mine = victim.companion.clone().unwrap();
    let theirs = other.companion.clone().unwrap();
    for tossed in ["junk".to_string(), theirs, format!("AQ{}", "A".repeat(100))] {
        for cookie in [
            format!("vigil_bind={tossed}; session=victim; __Host-vigil_bind={mine}"),
            format!("session=victim; __Host-vigil_bind={mine}; vigil_bind={tossed}"),
        ] {
            let (v, set) = exchange(&e, &p, &cookie, NOW + 2, Enforcement::Enforce, None, 200);
            assert_eq!(
                (v.action, set.len()),
                (Action::Allow, 0),
                "{cookie}: {:?}",
                v.risk
            );
        }
    }

    // The thief copied the jar, rotated to generation 2 and presented it,
    // then plants generation 2 in the owner's browser under the bare name.
    let mut thief = victim.clone();
    let (_, set) = thief.send(&e, &p, NOW + ROTATE + 1, true);
    assert_eq!(set, 1);
    let (v, _) = thief.send(&e, &p, NOW + ROTATE + 2, true);
    assert_eq!(v.action, Action::Allow);
    let planted = thief.companion.clone().unwrap();
    let cookie = format!("session=victim; vigil_bind={planted}; __Host-vigil_bind={mine}");
    let (v, set) = exchange(
        &e,
        &p,
        &cookie,
        NOW + ROTATE + 2 + GRACE,
        Enforcement::Enforce,
        None,
        200,
    );
    // The owner's own generation 1 is judged: superseded, the copy shows.
    assert!(v.risk.has(Reason::BindingReused), "{:?}", v.risk);
    assert_eq!((v.action, set.len()), (Action::Block, 0));
}

/// A companion set before the `__Host-` prefix was used (bare name,
/// host-wide) keeps working; the next issuance moves it to the prefixed
/// name and expires the bare one, once.
#[test]
fn a_companion_set_before_the_prefix_keeps_working_and_moves_to_the_prefixed_name() {
    let e = engine();
    let p = Policy::default();
    let victim = bound_victim(&e, &p);
    let old = victim.companion.clone().unwrap();
    let bare = format!("session=victim; vigil_bind={old}");
    let (v, set) = exchange(&e, &p, &bare, NOW + 2, Enforcement::Enforce, None, 200);
    assert_eq!((v.action, set.len()), (Action::Allow, 0), "{:?}", v.risk);
    // The rotation: the successor under `__Host-`, the bare one expired.
    let (v, set) = exchange(
        &e,
        &p,
        &bare,
        NOW + ROTATE + 1,
        Enforcement::Enforce,
        None,
        200,
    );
    assert_eq!(v.action, Action::Allow);
    assert_eq!(set.len(), 2, "{set:?}");
    assert!(set[0].starts_with("__Host-vigil_bind="), "{}", set[0]);
    assert_eq!(set[1], "vigil_bind=; Path=/; Max-Age=0; Secure; HttpOnly");
    let next = value_of(&set[0]);
    let (v, set) = exchange(
        &e,
        &p,
        &format!("session=victim; __Host-vigil_bind={next}"),
        NOW + ROTATE + 2,
        Enforcement::Enforce,
        None,
        200,
    );
    assert_eq!((v.action, set.len()), (Action::Allow, 0), "{:?}", v.risk);
}

/// The companion is sent exactly where the app cookie is: `SameSite` left
/// out when the app leaves it out, `Partitioned` copied, a long `Path`
/// cut to a prefix the app's lies under; each kept across a rotation.
#[test]
fn the_companion_mirrors_same_site_partitioned_and_a_long_path_across_rotations() {
    let e = engine();
    let p = Policy::default();
    let long = format!("/{}", "segment-of-thirty-one-bytes-xx/".repeat(10));
    let cut = format!("/{}", "segment-of-thirty-one-bytes-xx/".repeat(8));
    let cut_attr = format!("; Path={cut};");
    let cases = [
        (
            "session=s1; Path=/app; Secure; HttpOnly".to_string(),
            "vigil_bind=",
            vec!["; Path=/app;"],
            vec!["SameSite", "Partitioned"],
        ),
        (
            "session=s2; Path=/; Secure; SameSite=None; Partitioned".to_string(),
            "__Host-vigil_bind=",
            vec!["; SameSite=None; Partitioned"],
            vec!["Domain"],
        ),
        (
            format!("session=s3; Path={long}; Secure; SameSite=Strict"),
            "vigil_bind=",
            vec![cut_attr.as_str(), "; SameSite=Strict"],
            vec!["Partitioned"],
        ),
    ];
    for (i, (app, name, has, lacks)) in cases.iter().enumerate() {
        let (_, set) = exchange(
            &e,
            &p,
            "theme=dark",
            NOW,
            Enforcement::Enforce,
            Some(app),
            200,
        );
        assert_eq!(set.len(), 1, "{app}");
        let issued = set[0].clone();
        // Presented, then rotated: the successor keeps the scope.
        let session = app.split(';').next().unwrap();
        let cookie = format!("{session}; {name}{}", value_of(&issued));
        let (v, _) = exchange(&e, &p, &cookie, NOW + 1, Enforcement::Enforce, None, 200);
        assert_eq!(v.action, Action::Allow, "{i}: {:?}", v.risk);
        let (v, set) = exchange(
            &e,
            &p,
            &cookie,
            NOW + ROTATE + 2,
            Enforcement::Enforce,
            None,
            200,
        );
        assert_eq!(
            (v.action, set.len()),
            (Action::Allow, 1),
            "{i}: {:?}",
            v.risk
        );
        for c in [&issued, &set[0]] {
            assert!(c.starts_with(name), "{i}: {c}");
            for attr in has {
                assert!(c.contains(attr), "{i}: {c} lacks {attr}");
            }
            for attr in lacks {
                assert!(!c.contains(attr), "{i}: {c} has {attr}");
            }
        }
    }
}

/// `[binding] domain`: a session first seen without its app's
/// `Set-Cookie` (it predates Vigil) gets its companion on the configured
/// domain, so that it goes to the app's other hosts as the domain-wide
/// app cookie does; not `__Host-`, which could not carry a `Domain`.
#[test]
fn a_configured_domain_scopes_companions_of_sessions_seen_without_their_cookie() {
    let e = Engine::new(
        EngineConfig {
            binding: BindingConfig {
                enabled: true,
                domain: Some("example.com".into()),
                ..BindingConfig::default()
            },
            ..EngineConfig::default()
        },
        SessionHashKey::from_bytes([7; 32]),
    );
    let p = Policy::default();
    for host in ["app.example.com", "EXAMPLE.com", "a.b.example.com"] {
        let (v, set) = exchange_for(
            &e,
            &p,
            &format!("session=old-{host}"),
            NOW,
            Enforcement::Enforce,
            None,
            200,
            host,
        );
        assert_eq!((v.action, set.len()), (Action::Allow, 1));
        let c = &set[0];
        assert!(c.starts_with("vigil_bind="), "{c}");
        for attr in ["; Path=/;", "; Domain=example.com;", "; SameSite=None"] {
            assert!(c.contains(attr), "{c} lacks {attr}");
        }
    }
    // A host not under the domain (a browser would refuse the `Domain`,
    // leaving the session without a companion): host-wide, `__Host-`.
    for host in ["example.org", "badexample.com", "example.com.evil.test", ""] {
        let (v, set) = exchange_for(
            &e,
            &p,
            &format!("session=elsewhere-{host}"),
            NOW,
            Enforcement::Enforce,
            None,
            200,
            host,
        );
        assert_eq!((v.action, set.len()), (Action::Allow, 1), "{host}");
        assert!(
            set[0].starts_with("__Host-vigil_bind="),
            "{host}: {}",
            set[0]
        );
        assert!(!set[0].contains("Domain="), "{host}: {}", set[0]);
    }
}

/// The app opens a host-only session (no `Domain`) and the response
/// carrying its companion is lost: the companion issued again after the
/// grace stays host-only (`__Host-`), even with `[binding] domain` set
/// and the host under it, so that sibling hosts never receive it.
#[test]
fn a_lost_first_issuance_of_a_host_only_session_is_not_widened_to_the_domain() {
    let e = Engine::new(
        EngineConfig {
            binding: BindingConfig {
                enabled: true,
                grace: std::time::Duration::from_secs(GRACE),
                domain: Some("example.com".into()),
                ..BindingConfig::default()
            },
            ..EngineConfig::default()
        },
        SessionHashKey::from_bytes([7; 32]),
    );
    let p = Policy::default();
    let host = "app.example.com";
    let (_, set) = exchange_for(
        &e,
        &p,
        "x=1",
        NOW,
        Enforcement::Enforce,
        Some("session=hostonly; Path=/app; Secure; HttpOnly; SameSite=Lax"),
        200,
        host,
    );
    assert_eq!(set.len(), 1, "{set:?}");
    assert!(set[0].starts_with("vigil_bind="), "{}", set[0]);
    assert!(!set[0].contains("Domain="), "{}", set[0]);
    // Lost: the browser never got it. Within the grace, nothing again.
    let (v, set) = exchange_for(
        &e,
        &p,
        "session=hostonly",
        NOW + 1,
        Enforcement::Enforce,
        None,
        200,
        host,
    );
    assert_eq!((v.action, set.len()), (Action::Allow, 0), "{set:?}");
    let (v, set) = exchange_for(
        &e,
        &p,
        "session=hostonly",
        NOW + GRACE,
        Enforcement::Enforce,
        None,
        200,
        host,
    );
    assert_eq!((v.action, set.len()), (Action::Allow, 1), "{set:?}");
    assert!(set[0].starts_with("__Host-vigil_bind="), "{}", set[0]);
    assert!(!set[0].contains("Domain="), "{}", set[0]);

    // A session first bound on the configured domain is issued again on it.
    let (_, set) = exchange_for(
        &e,
        &p,
        "session=wide",
        NOW,
        Enforcement::Enforce,
        None,
        200,
        host,
    );
    assert!(set[0].contains("; Domain=example.com;"), "{}", set[0]);
    let (_, set) = exchange_for(
        &e,
        &p,
        "session=wide",
        NOW + GRACE,
        Enforcement::Enforce,
        None,
        200,
        host,
    );
    assert_eq!(set.len(), 1, "{set:?}");
    assert!(set[0].contains("; Domain=example.com;"), "{}", set[0]);
}

/// The app confirms a step-up on the response (`confirm_header: 1`):
/// with `rotate_on_step_up`, that response carries the next generation,
/// so a copy of the jar taken before the owner proved themselves is
/// caught after the grace, not only at the next `rotate_after`.
#[test]
fn a_confirmation_rotates_the_binding_so_a_copy_taken_before_it_is_caught() {
    for rotate_on_step_up in [true, false] {
        let e = Engine::new(
            EngineConfig {
                binding: BindingConfig {
                    enabled: true,
                    rotate_after: std::time::Duration::from_secs(ROTATE),
                    grace: std::time::Duration::from_secs(GRACE),
                    rotate_on_step_up,
                    ..BindingConfig::default()
                },
                ..EngineConfig::default()
            },
            SessionHashKey::from_bytes([7; 32]),
        );
        let p = Policy::default();
        let mut victim = bound_victim(&e, &p);
        let thief = victim.clone();
        // Long before rotate_after: the owner passes a step-up the app
        // confirms on its response.
        let at = NOW + 10;
        let (v, set) = confirmed_exchange(&e, &p, &jar_cookie(&victim), at);
        assert_eq!(v.action, Action::Allow);
        if !rotate_on_step_up {
            assert!(set.is_empty(), "{set:?}");
            let (v, _) = exchange(
                &e,
                &p,
                &jar_cookie(&thief),
                at + 1 + GRACE,
                Enforcement::Enforce,
                None,
                200,
            );
            assert_eq!(
                v.action,
                Action::Allow,
                "no rotation, nothing to tell apart"
            );
            continue;
        }
        assert_eq!(set.len(), 1, "{set:?}");
        let sealer = &e.binding.as_ref().unwrap().sealer;
        assert_eq!(
            sealer
                .unseal(value_of(&set[0]).as_bytes())
                .unwrap()
                .generation,
            2
        );
        victim.companion = Some(value_of(&set[0]));
        let (v, _) = victim.send(&e, &p, at + 1, true);
        assert_eq!(v.action, Action::Allow, "{:?}", v.risk);
        let (v, set) = exchange(
            &e,
            &p,
            &jar_cookie(&thief),
            at + 1 + GRACE,
            Enforcement::Enforce,
            None,
            200,
        );
        assert!(v.risk.has(Reason::BindingReused), "{:?}", v.risk);
        assert_eq!((v.action, set.len()), (Action::Block, 0));
        // A confirmation of a session whose generation is not yet
        // presented issues nothing more (one rotation at a time).
        let fresh = bound_victim_named(&e, &p, "fresh");
        let (_, set) = confirmed_exchange(&e, &p, &jar_cookie(&fresh), at);
        assert_eq!(set.len(), 1);
        let (_, set) = confirmed_exchange(&e, &p, &jar_cookie(&fresh), at);
        assert_eq!(set.len(), 0, "generation 2 issued, not yet presented");
    }
}

/// One request judged and applied on an enforcing route, answered by a
/// response on which the (trusted) app confirms a step-up.
fn confirmed_exchange(
    e: &Engine,
    p: &Policy,
    cookie: &str,
    at: u64,
) -> (Verdict, SmallVec<[String; 1]>) {
    let mut h = HeaderMap::new();
    h.insert("cookie", cookie.parse().unwrap());
    h.insert("user-agent", UA.parse().unwrap());
    let view = RequestView {
        peer: "192.0.2.10".parse().unwrap(),
        headers: &h,
        now_secs: at,
        tls: Default::default(),
        facts: Default::default(),
    };
    let v = e.decide(&view, p, ForwardedHeaders::default()).unwrap();
    e.apply(
        &v,
        &Decision {
            enforcement: Enforcement::Enforce,
            route: "r",
            reference: None,
            rule: None,
            tags: None,
        },
    );
    let confirm = http::HeaderName::from_static("vigil-confirm");
    let mut rh = HeaderMap::new();
    rh.insert(confirm.clone(), "1".parse().unwrap());
    let response = ResponseView {
        headers: &rh,
        now_secs: at,
        user_header: None,
        confirm_header: Some(&confirm),
        app_confirms: true,
    };
    let done = e.respond(&v, &response, Enforcement::Enforce);
    assert!(done.confirmed);
    let set = e.binding_cookies_confirmed(&v, &response, Enforcement::Enforce, 200, done.confirmed);
    (v, set)
}

/// Vigil's own OIDC step-up: the callback request is judged but nothing of
/// it is applied (it is Vigil's page), its verdict is `step_up`, and the
/// engine confirms the session from it. The redirect back carries the next
/// generation, even when the callback's own request was the first to
/// present the current one; without the confirmation nothing is issued.
#[test]
fn vigils_own_step_up_callback_rotates_the_binding_it_confirms() {
    let e = engine();
    let p = Policy::default();
    let (_, set) = exchange(&e, &p, "session=cb", NOW, Enforcement::Enforce, None, 200);
    assert_eq!(set.len(), 1);
    let first = value_of(&set[0]);
    let stepping = Policy {
        low: Action::StepUp,
        ..Policy::default()
    };
    let mut h = HeaderMap::new();
    let cookie = format!("session=cb; __Host-vigil_bind={first}");
    h.insert("cookie", cookie.parse().unwrap());
    h.insert("user-agent", UA.parse().unwrap());
    let view = RequestView {
        peer: "192.0.2.10".parse().unwrap(),
        headers: &h,
        now_secs: NOW + 1,
        tls: Default::default(),
        facts: Default::default(),
    };
    let v = e
        .decide(&view, &stepping, ForwardedHeaders::default())
        .unwrap();
    assert_eq!(v.action, Action::StepUp);
    let empty = HeaderMap::new();
    let back = ResponseView {
        headers: &empty,
        now_secs: NOW + 1,
        user_header: None,
        confirm_header: None,
        app_confirms: false,
    };
    let unconfirmed = e.binding_cookies_confirmed(&v, &back, Enforcement::Enforce, 303, false);
    assert!(unconfirmed.is_empty(), "{unconfirmed:?}");
    assert!(e.confirm(&v));
    let set = e.binding_cookies_confirmed(&v, &back, Enforcement::Enforce, 303, true);
    assert_eq!(set.len(), 1, "{set:?}");
    assert!(set[0].starts_with("__Host-vigil_bind="), "{}", set[0]);
    let sealer = &e.binding.as_ref().unwrap().sealer;
    assert_eq!(
        sealer
            .unseal(value_of(&set[0]).as_bytes())
            .unwrap()
            .generation,
        2
    );
}

/// A sibling host (`evil.example.com`) tosses four bare-named junk
/// companions onto the parent domain, one per `Path` (`/`, `/a`, `/a/`,
/// `/a/b`); the owner's browser sends all four beside its own `__Host-`
/// companion on `/a/b`, in either order. The bare name has a cap of its
/// own and is not read at all when a `__Host-` value names the session:
/// neither overflow nor duplication spoils the owner's binding, however
/// many bare values come.
#[test]
fn bare_values_tossed_by_a_sibling_cannot_overflow_or_spoil_the_host_companion() {
    let e = engine();
    let p = Policy::default();
    let victim = bound_victim(&e, &p);
    let other = bound_victim_named(&e, &p, "other");
    let mine = victim.companion.clone().unwrap();
    let theirs = other.companion.clone().unwrap();
    for tossed in [
        vec!["junk1", "junk2", "junk3", "junk4"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>(),
        (0..9).map(|i| format!("junk{i}")).collect(),
        vec![
            theirs.clone(),
            theirs.clone(),
            "junk".into(),
            theirs.clone(),
        ],
    ] {
        let bare: Vec<String> = tossed.iter().map(|t| format!("vigil_bind={t}")).collect();
        let bare = bare.join("; ");
        for cookie in [
            format!("{bare}; session=victim; __Host-vigil_bind={mine}"),
            format!("session=victim; __Host-vigil_bind={mine}; {bare}"),
        ] {
            let (v, set) = exchange(&e, &p, &cookie, NOW + 2, Enforcement::Enforce, None, 200);
            assert_eq!(
                (v.action, set.len()),
                (Action::Allow, 0),
                "{cookie}: {:?}",
                v.risk
            );
            assert!(!v.risk.has(Reason::BindingInvalid), "{:?}", v.risk);
        }
    }
    // Without a `__Host-` value for the session, five bare values are
    // still more than are read: refused unread.
    let five: Vec<String> = (0..5).map(|i| format!("vigil_bind=junk{i}")).collect();
    let (v, _) = exchange(
        &e,
        &p,
        &format!("session=victim; {}", five.join("; ")),
        NOW + 2,
        Enforcement::Enforce,
        None,
        200,
    );
    assert!(v.risk.has(Reason::BindingInvalid), "{:?}", v.risk);
    assert_eq!(v.action, Action::Block);
}

/// The nameless-cookie trick: a sibling sets `=__Host-vigil_bind=<g2>;
/// Domain=example.com`, which older browsers send as a `__Host-`
/// companion, with the thief's rotated generation 2. The owner's browser
/// then sends its own generation 1 and the planted 2 under one name.
/// Every value naming the session is judged: the owner's superseded 1
/// shows the two holders (not hidden behind the later one).
#[test]
fn a_planted_later_generation_under_the_host_name_does_not_hide_the_owners_superseded_one() {
    let e = engine();
    let p = Policy::default();
    let victim = bound_victim(&e, &p);
    let mine = victim.companion.clone().unwrap();
    let mut thief = victim.clone();
    let (_, set) = thief.send(&e, &p, NOW + ROTATE + 1, true);
    assert_eq!(set, 1);
    let (v, _) = thief.send(&e, &p, NOW + ROTATE + 2, true);
    assert_eq!(v.action, Action::Allow);
    let planted = thief.companion.clone().unwrap();
    // Inside the grace (the previous generation beside its successor, as
    // requests in flight carry it), allowed; after it, reuse — in either
    // order.
    for cookie in [
        format!("session=victim; __Host-vigil_bind={planted}; __Host-vigil_bind={mine}"),
        format!("session=victim; __Host-vigil_bind={mine}; __Host-vigil_bind={planted}"),
    ] {
        let (v, _) = exchange(
            &e,
            &p,
            &cookie,
            NOW + ROTATE + 3,
            Enforcement::Monitor,
            None,
            200,
        );
        assert_eq!(v.action, Action::Allow, "{cookie}: {:?}", v.risk);
        let (v, set) = exchange(
            &e,
            &p,
            &cookie,
            NOW + ROTATE + 2 + GRACE,
            Enforcement::Monitor,
            None,
            200,
        );
        assert!(v.risk.has(Reason::BindingReused), "{cookie}: {:?}", v.risk);
        assert_eq!((v.action, set.len()), (Action::Block, 0), "{cookie}");
    }
}

/// Vigil's OIDC step-up callback, as [`vigils_own_step_up_callback_rotates_the_binding_it_confirms`]
/// drives it: judged (a `step_up` verdict), nothing applied, confirmed;
/// returns the companions of the redirect back.
fn step_up_callback(e: &Engine, cookie: &str, at: u64) -> SmallVec<[String; 1]> {
    let stepping = Policy {
        low: Action::StepUp,
        ..Policy::default()
    };
    let mut h = HeaderMap::new();
    h.insert("cookie", cookie.parse().unwrap());
    h.insert("user-agent", UA.parse().unwrap());
    let view = RequestView {
        peer: "192.0.2.10".parse().unwrap(),
        headers: &h,
        now_secs: at,
        tls: Default::default(),
        facts: Default::default(),
    };
    let v = e
        .decide(&view, &stepping, ForwardedHeaders::default())
        .unwrap();
    assert_eq!(v.action, Action::StepUp, "{:?}", v.risk);
    assert!(e.confirm(&v));
    let back = ResponseView {
        headers: &HeaderMap::new(),
        now_secs: at,
        user_header: None,
        confirm_header: None,
        app_confirms: false,
    };
    e.binding_cookies_confirmed(&v, &back, Enforcement::Enforce, 303, true)
}

/// The owner passes a step-up on a node that is behind: it holds
/// generation 1, the owner presents 2 (issued by another node, and held
/// by a copy of the jar taken after it). The rotation starts from the
/// presented 2 (learnt first), so the owner gets a generation 3 the copy
/// does not hold, and the copy's 2 is caught after the grace — not a
/// "rotation" of 1 to the very 2 both already hold.
#[test]
fn a_step_up_on_a_node_behind_rotates_from_the_presented_generation() {
    let a = engine();
    let b = engine();
    let p = Policy::default();
    let mut victim = bound_victim(&a, &p);
    // Node B learns generation 1.
    let (v, _) = victim.send(&b, &p, NOW + 2, true);
    assert_eq!(v.action, Action::Allow);
    // Node A rotates to 2; the owner presents it there.
    let (_, set) = victim.send(&a, &p, NOW + ROTATE + 1, true);
    assert_eq!(set, 1);
    let (v, _) = victim.send(&a, &p, NOW + ROTATE + 2, true);
    assert_eq!(v.action, Action::Allow);
    let thief = victim.clone();
    // The step-up on node B, presenting 2.
    let set = step_up_callback(&b, &jar_cookie(&victim), NOW + ROTATE + 3);
    assert_eq!(set.len(), 1, "{set:?}");
    let sealer = &b.binding.as_ref().unwrap().sealer;
    let g = sealer.unseal(value_of(&set[0]).as_bytes()).unwrap();
    assert_eq!(g.generation, 3);
    // Not the successor any node would issue to whoever presents 2 next
    // (the copy): that one is deterministic, this one is not.
    let held = sealer
        .unseal(thief.companion.as_deref().unwrap().as_bytes())
        .unwrap();
    assert_eq!(held.generation, 2);
    assert_ne!(
        g.nonce,
        sealer.successor_nonce(&g.session, 3, held.nonce),
        "a confirmed rotation's nonce is its own"
    );
    victim.companion = Some(value_of(&set[0]));
    let (v, _) = victim.send(&b, &p, NOW + ROTATE + 4, true);
    assert_eq!(v.action, Action::Allow, "{:?}", v.risk);
    let (v, set) = exchange(
        &b,
        &p,
        &jar_cookie(&thief),
        NOW + ROTATE + 5 + GRACE,
        Enforcement::Enforce,
        None,
        200,
    );
    assert!(v.risk.has(Reason::BindingReused), "{:?}", v.risk);
    assert_eq!((v.action, set.len()), (Action::Block, 0));
}

/// A step-up passed with the previous generation (an old tab, within the
/// grace of its successor) rotates nothing: the successor held by the
/// same browser is not replaced by a generation issued on a superseded
/// seal.
#[test]
fn a_step_up_presenting_the_previous_generation_within_the_grace_rotates_nothing() {
    let e = engine();
    let p = Policy::default();
    let mut victim = bound_victim(&e, &p);
    let old_tab = victim.clone();
    let (_, set) = victim.send(&e, &p, NOW + ROTATE + 1, true);
    assert_eq!(set, 1);
    let (v, _) = victim.send(&e, &p, NOW + ROTATE + 2, true);
    assert_eq!(v.action, Action::Allow);
    let set = step_up_callback(&e, &jar_cookie(&old_tab), NOW + ROTATE + 3);
    assert!(set.is_empty(), "{set:?}");
    // The current generation still goes on, and a step-up presenting it
    // rotates.
    let (v, _) = victim.send(&e, &p, NOW + ROTATE + 4, true);
    assert_eq!(v.action, Action::Allow, "{:?}", v.risk);
    let set = step_up_callback(&e, &jar_cookie(&victim), NOW + ROTATE + 5);
    assert_eq!(set.len(), 1, "{set:?}");
}

/// An app (or whoever injects into its responses) sets the session cookie
/// with a hostile `Domain` or `Path`: control characters, bytes beyond
/// ASCII, a `Domain` longer than any host name. No such attribute is
/// carried to the companion (which could split its `Set-Cookie` or send
/// it elsewhere): the companion falls back to the host-wide `__Host-`
/// scope, `Path=/`, no `Domain`.
#[test]
fn a_hostile_app_domain_or_path_falls_back_to_the_host_wide_scope() {
    let e = engine();
    let p = Policy::default();
    let long = format!("{}.example.com", "a".repeat(300));
    let cases: Vec<Vec<u8>> = vec![
        format!("session=h1; Domain={long}; Path=/; Secure").into_bytes(),
        b"session=h2; Domain=exa\tmple.com; Path=/; Secure".to_vec(),
        b"session=h3; Domain=\xc3\xa9xample.com; Path=/; Secure".to_vec(),
        b"session=h4; Path=/\xc3\xa9; Secure".to_vec(),
        b"session=h5; Path=/a\tb; Secure".to_vec(),
    ];
    for (i, set_cookie) in cases.iter().enumerate() {
        let (v, _) = request(&e, &p, "anon", None, NOW);
        let mut h = HeaderMap::new();
        h.insert(
            "set-cookie",
            http::HeaderValue::from_bytes(set_cookie).unwrap(),
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
        assert_eq!(set.len(), 1, "case {i}: {set:?}");
        let c = &set[0];
        assert!(c.starts_with("__Host-vigil_bind="), "case {i}: {c}");
        assert!(c.contains("; Path=/;"), "case {i}: {c}");
        assert!(!c.contains("Domain"), "case {i}: {c}");
        assert!(c.is_ascii() && !c.contains('\t'), "case {i}: {c}");
        // The session it opened is bound: presenting it is allowed.
        let session = format!("h{}", i + 1);
        let (v, _) = request(&e, &p, &session, Some(&value_of(c)), NOW + 1);
        assert_eq!(v.action, Action::Allow, "case {i}: {:?}", v.risk);
    }
}

/// The pipeline queues for the fleet what advances a binding — a first
/// presentation, a rotation's presentation, a mark — and nothing else: not
/// an issuance nobody showed yet, not a request that only shows the
/// session is in use (docs/bound-sessions.md, "Across the fleet").
#[test]
fn the_pipeline_queues_advances_and_marks_and_nothing_else() {
    let e = engine();
    e.publish_bindings();
    let p = revoking();
    let mut victim = Jar::new("victim");
    let (_, set) = victim.send(&e, &p, NOW, true);
    assert_eq!(set, 1);
    assert!(
        e.unsent_bindings(10, NOW).is_empty(),
        "an issuance alone is not published"
    );
    victim.send(&e, &p, NOW + 1, true);
    let first = e.unsent_bindings(10, NOW + 1);
    assert_eq!(first.len(), 1);
    assert_eq!(
        (
            first[0].generation,
            first[0].presented_at,
            first[0].compromised
        ),
        (1, u32::try_from(NOW + 1).unwrap(), false)
    );
    // Requests that only show the session is in use queue nothing.
    for t in 2..40 {
        victim.send(&e, &p, NOW + t * 3, true);
    }
    assert!(e.unsent_bindings(10, NOW + 120).is_empty());
    let mut thief = victim.clone();
    // The rotation's issuance is not published; its presentation is.
    let (_, set) = victim.send(&e, &p, NOW + ROTATE + 1, true);
    assert_eq!(set, 1);
    assert!(e.unsent_bindings(10, NOW + ROTATE + 1).is_empty());
    victim.send(&e, &p, NOW + ROTATE + 2, true);
    let second = e.unsent_bindings(10, NOW + ROTATE + 2);
    assert_eq!(second.len(), 1);
    assert_eq!(
        (second[0].generation, second[0].previous_nonce),
        (2, first[0].nonce)
    );
    // The thief's replay marks the session: published with the issuance
    // judged.
    let (v, _) = thief.send(&e, &p, NOW + ROTATE + 3 + GRACE, true);
    assert!(v.risk.has(Reason::BindingReused), "{:?}", v.risk);
    let mark = e.unsent_bindings(10, NOW + ROTATE + 3 + GRACE);
    assert_eq!(mark.len(), 1);
    assert_eq!(
        (mark[0].generation, mark[0].nonce, mark[0].compromised),
        (2, second[0].nonce, true)
    );
    assert!(mark[0].is_valid());
}

/// An engine switched to a new hash key, the old one previous, holding the
/// binding states `old` held (as a restart carries them in the snapshot).
fn rekeyed(old: &Engine, at: u64) -> Engine {
    let config = EngineConfig {
        binding: BindingConfig {
            enabled: true,
            rotate_after: std::time::Duration::from_secs(ROTATE),
            grace: std::time::Duration::from_secs(GRACE),
            ..BindingConfig::default()
        },
        ..EngineConfig::default()
    };
    let new = Engine::new(config, SessionHashKey::from_bytes([8; 32]))
        .with_previous_hash_key(SessionHashKey::from_bytes([7; 32]));
    let mut section = Vec::new();
    old.write_binding_snapshot(&mut section).unwrap();
    assert!(new.restore_binding_snapshot(&section, at).is_some());
    new
}

/// Review finding 1, the attack: a thief replays a superseded generation
/// while the fleet's hash key rotates. The state judged is held under the
/// session's previous key; the mark must be published with that state's
/// generation and nonce under the current key — never as an empty
/// generation-0 record the controller would refuse (and, before, lose the
/// whole batch with it).
#[test]
fn a_mark_during_a_hash_key_rotation_is_published_with_the_state_judged() {
    let old = engine();
    let p = revoking();
    let mut victim = bound_victim(&old, &p);
    let mut thief = victim.clone();
    victim.send(&old, &p, NOW + ROTATE + 1, true);
    let (v, _) = victim.send(&old, &p, NOW + ROTATE + 2, true);
    assert_eq!(v.action, Action::Allow);
    let held = old
        .binding
        .as_ref()
        .unwrap()
        .store
        .get(
            &old.key_for_cookie("session", b"victim").unwrap(),
            NOW + ROTATE + 2,
        )
        .unwrap();
    assert_eq!(held.generation, 2);

    let new = rekeyed(&old, NOW + ROTATE + 2);
    new.publish_bindings();
    let at = NOW + ROTATE + 3 + GRACE;
    let (v, set) = thief.send(&new, &p, at, true);
    assert!(v.risk.has(Reason::BindingReused), "{:?}", v.risk);
    assert_eq!(set, 0);
    let records = new.unsent_bindings(10, at);
    assert_eq!(records.len(), 1, "{records:?}");
    let r = records[0];
    let current = new.key_for_cookie("session", b"victim").unwrap();
    assert_eq!(r.session, current, "under the current key");
    assert_eq!(
        (r.generation, r.nonce, r.previous_nonce, r.compromised),
        (2, held.nonce, held.previous_nonce, true)
    );
    assert!(r.is_valid());
    // Both holders stay refused on this node, through the overlap and
    // once the previous key is gone.
    let (v, _) = victim.send(&new, &p, at + 1, true);
    assert!(v.risk.has(Reason::BindingReused), "{:?}", v.risk);
    let mut section = Vec::new();
    new.write_binding_snapshot(&mut section).unwrap();
    let after = Engine::new(
        EngineConfig {
            binding: BindingConfig {
                enabled: true,
                ..BindingConfig::default()
            },
            ..EngineConfig::default()
        },
        SessionHashKey::from_bytes([8; 32]),
    );
    after.restore_binding_snapshot(&section, at + 2).unwrap();
    let (v, _) = request(&after, &p, "victim", victim.companion.as_deref(), at + 2);
    assert!(v.risk.has(Reason::BindingReused), "{:?}", v.risk);
}
