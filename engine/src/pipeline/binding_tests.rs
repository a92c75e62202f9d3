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
        Some(c) => format!("session={}; vigil_bind={c}", j.session),
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
        if let Some(c) = set.last() {
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
