//! A revocation ends the session's requests in flight, not only its next
//! one: a thief holding an open WebSocket or a slowly streamed response
//! (judged once, when it started) loses it the moment the session or its
//! user is revoked — and nobody else's connection is touched.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    Browser, CHROME, Ca, Config, FIREFOX, Origin, Proxy, REQUEST_TIMEOUT, Route,
    STREAM_CHUNK_BYTES, WsOrigin,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const TOKEN: &str = "5f1d0c3a9e8b7a6f5e4d3c2b1a0f9e8d";
/// How long an ended connection may take to show it: generous, polled.
const DEADLINE: Duration = Duration::from_secs(30);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Setup {
    origin: Origin,
    _ws_origin: WsOrigin,
    proxy: Proxy,
    dir: tempfile::TempDir,
}

/// An app on `/` and a WebSocket echo on `/ws`, behind a proxy with the
/// operator calls on and a known session hash key; both routes take
/// `high` at high risk. The WebSocket client's headers are not the HTTP
/// client's: to the engine they are two devices, which tests that log in
/// with one and hold a WebSocket with the other allow (they are about
/// revocations, not detections).
async fn setup(high: &str) -> Setup {
    setup_with(high, false).await
}

/// [`setup`], with cleartext HTTP/2 (prior knowledge) on the listener
/// when `h2c`.
async fn setup_with(high: &str, h2c: bool) -> Setup {
    let origin = Origin::start();
    let ws_origin = WsOrigin::start();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let key = dir.path().join("hash.key");
    std::fs::write(&key, "5a".repeat(32)).unwrap();
    let mut config = Config::new();
    if h2c {
        config = config.h2c();
    }
    let config = config
        .admin_token_file(&token)
        .section(&format!(
            "[session]\nhash_key_file = {:?}\n",
            key.display().to_string()
        ))
        .upstream("app", origin.addr())
        .upstream("ws", ws_origin.addr())
        .route(Route::new("app", "/", "app").high(high))
        .route(Route::new("ws", "/ws", "ws").high(high));
    let proxy = Proxy::start(&config.render()).await;
    Setup {
        origin,
        _ws_origin: ws_origin,
        proxy,
        dir,
    }
}

/// The session key of `session=value` under the setup's hash key, as the
/// operator names a session.
fn session_key(dir: &Path, value: &str) -> String {
    let text = std::fs::read_to_string(dir.join("hash.key")).unwrap();
    let key: [u8; 32] = hex::decode(text.trim()).unwrap().try_into().unwrap();
    vigil_engine::Engine::new(
        vigil_engine::EngineConfig::default(),
        vigil_engine::SessionHashKey::from_bytes(key),
    )
    .key_for_cookie("session", value.as_bytes())
    .unwrap()
    .to_string()
}

async fn operator(proxy: &Proxy, path: &str, body: serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{}{path}", proxy.admin()))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert_eq!(status, 200, "{path}: {}", response.text().await.unwrap());
}

/// Logs in through the app: it opens `session` and names `user`.
async fn login(proxy: &Proxy, browser: &Browser, user: &str, session: &str) {
    let response = browser
        .get(&proxy.url(&format!("/login?user={user}&session={session}")))
        .await;
    assert_eq!(response.status(), 200);
}

/// A WebSocket through the proxy with `cookie`, from `user_agent`.
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

/// Sends `text` and expects it back, exactly.
async fn echoes(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    let echoed = tokio::time::timeout(REQUEST_TIMEOUT, ws.next())
        .await
        .expect("echo in time")
        .expect("an echo")
        .expect("an echo, not an error");
    assert_eq!(echoed, Message::text(text));
}

/// Waits, without sending, for `ws` to end: end of stream, an error (the
/// connection closed under it) or a close frame. Never an echo: nothing
/// was sent.
async fn until_closed(ws: &mut Ws) {
    let next = tokio::time::timeout(DEADLINE, ws.next())
        .await
        .expect("the WebSocket was not ended");
    match next {
        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {}
        Some(Ok(other)) => panic!("the WebSocket carried {other:?} after the revocation"),
    }
}

/// A `/stream?gated` response through the proxy with `cookie`, read up to
/// the end of its first chunk: the origin then holds the rest back, and
/// the connection sits idle. No whole-request timeout: it stays open for
/// as long as the proxy keeps it.
async fn idle_stream(proxy: &Proxy, cookie: &str) -> reqwest::Response {
    let mut response = reqwest::Client::new()
        .get(proxy.url("/stream?gated"))
        .header("user-agent", FIREFOX)
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut got = 0;
    while got < STREAM_CHUNK_BYTES {
        let chunk = tokio::time::timeout(REQUEST_TIMEOUT, response.chunk())
            .await
            .expect("the first chunk in time")
            .unwrap()
            .expect("the first chunk");
        got += chunk.len();
    }
    response
}

/// Waits for the idle stream to end: it must fail (the body's end never
/// came), not carry more of the body.
async fn until_cut(response: &mut reqwest::Response) {
    let next = tokio::time::timeout(DEADLINE, response.chunk())
        .await
        .expect("the stream was not ended");
    assert!(
        next.is_err(),
        "the stream went on after the revocation: {next:?}"
    );
}

#[tokio::test]
async fn revoking_a_session_ends_the_thiefs_open_websocket_and_stream_but_no_one_elses() {
    let s = setup("revoke").await;
    let proxy = &s.proxy;
    // The thief holds the stolen session open twice: a WebSocket and an
    // idle streamed response. A bystander holds a WebSocket of their own.
    let mut thief_ws = websocket(proxy, FIREFOX, "session=stolen").await;
    echoes(&mut thief_ws, "before").await;
    let mut thief_stream = idle_stream(proxy, "session=stolen").await;
    let mut bystander = websocket(proxy, CHROME, "session=other").await;
    echoes(&mut bystander, "before").await;
    proxy
        .wait_for_metric("vigil_proxy_open_requests_tracked", &[], |v| v == 3.0)
        .await;

    operator(
        proxy,
        "/v1/sessions/revoke",
        serde_json::json!({"session": session_key(s.dir.path(), "stolen")}),
    )
    .await;

    until_closed(&mut thief_ws).await;
    until_cut(&mut thief_stream).await;
    // Both HTTP/1 connections were shut down at once, not left to a
    // next chunk that may never come.
    proxy
        .wait_for_metric(
            "vigil_proxy_open_requests_ended_total",
            &[("how", "closed")],
            |v| v == 2.0,
        )
        .await;
    // The bystander's connection is exactly as it was.
    echoes(&mut bystander, "after").await;
    // And the thief's next request is the usual refusal.
    let next = Browser::firefox()
        .cookie("session=stolen")
        .get(&proxy.url("/echo"))
        .await;
    assert_eq!(next.status(), 401);
    s.origin.release_stream();
}

#[tokio::test]
async fn revoking_a_user_ends_every_open_connection_of_the_users_sessions() {
    let s = setup("allow").await;
    let proxy = &s.proxy;
    login(proxy, &Browser::firefox(), "alice", "a1").await;
    login(proxy, &Browser::chrome(), "alice", "a2").await;
    login(proxy, &Browser::firefox(), "bob", "b1").await;
    let mut laptop = websocket(proxy, FIREFOX, "session=a1").await;
    let mut phone = websocket(proxy, CHROME, "session=a2").await;
    let mut stream = idle_stream(proxy, "session=a1").await;
    let mut bob = websocket(proxy, FIREFOX, "session=b1").await;
    for ws in [&mut laptop, &mut phone, &mut bob] {
        echoes(ws, "before").await;
    }

    operator(
        proxy,
        "/v1/users/revoke",
        serde_json::json!({"user": "alice"}),
    )
    .await;

    until_closed(&mut laptop).await;
    until_closed(&mut phone).await;
    until_cut(&mut stream).await;
    echoes(&mut bob, "after").await;
    for (browser, cookie) in [
        (Browser::firefox(), "session=a1"),
        (Browser::chrome(), "session=a2"),
    ] {
        let next = browser.cookie(cookie).get(&proxy.url("/echo")).await;
        assert_eq!(next.status(), 401);
    }
    proxy
        .wait_for_metric(
            "vigil_proxy_open_requests_ended_total",
            &[("how", "closed")],
            |v| v == 3.0,
        )
        .await;
    s.origin.release_stream();
}

#[tokio::test]
async fn a_thief_who_gets_the_session_revoked_loses_the_websocket_it_already_holds() {
    let s = setup("revoke").await;
    let proxy = &s.proxy;
    // The thief's copy passes for the owner's browser long enough to open
    // a WebSocket (the first sighting of the session here)...
    let mut held = websocket(proxy, FIREFOX, "session=c1").await;
    echoes(&mut held, "before").await;
    // ...then one request from another device gets the session revoked
    // by the proxy's own decision.
    let slip = Browser::chrome()
        .cookie("session=c1")
        .get(&proxy.url("/echo"))
        .await;
    assert_eq!(slip.status(), 303);

    until_closed(&mut held).await;
    proxy
        .wait_for_metric(
            "vigil_proxy_open_requests_ended_total",
            &[("how", "closed")],
            |v| v == 1.0,
        )
        .await;
}

#[tokio::test]
async fn when_every_request_ends_nothing_stays_filed() {
    let s = setup("allow").await;
    let proxy = &s.proxy;
    let mut ws = websocket(proxy, FIREFOX, "session=d1").await;
    echoes(&mut ws, "hello").await;
    let plain = Browser::firefox()
        .cookie("session=d1")
        .get(&proxy.url("/echo"))
        .await;
    assert_eq!(plain.status(), 200);
    proxy
        .wait_for_metric("vigil_proxy_open_requests_tracked", &[], |v| v == 1.0)
        .await;
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = tokio::time::timeout(DEADLINE, ws.next()).await.unwrap() {}
    proxy
        .wait_for_metric("vigil_proxy_open_requests_tracked", &[], |v| v == 0.0)
        .await;
}

#[tokio::test]
async fn over_http2_a_revoked_stream_ends_at_its_next_chunk_and_the_connections_other_streams_go_on()
 {
    let s = setup_with("allow", true).await;
    let proxy = &s.proxy;
    // One HTTP/2 connection carries the thief's idle stream and another
    // session's requests.
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .user_agent(FIREFOX)
        .build()
        .unwrap();
    let mut thief = client
        .get(proxy.url("/stream?gated"))
        .header("cookie", "session=h2-stolen")
        .send()
        .await
        .unwrap();
    assert_eq!(thief.version(), reqwest::Version::HTTP_2);
    assert_eq!(thief.status(), 200);
    let mut got = 0;
    while got < STREAM_CHUNK_BYTES {
        got += tokio::time::timeout(REQUEST_TIMEOUT, thief.chunk())
            .await
            .expect("the first chunk in time")
            .unwrap()
            .expect("the first chunk")
            .len();
    }
    let other = |path: &str| {
        client
            .get(proxy.url(path))
            .header("cookie", "session=h2-other")
            .send()
    };
    assert_eq!(other("/echo").await.unwrap().status(), 200);

    operator(
        proxy,
        "/v1/sessions/revoke",
        serde_json::json!({"session": session_key(s.dir.path(), "h2-stolen")}),
    )
    .await;
    // The connection is not shut down (it carries another session's
    // traffic): the idle stream is flagged...
    proxy
        .wait_for_metric(
            "vigil_proxy_open_requests_ended_total",
            &[("how", "flagged")],
            |v| v == 1.0,
        )
        .await;
    assert_eq!(
        proxy
            .metric(
                "vigil_proxy_open_requests_ended_total",
                &[("how", "closed")]
            )
            .await,
        0.0
    );
    // ...and when the app sends more, it never reaches the thief.
    s.origin.release_stream();
    until_cut(&mut thief).await;
    // The other session's requests on the same connection go on.
    assert_eq!(other("/echo").await.unwrap().status(), 200);
}

#[tokio::test]
async fn over_tls_a_revoked_sessions_idle_stream_is_closed_without_waiting_for_the_app() {
    let origin = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::write(dir.path().join("hash.key"), "5a".repeat(32)).unwrap();
    let ca = Ca::new("Test CA");
    let leaf = ca.leaf(&["app.test"]);
    let config = Config::new()
        .admin_token_file(&token)
        .section(&format!(
            "[session]\nhash_key_file = {:?}\n",
            dir.path().join("hash.key").display().to_string()
        ))
        .tls_listener("https", common::free_addr(), false, &[&leaf])
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app"));
    let proxy = Proxy::start(&config.render()).await;
    let https = proxy.listener("https");
    let client = common::tls_client_builder()
        .tls_certs_only([ca.root()])
        .resolve("app.test", https)
        .http1_only()
        .user_agent(FIREFOX)
        .build()
        .unwrap();
    let mut stream = client
        .get(format!("https://app.test:{}/stream?gated", https.port()))
        .header("cookie", "session=tls-stolen")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut got = 0;
    while got < STREAM_CHUNK_BYTES {
        got += tokio::time::timeout(REQUEST_TIMEOUT, stream.chunk())
            .await
            .expect("the first chunk in time")
            .unwrap()
            .expect("the first chunk")
            .len();
    }

    operator(
        &proxy,
        "/v1/sessions/revoke",
        serde_json::json!({"session": session_key(dir.path(), "tls-stolen")}),
    )
    .await;

    // Under TLS too the client socket is shut down (after the second's
    // grace): the stream ends without the app sending anything more.
    until_cut(&mut stream).await;
    proxy
        .wait_for_metric(
            "vigil_proxy_open_requests_ended_total",
            &[("how", "closed")],
            |v| v == 1.0,
        )
        .await;
    origin.release_stream();
}
