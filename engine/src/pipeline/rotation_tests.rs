//! Rotation of the session hash key, as the attacker would try it: a
//! revoked stolen cookie must not come back as a fresh session, a thief
//! must still be judged against the owner's baseline, and no client input
//! chooses which key judges a session.

use std::net::IpAddr;

use http::HeaderMap;
use proptest::prelude::*;

use super::*;
use crate::events::channel;
use crate::score::Reason;

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const NOW: u64 = 1_700_000_000;

fn k1() -> SessionHashKey {
    SessionHashKey::from_bytes([1; 32])
}

fn k2() -> SessionHashKey {
    SessionHashKey::from_bytes([2; 32])
}

/// A node before the switch: K1 alone.
fn before() -> Engine {
    Engine::new(EngineConfig::default(), k1())
}

/// A node after the switch: K2 current, K1 previous, user keys kept on K1.
fn after() -> Engine {
    Engine::new(EngineConfig::default(), k2())
        .with_previous_hash_key(k1())
        .with_user_key(k1())
}

/// `after()` restarted from `old`'s snapshot, as the proxy restarts.
fn switched(old: &Engine) -> Engine {
    let e = after();
    e.scorer().restore(&old.scorer().snapshot(), NOW).unwrap();
    e
}

fn req_at(e: &Engine, p: &Policy, cookie: &str, ua: &str, peer: &str, at: u64) -> Verdict {
    let mut h = HeaderMap::new();
    h.insert("cookie", cookie.parse().unwrap());
    h.insert("user-agent", ua.parse().unwrap());
    let peer: IpAddr = peer.parse().unwrap();
    e.evaluate(
        &RequestView {
            peer,
            headers: &h,
            now_secs: at,
            tls: Default::default(),
            facts: Default::default(),
        },
        p,
    )
    .unwrap()
}

fn req(e: &Engine, p: &Policy, cookie: &str, ua: &str, peer: &str) -> Verdict {
    req_at(e, p, cookie, ua, peer, NOW)
}

fn revoking() -> Policy {
    Policy {
        high: Action::Revoke,
        ..Policy::default()
    }
}

#[test]
fn a_cookie_revoked_under_the_old_key_stays_refused_after_the_switch() {
    let old = before();
    let p = revoking();
    req(&old, &p, "session=stolen", FIREFOX, "192.0.2.1");
    let caught = req(&old, &p, "session=stolen", CHROME, "198.51.100.7");
    assert_eq!(caught.action, Action::Revoke);

    let new = switched(&old);
    // The thief, then the owner: both refused as revoked, not a new session.
    for ua in [CHROME, FIREFOX] {
        let v = req(&new, &p, "session=stolen", ua, "192.0.2.1");
        assert_eq!(v.action, Action::Block, "{ua}");
        assert!(v.risk.has(Reason::Revoked), "{ua}");
    }
    // Re-keyed on sight: once the previous key is dropped, the revocation
    // holds under the new key alone.
    let dropped = Engine::new(EngineConfig::default(), k2()).with_user_key(k1());
    dropped
        .scorer()
        .restore(&new.scorer().snapshot(), NOW)
        .unwrap();
    let v = req(&dropped, &p, "session=stolen", FIREFOX, "192.0.2.1");
    assert_eq!(v.action, Action::Block);
    assert!(v.risk.has(Reason::Revoked));
}

#[test]
fn a_revocation_under_the_old_key_refuses_a_session_already_rekeyed() {
    // A node still on K1 alone revokes the session after this node re-keyed
    // it: the fleet tells the revocation under K1.
    let old = before();
    let new = after();
    let p = Policy::default();
    assert_eq!(
        req(&new, &p, "session=a", FIREFOX, "192.0.2.1").action,
        Action::Allow
    );
    let under_k1 = old.key_for_cookie("session", b"a").unwrap();
    new.revoke_vouched(under_k1, NOW);
    let v = req(&new, &p, "session=a", FIREFOX, "192.0.2.1");
    assert_eq!(v.action, Action::Block);
    assert!(v.risk.has(Reason::Revoked));
    // A route that judges nothing refuses it too.
    let mut h = HeaderMap::new();
    h.insert("cookie", "session=a".parse().unwrap());
    let view = RequestView {
        peer: "192.0.2.1".parse().unwrap(),
        headers: &h,
        now_secs: NOW,
        tls: Default::default(),
        facts: Default::default(),
    };
    assert!(new.revoked_credential(&view).unwrap().is_some());
}

#[test]
fn a_revocation_decided_during_the_overlap_is_made_under_both_keys() {
    let old = before();
    let new = after();
    let p = revoking();
    req(&new, &p, "session=a", FIREFOX, "192.0.2.1");
    let v = req(&new, &p, "session=a", CHROME, "198.51.100.7");
    assert_eq!(v.action, Action::Revoke);
    let under_k2 = new.key_for_cookie("session", b"a").unwrap();
    let under_k1 = old.key_for_cookie("session", b"a").unwrap();
    assert_eq!(v.effects.revokes(), [under_k2, under_k1]);
    // A node not yet switched honours it when the fleet tells it.
    old.revoke_vouched(under_k1, NOW);
    let there = req(&old, &p, "session=a", FIREFOX, "192.0.2.1");
    assert!(there.risk.has(Reason::Revoked));
}

#[test]
fn a_thief_after_the_switch_is_judged_against_the_owners_baseline() {
    let old = before();
    let p = Policy::default();
    req(&old, &p, "session=a", FIREFOX, "192.0.2.1");

    // Without rotation, as the reference.
    let thief_then = req(&old, &p, "session=a", CHROME, "198.51.100.7");
    assert_eq!(thief_then.action, Action::Block);

    let new = switched(&old);
    let thief = req(&new, &p, "session=a", CHROME, "198.51.100.7");
    assert_eq!(thief.action, Action::Block);
    assert_eq!(thief.risk, thief_then.risk);
    assert!(thief.risk.has(Reason::DeviceChanged));
    // The owner goes on as before, under the new key.
    let owner = req(&new, &p, "session=a", FIREFOX, "192.0.2.1");
    assert_eq!(owner.action, Action::Allow);
    assert!(owner.risk.reasons.is_empty());
    let under_k2 = new.key_for_cookie("session", b"a").unwrap();
    assert_eq!(owner.session.unwrap().key, under_k2);
    assert!(new.scorer().session(&under_k2).is_some());
    let under_k1 = old.key_for_cookie("session", b"a").unwrap();
    assert!(
        new.scorer().session(&under_k1).is_none(),
        "moved, not copied"
    );
}

#[test]
fn a_state_already_under_the_new_key_is_not_overwritten_by_the_old_one() {
    // The thief reached this node first after the switch and was refused
    // (nothing learnt); the owner's baseline under K1 arrives from the
    // fleet later. Then the owner's K2 state made meanwhile stands.
    let old = before();
    let new = after();
    let p = Policy::default();
    req(&new, &p, "session=a", FIREFOX, "192.0.2.1");
    req(&old, &p, "session=a", CHROME, "198.51.100.7");
    let under_k1 = old.key_for_cookie("session", b"a").unwrap();
    new.scorer()
        .adopt(&old.scorer().export(&under_k1).unwrap(), false, NOW)
        .unwrap();
    let owner = req(&new, &p, "session=a", FIREFOX, "192.0.2.1");
    assert_eq!(owner.action, Action::Allow);
    assert!(owner.risk.reasons.is_empty());
}

#[test]
fn a_rekeyed_bound_session_is_told_under_its_new_key() {
    let old = before();
    let p = Policy::default();
    req(&old, &p, "session=a", FIREFOX, "192.0.2.1");
    let under_k1 = old.key_for_cookie("session", b"a").unwrap();
    old.bind_user(under_k1, "alice", NOW);
    let (sink, streams) = channel(16, 16);
    let new = switched(&old).with_events(sink);
    req(&new, &p, "session=a", FIREFOX, "192.0.2.1");
    let under_k2 = new.key_for_cookie("session", b"a").unwrap();
    let told = streams.fleet.try_recv().expect("an event");
    assert_eq!(
        *told,
        Event::SessionRekeyed {
            session: under_k2,
            previous: under_k1,
            user: Some(old.user_key("alice")),
            revoked: false,
            at: NOW,
        }
    );
    // The user is the same user on both sides of the switch.
    assert_eq!(new.user_key("alice"), old.user_key("alice"));
    assert_eq!(
        new.scorer().session(&under_k2).unwrap().user(),
        Some(old.user_key("alice"))
    );
}

#[test]
fn without_a_previous_key_nothing_changes() {
    let plain = Engine::new(EngineConfig::default(), k2());
    let p = Policy::default();
    let v = req(&plain, &p, "session=a", FIREFOX, "192.0.2.1");
    let s = v.session.unwrap();
    assert_eq!(s.previous, None);
    assert_eq!(s.key, after().key_for_cookie("session", b"a").unwrap());
    let ids = plain.hash_key_ids();
    assert_eq!(ids.previous, None);
    assert_eq!(ids.user, ids.current);
    // A previous key equal to the current one is no rotation.
    let same = Engine::new(EngineConfig::default(), k2()).with_previous_hash_key(k2());
    assert_eq!(same.hash_key_ids().previous, None);
    let v = req(&same, &p, "session=a", FIREFOX, "192.0.2.1");
    assert_eq!(v.session.unwrap().previous, None);
}

#[test]
fn key_ids_name_keys_without_showing_them() {
    let ids = after().hash_key_ids();
    assert_eq!(ids.current, k2().id());
    assert_eq!(ids.previous, Some(k1().id()));
    assert_eq!(ids.user, k1().id());
    assert_ne!(k1().id(), k2().id());
    let shown = k1().id().to_string();
    assert_eq!(shown.len(), 8);
    assert!(!hex(k1().as_bytes()).contains(&shown));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

proptest! {
    /// Whatever the client sends, each credential is judged under the
    /// current key's hash of it, with the previous key's hash of the same
    /// credential beside it: no spelling, name or header selects the key.
    #[test]
    fn the_client_cannot_choose_the_key(
        value in "[A-Za-z0-9%\"\\\\._-]{1,40}",
        name in prop::sample::select(vec!["session", "Session", "SESSION", "session "]),
    ) {
        let old = before();
        let current = Engine::new(EngineConfig::default(), k2());
        let new = after();
        let mut h = HeaderMap::new();
        let Ok(line) = format!("{name}={value}").parse() else { return Ok(()) };
        h.insert("cookie", line);
        h.insert("authorization", format!("Bearer {value}").parse().unwrap());
        let keys_new: Vec<_> = new.session.credentials(&h).sessions().to_vec();
        let keys_k2: Vec<_> = current.session.credentials(&h).sessions().to_vec();
        let keys_k1: Vec<_> = old.session.credentials(&h).sessions().to_vec();
        prop_assert_eq!(keys_new.len(), keys_k2.len());
        for ((n, c), o) in keys_new.iter().zip(&keys_k2).zip(&keys_k1) {
            prop_assert_eq!(n.key, c.key);
            prop_assert_eq!(n.previous, Some(o.key));
            prop_assert_eq!(n.source, c.source);
        }
    }
}
