//! The controller end to end over real HTTP, on both stores: SQLite in a
//! temporary directory, and the PostgreSQL server on 127.0.0.1:5432 (a
//! fresh database per test, dropped after).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use vigil_controller::store::Store;
use vigil_fleet::{
    Change, EventAck, EventBatch, Frame, NodeEvent, NodeEventKind, SessionId, UserId, VERSION,
    read_frame,
};

const ADMIN: &str = "admin-token-0123456789";
const NODE_A: &str = "node-a-token-0123456789";
const NODE_B: &str = "node-b-token-0123456789";
const DEADLINE: Duration = Duration::from_secs(20);

/// A store to test on: SQLite, or a fresh PostgreSQL database.
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres { name: String },
}

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

impl Db {
    async fn new(postgres: bool) -> Db {
        if !postgres {
            return Db::Sqlite(tempfile::tempdir().unwrap());
        }
        sqlx::any::install_default_drivers();
        let name = format!("vigil_test_{:016x}", rand_u64());
        let admin = sqlx::AnyPool::connect(PG_ADMIN)
            .await
            .expect("PostgreSQL on 127.0.0.1:5432");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .unwrap();
        Db::Postgres { name }
    }

    fn url(&self) -> String {
        match self {
            Db::Sqlite(dir) => format!("sqlite://{}", dir.path().join("controller.db").display()),
            Db::Postgres { name } => format!("postgres://postgres@127.0.0.1:5432/{name}"),
        }
    }

    async fn drop_db(self) {
        if let Db::Postgres { name } = self {
            let admin = sqlx::AnyPool::connect(PG_ADMIN).await.unwrap();
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&admin)
            .await;
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

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
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let toml = format!(
            "{extra}\nlisten = \"{addr}\"\nstore = {store:?}\nhash_key_file = \"hash.key\"\nadmin_token_file = \"admin.token\"\n\
             [[nodes]]\nname = \"a\"\ntoken_sha256 = \"{}\"\n[[nodes]]\nname = \"b\"\ntoken_sha256 = \"{}\"\n",
            hash(NODE_A),
            hash(NODE_B)
        );
        let path = dir.path().join("controller.toml");
        std::fs::write(&path, toml).unwrap();
        let config = vigil_controller::Config::load(&path).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            vigil_controller::run(config, async {
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

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Open streams keep the server; the task is ended either way.
        self.task.abort();
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().unwrap()
}

/// A node's view of the stream: frames as they come.
struct Stream {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Stream {
    async fn open(c: &Controller, token: &str, since: u64) -> Stream {
        let response = client()
            .get(c.url(&format!("/v1/sync?since={since}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
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

async fn both(test: impl AsyncFn(bool)) {
    test(false).await;
    test(true).await;
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
        let batch = EventBatch {
            v: VERSION,
            events: vec![NodeEvent {
                id: "boot1-1".to_owned(),
                kind: NodeEventKind::SessionRevoked {
                    session: session(3),
                    user: Some(UserId(5)),
                    reference: Some("abcd".to_owned()),
                    at: 100,
                },
            }],
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
                accepted: 1,
                duplicates: 0
            }
        );
        assert_eq!(
            post().await,
            EventAck {
                accepted: 0,
                duplicates: 1
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
            // The node named the session's user: it vouches for it.
            vec![Change::SessionRevoked {
                session: session(3),
                at: 100,
                vouched: true,
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
    let c = Controller::start_with(&db.url(), "node_events_per_minute = 3").await;
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
