use super::*;
use crate::session::SessionKey;

fn revoked_user(user: u64, at: u64) -> Event {
    Event::UserRevoked {
        user: UserKey::from_u64(user).unwrap(),
        sessions: 0,
        at,
    }
}

#[test]
fn a_full_observability_lane_drops_and_counts_without_waiting() {
    let (sink, streams) = channel(2, 16);
    for at in 0..5 {
        sink.emit(revoked_user(1, at));
    }
    assert_eq!(sink.dropped(), 3);
    assert_eq!(sink.lost(), 0);
    let seen: Vec<_> = streams.observe.try_iter().collect();
    assert_eq!(seen.len(), 2);
    // The fleet lane had room for all five.
    assert_eq!(streams.fleet.try_iter().count(), 5);
}

#[test]
fn a_full_fleet_lane_never_loses_an_event_silently() {
    let (sink, streams) = channel(64, 4);
    for at in 0..7 {
        sink.emit(revoked_user(1, at));
    }
    assert_eq!(sink.lost(), 3);
    let first: Vec<_> = streams.fleet.try_iter().collect();
    assert_eq!(first.len(), 4);
    // Room again: the gap is announced before the next event.
    sink.emit(revoked_user(1, 99));
    let next: Vec<_> = streams.fleet.try_iter().collect();
    assert_eq!(next.len(), 2);
    assert_eq!(*next[0], Event::Lost { count: 3 });
    assert_eq!(*next[1], revoked_user(1, 99));
    // Announced once.
    sink.emit(revoked_user(1, 100));
    let after: Vec<_> = streams.fleet.try_iter().collect();
    assert_eq!(after.len(), 1);
    assert_eq!(*after[0], revoked_user(1, 100));
}

#[test]
fn a_gone_consumer_counts_as_loss() {
    let (sink, streams) = channel(4, 4);
    drop(streams);
    sink.emit(revoked_user(1, 1));
    assert_eq!(sink.lost(), 1);
    assert_eq!(sink.dropped(), 1);
}

#[test]
fn only_enforced_detections_are_for_the_fleet() {
    assert_eq!(revoked_user(1, 1).class(), EventClass::Fleet);
    assert_eq!(Event::Lost { count: 1 }.class(), EventClass::Fleet);
    assert_eq!(Event::KINDS.len(), 14);
}

fn seen(n: u8) -> Event {
    Event::SessionSeen {
        session: SessionKey::from_bytes([n; 16]),
        user: None,
        at: u64::from(n),
    }
}

#[test]
fn a_flood_of_new_sessions_leaves_room_for_revocations() {
    let (sink, streams) = channel(4, 8);
    for n in 0..20 {
        sink.emit(seen(n));
    }
    // Six of eight places taken by sightings; the rest is kept.
    assert_eq!(sink.lost(), 14);
    sink.emit(revoked_user(1, 100));
    let got: Vec<_> = streams.fleet.try_iter().collect();
    assert_eq!(got.len(), 8);
    assert_eq!(*got[6], Event::Lost { count: 14 });
    assert_eq!(*got[7], revoked_user(1, 100));
    assert!(got[..6].iter().all(|e| e.kind() == "session_seen"));
}

#[test]
fn a_gap_is_announced_before_anything_after_it_from_any_thread() {
    // Threads race to emit into a small lane while this one drains. Each
    // thread's events carry its own rising sequence; when one of them is
    // missing between two delivered, a Lost marker must have come between.
    const THREADS: u64 = 4;
    const EACH: u64 = 2_000;
    let (sink, streams) = channel(1, 16);
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let sink = sink.clone();
            std::thread::spawn(move || {
                for i in 0..EACH {
                    sink.emit(revoked_user(t + 1, i));
                }
            })
        })
        .collect();
    let mut markers = 0u64;
    let mut announced = 0u64;
    let mut delivered = 0u64;
    // Per thread: the last sequence delivered and the markers seen then.
    let mut last: Vec<Option<(u64, u64)>> = vec![None; 4];
    let mut check = |e: &Event, markers: u64| {
        let Event::UserRevoked { user, at, .. } = e else {
            panic!("{e:?}")
        };
        let t = usize::try_from(user.as_u64() - 1).unwrap();
        if let Some((prev, seen)) = last[t] {
            assert!(*at > prev);
            if *at != prev + 1 {
                assert!(
                    markers > seen,
                    "gap after {prev} in thread {t} not announced"
                );
            }
        }
        last[t] = Some((*at, markers));
    };
    loop {
        let finished = threads.iter().all(|t| t.is_finished());
        match streams.fleet.try_recv() {
            Ok(e) => match &*e {
                Event::Lost { count } => {
                    markers += 1;
                    announced += count;
                }
                other => {
                    delivered += 1;
                    check(other, markers);
                }
            },
            Err(_) if finished => break,
            Err(_) => std::thread::yield_now(),
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    // One more event announces any gap still pending.
    sink.emit(revoked_user(1, EACH));
    for e in streams.fleet.try_iter() {
        match &*e {
            Event::Lost { count } => announced += count,
            _ => delivered += 1,
        }
    }
    assert_eq!(delivered + sink.lost(), THREADS * EACH + 1);
    assert_eq!(announced, sink.lost());
}

#[test]
fn a_refused_dead_cookie_is_not_for_the_fleet() {
    use crate::score::Reason;
    use crate::{Engine, EngineConfig, ForwardedHeaders, Policy, RequestView, SessionHashKey};
    let engine = Engine::new(EngineConfig::default(), SessionHashKey::from_bytes([1; 32]));
    let mut headers = http::HeaderMap::new();
    headers.insert("cookie", "session=dead".parse().unwrap());
    let key = engine.key_for_credential(b"dead").unwrap();
    engine.revoke(key, 1);
    let view = RequestView {
        peer: [192, 0, 2, 1].into(),
        headers: &headers,
        now_secs: 2,
        tls: Default::default(),
        facts: Default::default(),
    };
    let dead = engine
        .decide(&view, &Policy::default(), ForwardedHeaders::default())
        .unwrap();
    assert!(dead.risk.has(Reason::Revoked));
    let d = |enforced, verdict| {
        Event::Detection(Box::new(Detection {
            reference: Reference(1),
            route: "app".into(),
            rule: None,
            tags: None,
            enforced,
            at: 0,
            verdict,
        }))
    };
    assert_eq!(d(true, dead.clone()).class(), EventClass::Observability);
    let mut fresh = dead;
    fresh.risk.reasons[0].reason = Reason::DeviceChanged;
    assert_eq!(d(true, fresh.clone()).class(), EventClass::Fleet);
    assert_eq!(d(false, fresh).class(), EventClass::Observability);
}
