//! Decide, then effect, end to end: a monitoring route changes no state, the
//! response side is judged against the request's one evaluation, a session
//! is baselined when the app issues it, and every state change is told as
//! an event.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Browser, Config, Origin, Proxy, Route};
use reqwest::header::LOCATION;

const EVALUATIONS: &str = "vigil_engine_evaluations_total";
const EVENTS: &str = "vigil_proxy_events_total";

/// `base` (its ports) in front of `origin`, one route in `mode` that
/// revokes at high risk.
fn monitored(base: &Config, origin: &Origin, mode: &str) -> String {
    base.clone()
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app").mode(mode).high("revoke"))
        .render()
}

#[tokio::test]
async fn monitor_with_revoke_forwards_a_replay_and_changes_nothing() {
    let origin = Origin::start();
    let base = Config::new();
    let proxy = Proxy::start(&monitored(&base, &origin, "monitor")).await;
    let owner = Browser::firefox().cookie("session=mon");
    let thief = Browser::chrome().cookie("session=mon");
    assert_eq!(owner.get(&proxy.url("/echo")).await.status(), 200);
    // The replay from another device would be revoked: forwarded, told.
    let hits = origin.hits();
    let replay = thief.echo(&proxy.url("/echo")).await;
    assert_eq!(replay.header("vigil-risk-level"), Some("high"));
    assert_eq!(origin.hits(), hits + 1);
    proxy
        .wait_for_metric(
            "vigil_proxy_decisions_total",
            &[("action", "revoke"), ("enforced", "false")],
            |v| v == 1.0,
        )
        .await;
    let line = proxy.wait_for_log("enforced=false").await;
    assert!(line.contains("action=revoke"), "{line}");
    // Nothing was revoked: the owner is still the owner.
    let echo = owner.echo(&proxy.url("/echo")).await;
    assert_eq!(echo.header("vigil-risk-level"), Some("low"));
    assert_eq!(
        proxy.metric("vigil_engine_sessions_revoked", &[]).await,
        0.0
    );

    // The route is switched to enforce by a reload: the owner is allowed,
    // the same replay is refused and ends the session.
    proxy.rewrite_config(&monitored(&base, &origin, "enforce"));
    proxy.hangup();
    proxy
        .wait_for_metric(
            "vigil_proxy_config_reloads_total",
            &[("result", "applied")],
            |v| v == 1.0,
        )
        .await;
    assert_eq!(owner.get(&proxy.url("/echo")).await.status(), 200);
    let refused = thief.get(&proxy.url("/echo")).await;
    assert_eq!(refused.status(), 303);
    assert_eq!(
        refused.headers()[LOCATION].to_str().unwrap(),
        common::LOGIN_URL
    );
    assert_eq!(owner.get(&proxy.url("/echo")).await.status(), 401);
}

#[tokio::test]
async fn a_thief_who_uses_a_cookie_first_is_judged_against_the_login() {
    let origin = Origin::start();
    let config = Config::new()
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app"));
    let proxy = Proxy::start(&config.render()).await;
    // The victim signs in; the thief copies the cookie as it is issued.
    let victim = Browser::firefox();
    let login = victim.get(&proxy.url("/login?user=vic&session=v1")).await;
    assert_eq!(login.status(), 200);
    assert!(login.headers().get("vigil-user").is_none(), "leaked");
    // The thief comes first, from another device: judged against the
    // device and network that signed in.
    let thief = Browser::chrome().cookie("session=v1");
    let refused = thief.get(&proxy.url("/echo")).await;
    assert_eq!(refused.status(), 403);
    // The victim is not the one refused.
    let echo = victim.cookie("session=v1").echo(&proxy.url("/echo")).await;
    assert_eq!(echo.header("vigil-risk-level"), Some("low"));
    proxy
        .wait_for_metric(EVENTS, &[("kind", "session_issued")], |v| v == 1.0)
        .await;
}

#[tokio::test]
async fn the_response_side_is_judged_on_the_requests_one_evaluation() {
    let origin = Origin::start();
    let config = Config::new()
        .upstream("app", origin.addr())
        .route(
            Route::new("reauth", "/reauth", "app")
                .mode("off")
                .app_confirms(),
        )
        .route(Route::new("app", "/", "app").medium("step_up"));
    let proxy = Proxy::start(&config.render()).await;
    let home = Browser::firefox();
    // A login (binding and baseline at issuance), a request, a step-up
    // passed (confirmation): three judged requests, three evaluations.
    assert_eq!(
        home.get(&proxy.url("/login?user=ann&session=a1"))
            .await
            .status(),
        200
    );
    let home = home.cookie("session=a1");
    assert_eq!(home.get(&proxy.url("/echo")).await.status(), 200);
    let away = Browser::firefox()
        .cookie("session=a1")
        .via_address([127, 0, 1, 9].into());
    assert_eq!(away.get(&proxy.url("/echo")).await.status(), 303);
    assert_eq!(away.get(&proxy.url("/reauth")).await.status(), 200);
    let echo = away.echo(&proxy.url("/echo")).await;
    assert_eq!(echo.header("vigil-risk-reasons"), Some(""));
    proxy
        .wait_for_metric(EVENTS, &[("kind", "confirmed")], |v| v == 1.0)
        .await;
    let metrics = proxy.metrics().await;
    assert_eq!(metrics.value(EVALUATIONS, &[]), 5.0);
    assert_eq!(
        metrics.value("vigil_proxy_requests_total", &[("route", "app")])
            + metrics.value("vigil_proxy_requests_total", &[("route", "reauth")]),
        5.0
    );
    for kind in ["session_issued", "detection"] {
        assert_eq!(metrics.value(EVENTS, &[("kind", kind)]), 1.0, "{kind}");
    }
}

#[tokio::test]
async fn a_reflected_confirmation_re_baselines_nobody() {
    let origin = Origin::start();
    // `/reauth` answers `Vigil-Confirm: 1` to anyone, but its route is not
    // declared as an app that confirms step-ups.
    let config = Config::new()
        .upstream("app", origin.addr())
        .route(Route::new("reauth", "/reauth", "app").mode("off"))
        .route(Route::new("app", "/", "app").medium("step_up"));
    let proxy = Proxy::start(&config.render()).await;
    let home = Browser::firefox().cookie("session=r1");
    assert_eq!(home.get(&proxy.url("/echo")).await.status(), 200);
    let away = Browser::firefox()
        .cookie("session=r1")
        .via_address([127, 0, 1, 9].into());
    assert_eq!(away.get(&proxy.url("/echo")).await.status(), 303);
    let r = away.get(&proxy.url("/reauth")).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("vigil-confirm").is_none(), "leaked");
    assert_eq!(away.get(&proxy.url("/echo")).await.status(), 303);
    // Events are told in order: once the second refusal's detection is
    // counted, a confirmation the callback had sent would have been too.
    proxy
        .wait_for_metric(EVENTS, &[("kind", "detection")], |v| v == 2.0)
        .await;
    assert_eq!(proxy.metric(EVENTS, &[("kind", "confirmed")]).await, 0.0);
}

#[tokio::test]
async fn a_refusal_is_told_with_the_reference_the_client_sees() {
    let origin = Origin::start();
    let config = Config::new()
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app"));
    let proxy = Proxy::start(&config.render()).await;
    assert_eq!(
        Browser::firefox()
            .cookie("session=t1")
            .get(&proxy.url("/echo"))
            .await
            .status(),
        200
    );
    let refused = Browser::chrome()
        .cookie("session=t1")
        .get(&proxy.url("/echo"))
        .await;
    assert_eq!(refused.status(), 403);
    let reference = refused.headers()["vigil-reference"]
        .to_str()
        .unwrap()
        .to_owned();
    let line = proxy.wait_for_log(&format!("reference={reference}")).await;
    for field in [
        "action=block",
        "enforced=true",
        "route=app",
        "device_changed",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    proxy
        .wait_for_metric(EVENTS, &[("kind", "detection")], |v| v == 1.0)
        .await;
    proxy
        .wait_for_metric(
            "vigil_proxy_fleet_events_total",
            &[("kind", "detection")],
            |v| v == 1.0,
        )
        .await;
    assert_eq!(
        proxy
            .metric(
                "vigil_proxy_fleet_events_total",
                &[("kind", "session_seen")]
            )
            .await,
        1.0
    );
}

/// A `Cookie` header with more cookies than the session stage reads.
fn too_many_cookies(session: &str) -> String {
    let mut v: Vec<String> = (0..201).map(|i| format!("junk{i}=x")).collect();
    if !session.is_empty() {
        v.push(session.to_owned());
    }
    v.join("; ")
}

#[tokio::test]
async fn an_unreadable_cookie_header_cannot_lock_anyone_out_of_re_authentication() {
    let origin = Origin::start();
    let config = Config::new()
        .upstream("app", origin.addr())
        .route(
            Route::new("reauth", "/reauth", "app")
                .mode("off")
                .app_confirms(),
        )
        .route(Route::new("app", "/", "app"));
    let proxy = Proxy::start(&config.render()).await;
    // Cookies tossed from a sibling domain overflow the limit: the `off`
    // route still forwards (it fails closed nowhere), and confirms nothing.
    let r = Browser::firefox()
        .request(&proxy.url("/reauth"))
        .header("cookie", too_many_cookies("session=x1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // On the enforcing route the same header is refused (fail closed).
    let r = Browser::firefox()
        .request(&proxy.url("/echo"))
        .header("cookie", too_many_cookies(""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Events are told in order: once a later session's first sight is
    // counted, a confirmation the padded callback had sent would have been.
    let r = Browser::firefox()
        .cookie("session=m1")
        .get(&proxy.url("/echo"))
        .await;
    assert_eq!(r.status(), 200);
    proxy
        .wait_for_metric(EVENTS, &[("kind", "session_seen")], |v| v == 1.0)
        .await;
    assert_eq!(proxy.metric(EVENTS, &[("kind", "confirmed")]).await, 0.0);
}

#[tokio::test]
async fn a_login_padded_to_fail_open_is_still_baselined_at_issuance() {
    let origin = Origin::start();
    let config = Config::new()
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app").on_error("open"));
    let proxy = Proxy::start(&config.render()).await;
    // Someone with the victim's password pads the login past the cookie
    // limit so that it is forwarded unjudged.
    let r = Browser::firefox()
        .request(&proxy.url("/login?user=fay&session=f1"))
        .header("cookie", too_many_cookies(""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    proxy
        .wait_for_metric(EVENTS, &[("kind", "session_issued")], |v| v == 1.0)
        .await;
    // The session still has the login's device as its baseline.
    let thief = Browser::chrome().cookie("session=f1");
    assert_eq!(thief.get(&proxy.url("/echo")).await.status(), 403);
    let owner = Browser::firefox().cookie("session=f1");
    assert_eq!(owner.get(&proxy.url("/echo")).await.status(), 200);
}
