//! A revocation at the fleet controller ends the session's open
//! connections on an edge node, not only its next request: the thief's
//! WebSocket on node B closes when the operator revokes the session (or
//! its user) at the controller, on SQLite; a bystander's stays open.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{Browser, CHROME, Config, FIREFOX, Origin, Proxy, REQUEST_TIMEOUT, Route, WsOrigin};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const ADMIN: &str = "fleet-admin-token-0123456789";
const NODE_B: &str = "fleet-node-b-token-0123";
const DEADLINE: Duration = Duration::from_secs(30);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A controller on SQLite (in this test process) and node B attached to
/// it, with an app on `/` and a WebSocket echo on `/ws`.
struct Fleet {
    controller: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    b: Proxy,
    _origin: Origin,
    _ws_origin: WsOrigin,
    dir: tempfile::TempDir,
}

impl Fleet {
    async fn start() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("fleet-hash.key");
        std::fs::write(&key, "5a".repeat(32)).unwrap();
        std::fs::write(dir.path().join("admin.token"), ADMIN).unwrap();
        let hash = |t: &str| hex::encode(vigil_controller::config::token_hash(t));
        // Held until the controller takes it: a port released and bound
        // again later could be taken in between by another test.
        let held = common::held_listener();
        let controller = held.local_addr().unwrap();
        let config = dir.path().join("controller.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{controller}\"\nstore = \"sqlite://{}\"\nhash_key_file = {:?}\nadmin_token_file = \"admin.token\"\n\
                 [[nodes]]\nname = \"b\"\ntoken_sha256 = \"{}\"\n",
                dir.path().join("controller.db").display(),
                key.display().to_string(),
                hash(NODE_B),
            ),
        )
        .unwrap();
        let config = vigil_controller::Config::load(&config).unwrap();
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
        let ws_origin = WsOrigin::start();
        let state = dir.path().join("b");
        std::fs::create_dir_all(&state).unwrap();
        let token_file = state.join("controller.token");
        std::fs::write(&token_file, NODE_B).unwrap();
        let node = Config::new()
            .state_dir(&state)
            .upstream("app", origin.addr())
            .upstream("ws", ws_origin.addr())
            // The WebSocket client's headers are not the HTTP client's:
            // two devices to the engine, allowed here (these tests are
            // about revocations, not detections).
            .route(Route::new("app", "/", "app").high("allow"))
            .route(Route::new("ws", "/ws", "ws").high("allow"))
            .section(&format!(
                "[session]\nhash_key_file = {:?}\n\n[controller]\nurl = \"http://{controller}\"\ntoken_file = {:?}\n",
                key.display().to_string(),
                token_file.display().to_string()
            ))
            .render();
        let b = Proxy::start(&node).await;
        b.wait_for_metric("vigil_proxy_fleet_connected", &[], |v| v == 1.0)
            .await;
        Fleet {
            controller,
            stop: Some(stop),
            b,
            _origin: origin,
            _ws_origin: ws_origin,
            dir,
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

    /// The session key of `session=value`, as the controller takes it.
    fn session_key(&self, value: &str) -> String {
        session_key(&self.dir.path().join("fleet-hash.key"), value)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn session_key(key_file: &Path, value: &str) -> String {
    let text = std::fs::read_to_string(key_file).unwrap();
    let key: [u8; 32] = hex::decode(text.trim()).unwrap().try_into().unwrap();
    vigil_engine::Engine::new(
        vigil_engine::EngineConfig::default(),
        vigil_engine::SessionHashKey::from_bytes(key),
    )
    .key_for_cookie("session", value.as_bytes())
    .unwrap()
    .to_string()
}

async fn websocket(proxy: &Proxy, user_agent: &str, cookie: &str) -> Ws {
    let mut request = format!("ws://{}/ws", proxy.addr())
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("user-agent", user_agent.parse().unwrap());
    headers.insert("cookie", cookie.parse().unwrap());
    let (ws, _) = tokio::time::timeout(REQUEST_TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .expect("WebSocket handshake in time")
        .expect("WebSocket handshake");
    ws
}

async fn echoes(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    let echoed = tokio::time::timeout(REQUEST_TIMEOUT, ws.next())
        .await
        .expect("echo in time")
        .expect("an echo")
        .expect("an echo, not an error");
    assert_eq!(echoed, Message::text(text));
}

async fn until_closed(ws: &mut Ws) {
    let next = tokio::time::timeout(DEADLINE, ws.next())
        .await
        .expect("the WebSocket was not ended");
    match next {
        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {}
        Some(Ok(other)) => panic!("the WebSocket carried {other:?} after the revocation"),
    }
}

#[tokio::test]
async fn sqlite_a_revocation_at_the_controller_ends_an_open_websocket_on_node_b() {
    let fleet = Fleet::start().await;
    let b = &fleet.b;
    // The thief holds a WebSocket on node B; so does a bystander.
    let mut thief = websocket(b, FIREFOX, "session=s-stolen").await;
    echoes(&mut thief, "before").await;
    let mut bystander = websocket(b, CHROME, "session=s-other").await;
    echoes(&mut bystander, "before").await;

    fleet
        .admin(
            "/v1/admin/sessions/revoke",
            serde_json::json!({"session": fleet.session_key("s-stolen")}),
        )
        .await;

    until_closed(&mut thief).await;
    b.wait_for_metric(
        "vigil_proxy_open_requests_ended_total",
        &[("how", "closed")],
        |v| v == 1.0,
    )
    .await;
    echoes(&mut bystander, "after").await;
    let next = Browser::firefox()
        .cookie("session=s-stolen")
        .get(&b.url("/echo"))
        .await;
    assert_eq!(next.status(), 401);
}

#[tokio::test]
async fn sqlite_a_user_revoked_at_the_controller_loses_the_websockets_open_on_node_b() {
    let fleet = Fleet::start().await;
    let b = &fleet.b;
    for (browser, user, session) in [
        (Browser::firefox(), "erin", "s-erin-1"),
        (Browser::chrome(), "erin", "s-erin-2"),
        (Browser::firefox(), "frank", "s-frank"),
    ] {
        let r = browser
            .get(&b.url(&format!("/login?user={user}&session={session}")))
            .await;
        assert_eq!(r.status(), 200);
    }
    let mut laptop = websocket(b, FIREFOX, "session=s-erin-1").await;
    let mut phone = websocket(b, CHROME, "session=s-erin-2").await;
    let mut frank = websocket(b, FIREFOX, "session=s-frank").await;
    for ws in [&mut laptop, &mut phone, &mut frank] {
        echoes(ws, "before").await;
    }

    fleet
        .admin(
            "/v1/admin/users/revoke",
            serde_json::json!({"user": "erin"}),
        )
        .await;

    until_closed(&mut laptop).await;
    until_closed(&mut phone).await;
    echoes(&mut frank, "after").await;
    b.wait_for_metric(
        "vigil_proxy_fleet_changes_applied_total",
        &[("kind", "user_revoked")],
        |v| v >= 1.0,
    )
    .await;
}

#[tokio::test]
async fn sqlite_erasing_a_user_at_the_controller_ends_their_open_websocket_on_node_b() {
    let fleet = Fleet::start().await;
    let b = &fleet.b;
    for (user, session) in [("gina", "s-gina"), ("hal", "s-hal")] {
        let r = Browser::firefox()
            .get(&b.url(&format!("/login?user={user}&session={session}")))
            .await;
        assert_eq!(r.status(), 200);
    }
    let mut gina = websocket(b, FIREFOX, "session=s-gina").await;
    let mut hal = websocket(b, FIREFOX, "session=s-hal").await;
    echoes(&mut gina, "before").await;
    echoes(&mut hal, "before").await;

    fleet
        .admin("/v1/admin/users/erase", serde_json::json!({"user": "gina"}))
        .await;

    until_closed(&mut gina).await;
    echoes(&mut hal, "after").await;
    let next = Browser::firefox()
        .cookie("session=s-gina")
        .get(&b.url("/echo"))
        .await;
    assert_eq!(next.status(), 401);
}
