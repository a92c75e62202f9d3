//! Config reload of a running proxy: `SIGHUP`, `vigil-proxy reload`, and
//! the config file watch. New requests get the new config; a bad file
//! changes nothing; settings that need a restart are reported and the rest
//! applies.

// Test code: a failed unwrap is a failed test. clippy.toml allows these in
// #[test] functions; this also covers the helpers in `common`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{
    Browser, Ca, Config, Leaf, Origin, Proxy, REQUEST_TIMEOUT, Route, expected_stream_body,
    free_addr, tls_client_builder,
};
use tokio::time::Instant;

const RELOADS: &str = "vigil_proxy_config_reloads_total";

/// `base` (its ports) in front of `origin`, with one route that answers
/// every request without a session with `low`: `allow` (200) or `block`
/// (403).
fn with_low(base: &Config, origin: &Origin, low: &str) -> String {
    base.clone()
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app").low(low))
        .render()
}

/// A file with two problems: an unknown mode and an unknown key.
fn bad(base: &Config, origin: &Origin) -> String {
    with_low(base, origin, "allow").replace("mode = \"enforce\"", "mode = \"loud\"\nbogus = 1")
}

async fn status(proxy: &Proxy) -> u16 {
    Browser::firefox()
        .get(&proxy.url("/echo"))
        .await
        .status()
        .as_u16()
}

/// Waits until `result` has been counted `n` times.
async fn reloaded(proxy: &Proxy, result: &str, n: usize) {
    let want = n as f64;
    proxy
        .wait_for_metric(RELOADS, &[("result", result)], |v| v == want)
        .await;
}

#[tokio::test]
async fn sighup_applies_a_changed_policy_and_the_proxy_stays_up() {
    let origin = Origin::start();
    let base = Config::new();
    let proxy = Proxy::start(&with_low(&base, &origin, "allow")).await;
    assert_eq!(status(&proxy).await, 200);

    proxy.rewrite_config(&with_low(&base, &origin, "block"));
    proxy.hangup();
    reloaded(&proxy, "applied", 1).await;
    assert_eq!(status(&proxy).await, 403);
    assert!(proxy.is_running(), "SIGHUP ended the proxy");
    assert_eq!(proxy.metric(RELOADS, &[("result", "failed")]).await, 0.0);
}

#[tokio::test]
async fn a_bad_file_changes_nothing_and_every_problem_is_logged() {
    let origin = Origin::start();
    let base = Config::new();
    let proxy = Proxy::start(&with_low(&base, &origin, "block")).await;
    assert_eq!(status(&proxy).await, 403);

    proxy.rewrite_config(&bad(&base, &origin));
    proxy.hangup();
    reloaded(&proxy, "failed", 1).await;
    let mode = proxy.wait_for_log("routes[0].mode").await;
    assert!(mode.contains("WARN"), "{mode}");
    proxy.wait_for_log("routes[0].bogus").await;
    assert_eq!(status(&proxy).await, 403, "the running policy stays");
    assert_eq!(proxy.metric(RELOADS, &[("result", "applied")]).await, 0.0);
}

#[tokio::test]
async fn reloads_under_load_fail_no_request_and_switch_policy_for_new_ones() {
    let origin = Origin::start();
    let base = Config::new();
    let proxy = Proxy::start(&with_low(&base, &origin, "allow")).await;

    // A client that keeps requests going while the config is swapped:
    // bounded in count and time, every answer must be a policy's (200 or
    // 403), never an error.
    let url = proxy.url("/echo");
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(async move {
        let browser = Browser::firefox();
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut ok, mut failed) = (0u32, Vec::new());
        while ok < 100_000 && Instant::now() < deadline && !*stopped.borrow_and_update() {
            match browser.request(&url).send().await {
                Ok(r) if [200, 403].contains(&r.status().as_u16()) => ok += 1,
                Ok(r) => failed.push(format!("status {}", r.status())),
                Err(e) => failed.push(e.to_string()),
            }
        }
        (ok, failed)
    });

    let (mut applied, mut refused) = (0, 0);
    let mut expected = 200;
    for i in 0..20 {
        if i % 2 == 0 {
            expected = if expected == 200 { 403 } else { 200 };
            let low = if expected == 200 { "allow" } else { "block" };
            proxy.rewrite_config(&with_low(&base, &origin, low));
            proxy.hangup();
            applied += 1;
            reloaded(&proxy, "applied", applied).await;
        } else {
            proxy.rewrite_config(&bad(&base, &origin));
            proxy.hangup();
            refused += 1;
            reloaded(&proxy, "failed", refused).await;
        }
        assert_eq!(status(&proxy).await, expected, "after reload {i}");
    }
    stop.send(true).unwrap();
    let (ok, failed) = load.await.unwrap();
    assert_eq!(
        failed,
        Vec::<String>::new(),
        "requests failed during reloads"
    );
    assert!(ok > 0, "the load loop sent nothing");
    assert!(proxy.is_running());
}

#[tokio::test]
async fn the_reload_command_signals_the_proxy_through_its_pid_file() {
    let origin = Origin::start();
    let base = Config::new();
    let proxy = Proxy::start(&with_low(&base, &origin, "allow")).await;
    let reload = || {
        Command::new(env!("CARGO_BIN_EXE_vigil-proxy"))
            .args(["reload", "-c"])
            .arg(proxy.config_path())
            .output()
            .unwrap()
    };

    // A bad file is refused by the command itself; the proxy hears nothing.
    proxy.rewrite_config(&bad(&base, &origin));
    let out = reload();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("routes[0].mode"), "{stderr}");
    assert!(stderr.contains("routes[0].bogus"), "{stderr}");

    proxy.rewrite_config(&with_low(&base, &origin, "block"));
    let out = reload();
    assert!(out.status.success(), "{out:?}");
    reloaded(&proxy, "applied", 1).await;
    assert_eq!(status(&proxy).await, 403);
    assert_eq!(proxy.metric(RELOADS, &[("result", "failed")]).await, 0.0);
}

#[tokio::test]
async fn a_new_listen_address_needs_a_restart_and_the_rest_applies() {
    let origin = Origin::start();
    let base = Config::new();
    let proxy = Proxy::start(&with_low(&base, &origin, "allow")).await;

    let moved = free_addr();
    let next = base
        .clone()
        .http_at(moved)
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app").low("block"));
    proxy.rewrite_config(&next.render());
    proxy.hangup();
    reloaded(&proxy, "partial", 1).await;
    let line = proxy.wait_for_log("needs a restart").await;
    assert!(line.contains("listeners[0].listen"), "{line}");
    assert_eq!(status(&proxy).await, 403, "the policy applies");
    assert!(
        tokio::net::TcpStream::connect(moved).await.is_err(),
        "nothing may listen on the new address before a restart"
    );
}

#[tokio::test]
async fn changed_upstream_addresses_take_effect() {
    let (first, second) = (Origin::start(), Origin::start());
    let base = Config::new();
    let proxy = Proxy::start(&with_low(&base, &first, "allow")).await;
    assert_eq!(status(&proxy).await, 200);
    assert_eq!((first.hits(), second.hits()), (1, 0));

    proxy.rewrite_config(&with_low(&base, &second, "allow"));
    proxy.hangup();
    reloaded(&proxy, "applied", 1).await;
    assert_eq!(status(&proxy).await, 200);
    assert_eq!((first.hits(), second.hits()), (1, 1));
    let healthy = proxy
        .metric(
            "vigil_proxy_upstream_healthy_addresses",
            &[("upstream", "app")],
        )
        .await;
    assert_eq!(healthy, 1.0);
}

#[tokio::test]
async fn a_watched_config_file_reloads_without_a_signal() {
    let origin = Origin::start();
    let base = Config::new().server("watch_config = true\nfile_check_seconds = 1");
    let proxy = Proxy::start(&with_low(&base, &origin, "allow")).await;
    assert_eq!(status(&proxy).await, 200);

    proxy.rewrite_config(&with_low(&base, &origin, "block"));
    reloaded(&proxy, "applied", 1).await;
    assert_eq!(status(&proxy).await, 403);
}

#[tokio::test]
async fn a_request_in_flight_finishes_on_the_config_it_started_with() {
    let (first, second) = (Origin::start(), Origin::start());
    let base = Config::new();
    let proxy = Proxy::start(&with_low(&base, &first, "allow")).await;

    // A response the first origin holds open until released.
    let url = proxy.url("/stream?gated");
    let in_flight = tokio::spawn(async move {
        let response = Browser::firefox().get(&url).await;
        let status = response.status().as_u16();
        (status, response.bytes().await.unwrap().to_vec())
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while first.hits() == 0 {
        assert!(Instant::now() < deadline, "the gated request never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    proxy.rewrite_config(&with_low(&base, &second, "allow"));
    proxy.hangup();
    reloaded(&proxy, "applied", 1).await;
    assert_eq!(status(&proxy).await, 200);
    assert_eq!(second.hits(), 1, "a new request goes to the new upstream");

    first.release_stream();
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        body,
        expected_stream_body(),
        "the old upstream's body, whole"
    );
    assert_eq!(first.hits(), 1);
}

#[tokio::test]
async fn a_reload_serves_new_certificates_to_new_handshakes() {
    // Two issuers: each writes its leaf to a directory of its own.
    let (old_ca, new_ca) = (Ca::new("Old CA"), Ca::new("New CA"));
    let (old, new) = (old_ca.leaf(&["a.test"]), new_ca.leaf(&["a.test"]));
    let origin = Origin::start();
    let (plain, https) = (Config::new(), free_addr());
    let with_cert = |leaf: &Leaf| {
        plain
            .clone()
            .tls_listener("https", https, false, &[leaf])
            .upstream("app", origin.addr())
            .route(Route::new("app", "/", "app"))
            .render()
    };
    // A new client for each request: a new handshake.
    let served = || async {
        let client = tls_client_builder()
            .tls_certs_only([old_ca.root(), new_ca.root()])
            .tls_info(true)
            .timeout(REQUEST_TIMEOUT)
            .resolve("a.test", https)
            .build()
            .unwrap();
        let response = client
            .get(format!("https://a.test:{}/echo", https.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|info| info.peer_certificate())
            .expect("TLS info with the peer certificate")
            .to_vec()
    };
    let proxy = Proxy::start(&with_cert(&old)).await;
    assert_eq!(served().await, old.der());

    proxy.rewrite_config(&with_cert(&new));
    proxy.hangup();
    reloaded(&proxy, "applied", 1).await;
    assert_eq!(served().await, new.der());
}

#[tokio::test]
async fn a_reload_rotates_the_admin_token() {
    let (old, new) = ("0".repeat(32), "1".repeat(32));
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, &old).unwrap();
    let origin = Origin::start();
    let base = Config::new().admin_token_file(&token_file);
    let proxy = Proxy::start(&with_low(&base, &origin, "allow")).await;
    let revoke = |token: &str| {
        let request = reqwest::Client::new()
            .post(format!("http://{}/v1/users/revoke", proxy.admin()))
            .bearer_auth(token)
            .body(r#"{"user": "alice"}"#);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(revoke(&old).await, 200);

    std::fs::write(&token_file, &new).unwrap();
    proxy.hangup();
    reloaded(&proxy, "applied", 1).await;
    assert_eq!(revoke(&old).await, 401, "the old token is refused");
    assert_eq!(revoke(&new).await, 200);
}
