//! The dashboard (`docs/dashboard.md`) through HTTP, on SQLite and on
//! PostgreSQL: sign-in and its limits, sessions and cookies, roles, CSRF
//! and origin checks, the security headers, escaping of what nodes and
//! callers send, and a responder's false positive carried out as the
//! admin API's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{Db, both};

use std::net::SocketAddr;
use std::time::Duration;

use vigil_fleet::{
    Country, DeviceId, EventBatch, NodeEvent, NodeEventKind, RequestFacts, SessionId, UserId,
    VERSION,
};

const ADMIN: &str = "admin-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";
const NODE_A: &str = "node-a-token-0123456789";
const DEADLINE: Duration = Duration::from_secs(20);
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

struct Controller {
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// A client that follows no redirect: the tests read each one.
fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl Controller {
    async fn start(store: &str) -> Controller {
        Controller::start_with(store, "").await
    }

    /// [`Controller::start`] with `extra` at the end of its file (other
    /// sections).
    async fn start_with(store: &str, extra: &str) -> Controller {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hash.key"), "11".repeat(32)).unwrap();
        std::fs::write(dir.path().join("admin.token"), ADMIN).unwrap();
        let hash = |t: &str| hex::encode(vigil_controller::config::token_hash(t));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let toml = format!(
            "listen = \"{addr}\"\nstore = {store:?}\nhash_key_file = \"hash.key\"\nadmin_token_file = \"admin.token\"\n\
             user_names = \"clear\"\n\
             [[nodes]]\nname = \"a\"\ntoken_sha256 = \"{}\"\n\
             [dashboard]\nviewer_tokens_sha256 = [\"{}\"]\nfailed_logins_per_minute = 3\n{extra}",
            hash(NODE_A),
            hash(VIEWER),
        );
        let path = dir.path().join("controller.toml");
        std::fs::write(&path, toml).unwrap();
        let config = vigil_controller::Config::load(&path).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            vigil_controller::run_on(listener, config, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        let c = Controller {
            addr,
            _dir: dir,
            stop: Some(stop),
            task,
        };
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while client().get(c.url("/healthz")).send().await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "controller did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A browser's sign-in: the session cookie's value.
    async fn login(&self, token: &str) -> String {
        let r = self.login_with(token, Some(&self.origin())).await;
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], "/dashboard");
        let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        let value = set
            .strip_prefix("vigil-dashboard=")
            .unwrap()
            .split(';')
            .next()
            .unwrap();
        value.to_owned()
    }

    async fn login_with(&self, token: &str, origin: Option<&str>) -> reqwest::Response {
        let mut r = client()
            .post(self.url("/dashboard/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("sec-fetch-site", "same-origin")
            .body(format!(
                "token={}",
                url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()
            ));
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send().await.unwrap()
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let mut r = client().get(self.url(path));
        if let Some(c) = cookie {
            r = r.header("cookie", format!("vigil-dashboard={c}"));
        }
        r.send().await.unwrap()
    }

    async fn page(&self, path: &str, cookie: &str) -> String {
        let r = self.get(path, Some(cookie)).await;
        assert_eq!(r.status(), 200, "{path}");
        r.text().await.unwrap()
    }

    /// A form posted as a browser on this controller's page would.
    async fn post(&self, path: &str, cookie: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.post_from(
            path,
            cookie,
            form,
            Some(&self.origin()),
            Some("same-origin"),
        )
        .await
    }

    async fn post_from(
        &self,
        path: &str,
        cookie: &str,
        form: &[(&str, &str)],
        origin: Option<&str>,
        site: Option<&str>,
    ) -> reqwest::Response {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut r = client()
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", format!("vigil-dashboard={cookie}"))
            .body(body);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        if let Some(s) = site {
            r = r.header("sec-fetch-site", s);
        }
        r.send().await.unwrap()
    }

    async fn events(&self, events: Vec<NodeEvent>) {
        let r = client()
            .post(self.url("/v1/events"))
            .bearer_auth(NODE_A)
            .header("content-type", "application/json")
            .body(serde_json::to_string(&EventBatch { v: VERSION, events }).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    /// An admin API call with the admin token; its status.
    async fn admin(&self, path: &str, body: serde_json::Value) -> u16 {
        client()
            .post(self.url(path))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Each of `cases` (a path and the reason its page must give) is
    /// answered `400` with that reason.
    async fn bad_queries<P: AsRef<str>>(&self, cookie: &str, cases: &[(P, &str)]) {
        for (path, why) in cases {
            let path = path.as_ref();
            let r = self.get(path, Some(cookie)).await;
            assert_eq!(r.status(), 400, "{path}");
            let body = r.text().await.unwrap();
            assert!(body.contains(why), "{path}: {body}");
        }
    }

    /// A list's pages from `first`, following each page's next link (its
    /// text `link`) to `next(cursor)`: each page's HTML, in order.
    async fn follow(
        &self,
        cookie: &str,
        first: &str,
        link: &str,
        next: impl Fn(&str) -> String,
    ) -> Vec<String> {
        let mut pages = vec![self.page(first, cookie).await];
        while let Some(cursor) = pages.last().and_then(|html| next_cursor(html, link)) {
            pages.push(self.page(&next(&cursor), cookie).await);
        }
        pages
    }

    /// `events` posted in batches of 50.
    async fn events_in_batches(&self, mut events: Vec<NodeEvent>) {
        while !events.is_empty() {
            let rest = events.split_off(events.len().min(50));
            self.events(std::mem::replace(&mut events, rest)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// The `before=` cursor of a page's link to the next page, whose text is
/// `link` (`rel="next"`), when it has one.
fn next_cursor(html: &str, link: &str) -> Option<String> {
    let at = html.find(&format!("\" rel=\"next\">{link}</a>"))?;
    let start = html[..at].rfind("before=")? + "before=".len();
    Some(html[start..at].to_owned())
}

/// The CSRF token in a page's forms.
fn csrf(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[at..at + 43].to_owned()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn user_of(name: &str) -> UserId {
    UserId(
        vigil_engine::UserKey::for_name(
            &vigil_engine::SessionHashKey::from_bytes([0x11; 32]),
            name,
        )
        .as_u64(),
    )
}

fn detection(reference: &str, route: &str, user: Option<UserId>, session: u8) -> NodeEvent {
    NodeEvent {
        id: format!("event-{reference}"),
        kind: NodeEventKind::Detection {
            reference: reference.to_owned(),
            session: Some(SessionId([session; 16])),
            user,
            route: route.to_owned(),
            rule: Some("block-risky".to_owned()),
            action: "block".to_owned(),
            enforced: true,
            score: 85,
            reasons: vec![
                ("device_changed".to_owned(), 45),
                ("network_changed".to_owned(), 40),
            ],
            at: now() - 5,
            facts: None,
        },
    }
}

fn assert_headers(r: &reqwest::Response) {
    let h = r.headers();
    assert_eq!(h["content-security-policy"], CSP);
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-frame-options"], "DENY");
}

#[tokio::test]
async fn every_page_needs_a_session_and_every_answer_the_security_headers() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        for path in [
            "/dashboard",
            "/dashboard/detections",
            "/dashboard/detection?reference=x",
            "/dashboard/user?key=0123456789abcdef",
            "/dashboard/search?q=alice",
            "/dashboard/confirm?action=false-positive&reference=x",
        ] {
            let r = c.get(path, None).await;
            assert_eq!(r.status(), 303, "{path}");
            assert_eq!(r.headers()["location"], "/dashboard/login", "{path}");
            assert_headers(&r);
            // A cookie no session has is no session.
            let r = c.get(path, Some(&"A".repeat(43))).await;
            assert_eq!(r.status(), 303, "{path}");
        }
        let r = c.get("/dashboard/login", None).await;
        assert_eq!(r.status(), 200);
        assert_headers(&r);
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
        let html = r.text().await.unwrap();
        assert!(!html.contains("<script>"), "no inline script");
        assert!(!html.contains("style="), "no inline style");
        // Posts need a session too, before anything else is judged.
        let r = c
            .post("/dashboard/act", "", &[("action", "false-positive")])
            .await;
        assert_eq!(r.status(), 303);
        // The static files, the chart library's the very bytes the
        // workspace vendors (checked against its lockfile elsewhere).
        let vendor = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../vendor/uplot");
        for (path, kind, same_as) in [
            (
                "/dashboard/static/dashboard.css",
                "text/css; charset=utf-8",
                None,
            ),
            (
                "/dashboard/static/dashboard.js",
                "text/javascript; charset=utf-8",
                None,
            ),
            (
                "/dashboard/static/uplot.js",
                "text/javascript; charset=utf-8",
                Some("uPlot.iife.min.js"),
            ),
            (
                "/dashboard/static/uplot.css",
                "text/css; charset=utf-8",
                Some("uPlot.min.css"),
            ),
            (
                "/dashboard/static/uplot-LICENSE.txt",
                "text/plain; charset=utf-8",
                Some("LICENSE"),
            ),
        ] {
            let r = c.get(path, None).await;
            assert_eq!(r.status(), 200, "{path}");
            assert_eq!(r.headers()["content-type"], kind);
            assert_eq!(r.headers()["cache-control"], "private, max-age=300");
            assert_headers(&r);
            let body = r.bytes().await.unwrap();
            if let Some(file) = same_as {
                assert_eq!(body, std::fs::read(vendor.join(file)).unwrap(), "{path}");
            }
        }
        // Nothing else is served from there: no path out of the table.
        for path in [
            "/dashboard/static/",
            "/dashboard/static/uplot.mjs",
            "/dashboard/static/..%2f..%2fCargo.toml",
            "/dashboard/static/dashboard.js%00",
        ] {
            let r = c.get(path, None).await;
            assert_eq!(r.status(), 404, "{path}");
            assert_headers(&r);
        }
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_failed_sign_ins_are_limited() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        // The limit is 3 a minute (the config above).
        for bad in ["wrong-token-0123456789", " ", &format!("{ADMIN}x")] {
            let r = c.login_with(bad, Some(&c.origin())).await;
            assert_eq!(r.status(), 401, "{bad:?}");
            assert!(r.headers().get("set-cookie").is_none());
            assert_headers(&r);
            let html = r.text().await.unwrap();
            assert!(html.contains("does not sign in to this dashboard"));
        }
        // Over the limit even the right token is not judged.
        let r = c.login_with(ADMIN, Some(&c.origin())).await;
        assert_eq!(r.status(), 429);
        assert!(r.headers().get("set-cookie").is_none());
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

#[tokio::test]
async fn a_session_cookie_is_strict_and_signing_out_ends_it() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let r = c.login_with(ADMIN, Some(&c.origin())).await;
        assert_eq!(r.status(), 303);
        let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        let (value, attributes) = set
            .strip_prefix("vigil-dashboard=")
            .unwrap()
            .split_once(';')
            .unwrap();
        assert_eq!(value.len(), 43);
        // Over plain HTTP: not Secure, so not `__Host-` either.
        assert_eq!(
            attributes,
            " Path=/; Max-Age=43200; HttpOnly; SameSite=Strict"
        );
        assert!(!set.contains(ADMIN), "the token is not in the cookie");
        let html = c.page("/dashboard", value).await;
        assert!(html.contains("admin token · <strong>responder</strong>"));
        // A second sign-in is a second session; the first stays.
        let other = c.login(ADMIN).await;
        assert_ne!(other, value);
        // The cookie twice (one planted by a sibling host): no session.
        let r = client()
            .get(c.url("/dashboard"))
            .header(
                "cookie",
                format!("vigil-dashboard={value}; vigil-dashboard={other}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        // Sign out: the session ends, the cookie is cleared.
        let token = csrf(&html);
        let r = c
            .post("/dashboard/logout", value, &[("csrf", &token)])
            .await;
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], "/dashboard/login");
        assert!(
            r.headers()["set-cookie"]
                .to_str()
                .unwrap()
                .starts_with("vigil-dashboard=; Path=/; Max-Age=0;")
        );
        assert_eq!(c.get("/dashboard", Some(value)).await.status(), 303);
        assert_eq!(c.get("/dashboard", Some(&other)).await.status(), 200);
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

#[tokio::test]
async fn the_false_positive_confirmation_lists_exactly_what_it_will_trust() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let alice = user_of("alice");
        c.events(vec![
            with_facts(
                detection("ref-plan-1", "app", Some(alice), 1),
                Some(request_facts("203.0.113.77")),
            ),
            detection("ref-plan-2", "app", Some(alice), 2),
        ])
        .await;
        let cookie = c.login(ADMIN).await;
        let confirm = |reference: &str| {
            format!("/dashboard/confirm?action=false-positive&reference={reference}")
        };
        // The facts the node reported, each trust named for its user.
        let html = c.page(&confirm("ref-plan-1"), &cookie).await;
        for line in [
            format!("Trust device 00c0ffee00000083 for user {alice}."),
            format!("Trust network 203.0.113.0/24 for user {alice}."),
            format!("Trust ASN 64496 for user {alice}."),
            format!("Trust country NL for user {alice}."),
        ] {
            assert!(html.contains(&format!("<li>{line}</li>")), "{line}: {html}");
        }
        // Confirmed, the trusts streamed are exactly those listed.
        let token = csrf(&html);
        let r = c
            .post(
                "/dashboard/act",
                &cookie,
                &[
                    ("csrf", &token),
                    ("action", "false-positive"),
                    ("reference", "ref-plan-1"),
                ],
            )
            .await;
        assert_eq!(r.status(), 200);
        let store = vigil_controller::store::Store::open(&db.url())
            .await
            .unwrap();
        let detail = store.user_detail(alice, 10).await.unwrap();
        assert_eq!(detail.trusted.len(), 4, "{:?}", detail.trusted);
        // Marked: confirming again changes nothing, and the page says so.
        let html = c.page(&confirm("ref-plan-1"), &cookie).await;
        assert!(html.contains("marked a false positive already"), "{html}");
        assert!(!html.contains("Trust device"), "{html}");
        // No facts (a node of an earlier build): nothing trusted, said.
        let html = c.page(&confirm("ref-plan-2"), &cookie).await;
        assert!(html.contains("carries no request facts"), "{html}");
        assert!(!html.contains("Trust "), "{html}");
        // Unknown: nothing to do.
        let html = c.page(&confirm("ref-none"), &cookie).await;
        assert!(
            html.contains("No detection with this reference is held"),
            "{html}"
        );
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

#[tokio::test]
async fn a_forged_post_is_refused_and_a_responders_false_positive_is_the_admin_apis() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let alice = user_of("alice");
        c.events(vec![detection("ref-fp-1", "app", Some(alice), 1)])
            .await;
        let cookie = c.login(ADMIN).await;
        let html = c
            .page("/dashboard/detection?reference=ref-fp-1", &cookie)
            .await;
        assert!(html.contains("device_changed"));
        assert!(html.contains(&alice.to_string()));
        assert!(html.contains("Mark false positive"));
        let confirm = c
            .page(
                "/dashboard/confirm?action=false-positive&reference=ref-fp-1",
                &cookie,
            )
            .await;
        assert!(confirm.contains("stops counting toward its user&#39;s entity risk"));
        let token = csrf(&confirm);
        let form = |csrf: &'static str| {
            vec![
                ("csrf", csrf),
                ("action", "false-positive"),
                ("reference", "ref-fp-1"),
            ]
        };
        let token: &'static str = Box::leak(token.into_boxed_str());
        let other_session = c.login(ADMIN).await;
        let other_token: &'static str =
            Box::leak(csrf(&c.page("/dashboard", &other_session).await).into_boxed_str());
        // No token, another session's token, a token one character off.
        let mut off = token.to_owned().into_bytes();
        off[0] = if off[0] == b'A' { b'B' } else { b'A' };
        let off: &'static str = Box::leak(String::from_utf8(off).unwrap().into_boxed_str());
        for bad in ["", other_token, off] {
            let r = c.post("/dashboard/act", &cookie, &form(bad)).await;
            assert_eq!(r.status(), 403, "{bad:?}");
            assert_headers(&r);
        }
        let r = c.post("/dashboard/act", &cookie, &form(token)[1..]).await;
        assert_eq!(r.status(), 403, "no csrf field at all");
        // The right token from another site, however it says so.
        for (origin, site) in [
            (Some("http://evil.example"), Some("cross-site")),
            (Some("http://evil.example"), None),
            (None, Some("cross-site")),
            (None, Some("same-site")),
            (Some("null"), None),
            (Some(&*format!("{}.evil.example", c.origin())), None),
            (Some(&*format!("https://{}", c.addr)), None),
        ] {
            let r = c
                .post_from("/dashboard/act", &cookie, &form(token), origin, site)
                .await;
            assert_eq!(r.status(), 403, "{origin:?} {site:?}");
        }
        // What a browser sends for the controller's own form under
        // `Referrer-Policy: no-referrer`: `Origin: null` with
        // `Sec-Fetch-Site: same-origin`. Taken (the wrong token here
        // shows it got as far as the token).
        let r = c
            .post_from(
                "/dashboard/act",
                &cookie,
                &form(other_token),
                Some("null"),
                Some("same-origin"),
            )
            .await;
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("CSRF token is missing or not this session")
        );
        // A sign-in from another site is refused before it is judged.
        let r = c.login_with(ADMIN, Some("http://evil.example")).await;
        assert_eq!(r.status(), 403);
        // Nothing was marked so far.
        let store = vigil_controller::store::Store::open(&db.url())
            .await
            .unwrap();
        let held = store.detections_by_reference("ref-fp-1", 4).await.unwrap();
        assert_eq!(held[0].row.false_positive_at, None);
        // Unknown and extra fields are refused.
        let mut extra = form(token);
        extra.push(("session", "00"));
        let r = c.post("/dashboard/act", &cookie, &extra).await;
        assert_eq!(r.status(), 400);
        // The real thing.
        let r = c.post("/dashboard/act", &cookie, &form(token)).await;
        assert_eq!(r.status(), 200);
        let done = r.text().await.unwrap();
        assert!(
            done.contains("Marked a false positive; every node told."),
            "{done}"
        );
        let held = store.detections_by_reference("ref-fp-1", 4).await.unwrap();
        assert!(held[0].row.false_positive_at.is_some());
        // Again: nothing changes, as the admin API says.
        let r = c.post("/dashboard/act", &cookie, &form(token)).await;
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("Already marked a false positive; nothing changed.")
        );
        // Audited: the sign-ins, the two posts that got past the checks
        // (the extra field, the false positive) and the repeat; the
        // forged ones are not (no session's word is in them).
        let (audit, _) = store.audit_entries(20, 0).await.unwrap();
        let acts: Vec<&str> = audit
            .iter()
            .filter(|e| e.action == "false-positive")
            .map(|e| e.outcome.as_str())
            .collect();
        assert_eq!(acts.len(), 3, "{audit:?}");
        assert!(acts.contains(&"Marked a false positive; every node told."));
        assert!(acts.contains(&"Already marked a false positive; nothing changed."));
        assert!(
            acts.iter()
                .any(|o| o.starts_with("refused: field \"session\""))
        );
        // Trusting a network for the user: the admin API's change.
        let alice_key = alice.to_string();
        for (asn, status) in [("+5", 400), ("0", 400), ("x", 400), ("64500", 200)] {
            let r = c
                .post(
                    "/dashboard/act",
                    &cookie,
                    &[
                        ("csrf", token),
                        ("action", "trust-network"),
                        ("key", &alice_key),
                        ("asn", asn),
                    ],
                )
                .await;
            assert_eq!(r.status(), status, "{asn}");
        }
        let trusted = store.user_detail(alice, 10).await.unwrap().trusted;
        assert_eq!(trusted.len(), 1);
        assert_eq!(
            (trusted[0].what.as_str(), trusted[0].value.as_str()),
            ("asn", "64500")
        );
        // An unknown reference: the admin API's 404.
        let r = c
            .post(
                "/dashboard/act",
                &cookie,
                &[
                    ("csrf", token),
                    ("action", "false-positive"),
                    ("reference", "ref-none"),
                ],
            )
            .await;
        assert_eq!(r.status(), 404);
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

#[tokio::test]
async fn a_viewer_reads_but_cannot_act() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let bob = user_of("bob");
        c.events(vec![detection("ref-v-1", "app", Some(bob), 2)])
            .await;
        let cookie = c.login(VIEWER).await;
        let html = c
            .page("/dashboard/detection?reference=ref-v-1", &cookie)
            .await;
        assert!(html.contains("<strong>viewer</strong>"));
        assert!(!html.contains("Mark false positive"), "no action offered");
        let r = c
            .get(
                "/dashboard/confirm?action=false-positive&reference=ref-v-1",
                Some(&cookie),
            )
            .await;
        assert_eq!(r.status(), 403);
        let token = csrf(&html);
        for form in [
            vec![
                ("csrf", token.as_str()),
                ("action", "false-positive"),
                ("reference", "ref-v-1"),
            ],
            vec![
                ("csrf", token.as_str()),
                ("action", "revoke-session"),
                ("session", &"02".repeat(16)),
            ],
            vec![
                ("csrf", token.as_str()),
                ("action", "logout-user"),
                ("key", &bob.to_string()),
                ("name", "bob"),
            ],
        ] {
            let r = c.post("/dashboard/act", &cookie, &form).await;
            assert_eq!(r.status(), 403, "{form:?}");
            assert!(
                r.text()
                    .await
                    .unwrap()
                    .contains("only a responder may do this")
            );
        }
        let store = vigil_controller::store::Store::open(&db.url())
            .await
            .unwrap();
        let held = store.detections_by_reference("ref-v-1", 4).await.unwrap();
        assert_eq!(held[0].row.false_positive_at, None);
        // The attempts are not in the audit trail (a viewer posting in a
        // loop must not bury the responders' entries): only its sign-in,
        // with who and from where; the viewer reads the trail.
        let (audit, more) = store.audit_entries(10, 0).await.unwrap();
        assert!(!more);
        let seen: Vec<(&str, &str, &str)> = audit
            .iter()
            .map(|e| (e.action.as_str(), e.target.as_str(), e.outcome.as_str()))
            .collect();
        assert_eq!(seen, vec![("sign-in", "", "signed in")]);
        let viewer = format!(
            "viewer token {}",
            &hex::encode(vigil_controller::config::token_hash(VIEWER))[..8]
        );
        for e in &audit {
            assert_eq!(e.who, viewer);
            assert_eq!(e.role, "viewer");
            assert_eq!(e.client.as_deref(), Some("127.0.0.1"));
        }
        let html = c.page("/dashboard/audit", &cookie).await;
        assert!(html.contains("<td>sign-in</td>"));
        assert!(!html.contains("<td>revoke-session</td>"));
        let detail = store.user_detail(bob, 10).await.unwrap();
        assert_eq!(detail.revoked_at, None);
        // The viewer still signs out.
        let r = c
            .post("/dashboard/logout", &cookie, &[("csrf", &token)])
            .await;
        assert_eq!(r.status(), 303);
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

#[tokio::test]
async fn what_nodes_and_callers_send_is_escaped_on_every_page() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let evil = "<script>alert(1)</script>";
        let evil_user = user_of(evil);
        let reference = "\"><img src=x onerror=alert(2)>";
        c.events(vec![detection(reference, evil, Some(evil_user), 3)])
            .await;
        // A user name kept (user_names = "clear") from an admin call.
        let r = client()
            .post(c.url("/v1/admin/users/revoke"))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(serde_json::json!({"user": evil}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let cookie = c.login(ADMIN).await;
        let encoded: String = url::form_urlencoded::byte_serialize(reference.as_bytes()).collect();
        let pages = [
            "/dashboard".to_owned(),
            "/dashboard/detections".to_owned(),
            format!("/dashboard/detection?reference={encoded}"),
            format!("/dashboard/user?key={evil_user}"),
            format!("/dashboard/search?q={encoded}"),
            format!(
                "/dashboard/search?q={}",
                url::form_urlencoded::byte_serialize(evil.as_bytes()).collect::<String>()
            ),
            format!("/dashboard/confirm?action=false-positive&reference={encoded}"),
        ];
        for path in &pages {
            let html = c.page(path, &cookie).await;
            assert!(!html.contains(evil), "{path}");
            assert!(!html.contains("<img src=x"), "{path}");
            assert!(
                html.contains("&#60;script&#62;alert(1)&#60;/script&#62;")
                    || html.contains("&#34;&#62;&#60;img src=x onerror=alert(2)&#62;"),
                "{path}: {html}"
            );
        }
        // The route, on the detection page, and the name, on the overview
        // and the user page.
        let html = c.page(&pages[2], &cookie).await;
        assert!(html.contains("<dd>&#60;script&#62;alert(1)&#60;/script&#62;</dd>"));
        let html = c.page(&pages[3], &cookie).await;
        assert!(html.contains("<h1>User &#60;script&#62;alert(1)&#60;/script&#62; <code>"));
        // The reference in the user's timeline too.
        assert!(html.contains(
            "<code>&#34;&#62;&#60;img src=x onerror=alert(2)&#62;</code></a> <code>block on node a</code></td>"
        ));
        // A name asked for by search leads to the user's page by key.
        let html = c.page(&pages[5], &cookie).await;
        assert!(html.contains(&format!("/dashboard/user?key={evil_user}")));
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

#[tokio::test]
async fn the_overview_and_user_page_show_what_the_store_holds() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let carol = user_of("carol");
        c.events(vec![
            detection("ref-o-1", "app", Some(carol), 4),
            detection("ref-o-2", "api", Some(carol), 4),
        ])
        .await;
        let cookie = c.login(ADMIN).await;
        let html = c.page("/dashboard", &cookie).await;
        assert!(html.contains("Detections per hour, last 24 hours (2)"));
        assert!(html.contains("<rect class=\"a-block\""));
        assert!(html.contains("<code>device_changed</code></td><td>2</td>"));
        assert!(html.contains(&format!("/dashboard/user?key={carol}")));
        assert!(html.contains("ref-o-1") && html.contains("ref-o-2"));
        assert!(html.contains("<td>a</td>"), "the configured node");
        let html = c
            .page(&format!("/dashboard/user?key={carol}"), &cookie)
            .await;
        assert!(html.contains("Detections (2)"));
        assert!(
            html.contains(&"04".repeat(16)),
            "the session from the detections"
        );
        // A user by name is the page by key.
        let r = c.get("/dashboard/user?name=carol", Some(&cookie)).await;
        assert_eq!(r.status(), 303);
        assert_eq!(
            r.headers()["location"],
            format!("/dashboard/user?key={carol}").as_str()
        );
        // A user by key is offered when the store holds them; a value of
        // the same form (a node's reference id is 16 hex digits too) that
        // names nobody offers no empty user page.
        let html = c
            .page(&format!("/dashboard/search?q={carol}"), &cookie)
            .await;
        assert!(html.contains(&format!(
            "User by key: <a href=\"/dashboard/user?key={carol}\">"
        )));
        let html = c
            .page("/dashboard/search?q=00112233445566ff", &cookie)
            .await;
        assert!(!html.contains("User by key"));
        assert!(html.contains("<p>Nothing found.</p>"));
        // A session by key prefix.
        let html = c
            .page(&format!("/dashboard/search?q={}", "04".repeat(4)), &cookie)
            .await;
        assert!(html.contains(&format!("<code>{}</code>", "04".repeat(16))));
        // A LIKE wildcard finds nothing: a prefix is hex or no prefix.
        for q in ["0404%25", "0404_4", "%25%25%25%25%25%25"] {
            let html = c.page(&format!("/dashboard/search?q={q}"), &cookie).await;
            assert!(!html.contains(&"04".repeat(16)), "{q}");
        }
        // Bad queries: a clear 400, never a panic.
        for path in [
            "/dashboard/user?key=xyz",
            "/dashboard/user?key=0123456789abcdef&name=x",
            "/dashboard/detections?offset=-1",
            "/dashboard/detections?offset=1&offset=2",
            "/dashboard?x=1",
            "/dashboard/detection?reference=",
        ] {
            let r = c.get(path, Some(&cookie)).await;
            assert_eq!(r.status(), 400, "{path}");
        }
        let r = c
            .get("/dashboard/detection?reference=nope", Some(&cookie))
            .await;
        assert_eq!(r.status(), 404);
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// Where the browser test's npm packages are (`npm ci --prefix
/// controller/tests/browser`, as `.ci/run` does).
fn browser_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Runs `tests/browser/dashboard.mjs` with `args` (and `out`) and returns
/// what it wrote; panics, with its stderr, when it fails or runs past
/// 90 s (its own steps have 20 s each, plus Chromium's start).
async fn run_browser(mut args: serde_json::Value) -> serde_json::Value {
    assert!(
        browser_dir().join("node_modules/playwright-core").is_dir(),
        "run `npm ci --prefix controller/tests/browser` first"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.json");
    args["out"] = serde_json::json!(out);
    let mut child = std::process::Command::new("node")
        .arg(browser_dir().join("dashboard.mjs"))
        .arg(args.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node is installed");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("dashboard.mjs ran longer than 90 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(status.success(), "dashboard.mjs failed: {stderr}");
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

/// An operator with a real browser: signs in, finds a detection by the
/// reference id a user's ticket quotes, reads its facts, marks it a false
/// positive — with no CSP violation and no axe-core (WCAG 2.1 A/AA)
/// violation on any page on the way.
#[tokio::test]
async fn an_operator_finds_a_detection_by_reference_and_marks_it_false_positive_in_a_browser() {
    let db = Db::new(false).await;
    let c = Controller::start(&db.url()).await;
    let dave = user_of("dave");
    c.events(vec![with_facts(
        detection("ref-browser-1", "app", Some(dave), 5),
        Some(request_facts("192.0.2.50")),
    )])
    .await;
    // A node's counts: the overview's chart of requests judged and the
    // rules page have something to draw.
    c.events(vec![counts_event(
        "browser-counts",
        "0123456789abcdef",
        now() / 60 - 1,
        vec![
            count("action", "allow", None, 40),
            count("action", "block", None, 3),
            count("reason", "device_changed", None, 3),
            count("reason", "asn_changed", None, 2),
            count("rule", "block-risky", Some("block"), 3),
            count("shadow", "try-revoke", Some("revoke"), 6),
        ],
    )])
    .await;
    let mut args = serde_json::json!({
        "base": c.origin(),
        "token": ADMIN,
        "reference": "ref-browser-1",
        "user": dave.to_string(),
    });
    // VIGIL_SCREENSHOTS=docs/images keeps the screenshots in the docs current.
    if let Ok(dir) = std::env::var("VIGIL_SCREENSHOTS") {
        args["screenshots"] = serde_json::json!(dir);
    }
    let seen = run_browser(args).await;
    assert_eq!(
        seen["steps"],
        serde_json::json!([
            "/dashboard/login",
            "/dashboard",
            "/dashboard/rules",
            "/dashboard/search",
            "/dashboard/detection",
            "/dashboard/confirm",
            "/dashboard/act",
            "/dashboard/user",
            "/dashboard/precision"
        ])
    );
    let rules = seen["rules"].as_str().unwrap();
    for row in ["block-risky\tblock\t3", "try-revoke\trevoke\t6"] {
        assert!(rules.contains(row), "{row:?} in {rules}");
    }
    let detection = seen["detection"].as_str().unwrap();
    for fact in [
        "Detection ref-browser-1",
        "Reported by node a",
        "block-risky",
        "device_changed\t45",
        "network_changed\t40",
        "85 / 100",
        &dave.to_string(),
        "Client address (as judged)\n192.0.2.50 · via the trusted provider zscaler",
        "Forwarding chain\n?, 192.0.2.50, 198.51.100.10",
        "AS64496 · NL",
    ] {
        assert!(detection.contains(fact), "{fact:?} in {detection}");
    }
    assert!(
        seen["done"]
            .as_str()
            .unwrap()
            .contains("Marked a false positive; every node told."),
        "{seen}"
    );
    assert!(
        seen["labelled"]
            .as_str()
            .unwrap()
            .contains("Label\nfalse positive at "),
        "{seen}"
    );
    let user = seen["user"].as_str().unwrap();
    assert!(user.contains("Detections (1)"), "{user}");
    assert!(user.contains(&"05".repeat(16)), "{user}");
    let precision = seen["precision"].as_str().unwrap();
    assert!(
        precision.contains("Every labelled detection\nConfirmed\tFalse positive\tPrecision"),
        "{precision}"
    );
    assert!(precision.contains("\n0\t1\t0.0%\t0\t"), "{precision}");
    // Every chart drawn by the chart library, each with the series the
    // page's data names — the script ran under the page's CSP.
    let legends = |page: &str| -> Vec<(String, bool, Vec<String>)> {
        seen["charts"][page]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["label"].as_str().unwrap().to_owned(),
                    c["drawn"].as_bool().unwrap(),
                    c["legend"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|l| l.as_str().unwrap().to_owned())
                        .collect(),
                )
            })
            .collect()
    };
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    // The cursor over the counts' hour reads that hour, each action's own
    // count (block is stacked on allow: 43 at its top).
    let start = seen["hoverStart"].as_u64().unwrap();
    let hour = {
        let secs = start % 86_400;
        format!("{:02}:00Z", secs / 3600)
    };
    let hover: Vec<String> = serde_json::from_value(seen["hover"].clone()).unwrap();
    assert_eq!(hover.len(), 3, "{hover:?}");
    assert!(
        hover[0].starts_with("Time (UTC)=") && hover[0].ends_with(&hour),
        "{hover:?} at {hour}"
    );
    assert_eq!(hover[1..], ["allow=40".to_owned(), "block=3".to_owned()]);
    assert_eq!(
        legends("overview"),
        vec![
            (
                "Detections per hour by action over the last 24 hours".to_owned(),
                true,
                strings(&["Time (UTC)", "block"])
            ),
            (
                "Requests judged per hour by action decided over the last 24 hours".to_owned(),
                true,
                strings(&["Time (UTC)", "allow", "block"])
            ),
            (
                "Decisions per hour by the reasons they carried over the last 24 hours, every node together".to_owned(),
                true,
                strings(&["Time (UTC)", "device_changed", "asn_changed"])
            ),
        ]
    );
    assert_eq!(
        legends("user"),
        vec![(
            "Entity risk per hour over the last 7 days, the highest in each hour".to_owned(),
            true,
            strings(&["Time (UTC)", "entity risk"])
        )]
    );
    let precision_charts = legends("precision");
    assert_eq!(precision_charts.len(), 2);
    assert_eq!(
        precision_charts[0].2,
        strings(&[
            "Time (UTC)",
            "passed step-up",
            "false positive",
            "confirmed"
        ])
    );
    assert_eq!(precision_charts[1].2, strings(&["Time (UTC)", "precision"]));
    assert!(precision_charts.iter().all(|c| c.1), "{precision_charts:?}");
    assert_eq!(seen["csp"], serde_json::json!([]), "no CSP violation");
    for (page, violations) in seen["axe"].as_object().unwrap() {
        assert_eq!(violations, &serde_json::json!([]), "axe on {page}");
    }
    let store = vigil_controller::store::Store::open(&db.url())
        .await
        .unwrap();
    let held = store
        .detections_by_reference("ref-browser-1", 4)
        .await
        .unwrap();
    assert!(held[0].row.false_positive_at.is_some());
    c.stop().await;
    db.drop_db().await;
}

// === the request's facts (docs/dashboard.md, Detection page) ===

const JA4: &str = "t13d1516h2_8daaf6152771_e5627efa2ab1";
const ALPN_UPPER: &str = "t13d1516XY_8daaf6152771_e5627efa2ab1";

fn request_facts(client: &str) -> RequestFacts {
    RequestFacts {
        client: client.parse().unwrap(),
        peer: "10.0.0.2".parse().unwrap(),
        chain: vec![
            None,
            Some(client.parse().unwrap()),
            Some("198.51.100.10".parse().unwrap()),
        ],
        chain_truncated: true,
        provider: Some("zscaler".to_owned()),
        ja4: Some(JA4.to_owned()),
        device: DeviceId(0x00c0_ffee_0000_0083),
        browser: "chrome".to_owned(),
        major: 131,
        platform: "linux".to_owned(),
        country: Some(Country(*b"NL")),
        asn: Some(64496),
    }
}

fn with_facts(mut event: NodeEvent, facts: Option<RequestFacts>) -> NodeEvent {
    if let NodeEventKind::Detection { facts: f, .. } = &mut event.kind {
        *f = facts.map(Box::new);
    }
    event
}

impl Controller {
    /// A node's batch as posted: its status and answer.
    async fn post_events(&self, events: Vec<NodeEvent>) -> (u16, String) {
        let r = client()
            .post(self.url("/v1/events"))
            .bearer_auth(NODE_A)
            .header("content-type", "application/json")
            .body(serde_json::to_string(&EventBatch { v: VERSION, events }).unwrap())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

/// A detection's page shows the request's facts as its node reported them
/// (and, for one from a node of an earlier build, says they were not
/// reported), apart from the session's baseline; search finds detections
/// by client address, CIDR prefix (IPv4 and IPv6), ASN and JA4, typed in
/// any case; an erased user's detections, facts with them, are found no
/// more.
#[tokio::test]
async fn a_detections_request_facts_are_shown_and_searched() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let dora = user_of("dora");
        c.events(vec![
            with_facts(detection("ref-f-1", "app", Some(dora), 5), Some(request_facts("192.0.2.50"))),
            with_facts(detection("ref-f-2", "app", Some(dora), 5), Some(request_facts("2001:db8:1::7"))),
            detection("ref-f-3", "app", Some(dora), 5),
            // A client's ALPN of upper-case letters is in its JA4.
            with_facts(detection("ref-f-4", "app", Some(dora), 5), {
                let mut f = request_facts("198.18.0.4");
                f.ja4 = Some(ALPN_UPPER.to_owned());
                Some(f)
            }),
        ])
        .await;
        let cookie = c.login(VIEWER).await;
        let html = c.page("/dashboard/detection?reference=ref-f-1", &cookie).await;
        for want in [
            "<dt>Client address (as judged)</dt><dd><a href=\"/dashboard/search?q=192.0.2.50\"><code>192.0.2.50</code></a> · via the trusted provider <code>zscaler</code></dd>",
            "<code>?, 192.0.2.50, 198.51.100.10</code> <span class=\"muted\">(entries left out",
            "<dt>Peer</dt><dd><code>10.0.0.2</code></dd>",
            "<code>00c0ffee00000083</code> · chrome 131 on linux",
            &format!("<a href=\"/dashboard/search?q={JA4}\"><code>{JA4}</code></a>"),
            "<a href=\"/dashboard/search?q=AS64496\">AS64496</a> · NL",
            "The session's baseline",
        ] {
            assert!(html.contains(want), "{want}\n{html}");
        }
        let html = c.page("/dashboard/detection?reference=ref-f-3", &cookie).await;
        assert!(html.contains("Not reported: the node that made this decision reports detections without"));
        let search = |q: &str| {
            let q: String = url::form_urlencoded::byte_serialize(q.as_bytes()).collect();
            format!("/dashboard/search?q={q}")
        };
        for (q, found, not) in [
            ("192.0.2.50", &["ref-f-1"][..], &["ref-f-2", "ref-f-3"][..]),
            ("192.0.2.0/24", &["ref-f-1"], &["ref-f-2"]),
            ("192.0.0.0/8", &["ref-f-1"], &["ref-f-2"]),
            ("::ffff:192.0.2.0/120", &["ref-f-1"], &["ref-f-2"]),
            ("192.0.2.51", &[], &["ref-f-1"]),
            ("192.0.3.0/24", &[], &["ref-f-1"]),
            ("2001:db8:1::7", &["ref-f-2"], &["ref-f-1"]),
            ("2001:db8::/32", &["ref-f-2"], &["ref-f-1"]),
            ("2001:db8:2::/48", &[], &["ref-f-2"]),
            ("AS64496", &["ref-f-1", "ref-f-2"], &["ref-f-3"]),
            ("as64496", &["ref-f-1", "ref-f-2"], &[]),
            ("AS64497", &[], &["ref-f-1"]),
            (JA4, &["ref-f-1", "ref-f-2"], &["ref-f-3", "ref-f-4"]),
            (ALPN_UPPER, &["ref-f-4"], &["ref-f-1"]),
            (&JA4.to_ascii_uppercase(), &["ref-f-1", "ref-f-2"], &[]),
        ] {
            let html = c.page(&search(q), &cookie).await;
            for r in found {
                assert!(html.contains(&format!(">{r}</code>")), "{q} finds {r}");
            }
            for r in not {
                assert!(!html.contains(&format!(">{r}</code>")), "{q} does not find {r}");
            }
            if found.is_empty() {
                assert!(html.contains("No detection held was judged on it."), "{q}");
            }
        }
        // Prefixes out of bounds are said so, not searched.
        for (q, why) in [
            ("10.0.0.0/7", "a prefix length of this family is 8 to 32"),
            ("10.0.0.0/33", "a prefix length of this family is 8 to 32"),
            ("::/15", "a prefix length of this family is 16 to 128"),
            ("AS0", "an ASN is `AS` and a number from 1 to 4294967295"),
            ("AS4294967296", "an ASN is `AS` and a number from 1 to 4294967295"),
        ] {
            let html = c.page(&search(q), &cookie).await;
            assert!(html.contains(&why.replace('`', "&#96;")) || html.contains(why), "{q}: {html}");
        }
        // Erased, the user's detections and their facts are gone.
        let r = client()
            .post(c.url("/v1/admin/users/erase"))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(serde_json::json!({"user": "dora"}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        for q in ["192.0.2.50", "AS64496", JA4] {
            let html = c.page(&search(q), &cookie).await;
            assert!(!html.contains(">ref-f-1</code>"), "{q}");
            assert!(html.contains("No detection held was judged on it."), "{q}");
        }
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// A change that puts facts out of bounds.
type Spoil = Box<dyn Fn(&mut RequestFacts)>;

/// A node's facts are bounded and checked, a batch with one out of bounds
/// refused whole (`400`, nothing stored): a chain of 17 entries, a JA4 of
/// markup or upper case, a browser, platform or provider of markup, ASN 0,
/// an entry of the chain that is no address. A batch posted again, or the
/// same reference under a new event id with other facts, changes nothing:
/// the first facts stand.
#[tokio::test]
async fn a_nodes_oversized_or_bogus_facts_are_refused_and_duplicates_change_nothing() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let eve = user_of("eve");
        let bad: Vec<(&str, Spoil)> = vec![
            ("a long chain", Box::new(|f| f.chain = vec![None; 17])),
            (
                "a JA4 of markup",
                Box::new(|f| f.ja4 = Some("<script>alert(1)</script>_8daaf6152771".to_owned())),
            ),
            (
                "a JA4 with upper-case hex",
                Box::new(|f| f.ja4 = Some(JA4.to_ascii_uppercase())),
            ),
            (
                "a browser of markup",
                Box::new(|f| f.browser = "<script>alert(1)</script>".to_owned()),
            ),
            (
                "a platform of markup",
                Box::new(|f| f.platform = "\"><img src=x>".to_owned()),
            ),
            (
                "a long provider",
                Box::new(|f| f.provider = Some("p".repeat(65))),
            ),
            ("ASN 0", Box::new(|f| f.asn = Some(0))),
        ];
        for (what, spoil) in &bad {
            let mut f = request_facts("192.0.2.66");
            spoil(&mut f);
            let (status, body) = c
                .post_events(vec![with_facts(
                    detection("ref-bad", "app", Some(eve), 6),
                    Some(f),
                )])
                .await;
            assert_eq!(status, 400, "{what}: {body}");
        }
        // Not an address, in the chain or as the client: the batch does
        // not read.
        let json = serde_json::to_string(&EventBatch {
            v: VERSION,
            events: vec![with_facts(
                detection("ref-bad", "app", Some(eve), 6),
                Some(request_facts("192.0.2.66")),
            )],
        })
        .unwrap();
        for spoilt in [
            json.replace("\"198.51.100.10\"", "\"<script>\""),
            json.replacen("\"192.0.2.66\"", "\"192.0.2.666\"", 1),
        ] {
            assert_ne!(spoilt, json);
            let r = client()
                .post(c.url("/v1/events"))
                .bearer_auth(NODE_A)
                .header("content-type", "application/json")
                .body(spoilt)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400);
        }
        let cookie = c.login(ADMIN).await;
        assert_eq!(
            c.get("/dashboard/detection?reference=ref-bad", Some(&cookie))
                .await
                .status(),
            404
        );
        // The same batch twice, then the reference again under another
        // event id with other facts: the first facts stand.
        let first = with_facts(
            detection("ref-dup", "app", Some(eve), 6),
            Some(request_facts("192.0.2.66")),
        );
        let (status, body) = c.post_events(vec![first.clone()]).await;
        assert_eq!(
            (status, body.contains("\"accepted\":1")),
            (200, true),
            "{body}"
        );
        let (status, body) = c.post_events(vec![first.clone()]).await;
        assert_eq!(
            (status, body.contains("\"duplicates\":1")),
            (200, true),
            "{body}"
        );
        let mut other = with_facts(first, Some(request_facts("203.0.113.1")));
        other.id = "event-ref-dup-again".to_owned();
        let (status, _) = c.post_events(vec![other]).await;
        assert_eq!(status, 200);
        let html = c
            .page("/dashboard/detection?reference=ref-dup", &cookie)
            .await;
        assert!(html.contains("<code>192.0.2.66</code>"));
        assert!(!html.contains("203.0.113.1"));
        // What an operator types is shown, never run.
        for q in [
            "<script>alert(1)</script>/24",
            "AS<script>",
            "\"><img src=x onerror=alert(2)>",
        ] {
            let encoded: String = url::form_urlencoded::byte_serialize(q.as_bytes()).collect();
            let html = c
                .page(&format!("/dashboard/search?q={encoded}"), &cookie)
                .await;
            assert!(
                !html.contains("<script>alert") && !html.contains("<img src=x"),
                "{q}"
            );
        }
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

fn count(kind: &str, name: &str, action: Option<&str>, n: u64) -> vigil_fleet::Count {
    vigil_fleet::Count {
        kind: kind.to_owned(),
        name: name.to_owned(),
        action: action.map(str::to_owned),
        n,
    }
}

/// The data a page hands its chart library for the figure whose
/// `data-chart-label` starts with `label`: the attribute's JSON, its HTML
/// escapes undone as a browser would.
fn chart_data(html: &str, label: &str) -> serde_json::Value {
    let end = html
        .find(&format!("\" data-chart-label=\"{label}"))
        .unwrap_or_else(|| panic!("no chart {label:?} in {html}"));
    let start = html[..end].rfind("data-chart=\"").unwrap() + "data-chart=\"".len();
    let json = html[start..end]
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&#60;", "<")
        .replace("&#62;", ">")
        .replace("&#38;", "&");
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

fn counts_event(id: &str, run: &str, minute: u64, counts: Vec<vigil_fleet::Count>) -> NodeEvent {
    NodeEvent {
        id: id.to_owned(),
        kind: NodeEventKind::Counts(vigil_fleet::NodeCounts {
            run: run.to_owned(),
            minute,
            counts,
        }),
    }
}

/// A node's counts per minute become the overview's requests judged and
/// the rules page, exactly; a batch posted again, or the same counts under
/// another event id, count once, while another run of the node in the same
/// minute adds its own (a third does not), and a minute posted again
/// replaces its run's rows; counts out of bounds (an action no engine
/// decides among them) are refused with the whole batch; a post without
/// the node's token is `401`; a minute far ahead or backdated past the
/// hour is ignored, a reason code outside the engine's set left out; what
/// the store holds is escaped.
#[tokio::test]
async fn a_nodes_counts_are_shown_exactly_and_a_replayed_post_counts_once() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let minute = now() / 60 - 1;
        let run = "0123456789abcdef";
        let first = counts_event(
            "counts-1",
            run,
            minute,
            vec![
                count("action", "allow", None, 7),
                count("action", "block", None, 2),
                count("monitored", "step_up", None, 3),
                count("reason", "asn_changed", None, 4),
                count("rule", "block-tor", Some("block"), 2),
                count("shadow", "try-geo", Some("step_up"), 5),
            ],
        );
        let (status, body) = c.post_events(vec![first.clone()]).await;
        assert_eq!(
            (status, body.contains("\"accepted\":1")),
            (200, true),
            "{body}"
        );
        // The retry of a batch whose ack was lost: a duplicate.
        let (status, body) = c.post_events(vec![first.clone()]).await;
        assert_eq!(
            (status, body.contains("\"duplicates\":1")),
            (200, true),
            "{body}"
        );
        // The same counts under another id (a node's queue replayed after
        // a crash): taken, and replacing, not adding.
        let mut again = first.clone();
        again.id = "counts-1-again".to_owned();
        let (status, body) = c.post_events(vec![again]).await;
        assert_eq!(
            (status, body.contains("\"accepted\":1")),
            (200, true),
            "{body}"
        );
        // The node restarted within the minute: its new run counts beside.
        // A minute posted again replaces what its run posted for it (the
        // revocations below are gone), and a reason code outside the
        // engine's set is left out.
        for (id, counts) in [
            ("counts-2-early", vec![count("action", "revoke", None, 40)]),
            (
                "counts-2",
                vec![
                    count("action", "allow", None, 1),
                    count("reason", "made_up_reason", None, 9),
                ],
            ),
        ] {
            let (status, _) = c
                .post_events(vec![counts_event(id, "fedcba9876543210", minute, counts)])
                .await;
            assert_eq!(status, 200);
        }
        // A third run in the same minute (a node inventing runs to add
        // rows): taken as an event, its counts ignored.
        let (status, _) = c
            .post_events(vec![counts_event(
                "counts-3",
                "1111111111111111",
                minute,
                vec![count("action", "allow", None, 1000)],
            )])
            .await;
        assert_eq!(status, 200);
        // Two hours old (backdated: a node holds at most the last hour):
        // ignored.
        let (status, _) = c
            .post_events(vec![counts_event(
                "counts-old",
                run,
                minute - 120,
                vec![count("action", "revoke", None, 77)],
            )])
            .await;
        assert_eq!(status, 200);
        // Ten minutes ahead: taken as an event, its counts ignored.
        let (status, _) = c
            .post_events(vec![counts_event(
                "counts-ahead",
                run,
                minute + 11,
                vec![count("action", "revoke", None, 99)],
            )])
            .await;
        assert_eq!(status, 200);

        // Refused whole: a detection in the same batch is not taken.
        let eve = user_of("eve");
        let many: Vec<_> = (0..257)
            .map(|i| count("rule", &format!("r{i}"), Some("block"), 1))
            .collect();
        let bad: Vec<(&str, NodeEvent)> = vec![
            ("257 entries", counts_event("bad-1", run, minute, many)),
            (
                "a rule of markup",
                counts_event(
                    "bad-2",
                    run,
                    minute,
                    vec![count("rule", "<script>alert(1)</script>", Some("block"), 1)],
                ),
            ),
            (
                "an action of markup",
                counts_event(
                    "bad-3",
                    run,
                    minute,
                    vec![count("shadow", "r", Some("\"><img src=x>"), 1)],
                ),
            ),
            (
                "a run not hex",
                counts_event(
                    "bad-4",
                    "<run>",
                    minute,
                    vec![count("action", "allow", None, 1)],
                ),
            ),
            (
                "a count of 0",
                counts_event(
                    "bad-5",
                    run,
                    minute,
                    vec![count("action", "allow", None, 0)],
                ),
            ),
            (
                "a count past the cap",
                counts_event(
                    "bad-6",
                    run,
                    minute,
                    vec![count("action", "allow", None, 1_000_000_001)],
                ),
            ),
            (
                "an entry twice",
                counts_event(
                    "bad-7",
                    run,
                    minute,
                    vec![
                        count("action", "allow", None, 1),
                        count("action", "allow", None, 1),
                    ],
                ),
            ),
            (
                "an action no engine decides",
                counts_event(
                    "bad-9",
                    run,
                    minute,
                    vec![count("action", "everything", None, 1)],
                ),
            ),
            (
                "a long name",
                counts_event(
                    "bad-8",
                    run,
                    minute,
                    vec![count("reason", &"r".repeat(65), None, 1)],
                ),
            ),
        ];
        for (what, event) in bad {
            let (status, body) = c
                .post_events(vec![
                    detection("ref-with-bad-counts", "app", Some(eve), 6),
                    event,
                ])
                .await;
            assert_eq!(status, 400, "{what}: {body}");
            assert!(body.contains("bad_event"), "{what}: {body}");
        }
        // Without the node's token, or with another: nothing is read.
        let batch = serde_json::to_string(&EventBatch {
            v: VERSION,
            events: vec![counts_event(
                "counts-anon",
                run,
                minute,
                vec![count("action", "allow", None, 500)],
            )],
        })
        .unwrap();
        for token in [None, Some("not-a-node-token-0123")] {
            let mut r = client()
                .post(c.url("/v1/events"))
                .header("content-type", "application/json")
                .body(batch.clone());
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            assert_eq!(r.send().await.unwrap().status(), 401);
        }

        let cookie = c.login(VIEWER).await;
        assert_eq!(
            c.get(
                "/dashboard/detection?reference=ref-with-bad-counts",
                Some(&cookie)
            )
            .await
            .status(),
            404
        );
        let overview = c.page("/dashboard", &cookie).await;
        assert!(
            overview.contains("Requests judged per hour, last 24 hours (13)</h2>"),
            "{overview}"
        );
        for row in [
            "<tr><td>allow</td><td>8</td><td>0</td></tr>",
            "<tr><td>step_up</td><td>0</td><td>3</td></tr>",
            "<tr><td>block</td><td>2</td><td>0</td></tr>",
        ] {
            assert!(overview.contains(row), "{row}: {overview}");
        }
        assert!(!overview.contains("<td>revoke</td>"), "{overview}");
        assert!(overview.contains("<a href=\"/dashboard/rules\">"));
        // Decisions by reason, from the same counts: the engine's codes
        // only.
        assert!(
            overview.contains("<tr><td><code>asn_changed</code></td><td>4</td></tr>"),
            "{overview}"
        );
        assert!(!overview.contains("made_up_reason"), "{overview}");
        // What the script draws: the same counts, in the hour they fell.
        let hour_start = minute * 60 / 3600 * 3600;
        let judged = chart_data(&overview, "Requests judged per hour");
        assert_eq!(judged["kind"], "stacked");
        let at = judged["t"]
            .as_array()
            .unwrap()
            .iter()
            .position(|t| t.as_u64() == Some(hour_start))
            .unwrap();
        let value_of = |data: &serde_json::Value, label: &str| {
            data["series"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["label"] == label)
                .map(|s| s["values"][at].clone())
        };
        assert_eq!(value_of(&judged, "allow"), Some(serde_json::json!(8.0)));
        assert_eq!(value_of(&judged, "step_up"), Some(serde_json::json!(3.0)));
        assert_eq!(value_of(&judged, "revoke"), None);
        let reasons = chart_data(&overview, "Decisions per hour by the reasons");
        assert_eq!(reasons["kind"], "lines");
        assert_eq!(
            value_of(&reasons, "asn_changed"),
            Some(serde_json::json!(4.0))
        );
        assert_eq!(reasons["series"].as_array().unwrap().len(), 1);
        let hour = {
            let t = minute * 60 / 3600 * 3600;
            let secs = t % 86_400;
            format!("{:02}:00Z", secs / 3600)
        };
        let rules = c.page("/dashboard/rules", &cookie).await;
        assert!(
            rules.contains("<tr><td><code>block-tor</code></td><td>block</td><td>2</td>"),
            "{rules}"
        );
        assert!(
            rules.contains("<tr><td><code>try-geo</code></td><td>step_up</td><td>5</td>"),
            "{rules}"
        );
        assert!(
            rules.contains(&format!("<span class=\"muted\">{hour}: 5</span>")),
            "{rules}"
        );
        assert!(
            rules.contains(&format!("<span class=\"muted\">{hour}: 2</span>")),
            "{rules}"
        );
        // Strict query; no session: sign in.
        for bad in ["/dashboard/rules?x=1", "/dashboard/rules?days=1"] {
            assert_eq!(c.get(bad, Some(&cookie)).await.status(), 400, "{bad}");
        }
        let r = c.get("/dashboard/rules", None).await;
        assert_eq!(r.status(), 303);
        assert_headers(&r);

        // Markup the intake never lets in, written to the store directly:
        // the page escapes it all the same.
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&db.url()).await.unwrap();
        let reasons: Vec<String> =
            sqlx::query_scalar("SELECT name FROM node_counts WHERE kind = 'reason' ORDER BY name")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(reasons, ["asn_changed"]);
        sqlx::query(
            "INSERT INTO node_counts (node, run, minute, kind, name, action, n) \
             VALUES ('a', 'x', $1, 'shadow', '<script>alert(1)</script>', '\"><img src=x>', 1)",
        )
        .bind(i64::try_from(minute).unwrap())
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
        let rules = c.page("/dashboard/rules", &cookie).await;
        assert!(!rules.contains("<script>alert"), "{rules}");
        assert!(!rules.contains("<img src=x>"), "{rules}");
        assert!(
            rules.contains("<code>&#60;script&#62;alert(1)&#60;/script&#62;</code>"),
            "{rules}"
        );
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// The reference ids a list page links to, in order.
fn references(html: &str) -> Vec<String> {
    html.split("<a href=\"/dashboard/detection?reference=")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].to_owned())
        .collect()
}

/// The "Older" link of a list page (`&amp;` read as `&`), when there is one.
fn older(html: &str, list: &str) -> Option<String> {
    let start = html.find(&format!("<a href=\"{list}?before="))? + 9;
    let end = start + html[start..].find('"').unwrap();
    Some(html[start..end].replace("&amp;", "&"))
}

/// Every page of a list from `first`, following its "Older" links: each
/// page's HTML.
async fn walk(c: &Controller, cookie: &str, first: &str, list: &str) -> Vec<String> {
    let mut pages = Vec::new();
    let mut path = Some(first.to_owned());
    while let Some(p) = path {
        let html = c.page(&p, cookie).await;
        path = older(&html, list);
        pages.push(html);
        assert!(pages.len() <= 10, "a list that never ends");
    }
    pages
}

#[tokio::test]
async fn deep_lists_page_by_cursor_and_give_each_row_once() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let dave = user_of("dave");
        let t = now() - 1_000;
        // 130 detections: 70 in one second (a run of equal times that a
        // page ends inside), then one a second older each. Dave's are all
        // but every tenth.
        let mut events = Vec::new();
        for i in 0..130u64 {
            let mut e = detection(
                &format!("ref-k-{i:03}"),
                "app",
                (i % 10 != 0).then_some(dave),
                5,
            );
            if let NodeEventKind::Detection { at, .. } = &mut e.kind {
                *at = if i < 70 { t } else { t - i };
            }
            events.push(e);
        }
        c.events_in_batches(events).await;
        // Newest first, ties by reference descending.
        let expected: Vec<String> = (0..70u64)
            .rev()
            .chain(70..130)
            .map(|i| format!("ref-k-{i:03}"))
            .collect();
        let cookie = c.login(ADMIN).await;
        let pages = walk(
            &c,
            &cookie,
            "/dashboard/detections",
            "/dashboard/detections",
        )
        .await;
        let sizes: Vec<usize> = pages.iter().map(|p| references(p).len()).collect();
        assert_eq!(sizes, [50, 50, 30]);
        let seen: Vec<String> = pages.iter().flat_map(|p| references(p)).collect();
        assert_eq!(seen, expected);
        // The first page links to no newer one; the others to the newest.
        assert!(!pages[0].contains("rel=\"first\""));
        assert!(pages[1].contains("<a href=\"/dashboard/detections\" rel=\"first\">Newest</a>"));
        // A link made before cursors still reads, in the same order.
        let html = c.page("/dashboard/detections?offset=50", &cookie).await;
        assert_eq!(references(&html), expected[50..100]);

        // Dave's: 117, the user page shows the newest 100 and links to
        // the rest through the list by user.
        let daves: Vec<String> = expected
            .iter()
            .filter(|r| !r.ends_with('0'))
            .cloned()
            .collect();
        assert_eq!(daves.len(), 117);
        let user_page = c
            .page(&format!("/dashboard/user?key={dave}"), &cookie)
            .await;
        assert!(user_page.contains("Detections (100, newest)"));
        let start = user_page
            .find("<a href=\"/dashboard/detections?before=")
            .unwrap()
            + 9;
        let link =
            user_page[start..start + user_page[start..].find('"').unwrap()].replace("&amp;", "&");
        assert!(link.ends_with(&format!("&user={dave}")), "{link}");
        let rest = walk(&c, &cookie, &link, "/dashboard/detections").await;
        let rest: Vec<String> = rest.iter().flat_map(|p| references(p)).collect();
        assert_eq!(rest, daves[100..]);
        let mine = walk(
            &c,
            &cookie,
            &format!("/dashboard/detections?user={dave}"),
            "/dashboard/detections",
        )
        .await;
        assert_eq!(mine.len(), 3);
        let mine: Vec<String> = mine.iter().flat_map(|p| references(p)).collect();
        assert_eq!(mine, daves);

        // The audit trail: 120 entries in one second, ties by id.
        let store = vigil_controller::store::Store::open(&db.url())
            .await
            .unwrap();
        for i in 0..120u32 {
            store
                .audit(&vigil_controller::store::AuditEntry {
                    id: format!("{i:032x}"),
                    at: t,
                    who: "admin token".into(),
                    role: "responder".into(),
                    client: None,
                    action: "false-positive".into(),
                    target: format!("target-{i:03}"),
                    outcome: "marked".into(),
                })
                .await
                .unwrap();
        }
        let pages = walk(&c, &cookie, "/dashboard/audit", "/dashboard/audit").await;
        let targets: Vec<String> = pages
            .iter()
            .flat_map(|p| {
                p.split("<td><code>target-")
                    .skip(1)
                    .map(|rest| rest[..3].to_owned())
                    .collect::<Vec<_>>()
            })
            .collect();
        let expected: Vec<String> = (0..120).rev().map(|i| format!("{i:03}")).collect();
        assert_eq!(targets, expected);
        // The sign-in above is newer: the first page holds it and 49.
        assert_eq!(pages.len(), 3);

        // A malformed cursor: 400 with its reason.
        c.bad_queries(
            &cookie,
            &[
                (
                    "/dashboard/detections?before=abc",
                    "before: a detections cursor is TIME-NODE-REFERENCE",
                ),
                (
                    "/dashboard/detections?before=12-6-61",
                    "before: the node of a cursor is lower-case hex",
                ),
                (
                    "/dashboard/detections?before=12-61-6G",
                    "before: the reference of a cursor is lower-case hex",
                ),
                (
                    "/dashboard/detections?before=12-ff-61",
                    "before: the node of a cursor is not UTF-8",
                ),
                (
                    "/dashboard/detections?before=-61-61",
                    "before: a cursor starts with its time",
                ),
                (
                    "/dashboard/detections?before=%2B12-61-61",
                    "before: a cursor starts with its time",
                ),
                (
                    "/dashboard/detections?before=9223372036854775808-61-61",
                    "before: the time of a cursor is out of range",
                ),
                (
                    "/dashboard/detections?before=12-61-61-61",
                    "before: a detections cursor is TIME-NODE-REFERENCE",
                ),
                (
                    "/dashboard/detections?before=12-61-61&offset=50",
                    "give before or offset, not both",
                ),
                (
                    "/dashboard/detections?user=xyz",
                    "user: a user key is 16 lower-case hex digits",
                ),
                (
                    "/dashboard/audit?before=12",
                    "before: an audit cursor is TIME-ID",
                ),
                (
                    "/dashboard/audit?before=12-XY",
                    "before: the id of an audit cursor is 1 to 64 lower-case hex digits",
                ),
                (
                    "/dashboard/audit?before=",
                    "before: an audit cursor is TIME-ID",
                ),
            ],
        )
        .await;
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// A user's sessions are paged: the user page shows the 100 newest first
/// seen and links to the rest, and the sessions list pages them by keyset
/// — every session exactly once, three first seen in each second so that
/// every page ends inside one — and a cursor that is not one is `400`.
#[tokio::test]
async fn a_users_sessions_are_paged_every_one_shown_once() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let fran = user_of("fran");
        // Three sessions first seen in each second: every page edge (100,
        // 50) falls inside a second.
        let base = now() - 3_600;
        let cookies: Vec<(String, u64)> = (0..120)
            .map(|i| (format!("fran-cookie-{i}"), base + i / 3))
            .collect();
        let records = session_records(&cookies, "fran");
        let mut keys: Vec<String> = Vec::new();
        for chunk in records.chunks(40) {
            c.events(
                chunk
                    .iter()
                    .enumerate()
                    .map(|(i, (key, record))| {
                        keys.push(key.clone());
                        NodeEvent {
                            id: format!("baseline-fran-{key}-{i}"),
                            kind: NodeEventKind::SessionBaseline {
                                record: record.clone(),
                                confirmed: false,
                                false_positive: false,
                                disputed: None,
                            },
                        }
                    })
                    .collect(),
            )
            .await;
        }
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 120);
        let cookie = c.login(VIEWER).await;
        // The sessions table only (the user's timeline names sessions too).
        let sessions_in = |html: &str| -> Vec<String> {
            let start = html
                .find("<th scope=\"col\">Session</th>")
                .expect("a sessions table");
            let html = &html[start..start + html[start..].find("</table>").unwrap()];
            keys.iter()
                .filter(|k| html.contains(&format!("<code>{k}</code>")))
                .cloned()
                .collect()
        };
        let user = c
            .page(&format!("/dashboard/user?key={fran}"), &cookie)
            .await;
        assert!(user.contains("Sessions (100, newest first seen)"), "{user}");
        let first = sessions_in(&user);
        assert_eq!(first.len(), 100);
        let cursor = next_cursor(&user, "Older sessions").expect("a link to the rest");
        let rest = c
            .page(
                &format!("/dashboard/sessions?user={fran}&before={cursor}"),
                &cookie,
            )
            .await;
        let rest_keys = sessions_in(&rest);
        assert_eq!(rest_keys.len(), 20, "{rest}");
        assert!(next_cursor(&rest, "Older").is_none(), "the last page");
        let mut all: Vec<String> = first.iter().chain(&rest_keys).cloned().collect();
        all.sort();
        all.dedup();
        assert_eq!(all, keys, "each session once across the pages");
        // The list from its start: 50, 50, 20, each once.
        let pages = c
            .follow(
                &cookie,
                &format!("/dashboard/sessions?user={fran}"),
                "Older",
                |cursor| format!("/dashboard/sessions?user={fran}&before={cursor}"),
            )
            .await;
        let found: Vec<Vec<String>> = pages.iter().map(|html| sessions_in(html)).collect();
        let sizes: Vec<usize> = found.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![50, 50, 20]);
        let mut seen: Vec<String> = found.concat();
        seen.sort();
        seen.dedup();
        assert_eq!(seen, keys);
        // Bad queries: a clear 400 with the reason; no session: sign in.
        c.bad_queries(
            &cookie,
            &[
                (
                    "/dashboard/sessions",
                    "user: a user key is 16 lower-case hex digits",
                ),
                (
                    &format!("/dashboard/sessions?user={fran}&before=12"),
                    "before: a sessions cursor is TIME-SESSION",
                ),
                (
                    &format!("/dashboard/sessions?user={fran}&before=12-XY"),
                    "before: the session of a cursor is 1 to 64 lower-case hex digits",
                ),
                (
                    &format!("/dashboard/sessions?user={fran}&before=99999999999999999999-ab"),
                    "before: a cursor starts with its time",
                ),
                (
                    &format!("/dashboard/sessions?user={fran}&before=1-ab&offset=3"),
                    "unknown field",
                ),
                (
                    &format!("/dashboard/sessions?user={fran}&user={fran}"),
                    "given twice",
                ),
            ],
        )
        .await;
        let r = c
            .get(&format!("/dashboard/sessions?user={fran}"), None)
            .await;
        assert_eq!(r.status(), 303);
        assert_headers(&r);
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// A user's timeline is paged by time: each page the newest 50 and the
/// rest of its last second, the next page before that second — every
/// thing held shown exactly once, three or four sharing each second from
/// two sources. A second holding more of one kind than a page reads
/// beyond its end is said on the page, not silently cut.
#[tokio::test]
async fn a_users_timeline_is_paged_by_whole_seconds() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let gail = user_of("gail");
        let base = now() - 3_600;
        let events: Vec<NodeEvent> = (0..120u64)
            .map(|i| {
                let mut e = detection(&format!("ref-t-{i:03}"), "app", Some(gail), 7);
                if let NodeEventKind::Detection { at, .. } = &mut e.kind {
                    // Three a second: 40 seconds.
                    *at = base + i / 3;
                }
                e
            })
            .collect();
        c.events_in_batches(events).await;
        // And a session first seen in each of the first 30 of those
        // seconds: another source in the same seconds, at page edges.
        let cookies: Vec<(String, u64)> = (0..30)
            .map(|i| (format!("gail-cookie-{i}"), base + i))
            .collect();
        let records = session_records(&cookies, "gail");
        let sessions: Vec<String> = records.iter().map(|(key, _)| key.clone()).collect();
        c.events(
            records
                .into_iter()
                .map(|(key, record)| NodeEvent {
                    id: format!("baseline-gail-{key}"),
                    kind: NodeEventKind::SessionBaseline {
                        record,
                        confirmed: false,
                        false_positive: false,
                        disputed: None,
                    },
                })
                .collect(),
        )
        .await;
        let cookie = c.login(VIEWER).await;
        let refs_in = |html: &str| -> Vec<String> {
            let start = html
                .find("What the store holds of this user with a time")
                .expect("a timeline");
            let html = &html[start..start + html[start..].find("</table>").unwrap()];
            (0..120)
                .map(|i| format!("ref-t-{i:03}"))
                .chain(sessions.iter().cloned())
                .filter(|r| html.contains(&format!("<code>{r}</code>")))
                .collect()
        };
        let pages = c
            .follow(
                &cookie,
                &format!("/dashboard/user?key={gail}"),
                "Older",
                |before| format!("/dashboard/timeline?user={gail}&before={before}"),
            )
            .await;
        let found: Vec<Vec<String>> = pages.iter().map(|html| refs_in(html)).collect();
        let sizes: Vec<usize> = found.iter().map(Vec::len).collect();
        let seen = found.concat();
        let html = pages.last().unwrap();
        // Seconds 39 to 30 hold three things each, 29 to 0 four (three
        // detections and a session): the first page ends with second 25
        // whole (50), the second would end inside second 12 (52), the
        // third is the 48 left.
        assert_eq!(sizes, vec![50, 52, 48]);
        let mut all = seen.clone();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 150, "each once");
        assert_eq!(seen.len(), 150);
        assert!(!html.contains("the rest of that second is not listed"));

        // 260 detections in one second: a page reads 251 of them (the
        // page and 200 beyond, and one to learn of more), lists them all,
        // and says the second holds more.
        let hal = user_of("hal");
        let at_once = base + 100;
        let events: Vec<NodeEvent> = (0..260u64)
            .map(|i| {
                let mut e = detection(&format!("ref-h-{i:03}"), "app", Some(hal), 8);
                if let NodeEventKind::Detection { at, .. } = &mut e.kind {
                    *at = at_once;
                }
                e
            })
            .collect();
        c.events_in_batches(events).await;
        let html = c.page(&format!("/dashboard/user?key={hal}"), &cookie).await;
        assert_eq!(
            html.matches("<td>detection</td>").count(),
            251,
            "all read of the second"
        );
        assert!(
            html.contains("More rows of <em>detection</em> are held at"),
            "{html}"
        );
        assert!(html.contains("The user's detections list shows every detection."));
        let before = next_cursor(&html, "Older").expect("a next page");
        assert_eq!(before, at_once.to_string());
        let older = c
            .page(
                &format!("/dashboard/timeline?user={hal}&before={before}"),
                &cookie,
            )
            .await;
        assert!(older.contains("<td colspan=\"3\">Nothing held.</td>"));
        // Bad queries: 400, with the reason.
        c.bad_queries(
            &cookie,
            &[
                (
                    format!("/dashboard/timeline?user={gail}"),
                    "before: give the time the page ends",
                ),
                (
                    format!("/dashboard/timeline?user={gail}&before=x"),
                    "before: decimal seconds since the Unix epoch",
                ),
                (
                    format!("/dashboard/timeline?user={gail}&before=+5"),
                    "before: decimal seconds since the Unix epoch",
                ),
                (
                    format!("/dashboard/timeline?user={gail}&before=99999999999999999999"),
                    "before: decimal seconds since the Unix epoch",
                ),
                (
                    "/dashboard/timeline?before=5".to_owned(),
                    "user: a user key is 16 lower-case hex digits",
                ),
                (
                    format!("/dashboard/timeline?user={gail}&before=5&x=1"),
                    "unknown field",
                ),
            ],
        )
        .await;
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// Detections found by a fact are paged like the detections list: by
/// ASN, by a /24 and by JA4, 120 of them in few seconds come back 50, 50
/// and 20, each exactly once; a cursor on a search that is no fact
/// search, or a bad one, is `400`.
#[tokio::test]
async fn detections_found_by_a_fact_are_paged_every_one_once() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let ivy = user_of("ivy");
        let base = now() - 600;
        let events: Vec<NodeEvent> = (0..120u64)
            .map(|i| {
                let mut e = with_facts(
                    detection(&format!("ref-f-{i:03}"), "app", Some(ivy), 9),
                    Some(request_facts(&format!("198.51.100.{}", i % 200))),
                );
                if let NodeEventKind::Detection { at, .. } = &mut e.kind {
                    // Eight a second.
                    *at = base + i / 8;
                }
                e
            })
            .collect();
        c.events_in_batches(events).await;
        let cookie = c.login(VIEWER).await;
        let refs_in = |html: &str| -> Vec<String> {
            let Some(start) = html.find("<h3>Detections by ") else {
                return Vec::new();
            };
            (0..120)
                .map(|i| format!("ref-f-{i:03}"))
                .filter(|r| html[start..].contains(&format!("<code>{r}</code>")))
                .collect()
        };
        for q in ["AS64496", "198.51.100.0%2F24", JA4] {
            let pages = c
                .follow(
                    &cookie,
                    &format!("/dashboard/search?q={q}"),
                    "Older",
                    |cursor| format!("/dashboard/search?q={q}&before={cursor}"),
                )
                .await;
            // A later page links back to the newest.
            for (i, html) in pages.iter().enumerate() {
                assert_eq!(
                    html.contains("rel=\"first\">Newest</a>"),
                    i > 0,
                    "{q} page {i}"
                );
            }
            let found: Vec<Vec<String>> = pages.iter().map(|html| refs_in(html)).collect();
            let sizes: Vec<usize> = found.iter().map(Vec::len).collect();
            let mut seen = found.concat();
            assert_eq!(sizes, vec![50, 50, 20], "{q}");
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), 120, "{q}: each once");
        }
        c.bad_queries(
            &cookie,
            &[
                (
                    "/dashboard/search?q=ivy&before=1-61-62".to_owned(),
                    "only a search by client address, ASN or JA4 has pages",
                ),
                (
                    "/dashboard/search?q=AS64496&before=x".to_owned(),
                    "before: a detections cursor is TIME-NODE-REFERENCE",
                ),
            ],
        )
        .await;
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// The records of `cookies` after one request each (at its time), bound
/// to `user`, with their session keys: one engine for them all.
fn session_records(cookies: &[(String, u64)], user: &str) -> Vec<(String, vigil_fleet::Record)> {
    let engine = vigil_engine::Engine::new(
        vigil_engine::EngineConfig::default(),
        vigil_engine::SessionHashKey::from_bytes([0x11; 32]),
    );
    let allow = vigil_engine::Policy {
        low: vigil_engine::Action::Allow,
        medium: vigil_engine::Action::Allow,
        high: vigil_engine::Action::Allow,
        thresholds: None,
    };
    cookies
        .iter()
        .map(|(cookie, at)| {
            let at = *at;
            let key = engine.key_for_credential(cookie.as_bytes()).unwrap();
            engine.bind_user(key, user, at);
            let mut headers = axum::http::HeaderMap::new();
            headers.insert("cookie", format!("session={cookie}").parse().unwrap());
            headers.insert(
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
                    .parse()
                    .unwrap(),
            );
            let view = vigil_engine::RequestView {
                peer: "192.0.2.10".parse().unwrap(),
                headers: &headers,
                now_secs: at,
                tls: Default::default(),
                facts: Default::default(),
            };
            engine.evaluate(&view, &allow).unwrap();
            (
                key.to_string(),
                vigil_fleet::Record(engine.scorer().export(&key).unwrap().to_vec()),
            )
        })
        .collect()
}

/// The record of `cookie` after one request, bound to `user`.
fn session_record(cookie: &str, user: &str, at: u64) -> vigil_fleet::Record {
    session_records(&[(cookie.to_owned(), at)], user)
        .remove(0)
        .1
}

#[tokio::test]
async fn a_users_page_shows_their_risk_over_time_and_their_timeline() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let erin = user_of("erin");
        c.events(vec![NodeEvent {
            id: "baseline-erin".into(),
            kind: NodeEventKind::SessionBaseline {
                record: session_record("erin-cookie", "erin", now() - 60),
                confirmed: false,
                false_positive: false,
                disputed: None,
            },
        }])
        .await;
        c.events(vec![
            detection("ref-u-1", "app", Some(erin), 6),
            detection("ref-u-2", "app", Some(erin), 6),
        ])
        .await;
        for (path, body) in [
            ("/v1/admin/detections/false-positive", serde_json::json!({"reference": "ref-u-2"})),
            ("/v1/admin/users/risk", serde_json::json!({"user": "erin", "points": 7, "ttl_seconds": 600})),
            ("/v1/admin/users/trust-device", serde_json::json!({"user": "erin", "device": "0123456789abcdef"})),
            ("/v1/admin/users/step-up", serde_json::json!({"user": "erin"})),
        ] {
            assert_eq!(c.admin(path, body).await, 200, "{path}");
        }
        let cookie = c.login(ADMIN).await;
        let html = c.page(&format!("/dashboard/user?key={erin}"), &cookie).await;
        // Entity risk now: one node's enforced detection (the other is a
        // false positive) at the engine's weight, and the 7 points.
        let weight = u64::from(vigil_engine::ScoreConfig::default().recent_detection);
        let risk = weight + 7;
        assert!(html.contains(&format!("Entity risk per hour, last 7 days, highest {risk}:")), "{html}");
        assert!(html.contains(&format!("Z: {risk}</title></rect>")));
        // The timeline: each thing held, with its time.
        for row in [
            "<td>session first seen</td><td><code>".to_owned(),
            "<td>detection</td><td><a href=\"/dashboard/detection?reference=ref-u-1\"><code>ref-u-1</code></a> <code>block on node a</code></td>".to_owned(),
            "<td>false positive</td><td><a href=\"/dashboard/detection?reference=ref-u-2\"><code>ref-u-2</code></a> </td>".to_owned(),
            "<td>risk points</td><td><code>7</code></td>".to_owned(),
            "<td>trusted</td><td><code>device 0123456789abcdef</code></td>".to_owned(),
            "<td>step-up asked</td><td></td>".to_owned(),
        ] {
            assert!(html.contains(&row), "{row}: {html}");
        }
        assert_eq!(html.matches("<td>detection</td>").count(), 2);
        assert!(!html.contains("rel=\"next\">Older</a>"), "one page");
        // A user with nothing held: no bar, an empty timeline.
        let html = c.page(&format!("/dashboard/user?key={}", user_of("nobody")), &cookie).await;
        assert!(!html.contains("<rect class=\"risk\""));
        assert!(html.contains("<td colspan=\"3\">Nothing held.</td>"));
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

#[tokio::test]
async fn the_overview_shows_the_signal_streams_and_escapes_what_they_carry() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("push.token");
        std::fs::write(&token, "push-token-0123456789-abcdef").unwrap();
        let key = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rs256-test.pem");
        let c = Controller::start_with(
            &db.url(),
            &format!(
                "[[ssf.transmitters]]\nname = \"idp\"\nissuer = \"https://idp.example\"\naudience = \"vigil\"\n\
                 jwks_uri = \"http://127.0.0.1:9/jwks\"\npush_token_file = {token:?}\n\
                 [signing]\nissuer = \"http://127.0.0.1:1\"\nkey_files = [{key:?}]\n\
                 [ssf_transmitter]\n[[ssf_transmitter.receivers]]\nname = \"siem\"\ntoken_file = {token:?}\n"
            ),
        )
        .await;
        let cookie = c.login(ADMIN).await;
        let html = c.page("/dashboard", &cookie).await;
        assert_eq!(html.matches("<h2 id=\"streams-h\">").count(), 1);
        assert!(html.contains("<td>idp</td><td><code>https://idp.example</code></td><td>push</td><td>none yet</td>\n<td>-</td>"), "{html}");
        assert!(html.contains("<td colspan=\"6\">No receiver has made a stream.</td>"));
        // A SET taken with a verification, and a receiver's stream paused
        // with a reason holding markup.
        let store = vigil_controller::store::Store::open(&db.url()).await.unwrap();
        let evil = "<script>alert(3)</script>";
        let at = now();
        store
            .take_set(
                &vigil_controller::store::ssf::SetReceipt {
                    transmitter: "idp",
                    issuer: "https://idp.example",
                    jti: "jti-1",
                    event: "https://schemas.openid.net/secevent/ssf/event-type/verification",
                    keep_until: at + 600,
                    verification: Some(evil),
                },
                vigil_controller::store::ssf::SetAction::Nothing,
                at,
            )
            .await
            .unwrap();
        assert!(store.ssf_tx_create("stream-1", "siem", "{}", true, 10, at).await.unwrap());
        store.ssf_tx_set_status("stream-1", "paused", Some(evil), at).await.unwrap();
        let html = c.page("/dashboard", &cookie).await;
        assert!(!html.contains(evil));
        let escaped = "&#60;script&#62;alert(3)&#60;/script&#62;";
        assert!(html.contains(&format!("<span class=\"muted\">state</span> <code>{escaped}</code>")), "{html}");
        assert!(html.contains(&format!(
            "<td>siem</td><td><code>stream-1</code></td>\n<td><span class=\"tag warn\">paused</span> <span class=\"muted\">{escaped}</span></td>\n<td>0</td><td>0</td>\n<td>0</td>"
        )), "{html}");
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}
