//! A refused request's facts end to end: a real proxy node, behind a
//! trusted balancer and a trusted provider, refuses a stolen session; the
//! detection it posts to `vigil-controller` (in this test process, on
//! SQLite) carries the client address and chain, the provider, the device
//! and geo as the decision saw them, and the controller's dashboard shows
//! them on the detection's page and finds it by address, prefix and ASN.
//! And a node's counts per minute end to end: the requests it judged, by
//! action, and its rules' matches (a shadow rule's with what it would
//! have done) on the controller's overview and rules page.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{Browser, Config, InProcessController, Origin, Proxy, Route, write_fleet_key};
use reqwest::StatusCode;
use vigil_geoip::testdb::{Layout, TestDb, TestRecord};

const ADMIN: &str = "facts-admin-token-0123456789";
const NODE_A: &str = "facts-node-a-token-0123";
const DEADLINE: Duration = Duration::from_secs(30);
/// The balancer in front of the node (a trusted peer).
const BALANCER: [u8; 4] = [127, 0, 0, 2];
const TRUSTED: &str = "[[trusted_proxies]]\nname = \"lb\"\ncidrs = [\"127.0.0.2/32\"]\n\
                       [[trusted_proxies]]\nname = \"zscaler\"\ncidrs = [\"198.51.100.0/24\"]\n";

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_refused_requests_facts_reach_the_controllers_detection_page() {
    let dir = tempfile::tempdir().unwrap();
    let key = write_fleet_key(dir.path());
    let store = format!("sqlite://{}", dir.path().join("controller.db").display());
    let mut controller = InProcessController::start(
        dir.path(),
        "controller.toml",
        &store,
        &key,
        ADMIN,
        &[("a", NODE_A)],
    );
    let city = dir.path().join("city.mmdb");
    let asn = dir.path().join("asn.mmdb");
    TestDb::new(Layout::IpLocationDb)
        .network("203.0.113.0/24", TestRecord::new().country("GB"))
        .network("192.0.2.0/24", TestRecord::new().country("NL"))
        .write(&city)
        .unwrap();
    TestDb::new(Layout::IpLocationDb)
        .network("203.0.113.0/24", TestRecord::new().asn(64500))
        .network("192.0.2.0/24", TestRecord::new().asn(64496))
        .write(&asn)
        .unwrap();
    let origin = Origin::start();
    let state = dir.path().join("a");
    std::fs::create_dir_all(&state).unwrap();
    let token_file = state.join("controller.token");
    std::fs::write(&token_file, NODE_A).unwrap();
    let config = Config::new()
        .state_dir(&state)
        .section(TRUSTED)
        .believe(&["x-forwarded-for"])
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app").high("block"))
        .section(&format!(
            "[geoip]\ncity = {:?}\nasn = {:?}\n\n[session]\nhash_key_file = {:?}\n\n\
             [controller]\nurl = \"http://{}\"\ntoken_file = {:?}\n",
            city.display().to_string(),
            asn.display().to_string(),
            key.display().to_string(),
            controller.addr(),
            token_file.display().to_string()
        ))
        .render();
    let node = Proxy::start(&config).await;
    node.wait_for_metric("vigil_proxy_fleet_connected", &[], |v| v == 1.0)
        .await;

    // Carl signs in from home (203.0.113.9) through the balancer.
    let home = |b: Browser| b.via_address(IpAddr::from(BALANCER));
    let owner = home(Browser::firefox());
    let r = owner
        .request(&node.url("/login?user=carl&session=s-carl"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = home(Browser::firefox().cookie("session=s-carl"))
        .request(&node.url("/echo"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // His cookie, from another browser elsewhere, through Zscaler, with a
    // forged entry and an `unknown` at the left of the chain.
    let refused = home(Browser::chrome().cookie("session=s-carl"))
        .request(&node.url("/echo"))
        .header(
            "x-forwarded-for",
            "6.6.6.6, unknown, 192.0.2.50, 198.51.100.10",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let reference = refused.headers()["vigil-reference"]
        .to_str()
        .unwrap()
        .to_owned();

    // An operator signs in to the dashboard.
    let r = client()
        .post(format!("http://{}/dashboard/login", controller.addr()))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .header("origin", format!("http://{}", controller.addr()))
        .body(format!("token={ADMIN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let get = |path: String| {
        let cookie = cookie.clone();
        let url = format!("http://{}{path}", controller.addr());
        async move {
            let r = client()
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    // The detection arrives with the node's next post: 404 until then.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let page = loop {
        let (status, body) = get(format!("/dashboard/detection?reference={reference}")).await;
        if status == 200 {
            break body;
        }
        assert_eq!(status, 404, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the detection never reached the controller"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The request's facts, not the session's baseline (Firefox at home).
    for want in [
        "<dt>Client address (as judged)</dt><dd><a href=\"/dashboard/search?q=192.0.2.50\"><code>192.0.2.50</code></a> · via the trusted provider <code>zscaler</code></dd>",
        "<dt>Forwarding chain</dt><dd><code>6.6.6.6, ?, 192.0.2.50, 198.51.100.10</code></dd>",
        "<dt>Peer</dt><dd><code>127.0.0.2</code></dd>",
        "chrome 131 on linux",
        "AS64496</a> · NL",
        "The session's baseline",
    ] {
        assert!(page.contains(want), "{want}\n{page}");
    }
    // Found by its address, a prefix holding it, and its ASN; not by
    // Carl's home network.
    for q in [
        "192.0.2.50",
        "192.0.2.0%2F24",
        "::ffff:192.0.2.0%2F120",
        "as64496",
    ] {
        let (status, body) = get(format!("/dashboard/search?q={q}")).await;
        assert_eq!(status, 200);
        assert!(body.contains(&reference), "{q}: {body}");
    }
    for q in ["203.0.113.9", "192.0.3.0%2F24", "AS64500"] {
        let (status, body) = get(format!("/dashboard/search?q={q}")).await;
        assert_eq!(status, 200);
        assert!(!body.contains(&reference), "{q}: {body}");
        assert!(
            body.contains("No detection held was judged on it."),
            "{q}: {body}"
        );
    }
    drop(node);
    controller.stop();
}

/// Signs in to the dashboard of the controller at `addr` with `token`:
/// the session cookie as a `Cookie` header's value.
async fn dashboard_cookie(addr: std::net::SocketAddr, token: &str) -> String {
    let r = client()
        .post(format!("http://{addr}/dashboard/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .header("origin", format!("http://{addr}"))
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// A real node judges requests — allowed, blocked by a rule, matched by a
/// shadow rule that would have revoked — and posts its counts at the turn
/// of the minute; the controller's rules page and overview show exactly
/// those counts.
#[tokio::test]
async fn a_nodes_counts_reach_the_controllers_overview_and_rules_page() {
    let dir = tempfile::tempdir().unwrap();
    let key = write_fleet_key(dir.path());
    let store = format!("sqlite://{}", dir.path().join("controller.db").display());
    let mut controller = InProcessController::start(
        dir.path(),
        "controller.toml",
        &store,
        &key,
        ADMIN,
        &[("a", NODE_A)],
    );
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("10-rules.toml"),
        r#"
[[rule]]
name = "block-admin"
path_prefixes = ["/admin"]
action = "block"

[[rule]]
name = "revoke-every-session"
condition = 'session.present'
action = "revoke"
mode = "shadow"
"#,
    )
    .unwrap();
    let origin = Origin::start();
    let state = dir.path().join("a");
    std::fs::create_dir_all(&state).unwrap();
    let token_file = state.join("controller.token");
    std::fs::write(&token_file, NODE_A).unwrap();
    let config = Config::new()
        .state_dir(&state)
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app"))
        .section(&format!(
            "[rules]\ndir = {:?}\n\n[session]\nhash_key_file = {:?}\n\n\
             [controller]\nurl = \"http://{}\"\ntoken_file = {:?}\n",
            rules.display().to_string(),
            key.display().to_string(),
            controller.addr(),
            token_file.display().to_string()
        ))
        .render();
    let node = Proxy::start(&config).await;
    node.wait_for_metric("vigil_proxy_fleet_connected", &[], |v| v == 1.0)
        .await;

    // Three allowed without a session, two allowed with one (the shadow
    // rule matches), four blocked by the rule.
    for _ in 0..3 {
        let r = Browser::firefox().get(&node.url("/echo")).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    let alice = Browser::firefox().cookie("session=alice");
    for _ in 0..2 {
        let r = alice.get(&node.url("/echo")).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    for _ in 0..4 {
        let r = Browser::firefox().get(&node.url("/admin/users")).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }

    let cookie = dashboard_cookie(controller.addr(), ADMIN).await;
    let get = |path: &str| {
        let cookie = cookie.clone();
        let url = format!("http://{}{path}", controller.addr());
        async move {
            let r = client()
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    // The node posts each minute once it is over: up to a minute, then
    // its next post.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
    let enforced = "<tr><td><code>block-admin</code></td><td>block</td><td>4</td>";
    let shadow = "<tr><td><code>revoke-every-session</code></td><td>revoke</td><td>2</td>";
    let rules_page = loop {
        let (status, body) = get("/dashboard/rules").await;
        assert_eq!(status, 200, "{body}");
        if body.contains(enforced) && body.contains(shadow) {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node's counts never reached the rules page:\n{body}\nthe node's log:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(rules_page.contains("Shadow matches"));
    let (status, overview) = get("/dashboard").await;
    assert_eq!(status, 200);
    for want in [
        "Requests judged per hour, last 24 hours (9)</h2>",
        "<tr><td>allow</td><td>5</td><td>0</td></tr>",
        "<tr><td>block</td><td>4</td><td>0</td></tr>",
    ] {
        assert!(overview.contains(want), "{want}\n{overview}");
    }
    drop(node);
    controller.stop();
}
