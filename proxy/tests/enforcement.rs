//! Decisions on sessions, end to end: a real proxy process in front of a real
//! origin, driven by browsers that share or steal a session cookie.

// Test code: a failed unwrap is a failed test. clippy.toml allows these in
// #[test] functions; this also covers the helpers in `common`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Browser, Config, LOGIN_URL, Origin, Proxy, Route, STEP_UP_URL};
use reqwest::header::{CONTENT_TYPE, HOST, LOCATION, SET_COOKIE, WWW_AUTHENTICATE};

const DECISIONS: &str = "vigil_proxy_decisions_total";
const REASONS: &str = "vigil_proxy_decision_reasons_total";

/// An origin and a proxy with upstream `app` and the one route given.
async fn app_behind(route: Route) -> (Origin, Proxy) {
    let origin = Origin::start();
    let config = Config::new().upstream("app", origin.addr()).route(route);
    let proxy = Proxy::start(&config.render()).await;
    (origin, proxy)
}

fn header(response: &reqwest::Response, name: impl reqwest::header::AsHeaderName) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn one_browser_is_allowed_every_time_and_the_app_sees_low_risk() {
    let (_origin, proxy) = app_behind(Route::new("app", "/", "app")).await;
    let alice = Browser::firefox().cookie("session=alice");

    for _ in 0..3 {
        let echo = alice.echo(&proxy.url("/echo")).await;
        assert_eq!(echo.header("vigil-risk-level"), Some("low"));
        assert_eq!(echo.header("vigil-risk-score"), Some("0"));
        assert_eq!(echo.header("vigil-risk-reasons"), Some(""));
    }
    proxy
        .wait_for_metric(DECISIONS, &[("action", "allow")], |v| v == 3.0)
        .await;
}

#[tokio::test]
async fn the_same_browser_from_another_address_is_medium_risk() {
    let route = Route::new("app", "/", "app").medium("allow");
    let (_origin, proxy) = app_behind(route).await;
    Browser::firefox()
        .cookie("session=alice")
        .echo(&proxy.url("/echo"))
        .await;

    // Another address on the same /24 (DHCP on the same site) is no move.
    let echo = Browser::firefox()
        .cookie("session=alice")
        .via_address([127, 0, 0, 2].into())
        .echo(&proxy.url("/echo"))
        .await;
    assert_eq!(echo.header("vigil-risk-level"), Some("low"));
    assert_eq!(echo.header("vigil-risk-reasons"), Some(""));

    // Another /24 with no geo data to say more: medium.
    let echo = Browser::firefox()
        .cookie("session=alice")
        .via_address([127, 0, 1, 2].into())
        .echo(&proxy.url("/echo"))
        .await;
    assert_eq!(echo.header("vigil-risk-level"), Some("medium"));
    assert_eq!(echo.header("vigil-risk-score"), Some("30"));
    assert_eq!(echo.header("vigil-risk-reasons"), Some("ip_changed"));
    proxy
        .wait_for_metric(REASONS, &[("reason", "ip_changed")], |v| v == 1.0)
        .await;
}

#[tokio::test]
async fn a_cookie_replayed_by_another_browser_is_blocked_with_a_reference() {
    let (origin, proxy) = app_behind(Route::new("app", "/", "app").high("block")).await;
    Browser::firefox()
        .cookie("session=alice")
        .echo(&proxy.url("/echo"))
        .await;
    let hits = origin.hits();

    let response = Browser::chrome()
        .cookie("session=alice")
        .get(&proxy.url("/echo"))
        .await;

    assert_eq!(response.status(), 403);
    let reference = header(&response, "vigil-reference");
    assert!(!reference.is_empty(), "a 403 carries Vigil-Reference");
    assert!(header(&response, CONTENT_TYPE).starts_with("text/html"));
    let page = response.text().await.unwrap();
    assert!(
        page.contains(&format!("Reference: {reference}")),
        "the page names the reference {reference}: {page}"
    );
    proxy.wait_for_log(&reference).await;
    assert_eq!(
        origin.hits(),
        hits,
        "a blocked request never reaches the app"
    );
    proxy
        .wait_for_metric(DECISIONS, &[("action", "block")], |v| v == 1.0)
        .await;
    proxy
        .wait_for_metric(REASONS, &[("reason", "device_changed")], |v| v == 1.0)
        .await;
}

#[tokio::test]
async fn each_block_gets_its_own_reference() {
    let (_origin, proxy) = app_behind(Route::new("app", "/", "app")).await;
    Browser::firefox()
        .cookie("session=alice")
        .echo(&proxy.url("/"))
        .await;
    let thief = Browser::chrome().cookie("session=alice");

    let first = header(&thief.get(&proxy.url("/")).await, "vigil-reference");
    let second = header(&thief.get(&proxy.url("/")).await, "vigil-reference");

    assert!(!first.is_empty());
    assert_ne!(first, second);
}

#[tokio::test]
async fn the_owner_keeps_access_after_a_blocked_replay() {
    let (_origin, proxy) = app_behind(Route::new("app", "/", "app").high("block")).await;
    let alice = Browser::firefox().cookie("session=alice");
    alice.echo(&proxy.url("/echo")).await;

    let replay = Browser::chrome()
        .cookie("session=alice")
        .get(&proxy.url("/echo"))
        .await;
    assert_eq!(replay.status(), 403);

    let echo = alice.echo(&proxy.url("/echo")).await;
    assert_eq!(echo.header("vigil-risk-level"), Some("low"));
}

#[tokio::test]
async fn step_up_sends_a_browser_with_a_replayed_cookie_to_the_step_up_url() {
    let (origin, proxy) = app_behind(Route::new("app", "/", "app").high("step_up")).await;
    Browser::firefox()
        .cookie("session=alice")
        .echo(&proxy.url("/echo"))
        .await;
    let hits = origin.hits();

    let response = Browser::chrome()
        .cookie("session=alice")
        .get(&proxy.url("/echo"))
        .await;

    // 303, not 302: the browser must come back with GET whatever the method was.
    assert_eq!(response.status(), 303);
    assert_eq!(header(&response, LOCATION), STEP_UP_URL);
    assert_eq!(origin.hits(), hits);
    proxy
        .wait_for_metric(DECISIONS, &[("action", "step_up")], |v| v == 1.0)
        .await;
}

#[tokio::test]
async fn step_up_answers_a_replayed_bearer_token_with_insufficient_user_authentication() {
    let (origin, proxy) = app_behind(Route::new("api", "/", "app").high("step_up")).await;
    Browser::firefox()
        .bearer("token-alice")
        .echo(&proxy.url("/api"))
        .await;
    let hits = origin.hits();

    let response = Browser::chrome()
        .bearer("token-alice")
        .get(&proxy.url("/api"))
        .await;

    assert_eq!(response.status(), 401);
    let challenge = header(&response, WWW_AUTHENTICATE);
    assert!(
        challenge.starts_with("Bearer")
            && challenge.contains(r#"error="insufficient_user_authentication""#),
        "WWW-Authenticate: {challenge}"
    );
    assert_eq!(origin.hits(), hits);
}

#[tokio::test]
async fn revoke_sends_the_replay_to_login_and_clears_the_cookie() {
    let (origin, proxy) = app_behind(Route::new("app", "/", "app").high("revoke")).await;
    Browser::firefox()
        .cookie("session=alice")
        .echo(&proxy.url("/echo"))
        .await;
    let hits = origin.hits();

    let response = Browser::chrome()
        .cookie("session=alice")
        .get(&proxy.url("/echo"))
        .await;

    // Revoke sends the browser to sign in again: See Other.
    assert_eq!(response.status(), 303);
    assert_eq!(header(&response, LOCATION), LOGIN_URL);
    let cleared = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("session="))
        .expect("a Set-Cookie for the session cookie");
    let lower = cleared.to_ascii_lowercase();
    assert!(
        lower.contains("max-age=0") || lower.contains("1970"),
        "the session cookie is expired: {cleared}"
    );
    assert_eq!(origin.hits(), hits);
    proxy
        .wait_for_metric(DECISIONS, &[("action", "revoke")], |v| v == 1.0)
        .await;
}

#[tokio::test]
async fn a_revoked_session_is_refused_on_every_device() {
    let (origin, proxy) = app_behind(Route::new("app", "/", "app").high("revoke")).await;
    let alice = Browser::firefox().cookie("session=alice");
    let thief = Browser::chrome().cookie("session=alice");
    alice.echo(&proxy.url("/echo")).await;
    thief.get(&proxy.url("/echo")).await;
    let hits = origin.hits();

    assert_eq!(alice.get(&proxy.url("/echo")).await.status(), 401);
    assert_eq!(thief.get(&proxy.url("/echo")).await.status(), 401);
    assert_eq!(alice.get(&proxy.url("/other")).await.status(), 401);

    assert_eq!(origin.hits(), hits);
    proxy
        .wait_for_metric(REASONS, &[("reason", "revoked")], |v| v == 3.0)
        .await;
}

#[tokio::test]
async fn revoking_one_session_leaves_other_sessions_alone() {
    let (_origin, proxy) = app_behind(Route::new("app", "/", "app").high("revoke")).await;
    let bob = Browser::firefox().cookie("session=bob");
    bob.echo(&proxy.url("/echo")).await;
    Browser::firefox()
        .cookie("session=alice")
        .echo(&proxy.url("/echo"))
        .await;
    Browser::chrome()
        .cookie("session=alice")
        .get(&proxy.url("/echo"))
        .await;

    let echo = bob.echo(&proxy.url("/echo")).await;

    assert_eq!(echo.header("vigil-risk-level"), Some("low"));
}

#[tokio::test]
async fn monitor_mode_forwards_a_replay_and_counts_the_block() {
    let route = Route::new("app", "/", "app").mode("monitor").high("block");
    let (origin, proxy) = app_behind(route).await;
    Browser::firefox()
        .cookie("session=alice")
        .echo(&proxy.url("/echo"))
        .await;
    let hits = origin.hits();

    let echo = Browser::chrome()
        .cookie("session=alice")
        .echo(&proxy.url("/echo"))
        .await;

    assert_eq!(echo.request_line, "GET /echo");
    assert_eq!(origin.hits(), hits + 1);
    proxy
        .wait_for_metric(DECISIONS, &[("action", "block")], |v| v == 1.0)
        .await;
}

#[tokio::test]
async fn off_mode_forwards_without_deciding() {
    let route = Route::new("app", "/", "app").mode("off").high("block");
    let (_origin, proxy) = app_behind(route).await;

    Browser::firefox()
        .cookie("session=alice")
        .echo(&proxy.url("/echo"))
        .await;
    Browser::chrome()
        .cookie("session=alice")
        .echo(&proxy.url("/echo"))
        .await;

    // Both requests are counted by route, so the decisions would be too by now.
    proxy
        .wait_for_metric("vigil_proxy_requests_total", &[("route", "app")], |v| {
            v == 2.0
        })
        .await;
    assert_eq!(proxy.metric(DECISIONS, &[]).await, 0.0);
}

#[tokio::test]
async fn client_sent_vigil_headers_never_reach_the_app() {
    // A lenient policy lets the replay through, at high risk, with forged
    // headers that claim low risk.
    let (_origin, proxy) = app_behind(Route::new("app", "/", "app").high("allow")).await;
    Browser::firefox()
        .cookie("session=alice")
        .echo(&proxy.url("/echo"))
        .await;

    let response = Browser::chrome()
        .cookie("session=alice")
        .request(&proxy.url("/echo"))
        .header("Vigil-Risk-Level", "low")
        .header("Vigil-Risk-Score", "0")
        .header("Vigil-Risk-Reasons", "")
        .header("vigil-anything", "x")
        .header("VIGIL-Reference", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo = common::Echo::parse(&response.text().await.unwrap());

    assert_eq!(echo.all("vigil-risk-level"), ["high"]);
    assert_eq!(echo.all("vigil-risk-score"), ["70"]);
    assert_eq!(echo.all("vigil-risk-reasons"), ["device_changed"]);
    assert!(echo.all("vigil-anything").is_empty());
    assert!(echo.all("vigil-reference").is_empty());
}

#[tokio::test]
async fn without_risk_or_client_headers_no_vigil_header_reaches_the_app() {
    let origin = Origin::start();
    let config = Config::new()
        .section("[headers]\nrisk_to_app = false\n[client_ip]\nto_app = false")
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app"));
    let proxy = Proxy::start(&config.render()).await;

    let response = Browser::firefox()
        .cookie("session=alice")
        .request(&proxy.url("/echo"))
        .header("Vigil-Risk-Level", "low")
        .header("vigil-anything", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo = common::Echo::parse(&response.text().await.unwrap());

    assert_eq!(echo.names_starting_with("vigil-"), Vec::<&str>::new());
}

#[tokio::test]
async fn a_request_no_route_matches_gets_404() {
    let (origin, proxy) = app_behind(Route::new("app", "/app", "app")).await;
    let browser = Browser::firefox();

    assert_eq!(browser.get(&proxy.url("/other")).await.status(), 404);
    assert_eq!(browser.get(&proxy.url("/apix")).await.status(), 404);
    assert_eq!(origin.hits(), 0);
    assert_eq!(
        browser.echo(&proxy.url("/app")).await.request_line,
        "GET /app"
    );
    assert_eq!(
        browser.echo(&proxy.url("/app/page?x=1")).await.request_line,
        "GET /app/page?x=1"
    );
}

#[tokio::test]
async fn routes_match_by_host() {
    let route = Route::new("app", "/", "app").hosts(&["app.test"]);
    let (_origin, proxy) = app_behind(route).await;
    let browser = Browser::firefox();

    let other = browser
        .request(&proxy.url("/echo"))
        .header(HOST, "other.test")
        .send()
        .await
        .unwrap();
    let app = browser
        .request(&proxy.url("/echo"))
        .header(HOST, "app.test")
        .send()
        .await
        .unwrap();

    assert_eq!(other.status(), 404);
    assert_eq!(app.status(), 200);
}

#[tokio::test]
async fn the_longest_matching_prefix_wins() {
    let origin = Origin::start();
    let config = Config::new()
        .upstream("app", origin.addr())
        .route(Route::new("site", "/", "app"))
        .route(Route::new("api", "/api", "app").mode("off"));
    let proxy = Proxy::start(&config.render()).await;
    let browser = Browser::firefox();

    browser.echo(&proxy.url("/api/users")).await;
    browser.echo(&proxy.url("/apiary")).await;

    proxy
        .wait_for_metric("vigil_proxy_requests_total", &[("route", "api")], |v| {
            v == 1.0
        })
        .await;
    proxy
        .wait_for_metric("vigil_proxy_requests_total", &[("route", "site")], |v| {
            v == 1.0
        })
        .await;
}

#[tokio::test]
async fn the_pipeline_is_timed() {
    let (_origin, proxy) = app_behind(Route::new("app", "/", "app")).await;

    Browser::firefox()
        .cookie("session=alice")
        .echo(&proxy.url("/echo"))
        .await;

    proxy
        .wait_for_metric("vigil_proxy_pipeline_duration_seconds_count", &[], |v| {
            v >= 1.0
        })
        .await;
}

#[tokio::test]
async fn admin_answers_health_and_readiness() {
    let (_origin, proxy) = app_behind(Route::new("app", "/", "app")).await;

    assert_eq!(proxy.admin_get("/healthz").await.unwrap().status(), 200);
    assert_eq!(proxy.admin_get("/readyz").await.unwrap().status(), 200);
}

#[tokio::test]
async fn json_logs_carry_one_structured_decision_record_without_the_credential() {
    let origin = Origin::start();
    let config = Config::new()
        .section("[log]\nformat = \"json\"")
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app"));
    let proxy = Proxy::start(&config.render()).await;
    let secret = "session=s3cr3t-cookie-value";
    Browser::firefox()
        .cookie(secret)
        .echo(&proxy.url("/echo"))
        .await;

    let response = Browser::chrome().cookie(secret).get(&proxy.url("/")).await;
    let reference = header(&response, "vigil-reference");

    let line = proxy.wait_for_log(&reference).await;
    assert!(
        line.starts_with('{') && line.ends_with('}'),
        "one JSON object: {line}"
    );
    for field in [
        format!("\"reference\":\"{reference}\""),
        "\"action\":\"block\"".to_owned(),
        "\"enforced\":true".to_owned(),
        "\"reasons\":\"device_changed\"".to_owned(),
        "\"target\":\"vigil::decision\"".to_owned(),
    ] {
        assert!(line.contains(&field), "{field} missing from {line}");
    }
    assert!(
        !proxy.log().contains("s3cr3t"),
        "the raw cookie never reaches the log"
    );
}
