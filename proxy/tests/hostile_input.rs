//! Requests no browser sends, over a raw socket: each is answered (refused,
//! or forwarded where the route's policy says so) and the proxy keeps
//! serving — no crash, no hang.

// Test code: a failed unwrap is a failed test. clippy.toml allows these in
// #[test] functions; this also covers the helpers in `common`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Browser, Config, Origin, Proxy, RawResponse, Route, raw_exchange, raw_get};

const REQUEST_ERRORS: &str = "vigil_proxy_request_errors_total";

/// An origin behind a proxy whose only route has the given `on_error`, with
/// explicit limits so the tests do not depend on defaults.
async fn proxy_with_on_error(on_error: &str) -> (Origin, Proxy) {
    let origin = Origin::start();
    let config = Config::new()
        .section("[limits]\nmax_cookies = 200\nmax_credential_bytes = 4096")
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app").on_error(on_error));
    let proxy = Proxy::start(&config.render()).await;
    (origin, proxy)
}

/// A normal request still gets through, and the process is still up.
async fn assert_still_serving(proxy: &Proxy) {
    assert!(
        proxy.is_running(),
        "the proxy exited; its log:\n{}",
        proxy.log()
    );
    Browser::firefox()
        .cookie("session=after")
        .echo(&proxy.url("/echo"))
        .await;
}

fn assert_refused(response: &RawResponse) {
    let status = response.status.unwrap_or_else(|| {
        panic!(
            "the connection closed without a response: {:?}",
            response.head
        )
    });
    assert!(
        (400..500).contains(&status),
        "expected a 4xx, got {status}: {}",
        response.head
    );
}

fn thousand_cookies() -> Vec<u8> {
    let cookies: Vec<String> = (0..1000).map(|i| format!("c{i}=v{i}")).collect();
    format!("Cookie: session=alice; {}", cookies.join("; ")).into_bytes()
}

#[tokio::test]
async fn malformed_cookie_syntax_is_skipped_and_the_request_forwarded() {
    let (_origin, proxy) = proxy_with_on_error("closed").await;

    let response = raw_get(proxy.addr(), "/echo", &[b"Cookie: ;;;==; session"]).await;

    assert_eq!(response.status, Some(200), "{}", response.head);
    assert!(response.text().starts_with("GET /echo"));
    assert_still_serving(&proxy).await;
}

#[tokio::test]
async fn invalid_utf8_in_a_header_value_is_forwarded() {
    let (_origin, proxy) = proxy_with_on_error("closed").await;

    let response = raw_get(
        proxy.addr(),
        "/echo",
        &[
            b"User-Agent: Mozilla/5.0 \xff\xfe\xc3 Firefox/133.0",
            b"X-Junk: \x80\x81",
        ],
    )
    .await;

    assert_eq!(response.status, Some(200), "{}", response.head);
    assert_still_serving(&proxy).await;
}

#[tokio::test]
async fn a_session_cookie_of_bytes_that_are_not_utf8_is_judged_like_any_other() {
    // Apps read cookie bytes as they come; so does Vigil: such a value is a
    // session like another, not a way onto the fail-open path.
    for on_error in ["closed", "open"] {
        let (origin, proxy) = proxy_with_on_error(on_error).await;
        let owner: &[&[u8]] = &[
            b"Cookie: session=\xff\xfe",
            b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
        ];
        let response = raw_get(proxy.addr(), "/echo", owner).await;
        assert_eq!(response.status, Some(200), "{on_error}: {}", response.head);
        let hits = origin.hits();
        let thief: &[&[u8]] = &[
            b"Cookie: session=\xff\xfe",
            b"User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        ];
        let response = raw_get(proxy.addr(), "/echo", thief).await;
        assert_eq!(response.status, Some(403), "{on_error}: {}", response.head);
        assert_eq!(origin.hits(), hits, "{on_error}");
        assert_eq!(proxy.metric(REQUEST_ERRORS, &[]).await, 0.0, "{on_error}");
        assert_still_serving(&proxy).await;
    }
}

#[tokio::test]
async fn a_thousand_cookies_are_refused_when_on_error_is_closed() {
    let (origin, proxy) = proxy_with_on_error("closed").await;

    let response = raw_get(proxy.addr(), "/echo", &[&thousand_cookies()]).await;

    assert_eq!(response.status, Some(400), "{}", response.head);
    assert_eq!(origin.hits(), 0);
    assert_still_serving(&proxy).await;
}

#[tokio::test]
async fn a_thousand_cookies_are_forwarded_when_on_error_is_open() {
    let (_origin, proxy) = proxy_with_on_error("open").await;

    let response = raw_get(proxy.addr(), "/echo", &[&thousand_cookies()]).await;

    assert_eq!(response.status, Some(200), "{}", response.head);
    assert!(response.text().contains("c999=v999"));
    assert_still_serving(&proxy).await;
}

#[tokio::test]
async fn an_overlong_session_credential_is_refused_when_on_error_is_closed() {
    let (origin, proxy) = proxy_with_on_error("closed").await;
    let cookie = format!("Cookie: session={}", "x".repeat(5000));

    let response = raw_get(proxy.addr(), "/echo", &[cookie.as_bytes()]).await;

    assert_eq!(response.status, Some(400), "{}", response.head);
    assert_eq!(origin.hits(), 0);
    assert_still_serving(&proxy).await;
}

#[tokio::test]
async fn an_overlong_bearer_token_is_refused_when_on_error_is_closed() {
    let (origin, proxy) = proxy_with_on_error("closed").await;
    let authorization = format!("Authorization: Bearer {}", "t".repeat(5000));

    let response = raw_get(proxy.addr(), "/echo", &[authorization.as_bytes()]).await;

    assert_eq!(response.status, Some(400), "{}", response.head);
    assert_eq!(origin.hits(), 0);
    assert_still_serving(&proxy).await;
}

#[tokio::test]
async fn a_100_kib_header_is_refused() {
    let (origin, proxy) = proxy_with_on_error("closed").await;
    let big = format!("X-Big: {}", "a".repeat(100 * 1024));

    let response = raw_get(proxy.addr(), "/echo", &[big.as_bytes()]).await;

    assert_eq!(response.status, Some(431), "{response:?}");
    assert_eq!(origin.hits(), 0);
    assert_still_serving(&proxy).await;
}

#[tokio::test]
async fn a_header_larger_than_a_mebibyte_does_not_hang_or_crash_the_proxy() {
    let (origin, proxy) = proxy_with_on_error("closed").await;
    let huge = format!("X-Huge: {}", "a".repeat(2 * 1024 * 1024));

    let response = raw_get(proxy.addr(), "/echo", &[huge.as_bytes()]).await;

    // The proxy may refuse before reading everything; closing a socket with
    // unread bytes resets it, which can discard the 4xx before the client
    // reads it. Either way nothing may reach the app.
    if response.status.is_some() {
        assert_refused(&response);
    }
    assert_eq!(origin.hits(), 0);
    assert_still_serving(&proxy).await;
}

#[tokio::test]
async fn a_header_line_without_a_colon_is_refused() {
    let (origin, proxy) = proxy_with_on_error("closed").await;

    let response = raw_get(proxy.addr(), "/echo", &[b"This-Line-Has-No-Colon"]).await;

    assert_refused(&response);
    assert_eq!(origin.hits(), 0);
    assert_still_serving(&proxy).await;
}

#[tokio::test]
async fn garbage_instead_of_a_request_is_refused() {
    let (origin, proxy) = proxy_with_on_error("closed").await;

    let response = raw_exchange(proxy.addr(), b"\x16\x03\x01\x00\xffnot http at all\r\n\r\n").await;

    if response.status.is_some() {
        assert_refused(&response);
    }
    assert_eq!(origin.hits(), 0);
    assert_still_serving(&proxy).await;
}
