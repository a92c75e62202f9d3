//! The TLS fingerprint end to end: real clients (curl, Python `requests`,
//! `curl_cffi` impersonating Chrome, headless Chromium) over real TLS
//! through the proxy; the JA4 per connection, shared by HTTP/2 streams;
//! replay detection by JA4 alone; fingerprints from trusted balancers.

// Test code: a failed unwrap is a failed test. clippy.toml allows these in
// #[test] functions; this also covers the helpers in `common`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;

use common::{
    Browser, CHROME, Ca, Config, Echo, Origin, Proxy, REQUEST_TIMEOUT, Route, curl, free_addr,
};
use tokio::io::AsyncWriteExt;

/// The JA4 `a` part: transport, version, SNI, counts, ALPN.
fn looks_like_ja4(s: &str) -> bool {
    let parts: Vec<&str> = s.split('_').collect();
    parts.len() == 3
        && parts[0].len() == 10
        && parts[1].len() == 12
        && parts[2].len() == 12
        && parts[1..]
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A proxy with a TLS listener `https` for `localhost` (HTTP/2 offered)
/// routing everything to an echo origin; `extra` is appended to the config.
async fn tls_proxy(ca: &Ca, extra: &str) -> (Origin, Proxy) {
    let leaf = ca.leaf(&["localhost"]);
    let origin = Origin::start();
    let config = Config::new()
        .tls_listener("https", free_addr(), true, &[&leaf])
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app"))
        .section(extra);
    let proxy = Proxy::start(&config.render()).await;
    (origin, proxy)
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("https://localhost:{}{path}", addr.port())
}

/// What a client got back: the status and, for 200, what the app saw.
#[derive(Debug)]
struct Seen {
    status: u16,
    body: String,
}

impl Seen {
    fn ja4(&self) -> String {
        assert_eq!(self.status, 200, "{}", self.body);
        let ja4 = Echo::parse(&self.body)
            .header("vigil-ja4")
            .unwrap_or_else(|| panic!("no Vigil-JA4 reached the app: {}", self.body))
            .to_owned();
        assert!(looks_like_ja4(&ja4), "{ja4}");
        ja4
    }
}

/// Runs a blocking client command; its stdout is `STATUS\nBODY`.
async fn run(mut cmd: Command) -> Seen {
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, body) = stdout.split_once('\n').unwrap_or((&stdout, ""));
    Seen {
        status: status.trim().parse().unwrap(),
        body: body.to_owned(),
    }
}

async fn with_curl(ca: &Ca, addr: SocketAddr, ua: &str, cookie: Option<&str>) -> Seen {
    let cacert = ca.pem_path();
    let mut args = vec![
        "--cacert",
        cacert.to_str().unwrap(),
        "-A",
        ua,
        "-w",
        "%{http_code}\n",
        "-o",
        "/dev/stdout",
    ];
    let cookie_arg;
    if let Some(c) = cookie {
        cookie_arg = c.to_owned();
        args.extend(["-b", &cookie_arg]);
    }
    let target = url(addr, "/echo");
    args.push(&target);
    let out = curl(&args).await;
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Body first, status code last.
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.trim_end().rsplit_once('\n').unwrap_or(("", &text));
    Seen {
        status: status.trim().parse().unwrap(),
        body: body.to_owned(),
    }
}

/// Python: `requests` (urllib3 over the ssl module) or `curl_cffi`
/// impersonating Chrome (BoringSSL with Chrome's hello).
async fn with_python(lib: &str, ca: &Ca, addr: SocketAddr, ua: &str, cookie: Option<&str>) -> Seen {
    let script = r#"
import sys
lib, url, ca, ua, cookie = sys.argv[1:6]
headers = {"User-Agent": ua}
if cookie:
    headers["Cookie"] = cookie
if lib == "requests":
    import requests
    r = requests.get(url, headers=headers, verify=ca, timeout=10)
else:
    from curl_cffi import requests
    r = requests.get(url, headers=headers, verify=ca, timeout=10, impersonate="chrome")
print(r.status_code)
print(r.text, end="")
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script, lib, &url(addr, "/echo")])
        .arg(ca.pem_path())
        .args([ua, cookie.unwrap_or("")]);
    run(cmd).await
}

/// Headless Chromium with a profile of its own, printing the DOM of
/// `/echo` at `addr` (or giving up after `timeout_ms`).
fn chromium(addr: SocketAddr, profile: &std::path::Path, timeout_ms: u128) -> Command {
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        // The test CA is not in Chromium's store; the handshake is real.
        "--ignore-certificate-errors",
        &format!("--timeout={timeout_ms}"),
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(["--dump-dom", &url(addr, "/echo")]);
    cmd
}

/// Headless Chromium loads the echo page and prints its DOM.
async fn with_chromium(addr: SocketAddr) -> Seen {
    let profile = tempfile::TempDir::new().unwrap();
    let mut cmd = chromium(addr, profile.path(), REQUEST_TIMEOUT.as_millis());
    let out = tokio::task::spawn_blocking(move || {
        let out = cmd.output().unwrap();
        drop(profile);
        out
    })
    .await
    .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && dom.contains("GET /echo"),
        "chromium: {dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The text/plain echo is shown inside <pre>; header lines survive as is.
    let text = dom
        .split_once("<pre")
        .and_then(|(_, rest)| rest.split_once('>'))
        .map_or(dom.as_str(), |(_, rest)| rest);
    let text = text.split("</pre>").next().unwrap_or_default();
    Seen {
        status: 200,
        body: text.to_owned(),
    }
}

#[tokio::test]
async fn each_real_client_has_a_stable_ja4_and_they_differ() {
    let ca = Ca::new("Test CA");
    let (_origin, proxy) = tls_proxy(&ca, "").await;
    let https = proxy.listener("https");

    let mut by_client = Vec::new();
    // Each run is a new process, so a new connection and a new hello
    // (fresh random, session id and key shares; Chrome-style clients also
    // permute their extension order).
    let curl = [
        with_curl(&ca, https, CHROME, None).await.ja4(),
        with_curl(&ca, https, CHROME, None).await.ja4(),
    ];
    by_client.push(("curl", curl));
    let requests = [
        with_python("requests", &ca, https, CHROME, None)
            .await
            .ja4(),
        with_python("requests", &ca, https, CHROME, None)
            .await
            .ja4(),
    ];
    by_client.push(("requests", requests));
    let cffi = [
        with_python("curl_cffi", &ca, https, CHROME, None)
            .await
            .ja4(),
        with_python("curl_cffi", &ca, https, CHROME, None)
            .await
            .ja4(),
    ];
    by_client.push(("curl_cffi", cffi));
    let chromium = [
        with_chromium(https).await.ja4(),
        with_chromium(https).await.ja4(),
    ];
    by_client.push(("chromium", chromium));

    for (name, [a, b]) in &by_client {
        assert_eq!(a, b, "{name}: JA4 changed between connections");
        // Every one sent SNI (`d`) over TCP (`t`).
        assert!(a.starts_with('t') && a.as_bytes()[3] == b'd', "{name}: {a}");
    }
    // curl, Python's ssl module and Chromium are three TLS stacks.
    let (curl, requests, cffi, chromium) = (
        &by_client[0].1[0],
        &by_client[1].1[0],
        &by_client[2].1[0],
        &by_client[3].1[0],
    );
    let natives: HashSet<&String> = [curl, requests, chromium].into_iter().collect();
    assert_eq!(natives.len(), 3, "clients share a JA4: {by_client:?}");
    // curl_cffi is curl with Chrome's hello: not curl's JA4, nor Python's.
    // (It exists to match Chrome's, and it does match Chromium's on this
    // machine: JA4 alone cannot tell an impersonator from the browser; the
    // network and the HTTP traits must.)
    assert_ne!(cffi, curl, "{by_client:?}");
    assert_ne!(cffi, requests, "{by_client:?}");
    assert_eq!(&cffi[..4], &chromium[..4], "{by_client:?}");
    // Chromium offers HTTP/2 first by ALPN, urllib3 only HTTP/1.1: the JA4
    // `a` part says so.
    assert_eq!(&chromium[8..10], "h2", "{by_client:?}");
    assert_eq!(&requests[8..10], "h1", "{by_client:?}");

    let captured = proxy
        .metric("vigil_proxy_tls_hello_total", &[("outcome", "captured")])
        .await;
    assert!(captured >= 8.0, "{captured}");
}

#[tokio::test]
async fn http2_streams_on_one_connection_share_its_fingerprint() {
    let ca = Ca::new("Test CA");
    let (_origin, proxy) = tls_proxy(&ca, "").await;
    let https = proxy.listener("https");
    let client = common::tls_client_builder()
        .tls_certs_only([ca.root()])
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap();
    let target = url(https, "/echo");

    // One request opens the connection; twenty more are multiplexed on it.
    let first = client
        .get(&target)
        .header("user-agent", CHROME)
        .header("cookie", "session=h2-session")
        .send()
        .await
        .unwrap();
    assert_eq!(first.version(), reqwest::Version::HTTP_2);
    let first = Echo::parse(&first.text().await.unwrap())
        .header("vigil-ja4")
        .map(str::to_owned);
    let requests = (0..20).map(|_| {
        let client = client.clone();
        let target = target.clone();
        async move {
            let r = client
                .get(&target)
                .header("user-agent", CHROME)
                .header("cookie", "session=h2-session")
                .send()
                .await
                .unwrap();
            assert_eq!(r.version(), reqwest::Version::HTTP_2);
            Echo::parse(&r.text().await.unwrap())
                .header("vigil-ja4")
                .map(str::to_owned)
        }
    });
    let mut seen: Vec<Option<String>> = futures_util::future::join_all(requests).await;
    seen.push(first);
    let distinct: HashSet<&Option<String>> = seen.iter().collect();
    assert_eq!(distinct.len(), 1, "{seen:?}");
    let ja4 = seen[0].as_deref().unwrap();
    assert!(looks_like_ja4(ja4), "{ja4}");
    assert_eq!(&ja4[8..10], "h2");

    // One connection, one hello read, none missing.
    let m = proxy.metrics().await;
    assert_eq!(
        m.value("vigil_proxy_tls_hello_total", &[("outcome", "captured")]),
        1.0
    );
    assert_eq!(
        m.value("vigil_proxy_tls_fingerprint_missing_total", &[]),
        0.0
    );
    assert_eq!(
        m.value(
            "vigil_proxy_decisions_total",
            &[("action", "allow"), ("enforced", "true")]
        ),
        21.0
    );
}

#[tokio::test]
async fn a_replayed_cookie_with_the_victims_user_agent_is_caught_by_ja4_alone() {
    let ca = Ca::new("Test CA");
    let (origin, proxy) = tls_proxy(&ca, "").await;
    let https = proxy.listener("https");
    let cookie = "session=victim-session-token";

    // The victim's browser (curl here) opens the session.
    let victim = with_curl(&ca, https, CHROME, Some(cookie)).await;
    let victim_ja4 = victim.ja4();
    // The thief replays cookie and User-Agent from the same address with
    // another TLS stack: nothing but the JA4 differs.
    let thief = with_python("requests", &ca, https, CHROME, Some(cookie)).await;
    assert_eq!(thief.status, 403, "{}", thief.body);

    let log = proxy.wait_for_log("ja4_mismatch").await;
    let line = log
        .lines()
        .find(|l| l.contains("ja4_mismatch"))
        .unwrap()
        .to_owned();
    assert!(line.contains("action=block"), "{line}");
    assert!(
        !line.contains(&victim_ja4),
        "the thief's JA4 is logged: {line}"
    );
    assert!(line.contains("ja4=t13d"), "{line}");
    assert!(!line.contains("victim-session-token"), "{line}");

    // The victim carries on, and only the victim's requests reached the app.
    let again = with_curl(&ca, https, CHROME, Some(cookie)).await;
    assert_eq!(again.ja4(), victim_ja4);
    assert_eq!(origin.hits(), 2);
    assert_eq!(
        proxy
            .metric(
                "vigil_proxy_decision_reasons_total",
                &[("reason", "ja4_mismatch")]
            )
            .await,
        1.0
    );
}

/// `curl_cffi` (Chrome's hello over BoringSSL) making `n` requests with one
/// curl handle, each on a fresh connection: the first is a full handshake,
/// every later one resumes the TLS session of the one before (libcurl's
/// session cache), so its hello adds pre_shared_key.
async fn with_resuming_python(ca: &Ca, addr: SocketAddr, cookie: &str, n: usize) -> Vec<Seen> {
    let script = r#"
import json, sys
from io import BytesIO
from curl_cffi import Curl, CurlInfo, CurlOpt
url, ca, ua, cookie, n = sys.argv[1:6]
c = Curl()
c.impersonate("chrome")
for _ in range(int(n)):
    buf = BytesIO()
    c.setopt(CurlOpt.URL, url.encode())
    c.setopt(CurlOpt.CAINFO, ca.encode())
    c.setopt(CurlOpt.USERAGENT, ua.encode())
    c.setopt(CurlOpt.COOKIE, cookie.encode())
    c.setopt(CurlOpt.FRESH_CONNECT, 1)
    c.setopt(CurlOpt.WRITEDATA, buf)
    c.perform()
    print(json.dumps({"status": c.getinfo(CurlInfo.RESPONSE_CODE), "body": buf.getvalue().decode()}))
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script, &url(addr, "/echo")])
        .arg(ca.pem_path())
        .args([CHROME, cookie, &n.to_string()]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            Seen {
                status: u16::try_from(v["status"].as_u64().unwrap()).unwrap(),
                body: v["body"].as_str().unwrap().to_owned(),
            }
        })
        .collect()
}

/// The bug load tests found: a client resuming its TLS session sends
/// pre_shared_key (and its hello's size, and with it padding, changes),
/// so its JA4 is not the one of the full handshake its session's baseline
/// was taken on. The owner resuming five times is the owner every time;
/// a thief with the cookie and another stack is refused as before.
#[tokio::test]
async fn the_owner_resuming_tls_passes_and_a_thief_with_the_cookie_still_does_not() {
    let ca = Ca::new("Test CA");
    let (origin, proxy) = tls_proxy(&ca, "").await;
    let https = proxy.listener("https");
    let cookie = "session=resumed-session-token";

    let seen = with_resuming_python(&ca, https, cookie, 6).await;
    assert_eq!(seen.len(), 6);
    let ja4s: Vec<String> = seen.iter().map(Seen::ja4).collect();
    // Five resumed connections: their spec JA4 — what the app and the logs
    // still see — is not the full handshake's, and is one and the same.
    for resumed in &ja4s[1..] {
        assert_ne!(resumed, &ja4s[0], "no resumption happened: {ja4s:?}");
        assert_eq!(resumed, &ja4s[1], "{ja4s:?}");
        // Only the extension count and `c` moved.
        assert_eq!(resumed[..6], ja4s[0][..6], "{ja4s:?}");
        assert_eq!(resumed[8..24], ja4s[0][8..24], "{ja4s:?}");
    }
    let m = proxy.metrics().await;
    assert_eq!(
        m.value(
            "vigil_proxy_decision_reasons_total",
            &[("reason", "ja4_mismatch")]
        ),
        0.0
    );
    assert_eq!(
        m.value(
            "vigil_proxy_decisions_total",
            &[("action", "allow"), ("enforced", "true")]
        ),
        6.0
    );
    assert_eq!(
        m.value("vigil_proxy_tls_hello_total", &[("outcome", "captured")]),
        6.0
    );

    // The thief: the cookie and the User-Agent, from curl.
    let thief = with_curl(&ca, https, CHROME, Some(cookie)).await;
    assert_eq!(thief.status, 403, "{}", thief.body);
    proxy
        .wait_for_metric(
            "vigil_proxy_decision_reasons_total",
            &[("reason", "ja4_mismatch")],
            |v| v == 1.0,
        )
        .await;
    assert_eq!(origin.hits(), 6);
}

#[tokio::test]
async fn the_ja4_header_to_the_app_can_be_turned_off() {
    let ca = Ca::new("Test CA");
    let (_origin, proxy) = tls_proxy(&ca, "[fingerprint]\nto_app = false\n").await;
    let seen = with_curl(&ca, proxy.listener("https"), CHROME, None).await;
    assert_eq!(seen.status, 200);
    assert_eq!(Echo::parse(&seen.body).header("vigil-ja4"), None);
}

#[tokio::test]
async fn a_hello_that_never_completes_is_timed_out_and_the_listener_keeps_serving() {
    let ca = Ca::new("Test CA");
    let (_origin, proxy) = tls_proxy(&ca, "[fingerprint]\nhello_timeout_ms = 200\n").await;
    let https = proxy.listener("https");

    // A record header announcing 512 bytes, then nothing.
    let mut stalled = tokio::net::TcpStream::connect(https).await.unwrap();
    stalled.write_all(&[22, 3, 1, 2, 0, 1, 0]).await.unwrap();
    // Not TLS at all.
    let mut garbage = tokio::net::TcpStream::connect(https).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();

    proxy
        .wait_for_metric(
            "vigil_proxy_tls_hello_total",
            &[("outcome", "timeout")],
            |v| v >= 1.0,
        )
        .await;
    proxy
        .wait_for_metric(
            "vigil_proxy_tls_hello_total",
            &[("outcome", "unreadable")],
            |v| v >= 1.0,
        )
        .await;
    let seen = with_curl(&ca, https, CHROME, None).await;
    assert_eq!(seen.status, 200);
    drop((stalled, garbage));
}

/// A cleartext proxy behind a "CDN" at 127.0.0.2 that passes the client's
/// JA4 and JA3 in headers.
async fn behind_cdn() -> (Origin, Proxy) {
    let origin = Origin::start();
    let config = Config::new()
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app"))
        .section(
            r#"
[[trusted_proxies]]
name = "cdn"
cidrs = ["127.0.0.2/32"]

[fingerprint]
upstream_ja4_header = "cloudfront-viewer-ja4-fingerprint"
upstream_ja3_header = "cloudfront-viewer-ja3-fingerprint"
upstream_trusted = ["cdn"]
"#,
        );
    let proxy = Proxy::start(&config.render()).await;
    (origin, proxy)
}

const JA4_A: &str = "t13d1516h2_8daaf6152771_02713d6af862";
const JA4_B: &str = "t13d3112h2_e8f1e7e78f70_6bebaf5329ac";
const JA3: &str = "e7d705a3286e19ea42f587b344ee6865";

/// A request through the "CDN" address `ip` claiming the client's `ja4`.
async fn from(ip: &str, ja4: &str, url: &str) -> (u16, Echo) {
    let r = Browser::new(CHROME)
        .via_address(ip.parse::<IpAddr>().unwrap())
        .cookie("session=cdn-session")
        .request(url)
        .header("cloudfront-viewer-ja4-fingerprint", ja4)
        .header("cloudfront-viewer-ja3-fingerprint", JA3)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, Echo::parse(&r.text().await.unwrap()))
}

#[tokio::test]
async fn fingerprints_from_a_trusted_balancer_are_believed_and_stripped() {
    let (_origin, proxy) = behind_cdn().await;
    let url = proxy.url("/echo");

    let (status, echo) = from("127.0.0.2", JA4_A, &url).await;
    assert_eq!(status, 200);
    assert_eq!(echo.header("vigil-ja4"), Some(JA4_A));
    assert_eq!(echo.header("vigil-ja3"), Some(JA3));
    assert_eq!(echo.header("cloudfront-viewer-ja4-fingerprint"), None);
    assert_eq!(echo.header("cloudfront-viewer-ja3-fingerprint"), None);

    // The same session through the CDN from another TLS stack.
    let (status, _) = from("127.0.0.2", JA4_B, &url).await;
    assert_eq!(status, 403);
    proxy.wait_for_log("ja4_mismatch").await;
}

#[tokio::test]
async fn fingerprint_headers_from_anyone_else_are_ignored_and_stripped() {
    let (_origin, proxy) = behind_cdn().await;
    let url = proxy.url("/echo");

    let (status, direct) = from("127.0.0.3", JA4_A, &url).await;
    assert_eq!(status, 200);
    assert_eq!(direct.header("vigil-ja4"), None);
    assert_eq!(direct.header("vigil-ja3"), None);
    assert_eq!(direct.header("cloudfront-viewer-ja4-fingerprint"), None);
    // Claiming another fingerprint later proves nothing either way.
    let (status, _) = from("127.0.0.3", JA4_B, &url).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_bad_fingerprint_section_names_every_problem() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("vigil.toml");
    let config = Config::new()
        .upstream("app", free_addr())
        .route(Route::new("app", "/", "app"))
        .section(
            r#"
[fingerprint]
hello_timeout_ms = 0
max_hello_bytes = 10
upstream_ja4_header = "bad header"
upstream_trusted = ["nobody"]
"#,
        );
    std::fs::write(&path, config.render()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vigil-proxy"))
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for key in [
        "fingerprint.hello_timeout_ms",
        "fingerprint.max_hello_bytes",
        "fingerprint.upstream_ja4_header",
        "fingerprint.upstream_trusted[0]",
    ] {
        assert!(stderr.contains(key), "{key} missing from: {stderr}");
    }
}

/// The first bytes a client sends to a TLS server that never answers: its
/// ClientHello records, read until they parse (or 10 s pass). The client
/// then fails its handshake, which is all this listener wants of it.
async fn capture_hello(client: impl FnOnce(SocketAddr) -> Command) -> Vec<u8> {
    let listener = tokio::net::TcpListener::from_std(common::held_listener()).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cmd = client(addr);
    let child = tokio::task::spawn_blocking(move || cmd.output());
    let read = async {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = tokio::io::AsyncReadExt::read(&mut stream, &mut chunk)
                .await
                .unwrap();
            assert!(n > 0, "the client closed before its hello was whole");
            buf.extend_from_slice(&chunk[..n]);
            if vigil_engine::ClientHello::from_records(&buf).is_ok() {
                return buf;
            }
        }
    };
    let hello = tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .expect("no ClientHello within the timeout");
    // The client gives up on the silent server; its exit status is moot.
    let _ = child.await;
    hello
}

fn python_client(lib: &'static str) -> impl FnOnce(SocketAddr) -> Command {
    move |addr| {
        let script = r#"
import sys
lib, url = sys.argv[1:3]
try:
    if lib == "requests":
        import requests
        requests.get(url, verify=False, timeout=3)
    else:
        from curl_cffi import requests
        requests.get(url, verify=False, timeout=3, impersonate="chrome")
except Exception:
    pass
"#;
        let mut cmd = Command::new("python3");
        cmd.args(["-c", script, lib, &url(addr, "/echo")]);
        cmd
    }
}

/// `vigil-proxy explain --json` for a GET of /echo from 127.0.0.1 with this
/// hello, under `config`.
fn explain_hello(config: &std::path::Path, hello: &[u8]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hello.bin");
    std::fs::write(&file, hello).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vigil-proxy"))
        .arg("explain")
        .arg("-c")
        .arg(config)
        .args([
            "--peer",
            "127.0.0.1",
            "--target",
            "/echo",
            "-H",
            "Host: localhost",
        ])
        .arg("--hello")
        .arg(&file)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `explain` on a hello captured from each real client computes the JA4
/// the running proxy computes for that client's real TLS connection: an
/// operator can record a client's hello and see what Vigil saw.
#[tokio::test]
async fn explain_reads_each_real_clients_captured_hello_as_the_proxy_does() {
    let ca = Ca::new("Test CA");
    let (_origin, proxy) = tls_proxy(&ca, "").await;
    let https = proxy.listener("https");

    let curl_hello = capture_hello(|addr| {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-k", "--max-time", "3", &url(addr, "/echo")]);
        cmd
    })
    .await;
    let requests_hello = capture_hello(python_client("requests")).await;
    let cffi_hello = capture_hello(python_client("curl_cffi")).await;
    let profile = tempfile::TempDir::new().unwrap();
    let chromium_hello = capture_hello(|addr| chromium(addr, profile.path(), 3_000)).await;

    let cases = [
        (
            "curl",
            curl_hello,
            with_curl(&ca, https, CHROME, None).await,
        ),
        (
            "requests",
            requests_hello,
            with_python("requests", &ca, https, CHROME, None).await,
        ),
        (
            "curl_cffi",
            cffi_hello,
            with_python("curl_cffi", &ca, https, CHROME, None).await,
        ),
        ("chromium", chromium_hello, with_chromium(https).await),
    ];
    let mut seen = HashSet::new();
    for (client, hello, live) in cases {
        let report = explain_hello(proxy.config_path(), &hello);
        let live = live.ja4();
        assert_eq!(report["tls"]["ja4"], live.as_str(), "{client}: {report}");
        assert_eq!(report["facts"]["device.ja4"], live.as_str(), "{client}");
        assert!(
            report["tls"]["ja4_r"]
                .as_str()
                .unwrap()
                .starts_with(&live[..10]),
            "{client}: {report}"
        );
        assert_eq!(report["request"]["scheme"], "https", "{client}");
        seen.insert(live);
    }
    // Four TLS stacks; curl_cffi copies Chrome's hello, so at least three
    // fingerprints: the comparison means something.
    assert!(seen.len() >= 3, "{seen:?}");
}
