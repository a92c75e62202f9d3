//! The risk engine's user-level features end to end: the app names the user
//! of a session in a response header, the operator acts on users and
//! decisions through the authenticated admin calls, and the proxy carries
//! it out on the next request.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Browser, Config, Origin, Proxy, Route};
use reqwest::StatusCode;
use reqwest::header::SET_COOKIE;

const TOKEN: &str = "5f1d0c3a9e8b7a6f5e4d3c2b1a0f9e8d";

struct Setup {
    _origin: Origin,
    proxy: Proxy,
    _dir: tempfile::TempDir,
}

async fn setup(with_token: bool) -> Setup {
    let origin = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let mut config = Config::new()
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app").high("block"));
    if with_token {
        config = config.admin_token_file(&token);
    }
    let proxy = Proxy::start(&config.render()).await;
    Setup {
        _origin: origin,
        proxy,
        _dir: dir,
    }
}

async fn operator(
    proxy: &Proxy,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, String) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{}{path}", proxy.admin()))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

/// Logs in through the app: it opens `session` and names `user`.
async fn login(proxy: &Proxy, browser: &Browser, user: &str, session: &str) {
    let response = browser
        .get(&proxy.url(&format!("/login?user={user}&session={session}")))
        .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("vigil-user").is_none(),
        "the user header reached the client"
    );
    let set = response
        .headers()
        .get(SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(set.starts_with(&format!("session={session}")), "{set}");
}

#[tokio::test]
async fn revoking_a_user_ends_every_session_the_app_bound_to_them() {
    let s = setup(true).await;
    let proxy = &s.proxy;
    login(proxy, &Browser::firefox(), "alice", "a1").await;
    login(proxy, &Browser::chrome(), "alice", "a2").await;
    login(proxy, &Browser::firefox(), "bob", "b1").await;
    let laptop = Browser::firefox().cookie("session=a1");
    let phone = Browser::chrome().cookie("session=a2");
    let bob = Browser::firefox().cookie("session=b1");
    for b in [&laptop, &phone, &bob] {
        assert_eq!(b.get(&proxy.url("/echo")).await.status(), 200);
    }

    let (status, body) = operator(
        proxy,
        "/v1/users/revoke",
        Some(TOKEN),
        r#"{"user": "alice"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");

    for b in [&laptop, &phone] {
        let response = b.get(&proxy.url("/echo")).await;
        assert_eq!(response.status(), 401);
        assert!(response.headers().contains_key("vigil-reference"));
    }
    assert_eq!(bob.get(&proxy.url("/echo")).await.status(), 200);
    // The decision record names the user by key only, with the entity score.
    let line = proxy.wait_for_log("reasons=user_revoked").await;
    assert!(line.contains("entity_score=100"), "{line}");
    let user = line
        .split("user=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert_eq!(user.len(), 16, "{line}");
    assert!(user.bytes().all(|b| b.is_ascii_hexdigit()), "{line}");
    assert!(!line.contains("alice"), "{line}");
    proxy
        .wait_for_metric(
            "vigil_proxy_decision_reasons_total",
            &[("reason", "user_revoked")],
            |v| v == 2.0,
        )
        .await;

    // Alice signs in again: her new session is hers.
    login(proxy, &Browser::firefox(), "alice", "a3").await;
    let again = Browser::firefox().cookie("session=a3");
    assert_eq!(again.get(&proxy.url("/echo")).await.status(), 200);
}

#[tokio::test]
async fn a_partner_report_raises_the_users_risk_seen_by_the_app() {
    let s = setup(true).await;
    let proxy = &s.proxy;
    login(proxy, &Browser::firefox(), "carol", "c1").await;
    let carol = Browser::firefox().cookie("session=c1");
    let echo = carol.echo(&proxy.url("/echo")).await;
    assert_eq!(echo.header("vigil-risk-level"), Some("low"));

    let (status, body) = operator(
        proxy,
        "/v1/users/report",
        Some(TOKEN),
        r#"{"user": "carol", "points": 40, "ttl_seconds": 3600}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let echo = carol.echo(&proxy.url("/echo")).await;
    assert_eq!(echo.header("vigil-risk-level"), Some("medium"));
    assert_eq!(echo.header("vigil-risk-reasons"), Some("partner_reported"));
}

#[tokio::test]
async fn a_false_positive_moves_the_session_to_the_device_it_was_refused_on() {
    let s = setup(true).await;
    let proxy = &s.proxy;
    let firefox = Browser::firefox().cookie("session=f1");
    let chrome = Browser::chrome().cookie("session=f1");
    assert_eq!(firefox.get(&proxy.url("/echo")).await.status(), 200);
    let refused = chrome.get(&proxy.url("/echo")).await;
    assert_eq!(refused.status(), 403);
    let reference = refused.headers()["vigil-reference"]
        .to_str()
        .unwrap()
        .to_owned();

    let (status, body) = operator(
        proxy,
        "/v1/decisions/false-positive",
        Some(TOKEN),
        &format!(r#"{{"reference": "{reference}"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(chrome.get(&proxy.url("/echo")).await.status(), 200);
    assert_eq!(chrome.get(&proxy.url("/echo")).await.status(), 200);
    // The session now belongs to the Chrome device.
    assert_eq!(firefox.get(&proxy.url("/echo")).await.status(), 403);

    let (status, body) = operator(
        proxy,
        "/v1/decisions/false-positive",
        Some(TOKEN),
        r#"{"reference": "no-such-reference"}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("no refusal"), "{body}");
}

#[tokio::test]
async fn operator_calls_need_the_configured_token() {
    let s = setup(true).await;
    let body = r#"{"user": "alice"}"#;
    let (status, _) = operator(&s.proxy, "/v1/users/revoke", None, body).await;
    assert_eq!(status, 401);
    let (status, _) = operator(&s.proxy, "/v1/users/revoke", Some("guess"), body).await;
    assert_eq!(status, 401);
    let (status, _) = operator(&s.proxy, "/v1/users/nope", Some(TOKEN), body).await;
    assert_eq!(status, 404);
    // Metrics stay open to the scraper.
    assert_eq!(s.proxy.admin_get("/metrics").await.unwrap().status(), 200);

    let off = setup(false).await;
    let (status, body) = operator(
        &off.proxy,
        "/v1/users/revoke",
        Some(TOKEN),
        r#"{"user": "a"}"#,
    )
    .await;
    assert_eq!(status, 403);
    assert!(body.contains("token_file"), "{body}");
}

#[tokio::test]
async fn a_passed_step_up_moves_the_session_to_where_the_user_proved_themselves() {
    let origin = Origin::start();
    let config = Config::new()
        .upstream("app", origin.addr())
        // Re-authentication is not judged (or it would be stepped up too).
        .route(
            Route::new("reauth", "/reauth", "app")
                .mode("off")
                .app_confirms(),
        )
        .route(Route::new("app", "/", "app").medium("step_up"));
    let proxy = Proxy::start(&config.render()).await;
    let home = Browser::firefox().cookie("session=m1");
    assert_eq!(home.get(&proxy.url("/echo")).await.status(), 200);
    // The same browser from another network: stepped up, and again.
    let away = Browser::firefox()
        .cookie("session=m1")
        .via_address([127, 0, 1, 9].into());
    for _ in 0..2 {
        let r = away.get(&proxy.url("/echo")).await;
        assert_eq!(r.status(), 303);
    }
    // The user re-authenticates from there; the app says so.
    let r = away.get(&proxy.url("/reauth")).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("vigil-confirm").is_none(),
        "leaked to the client"
    );
    let echo = away.echo(&proxy.url("/echo")).await;
    assert_eq!(echo.header("vigil-risk-level"), Some("low"));
    assert_eq!(echo.header("vigil-risk-reasons"), Some(""));
}

#[tokio::test]
async fn baselines_and_revocations_survive_a_restart() {
    let origin = Origin::start();
    let state = tempfile::tempdir().unwrap();
    let config = || {
        Config::new()
            .state_dir(state.path())
            .upstream("app", origin.addr())
            .route(Route::new("app", "/", "app").high("revoke"))
    };
    let first = Proxy::start(&config().render()).await;
    let keep = Browser::firefox().cookie("session=keep");
    assert_eq!(keep.get(&first.url("/echo")).await.status(), 200);
    let dead = Browser::firefox().cookie("session=dead");
    assert_eq!(dead.get(&first.url("/echo")).await.status(), 200);
    // A replay of "dead" from another browser: the session is revoked.
    let replay = Browser::chrome().cookie("session=dead");
    assert_eq!(replay.get(&first.url("/echo")).await.status(), 303);
    let log = first.terminate();
    assert!(state.path().join("sessions.snapshot").exists(), "{log}");

    let second = Proxy::start(&config().render()).await;
    second.wait_for_log("session snapshot restored").await;
    // The baseline came back: another browser with "keep" is revoked
    // (high = "revoke": sent to log in again)...
    let thief = Browser::chrome().cookie("session=keep");
    assert_eq!(thief.get(&second.url("/echo")).await.status(), 303);
    // ...and the revoked cookie stays dead, even from its own browser.
    assert_eq!(dead.get(&second.url("/echo")).await.status(), 401);
}

#[tokio::test]
async fn a_step_up_behind_a_balancer_is_confirmed_for_the_client_not_the_balancer() {
    let origin = Origin::start();
    let config = Config::new()
        .believe(&["x-forwarded-for"])
        .section("[[trusted_proxies]]\nname = \"lb\"\ncidrs = [\"127.0.0.2/32\"]\n")
        .upstream("app", origin.addr())
        .route(
            Route::new("reauth", "/reauth", "app")
                .mode("off")
                .app_confirms(),
        )
        .route(Route::new("app", "/", "app").medium("step_up"));
    let proxy = Proxy::start(&config.render()).await;
    let browser = Browser::firefox()
        .cookie("session=lb1")
        .via_address([127, 0, 0, 2].into());
    let from = |client: &'static str, path: &str| {
        browser
            .request(&proxy.url(path))
            .header("x-forwarded-for", client)
            .send()
    };
    assert_eq!(from("198.51.100.7", "/echo").await.unwrap().status(), 200);
    // The user moves to another network: stepped up.
    assert_eq!(from("203.0.113.9", "/echo").await.unwrap().status(), 303);
    // They re-authenticate from there, through the same balancer.
    assert_eq!(from("203.0.113.9", "/reauth").await.unwrap().status(), 200);
    // The session is now at the client's network, not the balancer's.
    let echo = from("203.0.113.9", "/echo").await.unwrap();
    assert_eq!(echo.status(), 200);
    assert_eq!(
        echo.text()
            .await
            .unwrap()
            .lines()
            .find(|l| l.starts_with("vigil-risk-reasons")),
        Some("vigil-risk-reasons: ")
    );
}
