//! `vigil-proxy demo`: a controller and two nodes with their built-in
//! configs in front of the built-in demo app.

// Test code: a failed unwrap is a failed test. clippy.toml allows these in
// #[test] functions; this also covers the helpers in `common`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Browser, DemoAddrs, Proxy, free_addr};
use reqwest::header::SET_COOKIE;

async fn demo() -> Proxy {
    Proxy::demo(DemoAddrs {
        listen: free_addr(),
        admin: free_addr(),
        origin: free_addr(),
        listen_b: free_addr(),
        admin_b: free_addr(),
        controller: free_addr(),
    })
    .await
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
async fn the_demo_revokes_a_replayed_session_on_one_node_and_the_other_refuses_it() {
    let proxy = demo().await;
    let cookie = log_in(&proxy, &Browser::firefox()).await;
    let owner = Browser::firefox().cookie(&cookie);
    let node_b = |path: &str| proxy.url_of("demo-node-b", path);
    assert_eq!(owner.get(&proxy.url("/")).await.status(), 200);
    assert_eq!(owner.get(&node_b("/")).await.status(), 200);

    // The stolen cookie replayed on node A from another device: revoked.
    let replay = Browser::chrome().cookie(&cookie).get(&proxy.url("/")).await;
    assert_eq!(replay.status(), 303);
    proxy
        .wait_for_metric(
            "vigil_proxy_decisions_total",
            &[("action", "revoke"), ("enforced", "true")],
            |v| v >= 1.0,
        )
        .await;
    // Node B hears of it through the controller and refuses the owner's
    // cookie too.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = owner.get(&node_b("/")).await.status();
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            tokio::time::Instant::now() < deadline,
            "node B never refused it"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(owner.get(&proxy.url("/")).await.status(), 401);
}
