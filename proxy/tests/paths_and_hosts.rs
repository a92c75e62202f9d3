//! Issue 10, written as the attacks (STYLE.md 19): a client must not be
//! able to choose which route judges its request. Every test replays a
//! stolen session cookie from another browser through a path or a name
//! that an app would read one way and a naive proxy another, and asserts
//! Vigil's exact answer — never the app's 200.

// Test code: a failed unwrap is a failed test. clippy.toml allows these in
// #[test] functions; this also covers the helpers in `common`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::{Browser, CHROME, Ca, Config, FIREFOX, Leaf, Origin, Proxy, Route, curl, raw_get};

const REQUEST_ERRORS: &str = "vigil_proxy_request_errors_total";

/// `/static` served unjudged (`mode = "off"`), everything else enforced;
/// one app behind both. The owner has opened `session=alice` with Firefox.
async fn static_off_app_enforced() -> (Origin, Proxy) {
    let origin = Origin::start();
    let config = Config::new()
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app").high("block"))
        .route(Route::new("static", "/static", "app").mode("off"));
    let proxy = Proxy::start(&config.render()).await;
    Browser::firefox()
        .cookie("session=alice")
        .echo(&proxy.url("/echo"))
        .await;
    (origin, proxy)
}

/// The thief's request: the stolen cookie from another browser, the path
/// exactly as written.
async fn replay(proxy: &Proxy, path: &str) -> (Option<u16>, String) {
    let ua = format!("User-Agent: {CHROME}");
    let response = raw_get(
        proxy.addr(),
        path,
        &[
            ua.as_bytes(),
            b"Cookie: session=alice",
            b"Accept: application/json",
        ],
    )
    .await;
    (response.status, response.text())
}

#[tokio::test]
async fn dot_segments_through_an_off_route_are_refused_not_forwarded() {
    let (origin, proxy) = static_off_app_enforced().await;
    let hits = origin.hits();

    for path in [
        "/static/../echo",
        "/static/%2e%2e/echo",
        "/static/%2E%2E/echo",
        "/static/.%2e/echo",
        "/static/..%2fecho",
        "/static/..%2Fecho",
        "/static/%252e%252e/echo",
        "/static/%25252e%25252e/echo",
        "/static/..;/echo",
        "/static/..;jsessionid=x/echo",
        "/static/..%3b/echo",
        "/static/..%5cecho",
        "/static/..%255cecho",
        "/static//../echo",
        "/static/./../echo",
        "/st%61tic/x",
        "/echo/../static/x",
        "//static/x",
    ] {
        let (status, body) = replay(&proxy, path).await;
        assert_eq!(status, Some(400), "{path}: {body}");
        assert!(
            body.contains("\"error\":\"bad_path\"")
                && body.contains("\"reason\":\"ambiguous_path\""),
            "{path}: {body}"
        );
    }
    assert_eq!(origin.hits(), hits, "no variant reached the app");
    proxy
        .wait_for_metric(
            REQUEST_ERRORS,
            &[("code", "ambiguous_path"), ("outcome", "refused")],
            |v| v == 18.0,
        )
        .await;
}

#[tokio::test]
async fn a_nul_in_the_path_is_refused_however_encoded() {
    let (origin, proxy) = static_off_app_enforced().await;
    let hits = origin.hits();

    for path in ["/static/%00/../echo", "/echo%00.js", "/static/x%2500"] {
        let (status, body) = replay(&proxy, path).await;
        assert_eq!(status, Some(400), "{path}: {body}");
        assert!(
            body.contains("\"reason\":\"nul_in_path\""),
            "{path}: {body}"
        );
    }
    assert_eq!(origin.hits(), hits);
    proxy
        .wait_for_metric(
            REQUEST_ERRORS,
            &[("code", "nul_in_path"), ("outcome", "refused")],
            |v| v == 3.0,
        )
        .await;
}

#[tokio::test]
async fn dot_segments_in_an_http2_path_are_refused_too() {
    let origin = Origin::start();
    let config = Config::new()
        .h2c()
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app").high("block"))
        .route(Route::new("static", "/static", "app").mode("off"));
    let proxy = Proxy::start(&config.render()).await;
    let hits = origin.hits();

    for path in [
        "/static/../echo",
        "/static/%2e%2e/echo",
        "/static/..%2fecho",
    ] {
        let output = curl(&[
            "--http2-prior-knowledge",
            "--path-as-is",
            "-A",
            CHROME,
            "-b",
            "session=alice",
            "-w",
            "\n%{http_code} %{http_version}",
            &proxy.url(path),
        ])
        .await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(stdout.lines().last(), Some("400 2"), "{path}: {stdout}");
    }
    assert_eq!(origin.hits(), hits);
}

#[tokio::test]
async fn paths_that_pick_the_enforcing_route_either_way_are_judged_there() {
    let (_origin, proxy) = static_off_app_enforced().await;

    // Read raw or normalised, these land on the enforcing route: judged,
    // and the thief is blocked there.
    for path in [
        "/static\\..\\echo",
        "//static/../echo",
        "/st%61tic/../echo",
        "/echo//",
        "/x/../echo",
    ] {
        let (status, body) = replay(&proxy, path).await;
        assert_eq!(status, Some(403), "{path}: {body}");
        assert!(body.contains("\"error\":\"blocked\""), "{path}: {body}");
    }
}

#[tokio::test]
async fn the_app_gets_the_path_as_sent_and_encoded_slashes_keep_working() {
    let (_origin, proxy) = static_off_app_enforced().await;

    for (path, app_sees) in [
        ("/echo/a%2Fb", "GET /echo/a%2Fb"),
        ("/static/a%2Fb.js", "GET /static/a%2Fb.js"),
        ("/static//app.js", "GET /static//app.js"),
        ("/echo/./x?q=/../y", "GET /echo/./x?q=/../y"),
    ] {
        let response = raw_get(proxy.addr(), path, &[]).await;
        assert_eq!(response.status, Some(200), "{path}: {}", response.head);
        assert!(
            response.text().starts_with(app_sees),
            "{path}: {}",
            response.text()
        );
    }
}

// --- Hosts and certificates ---

/// An HTTP/2-capable TLS listener `https` with `certs`, an enforcing route
/// for `enforce.test` and an `off` route for `off.test` in front of one
/// app. The owner has opened `session=alice` on `enforce.test` with
/// Firefox.
async fn fronted_app(ca: &Ca, certs: &[&Leaf]) -> (Origin, Proxy) {
    let origin = Origin::start();
    let config = Config::new()
        .tls_listener("https", common::free_addr(), true, certs)
        .upstream("app", origin.addr())
        .route(
            Route::new("enforce", "/", "app")
                .hosts(&["enforce.test"])
                .high("block"),
        )
        .route(
            Route::new("off", "/", "app")
                .hosts(&["off.test"])
                .mode("off"),
        );
    let proxy = Proxy::start(&config.render()).await;
    let https = proxy.listener("https");
    let (status, body) = over_tls(ca, https, "enforce.test", None, FIREFOX, "--http2").await;
    assert_eq!(status, "200", "the owner's first request: {body}");
    (origin, proxy)
}

/// curl with `session=alice` as `user_agent`: TLS to `sni` at `addr`,
/// with `Host`/`:authority` `host` when given (`sni` otherwise), in
/// `version` (`--http1.1` or `--http2`). Returns the status and body.
async fn over_tls(
    ca: &Ca,
    addr: SocketAddr,
    sni: &str,
    host: Option<&str>,
    user_agent: &str,
    version: &str,
) -> (String, String) {
    let resolve = format!("{sni}:{}:127.0.0.1", addr.port());
    let cacert = ca.pem_path();
    let url = format!("https://{sni}:{}/echo", addr.port());
    let host_header = host.map(|h| format!("Host: {h}"));
    let mut args = vec![
        version,
        "--cacert",
        cacert.to_str().unwrap(),
        "--resolve",
        &resolve,
        "-A",
        user_agent,
        "-b",
        "session=alice",
        "-H",
        "Accept: application/json",
        "-w",
        "\n%{http_code} %{http_version}",
    ];
    if let Some(h) = &host_header {
        args.extend(["-H", h.as_str()]);
    }
    args.push(&url);
    let output = curl(&args).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (body, last) = stdout.rsplit_once('\n').unwrap();
    let (status, http) = last.split_once(' ').unwrap();
    let expected = if version == "--http2" { "2" } else { "1.1" };
    assert_eq!(http, expected, "{stdout}");
    (status.to_owned(), body.to_owned())
}

#[tokio::test]
async fn a_stolen_cookie_fronted_to_an_off_host_gets_421_over_http1_and_http2() {
    let ca = Ca::new("Test CA");
    let enforce = ca.leaf(&["enforce.test"]);
    let off = ca.leaf(&["off.test"]);
    let (origin, proxy) = fronted_app(&ca, &[&enforce, &off]).await;
    let https = proxy.listener("https");
    let hits = origin.hits();

    // Asked for honestly, the thief is judged and blocked.
    let (status, body) = over_tls(&ca, https, "enforce.test", None, CHROME, "--http2").await;
    assert_eq!(status, "403", "{body}");

    // SNI enforce.test, Host (or :authority) off.test: the client would
    // choose the unjudged route.
    for version in ["--http1.1", "--http2"] {
        let (status, body) = over_tls(
            &ca,
            https,
            "enforce.test",
            Some("off.test"),
            CHROME,
            version,
        )
        .await;
        assert_eq!(status, "421", "{version}: {body}");
        assert!(body.contains("\"error\":\"misdirected_request\""), "{body}");
        assert!(body.contains("\"reference\""), "{body}");
    }
    assert_eq!(origin.hits(), hits, "nothing reached the app");
    proxy
        .wait_for_metric(
            REQUEST_ERRORS,
            &[("code", "misdirected"), ("outcome", "refused")],
            |v| v == 2.0,
        )
        .await;

    // Each name on its own connection is served as its route says.
    let (status, _) = over_tls(&ca, https, "off.test", None, CHROME, "--http2").await;
    assert_eq!(status, "200", "the off host, asked for by its own name");
    // The split itself is what `check` warns about; a running proxy says so too.
    proxy
        .wait_for_log("routes of different modes share it")
        .await;
}

#[tokio::test]
async fn hosts_on_the_same_certificate_stay_allowed_for_coalescing_browsers() {
    let ca = Ca::new("Test CA");
    let both = ca.leaf(&["enforce.test", "off.test"]);
    let (_origin, proxy) = fronted_app(&ca, &[&both]).await;
    let https = proxy.listener("https");

    for version in ["--http1.1", "--http2"] {
        let (status, body) = over_tls(
            &ca,
            https,
            "enforce.test",
            Some("off.test"),
            FIREFOX,
            version,
        )
        .await;
        assert_eq!(status, "200", "{version}: {body}");
        assert!(body.starts_with("GET /echo"), "{body}");
    }
    // A name the certificate does not cover is still refused.
    let (status, _) = over_tls(
        &ca,
        https,
        "enforce.test",
        Some("other.test"),
        FIREFOX,
        "--http2",
    )
    .await;
    assert_eq!(status, "421");
}

#[test]
fn check_warns_when_routes_of_different_modes_share_an_upstream() {
    let dir = tempfile::TempDir::new().unwrap();
    let config = Config::new()
        .upstream("app", common::free_addr())
        .route(Route::new("enforce", "/", "app").hosts(&["enforce.test"]))
        .route(
            Route::new("off", "/", "app")
                .hosts(&["off.test"])
                .mode("off"),
        )
        .render()
        .replace(
            "[server]\n",
            &format!(
                "[server]\nstate_dir = {:?}\n",
                dir.path().display().to_string()
            ),
        );
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config).unwrap();

    let output = Command::new(env!("CARGO_BIN_EXE_vigil-proxy"))
        .args(["check", "-c"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "a warning does not fail the check: {stderr}"
    );
    assert!(
        stderr.contains("warning: ")
            && stderr.contains("upstreams \"app\": routes of different modes share it")
            && stderr.contains("\"enforce\" (mode enforce, enforce.test, path /)")
            && stderr.contains("\"off\" (mode off, off.test, path /)"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&output.stdout).ends_with(": ok\n"));
}
