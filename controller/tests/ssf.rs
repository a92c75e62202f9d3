//! The Shared Signals receiver end to end over real HTTP: SETs signed by an
//! independent transmitter (the `easyssf-test` crate's, whose JWK Set it
//! serves itself, behind a loopback listener), pushed to the controller
//! (RFC 8935), and what reaches a node's sync stream; on SQLite and on the
//! PostgreSQL server on 127.0.0.1:5432 (a fresh database per test).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{Db, Stream, both, client, rand_u64};

use std::net::SocketAddr;
use std::time::Duration;

use easyssf_test::subjects::{complex, email, iss_sub, opaque};
use easyssf_test::{TestSigningKey, TestTransmitter};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil_controller::store::Store;
use vigil_fleet::{Change, UserId};

const ADMIN: &str = "admin-token-0123456789";
const NODE: &str = "node-a-token-0123456789";
const PUSH: &str = "idp-push-token-0123456789";
const AUDIENCE: &str = "https://vigil.test/ssf";
const HASH_KEY: [u8; 32] = [0x11; 32];
const DEADLINE: Duration = Duration::from_secs(20);
const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
const RISK_LEVEL: &str = "https://schemas.openid.net/secevent/caep/event-type/risk-level-change";
const COMPLIANCE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/device-compliance-change";
const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";
const ACCOUNT_DISABLED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/account-disabled";

/// The transmitter's documents (its JWK Set, its metadata) and endpoints
/// (its RFC 8936 poll endpoint) served on loopback by the transmitter
/// itself: each request — method, headers, body — is handed to its
/// in-process HTTP handler.
struct Published {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Published {
    async fn start(t: &TestTransmitter) -> Published {
        use easyssf_receiver::http::{SsfHttpClient, SsfHttpRequest};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let t = t.clone();
        let issuer = url::Url::parse(t.issuer()).unwrap();
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: axum::http::HeaderMap,
                  body: String| {
                let t = t.clone();
                let mut url = issuer.clone();
                async move {
                    url.set_path(uri.path());
                    url.set_query(uri.query());
                    let mut request = SsfHttpRequest::of(method.as_str(), url);
                    for (name, value) in &headers {
                        if let Ok(v) = value.to_str() {
                            request
                                .headers
                                .push((name.as_str().to_owned(), v.to_owned()));
                        }
                    }
                    request.body = (!body.is_empty()).then_some(body);
                    let r = t.execute(request).await.unwrap();
                    (
                        axum::http::StatusCode::from_u16(r.status).unwrap(),
                        [("content-type", "application/json")],
                        r.body,
                    )
                }
            },
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Published { addr, task }
    }

    fn jwks_uri(&self) -> String {
        format!("http://{}/realms/test/jwks", self.addr)
    }

    fn poll_uri(&self) -> String {
        format!("http://{}/realms/test/poll", self.addr)
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Controller {
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// The `[[ssf.transmitters]]` of `t`, its keys at `jwks_uri`.
fn transmitter_toml(t: &TestTransmitter, jwks_uri: &str, extra: &str) -> String {
    format!(
        "[[ssf.transmitters]]\nname = \"idp\"\nissuer = {:?}\naudience = {AUDIENCE:?}\n\
         jwks_uri = {jwks_uri:?}\npush_token_file = \"idp.token\"\njwks_refetch_seconds = 3600\n{extra}\n",
        t.issuer()
    )
}

impl Controller {
    async fn start(store: &str, ssf: &str) -> Controller {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hash.key"), hex::encode(HASH_KEY)).unwrap();
        std::fs::write(dir.path().join("admin.token"), ADMIN).unwrap();
        std::fs::write(dir.path().join("idp.token"), PUSH).unwrap();
        std::fs::write(dir.path().join("poll.token"), TestTransmitter::ACCESS_TOKEN).unwrap();
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let toml = format!(
            "listen = \"{addr}\"\nstore = {store:?}\nhash_key_file = \"hash.key\"\nadmin_token_file = \"admin.token\"\n\
             [[nodes]]\nname = \"a\"\ntoken_sha256 = \"{}\"\n{ssf}",
            hex::encode(vigil_controller::config::token_hash(NODE)),
        );
        let path = dir.path().join("controller.toml");
        std::fs::write(&path, toml).unwrap();
        let config = vigil_controller::Config::load(&path).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            vigil_controller::run(config, async {
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

    /// Pushes `set` as the transmitter does; the status and the body.
    async fn push(&self, set: &str) -> (u16, Value) {
        self.push_as(set, PUSH, "application/secevent+jwt").await
    }

    async fn push_as(&self, set: &str, token: &str, content_type: &str) -> (u16, Value) {
        let r = client()
            .post(self.url("/v1/ssf/push/idp"))
            .bearer_auth(token)
            .header("content-type", content_type)
            .header("accept", "application/json")
            .body(set.to_owned())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn head(&self) -> u64 {
        let r = client()
            .get(self.url("/v1/admin/log"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        v["head"].as_u64().unwrap()
    }

    async fn metrics(&self) -> String {
        client()
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `GET /v1/admin/ssf/streams`.
    async fn streams(&self) -> Value {
        let r = client()
            .get(self.url("/v1/admin/ssf/streams"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        serde_json::from_str(&r.text().await.unwrap()).unwrap()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn sets_counted(text: &str, result: &str) -> f64 {
    metric(
        text,
        &format!("vigil_controller_ssf_sets_total{{result=\"{result}\",transmitter=\"idp\"}}"),
    )
    .unwrap_or(0.0)
}

fn user(name: &str) -> UserId {
    UserId(
        vigil_engine::UserKey::for_name(&vigil_engine::SessionHashKey::from_bytes(HASH_KEY), name)
            .as_u64(),
    )
}

/// Claims of a SET of `t` to us.
fn claims(t: &TestTransmitter, event: &str, sub: Option<Map<String, Value>>) -> Map<String, Value> {
    let mut c = t.set_claims(event, sub);
    c.insert("aud".into(), AUDIENCE.into());
    c
}

fn claims_with(
    t: &TestTransmitter,
    event: &str,
    sub: Map<String, Value>,
    payload: Value,
) -> Map<String, Value> {
    let mut c = t.set_claims_with_payload(event, Some(sub), payload.as_object().unwrap().clone());
    c.insert("aud".into(), AUDIENCE.into());
    c
}

/// The attack: a session cookie stolen from alice keeps working after her
/// identity provider revoked her session — unless the IdP's CAEP
/// `session-revoked` reaches every node. A replay of the same SET (a
/// retry, or an attacker's) is answered 202 and does nothing again.
#[tokio::test]
async fn a_pushed_session_revoked_reaches_every_node_once() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let t = TestTransmitter::new();
        let published = Published::start(&t).await;
        let c = Controller::start(&db.url(), &transmitter_toml(&t, &published.jwks_uri(), "")).await;
        let mut node = Stream::open(c.url("/v1/sync?since=0"), NODE).await;
        let sub = complex(Some(iss_sub(t.issuer(), "alice")), Some(opaque("idp-session-1")));
        let set = t.sign_set(&claims(&t, SESSION_REVOKED, Some(sub)));
        let (status, body) = c.push(&set).await;
        assert_eq!((status, &body), (202, &Value::Null), "{body}");
        let changes = node.next_changes().await;
        assert_eq!(changes.len(), 1);
        assert!(
            matches!(changes[0], Change::UserRevoked { user: u, .. } if u == user("alice")),
            "{changes:?}"
        );
        let head = c.head().await;
        assert_eq!(head, 1);
        // Delivered again: accepted, not acted on.
        assert_eq!(c.push(&set).await.0, 202);
        assert_eq!(c.head().await, head);
        let m = c.metrics().await;
        assert_eq!(sets_counted(&m, "accepted"), 1.0);
        assert_eq!(sets_counted(&m, "duplicate"), 1.0);
        // RISC account-disabled with an email subject: another user.
        let set = t.sign_set(&claims(&t, ACCOUNT_DISABLED, Some(email("bob@example.com"))));
        assert_eq!(c.push(&set).await.0, 202);
        let changes = node.next_changes().await;
        assert!(
            matches!(changes[0], Change::UserRevoked { user: u, .. } if u == user("bob@example.com")),
            "{changes:?}"
        );
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// Every SET a receiver must refuse, each answered `400` with its RFC 8935
/// code — the independent transmitter's negative vectors (a weak key, a
/// wrong `typ`, an unsigned SET) and Vigil's own — and none changes the
/// fleet.
#[tokio::test]
async fn every_bad_set_is_refused_with_its_code_and_changes_nothing() {
    let db = Db::new(false).await;
    let t = TestTransmitter::new();
    let weak = TestSigningKey::generate(1024, "weak");
    t.publish_jwks(&[t.key(), &weak]);
    let published = Published::start(&t).await;
    let c = Controller::start(&db.url(), &transmitter_toml(&t, &published.jwks_uri(), "")).await;
    let alice = || Some(iss_sub(t.issuer(), "alice"));
    let good = || claims(&t, SESSION_REVOKED, alice());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let with = |k: &str, v: Value| {
        let mut c = good();
        c.insert(k.into(), v);
        t.sign_set(&c)
    };
    let without = |k: &str| {
        let mut c = good();
        c.remove(k);
        t.sign_set(&c)
    };
    let mut two_events = good();
    two_events["events"]
        .as_object_mut()
        .unwrap()
        .insert(ACCOUNT_DISABLED.into(), json!({}));
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "weak key",
            TestTransmitter::sign(&weak, Some("secevent+jwt"), &good()),
            "invalid_key",
        ),
        (
            "wrong typ",
            TestTransmitter::sign(t.key(), Some("JWT"), &good()),
            "invalid_request",
        ),
        (
            "no typ",
            TestTransmitter::sign(t.key(), None, &good()),
            "invalid_request",
        ),
        (
            "unsigned",
            TestTransmitter::unsigned(&good()),
            "invalid_request",
        ),
        (
            "unsigned, typed",
            {
                use base64::Engine;
                let b64 = |v: Value| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
                };
                format!(
                    "{}.{}.",
                    b64(json!({"alg": "none", "typ": "secevent+jwt"})),
                    b64(Value::Object(good()))
                )
            },
            "authentication_failed",
        ),
        (
            "RS384",
            TestTransmitter::sign_with(
                t.key(),
                jsonwebtoken::Algorithm::RS384,
                Some("secevent+jwt"),
                &good(),
            ),
            "invalid_key",
        ),
        (
            "unknown kid",
            TestTransmitter::sign(&t.key().with_key_id("ghost"), Some("secevent+jwt"), &good()),
            "invalid_key",
        ),
        (
            "another key under our kid",
            TestTransmitter::sign(&weak.with_key_id("test-key"), Some("secevent+jwt"), &good()),
            "authentication_failed",
        ),
        (
            "wrong iss",
            with("iss", json!("https://evil.example")),
            "invalid_issuer",
        ),
        (
            "wrong aud",
            with("aud", json!("https://other.example")),
            "invalid_audience",
        ),
        (
            "aud list without ours",
            with("aud", json!(["a", "b"])),
            "invalid_audience",
        ),
        (
            "expired iat",
            with("iat", json!(now - 86_400 - 120)),
            "invalid_request",
        ),
        (
            "future iat",
            with("iat", json!(now + 600)),
            "invalid_request",
        ),
        ("no jti", without("jti"), "invalid_request"),
        ("two events", t.sign_set(&two_events), "invalid_request"),
        ("no events", without("events"), "invalid_request"),
        ("no sub_id", without("sub_id"), "invalid_request"),
        (
            "phone subject",
            t.sign_set(&claims(
                &t,
                SESSION_REVOKED,
                Some(easyssf_test::subjects::phone_number("+15555550100")),
            )),
            "invalid_request",
        ),
        (
            "iss_sub of another issuer",
            t.sign_set(&claims(
                &t,
                SESSION_REVOKED,
                Some(iss_sub("https://evil.example", "alice")),
            )),
            "invalid_request",
        ),
        ("garbage", "not.a.set".to_owned(), "invalid_request"),
        ("five parts", "a.b.c.d.e".to_owned(), "invalid_request"),
    ];
    for (what, set, err) in &cases {
        let (status, body) = c.push(set).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(body["err"], *err, "{what}: {body}");
        assert!(
            body["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}"
        );
    }
    let (status, body) = c
        .push_as(&t.sign_set(&good()), PUSH, "application/json")
        .await;
    assert_eq!(
        (status, body["err"].as_str()),
        (400, Some("invalid_request"))
    );
    assert_eq!(c.head().await, 0, "no refused SET changed anything");
    let m = c.metrics().await;
    assert_eq!(sets_counted(&m, "invalid_key"), 3.0);
    assert_eq!(sets_counted(&m, "accepted"), 0.0);
    // A refused SET's jti was not kept: the same SET, fixed, is taken.
    assert_eq!(c.push(&t.sign_set(&good())).await.0, 202);
    c.stop().await;
    db.drop_db().await;
}

/// A transmitter is authenticated before the receiver reads a byte of
/// what it sends: a caller without the bearer who announces a large body
/// and sends none is answered 401 at once, as is one with another
/// transmitter's or a node's token; a body over the bound is refused.
#[tokio::test]
async fn the_bearer_is_checked_before_the_body_is_read() {
    let db = Db::new(false).await;
    let t = TestTransmitter::new();
    let published = Published::start(&t).await;
    let c = Controller::start(&db.url(), &transmitter_toml(&t, &published.jwks_uri(), "")).await;
    for auth in ["", "Authorization: Bearer node-a-token-0123456789\r\n"] {
        let mut socket = tokio::net::TcpStream::connect(c.addr).await.unwrap();
        socket
            .write_all(
                format!(
                    "POST /v1/ssf/push/idp HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/secevent+jwt\r\nContent-Length: 60000\r\n\r\neyJ"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let mut answer = vec![0; 1024];
        let n = tokio::time::timeout(DEADLINE, socket.read(&mut answer))
            .await
            .expect("answered without the body")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        assert!(answer.contains("authentication_failed"), "{answer}");
    }
    let set = t.sign_set(&claims(
        &t,
        SESSION_REVOKED,
        Some(iss_sub(t.issuer(), "alice")),
    ));
    assert_eq!(
        c.push_as(&set, "wrong-token-0123456789", "application/secevent+jwt")
            .await
            .0,
        401
    );
    let r = client()
        .post(c.url("/v1/ssf/push/nobody"))
        .bearer_auth(PUSH)
        .body(set.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "an unknown transmitter is not told apart");
    let (status, body) = c.push(&"a".repeat(64 * 1024 + 1)).await;
    assert_eq!(
        (status, body["err"].as_str()),
        (413, Some("invalid_request"))
    );
    assert_eq!(c.head().await, 0);
    let m = c.metrics().await;
    assert_eq!(sets_counted(&m, "unauthorized"), 3.0);
    assert_eq!(sets_counted(&m, "too_large"), 1.0);
    assert_eq!(
        metric(
            &m,
            "vigil_controller_ssf_sets_total{result=\"unauthorized\",transmitter=\"-\"}"
        ),
        Some(1.0)
    );
    c.stop().await;
    db.drop_db().await;
}

/// The transmitter rotates its key: the first SET under the new `kid`
/// fetches the JWK Set again and is taken; a made-up `kid` after that is
/// refused without another fetch (one refetch per `jwks_refetch_seconds`),
/// so a flood of them cannot make the receiver hammer the transmitter.
#[tokio::test]
async fn a_rotated_key_is_fetched_once_and_made_up_kids_are_not() {
    let db = Db::new(false).await;
    let t = TestTransmitter::new();
    let published = Published::start(&t).await;
    let c = Controller::start(&db.url(), &transmitter_toml(&t, &published.jwks_uri(), "")).await;
    let sub = || Some(email("carol@example.com"));
    let before = t.requests();
    let mut v = claims(&t, VERIFICATION, None);
    v["events"][VERIFICATION] = json!({"state": "s-1"});
    assert_eq!(c.push(&t.sign_set(&v)).await.0, 202);
    assert_eq!(t.requests(), before + 1, "the first SET fetched the keys");
    let rotated = t.key().with_key_id("rotated");
    t.publish_jwks(&[&rotated]);
    let set = TestTransmitter::sign(
        &rotated,
        Some("secevent+jwt"),
        &claims(&t, ACCOUNT_DISABLED, sub()),
    );
    assert_eq!(c.push(&set).await.0, 202);
    assert_eq!(
        t.requests(),
        before + 2,
        "the new kid fetched the keys again"
    );
    for _ in 0..5 {
        let ghost = TestTransmitter::sign(
            &t.key().with_key_id("ghost"),
            Some("secevent+jwt"),
            &claims(&t, ACCOUNT_DISABLED, sub()),
        );
        assert_eq!(c.push(&ghost).await.1["err"], "invalid_key");
    }
    assert_eq!(t.requests(), before + 2, "made-up kids fetched nothing");
    // The verification was recorded as the stream's last.
    let store = Store::open(&db.url()).await.unwrap();
    let stream = store.ssf_stream("idp").await.unwrap().unwrap();
    assert_eq!(stream.verification.unwrap().1, "s-1");
    c.stop().await;
    db.drop_db().await;
}

/// Risk signals set the user's entity risk on every node, as the admin
/// API's `users/risk` does: a high risk level or a non-compliant device
/// raises it, a low level clears it; a medium level, a compliant device
/// and events Vigil does not act on are accepted and counted as ignored.
#[tokio::test]
async fn risk_signals_raise_and_clear_the_users_risk() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let t = TestTransmitter::new();
        let published = Published::start(&t).await;
        let c = Controller::start(
            &db.url(),
            &transmitter_toml(&t, &published.jwks_uri(), "risk_points = 55"),
        )
        .await;
        let mut node = Stream::open(c.url("/v1/sync?since=0"), NODE).await;
        let dave = || email("dave@example.com");
        let push = async |event: &str, payload: Value| {
            let (status, body) = c
                .push(&t.sign_set(&claims_with(&t, event, dave(), payload)))
                .await;
            assert_eq!(status, 202, "{event}: {body}");
        };
        push(RISK_LEVEL, json!({"principal": "USER", "current_level": "HIGH"})).await;
        let changes = node.next_changes().await;
        assert!(
            matches!(changes[0], Change::UserRisk { user: u, points: 55, .. } if u == user("dave@example.com")),
            "{changes:?}"
        );
        push(RISK_LEVEL, json!({"principal": "USER", "current_level": "LOW"})).await;
        let changes = node.next_changes().await;
        assert!(
            matches!(changes[0], Change::UserRisk { points: 0, .. }),
            "{changes:?}"
        );
        push(COMPLIANCE, json!({"current_status": "not-compliant", "previous_status": "compliant"}))
            .await;
        let changes = node.next_changes().await;
        assert!(
            matches!(changes[0], Change::UserRisk { points: 55, .. }),
            "{changes:?}"
        );
        let head = c.head().await;
        push(RISK_LEVEL, json!({"principal": "USER", "current_level": "MEDIUM"})).await;
        push(COMPLIANCE, json!({"current_status": "compliant"})).await;
        push(
            "https://schemas.openid.net/secevent/caep/event-type/session-established",
            json!({}),
        )
        .await;
        push("https://vendor.example/event/unknown", json!({})).await;
        assert_eq!(c.head().await, head, "nothing more was done");
        let m = c.metrics().await;
        assert_eq!(sets_counted(&m, "accepted"), 3.0);
        assert_eq!(sets_counted(&m, "ignored"), 4.0);
        // A payload that does not say which way is refused.
        let (status, body) = c
            .push(&t.sign_set(&claims_with(&t, RISK_LEVEL, dave(), json!({"principal": "USER"}))))
            .await;
        assert_eq!((status, body["err"].as_str()), (400, Some("invalid_request")));
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// A changed credential, changed token claims or a lowered assurance level
/// ask every session of the user to step up at its next request (change
/// `user_step_up`); a raised assurance level asks nothing; a level change
/// that does not say what it is about is refused; a replay does nothing
/// again.
#[tokio::test]
async fn credential_and_lower_assurance_signals_step_the_user_up() {
    both(async |postgres| {
        const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
        let db = Db::new(postgres).await;
        let t = TestTransmitter::new();
        let published = Published::start(&t).await;
        let c = Controller::start(&db.url(), &transmitter_toml(&t, &published.jwks_uri(), "")).await;
        let mut node = Stream::open(c.url("/v1/sync?since=0"), NODE).await;
        let erin = || email("erin@example.com");
        let sign = |event: &str, payload: Value| {
            t.sign_set(&claims_with(&t, &format!("{CAEP}{event}"), erin(), payload))
        };
        let stepped_up = async |node: &mut Stream| {
            let changes = node.next_changes().await;
            assert!(
                matches!(changes[..], [Change::UserStepUp { user: u, .. }] if u == user("erin@example.com")),
                "{changes:?}"
            );
        };
        let changed = sign(
            "credential-change",
            json!({"credential_type": "password", "change_type": "update"}),
        );
        assert_eq!(c.push(&changed).await.0, 202);
        stepped_up(&mut node).await;
        assert_eq!(
            c.push(&sign("token-claims-change", json!({"claims": {"role": "ro"}}))).await.0,
            202
        );
        stepped_up(&mut node).await;
        let lower = json!({"namespace": "nist-aal", "previous_level": "nist-aal2", "current_level": "nist-aal1"});
        assert_eq!(c.push(&sign("assurance-level-change", lower)).await.0, 202);
        stepped_up(&mut node).await;

        let head = c.head().await;
        // The same SET again: taken before, nothing done again.
        assert_eq!(c.push(&changed).await.0, 202);
        for higher in [
            json!({"namespace": "nist-aal", "previous_level": "nist-aal1", "current_level": "nist-aal2"}),
            json!({"namespace": "custom", "current_level": "bronze", "change_direction": "increase"}),
        ] {
            assert_eq!(c.push(&sign("assurance-level-change", higher)).await.0, 202);
        }
        for bad in [
            json!({"current_level": "nist-aal1"}),
            json!({"namespace": "nist-aal", "current_level": "nist-aal1", "change_direction": "down"}),
        ] {
            let (status, body) = c.push(&sign("assurance-level-change", bad)).await;
            assert_eq!((status, body["err"].as_str()), (400, Some("invalid_request")));
        }
        assert_eq!(c.head().await, head, "nothing more was done");
        let m = c.metrics().await;
        assert_eq!(sets_counted(&m, "accepted"), 3.0);
        assert_eq!(sets_counted(&m, "duplicate"), 1.0);
        assert_eq!(sets_counted(&m, "ignored"), 2.0);
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// The record of `cookie` bound to `user`, after one request, as a node
/// under the controller's key makes it.
fn bound_record(cookie: &str, user: &str, at: u64) -> vigil_fleet::Record {
    let engine = vigil_engine::Engine::new(
        vigil_engine::EngineConfig::default(),
        vigil_engine::SessionHashKey::from_bytes(HASH_KEY),
    );
    let key = engine.key_for_credential(cookie.as_bytes()).unwrap();
    engine.bind_user(key, user, at);
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("cookie", format!("session={cookie}").parse().unwrap());
    headers.insert("user-agent", "Mozilla/5.0 Firefox/133.0".parse().unwrap());
    let view = vigil_engine::RequestView {
        peer: "81.2.69.10".parse().unwrap(),
        headers: &headers,
        now_secs: at,
        tls: Default::default(),
        facts: Default::default(),
    };
    engine
        .evaluate(&view, &vigil_engine::Policy::default())
        .unwrap();
    vigil_fleet::Record(engine.scorer().export(&key).unwrap().to_vec())
}

fn session_of(record: &vigil_fleet::Record) -> vigil_fleet::SessionId {
    let mut key = [0u8; 16];
    key.copy_from_slice(&record.0[..16]);
    vigil_fleet::SessionId(key)
}

/// The provider session of `sid` at `t`, as a node keys it.
fn idp_session(t: &TestTransmitter, sid: &str) -> vigil_fleet::IdpSessionId {
    vigil_fleet::IdpSessionId(
        vigil_engine::IdpSessionKey::for_sid(
            &vigil_engine::SessionHashKey::from_bytes(HASH_KEY),
            t.issuer(),
            sid,
        )
        .unwrap()
        .0,
    )
}

/// The provider ends one of its sessions of alice: only the Vigil session
/// that signed in under it at a step-up ends (a node told the controller
/// which), not her other one. An unknown provider session ends all of
/// hers, as before; a node cannot map a provider session to a session
/// the controller holds for someone else.
#[tokio::test]
async fn a_revoked_idp_session_ends_the_vigil_sessions_learnt_for_it_alone() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let t = TestTransmitter::new();
        let published = Published::start(&t).await;
        let c = Controller::start(&db.url(), &transmitter_toml(&t, &published.jwks_uri(), "")).await;
        let mut node = Stream::open(c.url("/v1/sync?since=0"), NODE).await;
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - 5;
        let laptop = bound_record("s-laptop", "alice", at);
        let phone = bound_record("s-phone", "alice", at);
        let bobs = bound_record("s-bob", "bob", at);
        let event = |id: &str, kind: vigil_fleet::NodeEventKind| vigil_fleet::NodeEvent {
            id: id.to_owned(),
            kind,
        };
        let baseline = |record: &vigil_fleet::Record| vigil_fleet::NodeEventKind::SessionBaseline {
            record: record.clone(),
            confirmed: true,
            false_positive: false,
            disputed: None,
        };
        let learnt = |record: &vigil_fleet::Record, user: &str, sid: &str| {
            vigil_fleet::NodeEventKind::IdpSession {
                session: session_of(record),
                user: user_of(user),
                idp_session: idp_session(&t, sid),
                at,
            }
        };
        let batch = vigil_fleet::EventBatch {
            v: vigil_fleet::VERSION,
            events: vec![
                event("1", baseline(&laptop)),
                event("2", baseline(&phone)),
                event("3", baseline(&bobs)),
                event("4", learnt(&laptop, "alice", "idp-sid-1")),
                // A node naming bob's session as alice's: refused.
                event("5", learnt(&bobs, "alice", "idp-sid-1")),
            ],
        };
        let r = client()
            .post(c.url("/v1/events"))
            .bearer_auth(NODE)
            .body(serde_json::to_string(&batch).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let ack: vigil_fleet::EventAck = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!((ack.accepted, ack.refused), (5, 1));
        // The three baselines (and, for confirmed ones, the users'
        // detection counts cleared).
        let changes = node.next_changes().await;
        assert_eq!(
            changes
                .iter()
                .filter(|c| matches!(c, Change::SessionBaseline { .. }))
                .count(),
            3,
            "{changes:?}"
        );

        let revoked = |sid: &str| {
            let sub = complex(Some(iss_sub(t.issuer(), "alice")), Some(opaque(sid)));
            t.sign_set(&claims(&t, SESSION_REVOKED, Some(sub)))
        };
        assert_eq!(c.push(&revoked("idp-sid-1")).await.0, 202);
        let changes = node.next_changes().await;
        assert!(
            matches!(changes[..], [Change::SessionRevoked { session, vouched: true, .. }] if session == session_of(&laptop)),
            "{changes:?}"
        );
        // Its mapping is spent; another provider session is unknown: every
        // session of alice ends.
        assert_eq!(c.push(&revoked("idp-sid-2")).await.0, 202);
        let changes = node.next_changes().await;
        assert!(
            matches!(changes[0], Change::UserRevoked { user, .. } if user == user_of("alice")),
            "{changes:?}"
        );
        assert!(
            changes.iter().any(|c| matches!(c, Change::SessionRevoked { session, .. } if *session == session_of(&phone))),
            "{changes:?}"
        );
        assert!(
            !changes.iter().any(|c| matches!(c, Change::SessionRevoked { session, .. } if *session == session_of(&bobs))),
            "{changes:?}"
        );
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

fn user_of(name: &str) -> UserId {
    user(name)
}

const BCL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Claims of a valid logout token of `op` for `sub` and `sid`.
fn logout_claims(op: &TestTransmitter, sub: Option<&str>, sid: Option<&str>) -> Map<String, Value> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut c = Map::new();
    c.insert("iss".into(), op.issuer().into());
    c.insert("aud".into(), json!(["vigil-rp", "another-rp"]));
    c.insert("iat".into(), now.into());
    c.insert("exp".into(), (now + 120).into());
    c.insert("jti".into(), format!("jti-{:016x}", rand_u64()).into());
    c.insert("events".into(), json!({ BCL_EVENT: {} }));
    if let Some(sub) = sub {
        c.insert("sub".into(), sub.into());
    }
    if let Some(sid) = sid {
        c.insert("sid".into(), sid.into());
    }
    c
}

/// Every bad logout token is refused `400 invalid_request` and changes
/// nothing, written as the attacks: a replayed token, another client's,
/// one with a nonce (an ID token passed off as a logout token), the wrong
/// event, unsigned, signed with `alg: none`, by an unknown key, another
/// issuer, too old, expired, the wrong `typ`, neither `sub` nor `sid`; a
/// form with the token twice; and a flood is cut by the provider's
/// bucket. A valid one naming alice ends her sessions, with `200` and
/// `Cache-Control: no-store`.
#[tokio::test]
async fn back_channel_logout_tokens_are_checked_as_the_spec_says() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let op = TestTransmitter::new();
        let published = Published::start(&op).await;
        let bcl = format!(
            "[[backchannel_logout.providers]]\nname = \"op\"\nissuer = {:?}\nclient_id = \"vigil-rp\"\n\
             jwks_uri = {:?}\nper_minute = 30\n",
            op.issuer(),
            published.jwks_uri(),
        );
        let c = Controller::start(&db.url(), &bcl).await;
        let mut node = Stream::open(c.url("/v1/sync?since=0"), NODE).await;
        let post = async |body: String| {
            let r = client()
                .post(c.url("/v1/oidc/backchannel-logout/op"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let cache = r
                .headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap().to_owned());
            let text = r.text().await.unwrap();
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            (status, body, cache)
        };
        let form = |token: &str| format!("logout_token={token}");
        let signed = |claims: &Map<String, Value>| {
            TestTransmitter::sign(op.key(), Some("logout+jwt"), claims)
        };

        let good = logout_claims(&op, Some("alice"), None);
        let (status, _, cache) = post(form(&signed(&good))).await;
        assert_eq!(status, 200);
        assert_eq!(cache.as_deref(), Some("no-store"));
        let changes = node.next_changes().await;
        assert!(
            matches!(changes[0], Change::UserRevoked { user: u, .. } if u == user("alice")),
            "{changes:?}"
        );
        let head = c.head().await;

        let other_key = TestSigningKey::generate(2048, op.key().key_id());
        let mut cases: Vec<(&str, String)> = vec![("replayed", form(&signed(&good)))];
        let mut with = |what: &'static str, edit: &dyn Fn(&mut Map<String, Value>)| {
            let mut claims = logout_claims(&op, Some("bob"), Some("sid-1"));
            edit(&mut claims);
            cases.push((what, form(&signed(&claims))));
        };
        with("wrong aud", &|c| {
            c.insert("aud".into(), "another-rp".into());
        });
        with("nonce", &|c| {
            c.insert("nonce".into(), "n-1".into());
        });
        with("wrong event", &|c| {
            c.insert(
                "events".into(),
                json!({"http://schemas.openid.net/event/other": {}}),
            );
        });
        with("event not an object", &|c| {
            c.insert("events".into(), json!({ BCL_EVENT: "yes" }));
        });
        with("another issuer", &|c| {
            c.insert("iss".into(), "https://evil.example".into());
        });
        with("too old", &|c| {
            let old = c["iat"].as_u64().unwrap() - 3600;
            c.insert("iat".into(), old.into());
            c.insert("exp".into(), (old + 60).into());
        });
        with("expired", &|c| {
            let iat = c["iat"].as_u64().unwrap();
            c.insert("exp".into(), (iat - 600).into());
        });
        with("no jti", &|c| {
            c.remove("jti");
        });
        with("neither sub nor sid", &|c| {
            c.remove("sub");
            c.remove("sid");
        });
        let claims = logout_claims(&op, Some("bob"), None);
        cases.push(("unsigned", form(&TestTransmitter::unsigned(&claims))));
        cases.push((
            "wrong typ",
            form(&TestTransmitter::sign(op.key(), Some("JWT"), &claims)),
        ));
        cases.push((
            "secevent typ",
            form(&op.sign_set(&claims)),
        ));
        cases.push((
            "another key under the kid",
            form(&TestTransmitter::sign(&other_key, Some("logout+jwt"), &claims)),
        ));
        let token = signed(&claims);
        cases.push(("twice", format!("logout_token={token}&logout_token={token}")));
        cases.push(("none", "other=1".to_owned()));
        for (what, body) in &cases {
            let (status, body, cache) = post(body.clone()).await;
            assert_eq!(status, 400, "{what}: {body}");
            assert_eq!(body["error"], "invalid_request", "{what}");
            assert_eq!(cache.as_deref(), Some("no-store"), "{what}");
        }
        assert_eq!(c.head().await, head, "nothing was done");
        // Not a form: refused before anything is read.
        let r = client()
            .post(c.url("/v1/oidc/backchannel-logout/op"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let r = client()
            .post(c.url("/v1/oidc/backchannel-logout/nobody"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&token))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        // Junk from anyone (unsigned tokens) is answered on its merits and
        // spends nothing of the provider's 30 a minute: the next token
        // the provider signed is still judged (a replay: 400), not 429.
        let replay = form(&signed(&good));
        let junk = form(&TestTransmitter::unsigned(&good));
        for _ in 0..40 {
            assert_eq!(post(junk.clone()).await.0, 400);
        }
        assert_eq!(post(replay.clone()).await.0, 400);
        // A flood of its own tokens: the bucket of 30 a minute is spent.
        let mut limited = 0;
        for _ in 0..40 {
            if post(replay.clone()).await.0 == 429 {
                limited += 1;
            }
        }
        assert!(limited >= 10, "{limited}");
        assert_eq!(c.head().await, head);
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// The back-channel logout receiver's configuration problems are reported
/// together, each with its key.
#[test]
fn a_bad_backchannel_logout_config_names_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hash.key"), "11".repeat(32)).unwrap();
    std::fs::write(dir.path().join("admin.token"), ADMIN).unwrap();
    let path = dir.path().join("controller.toml");
    std::fs::write(
        &path,
        "hash_key_file = \"hash.key\"\nadmin_token_file = \"admin.token\"\n\
         [[backchannel_logout.providers]]\nname = \"op one\"\nissuer = \"https://op.example\"\nclient_id = \"\"\n\
         jwks_uri = \"http://op.example/jwks\"\nalgorithms = [\"HS256\"]\nmax_age_seconds = 1\nper_minute = 0\n\
         [[backchannel_logout.providers]]\nname = \"two\"\nissuer = \"https://op.example\"\nclient_id = \"v\"\n",
    )
    .unwrap();
    let e = vigil_controller::Config::load(&path).err().unwrap();
    let want = [
        "backchannel_logout.providers[0].name: \"op one\"",
        "backchannel_logout.providers[0].client_id: 1 to 1024 characters",
        "backchannel_logout.providers[0].jwks_uri: \"http://op.example/jwks\"",
        "backchannel_logout.providers[0].algorithms: \"HS256\"",
        "backchannel_logout.providers[0].max_age_seconds: 1 is out of range",
        "backchannel_logout.providers[0].per_minute: 0 is out of range",
        "backchannel_logout.providers[1].issuer: \"https://op.example\" is another provider's",
        "backchannel_logout.providers[1]: give exactly one of jwks_uri and jwks_file",
    ];
    assert_eq!(e.problems.len(), want.len(), "{:?}", e.problems);
    for (problem, want) in e.problems.iter().zip(want) {
        assert!(problem.starts_with(want), "{problem:?} is not {want:?}");
    }
}

/// The receiver's configuration problems are reported together, each with
/// its key, like the rest of the file.
#[test]
fn a_bad_transmitter_config_names_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hash.key"), "11".repeat(32)).unwrap();
    std::fs::write(dir.path().join("admin.token"), ADMIN).unwrap();
    std::fs::write(dir.path().join("short.token"), "short").unwrap();
    let path = dir.path().join("controller.toml");
    std::fs::write(
        &path,
        "hash_key_file = \"hash.key\"\nadmin_token_file = \"admin.token\"\n\
         [[ssf.transmitters]]\nname = \"idp\"\nissuer = \"https://idp.example\"\naudience = \"v\"\n\
         jwks_uri = \"http://idp.example/jwks\"\npush_token_file = \"short.token\"\n\
         algorithms = [\"HS256\"]\nsubjects = [\"phone\"]\nmax_age_seconds = 1\n\
         [ssf.transmitters.actions]\nsession-revoked = \"nothing\"\nfuture-event = \"ignore\"\n",
    )
    .unwrap();
    let e = vigil_controller::Config::load(&path).err().unwrap();
    let p = |i: usize| e.problems[i].as_str();
    assert_eq!(e.problems.len(), 8, "{:?}", e.problems);
    assert!(p(0).starts_with("ssf.transmitters[0].jwks_uri: \"http://idp.example/jwks\""));
    assert_eq!(
        p(1),
        "ssf.transmitters[0].algorithms: \"HS256\": expected \"RS256\" or \"ES256\""
    );
    assert_eq!(
        p(2),
        "ssf.transmitters[0].max_age_seconds: 1 is out of range; expected 60 to 2592000"
    );
    assert!(
        p(3).starts_with(
            "ssf.transmitters[0].push_token_file: short.token: a token of at least 16"
        )
    );
    assert!(p(4).starts_with("ssf.transmitters[0].subjects: \"phone\""));
    assert_eq!(p(5), "ssf.transmitters[0].subjects: at least one");
    assert!(p(6).starts_with("ssf.transmitters[0].actions.future-event: not an event"));
    assert!(p(7).starts_with("ssf.transmitters[0].actions.session-revoked: \"nothing\""));
}

/// A transmitter configured for ES256 (a P-256 key in a static JWK Set):
/// its ES256 SETs are taken, and an RS256 one is refused even when signed
/// by a key it also publishes — the algorithm is the operator's choice,
/// not the SET's.
#[tokio::test]
async fn an_es256_transmitter_is_taken_and_rs256_from_it_is_not() {
    use base64::Engine;
    let db = Db::new(false).await;
    let t = TestTransmitter::new();
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = pair.public_key_raw();
    assert_eq!(point.len(), 65);
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig",
         "x": b64(&point[1..33]), "y": b64(&point[33..65])},
        t.key().public_jwk(),
    ]});
    let c = {
        let toml = format!(
            "[[ssf.transmitters]]\nname = \"idp\"\nissuer = {:?}\naudience = {AUDIENCE:?}\n\
             jwks_file = \"jwks.json\"\npush_token_file = \"idp.token\"\nalgorithms = [\"ES256\"]\n",
            t.issuer()
        );
        // The JWK Set beside the config (the controller's directory is
        // made by `start`): written through an absolute path instead.
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), jwks.to_string()).unwrap();
        let toml = toml.replace(
            "\"jwks.json\"",
            &format!("{:?}", file.path().display().to_string()),
        );
        let c = Controller::start(&db.url(), &toml).await;
        drop(file);
        c
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.typ = Some("secevent+jwt".into());
    header.kid = Some("ec-1".into());
    let set = jsonwebtoken::encode(
        &header,
        &claims(&t, SESSION_REVOKED, Some(email("erin@example.com"))),
        &jsonwebtoken::EncodingKey::from_ec_der(&pair.serialize_der()),
    )
    .unwrap();
    let (status, body) = c.push(&set).await;
    assert_eq!(status, 202, "{body}");
    let rs256 = t.sign_set(&claims(
        &t,
        SESSION_REVOKED,
        Some(email("erin@example.com")),
    ));
    let (status, body) = c.push(&rs256).await;
    assert_eq!(
        (status, body["err"].as_str()),
        (400, Some("invalid_key")),
        "{body}"
    );
    // An ES256 header over the RSA key's kid: the key does not fit.
    let mut header = header.clone();
    header.kid = Some(t.key().key_id().into());
    let set = jsonwebtoken::encode(
        &header,
        &claims(&t, SESSION_REVOKED, Some(email("erin@example.com"))),
        &jsonwebtoken::EncodingKey::from_ec_der(&pair.serialize_der()),
    )
    .unwrap();
    assert_eq!(c.push(&set).await.1["err"], "invalid_key");
    assert_eq!(c.head().await, 1);
    c.stop().await;
    db.drop_db().await;
}

/// Poll delivery (RFC 8936) against the independent transmitter's poll
/// endpoint: the controller polls with `maxEvents` and
/// `returnImmediately`; a valid SET goes the push path (the node sees the
/// user revoked) and is acknowledged in the next poll's `ack`; each bad
/// SET is reported in `setErrs` with its RFC 8935 code and not
/// acknowledged; the same SET delivered again is acknowledged and does
/// nothing again; a transmitter that fails is polled again after a
/// back-off, and its failure is in the stream's status.
#[tokio::test]
async fn a_polled_transmitter_is_acknowledged_and_told_each_refusal() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let t = TestTransmitter::new();
        let published = Published::start(&t).await;
        let good = t.sign_set(&claims(&t, SESSION_REVOKED, Some(iss_sub(t.issuer(), "alice"))));
        let mut wrong_aud = claims(&t, SESSION_REVOKED, Some(iss_sub(t.issuer(), "bob")));
        wrong_aud.insert("aud".into(), "https://someone-else.test".into());
        let wrong_aud = t.sign_set(&wrong_aud);
        // Carol's SET with another signature: refused, not acted on.
        let forged = {
            let set = t.sign_set(&claims(&t, SESSION_REVOKED, Some(iss_sub(t.issuer(), "carol"))));
            let other = t.sign_set(&claims(&t, SESSION_REVOKED, Some(iss_sub(t.issuer(), "dan"))));
            let (signed, _) = set.rsplit_once('.').unwrap();
            format!("{signed}.{}", other.rsplit_once('.').unwrap().1)
        };
        let jti = |set: &str| {
            TestTransmitter::claims_of(set)["jti"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let extra = format!(
            "delivery = \"poll\"\npoll_url = {:?}\npoll_token_file = \"poll.token\"\npoll_interval_seconds = 1\npoll_max_events = 3\n",
            published.poll_uri()
        );
        let c = Controller::start(&db.url(), &transmitter_toml(&t, &published.jwks_uri(), &extra)).await;
        let mut node = Stream::open(c.url("/v1/sync?since=0"), NODE).await;
        // Queued once the node listens, so that the revocation comes as a
        // change rather than in its snapshot.
        t.queue_set(&good);
        t.queue_set(&wrong_aud);
        t.queue_set_with_jti("not-a-set", "a.b");
        t.queue_set(&forged);
        easyssf_test::eventually(DEADLINE, "every SET answered", || t.queued_set_count() == 0).await;
        assert_eq!(t.acknowledged_sets(), vec![jti(&good)]);
        let mut errors = t.reported_errors();
        errors.sort_by(|a, b| a.0.cmp(&b.0));
        let mut expected = vec![
            (jti(&wrong_aud), "invalid_audience"),
            ("not-a-set".to_owned(), "invalid_request"),
            (jti(&forged), "authentication_failed"),
        ];
        expected.sort();
        assert_eq!(errors.len(), 3, "{errors:?}");
        for ((jti, error), (want_jti, want_err)) in errors.iter().zip(&expected) {
            assert_eq!(jti, want_jti);
            assert_eq!(error["err"], *want_err, "{error}");
            assert!(error["description"].is_string(), "{error}");
            assert_eq!(error.as_object().unwrap().len(), 2, "{error}");
        }
        let request = t.last_poll_request();
        assert_eq!(request["maxEvents"], 3);
        assert_eq!(request["returnImmediately"], true);
        let changes = node.next_changes().await;
        assert!(
            matches!(changes[..], [Change::UserRevoked { user: u, .. }] if u == user("alice")),
            "{changes:?}"
        );
        let head = c.head().await;
        assert_eq!(head, 1);
        // Delivered again (a transmitter that lost the ack): acknowledged
        // again, nothing done again.
        t.queue_set(&good);
        easyssf_test::eventually(DEADLINE, "the replay acknowledged", || {
            t.acknowledged_sets().len() == 2
        })
        .await;
        assert_eq!(c.head().await, head);
        let m = c.metrics().await;
        assert_eq!(sets_counted(&m, "accepted"), 1.0);
        assert_eq!(sets_counted(&m, "duplicate"), 1.0);
        assert_eq!(sets_counted(&m, "invalid_audience"), 1.0);
        // The transmitter fails: the failure is in the stream's status,
        // and the SET queued meanwhile is taken once it is back.
        t.set_available(false);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let status = loop {
            let status = c.streams().await;
            if status["streams"][0]["last_error"]["description"]
                .as_str()
                .is_some_and(|d| d.contains("503"))
            {
                break status;
            }
            assert!(tokio::time::Instant::now() < deadline, "{status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let s = &status["streams"][0];
        assert_eq!(s["name"], "idp");
        assert_eq!(s["delivery"], "poll");
        assert!(s["last_poll"].as_u64().is_some(), "{s}");
        assert!(s["last_set"].as_u64().is_some(), "{s}");
        let later = t.sign_set(&claims(&t, SESSION_REVOKED, Some(email("dave@example.com"))));
        t.queue_set(&later);
        t.set_available(true);
        let changes = node.next_changes().await;
        assert!(
            matches!(changes[..], [Change::UserRevoked { user: u, .. }] if u == user("dave@example.com")),
            "{changes:?}"
        );
        easyssf_test::eventually(DEADLINE, "acknowledged after the outage", || {
            t.acknowledged_sets().contains(&jti(&later))
        })
        .await;
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// One raw request with the headers of a push announcing a large body and
/// sending none; the status line and headers answered.
async fn push_without_body(c: &Controller, token: &str) -> String {
    let mut socket = tokio::net::TcpStream::connect(c.addr).await.unwrap();
    socket
        .write_all(
            format!(
                "POST /v1/ssf/push/idp HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/secevent+jwt\r\nContent-Length: 60000\r\n\r\neyJ"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = vec![0; 2048];
    let n = tokio::time::timeout(DEADLINE, socket.read(&mut answer))
        .await
        .expect("answered without the body")
        .unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

/// A flood at the push endpoint: a transmitter past its burst is answered
/// 429 with Retry-After before its body is read, and the SETs it sent
/// within its allowance were taken; a source past its own burst is
/// answered 429 whoever it claims to be (an unknown name, a wrong token,
/// the right one). The rates are a few per hour: no refill during the
/// test, so every count is exact.
#[tokio::test]
async fn a_flood_is_answered_429_per_transmitter_and_per_source() {
    let db = Db::new(false).await;
    let t = TestTransmitter::new();
    let published = Published::start(&t).await;
    let ssf = format!(
        "[ssf]\nsource_rate_per_second = 0.001\nsource_burst = 12\n{}",
        transmitter_toml(
            &t,
            &published.jwks_uri(),
            "rate_per_second = 0.001\nburst = 5\n"
        )
    );
    let c = Controller::start(&db.url(), &ssf).await;
    // The transmitter's burst: five SETs, concurrently.
    let sets: Vec<String> = (0..8)
        .map(|i| {
            t.sign_set(&claims(
                &t,
                SESSION_REVOKED,
                Some(email(&format!("user{i}@example.com"))),
            ))
        })
        .collect();
    let mut pushes = tokio::task::JoinSet::new();
    for set in sets.clone() {
        let url = c.url("/v1/ssf/push/idp");
        pushes.spawn(async move {
            let r = client()
                .post(url)
                .bearer_auth(PUSH)
                .header("content-type", "application/secevent+jwt")
                .body(set)
                .send()
                .await
                .unwrap();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            (r.status().as_u16(), retry)
        });
    }
    let mut answers: Vec<(u16, Option<String>)> = pushes.join_all().await;
    answers.sort();
    assert_eq!(answers[..5], vec![(202, None); 5][..], "{answers:?}");
    for (status, retry) in &answers[5..] {
        assert_eq!(*status, 429, "{answers:?}");
        let secs: u64 = retry.as_deref().unwrap().parse().unwrap();
        assert!((1..=3600).contains(&secs), "{retry:?}");
    }
    assert_eq!(c.head().await, 5, "the five taken were acted on");
    // Past its burst, a push is refused before its body is read.
    let answer = push_without_body(&c, PUSH).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after:"),
        "{answer}"
    );
    // 9 of the source's 12 spent; three more, then 429 whatever it sends.
    for _ in 0..3 {
        let answer = push_without_body(&c, "wrong-token-0123456789").await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    for token in ["wrong-token-0123456789", PUSH] {
        let answer = push_without_body(&c, token).await;
        assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    }
    let r = client()
        .post(c.url("/v1/ssf/push/nobody"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let m = c.metrics().await;
    assert_eq!(sets_counted(&m, "accepted"), 5.0);
    assert_eq!(sets_counted(&m, "rate_limited"), 4.0);
    assert_eq!(
        metric(
            &m,
            "vigil_controller_ssf_sets_total{result=\"rate_limited\",transmitter=\"-\"}"
        ),
        Some(3.0)
    );
    c.stop().await;
    db.drop_db().await;
}

const GTR_TOKEN: &str = "gtr-static-token-0123456789";
const GTR_AUDIENCE: &str = "https://vigil.test/v1/global-token-revocation";

/// `POST /v1/global-token-revocation` as a peer does; the status and the
/// body.
async fn gtr(c: &Controller, auth: Option<&str>, content_type: &str, body: &str) -> (u16, Value) {
    let mut r = client()
        .post(c.url("/v1/global-token-revocation"))
        .header("content-type", content_type)
        .body(body.to_owned());
    if let Some(a) = auth {
        r = r.bearer_auth(a);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A JWT bearer of the transmitter's issuer, signed by the independent
/// easyssf-test crate, with `claims` over the defaults.
fn gtr_jwt(t: &TestTransmitter, key: &TestSigningKey, claims: Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut c = json!({
        "iss": t.issuer(),
        "aud": GTR_AUDIENCE,
        "iat": now,
        "exp": now + 120,
        "jti": format!("{:016x}", rand_u64()),
    })
    .as_object()
    .unwrap()
    .clone();
    for (k, v) in claims.as_object().unwrap() {
        if v.is_null() {
            c.remove(k);
        } else {
            c.insert(k.clone(), v.clone());
        }
    }
    TestTransmitter::sign(key, Some("JWT"), &c)
}

/// Global token revocation inbound, as an IdP's Universal Logout calls
/// it: a static bearer and a signed JWT bearer each end every session of
/// the user on the node (204); every bad call gets its exact status —
/// no bearer, a wrong one, a JWT of another key, audience or issuer, an
/// expired one (401); a malformed body (400); a subject format the peer may
/// not use, an iss_sub of another issuer (403); a format Vigil does not
/// support (422) — and changes nothing. On SQLite and PostgreSQL.
#[tokio::test]
async fn global_token_revocation_ends_the_users_sessions_and_refuses_the_rest() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let t = TestTransmitter::new();
        let published = Published::start(&t).await;
        let toml = format!(
            "[[global_token_revocation.peers]]\nname = \"tool\"\ntoken_sha256 = \"{}\"\nsubjects = [\"email\"]\n\
             [[global_token_revocation.peers]]\nname = \"idp\"\nissuer = {:?}\naudience = {GTR_AUDIENCE:?}\n\
             jwks_uri = {:?}\nsubjects = [\"iss_sub\", \"email\"]\n\
             [[global_token_revocation.peers]]\nname = \"down\"\nissuer = \"https://down.example\"\n\
             audience = {GTR_AUDIENCE:?}\njwks_uri = \"http://127.0.0.1:1/jwks\"\n",
            hex::encode(vigil_controller::config::token_hash(GTR_TOKEN)),
            t.issuer(),
            published.jwks_uri(),
        );
        let c = Controller::start(&db.url(), &toml).await;
        let mut node = Stream::open(c.url("/v1/sync?since=0"), NODE).await;
        let json_type = "application/json";
        let body = |sub: Value| json!({ "sub_id": sub }).to_string();
        let alice = body(json!({"format": "email", "email": "alice@example.com"}));
        // The static bearer.
        assert_eq!(gtr(&c, Some(GTR_TOKEN), json_type, &alice).await.0, 204);
        let changes = node.next_changes().await;
        assert!(
            matches!(changes[..], [Change::UserRevoked { user: u, .. }] if u == user("alice@example.com")),
            "{changes:?}"
        );
        // The signed JWT bearer, an iss_sub subject.
        let bob = body(json!({"format": "iss_sub", "iss": t.issuer(), "sub": "bob"}));
        let jwt = gtr_jwt(&t, t.key(), json!({}));
        assert_eq!(gtr(&c, Some(&jwt), json_type, &bob).await.0, 204);
        let changes = node.next_changes().await;
        assert!(
            matches!(changes[..], [Change::UserRevoked { user: u, .. }] if u == user("bob")),
            "{changes:?}"
        );
        let head = c.head().await;
        assert_eq!(head, 2);
        let other_key = TestSigningKey::generate(2048, t.key().key_id());
        let now = vigil_controller::api::now_secs();
        let unauthorized = [
            ("no bearer", None),
            ("a wrong token", Some("wrong-token-0123456789".to_owned())),
            ("another key", Some(gtr_jwt(&t, &other_key, json!({})))),
            ("another audience", Some(gtr_jwt(&t, t.key(), json!({"aud": "https://other.test"})))),
            ("another issuer", Some(gtr_jwt(&t, t.key(), json!({"iss": "https://other.test"})))),
            ("expired", Some(gtr_jwt(&t, t.key(), json!({"iat": now - 200, "exp": now - 100})))),
            ("too old", Some(gtr_jwt(&t, t.key(), json!({"iat": now - 1000, "exp": now + 100})))),
            ("no exp", Some(gtr_jwt(&t, t.key(), json!({"exp": null})))),
            ("unsigned", Some(TestTransmitter::unsigned(
                gtr_jwt(&t, t.key(), json!({})).split('.').nth(1).map(|p| {
                    use base64::Engine;
                    serde_json::from_slice::<Map<String, Value>>(
                        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).unwrap(),
                    )
                    .unwrap()
                }).as_ref().unwrap(),
            ))),
        ];
        for (what, auth) in &unauthorized {
            let (status, b) = gtr(&c, auth.as_deref(), json_type, &alice).await;
            assert_eq!(status, 401, "{what}: {b}");
            assert_eq!(b["error"], "invalid_token", "{what}");
        }
        let cases = [
            ("not JSON", GTR_TOKEN, json_type, "{".to_owned(), 400, "invalid_request"),
            ("no sub_id", GTR_TOKEN, json_type, "{}".to_owned(), 400, "invalid_request"),
            ("not JSON typed", GTR_TOKEN, "text/plain", alice.clone(), 400, "invalid_request"),
            ("an email without email", GTR_TOKEN, json_type, body(json!({"format": "email"})), 400, "invalid_request"),
            ("iss_sub for the email-only peer", GTR_TOKEN, json_type, bob.clone(), 403, "access_denied"),
            ("iss_sub of another issuer", &jwt, json_type, body(json!({"format": "iss_sub", "iss": "https://other.test", "sub": "bob"})), 403, "access_denied"),
            ("opaque, not allowed to the peer", &jwt, json_type, body(json!({"format": "opaque", "id": "x"})), 403, "access_denied"),
            ("a phone number", GTR_TOKEN, json_type, body(json!({"format": "phone_number", "phone_number": "+15551234567"})), 422, "unsupported_subject"),
            ("a complex subject without user", GTR_TOKEN, json_type, body(json!({"format": "complex", "session": {"format": "opaque", "id": "s"}})), 422, "unsupported_subject"),
        ];
        for (what, token, content_type, b, status, error) in cases {
            let (s, answer) = gtr(&c, Some(token), content_type, &b).await;
            assert_eq!((s, answer["error"].as_str()), (status, Some(error)), "{what}: {answer}");
        }
        // A peer whose keys cannot be fetched: 503, so that it calls again.
        let down = gtr_jwt(&t, t.key(), json!({"iss": "https://down.example"}));
        let (status, answer) = gtr(&c, Some(&down), json_type, &alice).await;
        assert_eq!((status, answer["error"].as_str()), (503, Some("temporarily_unavailable")), "{answer}");
        assert_eq!(c.head().await, head, "nothing refused changed the fleet");
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// Discovery: the transmitter's metadata gives the JWK Set's URL, and a
/// SET verified with those keys is taken; metadata naming another issuer
/// (a document swapped at a compromised or mistaken URL) is refused, so
/// no key of it is used: the push is answered 503 and the refusal is in
/// the stream's status.
#[tokio::test]
async fn discovered_keys_are_used_and_a_foreign_issuers_metadata_is_not() {
    let db = Db::new(false).await;
    let t = TestTransmitter::new();
    let published = Published::start(&t).await;
    let path = "/.well-known/ssf-configuration/realms/test";
    t.publish_document(
        path,
        &json!({"issuer": t.issuer(), "jwks_uri": published.jwks_uri()}).to_string(),
    );
    let metadata = format!("http://{}{path}", published.addr);
    let toml = format!(
        "[[ssf.transmitters]]\nname = \"idp\"\nissuer = {:?}\naudience = {AUDIENCE:?}\n\
         metadata_url = {metadata:?}\npush_token_file = \"idp.token\"\n",
        t.issuer()
    );
    let c = Controller::start(&db.url(), &toml).await;
    let set = t.sign_set(&claims(
        &t,
        SESSION_REVOKED,
        Some(email("erin@example.com")),
    ));
    assert_eq!(c.push(&set).await.0, 202);
    c.stop().await;
    for doc in [
        json!({"issuer": "https://other.example/realms/test", "jwks_uri": published.jwks_uri()}),
        json!({"issuer": t.issuer(), "jwks_uri": "http://keys.example/jwks"}),
    ] {
        t.publish_document(path, &doc.to_string());
        let db = Db::new(false).await;
        let c = Controller::start(&db.url(), &toml).await;
        let (status, body) = c.push(&set).await;
        assert_eq!(
            (status, body["err"].as_str()),
            (503, Some("unavailable")),
            "{doc}"
        );
        let s = c.streams().await;
        assert!(
            s["streams"][0]["last_error"]["description"]
                .as_str()
                .is_some_and(|d| d.contains("keys")),
            "{s}"
        );
        c.stop().await;
    }
    db.drop_db().await;
}

/// Two replicas on one PostgreSQL database poll the same transmitter: each
/// may be handed every SET (the transmitter gives them out until they are
/// acknowledged), and every SET is acted on exactly once — the log holds
/// one revocation per user — and acknowledged.
#[tokio::test]
async fn two_replicas_polling_one_transmitter_act_once() {
    let db = Db::new(true).await;
    let t = TestTransmitter::new();
    let published = Published::start(&t).await;
    let extra = format!(
        "delivery = \"poll\"\npoll_url = {:?}\npoll_token_file = \"poll.token\"\npoll_interval_seconds = 1\npoll_max_events = 50\n",
        published.poll_uri()
    );
    let toml = transmitter_toml(&t, &published.jwks_uri(), &extra);
    let a = Controller::start(&db.url(), &toml).await;
    let b = Controller::start(&db.url(), &toml).await;
    let sets: Vec<String> = (0..40)
        .map(|i| {
            t.sign_set(&claims(
                &t,
                SESSION_REVOKED,
                Some(email(&format!("user{i}@example.com"))),
            ))
        })
        .collect();
    for set in &sets {
        t.queue_set(set);
    }
    easyssf_test::eventually(DEADLINE, "every SET acknowledged", || {
        t.queued_set_count() == 0
    })
    .await;
    assert!(t.reported_errors().is_empty(), "{:?}", t.reported_errors());
    let (ma, mb) = (a.metrics().await, b.metrics().await);
    assert_eq!(
        sets_counted(&ma, "accepted") + sets_counted(&mb, "accepted"),
        40.0,
        "each SET acted on once, by one replica or the other"
    );
    assert_eq!(a.head().await, 40);
    let store = Store::open(&db.url()).await.unwrap();
    let changes = store.since(0, 1000).await.unwrap();
    let mut users: Vec<UserId> = changes
        .iter()
        .filter_map(|(_, c)| match c {
            Change::UserRevoked { user, .. } => Some(*user),
            _ => None,
        })
        .collect();
    users.sort();
    users.dedup();
    assert_eq!(users.len(), 40);
    assert_eq!(changes.len(), 40);
    a.stop().await;
    b.stop().await;
    db.drop_db().await;
}

/// Bad poll, discovery, rate and global token revocation settings: every
/// problem reported at once, each with its key.
#[test]
fn bad_poll_rate_and_gtr_config_names_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hash.key"), "11".repeat(32)).unwrap();
    std::fs::write(dir.path().join("admin.token"), ADMIN).unwrap();
    std::fs::write(dir.path().join("short.token"), "short").unwrap();
    let path = dir.path().join("controller.toml");
    std::fs::write(
        &path,
        "hash_key_file = \"hash.key\"\nadmin_token_file = \"admin.token\"\n\
         [ssf]\nsource_rate_per_second = 0.0\n\
         [[ssf.transmitters]]\nname = \"idp\"\nissuer = \"https://idp.example\"\naudience = \"v\"\n\
         metadata_url = \"http://idp.example/.well-known/ssf-configuration\"\n\
         delivery = \"poll\"\npoll_url = \"http://idp.example/poll\"\npoll_max_events = 5000\n\
         burst = 0\n\
         [[ssf.transmitters]]\nname = \"push\"\nissuer = \"https://push.example\"\naudience = \"v\"\n\
         jwks_uri = \"https://push.example/jwks\"\npush_token_sha256 = \"00\"\npoll_url = \"https://push.example/poll\"\n\
         [[global_token_revocation.peers]]\nname = \"both\"\ntoken_file = \"short.token\"\nissuer = \"https://idp.example\"\n\
         [[global_token_revocation.peers]]\nname = \"jwt\"\nissuer = \"https://idp.example\"\n\
         jwks_uri = \"https://idp.example/jwks\"\nmax_age_seconds = 99999\nsubjects = [\"phone\"]\n\
         [[global_token_revocation.peers]]\nname = \"static\"\ntoken_file = \"short.token\"\nsubjects = [\"iss_sub\"]\n",
    )
    .unwrap();
    let e = vigil_controller::Config::load(&path).err().unwrap();
    let expected = [
        "ssf.source_rate_per_second: 0 is out of range",
        "ssf.transmitters[0].metadata_url: \"http://idp.example/.well-known/ssf-configuration\": expected https://",
        "ssf.transmitters[0].poll_token_file: required with delivery = \"poll\"",
        "ssf.transmitters[0].poll_url: \"http://idp.example/poll\": expected https://",
        "ssf.transmitters[0].poll_max_events: 5000 is out of range; expected 1 to 1000",
        "ssf.transmitters[0].burst: 0 is out of range",
        "ssf.transmitters[1].push_token_sha256: expected 64 hex digits",
        "ssf.transmitters[1].poll_url: only with delivery = \"poll\"",
        "global_token_revocation.peers[0]: give a static bearer",
        "global_token_revocation.peers[1].audience: required with a JWT bearer",
        "global_token_revocation.peers[1].max_age_seconds: 99999 is out of range",
        "global_token_revocation.peers[1].subjects: \"phone\"",
        "global_token_revocation.peers[1].subjects: at least one",
        "global_token_revocation.peers[2].token_file: short.token: a token of at least 16",
        "global_token_revocation.peers[2].subject_issuers: required for iss_sub subjects",
    ];
    for want in expected {
        assert!(
            e.problems.iter().any(|p| p.starts_with(want)),
            "{want:?} not in {:?}",
            e.problems
        );
    }
    assert_eq!(e.problems.len(), expected.len(), "{:?}", e.problems);
}

/// The attack on the mapping's bound: a user (or whoever passes their
/// step-up) signs 17 Vigil sessions in under one provider session, one
/// more than the controller maps. A logout token naming only that `sid`
/// must not spare the 17th: the mapping is full, so every session of the
/// user it names ends.
#[tokio::test]
async fn a_provider_session_fuller_than_its_mapping_ends_every_session_of_its_user() {
    let db = Db::new(false).await;
    let op = TestTransmitter::new();
    let published = Published::start(&op).await;
    let bcl = format!(
        "[[backchannel_logout.providers]]\nname = \"op\"\nissuer = {:?}\nclient_id = \"vigil-rp\"\n\
         jwks_uri = {:?}\nsub_is_user = false\n",
        op.issuer(),
        published.jwks_uri(),
    );
    let c = Controller::start(&db.url(), &bcl).await;
    let mut node = Stream::open(c.url("/v1/sync?since=0"), NODE).await;
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 5;
    let mut events = Vec::new();
    for i in 0..17 {
        let record = bound_record(&format!("s-{i}"), "alice", at);
        events.push(vigil_fleet::NodeEvent {
            id: format!("b-{i}"),
            kind: vigil_fleet::NodeEventKind::SessionBaseline {
                record: record.clone(),
                confirmed: true,
                false_positive: false,
                disputed: None,
            },
        });
        events.push(vigil_fleet::NodeEvent {
            id: format!("s-{i}"),
            kind: vigil_fleet::NodeEventKind::IdpSession {
                session: session_of(&record),
                user: user_of("alice"),
                idp_session: idp_session(&op, "crowded"),
                at,
            },
        });
    }
    let batch = vigil_fleet::EventBatch {
        v: vigil_fleet::VERSION,
        events,
    };
    let r = client()
        .post(c.url("/v1/events"))
        .bearer_auth(NODE)
        .body(serde_json::to_string(&batch).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ack: vigil_fleet::EventAck = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    // The 17th mapping is taken and dropped: the provider session is full.
    assert_eq!((ack.accepted, ack.refused), (34, 0));
    node.next_changes().await;
    let token = TestTransmitter::sign(
        op.key(),
        Some("logout+jwt"),
        &logout_claims(&op, None, Some("crowded")),
    );
    let r = client()
        .post(c.url("/v1/oidc/backchannel-logout/op"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("logout_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let changes = node.next_changes().await;
    assert!(
        matches!(changes[0], Change::UserRevoked { user: u, .. } if u == user("alice")),
        "{changes:?}"
    );
    assert_eq!(
        changes
            .iter()
            .filter(|c| matches!(c, Change::SessionRevoked { .. }))
            .count(),
        17,
        "every session of alice, the unmapped 17th too: {changes:?}"
    );
    c.stop().await;
    db.drop_db().await;
}
