//! The rotating binding end to end (docs/bound-sessions.md): a perfect
//! clone — curl_cffi impersonating the same Chrome, from the same address,
//! with a copied cookie jar — is refused at the first rotation after the
//! theft, whoever comes back first; a thief with only the app's cookie is
//! refused; the owner's parallel requests across a rotation and the owner
//! whose rotation response was lost are not.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::{Ca, Config, Origin, Proxy, Route, free_addr};

/// A TLS proxy in front of the echo origin with the binding on, rotating
/// after `rotate` seconds with a grace of `grace`, revoking at high risk.
async fn bound_proxy(ca: &Ca, rotate: u64, grace: u64) -> (Origin, Proxy) {
    bound_proxy_high(ca, rotate, grace, "revoke").await
}

/// [`bound_proxy`] answering high risk with `high` (the default: `block`).
async fn bound_proxy_high(ca: &Ca, rotate: u64, grace: u64, high: &str) -> (Origin, Proxy) {
    let leaf = ca.leaf(&["localhost"]);
    let origin = Origin::start();
    let config = Config::new()
        .tls_listener("https", free_addr(), true, &[&leaf])
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app").high(high))
        .section(&format!(
            "[binding]\nenabled = true\nrotate_after_seconds = {rotate}\ngrace_seconds = {grace}\n"
        ));
    let proxy = Proxy::start(&config.render()).await;
    (origin, proxy)
}

/// One scenario at a time: each opens a new TLS connection per request
/// (some hundred while it polls for a rotation), and five at once on a
/// loaded two-core machine starved each other past curl's timeout. A
/// lock, not a wait: each runs as soon as the one before has finished.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `tests/binding/clone.py SCENARIO` against `proxy`.
async fn scenario(ca: &Ca, proxy: &Proxy, name: &str, extra: &[&str]) -> serde_json::Value {
    let _turn = ONE_AT_A_TIME.lock().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/binding/clone.py");
    let base = format!("https://localhost:{}", proxy.listener("https").port());
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .arg(name)
        .arg(&base)
        .arg(ca.pem_path())
        .args(extra);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name}: {stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.log()
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

fn statuses(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect()
}

/// Until the last, every status is 200; the last is `refused`.
fn allowed_until(v: &serde_json::Value, refused: u64) {
    let s = statuses(v);
    let (last, before) = s.split_last().unwrap();
    assert!(before.iter().all(|s| *s == 200), "{s:?}");
    assert_eq!(*last, refused, "{s:?}");
}

async fn reason_count(proxy: &Proxy, reason: &str) -> f64 {
    proxy
        .metric("vigil_proxy_decision_reasons_total", &[("reason", reason)])
        .await
}

#[tokio::test]
async fn a_perfect_clone_is_refused_at_the_first_rotation_when_the_victim_returns_first() {
    let ca = Ca::new("Test CA");
    let (_origin, proxy) = bound_proxy(&ca, 1, 1).await;
    let out = scenario(&ca, &proxy, "victim_first", &[]).await;
    assert_eq!(out["login"], serde_json::json!([200, 1]), "{out}");
    assert_eq!(out["first"], serde_json::json!([200, 0]), "{out}");
    allowed_until(&out["victim_rotation"], 200);
    assert_eq!(out["victim_presents"], 200, "{out}");
    // Revoked: a redirect to the login page, for both holders after.
    allowed_until(&out["thief"], 303);
    // Revoked: 401 for both from then on.
    assert_eq!(out["victim_after"], 401, "{out}");
    assert_eq!(out["thief_after"], 401, "{out}");
    // The refusal's reason; the requests refused after it count it too.
    assert_eq!(reason_count(&proxy, "binding_reused").await, 3.0);
    assert_eq!(reason_count(&proxy, "binding_missing").await, 0.0);
}

#[tokio::test]
async fn a_perfect_clone_is_refused_at_the_first_rotation_when_the_thief_comes_first() {
    let ca = Ca::new("Test CA");
    let (_origin, proxy) = bound_proxy(&ca, 1, 1).await;
    let out = scenario(&ca, &proxy, "thief_first", &[]).await;
    allowed_until(&out["thief_rotation"], 200);
    assert_eq!(out["thief_presents"], 200, "{out}");
    // The owner's superseded generation gives the copy away; the session
    // ends for both, and the owner signs in again.
    allowed_until(&out["victim"], 303);
    assert_eq!(out["thief_after"], 401, "{out}");
    assert_eq!(out["victim_after"], 401, "{out}");
    // The refusal's reason; the requests refused after it count it too.
    assert_eq!(reason_count(&proxy, "binding_reused").await, 3.0);
    assert_eq!(reason_count(&proxy, "binding_missing").await, 0.0);
}

/// Under the default policy (high risk blocks, nothing is revoked) the
/// holder who rotated first must not keep the session: after the reuse
/// both are refused, whatever generation they bring.
#[tokio::test]
async fn under_the_default_policy_a_thief_who_rotates_first_is_refused_with_the_owner() {
    let ca = Ca::new("Test CA");
    let (_origin, proxy) = bound_proxy_high(&ca, 1, 1, "block").await;
    let out = scenario(&ca, &proxy, "thief_first", &[]).await;
    allowed_until(&out["thief_rotation"], 200);
    assert_eq!(out["thief_presents"], 200, "{out}");
    allowed_until(&out["victim"], 403);
    assert_eq!(out["thief_after"], 403, "{out}");
    assert_eq!(out["victim_after"], 403, "{out}");
    // The reuse, then each holder's request after it.
    assert_eq!(reason_count(&proxy, "binding_reused").await, 3.0);
    assert_eq!(reason_count(&proxy, "binding_missing").await, 0.0);
}

#[tokio::test]
async fn under_the_default_policy_a_thief_who_returns_after_the_owner_is_refused_with_the_owner() {
    let ca = Ca::new("Test CA");
    let (_origin, proxy) = bound_proxy_high(&ca, 1, 1, "block").await;
    let out = scenario(&ca, &proxy, "victim_first", &[]).await;
    allowed_until(&out["victim_rotation"], 200);
    assert_eq!(out["victim_presents"], 200, "{out}");
    allowed_until(&out["thief"], 403);
    assert_eq!(out["victim_after"], 403, "{out}");
    assert_eq!(out["thief_after"], 403, "{out}");
    assert_eq!(reason_count(&proxy, "binding_reused").await, 3.0);
    assert_eq!(reason_count(&proxy, "binding_missing").await, 0.0);
}

/// An app re-sending its session cookie on every response (a rolling
/// expiry) still has its sessions rotated, and a copy caught.
#[tokio::test]
async fn an_app_with_a_rolling_session_cookie_still_rotates_and_a_copy_is_refused() {
    let ca = Ca::new("Test CA");
    let (_origin, proxy) = bound_proxy_high(&ca, 1, 1, "block").await;
    let out = scenario(&ca, &proxy, "rolling", &[]).await;
    allowed_until(&out["victim_rotation"], 200);
    assert_eq!(out["victim_presents"], 200, "{out}");
    allowed_until(&out["thief"], 403);
    assert_eq!(out["victim_after"], 403, "{out}");
    assert_eq!(out["thief_after"], 403, "{out}");
    assert_eq!(reason_count(&proxy, "binding_reused").await, 3.0);
}

#[tokio::test]
async fn a_thief_with_only_the_app_cookie_is_refused() {
    let ca = Ca::new("Test CA");
    let (_origin, proxy) = bound_proxy(&ca, 300, 30).await;
    let out = scenario(&ca, &proxy, "app_cookie_only", &[]).await;
    assert_eq!(out["thief"], 303, "{out}");
    // Revoked by the thief's request: the owner, companion and all, is
    // refused too (401) and signs in again.
    assert_eq!(out["victim_after"], 401, "{out}");
    // The companion is Vigil's: taken out before the request reaches the app.
    assert_eq!(
        out["app_saw"],
        serde_json::json!({"session": true, "companion": false, "status": 200}),
        "{out}"
    );
    assert_eq!(reason_count(&proxy, "binding_missing").await, 1.0);
}

#[tokio::test]
async fn an_owner_whose_rotation_response_was_dropped_is_not_refused() {
    let ca = Ca::new("Test CA");
    let (_origin, proxy) = bound_proxy(&ca, 1, 1).await;
    let out = scenario(&ca, &proxy, "dropped", &[]).await;
    allowed_until(&out["rotation"], 200);
    let again = out["again"].as_array().unwrap();
    assert!(again.iter().all(|r| r[0] == 200), "{out}");
    assert_eq!(again.last().unwrap()[1], 1, "issued again: {out}");
    assert_eq!(statuses(&out["after"]), vec![200, 200, 200], "{out}");
    assert_eq!(reason_count(&proxy, "binding_reused").await, 0.0);
}

#[tokio::test]
async fn twenty_concurrent_requests_of_the_owner_across_a_rotation_are_all_allowed() {
    let ca = Ca::new("Test CA");
    // Long enough a grace that the twenty land inside it on a busy CI
    // machine; the wait is the rotation's, polled on the clock.
    let (_origin, proxy) = bound_proxy(&ca, 2, 2).await;
    let out = scenario(&ca, &proxy, "concurrent", &["3"]).await;
    assert_eq!(statuses(&out["statuses"]), vec![200; 20], "{out}");
    assert_eq!(out["rotations"], 1, "one rotation among the twenty: {out}");
    assert_eq!(statuses(&out["after"]), vec![200, 200, 200], "{out}");
}

/// A sibling host can set a cookie on the parent domain under the bare
/// name, never under `__Host-`: a thief who rotated a copied jar and
/// plants the successor in the owner's browser that way does not replace
/// the owner's companion, and the owner's own generation gives the copy
/// away.
#[tokio::test]
async fn a_successor_planted_under_the_bare_name_does_not_replace_the_owners_companion() {
    let ca = Ca::new("Test CA");
    let (_origin, proxy) = bound_proxy(&ca, 1, 1).await;
    let out = scenario(&ca, &proxy, "tossed", &[]).await;
    // The app's cookie is host-wide (`Path=/`, no `Domain`): so is the
    // companion, under the prefix.
    assert_eq!(
        out["names"],
        serde_json::json!(["__Host-vigil_bind"]),
        "{out}"
    );
    allowed_until(&out["thief_rotation"], 200);
    assert_eq!(out["thief_presents"], 200, "{out}");
    // Revoked: a redirect to the login page.
    allowed_until(&out["victim"], 303);
    // The owner's refusal, the one request after the planting.
    assert_eq!(reason_count(&proxy, "binding_reused").await, 1.0);
}

/// A sibling host tosses four bare-named junk companions onto the parent
/// domain (`Path` `/`, `/a`, `/a/`, `/a/b`): with the owner's `__Host-`
/// companion they are five values, one more than are read under one name.
/// The two names are capped apart and the bare ones are not read for a
/// session a `__Host-` value names: the owner goes on, in either order.
#[tokio::test]
async fn four_bare_values_tossed_by_a_sibling_do_not_spoil_the_owners_host_companion() {
    let ca = Ca::new("Test CA");
    let (_origin, proxy) = bound_proxy(&ca, 300, 30).await;
    let out = scenario(&ca, &proxy, "tossed_four", &[]).await;
    assert_eq!(
        out["names"],
        serde_json::json!(["__Host-vigil_bind"]),
        "{out}"
    );
    assert_eq!(out["bare_first"], 200, "{out}");
    assert_eq!(out["host_first"], 200, "{out}");
    assert_eq!(out["after"], 200, "{out}");
    assert_eq!(reason_count(&proxy, "binding_invalid").await, 0.0);
    assert_eq!(reason_count(&proxy, "binding_reused").await, 0.0);
}

/// `rotate_on_step_up` (the default): the response on which the app
/// confirms a step-up carries the next generation, so a copy taken before
/// it is refused after the grace — long before `rotate_after`.
#[tokio::test]
async fn a_confirmed_step_up_rotates_the_binding_and_the_older_copy_is_refused() {
    let ca = Ca::new("Test CA");
    let leaf = ca.leaf(&["localhost"]);
    let origin = Origin::start();
    let config = Config::new()
        .tls_listener("https", free_addr(), true, &[&leaf])
        .upstream("app", origin.addr())
        .route(
            Route::new("reauth", "/reauth", "app")
                .app_confirms()
                .high("revoke"),
        )
        .route(Route::new("app", "/", "app").high("revoke"))
        .section("[binding]\nenabled = true\nrotate_after_seconds = 3600\ngrace_seconds = 1\n");
    let proxy = Proxy::start(&config.render()).await;
    let out = scenario(&ca, &proxy, "step_up", &[]).await;
    assert_eq!(out["reauth"], serde_json::json!([200, 1]), "{out}");
    assert_eq!(out["victim_presents"], 200, "{out}");
    allowed_until(&out["thief"], 303);
    assert_eq!(out["victim_after"], 401, "{out}");
    // The copy's refusal, then the owner's request after the revocation.
    assert_eq!(reason_count(&proxy, "binding_reused").await, 2.0);
}
