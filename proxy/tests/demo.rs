//! `vigil-proxy demo`: the proxy with its built-in config in front of the
//! built-in demo app.

// Test code: a failed unwrap is a failed test. clippy.toml allows these in
// #[test] functions; this also covers the helpers in `common`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Browser, Proxy, free_addr};
use reqwest::header::SET_COOKIE;

async fn demo() -> Proxy {
    Proxy::demo(free_addr(), free_addr(), free_addr()).await
}

/// Logs in through the proxy and returns the `session=...` pair it set.
async fn log_in(proxy: &Proxy, browser: &Browser) -> String {
    let response = browser.get(&proxy.url("/login")).await;
    // The demo app answers its login page with 200 and the cookie.
    assert_eq!(response.status(), 200, "GET /login");
    let set_cookie = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("session="))
        .expect("GET /login sets a session cookie");
    set_cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_demo_logs_in_and_serves_the_page_to_its_browser() {
    let proxy = demo().await;

    let cookie = log_in(&proxy, &Browser::firefox()).await;
    let page = Browser::firefox()
        .cookie(&cookie)
        .get(&proxy.url("/"))
        .await;

    assert!(cookie.len() > "session=".len(), "{cookie}");
    assert_eq!(page.status(), 200);
}

#[tokio::test]
async fn the_demo_blocks_a_replayed_session_and_counts_it() {
    let proxy = demo().await;
    let cookie = log_in(&proxy, &Browser::firefox()).await;
    Browser::firefox()
        .cookie(&cookie)
        .get(&proxy.url("/"))
        .await;

    let replay = Browser::chrome().cookie(&cookie).get(&proxy.url("/")).await;

    assert_eq!(replay.status(), 403);
    proxy
        .wait_for_metric("vigil_proxy_decisions_total", &[("action", "block")], |v| {
            v >= 1.0
        })
        .await;
}
