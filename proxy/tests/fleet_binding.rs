//! The rotating binding across the fleet, for real (docs/bound-sessions.md,
//! "Across the fleet"): `vigil-controller` on SQLite in this process and
//! two proxy processes sharing one session hash key. The owner rotates and
//! presents the new generation on node A; a thief replaying the copied jar
//! on node B is refused once A's record reached B, without the owner ever
//! touching B; a compromised mark made on A refuses the session on B; and
//! node B restarted from its snapshot, with no controller to ask, still
//! refuses the stale jar. Parallel requests of one owner spread over both
//! nodes across a rotation are all allowed. The window of undetectable
//! reuse is measured (printed, never asserted).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{
    Browser, Config, FLEET_KEY, InProcessController, Origin, Proxy, Route, closed_port,
    write_fleet_key,
};

const NODE_A: &str = "fleet-node-a-token-0123";
const NODE_B: &str = "fleet-node-b-token-0123";
const DEADLINE: Duration = Duration::from_secs(30);
/// How often a poll looks again: the resolution of the window measured.
const POLL: Duration = Duration::from_millis(10);
/// The refusal of `binding_reused` under `high = "block"`.
const REFUSED: u16 = 403;

struct Fleet {
    _controller: InProcessController,
    a: Proxy,
    b: Proxy,
    _origin: Origin,
    _dir: tempfile::TempDir,
    /// Node B's config, to restart it from.
    b_config: String,
    key: std::path::PathBuf,
    /// The controller's store, read to wait on one session's record.
    store: vigil_controller::store::Store,
}

impl Fleet {
    async fn start() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let key = write_fleet_key(dir.path());
        let store_url = format!("sqlite://{}", dir.path().join("controller.db").display());
        let controller = InProcessController::start(
            dir.path(),
            "controller.toml",
            &store_url,
            &key,
            "fleet-admin-token-0123456789",
            &[("a", NODE_A), ("b", NODE_B)],
        );
        let listen = controller.addr();
        let origin = Origin::start();
        let a_config = node(dir.path(), &key, "a", NODE_A, listen, origin.addr());
        let b_config = node(dir.path(), &key, "b", NODE_B, listen, origin.addr());
        let a = Proxy::start(&a_config).await;
        let b = Proxy::start(&b_config).await;
        for p in [&a, &b] {
            p.wait_for_metric("vigil_proxy_fleet_connected", &[], |v| v == 1.0)
                .await;
        }
        let store = vigil_controller::store::Store::open(&store_url)
            .await
            .unwrap();
        Fleet {
            _controller: controller,
            a,
            b,
            _origin: origin,
            b_config,
            key,
            _dir: dir,
            store,
        }
    }

    /// Waits until the fleet's record of `session` holds a presented
    /// generation `generation` or later (that record, not any record) and
    /// `node` applied the controller's log through it.
    async fn synced(&self, node: &Proxy, session: &str, generation: u32) {
        let id = session_id(session);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let row = self.store.binding(id).await.unwrap();
            if row.is_some_and(|r| r.generation >= generation && r.presented_at != 0) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "generation {generation} of {session} never reached the controller: {row:?}"
            );
            tokio::time::sleep(POLL).await;
        }
        let head = self.store.bounds().await.unwrap().head as f64;
        node.wait_for_metric("vigil_proxy_fleet_applied_sequence", &[], |v| v >= head)
            .await;
    }
}

/// The fleet's id of the app session `value` (cookie `session`) under the
/// fleet's hash key.
fn session_id(value: &str) -> vigil_fleet::SessionId {
    let engine = vigil_engine::Engine::new(
        vigil_engine::EngineConfig::default(),
        vigil_engine::SessionHashKey::from_bytes(FLEET_KEY),
    );
    let key = engine.key_for_cookie("session", value.as_bytes()).unwrap();
    vigil_fleet::SessionId(*key.as_bytes())
}

/// A node's config: the binding on (rotation after 1 s, grace 1 s), high
/// risk blocked, the controller at `controller`.
fn node(
    dir: &std::path::Path,
    key: &std::path::Path,
    name: &str,
    token: &str,
    controller: SocketAddr,
    origin: SocketAddr,
) -> String {
    let state = dir.join(name);
    std::fs::create_dir_all(&state).unwrap();
    let token_file = state.join("controller.token");
    std::fs::write(&token_file, token).unwrap();
    Config::new()
        .state_dir(&state)
        .upstream("app", origin)
        .route(Route::new("app", "/", "app").high("block"))
        .section(&format!(
            "[session]\nhash_key_file = {:?}\n\n[controller]\nurl = \"http://{controller}\"\ntoken_file = {:?}\n\n\
             [binding]\nenabled = true\nrotate_after_seconds = 1\ngrace_seconds = 1\n",
            key.display().to_string(),
            token_file.display().to_string()
        ))
        .render()
}

/// The companion a response sets, if any, as `name=value`: host-wide
/// companions are named `__Host-vigil_bind` (a cookie deleting a
/// superseded bare-named one is not a companion).
fn companion(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.starts_with("__Host-vigil_bind=") || v.starts_with("vigil_bind="))
        .filter(|v| !v.to_ascii_lowercase().contains("max-age=0"))
        .find_map(|v| v.split(';').next().map(str::to_owned))
}

/// A jar: the app's cookie and a companion (`name=value`).
fn jar(session: &str, bind: &str) -> Browser {
    Browser::firefox().cookie(&format!("session={session}; {bind}"))
}

/// The owner signs in on `proxy`, presents the first companion, and uses
/// the session until it rotates; returns (first, second) companion. The
/// second is not presented yet.
async fn sign_in_and_rotate(proxy: &Proxy, session: &str) -> (String, String) {
    let login = Browser::firefox()
        .get(&proxy.url(&format!("/login?user=u-{session}&session={session}")))
        .await;
    assert_eq!(login.status(), 200);
    let first = companion(&login).expect("a companion with the session");
    assert_eq!(
        jar(session, &first).get(&proxy.url("/echo")).await.status(),
        200
    );
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let r = jar(session, &first).get(&proxy.url("/echo")).await;
        assert_eq!(r.status(), 200);
        if let Some(second) = companion(&r) {
            return (first, second);
        }
        assert!(tokio::time::Instant::now() < deadline, "never rotated");
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `proxy` with `browser` until it answers [`REFUSED`], every answer
/// before being 200; returns how long it took.
async fn until_refused(proxy: &Proxy, browser: &Browser) -> Duration {
    let started = tokio::time::Instant::now();
    loop {
        let status = browser.get(&proxy.url("/echo")).await.status().as_u16();
        if status == REFUSED {
            return started.elapsed();
        }
        assert_eq!(status, 200, "allowed until the fleet's record arrives");
        assert!(
            started.elapsed() < DEADLINE,
            "the owner's rotation never reached the other node\n{}",
            proxy.log()
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn a_copied_jar_is_refused_on_the_other_node_once_the_owners_rotation_reached_it() {
    let fleet = Fleet::start().await;

    // The window: from the owner's presentation of generation g+1 on A to
    // node B's refusal of the thief's generation g. It includes the grace
    // (1 s, on a clock of whole seconds: 0 to 1 s of it).
    // Apart, how long A's record takes to be applied on B (the part the
    // fleet sync adds: A's poster, the controller, B's stream).
    // The first request a node serves is slower (seen: 3.5 to 5.6 s on a
    // loaded machine); both nodes serve one before anything is timed.
    for p in [&fleet.a, &fleet.b] {
        assert_eq!(Browser::firefox().get(&p.url("/echo")).await.status(), 200);
    }
    let mut window = Vec::new();
    let mut arrival = Vec::new();
    for i in 0..20 {
        let session = format!("s-{i}");
        let (stolen, next) = sign_in_and_rotate(&fleet.a, &session).await;
        let r = jar(&session, &next).get(&fleet.a.url("/echo")).await;
        assert_eq!(r.status(), 200);
        let presented = tokio::time::Instant::now();
        // This session's generation 2, not any record (a late generation
        // 1 of it or of an earlier trial's would do for a counter).
        fleet.synced(&fleet.b, &session, 2).await;
        arrival.push(presented.elapsed());
        until_refused(&fleet.b, &jar(&session, &stolen)).await;
        window.push(presented.elapsed());
    }
    arrival.sort();
    eprintln!(
        "record applied on B after the owner's presentation on A (ms, 20 trials): median {} max {} min {}; all {:?}",
        arrival[arrival.len() / 2].as_millis(),
        arrival[arrival.len() - 1].as_millis(),
        arrival[0].as_millis(),
        arrival.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
    );
    window.sort();
    let ms = |d: Duration| d.as_millis();
    eprintln!(
        "window of undetectable reuse across nodes (ms, 20 trials): median {} max {} min {}; all {:?}",
        ms(window[window.len() / 2]),
        ms(window[window.len() - 1]),
        ms(window[0]),
        window.iter().map(|d| ms(*d)).collect::<Vec<_>>()
    );
    assert!(
        fleet
            .b
            .metric(
                "vigil_proxy_decision_reasons_total",
                &[("reason", "binding_reused")]
            )
            .await
            >= 20.0
    );

    // A compromised mark made on A refuses the session on B: the thief
    // replays on A, the owner, on B, is refused too, never having shown
    // B anything wrong.
    let (stolen, mark_next) = sign_in_and_rotate(&fleet.a, "s-mark").await;
    let next = mark_next.clone();
    assert_eq!(
        jar("s-mark", &next)
            .get(&fleet.a.url("/echo"))
            .await
            .status(),
        200
    );
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let status = jar("s-mark", &stolen)
            .get(&fleet.a.url("/echo"))
            .await
            .status();
        if status == REFUSED {
            break;
        }
        assert_eq!(status, 200, "within the grace");
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(POLL).await;
    }
    until_refused(&fleet.b, &jar("s-mark", &next)).await;
    // The owner's own generation is refused on A as well: once reused,
    // always reused.
    assert_eq!(
        jar("s-mark", &next)
            .get(&fleet.a.url("/echo"))
            .await
            .status()
            .as_u16(),
        REFUSED
    );

    // Node B learns a rotation it never saw, then restarts from its
    // snapshot with no controller to ask: the stale jar is still refused
    // (without the snapshot, B would take it as a first sight).
    let (stolen, next) = sign_in_and_rotate(&fleet.a, "s-restart").await;
    assert_eq!(
        jar("s-restart", &next)
            .get(&fleet.a.url("/echo"))
            .await
            .status(),
        200
    );
    fleet.synced(&fleet.b, "s-restart", 2).await;
    let Fleet {
        _controller: mut controller,
        a,
        b,
        _origin,
        b_config,
        key,
        _dir,
        store: _,
    } = fleet;
    b.terminate();
    drop(b);
    let cut_off = b_config.replace(
        &b_config
            .lines()
            .find(|l| l.starts_with("url = "))
            .unwrap()
            .to_owned(),
        &format!("url = \"http://{}\"", closed_port()),
    );
    let b = Proxy::start(&cut_off).await;
    // The grace has passed since the owner's presentation of the next
    // generation (B waited for it above).
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let status = jar("s-restart", &stolen)
            .get(&b.url("/echo"))
            .await
            .status()
            .as_u16();
        if status == REFUSED {
            break;
        }
        // Only within the grace of the owner's presentation.
        assert_eq!(status, 200, "{}", b.log());
        assert!(tokio::time::Instant::now() < deadline, "{}", b.log());
        tokio::time::sleep(POLL).await;
    }
    // The mark of the session above survived too.
    assert_eq!(
        jar("s-mark", &mark_next)
            .get(&b.url("/echo"))
            .await
            .status()
            .as_u16(),
        REFUSED
    );
    let _ = key;
    drop(a);
    drop(b);
    controller.stop();
}

/// An owner's browser sends 20 requests at once, spread over both nodes,
/// just as its binding falls due for rotation: the binding rotates and no
/// request of the owner's is refused.
#[tokio::test]
async fn parallel_owner_requests_over_two_nodes_across_a_rotation_are_all_allowed() {
    let fleet = Fleet::start().await;
    let login = Browser::firefox()
        .get(&fleet.a.url("/login?user=u-par&session=s-par"))
        .await;
    assert_eq!(login.status(), 200);
    let first = companion(&login).expect("a companion with the session");
    assert_eq!(
        jar("s-par", &first)
            .get(&fleet.a.url("/echo"))
            .await
            .status(),
        200
    );
    // Node B holds the presented generation 1 from the fleet.
    fleet.synced(&fleet.b, "s-par", 1).await;
    // The rotation falls due (rotate_after and grace are 1 s, on a clock
    // of whole seconds): a wait for time, not for another task.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let owner = jar("s-par", &first);
    let answers = futures_util::future::join_all((0..20).map(|i| {
        let node = if i % 2 == 0 { &fleet.a } else { &fleet.b };
        let url = node.url("/echo");
        let owner = &owner;
        async move {
            let r = owner.get(&url).await;
            (r.status().as_u16(), companion(&r))
        }
    }))
    .await;
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    let successors: std::collections::BTreeSet<&String> =
        answers.iter().filter_map(|(_, c)| c.as_ref()).collect();
    assert!(!successors.is_empty(), "the binding rotated");
    // Not asserted: that every response carries the same successor. A
    // burst straddling a second (the clock is whole seconds, the grace 1 s)
    // can get a node's re-issuance beside the rotation's successor; which
    // one a browser keeps then is the single-node lost-response limit
    // (docs/bound-sessions.md, Remaining work).
    let Fleet {
        _controller: mut controller,
        ..
    } = fleet;
    controller.stop();
}
