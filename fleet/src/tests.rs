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

/// Only a kind this version does not know reads as unknown: a known kind
/// with a missing or bad field is an error, never skipped.
#[test]
fn a_known_kind_with_bad_fields_is_an_error_not_unknown() {
    for line in [
        &br#"{"type":"changes","first":1,"changes":[{"kind":"session_revoked","at":1}]}"#[..],
        br#"{"type":"changes","first":1,"changes":[{"kind":"user_revoked","user":"0000000000000000","at":1}]}"#,
        br#"{"type":"changes","first":1,"changes":[{"kind":"session_baseline","record":"0g"}]}"#,
        br#"{"type":"changes","changes":[]}"#,
        br#"{"type":"heartbeat"}"#,
        br#"{"first":1,"changes":[]}"#,
    ] {
        assert!(
            read_frame(line).is_err(),
            "{}",
            String::from_utf8_lossy(line)
        );
    }
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

#[test]
fn baselines_and_detections_read_back_as_written() {
    let frame = Frame::Changes {
        first: 1,
        changes: vec![
            Change::SessionBaseline {
                record: Record(vec![0, 1, 0xfe, 0xff]),
                confirmed: true,
            },
            Change::UserDetections {
                user: UserId(5),
                count: 2,
                until: 99,
            },
        ],
    };
    let line = write_frame(&frame);
    assert!(String::from_utf8_lossy(&line).contains(r#""record":"0001feff""#));
    assert_eq!(read_frame(&line[..line.len() - 1]).unwrap(), frame);
    let batch = EventBatch {
        v: VERSION,
        events: vec![NodeEvent {
            id: "n-1".into(),
            kind: NodeEventKind::Detection {
                reference: "00000000000000ff".into(),
                session: Some(SessionId([1; 16])),
                user: Some(UserId(7)),
                route: "app".into(),
                rule: None,
                action: "block".into(),
                enforced: true,
                score: 80,
                reasons: vec![("device_changed".into(), 40)],
                at: 3,
                facts: None,
            },
        }],
    };
    let json = serde_json::to_string(&batch).unwrap();
    assert_eq!(serde_json::from_str::<EventBatch>(&json).unwrap(), batch);
}

/// The versioning rule: a node of this version reads a later version's
/// frames and change kinds without failing, and the unknown change still
/// holds its number, so the sequence stays contiguous.
#[test]
fn a_later_versions_kinds_and_frames_are_read_as_unknown() {
    let line = br#"{"type":"changes","first":4,"changes":[{"kind":"a_later_kind","user":"0000000000000001","device":"x"},{"kind":"user_revoked","user":"0000000000000002","at":5}]}"#;
    assert_eq!(
        read_frame(line).unwrap(),
        Frame::Changes {
            first: 4,
            changes: vec![
                Change::Unknown,
                Change::UserRevoked {
                    user: UserId(2),
                    at: 5
                }
            ],
        }
    );
    assert_eq!(
        read_frame(br#"{"type":"bundle","version":3}"#).unwrap(),
        Frame::Unknown
    );
    let batch = br#"{"v":1,"events":[{"id":"x","kind":"feedback","reference":"r"}]}"#;
    let batch: EventBatch = serde_json::from_slice(batch).unwrap();
    assert_eq!(batch.events[0].kind, NodeEventKind::Unknown);
}

#[test]
fn records_are_bounded_lower_case_hex() {
    assert_eq!(Record::parse("0a"), Some(Record(vec![10])));
    assert_eq!(Record::parse("0A"), None);
    assert_eq!(Record::parse("0"), None);
    assert!(Record::parse(&"00".repeat(MAX_RECORD_BYTES)).is_some());
    assert_eq!(Record::parse(&"00".repeat(MAX_RECORD_BYTES + 1)), None);
}

/// Version 3's history kinds: read back as written; a full population
/// change stays under a kilobyte, so a frame of them stays under the line
/// limit; older nodes get nothing in their place (numbers kept) and none in
/// a snapshot.
#[test]
fn histories_read_back_as_written_and_older_nodes_do_without() {
    let profile = Change::UserProfile {
        user: UserId(9),
        record: Record(vec![0xab; 288]),
    };
    let population = Change::Population {
        totals: vec![u64::MAX; POPULATION_FEATURES],
        counters: vec![(393_215, u32::MAX); MAX_POPULATION_COUNTERS],
    };
    let frame = Frame::Changes {
        first: 1,
        changes: vec![profile.clone(), population.clone()],
    };
    let line = write_frame(&frame);
    assert_eq!(read_frame(&line[..line.len() - 1]).unwrap(), frame);
    let biggest = serde_json::to_vec(&population).unwrap().len();
    assert!(biggest < 1_000, "{biggest} bytes");
    assert!(serde_json::to_vec(&profile).unwrap().len() < 1_000);
    for change in [&profile, &population] {
        assert_eq!(change.for_version(1), Change::nothing());
        assert_eq!(change.for_version(2), Change::nothing());
        assert!(!change.in_snapshot_of(2));
        assert!(change.in_snapshot_of(3));
    }
    let learnt = NodeEventKind::UserLearned {
        user: UserId(9),
        values: [1, 2, 3, 4, 5, 6],
        which: 0x3f,
        new_session: true,
        trusted: false,
        at: 7,
    };
    assert_eq!(learnt.since(), 3);
    let batch = EventBatch {
        v: VERSION,
        events: vec![NodeEvent {
            id: "n-2".into(),
            kind: learnt,
        }],
    };
    let json = serde_json::to_string(&batch).unwrap();
    assert_eq!(serde_json::from_str::<EventBatch>(&json).unwrap(), batch);
}

#[test]
fn trust_and_false_positive_changes_read_back_and_older_nodes_get_nothing() {
    let changes = vec![
        Change::DeviceTrusted {
            user: UserId(7),
            device: DeviceId(0x00ab_0000_0000_00cd),
            at: 5,
        },
        Change::NetworkTrusted {
            user: UserId(7),
            network: TrustedNetwork::Asn { asn: 5089 },
            at: 6,
        },
        Change::NetworkTrusted {
            user: UserId(7),
            network: TrustedNetwork::Prefix {
                prefix: "81.2.69.0".parse().unwrap(),
            },
            at: 6,
        },
        Change::NetworkTrusted {
            user: UserId(7),
            network: TrustedNetwork::Country {
                country: Country(*b"GB"),
            },
            at: 6,
        },
        Change::FalsePositive {
            reference: "00000000000000ff".to_owned(),
            at: 7,
        },
    ];
    let frame = Frame::Changes {
        first: 1,
        changes: changes.clone(),
    };
    let line = write_frame(&frame);
    let text = std::str::from_utf8(&line).unwrap();
    assert!(text.contains(r#""device":"00ab0000000000cd""#), "{text}");
    assert!(
        text.contains(r#""network":{"type":"country","country":"GB"}"#),
        "{text}"
    );
    assert_eq!(read_frame(&line[..line.len() - 1]).unwrap(), frame);
    for change in &changes {
        assert_eq!(change.for_version(2), Change::nothing());
        assert_eq!(change.for_version(1), Change::nothing());
        assert_eq!(&change.for_version(3), change);
        assert!(!change.in_snapshot_of(2));
        assert!(change.in_snapshot_of(3));
    }
    // A later network type is a network this build does without, not a
    // frame it cannot read.
    let later = br#"{"type":"changes","first":1,"changes":[{"kind":"network_trusted","user":"0000000000000007","network":{"type":"city","city":"x"},"at":1}]}"#;
    let Frame::Changes { changes, .. } = read_frame(later).unwrap() else {
        panic!()
    };
    assert!(matches!(
        changes[..],
        [Change::NetworkTrusted {
            network: TrustedNetwork::Unknown,
            ..
        }]
    ));
    // Lower-case countries are not written by any controller.
    assert_eq!(Country::parse("gb"), None);
    assert_eq!(DeviceId::parse("00AB0000000000CD"), None);
}

/// A rule bundle of the longest text travels in a frame of its own that
/// one line holds, even when every byte of it is escaped; a version 2 node
/// gets a change that does nothing in its place, and no snapshot holds it.
#[test]
fn a_rule_bundle_fits_one_line_and_older_nodes_do_without() {
    let bundle = |text: String| Change::RulesBundle {
        version: u64::MAX,
        sha256: "0".repeat(64),
        created_at: u64::MAX,
        text,
    };
    let plain = bundle("a".repeat(MAX_RULES_BYTES));
    assert!(plain.travels_alone());
    assert!(plain.fits_in_a_frame());
    // Quotes escape to two bytes: still one line.
    assert!(bundle("\"".repeat(MAX_RULES_BYTES)).fits_in_a_frame());
    // Control characters escape to six (`\u0001`): too long a line, which
    // the controller refuses to publish rather than stream.
    assert!(!bundle("\u{1}".repeat(MAX_RULES_BYTES)).fits_in_a_frame());
    let line = write_frame(&Frame::Changes {
        first: 9,
        changes: vec![plain.clone()],
    });
    assert_eq!(
        read_frame(&line[..line.len() - 1]).unwrap(),
        Frame::Changes {
            first: 9,
            changes: vec![plain.clone()]
        }
    );
    assert_eq!(plain.for_version(2), Change::nothing());
    assert_eq!(plain.for_version(3), plain);
    assert!(!plain.in_snapshot_of(2));
    assert!(plain.in_snapshot_of(3));
    let report = NodeEventKind::RulesBundle {
        version: 1,
        sha256: "0".repeat(64),
        applied: true,
        problems: Vec::new(),
        at: 1,
    };
    assert_eq!(report.since(), 3);
}

/// A user's step-up (version 4) reads and writes as documented; nodes of
/// versions 1 to 3 get a change that does nothing in its place, and no
/// step-up in their snapshots.
#[test]
fn a_users_step_up_is_version_4_and_nothing_to_older_nodes() {
    let change = Change::UserStepUp {
        user: UserId(0x2a),
        at: 1_700_000_000,
    };
    let line = br#"{"type":"changes","first":3,"changes":[{"kind":"user_step_up","user":"000000000000002a","at":1700000000}]}"#;
    let frame = Frame::Changes {
        first: 3,
        changes: vec![change.clone()],
    };
    assert_eq!(read_frame(line).unwrap(), frame);
    assert_eq!(write_frame(&frame), [&line[..], b"\n"].concat());
    for v in 1..4 {
        assert_eq!(change.for_version(v), Change::nothing(), "version {v}");
        assert!(!change.in_snapshot_of(v), "version {v}");
    }
    assert_eq!(change.for_version(4), change);
    assert!(change.in_snapshot_of(4));
    // A zero user key is no user.
    let zero = br#"{"type":"changes","first":1,"changes":[{"kind":"user_step_up","user":"0000000000000000","at":1}]}"#;
    assert!(read_frame(zero).is_err());
}

/// An IdP session learnt at a step-up (version 4): read and written as
/// documented, and a controller of version 3 is never sent one.
#[test]
fn an_idp_session_event_is_version_4() {
    let line = br#"{"id":"n-1","kind":"idp_session","session":"0101010101010101010101010101010a","user":"000000000000002a","idp_session":"ff00ff00ff00ff00ff00ff00ff00ff00","at":1700000000}"#;
    let event: NodeEvent = serde_json::from_slice(line).unwrap();
    let NodeEventKind::IdpSession {
        session,
        user,
        idp_session,
        at,
    } = &event.kind
    else {
        panic!("{event:?}")
    };
    assert_eq!(session.0[15], 0x0a);
    assert_eq!(*user, UserId(0x2a));
    assert_eq!(idp_session.0[0], 0xff);
    assert_eq!(*at, 1_700_000_000);
    assert_eq!(event.kind.since(), 4);
    assert_eq!(serde_json::to_vec(&event).unwrap(), line.to_vec());
    // Not hex, or of another length: refused.
    for bad in ["FF00ff00ff00ff00ff00ff00ff00ff00", "ff00"] {
        let text = std::str::from_utf8(line)
            .unwrap()
            .replace("ff00ff00ff00ff00ff00ff00ff00ff00", bad);
        assert!(serde_json::from_str::<NodeEvent>(&text).is_err(), "{bad}");
    }
}

#[test]
fn a_dbsc_binding_is_read_back_and_a_bad_key_is_an_error() {
    let change = Change::DbscBound {
        binding: DbscBinding {
            session: SessionId([1; 16]),
            id: SessionId([2; 16]),
            root: None,
            key: DbscKey(vec![1; 66]),
            at: 5,
        },
    };
    let text = serde_json::to_string(&change).unwrap();
    assert!(text.starts_with(r#"{"kind":"dbsc_bound","binding":{"session":"0101"#));
    assert!(!text.contains("root"));
    assert_eq!(serde_json::from_str::<Change>(&text).unwrap(), change);
    // Too long, upper case, or empty: an error, not an unknown kind.
    for key in [
        "00".repeat(MAX_DBSC_KEY_BYTES + 1),
        "AB".to_owned(),
        String::new(),
    ] {
        let bad = text.replace(&"01".repeat(66), &key);
        assert!(serde_json::from_str::<Change>(&bad).is_err(), "{key}");
    }
    // Nodes before version 5 get a change that does nothing, and none in
    // their snapshots: a version 1 build has no unknown kind to skip it as.
    for v in 1..5 {
        assert_eq!(change.for_version(v), Change::nothing(), "version {v}");
        assert!(!change.in_snapshot_of(v), "version {v}");
    }
    assert_eq!(change.for_version(5), change);
    assert!(change.in_snapshot_of(5));
    let event = NodeEventKind::DbscBound {
        binding: DbscBinding {
            session: SessionId([1; 16]),
            id: SessionId([2; 16]),
            root: None,
            key: DbscKey(vec![1; 66]),
            at: 5,
        },
    };
    assert_eq!(event.since(), 5);
}

/// A session's binding (version 5): read and written as documented in
/// both directions; nodes of versions 1 to 4 get a change that does
/// nothing in its place and none in their snapshots, and a controller of
/// version 4 is never sent one.
#[test]
fn a_session_binding_is_version_5_and_nothing_to_older_nodes() {
    let record = BindingRecord {
        session: SessionId([1; 16]),
        generation: 3,
        nonce: 7,
        previous_nonce: 5,
        issued_at: 1_700_000_000,
        presented_at: 1_700_000_002,
        compromised: false,
    };
    let change = Change::SessionBinding(record);
    let line = br#"{"type":"changes","first":3,"changes":[{"kind":"session_binding","session":"01010101010101010101010101010101","generation":3,"nonce":7,"previous_nonce":5,"issued_at":1700000000,"presented_at":1700000002,"compromised":false}]}"#;
    let frame = Frame::Changes {
        first: 3,
        changes: vec![change.clone()],
    };
    assert_eq!(read_frame(line).unwrap(), frame);
    assert_eq!(write_frame(&frame), [&line[..], b"\n"].concat());
    for v in 1..5 {
        assert_eq!(change.for_version(v), Change::nothing(), "version {v}");
        assert!(!change.in_snapshot_of(v), "version {v}");
    }
    assert_eq!(change.for_version(5), change);
    assert!(change.in_snapshot_of(5));
    let event = NodeEvent {
        id: "n-1".into(),
        kind: NodeEventKind::SessionBinding(record),
    };
    let json = serde_json::to_string(&event).unwrap();
    assert_eq!(
        json,
        r#"{"id":"n-1","kind":"session_binding","session":"01010101010101010101010101010101","generation":3,"nonce":7,"previous_nonce":5,"issued_at":1700000000,"presented_at":1700000002,"compromised":false}"#
    );
    assert_eq!(serde_json::from_str::<NodeEvent>(&json).unwrap(), event);
    assert_eq!(event.kind.since(), 5);
    // A generation beyond u32, or a missing field: refused.
    assert!(
        serde_json::from_str::<NodeEvent>(
            &json.replace("\"generation\":3", "\"generation\":4294967296")
        )
        .is_err()
    );
    assert!(
        serde_json::from_str::<NodeEvent>(&json.replace(",\"compromised\":false", "")).is_err()
    );
}

/// The ack's `retry` (binding records' marks beyond the node's allowance,
/// to be posted again): absent when empty, so that an ack reads as ever on
/// an earlier build, and read as empty when absent.
#[test]
fn an_acks_retry_is_absent_when_empty_and_read_as_empty_when_absent() {
    let plain = EventAck {
        accepted: 2,
        ..EventAck::default()
    };
    assert_eq!(
        serde_json::to_string(&plain).unwrap(),
        r#"{"accepted":2,"duplicates":0}"#
    );
    assert_eq!(
        serde_json::from_str::<EventAck>(r#"{"accepted":2,"duplicates":0}"#).unwrap(),
        plain
    );
    let waiting = EventAck {
        accepted: 2,
        retry: vec!["n-b7".into()],
        ..EventAck::default()
    };
    let json = serde_json::to_string(&waiting).unwrap();
    assert_eq!(json, r#"{"accepted":2,"duplicates":0,"retry":["n-b7"]}"#);
    assert_eq!(serde_json::from_str::<EventAck>(&json).unwrap(), waiting);
}

fn facts() -> RequestFacts {
    RequestFacts {
        client: "81.2.69.160".parse().unwrap(),
        peer: "10.0.0.1".parse().unwrap(),
        chain: vec![
            None,
            Some("81.2.69.160".parse().unwrap()),
            Some("2001:db8::1".parse().unwrap()),
        ],
        chain_truncated: false,
        provider: Some("zscaler".into()),
        ja4: Some("t13d1516h2_8daaf6152771_e5627efa2ab1".into()),
        device: DeviceId(0x0123_4567_89ab_cdef),
        browser: "chrome".into(),
        major: 120,
        platform: "windows".into(),
        country: Some(Country(*b"GB")),
        asn: Some(20712),
    }
}

fn detection_with(facts: Option<RequestFacts>) -> NodeEventKind {
    NodeEventKind::Detection {
        reference: "00000000000000ff".into(),
        session: None,
        user: None,
        route: "app".into(),
        rule: Some("r".into()),
        action: "block".into(),
        enforced: true,
        score: 80,
        reasons: vec![("device_changed".into(), 40)],
        at: 3,
        facts: facts.map(Box::new),
    }
}

/// A detection's request facts read back as written; a detection without
/// them is written exactly as an earlier build wrote it (no `facts` key),
/// and an earlier build's detection reads as one without facts.
#[test]
fn a_detections_facts_read_back_and_are_absent_when_none() {
    let with = NodeEvent {
        id: "n-1".into(),
        kind: detection_with(Some(facts())),
    };
    let json = serde_json::to_string(&with).unwrap();
    assert!(
        json.contains(r#""chain":[null,"81.2.69.160","2001:db8::1"]"#),
        "{json}"
    );
    assert!(json.contains(r#""device":"0123456789abcdef""#), "{json}");
    assert_eq!(serde_json::from_str::<NodeEvent>(&json).unwrap(), with);
    let without = NodeEvent {
        id: "n-1".into(),
        kind: detection_with(None),
    };
    let json = serde_json::to_string(&without).unwrap();
    assert!(!json.contains("facts"), "{json}");
    let earlier = r#"{"id":"n-1","kind":"detection","reference":"00000000000000ff","session":null,"user":null,"route":"app","rule":"r","action":"block","enforced":true,"score":80,"reasons":[["device_changed",40]],"at":3}"#;
    assert_eq!(serde_json::from_str::<NodeEvent>(earlier).unwrap(), without);
}

/// A controller of an earlier build reads a detection with facts as the
/// detection it knows: its `Detection` had no `facts` field, and serde
/// skips a field it does not know (`NodeEventKind` has no
/// `deny_unknown_fields`). The earlier shape is copied here as it was.
#[test]
fn an_earlier_controller_reads_a_detection_with_facts() {
    #[derive(Deserialize, Debug)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    enum Earlier {
        #[allow(dead_code)]
        Detection {
            reference: String,
            session: Option<SessionId>,
            user: Option<UserId>,
            route: String,
            rule: Option<String>,
            action: String,
            enforced: bool,
            score: u8,
            reasons: Vec<(String, u8)>,
            at: u64,
        },
    }
    #[derive(Deserialize, Debug)]
    struct EarlierEvent {
        #[allow(dead_code)]
        id: String,
        #[serde(flatten)]
        kind: Earlier,
    }
    let json = serde_json::to_string(&NodeEvent {
        id: "n-1".into(),
        kind: detection_with(Some(facts())),
    })
    .unwrap();
    let read: EarlierEvent = serde_json::from_str(&json).unwrap();
    let Earlier::Detection {
        reference, score, ..
    } = read.kind;
    assert_eq!((reference.as_str(), score), ("00000000000000ff", 80));
}

/// Facts out of bounds are named: a long chain, a bogus JA4 (upper case,
/// markup, wrong lengths), a name with markup, spaces, control bytes or
/// beyond ASCII, ASN 0. A chain entry that is no address is no address to serde either:
/// the batch does not read.
#[test]
fn out_of_bound_facts_are_problems() {
    assert_eq!(facts().problem(), None);
    let mut f = facts();
    f.chain = vec![None; MAX_CHAIN_HOPS];
    assert_eq!(f.problem(), None);
    f.chain.push(None);
    assert!(f.problem().unwrap().contains("16 entries"));
    // The ALPN characters are the client's, upper case included.
    let mut f = facts();
    f.ja4 = Some("t13d1516H2_8daaf6152771_e5627efa2ab1".into());
    assert_eq!(f.problem(), None);
    for bad in [
        "t13d1516h2_8DAAF6152771_e5627efa2ab1",
        "t13d1516h2_8daaf6152771_E5627efa2ab1",
        "t13d1516\u{e9}_8daaf6152771_e5627efa2ab1",
        "<script>a_8daaf6152771_e5627efa2ab1",
        "t13d1516h2_8daaf6152771_e5627efa2ab",
        "t13d1516h2_8daaf6152771_e5627efa2ab1x",
        "t13d1516h2-8daaf6152771-e5627efa2ab1",
        "t13d1516h2_8daaf615277g_e5627efa2ab1",
        "",
    ] {
        let mut f = facts();
        f.ja4 = Some(bad.into());
        assert!(f.problem().unwrap().contains("JA4"), "{bad}");
    }
    for bad in [
        String::new(),
        "x".repeat(65),
        "a\nb".into(),
        "a b".into(),
        "<script>alert(1)</script>".into(),
        "\u{e9}dge".into(),
    ] {
        let mut f = facts();
        f.browser = bad.clone();
        assert!(f.problem().unwrap().contains("browser"), "{bad:?}");
    }
    let mut f = facts();
    f.provider = Some("x".repeat(65));
    assert!(f.problem().is_some());
    let mut f = facts();
    f.platform = String::new();
    assert_eq!(f.problem(), None);
    f.asn = Some(0);
    assert!(f.problem().unwrap().contains("ASN"));
    let json = serde_json::to_string(&detection_with(Some(facts())))
        .unwrap()
        .replace("2001:db8::1", "<script>");
    assert!(serde_json::from_str::<NodeEventKind>(&json).is_err());
}

#[test]
fn counts_read_back_and_are_bounded() {
    let counts = NodeCounts {
        run: "0123456789abcdef".to_owned(),
        minute: 29_000_000,
        counts: vec![
            Count {
                kind: "shadow".to_owned(),
                name: "try-geo".to_owned(),
                action: Some("step_up".to_owned()),
                n: 5,
            },
            Count {
                kind: "rule".to_owned(),
                name: OTHER_RULES.to_owned(),
                action: None,
                n: 1,
            },
        ],
    };
    assert_eq!(counts.problem(), None);
    let batch = EventBatch {
        v: VERSION,
        events: vec![NodeEvent {
            id: "x".to_owned(),
            kind: NodeEventKind::Counts(counts.clone()),
        }],
    };
    let json = serde_json::to_string(&batch).unwrap();
    assert_eq!(serde_json::from_str::<EventBatch>(&json).unwrap(), batch);
    assert_eq!(batch.events[0].kind.since(), 5);
    // `(other rules)` names rules only.
    let mut other = counts.clone();
    other.counts[1].kind = "reason".to_owned();
    assert!(other.problem().is_some());
    let mut long = counts;
    long.counts = (0..=MAX_COUNTS)
        .map(|i| Count {
            kind: "rule".to_owned(),
            name: format!("r{i}"),
            action: None,
            n: 1,
        })
        .collect();
    assert!(long.problem().is_some());
}
