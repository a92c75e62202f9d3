//! The session Vigil judges is the session the app honours, written as the
//! attacks that broke it (issue: trust boundary, items 1, 2, 3, 7 and the
//! revocation on `off` routes): quoting, duplicate names, bearer next to a
//! cookie, a client choosing the fail-open path, and an unjudged route.
//!
//! Each attack replays a victim's credential from another device. Whatever
//! Vigil forwards is read back from the echo origin and parsed as three real
//! cookie parsers do — Python's `http.cookies` (run for real), Go's
//! `net/http` and Node's `cookie` package (their rules, below) — and none
//! of them may see the victim's session in a forwarded request.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Browser, Config, Origin, Proxy, Route};
use reqwest::header::{AUTHORIZATION, COOKIE};

const VICTIM: &str = "victim-5f1d0c3a";

async fn app(route: Route) -> (Origin, Proxy) {
    let origin = Origin::start();
    let config = Config::new()
        .upstream("app", origin.addr())
        .route(Route::new("static", "/static", "app").mode("off"))
        .route(route);
    let proxy = Proxy::start(&config.render()).await;
    (origin, proxy)
}

/// The victim uses the session from their own browser first.
async fn victim_signs_in(proxy: &Proxy) {
    let r = Browser::firefox()
        .cookie(&format!("session={VICTIM}"))
        .get(&proxy.url("/echo"))
        .await;
    assert_eq!(r.status(), 200);
}

/// Python's `http.cookies.SimpleCookie`: the last duplicate wins, quoted
/// values are unquoted with escapes undone.
fn python_reads(header: &str) -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys\nfrom http.cookies import SimpleCookie\nc = SimpleCookie()\nc.load(sys.argv[1])\nprint(c['session'].value if 'session' in c else '', end='')",
            header,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Go's `net/http` (`Request.Cookie`): pairs split on `;`, trimmed; the
/// first `session` wins; one pair of surrounding quotes is stripped.
fn go_reads(header: &str) -> String {
    header
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(n, _)| n.trim() == "session")
        .map(|(_, v)| {
            let v = v.trim();
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
                .to_owned()
        })
        .unwrap_or_default()
}

/// Node's `cookie.parse`: the first `session` wins, quotes stripped, then
/// `decodeURIComponent` (the raw value when that fails).
fn node_reads(header: &str) -> String {
    let raw = go_reads(header);
    percent_decode(&raw).unwrap_or(raw)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Sends `cookies` (one `Cookie` line each) from the thief's browser and
/// returns the status; when forwarded, asserts that no parser finds the
/// victim's session in what the app received.
async fn replay(proxy: &Proxy, cookies: &[&[u8]], path: &str) -> u16 {
    let mut request = Browser::chrome().request(&proxy.url(path));
    for c in cookies {
        request = request.header(COOKIE, reqwest::header::HeaderValue::from_bytes(c).unwrap());
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    if status == 200 {
        let body = r.text().await.unwrap();
        let echo = common::Echo::parse(&body);
        // HTTP/1.1 to the app: Pingora forwards each Cookie line; apps join
        // them with "; " (RFC 6265, 5.4).
        let header = echo.all("cookie").join("; ");
        for (parser, seen) in [
            ("python", python_reads(&header)),
            ("go", go_reads(&header)),
            ("node", node_reads(&header)),
        ] {
            assert_ne!(seen, VICTIM, "{parser} serves the victim for {header:?}");
        }
    }
    status
}

#[tokio::test]
async fn a_stolen_cookie_is_judged_however_it_is_quoted_encoded_or_duplicated() {
    let (_origin, proxy) = app(Route::new("app", "/", "app")).await;
    victim_signs_in(&proxy).await;
    let quoted = format!("session=\"{VICTIM}\"");
    let escaped = format!("session=\"\\{:03o}{}\"", VICTIM.as_bytes()[0], &VICTIM[1..]);
    let encoded = format!("session=%{:02X}{}", VICTIM.as_bytes()[0], &VICTIM[1..]);
    let decoy_first = format!("session=decoy; session={VICTIM}");
    let decoy_last = format!("session={VICTIM}; session=decoy");
    let decoy_line = "session=decoy".to_owned();
    let victim_line = format!("session={VICTIM}");
    let spaced = format!("x=1 session={VICTIM}");
    let commas = format!("x=1, session={VICTIM}");
    let upper = format!("SESSION={VICTIM}");
    let mut same_line_junk = format!("session={VICTIM}; x=").into_bytes();
    same_line_junk.push(0xff);
    let attacks: [&[&[u8]]; 10] = [
        &[spaced.as_bytes()],
        &[commas.as_bytes()],
        &[upper.as_bytes()],
        &[same_line_junk.as_slice()],
        &[quoted.as_bytes()],
        &[escaped.as_bytes()],
        &[encoded.as_bytes()],
        &[decoy_first.as_bytes()],
        &[decoy_last.as_bytes()],
        &[decoy_line.as_bytes(), victim_line.as_bytes()],
    ];
    for cookies in attacks {
        assert_eq!(
            replay(&proxy, cookies, "/echo").await,
            403,
            "{:?}",
            cookies
                .iter()
                .map(|c| String::from_utf8_lossy(c))
                .collect::<Vec<_>>()
        );
    }
    // The victim is still served.
    assert_eq!(
        Browser::firefox()
            .cookie(&format!("session={VICTIM}"))
            .get(&proxy.url("/echo"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_revoked_cookie_stays_dead_in_every_form_and_on_every_route() {
    let (_origin, proxy) = app(Route::new("app", "/", "app").high("revoke")).await;
    victim_signs_in(&proxy).await;
    // A replay from another device revokes the session.
    let victim_line = format!("session={VICTIM}");
    assert_eq!(
        replay(&proxy, &[victim_line.as_bytes()], "/echo").await,
        303
    );
    let quoted = format!("session=\"{VICTIM}\"");
    let decoy_first = format!("session=decoy; session={VICTIM}");
    for cookies in [
        &[victim_line.as_bytes()][..],
        &[quoted.as_bytes()],
        &[decoy_first.as_bytes()],
        &[b"session=decoy", victim_line.as_bytes()],
    ] {
        assert_eq!(replay(&proxy, cookies, "/echo").await, 401);
        // `off` skips scoring, not the revocation.
        assert_eq!(replay(&proxy, cookies, "/static/app.js").await, 401);
    }
}

#[tokio::test]
async fn an_off_route_can_be_told_not_to_look_up_revocations() {
    let origin = Origin::start();
    let config = Config::new()
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app").high("revoke"));
    // Rendered by hand: the test helper has no key for it.
    let text = config.render().replace(
        "[[routes]]\nname = \"app\"",
        "[[routes]]\nname = \"assets\"\npath_prefix = \"/assets\"\nupstream = \"app\"\nmode = \"off\"\nrevocation_check = false\n\n[[routes]]\nname = \"app\"",
    );
    let proxy = Proxy::start(&text).await;
    victim_signs_in(&proxy).await;
    let victim_line = format!("session={VICTIM}");
    assert_eq!(
        replay(&proxy, &[victim_line.as_bytes()], "/echo").await,
        303
    );
    assert_eq!(
        replay(&proxy, &[victim_line.as_bytes()], "/echo").await,
        401
    );
    let r = Browser::chrome()
        .cookie(&victim_line)
        .get(&proxy.url("/assets/app.js"))
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_bearer_token_is_judged_next_to_a_cookie_and_with_any_whitespace() {
    let (_origin, proxy) = app(Route::new("app", "/", "app").high("revoke")).await;
    let token = "tok.victim.9e8b7a6f";
    let owner = Browser::firefox().bearer(token);
    assert_eq!(owner.get(&proxy.url("/echo")).await.status(), 200);
    // Replayed from another device: revoked, then dead.
    let thief = Browser::chrome().bearer(token);
    assert_eq!(thief.get(&proxy.url("/echo")).await.status(), 303);
    assert_eq!(thief.get(&proxy.url("/echo")).await.status(), 401);
    // With any cookie beside it, or a tab after the scheme: still dead.
    let r = Browser::chrome()
        .cookie("session=anything")
        .bearer(token)
        .get(&proxy.url("/echo"))
        .await;
    assert_eq!(r.status(), 401);
    let r = Browser::chrome()
        .request(&proxy.url("/echo"))
        .header(AUTHORIZATION, format!("Bearer\t{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Two Authorization headers: apps differ in which they read.
    let r = Browser::firefox()
        .request(&proxy.url("/echo"))
        .header(AUTHORIZATION, "Bearer other.token")
        .header(AUTHORIZATION, "Bearer second.token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn a_client_cannot_choose_the_fail_open_path_for_a_known_session() {
    let (origin, proxy) = app(Route::new("app", "/", "app")
        .high("revoke")
        .on_error("open"))
    .await;
    victim_signs_in(&proxy).await;
    let victim_line = format!("session={VICTIM}");
    let junk: Vec<String> = (0..201).map(|i| format!("j{i}=x")).collect();
    let padded = format!("{}; session={VICTIM}", junk.join("; "));
    // A replay padded past the cookie limit is still judged: revoked.
    assert_eq!(replay(&proxy, &[padded.as_bytes()], "/echo").await, 303);
    // ...and stays refused behind junk or a line that is not UTF-8.
    let hits = origin.hits();
    assert_eq!(replay(&proxy, &[padded.as_bytes()], "/echo").await, 401);
    assert_eq!(
        replay(&proxy, &[victim_line.as_bytes(), b"x=\xff\xfe"], "/echo").await,
        401
    );
    assert_eq!(origin.hits(), hits);
    // Junk with no session at all is the operator's fail-open choice.
    let only_junk = junk.join("; ");
    assert_eq!(replay(&proxy, &[only_junk.as_bytes()], "/echo").await, 200);
}

#[tokio::test]
async fn headers_apps_trust_for_address_scheme_and_host_come_from_vigil_only() {
    let origin = Origin::start();
    let config = Config::new()
        .section("[client_ip]\nstrip_headers = [\"x-app-client\"]\n")
        .upstream("app", origin.addr())
        .route(Route::new("static", "/static", "app").mode("off"))
        .route(Route::new("app", "/", "app"));
    let proxy = Proxy::start(&config.render()).await;
    let spoofed = [
        ("true-client-ip", "1.1.1.1"),
        ("cf-connecting-ip", "1.1.1.1"),
        ("x-client-ip", "1.1.1.1"),
        ("x-cluster-client-ip", "1.1.1.1"),
        ("fastly-client-ip", "1.1.1.1"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "admin.internal"),
        ("x-forwarded-port", "443"),
        ("x-original-url", "/admin"),
        ("x-forwarded-prefix", "/admin"),
        ("x-app-client", "1.1.1.1"),
        ("x_forwarded_host", "admin.internal"),
        ("vigil_client_ip", "1.1.1.1"),
    ];
    for path in ["/echo", "/static/echo"] {
        let mut request = Browser::firefox().request(&proxy.url(path));
        for (name, value) in spoofed {
            request = request.header(name, value);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 200);
        let echo = common::Echo::parse(&r.text().await.unwrap());
        for (name, _) in spoofed {
            if name == "x-forwarded-proto" || name == "x-forwarded-host" {
                continue;
            }
            assert_eq!(echo.header(name), None, "{name} reached the app on {path}");
        }
        assert_eq!(echo.all("x-forwarded-proto"), ["http"], "{path}");
        let host = proxy.addr().to_string();
        assert_eq!(echo.all("x-forwarded-host"), [host.as_str()], "{path}");
    }
}

#[tokio::test]
async fn a_trusted_balancer_keeps_its_word_on_scheme_and_host() {
    let origin = Origin::start();
    let config = Config::new()
        .believe(&["x-forwarded-for"])
        .section("[[trusted_proxies]]\nname = \"lb\"\ncidrs = [\"127.0.0.2/32\"]\n")
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app"));
    let proxy = Proxy::start(&config.render()).await;
    let send = |from: [u8; 4]| {
        Browser::firefox()
            .via_address(from.into())
            .request(&proxy.url("/echo"))
            .header("x-forwarded-for", "198.51.100.7")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "app.example.com")
            .send()
    };
    // From the balancer, which ended TLS: its scheme and host stand.
    let echo = common::Echo::parse(&send([127, 0, 0, 2]).await.unwrap().text().await.unwrap());
    assert_eq!(echo.all("x-forwarded-proto"), ["https"]);
    assert_eq!(echo.all("x-forwarded-host"), ["app.example.com"]);
    // From anyone else, Vigil's own.
    let echo = common::Echo::parse(&send([127, 0, 0, 3]).await.unwrap().text().await.unwrap());
    assert_eq!(echo.all("x-forwarded-proto"), ["http"]);
    assert_eq!(
        echo.all("x-forwarded-host"),
        [proxy.addr().to_string().as_str()]
    );
}
