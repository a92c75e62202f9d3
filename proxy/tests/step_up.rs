//! Step-up at a real identity provider: the npm `oidc-provider` on
//! loopback (`tests/idp/`), a real proxy process in front of a real
//! origin, and a person who follows the provider's forms ([`FormClient`])
//! or drives headless Chromium. Every refusal is written as the attack it
//! stops: a replayed, tampered or foreign callback, another account
//! signing in, a session nobody is known to own, a weaker sign-in than
//! asked, a loop, a flood.

// Test code: a failed unwrap is a failed test. clippy.toml allows these in
// #[test] functions; this also covers the helpers in `common`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{
    ACR_MFA, Browser, CLIENT_SECRET, Config, FormClient, Idp, IdpConfig, Origin, Page, Proxy,
    Route, run_browser,
};
use url::Url;

const CALLBACK: &str = "/.vigil/oidc/callback";
const STEP_UPS: &str = "vigil_proxy_step_ups_total";

/// The provider, and a proxy whose route `app` steps up at it whenever
/// risk is medium or high, with `extra` added to the config (rules,
/// `[oidc]` limits).
struct Stage {
    // Dropped in order: the proxy before the provider it talks to.
    proxy: Proxy,
    idp: Idp,
    _origin: Origin,
    _dir: tempfile::TempDir,
}

impl Stage {
    async fn start(oidc_extra: &str, extra: &str) -> Stage {
        Stage::with_route(Route::new("app", "/", "app"), oidc_extra, extra).await
    }

    async fn with_route(route: Route, oidc_extra: &str, extra: &str) -> Stage {
        Stage::build(
            route.medium("step_up").high("step_up").oidc(),
            oidc_extra,
            extra,
        )
        .await
    }

    /// A route that blocks at medium and high risk, stepping up at the
    /// provider only when asked (`it_was_me`, when `offered`).
    async fn blocking(offered: bool) -> Stage {
        let route = Route::new("app", "/", "app").medium("block").high("block");
        let route = if offered {
            route.it_was_me()
        } else {
            route.oidc()
        };
        Stage::build(route, "", "").await
    }

    async fn build(route: Route, oidc_extra: &str, extra: &str) -> Stage {
        let origin = Origin::start();
        let config = Config::new().upstream("app", origin.addr());
        let callback = format!("http://{}{CALLBACK}", config.http_addr());
        let idp = Idp::start(&IdpConfig::new().redirect_uri(&callback));
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("client-secret");
        std::fs::write(&secret, format!("{CLIENT_SECRET}\n")).unwrap();
        let config = config
            .route(route)
            .section(&format!(
                "[oidc]\nissuer = {:?}\nclient_id = \"vigil\"\nclient_secret_file = {:?}\n{oidc_extra}\n{extra}",
                idp.issuer(),
                secret.display().to_string(),
            ));
        let proxy = Proxy::start(&config.render()).await;
        Stage {
            proxy,
            idp,
            _origin: origin,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        self.proxy.url(path)
    }

    fn host_port(&self) -> String {
        self.proxy.url("").trim_start_matches("http://").to_owned()
    }

    /// `user` signs in at the app from Firefox and gets session cookie
    /// `session`; returns a person on another device holding that cookie
    /// (the user on a new laptop, or a thief).
    async fn session_elsewhere(&self, user: &str, session: &str) -> FormClient {
        let login = Browser::firefox()
            .get(&self.url(&format!("/login?user={user}&session={session}")))
            .await;
        assert_eq!(login.status(), 200);
        let mut other = FormClient::new();
        other.set_cookie(&self.host_port(), "session", session);
        other
    }

    /// Follows from `path` to the provider's login form.
    async fn to_login_form(&self, person: &mut FormClient, path: &str) -> Page {
        let sent = person.get(&self.url(path)).await;
        assert_eq!(sent.status, 303, "{}", sent.body);
        let to = sent.location().unwrap();
        assert!(to.starts_with(self.idp.issuer()), "{to}");
        let form = person.follow(&to, 5).await.page;
        assert_eq!(form.status, 200);
        assert!(form.body.contains("<form"), "{}", form.body);
        form
    }

    /// Signs in at the form and follows until the provider sends the
    /// browser back to Vigil's callback; returns that callback URL,
    /// unrequested.
    async fn sign_in(
        &self,
        person: &mut FormClient,
        form: &Page,
        login: &str,
        password: &str,
        otp: Option<&str>,
    ) -> String {
        let answer = person
            .submit_login(&form.url, &form.body, login, password, otp)
            .await;
        assert!(answer.is_redirect(), "{}: {}", answer.status, answer.body);
        let callback_prefix = self.url(CALLBACK);
        let back = person
            .follow_until(&answer.location().unwrap(), 10, |next| {
                next.starts_with(&callback_prefix)
            })
            .await;
        let callback = back.page.location().unwrap();
        assert!(callback.starts_with(&callback_prefix), "{callback}");
        callback
    }

    async fn step_ups(&self, stage: &str, outcome: &str) -> f64 {
        self.proxy
            .metric(STEP_UPS, &[("stage", stage), ("outcome", outcome)])
            .await
    }
}

impl Stage {
    /// The code of the refusal `page` shows, from the log record of its
    /// reference (the page tells people what happened; the record, the
    /// stable code).
    async fn code_of(&self, page: &Page) -> String {
        let reference = page.header("vigil-reference").expect("a reference");
        let log = self.proxy.wait_for_log(reference).await;
        let line = log.lines().find(|l| l.contains(reference)).unwrap();
        line.split("code=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no code in {line}"))
            .trim_matches('"')
            .to_owned()
    }
}

#[tokio::test]
async fn the_user_on_a_new_device_signs_in_again_and_gets_the_page() {
    let stage = Stage::start("", "").await;
    let mut laptop = stage.session_elsewhere("alice", "s-alice").await;

    // The new device is sent to the provider, not to the app.
    let sent = laptop.get(&stage.url("/account?tab=keys")).await;
    assert_eq!(sent.status, 303);
    let auth = Url::parse(&sent.location().unwrap()).unwrap();
    let param = |name: &str| {
        auth.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    assert_eq!(param("response_type").as_deref(), Some("code"));
    assert_eq!(param("client_id").as_deref(), Some("vigil"));
    assert_eq!(param("prompt").as_deref(), Some("login"));
    assert_eq!(param("code_challenge_method").as_deref(), Some("S256"));
    assert_eq!(
        param("redirect_uri").as_deref(),
        Some(stage.url(CALLBACK).as_str())
    );
    assert!(param("state").is_some_and(|s| s.len() >= 16));
    assert!(param("nonce").is_some_and(|s| s.len() >= 16));
    assert!(param("scope").unwrap().split(' ').any(|s| s == "openid"));

    let form = laptop.follow(auth.as_str(), 5).await.page;
    let callback = stage
        .sign_in(&mut laptop, &form, "alice", "pw-a", None)
        .await;
    // Back through Vigil's callback to the very page asked for.
    let passed = laptop.get(&callback).await;
    assert_eq!(passed.status, 303, "{}", passed.body);
    assert_eq!(passed.header("location"), Some("/account?tab=keys"));
    assert_eq!(stage.step_ups("callback", "passed").await, 1.0);

    // The session is confirmed: the new device is its baseline now.
    let page = laptop.get(&stage.url("/account?tab=keys")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.starts_with("GET /account?tab=keys"),
        "{}",
        page.body
    );
    assert!(page.body.contains("vigil-risk-level: low"), "{}", page.body);
    // The callback never reached the app, and no secret left Vigil.
    let log = stage.proxy.log();
    assert!(log.contains("step-up passed"), "{log}");
    assert!(!log.contains(CLIENT_SECRET), "client secret in the log");
    assert!(!log.contains("s-alice"), "raw session cookie in the log");
}

/// The "it was me" link a block page offers, as an absolute URL.
fn it_was_me_link(stage: &Stage, page: &Page) -> Option<String> {
    let start = page.body.find(&format!("href=\"{CALLBACK}?it_was_me="))? + "href=\"".len();
    let end = start + page.body[start..].find('"')?;
    Some(stage.url(&page.body[start..end]))
}

#[tokio::test]
async fn a_blocked_user_says_it_was_me_passes_a_step_up_and_gets_the_page() {
    let stage = Stage::blocking(true).await;
    let mut laptop = stage.session_elsewhere("alice", "s-alice-new").await;

    // The new device is refused, and the page offers to dispute it.
    let blocked = laptop.get(&stage.url("/account?tab=keys")).await;
    assert_eq!(blocked.status, 403, "{}", blocked.body);
    let block = blocked.header("vigil-reference").unwrap().to_owned();
    let link = it_was_me_link(&stage, &blocked).expect("an it-was-me link");

    // The link is not for anyone else: another session (a thief who read
    // it off the victim's screen or history) or no session at all; nor
    // once altered.
    let mut other = stage.session_elsewhere("mallory", "s-mallory").await;
    let page = other.get(&link).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(stage.code_of(&page).await, "step_up_link_invalid");
    let page = FormClient::new().get(&link).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(stage.code_of(&page).await, "step_up_no_session");
    let altered = link.replace(&block, &"0".repeat(block.len()));
    assert_ne!(altered, link);
    let page = laptop.get(&altered).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(stage.code_of(&page).await, "step_up_link_invalid");
    // The same cookie on another device (the thief's link passed to the
    // owner, or here the owner's Firefox following the laptop's link):
    // the link is the blocked device's alone.
    let firefox = Browser::firefox().cookie("session=s-alice-new");
    let r = firefox.get(&link).await;
    assert_eq!(r.status(), 403);
    assert_eq!(stage.step_ups("dispute", "step_up_link_invalid").await, 3.0);
    // The same cookie and the same headers from another browser (an
    // antidetect browser copying the laptop's): the same device to the
    // engine, but not the browser the block page marked.
    let mut copy = FormClient::new();
    copy.set_cookie(&stage.host_port(), "session", "s-alice-new");
    let page = copy.get(&link).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(stage.code_of(&page).await, "step_up_link_invalid");
    assert!(laptop.cookie(&stage.host_port(), "vigil-dispute").is_some());
    // Refused, nothing was confirmed: still blocked.
    assert_eq!(
        laptop.get(&stage.url("/account?tab=keys")).await.status,
        403
    );

    // The user follows it: off to the provider, and back to the page.
    let form = stage
        .to_login_form(&mut laptop, &link.replace(&stage.url(""), ""))
        .await;
    let callback = stage
        .sign_in(&mut laptop, &form, "alice", "pw-a", None)
        .await;
    let passed = laptop.get(&callback).await;
    assert_eq!(passed.status, 303, "{}", passed.body);
    assert_eq!(passed.header("location"), Some("/account?tab=keys"));
    assert_eq!(stage.step_ups("dispute", "sent").await, 1.0);
    assert_eq!(stage.step_ups("callback", "passed").await, 1.0);
    let page = laptop.get(&stage.url("/account?tab=keys")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("vigil-risk-level: low"), "{}", page.body);
    // The pass names the block the user disputed, for the labels.
    let log = stage.proxy.wait_for_log(&format!("disputed={block}")).await;
    assert!(log.contains("step-up passed"), "{log}");

    // Spent: the same link starts nothing more.
    let again = laptop.get(&link).await;
    assert_eq!(again.status, 403, "{}", again.body);
    assert_eq!(stage.code_of(&again).await, "step_up_link_invalid");
}

#[tokio::test]
async fn a_thief_who_says_it_was_me_must_sign_in_as_the_owner() {
    let stage = Stage::blocking(true).await;
    // A thief replays alice's cookie from his own machine: blocked, and
    // offered the link like anyone.
    let mut thief = stage.session_elsewhere("alice", "s-stolen").await;
    let blocked = thief.get(&stage.url("/")).await;
    assert_eq!(blocked.status, 403, "{}", blocked.body);
    let link = it_was_me_link(&stage, &blocked).unwrap();
    // Signing in with his own account at the provider takes nothing.
    let form = stage
        .to_login_form(&mut thief, &link.replace(&stage.url(""), ""))
        .await;
    let callback = stage.sign_in(&mut thief, &form, "bob", "pw-b", None).await;
    let page = thief.get(&callback).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(stage.code_of(&page).await, "step_up_wrong_user");
    assert_eq!(thief.get(&stage.url("/")).await.status, 403);
    assert_eq!(stage.step_ups("callback", "passed").await, 0.0);
    assert!(!stage.proxy.log().contains("disputed="));
}

#[tokio::test]
async fn a_block_an_operators_rule_decided_offers_no_it_was_me() {
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(
        rules.path().join("admin.toml"),
        r#"
[[rule]]
name = "admin-from-known-devices"
description = "admin pages only from a device the session knows"
path_prefixes = ["/admin"]
condition = 'risk.level != "low"'
action = "block"
"#,
    )
    .unwrap();
    let route = Route::new("app", "/", "app")
        .medium("block")
        .high("block")
        .it_was_me();
    let extra = format!(
        "[rules]
dir = {:?}
",
        rules.path().display().to_string()
    );
    let stage = Stage::build(route, "", &extra).await;
    let mut laptop = stage.session_elsewhere("alice", "s-rule").await;
    // The rule's block: policy, which a sign-in does not answer.
    let ruled = laptop.get(&stage.url("/admin/users")).await;
    assert_eq!(ruled.status, 403, "{}", ruled.body);
    assert_eq!(it_was_me_link(&stage, &ruled), None, "{}", ruled.body);
    // The score's block on the same session and device: offered.
    let scored = laptop.get(&stage.url("/reports")).await;
    assert_eq!(scored.status, 403, "{}", scored.body);
    assert!(it_was_me_link(&stage, &scored).is_some(), "{}", scored.body);
}

#[tokio::test]
async fn a_route_that_does_not_offer_it_was_me_shows_no_link_and_takes_none() {
    let stage = Stage::blocking(false).await;
    let mut laptop = stage.session_elsewhere("alice", "s-a1").await;
    let blocked = laptop.get(&stage.url("/")).await;
    assert_eq!(blocked.status, 403, "{}", blocked.body);
    assert!(!blocked.body.contains("it_was_me"), "{}", blocked.body);
    // A link made up (or made before a reload turned the offer off) is
    // refused here, and the block stands.
    let block = blocked.header("vigil-reference").unwrap();
    let made_up = format!("{CALLBACK}?it_was_me=9999999999.{block}.Lw.AAAA");
    let page = laptop.get(&stage.url(&made_up)).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(stage.code_of(&page).await, "step_up_link_invalid");
    assert_eq!(stage.step_ups("dispute", "step_up_link_invalid").await, 1.0);
    assert_eq!(laptop.get(&stage.url("/")).await.status, 403);
}

#[tokio::test]
async fn a_replayed_or_tampered_callback_is_refused() {
    let stage = Stage::start("", "").await;
    let mut laptop = stage.session_elsewhere("alice", "s-replay").await;
    let form = stage.to_login_form(&mut laptop, "/").await;
    let callback = stage
        .sign_in(&mut laptop, &form, "alice", "pw-a", None)
        .await;

    // A tampered state is no state.
    let tampered = callback.replace("state=", "state=x");
    let page = laptop.get(&tampered).await;
    assert_eq!(page.status, 400);
    assert_eq!(stage.code_of(&page).await, "step_up_state_unknown");

    // Duplicated parameters: the client does not get to choose which counts.
    let doubled = format!("{callback}&state=other");
    let page = laptop.get(&doubled).await;
    assert_eq!(page.status, 400);
    assert_eq!(stage.code_of(&page).await, "step_up_bad_callback");

    // The genuine callback passes once...
    assert_eq!(laptop.get(&callback).await.status, 303);
    // ...and only once.
    let replayed = laptop.get(&callback).await;
    assert_eq!(replayed.status, 400);
    assert_eq!(stage.code_of(&replayed).await, "step_up_state_unknown");

    // A good state with a forged code: the provider refuses the exchange.
    let mut other = stage.session_elsewhere("alice", "s-forge").await;
    let form = stage.to_login_form(&mut other, "/").await;
    let callback = stage
        .sign_in(&mut other, &form, "alice", "pw-a", None)
        .await;
    let url = Url::parse(&callback).unwrap();
    let state = url
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let forged = format!("{}?code=forged-code&state={state}", stage.url(CALLBACK));
    let page = other.get(&forged).await;
    assert_eq!(page.status, 502, "{}", page.body);
    assert_eq!(stage.code_of(&page).await, "step_up_exchange_failed");
    assert_eq!(
        stage.step_ups("callback", "step_up_exchange_failed").await,
        1.0
    );
}

#[tokio::test]
async fn a_callback_carried_to_another_session_is_refused() {
    let stage = Stage::start("", "").await;
    let mut victim = stage.session_elsewhere("alice", "s-victim").await;
    let form = stage.to_login_form(&mut victim, "/").await;
    let callback = stage
        .sign_in(&mut victim, &form, "alice", "pw-a", None)
        .await;
    // A thief who gets the callback URL (a log, a referrer) uses it with
    // his own session: refused, and the state is spent.
    let mut thief = stage.session_elsewhere("mallory", "s-thief").await;
    let page = thief.get(&callback).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(stage.code_of(&page).await, "step_up_session_mismatch");
    // Without any session at all: the same.
    let mut nobody = FormClient::new();
    let page = nobody.get(&callback).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert_eq!(stage.code_of(&page).await, "step_up_state_unknown");
}

#[tokio::test]
async fn another_account_signing_in_does_not_take_the_session() {
    let stage = Stage::start("", "").await;
    // A thief holds alice's cookie and passes the step-up with his own
    // account at the same provider.
    let mut thief = stage.session_elsewhere("alice", "s-alice2").await;
    let form = stage.to_login_form(&mut thief, "/").await;
    let callback = stage.sign_in(&mut thief, &form, "bob", "pw-b", None).await;
    let page = thief.get(&callback).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(stage.code_of(&page).await, "step_up_wrong_user");
    // Nothing was confirmed: the thief is still sent to sign in.
    assert_eq!(thief.get(&stage.url("/")).await.status, 303);
    assert_eq!(stage.step_ups("callback", "passed").await, 0.0);
}

#[tokio::test]
async fn a_session_nobody_is_known_to_own_must_sign_in_afresh() {
    let stage = Stage::start("", "").await;
    // The app opened a session without naming its user.
    let mut holder = stage.session_elsewhere("", "s-anon").await;
    let form = stage.to_login_form(&mut holder, "/").await;
    let callback = stage
        .sign_in(&mut holder, &form, "alice", "pw-a", None)
        .await;
    let page = holder.get(&callback).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(stage.code_of(&page).await, "step_up_unknown_user");
    // The page offers a fresh sign-in instead.
    assert!(page.body.contains(common::LOGIN_URL), "{}", page.body);
    assert_eq!(holder.get(&stage.url("/")).await.status, 303);
}

#[tokio::test]
async fn a_rule_asking_for_mfa_is_not_satisfied_by_a_password() {
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(
        rules.path().join("admin.toml"),
        format!(
            r#"
[[rule]]
name = "admin-needs-mfa"
description = "admin pages need a second factor"
path_prefixes = ["/admin"]
condition = 'risk.level != "low"'
action = "step_up"
acr_values = "{ACR_MFA}"
"#
        ),
    )
    .unwrap();
    let stage = Stage::start(
        "",
        &format!("[rules]\ndir = {:?}\n", rules.path().display().to_string()),
    )
    .await;
    let mut laptop = stage.session_elsewhere("alice", "s-mfa").await;
    let sent = laptop.get(&stage.url("/admin/users")).await;
    assert_eq!(sent.status, 303, "{}", sent.body);
    let auth = sent.location().unwrap();
    assert!(
        auth.contains(&format!("acr_values={}", ACR_MFA.replace(':', "%3A"))),
        "{auth}"
    );
    // A password alone: the provider answers, Vigil says it is not enough.
    let form = laptop.follow(&auth, 5).await.page;
    let callback = stage
        .sign_in(&mut laptop, &form, "alice", "pw-a", None)
        .await;
    let page = laptop.get(&callback).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(stage.code_of(&page).await, "step_up_insufficient");
    // With the second factor it passes.
    let form = stage.to_login_form(&mut laptop, "/admin/users").await;
    let callback = stage
        .sign_in(&mut laptop, &form, "alice", "pw-a", Some("123456"))
        .await;
    let page = laptop.get(&callback).await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(page.header("location"), Some("/admin/users"));
    assert_eq!(laptop.get(&stage.url("/admin/users")).await.status, 200);
}

#[tokio::test]
async fn a_page_that_always_asks_again_is_a_loop_not_a_redirect_storm() {
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(
        rules.path().join("always.toml"),
        r#"
[[rule]]
name = "always-step-up"
description = "a mistaken rule: steps up on every request to /always"
path_prefixes = ["/always"]
condition = 'request.method == "GET"'
action = "step_up"
"#,
    )
    .unwrap();
    let stage = Stage::start(
        "",
        &format!("[rules]\ndir = {:?}\n", rules.path().display().to_string()),
    )
    .await;
    let mut laptop = stage.session_elsewhere("alice", "s-loop").await;
    let form = stage.to_login_form(&mut laptop, "/always").await;
    let callback = stage
        .sign_in(&mut laptop, &form, "alice", "pw-a", None)
        .await;
    assert_eq!(laptop.get(&callback).await.status, 303);
    // Back at the page, the rule asks again: refused, not sent round.
    let page = laptop.get(&stage.url("/always")).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(stage.code_of(&page).await, "step_up_loop");
    assert_eq!(stage.step_ups("start", "step_up_loop").await, 1.0);
}

#[tokio::test]
async fn starts_are_limited_per_session() {
    let stage = Stage::start("per_session_per_minute = 3", "").await;
    let mut laptop = stage.session_elsewhere("alice", "s-flood").await;
    for _ in 0..3 {
        assert_eq!(laptop.get(&stage.url("/")).await.status, 303);
    }
    let page = laptop.get(&stage.url("/")).await;
    assert_eq!(page.status, 429, "{}", page.body);
    assert_eq!(stage.code_of(&page).await, "step_up_rate_limited");
    // Another session from the same address is not held back by it.
    let mut other = stage.session_elsewhere("bob", "s-other").await;
    assert_eq!(other.get(&stage.url("/")).await.status, 303);
}

#[tokio::test]
async fn a_rotated_provider_key_is_fetched_once_and_trusted() {
    let stage = Stage::start("", "").await;
    let mut laptop = stage.session_elsewhere("alice", "s-rotate").await;
    // The provider is discovered (and its keys fetched) at the first start.
    stage.to_login_form(&mut laptop, "/").await;
    // Then it rotates its signing key before signing this user's token.
    // Rotation ends the provider's pending interactions: start again.
    let kid = stage.idp.rotate_keys().await;
    let mut again = FormClient::new();
    again.set_cookie(&stage.host_port(), "session", "s-rotate");
    let form = stage.to_login_form(&mut again, "/").await;
    let callback = stage
        .sign_in(&mut again, &form, "alice", "pw-a", None)
        .await;
    let page = again.get(&callback).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let log = stage.proxy.log();
    let refetches: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("keys fetched again"))
        .collect();
    assert_eq!(refetches.len(), 1, "{log}");
    assert!(refetches[0].contains(&kid), "{log}");
}

#[tokio::test]
async fn chromium_passes_a_step_up_and_lands_on_the_page() {
    let stage = Stage::start("", "").await;
    assert_eq!(
        Browser::firefox()
            .get(&stage.url("/login?user=alice&session=s-chromium"))
            .await
            .status(),
        200
    );
    let seen = run_browser(serde_json::json!({
        "start": stage.url("/dashboard?from=chromium"),
        "cookies": [{"name": "session", "value": "s-chromium", "url": stage.url("/")}],
        "login": "alice",
        "password": "pw-a",
        "otp": "",
        "stop_prefix": stage.url("/dashboard"),
    }))
    .await;
    let hops: Vec<String> = seen["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_owned())
        .collect();
    // Vigil sent it to the provider, took the callback, and sent it back.
    assert!(
        hops.iter().any(|h| h.starts_with(stage.idp.issuer())),
        "{hops:?}"
    );
    assert!(hops.iter().any(|h| h.contains(CALLBACK)), "{hops:?}");
    assert_eq!(seen["status"], 200, "{seen}");
    assert_eq!(
        seen["url"].as_str().unwrap(),
        stage.url("/dashboard?from=chromium")
    );
    let body = seen["body"].as_str().unwrap();
    assert!(body.starts_with("GET /dashboard?from=chromium"), "{body}");
    assert_eq!(stage.step_ups("callback", "passed").await, 1.0);
}

/// The `auth_time` of each `step-up passed` record, in order.
fn passed_auth_times(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("step-up passed"))
        .map(|l| {
            l.split("auth_time=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn a_silent_sign_in_from_a_provider_session_is_not_a_step_up() {
    let stage = Stage::start("clock_skew_seconds = 0", "").await;
    // Alice steps up once on this device: it now holds a session at the
    // provider too.
    let mut device = stage.session_elsewhere("alice", "s-first").await;
    let form = stage.to_login_form(&mut device, "/").await;
    let callback = stage
        .sign_in(&mut device, &form, "alice", "pw-a", None)
        .await;
    assert_eq!(device.get(&callback).await.status, 303);
    let signed_in_at = passed_auth_times(&stage.proxy.log())[0];
    while now_secs() <= signed_in_at {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // An infostealer took both cookies: the app's session and the
    // provider's. Stepped up, the thief drops prompt=login from the
    // provider's URL, and the provider answers silently from its session.
    let mut thief = stage.session_elsewhere("alice", "s-second").await;
    for (name, value) in device.cookies_of(stage.idp.issuer()) {
        thief.set_cookie(&host_port_of(stage.idp.issuer()), &name, &value);
    }
    let sent = thief.get(&stage.url("/")).await;
    assert_eq!(sent.status, 303);
    let auth = sent.location().unwrap().replace("&prompt=login", "");
    assert!(!auth.contains("prompt="), "{auth}");
    let callback_prefix = stage.url(CALLBACK);
    let back = thief
        .follow_until(&auth, 10, |next| next.starts_with(&callback_prefix))
        .await;
    // No form was shown: the provider signed the thief in silently.
    assert!(
        back.hops.iter().all(|(_, status)| *status != 200),
        "{:?}",
        back.hops
    );
    let page = thief.get(&back.page.location().unwrap()).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(stage.code_of(&page).await, "step_up_not_fresh");
    assert_eq!(thief.get(&stage.url("/")).await.status, 303);
}

fn host_port_of(url: &str) -> String {
    let url = Url::parse(url).unwrap();
    format!("{}:{}", url.host_str().unwrap(), url.port().unwrap())
}

#[tokio::test]
async fn a_provider_that_keeps_an_old_auth_time_is_judged_by_vigils_own_clock() {
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(
        rules.path().join("strict.toml"),
        r#"
[[rule]]
name = "strict-needs-recent-sign-in"
description = "pages under /strict need a sign-in of the last 5 seconds"
path_prefixes = ["/strict"]
condition = 'risk.level != "low"'
action = "step_up"
max_age = 5
"#,
    )
    .unwrap();
    // The operator tells Vigil this provider keeps old auth_times.
    let stage = Stage::start(
        "clock_skew_seconds = 0\nrequire_auth_time = false",
        &format!("[rules]\ndir = {:?}\n", rules.path().display().to_string()),
    )
    .await;
    // `stale` is an account whose provider never advances auth_time.
    let mut first = stage.session_elsewhere("stale", "s-stale-1").await;
    let form = stage.to_login_form(&mut first, "/home").await;
    let callback = stage
        .sign_in(&mut first, &form, "stale", "pw-s", None)
        .await;
    assert_eq!(first.get(&callback).await.status, 303);
    let signed_in_at = passed_auth_times(&stage.proxy.log())[0];

    // Let the wall clock pass the first sign-in by more than max_age: the
    // behaviour under test is a function of time.
    while now_secs() <= signed_in_at + 5 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // A second step-up: the person signs in again (prompt=login), the
    // provider still says the first auth_time. Without a max_age, what
    // proves freshness is the token issued after Vigil sent the user, with
    // its nonce: it passes.
    let mut second = stage.session_elsewhere("stale", "s-stale-2").await;
    let form = stage.to_login_form(&mut second, "/home").await;
    let callback = stage
        .sign_in(&mut second, &form, "stale", "pw-s", None)
        .await;
    let page = second.get(&callback).await;
    assert_eq!(page.status, 303, "{}", stage.code_of(&page).await);
    assert_eq!(
        passed_auth_times(&stage.proxy.log()),
        [signed_in_at, signed_in_at]
    );

    // With the rule's max_age, the old auth_time is not enough.
    let mut third = stage.session_elsewhere("stale", "s-stale-3").await;
    let form = stage.to_login_form(&mut third, "/strict").await;
    let callback = stage
        .sign_in(&mut third, &form, "stale", "pw-s", None)
        .await;
    let page = third.get(&callback).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(stage.code_of(&page).await, "step_up_insufficient");
    // A provider that does advance it passes the same rule.
    let mut alice = stage.session_elsewhere("alice", "s-strict-alice").await;
    let sent = alice.get(&stage.url("/strict")).await;
    let auth = sent.location().unwrap();
    assert!(auth.contains("max_age=5"), "{auth}");
    let form = alice.follow(&auth, 5).await.page;
    let callback = stage
        .sign_in(&mut alice, &form, "alice", "pw-a", None)
        .await;
    assert_eq!(alice.get(&callback).await.status, 303);
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
