//! The embedded demo: a small app that hands out session cookies, and a
//! built-in config that puts Vigil in front of it, all on loopback.

use std::net::SocketAddr;
use std::path::Path;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::{HttpServer, ServeHttp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::services::listening::Service;

use crate::config::{Config, ConfigError, HashKeySource};

/// Addresses the demo listens on.
#[derive(Debug, Clone, Copy)]
pub struct DemoAddrs {
    /// Vigil's proxy listener.
    pub listen: SocketAddr,
    /// Vigil's admin listener.
    pub admin: SocketAddr,
    /// The demo app.
    pub origin: SocketAddr,
}

/// The demo's config: one route in front of the demo app, blocking high risk.
pub fn config(addrs: DemoAddrs) -> Result<Config, ConfigError> {
    let state_dir = std::env::temp_dir().join("vigil-demo");
    let text = format!(
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
high = "block"
"#,
        state_dir = state_dir.display(),
        admin = addrs.admin,
        listen = addrs.listen,
        origin = addrs.origin,
    );
    let mut config = Config::parse(&text, Path::new("<built-in demo config>"))?;
    // Nothing to keep: a demo session need not survive a restart.
    config.hash_key = HashKeySource::Ephemeral;
    Ok(config)
}

/// The demo app as a service on `origin`.
pub fn app_service(origin: SocketAddr) -> Service<HttpServer<DemoApp>> {
    let mut service = Service::new("demo app".to_owned(), HttpServer::new_app(DemoApp));
    service.add_tcp(&origin.to_string());
    service
}

/// What to try, printed at start.
pub fn banner(addrs: DemoAddrs) -> String {
    let proxy = format!("http://{}", addrs.listen);
    let admin = format!("http://{}", addrs.admin);
    format!(
        r#"Vigil demo — enforcing in front of a demo app.
  proxy  {proxy}   (the demo app itself listens on http://{origin})
  admin  {admin}/metrics

1. Sign in and keep the session cookie (curl is your "device"):
     curl -s -c /tmp/vigil-demo.jar {proxy}/login
2. Use the session from the same device: allowed, and the app is told the risk:
     curl -s -b /tmp/vigil-demo.jar {proxy}/
3. Replay the stolen cookie from another device: blocked with 403 and a reference id:
     curl -si -b /tmp/vigil-demo.jar -A 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0.0.0 Safari/537.36' {proxy}/
4. See the block counted:
     curl -s {admin}/metrics | grep -E 'vigil_proxy_(decisions|decision_reasons)_total'

Stop with Ctrl-C.
"#,
        origin = addrs.origin,
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
                resp = resp.header(
                    "set-cookie",
                    format!("session={token}; Path=/; HttpOnly; SameSite=Lax"),
                );
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
