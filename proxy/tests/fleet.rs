//! The edge side of the fleet controller, against a scripted fake
//! controller on loopback: revocations streamed down are enforced, a gap in
//! the stream is repaired by a full snapshot, revocations this node decides
//! are posted up (again, with the same ids, until taken), and a node
//! restarted while the controller is away still enforces what it had
//! (fail-static).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use common::{Browser, Config, Origin, Proxy, Route, closed_port};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use vigil_engine::{Engine, EngineConfig, SessionHashKey};
use vigil_fleet::{
    Change, EventAck, EventBatch, Frame, NodeEventKind, SessionId, VERSION, VERSION_HEADER,
    write_frame,
};

/// The node's token, as the controller knows it.
const TOKEN: &str = "node-7-token";
/// Longest wait for anything the node does on its own.
const DEADLINE: Duration = Duration::from_secs(30);
const APPLIED: &str = "vigil_proxy_fleet_applied_sequence";

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A controller that serves `/v1/sync` with frames the test sends, one
/// script per connection, and records what `/v1/events` is posted.
#[derive(Debug)]
struct FakeController {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Every sync connection: its `since`, and the sender of its body.
    syncs: Mutex<Vec<(u64, Option<mpsc::UnboundedSender<Bytes>>)>>,
    /// Every batch posted, in order, refused ones included.
    posts: Mutex<Vec<EventBatch>>,
    /// Posts still to be answered 503.
    fail_posts: AtomicUsize,
    /// The protocol version each sync request named.
    versions: Mutex<Vec<Option<String>>>,
}

impl FakeController {
    fn start() -> FakeController {
        let shared = Arc::new(Shared::default());
        let listener = common::held_listener();
        let addr = listener.local_addr().unwrap();
        let (shutdown, mut stop) = oneshot::channel::<()>();
        let served = shared.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stop => return,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let shared = served.clone();
                            tokio::spawn(async move {
                                let service = service_fn(move |req| handle(req, shared.clone()));
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            });
                        }
                    }
                }
            });
        });
        FakeController {
            addr,
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits for sync connection number `n` (from 0) and returns its `since`.
    async fn wait_for_sync(&self, n: usize) -> u64 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some((since, _)) = self.shared.syncs.lock().unwrap().get(n) {
                return *since;
            }
            assert!(
                Instant::now() < deadline,
                "the node never opened sync stream {n}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `frames` on sync connection `n`.
    fn send(&self, n: usize, frames: &[Frame]) {
        let syncs = self.shared.syncs.lock().unwrap();
        let tx = syncs[n].1.as_ref().expect("the stream is still open");
        for frame in frames {
            tx.send(Bytes::from(write_frame(frame))).unwrap();
        }
    }

    /// Sends one raw line (newline added) on sync connection `n`.
    fn send_line(&self, n: usize, line: &str) {
        let syncs = self.shared.syncs.lock().unwrap();
        let tx = syncs[n].1.as_ref().expect("the stream is still open");
        tx.send(Bytes::from(format!("{line}\n"))).unwrap();
    }

    /// Ends sync connection `n`'s body.
    fn end(&self, n: usize) {
        self.shared.syncs.lock().unwrap()[n].1 = None;
    }

    /// Answers the next `n` posts 503.
    fn fail_posts(&self, n: usize) {
        self.shared.fail_posts.store(n, Ordering::SeqCst);
    }

    /// Waits until `n` batches were posted; returns them.
    async fn wait_for_posts(&self, n: usize) -> Vec<EventBatch> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let posts = self.shared.posts.lock().unwrap().clone();
            if posts.len() >= n {
                return posts;
            }
            assert!(
                Instant::now() < deadline,
                "{} batches posted, not {n}",
                posts.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for FakeController {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<Body>, Infallible> {
    let authorized = req
        .headers()
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == format!("Bearer {TOKEN}").as_bytes());
    if !authorized {
        return Ok(answer(401, "application/json", "{}"));
    }
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/v1/sync") => {
            let since = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("since="))
                .and_then(|s| s.parse().ok())
                .expect("since=<seq>");
            let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
            shared.versions.lock().unwrap().push(
                req.headers()
                    .get(VERSION_HEADER)
                    .map(|v| v.to_str().unwrap().to_owned()),
            );
            shared.syncs.lock().unwrap().push((since, Some(tx)));
            let frames = futures_util::stream::unfold(rx, |mut rx| async move {
                let line = rx.recv().await?;
                Some((Ok::<_, Infallible>(hyper::body::Frame::data(line)), rx))
            });
            Ok(Response::builder()
                .header("content-type", "application/x-ndjson")
                .body(StreamBody::new(frames).boxed_unsync())
                .unwrap())
        }
        ("POST", "/v1/events") => {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let batch: EventBatch = serde_json::from_slice(&body).unwrap();
            let n = batch.events.len();
            // A node's counts per minute come in batches of their own,
            // whenever a minute turns: taken, and not what these tests read.
            if batch
                .events
                .iter()
                .all(|e| matches!(e.kind, NodeEventKind::Counts(_)))
            {
                let ack = EventAck {
                    accepted: n,
                    ..EventAck::default()
                };
                return Ok(answer(
                    200,
                    "application/json",
                    &serde_json::to_string(&ack).unwrap(),
                ));
            }
            shared.posts.lock().unwrap().push(batch);
            let failing = shared
                .fail_posts
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                return Ok(answer(503, "text/plain", "busy"));
            }
            let ack = EventAck {
                accepted: n,
                ..EventAck::default()
            };
            Ok(answer(
                200,
                "application/json",
                &serde_json::to_string(&ack).unwrap(),
            ))
        }
        _ => Ok(answer(404, "text/plain", "no")),
    }
}

fn answer(status: u16, content_type: &str, body: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body.to_owned())).boxed_unsync())
        .unwrap()
}

// === frames ===

fn hello(head: u64, snapshot: bool) -> Frame {
    Frame::Hello {
        v: VERSION,
        head,
        oldest: 1,
        snapshot,
    }
}

fn revoked(session: SessionId) -> Change {
    Change::SessionRevoked {
        session,
        at: now(),
        vouched: true,
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// === the node ===

/// A node keeping its state in `state`, syncing with `controller`, in
/// front of `origin`, revoking at high risk, snapshotting every second.
fn node(state: &Path, controller: &str, origin: &Origin) -> String {
    let token = state.join("controller.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    Config::new()
        .state_dir(state)
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app").high("revoke"))
        .section(&format!(
            "[session]\nsnapshot_interval_seconds = 1\n\n[controller]\nurl = {controller:?}\ntoken_file = {:?}\n",
            token.display().to_string()
        ))
        .render()
}

/// The fleet's id of the session `session=<value>`, made as the node makes
/// it: with the hash key it created in `state`.
fn session_id(state: &Path, value: &str) -> SessionId {
    let text = std::fs::read_to_string(state.join("session-hash.key")).unwrap();
    let key: [u8; 32] = hex::decode(text.trim()).unwrap().try_into().unwrap();
    let engine = Engine::new(EngineConfig::default(), SessionHashKey::from_bytes(key));
    SessionId(
        *engine
            .key_for_cookie("session", value.as_bytes())
            .unwrap()
            .as_bytes(),
    )
}

/// Asserts that `browser` is refused as an ended session.
async fn assert_ended(proxy: &Proxy, browser: &Browser) {
    let response = browser
        .request(&proxy.url("/echo"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body = response.text().await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"], "session_ended", "{body}");
}

fn cursor_file(state: &Path) -> PathBuf {
    state.join("controller.cursor")
}

// === tests ===

#[tokio::test]
async fn a_revocation_streamed_down_ends_the_session_and_the_stream_resumes_from_it() {
    let origin = Origin::start();
    let controller = FakeController::start();
    let state = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&node(state.path(), &controller.url(), &origin)).await;
    // A new node asks for everything.
    assert_eq!(controller.wait_for_sync(0).await, 0);
    controller.send(0, &[hello(0, true), Frame::SnapshotEnd { seq: 0 }]);
    proxy
        .wait_for_metric("vigil_proxy_fleet_connected", &[], |v| v == 1.0)
        .await;

    let victim = Browser::firefox().cookie("session=victim");
    assert_eq!(victim.get(&proxy.url("/echo")).await.status(), 200);
    let bystander = Browser::firefox().cookie("session=bystander");
    assert_eq!(bystander.get(&proxy.url("/echo")).await.status(), 200);

    // Universal logout of one session, decided elsewhere.
    controller.send(
        0,
        &[Frame::Changes {
            first: 1,
            changes: vec![revoked(session_id(state.path(), "victim"))],
        }],
    );
    proxy.wait_for_metric(APPLIED, &[], |v| v == 1.0).await;
    assert_ended(&proxy, &victim).await;
    assert_eq!(bystander.get(&proxy.url("/echo")).await.status(), 200);
    assert_eq!(
        proxy
            .metric(
                "vigil_proxy_fleet_changes_applied_total",
                &[("kind", "session_revoked")]
            )
            .await,
        1.0
    );

    // The controller goes away mid-stream: the node keeps enforcing, and
    // comes back asking only for what it has not got.
    controller.end(0);
    assert_eq!(controller.wait_for_sync(1).await, 1);
    assert_ended(&proxy, &victim).await;
    assert_eq!(
        proxy
            .metric(
                "vigil_proxy_fleet_reconnects_total",
                &[("reason", "closed")]
            )
            .await,
        1.0
    );
    // What the controller decided is not echoed back as this node's.
    assert!(controller.shared.posts.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_gap_in_the_stream_is_repaired_by_a_full_snapshot() {
    let origin = Origin::start();
    let controller = FakeController::start();
    let state = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&node(state.path(), &controller.url(), &origin)).await;
    assert_eq!(controller.wait_for_sync(0).await, 0);
    let first = Browser::firefox().cookie("session=first");
    let skipped = Browser::firefox().cookie("session=skipped");
    let third = Browser::firefox().cookie("session=third");
    for b in [&first, &skipped, &third] {
        assert_eq!(b.get(&proxy.url("/echo")).await.status(), 200);
    }
    let id = |v| session_id(state.path(), v);
    controller.send(
        0,
        &[
            hello(1, true),
            Frame::Snapshot {
                seq: 1,
                changes: vec![revoked(id("first"))],
            },
            Frame::SnapshotEnd { seq: 1 },
        ],
    );
    proxy.wait_for_metric(APPLIED, &[], |v| v == 1.0).await;
    assert_ended(&proxy, &first).await;

    // Change 2 never arrives; 3 does. The node must not take 3 and move
    // on as if 2 did not exist: it asks for the whole state again.
    controller.send(
        0,
        &[Frame::Changes {
            first: 3,
            changes: vec![revoked(id("third"))],
        }],
    );
    assert_eq!(controller.wait_for_sync(1).await, 0);
    assert_eq!(
        proxy
            .metric("vigil_proxy_fleet_resyncs_total", &[("reason", "gap")])
            .await,
        1.0
    );
    assert_eq!(proxy.metric(APPLIED, &[]).await, 1.0);
    assert_eq!(third.get(&proxy.url("/echo")).await.status(), 200);

    // The snapshot carries what was missed.
    controller.send(
        1,
        &[
            hello(3, true),
            Frame::Snapshot {
                seq: 3,
                changes: vec![
                    revoked(id("first")),
                    revoked(id("skipped")),
                    revoked(id("third")),
                ],
            },
            Frame::SnapshotEnd { seq: 3 },
        ],
    );
    proxy.wait_for_metric(APPLIED, &[], |v| v == 3.0).await;
    for b in [&first, &skipped, &third] {
        assert_ended(&proxy, b).await;
    }
    assert_eq!(
        proxy.metric("vigil_proxy_fleet_head_sequence", &[]).await,
        3.0
    );
}

#[tokio::test]
async fn a_revocation_this_node_decides_is_posted_until_the_controller_takes_it() {
    let origin = Origin::start();
    let controller = FakeController::start();
    // The controller is busy at first: the batch is sent again, same ids.
    controller.fail_posts(1);
    let state = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&node(state.path(), &controller.url(), &origin)).await;
    // Events are posted once the controller said which version it speaks.
    assert_eq!(controller.wait_for_sync(0).await, 0);
    controller.send(0, &[hello(0, true), Frame::SnapshotEnd { seq: 0 }]);

    let owner = Browser::firefox().cookie("session=stolen");
    assert_eq!(owner.get(&proxy.url("/echo")).await.status(), 200);
    // The same cookie from another device: high risk, revoked here.
    let thief = Browser::chrome().cookie("session=stolen");
    assert_eq!(thief.get(&proxy.url("/echo")).await.status(), 303);

    let posts = controller.wait_for_posts(2).await;
    assert_eq!(posts[0], posts[1], "a retry sends the same batch");
    let batch = &posts[1];
    assert_eq!(batch.v, VERSION);
    // The revocation with its evidence just before it: the detection
    // that revoked (of a session bound to nobody, posted only as that
    // evidence); not the owner's first sighting (anyone can mint those).
    assert_eq!(batch.events.len(), 2, "{batch:?}");
    let NodeEventKind::Detection {
        reference: evidence,
        session: Some(caught),
        action,
        enforced: true,
        ..
    } = &batch.events[0].kind
    else {
        panic!("the detection: {batch:?}");
    };
    assert_eq!(action, "revoke");
    let NodeEventKind::SessionRevoked {
        session,
        reference: Some(reference),
        at,
        ..
    } = &batch.events[1].kind
    else {
        panic!("the revocation: {batch:?}");
    };
    assert_eq!(*session, session_id(state.path(), "stolen"));
    assert_eq!(caught, session);
    assert_eq!(reference, evidence);
    assert!(now().abs_diff(*at) < 60);
    proxy
        .wait_for_metric("vigil_proxy_fleet_events_sent_total", &[], |v| v == 2.0)
        .await;
    assert_eq!(
        proxy
            .metric("vigil_proxy_fleet_events_retried_total", &[])
            .await,
        1.0
    );
    assert_eq!(
        proxy.metric("vigil_proxy_fleet_events_queued", &[]).await,
        0.0
    );
}

#[tokio::test]
async fn a_node_restarted_while_the_controller_is_away_still_refuses_what_it_revoked() {
    let origin = Origin::start();
    let state = tempfile::tempdir().unwrap();
    let victim = Browser::firefox().cookie("session=victim");
    {
        let controller = FakeController::start();
        let proxy = Proxy::start(&node(state.path(), &controller.url(), &origin)).await;
        assert_eq!(controller.wait_for_sync(0).await, 0);
        assert_eq!(victim.get(&proxy.url("/echo")).await.status(), 200);
        controller.send(
            0,
            &[
                hello(1, true),
                Frame::SnapshotEnd { seq: 0 },
                Frame::Changes {
                    first: 1,
                    changes: vec![revoked(session_id(state.path(), "victim"))],
                },
            ],
        );
        proxy.wait_for_metric(APPLIED, &[], |v| v == 1.0).await;
        // The periodic snapshot records the cursor beside what it holds.
        let deadline = Instant::now() + DEADLINE;
        // It holds the sequence, then when the node was last current.
        while std::fs::read_to_string(cursor_file(state.path()))
            .ok()
            .and_then(|t| t.split_whitespace().next().map(str::to_owned))
            .as_deref()
            != Some("1")
        {
            assert!(Instant::now() < deadline, "{}", proxy.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Killed, not stopped: no final snapshot; the controller goes too.
    }

    // Restarted with the controller gone: it enforces what it had.
    let down = format!("http://{}", closed_port());
    let proxy = Proxy::start(&node(state.path(), &down, &origin)).await;
    proxy.wait_for_log("session snapshot restored").await;
    assert_ended(&proxy, &victim).await;
    assert_eq!(proxy.metric(APPLIED, &[]).await, 1.0);
    proxy
        .wait_for_metric(
            "vigil_proxy_fleet_reconnects_total",
            &[("reason", "connect")],
            |v| v >= 1.0,
        )
        .await;
    assert_eq!(proxy.metric("vigil_proxy_fleet_connected", &[]).await, 0.0);
    drop(proxy);

    // When a controller answers again, the node resumes after its cursor…
    let controller = FakeController::start();
    let proxy = Proxy::start(&node(state.path(), &controller.url(), &origin)).await;
    assert_eq!(controller.wait_for_sync(0).await, 1);
    drop(proxy);
    // …but only with the snapshot the cursor was written beside: without
    // it, the cursor claims what the node no longer holds.
    std::fs::remove_file(state.path().join("sessions.snapshot")).unwrap();
    let controller = FakeController::start();
    let proxy = Proxy::start(&node(state.path(), &controller.url(), &origin)).await;
    assert_eq!(controller.wait_for_sync(0).await, 0);
    drop(proxy);
}

/// A fleet mid-upgrade, the node newer than its controller: the controller
/// answers in version 1; the node reads its stream and posts only what
/// version 1 takes, in a version 1 batch.
#[tokio::test]
async fn a_node_works_with_a_controller_of_the_previous_version() {
    let origin = Origin::start();
    let controller = FakeController::start();
    let state = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&node(state.path(), &controller.url(), &origin)).await;
    assert_eq!(controller.wait_for_sync(0).await, 0);
    assert_eq!(
        controller.shared.versions.lock().unwrap()[0].as_deref(),
        Some(VERSION.to_string().as_str())
    );
    let v1 = Frame::Hello {
        v: 1,
        head: 0,
        oldest: 1,
        snapshot: true,
    };
    controller.send(0, &[v1, Frame::SnapshotEnd { seq: 0 }]);
    proxy
        .wait_for_metric("vigil_proxy_fleet_connected", &[], |v| v == 1.0)
        .await;
    // The app issues and binds a session (a baseline, version 2), a thief
    // replays it (a detection, version 2, and a revocation, version 1).
    let owner = Browser::firefox();
    assert_eq!(
        owner
            .get(&proxy.url("/login?user=ann&session=s-ann"))
            .await
            .status(),
        200
    );
    let thief = Browser::chrome().cookie("session=s-ann");
    assert_eq!(thief.get(&proxy.url("/echo")).await.status(), 303);
    proxy
        .wait_for_metric("vigil_proxy_fleet_events_sent_total", &[], |v| v >= 1.0)
        .await;
    let posts = controller.wait_for_posts(1).await;
    let events: Vec<&NodeEventKind> = posts
        .iter()
        .flat_map(|b| &b.events)
        .map(|e| &e.kind)
        .collect();
    assert!(posts.iter().all(|b| b.v == 1), "{posts:?}");
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        matches!(events[0], NodeEventKind::SessionRevoked { session, .. } if *session == session_id(state.path(), "s-ann"))
    );
    // Its stream's changes are applied as ever.
    let victim = Browser::firefox().cookie("session=victim");
    assert_eq!(victim.get(&proxy.url("/echo")).await.status(), 200);
    controller.send(
        0,
        &[Frame::Changes {
            first: 1,
            changes: vec![revoked(session_id(state.path(), "victim"))],
        }],
    );
    proxy.wait_for_metric(APPLIED, &[], |v| v == 1.0).await;
    assert_ended(&proxy, &victim).await;
}

/// A fleet mid-upgrade, the controller newer than the node: a change kind
/// and a frame type the node does not know are skipped in order, the
/// sequence kept, no resync.
#[tokio::test]
async fn a_later_versions_changes_and_frames_are_skipped_in_order() {
    let origin = Origin::start();
    let controller = FakeController::start();
    let state = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&node(state.path(), &controller.url(), &origin)).await;
    assert_eq!(controller.wait_for_sync(0).await, 0);
    controller.send(0, &[hello(0, true), Frame::SnapshotEnd { seq: 0 }]);
    let victim = Browser::firefox().cookie("session=victim");
    assert_eq!(victim.get(&proxy.url("/echo")).await.status(), 200);
    let victim_id = session_id(state.path(), "victim");
    controller.send_line(0, r#"{"type":"rule_bundle","version":7}"#);
    controller.send_line(
        0,
        &format!(
            r#"{{"type":"changes","first":1,"changes":[{{"kind":"a_later_kind","user":"00000000000000aa","device":"d"}},{{"kind":"session_revoked","session":"{victim_id}","at":{},"vouched":true}}]}}"#,
            now()
        ),
    );
    proxy.wait_for_metric(APPLIED, &[], |v| v == 2.0).await;
    assert_ended(&proxy, &victim).await;
    assert_eq!(
        proxy
            .metric(
                "vigil_proxy_fleet_changes_applied_total",
                &[("kind", "unknown")]
            )
            .await,
        1.0
    );
    // Still the first stream: nothing was resynced.
    assert_eq!(controller.shared.syncs.lock().unwrap().len(), 1);
}
