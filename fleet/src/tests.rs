use proptest::prelude::*;

use super::*;

#[test]
fn frames_read_back_as_written() {
    let frames = [
        Frame::Hello {
            v: VERSION,
            head: 7,
            oldest: 1,
            snapshot: false,
        },
        Frame::Changes {
            first: 3,
            changes: vec![
                Change::SessionRevoked {
                    session: SessionId([0xab; 16]),
                    at: 10,
                    vouched: false,
                },
                Change::UserRevoked {
                    user: UserId(0x0102_0304_0506_0708),
                    at: 11,
                },
                Change::UserRisk {
                    user: UserId(9),
                    points: 60,
                    until: 100,
                    at: 12,
                },
            ],
        },
        Frame::SnapshotEnd { seq: 4 },
        Frame::Heartbeat { head: 9 },
    ];
    for frame in frames {
        let line = write_frame(&frame);
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(read_frame(&line[..line.len() - 1]).unwrap(), frame);
    }
}

#[test]
fn keys_are_exact_lower_case_hex() {
    let line = br#"{"type":"changes","first":1,"changes":[{"kind":"session_revoked","session":"ABABABABABABABABABABABABABABABAB","at":1}]}"#;
    assert!(read_frame(line).is_err(), "upper case");
    let short = br#"{"type":"changes","first":1,"changes":[{"kind":"session_revoked","session":"abab","at":1}]}"#;
    assert!(read_frame(short).is_err());
    assert_eq!(UserId::parse("0000000000000000"), None);
    assert_eq!(UserId::parse("00000000000000a1"), Some(UserId(0xa1)));
    assert_eq!(UserId(0xa1).to_string(), "00000000000000a1");
}

#[test]
fn oversized_lines_and_batches_are_refused() {
    let long = vec![b' '; MAX_LINE_BYTES + 1];
    assert!(matches!(read_frame(&long), Err(FrameError::TooLong(_))));
    let changes = vec![
        Change::SessionRevoked {
            session: SessionId([1; 16]),
            at: 1,
            vouched: false,
        };
        MAX_BATCH + 1
    ];
    let line = write_frame(&Frame::Changes { first: 1, changes });
    assert!(matches!(
        read_frame(&line[..line.len() - 1]),
        Err(FrameError::Batch(_))
    ));
}

#[test]
fn unknown_kinds_are_errors_not_guesses() {
    let line = br#"{"type":"changes","first":1,"changes":[{"kind":"session_blessed","at":1}]}"#;
    assert!(read_frame(line).is_err());
    assert!(read_frame(br#"{"type":"gossip"}"#).is_err());
}

#[test]
fn events_carry_their_id_and_kind_flat() {
    let batch = EventBatch {
        v: VERSION,
        events: vec![NodeEvent {
            id: "node-a-1".to_owned(),
            kind: NodeEventKind::SessionRevoked {
                session: SessionId([2; 16]),
                user: None,
                reference: Some("00ff".to_owned()),
                at: 5,
            },
        }],
    };
    let json = serde_json::to_string(&batch).unwrap();
    assert!(
        json.contains(r#""id":"node-a-1","kind":"session_revoked""#),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<EventBatch>(&json).unwrap(), batch);
}

proptest! {
    #[test]
    fn reading_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = read_frame(&bytes);
    }

    #[test]
    fn session_ids_round_trip(bytes in any::<[u8; 16]>()) {
        let id = SessionId(bytes);
        prop_assert_eq!(SessionId::parse(&id.to_string()), Some(id));
    }
}
