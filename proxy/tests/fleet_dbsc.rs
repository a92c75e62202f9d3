//! DBSC across the fleet, through the real binaries: `vigil-controller`
//! (in this test process, on SQLite) and two `vigil-proxy` processes over
//! real TLS sharing one session hash key, with a protocol-level client that
//! signs as Chromium 156 does (`docs/bound-sessions.md`, DBSC at the edge,
//! Across the fleet). Each test is the attack: a balancer sends the thief
//! (or the owner) to whichever node it likes.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{
    CHROME, Ca, Config, FLEET_KEY, InProcessController, Leaf, Origin, Proxy, REQUEST_TIMEOUT,
    Relay, Route, free_addr, write_fleet_key,
};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

const HOST: &str = "app.test";
const COOKIE: &str = "__Host-vigil-dbsc";
const NODE_A: &str = "dbsc-node-a-token-0123456";
const NODE_B: &str = "dbsc-node-b-token-0123456";
const ADMIN: &str = "dbsc-admin-token-0123456789";
/// Generous: a debug build on a busy machine, and a node's back-off after
/// the controller was away for a few seconds.
const DEADLINE: Duration = Duration::from_secs(60);

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

    fn sign(&self, header: serde_json::Value, jti: &str) -> String {
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let p = URL_SAFE_NO_PAD.encode(serde_json::json!({ "jti": jti }).to_string());
        let input = format!("{h}.{p}");
        let sig = self.0.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    fn registration(&self, challenge: &str) -> String {
        let p = self.0.public_key().as_ref();
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..]),
        });
        self.sign(
            serde_json::json!({"alg": "ES256", "typ": "dbsc+jwt", "jwk": jwk}),
            challenge,
        )
    }

    fn refresh(&self, challenge: &str) -> String {
        self.sign(
            serde_json::json!({"alg": "ES256", "typ": "dbsc+jwt"}),
            challenge,
        )
    }
}

/// One node as a client reaches it.
struct Node {
    proxy: Proxy,
    config: String,
    client: reqwest::Client,
    base: String,
}

struct Fleet {
    a: Node,
    b: Node,
    controller: InProcessController,
    /// Each node reaches the controller through a relay of its own, which
    /// a test cuts to cut that node off.
    relay_a: Relay,
    relay_b: Relay,
    _origin: Origin,
    _ca: Ca,
    _leaf: Leaf,
    _dir: tempfile::TempDir,
}

/// What registration or refresh gave.
#[derive(Debug)]
struct Granted {
    id: String,
    cookie: String,
    challenge: String,
}

impl Fleet {
    async fn start(dbsc: &str) -> Fleet {
        Fleet::start_with(dbsc, "").await
    }

    /// With `controller` lines added to each node's `[controller]`.
    async fn start_with(dbsc: &str, controller: &str) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let key = write_fleet_key(dir.path());
        let store = format!("sqlite://{}", dir.path().join("controller.db").display());
        let ctl = InProcessController::start(
            dir.path(),
            "controller.toml",
            &store,
            &key,
            ADMIN,
            &[("a", NODE_A), ("b", NODE_B)],
        );
        let listen = ctl.addr();
        let ca = Ca::new("Test CA");
        let leaf = ca.leaf(&[HOST]);
        let origin = Origin::start();
        let relay_a = Relay::start(listen).await;
        let relay_b = Relay::start(listen).await;
        let node = |name: &str, token: &str, via: SocketAddr| -> String {
            let state = dir.path().join(name);
            std::fs::create_dir_all(&state).unwrap();
            let token_file = state.join("controller.token");
            std::fs::write(&token_file, token).unwrap();
            Config::new()
                .state_dir(&state)
                .tls_listener("https", free_addr(), true, &[&leaf])
                .upstream("app", origin.addr())
                .route(Route::new("app", "/", "app").dbsc("offer"))
                .section(&format!("[dbsc]\nper_client_per_minute = 10000\nper_session_per_minute = 10000\n{dbsc}"))
                .section(&format!(
                    "[session]\nhash_key_file = {:?}\n\n[controller]\nurl = \"http://{via}\"\ntoken_file = {:?}\n{controller}",
                    key.display().to_string(),
                    token_file.display().to_string()
                ))
                .render()
        };
        let a = Node::start(node("a", NODE_A, relay_a.addr()), &ca).await;
        let b = Node::start(node("b", NODE_B, relay_b.addr()), &ca).await;
        Fleet {
            a,
            b,
            controller: ctl,
            relay_a,
            relay_b,
            _origin: origin,
            _ca: ca,
            _leaf: leaf,
            _dir: dir,
        }
    }
}

impl Fleet {
    /// A node of the fleet's key (so its seals are the fleet's) that never
    /// reaches the controller: what a node cut off from it, or restarted
    /// without its snapshot, holds — none of the fleet's bindings.
    async fn cut_off_node(&self) -> Node {
        let state = self._dir.path().join("cut-off");
        std::fs::create_dir_all(&state).unwrap();
        let key = self._dir.path().join("fleet-hash.key");
        let config = Config::new()
            .state_dir(&state)
            .tls_listener("https", free_addr(), true, &[&self._leaf])
            .upstream("app", self._origin.addr())
            .route(Route::new("app", "/", "app").dbsc("offer"))
            .section("[dbsc]\nper_client_per_minute = 10000\nper_session_per_minute = 10000\n")
            .section(&format!(
                "[session]\nhash_key_file = {:?}\n",
                key.display().to_string()
            ))
            .render();
        let proxy = Proxy::start(&config).await;
        Node::attach(proxy, config, &self._ca)
    }
}

impl Node {
    async fn start(config: String, ca: &Ca) -> Node {
        let proxy = Proxy::start(&config).await;
        proxy
            .wait_for_metric("vigil_proxy_fleet_connected", &[], |v| v == 1.0)
            .await;
        Node::attach(proxy, config, ca)
    }

    fn attach(proxy: Proxy, config: String, ca: &Ca) -> Node {
        let addr: SocketAddr = proxy.listener("https");
        let client = common::tls_client_builder()
            .tls_certs_only([ca.root()])
            .resolve(HOST, addr)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap();
        Node {
            proxy,
            config,
            client,
            base: format!("https://{HOST}:{}", addr.port()),
        }
    }

    /// Stops this node (SIGTERM: its last snapshot is written) and starts
    /// it again on the same state directory and ports.
    async fn restart(self, ca: &Ca) -> Node {
        let log = self.proxy.terminate();
        assert!(log.contains("session snapshot written"), "{log}");
        let proxy = Proxy::start(&self.config).await;
        Node::attach(proxy, self.config, ca)
    }

    async fn get(&self, path: &str, cookie: &str) -> reqwest::Response {
        let mut req = self
            .client
            .get(format!("{}{path}", self.base))
            .header("user-agent", CHROME)
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

    /// The app opens `session`; returns the registration challenge offered.
    async fn login(&self, session: &str) -> String {
        let r = self
            .get(&format!("/login?user=ann&session={session}"), "")
            .await;
        assert_eq!(r.status(), 200);
        let header = r
            .headers()
            .get("secure-session-registration")
            .expect("a registration offer")
            .to_str()
            .unwrap();
        header
            .split("challenge=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches('"')
            .to_owned()
    }

    async fn register(&self, session: &str, proof: &str) -> reqwest::Response {
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

    /// Waits until this node's stream to the controller is `up` (or down).
    async fn until_connected(&self, up: bool) {
        let want = if up { 1.0 } else { 0.0 };
        self.proxy
            .wait_for_metric("vigil_proxy_fleet_connected", &[], move |v| v == want)
            .await;
    }

    /// Polls until a request carrying only the app's cookie of `session`
    /// is refused here as unproven: this node knows the binding.
    async fn until_bound(&self, session: &str) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let r = self.get("/echo", &format!("session={session}")).await;
            if r.status() == 403 {
                assert_eq!(code(r).await.1, "dbsc_proof_failed");
                return;
            }
            assert_eq!(r.status(), 200);
            assert!(
                tokio::time::Instant::now() < deadline,
                "the binding never reached this node"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

async fn granted(r: reqwest::Response) -> Granted {
    assert_eq!(r.status(), 200);
    let cookie = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .strip_prefix(&format!("{COOKIE}="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let challenge = challenge_of(&r);
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    Granted {
        id: body["session_identifier"].as_str().unwrap().to_owned(),
        cookie,
        challenge,
    }
}

/// The challenge value of a `Secure-Session-Challenge` header.
fn challenge_of(r: &reqwest::Response) -> String {
    r.headers()
        .get("secure-session-challenge")
        .unwrap()
        .to_str()
        .unwrap()
        .split('"')
        .nth(1)
        .unwrap()
        .to_owned()
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

#[tokio::test]
async fn a_binding_made_on_one_node_holds_on_the_other_and_across_a_restart() {
    let mut fleet = Fleet::start("").await;
    let owner = Key::new();
    let offer = fleet.a.login("s1").await;
    let g = granted(fleet.a.register("s1", &owner.registration(&offer)).await).await;
    fleet.b.until_bound("s1").await;

    // The owner's jar on B: the cookie A sealed is taken without a lookup.
    let jar = format!("session=s1; {COOKIE}={}", g.cookie);
    assert_eq!(fleet.b.get("/echo", &jar).await.status(), 200);
    // A refresh on B signing the challenge A handed out: 200, and the new
    // cookie is good on A too.
    let r = fleet
        .b
        .refresh(&g.id, Some(&owner.refresh(&g.challenge)))
        .await;
    let g2 = granted(r).await;
    assert_ne!(g2.cookie, g.cookie);
    assert_ne!(g2.challenge, g.challenge);
    let jar2 = format!("session=s1; {COOKIE}={}", g2.cookie);
    assert_eq!(fleet.a.get("/echo", &jar2).await.status(), 200);
    // The refresh protocol on B: 403 with a challenge, then 200.
    let r = fleet.b.refresh(&g.id, None).await;
    assert_eq!(r.status(), 403);
    let c = challenge_of(&r);
    let g3 = granted(fleet.b.refresh(&g.id, Some(&owner.refresh(&c))).await).await;

    // The thief with the app's cookie alone, on either node: refused, and
    // his own key cannot answer the challenge.
    let thief = Key::new();
    for node in [&fleet.a, &fleet.b] {
        let r = node.get("/echo", "session=s1").await;
        assert_eq!(code(r).await, (403, "dbsc_proof_failed".to_owned()));
        let r = node.refresh(&g.id, None).await;
        assert_eq!(r.status(), 403);
        let c = challenge_of(&r);
        assert_eq!(
            node.refresh(&g.id, Some(&thief.refresh(&c))).await.status(),
            401
        );
    }
    // Nor can he register his key for the session on B, with the offer he
    // saw: the fleet's record is there.
    // The outcome is the metric's: a 401 with an empty body could as well
    // be `unknown_challenge`.
    let spent = [("step", "register"), ("outcome", "already_bound")];
    let before = fleet.b.proxy.metric("vigil_proxy_dbsc_total", &spent).await;
    let r = fleet.b.register("s1", &thief.registration(&offer)).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        fleet.b.proxy.metric("vigil_proxy_dbsc_total", &spent).await,
        before + 1.0
    );
    // A cookie sealed for another session does not prove this one.
    let offer2 = fleet.b.login("s2").await;
    let other = granted(fleet.b.register("s2", &thief.registration(&offer2)).await).await;
    fleet.a.until_bound("s2").await;
    let mixed = format!("session=s1; {COOKIE}={}", other.cookie);
    assert_eq!(fleet.a.get("/echo", &mixed).await.status(), 403);

    // B restarts with the controller gone: what it knows, it knows from its
    // snapshot alone.
    fleet.controller.stop();
    let ca = fleet._ca;
    let b = fleet.b.restart(&ca).await;
    b.proxy.wait_for_log("dbsc bindings restored").await;
    let r = b.get("/echo", "session=s1").await;
    assert_eq!(code(r).await, (403, "dbsc_proof_failed".to_owned()));
    let jar3 = format!("session=s1; {COOKIE}={}", g3.cookie);
    assert_eq!(b.get("/echo", &jar3).await.status(), 200);
    // And the refresh counter it had reached: the challenge it handed out
    // before the last refresh there is stale.
    let r = b.refresh(&g.id, Some(&owner.refresh(&c))).await;
    assert_eq!(r.status(), 403);
    let r = b
        .refresh(&g.id, Some(&owner.refresh(&challenge_of(&r))))
        .await;
    assert_eq!(r.status(), 200);
    fleet.b = b;
    fleet._ca = ca;
}

/// A refresh reaching a node that does not hold the binding (cut off
/// from the controller, so the record never came) must not end the
/// owner's DBSC session: `503` with `Retry-After` (a browser keeps its
/// session on a 5xx and comes back), where `404` would end it fleet-wide.
/// An id no node made is still `404`; the owner goes on at the node that
/// holds it.
#[tokio::test]
async fn a_refresh_at_a_node_without_the_binding_keeps_the_owners_session() {
    let fleet = Fleet::start("").await;
    let c = fleet.cut_off_node().await;
    let owner = Key::new();
    let offer = fleet.a.login("away").await;
    let g = granted(fleet.a.register("away", &owner.registration(&offer)).await).await;
    fleet.b.until_bound("away").await;
    // C has not heard of it: the owner's refresh lands there.
    let r = c.refresh(&g.id, Some(&owner.refresh(&g.challenge))).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let unknown = [("step", "refresh"), ("outcome", "unknown_here")];
    assert_eq!(
        c.proxy.metric("vigil_proxy_dbsc_total", &unknown).await,
        1.0
    );
    // A made-up id (one bit of the owner's changed): 404.
    let mut made_up = URL_SAFE_NO_PAD.decode(&g.id).unwrap();
    made_up[15] ^= 1;
    let made_up = URL_SAFE_NO_PAD.encode(made_up);
    for node in [&fleet.a, &fleet.b, &c] {
        assert_eq!(node.refresh(&made_up, None).await.status(), 404);
    }
    // The owner's session goes on at A with the same proof.
    let g2 = granted(
        fleet
            .a
            .refresh(&g.id, Some(&owner.refresh(&g.challenge)))
            .await,
    )
    .await;
    let jar = format!("session=away; {COOKIE}={}", g2.cookie);
    assert_eq!(fleet.a.get("/echo", &jar).await.status(), 200);
}

/// How long after a registration on A node B knows the session is bound:
/// 20 trials, median and maximum printed (`cargo test -p vigil-proxy
/// --test fleet_dbsc -- --nocapture`) and written in the docs. A
/// measurement, not a pass/fail bound on time.
#[tokio::test]
async fn the_window_from_a_registration_on_a_to_b_knowing_it() {
    let fleet = Fleet::start("").await;
    let key = Key::new();
    // The first registration after the fleet starts is slower (seconds,
    // not yet explained): measured and printed apart, bounded only by the
    // deadline.
    let offer = fleet.a.login("first").await;
    let r = fleet.a.register("first", &key.registration(&offer)).await;
    assert_eq!(r.status(), 200);
    let start = std::time::Instant::now();
    fleet.b.until_bound("first").await;
    let first = start.elapsed();
    let mut took = Vec::new();
    for i in 0..20 {
        let session = format!("w{i}");
        let offer = fleet.a.login(&session).await;
        let r = fleet.a.register(&session, &key.registration(&offer)).await;
        assert_eq!(r.status(), 200);
        let start = std::time::Instant::now();
        fleet.b.until_bound(&session).await;
        took.push(start.elapsed());
    }
    let order: Vec<u128> = took.iter().map(Duration::as_millis).collect();
    took.sort();
    let median = (took[9] + took[10]) / 2;
    let max = took[19];
    let retried = fleet
        .a
        .proxy
        .metric("vigil_proxy_fleet_events_retried_total", &[])
        .await;
    println!(
        "registration on A → B knows it: first after start {} ms; then 20 trials: \
         median {} ms, max {} ms (in order: {:?} ms; A's posts retried: {retried})",
        first.as_millis(),
        median.as_millis(),
        max.as_millis(),
        order
    );
    // No wall-clock assertion: the figures are measured and printed (the
    // machine is shared and noisy); `DEADLINE` bounds each poll only.
}

/// A registration the controller refuses: a node posting a second, other
/// binding for a session the fleet holds one of (a forged record, or a
/// thief's registration on a node that had not heard of the owner's).
#[tokio::test]
async fn the_controller_keeps_the_first_binding_of_a_session() {
    let fleet = Fleet::start("").await;
    let owner = Key::new();
    let offer = fleet.a.login("first").await;
    let g = granted(fleet.a.register("first", &owner.registration(&offer)).await).await;
    fleet.b.until_bound("first").await;
    // Node B's token posts another binding for the same session: a thief's
    // real key under an id a node would take (in the session's shard, its
    // seal good under the fleet's key), so only the controller stands in
    // the way.
    let url = format!("http://{}", fleet.controller.addr());
    let session = session_key("first");
    let thief = Key::new();
    let forged = serde_json::json!({
        "v": 5,
        "events": [{
            "id": "forged-1", "kind": "dbsc_bound",
            "binding": {
                "session": session, "id": hex::encode(dbsc_id(&session)),
                "key": format!("01{}", hex::encode(thief.0.public_key().as_ref())), "at": 1,
            }
        }]
    });
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/events"))
        .bearer_auth(NODE_B)
        .header("content-type", "application/json")
        .body(forged.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ack: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(ack["accepted"], 1);
    assert_eq!(ack["refused"], 1);
    // A later record has reached B: had the forged one been passed on, it
    // would have been applied before it (the stream is in order).
    let offer = fleet.a.login("later").await;
    let r = fleet.a.register("later", &owner.registration(&offer)).await;
    assert_eq!(r.status(), 200);
    fleet.b.until_bound("later").await;
    let applied = [("kind", "dbsc_bound")];
    assert_eq!(
        fleet
            .b
            .proxy
            .metric("vigil_proxy_fleet_changes_applied_total", &applied)
            .await,
        2.0,
        "B applied the owner's two records and nothing else"
    );
    // The owner's binding holds on both nodes.
    let jar = format!("session=first; {COOKIE}={}", g.cookie);
    for node in [&fleet.a, &fleet.b] {
        assert_eq!(node.get("/echo", &jar).await.status(), 200);
    }
}

/// A DBSC id as a node of the fleet makes one for `session` (hex): in the
/// session's shard, its second half sealed under the fleet's key.
fn dbsc_id(session: &str) -> [u8; 16] {
    let shard = u8::from_str_radix(&session[..2], 16).unwrap() % 16;
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&[0x70 | shard, 1, 2, 3, 4, 5, 6, 7]);
    let key = blake3::derive_key("vigil 2026-12 dbsc session id", &FLEET_KEY);
    let mut seal = blake3::Hasher::new_keyed(&key);
    seal.update(b"seal").update(&id[..8]);
    id[8..].copy_from_slice(&seal.finalize().as_bytes()[..8]);
    id
}

/// The session key of cookie value `value` under the fleet's test key.
fn session_key(value: &str) -> String {
    let engine = vigil_engine::Engine::new(
        vigil_engine::EngineConfig::default(),
        vigil_engine::SessionHashKey::from_bytes(FLEET_KEY),
    );
    engine
        .key_for_cookie("session", value.as_bytes())
        .unwrap()
        .to_string()
}

/// A node cut off from the controller goes on registering (its own
/// bindings hold there at once); once the controller is reachable again,
/// the other node learns every one of them — those its outbox kept and
/// also the one it dropped for room (`events_queue = 2`, three
/// registrations): after a drop, a node sends its bindings again on the
/// next stream's hello. Without that, the dropped registration would stay
/// unknown on B for good, and a thief with the app cookie alone would pass
/// there.
#[tokio::test]
async fn registrations_made_while_the_controller_is_away_reach_the_fleet_when_it_is_back() {
    let fleet = Fleet::start_with("", "events_queue = 2\n").await;
    let owner = Key::new();
    fleet.relay_a.cut();
    fleet.a.until_connected(false).await;
    let mut granted_on_a = Vec::new();
    for session in ["away0", "away1", "away2"] {
        let offer = fleet.a.login(session).await;
        let g = granted(fleet.a.register(session, &owner.registration(&offer)).await).await;
        // Bound on A at once, controller or not.
        let r = fleet.a.get("/echo", &format!("session={session}")).await;
        assert_eq!(code(r).await, (403, "dbsc_proof_failed".to_owned()));
        granted_on_a.push((session, g));
    }
    // The first record was dropped from A's full outbox.
    assert!(
        fleet
            .a
            .proxy
            .metric("vigil_proxy_fleet_events_dropped_total", &[])
            .await
            >= 1.0
    );
    // B has heard of none: the thief's jar of the app cookie alone passes
    // there while A is away (the limit "Remaining work (DBSC)" names).
    let r = fleet.b.get("/echo", "session=away0").await;
    assert_eq!(r.status(), 200);

    fleet.relay_a.mend();
    fleet.a.until_connected(true).await;
    for (session, g) in &granted_on_a {
        fleet.b.until_bound(session).await;
        // The owner's own cookie from A is good on B.
        let jar = format!("session={session}; {COOKIE}={}", g.cookie);
        assert_eq!(fleet.b.get("/echo", &jar).await.status(), 200);
    }
}

/// The registration race: the owner registers on A; a thief holding the
/// owner's offer and app cookie registers his own key on B before the
/// owner's record reaches B (B is cut off from the controller meanwhile,
/// which makes the window as long as the test needs). The controller took
/// the owner's registration first, so it refuses B's (`dbsc_conflict`);
/// once B hears again, the fleet's record replaces the thief's binding
/// there (`dbsc_bound_replacing`), the thief's cookie and key are refused
/// on B as on A, and the owner's work on both.
#[tokio::test]
async fn a_thiefs_registration_racing_the_owners_loses_on_every_node() {
    let fleet = Fleet::start("").await;
    let owner = Key::new();
    let thief = Key::new();
    let offer = fleet.a.login("race").await;
    fleet.relay_b.cut();
    fleet.b.until_connected(false).await;
    let g = granted(fleet.a.register("race", &owner.registration(&offer)).await).await;
    // The controller has the owner's record: it came back to A itself.
    fleet
        .a
        .proxy
        .wait_for_metric(
            "vigil_proxy_fleet_changes_applied_total",
            &[("kind", "dbsc_bound_unchanged")],
            |v| v >= 1.0,
        )
        .await;
    // B has not heard of it: the thief's registration with the owner's
    // offer is taken there, and his cookie works there — for now.
    let stolen = granted(fleet.b.register("race", &thief.registration(&offer)).await).await;
    assert_ne!(stolen.id, g.id);
    let thiefs_jar = format!("session=race; {COOKIE}={}", stolen.cookie);
    assert_eq!(fleet.b.get("/echo", &thiefs_jar).await.status(), 200);

    fleet.relay_b.mend();
    fleet.b.until_connected(true).await;
    // B takes the fleet's record in place of the thief's.
    fleet
        .b
        .proxy
        .wait_for_metric(
            "vigil_proxy_fleet_changes_applied_total",
            &[("kind", "dbsc_bound_replacing")],
            |v| v == 1.0,
        )
        .await;
    fleet
        .b
        .proxy
        .wait_for_log("the local one lost the race")
        .await;
    let owners_jar = format!("session=race; {COOKIE}={}", g.cookie);
    for node in [&fleet.a, &fleet.b] {
        let r = node.get("/echo", &thiefs_jar).await;
        assert_eq!(code(r).await, (403, "dbsc_proof_failed".to_owned()));
        assert_eq!(node.get("/echo", &owners_jar).await.status(), 200);
        // His id is held nowhere now; a node made it, so `503` (never
        // `404`, which would end an owner's session whose record is late).
        let r = node
            .refresh(&stolen.id, Some(&thief.refresh(&stolen.challenge)))
            .await;
        assert_eq!(r.status(), 503);
        // His key cannot answer the owner's session's challenge.
        let r = node.refresh(&g.id, None).await;
        assert_eq!(r.status(), 403);
        let c = challenge_of(&r);
        assert_eq!(
            node.refresh(&g.id, Some(&thief.refresh(&c))).await.status(),
            401
        );
        // Nor register again with the offer: spent.
        let r = node.register("race", &thief.registration(&offer)).await;
        assert_eq!(r.status(), 401);
    }
    // The owner refreshes on B with A's challenge.
    let r = fleet
        .b
        .refresh(&g.id, Some(&owner.refresh(&g.challenge)))
        .await;
    assert_eq!(r.status(), 200);
}

/// `when_cut_off = "refuse_registration"`: while a node's stream to the
/// controller is down, its registration endpoint answers `503` +
/// `Retry-After` (a browser ends nothing on a 5xx), so that it holds no
/// binding the other nodes cannot learn; the session goes on unbound
/// (`offer`) on every node alike. Bound sessions and refreshes are served
/// as ever, and registration works again once the stream is back.
#[tokio::test]
async fn a_node_cut_off_refuses_registrations_when_told_to() {
    let fleet = Fleet::start("when_cut_off = \"refuse_registration\"\n").await;
    let owner = Key::new();
    let offer = fleet.a.login("before").await;
    let g = granted(
        fleet
            .a
            .register("before", &owner.registration(&offer))
            .await,
    )
    .await;

    fleet.relay_a.cut();
    fleet.a.until_connected(false).await;
    let offer = fleet.a.login("during").await;
    let r = fleet
        .a
        .register("during", &owner.registration(&offer))
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    assert!(r.headers().get("set-cookie").is_none());
    let cut_off = [("step", "register"), ("outcome", "cut_off")];
    assert_eq!(
        fleet
            .a
            .proxy
            .metric("vigil_proxy_dbsc_total", &cut_off)
            .await,
        1.0
    );
    // Unbound, alike on both nodes: the app cookie alone goes on.
    for node in [&fleet.a, &fleet.b] {
        assert_eq!(node.get("/echo", "session=during").await.status(), 200);
    }
    // A session bound before is held to its proof as ever, and refreshes.
    let r = fleet.a.get("/echo", "session=before").await;
    assert_eq!(code(r).await, (403, "dbsc_proof_failed".to_owned()));
    let r = fleet
        .a
        .refresh(&g.id, Some(&owner.refresh(&g.challenge)))
        .await;
    assert_eq!(r.status(), 200);

    // Back: registration works again, and the fleet learns it.
    fleet.relay_a.mend();
    fleet.a.until_connected(true).await;
    let offer = fleet.a.login("after").await;
    let r = fleet.a.register("after", &owner.registration(&offer)).await;
    assert_eq!(r.status(), 200);
    fleet.b.until_bound("after").await;
}
