//! What the proxy carries and how: TLS with SNI, HTTP/2, WebSocket,
//! streamed bodies both ways, and an upstream that is down.

// Test code: a failed unwrap is a failed test. clippy.toml allows these in
// #[test] functions; this also covers the helpers in `common`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;

use common::{
    Browser, Ca, Config, FIREFOX, Leaf, Origin, Proxy, REQUEST_TIMEOUT, Route, WsOrigin,
    closed_port, curl, expected_stream_body, fnv1a, free_addr, raw_chunked_upload,
};
use futures_util::{SinkExt, StreamExt};
use reqwest::Version;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// An origin and a proxy with a TLS listener `https` serving `certs` (the
/// first is the default) and the cleartext listener, both routing `/` to it.
async fn tls_proxy(certs: &[&Leaf], http2: bool) -> (Origin, Proxy) {
    let origin = Origin::start();
    let config = Config::new()
        .tls_listener("https", free_addr(), http2, certs)
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app"));
    let proxy = Proxy::start(&config.render()).await;
    (origin, proxy)
}

/// A client that trusts only `roots`, reaches `names` at `addr`, and records
/// the certificate it was shown.
fn tls_client(roots: &[&Ca], names: &[&str], addr: SocketAddr) -> reqwest::Client {
    let mut builder = common::tls_client_builder()
        .tls_certs_only(roots.iter().map(|ca| ca.root()))
        .tls_info(true)
        .timeout(REQUEST_TIMEOUT);
    for name in names {
        builder = builder.resolve(name, addr);
    }
    builder.build().unwrap()
}

fn peer_certificate(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("TLS info with the peer certificate")
        .to_vec()
}

fn https_url(name: &str, addr: SocketAddr, path: &str) -> String {
    format!("https://{name}:{}{path}", addr.port())
}

#[tokio::test]
async fn each_server_name_gets_its_own_certificate() {
    let ca = Ca::new("Test CA");
    let a = ca.leaf(&["a.test"]);
    let b = ca.leaf(&["b.test"]);
    let (_origin, proxy) = tls_proxy(&[&a, &b], true).await;
    let https = proxy.listener("https");
    let client = tls_client(&[&ca], &["a.test", "b.test"], https);

    for leaf in [&a, &b] {
        let name = leaf.names()[0].as_str();
        let response = client
            .get(https_url(name, https, "/echo"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET https://{name}: {e:?}"));
        assert_eq!(response.status(), 200, "{name}");
        assert_eq!(peer_certificate(&response), leaf.der(), "{name}");
    }
}

#[tokio::test]
async fn a_client_trusting_one_issuer_accepts_its_name_and_rejects_the_other() {
    let ca_a = Ca::new("CA A");
    let ca_b = Ca::new("CA B");
    let a = ca_a.leaf(&["a.test"]);
    let b = ca_b.leaf(&["b.test"]);
    let (_origin, proxy) = tls_proxy(&[&a, &b], true).await;
    let https = proxy.listener("https");
    let names = ["a.test", "b.test"];

    let trusts_a = tls_client(&[&ca_a], &names, https);
    let trusts_b = tls_client(&[&ca_b], &names, https);

    let ok = trusts_a.get(https_url("a.test", https, "/")).send().await;
    assert_eq!(ok.unwrap().status(), 200);
    let rejected = trusts_a.get(https_url("b.test", https, "/")).send().await;
    assert!(rejected.is_err(), "b.test's certificate is not from CA A");

    let ok = trusts_b.get(https_url("b.test", https, "/")).send().await;
    assert_eq!(ok.unwrap().status(), 200);
    let rejected = trusts_b.get(https_url("a.test", https, "/")).send().await;
    assert!(rejected.is_err(), "a.test's certificate is not from CA B");
}

#[tokio::test]
async fn an_unknown_or_missing_server_name_gets_the_first_certificate() {
    let ca = Ca::new("Test CA");
    let a = ca.leaf(&["a.test"]);
    let b = ca.leaf(&["b.test"]);
    // b first, so that "first" cannot be mistaken for "sorted first".
    let (_origin, proxy) = tls_proxy(&[&b, &a], true).await;
    let https = proxy.listener("https");
    let client = common::tls_client_builder()
        .tls_danger_accept_invalid_certs(true)
        .tls_info(true)
        .timeout(REQUEST_TIMEOUT)
        .resolve("c.test", https)
        .build()
        .unwrap();

    let unknown = client
        .get(https_url("c.test", https, "/"))
        .send()
        .await
        .unwrap();
    // An IP address in the URL means the client sends no SNI at all.
    let missing = client
        .get(format!("https://{https}/"))
        .send()
        .await
        .unwrap();

    assert_eq!(peer_certificate(&unknown), b.der());
    assert_eq!(peer_certificate(&missing), b.der());
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn_over_tls() {
    let ca = Ca::new("Test CA");
    let a = ca.leaf(&["a.test"]);
    let (_origin, proxy) = tls_proxy(&[&a], true).await;
    let https = proxy.listener("https");
    let client = tls_client(&[&ca], &["a.test"], https);

    let response = client
        .get(https_url("a.test", https, "/echo"))
        .header("user-agent", FIREFOX)
        .header("cookie", "session=alice")
        .send()
        .await
        .unwrap();

    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let echo = common::Echo::parse(&response.text().await.unwrap());
    assert_eq!(echo.request_line, "GET /echo");
    assert_eq!(echo.header("vigil-risk-level"), Some("low"));
}

#[tokio::test]
async fn a_listener_without_http2_speaks_http1_over_tls() {
    let ca = Ca::new("Test CA");
    let a = ca.leaf(&["a.test"]);
    let (_origin, proxy) = tls_proxy(&[&a], false).await;
    let https = proxy.listener("https");
    let client = tls_client(&[&ca], &["a.test"], https);

    let response = client
        .get(https_url("a.test", https, "/echo"))
        .send()
        .await
        .unwrap();

    assert_eq!(response.version(), Version::HTTP_11);
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn curl_speaks_http2_over_tls() {
    let ca = Ca::new("Test CA");
    let a = ca.leaf(&["a.test"]);
    let (_origin, proxy) = tls_proxy(&[&a], true).await;
    let https = proxy.listener("https");
    let resolve = format!("a.test:{}:127.0.0.1", https.port());
    let cacert = ca.pem_path();

    let output = curl(&[
        "--http2",
        "--cacert",
        cacert.to_str().unwrap(),
        "--resolve",
        &resolve,
        "-A",
        FIREFOX,
        "-w",
        "\n%{http_code} %{http_version}",
        &https_url("a.test", https, "/echo"),
    ])
    .await;

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.starts_with("GET /echo\n"), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("200 2"), "{stdout}");
}

#[tokio::test]
async fn cleartext_http2_with_prior_knowledge_works_when_h2c_is_on() {
    let origin = Origin::start();
    let config = Config::new()
        .h2c()
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app"));
    let proxy = Proxy::start(&config.render()).await;
    let client = common::tls_client_builder()
        .http2_prior_knowledge()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap();

    let response = client.get(proxy.url("/echo")).send().await.unwrap();

    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn websocket_messages_are_echoed_through_the_proxy() {
    let origin = Origin::start();
    let ws_origin = WsOrigin::start();
    let config = Config::new()
        .upstream("app", origin.addr())
        .upstream("ws", ws_origin.addr())
        .route(Route::new("app", "/", "app"))
        .route(Route::new("ws", "/ws", "ws"));
    let proxy = Proxy::start(&config.render()).await;
    let mut request = format!("ws://{}/ws", proxy.addr())
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("user-agent", FIREFOX.parse().unwrap());
    request
        .headers_mut()
        .insert("cookie", "session=alice".parse().unwrap());

    let (mut ws, _) =
        tokio::time::timeout(REQUEST_TIMEOUT, tokio_tungstenite::connect_async(request))
            .await
            .expect("WebSocket handshake in time")
            .expect("WebSocket handshake");
    let binary: Vec<u8> = (0..=255).collect();
    for message in [
        Message::text("hello through vigil"),
        Message::binary(binary),
    ] {
        ws.send(message.clone()).await.unwrap();
        let echoed = tokio::time::timeout(REQUEST_TIMEOUT, ws.next())
            .await
            .expect("echo in time")
            .expect("an echo")
            .unwrap();
        assert_eq!(echoed, message);
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn a_streamed_response_arrives_whole() {
    let origin = Origin::start();
    let config = Config::new()
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app"));
    let proxy = Proxy::start(&config.render()).await;

    let response = Browser::firefox().get(&proxy.url("/stream")).await;

    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    assert!(
        body[..] == expected_stream_body()[..],
        "body differs ({} bytes)",
        body.len()
    );
}

#[tokio::test]
async fn a_streamed_response_is_forwarded_before_it_ends() {
    let origin = Origin::start();
    let config = Config::new()
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app"));
    let proxy = Proxy::start(&config.render()).await;
    let mut response = Browser::firefox().get(&proxy.url("/stream?gated")).await;
    assert_eq!(response.status(), 200);

    // The origin holds back the rest until the first chunk has reached the
    // client: a proxy that buffered whole bodies would time out here.
    let mut body = Vec::new();
    while body.len() < common::STREAM_CHUNK_BYTES {
        let chunk = response
            .chunk()
            .await
            .expect("the first chunk arrives while the origin waits")
            .expect("more body");
        body.extend_from_slice(&chunk);
    }
    origin.release_stream();
    while let Some(chunk) = response.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }

    assert!(
        body == expected_stream_body(),
        "body differs ({} bytes)",
        body.len()
    );
}

#[tokio::test]
async fn a_large_streamed_upload_arrives_whole() {
    let origin = Origin::start();
    let config = Config::new()
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app"));
    let proxy = Proxy::start(&config.render()).await;
    let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    let chunks = 128;
    let whole: Vec<u8> = chunk.repeat(chunks);

    let response = raw_chunked_upload(proxy.addr(), "/upload", &chunk, chunks).await;

    assert_eq!(response.status, Some(200), "{}", response.head);
    assert_eq!(
        response.text(),
        format!("{} {:016x}", whole.len(), fnv1a(&whole))
    );
}

#[tokio::test]
async fn a_large_upload_over_http2_arrives_whole() {
    let ca = Ca::new("Test CA");
    let a = ca.leaf(&["a.test"]);
    let (_origin, proxy) = tls_proxy(&[&a], true).await;
    let https = proxy.listener("https");
    let payload: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
    let file = proxy.dir().join("upload.bin");
    std::fs::write(&file, &payload).unwrap();
    let data = format!("@{}", file.display());
    let resolve = format!("a.test:{}:127.0.0.1", https.port());
    let cacert = ca.pem_path();

    let output = curl(&[
        "--http2",
        "--cacert",
        cacert.to_str().unwrap(),
        "--resolve",
        &resolve,
        "-H",
        "content-type: application/octet-stream",
        "--data-binary",
        &data,
        "-w",
        "\n%{http_code} %{http_version}",
        &https_url("a.test", https, "/upload"),
    ])
    .await;

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected = format!("{} {:016x}\n200 2", payload.len(), fnv1a(&payload));
    assert_eq!(stdout, expected);
}

#[tokio::test]
async fn an_upstream_that_is_down_gets_502_and_other_routes_keep_serving() {
    let origin = Origin::start();
    let config = Config::new()
        .upstream("app", origin.addr())
        .upstream("down", closed_port())
        .route(Route::new("app", "/", "app"))
        .route(Route::new("down", "/down", "down"));
    let proxy = Proxy::start(&config.render()).await;
    let browser = Browser::firefox().cookie("session=alice");

    // The client's own timeout firing would fail the unwrap inside `get`.
    let response = browser.get(&proxy.url("/down")).await;

    assert_eq!(response.status(), 502);
    browser.echo(&proxy.url("/echo")).await;
    assert_eq!(browser.get(&proxy.url("/down/again")).await.status(), 502);
    browser.echo(&proxy.url("/echo")).await;
    proxy
        .wait_for_metric(
            "vigil_proxy_upstream_errors_total",
            &[("upstream", "down")],
            |v| v >= 1.0,
        )
        .await;
}

/// An upstream group of a dead address and a live origin.
async fn dead_and_live(eject_seconds: u64) -> (Origin, Proxy) {
    let origin = Origin::start();
    let dead = closed_port();
    let config = Config::new()
        .section(&format!(
            "[[upstreams]]\nname = \"pair\"\naddresses = [\"{dead}\", \"{live}\"]\n\
             [upstreams.health]\ninterval_seconds = 0\neject_seconds = {eject_seconds}\n",
            live = origin.addr()
        ))
        .route(Route::new("app", "/", "pair"));
    let proxy = Proxy::start(&config.render()).await;
    (origin, proxy)
}

/// Sends six requests that must all succeed; returns the group's connect
/// failures afterwards.
async fn six_requests(proxy: &Proxy) -> f64 {
    let browser = Browser::firefox();
    for _ in 0..6 {
        browser.echo(&proxy.url("/echo")).await;
    }
    proxy
        .metric(
            "vigil_proxy_upstream_connect_failures_total",
            &[("upstream", "pair")],
        )
        .await
}

#[tokio::test]
async fn a_refused_connection_is_retried_on_the_next_address() {
    let (origin, proxy) = dead_and_live(0).await;

    let failures = six_requests(&proxy).await;

    assert_eq!(origin.hits(), 6);
    // Without ejection round robin keeps offering the dead address.
    assert!(failures >= 2.0, "dead address tried {failures} times");
}

#[tokio::test]
async fn a_dead_address_is_ejected_after_one_failure() {
    let (origin, proxy) = dead_and_live(60).await;

    let failures = six_requests(&proxy).await;

    assert_eq!(origin.hits(), 6);
    assert_eq!(failures, 1.0, "ejected after its first failure");
    assert_eq!(
        proxy
            .metric("vigil_proxy_upstream_errors_total", &[("upstream", "pair")])
            .await,
        0.0,
        "no client saw an error"
    );
}

#[tokio::test]
async fn the_active_health_check_takes_a_dead_address_out_of_rotation() {
    let origin = Origin::start();
    let dead = closed_port();
    let config = Config::new()
        .section(&format!(
            "[[upstreams]]\nname = \"pair\"\naddresses = [\"{dead}\", \"{live}\"]\n\
             [upstreams.health]\nkind = \"tcp\"\ninterval_seconds = 1\neject_seconds = 0\n",
            live = origin.addr()
        ))
        .route(Route::new("app", "/", "pair"));
    let proxy = Proxy::start(&config.render()).await;

    // Without passive ejection only the active check can find the dead one.
    proxy
        .wait_for_metric(
            "vigil_proxy_upstream_healthy_addresses",
            &[("upstream", "pair")],
            |v| v == 1.0,
        )
        .await;
    let before = proxy
        .metric(
            "vigil_proxy_upstream_connect_failures_total",
            &[("upstream", "pair")],
        )
        .await;
    let after = six_requests(&proxy).await;
    assert_eq!(after, before, "no request was sent to the dead address");
}
