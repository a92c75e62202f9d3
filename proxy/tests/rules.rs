//! Rules end to end: rule files in a directory named by `[rules] dir`, a
//! real proxy process in front of a real origin, and the `rules check` and
//! `rules test` commands an operator runs.

// Test code: a failed unwrap is a failed test. clippy.toml allows these in
// #[test] functions; this also covers the helpers in `common`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{Browser, Config, Origin, Proxy, Route, raw_get};
use reqwest::StatusCode;
use reqwest::header::WWW_AUTHENTICATE;

const MATCHES: &str = "vigil_rules_matches_total";
const RELOADS: &str = "vigil_proxy_config_reloads_total";

/// A proxy with the one route given and the rules of `dir`.
async fn proxy_with_rules(origin: &Origin, route: Route, dir: &Path) -> Proxy {
    let config = rules_config(origin, route, dir);
    Proxy::start(&config).await
}

fn rules_config(origin: &Origin, route: Route, dir: &Path) -> String {
    Config::new()
        .upstream("app", origin.addr())
        .route(route)
        .section(&format!("[rules]\ndir = {:?}\n", dir.display().to_string()))
        .render()
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// The first line of the proxy's log (one record a line) holding
/// `needle`, once there is one.
async fn log_line(proxy: &Proxy, needle: &str) -> String {
    let log = proxy.wait_for_log(needle).await;
    log.lines().find(|l| l.contains(needle)).unwrap().to_owned()
}

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vigil-proxy"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

const SCANNER: &str = r#"
[[rule]]
name = "block-scanner"
description = "Known attack tools."
condition = 'request.headers["User-Agent"].contains("sqlmap")'
action = "block"
"#;

#[tokio::test]
async fn a_rule_decides_and_the_decision_log_and_metrics_name_it() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "10-scanner.toml", SCANNER);
    let origin = Origin::start();
    let proxy = proxy_with_rules(&origin, Route::new("app", "/", "app"), dir.path()).await;

    let ok = Browser::firefox().get(&proxy.url("/echo")).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let tool = Browser::new("sqlmap/1.7.2#stable (https://sqlmap.org)");
    let refused = tool.get(&proxy.url("/echo")).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    proxy
        .wait_for_metric(
            MATCHES,
            &[("rule", "block-scanner"), ("mode", "enforce")],
            |v| v == 1.0,
        )
        .await;
    let line = log_line(&proxy, "rule=\"block-scanner\"").await;
    assert!(line.contains("action=block"), "{line}");
}

#[tokio::test]
async fn a_header_split_over_two_lines_is_read_whole() {
    // The attack: the tool's name in a second User-Agent line, hoping the
    // rule reads only the first.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "10-scanner.toml", SCANNER);
    let origin = Origin::start();
    let proxy = proxy_with_rules(&origin, Route::new("app", "/", "app"), dir.path()).await;
    let response = raw_get(
        proxy.addr(),
        "/echo",
        &[b"User-Agent: Mozilla/5.0", b"User-Agent: sqlmap/1.7"],
    )
    .await;
    assert_eq!(response.status, Some(403));
    // And a byte that is not UTF-8 does not blank the value out.
    let response = raw_get(proxy.addr(), "/echo", &[b"User-Agent: sqlmap/1.7 \xff"]).await;
    assert_eq!(response.status, Some(403));
}

#[tokio::test]
async fn the_host_a_condition_reads_is_lower_case_whatever_the_client_wrote() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "10-admin.toml",
        "[[rule]]\nname = \"admin-host\"\ncondition = 'request.host == \"admin.test\"'\naction = \"block\"\n",
    );
    let origin = Origin::start();
    let proxy = proxy_with_rules(&origin, Route::new("app", "/", "app"), dir.path()).await;
    for host in ["admin.test", "ADMIN.test", "Admin.Test:80"] {
        let request = format!("GET /echo HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let response = common::raw_exchange(proxy.addr(), request.as_bytes()).await;
        assert_eq!(response.status, Some(403), "{host}");
    }
}

#[tokio::test]
async fn tags_reach_the_app_and_a_client_cannot_forge_them() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "10-tag.toml",
        "[[rule]]\nname = \"automation-tag\"\ncondition = 'device.class in [\"tool\", \"bot\"]'\n\
         action = \"tag\"\ntag = \"automation\"\n",
    );
    write(
        dir.path(),
        "20-admin.toml",
        "[[rule]]\nname = \"no-tools-on-admin\"\npath_prefixes = [\"/admin\"]\n\
         condition = 'device.class in [\"tool\", \"bot\"]'\naction = \"block\"\n",
    );
    let origin = Origin::start();
    let proxy = proxy_with_rules(&origin, Route::new("app", "/", "app"), dir.path()).await;
    let tool = Browser::new("curl/8.5.0");
    let echo = tool.echo(&proxy.url("/echo")).await;
    assert_eq!(echo.header("vigil-tags"), Some("automation"));
    // A refusal's decision log names the rule and the tags added before it.
    let refused = tool.get(&proxy.url("/admin")).await;
    assert_eq!(refused.status(), 403);
    let line = log_line(&proxy, "rule=\"no-tools-on-admin\"").await;
    assert!(line.contains("tags=\"automation\""), "{line}");
    // A browser's request carries no tags, whatever it sends itself.
    let forged = Browser::firefox()
        .request(&proxy.url("/echo"))
        .header("Vigil-Tags", "trusted-partner")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(common::Echo::parse(&forged).header("vigil-tags"), None);
    proxy
        // The allowed request and the refused one were both tagged.
        .wait_for_metric("vigil_rules_tags_total", &[("tag", "automation")], |v| {
            v == 2.0
        })
        .await;
}

#[tokio::test]
async fn a_shadow_rule_is_counted_and_logged_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "10-shadow.toml",
        r#"
[[rule]]
name = "revoke-everyone"
description = "Tried in shadow first: would end every session."
condition = 'session.present'
action = "revoke"
mode = "shadow"
"#,
    );
    let origin = Origin::start();
    let proxy = proxy_with_rules(&origin, Route::new("app", "/", "app"), dir.path()).await;
    let alice = Browser::firefox().cookie("session=alice");
    for _ in 0..3 {
        let r = alice.get(&proxy.url("/echo")).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    proxy
        .wait_for_metric(
            MATCHES,
            &[("rule", "revoke-everyone"), ("mode", "shadow")],
            |v| v == 3.0,
        )
        .await;
    assert_eq!(
        proxy
            .metric(MATCHES, &[("rule", "revoke-everyone"), ("mode", "enforce")])
            .await,
        0.0
    );
    let line = proxy.wait_for_log("shadow rule matched").await;
    assert!(line.contains("rule=revoke-everyone"), "{line}");
    assert!(
        line.contains("would=\"revoke\"") || line.contains("would=revoke"),
        "{line}"
    );
    // Nothing was revoked: the session still works, and no decision but
    // allow was made.
    let echo = alice.echo(&proxy.url("/echo")).await;
    assert_eq!(echo.header("vigil-risk-level"), Some("low"));
    assert_eq!(
        proxy
            .metric("vigil_proxy_decisions_total", &[("action", "revoke")])
            .await,
        0.0
    );
}

#[tokio::test]
async fn an_api_step_up_is_an_rfc_9470_challenge_with_the_rules_requirements() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "10-api.toml",
        r#"
[[rule]]
name = "api-writes-need-mfa"
path_prefixes = ["/api"]
methods = ["GET"]
condition = 'session.present'
action = "step_up"
acr_values = "urn:example:mfa"
max_age = 60
"#,
    );
    let origin = Origin::start();
    let proxy = proxy_with_rules(&origin, Route::new("app", "/", "app"), dir.path()).await;
    let client = Browser::firefox().bearer("token-1");
    let r = client.get(&proxy.url("/api/orders")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r.headers()[WWW_AUTHENTICATE].to_str().unwrap().to_owned();
    assert!(
        challenge.starts_with("Bearer error=\"insufficient_user_authentication\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("acr_values=\"urn:example:mfa\""),
        "{challenge}"
    );
    assert!(challenge.contains("max_age=60"), "{challenge}");
    // Out of the rule's scope, the route's policy decides: allowed.
    let r = client.get(&proxy.url("/echo")).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_bad_rule_reload_keeps_the_running_rules_and_a_good_one_applies_under_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let block = |path: &str| {
        format!("[[rule]]\nname = \"block-path\"\npath_prefixes = [{path:?}]\naction = \"block\"\n")
    };
    write(dir.path(), "10-block.toml", &block("/one"));
    let origin = Origin::start();
    let config = rules_config(&origin, Route::new("app", "/", "app"), dir.path());
    let proxy = Proxy::start(&config).await;
    let browser = Browser::firefox();
    assert_eq!(
        browser.get(&proxy.url("/one")).await.status(),
        StatusCode::FORBIDDEN
    );

    // Traffic that no reload may fail, running throughout.
    let url = proxy.url("/echo");
    let traffic = tokio::spawn(async move {
        let b = Browser::firefox();
        let mut statuses = Vec::new();
        for _ in 0..200 {
            statuses.push(b.get(&url).await.status());
        }
        statuses
    });

    // A broken rule file: refused, the old rules stay.
    write(
        dir.path(),
        "10-block.toml",
        "[[rule]]\nname = \"block-path\"\ncondition = 'risk.level =='\naction = \"block\"\n",
    );
    proxy.hangup();
    proxy
        .wait_for_metric(RELOADS, &[("result", "failed")], |v| v == 1.0)
        .await;
    let line = log_line(&proxy, "10-block.toml:3:").await;
    assert!(line.contains("rule \"block-path\""), "{line}");
    assert_eq!(
        browser.get(&proxy.url("/one")).await.status(),
        StatusCode::FORBIDDEN
    );

    // A good one: applied to the next request.
    write(dir.path(), "10-block.toml", &block("/two"));
    proxy.hangup();
    proxy
        .wait_for_metric(RELOADS, &[("result", "applied")], |v| v == 1.0)
        .await;
    assert_eq!(
        browser.get(&proxy.url("/two")).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        browser.get(&proxy.url("/one")).await.status(),
        StatusCode::OK
    );

    let statuses = traffic.await.unwrap();
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
}

#[test]
fn rules_check_reports_every_problem_with_file_rule_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.toml",
        "[[rule]]\nname = \"one\"\ncondition = 'risk.levle == \"high\"'\naction = \"block\"\n\n\
         [[rule]]\nname = \"two\"\ncondition = 'risk.level == \"hgih\"'\naction = \"blok\"\n",
    );
    let (ok, _, err) = cli(&["rules", "check", dir.path().to_str().unwrap()]);
    assert!(!ok);
    let file = dir.path().join("a.toml");
    let file = file.display();
    assert!(
        err.contains(&format!(
            "{file}:3:18: rule \"one\": condition: unknown fact `risk.levle`"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{file}:8:28: rule \"two\": condition: `risk.level` is one of"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{file}:9:10: rule \"two\": unknown action \"blok\""
        )),
        "{err}"
    );
}

#[test]
fn the_shipped_rule_set_checks_and_passes_its_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/default");
    let dir = dir.to_str().unwrap();
    let (ok, out, err) = cli(&["rules", "check", dir]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("rules ok"), "{out}");
    let (ok, out, err) = cli(&["rules", "test", dir]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(" 0 failed"), "{out}");
}

#[test]
fn rules_test_says_which_case_failed_and_what_each_rule_did() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "10-scanner.toml", SCANNER);
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    write(
        &dir.path().join("tests"),
        "cases.toml",
        r#"
[[case]]
name = "sqlmap is blocked"
expect = "block"
rule = "block-scanner"
[case.headers]
user-agent = "sqlmap/1.7"

[[case]]
name = "a wrong expectation"
expect = "allow"
[case.headers]
user-agent = "sqlmap/1.7"
"#,
    );
    let (ok, _, err) = cli(&["rules", "test", dir.path().to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("ok   "), "{err}");
    assert!(err.contains("FAIL "), "{err}");
    assert!(
        err.contains("a wrong expectation: block by rule \"block-scanner\""),
        "{err}"
    );
    assert!(err.contains("expected allow, got block"), "{err}");
    assert!(err.contains("block-scanner: match"), "{err}");
    assert!(err.contains("1 passed, 1 failed"), "{err}");
}

/// `explain` on a recorded request: the walk through a trusted proxy, the
/// credential judged, every fact as rules read it, each rule's result and
/// the action, as text and as JSON.
#[test]
fn explain_shows_what_a_recorded_request_is_judged_on_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    write(&rules, "10-scanner.toml", SCANNER);
    write(
        &rules,
        "20-admin.toml",
        r#"
[[rule]]
name = "zscaler-admin-tag"
path_prefixes = ["/admin"]
condition = 'client.provider == "zscaler"'
action = "tag"
tag = "corporate"
"#,
    );
    let config = dir.path().join("vigil-proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\nname = \"http\"\nlisten = \"127.0.0.1:8080\"\n\
             forwarded_headers = [\"x-forwarded-for\"]\n\n[[trusted_proxies]]\nname = \"zscaler\"\n\
             cidrs = [\"10.1.0.0/16\"]\n\n[[upstreams]]\nname = \"app\"\naddresses = [\"127.0.0.1:3000\"]\n\n\
             [[routes]]\nname = \"app\"\nupstream = \"app\"\n\n[rules]\ndir = {:?}\n",
            rules.display().to_string()
        ),
    )
    .unwrap();
    let request = dir.path().join("request.http");
    std::fs::write(
        &request,
        "GET /admin/users?page=2 HTTP/1.1\r\nHost: App.Example:8443\r\n\
         User-Agent: sqlmap/1.7\r\nCookie: theme=dark; session=stolen-value\r\n\
         X-Forwarded-For: 203.0.113.9, 10.1.4.4\r\n\r\n",
    )
    .unwrap();
    let run = |json: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigil-proxy"));
        cmd.arg("explain")
            .arg("-c")
            .arg(&config)
            .arg("--request")
            .arg(&request)
            .args(["--peer", "10.1.2.3"]);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let report: serde_json::Value = serde_json::from_str(&run(true)).unwrap();
    assert_eq!(report["request"]["host"], "app.example");
    assert_eq!(report["request"]["path"], "/admin/users");
    assert_eq!(report["route"]["name"], "app");
    assert_eq!(report["session"]["credential"], "cookie session");
    assert_eq!(report["session"]["key"].as_str().unwrap().len(), 8);
    let chain = report["client"]["chain"].as_array().unwrap();
    assert_eq!(chain.len(), 2, "{report}");
    assert_eq!(chain[0]["hop"], "203.0.113.9");
    assert_eq!(chain[0]["trusted_set"], serde_json::Value::Null);
    assert_eq!(chain[1]["hop"], "10.1.4.4");
    assert_eq!(chain[1]["trusted_set"], "zscaler");
    assert_eq!(report["client"]["client"], "203.0.113.9");
    assert_eq!(report["client"]["provider"], "zscaler");
    assert_eq!(report["facts"]["client.ip"], "203.0.113.9");
    assert_eq!(report["facts"]["client.chain_length"], 2);
    assert_eq!(report["facts"]["device.class"], "tool");
    let results: Vec<(String, String)> = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap().to_owned(),
                r["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        results,
        [
            ("block-scanner".to_owned(), "match".to_owned()),
            ("zscaler-admin-tag".to_owned(), "not reached".to_owned()),
        ]
    );
    assert_eq!(report["decided_by"], "rule block-scanner");
    assert_eq!(report["action"], "block");
    // The raw cookie value is never printed.
    let text = run(false);
    assert!(!text.contains("stolen-value"), "{text}");
    assert!(text.contains("action: block"), "{text}");
    assert!(
        text.contains("- hop=10.1.4.4 trusted_set=zscaler"),
        "{text}"
    );
}
