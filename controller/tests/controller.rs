//! The controller end to end over real HTTP, on both stores: SQLite in a
//! temporary directory, and the PostgreSQL server on 127.0.0.1:5432 (a
//! fresh database per test, dropped after).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{Db, both, client};

use std::net::SocketAddr;
use std::time::Duration;

use vigil_controller::store::Store;
use vigil_fleet::{
    Change, Country, DeviceId, EventAck, EventBatch, Frame, NodeEvent, NodeEventKind, RequestFacts,
    SessionId, UserId, VERSION, read_frame,
};

const ADMIN: &str = "admin-token-0123456789";
const NODE_A: &str = "node-a-token-0123456789";
const NODE_B: &str = "node-b-token-0123456789";
const DEADLINE: Duration = Duration::from_secs(20);

/// A controller serving on a free port.
struct Controller {
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Controller {
    async fn start(store: &str) -> Controller {
        Controller::start_with(store, "").await
    }

    async fn start_with(store: &str, extra: &str) -> Controller {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hash.key"), "11".repeat(32)).unwrap();
        std::fs::write(dir.path().join("admin.token"), ADMIN).unwrap();
        let hash = |t: &str| hex::encode(vigil_controller::config::token_hash(t));
        // Held from here to the controller's end: a port released and
        // bound again later could be taken in between by another test.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let toml = format!(
            "{extra}\nlisten = \"{addr}\"\nstore = {store:?}\nhash_key_file = \"hash.key\"\nadmin_token_file = \"admin.token\"\n\
             [signing]\nissuer = \"http://{addr}\"\nkey_files = [{signing_key:?}]\n\
             [ssf_transmitter]\n\
             [[nodes]]\nname = \"a\"\ntoken_sha256 = \"{}\"\n[[nodes]]\nname = \"b\"\ntoken_sha256 = \"{}\"\n",
            hash(NODE_A),
            hash(NODE_B),
            signing_key = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rs256-test.pem"),
        );
        let path = dir.path().join("controller.toml");
        std::fs::write(&path, toml).unwrap();
        let config = vigil_controller::Config::load(&path).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            vigil_controller::run_on(listener, config, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        let c = Controller {
            addr,
            _dir: dir,
            stop: Some(stop),
            task,
        };
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while client().get(c.url("/healthz")).send().await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "controller did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn admin(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        client()
            .post(self.url(path))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    async fn admin_get(&self, path: &str) -> serde_json::Value {
        let r = client()
            .get(self.url(path))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        serde_json::from_str(&r.text().await.unwrap()).unwrap()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Open streams keep the server; the task is ended either way.
        self.task.abort();
    }
}

/// A node's view of the stream: frames as they come.
struct Stream {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Stream {
    /// A node of this version.
    async fn open(c: &Controller, token: &str, since: u64) -> Stream {
        Stream::open_as(c, token, since, Some(VERSION)).await
    }

    /// The status of a sync request with `token`.
    async fn try_open(c: &Controller, token: &str) -> u16 {
        client()
            .get(c.url("/v1/sync?since=0"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// A node of protocol version `v` (`None`: one that does not say,
    /// as version 1 nodes did not).
    async fn open_as(c: &Controller, token: &str, since: u64, v: Option<u32>) -> Stream {
        let mut request = client()
            .get(c.url(&format!("/v1/sync?since={since}")))
            .bearer_auth(token);
        if let Some(v) = v {
            request = request.header(vigil_fleet::VERSION_HEADER, v);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/x-ndjson");
        Stream {
            response,
            buffer: Vec::new(),
        }
    }

    async fn next(&mut self) -> Frame {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return read_frame(&line[..line.len() - 1]).unwrap();
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("a frame within the deadline")
                .unwrap()
                .expect("the stream stays open");
            self.buffer.extend_from_slice(&chunk);
        }
    }

    /// The next frame that is not a heartbeat.
    async fn next_change(&mut self) -> Frame {
        loop {
            match self.next().await {
                Frame::Heartbeat { .. } => continue,
                other => return other,
            }
        }
    }
}

fn session(n: u8) -> SessionId {
    SessionId([n; 16])
}

#[tokio::test]
async fn a_revocation_reaches_every_subscribed_node_in_order() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let mut a = Stream::open(&c, NODE_A, 0).await;
        let mut b = Stream::open(&c, NODE_B, 0).await;
        for s in [&mut a, &mut b] {
            assert_eq!(
                s.next().await,
                Frame::Hello {
                    v: VERSION,
                    head: 0,
                    oldest: 1,
                    snapshot: true
                }
            );
            assert_eq!(s.next().await, Frame::SnapshotEnd { seq: 0 });
        }
        let hex = session(7).to_string();
        let r = c
            .admin(
                "/v1/admin/sessions/revoke",
                serde_json::json!({"session": hex}),
            )
            .await;
        assert_eq!(r.status(), 200);
        let r = c
            .admin(
                "/v1/admin/users/revoke",
                serde_json::json!({"user": "alice"}),
            )
            .await;
        assert_eq!(r.status(), 200);
        for s in [&mut a, &mut b] {
            let Frame::Changes { first: 1, changes } = s.next_change().await else {
                panic!()
            };
            assert!(
                matches!(changes[0], Change::SessionRevoked { session: s, .. } if s == session(7))
            );
            let Frame::Changes { first: 2, changes } = s.next_change().await else {
                panic!()
            };
            assert!(matches!(changes[0], Change::UserRevoked { .. }));
        }
        // A node that comes back at 1 gets change 2 and no snapshot.
        let mut late = Stream::open(&c, NODE_A, 1).await;
        assert!(matches!(
            late.next().await,
            Frame::Hello {
                head: 2,
                snapshot: false,
                ..
            }
        ));
        assert!(matches!(
            late.next_change().await,
            Frame::Changes { first: 2, .. }
        ));
        // A node claiming a future cursor is given the truth: a snapshot.
        let mut confused = Stream::open(&c, NODE_B, 99).await;
        assert!(matches!(
            confused.next().await,
            Frame::Hello { snapshot: true, .. }
        ));
        let Frame::Snapshot { seq: 2, changes } = confused.next().await else {
            panic!()
        };
        assert_eq!(changes.len(), 2);
        assert_eq!(confused.next().await, Frame::SnapshotEnd { seq: 2 });
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

#[tokio::test]
async fn only_known_enabled_nodes_and_the_admin_get_in() {
    let db = Db::new(false).await;
    let c = Controller::start(&db.url()).await;
    for (method, path, token) in [
        ("GET", "/v1/sync?since=0", None),
        ("GET", "/v1/sync?since=0", Some("wrong-token-0123456789")),
        ("GET", "/v1/sync?since=0", Some(ADMIN)),
        ("POST", "/v1/admin/sessions/revoke", Some(NODE_A)),
        ("GET", "/v1/admin/log", Some(NODE_B)),
    ] {
        let mut req = client().request(method.parse().unwrap(), c.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path} with {token:?}");
        let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(body["error"], "unauthorized");
    }
    c.stop().await;
}

#[tokio::test]
async fn a_node_event_posted_twice_is_one_change() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        // The revocation with its evidence: the node's detection first.
        let batch = EventBatch {
            v: VERSION,
            events: vec![
                caught("boot1-0", "abcd", session(3), UserId(5), 100),
                NodeEvent {
                    id: "boot1-1".to_owned(),
                    kind: NodeEventKind::SessionRevoked {
                        session: session(3),
                        user: Some(UserId(5)),
                        reference: Some("abcd".to_owned()),
                        at: 100,
                    },
                },
            ],
        };
        let post = || async {
            let r = client()
                .post(c.url("/v1/events"))
                .bearer_auth(NODE_A)
                .header("content-type", "application/json")
                .body(serde_json::to_string(&batch).unwrap())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            serde_json::from_str::<EventAck>(&r.text().await.unwrap()).unwrap()
        };
        assert_eq!(
            post().await,
            EventAck {
                accepted: 2,
                duplicates: 0,
                refused: 0,
                retry: Vec::new(),
            }
        );
        assert_eq!(
            post().await,
            EventAck {
                accepted: 0,
                duplicates: 2,
                refused: 0,
                retry: Vec::new(),
            }
        );
        // The same id twice in one batch is one event too (and node B,
        // which holds no evidence of its own, is refused it).
        let twice = EventBatch {
            v: VERSION,
            events: vec![batch.events[1].clone(), batch.events[1].clone()],
        };
        let r = client()
            .post(c.url("/v1/events"))
            .bearer_auth(NODE_B)
            .body(serde_json::to_string(&twice).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(
            serde_json::from_str::<EventAck>(&r.text().await.unwrap()).unwrap(),
            EventAck {
                accepted: 1,
                duplicates: 1,
                refused: 1,
                retry: Vec::new(),
            }
        );
        // Node B, subscribed after, sees the one revocation in its snapshot.
        let mut b = Stream::open(&c, NODE_B, 0).await;
        b.next().await;
        let Frame::Snapshot { seq: 1, changes } = b.next().await else {
            panic!()
        };
        assert_eq!(
            changes,
            // No baseline binds the session to the user the node named:
            // not vouched.
            vec![Change::SessionRevoked {
                session: session(3),
                at: 100,
                vouched: false,
            }]
        );
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

#[tokio::test]
async fn concurrent_writers_get_contiguous_numbers_and_compaction_forces_a_snapshot() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let store = Store::open(&db.url()).await.unwrap();
        let mut tasks = Vec::new();
        for w in 0..8u8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..50u8 {
                    let mut id = [w; 16];
                    id[15] = i;
                    store
                        .append(
                            &[Change::SessionRevoked {
                                session: SessionId(id),
                                at: 1,
                                vouched: false,
                            }],
                            1,
                        )
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let all = store.since(0, 1_000).await.unwrap();
        let seqs: Vec<u64> = all.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (1..=400).collect::<Vec<u64>>());
        // Keep the newest 100: a node at 50 is behind the oldest.
        store.compact(100).await.unwrap();
        let b = store.bounds().await.unwrap();
        assert_eq!((b.head, b.oldest), (400, 301));
        assert_eq!(store.since(50, 10).await.unwrap()[0].0, 301);
        let (seq, state) = store.snapshot().await.unwrap();
        assert_eq!((seq, state.len()), (400, 400));
        db.drop_db().await;
    })
    .await;
}

#[tokio::test]
async fn a_node_posting_beyond_its_allowance_is_held_back_and_others_are_not() {
    // A stolen node token ends sessions at this pace at most.
    let db = Db::new(false).await;
    let c = Controller::start_with(&db.url(), "node_revocations_per_minute = 3").await;
    let post = |token: &'static str, ids: &[&str]| {
        let batch = EventBatch {
            v: VERSION,
            events: ids
                .iter()
                .map(|id| NodeEvent {
                    id: (*id).to_owned(),
                    kind: NodeEventKind::SessionRevoked {
                        session: session(u8::try_from(id.len()).unwrap()),
                        user: None,
                        reference: None,
                        at: 1,
                    },
                })
                .collect(),
        };
        let url = c.url("/v1/events");
        async move {
            client()
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(serde_json::to_string(&batch).unwrap())
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(post(NODE_A, &["1", "22"]).await.status(), 200);
    let over = post(NODE_A, &["333", "4444"]).await;
    assert_eq!(over.status(), 429);
    let body: serde_json::Value = serde_json::from_str(&over.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], "rate_limited");
    // Within what is left, it is still heard; and node B has its own.
    assert_eq!(post(NODE_A, &["55555"]).await.status(), 200);
    assert_eq!(post(NODE_B, &["1", "22", "333"]).await.status(), 200);
    c.stop().await;
}

// === session baselines and detections across nodes ===

/// A node's engine under the controller's hash key, to make real session
/// records.
fn engine() -> vigil_engine::Engine {
    vigil_engine::Engine::new(
        vigil_engine::EngineConfig::default(),
        vigil_engine::SessionHashKey::from_bytes([0x11; 32]),
    )
}

/// The record of `cookie` after one request from `ua` at `ip` at `at`,
/// bound to `user` when named.
fn record(
    engine: &vigil_engine::Engine,
    cookie: &str,
    ua: &str,
    ip: &str,
    user: Option<&str>,
    at: u64,
) -> vigil_fleet::Record {
    let key = engine.key_for_credential(cookie.as_bytes()).unwrap();
    if let Some(user) = user {
        engine.bind_user(key, user, at);
    }
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("cookie", format!("session={cookie}").parse().unwrap());
    headers.insert("user-agent", ua.parse().unwrap());
    let view = vigil_engine::RequestView {
        peer: ip.parse().unwrap(),
        headers: &headers,
        now_secs: at,
        tls: Default::default(),
        facts: Default::default(),
    };
    let allow = vigil_engine::Policy {
        low: vigil_engine::Action::Allow,
        medium: vigil_engine::Action::Allow,
        high: vigil_engine::Action::Allow,
        thresholds: None,
    };
    engine.evaluate(&view, &allow).unwrap();
    vigil_fleet::Record(engine.scorer().export(&key).unwrap().to_vec())
}

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

async fn post_events(c: &Controller, token: &str, events: Vec<NodeEvent>) -> reqwest::Response {
    client()
        .post(c.url("/v1/events"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(serde_json::to_string(&EventBatch { v: VERSION, events }).unwrap())
        .send()
        .await
        .unwrap()
}

fn baseline(id: &str, record: &vigil_fleet::Record, confirmed: bool) -> NodeEvent {
    NodeEvent {
        id: id.to_owned(),
        kind: NodeEventKind::SessionBaseline {
            record: record.clone(),
            confirmed,
            false_positive: false,
            disputed: None,
        },
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn the_earliest_sighting_of_a_session_is_its_baseline_for_every_node() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let t = now() - 100;
        let (a, b) = (engine(), engine());
        // The owner is seen on node A first; the thief, with the stolen
        // cookie, reaches node B five seconds later — and B's report
        // reaches the controller first.
        let owners = record(&a, "s-ann", FIREFOX, "81.2.69.10", Some("ann"), t);
        let thiefs = record(&b, "s-ann", CHROME, "45.33.1.10", None, t + 5);
        let mut node = Stream::open(&c, NODE_B, 0).await;
        assert!(matches!(node.next().await, Frame::Hello { .. }));
        assert!(matches!(node.next().await, Frame::SnapshotEnd { seq: 0 }));
        assert_eq!(
            post_events(&c, NODE_B, vec![baseline("b-1", &thiefs, false)])
                .await
                .status(),
            200
        );
        assert_eq!(
            post_events(&c, NODE_A, vec![baseline("a-1", &owners, false)])
                .await
                .status(),
            200
        );
        // Both are streamed in turn: every node ends on the owner's.
        for expected in [&thiefs, &owners] {
            let Frame::Changes { changes, .. } = node.next_change().await else {
                panic!()
            };
            assert_eq!(
                changes,
                vec![Change::SessionBaseline {
                    record: expected.clone(),
                    confirmed: false
                }]
            );
        }
        // The thief's sighting again, later, changes nothing; nor does a
        // made-up first sighting from before any node keeps a session.
        let again = record(&b, "s-ann", CHROME, "45.33.1.10", None, t + 50);
        let ancient = record(&engine(), "s-ann", CHROME, "45.33.1.10", None, 1_000);
        let r = post_events(
            &c,
            NODE_B,
            vec![
                baseline("b-2", &again, false),
                baseline("b-3", &ancient, false),
            ],
        )
        .await;
        assert_eq!(r.status(), 200);
        let head = |c: &Controller| {
            let url = c.url("/v1/admin/log");
            async move {
                let r = client().get(url).bearer_auth(ADMIN).send().await.unwrap();
                serde_json::from_str::<serde_json::Value>(&r.text().await.unwrap()).unwrap()["head"]
                    .as_u64()
                    .unwrap()
            }
        };
        assert_eq!(head(&c).await, 2);
        // The owner's step-up on the phone moves the baseline (and clears
        // her detection count).
        let phone = record(&a, "s-ann", CHROME, "31.94.1.10", Some("ann"), t + 60);
        post_events(&c, NODE_A, vec![baseline("a-2", &phone, true)]).await;
        let Frame::Changes { first: 3, changes } = node.next_change().await else {
            panic!()
        };
        assert_eq!(
            changes[0],
            Change::SessionBaseline {
                record: phone.clone(),
                confirmed: true
            }
        );
        assert!(matches!(
            changes[1..],
            [Change::UserDetections { count: 0, .. }]
        ));
        // A node starting now gets the one baseline in its snapshot, still
        // confirmed: a later sighting of an earlier time cannot undo it.
        let mut fresh = Stream::open(&c, NODE_A, 0).await;
        fresh.next().await;
        let Frame::Snapshot { seq: 4, changes } = fresh.next().await else {
            panic!()
        };
        assert_eq!(
            changes,
            vec![Change::SessionBaseline {
                record: phone,
                confirmed: true
            }]
        );
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

#[tokio::test]
async fn a_user_revoked_at_the_controller_loses_the_sessions_other_nodes_saw() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let t = now() - 100;
        let a = engine();
        let laptop = record(&a, "s-bob-1", FIREFOX, "81.2.69.10", Some("bob"), t);
        let late = record(&a, "s-bob-2", FIREFOX, "81.2.69.10", Some("bob"), t + 10);
        assert_eq!(
            post_events(&c, NODE_A, vec![baseline("a-1", &laptop, false)])
                .await
                .status(),
            200
        );
        let mut watching = Stream::open(&c, NODE_B, 1).await;
        watching.next().await;
        assert_eq!(
            c.admin("/v1/admin/users/revoke", serde_json::json!({"user": "bob"}))
                .await
                .status(),
            200
        );
        // The user's revocation comes with the revocation of each session
        // the controller knows of theirs: a node that no longer holds one
        // ends it too.
        let key = |r: &vigil_fleet::Record| SessionId(r.0[..16].try_into().unwrap());
        let Frame::Changes { first: 2, changes } = watching.next_change().await else {
            panic!()
        };
        assert!(
            matches!(
                &changes[..],
                [Change::UserRevoked { .. }, Change::SessionRevoked { session, vouched: true, .. }]
                    if *session == key(&laptop)
            ),
            "{changes:?}"
        );
        // A's report of a session bob had before his revocation arrives
        // after it (A's queue was held up): the session is revoked, not
        // taken as a baseline.
        assert_eq!(
            post_events(&c, NODE_A, vec![baseline("a-2", &late, false)])
                .await
                .status(),
            200
        );
        // A node starting now ends both sessions, though it never saw
        // them, and holds no baseline for them.
        let mut fresh = Stream::open(&c, NODE_B, 0).await;
        fresh.next().await;
        let Frame::Snapshot { changes, .. } = fresh.next().await else {
            panic!()
        };
        let mut revoked: Vec<SessionId> = changes
            .iter()
            .filter_map(|c| match c {
                Change::SessionRevoked {
                    session,
                    vouched: true,
                    ..
                } => Some(*session),
                _ => None,
            })
            .collect();
        revoked.sort();
        let mut expected = vec![key(&laptop), key(&late)];
        expected.sort();
        assert_eq!(revoked, expected);
        assert!(
            !changes
                .iter()
                .any(|c| matches!(c, Change::SessionBaseline { .. })),
            "{changes:?}"
        );
        assert!(matches!(fresh.next().await, Frame::SnapshotEnd { seq: 4 }));
        // Bob signs in again afterwards: that session is his baseline.
        let new = record(&a, "s-bob-3", FIREFOX, "81.2.69.10", Some("bob"), now() + 1);
        post_events(&c, NODE_A, vec![baseline("a-3", &new, false)]).await;
        let Frame::Changes { changes, .. } = fresh.next_change().await else {
            panic!()
        };
        assert_eq!(
            changes,
            vec![Change::SessionBaseline {
                record: new,
                confirmed: false
            }]
        );
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

fn detection(id: &str, user: Option<UserId>, enforced: bool, at: u64) -> NodeEvent {
    NodeEvent {
        id: id.to_owned(),
        kind: NodeEventKind::Detection {
            reference: format!("ref-{id}"),
            session: Some(session(9)),
            user,
            route: "app".to_owned(),
            rule: None,
            action: "revoke".to_owned(),
            enforced,
            score: 85,
            reasons: vec![
                ("device_changed".to_owned(), 45),
                ("network_changed".to_owned(), 40),
            ],
            at,
            facts: None,
        },
    }
}

#[tokio::test]
async fn enforced_detections_on_any_node_count_toward_the_users_risk_everywhere() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start_with(&db.url(), "detection_window_seconds = 600").await;
        let t = now() - 10;
        let carl = UserId(
            vigil_engine::UserKey::for_name(
                &vigil_engine::SessionHashKey::from_bytes([0x11; 32]),
                "carl",
            )
            .as_u64(),
        );
        let mut node = Stream::open(&c, NODE_B, 0).await;
        node.next().await;
        node.next().await;
        // A monitored (not enforced) detection and one of no user count
        // for nobody; the first enforced one counts one.
        let r = post_events(
            &c,
            NODE_A,
            vec![
                detection("a-1", Some(carl), false, t),
                detection("a-2", None, true, t),
                detection("a-3", Some(carl), true, t),
            ],
        )
        .await;
        assert_eq!(r.status(), 200);
        let Frame::Changes { first: 1, changes } = node.next_change().await else {
            panic!()
        };
        assert_eq!(
            changes,
            vec![Change::UserDetections {
                user: carl,
                count: 1,
                until: t + 600
            }]
        );
        // Another node catches the thief again: two, everywhere.
        post_events(&c, NODE_B, vec![detection("b-1", Some(carl), true, t + 1)]).await;
        let Frame::Changes { first: 2, changes } = node.next_change().await else {
            panic!()
        };
        assert_eq!(
            changes,
            vec![Change::UserDetections {
                user: carl,
                count: 2,
                until: t + 601
            }]
        );
        // Carl passes a step-up on node A: the fleet's count starts over,
        // and only what is caught after counts.
        let phone = record(&engine(), "s-carl", FIREFOX, "81.2.69.10", Some("carl"), now() - 5);
        post_events(&c, NODE_A, vec![baseline("a-5", &phone, true)]).await;
        let Frame::Changes { changes, .. } = node.next_change().await else {
            panic!()
        };
        assert!(
            matches!(&changes[..], [Change::SessionBaseline { confirmed: true, .. }, Change::UserDetections { user, count: 0, .. }] if *user == carl),
            "{changes:?}"
        );
        post_events(&c, NODE_B, vec![detection("b-2", Some(carl), true, now())]).await;
        let Frame::Changes { changes, .. } = node.next_change().await else {
            panic!()
        };
        assert!(
            matches!(&changes[..], [Change::UserDetections { user, count: 1, .. }] if *user == carl),
            "{changes:?}"
        );
        // Bounded facts: an oversized one is refused whole.
        let mut big = detection("a-4", Some(carl), true, t);
        if let NodeEventKind::Detection { route, .. } = &mut big.kind {
            *route = "r".repeat(129);
        }
        let r = post_events(&c, NODE_A, vec![big]).await;
        assert_eq!(r.status(), 400);
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// A fleet mid-upgrade, the controller newer than some nodes: a version 1
/// node gets, for each change it does not know, one it does that changes
/// nothing, so that its sequence stays contiguous; a snapshot leaves them
/// out; and its version 1 batches are taken, while a batch naming version
/// 1 with a later kind of event is refused whole.
#[tokio::test]
async fn a_node_of_the_previous_version_keeps_a_contiguous_stream() {
    let db = Db::new(false).await;
    let c = Controller::start(&db.url()).await;
    let a = engine();
    let owners = record(&a, "s-ed", FIREFOX, "81.2.69.10", Some("ed"), now() - 10);
    let mut old = Stream::open_as(&c, NODE_B, 0, None).await;
    assert!(matches!(old.next().await, Frame::Hello { v: 1, .. }));
    assert!(matches!(old.next().await, Frame::SnapshotEnd { seq: 0 }));
    let mut new = Stream::open(&c, NODE_A, 0).await;
    assert!(matches!(new.next().await, Frame::Hello { v: VERSION, .. }));
    new.next().await;
    assert_eq!(
        post_events(&c, NODE_A, vec![baseline("a-1", &owners, false)])
            .await
            .status(),
        200
    );
    let v1 = EventBatch {
        v: 1,
        events: vec![NodeEvent {
            id: "old-1".to_owned(),
            kind: NodeEventKind::SessionRevoked {
                session: session(4),
                user: None,
                reference: None,
                at: now(),
            },
        }],
    };
    let r = client()
        .post(c.url("/v1/events"))
        .bearer_auth(NODE_B)
        .body(serde_json::to_string(&v1).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A version 1 node posts no detections: its revocations carry no
    // evidence, and stay on the node.
    assert_eq!(
        serde_json::from_str::<EventAck>(&r.text().await.unwrap()).unwrap(),
        EventAck {
            accepted: 1,
            duplicates: 0,
            refused: 1,
            retry: Vec::new(),
        }
    );
    assert_eq!(
        c.admin(
            "/v1/admin/sessions/revoke",
            serde_json::json!({"session": session(4).to_string()}),
        )
        .await
        .status(),
        200
    );
    let Frame::Changes { first: 1, changes } = old.next_change().await else {
        panic!()
    };
    assert_eq!(
        changes,
        vec![Change::UserRisk {
            user: UserId(1),
            points: 0,
            until: 0,
            at: 0
        }]
    );
    let Frame::Changes { first: 2, changes } = old.next_change().await else {
        panic!()
    };
    assert!(matches!(changes[..], [Change::SessionRevoked { session: s, .. }] if s == session(4)));
    let Frame::Changes { first: 1, changes } = new.next_change().await else {
        panic!()
    };
    assert_eq!(
        changes,
        vec![Change::SessionBaseline {
            record: owners,
            confirmed: false
        }]
    );
    // A version 1 node starting now: the revocation only.
    let mut late = Stream::open_as(&c, NODE_B, 0, None).await;
    late.next().await;
    let Frame::Snapshot { seq: 2, changes } = late.next().await else {
        panic!()
    };
    assert_eq!(changes.len(), 1, "{changes:?}");
    // A version 1 batch with a version 2 event is refused whole.
    let mut mixed = v1.clone();
    mixed.events.push(detection("old-2", None, true, now()));
    let r = client()
        .post(c.url("/v1/events"))
        .bearer_auth(NODE_B)
        .body(serde_json::to_string(&mixed).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    c.stop().await;
    db.drop_db().await;
}

/// A user's step-up (version 4): streamed to a node of this version, kept
/// in the snapshots of nodes that start later (the latest ask per user),
/// and, to a version 3 node, a change that does nothing in its place
/// (numbers contiguous) and nothing in its snapshot. Only the admin asks.
#[tokio::test]
async fn a_users_step_up_reaches_current_nodes_and_older_ones_keep_their_numbers() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let gus = UserId(
            vigil_engine::UserKey::for_name(
                &vigil_engine::SessionHashKey::from_bytes([0x11; 32]),
                "gus",
            )
            .as_u64(),
        );
        let mut new = Stream::open(&c, NODE_A, 0).await;
        assert!(matches!(new.next().await, Frame::Hello { v: VERSION, .. }));
        new.next().await;
        let mut old = Stream::open_as(&c, NODE_B, 0, Some(3)).await;
        assert!(matches!(old.next().await, Frame::Hello { v: 3, .. }));
        old.next().await;

        // Not without the admin's token; not for a name that is none.
        let r = client()
            .post(c.url("/v1/admin/users/step-up"))
            .bearer_auth(NODE_A)
            .body(r#"{"user":"gus"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        for bad in [
            serde_json::json!({"user": " "}),
            serde_json::json!({"user": "gus", "at": 1}),
        ] {
            let r = c.admin("/v1/admin/users/step-up", bad.clone()).await;
            assert_eq!(r.status(), 400, "{bad}");
        }

        let before = now();
        let r = c
            .admin("/v1/admin/users/step-up", serde_json::json!({"user": "gus"}))
            .await;
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(body["seq"], 1);
        let Frame::Changes { first: 1, changes } = new.next_change().await else {
            panic!()
        };
        let [Change::UserStepUp { user, at }] = changes[..] else {
            panic!("{changes:?}")
        };
        assert_eq!(user, gus);
        assert!(at >= before && at <= now(), "{at}");
        let Frame::Changes { first: 1, changes } = old.next_change().await else {
            panic!()
        };
        assert_eq!(changes, vec![Change::nothing()]);
        // A second ask: the latest is the one kept.
        assert_eq!(
            c.admin("/v1/admin/users/step-up", serde_json::json!({"user": "gus"}))
                .await
                .status(),
            200
        );
        let Frame::Changes { first: 2, .. } = new.next_change().await else {
            panic!()
        };
        let Frame::Changes { first: 2, changes } = old.next_change().await else {
            panic!()
        };
        assert_eq!(changes, vec![Change::nothing()]);

        // Nodes starting now: the current one is asked in its snapshot,
        // once; the older one gets an empty snapshot at the same number.
        let mut late = Stream::open(&c, NODE_A, 0).await;
        late.next().await;
        let Frame::Snapshot { seq: 2, changes } = late.next().await else {
            panic!()
        };
        assert!(
            matches!(changes[..], [Change::UserStepUp { user, at: last }] if user == gus && last >= at),
            "{changes:?}"
        );
        let mut late_old = Stream::open_as(&c, NODE_B, 0, Some(3)).await;
        late_old.next().await;
        assert!(matches!(
            late_old.next().await,
            Frame::SnapshotEnd { seq: 2 }
        ));
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

#[tokio::test]
async fn erasing_a_user_leaves_nothing_that_names_them() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let a = engine();
        let key = vigil_engine::UserKey::for_name(
            &vigil_engine::SessionHashKey::from_bytes([0x11; 32]),
            "flo",
        );
        let flo = UserId(key.as_u64());
        let hex = flo.to_string();
        let in_record: String = key
            .as_u64()
            .to_le_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let laptop = record(&a, "s-flo", FIREFOX, "81.2.69.10", Some("flo"), now() - 10);
        let session_key = SessionId(laptop.0[..16].try_into().unwrap());
        assert!(laptop.to_string().contains(&in_record));
        post_events(
            &c,
            NODE_A,
            vec![
                baseline("a-1", &laptop, false),
                detection("a-2", Some(flo), true, now() - 5),
            ],
        )
        .await;
        for (path, body) in [
            (
                "/v1/admin/users/risk",
                serde_json::json!({"user": "flo", "points": 50, "ttl_seconds": 600}),
            ),
            ("/v1/admin/users/revoke", serde_json::json!({"user": "flo"})),
            ("/v1/admin/users/erase", serde_json::json!({"user": "flo"})),
        ] {
            assert_eq!(c.admin(path, body).await.status(), 200, "{path}");
        }
        // The log: every change naming flo or holding a record of hers
        // now says nothing, numbers kept; the erasure is the last.
        let store = Store::open(&db.url()).await.unwrap();
        let log = store.since(0, 100).await.unwrap();
        let (last, erased) = log.last().unwrap();
        assert!(matches!(erased, Change::UserErased { user, .. } if *user == flo));
        assert_eq!(
            log.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            (1..=*last).collect::<Vec<_>>()
        );
        for (seq, change) in &log[..log.len() - 1] {
            let body = serde_json::to_string(change).unwrap();
            assert!(
                !body.contains(&hex) && !body.contains(&in_record),
                "change {seq}: {body}"
            );
        }
        // The state: her session ended by its key alone; nothing else.
        let (_, state) = store.snapshot().await.unwrap();
        let body = serde_json::to_string(&state).unwrap();
        assert!(!body.contains(&hex) && !body.contains(&in_record), "{body}");
        assert!(
            state.iter().any(|c| matches!(
                c,
                Change::SessionRevoked { session, vouched: true, .. } if *session == session_key
            )),
            "{state:?}"
        );
        // A version 1 node gets the revocation it can carry out.
        let mut old = Stream::open_as(&c, NODE_B, *last - 1, None).await;
        old.next().await;
        let Frame::Changes { changes, .. } = old.next_change().await else {
            panic!()
        };
        assert!(matches!(changes[..], [Change::UserRevoked { user, .. }] if user == flo));
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// A stolen node token is put out of use at once, without a restart: its
/// open stream ends, its requests are refused, the other node is untouched.
#[tokio::test]
async fn an_operator_disables_a_node_at_once_and_its_stream_ends() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let mut a = Stream::open(&c, NODE_A, 0).await;
        a.next().await;
        a.next().await;
        let mut b = Stream::open(&c, NODE_B, 0).await;
        b.next().await;
        b.next().await;
        let r = c
            .admin("/v1/admin/nodes/disable", serde_json::json!({"node": "a"}))
            .await;
        assert_eq!(r.status(), 200);
        // A's stream ends (no more frames: the body is over).
        let ended = tokio::time::timeout(DEADLINE, async {
            loop {
                match a.response.chunk().await {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => return,
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "the disabled node's stream ended");
        let sync = client()
            .get(c.url("/v1/sync?since=0"))
            .bearer_auth(NODE_A)
            .send()
            .await
            .unwrap();
        assert_eq!(sync.status(), 401);
        assert_eq!(post_events(&c, NODE_A, vec![]).await.status(), 401);
        // B is untouched: a revocation still reaches it.
        assert_eq!(
            c.admin(
                "/v1/admin/sessions/revoke",
                serde_json::json!({"session": session(1).to_string()})
            )
            .await
            .status(),
            200
        );
        assert!(matches!(
            b.next_change().await,
            Frame::Changes { first: 1, .. }
        ));
        let list = c.admin_get("/v1/admin/nodes").await;
        assert_eq!(
            list["nodes"],
            serde_json::json!([
                {"node": "a", "disabled": true, "disabled_by": "admin_api",
                 "rules": null, "rules_failure": null},
                {"node": "b", "disabled": false, "disabled_by": "",
                 "rules": null, "rules_failure": null},
            ])
        );
        // An unknown node is an error, not a silent no-op.
        let r = c
            .admin("/v1/admin/nodes/disable", serde_json::json!({"node": "zz"}))
            .await;
        assert_eq!(r.status(), 404);
        // Enabled again: A syncs.
        c.admin("/v1/admin/nodes/enable", serde_json::json!({"node": "a"}))
            .await;
        let _a = Stream::open(&c, NODE_A, 1).await;
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// What a stolen node token cannot do with session records: end sessions
/// faster than its revocation allowance (records of a revoked user's
/// sessions become revocations, counted against it), or hand a session
/// bound to one user to another.
#[tokio::test]
async fn session_records_are_held_to_the_nodes_allowance_and_the_sessions_user() {
    let db = Db::new(false).await;
    let c = Controller::start_with(&db.url(), "node_revocations_per_minute = 2").await;
    let t = now() - 100;
    let a = engine();
    assert_eq!(
        c.admin("/v1/admin/users/revoke", serde_json::json!({"user": "gus"}))
            .await
            .status(),
        200
    );
    let records: Vec<NodeEvent> = (0..4)
        .map(|i| {
            let r = record(
                &a,
                &format!("s-gus-{i}"),
                FIREFOX,
                "81.2.69.10",
                Some("gus"),
                t,
            );
            baseline(&format!("a-{i}"), &r, false)
        })
        .collect();
    assert_eq!(post_events(&c, NODE_A, records).await.status(), 200);
    // Two of the allowance: two revocations, the rest ignored.
    let store = Store::open(&db.url()).await.unwrap();
    let log = store.since(1, 100).await.unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log.iter()
            .all(|(_, c)| matches!(c, Change::SessionRevoked { vouched: true, .. }))
    );
    // The allowance is spent: a revocation posted now waits.
    let revocation = NodeEvent {
        id: "a-9".to_owned(),
        kind: NodeEventKind::SessionRevoked {
            session: session(7),
            user: None,
            reference: None,
            at: now(),
        },
    };
    assert_eq!(
        post_events(&c, NODE_A, vec![revocation]).await.status(),
        429
    );
    // A session bound to hal is not handed to ivy, however early the
    // record claims to have seen it.
    let b = engine();
    let hals = record(&a, "s-hal", FIREFOX, "81.2.69.10", Some("hal"), t + 50);
    let ivys = record(&b, "s-hal", CHROME, "45.33.1.10", Some("ivy"), t);
    assert_eq!(
        post_events(&c, NODE_A, vec![baseline("h-1", &hals, false)])
            .await
            .status(),
        200
    );
    assert_eq!(
        post_events(&c, NODE_B, vec![baseline("i-1", &ivys, true)])
            .await
            .status(),
        200
    );
    let (_, state) = store.snapshot().await.unwrap();
    let baselines: Vec<&Change> = state
        .iter()
        .filter(|c| matches!(c, Change::SessionBaseline { .. }))
        .collect();
    assert_eq!(
        baselines,
        vec![&Change::SessionBaseline {
            record: hals,
            confirmed: false
        }]
    );
    c.stop().await;
    db.drop_db().await;
}

// === a node's word: evidence for revocations, budgets for histories ===

/// A detection by a node of `session` (`action`, carried out or not), with
/// reference `reference`.
fn evidence(
    id: &str,
    reference: &str,
    session: Option<SessionId>,
    user: Option<UserId>,
    action: &str,
    enforced: bool,
) -> NodeEvent {
    let mut event = detection(id, user, enforced, now());
    if let NodeEventKind::Detection {
        reference: r,
        session: s,
        action: a,
        ..
    } = &mut event.kind
    {
        *r = reference.to_owned();
        *s = session;
        *a = action.to_owned();
    }
    event
}

/// A node's decided revocation of `session`, naming `reference`.
fn revocation(
    id: &str,
    session: SessionId,
    user: Option<UserId>,
    reference: Option<&str>,
) -> NodeEvent {
    NodeEvent {
        id: id.to_owned(),
        kind: NodeEventKind::SessionRevoked {
            session,
            user,
            reference: reference.map(str::to_owned),
            at: now(),
        },
    }
}

/// The ack of a batch that must be taken.
async fn ack_of(c: &Controller, token: &str, events: Vec<NodeEvent>) -> EventAck {
    let r = post_events(c, token, events).await;
    assert_eq!(r.status(), 200);
    serde_json::from_str(&r.text().await.unwrap()).unwrap()
}

/// Every session revocation in the log.
async fn revocations_in_log(store: &Store) -> Vec<(SessionId, bool)> {
    store
        .since(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|(_, c)| match c {
            Change::SessionRevoked {
                session, vouched, ..
            } => Some((session, vouched)),
            _ => None,
        })
        .collect()
}

/// The attack: node B's token is stolen. The thief reads olga's session
/// key in the stream (a baseline node A recorded) and tries to end her
/// session everywhere — with no evidence, a made-up reference, node A's
/// detection, a detection of B's that was only monitored, one of another
/// session, one that only blocked. Each is refused, counted per node and
/// reason, and her session is not revoked.
#[tokio::test]
async fn a_stolen_node_token_cannot_end_a_session_it_never_caught() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let store = Store::open(&db.url()).await.unwrap();
        let a = engine();
        let olga = user_key("olga");
        let owners = record(&a, "s-olga", FIREFOX, "81.2.69.10", Some("olga"), now() - 20);
        assert_eq!(
            ack_of(&c, NODE_A, vec![baseline("a-1", &owners, false)]).await,
            EventAck {
                accepted: 1,
                ..EventAck::default()
            }
        );
        // What the thief reads with B's token: olga's session key.
        let mut b = Stream::open(&c, NODE_B, 0).await;
        b.next().await;
        let Frame::Snapshot { changes, .. } = b.next().await else {
            panic!()
        };
        let Some(Change::SessionBaseline { record, .. }) = changes.first() else {
            panic!("{changes:?}")
        };
        let key = SessionId(record.0[..16].try_into().unwrap());
        // Node A really caught someone on another of its sessions: its
        // reference is not B's evidence.
        ack_of(
            &c,
            NODE_A,
            vec![evidence("a-2", "ref-a", Some(key), Some(olga), "revoke", true)],
        )
        .await;
        let attempts: Vec<(&str, Vec<NodeEvent>)> = vec![
            ("no_evidence", vec![revocation("b-1", key, Some(olga), None)]),
            (
                "unknown_reference",
                vec![revocation("b-2", key, Some(olga), Some("made-up"))],
            ),
            (
                "unknown_reference",
                vec![revocation("b-3", key, Some(olga), Some("ref-a"))],
            ),
            (
                "not_enforced",
                vec![
                    evidence("b-4", "ref-mon", Some(key), Some(olga), "revoke", false),
                    revocation("b-5", key, Some(olga), Some("ref-mon")),
                ],
            ),
            (
                "other_session",
                vec![
                    evidence("b-6", "ref-other", Some(session(9)), Some(olga), "revoke", true),
                    revocation("b-7", key, Some(olga), Some("ref-other")),
                ],
            ),
            (
                "not_revoking",
                vec![
                    evidence("b-8", "ref-block", Some(key), Some(olga), "block", true),
                    revocation("b-9", key, Some(olga), Some("ref-block")),
                ],
            ),
            (
                "other_user",
                vec![
                    evidence("b-10", "ref-ivy", Some(key), Some(user_key("ivy")), "revoke", true),
                    revocation("b-11", key, Some(user_key("ivy")), Some("ref-ivy")),
                ],
            ),
        ];
        for (reason, events) in attempts {
            let n = events.len();
            assert_eq!(
                ack_of(&c, NODE_B, events).await,
                EventAck {
                    accepted: n,
                    duplicates: 0,
                    refused: 1,
                    retry: Vec::new(),
                },
                "{reason}"
            );
        }
        assert_eq!(revocations_in_log(&store).await, vec![]);
        let (_, state) = store.snapshot().await.unwrap();
        assert!(
            state
                .iter()
                .any(|c| matches!(c, Change::SessionBaseline { record, .. } if *record == owners)),
            "olga's session is still hers: {state:?}"
        );
        let text = metrics(&c).await;
        for (reason, n) in [
            ("no_evidence", 1.0),
            ("unknown_reference", 2.0),
            ("not_enforced", 1.0),
            ("other_session", 1.0),
            ("not_revoking", 1.0),
            ("other_user", 1.0),
        ] {
            assert_eq!(
                metric(
                    &text,
                    &format!(
                        "vigil_controller_node_events_refused_total{{node=\"b\",reason=\"{reason}\"}}"
                    )
                ),
                Some(n),
                "{reason}"
            );
        }
        assert!(!text.contains("node=\"a\""), "node A had nothing refused");
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// The attack: node B's token is stolen, and the thief files vouched
/// revocations of sessions it makes up — in one batch a baseline naming a
/// user, a detection of it and its revocation — to fill every node's main
/// revocation store, which nothing evicts but age. Vouching on a baseline
/// the revoking node recorded itself is bounded a day
/// (`node_vouched_revocations_per_day`, 2 here): the third is taken
/// unvouched, still ended, counted and logged. A thief B catches on a
/// session whose baseline node A recorded is vouched for whatever B spent.
#[tokio::test]
async fn a_stolen_node_token_cannot_fill_the_fleets_revocation_store() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start_with(&db.url(), "node_vouched_revocations_per_day = 2").await;
        let store = Store::open(&db.url()).await.unwrap();
        let a = engine();
        let zed = user_key("zed");
        let mut made_up = Vec::new();
        for i in 0..3 {
            let rec = record(
                &a,
                &format!("made-up-{i}"),
                FIREFOX,
                "81.2.69.10",
                Some("zed"),
                now() - 20,
            );
            let key = SessionId(rec.0[..16].try_into().unwrap());
            let reference = format!("ref-{i}");
            assert_eq!(
                ack_of(
                    &c,
                    NODE_B,
                    vec![
                        baseline(&format!("b-{i}-1"), &rec, false),
                        evidence(
                            &format!("b-{i}-2"),
                            &reference,
                            Some(key),
                            Some(zed),
                            "revoke",
                            true
                        ),
                        revocation(&format!("b-{i}-3"), key, Some(zed), Some(&reference)),
                    ],
                )
                .await,
                EventAck {
                    accepted: 3,
                    ..EventAck::default()
                },
                "made-up session {i}"
            );
            made_up.push(key);
        }
        // The real case, after B's budget is spent: pia's baseline is A's.
        let pia = user_key("pia");
        let owners = record(&a, "s-pia", FIREFOX, "81.2.69.11", Some("pia"), now() - 20);
        let key = SessionId(owners.0[..16].try_into().unwrap());
        ack_of(&c, NODE_A, vec![baseline("a-1", &owners, false)]).await;
        ack_of(
            &c,
            NODE_B,
            vec![
                evidence("b-9", "ref-pia", Some(key), Some(pia), "revoke", true),
                revocation("b-10", key, Some(pia), Some("ref-pia")),
            ],
        )
        .await;
        assert_eq!(
            revocations_in_log(&store).await,
            vec![
                (made_up[0], true),
                (made_up[1], true),
                (made_up[2], false),
                (key, true)
            ]
        );
        let text = metrics(&c).await;
        assert_eq!(
            metric(
                &text,
                "vigil_controller_node_revocations_unvouched_total{node=\"b\"}"
            ),
            Some(1.0)
        );
        assert!(
            !text.contains("vigil_controller_node_events_refused_total{"),
            "nothing was refused"
        );
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// What must keep working: pia signs in on node A (A's baseline); a thief
/// replays her cookie on node B, which never recorded the session; B's
/// decision revokes it, and B posts its detection and the revocation in
/// one batch. The fleet ends her session, vouched (the baseline held binds
/// it to her). A cookie nobody bound, caught the same way, is ended
/// unvouched.
#[tokio::test]
async fn the_node_that_catches_a_thief_ends_the_session_everywhere_on_its_evidence() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let store = Store::open(&db.url()).await.unwrap();
        let a = engine();
        let pia = user_key("pia");
        let owners = record(&a, "s-pia", FIREFOX, "81.2.69.10", Some("pia"), now() - 20);
        let key = SessionId(owners.0[..16].try_into().unwrap());
        ack_of(&c, NODE_A, vec![baseline("a-1", &owners, false)]).await;
        let mut watching = Stream::open(&c, NODE_A, 1).await;
        watching.next().await;
        assert_eq!(
            ack_of(
                &c,
                NODE_B,
                vec![
                    evidence("b-1", "4f2a9c", Some(key), Some(pia), "revoke", true),
                    revocation("b-2", key, Some(pia), Some("4f2a9c")),
                ],
            )
            .await,
            EventAck {
                accepted: 2,
                ..EventAck::default()
            }
        );
        let Frame::Changes { first: 2, changes } = watching.next_change().await else {
            panic!()
        };
        assert!(
            matches!(changes[0], Change::SessionRevoked { session, vouched: true, .. } if session == key),
            "{changes:?}"
        );
        // A made-up cookie B caught (bound to nobody, no baseline): ended,
        // in the budget nodes keep for cookies a client could have made.
        assert_eq!(
            ack_of(
                &c,
                NODE_B,
                vec![
                    evidence("b-3", "77e0aa", Some(session(12)), None, "revoke", true),
                    revocation("b-4", session(12), None, Some("77e0aa")),
                ],
            )
            .await,
            EventAck {
                accepted: 2,
                ..EventAck::default()
            }
        );
        assert_eq!(
            revocations_in_log(&store).await,
            vec![(key, true), (session(12), false)]
        );
        // The evidence stays valid in a later batch (the node's queue may
        // split them), but names one session only.
        ack_of(
            &c,
            NODE_B,
            vec![evidence("b-5", "91bb03", Some(session(13)), None, "revoke", true)],
        )
        .await;
        assert_eq!(
            ack_of(
                &c,
                NODE_B,
                vec![
                    revocation("b-6", session(13), None, Some("91bb03")),
                    revocation("b-7", session(14), None, Some("91bb03")),
                ],
            )
            .await,
            EventAck {
                accepted: 2,
                duplicates: 0,
                refused: 1,
                retry: Vec::new(),
            }
        );
        assert_eq!(
            revocations_in_log(&store).await,
            vec![(key, true), (session(12), false), (session(13), false)]
        );
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// A node's revocations are bounded a minute apart from its other events:
/// beyond `node_revocations_per_minute` a batch waits (429); a first
/// batch of a minute holding more than the whole allowance is taken, its
/// revocations beyond it refused, so it is not refused for ever.
#[tokio::test]
async fn a_nodes_revocations_are_bounded_a_minute_apart_from_its_other_events() {
    let db = Db::new(false).await;
    let c = Controller::start_with(&db.url(), "node_revocations_per_minute = 2").await;
    let caught = |i: u8| {
        let reference = format!("r{i}");
        vec![
            evidence(
                &format!("d{i}"),
                &reference,
                Some(session(i)),
                None,
                "revoke",
                true,
            ),
            revocation(&format!("v{i}"), session(i), None, Some(&reference)),
        ]
    };
    let batch: Vec<NodeEvent> = (1..=3).flat_map(caught).collect();
    assert_eq!(
        ack_of(&c, NODE_A, batch).await,
        EventAck {
            accepted: 6,
            duplicates: 0,
            refused: 1,
            retry: Vec::new(),
        }
    );
    assert_eq!(post_events(&c, NODE_A, caught(4)).await.status(), 429);
    // Detections are other events: still heard.
    assert_eq!(
        ack_of(&c, NODE_A, vec![caught(5).remove(0)]).await.accepted,
        1
    );
    let text = metrics(&c).await;
    assert_eq!(
        metric(
            &text,
            "vigil_controller_node_events_refused_total{node=\"a\",reason=\"rate_limited\"}"
        ),
        Some(1.0)
    );
    c.stop().await;
}

/// History poisoning: one node posts the same user's observations batch
/// after batch. Beyond the node's budgets of the day (observations of the
/// user, session-opening ones, users without a history) the profile
/// changes no further; another node has budgets of its own.
#[tokio::test]
async fn a_node_grows_a_users_history_only_so_far_a_day() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start_with(
            &db.url(),
            "node_observations_per_user_per_day = 5\nnode_new_sessions_per_user_per_day = 2\nnode_new_users_per_day = 3",
        )
        .await;
        let store = Store::open(&db.url()).await.unwrap();
        let quinn = UserId(0x0a11);
        let t = now() - 5;
        // Three logins: two taken, the third beyond the sessions' budget.
        let first: Vec<NodeEvent> = (0..3)
            .map(|i| learned(&format!("a-{i}"), quinn, HOME, true, t))
            .collect();
        assert_eq!(
            ack_of(&c, NODE_A, first.clone()).await,
            EventAck {
                accepted: 3,
                duplicates: 0,
                refused: 1,
                retry: Vec::new(),
            }
        );
        // Moves of network, batch after batch: three more taken (five in
        // all), then nothing.
        let moves: Vec<NodeEvent> = (3..7)
            .map(|i| learned(&format!("a-{i}"), quinn, HOTEL, false, t))
            .collect();
        assert_eq!(
            ack_of(&c, NODE_A, moves.clone()).await,
            EventAck {
                accepted: 4,
                duplicates: 0,
                refused: 1,
                retry: Vec::new(),
            }
        );
        let held = store.user_profile(quinn).await.unwrap().unwrap();
        let taken: Vec<&NodeEvent> = first[..2].iter().chain(&moves[..3]).collect();
        assert_eq!(held, summed(&taken));
        for batch in 0..3 {
            let more: Vec<NodeEvent> = (0..4)
                .map(|i| learned(&format!("a-x{batch}-{i}"), quinn, HOTEL, i % 2 == 0, t))
                .collect();
            assert_eq!(
                ack_of(&c, NODE_A, more).await,
                EventAck {
                    accepted: 4,
                    duplicates: 0,
                    refused: 4,
                    retry: Vec::new(),
                }
            );
        }
        assert_eq!(store.user_profile(quinn).await.unwrap().unwrap(), held);
        // Node B's word counts apart.
        let b = learned("b-1", quinn, HOME, false, t);
        assert_eq!(
            ack_of(&c, NODE_B, vec![b.clone()]).await,
            EventAck {
                accepted: 1,
                ..EventAck::default()
            }
        );
        let mut with_b = taken.clone();
        with_b.push(&b);
        assert_eq!(
            store.user_profile(quinn).await.unwrap().unwrap(),
            summed(&with_b)
        );
        // Users without a history: quinn was the first of node A's three
        // today; two more are taken, the fourth is not.
        let new: Vec<NodeEvent> = (1..=3u64)
            .map(|i| learned(&format!("a-n{i}"), UserId(0x0b00 + i), HOME, true, t))
            .collect();
        assert_eq!(
            ack_of(&c, NODE_A, new).await,
            EventAck {
                accepted: 3,
                duplicates: 0,
                refused: 1,
                retry: Vec::new(),
            }
        );
        assert!(store.user_profile(UserId(0x0b02)).await.unwrap().is_some());
        assert_eq!(store.user_profile(UserId(0x0b03)).await.unwrap(), None);
        let text = metrics(&c).await;
        for (reason, n) in [
            ("new_session_budget", 1.0),
            ("observation_budget", 13.0),
            ("new_user_budget", 1.0),
        ] {
            assert_eq!(
                metric(
                    &text,
                    &format!(
                        "vigil_controller_node_events_refused_total{{node=\"a\",reason=\"{reason}\"}}"
                    )
                ),
                Some(n),
                "{reason}"
            );
        }
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// The OpenAPI document is served as committed and names exactly the
/// routes the router serves; each documented call answers as documented
/// to a caller without a token.
#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let db = Db::new(false).await;
    let c = Controller::start(&db.url()).await;
    let served = client()
        .get(c.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    let doc: serde_json::Value = serde_json::from_str(&served.text().await.unwrap()).unwrap();
    assert_eq!(
        doc,
        serde_json::from_str::<serde_json::Value>(vigil_controller::api::OPENAPI).unwrap()
    );
    let mut documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    documented.sort();
    // The router's routes, read from its source.
    let source = include_str!("../src/api.rs");
    let mut routed: Vec<(String, String)> = source
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix(".route(\"")?;
            let (path, rest) = rest.split_once('"')?;
            let method = rest.trim_start_matches(", ").split('(').next()?;
            Some((method.to_uppercase(), path.to_owned()))
        })
        .collect();
    routed.sort();
    assert_eq!(documented, routed);
    for (method, path) in &documented {
        let op = &doc["paths"][path.as_str()][method.to_lowercase().as_str()];
        let public = op["security"].as_array().is_some_and(|s| s.is_empty());
        let r = client()
            .request(method.parse().unwrap(), c.url(path))
            .send()
            .await
            .unwrap();
        let expected = if public { 200 } else { 401 };
        assert_eq!(r.status(), expected, "{method} {path}");
        assert!(
            op["responses"][expected.to_string()].is_object(),
            "{method} {path} documents its {expected}"
        );
    }
    c.stop().await;
    db.drop_db().await;
}

/// Backup, restore and the move from SQLite to PostgreSQL: a copy holds the
/// log with its numbers and the state it built, a controller started on it
/// carries on from the same head, and a copy never writes over data.
#[tokio::test]
async fn a_store_copied_to_postgresql_and_back_is_the_same_fleet() {
    let sqlite = Db::new(false).await;
    let c = Controller::start(&sqlite.url()).await;
    let a = engine();
    let t = now() - 50;
    let ann = record(&a, "s-ann", FIREFOX, "81.2.69.10", Some("ann"), t);
    post_events(
        &c,
        NODE_A,
        vec![
            baseline("a-1", &ann, false),
            detection("a-2", Some(UserId(77)), true, t),
            learned("a-3", UserId(77), HOME, true, t),
            vigil_fleet::NodeEvent {
                id: "a-counts".to_owned(),
                kind: vigil_fleet::NodeEventKind::Counts(vigil_fleet::NodeCounts {
                    run: "0123456789abcdef".to_owned(),
                    minute: t / 60,
                    counts: vec![vigil_fleet::Count {
                        kind: "shadow".to_owned(),
                        name: "try-revoke".to_owned(),
                        action: Some("revoke".to_owned()),
                        n: 6,
                    }],
                }),
            },
        ],
    )
    .await;
    c.admin("/v1/admin/users/erase", serde_json::json!({"user": "di"}))
        .await;
    c.admin(
        "/v1/admin/users/risk",
        serde_json::json!({"user": "bo", "points": 30, "ttl_seconds": 600}),
    )
    .await;
    c.admin("/v1/admin/users/revoke", serde_json::json!({"user": "cy"}))
        .await;
    c.admin(
        "/v1/admin/sessions/revoke",
        serde_json::json!({"session": session(3).to_string()}),
    )
    .await;
    c.admin("/v1/admin/nodes/disable", serde_json::json!({"node": "b"}))
        .await;
    assert_eq!(publish(&c, BLOCK_ADMIN).await.status(), 200);
    post_events(&c, NODE_A, vec![rules_report("a-4", 1, BLOCK_ADMIN, true)]).await;
    c.stop().await;

    let source = Store::open(&sqlite.url()).await.unwrap();
    let pg = Db::new(true).await;
    let target = Store::open(&pg.url()).await.unwrap();
    let copied = vigil_controller::copy::copy(&source, &target)
        .await
        .unwrap();
    assert_eq!(copied.head, source.bounds().await.unwrap().head);
    assert_eq!(
        target.bounds().await.unwrap(),
        source.bounds().await.unwrap()
    );
    let (_, state) = source.snapshot().await.unwrap();
    assert!(
        state
            .iter()
            .any(|c| matches!(c, Change::UserProfile { user, .. } if *user == UserId(77))),
        "a user's history is part of what is copied"
    );
    assert_eq!(
        target.snapshot().await.unwrap(),
        source.snapshot().await.unwrap()
    );
    assert_eq!(
        target.since(0, 100).await.unwrap(),
        source.since(0, 100).await.unwrap()
    );
    assert_eq!(
        target.disabled_nodes().await.unwrap(),
        source.disabled_nodes().await.unwrap()
    );
    assert_eq!(
        target.rule_bundle(1).await.unwrap(),
        source.rule_bundle(1).await.unwrap()
    );
    assert!(target.node_rules().await.unwrap()["a"].applied.is_some());
    // Nodes' counts per minute are copied too.
    let (counts, _) = source.rule_counts(0, 3_600).await.unwrap();
    assert_eq!(counts.iter().map(|c| c.n).sum::<u64>(), 6);
    assert_eq!(target.rule_counts(0, 3_600).await.unwrap(), (counts, false));
    // Never over data: a second copy into the same store is refused.
    assert!(matches!(
        vigil_controller::copy::copy(&source, &target).await,
        Err(vigil_controller::copy::CopyError::NotEmpty(_))
    ));
    // A backup of the PostgreSQL store into a new SQLite file restores it.
    let backup = Db::new(false).await;
    let restored = Store::open(&backup.url()).await.unwrap();
    vigil_controller::copy::copy(&target, &restored)
        .await
        .unwrap();
    assert_eq!(
        restored.snapshot().await.unwrap(),
        source.snapshot().await.unwrap()
    );
    // A controller on the copy carries on: same head, the next number next.
    let c = Controller::start(&pg.url()).await;
    let mut node = Stream::open(&c, NODE_A, copied.head).await;
    assert!(
        matches!(node.next().await, Frame::Hello { head, snapshot: false, .. } if head == copied.head)
    );
    c.admin(
        "/v1/admin/sessions/revoke",
        serde_json::json!({"session": session(4).to_string()}),
    )
    .await;
    assert!(
        matches!(node.next_change().await, Frame::Changes { first, .. } if first == copied.head + 1)
    );
    // The disabled node is still disabled.
    assert_eq!(Stream::try_open(&c, NODE_B).await, 401);
    c.stop().await;
    for db in [sqlite, pg, backup] {
        db.drop_db().await;
    }
}

/// The controller's metrics, as `name{labels} value` lines.
async fn metrics(c: &Controller) -> String {
    let r = client().get(c.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_replica_hears_of_another_replicas_commit_by_notification_not_by_poll() {
    let db = Db::new(true).await;
    // Neither replica polls within the test's deadline: what arrives came
    // by NOTIFY.
    let one = Controller::start_with(&db.url(), "poll_ms = 600000").await;
    let two = Controller::start_with(&db.url(), "poll_ms = 600000").await;
    let mut s = Stream::open(&two, NODE_B, 0).await;
    assert!(matches!(s.next().await, Frame::Hello { head: 0, .. }));
    assert_eq!(s.next().await, Frame::SnapshotEnd { seq: 0 });
    let started = tokio::time::Instant::now();
    let r = one
        .admin(
            "/v1/admin/sessions/revoke",
            serde_json::json!({"session": session(9).to_string()}),
        )
        .await;
    assert_eq!(r.status(), 200);
    // Within DEADLINE (20 s) in all, heartbeats or not: far inside the
    // ten minute poll.
    let Frame::Changes { first: 1, changes } = tokio::time::timeout(DEADLINE, s.next_change())
        .await
        .expect("delivered by notification within the deadline")
    else {
        panic!()
    };
    assert!(started.elapsed() < DEADLINE);
    assert_eq!(
        changes,
        vec![Change::SessionRevoked {
            session: session(9),
            at: match changes[0] {
                Change::SessionRevoked { at, .. } => at,
                _ => 0,
            },
            vouched: true,
        }]
    );
    let text = metrics(&two).await;
    assert!(metric(&text, "vigil_controller_notifications_total").unwrap() >= 1.0);
    assert_eq!(metric(&text, "vigil_controller_head"), Some(1.0));
    one.stop().await;
    two.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn metrics_count_streams_and_deltas_and_name_nobody() {
    let db = Db::new(false).await;
    let c = Controller::start(&db.url()).await;
    let mut a = Stream::open(&c, NODE_A, 0).await;
    a.next().await;
    a.next().await;
    let hex = session(4).to_string();
    let r = c
        .admin(
            "/v1/admin/sessions/revoke",
            serde_json::json!({"session": hex}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(matches!(
        a.next_change().await,
        Frame::Changes { first: 1, .. }
    ));
    let text = metrics(&c).await;
    assert_eq!(metric(&text, "vigil_controller_subscribers"), Some(1.0));
    assert_eq!(metric(&text, "vigil_controller_head"), Some(1.0));
    assert_eq!(
        metric(
            &text,
            "vigil_controller_changes_sent_total{source=\"shared\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "vigil_controller_commit_seconds_count"),
        Some(1.0)
    );
    // No token, session, user or node name in it.
    for secret in [ADMIN, NODE_A, hex.as_str(), "\"a\"", "alice"] {
        assert!(!text.contains(secret), "{secret}");
    }
    c.stop().await;
}

/// A `vigil-controller run` process, killed (by its handle) when dropped.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_drop_hook_leaves_one_change_out_of_live_streams_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hash.key"), "11".repeat(32)).unwrap();
    std::fs::write(dir.path().join("admin.token"), ADMIN).unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let toml = format!(
        "listen = \"{addr}\"\nhash_key_file = \"hash.key\"\nadmin_token_file = \"admin.token\"\n\
         [[nodes]]\nname = \"a\"\ntoken_sha256 = \"{}\"\n",
        hex::encode(vigil_controller::config::token_hash(NODE_A)),
    );
    let config = dir.path().join("controller.toml");
    std::fs::write(&config, toml).unwrap();
    let log = std::fs::File::create(dir.path().join("controller.log")).unwrap();
    let _process = Process(
        std::process::Command::new(env!("CARGO_BIN_EXE_vigil-controller"))
            .args(["run", "--config"])
            .arg(&config)
            .env(vigil_controller::tail::DROP_SEQ_ENV, "2")
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let c = Controller {
        addr,
        _dir: tempfile::tempdir().unwrap(),
        stop: None,
        task: tokio::spawn(async {}),
    };
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while client().get(c.url("/healthz")).send().await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "controller did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logged = std::fs::read_to_string(dir.path().join("controller.log")).unwrap();
    assert!(logged.contains("TEST HOOK"), "{logged}");
    let mut live = Stream::open(&c, NODE_A, 0).await;
    live.next().await;
    assert_eq!(live.next().await, Frame::SnapshotEnd { seq: 0 });
    for n in 1..=3 {
        let r = c
            .admin(
                "/v1/admin/sessions/revoke",
                serde_json::json!({"session": session(n).to_string()}),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    // 1, then 3: the node sees the gap.
    assert!(matches!(
        live.next_change().await,
        Frame::Changes { first: 1, .. }
    ));
    assert!(matches!(
        live.next_change().await,
        Frame::Changes { first: 3, .. }
    ));
    // A stream catching up from the store leaves it out too.
    let mut behind = Stream::open(&c, NODE_A, 1).await;
    behind.next().await;
    assert!(matches!(
        behind.next_change().await,
        Frame::Changes { first: 3, .. }
    ));
    // The snapshot has it.
    let mut fresh = Stream::open(&c, NODE_A, 0).await;
    fresh.next().await;
    let Frame::Snapshot { seq: 3, changes } = fresh.next().await else {
        panic!()
    };
    assert_eq!(changes.len(), 3);
}

#[tokio::test]
async fn concurrent_admin_calls_each_get_the_number_of_their_own_change() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        // Committed together or not, each call is answered with its own
        // change's number.
        let calls = (0..40u8).map(|n| {
            let c = &c;
            async move {
                let r = c
                    .admin(
                        "/v1/admin/sessions/revoke",
                        serde_json::json!({"session": session(n).to_string()}),
                    )
                    .await;
                assert_eq!(r.status(), 200);
                let body: serde_json::Value =
                    serde_json::from_str(&r.text().await.unwrap()).unwrap();
                (n, body["seq"].as_u64().unwrap())
            }
        });
        let answers = futures_join_all(calls).await;
        let store = Store::open(&db.url()).await.unwrap();
        let log = store.since(0, 1_000).await.unwrap();
        assert_eq!(
            log.iter().map(|(s, _)| *s).collect::<Vec<u64>>(),
            (1..=40).collect::<Vec<u64>>()
        );
        for (n, seq) in answers {
            let (_, change) = &log[usize::try_from(seq - 1).unwrap()];
            assert!(
                matches!(change, Change::SessionRevoked { session: s, vouched: true, .. } if *s == session(n)),
                "{n} answered {seq}"
            );
        }
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// Runs every future concurrently on this task; their outputs in order.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in set.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

/// What a node learnt of `user`: a login (all six features) or a move of
/// network (the first three), with these feature values.
fn learned(id: &str, user: UserId, values: [u32; 6], login: bool, at: u64) -> NodeEvent {
    NodeEvent {
        id: id.to_owned(),
        kind: NodeEventKind::UserLearned {
            user,
            values,
            which: if login { 0x3f } else { 0x07 },
            new_session: login,
            trusted: false,
            at,
        },
    }
}

/// The engine's sum of `events`' observations: what the controller's
/// record of the user must be.
fn summed(events: &[&NodeEvent]) -> vigil_engine::ProfileRecord {
    let mut p: Option<vigil_engine::ProfileRecord> = None;
    for e in events {
        let NodeEventKind::UserLearned {
            user,
            values,
            which,
            new_session,
            trusted,
            at,
        } = e.kind
        else {
            panic!()
        };
        let learnt = vigil_engine::Learnt {
            user: vigil_engine::UserKey::from_u64(user.0).unwrap(),
            values,
            which,
            new_session,
            trust: trusted,
            at,
        };
        p.get_or_insert_with(|| vigil_engine::ProfileRecord::new(at))
            .observe(&learnt);
    }
    p.unwrap()
}

/// The population counters `events` reach, with how often, and the
/// totals per feature.
fn counted(events: &[&NodeEvent]) -> (Vec<u64>, Vec<(u32, u32)>) {
    let mut totals = vec![0u64; 6];
    let mut cells = std::collections::BTreeMap::new();
    for e in events {
        let NodeEventKind::UserLearned {
            user,
            values,
            which,
            new_session,
            at,
            ..
        } = e.kind
        else {
            panic!()
        };
        let learnt = vigil_engine::Learnt {
            user: vigil_engine::UserKey::from_u64(user.0).unwrap(),
            values,
            which,
            new_session,
            trust: false,
            at,
        };
        for (_, cell) in vigil_engine::population_cells(&learnt) {
            *cells.entry(cell).or_insert(0u32) += 1;
        }
        for (k, total) in totals.iter_mut().enumerate() {
            if which & (1 << k) != 0 && values[k] != 0 {
                *total += 1;
            }
        }
    }
    (totals, cells.into_iter().collect())
}

const HOME: [u32; 6] = [0x0a00_0001, 3320, 0x4445, 77, 0x1_0003, 0x104];
const HOTEL: [u32; 6] = [0x0b00_0002, 16509, 0x4445, 77, 0x1_0003, 0x104];

/// What nodes learn of a user becomes one history, streamed to every node
/// and in every snapshot: the sum of what each node posted, once per event
/// id, one change per user a batch touched; the population's counters
/// likewise, as the sums.
#[tokio::test]
async fn what_two_nodes_learn_of_a_user_is_one_history_for_every_node() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let t = now() - 100;
        let jo = UserId(0x0123_4567_89ab_cdef);
        let mut node = Stream::open(&c, NODE_B, 0).await;
        assert!(matches!(node.next().await, Frame::Hello { .. }));
        assert!(matches!(node.next().await, Frame::SnapshotEnd { seq: 0 }));
        // Two logins at home on node A, in one batch: one change for jo.
        let a1 = learned("a-1", jo, HOME, true, t);
        let a2 = learned("a-2", jo, HOME, true, t + 10);
        let r = post_events(&c, NODE_A, vec![a1.clone(), a2.clone()]).await;
        assert_eq!(r.status(), 200);
        let Frame::Changes { first: 1, changes } = node.next_change().await else {
            panic!()
        };
        let (totals, counters) = counted(&[&a1, &a2]);
        assert_eq!(
            changes,
            vec![
                Change::UserProfile {
                    user: jo,
                    record: vigil_fleet::Record(summed(&[&a1, &a2]).encode().to_vec()),
                },
                Change::Population { totals, counters },
            ]
        );
        // A move to a hotel network on node B, and A's batch again: the
        // sum of the three, the repeat counted once.
        let b1 = learned("b-1", jo, HOTEL, false, t + 20);
        assert_eq!(post_events(&c, NODE_B, vec![b1.clone()]).await.status(), 200);
        let r = post_events(&c, NODE_A, vec![a1.clone(), a2.clone()]).await;
        let ack: EventAck = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(ack.duplicates, 2);
        let Frame::Changes { first: 3, changes } = node.next_change().await else {
            panic!()
        };
        let all = summed(&[&a1, &a2, &b1]);
        assert_eq!(all.sessions(), 2);
        assert_eq!(all.count(0, HOME[0]), (3, 2));
        assert_eq!(all.count(0, HOTEL[0]), (3, 1));
        assert_eq!(
            changes[0],
            Change::UserProfile {
                user: jo,
                record: vigil_fleet::Record(all.encode().to_vec()),
            }
        );
        let (totals, _) = counted(&[&a1, &a2, &b1]);
        assert!(
            matches!(&changes[1], Change::Population { totals: t, counters } if *t == totals && counters.len() == 12),
            "{changes:?}"
        );
        // A node starting now gets the history and every counter reached.
        let mut fresh = Stream::open(&c, NODE_A, 0).await;
        fresh.next().await;
        let Frame::Snapshot { seq: 4, changes } = fresh.next().await else {
            panic!()
        };
        let (totals, counters) = counted(&[&a1, &a2, &b1]);
        assert_eq!(
            changes,
            vec![
                Change::UserProfile {
                    user: jo,
                    record: vigil_fleet::Record(all.encode().to_vec()),
                },
                Change::Population { totals, counters },
            ]
        );
        let store = Store::open(&db.url()).await.unwrap();
        assert_eq!(store.user_profile(jo).await.unwrap(), Some(all));
        // Older nodes: version 1 gets changes that do nothing in their
        // place (numbers kept), version 2 the changes themselves (it reads
        // them as unknown kinds and skips them), and neither has them in a
        // snapshot.
        let mut v1 = Stream::open_as(&c, NODE_A, 2, None).await;
        v1.next().await;
        assert_eq!(
            v1.next_change().await,
            Frame::Changes {
                first: 3,
                changes: vec![Change::nothing(), Change::nothing()]
            }
        );
        let mut v2 = Stream::open_as(&c, NODE_A, 0, Some(2)).await;
        assert!(matches!(v2.next().await, Frame::Hello { v: 2, .. }));
        assert_eq!(v2.next().await, Frame::SnapshotEnd { seq: 4 });
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// An erased user's history is deleted, and an observation of theirs made
/// before the erasure (queued on a node that was cut off) does not bring
/// it back; one made after it starts a new history. Observations are
/// sightings of the node's allowance, and one batch teaches at most
/// `MAX_LEARNT_PER_USER` of one user.
#[tokio::test]
async fn an_erased_history_stays_erased_and_a_node_teaches_within_its_allowance() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start_with(&db.url(), "node_sightings_per_minute = 25").await;
        let store = Store::open(&db.url()).await.unwrap();
        let key = vigil_engine::UserKey::for_name(
            &vigil_engine::SessionHashKey::from_bytes([0x11; 32]),
            "kim",
        );
        let kim = UserId(key.as_u64());
        let before = now() - 30;
        let a1 = learned("a-1", kim, HOME, true, before);
        post_events(&c, NODE_A, vec![a1]).await;
        assert!(store.user_profile(kim).await.unwrap().is_some());
        assert_eq!(
            c.admin("/v1/admin/users/erase", serde_json::json!({"user": "kim"}))
                .await
                .status(),
            200
        );
        assert_eq!(store.user_profile(kim).await.unwrap(), None);
        let head = store.bounds().await.unwrap().head;
        // Queued before the erasure, posted after: ignored.
        let late = learned("a-2", kim, HOTEL, true, before + 1);
        assert_eq!(post_events(&c, NODE_A, vec![late]).await.status(), 200);
        assert_eq!(store.user_profile(kim).await.unwrap(), None);
        assert_eq!(store.bounds().await.unwrap().head, head);
        let (_, state) = store.snapshot().await.unwrap();
        assert!(
            !state
                .iter()
                .any(|c| matches!(c, Change::UserProfile { user, .. } if *user == kim)),
            "{state:?}"
        );
        // A batch of 20 observations of one user: 16 taken.
        let lee = UserId(0x00ee);
        let t = now();
        let batch: Vec<NodeEvent> = (0..20)
            .map(|i| learned(&format!("b-{i}"), lee, HOME, true, t))
            .collect();
        assert_eq!(post_events(&c, NODE_B, batch).await.status(), 200);
        let held = store.user_profile(lee).await.unwrap().unwrap();
        assert_eq!(held.sessions(), 16);
        // Node B has 5 of its 25 sightings left this minute: 6 more wait.
        let batch: Vec<NodeEvent> = (20..26)
            .map(|i| learned(&format!("b-{i}"), lee, HOME, true, t))
            .collect();
        assert_eq!(post_events(&c, NODE_B, batch).await.status(), 429);
        // A feature mask naming no feature of the model is refused whole.
        let mut bad = learned("a-3", lee, HOME, true, t);
        if let NodeEventKind::UserLearned { which, .. } = &mut bad.kind {
            *which = 0x40;
        }
        assert_eq!(post_events(&c, NODE_A, vec![bad]).await.status(), 400);
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// A trust streamed from the controller is applied by every node, and
/// each posts back what its engine learnt, marked trusted: none of it is a
/// sighting of the user, so the fleet's history of them stays what it was
/// however many nodes echo it — and a node cannot make its own operator's
/// trust (or a thief's claim of it) the fleet's.
#[tokio::test]
async fn an_operators_trust_echoed_by_every_node_is_not_a_sighting() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let store = Store::open(&db.url()).await.unwrap();
        let ann = UserId(0x0a11);
        let t = now();
        post_events(&c, NODE_A, vec![learned("a-1", ann, HOME, true, t)]).await;
        let before = store.user_profile(ann).await.unwrap().unwrap();
        let head = store.bounds().await.unwrap().head;
        let echo = |id: &str| {
            let mut e = learned(id, ann, HOTEL, false, t + 1);
            if let NodeEventKind::UserLearned { trusted, .. } = &mut e.kind {
                *trusted = true;
            }
            e
        };
        assert_eq!(
            post_events(&c, NODE_A, vec![echo("a-2")]).await.status(),
            200
        );
        assert_eq!(
            post_events(&c, NODE_B, vec![echo("b-1")]).await.status(),
            200
        );
        assert_eq!(store.user_profile(ann).await.unwrap().unwrap(), before);
        assert_eq!(store.bounds().await.unwrap().head, head, "nothing streamed");
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

// === the admin API for security teams ===

/// The key of `name` under the test controller's hash key.
fn user_key(name: &str) -> UserId {
    UserId(
        vigil_engine::UserKey::for_name(
            &vigil_engine::SessionHashKey::from_bytes([0x11; 32]),
            name,
        )
        .as_u64(),
    )
}

/// An enforced detection of `user`'s `session` with reference `reference`.
fn caught(id: &str, reference: &str, session: SessionId, user: UserId, at: u64) -> NodeEvent {
    let mut event = detection(id, Some(user), true, at);
    if let NodeEventKind::Detection {
        reference: r,
        session: s,
        ..
    } = &mut event.kind
    {
        *r = reference.to_owned();
        *s = Some(session);
    }
    event
}

/// An admin call's status and JSON body.
async fn admin_call(
    c: &Controller,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = c.admin(path, body).await;
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_str(&r.text().await.unwrap()).unwrap(),
    )
}

/// The log's head as the admin API tells it.
async fn log_head(c: &Controller) -> u64 {
    c.admin_get("/v1/admin/log").await["head"].as_u64().unwrap()
}

fn keys_of(list: &serde_json::Value) -> Vec<String> {
    list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["key"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn users_are_listed_by_entity_risk_from_every_nodes_detections() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start_with(
            &db.url(),
            "detection_window_seconds = 600\nuser_names = \"clear\"",
        )
        .await;
        let t = now() - 10;
        let [carl, dora, eve, fay] = ["carl", "dora", "eve", "fay"].map(user_key);
        // Carl is caught on both nodes, Dora on one; a partner reports Eve
        // at 20 points; every session of Fay's is revoked.
        assert_eq!(
            post_events(
                &c,
                NODE_A,
                vec![
                    caught("a-1", "r-a-1", session(1), carl, t),
                    caught("a-2", "r-a-2", session(2), dora, t),
                ],
            )
            .await
            .status(),
            200
        );
        assert_eq!(
            post_events(
                &c,
                NODE_B,
                vec![caught("b-1", "r-b-1", session(1), carl, t + 1)]
            )
            .await
            .status(),
            200
        );
        let (status, _) = admin_call(
            &c,
            "/v1/admin/users/risk",
            serde_json::json!({"user": "eve", "points": 20, "ttl_seconds": 600}),
        )
        .await;
        assert_eq!(status, 200);
        let (status, _) = admin_call(
            &c,
            "/v1/admin/users/revoke",
            serde_json::json!({"user": "fay"}),
        )
        .await;
        assert_eq!(status, 200);

        let list = c.admin_get("/v1/admin/users").await;
        assert_eq!(
            keys_of(&list),
            [carl, eve, dora, fay].map(|u| u.to_string()).to_vec(),
            "{list}"
        );
        let users = list["users"].as_array().unwrap();
        // Two nodes caught Carl: two detections at the engine's 15 each.
        assert_eq!(users[0]["detections"], 2);
        assert_eq!(users[0]["detections_until"], t + 601);
        assert_eq!(users[0]["entity_risk"], 30);
        assert_eq!(users[0]["revoked_at"], serde_json::Value::Null);
        assert_eq!(users[1]["risk_points"], 20);
        assert_eq!(users[1]["entity_risk"], 20);
        assert_eq!(users[2]["entity_risk"], 15);
        assert_eq!(users[3]["entity_risk"], 0);
        assert!(users[3]["revoked_at"].as_u64().is_some());
        // Names are kept from admin calls only (user_names = "clear").
        assert_eq!(users[0]["name"], serde_json::Value::Null);
        assert_eq!(users[1]["name"], "eve");
        assert_eq!(users[3]["name"], "fay");
        assert_eq!(list["next_offset"], serde_json::Value::Null);

        // Paged.
        let first = c.admin_get("/v1/admin/users?limit=2").await;
        assert_eq!(keys_of(&first), [carl, eve].map(|u| u.to_string()).to_vec());
        assert_eq!(first["next_offset"], 2);
        let rest = c.admin_get("/v1/admin/users?limit=2&offset=2").await;
        assert_eq!(keys_of(&rest), [dora, fay].map(|u| u.to_string()).to_vec());
        assert_eq!(rest["next_offset"], serde_json::Value::Null);
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=2&limit=3",
            "offset=-1",
            "user=carl",
        ] {
            let r = client()
                .get(c.url(&format!("/v1/admin/users?{bad}")))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "{bad}");
            let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
            assert!(body["error"].is_string(), "{body}");
        }
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

#[tokio::test]
async fn a_users_detail_shows_their_sessions_devices_networks_and_detections() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let t = now() - 20;
        let gil = user_key("gil");
        let laptop = record(&engine(), "s-gil-1", FIREFOX, "81.2.69.10", Some("gil"), t);
        let phone = record(
            &engine(),
            "s-gil-2",
            CHROME,
            "31.94.1.10",
            Some("gil"),
            t + 1,
        );
        let laptop_key = SessionId(laptop.0[..16].try_into().unwrap());
        let (_, laptop_state) = vigil_engine::SessionState::decode(&laptop.0).unwrap();
        let (_, phone_state) = vigil_engine::SessionState::decode(&phone.0).unwrap();
        post_events(&c, NODE_A, vec![baseline("a-1", &laptop, false)]).await;
        post_events(&c, NODE_B, vec![baseline("b-1", &phone, false)]).await;
        // Caught on node A on the laptop session, and on a session whose
        // record the controller never had.
        post_events(
            &c,
            NODE_A,
            vec![
                caught("a-2", "r-gil-1", laptop_key, gil, t + 5),
                caught("a-3", "r-gil-2", session(7), gil, t + 6),
            ],
        )
        .await;
        let (status, detail) = admin_call(
            &c,
            "/v1/admin/users/detail",
            serde_json::json!({"user": "gil"}),
        )
        .await;
        assert_eq!(status, 200, "{detail}");
        assert_eq!(detail["key"], gil.to_string());
        // Names are not kept (user_names = "keyed", the default).
        assert!(detail.get("name").is_none(), "{detail}");
        let sessions = detail["sessions"].as_array().unwrap();
        assert_eq!(sessions.len(), 3, "{detail}");
        let by_key = |key: &str| {
            sessions
                .iter()
                .find(|s| s["session"] == key)
                .unwrap_or_else(|| panic!("{key} in {detail}"))
                .clone()
        };
        let s = by_key(&laptop_key.to_string());
        assert_eq!(s["node"], "a");
        assert_eq!(s["first_seen"], t);
        assert_eq!(s["last_seen"], t);
        assert_eq!(s["confirmed"], false);
        assert_eq!(s["revoked"], false);
        assert_eq!(s["device"], laptop_state.device().id.to_string());
        let s = by_key(&SessionId(phone.0[..16].try_into().unwrap()).to_string());
        assert_eq!(s["node"], "b");
        assert_eq!(s["device"], phone_state.device().id.to_string());
        let s = by_key(&session(7).to_string());
        assert_eq!(s["first_seen"], serde_json::Value::Null);
        assert_eq!(s["node"], serde_json::Value::Null);
        // Two devices, two networks, each on one session.
        let mut devices: Vec<&str> = detail["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["device"].as_str().unwrap())
            .collect();
        devices.sort_unstable();
        let mut expected = vec![
            laptop_state.device().id.to_string(),
            phone_state.device().id.to_string(),
        ];
        expected.sort();
        assert_eq!(devices, expected);
        assert_eq!(detail["networks"].as_array().unwrap().len(), 2, "{detail}");
        // Detections newest first, with their facts.
        let detections = detail["detections"].as_array().unwrap();
        assert_eq!(detections.len(), 2);
        assert_eq!(detections[0]["reference"], "r-gil-2");
        assert_eq!(detections[1]["reference"], "r-gil-1");
        assert_eq!(detections[1]["node"], "a");
        assert_eq!(detections[1]["session"], laptop_key.to_string());
        assert_eq!(detections[1]["route"], "app");
        assert_eq!(detections[1]["action"], "revoke");
        assert_eq!(detections[1]["score"], 85);
        assert_eq!(detections[1]["at"], t + 5);
        assert_eq!(detections[1]["false_positive"], false);
        assert_eq!(
            detections[1]["reasons"],
            serde_json::json!([
                {"code": "device_changed", "points": 45},
                {"code": "network_changed", "points": 40}
            ])
        );
        assert_eq!(detail["detections_in_force"]["count"], 1);
        // By key, as the list shows it; bounded.
        let (status, by_key) = admin_call(
            &c,
            "/v1/admin/users/detail",
            serde_json::json!({"key": gil.to_string(), "limit": 1}),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(by_key["sessions"].as_array().unwrap().len(), 1);
        assert_eq!(by_key["detections"].as_array().unwrap().len(), 1);
        assert_eq!(by_key["detections"][0]["reference"], "r-gil-2");
        for (body, code) in [
            (
                serde_json::json!({"user": "gil", "key": gil.to_string()}),
                "bad_user",
            ),
            (serde_json::json!({}), "bad_user"),
            (serde_json::json!({"key": "0000000000000000"}), "bad_user"),
            (serde_json::json!({"key": "GIL"}), "bad_user"),
            (
                serde_json::json!({"user": "gil", "limit": 1001}),
                "bad_limit",
            ),
            (serde_json::json!({"user": "gil", "limit": 0}), "bad_limit"),
            (serde_json::json!({"user": "gil", "extra": 1}), "bad_body"),
        ] {
            let (status, answer) = admin_call(&c, "/v1/admin/users/detail", body.clone()).await;
            assert_eq!(
                (status, answer["error"].as_str()),
                (400, Some(code)),
                "{body}"
            );
        }
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

#[tokio::test]
async fn the_admin_calls_for_security_teams_need_the_admin_token() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let calls = [
            ("GET", "/v1/admin/users", ""),
            ("POST", "/v1/admin/users/detail", r#"{"user": "ann"}"#),
            (
                "POST",
                "/v1/admin/users/trust-device",
                r#"{"user": "ann", "device": "00000000000000ab"}"#,
            ),
            (
                "POST",
                "/v1/admin/users/trust-network",
                r#"{"user": "ann", "asn": 5089}"#,
            ),
            (
                "POST",
                "/v1/admin/detections/false-positive",
                r#"{"reference": "r-1"}"#,
            ),
        ];
        for (method, path, body) in calls {
            for token in [None, Some("admin-token-012345678"), Some(NODE_A)] {
                let mut request = client()
                    .request(method.parse().unwrap(), c.url(path))
                    .header("content-type", "application/json")
                    .body(body);
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let r = request.send().await.unwrap();
                assert_eq!(r.status(), 401, "{method} {path} with {token:?}");
                let answer: serde_json::Value =
                    serde_json::from_str(&r.text().await.unwrap()).unwrap();
                assert_eq!(answer["error"], "unauthorized");
            }
        }
        // Nothing was done.
        assert_eq!(log_head(&c).await, 0);
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

#[tokio::test]
async fn a_device_or_network_trusted_at_the_controller_is_streamed_and_kept_in_snapshots() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let gus = user_key("gus");
        let mut node = Stream::open(&c, NODE_A, 0).await;
        node.next().await;
        assert!(matches!(node.next().await, Frame::SnapshotEnd { seq: 0 }));
        let calls = [
            serde_json::json!({"user": "gus", "device": "00AB0000000000cd"}),
            serde_json::json!({"user": "gus", "prefix": "81.2.69.10"}),
            serde_json::json!({"user": "gus", "country": "gb"}),
            serde_json::json!({"key": gus.to_string(), "asn": 5089}),
        ];
        for (i, body) in calls.iter().enumerate() {
            let path = if i == 0 {
                "/v1/admin/users/trust-device"
            } else {
                "/v1/admin/users/trust-network"
            };
            let (status, answer) = admin_call(&c, path, body.clone()).await;
            assert_eq!(status, 200, "{answer}");
            assert_eq!(answer["seq"], i + 1);
        }
        let expected = |change: &Change| match change {
            Change::DeviceTrusted { user, device, .. } => {
                *user == gus && *device == vigil_fleet::DeviceId(0x00ab_0000_0000_00cd)
            }
            Change::NetworkTrusted { user, network, .. } => {
                *user == gus
                    && [
                        vigil_fleet::TrustedNetwork::Prefix {
                            prefix: "81.2.69.0".parse().unwrap(),
                        },
                        vigil_fleet::TrustedNetwork::Country {
                            country: vigil_fleet::Country(*b"GB"),
                        },
                        vigil_fleet::TrustedNetwork::Asn { asn: 5089 },
                    ]
                    .contains(network)
            }
            _ => false,
        };
        let mut streamed = Vec::new();
        while streamed.len() < 4 {
            let Frame::Changes { changes, .. } = node.next_change().await else {
                panic!()
            };
            streamed.extend(changes);
        }
        assert!(streamed.iter().all(expected), "{streamed:?}");
        // A node that resyncs gets them in its snapshot.
        let mut fresh = Stream::open(&c, NODE_B, 0).await;
        fresh.next().await;
        let Frame::Snapshot { seq: 4, changes } = fresh.next().await else {
            panic!()
        };
        assert_eq!(changes, streamed);
        // A version 2 node cannot carry them out: left out of its snapshot.
        let mut old = Stream::open_as(&c, NODE_B, 0, Some(2)).await;
        assert!(matches!(old.next().await, Frame::Hello { v: 2, .. }));
        assert!(matches!(old.next().await, Frame::SnapshotEnd { seq: 4 }));
        // Bad calls, each refused with what is wrong, nothing streamed.
        for (path, body, status, code) in [
            (
                "/v1/admin/users/trust-device",
                serde_json::json!({"user": "gus", "device": "xyz"}),
                400,
                "bad_device",
            ),
            (
                "/v1/admin/users/trust-device",
                serde_json::json!({"user": "gus", "device": "+0ab0000000000cd"}),
                400,
                "bad_device",
            ),
            (
                "/v1/admin/users/trust-device",
                serde_json::json!({"device": "00ab0000000000cd"}),
                400,
                "bad_user",
            ),
            (
                "/v1/admin/users/trust-network",
                serde_json::json!({"user": "gus", "asn": 1, "country": "GB"}),
                400,
                "bad_network",
            ),
            (
                "/v1/admin/users/trust-network",
                serde_json::json!({"user": "gus", "asn": 0}),
                400,
                "bad_network",
            ),
            (
                "/v1/admin/users/trust-network",
                serde_json::json!({"user": "gus", "country": "GBR"}),
                400,
                "bad_network",
            ),
            (
                "/v1/admin/users/trust-network",
                serde_json::json!({"user": "gus", "prefix": "81.2.69"}),
                400,
                "bad_body",
            ),
            (
                "/v1/admin/users/trust-network",
                serde_json::json!({"user": "gus", "asn": 1, "note": "x".repeat(20_000)}),
                413,
                "body_too_large",
            ),
        ] {
            let (got, answer) = admin_call(&c, path, body).await;
            assert_eq!(
                (got, answer["error"].as_str()),
                (status, Some(code)),
                "{answer}"
            );
        }
        assert_eq!(log_head(&c).await, 4);
        // The user's detail lists them.
        let (_, detail) = admin_call(
            &c,
            "/v1/admin/users/detail",
            serde_json::json!({"user": "gus"}),
        )
        .await;
        assert_eq!(
            detail["trusted"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    let mut t = t.clone();
                    t.as_object_mut().unwrap().remove("at");
                    t
                })
                .collect::<Vec<_>>(),
            vec![
                serde_json::json!({"device": "00ab0000000000cd"}),
                serde_json::json!({"prefix": "81.2.69.0"}),
                serde_json::json!({"country": "GB"}),
                serde_json::json!({"asn": "5089"}),
            ]
        );
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

#[tokio::test]
async fn a_false_positive_by_reference_lowers_the_users_count_once() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start_with(&db.url(), "detection_window_seconds = 600").await;
        let t = now() - 10;
        let hal = user_key("hal");
        post_events(
            &c,
            NODE_A,
            vec![caught("a-1", "r-hal-a", session(1), hal, t)],
        )
        .await;
        post_events(
            &c,
            NODE_B,
            vec![caught("b-1", "r-hal-b", session(1), hal, t + 1)],
        )
        .await;
        let head = log_head(&c).await;
        assert_eq!(head, 2, "a count of 1, then of 2");
        let mut node = Stream::open(&c, NODE_B, head).await;
        node.next().await;

        let (status, answer) = admin_call(
            &c,
            "/v1/admin/detections/false-positive",
            serde_json::json!({"reference": "r-hal-a"}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["changed"], true);
        assert_eq!(answer["nodes"], serde_json::json!(["a"]));
        // Reported without facts (a node of an earlier build): nothing is
        // trusted for the user.
        assert_eq!(answer["trusted"], serde_json::json!([]));
        // Every node is told of the reference; the count falls to 1: a
        // clear (nodes take a count only when it is higher than theirs),
        // then the count without the false positive.
        let Frame::Changes { first: 3, changes } = node.next_change().await else {
            panic!()
        };
        assert_eq!(changes.len(), 3, "{changes:?}");
        assert!(
            matches!(&changes[0], Change::FalsePositive { reference, .. } if reference == "r-hal-a")
        );
        assert!(
            matches!(changes[1], Change::UserDetections { user, count: 0, .. } if user == hal),
            "{changes:?}"
        );
        assert_eq!(
            changes[2],
            Change::UserDetections {
                user: hal,
                count: 1,
                until: t + 601
            }
        );
        // Reported again: nothing changes, and the answer says so.
        let (status, again) = admin_call(
            &c,
            "/v1/admin/detections/false-positive",
            serde_json::json!({"reference": "r-hal-a"}),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(again["changed"], false);
        assert!(
            again["message"].as_str().unwrap().contains("already"),
            "{again}"
        );
        assert_eq!(log_head(&c).await, 5);
        // The other node's: the count falls to nothing.
        let (status, _) = admin_call(
            &c,
            "/v1/admin/detections/false-positive",
            serde_json::json!({"reference": "r-hal-b"}),
        )
        .await;
        assert_eq!(status, 200);
        let Frame::Changes { first: 6, changes } = node.next_change().await else {
            panic!()
        };
        assert!(
            matches!(
                &changes[..],
                [
                    Change::FalsePositive { .. },
                    Change::UserDetections { count: 0, .. }
                ]
            ),
            "{changes:?}"
        );
        // Hal is no longer listed as at risk; his detections say why.
        assert!(keys_of(&c.admin_get("/v1/admin/users").await).is_empty());
        let (_, detail) = admin_call(
            &c,
            "/v1/admin/users/detail",
            serde_json::json!({"user": "hal"}),
        )
        .await;
        for d in detail["detections"].as_array().unwrap() {
            assert_eq!(d["false_positive"], true, "{detail}");
        }
        // A reference nobody reported, and ones that are no reference.
        let (status, answer) = admin_call(
            &c,
            "/v1/admin/detections/false-positive",
            serde_json::json!({"reference": "r-nobody"}),
        )
        .await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (404, Some("unknown_reference"))
        );
        for reference in [String::new(), "r".repeat(65)] {
            let (status, answer) = admin_call(
                &c,
                "/v1/admin/detections/false-positive",
                serde_json::json!({ "reference": reference }),
            )
            .await;
            assert_eq!(
                (status, answer["error"].as_str()),
                (400, Some("bad_reference"))
            );
        }
        assert_eq!(log_head(&c).await, 7);
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// A false positive trusts, on every node, what the refusing node reported
/// of the refused request — its device, and its /24, ASN and country — for
/// the detection's user, and nothing else: no ASN when none was known. A detection without facts (a node of an earlier build) trusts
/// nothing (`a_false_positive_by_reference_lowers_the_users_count_once`).
#[tokio::test]
async fn a_false_positive_trusts_the_detections_own_device_and_network_for_its_user() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let t = now() - 10;
        let ivy = user_key("ivy");
        let facts = |asn: Option<u32>| RequestFacts {
            client: "192.0.2.77".parse().unwrap(),
            peer: "10.0.0.2".parse().unwrap(),
            chain: Vec::new(),
            chain_truncated: false,
            provider: None,
            ja4: None,
            device: DeviceId(0x00c0_ffee_0000_0042),
            browser: "chrome".to_owned(),
            major: 131,
            platform: "linux".to_owned(),
            country: Some(Country(*b"NL")),
            asn,
        };
        let mut with_facts = caught("a-1", "r-ivy-a", session(1), ivy, t);
        let mut no_asn = caught("a-2", "r-ivy-b", session(2), ivy, t);
        for (event, asn) in [(&mut with_facts, Some(64496)), (&mut no_asn, None)] {
            if let NodeEventKind::Detection { facts: f, .. } = &mut event.kind {
                *f = Some(Box::new(facts(asn)));
            }
        }
        let r = post_events(&c, NODE_A, vec![with_facts, no_asn]).await;
        assert_eq!(r.status(), 200);
        let head = log_head(&c).await;
        let mut node = Stream::open(&c, NODE_B, head).await;
        node.next().await;

        let (status, answer) = admin_call(
            &c,
            "/v1/admin/detections/false-positive",
            serde_json::json!({"reference": "r-ivy-a"}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let key = ivy.to_string();
        assert_eq!(
            answer["trusted"],
            serde_json::json!([
                {"key": key, "device": "00c0ffee00000042"},
                {"key": key, "network": {"type": "prefix", "prefix": "192.0.2.0"}},
                {"key": key, "network": {"type": "asn", "asn": 64496}},
                {"key": key, "network": {"type": "country", "country": "NL"}},
            ])
        );
        let Frame::Changes { changes, .. } = node.next_change().await else {
            panic!()
        };
        let trusted: Vec<&Change> = changes
            .iter()
            .filter(|c| {
                matches!(
                    c,
                    Change::DeviceTrusted { .. } | Change::NetworkTrusted { .. }
                )
            })
            .collect();
        assert_eq!(trusted.len(), 4, "{changes:?}");
        for change in trusted {
            match change {
                Change::DeviceTrusted { user, device, .. } => {
                    assert_eq!((*user, *device), (ivy, DeviceId(0x00c0_ffee_0000_0042)));
                }
                Change::NetworkTrusted { user, .. } => assert_eq!(*user, ivy),
                _ => unreachable!(),
            }
        }
        // Kept as the admin API's trusts are: in the user's detail.
        let (_, detail) = admin_call(
            &c,
            "/v1/admin/users/detail",
            serde_json::json!({"user": "ivy"}),
        )
        .await;
        assert_eq!(
            detail["trusted"].as_array().map(Vec::len),
            Some(4),
            "{detail}"
        );
        // The same facts without an ASN (not known): no ASN is trusted.
        let (status, answer) = admin_call(
            &c,
            "/v1/admin/detections/false-positive",
            serde_json::json!({"reference": "r-ivy-b"}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let networks: Vec<&str> = answer["trusted"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["network"]["type"].as_str())
            .collect();
        assert_eq!(networks, ["prefix", "country"], "{answer}");
        // The attack: node A refused Mallory on her own account (reference
        // r-mal on her refusal page); a hostile node posts a detection
        // under the same reference naming Ivy and Mallory's own device.
        // Marking r-mal a false positive must not trust Mallory's device
        // for Ivy: rows that disagree trust nothing.
        let mallory = user_key("mallory");
        let mut hers = caught("a-3", "r-mal", session(3), mallory, t);
        let mut forged = caught("b-1", "r-mal", session(4), ivy, t);
        for event in [&mut hers, &mut forged] {
            if let NodeEventKind::Detection { facts: f, .. } = &mut event.kind {
                let mut own = facts(Some(64511));
                own.device = DeviceId(0x0bad_0bad_0bad_0bad);
                *f = Some(Box::new(own));
            }
        }
        assert_eq!(post_events(&c, NODE_A, vec![hers]).await.status(), 200);
        assert_eq!(post_events(&c, NODE_B, vec![forged]).await.status(), 200);
        let (status, answer) = admin_call(
            &c,
            "/v1/admin/detections/false-positive",
            serde_json::json!({"reference": "r-mal"}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["trusted"], serde_json::json!([]), "{answer}");
        let (_, detail) = admin_call(
            &c,
            "/v1/admin/users/detail",
            serde_json::json!({"user": "ivy"}),
        )
        .await;
        assert_eq!(
            detail["trusted"].as_array().map(Vec::len),
            Some(4),
            "{detail}"
        );
        assert!(!detail.to_string().contains("0bad0bad0bad0bad"), "{detail}");
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

#[tokio::test]
async fn erasing_a_user_deletes_their_name_trust_and_false_positive_marks() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let clear = "user_names = \"clear\"";
        let c = Controller::start_with(&db.url(), clear).await;
        let ivy = user_key("ivy");
        let hex = ivy.to_string();
        post_events(
            &c,
            NODE_A,
            vec![caught("a-1", "r-ivy", session(3), ivy, now() - 5)],
        )
        .await;
        for (path, body) in [
            (
                "/v1/admin/users/trust-device",
                serde_json::json!({"user": "ivy", "device": "00000000000000ab"}),
            ),
            (
                "/v1/admin/users/trust-network",
                serde_json::json!({"user": "ivy", "asn": 5089}),
            ),
            (
                "/v1/admin/detections/false-positive",
                serde_json::json!({"reference": "r-ivy"}),
            ),
        ] {
            assert_eq!(admin_call(&c, path, body).await.0, 200, "{path}");
        }
        let by_key = serde_json::json!({"key": hex});
        let (_, before) = admin_call(&c, "/v1/admin/users/detail", by_key.clone()).await;
        assert_eq!(before["name"], "ivy");
        assert_eq!(before["trusted"].as_array().unwrap().len(), 2);
        assert_eq!(before["detections"][0]["false_positive"], true);

        let (status, _) = admin_call(
            &c,
            "/v1/admin/users/erase",
            serde_json::json!({"user": "ivy"}),
        )
        .await;
        assert_eq!(status, 200);
        let (_, after) = admin_call(&c, "/v1/admin/users/detail", by_key).await;
        assert_eq!(after["name"], serde_json::Value::Null, "{after}");
        assert_eq!(after["trusted"], serde_json::json!([]));
        assert_eq!(after["detections"], serde_json::json!([]));
        assert_eq!(after["sessions"], serde_json::json!([]));
        // The false positive's mark went with the detection.
        let (status, _) = admin_call(
            &c,
            "/v1/admin/detections/false-positive",
            serde_json::json!({"reference": "r-ivy"}),
        )
        .await;
        assert_eq!(status, 404);
        // Neither the snapshot nor the log names her.
        let store = Store::open(&db.url()).await.unwrap();
        let (_, state) = store.snapshot().await.unwrap();
        assert!(!serde_json::to_string(&state).unwrap().contains(&hex));
        let log = store.since(0, 100).await.unwrap();
        for (seq, change) in &log[..log.len() - 1] {
            let body = serde_json::to_string(change).unwrap();
            assert!(!body.contains(&hex), "change {seq}: {body}");
        }
        c.stop().await;

        // With user_names = "keyed", names are neither kept nor shown, and
        // those kept before are deleted at start.
        let c = Controller::start_with(&db.url(), clear).await;
        let jo = user_key("jo").to_string();
        let trust = serde_json::json!({"user": "jo", "asn": 1});
        assert_eq!(
            admin_call(&c, "/v1/admin/users/trust-network", trust.clone())
                .await
                .0,
            200
        );
        c.stop().await;
        let c = Controller::start(&db.url()).await;
        let (_, detail) =
            admin_call(&c, "/v1/admin/users/detail", serde_json::json!({"key": jo})).await;
        assert!(detail.get("name").is_none(), "{detail}");
        c.stop().await;
        let c = Controller::start_with(&db.url(), clear).await;
        let (_, detail) =
            admin_call(&c, "/v1/admin/users/detail", serde_json::json!({"key": jo})).await;
        assert_eq!(
            detail["name"],
            serde_json::Value::Null,
            "deleted at the keyed start"
        );
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

// === rule bundles ===

const BLOCK_ADMIN: &str =
    "[[rule]]\nname = \"block-admin\"\npath_prefixes = [\"/admin\"]\naction = \"block\"\n";
const BLOCK_OPS: &str =
    "[[rule]]\nname = \"block-ops\"\npath_prefixes = [\"/ops\"]\naction = \"block\"\n";

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

async fn publish(c: &Controller, text: &str) -> reqwest::Response {
    client()
        .post(c.url("/v1/admin/rules"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/toml")
        .body(text.to_owned())
        .send()
        .await
        .unwrap()
}

fn rules_report(id: &str, version: u64, text: &str, applied: bool) -> NodeEvent {
    NodeEvent {
        id: id.to_owned(),
        kind: NodeEventKind::RulesBundle {
            version,
            sha256: sha256_hex(text),
            applied,
            problems: if applied {
                Vec::new()
            } else {
                vec!["bundle.toml:4: rule \"block-ops\": route \"ops\" does not exist".to_owned()]
            },
            at: now(),
        },
    }
}

/// A bundle the controller accepts is stored as the next version and
/// streamed to every node as one change carrying its text; a rollback
/// publishes the earlier version again (a new change, the same version);
/// a node starting now gets the bundle in force, alone, in its snapshot;
/// and what each node reports of it is shown per node.
#[tokio::test]
async fn a_published_rule_bundle_is_streamed_versioned_and_rolled_back() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let mut a = Stream::open(&c, NODE_A, 0).await;
        a.next().await;
        assert_eq!(a.next().await, Frame::SnapshotEnd { seq: 0 });

        let r = publish(&c, BLOCK_ADMIN).await;
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"version": 1, "sha256": sha256_hex(BLOCK_ADMIN), "seq": 1})
        );
        let Frame::Changes { first: 1, changes } = a.next_change().await else {
            panic!()
        };
        let [Change::RulesBundle {
            version: 1,
            sha256,
            text,
            ..
        }] = &changes[..]
        else {
            panic!("{changes:?}")
        };
        assert_eq!((sha256.as_str(), text.as_str()), (sha256_hex(BLOCK_ADMIN).as_str(), BLOCK_ADMIN));

        // A revocation and the second version: each its own frame.
        c.admin(
            "/v1/admin/sessions/revoke",
            serde_json::json!({"session": session(1).to_string()}),
        )
        .await;
        let r = publish(&c, BLOCK_OPS).await;
        assert_eq!(r.status(), 200);
        assert!(matches!(a.next_change().await, Frame::Changes { first: 2, .. }));
        let Frame::Changes { first: 3, changes } = a.next_change().await else {
            panic!()
        };
        assert!(matches!(changes[..], [Change::RulesBundle { version: 2, .. }]));

        // Node A applied 1, then rejected 2 (and keeps 1); node B applied 2.
        for (token, events) in [
            (
                NODE_A,
                vec![
                    rules_report("a-1", 1, BLOCK_ADMIN, true),
                    rules_report("a-2", 2, BLOCK_OPS, false),
                ],
            ),
            (NODE_B, vec![rules_report("b-1", 2, BLOCK_OPS, true)]),
        ] {
            assert_eq!(post_events(&c, token, events).await.status(), 200);
        }
        // A report is bounded like every event: a hash that is not one is
        // refused whole.
        let mut bad = rules_report("b-9", 2, BLOCK_OPS, false);
        if let NodeEventKind::RulesBundle { sha256, .. } = &mut bad.kind {
            *sha256 = "XYZ".to_owned();
        }
        assert_eq!(post_events(&c, NODE_B, vec![bad]).await.status(), 400);
        // A report of rules never published changes nothing.
        assert_eq!(
            post_events(&c, NODE_B, vec![rules_report("b-2", 7, "forged", true)])
                .await
                .status(),
            200
        );
        let nodes = c.admin_get("/v1/admin/nodes").await;
        let a_status = &nodes["nodes"][0];
        assert_eq!(a_status["node"], "a");
        assert_eq!(a_status["rules"]["version"], 1);
        assert_eq!(a_status["rules"]["sha256"], sha256_hex(BLOCK_ADMIN));
        assert_eq!(a_status["rules_failure"]["version"], 2);
        assert_eq!(
            a_status["rules_failure"]["problems"],
            serde_json::json!(["bundle.toml:4: rule \"block-ops\": route \"ops\" does not exist"])
        );
        let b_status = &nodes["nodes"][1];
        assert_eq!(b_status["rules"]["version"], 2);
        assert_eq!(b_status["rules_failure"], serde_json::Value::Null);

        // Roll back to 1: a new change, version 1 again.
        let r = c
            .admin("/v1/admin/rules/rollback", serde_json::json!({"version": 1}))
            .await;
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"version": 1, "sha256": sha256_hex(BLOCK_ADMIN), "seq": 4})
        );
        let Frame::Changes { first: 4, changes } = a.next_change().await else {
            panic!()
        };
        assert!(
            matches!(&changes[..], [Change::RulesBundle { version: 1, text, .. }] if text == BLOCK_ADMIN)
        );
        let r = c
            .admin("/v1/admin/rules/rollback", serde_json::json!({"version": 9}))
            .await;
        assert_eq!(r.status(), 404);
        let list = c.admin_get("/v1/admin/rules").await;
        assert_eq!(list["in_force"], 1);
        assert_eq!(list["bundles"].as_array().unwrap().len(), 2);
        assert_eq!(list["bundles"][0]["in_force"], true);
        assert_eq!(list["bundles"][1]["in_force"], false);
        let two = c.admin_get("/v1/admin/rules/2").await;
        assert_eq!(two["text"], BLOCK_OPS);
        assert_eq!(two["sha256"], sha256_hex(BLOCK_OPS));

        // A node starting now: the revocation, then the bundle in force
        // alone in a chunk of its own.
        let mut late = Stream::open(&c, NODE_B, 0).await;
        late.next().await;
        let Frame::Snapshot { seq: 4, changes } = late.next().await else {
            panic!()
        };
        assert!(matches!(changes[..], [Change::SessionRevoked { .. }]));
        let Frame::Snapshot { seq: 4, changes } = late.next().await else {
            panic!()
        };
        assert!(
            matches!(&changes[..], [Change::RulesBundle { version: 1, text, .. }] if text == BLOCK_ADMIN)
        );
        assert_eq!(late.next().await, Frame::SnapshotEnd { seq: 4 });
        // A version 2 node has no use for it: a change that does nothing
        // in its place, and none in its snapshot.
        let mut old = Stream::open_as(&c, NODE_B, 0, Some(2)).await;
        old.next().await;
        let Frame::Snapshot { changes, .. } = old.next().await else {
            panic!()
        };
        assert_eq!(changes.len(), 1);
        assert_eq!(old.next().await, Frame::SnapshotEnd { seq: 4 });
        let mut old = Stream::open_as(&c, NODE_B, 2, Some(2)).await;
        old.next().await;
        let Frame::Changes { first: 3, changes } = old.next_change().await else {
            panic!()
        };
        assert_eq!(changes, vec![Change::nothing(), Change::nothing()]);
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// A bundle that does not compile is refused with every problem, as
/// `vigil-proxy check` words them, and nothing is stored or streamed; so
/// is one too large, or not text.
#[tokio::test]
async fn an_invalid_rule_bundle_is_refused_with_every_problem_and_nothing_is_stored() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let bad = "[[rule]]\nname = \"one\"\ncondition = 'risk.levle == \"high\"'\naction = \"block\"\n\n\
                   [[rule]]\nname = \"two\"\npath_prefixes = [\"/x\"]\naction = \"explode\"\n";
        let r = publish(&c, bad).await;
        assert_eq!(r.status(), 400);
        let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(body["error"], "invalid_rules");
        let problems = body["problems"].as_array().unwrap();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0]["rule"], "one");
        assert_eq!(problems[0]["line"], 3);
        assert!(
            problems[0]["text"]
                .as_str()
                .unwrap()
                .starts_with("bundle.toml:3:"),
            "{problems:?}"
        );
        assert!(problems[0]["message"].as_str().unwrap().contains("risk.levle"));
        assert_eq!(problems[1]["rule"], "two");
        assert_eq!(problems[1]["line"], 9);
        // Too large, and not text.
        let r = publish(&c, &"#".repeat(vigil_fleet::MAX_RULES_BYTES + 1)).await;
        assert_eq!(r.status(), 413);
        let r = client()
            .post(c.url("/v1/admin/rules"))
            .bearer_auth(ADMIN)
            .body(vec![0xff_u8, 0xfe])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let list = c.admin_get("/v1/admin/rules").await;
        assert_eq!(list, serde_json::json!({"in_force": null, "bundles": []}));
        assert_eq!(c.admin_get("/v1/admin/log").await["head"], 0);
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// Only the admin publishes, lists and rolls back rules: no token, a
/// wrong one and a node's are refused before the body is read.
#[tokio::test]
async fn rule_bundles_are_the_admins_alone() {
    let db = Db::new(false).await;
    let c = Controller::start(&db.url()).await;
    for (method, path) in [
        ("POST", "/v1/admin/rules"),
        ("GET", "/v1/admin/rules"),
        ("GET", "/v1/admin/rules/1"),
        ("POST", "/v1/admin/rules/rollback"),
    ] {
        for token in [None, Some("wrong-token-0123456789"), Some(NODE_A)] {
            let mut req = client().request(method.parse().unwrap(), c.url(path));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let r = req.body(BLOCK_ADMIN).send().await.unwrap();
            assert_eq!(r.status(), 401, "{method} {path} with {token:?}");
            let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
            assert_eq!(body["error"], "unauthorized");
        }
    }
    assert_eq!(
        c.admin_get("/v1/admin/rules").await,
        serde_json::json!({"in_force": null, "bundles": []})
    );
    c.stop().await;
    db.drop_db().await;
}

/// The signing keys' public halves are served as a JWK Set a peer verifies
/// with: every configured key, no private member.
#[tokio::test]
async fn the_signing_keys_are_published_as_a_jwk_set() {
    let db = Db::new(false).await;
    let c = Controller::start(&db.url()).await;
    let r = client()
        .get(c.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/jwk-set+json"
    );
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(set.keys.len(), 1);
    let jwk = &set.keys[0];
    assert_eq!(
        jwk.common.public_key_use,
        Some(jsonwebtoken::jwk::PublicKeyUse::Signature)
    );
    let published = serde_json::to_value(jwk).unwrap();
    for private in ["d", "p", "q", "dp", "dq", "qi"] {
        assert!(published.get(private).is_none(), "{private} is published");
    }
    c.stop().await;
    db.drop_db().await;
}

fn binding_event(id: &str, r: vigil_fleet::BindingRecord) -> NodeEvent {
    NodeEvent {
        id: id.to_owned(),
        kind: NodeEventKind::SessionBinding(r),
    }
}

fn binding(session_n: u8, generation: u32, presented_at: u64) -> vigil_fleet::BindingRecord {
    let at = u32::try_from(presented_at).unwrap();
    vigil_fleet::BindingRecord {
        session: session(session_n),
        generation,
        nonce: generation * 11,
        previous_nonce: (generation - 1) * 11,
        issued_at: at - 1,
        presented_at: at,
        compromised: false,
    }
}

/// The attack on the fleet's bindings: records arriving late, twice, out
/// of order or from the future, and a mark a later record would clear.
/// The controller keeps one row per session, the join of what nodes
/// posted: a generation is never lowered, a compromised mark never
/// undone, only a record that changes the row is streamed, a record from
/// the future is brought back to now, and neither a node of an older
/// version nor a controller of one gets what it cannot read.
#[tokio::test]
async fn the_fleets_binding_of_a_session_only_advances_and_its_mark_sticks() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let t = now() - 100;
        let mut b = Stream::open(&c, NODE_B, 0).await;
        assert!(matches!(b.next().await, Frame::Hello { v: 5, .. }));
        assert!(matches!(b.next().await, Frame::SnapshotEnd { seq: 0 }));
        let expect = async |b: &mut Stream, want: vigil_fleet::BindingRecord| {
            let Frame::Changes { changes, .. } = b.next_change().await else {
                panic!()
            };
            assert_eq!(changes, vec![Change::SessionBinding(want)]);
        };

        // Node A: the owner presented generation 2.
        let g2 = binding(1, 2, t);
        assert_eq!(
            ack_of(&c, NODE_A, vec![binding_event("a-1", g2)])
                .await
                .accepted,
            1
        );
        expect(&mut b, g2).await;
        // Late and lower, the same again, out of order: nothing changes.
        let ack = ack_of(
            &c,
            NODE_B,
            vec![
                binding_event("b-1", binding(1, 1, t - 50)),
                binding_event("b-2", g2),
                binding_event("b-2", g2),
            ],
        )
        .await;
        assert_eq!((ack.accepted, ack.duplicates, ack.refused), (3, 0, 0));
        // The mark, then a later generation without it: the mark stays.
        let mut marked = g2;
        marked.compromised = true;
        ack_of(&c, NODE_A, vec![binding_event("a-2", marked)]).await;
        expect(&mut b, marked).await;
        let g3 = binding(1, 3, t + 10);
        ack_of(&c, NODE_B, vec![binding_event("b-3", g3)]).await;
        expect(
            &mut b,
            vigil_fleet::BindingRecord {
                compromised: true,
                ..g3
            },
        )
        .await;
        // Of one generation, a presented issuance wins over one that
        // was not, whichever came first; a time from the future is now.
        let far = now() + 100_000;
        let mut other = binding(2, 1, far);
        other.issued_at = u32::try_from(far).unwrap();
        ack_of(&c, NODE_A, vec![binding_event("a-3", other)]).await;
        let Frame::Changes { changes, .. } = b.next_change().await else {
            panic!()
        };
        let [Change::SessionBinding(taken)] = changes.as_slice() else {
            panic!("{changes:?}")
        };
        assert!(u64::from(taken.presented_at) <= now());
        assert!(u64::from(taken.issued_at) <= now());

        // What the store holds, and what a node starting afresh gets.
        let store = Store::open(&db.url()).await.unwrap();
        assert_eq!(
            store
                .binding(session(1))
                .await
                .unwrap()
                .map(|r| (r.generation, r.compromised)),
            Some((3, true))
        );
        // No ids kept for records: a join taken twice changes nothing.
        let ack = ack_of(&c, NODE_A, vec![binding_event("a-1", g2)]).await;
        assert_eq!((ack.accepted, ack.duplicates), (1, 0));
        let mut fresh = Stream::open(&c, NODE_A, 0).await;
        fresh.next().await;
        let Frame::Snapshot { changes, .. } = fresh.next().await else {
            panic!()
        };
        assert!(
            changes.contains(&Change::SessionBinding(vigil_fleet::BindingRecord {
                compromised: true,
                ..g3
            }))
        );
        // A version 4 node is streamed none, not even in its snapshot.
        let mut old = Stream::open_as(&c, NODE_A, 0, Some(4)).await;
        assert!(matches!(old.next().await, Frame::Hello { v: 4, .. }));
        match old.next().await {
            Frame::Snapshot { changes, .. } => assert!(
                !changes
                    .iter()
                    .any(|c| matches!(c, Change::SessionBinding(_))),
                "{changes:?}"
            ),
            Frame::SnapshotEnd { .. } => {}
            other => panic!("{other:?}"),
        }
        // A batch of version 4 naming a binding: refused whole.
        let r = client()
            .post(c.url("/v1/events"))
            .bearer_auth(NODE_A)
            .header("content-type", "application/json")
            .body(
                serde_json::to_string(&EventBatch {
                    v: 4,
                    events: vec![binding_event("a-9", g3)],
                })
                .unwrap(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        // Review finding 1: a record no node writes (the empty
        // generation-0 mark a hash-key rotation once made) is refused
        // alone; the other sessions' records of its batch are taken.
        let mut zero = g3;
        zero.generation = 0;
        zero.nonce = 0;
        let ack = ack_of(
            &c,
            NODE_A,
            vec![
                binding_event("a-10", zero),
                binding_event("a-11", binding(3, 1, t)),
            ],
        )
        .await;
        assert_eq!((ack.accepted, ack.refused), (2, 1));
        assert_eq!(
            store
                .binding(session(3))
                .await
                .unwrap()
                .map(|r| r.generation),
            Some(1)
        );
        assert_eq!(
            store
                .binding(session(1))
                .await
                .unwrap()
                .map(|r| r.generation),
            Some(3)
        );
        // Of one generation a presented issuance wins over one only
        // issued, whichever came first.
        let presented = binding(4, 1, t);
        let mut issued = presented;
        issued.nonce = presented.nonce + 1;
        issued.issued_at = presented.issued_at + 5;
        issued.presented_at = 0;
        ack_of(&c, NODE_A, vec![binding_event("a-12", presented)]).await;
        ack_of(&c, NODE_B, vec![binding_event("b-12", issued)]).await;
        assert_eq!(store.binding(session(4)).await.unwrap(), Some(presented));
        let mut issued_first = binding(5, 1, t);
        issued_first.presented_at = 0;
        ack_of(&c, NODE_B, vec![binding_event("b-13", issued_first)]).await;
        let mut presented_later = issued_first;
        presented_later.nonce += 1;
        presented_later.presented_at = issued_first.issued_at - 3;
        presented_later.issued_at = issued_first.issued_at - 4;
        ack_of(&c, NODE_A, vec![binding_event("a-13", presented_later)]).await;
        assert_eq!(
            store.binding(session(5)).await.unwrap(),
            Some(presented_later)
        );
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// Review finding 2, the attack: a thief clones his own sessions by the
/// hundred so that the node marks them, to spend the node's allowance and
/// have a victim's mark dropped, or the node's revocations held back. A
/// mark never refuses a batch (no 429), never holds back revocations
/// (their allowance is apart), and one beyond the marks of the minute is
/// not dropped: its advance is taken, its id answered in `retry`, and,
/// posted again, it is taken once the minute allows.
#[tokio::test]
async fn marks_beyond_the_nodes_allowance_wait_and_hold_back_no_revocation() {
    let db = Db::new(false).await;
    let c = Controller::start_with(&db.url(), "node_revocations_per_minute = 2").await;
    let t = now() - 10;
    let mark = |n: u8| {
        let mut r = binding(n, 1, t);
        r.compromised = true;
        r
    };
    // The thief's two own sessions spend the marks of the minute; the
    // victim's (session 30) is the third.
    let ack = ack_of(
        &c,
        NODE_A,
        vec![
            binding_event("a-b1", mark(20)),
            binding_event("a-b2", mark(21)),
            binding_event("a-b3", mark(30)),
        ],
    )
    .await;
    assert_eq!((ack.accepted, ack.refused), (3, 0));
    assert_eq!(ack.retry, vec!["a-b3".to_owned()]);
    let store = Store::open(&db.url()).await.unwrap();
    let victim = store.binding(session(30)).await.unwrap().unwrap();
    assert_eq!((victim.generation, victim.compromised), (1, false));
    // More marks: still taken (200), still waiting.
    let ack = ack_of(&c, NODE_A, vec![binding_event("a-b4", mark(30))]).await;
    assert_eq!(ack.retry, vec!["a-b4".to_owned()]);
    // The node's revocations go through, on their own allowance.
    let reference = "r40";
    let ack = ack_of(
        &c,
        NODE_A,
        vec![
            evidence("d40", reference, Some(session(40)), None, "revoke", true),
            revocation("v40", session(40), None, Some(reference)),
        ],
    )
    .await;
    assert_eq!((ack.accepted, ack.refused), (2, 0));
    assert_eq!(revocations_in_log(&store).await.len(), 1);
    // The node posts the waiting mark again until it is taken: within the
    // next minute.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut n = 0;
    loop {
        n += 1;
        let ack = ack_of(
            &c,
            NODE_A,
            vec![binding_event(&format!("a-r{n}"), mark(30))],
        )
        .await;
        if ack.retry.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the mark was never taken"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        store
            .binding(session(30))
            .await
            .unwrap()
            .map(|r| r.compromised),
        Some(true)
    );
    c.stop().await;
}
