//! DBSC at the edge, through the real binary over real TLS, with a
//! protocol-level client that signs exactly as Chromium 156 does (ES256,
//! raw r‖s, `typ` `dbsc+jwt`, the key as `jwk` in the registration
//! header, payload `jti` only): each test is an attack or a protocol
//! path, with the exact status Vigil owes (`docs/bound-sessions.md`).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{CHROME, Ca, Config, Origin, Proxy, REQUEST_TIMEOUT, Route, free_addr};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

const HOST: &str = "app.test";
const COOKIE: &str = "__Host-vigil-dbsc";
/// Longest wait for a time-based condition (a cookie's expiry).
const DEADLINE: Duration = Duration::from_secs(30);

/// A browser's session key, signing as Chromium does.
struct Key(EcdsaKeyPair);

impl Key {
    fn new() -> Key {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        Key(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap(),
        )
    }

    fn jwk(&self) -> serde_json::Value {
        let p = self.0.public_key().as_ref();
        serde_json::json!({
            "kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..]),
        })
    }

    fn sign(&self, header: serde_json::Value, jti: &str) -> String {
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let p = URL_SAFE_NO_PAD.encode(serde_json::json!({ "jti": jti }).to_string());
        let input = format!("{h}.{p}");
        let sig = self.0.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// A registration proof: the key in the header.
    fn registration(&self, challenge: &str) -> String {
        self.sign(
            serde_json::json!({"alg": "ES256", "typ": "dbsc+jwt", "jwk": self.jwk()}),
            challenge,
        )
    }

    /// A refresh proof: no key in the header.
    fn refresh(&self, challenge: &str) -> String {
        self.sign(
            serde_json::json!({"alg": "ES256", "typ": "dbsc+jwt"}),
            challenge,
        )
    }
}

/// A proxy with a DBSC route over TLS in front of the test origin.
struct Edge {
    proxy: Proxy,
    /// What Chromium's `--ignore-certificate-errors-spki-list` takes.
    spki: String,
    _origin: Origin,
    client: reqwest::Client,
    base: String,
}

/// What registration or refresh gave.
#[derive(Debug)]
struct Granted {
    id: String,
    cookie: String,
    challenge: String,
}

impl Edge {
    async fn start(route: Route, dbsc: &str) -> Edge {
        Edge::start_routes(vec![route], dbsc).await
    }

    async fn start_routes(routes: Vec<Route>, dbsc: &str) -> Edge {
        let ca = Ca::new("Test CA");
        let leaf = ca.leaf(&[HOST]);
        let origin = Origin::start();
        let mut config = Config::new()
            .tls_listener("https", free_addr(), true, &[&leaf])
            .section(&format!("[dbsc]\n{dbsc}"))
            .upstream("app", origin.addr());
        for route in routes {
            config = config.route(route);
        }
        let proxy = Proxy::start(&config.render()).await;
        let addr = proxy.listener("https");
        let client = common::tls_client_builder()
            .tls_certs_only([ca.root()])
            .resolve(HOST, addr)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap();
        Edge {
            proxy,
            spki: leaf.spki_sha256_base64(),
            _origin: origin,
            client,
            base: format!("https://{HOST}:{}", addr.port()),
        }
    }

    /// The app opens `session`; returns the registration challenge offered.
    async fn login(&self, session: &str) -> Option<String> {
        let r = self
            .get(&format!("/login?user=ann&session={session}"), "")
            .await;
        assert_eq!(r.status(), 200);
        let header = r
            .headers()
            .get("secure-session-registration")?
            .to_str()
            .unwrap();
        assert!(
            header.starts_with("(ES256 RS256);path=\"/.vigil/dbsc/register\";challenge=\""),
            "{header}"
        );
        Some(
            header
                .split("challenge=\"")
                .nth(1)?
                .trim_end_matches('"')
                .to_owned(),
        )
    }

    async fn get(&self, path: &str, cookie: &str) -> reqwest::Response {
        self.get_as(CHROME, path, cookie).await
    }

    async fn get_as(&self, user_agent: &str, path: &str, cookie: &str) -> reqwest::Response {
        let mut req = self
            .client
            .get(format!("{}{path}", self.base))
            .header("user-agent", user_agent)
            .header("accept", "application/json");
        if !cookie.is_empty() {
            req = req.header("cookie", cookie);
        }
        req.send().await.unwrap()
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("{}/.vigil/dbsc{path}", self.base))
            .header("user-agent", CHROME);
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        req.send().await.unwrap()
    }

    async fn register(&self, proof: &str) -> reqwest::Response {
        self.post("/register", &[("secure-session-response", proof)])
            .await
    }

    /// A registration as the browser sends it: with the app's cookie.
    async fn register_with(&self, session: &str, proof: &str) -> reqwest::Response {
        let cookie = format!("session={session}");
        self.post(
            "/register",
            &[("secure-session-response", proof), ("cookie", &cookie)],
        )
        .await
    }

    async fn refresh(&self, id: &str, proof: Option<&str>) -> reqwest::Response {
        let mut h = vec![("sec-secure-session-id", id)];
        if let Some(p) = proof {
            h.push(("secure-session-response", p));
        }
        self.post("/refresh", &h).await
    }

    /// Logs `session` in and registers `key` for it.
    async fn bind(&self, session: &str, key: &Key) -> Granted {
        let challenge = self.login(session).await.expect("a registration offer");
        let r = self
            .register_with(session, &key.registration(&challenge))
            .await;
        assert_eq!(r.status(), 200);
        granted(r).await
    }
}

async fn granted(r: reqwest::Response) -> Granted {
    let cookie = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("; Max-Age=")
            && cookie.ends_with("; Path=/; Secure; HttpOnly; SameSite=Lax"),
        "{cookie}"
    );
    let cookie = cookie
        .strip_prefix(&format!("{COOKIE}="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let challenge = next_challenge(&r);
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["refresh_url"], "/.vigil/dbsc/refresh");
    assert_eq!(body["credentials"][0]["name"], COOKIE);
    assert_eq!(body["scope"]["include_site"], false);
    let id = body["session_identifier"].as_str().unwrap().to_owned();
    assert!(challenge.ends_with(&format!(";id=\"{id}\"")));
    Granted {
        id,
        cookie,
        challenge: challenge_value(&challenge),
    }
}

fn next_challenge(r: &reqwest::Response) -> String {
    r.headers()
        .get("secure-session-challenge")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

/// `"c";id="i"` → `c`.
fn challenge_value(header: &str) -> String {
    header.split('"').nth(1).unwrap().to_owned()
}

async fn code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    let code = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, code)
}

fn dbsc_route() -> Route {
    Route::new("app", "/", "app").dbsc("offer")
}

/// `[dbsc]` lines with generous rate limits, for tests not about them.
const ROOMY: &str = "per_client_per_minute = 10000\nper_session_per_minute = 10000\n";

#[tokio::test]
async fn a_bound_session_needs_its_cookie_and_refreshes_with_proofs_of_its_key() {
    let edge = Edge::start(dbsc_route(), ROOMY).await;
    let key = Key::new();
    let g = edge.bind("s1", &key).await;

    // With the bound cookie: forwarded, and the app never sees it.
    let jar = format!("session=s1; {COOKIE}={}", g.cookie);
    let r = edge.get("/echo", &jar).await;
    assert_eq!(r.status(), 200);
    let echo = r.text().await.unwrap();
    assert!(echo.contains("cookie: session=s1\n"), "{echo}");
    assert!(!echo.contains(COOKIE), "{echo}");

    // The app's cookie alone: refused, with the refresh challenge.
    let r = edge.get("/echo", "session=s1").await;
    assert!(r.headers().get("secure-session-challenge").is_some());
    assert_eq!(code(r).await, (403, "dbsc_proof_failed".to_owned()));
    // A fresh session of the thief's own beside the copied one: each
    // credential must prove, not only the one judged worst.
    let r = edge.get("/echo", "session=s1; session=thiefs-own").await;
    assert_eq!(code(r).await, (403, "dbsc_proof_failed".to_owned()));
    // A made-up bound cookie, or the bound cookie twice: the same.
    for jar in [
        format!("session=s1; {COOKIE}=AAAAAAAAAAAAAAAAAAAAAA"),
        format!("session=s1; {COOKIE}={0}; {COOKIE}={0}", g.cookie),
    ] {
        assert_eq!(code(edge.get("/echo", &jar).await).await.0, 403, "{jar}");
    }

    // Refresh: 403 with a challenge, then 200 with a proof of it. The id
    // is accepted bare (Chromium 156) and quoted (the draft).
    let r = edge.refresh(&g.id, None).await;
    assert_eq!(r.status(), 403);
    let c = challenge_value(&next_challenge(&r));
    let quoted = format!("\"{}\"", g.id);
    let proof = key.refresh(&c);
    let r = edge.refresh(&quoted, Some(&proof)).await;
    assert_eq!(r.status(), 200);
    let g2 = granted(r).await;
    assert_eq!(g2.id, g.id);
    // The cookie and the challenge rotate on every refresh.
    assert_ne!(g2.cookie, g.cookie);
    assert_ne!(g2.challenge, c);
    let r = edge
        .get("/echo", &format!("session=s1; {COOKIE}={}", g2.cookie))
        .await;
    assert_eq!(r.status(), 200);

    // The same proof again (a replay): 403 with a new challenge, no cookie.
    let r = edge.refresh(&g.id, Some(&proof)).await;
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("set-cookie").is_none());
    // The challenge the registration response handed over works too.
    let r = edge
        .refresh(
            &g.id,
            Some(&key.refresh(&challenge_value(&next_challenge(&r)))),
        )
        .await;
    assert_eq!(r.status(), 200);
    let m = edge.proxy.metrics().await;
    assert_eq!(
        m.value(
            "vigil_proxy_dbsc_total",
            &[("step", "refresh"), ("outcome", "stale_or_replayed")]
        ),
        1.0
    );
}

/// The bound cookie is host-wide (`__Host-`, `Path=/`): the browser sends
/// it to every route of the host, those without DBSC too. The apps behind
/// them must never see it (an app that logs cookies would leak a value any
/// node of the fleet takes as proof), however the jar is sent: in a second
/// `Cookie` header, twice, with spaces around it, first or last.
#[tokio::test]
async fn the_bound_cookie_never_reaches_the_app_of_a_route_without_dbsc() {
    let edge = Edge::start_routes(
        vec![
            dbsc_route(),
            Route::new("plain", "/plain", "app").dbsc("off"),
        ],
        ROOMY,
    )
    .await;
    let key = Key::new();
    let g = edge.bind("s1", &key).await;
    let bound = format!("{COOKIE}={}", g.cookie);
    for cookies in [
        vec![format!("session=s1; {bound}; theme=dark")],
        vec![format!("{bound}; session=s1;theme=dark")],
        vec![format!("session=s1;{bound};theme=dark;{bound}")],
        vec!["session=s1; theme=dark".to_owned(), bound.clone()],
        vec![format!("  {bound} ; session=s1"), "theme=dark".to_owned()],
    ] {
        let mut req = edge
            .client
            .get(format!("{}/plain/page", edge.base))
            .header("user-agent", CHROME);
        for c in &cookies {
            req = req.header("cookie", c);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200, "{cookies:?}");
        let echo = r.text().await.unwrap();
        assert!(echo.starts_with("GET /plain/page\n"), "{echo}");
        assert!(!echo.contains(COOKIE), "{cookies:?}: {echo}");
        assert!(!echo.contains(&g.cookie), "{cookies:?}: {echo}");
        // The app's own cookies all arrive.
        let sent: Vec<&str> = echo
            .lines()
            .filter_map(|l| l.strip_prefix("cookie: "))
            .flat_map(|l| l.split(';'))
            .map(str::trim)
            .collect();
        for own in ["session=s1", "theme=dark"] {
            assert!(sent.contains(&own), "{own} lost: {echo}");
        }
    }
    // No bound cookie: the jar goes as sent.
    let r = edge.get("/plain/page", "session=s1; theme=dark").await;
    let echo = r.text().await.unwrap();
    assert!(echo.contains("cookie: session=s1; theme=dark\n"), "{echo}");
}

#[tokio::test]
async fn a_copied_jar_without_the_key_dies_with_the_short_cookie() {
    let edge = Edge::start(
        dbsc_route(),
        &format!("{ROOMY}cookie_lifetime_seconds = 2\n"),
    )
    .await;
    let owner = Key::new();
    let g = edge.bind("victim", &owner).await;
    // The cookie was issued at most now (its expiry counts from the whole
    // second the proxy sent it in).
    let issued = tokio::time::Instant::now();
    // The thief copies the whole jar, bound cookie included.
    let jar = format!("session=victim; {COOKIE}={}", g.cookie);
    assert_eq!(edge.get("/echo", &jar).await.status(), 200);
    // Until the short cookie expires; then refused: within its lifetime
    // (2 s) and the 2 s grace, counted in whole seconds from the second
    // it was issued in (so up to one more), and the polling's step.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let r = edge.get("/echo", &jar).await;
        if r.status() == 403 {
            assert_eq!(code(r).await.1, "dbsc_proof_failed");
            let lived = issued.elapsed();
            assert!(
                lived <= Duration::from_millis((2 + 2 + 1) * 1000 + 500),
                "the copied cookie lived {lived:?}"
            );
            break;
        }
        assert_eq!(r.status(), 200);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the copied cookie never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The thief's refresh: he gets a challenge, and cannot sign it with
    // the owner's key. His own key: 401 (his browser's session ends); the
    // binding stays the owner's.
    let thief = Key::new();
    let r = edge.refresh(&g.id, None).await;
    assert_eq!(r.status(), 403);
    let c = challenge_value(&next_challenge(&r));
    assert_eq!(
        edge.refresh(&g.id, Some(&thief.refresh(&c))).await.status(),
        401
    );
    // Nor can he register his key for the victim's session.
    assert_eq!(edge.register(&thief.registration(&c)).await.status(), 401);
    // The owner refreshes with the same challenge and goes on.
    let r = edge.refresh(&g.id, Some(&owner.refresh(&c))).await;
    assert_eq!(r.status(), 200);
    let g2 = granted(r).await;
    let owner_jar = format!("session=victim; {COOKIE}={}", g2.cookie);
    assert_eq!(edge.get("/echo", &owner_jar).await.status(), 200);
    assert_eq!(edge.get("/echo", &jar).await.status(), 403);
}

#[tokio::test]
async fn every_bad_proof_gets_its_exact_status() {
    let edge = Edge::start(dbsc_route(), ROOMY).await;
    let key = Key::new();
    let challenge = edge.login("p1").await.unwrap();

    // Registration.
    assert_eq!(code(edge.post("/register", &[]).await).await.0, 400);
    assert_eq!(edge.register("not.a.jwt").await.status(), 400);
    let typ = key.sign(
        serde_json::json!({"alg": "ES256", "typ": "JWT", "jwk": key.jwk()}),
        &challenge,
    );
    assert_eq!(edge.register(&typ).await.status(), 401);
    let none = key.sign(
        serde_json::json!({"alg": "none", "typ": "dbsc+jwt", "jwk": key.jwk()}),
        &challenge,
    );
    assert_eq!(edge.register(&none).await.status(), 401);
    let rs = key.sign(
        serde_json::json!({"alg": "RS256", "typ": "dbsc+jwt", "jwk": key.jwk()}),
        &challenge,
    );
    assert_eq!(edge.register(&rs).await.status(), 401);
    // No key in the header.
    assert_eq!(edge.register(&key.refresh(&challenge)).await.status(), 401);
    // A challenge Vigil never gave.
    assert_eq!(
        edge.register(&key.registration("AAAAAAAAAAAAAAAAAAAAAA"))
            .await
            .status(),
        401
    );
    // The real one, without the app's cookie (a challenge seen by another):
    // 401; with it, once.
    let proof = key.registration(&challenge);
    assert_eq!(edge.register(&proof).await.status(), 401);
    assert_eq!(edge.register_with("other", &proof).await.status(), 401);
    assert_eq!(edge.register_with("p1", &proof).await.status(), 200);
    assert_eq!(edge.register_with("p1", &proof).await.status(), 401);
    // The same session set again is not offered again: it is bound.
    assert_eq!(edge.login("p1").await, None);

    // Refresh.
    let g = edge.bind("p2", &key).await;
    assert_eq!(edge.post("/refresh", &[]).await.status(), 400);
    assert_eq!(edge.refresh("not an id", None).await.status(), 400);
    assert_eq!(
        edge.refresh("AAAAAAAAAAAAAAAAAAAAAA", None).await.status(),
        404
    );
    let c = g.challenge.clone();
    let with_key = key.registration(&c);
    assert_eq!(edge.refresh(&g.id, Some(&with_key)).await.status(), 401);
    let typ = key.sign(serde_json::json!({"alg": "ES256", "typ": "JWT"}), &c);
    assert_eq!(edge.refresh(&g.id, Some(&typ)).await.status(), 401);
    let alg = key.sign(serde_json::json!({"alg": "RS256", "typ": "dbsc+jwt"}), &c);
    assert_eq!(edge.refresh(&g.id, Some(&alg)).await.status(), 401);
    assert_eq!(edge.refresh(&g.id, Some("x.y.z")).await.status(), 400);
    // Signed by the key, but a challenge it was never given: 403 again.
    let r = edge
        .refresh(&g.id, Some(&key.refresh("AAAAAAAAAAAAAAAAAAAAAA")))
        .await;
    assert_eq!(r.status(), 403);
    // Another session's proof (valid for that one) does not pass here.
    let other = Key::new();
    let g3 = edge.bind("p3", &other).await;
    assert_eq!(
        edge.refresh(&g.id, Some(&other.refresh(&g3.challenge)))
            .await
            .status(),
        401
    );
    // Not POST: 405; another path under the prefix: 404.
    let r = edge
        .client
        .get(format!("{}/.vigil/dbsc/refresh", edge.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(edge.post("/other", &[]).await.status(), 404);
}

#[tokio::test]
async fn a_full_store_and_rate_limits_answer_503_which_browsers_back_off_from() {
    // The store: 16 sessions, one per shard; 40 registrations cannot all fit.
    let edge = Edge::start(dbsc_route(), &format!("{ROOMY}max_sessions = 16\n")).await;
    let (mut ok, mut full) = (0, 0);
    for i in 0..40 {
        let key = Key::new();
        let session = format!("full{i}");
        let c = edge.login(&session).await.unwrap();
        let r = edge.register_with(&session, &key.registration(&c)).await;
        match r.status().as_u16() {
            200 => ok += 1,
            503 => {
                assert_eq!(r.headers().get("retry-after").unwrap(), "60");
                full += 1;
            }
            s => panic!("status {s}"),
        }
    }
    assert!((1..=16).contains(&ok), "{ok}");
    assert_eq!(ok + full, 40);
    let m = edge.proxy.metrics().await;
    assert_eq!(
        m.value(
            "vigil_proxy_dbsc_total",
            &[("step", "register"), ("outcome", "store_full")]
        ),
        f64::from(full)
    );

    // Per session: the third verified proof of one session in a minute.
    // Asking for challenges (anyone holding the app cookie can) spends
    // nothing of the owner's budget.
    let edge = Edge::start(
        dbsc_route(),
        "per_client_per_minute = 10000\nper_session_per_minute = 2\n",
    )
    .await;
    let key = Key::new();
    let g = edge.bind("rl", &key).await;
    for _ in 0..5 {
        assert_eq!(edge.refresh(&g.id, None).await.status(), 403);
    }
    let mut c = g.challenge.clone();
    for _ in 0..2 {
        let r = edge.refresh(&g.id, Some(&key.refresh(&c))).await;
        assert_eq!(r.status(), 200);
        c = granted(r).await.challenge;
    }
    let r = edge.refresh(&g.id, Some(&key.refresh(&c))).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    // Made-up session ids are not counted: a flood of them neither fills
    // the limiter nor refuses anyone.
    for i in 0..50u8 {
        let id = URL_SAFE_NO_PAD.encode([i; 16]);
        assert_eq!(edge.refresh(&id, None).await.status(), 404);
    }

    // Per client address: the sixth request from one address.
    let edge = Edge::start(
        dbsc_route(),
        "per_client_per_minute = 5\nper_session_per_minute = 10000\n",
    )
    .await;
    for _ in 0..5 {
        assert_eq!(
            edge.refresh("AAAAAAAAAAAAAAAAAAAAAA", None).await.status(),
            404
        );
    }
    assert_eq!(
        edge.refresh("AAAAAAAAAAAAAAAAAAAAAA", None).await.status(),
        503
    );
    assert_eq!(edge.register("x").await.status(), 503);
}

#[tokio::test]
async fn require_refuses_a_client_without_dbsc_and_offer_lets_it_go_on() {
    let edge = Edge::start(
        Route::new("app", "/", "app").dbsc("require"),
        &format!("{ROOMY}registration_window_seconds = 1\n"),
    )
    .await;
    // A session Vigil never offered a binding: refused at once.
    let (status, error) = code(edge.get("/echo", "session=old").await).await;
    assert_eq!((status, error.as_str()), (403, "dbsc_proof_failed"));
    // A new session is let in while its registration is open, then refused
    // when the browser never registered.
    edge.login("nodbsc").await.unwrap();
    assert_eq!(edge.get("/echo", "session=nodbsc").await.status(), 200);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while edge.get("/echo", "session=nodbsc").await.status() == 200 {
        assert!(tokio::time::Instant::now() < deadline, "never refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(code(edge.get("/echo", "session=nodbsc").await).await.0, 403);
    // Anonymous requests are no session's: forwarded.
    assert_eq!(edge.get("/echo", "").await.status(), 200);

    let edge = Edge::start(dbsc_route(), ROOMY).await;
    assert_eq!(edge.get("/echo", "session=old").await.status(), 200);
}

#[tokio::test]
async fn monitor_mode_never_refuses_and_counts_what_it_would() {
    let edge = Edge::start(
        Route::new("app", "/", "app")
            .dbsc("require")
            .mode("monitor"),
        ROOMY,
    )
    .await;
    let g = edge.bind("m1", &Key::new()).await;
    assert!(!g.cookie.is_empty());
    assert_eq!(edge.get("/echo", "session=m1").await.status(), 200);
    assert_eq!(
        edge.get("/echo", "session=never-offered").await.status(),
        200
    );
    let m = edge.proxy.metrics().await;
    assert_eq!(
        m.value(
            "vigil_proxy_request_errors_total",
            &[("code", "dbsc_proof_failed"), ("outcome", "monitored")]
        ),
        2.0
    );
}

#[tokio::test]
async fn excluded_paths_need_no_proof() {
    let edge = Edge::start(
        dbsc_route(),
        &format!("{ROOMY}exclude_paths = [\"/static\"]\n"),
    )
    .await;
    let challenge = edge.login("st").await.unwrap();
    let r = edge
        .register_with("st", &Key::new().registration(&challenge))
        .await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(
        body["scope"]["scope_specification"],
        serde_json::json!([{"type": "exclude", "domain": HOST, "path": "/static"}])
    );
    assert_eq!(
        edge.get("/static/app.css", "session=st").await.status(),
        200
    );
    // Judged on the normalised path: dot segments do not escape the proof.
    assert_eq!(
        edge.get("/static/../echo", "session=st").await.status(),
        403
    );
    assert_eq!(edge.get("/echo", "session=st").await.status(), 403);
    // On a segment boundary: `/static` does not exclude `/static-admin`.
    assert_eq!(
        code(edge.get("/static-admin", "session=st").await).await,
        (403, "dbsc_proof_failed".to_owned())
    );
}

/// Issue 1 of the review: a thief holding a victim's unbound session (a
/// browser without DBSC) makes the app set the same cookie again, hoping
/// for an offer he can register his own key with.
#[tokio::test]
async fn a_thief_cannot_register_his_key_for_a_session_the_app_sets_again() {
    let edge = Edge::start(
        Route::new("app", "/", "app").dbsc("require"),
        &format!("{ROOMY}registration_window_seconds = 1\n"),
    )
    .await;
    // The victim's browser has no DBSC: the offer is never taken.
    let offered = edge.login("victim").await.unwrap();
    let thief = Key::new();
    // The thief re-opens the same session: no offer, within the window...
    let r = edge
        .get("/login?user=ann&session=victim", "session=victim")
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("secure-session-registration").is_none());
    // ...and the window, timed from the first issuance, is not reopened.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while edge.get("/echo", "session=victim").await.status() == 200 {
        assert!(tokio::time::Instant::now() < deadline, "never refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = edge
        .get("/login?user=ann&session=victim", "session=victim")
        .await;
    assert!(r.headers().get("secure-session-registration").is_none());
    assert_eq!(code(edge.get("/echo", "session=victim").await).await.0, 403);
    // Nor does the victim's own challenge work for him once it is past.
    assert_eq!(
        edge.register_with("victim", &thief.registration(&offered))
            .await
            .status(),
        401
    );
    let m = edge.proxy.metrics().await;
    assert_eq!(
        m.value(
            "vigil_proxy_dbsc_total",
            &[("step", "offer"), ("outcome", "offered")]
        ),
        1.0
    );
}

/// Issue 2: the app rotates its session cookie. The new session is the
/// bound one's: it inherits the binding, and nobody gets an offer for it,
/// not even a thief coming in through an excluded path.
#[tokio::test]
async fn a_rotated_session_inherits_the_binding_and_gives_no_offer() {
    let edge = Edge::start(
        dbsc_route(),
        &format!("{ROOMY}exclude_paths = [\"/login\"]\n"),
    )
    .await;
    // Logged in on an excluded path: no offer. The registration comes
    // from a login elsewhere.
    let r = edge.get("/login?user=ann&session=x0", "").await;
    assert!(r.headers().get("secure-session-registration").is_none());
    let edge = Edge::start(dbsc_route(), ROOMY).await;
    let key = Key::new();
    let g = edge.bind("r1", &key).await;
    let owner = format!("session=r1; {COOKIE}={}", g.cookie);
    // The owner's proven request; the app rotates r1 to r2.
    let r = edge.get("/login?user=ann&session=r2", &owner).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("secure-session-registration").is_none());
    // r2 needs the same bound cookie, which the owner's refreshes rotate.
    assert_eq!(
        edge.get("/echo", &format!("session=r2; {COOKIE}={}", g.cookie))
            .await
            .status(),
        200
    );
    let r = edge.get("/echo", "session=r2").await;
    assert!(r.headers().get("secure-session-challenge").is_some());
    assert_eq!(code(r).await, (403, "dbsc_proof_failed".to_owned()));
    let r = edge.refresh(&g.id, Some(&key.refresh(&g.challenge))).await;
    assert_eq!(r.status(), 200);
    let g2 = granted(r).await;
    assert_eq!(
        edge.get("/echo", &format!("session=r2; {COOKIE}={}", g2.cookie))
            .await
            .status(),
        200
    );
    // A thief with only the app cookie whose request reaches the app
    // unproven (here a monitoring route; an excluded path alike) and makes
    // it rotate: the new session is bound too, and he gets no offer.
    let edge = Edge::start(
        Route::new("app", "/", "app")
            .dbsc("require")
            .mode("monitor"),
        ROOMY,
    )
    .await;
    edge.bind("m1", &Key::new()).await;
    let r = edge.get("/login?user=ann&session=t1", "session=m1").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("secure-session-registration").is_none());
    assert_eq!(edge.get("/echo", "session=t1").await.status(), 200);
    let m = edge.proxy.metrics().await;
    assert_eq!(
        m.value(
            "vigil_proxy_dbsc_total",
            &[("step", "offer"), ("outcome", "inherited")]
        ),
        1.0
    );
    // Both the thief's requests would have been refused.
    assert_eq!(
        m.value(
            "vigil_proxy_request_errors_total",
            &[("code", "dbsc_proof_failed"), ("outcome", "monitored")]
        ),
        2.0
    );
}

/// Issue 3: more cookies than the engine reads make the credentials
/// unreadable. On a DBSC route that is a refusal, whatever `on_error`
/// says: a thief must not switch the proof off by padding the jar.
#[tokio::test]
async fn cookie_padding_does_not_switch_dbsc_off_on_a_fail_open_route() {
    let edge = Edge::start(
        Route::new("app", "/", "app").dbsc("offer").on_error("open"),
        ROOMY,
    )
    .await;
    edge.bind("pad", &Key::new()).await;
    let junk: Vec<String> = (0..250).map(|i| format!("j{i}=1")).collect();
    let jar = format!("session=pad; {}", junk.join("; "));
    assert_eq!(
        code(edge.get("/echo", &jar).await).await,
        (400, "malformed_request".to_owned())
    );
    let m = edge.proxy.metrics().await;
    assert_eq!(
        m.value(
            "vigil_proxy_request_errors_total",
            &[("code", "too_many_cookies"), ("outcome", "refused")]
        ),
        1.0
    );
}

/// Issue 5: anyone holding the app cookie sees the session id (in the
/// 403's challenge) and can ask for challenges. Challenges are sealed, not
/// stored: asking mints new ones and the one the owner holds stays good
/// while it is fresh, so the owner's proof never goes stale.
#[tokio::test]
async fn asking_for_challenges_does_not_make_the_owners_proof_stale() {
    let edge = Edge::start(dbsc_route(), ROOMY).await;
    let key = Key::new();
    let g = edge.bind("busy", &key).await;
    for _ in 0..3 {
        let r = edge.refresh(&g.id, None).await;
        assert_eq!(r.status(), 403);
        assert_ne!(challenge_value(&next_challenge(&r)), g.challenge);
    }
    let r = edge.refresh(&g.id, Some(&key.refresh(&g.challenge))).await;
    assert_eq!(r.status(), 200);
}

/// Vigil's endpoints are judged on the normalised path too: an encoded
/// letter does not carry a request past them to the app.
#[tokio::test]
async fn an_encoded_endpoint_path_never_reaches_the_app() {
    let edge = Edge::start(dbsc_route(), ROOMY).await;
    let r = edge
        .client
        .post(format!("{}/.vigil/dbsc/%72egister", edge.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers().get("x-frame-options").unwrap(), "DENY");
    let m = edge.proxy.metrics().await;
    assert_eq!(
        m.value(
            "vigil_proxy_dbsc_total",
            &[("step", "register"), ("outcome", "not_found")]
        ),
        1.0
    );
}

/// The real browser: Debian's Chromium registers, refreshes once its short
/// cookie has expired, and the jar exported from it through the DevTools
/// protocol, replayed by another client, is refused once the bound cookie
/// it holds expires. The engine's own policy allows everything here, so
/// that the refusal is DBSC's alone.
#[tokio::test]
async fn chromium_registers_refreshes_and_its_exported_jar_dies_without_the_key() {
    // The favicon is excluded as a site would exclude it (a static asset).
    // Debug logs name the path of any refusal, should the browser be
    // refused.
    let edge = Edge::start(
        dbsc_route().high("allow").medium("allow"),
        &format!(
            "{ROOMY}cookie_lifetime_seconds = 3\nexclude_paths = [\"/favicon.ico\"]\n\
             [log]\nlevel = \"info,vigil_proxy=debug\"\n"
        ),
    )
    .await;
    let out = common::run_script(
        "dbsc-browser.mjs",
        serde_json::json!({
            "base": edge.base, "spki": edge.spki, "host": HOST, "cookie": COOKIE,
        }),
    )
    .await;
    assert_eq!(out["login"], 200, "{out}");
    assert_eq!(out["registered"], true, "{out}");
    assert_eq!(out["expired"], true, "{out}");
    assert_eq!(out["echo"]["status"], 200, "{out}");
    let body = out["echo"]["body"].as_str().unwrap();
    assert!(body.contains("cookie: session=b1"), "{body}");
    assert!(!body.contains(COOKIE), "{body}");
    assert_eq!(out["refreshed"], true, "{out}");
    let m = edge.proxy.metrics().await;
    let count = |step, outcome| {
        m.value(
            "vigil_proxy_dbsc_total",
            &[("step", step), ("outcome", outcome)],
        )
    };
    assert_eq!(count("register", "registered"), 1.0);
    assert!(count("refresh", "refreshed") >= 1.0);
    assert_eq!(
        m.value(
            "vigil_proxy_request_errors_total",
            &[("code", "dbsc_proof_failed"), ("outcome", "refused")]
        ),
        0.0,
        "the browser itself was never refused: {}",
        edge.proxy
            .log()
            .lines()
            .filter(|l| l.contains("dbsc"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The thief: the exported jar, the browser's User-Agent, another client.
    let user_agent = body
        .lines()
        .find_map(|l| l.strip_prefix("user-agent: "))
        .unwrap()
        .to_owned();
    let jar = out["exported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}={}",
                c["name"].as_str().unwrap(),
                c["value"].as_str().unwrap()
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    assert!(jar.contains(COOKIE), "{jar}");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let r = edge.get_as(&user_agent, "/echo", &jar).await;
        if r.status() == 403 {
            assert_eq!(code(r).await.1, "dbsc_proof_failed");
            break;
        }
        assert_eq!(r.status(), 200);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the copied jar was never refused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
