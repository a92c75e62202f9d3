//! Rule bundles for real: the `vigil-controller` binary (on SQLite, or on
//! a fresh database of the PostgreSQL server on 127.0.0.1:5432) and two
//! proxy processes taking their rules from it (`[rules] source =
//! "controller"`). A bundle published at the controller is enforced on
//! every node with the exact answer its rule gives; one a node cannot
//! compile leaves that node's rules as they were and shows at the
//! controller; a node restarted while the controller is away enforces the
//! bundle it had, and a reload keeps it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Browser, Config, Origin, Proxy, Route, free_addr};
use tokio::time::Instant;

const ADMIN: &str = "rules-admin-token-0123456789";
const NODE_A: &str = "rules-node-a-token-0123";
const NODE_B: &str = "rules-node-b-token-0123";
/// Generous: a debug build on a busy machine, and the nodes' reconnect
/// back-off after the controller was away.
const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);
const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Blocks `/admin` everywhere.
const V1: &str =
    "[[rule]]\nname = \"block-admin\"\npath_prefixes = [\"/admin\"]\naction = \"block\"\n";
/// Also blocks `/ops` on the route `ops`, which only node A has: node B
/// cannot compile it.
const V2: &str = "[[rule]]\nname = \"block-admin\"\npath_prefixes = [\"/admin\"]\naction = \"block\"\n\n\
                  [[rule]]\nname = \"block-ops\"\nroutes = [\"ops\"]\naction = \"block\"\n";

/// The `vigil-controller` binary: beside this build's `vigil-proxy`,
/// built first when it is not there.
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

/// A `vigil-controller run` process of this test, stopped by its pid.
struct Controller {
    child: Option<Child>,
    addr: SocketAddr,
    config: PathBuf,
    log: PathBuf,
}

impl Controller {
    fn start(dir: &Path, store: &str) -> Controller {
        let hash = |t: &str| hex::encode(vigil_controller::config::token_hash(t));
        let addr = free_addr();
        let config = dir.join("controller.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{addr}\"\nstore = {store:?}\nhash_key_file = \"fleet-hash.key\"\nadmin_token_file = \"admin.token\"\n\
                 [[nodes]]\nname = \"a\"\ntoken_sha256 = \"{}\"\n[[nodes]]\nname = \"b\"\ntoken_sha256 = \"{}\"\n",
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

    fn restart(&mut self) {
        assert!(self.child.is_none());
        self.spawn();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Publishes `text` as the next bundle; its version.
    async fn publish(&self, text: &str) -> u64 {
        let r = client()
            .post(self.url("/v1/admin/rules"))
            .bearer_auth(ADMIN)
            .body(text.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", self.log());
        let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        body["version"].as_u64().unwrap()
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> reqwest::StatusCode {
        client()
            .post(self.url(path))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .status()
    }

    /// `GET /v1/admin/nodes`, node by name.
    async fn nodes(&self) -> serde_json::Value {
        let r = client()
            .get(self.url("/v1/admin/nodes"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        let mut by_name = serde_json::Map::new();
        for node in body["nodes"].as_array().unwrap() {
            by_name.insert(node["node"].as_str().unwrap().to_owned(), node.clone());
        }
        serde_json::Value::Object(by_name)
    }

    /// Polls the node list until `want` holds of it; returns it.
    async fn until_nodes(&self, want: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let nodes = self.nodes().await;
            if want(&nodes) {
                return nodes;
            }
            assert!(
                Instant::now() < deadline,
                "the nodes never reported as wanted: {nodes:#}\ncontroller log:\n{}",
                self.log()
            );
            tokio::time::sleep(POLL).await;
        }
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

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// The status `node` answers to a plain GET of `path`.
async fn status(node: &Proxy, path: &str) -> u16 {
    Browser::firefox()
        .get(&node.url(path))
        .await
        .status()
        .as_u16()
}

/// Polls until `node` answers `path` with `want`; any other answer is
/// `before` until then.
async fn until_status(node: &Proxy, path: &str, before: u16, want: u16) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let got = status(node, path).await;
        if got == want {
            return;
        }
        assert_eq!(
            got, before,
            "{path}: {before} until the bundle arrives, then {want}"
        );
        assert!(
            Instant::now() < deadline,
            "{path} never answered {want}; node log:\n{}",
            node.log()
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn until_connected(node: &Proxy, value: f64) {
    node.wait_for_metric("vigil_proxy_fleet_connected", &[], |v| v == value)
        .await;
}

async fn a_bundle_is_enforced_everywhere_rejected_where_it_cannot_compile_and_survives_a_restart(
    postgres: bool,
) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("fleet-hash.key");
    std::fs::write(&key, "5a".repeat(32)).unwrap();
    std::fs::write(dir.path().join("admin.token"), ADMIN).unwrap();
    let pg = if postgres {
        sqlx::any::install_default_drivers();
        let name = format!("vigil_rules_{:016x}", rand::random::<u64>());
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
    let mut controller = Controller::start(dir.path(), &store);
    let origin = Origin::start();
    let node = |name: &str, token: &str, ops: bool| {
        let state = dir.path().join(name);
        std::fs::create_dir_all(&state).unwrap();
        let token_file = state.join("controller.token");
        std::fs::write(&token_file, token).unwrap();
        let mut config = Config::new()
            .state_dir(&state)
            .upstream("app", origin.addr());
        if ops {
            config = config.route(Route::new("ops", "/ops", "app"));
        }
        config
            .route(Route::new("app", "/", "app"))
            .section(&format!(
                "[session]\nhash_key_file = {:?}\n\n[controller]\nurl = \"http://{}\"\ntoken_file = {:?}\n\n\
                 [rules]\nsource = \"controller\"\n",
                key.display().to_string(),
                controller.addr,
                token_file.display().to_string()
            ))
            .render()
    };
    let a_config = node("a", NODE_A, true);
    let mut a = Proxy::start(&a_config).await;
    let b_config = node("b", NODE_B, false);
    let b = Proxy::start(&b_config).await;
    until_connected(&a, 1.0).await;
    until_connected(&b, 1.0).await;
    // No bundle yet, no rule files: the policy tables decide.
    for n in [&a, &b] {
        assert_eq!(status(n, "/admin/users").await, 200);
        assert_eq!(n.metric("vigil_proxy_rules_bundle_version", &[]).await, 0.0);
    }

    // Version 1 blocks /admin: both nodes answer 403, the rule's answer.
    assert_eq!(controller.publish(V1).await, 1);
    for n in [&a, &b] {
        until_status(n, "/admin/users", 200, 403).await;
        assert_eq!(status(n, "/echo").await, 200);
        n.wait_for_metric("vigil_proxy_rules_bundle_version", &[], |v| v == 1.0)
            .await;
    }
    let nodes = controller
        .until_nodes(|n| n["a"]["rules"]["version"] == 1 && n["b"]["rules"]["version"] == 1)
        .await;
    assert_eq!(nodes["a"]["rules_failure"], serde_json::Value::Null);

    // Version 2 names the route `ops`: node A has it and applies it; node
    // B has not, rejects it, keeps version 1 and says why.
    assert_eq!(controller.publish(V2).await, 2);
    until_status(&a, "/ops/deploy", 200, 403).await;
    let nodes = controller
        .until_nodes(|n| n["a"]["rules"]["version"] == 2 && n["b"]["rules_failure"]["version"] == 2)
        .await;
    assert_eq!(nodes["b"]["rules"]["version"], 1);
    let problems = nodes["b"]["rules_failure"]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    let problem = problems[0].as_str().unwrap();
    assert!(
        problem.starts_with("bundle.toml:")
            && problem.ends_with(": rule \"block-ops\": route \"ops\" does not exist"),
        "{problems:?}"
    );
    b.wait_for_metric(
        "vigil_proxy_rules_bundles_total",
        &[("result", "rejected")],
        |v| v == 1.0,
    )
    .await;
    b.wait_for_log("rule bundle from the controller rejected")
        .await;
    assert_eq!(b.metric("vigil_proxy_rules_bundle_version", &[]).await, 1.0);
    assert_eq!(status(&b, "/admin/users").await, 403, "B keeps version 1");
    assert_eq!(status(&b, "/ops/deploy").await, 200);

    // B's operator adds the route and reloads: B tries the latest bundle
    // again, applies it, and the controller sees B at version 2.
    let mut with_ops: toml::Table = b_config.parse().unwrap();
    let routes = with_ops["routes"].as_array_mut().unwrap();
    let mut ops = routes[0].as_table().unwrap().clone();
    ops.insert("name".into(), "ops".into());
    ops.insert("path_prefix".into(), "/ops".into());
    routes.insert(0, toml::Value::Table(ops));
    b.rewrite_config(&toml::to_string(&with_ops).unwrap());
    b.hangup();
    until_status(&b, "/ops/deploy", 200, 403).await;
    let nodes = controller
        .until_nodes(|n| n["b"]["rules"]["version"] == 2)
        .await;
    assert_eq!(nodes["b"]["rules_failure"], serde_json::Value::Null);

    // The controller goes away; node A is killed outright and started
    // again: it enforces version 2 from its state directory before the
    // controller is back.
    controller.kill();
    until_connected(&a, 0.0).await;
    let pid = a.pid();
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + DEADLINE;
    while a.is_running() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(POLL).await;
    }
    a = Proxy::start(&a_config).await;
    assert_eq!(a.metric("vigil_proxy_fleet_connected", &[]).await, 0.0);
    assert_eq!(status(&a, "/ops/deploy").await, 403);
    assert_eq!(status(&a, "/admin/users").await, 403);
    assert_eq!(a.metric("vigil_proxy_rules_bundle_version", &[]).await, 2.0);
    // A reload (SIGHUP) compiles the bundle again against the file: the
    // bundle stays in force, it is not dropped for the (empty) files.
    a.hangup();
    a.wait_for_metric(
        "vigil_proxy_config_reloads_total",
        &[("result", "applied")],
        |v| v == 1.0,
    )
    .await;
    assert_eq!(status(&a, "/ops/deploy").await, 403);

    // The controller is back; a rollback to version 1 reaches A, which
    // no longer blocks /ops.
    controller.restart();
    until_connected(&a, 1.0).await;
    assert_eq!(
        controller
            .post(
                "/v1/admin/rules/rollback",
                serde_json::json!({"version": 1})
            )
            .await,
        200
    );
    until_status(&a, "/ops/deploy", 403, 200).await;
    assert_eq!(status(&a, "/admin/users").await, 403);
    until_status(&b, "/ops/deploy", 403, 200).await;
    controller
        .until_nodes(|n| n["a"]["rules"]["version"] == 1 && n["b"]["rules"]["version"] == 1)
        .await;

    drop(a);
    drop(b);
    drop(controller);
    if let Some(name) = pg {
        let admin = sqlx::AnyPool::connect(PG_ADMIN).await.unwrap();
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&admin)
        .await;
    }
}

#[tokio::test]
async fn sqlite_a_bundle_is_enforced_everywhere_rejected_where_it_cannot_compile_and_survives_a_restart()
 {
    a_bundle_is_enforced_everywhere_rejected_where_it_cannot_compile_and_survives_a_restart(false)
        .await;
}

#[tokio::test]
async fn postgres_a_bundle_is_enforced_everywhere_rejected_where_it_cannot_compile_and_survives_a_restart()
 {
    a_bundle_is_enforced_everywhere_rejected_where_it_cannot_compile_and_survives_a_restart(true)
        .await;
}
