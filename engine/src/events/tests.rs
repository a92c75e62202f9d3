use super::*;

fn bound(user: u64, at: u64) -> Event {
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
        sink.emit(bound(1, at));
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
    let (sink, streams) = channel(64, 2);
    for at in 0..5 {
        sink.emit(bound(1, at));
    }
    assert_eq!(sink.lost(), 3);
    let first: Vec<_> = streams.fleet.try_iter().collect();
    assert_eq!(first.len(), 2);
    // Room again: the gap is announced before the next event.
    sink.emit(bound(1, 99));
    let next: Vec<_> = streams.fleet.try_iter().collect();
    assert_eq!(next.len(), 2);
    assert_eq!(*next[0], Event::Lost { count: 3 });
    assert_eq!(*next[1], bound(1, 99));
    // Announced once.
    sink.emit(bound(1, 100));
    let after: Vec<_> = streams.fleet.try_iter().collect();
    assert_eq!(after.len(), 1);
    assert_eq!(*after[0], bound(1, 100));
}

#[test]
fn a_gone_consumer_counts_as_loss() {
    let (sink, streams) = channel(4, 4);
    drop(streams);
    sink.emit(bound(1, 1));
    assert_eq!(sink.lost(), 1);
    assert_eq!(sink.dropped(), 1);
}

#[test]
fn only_enforced_detections_are_for_the_fleet() {
    assert_eq!(bound(1, 1).class(), EventClass::Fleet);
    assert_eq!(Event::Lost { count: 1 }.class(), EventClass::Fleet);
    assert_eq!(Event::KINDS.len(), 10);
}
