//! The client behind proxy chains, end to end: a real proxy believing
//! X-Forwarded-For / Forwarded from trusted peers only, and the clean
//! forwarding headers the app receives.
//!
//! Test clients choose their source address on loopback (127.0.0.x), so the
//! TCP peer is real: 127.0.0.2 plays the trusted load balancer, 127.0.0.1 an
//! untrusted client.

// Test code: a failed unwrap is a failed test. clippy.toml allows these in
// #[test] functions; this also covers the helpers in `common`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::IpAddr;

use common::{Browser, Config, Echo, Origin, Proxy, Route};

const BALANCER: [u8; 4] = [127, 0, 0, 2];
const TRUSTED: &str = "[[trusted_proxies]]\nname = \"lb\"\ncidrs = [\"127.0.0.2/32\"]\n\
                       [[trusted_proxies]]\nname = \"zscaler\"\ncidrs = [\"198.51.100.0/24\"]\n";

async fn proxy_believing(headers: &[&str], mode: &str) -> (Origin, Proxy) {
    let origin = Origin::start();
    let config = Config::new()
        .section(TRUSTED)
        .believe(headers)
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app").mode(mode));
    let proxy = Proxy::start(&config.render()).await;
    (origin, proxy)
}

async fn send(proxy: &Proxy, from: [u8; 4], header: (&str, &str), cookie: &str) -> Echo {
    let response = Browser::firefox()
        .cookie(cookie)
        .via_address(IpAddr::from(from))
        .request(&proxy.url("/echo"))
        .header(header.0, header.1)
        .header("x-real-ip", "6.6.6.6")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    Echo::parse(&response.text().await.unwrap())
}

#[tokio::test]
async fn headers_from_an_untrusted_peer_are_never_believed() {
    let (_origin, proxy) = proxy_believing(&["x-forwarded-for"], "enforce").await;

    let echo = send(
        &proxy,
        [127, 0, 0, 1],
        ("x-forwarded-for", "6.6.6.6"),
        "session=a",
    )
    .await;

    assert_eq!(echo.header("vigil-client-ip"), Some("127.0.0.1"));
    assert_eq!(echo.all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(echo.all("forwarded"), ["for=127.0.0.1;proto=http"]);
    assert!(
        echo.all("x-real-ip").is_empty(),
        "a client-sent X-Real-IP is dropped"
    );
    proxy
        .wait_for_metric(
            "vigil_proxy_client_ip_chain_total",
            &[("outcome", "ignored")],
            |v| v >= 1.0,
        )
        .await;
}

#[tokio::test]
async fn a_trusted_balancer_hands_over_the_client_and_forged_entries_are_dropped() {
    let (_origin, proxy) = proxy_believing(&["x-forwarded-for"], "enforce").await;

    let echo = send(
        &proxy,
        BALANCER,
        ("x-forwarded-for", "6.6.6.6, 203.0.113.9"),
        "session=a",
    )
    .await;

    assert_eq!(echo.header("vigil-client-ip"), Some("203.0.113.9"));
    assert_eq!(echo.all("x-forwarded-for"), ["203.0.113.9, 127.0.0.2"]);
    assert_eq!(
        echo.all("forwarded"),
        ["for=203.0.113.9, for=127.0.0.2;proto=http"]
    );
}

#[tokio::test]
async fn a_zscaler_egress_change_is_not_a_new_client_but_a_new_client_is() {
    let (_origin, proxy) = proxy_believing(&["x-forwarded-for"], "enforce").await;
    let via = |egress: &str, client: &str| format!("{client}, {egress}");

    let first = send(
        &proxy,
        BALANCER,
        ("x-forwarded-for", &via("198.51.100.10", "203.0.113.9")),
        "session=z",
    )
    .await;
    let moved = send(
        &proxy,
        BALANCER,
        ("x-forwarded-for", &via("198.51.100.20", "203.0.113.9")),
        "session=z",
    )
    .await;

    assert_eq!(first.header("vigil-client-ip"), Some("203.0.113.9"));
    assert_eq!(moved.header("vigil-client-ip"), Some("203.0.113.9"));
    assert_eq!(moved.header("vigil-risk-level"), Some("low"));
    assert_eq!(moved.header("vigil-risk-reasons"), Some(""));

    let other = send(
        &proxy,
        BALANCER,
        ("x-forwarded-for", &via("198.51.100.20", "192.0.2.50")),
        "session=z",
    )
    .await;
    assert_eq!(other.header("vigil-client-ip"), Some("192.0.2.50"));
    assert_eq!(other.header("vigil-risk-reasons"), Some("ip_changed"));
}

#[tokio::test]
async fn forwarded_with_ipv6_and_ports_is_read() {
    let (_origin, proxy) = proxy_believing(&["forwarded"], "enforce").await;

    let echo = send(
        &proxy,
        BALANCER,
        (
            "forwarded",
            "for=\"[2001:db8::7]:4711\";proto=https, for=198.51.100.10",
        ),
        "session=a",
    )
    .await;

    assert_eq!(echo.header("vigil-client-ip"), Some("2001:db8::7"));
    assert_eq!(
        echo.all("x-forwarded-for"),
        ["2001:db8::7, 198.51.100.10, 127.0.0.2"]
    );
}

#[tokio::test]
async fn a_listener_believes_only_the_headers_it_is_told_to() {
    let (_origin, proxy) = proxy_believing(&["forwarded"], "enforce").await;

    let echo = send(
        &proxy,
        BALANCER,
        ("x-forwarded-for", "203.0.113.9"),
        "session=a",
    )
    .await;

    // The balancer is trusted but X-Forwarded-For is not believed here: a
    // trusted peer with no believed chain is itself the client.
    assert_eq!(echo.header("vigil-client-ip"), Some("127.0.0.2"));
}

#[tokio::test]
async fn unjudged_routes_still_get_clean_forwarding_headers() {
    let (_origin, proxy) = proxy_believing(&["x-forwarded-for"], "off").await;

    let echo = send(
        &proxy,
        [127, 0, 0, 1],
        ("x-forwarded-for", "6.6.6.6"),
        "session=a",
    )
    .await;

    assert_eq!(echo.header("vigil-client-ip"), Some("127.0.0.1"));
    assert_eq!(echo.all("x-forwarded-for"), ["127.0.0.1"]);
    assert!(
        echo.header("vigil-risk-level").is_none(),
        "off routes are not judged"
    );
}

/// A proxy whose only trusted set `lb` is read from `lb.txt` (with
/// `contents`) in the returned directory, checked for change every second.
async fn trusting_file(contents: &str) -> (tempfile::TempDir, Origin, Proxy) {
    let origin = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("lb.txt");
    std::fs::write(&list, contents).unwrap();
    let config = Config::new()
        .section(&format!(
            "[[trusted_proxies]]\nname = \"lb\"\nfile = {:?}\n",
            list.display().to_string()
        ))
        .believe(&["x-forwarded-for"])
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app"));
    let text = config
        .render()
        .replace("[server]\n", "[server]\nfile_check_seconds = 1\n");
    let proxy = Proxy::start(&text).await;
    (dir, origin, proxy)
}

#[tokio::test]
async fn a_changed_trusted_proxy_file_is_reloaded() {
    let (dir, _origin, proxy) = trusting_file("# not our balancer yet\n127.0.0.3\n").await;
    let list = dir.path().join("lb.txt");
    let before = send(
        &proxy,
        BALANCER,
        ("x-forwarded-for", "203.0.113.9"),
        "session=a",
    )
    .await;
    assert_eq!(before.header("vigil-client-ip"), Some("127.0.0.2"));

    std::fs::write(&list, "127.0.0.2\n").unwrap();
    proxy
        .wait_for_metric(
            "vigil_proxy_reloads_total",
            &[("source", "trusted_proxies"), ("result", "reloaded")],
            |v| v >= 1.0,
        )
        .await;

    let after = send(
        &proxy,
        BALANCER,
        ("x-forwarded-for", "203.0.113.9"),
        "session=a",
    )
    .await;
    assert_eq!(after.header("vigil-client-ip"), Some("203.0.113.9"));
}

#[tokio::test]
async fn a_broken_trusted_proxy_file_keeps_the_old_sets() {
    let (dir, _origin, proxy) = trusting_file("127.0.0.2\n").await;
    let list = dir.path().join("lb.txt");

    std::fs::write(&list, "127.0.0.2\nthis is not a network\n").unwrap();
    proxy
        .wait_for_metric(
            "vigil_proxy_reloads_total",
            &[("source", "trusted_proxies"), ("result", "failed")],
            |v| v >= 1.0,
        )
        .await;

    let echo = send(
        &proxy,
        BALANCER,
        ("x-forwarded-for", "203.0.113.9"),
        "session=a",
    )
    .await;
    assert_eq!(
        echo.header("vigil-client-ip"),
        Some("203.0.113.9"),
        "old sets still in force"
    );
    proxy.wait_for_log("this is not a network").await;
}
