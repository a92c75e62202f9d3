//! The embedded demo: a small app that hands out session cookies, and a
//! fleet in front of it, all on loopback and in temporary files — a
//! controller on SQLite and two Vigil nodes sharing one session hash key:
//! node A in this process, node B a second `vigil-proxy run` started by it
//! (it exits when this process does).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::{HttpServer, ServeHttp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::services::listening::Service;

use crate::config::{Config, ConfigError};

/// Addresses the demo listens on.
#[derive(Debug, Clone, Copy)]
pub struct DemoAddrs {
    /// Node A's proxy listener.
    pub listen: SocketAddr,
    /// Node A's admin listener.
    pub admin: SocketAddr,
    /// The demo app.
    pub origin: SocketAddr,
    /// Node B's proxy listener.
    pub listen_b: SocketAddr,
    /// Node B's admin listener.
    pub admin_b: SocketAddr,
    /// The controller's API.
    pub controller: SocketAddr,
}

/// The fleet's files, made fresh for each run.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The run's directory.
    pub dir: PathBuf,
    /// The controller's admin token, for the walk-through.
    pub admin_token: String,
}

/// Why the fleet could not be started.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A file could not be written.
    #[error("demo files in {0}: {1}")]
    Files(PathBuf, std::io::Error),
    /// The controller's config was refused.
    #[error("demo controller: {0}")]
    Controller(String),
    /// Node B could not be started.
    #[error("demo node B: {0}")]
    NodeB(std::io::Error),
    /// A node's config was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Writes the fleet's files in a fresh directory: the shared session hash
/// key, each node's token and the controller's config.
pub fn prepare(addrs: DemoAddrs) -> Result<Fleet, DemoError> {
    let dir = std::env::temp_dir().join(format!("vigil-demo-{}", std::process::id()));
    let io = |e| DemoError::Files(dir.clone(), e);
    for node in ["a", "b"] {
        std::fs::create_dir_all(dir.join(node)).map_err(io)?;
    }
    let secret = |n: usize| hex::encode((0..n).map(|_| rand::random::<u8>()).collect::<Vec<_>>());
    std::fs::write(dir.join("session-hash.key"), secret(32)).map_err(io)?;
    let admin_token = secret(16);
    std::fs::write(dir.join("admin.token"), &admin_token).map_err(io)?;
    let mut nodes = String::new();
    for node in ["a", "b"] {
        let token = secret(16);
        std::fs::write(dir.join(node).join("controller.token"), &token).map_err(io)?;
        nodes.push_str(&format!(
            "[[nodes]]\nname = \"node-{node}\"\ntoken_sha256 = \"{}\"\n",
            hex::encode(vigil_controller::config::token_hash(&token))
        ));
    }
    let controller = format!(
        "listen = \"{}\"\nstore = \"sqlite://{}\"\nhash_key_file = \"session-hash.key\"\n\
         admin_token_file = \"admin.token\"\n{nodes}",
        addrs.controller,
        dir.join("controller.db").display(),
    );
    std::fs::write(dir.join("controller.toml"), controller).map_err(io)?;
    Ok(Fleet { dir, admin_token })
}

/// Starts the controller on its own thread and runtime, for the life of
/// the process.
pub fn start_controller(fleet: &Fleet) -> Result<(), DemoError> {
    let config = vigil_controller::Config::load(&fleet.dir.join("controller.toml"))
        .map_err(|e| DemoError::Controller(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| DemoError::Controller(e.to_string()))?;
    std::thread::spawn(move || {
        if let Err(e) = runtime.block_on(vigil_controller::run(config, std::future::pending())) {
            tracing::error!(error = %e, "demo controller stopped");
        }
    });
    Ok(())
}

/// Starts node B: this binary, `run` with node B's config, told to exit
/// when this process does (its standard input closes).
pub fn start_node_b(fleet: &Fleet, addrs: DemoAddrs) -> Result<Child, DemoError> {
    let path = fleet.dir.join("b").join("proxy.toml");
    let text = node_text(fleet, "b", addrs.listen_b, addrs.admin_b, addrs);
    std::fs::write(&path, text).map_err(|e| DemoError::Files(fleet.dir.clone(), e))?;
    // Checked here so that a problem is said once, in this terminal.
    Config::parse(
        &node_text(fleet, "b", addrs.listen_b, addrs.admin_b, addrs),
        &path,
    )?;
    let log = std::fs::File::create(fleet.dir.join("b").join("node.log"))
        .map_err(|e| DemoError::Files(fleet.dir.clone(), e))?;
    let exe = std::env::current_exe().map_err(DemoError::NodeB)?;
    Command::new(exe)
        .arg("run")
        .arg("--config")
        .arg(&path)
        .arg("--exit-with-parent")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(DemoError::NodeB)
}

/// Node A's config: the demo's route in front of the demo app, revoking a
/// session replayed from another device, syncing with the controller.
pub fn config(fleet: &Fleet, addrs: DemoAddrs) -> Result<Config, ConfigError> {
    let text = node_text(fleet, "a", addrs.listen, addrs.admin, addrs);
    Config::parse(&text, Path::new("<built-in demo config>"))
}

fn node_text(
    fleet: &Fleet,
    node: &str,
    listen: SocketAddr,
    admin: SocketAddr,
    addrs: DemoAddrs,
) -> String {
    let state_dir = fleet.dir.join(node);
    format!(
        r#"
[server]
threads = 1
grace_period_seconds = 0
graceful_shutdown_timeout_seconds = 1
state_dir = "{state_dir}"

[admin]
listen = "{admin}"

[session]
cookies = ["session"]
hash_key_file = "{key}"

[controller]
url = "http://{controller}"
token_file = "{token}"

[[listeners]]
name = "demo"
listen = "{listen}"

[[upstreams]]
name = "demo-app"
addresses = ["{origin}"]
[upstreams.health]
interval_seconds = 0

[[routes]]
name = "demo"
upstream = "demo-app"
login_url = "/login"
[routes.policy]
low = "allow"
medium = "allow"
high = "revoke"
"#,
        state_dir = state_dir.display(),
        key = fleet.dir.join("session-hash.key").display(),
        controller = addrs.controller,
        token = state_dir.join("controller.token").display(),
        origin = addrs.origin,
    )
}

/// The demo app as a service on `origin`.
pub fn app_service(origin: SocketAddr) -> Service<HttpServer<DemoApp>> {
    let mut service = Service::new("demo app".to_owned(), HttpServer::new_app(DemoApp));
    service.add_tcp(&origin.to_string());
    service
}

/// What to try, printed at start.
pub fn banner(addrs: DemoAddrs, fleet: &Fleet) -> String {
    let a = format!("http://{}", addrs.listen);
    let b = format!("http://{}", addrs.listen_b);
    let admin = format!("http://{}", addrs.admin);
    let controller = format!("http://{}", addrs.controller);
    let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0.0.0 Safari/537.36";
    format!(
        r#"Vigil demo — a fleet enforcing in front of a demo app.
  node A      {a}   (admin {admin}/metrics)
  node B      {b}   (admin http://{admin_b}/metrics)
  controller  {controller}   (SQLite in {dir})
  demo app    http://{origin}

1. Sign in through node A and keep the session cookie (curl is your "device"):
     curl -s -c /tmp/vigil-demo.jar {a}/login
2. Use the session from the same device, on either node: allowed, and the app is told the risk:
     curl -s -b /tmp/vigil-demo.jar {a}/
     curl -s -b /tmp/vigil-demo.jar {b}/
3. Replay the stolen cookie on node A from another device: the session is revoked (303 to /login):
     curl -si -b /tmp/vigil-demo.jar -A '{chrome}' {a}/
4. Node B learnt it from the controller: the owner's cookie is dead there too (401):
     curl -si -b /tmp/vigil-demo.jar {b}/
5. Or end every session of a user everywhere, as an operator (sign in again first):
     curl -s -H 'Authorization: Bearer {token}' -d '{{"user":"demo"}}' {controller}/v1/admin/users/revoke
6. See it counted:
     curl -s {admin}/metrics | grep -E 'vigil_proxy_(decisions_total|fleet_)'

Stop with Ctrl-C.
"#,
        admin_b = addrs.admin_b,
        origin = addrs.origin,
        dir = fleet.dir.display(),
        token = fleet.admin_token,
    )
}

/// The demo app: `/login` sets a session cookie, `/` greets and shows what
/// Vigil told it, `/logout` clears the cookie.
#[derive(Debug, Clone, Copy)]
pub struct DemoApp;

#[async_trait]
impl ServeHttp for DemoApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let header = |name: &str| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let mut resp = Response::builder().header("content-type", "text/plain; charset=utf-8");
        let body = match req.uri.path() {
            "/login" => {
                let token = hex::encode(rand::random::<[u8; 24]>());
                resp = resp
                    .header(
                        "set-cookie",
                        format!("session={token}; Path=/; HttpOnly; SameSite=Lax"),
                    )
                    // Names the session's user to Vigil (removed before the
                    // browser sees it).
                    .header("vigil-user", "demo");
                "Signed in. Your browser now holds a session cookie.\n".to_owned()
            }
            "/logout" => {
                resp = resp.header("set-cookie", "session=; Max-Age=0; Path=/");
                "Signed out.\n".to_owned()
            }
            "/" => format!(
                "Hello from the demo app.\nVigil says: risk level {:?}, score {:?}, reasons {:?}\n",
                header("vigil-risk-level"),
                header("vigil-risk-score"),
                header("vigil-risk-reasons"),
            ),
            _ => {
                resp = resp.status(StatusCode::NOT_FOUND);
                "Not found.\n".to_owned()
            }
        };
        let body = body.into_bytes();
        resp.header("content-length", body.len())
            .body(body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
