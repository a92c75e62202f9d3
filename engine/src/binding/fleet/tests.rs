//! The fleet's binding records as an attacker meets them: a thief on
//! another node, records arriving late, twice or out of order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use proptest::prelude::*;

use super::super::{BindingConfig, Companion, Finding, Scope, Seal, check};
use super::*;

const T: u32 = 1_700_000_000;
const IDLE: u32 = 3_600;

fn key() -> SessionKey {
    SessionKey::from_bytes([7; 16])
}

fn config() -> BindingConfig {
    BindingConfig {
        enabled: true,
        rotate_after: Duration::from_secs(300),
        grace: Duration::from_secs(30),
        ..BindingConfig::default()
    }
}

fn record(generation: u32, nonce: u32, previous_nonce: u32, presented_at: u32) -> FleetBinding {
    FleetBinding {
        session: key(),
        generation,
        nonce,
        previous_nonce,
        issued_at: presented_at.saturating_sub(1),
        presented_at,
        compromised: false,
    }
}

fn presented(generation: u32, nonce: u32) -> Companion {
    Companion::Sealed(Seal {
        session: key(),
        generation,
        nonce,
        issued_at: T,
        scope: Scope::DEFAULT,
    })
}

fn judge(companion: Companion, state: Option<BindingState>, now: u32) -> Option<Finding> {
    check(&config(), key(), None, &companion, state, u64::from(now)).finding
}

/// Node B's state after the owner presented generation 1 (nonce 11) there.
fn on_b() -> BindingState {
    BindingState {
        generation: 1,
        nonce: 11,
        previous_nonce: 0,
        issued_at: T,
        presented_at: T + 1,
        seen_at: T + 1,
        compromised: false,
        unsent: false,
        domain_wide: false,
    }
}

#[test]
fn a_thief_replaying_g_on_b_is_reused_once_the_fleet_saw_g_plus_1() {
    let b = on_b();
    // Before the record: B knows only generation 1, the thief's copy.
    assert_eq!(judge(presented(1, 11), Some(b), T + 400), None);
    // The owner presented generation 2 on A at T + 350.
    let merged = merge(Some(b), &record(2, 22, 11, T + 350), T + 351, IDLE).unwrap();
    assert_eq!(merged.generation, 2);
    assert_eq!(merged.presented_at, T + 350);
    // Within the grace of the fleet's first presentation: a parallel
    // request of the owner, accepted.
    assert_eq!(judge(presented(1, 11), Some(merged), T + 379), None);
    // Outside it: two holders.
    assert_eq!(
        judge(presented(1, 11), Some(merged), T + 380),
        Some(Finding::Reused)
    );
    // The owner's generation 2 is fine on B.
    assert_eq!(judge(presented(2, 22), Some(merged), T + 400), None);
}

#[test]
fn a_fleet_compromised_mark_refuses_every_generation_and_none() {
    let mut mark = record(1, 11, 0, T + 1);
    mark.compromised = true;
    let merged = merge(Some(on_b()), &mark, T + 10, IDLE).unwrap();
    assert!(merged.compromised);
    for c in [presented(1, 11), presented(2, 22), Companion::Absent] {
        assert_eq!(judge(c, Some(merged), T + 20), Some(Finding::Reused));
    }
    // A node that never saw the session takes the mark too.
    let fresh = merge(None, &mark, T + 10, IDLE).unwrap();
    assert_eq!(
        judge(presented(1, 11), Some(fresh), T + 20),
        Some(Finding::Reused)
    );
}

#[test]
fn records_never_lower_a_generation_nor_undo_a_mark() {
    let mut s = merge(None, &record(5, 55, 44, T + 100), T + 100, IDLE).unwrap();
    // Older generations, late: nothing changes.
    for g in 1..5 {
        assert_eq!(
            merge(Some(s), &record(g, g * 11, 0, T + g), T + 101, IDLE),
            None
        );
    }
    let mut mark = record(5, 55, 44, T + 100);
    mark.compromised = true;
    s = merge(Some(s), &mark, T + 102, IDLE).unwrap();
    assert!(s.compromised);
    // A later record without the mark does not clear it.
    s = merge(Some(s), &record(6, 66, 55, T + 500), T + 501, IDLE).unwrap();
    assert!(s.compromised);
    assert_eq!(s.generation, 6);
}

#[test]
fn the_same_record_twice_changes_nothing_the_second_time() {
    let r = record(2, 22, 11, T + 350);
    let once = merge(Some(on_b()), &r, T + 360, IDLE).unwrap();
    assert_eq!(merge(Some(once), &r, T + 361, IDLE), None);
}

#[test]
fn a_successor_presented_anywhere_ends_the_lost_response_allowance() {
    // B issued generation 2 (nonce 22) itself; its response was lost, or
    // the owner took it to node A.
    let issued = BindingState {
        generation: 2,
        nonce: 22,
        previous_nonce: 11,
        issued_at: T + 300,
        presented_at: 0,
        ..on_b()
    };
    // Alone, B takes generation 1 back as a lost response.
    assert_eq!(judge(presented(1, 11), Some(issued), T + 400), None);
    // The fleet says generation 2 was presented (on A) at T + 310.
    let merged = merge(Some(issued), &record(2, 22, 11, T + 310), T + 320, IDLE).unwrap();
    assert_eq!(merged.presented_at, T + 310);
    assert_eq!(
        judge(presented(1, 11), Some(merged), T + 400),
        Some(Finding::Reused)
    );
}

#[test]
fn a_presented_reissuance_elsewhere_supersedes_the_issuance_held_here() {
    // B holds generation 2 as it rotated it (deterministic nonce 22),
    // never presented here; the owner's lost response was issued again on
    // A (nonce 99) and presented there. The thief holding 22 is the one
    // who must be told apart.
    let issued = BindingState {
        generation: 2,
        nonce: 22,
        previous_nonce: 11,
        issued_at: T + 300,
        presented_at: 0,
        ..on_b()
    };
    let mut again = record(2, 99, 11, T + 340);
    again.issued_at = T + 335;
    let merged = merge(Some(issued), &again, T + 341, IDLE).unwrap();
    assert_eq!(merged.nonce, 99);
    assert_eq!(
        judge(presented(2, 22), Some(merged), T + 350),
        Some(Finding::Reused)
    );
    assert_eq!(judge(presented(2, 99), Some(merged), T + 350), None);
}

#[test]
fn a_record_from_the_future_does_not_lengthen_the_grace() {
    let merged = merge(Some(on_b()), &record(2, 22, 11, T + 10_000), T + 350, IDLE).unwrap();
    assert_eq!(merged.presented_at, T + 350);
    assert_eq!(
        judge(presented(1, 11), Some(merged), T + 380),
        Some(Finding::Reused)
    );
}

#[test]
fn records_no_node_writes_or_long_idle_are_not_taken() {
    assert_eq!(merge(None, &record(0, 1, 0, T), T, IDLE), None);
    assert_eq!(merge(None, &record(1, 0, 0, T), T, IDLE), None);
    assert_eq!(merge(None, &record(1, 1, 0, T), T + IDLE, IDLE), None);
}

fn any_record() -> impl Strategy<Value = FleetBinding> {
    (1u32..5, 1u32..4, 0u32..3, 0u32..4, 0u32..4, any::<bool>()).prop_map(
        |(generation, nonce, previous_nonce, issued, presented, compromised)| FleetBinding {
            session: key(),
            generation,
            nonce,
            previous_nonce,
            issued_at: T + issued,
            presented_at: if presented == 0 { 0 } else { T + presented },
            compromised,
        },
    )
}

proptest! {
    /// The join is a semilattice: order, grouping and repetition do not
    /// matter, so nodes and the controller converge whatever arrives when.
    #[test]
    fn the_join_is_commutative_associative_and_idempotent(
        a in any_record(), b in any_record(), c in any_record(),
    ) {
        prop_assert_eq!(a.join(&b), b.join(&a));
        prop_assert_eq!(a.join(&b).join(&c), a.join(&b.join(&c)));
        prop_assert_eq!(a.join(&a), a);
        let j = a.join(&b);
        prop_assert!(j.generation >= a.generation.max(b.generation));
        prop_assert_eq!(j.compromised, a.compromised || b.compromised);
    }

    /// A node's state after records in any order is the same, and never
    /// below any of them.
    #[test]
    fn merging_in_any_order_agrees(records in proptest::collection::vec(any_record(), 1..6)) {
        let apply = |rs: &[FleetBinding]| {
            let mut s: Option<BindingState> = None;
            for r in rs {
                if let Some(next) = merge(s, r, T + 10, IDLE) {
                    s = Some(next);
                }
            }
            s.map(|s| FleetBinding::of(key(), &s))
        };
        let forward = apply(&records);
        let mut reversed = records.clone();
        reversed.reverse();
        prop_assert_eq!(forward, apply(&reversed));
        let top = forward.unwrap();
        for r in &records {
            prop_assert!(top.generation >= r.generation);
            prop_assert!(top.compromised || !r.compromised);
        }
    }
}

#[test]
fn an_advance_is_queued_once_and_sent_as_it_is_when_taken() {
    let store = BindingStore::new(1024, Duration::from_secs(3600));
    let now = u64::from(T);
    // Without a controller nothing is queued.
    store.update_published(key(), now, |_| Some(on_b()));
    assert_eq!(store.unsent_len(), 0);
    store.publish();
    store.update_published(key(), now, |_| Some(on_b()));
    // A newer change of the same session replaces the one queued.
    let newer = BindingState {
        generation: 2,
        nonce: 22,
        previous_nonce: 11,
        presented_at: T + 5,
        ..on_b()
    };
    store.update_published(key(), now + 5, |_| Some(newer));
    assert_eq!(store.unsent_len(), 1);
    let sent = store.take_unsent(10, now + 6);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].generation, 2);
    assert!(store.take_unsent(10, now + 6).is_empty());
    // A failed send queues it again, once.
    store.unsent_again(&sent);
    store.unsent_again(&sent);
    assert_eq!(store.unsent_len(), 1);
    // What the fleet told is never sent back.
    let _ = store.take_unsent(10, now + 6);
    assert!(store.merge(&record(3, 33, 22, T + 400), now + 400));
    assert_eq!(store.unsent_len(), 0);
}

#[test]
fn a_snapshot_section_restores_generations_marks_and_what_was_unsent() {
    let store = BindingStore::new(1024, Duration::from_secs(3600));
    store.publish();
    let now = u64::from(T + 10);
    let mut marked = on_b();
    marked.compromised = true;
    store.update_published(key(), now, |_| Some(marked));
    let other = SessionKey::from_bytes([8; 16]);
    store.update(other, now, |_| Some(on_b()));
    let mut section = Vec::new();
    assert_eq!(store.write_snapshot(&mut section).unwrap(), 2);
    let mut body = b"scorer bytes".to_vec();
    body.extend_from_slice(&section);
    let (scorer, found) = split_snapshot(&body);
    assert_eq!(scorer, b"scorer bytes");
    assert_eq!(found, Some(section.as_slice()));

    let after = BindingStore::new(1024, Duration::from_secs(3600));
    assert_eq!(after.restore_snapshot(&section, now + 5), Some((2, 0)));
    let held = after.get(&key(), now + 5).unwrap();
    assert!(held.compromised);
    assert_eq!(held.generation, 1);
    // The mark was not told yet: it still will be.
    assert_eq!(after.take_unsent(10, now + 5).len(), 1);
    // A section cut short, or announcing more than it holds, is refused.
    assert_eq!(after.restore_snapshot(&section[1..], now), None);
    let mut lying = section.clone();
    let at = lying.len() - 16;
    lying[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(after.restore_snapshot(&lying, now), None);
    // A body without a section is the scorer's alone.
    assert_eq!(
        split_snapshot(b"scorer bytes"),
        (b"scorer bytes".as_slice(), None)
    );
}

/// Review finding 9: a full queue must not leave a session flagged as
/// queued when it is not, or it would never be published again.
#[test]
fn a_session_the_full_queue_could_not_take_is_queued_by_its_next_change() {
    // One entry a shard: the queue holds as many as the store.
    let store = BindingStore::new(1, Duration::from_secs(3600));
    store.publish();
    let cap = store.shard_cap * store.shards.len();
    let now = u64::from(T + 1);
    for i in 0..cap {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&(i as u64).to_le_bytes());
        k[15] = u8::try_from(i % 256).unwrap();
        store.update_published(SessionKey::from_bytes(k), now, |_| Some(on_b()));
    }
    assert_eq!(store.unsent_len(), cap);
    store.update_published(key(), now, |_| Some(on_b()));
    assert!(
        !store.get(&key(), now).unwrap().unsent,
        "not queued, not flagged"
    );
    let _ = store.take_unsent(cap, now);
    let newer = BindingState {
        generation: 2,
        nonce: 22,
        previous_nonce: 11,
        presented_at: T + 5,
        ..on_b()
    };
    store.update_published(key(), now + 5, |_| Some(newer));
    let sent = store.take_unsent(cap, now + 5);
    assert_eq!(sent.iter().filter(|r| r.session == key()).count(), 1);
}

/// Review finding 6: an issuance made after the session was queued (a
/// rotation) is not published before it is presented, and its
/// presentation publishes it.
#[test]
fn an_issuance_nobody_presented_is_not_published_its_presentation_is() {
    let store = BindingStore::new(1024, Duration::from_secs(3600));
    store.publish();
    let now = u64::from(T + 1);
    store.update_published(key(), now, |_| Some(on_b()));
    // Rotated before the poster took the record: generation 2 issued,
    // never shown (the flag is kept, as `issue` keeps it).
    store.update(key(), now + 300, |held| {
        Some(BindingState {
            generation: 2,
            nonce: 22,
            previous_nonce: 11,
            issued_at: T + 300,
            presented_at: 0,
            ..held?
        })
    });
    assert!(store.take_unsent(10, now + 300).is_empty());
    store.update_published(key(), now + 301, |held| {
        Some(BindingState {
            presented_at: T + 301,
            ..held?
        })
    });
    let sent = store.take_unsent(10, now + 301);
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].generation, sent[0].presented_at), (2, T + 301));
    // Nor is a record no node writes published (a mark on nothing).
    let empty = SessionKey::from_bytes([9; 16]);
    store.update_published(empty, now, |_| {
        Some(BindingState {
            compromised: true,
            seen_at: T + 1,
            ..BindingState::default()
        })
    });
    assert!(store.take_unsent(10, now).is_empty());
}

/// Review finding 3, the attack: a thief whose session was marked floods
/// the node with new sessions, so that the store evicts the oldest states
/// — a mark is never written again, so it would be the oldest — and then
/// comes back to be adopted afresh. The mark outlives the flood.
#[test]
fn a_flood_of_new_sessions_does_not_evict_a_compromised_mark() {
    let store = BindingStore::new(16 * 64, Duration::from_secs(3600));
    let marked = BindingState {
        compromised: true,
        ..on_b()
    };
    store.update(key(), u64::from(T + 1), |_| Some(marked));
    for i in 0..5_000u32 {
        let mut k = [1u8; 16];
        k[..4].copy_from_slice(&i.to_le_bytes());
        // The marked session's shard, every one of them.
        k[15] = 7;
        let at = T + 2 + i / 100;
        store.update(SessionKey::from_bytes(k), u64::from(at), |_| {
            Some(BindingState {
                issued_at: at,
                presented_at: at,
                seen_at: at,
                ..on_b()
            })
        });
    }
    let held = store.get(&key(), u64::from(T + 60)).expect("still held");
    assert!(held.compromised);
}
