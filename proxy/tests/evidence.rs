//! The TLS evidence Vigil judges cannot be exhausted or erased by a client:
//! a flood of handshakes leaves every live connection's fingerprint in
//! place, and a session baselined over TLS replayed on a cleartext listener
//! of the same Vigil is noted (`tls_evidence_lost`), not judged as nothing.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::{CHROME, Ca, Config, Echo, Origin, Proxy, REQUEST_TIMEOUT, Route, free_addr};
use tokio::io::AsyncWriteExt;

/// Handshakes in the flood; `VIGIL_FLOOD_HANDSHAKES` raises it for a
/// longer run (the closing note's 100,000).
fn flood_size() -> usize {
    std::env::var("VIGIL_FLOOD_HANDSHAKES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

/// A client that trusts `ca`, as the session's owner uses it.
fn tls_client(ca: &Ca) -> reqwest::Client {
    common::tls_client_builder()
        .tls_certs_only([ca.root()])
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap()
}

/// The status of one Chrome request with `cookie` over TLS to `https`.
async fn over_tls(ca: &Ca, https: std::net::SocketAddr, cookie: &str) -> u16 {
    tls_client(ca)
        .get(format!("https://localhost:{}/echo", https.port()))
        .header("user-agent", CHROME)
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A real ClientHello for `localhost`, as rustls sends it.
fn client_hello() -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

#[tokio::test]
async fn a_flood_of_handshakes_changes_no_other_sessions_decision() {
    let ca = Ca::new("Test CA");
    let leaf = ca.leaf(&["localhost"]);
    let origin = Origin::start();
    // A small store, so that the flood is many times its size; the flood's
    // concurrency stays below it (more live connections than the store
    // holds is what connection limits are for).
    let config = Config::new()
        .tls_listener("https", free_addr(), true, &[&leaf])
        .section("[fingerprint]\nmax_connections = 256\n")
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app").high("revoke"));
    let proxy = Proxy::start(&config.render()).await;
    let https = proxy.listener("https");
    let target = format!("https://localhost:{}/echo", https.port());
    // The owner keeps one HTTP/2 connection open across the flood.
    let owner = tls_client(&ca);
    let get = || {
        owner
            .get(&target)
            .header("user-agent", CHROME)
            .header("cookie", "session=kept-through-the-flood")
            .send()
    };
    let first = get().await.unwrap();
    assert_eq!(first.status(), 200);

    let hello = Arc::new(client_hello());
    let total = flood_size();
    let mut sent = 0;
    while sent < total {
        let wave: Vec<_> = (0..64.min(total - sent))
            .map(|_| {
                let hello = hello.clone();
                tokio::spawn(async move {
                    let mut s = tokio::net::TcpStream::connect(https).await.unwrap();
                    // Whether the server's reply arrives is no matter: the
                    // hello is read before the handshake goes on.
                    let _ = s.write_all(&hello).await;
                    let _ = s.shutdown().await;
                })
            })
            .collect();
        sent += wave.len();
        for t in wave {
            t.await.unwrap();
        }
    }
    proxy
        .wait_for_metric(
            "vigil_proxy_tls_hello_total",
            &[("outcome", "captured")],
            |v| v >= (total + 1) as f64,
        )
        .await;

    // The owner's connection still has its fingerprint: same decision.
    let after = get().await.unwrap();
    assert_eq!(after.status(), 200);
    let echo = Echo::parse(&after.text().await.unwrap());
    assert_eq!(echo.header("vigil-risk-reasons"), Some(""));
    let m = proxy.metrics().await;
    assert_eq!(
        m.value("vigil_proxy_tls_fingerprint_missing_total", &[]),
        0.0
    );
    assert_eq!(m.value("vigil_engine_sessions_revoked", &[]), 0.0);
}

#[tokio::test]
async fn a_tls_session_replayed_on_a_cleartext_listener_loses_its_evidence_visibly() {
    let ca = Ca::new("Test CA");
    let leaf = ca.leaf(&["localhost"]);
    let origin = Origin::start();
    let config = Config::new()
        .tls_listener("https", free_addr(), true, &[&leaf])
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app").medium("step_up"));
    let proxy = Proxy::start(&config.render()).await;
    let https = proxy.listener("https");
    assert_eq!(over_tls(&ca, https, "session=tls-born").await, 200);
    // The same cookie and headers over cleartext: no TLS evidence at all,
    // which must not pass as "nothing changed".
    let r = common::http_client()
        .get(proxy.url("/echo"))
        .header("user-agent", CHROME)
        .header("cookie", "session=tls-born")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    proxy
        .wait_for_metric(
            "vigil_proxy_decision_reasons_total",
            &[("reason", "tls_evidence_lost")],
            |v| v == 1.0,
        )
        .await;
}

#[tokio::test]
async fn a_cleartext_listener_can_refuse_sessions_born_over_tls() {
    let ca = Ca::new("Test CA");
    let leaf = ca.leaf(&["localhost"]);
    let origin = Origin::start();
    let config = Config::new()
        .http_listener("tls_required_for_tls_sessions = true")
        .tls_listener("https", free_addr(), true, &[&leaf])
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app"));
    let proxy = Proxy::start(&config.render()).await;
    let https = proxy.listener("https");
    assert_eq!(over_tls(&ca, https, "session=tls-only").await, 200);
    let cleartext = |cookie: &'static str| {
        common::http_client()
            .get(proxy.url("/echo"))
            .header("user-agent", CHROME)
            .header("cookie", cookie)
            .send()
    };
    // The same session over cleartext: refused outright.
    assert_eq!(cleartext("session=tls-only").await.unwrap().status(), 403);
    // A session that never saw TLS is served over cleartext as before.
    assert_eq!(cleartext("session=plain").await.unwrap().status(), 200);
    assert_eq!(cleartext("session=plain").await.unwrap().status(), 200);
}
