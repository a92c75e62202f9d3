//! Every answer Vigil gives in place of the app — refusals and upstream
//! failures alike — comes from one renderer: an HTML page or JSON by the
//! request's `Accept`, with a reference id that is in the body, in the
//! `Vigil-Reference` header and in the proxy's log (docs/answers.md).

// Test code: a failed unwrap is a failed test. clippy.toml allows these in
// #[test] functions; this also covers the helpers in `common`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{
    BadOrigin, Browser, Config, Misbehaviour, Origin, Proxy, RawResponse, Route, closed_port,
    raw_exchange, raw_get, read_response,
};
use reqwest::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use serde_json::Value;

const FAILURES: &str = "vigil_proxy_failures_total";
const HTML: &str = "text/html; charset=utf-8";
const JSON: &str = "application/json";

/// A proxy logging JSON, with `upstreams` (TOML `[[upstreams]]` tables)
/// and the route `app` for `/` to the upstream called `app`.
async fn proxy_with(upstreams: &str, route: Route) -> Proxy {
    let config = Config::new()
        .section("[log]\nformat = \"json\"")
        .section(upstreams)
        .route(route);
    Proxy::start(&config.render()).await
}

/// `[[upstreams]]` named `app` with one address and `extra` keys.
fn upstream(addr: std::net::SocketAddr, extra: &str) -> String {
    format!("[[upstreams]]\nname = \"app\"\naddresses = [\"{addr}\"]\n{extra}\n")
}

/// An upstream that reads the request and then does `misbehaviour`, behind
/// a proxy; reads from it time out after 300 ms.
async fn behind_bad_origin(misbehaviour: Misbehaviour) -> (BadOrigin, Proxy) {
    let origin = BadOrigin::start(misbehaviour);
    let proxy = proxy_with(
        &upstream(origin.addr(), "read_timeout_ms = 300"),
        Route::new("app", "/", "app"),
    )
    .await;
    (origin, proxy)
}

/// What every answer of Vigil's must be: `status`, the content type of
/// the format asked for, `no-store`, and one reference id in the header and
/// the body. Returns the reference and the body.
async fn vigils_answer(
    response: reqwest::Response,
    status: u16,
    content_type: &str,
) -> (String, String) {
    assert_eq!(response.status(), status);
    let headers = response.headers().clone();
    let get = |name| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(get(CONTENT_TYPE), content_type);
    assert_eq!(get(CACHE_CONTROL), "no-store");
    let reference = get("vigil-reference".parse().unwrap());
    assert_eq!(
        reference.len(),
        16,
        "a 16-hex-digit reference: {reference:?}"
    );
    assert!(reference.bytes().all(|b| b.is_ascii_hexdigit()));
    let body = response.text().await.unwrap();
    if content_type == JSON {
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["reference"], reference.as_str(), "{body}");
        assert_eq!(json["status"], status, "{body}");
    } else {
        assert!(
            body.contains(&format!("Reference: {reference}")),
            "the page names {reference}: {body}"
        );
    }
    (reference, body)
}

/// The proxy's JSON log record that carries `reference`.
async fn log_record(proxy: &Proxy, reference: &str) -> Value {
    let line = proxy.wait_for_log(reference).await;
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not one JSON record ({e}): {line}"))
}

/// Checks the `vigil::error` record of an answered failure.
async fn assert_failure_logged(proxy: &Proxy, reference: &str, code: &str, status: u16) {
    let record = log_record(proxy, reference).await;
    assert_eq!(record["target"], "vigil::error", "{record}");
    assert_eq!(record["reference"], reference, "{record}");
    assert_eq!(record["code"], code, "{record}");
    assert_eq!(record["status"], status, "{record}");
    assert_eq!(record["answered"], true, "{record}");
    assert_eq!(record["route"], "app", "{record}");
    assert_eq!(record["upstream"], "app", "{record}");
}

fn json_body(body: &str) -> Value {
    serde_json::from_str(body).unwrap()
}

fn head_header<'a>(response: &'a RawResponse, name: &str) -> Option<&'a str> {
    response.head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn an_upstream_refusing_connections_gets_vigils_502_as_a_page_or_json() {
    let proxy = proxy_with(&upstream(closed_port(), ""), Route::new("app", "/", "app")).await;
    let browser = Browser::firefox();

    let page = browser
        .request(&proxy.url("/echo"))
        .header(ACCEPT, "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    let (page_ref, body) = vigils_answer(page, 502, HTML).await;
    assert!(body.contains("Application unavailable"), "{body}");
    assert_failure_logged(&proxy, &page_ref, "upstream_unavailable", 502).await;

    let api = browser
        .request(&proxy.url("/echo"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    let (api_ref, body) = vigils_answer(api, 502, JSON).await;
    assert_eq!(json_body(&body)["error"], "upstream_unavailable");
    assert_ne!(api_ref, page_ref, "each failure has its own reference");
    assert_failure_logged(&proxy, &api_ref, "upstream_unavailable", 502).await;

    proxy
        .wait_for_metric(
            FAILURES,
            &[("code", "upstream_unavailable"), ("answered", "true")],
            |v| v == 2.0,
        )
        .await;
    assert!(
        !proxy.log().contains("Fail to proxy"),
        "Pingora's own error record is replaced by Vigil's"
    );
}

#[tokio::test]
async fn an_upstream_that_never_answers_gets_504_after_its_read_timeout() {
    let (_origin, proxy) = behind_bad_origin(Misbehaviour::Silent).await;

    let response = Browser::firefox()
        .request(&proxy.url("/slow"))
        .header(ACCEPT, "application/problem+json")
        .send()
        .await
        .unwrap();

    let (reference, body) = vigils_answer(response, 504, JSON).await;
    assert_eq!(json_body(&body)["error"], "upstream_timeout");
    assert_failure_logged(&proxy, &reference, "upstream_timeout", 504).await;
    proxy
        .wait_for_metric(
            FAILURES,
            &[("code", "upstream_timeout"), ("answered", "true")],
            |v| v == 1.0,
        )
        .await;
}

#[tokio::test]
async fn an_upstream_that_sends_garbage_gets_502() {
    let (_origin, proxy) =
        behind_bad_origin(Misbehaviour::Send(b"this is not HTTP at all\r\n\r\n")).await;

    let response = Browser::firefox().get(&proxy.url("/")).await;

    let (reference, body) = vigils_answer(response, 502, HTML).await;
    assert!(body.contains("Application error"), "{body}");
    assert_failure_logged(&proxy, &reference, "bad_upstream_response", 502).await;
}

#[tokio::test]
async fn an_upstream_that_closes_without_answering_gets_502() {
    let (_origin, proxy) = behind_bad_origin(Misbehaviour::Send(b"")).await;

    let response = Browser::firefox().get(&proxy.url("/")).await;

    let (reference, _) = vigils_answer(response, 502, HTML).await;
    assert_failure_logged(&proxy, &reference, "upstream_closed", 502).await;
}

#[tokio::test]
async fn an_upstream_that_resets_the_connection_gets_502() {
    let (_origin, proxy) = behind_bad_origin(Misbehaviour::Reset).await;

    let response = Browser::firefox()
        .request(&proxy.url("/"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();

    let (reference, body) = vigils_answer(response, 502, JSON).await;
    assert_eq!(json_body(&body)["error"], "upstream_closed");
    assert_failure_logged(&proxy, &reference, "upstream_closed", 502).await;
}

#[tokio::test]
async fn a_failure_after_the_response_began_is_not_answered_but_is_logged() {
    let (_origin, proxy) = behind_bad_origin(Misbehaviour::Send(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100\r\n\r\nonly ten b",
    ))
    .await;

    let response = raw_get(proxy.addr(), "/", &[b"Accept: application/json"]).await;

    // The app's 200 head is what the client got; its body stops short.
    assert_eq!(response.status, Some(200), "{response:?}");
    assert_eq!(head_header(&response, "vigil-reference"), None);
    assert_eq!(response.text(), "only ten b");
    let line = proxy.wait_for_log("\"answered\":false").await;
    let record: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(record["target"], "vigil::error", "{record}");
    assert_eq!(record["status"], 0, "{record}");
    assert_eq!(record["response_started"], true, "{record}");
    assert_eq!(record["upstream"], "app", "{record}");
    let reference = record["reference"].as_str().unwrap();
    assert_eq!(reference.len(), 16, "{record}");
    let code = record["code"].as_str().unwrap().to_owned();
    assert_eq!(code, "upstream_closed", "{record}");
    proxy
        .wait_for_metric(FAILURES, &[("code", &code), ("answered", "false")], |v| {
            v == 1.0
        })
        .await;
}

#[tokio::test]
async fn a_block_is_answered_in_json_when_asked_for() {
    let origin = Origin::start();
    let proxy = proxy_with(&upstream(origin.addr(), ""), Route::new("app", "/", "app")).await;
    Browser::firefox()
        .cookie("session=alice")
        .echo(&proxy.url("/echo"))
        .await;

    let response = Browser::chrome()
        .cookie("session=alice")
        .request(&proxy.url("/echo"))
        .header(ACCEPT, "application/json, text/plain, */*")
        .send()
        .await
        .unwrap();

    let (reference, body) = vigils_answer(response, 403, JSON).await;
    assert_eq!(json_body(&body)["error"], "blocked");
    let record = log_record(&proxy, &reference).await;
    assert_eq!(record["target"], "vigil::decision", "{record}");
    assert_eq!(record["action"], "block", "{record}");
}

#[tokio::test]
async fn a_bearer_step_up_keeps_rfc_9470_and_answers_json() {
    let origin = Origin::start();
    let proxy = proxy_with(
        &upstream(origin.addr(), ""),
        Route::new("app", "/", "app").high("step_up"),
    )
    .await;
    Browser::firefox()
        .bearer("token-alice")
        .echo(&proxy.url("/api"))
        .await;

    let response = Browser::chrome()
        .bearer("token-alice")
        .request(&proxy.url("/api"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();

    let challenge = response.headers()[WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer ")
            && challenge.contains(r#"error="insufficient_user_authentication""#),
        "{challenge}"
    );
    let (reference, body) = vigils_answer(response, 401, JSON).await;
    let json = json_body(&body);
    assert_eq!(json["error"], "insufficient_user_authentication");
    assert_eq!(json["step_up_url"], common::STEP_UP_URL);
    assert_eq!(
        log_record(&proxy, &reference).await["target"],
        "vigil::decision"
    );
}

#[tokio::test]
async fn a_request_no_route_matches_gets_a_reference_in_page_json_and_log() {
    let origin = Origin::start();
    let proxy = proxy_with(
        &upstream(origin.addr(), ""),
        Route::new("app", "/app", "app"),
    )
    .await;

    let page = Browser::firefox().get(&proxy.url("/other")).await;
    let (page_ref, _) = vigils_answer(page, 404, HTML).await;
    let api = Browser::firefox()
        .request(&proxy.url("/other"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    let (api_ref, body) = vigils_answer(api, 404, JSON).await;

    assert_eq!(json_body(&body)["error"], "no_route");
    for reference in [page_ref, api_ref] {
        let record = log_record(&proxy, &reference).await;
        assert_eq!(record["target"], "vigil::error", "{record}");
        assert_eq!(record["code"], "no_route", "{record}");
        assert_eq!(record["status"], 404, "{record}");
    }
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn headers_too_large_are_refused_in_json_when_asked_for() {
    let origin = Origin::start();
    let proxy = proxy_with(&upstream(origin.addr(), ""), Route::new("app", "/", "app")).await;
    let big = format!("X-Big: {}", "a".repeat(100 * 1024));

    let response = raw_get(
        proxy.addr(),
        "/echo",
        &[b"Accept: application/json", big.as_bytes()],
    )
    .await;

    assert_eq!(response.status, Some(431), "{}", response.head);
    assert_eq!(head_header(&response, "content-type"), Some(JSON));
    assert_eq!(head_header(&response, "cache-control"), Some("no-store"));
    let reference = head_header(&response, "vigil-reference").unwrap();
    let json = json_body(&response.text());
    assert_eq!(json["error"], "headers_too_large");
    assert_eq!(json["reference"], reference);
    assert_eq!(
        log_record(&proxy, reference).await["code"],
        "headers_too_large"
    );
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn a_broken_request_body_gets_vigils_400() {
    let origin = Origin::start();
    let proxy = proxy_with(&upstream(origin.addr(), ""), Route::new("app", "/", "app")).await;
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\nnot-a-size\r\nabc\r\n0\r\n\r\n",
        proxy.addr()
    );

    let response = raw_exchange(proxy.addr(), request.as_bytes()).await;

    assert_eq!(response.status, Some(400), "{}", response.head);
    assert_eq!(head_header(&response, "content-type"), Some(JSON));
    let reference = head_header(&response, "vigil-reference").unwrap();
    let json = json_body(&response.text());
    assert_eq!(json["error"], "bad_request");
    assert_eq!(json["reference"], reference);
    let record = log_record(&proxy, reference).await;
    assert_eq!(record["target"], "vigil::error", "{record}");
    assert_eq!(record["code"], "bad_request", "{record}");
    assert_eq!(record["side"], "Downstream", "{record}");
}

#[tokio::test]
async fn an_invalid_request_line_gets_pingoras_bare_400_before_any_of_vigils_code() {
    let origin = Origin::start();
    let proxy = proxy_with(&upstream(origin.addr(), ""), Route::new("app", "/", "app")).await;

    let response = raw_exchange(
        proxy.addr(),
        b"GET / HTTP/1.1 trailing junk\r\nHost: x\r\nAccept: application/json\r\n\r\n",
    )
    .await;

    // Pingora refuses a head it cannot parse while reading it, before any
    // ProxyHttp phase: no Vigil page, no reference (docs/answers.md).
    assert_eq!(response.status, Some(400), "{}", response.head);
    assert_eq!(head_header(&response, "vigil-reference"), None);
    assert_eq!(response.body, b"");
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn a_failure_over_http2_gets_the_same_answer() {
    let config = Config::new()
        .h2c()
        .section("[log]\nformat = \"json\"")
        .section(&upstream(closed_port(), ""))
        .route(Route::new("app", "/", "app"));
    let proxy = Proxy::start(&config.render()).await;
    let client = common::tls_client_builder()
        .http2_prior_knowledge()
        .timeout(common::REQUEST_TIMEOUT)
        .build()
        .unwrap();

    let response = client
        .get(proxy.url("/"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();

    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let (reference, body) = vigils_answer(response, 502, JSON).await;
    assert_eq!(json_body(&body)["error"], "upstream_unavailable");
    assert_failure_logged(&proxy, &reference, "upstream_unavailable", 502).await;
}

// --- Vigil's own answers keep the connection when it is safe ---

/// A connection to `proxy`, and `/app` routed to `origin` (so `/other` has
/// no route: Vigil answers `404` itself, before reading any body).
async fn keep_alive_setup() -> (Origin, Proxy, tokio::net::TcpStream) {
    let origin = Origin::start();
    let proxy = proxy_with(
        &upstream(origin.addr(), ""),
        Route::new("app", "/app", "app"),
    )
    .await;
    let stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    (origin, proxy, stream)
}

/// Writes `bytes` and reads one response, bounded in time.
async fn exchange_on(stream: &mut tokio::net::TcpStream, bytes: &[u8]) -> RawResponse {
    use tokio::io::AsyncWriteExt;
    // The server may answer and close before it has read everything.
    let _ = stream.write_all(bytes).await;
    tokio::time::timeout(std::time::Duration::from_secs(30), read_response(stream))
        .await
        .expect("no response: the proxy hung")
}

/// Whether the server has closed `stream`: a read ends (EOF or reset)
/// without any byte, within a bounded wait.
async fn closed(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut byte = [0u8; 1];
    match tokio::time::timeout(std::time::Duration::from_secs(30), stream.read(&mut byte)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => panic!("the connection neither closed nor sent anything"),
    }
}

fn connection_header(response: &RawResponse) -> Option<&str> {
    head_header(response, "connection")
}

#[tokio::test]
async fn refused_requests_keep_their_connection_for_the_next_request() {
    let (origin, proxy, mut stream) = keep_alive_setup().await;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", proxy.addr());

    let first = exchange_on(&mut stream, get("/other").as_bytes()).await;
    let second = exchange_on(&mut stream, get("/other").as_bytes()).await;
    let third = exchange_on(&mut stream, get("/app/next").as_bytes()).await;

    for refused in [&first, &second] {
        assert_eq!(refused.status, Some(404), "{}", refused.head);
        assert_eq!(connection_header(refused), Some("keep-alive"));
    }
    assert_eq!(third.status, Some(200), "{}", third.head);
    assert!(
        third.text().starts_with("GET /app/next\n"),
        "{}",
        third.text()
    );
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn a_refused_requests_body_is_read_whole_and_never_taken_for_a_request() {
    let (origin, proxy, mut stream) = keep_alive_setup().await;
    // The body looks like a request: read as one, it would reach the app.
    let body = format!(
        "GET /app/smuggled HTTP/1.1\r\nHost: {}\r\n\r\n",
        proxy.addr()
    );
    let post = format!(
        "POST /other HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n{body}",
        proxy.addr(),
        body.len()
    );

    let refused = exchange_on(&mut stream, post.as_bytes()).await;
    let next = exchange_on(
        &mut stream,
        format!("GET /app/next HTTP/1.1\r\nHost: {}\r\n\r\n", proxy.addr()).as_bytes(),
    )
    .await;

    assert_eq!(refused.status, Some(404), "{}", refused.head);
    assert_eq!(connection_header(&refused), Some("keep-alive"));
    assert_eq!(next.status, Some(200), "{}", next.head);
    assert!(
        next.text().starts_with("GET /app/next\n"),
        "{}",
        next.text()
    );
    assert_eq!(origin.hits(), 1, "the body never became a request");
}

#[tokio::test]
async fn a_request_pipelined_behind_a_refused_body_closes_the_connection() {
    let (origin, proxy, mut stream) = keep_alive_setup().await;
    let body = "0123456789";
    let both = format!(
        "POST /other HTTP/1.1\r\nHost: {a}\r\nContent-Length: {}\r\n\r\n{body}\
         GET /app/pipelined HTTP/1.1\r\nHost: {a}\r\n\r\n",
        body.len(),
        a = proxy.addr(),
    );

    let refused = exchange_on(&mut stream, both.as_bytes()).await;

    assert_eq!(refused.status, Some(404), "{}", refused.head);
    // Pingora reads past the body's end and does not reuse such a
    // connection: the pipelined request is never served out of step.
    assert!(closed(&mut stream).await);
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn a_refused_request_with_doubtful_framing_closes_its_connection() {
    let addr_body = "GET /app/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let heads = [
        // Chunked: never drained, whatever its chunks say.
        "Transfer-Encoding: chunked\r\n".to_owned(),
        // Both framings: the classic desync.
        format!(
            "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
            addr_body.len()
        ),
        // Too large to read for nothing.
        format!("Content-Length: {}\r\n", DRAIN_LIMIT + 1),
        // The client waits for a 100 it will never get, or not.
        format!(
            "Content-Length: {}\r\nExpect: 100-continue\r\n",
            addr_body.len()
        ),
    ];
    for extra in heads {
        let (origin, proxy, mut stream) = keep_alive_setup().await;
        let post = format!(
            "POST /other HTTP/1.1\r\nHost: {}\r\n{extra}\r\n",
            proxy.addr()
        );

        let refused = exchange_on(&mut stream, post.as_bytes()).await;
        // The body (a request, read the wrong way) comes after the answer.
        let smuggled = exchange_on(&mut stream, addr_body.as_bytes()).await;

        assert_eq!(refused.status, Some(404), "{extra}: {}", refused.head);
        assert_eq!(connection_header(&refused), Some("close"), "{extra}");
        assert_eq!(smuggled.status, None, "{extra}: {}", smuggled.head);
        assert_eq!(origin.hits(), 0, "{extra}");
    }
}

#[tokio::test]
async fn a_repeated_content_length_is_refused_before_any_body_is_read() {
    let (origin, proxy, mut stream) = keep_alive_setup().await;
    let post = format!(
        "POST /app/x HTTP/1.1\r\nHost: {}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        proxy.addr()
    );

    let refused = exchange_on(&mut stream, post.as_bytes()).await;

    assert_eq!(refused.status, Some(400), "{}", refused.head);
    assert!(closed(&mut stream).await);
    assert_eq!(origin.hits(), 0);
}

/// `respond::DRAIN_MAX_BYTES`: the largest refused body read to keep the
/// connection (docs/answers.md).
const DRAIN_LIMIT: usize = 64 * 1024;
