use proptest::prelude::*;
use vigil_fleet::{Change, Frame, MAX_LINE_BYTES, SessionId, UserId, VERSION};

use super::{Action, Cursor, FleetState, LineTooLong, Lines, Resync, Violation, backoff};

fn revoked(n: u8) -> Change {
    Change::SessionRevoked {
        session: SessionId([n; 16]),
        at: 1_000,
        vouched: false,
    }
}

fn hello(head: u64, oldest: u64, snapshot: bool) -> Frame {
    Frame::Hello {
        v: VERSION,
        head,
        oldest,
        snapshot,
    }
}

fn changes(first: u64, changes: Vec<Change>) -> Frame {
    Frame::Changes { first, changes }
}

/// A cursor at `applied` on a stream past its hello.
fn streaming(applied: u64) -> Cursor {
    let mut c = Cursor::new(applied);
    if applied == 0 {
        assert_eq!(c.on_frame(hello(0, 1, true)), Action::Nothing);
        c.on_frame(Frame::SnapshotEnd { seq: 0 });
    } else {
        assert_eq!(c.on_frame(hello(applied, 1, false)), Action::Nothing);
    }
    c
}

// === Lines ===

#[test]
fn lines_are_split_across_chunks_and_crlf_and_blank_lines_are_tolerated() {
    let mut lines = Lines::default();
    assert_eq!(lines.push(b"{\"a\"").unwrap(), Vec::<Vec<u8>>::new());
    assert_eq!(
        lines.push(b":1}\r\n\n{\"b\":2}\n{\"c\"").unwrap(),
        vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]
    );
    assert_eq!(lines.push(b":3}\n").unwrap(), vec![b"{\"c\":3}".to_vec()]);
}

#[test]
fn a_line_longer_than_the_bound_is_an_error_even_before_its_newline() {
    let mut lines = Lines::default();
    let long = vec![b'x'; MAX_LINE_BYTES + 2];
    assert_eq!(lines.push(&long), Err(LineTooLong));
    // Complete, but too long.
    let mut lines = Lines::default();
    let mut long = vec![b'x'; MAX_LINE_BYTES + 1];
    long.push(b'\n');
    assert_eq!(lines.push(&long), Err(LineTooLong));
    // Exactly the bound is a line.
    let mut lines = Lines::default();
    let mut edge = vec![b'x'; MAX_LINE_BYTES];
    edge.push(b'\n');
    assert_eq!(lines.push(&edge).unwrap().len(), 1);
}

proptest! {
    /// However a stream is cut into chunks, the same lines come out.
    #[test]
    fn lines_do_not_depend_on_chunking(
        text in proptest::collection::vec(
            prop_oneof![Just(b'\n'), Just(b'a'), Just(b'{'), Just(b'\r')], 0..200),
        cuts in proptest::collection::vec(0usize..200, 0..10),
    ) {
        let mut whole = Lines::default();
        let expected = whole.push(&text).unwrap();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
        cuts.sort_unstable();
        let mut lines = Lines::default();
        let mut got = Vec::new();
        let mut at = 0;
        for cut in cuts.into_iter().chain([text.len()]) {
            got.extend(lines.push(&text[at..cut]).unwrap());
            at = cut;
        }
        prop_assert_eq!(got, expected);
    }
}

// === Cursor ===

#[test]
fn a_new_node_asks_for_a_snapshot_and_holds_it_once_it_ends() {
    let mut c = Cursor::new(0);
    assert_eq!(c.since(), 0);
    assert_eq!(c.on_frame(hello(7, 3, true)), Action::Nothing);
    assert_eq!(
        c.on_frame(Frame::Snapshot {
            seq: 7,
            changes: vec![revoked(1)]
        }),
        Action::Apply {
            changes: vec![revoked(1)],
            then: None
        }
    );
    // Not held until the end: a stream cut here asks again.
    assert_eq!(c.applied(), 0);
    assert_eq!(c.since(), 0);
    assert_eq!(
        c.on_frame(Frame::SnapshotEnd { seq: 7 }),
        Action::Apply {
            changes: vec![],
            then: Some(7)
        }
    );
    assert_eq!((c.applied(), c.since()), (7, 7));
    assert_eq!(
        c.on_frame(changes(8, vec![revoked(2), revoked(3)])),
        Action::Apply {
            changes: vec![revoked(2), revoked(3)],
            then: Some(9)
        }
    );
    assert_eq!(c.since(), 9);
}

#[test]
fn a_gap_is_repaired_by_a_full_snapshot_never_skipped() {
    let mut c = streaming(5);
    assert_eq!(
        c.on_frame(changes(7, vec![revoked(1)])),
        Action::Resync(Resync::Gap {
            expected: 6,
            got: 7
        })
    );
    // Nothing was taken from the frame; the next stream asks for all.
    assert_eq!(c.applied(), 5);
    assert_eq!(c.since(), 0);
    c.connected();
    // The controller must honour it.
    assert_eq!(
        c.on_frame(hello(9, 1, false)),
        Action::Reconnect(Violation::NoSnapshot)
    );
    c.connected();
    c.on_frame(hello(9, 1, true));
    c.on_frame(Frame::SnapshotEnd { seq: 9 });
    assert_eq!(c.since(), 9);
}

#[test]
fn a_repeated_batch_is_a_gap_too() {
    let mut c = streaming(5);
    assert!(matches!(
        c.on_frame(changes(5, vec![revoked(1)])),
        Action::Resync(Resync::Gap {
            expected: 6,
            got: 5
        })
    ));
}

#[test]
fn a_controller_behind_the_node_or_past_its_log_means_a_resync() {
    let mut c = Cursor::new(10);
    assert_eq!(
        c.on_frame(hello(4, 1, false)),
        Action::Resync(Resync::Ahead {
            applied: 10,
            head: 4
        })
    );
    let mut c = Cursor::new(10);
    assert!(matches!(
        c.on_frame(hello(30, 20, false)),
        Action::Resync(Resync::Gap {
            expected: 11,
            got: 20
        })
    ));
    let mut c = streaming(10);
    assert!(matches!(
        c.on_frame(Frame::Heartbeat { head: 3 }),
        Action::Resync(Resync::Ahead { .. })
    ));
}

#[test]
fn heartbeats_move_the_head_only() {
    let mut c = streaming(3);
    assert_eq!(c.on_frame(Frame::Heartbeat { head: 9 }), Action::Nothing);
    assert_eq!((c.applied(), c.head()), (3, 9));
}

#[test]
fn frames_out_of_place_are_protocol_errors() {
    let mut c = Cursor::new(0);
    assert_eq!(
        c.on_frame(Frame::Heartbeat { head: 1 }),
        Action::Reconnect(Violation::NoHello)
    );
    let mut c = Cursor::new(0);
    assert_eq!(
        c.on_frame(Frame::Hello {
            v: VERSION + 1,
            head: 0,
            oldest: 0,
            snapshot: true
        }),
        Action::Reconnect(Violation::Version(VERSION + 1))
    );
    let mut c = Cursor::new(0);
    c.on_frame(hello(5, 1, true));
    assert_eq!(
        c.on_frame(changes(1, vec![revoked(1)])),
        Action::Reconnect(Violation::Deltas)
    );
    let mut c = Cursor::new(0);
    c.on_frame(hello(5, 1, true));
    c.on_frame(Frame::Snapshot {
        seq: 5,
        changes: vec![],
    });
    assert_eq!(
        c.on_frame(Frame::SnapshotEnd { seq: 4 }),
        Action::Reconnect(Violation::Snapshot)
    );
    assert_eq!(c.applied(), 0);
    let mut c = streaming(2);
    assert_eq!(
        c.on_frame(hello(2, 1, false)),
        Action::Reconnect(Violation::Hello)
    );
    let mut c = streaming(2);
    assert_eq!(
        c.on_frame(Frame::SnapshotEnd { seq: 9 }),
        Action::Reconnect(Violation::Snapshot)
    );
}

#[test]
fn a_batch_running_past_u64_is_refused() {
    let mut c = streaming(u64::MAX - 1);
    assert_eq!(
        c.on_frame(changes(u64::MAX, vec![revoked(1), revoked(2)])),
        Action::Reconnect(Violation::Overflow)
    );
    assert_eq!(c.applied(), u64::MAX - 1);
}

#[test]
fn user_changes_pass_through_in_order() {
    let mut c = streaming(0);
    let batch = vec![
        Change::UserRevoked {
            user: UserId(9),
            at: 1,
        },
        Change::UserRisk {
            user: UserId(9),
            points: 40,
            until: 100,
            at: 1,
        },
    ];
    assert_eq!(
        c.on_frame(changes(1, batch.clone())),
        Action::Apply {
            changes: batch,
            then: Some(2)
        }
    );
}

// === back-off ===

#[test]
fn backoff_doubles_to_its_cap_within_its_jitter() {
    use std::time::Duration;
    assert_eq!(backoff(0, 1.0), Duration::from_millis(500));
    assert_eq!(backoff(1, 1.0), Duration::from_secs(1));
    assert_eq!(backoff(6, 1.0), Duration::from_secs(30));
    assert_eq!(backoff(u32::MAX, 1.0), Duration::from_secs(30));
    assert_eq!(backoff(0, 0.5), Duration::from_millis(250));
    assert_eq!(backoff(10, 1.5), Duration::from_secs(45));
    // Out-of-range jitter is clamped.
    assert_eq!(backoff(0, 9.0), Duration::from_millis(750));
}

// === staleness ===

#[test]
fn only_a_stream_holding_everything_announced_proves_the_node_current() {
    let mut c = Cursor::new(5);
    assert!(!c.current(), "before any hello");
    // The controller is at 7: the node has 5 and 6 still to apply.
    assert_eq!(c.on_frame(hello(7, 1, false)), Action::Nothing);
    assert!(!c.current());
    c.on_frame(changes(6, vec![revoked(6)]));
    assert!(!c.current());
    c.on_frame(changes(7, vec![revoked(7)]));
    assert!(c.current());
    // A heartbeat announcing more: behind again until it arrives.
    c.on_frame(Frame::Heartbeat { head: 8 });
    assert!(!c.current());
    c.on_frame(changes(8, vec![revoked(8)]));
    assert!(c.current());
    // Inside a snapshot nothing is proved until it ends.
    let mut c = Cursor::new(0);
    c.on_frame(hello(3, 1, true));
    c.on_frame(Frame::Snapshot {
        seq: 3,
        changes: vec![revoked(1)],
    });
    assert!(!c.current());
    c.on_frame(Frame::SnapshotEnd { seq: 3 });
    assert!(c.current());
    // A new stream must say hello again.
    c.connected();
    assert!(!c.current());
}

#[test]
fn the_state_is_stale_past_its_limit_and_a_node_never_current_is_stale() {
    let state = FleetState::new(10, 1_000);
    assert_eq!(state.age(1_030), 30);
    assert!(!state.stale(30, 1_030));
    assert!(state.stale(29, 1_030));
    // A clock that went back is not a negative age.
    assert_eq!(state.age(900), 0);
    let never = FleetState::new(0, 0);
    assert!(never.stale(604_800, 1_700_000_000));
}
