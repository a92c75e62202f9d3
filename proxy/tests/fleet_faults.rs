//! The fleet when things break: the real `vigil-controller` binary (on
//! SQLite) and real proxies, killed with SIGKILL by the pids this test
//! started. Nodes keep enforcing what they have, queue what they decide
//! on disk, and deliver it when the controller is back; a node killed
//! while the controller is away still refuses what it had revoked; a
//! node stopped the moment it decided a revocation still delivers it; a
//! route that fails closed on stale fleet state says so.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Browser, Config, Origin, Proxy, Route, free_addr};
use tokio::time::Instant;

const ADMIN: &str = "fleet-admin-token-0123456789";
const NODE_A: &str = "fleet-node-a-token-0123";
const NODE_B: &str = "fleet-node-b-token-0123";
/// Generous: a debug build on a busy machine, and the nodes' reconnect
/// back-off (up to 30 s ± 50 % after many failures; these tests keep the
/// controller away for a few seconds only).
const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);
/// The routes' `stale_after`: the least allowed (two heartbeats).
const STALE_AFTER: u64 = 10;

/// The `vigil-controller` binary: beside this build's `vigil-proxy`,
/// built first when it is not there (`cargo test -p vigil-proxy` alone
/// does not build it).
fn controller_bin() -> PathBuf {
    let proxy = PathBuf::from(env!("CARGO_BIN_EXE_vigil-proxy"));
    let bin = proxy.with_file_name("vigil-controller");
    if !bin.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "-p",
                "vigil-controller",
                "--bin",
                "vigil-controller",
            ])
            .status()
            .unwrap();
        assert!(status.success(), "building vigil-controller failed");
    }
    bin
}

/// A `vigil-controller run` process of this test.
struct Controller {
    child: Option<Child>,
    addr: SocketAddr,
    config: PathBuf,
    log: PathBuf,
}

impl Controller {
    fn start(dir: &Path, addr: SocketAddr) -> Controller {
        let hash = |t: &str| hex::encode(vigil_controller::config::token_hash(t));
        let config = dir.join("controller.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{addr}\"\nstore = \"sqlite://{}\"\nhash_key_file = \"fleet-hash.key\"\nadmin_token_file = \"admin.token\"\n\
                 [[nodes]]\nname = \"a\"\ntoken_sha256 = \"{}\"\n[[nodes]]\nname = \"b\"\ntoken_sha256 = \"{}\"\n",
                dir.join("controller.db").display(),
                hash(NODE_A),
                hash(NODE_B),
            ),
        )
        .unwrap();
        let mut c = Controller {
            child: None,
            addr,
            config,
            log: dir.join("controller.log"),
        };
        c.spawn();
        c
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(controller_bin())
            .args(["run", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL to the pid this test started, and waits for it.
    fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        child.wait().unwrap();
    }

    /// Starts it again on the same store and address.
    fn restart(&mut self) {
        assert!(self.child.is_none());
        self.spawn();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Fleet {
    controller: Controller,
    a: Proxy,
    b: Proxy,
    b_config: String,
    _origin: Origin,
    _dir: tempfile::TempDir,
}

impl Fleet {
    async fn start() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("fleet-hash.key");
        std::fs::write(&key, "5a".repeat(32)).unwrap();
        std::fs::write(dir.path().join("admin.token"), ADMIN).unwrap();
        let controller = Controller::start(dir.path(), free_addr());
        let origin = Origin::start();
        let node = |name: &str, token: &str| {
            let state = dir.path().join(name);
            std::fs::create_dir_all(&state).unwrap();
            let token_file = state.join("controller.token");
            std::fs::write(&token_file, token).unwrap();
            // The periodic snapshot is left at its default (5 minutes):
            // what survives a SIGKILL here is the journal's and the
            // queue's doing, not a snapshot's.
            Config::new()
                .state_dir(&state)
                .upstream("app", origin.addr())
                .route(
                    Route::new("strict", "/strict", "app")
                        .high("revoke")
                        .stale(STALE_AFTER, "fail_closed"),
                )
                .route(
                    Route::new("watch", "/watch", "app")
                        .mode("monitor")
                        .high("revoke")
                        .stale(STALE_AFTER, "fail_closed"),
                )
                .route(
                    Route::new("lax", "/lax", "app")
                        .high("revoke")
                        .stale(STALE_AFTER, "fail_open"),
                )
                .route(Route::new("app", "/", "app").high("revoke"))
                .section(&format!(
                    "[session]\nhash_key_file = {:?}\n\n[controller]\nurl = \"http://{}\"\ntoken_file = {:?}\n",
                    key.display().to_string(),
                    controller.addr,
                    token_file.display().to_string()
                ))
                .render()
        };
        let a = Proxy::start(&node("a", NODE_A)).await;
        let b_config = node("b", NODE_B);
        let b = Proxy::start(&b_config).await;
        let fleet = Fleet {
            controller,
            a,
            b,
            b_config,
            _origin: origin,
            _dir: dir,
        };
        fleet.until_connected(&fleet.a).await;
        fleet.until_connected(&fleet.b).await;
        fleet
    }

    async fn until_connected(&self, node: &Proxy) {
        let deadline = Instant::now() + DEADLINE;
        while node.metric("vigil_proxy_fleet_connected", &[]).await != 1.0 {
            assert!(
                Instant::now() < deadline,
                "node never connected; controller log:\n{}\nnode log:\n{}",
                self.controller.log(),
                node.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// A browser signed in as `user` with session cookie `session` on `node`.
async fn sign_in(node: &Proxy, user: &str, session: &str) -> Browser {
    let browser = Browser::firefox();
    let r = browser
        .get(&node.url(&format!("/login?user={user}&session={session}")))
        .await;
    assert_eq!(r.status(), 200);
    browser.cookie(&format!("session={session}"))
}

/// A thief replays `session` on `node` from another device: the node
/// revokes it (303 to the sign-in page).
async fn stolen_on(node: &Proxy, session: &str) {
    let thief = Browser::chrome().cookie(&format!("session={session}"));
    assert_eq!(thief.get(&node.url("/echo")).await.status(), 303);
}

async fn status(node: &Proxy, browser: &Browser, path: &str) -> u16 {
    browser.get(&node.url(path)).await.status().as_u16()
}

/// Polls until `browser` is refused on `node` as an ended session; 200
/// until then.
async fn until_ended(node: &Proxy, browser: &Browser) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let s = status(node, browser, "/echo").await;
        if s == 401 {
            return;
        }
        assert_eq!(s, 200, "allowed until the revocation arrives, then 401");
        assert!(
            Instant::now() < deadline,
            "the revocation never arrived:\n{}",
            node.log()
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn until_metric(node: &Proxy, name: &str, want: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let v = node.metric(name, &[]).await;
        if want(v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{name} stayed at {v}:\n{}",
            node.log()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The strict route's answer to a request without a session, as JSON.
async fn strict(node: &Proxy) -> (u16, String) {
    let r = Browser::firefox()
        .request(&node.url("/strict/echo"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

#[tokio::test]
async fn nodes_keep_enforcing_through_a_controller_crash_and_deliver_what_they_decided() {
    let mut fleet = Fleet::start().await;
    // Before the crash: ann's session is stolen on A, B learns it.
    let ann = sign_in(&fleet.a, "ann", "s-ann").await;
    stolen_on(&fleet.a, "s-ann").await;
    until_ended(&fleet.b, &ann).await;
    let bob_a = sign_in(&fleet.a, "bob", "s-bob-a").await;
    let bob_b = sign_in(&fleet.b, "bob", "s-bob-b").await;
    let (s, _) = strict(&fleet.a).await;
    assert_eq!(s, 200, "fresh: the strict route serves");

    fleet.controller.kill();
    until_metric(&fleet.b, "vigil_proxy_fleet_connected", |v| v == 0.0).await;

    // Under traffic, with the controller gone: allowed stays allowed,
    // revoked stays revoked, on both nodes.
    for _ in 0..5 {
        assert_eq!(status(&fleet.a, &bob_a, "/echo").await, 200);
        assert_eq!(status(&fleet.b, &bob_b, "/echo").await, 200);
        assert_eq!(status(&fleet.a, &ann, "/echo").await, 401);
        assert_eq!(status(&fleet.b, &ann, "/echo").await, 401);
    }

    // Decided while it is away: carl's session, stolen on A. Queued, and
    // not known on B.
    let carl = sign_in(&fleet.a, "carl", "s-carl").await;
    stolen_on(&fleet.a, "s-carl").await;
    assert_eq!(status(&fleet.a, &carl, "/echo").await, 401);
    until_metric(&fleet.a, "vigil_proxy_fleet_events_queued", |v| v >= 1.0).await;
    assert_eq!(status(&fleet.b, &carl, "/echo").await, 200);

    // Stale past stale_after: the fail-closed route refuses with its own
    // status and code, whatever the client sends; the fail-open one
    // judges with what the node has.
    let deadline = Instant::now() + DEADLINE;
    let (s, body) = loop {
        let (s, body) = strict(&fleet.a).await;
        if s != 200 || Instant::now() > deadline {
            break (s, body);
        }
        tokio::time::sleep(POLL).await;
    };
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("\"fleet_stale\""), "{body}");
    assert!(
        fleet
            .a
            .metric("vigil_proxy_fleet_state_age_seconds", &[])
            .await
            >= STALE_AFTER as f64
    );
    for forged in [
        ("vigil-fleet-state", "fresh"),
        ("x-forwarded-for", "127.0.0.1"),
        ("cache-control", "no-cache"),
    ] {
        let r = Browser::firefox()
            .request(&fleet.a.url("/strict/echo"))
            .header(forged.0, forged.1)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{forged:?}");
    }
    assert_eq!(status(&fleet.a, &bob_a, "/strict/echo").await, 503);
    // A monitor route never refuses, fail_closed or not.
    assert_eq!(status(&fleet.a, &bob_a, "/watch/echo").await, 200);
    assert_eq!(status(&fleet.a, &bob_a, "/lax/echo").await, 200);
    assert_eq!(status(&fleet.a, &ann, "/lax/echo").await, 401);
    assert!(
        fleet
            .a
            .metric(
                "vigil_proxy_fleet_stale_requests_total",
                &[("route", "strict"), ("outcome", "refused")]
            )
            .await
            >= 5.0
    );
    assert!(
        fleet
            .a
            .metric(
                "vigil_proxy_fleet_stale_requests_total",
                &[("route", "lax"), ("outcome", "judged")]
            )
            .await
            >= 2.0
    );
    // The refusal's log record names it.
    let line = fleet.a.wait_for_log("request refused").await;
    assert!(line.contains("fleet_stale"), "{line}");

    // The controller returns: A's queue drains into it, B learns carl's
    // revocation, ann's holds, and the strict route serves again.
    fleet.controller.restart();
    fleet.until_connected(&fleet.a).await;
    until_metric(&fleet.a, "vigil_proxy_fleet_events_queued", |v| v == 0.0).await;
    until_ended(&fleet.b, &carl).await;
    assert_eq!(status(&fleet.b, &ann, "/echo").await, 401);
    assert_eq!(status(&fleet.b, &bob_b, "/echo").await, 200);
    let deadline = Instant::now() + DEADLINE;
    while strict(&fleet.a).await.0 != 200 {
        assert!(Instant::now() < deadline, "{}", fleet.a.log());
        tokio::time::sleep(POLL).await;
    }
    let head = fleet.controller.admin_log().await;
    assert!(head >= 2, "ann's and carl's revocations at least: {head}");
}

#[tokio::test]
async fn a_node_killed_while_the_controller_is_away_still_refuses_and_still_delivers() {
    let mut fleet = Fleet::start().await;
    // Dan's session is stolen on A; B applies the revocation from the
    // stream (no snapshot of B holds it: the journal must).
    let dan = sign_in(&fleet.a, "dan", "s-dan").await;
    stolen_on(&fleet.a, "s-dan").await;
    until_ended(&fleet.b, &dan).await;

    fleet.controller.kill();
    until_metric(&fleet.b, "vigil_proxy_fleet_connected", |v| v == 0.0).await;
    // Eve's is stolen on B while the controller is away: queued on B —
    // her session's record (the app bound it), the detection and the
    // revocation.
    let eve = sign_in(&fleet.b, "eve", "s-eve").await;
    stolen_on(&fleet.b, "s-eve").await;
    until_metric(&fleet.b, "vigil_proxy_fleet_events_queued", |v| v >= 3.0).await;

    // B is killed outright (SIGKILL by its pid: no final snapshot) and
    // started again with the controller still away.
    let b_config = fleet.b_config.clone();
    let pid = fleet.b.pid();
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + DEADLINE;
    while fleet.b.is_running() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(POLL).await;
    }
    fleet.b = Proxy::start(&b_config).await;
    fleet.b.wait_for_log("journal replayed").await;
    assert_eq!(status(&fleet.b, &dan, "/echo").await, 401);
    assert_eq!(status(&fleet.b, &eve, "/echo").await, 401);
    assert_eq!(
        fleet.b.metric("vigil_proxy_fleet_events_queued", &[]).await,
        3.0,
        "eve's events wait on disk"
    );
    // A restarted node's state is as old as it was: the strict route
    // refuses at once (its age counts from the last time it was current).
    assert_eq!(strict(&fleet.b).await.0, 503);
    assert_eq!(status(&fleet.a, &eve, "/echo").await, 200);

    // The controller returns: eve's revocation reaches it, and A.
    fleet.controller.restart();
    fleet.until_connected(&fleet.b).await;
    until_metric(&fleet.b, "vigil_proxy_fleet_events_queued", |v| v == 0.0).await;
    assert!(
        fleet
            .b
            .metric("vigil_proxy_fleet_events_sent_total", &[])
            .await
            >= 1.0
    );
    until_ended(&fleet.a, &eve).await;
    assert_eq!(status(&fleet.b, &dan, "/echo").await, 401);
}

#[tokio::test]
async fn a_revocation_decided_as_the_node_stops_is_still_delivered() {
    let mut fleet = Fleet::start().await;
    fleet.controller.kill();
    until_metric(&fleet.b, "vigil_proxy_fleet_connected", |v| v == 0.0).await;
    // Fay's session is stolen on B, and B is stopped fast (SIGINT: no
    // grace period) the moment the thief has its answer, without waiting
    // for the events of that request to reach the queue's file. (Whether
    // they had is a race this test does not control; the lanes' own tests
    // pin down what finishing them guarantees.)
    let fay = sign_in(&fleet.b, "fay", "s-fay").await;
    stolen_on(&fleet.b, "s-fay").await;
    let log = fleet.b.interrupt();
    assert_eq!(
        fleet.b.exit_status().map(|s| s.code()),
        Some(Some(0)),
        "{log}"
    );

    // Started again: her record, the detection and the revocation wait on
    // disk, and reach A once the controller is back.
    let b_config = fleet.b_config.clone();
    fleet.b = Proxy::start(&b_config).await;
    assert_eq!(
        fleet.b.metric("vigil_proxy_fleet_events_queued", &[]).await,
        3.0,
        "{}",
        fleet.b.log()
    );
    assert_eq!(status(&fleet.b, &fay, "/echo").await, 401);
    assert_eq!(status(&fleet.a, &fay, "/echo").await, 200);
    fleet.controller.restart();
    fleet.until_connected(&fleet.b).await;
    until_metric(&fleet.b, "vigil_proxy_fleet_events_queued", |v| v == 0.0).await;
    until_ended(&fleet.a, &fay).await;
}

impl Controller {
    /// The controller's log head.
    async fn admin_log(&self) -> u64 {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let r = reqwest::Client::new()
            .get(format!("http://{}/v1/admin/log", self.addr))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        v["head"].as_u64().unwrap()
    }
}
