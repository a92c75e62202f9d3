//! The fleet for real: `vigil-controller` (in this test process, on SQLite,
//! or two replicas sharing one database on the PostgreSQL server on
//! 127.0.0.1:5432, each node attached to its own) and two proxy processes
//! sharing one session hash key. What one node decides or sees, and what an
//! operator does at the controller, holds on the other node.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{Browser, Config, Echo, InProcessController, Origin, Proxy, Route, write_fleet_key};

const ADMIN: &str = "fleet-admin-token-0123456789";
const NODE_A: &str = "fleet-node-a-token-0123";
const NODE_B: &str = "fleet-node-b-token-0123";
/// A dashboard viewer's token (reads, never acts).
const VIEWER: &str = "fleet-viewer-token-0123456789";
const DEADLINE: Duration = Duration::from_secs(30);

struct Fleet {
    controller: SocketAddr,
    stop: Vec<InProcessController>,
    a: Proxy,
    b: Proxy,
    _origin: Origin,
    dir: tempfile::TempDir,
    pg: Option<String>,
}

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

impl Fleet {
    async fn start(postgres: bool) -> Fleet {
        Fleet::start_with(postgres, "revoke").await
    }

    /// A fleet whose nodes answer a high risk with `high`.
    async fn start_with(postgres: bool, high: &str) -> Fleet {
        Fleet::start_configured(postgres, high, "", |c| c).await
    }

    /// A fleet whose nodes' configs are `tweak` of the usual one.
    async fn start_tweaked(postgres: bool, tweak: impl Fn(Config) -> Config) -> Fleet {
        Fleet::start_configured(postgres, "revoke", "", tweak).await
    }

    /// A fleet whose nodes answer a high risk with `high`, have `extra`
    /// in their config and are `tweak` of the usual one.
    async fn start_configured(
        postgres: bool,
        high: &str,
        extra: &str,
        tweak: impl Fn(Config) -> Config,
    ) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let key = write_fleet_key(dir.path());
        let pg = if postgres {
            sqlx::any::install_default_drivers();
            let name = format!("vigil_fleet_{:016x}", rand::random::<u64>());
            let admin = sqlx::AnyPool::connect(PG_ADMIN).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&admin)
                .await
                .unwrap();
            Some(name)
        } else {
            None
        };
        let store = match &pg {
            Some(name) => format!("postgres://postgres@127.0.0.1:5432/{name}"),
            None => format!("sqlite://{}", dir.path().join("controller.db").display()),
        };
        // On PostgreSQL, two replicas of one database: node A on the
        // first, node B on the second.
        let mut replicas = Vec::new();
        let mut stops = Vec::new();
        for i in 0..if postgres { 2 } else { 1 } {
            let controller = InProcessController::start_with(
                dir.path(),
                &format!("controller-{i}.toml"),
                &store,
                &key,
                ADMIN,
                &[("a", NODE_A), ("b", NODE_B)],
                &format!(
                    "[dashboard]\nviewer_tokens_sha256 = [\"{}\"]\n",
                    hex::encode(vigil_controller::config::token_hash(VIEWER))
                ),
            );
            replicas.push(controller.addr());
            stops.push(controller);
        }
        let controller = replicas[0];
        let origin = Origin::start();
        let node = |name: &str, token: &str, controller: SocketAddr| {
            let state = dir.path().join(name);
            std::fs::create_dir_all(&state).unwrap();
            let token_file = state.join("controller.token");
            std::fs::write(&token_file, token).unwrap();
            tweak(Config::new())
                .state_dir(&state)
                .upstream("app", origin.addr())
                .route(Route::new("app", "/", "app").high(high))
                .section(&format!(
                    "[session]\nhash_key_file = {:?}\n\n[controller]\nurl = \"http://{controller}\"\ntoken_file = {:?}\n",
                    key.display().to_string(),
                    token_file.display().to_string()
                ))
                .section(extra)
                .render()
        };
        let a = Proxy::start(&node("a", NODE_A, replicas[0])).await;
        let b = Proxy::start(&node("b", NODE_B, *replicas.last().unwrap())).await;
        for p in [&a, &b] {
            p.wait_for_metric("vigil_proxy_fleet_connected", &[], |v| v == 1.0)
                .await;
        }
        Fleet {
            controller,
            stop: stops,
            a,
            b,
            _origin: origin,
            dir,
            pg,
        }
    }

    async fn admin(&self, path: &str, body: serde_json::Value) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let r = reqwest::Client::new()
            .post(format!("http://{}{path}", self.controller))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }

    /// An admin call's status and JSON answer.
    async fn admin_json(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let r = reqwest::Client::new()
            .post(format!("http://{}{path}", self.controller))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_str(&r.text().await.unwrap()).unwrap(),
        )
    }

    async fn stop(mut self) {
        for mut controller in self.stop.drain(..) {
            controller.stop();
        }
        drop(self.a);
        drop(self.b);
        if let Some(name) = self.pg.take() {
            let admin = sqlx::AnyPool::connect(PG_ADMIN).await.unwrap();
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&admin)
            .await;
        }
    }
}

/// Polls until `browser` is refused on `proxy` as an ended session.
async fn until_ended(proxy: &Proxy, browser: &Browser) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let status = browser.get(&proxy.url("/echo")).await.status();
        if status == 401 {
            return;
        }
        assert_eq!(
            status, 200,
            "allowed until the revocation arrives, then 401"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the revocation never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_session_revoked_on_one_node_is_refused_on_the_other(postgres: bool) {
    let fleet = Fleet::start(postgres).await;
    // The owner signs in through node A and uses the session on both.
    let owner = Browser::firefox();
    assert_eq!(
        owner
            .get(&fleet.a.url("/login?user=ann&session=s-ann"))
            .await
            .status(),
        200
    );
    let owner = owner.cookie("session=s-ann");
    assert_eq!(owner.get(&fleet.b.url("/echo")).await.status(), 200);
    // A thief replays it on node A from another device: revoked there.
    let thief = Browser::chrome().cookie("session=s-ann");
    assert_eq!(thief.get(&fleet.a.url("/echo")).await.status(), 303);
    // Node B learns it from the controller: the cookie is dead there too.
    until_ended(&fleet.b, &owner).await;
    fleet
        .b
        .wait_for_metric(
            "vigil_proxy_fleet_changes_applied_total",
            &[("kind", "session_revoked")],
            |v| v >= 1.0,
        )
        .await;
    fleet.stop().await;
}

async fn an_operator_revokes_a_user_at_the_controller_and_every_node_obeys(postgres: bool) {
    let fleet = Fleet::start(postgres).await;
    // Bob has one session on each node, each opened there.
    let laptop = Browser::firefox();
    assert_eq!(
        laptop
            .get(&fleet.a.url("/login?user=bob&session=s-bob-1"))
            .await
            .status(),
        200
    );
    let phone = Browser::chrome();
    assert_eq!(
        phone
            .get(&fleet.b.url("/login?user=bob&session=s-bob-2"))
            .await
            .status(),
        200
    );
    let laptop = laptop.cookie("session=s-bob-1");
    let phone = phone.cookie("session=s-bob-2");
    // A bystander's session is untouched.
    let carol = Browser::firefox();
    assert_eq!(
        carol
            .get(&fleet.b.url("/login?user=carol&session=s-carol"))
            .await
            .status(),
        200
    );
    let carol = carol.cookie("session=s-carol");

    fleet
        .admin("/v1/admin/users/revoke", serde_json::json!({"user": "bob"}))
        .await;
    until_ended(&fleet.a, &laptop).await;
    until_ended(&fleet.b, &phone).await;
    assert_eq!(carol.get(&fleet.b.url("/echo")).await.status(), 200);

    // And a single session by its key, as the proxies log it.
    let key = session_key(&fleet.dir.path().join("fleet-hash.key"), "s-carol");
    fleet
        .admin(
            "/v1/admin/sessions/revoke",
            serde_json::json!({"session": key}),
        )
        .await;
    until_ended(&fleet.b, &carol).await;
    fleet.stop().await;
}

fn session_key(key_file: &Path, value: &str) -> String {
    let text = std::fs::read_to_string(key_file).unwrap();
    let key: [u8; 32] = hex::decode(text.trim()).unwrap().try_into().unwrap();
    let engine = vigil_engine::Engine::new(
        vigil_engine::EngineConfig::default(),
        vigil_engine::SessionHashKey::from_bytes(key),
    );
    engine
        .key_for_cookie("session", value.as_bytes())
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn sqlite_a_session_revoked_on_one_node_is_refused_on_the_other() {
    a_session_revoked_on_one_node_is_refused_on_the_other(false).await;
}

#[tokio::test]
async fn postgres_a_session_revoked_on_one_node_is_refused_on_the_other() {
    a_session_revoked_on_one_node_is_refused_on_the_other(true).await;
}

#[tokio::test]
async fn sqlite_an_operator_revokes_a_user_at_the_controller_and_every_node_obeys() {
    an_operator_revokes_a_user_at_the_controller_and_every_node_obeys(false).await;
}

#[tokio::test]
async fn postgres_an_operator_revokes_a_user_at_the_controller_and_every_node_obeys() {
    an_operator_revokes_a_user_at_the_controller_and_every_node_obeys(true).await;
}

/// Polls `proxy`'s metric of changes applied of `kind` until it is at
/// least `n`.
async fn applied(proxy: &Proxy, kind: &str, n: f64) {
    proxy
        .wait_for_metric(
            "vigil_proxy_fleet_changes_applied_total",
            &[("kind", kind)],
            |v| v >= n,
        )
        .await;
}

async fn a_thief_landing_on_node_b_is_judged_against_what_node_a_saw(postgres: bool) {
    let fleet = Fleet::start(postgres).await;
    // The owner signs in through node A only.
    let owner = Browser::firefox();
    assert_eq!(
        owner
            .get(&fleet.a.url("/login?user=ann&session=s-ann"))
            .await
            .status(),
        200
    );
    let owner = owner.cookie("session=s-ann");
    assert_eq!(owner.get(&fleet.a.url("/echo")).await.status(), 200);
    // Node B learns the session's baseline from the controller...
    applied(&fleet.b, "session_baseline", 1.0).await;
    // ...so the thief's first request there, from another device, is not
    // a first sighting but a replay: revoked on B, and then on A.
    let thief = Browser::chrome().cookie("session=s-ann");
    assert_eq!(thief.get(&fleet.b.url("/echo")).await.status(), 303);
    until_ended(&fleet.a, &owner).await;
    fleet.stop().await;
}

async fn a_user_revoked_at_the_controller_loses_a_session_only_the_other_node_saw(postgres: bool) {
    let fleet = Fleet::start(postgres).await;
    let laptop = Browser::firefox();
    assert_eq!(
        laptop
            .get(&fleet.a.url("/login?user=dan&session=s-dan"))
            .await
            .status(),
        200
    );
    let laptop = laptop.cookie("session=s-dan");
    applied(&fleet.b, "session_baseline", 1.0).await;
    fleet
        .admin("/v1/admin/users/revoke", serde_json::json!({"user": "dan"}))
        .await;
    // Node B never served dan, yet ends his session: it knew its binding.
    until_ended(&fleet.b, &laptop).await;
    until_ended(&fleet.a, &laptop).await;
    fleet.stop().await;
}

/// The risk reasons `proxy` told the app for `browser`'s request.
async fn reasons(proxy: &Proxy, browser: &Browser) -> String {
    let r = browser.get(&proxy.url("/echo")).await;
    assert_eq!(r.status(), 200);
    Echo::parse(&r.text().await.unwrap())
        .header("vigil-risk-reasons")
        .unwrap_or("")
        .to_owned()
}

async fn a_detection_on_node_a_raises_the_users_risk_on_node_b(postgres: bool) {
    let fleet = Fleet::start(postgres).await;
    // Carl's laptop session on node A, his phone session on node B.
    let laptop = Browser::firefox();
    assert_eq!(
        laptop
            .get(&fleet.a.url("/login?user=carl&session=s-carl-1"))
            .await
            .status(),
        200
    );
    let phone = Browser::chrome();
    assert_eq!(
        phone
            .get(&fleet.b.url("/login?user=carl&session=s-carl-2"))
            .await
            .status(),
        200
    );
    let phone = phone.cookie("session=s-carl-2");
    assert!(
        !reasons(&fleet.b, &phone)
            .await
            .contains("recent_detections")
    );
    // A thief replays the laptop's cookie on node A: caught there.
    let thief = Browser::new("curl/8.5.0").cookie("session=s-carl-1");
    assert_eq!(thief.get(&fleet.a.url("/echo")).await.status(), 303);
    // Node B hears of it: carl's phone carries entity risk there.
    applied(&fleet.b, "user_detections", 1.0).await;
    assert!(
        reasons(&fleet.b, &phone)
            .await
            .contains("recent_detections"),
        "the fleet's detection is entity risk on node B"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn sqlite_a_thief_landing_on_node_b_is_judged_against_what_node_a_saw() {
    a_thief_landing_on_node_b_is_judged_against_what_node_a_saw(false).await;
}

#[tokio::test]
async fn postgres_a_thief_landing_on_node_b_is_judged_against_what_node_a_saw() {
    a_thief_landing_on_node_b_is_judged_against_what_node_a_saw(true).await;
}

#[tokio::test]
async fn sqlite_a_user_revoked_at_the_controller_loses_a_session_only_the_other_node_saw() {
    a_user_revoked_at_the_controller_loses_a_session_only_the_other_node_saw(false).await;
}

#[tokio::test]
async fn postgres_a_user_revoked_at_the_controller_loses_a_session_only_the_other_node_saw() {
    a_user_revoked_at_the_controller_loses_a_session_only_the_other_node_saw(true).await;
}

#[tokio::test]
async fn sqlite_a_detection_on_node_a_raises_the_users_risk_on_node_b() {
    a_detection_on_node_a_raises_the_users_risk_on_node_b(false).await;
}

#[tokio::test]
async fn postgres_a_detection_on_node_a_raises_the_users_risk_on_node_b() {
    a_detection_on_node_a_raises_the_users_risk_on_node_b(true).await;
}

async fn an_erased_user_is_logged_out_and_forgotten_on_every_node(postgres: bool) {
    let fleet = Fleet::start(postgres).await;
    let laptop = Browser::firefox();
    assert_eq!(
        laptop
            .get(&fleet.a.url("/login?user=eve&session=s-eve"))
            .await
            .status(),
        200
    );
    let laptop = laptop.cookie("session=s-eve");
    applied(&fleet.b, "session_baseline", 1.0).await;
    fleet
        .admin("/v1/admin/users/erase", serde_json::json!({"user": "eve"}))
        .await;
    until_ended(&fleet.a, &laptop).await;
    until_ended(&fleet.b, &laptop).await;
    applied(&fleet.b, "user_erased", 1.0).await;
    fleet.stop().await;
}

#[tokio::test]
async fn sqlite_an_erased_user_is_logged_out_and_forgotten_on_every_node() {
    an_erased_user_is_logged_out_and_forgotten_on_every_node(false).await;
}

#[tokio::test]
async fn postgres_an_erased_user_is_logged_out_and_forgotten_on_every_node() {
    an_erased_user_is_logged_out_and_forgotten_on_every_node(true).await;
}

/// Carl, on a new device, is refused on node A; node B counts it against
/// him. His security team reports the refusal a false positive at the
/// controller: node A, which kept the refused request's facts, lets that
/// device through on the session (the old one no longer), and node B no
/// longer counts the detection.
async fn a_false_positive_at_the_controller_frees_the_device_and_lowers_the_risk(postgres: bool) {
    let fleet = Fleet::start_with(postgres, "block").await;
    let laptop = Browser::firefox();
    assert_eq!(
        laptop
            .get(&fleet.a.url("/login?user=carl&session=s-carl-1"))
            .await
            .status(),
        200
    );
    let laptop = laptop.cookie("session=s-carl-1");
    assert_eq!(laptop.get(&fleet.a.url("/echo")).await.status(), 200);
    let phone = Browser::chrome();
    assert_eq!(
        phone
            .get(&fleet.b.url("/login?user=carl&session=s-carl-2"))
            .await
            .status(),
        200
    );
    let phone = phone.cookie("session=s-carl-2");
    assert_eq!(reasons(&fleet.b, &phone).await, "");
    // Carl's laptop session from his new desktop: refused on node A.
    let desktop = Browser::chrome().cookie("session=s-carl-1");
    let refused = desktop.get(&fleet.a.url("/echo")).await;
    assert_eq!(refused.status(), 403);
    let reference = refused.headers()["vigil-reference"]
        .to_str()
        .unwrap()
        .to_owned();
    // Node B hears of it: entity risk on carl's phone.
    applied(&fleet.b, "user_detections", 1.0).await;
    assert_eq!(reasons(&fleet.b, &phone).await, "recent_detections");

    let (status, answer) = fleet
        .admin_json(
            "/v1/admin/detections/false-positive",
            serde_json::json!({ "reference": reference }),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["changed"], true);
    assert_eq!(answer["nodes"], serde_json::json!(["a"]));
    // Trusted for carl from what node A saw of the request: the desktop
    // and its network (no geo data here: the /24 alone).
    assert_eq!(
        answer["trusted"][0]["device"].as_str().map(str::len),
        Some(16)
    );
    assert_eq!(
        answer["trusted"][1]["network"],
        serde_json::json!({"type": "prefix", "prefix": "127.0.0.0"})
    );
    assert_eq!(
        answer["trusted"].as_array().map(Vec::len),
        Some(2),
        "{answer}"
    );
    // Node A carries it out: the desktop is the session's device now, and
    // the laptop's copy of the cookie is what looks stolen.
    applied(&fleet.a, "false_positive", 1.0).await;
    assert_eq!(desktop.get(&fleet.a.url("/echo")).await.status(), 200);
    assert_eq!(desktop.get(&fleet.a.url("/echo")).await.status(), 200);
    assert_eq!(laptop.get(&fleet.a.url("/echo")).await.status(), 403);
    // Node B has no such refusal, and takes the count's clear, the trust
    // of the desktop (from the detection's facts) and, from node A, the
    // session's new baseline: the desktop is let through there too, and
    // the laptop's copy of the cookie is not.
    applied(&fleet.b, "false_positive_elsewhere", 1.0).await;
    applied(&fleet.b, "user_detections", 2.0).await;
    applied(&fleet.b, "device_trusted", 1.0).await;
    assert_eq!(reasons(&fleet.b, &phone).await, "");
    until_status(&fleet.b, &desktop, 403, 200, "the false positive").await;
    assert_eq!(laptop.get(&fleet.b.url("/echo")).await.status(), 403);
    // Reported again: nothing changes.
    let (status, again) = fleet
        .admin_json(
            "/v1/admin/detections/false-positive",
            serde_json::json!({ "reference": reference }),
        )
        .await;
    assert_eq!((status, again["changed"].as_bool()), (200, Some(false)));
    fleet.stop().await;
}

/// Kim has used only Firefox on node B; she signs in with Chrome on node
/// A. Her security team finds that Chrome device in her detail at the
/// controller and trusts it for her: node B no longer counts it against
/// her, while it still counts for Lee, whose history is the same.
async fn a_device_trusted_at_the_controller_is_no_evidence_on_another_node(postgres: bool) {
    let fleet = Fleet::start_configured(
        postgres,
        "revoke",
        "[risk.model]\nlearning_sessions = 1\nlearning_period_days = 0\n",
        |c| c,
    )
    .await;
    for user in ["kim", "lee"] {
        for i in 1..=3 {
            let firefox = Browser::firefox();
            let session = format!("s-{user}-{i}");
            assert_eq!(
                firefox
                    .get(
                        &fleet
                            .b
                            .url(&format!("/login?user={user}&session={session}"))
                    )
                    .await
                    .status(),
                200
            );
            let firefox = firefox.cookie(&format!("session={session}"));
            assert_eq!(firefox.get(&fleet.b.url("/echo")).await.status(), 200);
        }
    }
    // Kim's new Chrome, on node A; its record reaches the controller.
    let chrome = Browser::chrome();
    assert_eq!(
        chrome
            .get(&fleet.a.url("/login?user=kim&session=s-kim-a"))
            .await
            .status(),
        200
    );
    let on_a = session_key(&fleet.dir.path().join("fleet-hash.key"), "s-kim-a");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let device = loop {
        let (status, detail) = fleet
            .admin_json("/v1/admin/users/detail", serde_json::json!({"user": "kim"}))
            .await;
        assert_eq!(status, 200, "{detail}");
        let held = detail["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["session"] == on_a.as_str())
            .and_then(|s| s["device"].as_str().map(str::to_owned));
        if let Some(device) = held {
            assert_eq!(detail["devices"].as_array().unwrap().len(), 2, "{detail}");
            break device;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node A's record never reached the controller: {detail}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (status, answer) = fleet
        .admin_json(
            "/v1/admin/users/trust-device",
            serde_json::json!({"user": "kim", "device": device}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    applied(&fleet.b, "device_trusted", 1.0).await;
    // On node B, Chrome is new to both; only Lee is judged for it.
    for (user, expected) in [("kim", ""), ("lee", "new_device_for_user")] {
        let chrome = Browser::chrome();
        let session = format!("s-{user}-chrome");
        assert_eq!(
            chrome
                .get(
                    &fleet
                        .b
                        .url(&format!("/login?user={user}&session={session}"))
                )
                .await
                .status(),
            200
        );
        let chrome = chrome.cookie(&format!("session={session}"));
        assert_eq!(reasons(&fleet.b, &chrome).await, expected, "{user}");
    }
    fleet.stop().await;
}

#[tokio::test]
async fn sqlite_a_device_trusted_at_the_controller_is_no_evidence_on_another_node() {
    a_device_trusted_at_the_controller_is_no_evidence_on_another_node(false).await;
}

#[tokio::test]
async fn postgres_a_device_trusted_at_the_controller_is_no_evidence_on_another_node() {
    a_device_trusted_at_the_controller_is_no_evidence_on_another_node(true).await;
}

/// Where the dashboard's browser test packages are (`npm ci --prefix
/// controller/tests/browser`, as `.ci/run` does).
fn browser_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../controller/tests/browser")
}

/// Runs `controller/tests/browser/fleet.mjs` with `args` (and `out`) and
/// returns what it wrote; panics, with its stderr, when it fails or runs
/// past 120 s (its own steps have 20 s each, plus Chromium's start).
async fn run_browser(mut args: serde_json::Value) -> serde_json::Value {
    assert!(
        browser_dir().join("node_modules/playwright-core").is_dir(),
        "run `npm ci --prefix controller/tests/browser` first"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.json");
    args["out"] = serde_json::json!(out);
    let mut child = std::process::Command::new("node")
        .arg(browser_dir().join("fleet.mjs"))
        .arg(args.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node is installed");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("fleet.mjs ran longer than 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(status.success(), "fleet.mjs failed: {stderr}");
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

/// Polls `browser`'s request on `proxy` until it answers `want`; until
/// then it must answer `before`.
async fn until_status(proxy: &Proxy, browser: &Browser, before: u16, want: u16, what: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let status = browser.get(&proxy.url("/echo")).await.status().as_u16();
        if status == want {
            return;
        }
        assert_eq!(
            status, before,
            "{what}: {before} until it arrives, then {want}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The reference id of a refusal.
fn reference_of(r: &reqwest::Response) -> String {
    r.headers()["vigil-reference"].to_str().unwrap().to_owned()
}

/// Security teams at the dashboard, in a real browser, and what two edge
/// nodes do of it (issue 15). Carl, on his new desktop, is refused on
/// node A; a responder finds the refusal by the reference id Carl quotes,
/// reads its facts and marks it a false positive: Carl's next request
/// from that desktop lands on node B, which never saw it, and is allowed —
/// while his cookie from any other device is still refused there. A thief
/// with Dave's cookie is refused on node A; the responder finds Dave from
/// that reference id and revokes the session: node B ends it. A page of
/// another origin posting the responder's own form (valid token and all)
/// is refused and changes nothing; a viewer is offered no action and is
/// refused the confirmation page and the post.
#[tokio::test]
async fn operators_in_a_browser_free_a_false_positive_and_revoke_a_session_on_every_node() {
    let fleet = Fleet::start_with(false, "block").await;
    let laptop = Browser::firefox();
    assert_eq!(
        laptop
            .get(&fleet.a.url("/login?user=carl&session=s-carl-1"))
            .await
            .status(),
        200
    );
    let laptop = laptop.cookie("session=s-carl-1");
    assert_eq!(laptop.get(&fleet.a.url("/echo")).await.status(), 200);
    // Carl's session from his new desktop: refused on node A.
    let desktop = Browser::chrome().cookie("session=s-carl-1");
    let refused = desktop.get(&fleet.a.url("/echo")).await;
    assert_eq!(refused.status(), 403);
    let carls = reference_of(&refused);
    // Dave's session, stolen: refused on node A.
    let dave = Browser::firefox();
    assert_eq!(
        dave.get(&fleet.a.url("/login?user=dave&session=s-dave-1"))
            .await
            .status(),
        200
    );
    let dave = dave.cookie("session=s-dave-1");
    assert_eq!(dave.get(&fleet.a.url("/echo")).await.status(), 200);
    let thief = Browser::chrome().cookie("session=s-dave-1");
    let refused = thief.get(&fleet.a.url("/echo")).await;
    assert_eq!(refused.status(), 403);
    let daves = reference_of(&refused);
    // Both detections are at the controller once node B has both users'
    // counts; before the false positive, node B refuses the desktop too.
    applied(&fleet.b, "user_detections", 2.0).await;
    applied(&fleet.b, "session_baseline", 2.0).await;
    assert_eq!(desktop.get(&fleet.b.url("/echo")).await.status(), 403);
    assert_eq!(dave.get(&fleet.b.url("/echo")).await.status(), 200);

    let carl_session = session_key(&fleet.dir.path().join("fleet-hash.key"), "s-carl-1");
    let seen = run_browser(serde_json::json!({
        "base": format!("http://{}", fleet.controller),
        "token": ADMIN,
        "viewer": VIEWER,
        "fp": carls,
        "revoke": daves,
        "forged": carl_session,
    }))
    .await;
    assert_eq!(
        seen["steps"],
        serde_json::json!([
            "/dashboard/login",
            "/dashboard",
            "/dashboard/detection",
            "/dashboard/confirm",
            "/dashboard/act",
            "/dashboard/user",
            "/dashboard/confirm",
            "/dashboard/act",
            "/dashboard/detection",
            "/dashboard/confirm",
        ])
    );
    let detection = seen["fp"]["detection"].as_str().unwrap();
    for fact in [
        &*format!("Detection {carls}"),
        "Reported by node a",
        "device_changed",
        "chrome 131 on linux",
    ] {
        assert!(detection.contains(fact), "{fact:?} in {detection}");
    }
    let done = seen["fp"]["done"].as_str().unwrap();
    assert!(
        done.contains("Marked a false positive; every node told."),
        "{done}"
    );
    let detection = seen["revoke"]["detection"].as_str().unwrap();
    assert!(
        detection.contains(&format!("Detection {daves}")),
        "{detection}"
    );
    let done = seen["revoke"]["done"].as_str().unwrap();
    assert!(
        done.contains(&format!(
            "Session {} revoked on every node",
            session_key(&fleet.dir.path().join("fleet-hash.key"), "s-dave-1")
        )),
        "{done}"
    );
    assert_eq!(seen["forged"], 403, "a forged cross-site post");
    assert_eq!(
        seen["viewer"],
        serde_json::json!({"actions": 0, "confirm": 403, "post": 403})
    );
    assert_eq!(seen["csp"], serde_json::json!([]), "no CSP violation");
    for (page, violations) in seen["axe"].as_object().unwrap() {
        assert_eq!(violations, &serde_json::json!([]), "axe on {page}");
    }

    // Node B, which never saw the desktop, lets it through now…
    applied(&fleet.b, "device_trusted", 1.0).await;
    until_status(&fleet.b, &desktop, 403, 200, "the false positive").await;
    assert_eq!(desktop.get(&fleet.b.url("/echo")).await.status(), 200);
    // …and Carl's cookie from any other device is still refused there.
    let safari = Browser::new(SAFARI).cookie("session=s-carl-1");
    assert_eq!(safari.get(&fleet.b.url("/echo")).await.status(), 403);
    assert_eq!(laptop.get(&fleet.b.url("/echo")).await.status(), 403);
    // Dave's session is ended on node B (the revocation's status).
    until_ended(&fleet.b, &dave).await;
    assert_eq!(dave.get(&fleet.a.url("/echo")).await.status(), 401);
    // Neither the forged post nor the viewer revoked Carl's session.
    assert_eq!(desktop.get(&fleet.a.url("/echo")).await.status(), 200);
    fleet.stop().await;
}

/// Safari on a Mac: a device neither Carl nor the nodes have seen.
const SAFARI: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 \
                      (KHTML, like Gecko) Version/17.5 Safari/605.1.15";

#[tokio::test]
async fn sqlite_a_false_positive_at_the_controller_frees_the_device_and_lowers_the_risk() {
    a_false_positive_at_the_controller_frees_the_device_and_lowers_the_risk(false).await;
}

#[tokio::test]
async fn postgres_a_false_positive_at_the_controller_frees_the_device_and_lowers_the_risk() {
    a_false_positive_at_the_controller_frees_the_device_and_lowers_the_risk(true).await;
}

/// A controller whose live stream leaves out change `drop_seq` (its test
/// hook, `VIGIL_CONTROLLER_TEST_DROP_SEQ`, set here on the loaded config so
/// that no other test's controller in this process sees it) and one node.
struct GappyFleet {
    controller: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    node: Proxy,
    _origin: Origin,
    dir: tempfile::TempDir,
}

impl GappyFleet {
    async fn start(drop_seq: u64) -> GappyFleet {
        let dir = tempfile::tempdir().unwrap();
        let key = write_fleet_key(dir.path());
        std::fs::write(dir.path().join("admin.token"), ADMIN).unwrap();
        // Held until the controller takes it: a port released and bound
        // again later could be taken in between by another test.
        let held = common::held_listener();
        let controller = held.local_addr().unwrap();
        let config = dir.path().join("controller.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{controller}\"\nhash_key_file = {:?}\nadmin_token_file = \"admin.token\"\n\
                 [[nodes]]\nname = \"a\"\ntoken_sha256 = \"{}\"\n",
                key.display().to_string(),
                hex::encode(vigil_controller::config::token_hash(NODE_A)),
            ),
        )
        .unwrap();
        let mut config = vigil_controller::Config::load(&config).unwrap();
        config.test_drop_seq = Some(drop_seq);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            vigil_controller::run_on(
                tokio::net::TcpListener::from_std(held).unwrap(),
                config,
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .unwrap();
        });
        let origin = Origin::start();
        let state = dir.path().join("a");
        std::fs::create_dir_all(&state).unwrap();
        let token_file = state.join("controller.token");
        std::fs::write(&token_file, NODE_A).unwrap();
        let node = Proxy::start(
            &Config::new()
                .state_dir(&state)
                .upstream("app", origin.addr())
                .route(Route::new("app", "/", "app").high("revoke"))
                .section(&format!(
                    "[session]\nhash_key_file = {:?}\n\n[controller]\nurl = \"http://{controller}\"\ntoken_file = {:?}\n",
                    key.display().to_string(),
                    token_file.display().to_string()
                ))
                .render(),
        )
        .await;
        node.wait_for_metric("vigil_proxy_fleet_connected", &[], |v| v == 1.0)
            .await;
        GappyFleet {
            controller,
            stop: Some(stop),
            node,
            _origin: origin,
            dir,
        }
    }

    async fn revoke(&self, cookie: &str) {
        let key = session_key(&self.dir.path().join("fleet-hash.key"), cookie);
        let _ = rustls::crypto::ring::default_provider().install_default();
        let r = reqwest::Client::new()
            .post(format!(
                "http://{}/v1/admin/sessions/revoke",
                self.controller
            ))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(serde_json::json!({ "session": key }).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[tokio::test]
async fn a_change_missing_from_the_stream_is_caught_by_the_node_and_resynced() {
    // The controller "loses" change 2 on the live stream.
    let fleet = GappyFleet::start(2).await;
    let mut browsers = Vec::new();
    // Sessions the app issues without naming a user: a node posts nothing
    // of them (no session record, no history), so the log's changes are
    // the revocations below and nothing else.
    for name in ["s-one", "s-two", "s-three"] {
        let b = Browser::firefox();
        assert_eq!(
            b.get(&fleet.node.url(&format!("/login?session={name}")))
                .await
                .status(),
            200
        );
        let b = b.cookie(&format!("session={name}"));
        assert_eq!(b.get(&fleet.node.url("/echo")).await.status(), 200);
        browsers.push(b);
    }
    assert_eq!(
        fleet
            .node
            .metric("vigil_proxy_fleet_resyncs_total", &[("reason", "gap")])
            .await,
        0.0
    );
    // Changes 1, 2 and 3; the stream carries 1 and 3 only.
    for name in ["s-one", "s-two", "s-three"] {
        fleet.revoke(name).await;
    }
    // The node sees 3 where it expected 2, asks for a snapshot, and so
    // holds the revocation the stream never carried.
    fleet
        .node
        .wait_for_metric(
            "vigil_proxy_fleet_resyncs_total",
            &[("reason", "gap")],
            |v| v >= 1.0,
        )
        .await;
    for b in &browsers {
        until_ended(&fleet.node, b).await;
    }
    fleet.stop();
}

/// Nodes behind a balancer at 127.0.0.2 that names the client in
/// `X-Forwarded-For`, with a model that trusts a user's history after three
/// sessions (no waiting days) and weighs a new client prefix at 20 points
/// per nat.
fn history_node(c: Config) -> Config {
    c.believe(&["x-forwarded-for"]).section(
        "[[trusted_proxies]]\nname = \"lb\"\ncidrs = [\"127.0.0.2/32\"]\n\n\
         [risk.model]\nlearning_sessions = 3\nlearning_period_days = 0\nprefix_weight = 20\n",
    )
}

/// `user` logs in on `proxy` with a new session from `client` (Firefox,
/// through the balancer) and makes the session's first request: the
/// reasons and score the proxy told the app for it.
async fn login_from(proxy: &Proxy, user: &str, session: &str, client: &str) -> (String, String) {
    login_with(Browser::firefox(), proxy, user, session, client).await
}

/// [`login_from`] with another browser.
async fn login_with(
    browser: Browser,
    proxy: &Proxy,
    user: &str,
    session: &str,
    client: &str,
) -> (String, String) {
    let browser = browser.via_address([127, 0, 0, 2].into());
    let r = browser
        .request(&proxy.url(&format!("/login?user={user}&session={session}")))
        .header("x-forwarded-for", client)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = browser
        .cookie(&format!("session={session}"))
        .request(&proxy.url("/echo"))
        .header("x-forwarded-for", client)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo = Echo::parse(&r.text().await.unwrap());
    let header = |name| echo.header(name).unwrap_or("").to_owned();
    (header("vigil-risk-reasons"), header("vigil-risk-score"))
}

const HOME: &str = "198.51.100.7";
const HOTEL: &str = "203.0.113.9";

async fn a_users_history_learnt_on_node_a_gives_login_risk_on_node_b(postgres: bool) {
    let fleet = Fleet::start_tweaked(postgres, history_node).await;
    // Hal logs in three times at home, on node A only: still learning
    // there, so no login risk. Each login teaches the controller, which
    // streams hal's history (and the population's counts) to node B.
    // Ivy does the same with Firefox.
    for i in 1..=3 {
        let told = login_from(&fleet.a, "hal", &format!("s-hal-{i}"), HOME).await;
        assert_eq!(told, (String::new(), "0".to_owned()), "login {i} on A");
        let told = login_from(&fleet.a, "ivy", &format!("s-ivy-{i}"), HOME).await;
        assert_eq!(
            told,
            (String::new(), "0".to_owned()),
            "ivy's login {i} on A"
        );
        applied(&fleet.b, "user_profile", f64::from(2 * i)).await;
        applied(&fleet.b, "population", f64::from(i)).await;
    }
    // Node B never saw hal, yet knows him: a login from a new network is
    // judged against his history and the model's points are added — with
    // three sightings of home and none of the new prefix, the likelihood
    // ratio is 4·(½ + ½·(n + D)/D) for n = 3 sightings of the feature and
    // D = 200,000 prior values: ln 4.00003 = 1.3863 nats, × 20 points =
    // 27.7, so 28. Device, browser and platform are his usual (no points);
    // ASN and country are unknown without geo databases (not weighed).
    assert_eq!(
        login_from(&fleet.b, "hal", "s-hal-4", HOTEL).await,
        ("new_network_for_user".to_owned(), "28".to_owned()),
        "a new network for hal on B"
    );
    // His usual network on B: familiar, no points.
    assert_eq!(
        login_from(&fleet.b, "hal", "s-hal-5", HOME).await,
        (String::new(), "0".to_owned()),
        "hal at home on B"
    );
    // Ivy on B from home, with Chrome on the same platform: a new device
    // and browser for her. Each never seen value weighs ln(4·(1 + T/2D))
    // nats for T population sightings of the feature (at most 10 here):
    // the device (D = 20,000) 1.3865 × 4 points, the browser family
    // (D = 200) 1.39 to 1.41 × 2 points; 8.3 to 8.4 in all, so 8.
    assert_eq!(
        login_with(Browser::chrome(), &fleet.b, "ivy", "s-ivy-4", HOME).await,
        ("new_device_for_user".to_owned(), "8".to_owned()),
        "a new device for ivy on B"
    );
    // The control: a user with no history anywhere, from that same new
    // network, is still learning — the points above came from A.
    assert_eq!(
        login_from(&fleet.b, "joe", "s-joe-1", HOTEL).await,
        (String::new(), "0".to_owned()),
        "a user new to the fleet"
    );
    // Hal is erased: B forgets his history, and nothing brings it back
    // (the controller's earlier changes for him are scrubbed, and what a
    // node learnt of him before the erasure is refused): from the new
    // network he is a new user again.
    fleet
        .admin("/v1/admin/users/erase", serde_json::json!({"user": "hal"}))
        .await;
    applied(&fleet.b, "user_erased", 1.0).await;
    applied(&fleet.a, "user_erased", 1.0).await;
    assert_eq!(
        login_from(&fleet.b, "hal", "s-hal-6", HOTEL).await,
        (String::new(), "0".to_owned()),
        "hal after his erasure, on B"
    );
    assert_eq!(
        login_from(&fleet.a, "hal", "s-hal-7", HOTEL).await,
        (String::new(), "0".to_owned()),
        "hal after his erasure, on A"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn sqlite_a_users_history_learnt_on_node_a_gives_login_risk_on_node_b() {
    a_users_history_learnt_on_node_a_gives_login_risk_on_node_b(false).await;
}

#[tokio::test]
async fn postgres_a_users_history_learnt_on_node_a_gives_login_risk_on_node_b() {
    a_users_history_learnt_on_node_a_gives_login_risk_on_node_b(true).await;
}
