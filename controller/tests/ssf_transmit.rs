//! The Shared Signals transmitter end to end over real HTTP: an independent
//! receiver (the `easyssf-receiver` crate: its metadata resolver, stream
//! client, SET verifier and poller) pointed at the controller on loopback
//! discovers it, creates streams, and verifies the SETs pushed to its own
//! loopback endpoint (RFC 8935) or polled (RFC 8936) after an operator's
//! revocation; on SQLite and on the PostgreSQL server on 127.0.0.1:5432 (a
//! fresh database per test).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{Db, both, client};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use easyssf_core::stream::SsfStreamConfiguration;
use easyssf_receiver::event::SsfEventContext;
use easyssf_receiver::http::{SsfHttpClient, SsfHttpRequest, SsfHttpResponse};
use easyssf_receiver::poll::{SsfPoller, SsfPollerOptions};
use easyssf_receiver::push::SsfPushHandler;
use easyssf_receiver::set::{
    HttpSsfJwkSetSource, InMemorySsfJtiDedupStore, JwtSsfSetVerifier, SsfSetProcessor,
    SsfSetVerifierOptions,
};
use easyssf_receiver::stream::SsfStreamClient;
use easyssf_receiver::transmitter::{
    FixedSsfTransmitterTokenProvider, SsfTransmitterMetadataResolver, SsfTransmitterUriPolicy,
};
use serde_json::{Map, Value, json};
use url::Url;
use vigil_fleet::UserId;

const ADMIN: &str = "admin-token-0123456789";
const NODE: &str = "node-a-token-0123456789";
const IDP_TOKEN: &str = "idp-receiver-token-0123456789";
const OTHER_TOKEN: &str = "other-receiver-token-0123456789";
const PUSH_AUTH: &str = "Bearer push-secret-0123456789";
const AUDIENCE: &str = "https://idp.test/ssf";
const HASH_KEY: [u8; 32] = [0x11; 32];
const DEADLINE: Duration = Duration::from_secs(30);
const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";

fn user(name: &str) -> UserId {
    UserId(
        vigil_engine::UserKey::for_name(&vigil_engine::SessionHashKey::from_bytes(HASH_KEY), name)
            .as_u64(),
    )
}

/// The receiver's HTTP client: the workspace's reqwest (rustls with
/// ring), behind the crate's trait (its own `reqwest` feature would bring
/// the aws-lc provider, which needs cmake).
#[derive(Clone, Copy)]
struct Http;

impl SsfHttpClient for Http {
    fn execute<'a, 'b>(
        &'a self,
        request: SsfHttpRequest,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<SsfHttpResponse, easyssf_receiver::BoxError>>
                + Send
                + 'b,
        >,
    >
    where
        'a: 'b,
    {
        Box::pin(async move {
            let method = reqwest::Method::from_bytes(request.method.as_bytes())?;
            let mut r = client().request(method, request.url.as_str());
            for (k, v) in &request.headers {
                r = r.header(k, v);
            }
            if let Some(t) = request.timeout {
                r = r.timeout(t);
            }
            if let Some(b) = request.body {
                r = r.body(b);
            }
            let response = r.send().await?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_owned())))
                .collect();
            let body = response.text().await?;
            Ok(SsfHttpResponse {
                status,
                headers,
                body,
            })
        })
    }
}

/// Waits for `cond` to hold, polling it, up to [`DEADLINE`].
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The receiver's side: its push endpoint on loopback, which answers
/// `500` to the first `fail` pushes and verifies every other with the
/// crate's push handler, keeping each SET it took.
struct Receiver {
    addr: SocketAddr,
    taken: Arc<Mutex<Vec<Map<String, Value>>>>,
    pushes: Arc<AtomicUsize>,
    fail: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A SET processor verifying the controller's SETs with its JWK Set,
/// found through its metadata; every SET taken lands in `taken`.
async fn processor(
    metadata: &SsfTransmitterMetadataResolver,
    taken: Arc<Mutex<Vec<Map<String, Value>>>>,
) -> Arc<SsfSetProcessor> {
    processor_for(metadata, taken, AUDIENCE).await
}

/// [`processor`] expecting SETs for `audience`.
async fn processor_for(
    metadata: &SsfTransmitterMetadataResolver,
    taken: Arc<Mutex<Vec<Map<String, Value>>>>,
    audience: &str,
) -> Arc<SsfSetProcessor> {
    let m = metadata.resolve().await.unwrap();
    let jwks = m.jwks_uri().unwrap().clone();
    let keys = HttpSsfJwkSetSource::new(Http, jwks);
    let options = SsfSetVerifierOptions {
        expected_audiences: vec![audience.to_owned()],
        accepted_algorithms: vec![
            jsonwebtoken::Algorithm::RS256,
            jsonwebtoken::Algorithm::ES256,
        ],
        ..SsfSetVerifierOptions::default()
    };
    let verifier = JwtSsfSetVerifier::new(m.issuer(), keys, options);
    let keep = move |context: SsfEventContext| {
        let taken = Arc::clone(&taken);
        async move {
            taken
                .lock()
                .unwrap()
                .push(context.event_token().claims().clone());
            Ok(())
        }
    };
    Arc::new(SsfSetProcessor::new(verifier, InMemorySsfJtiDedupStore::new(1_000)).handler(keep))
}

impl Receiver {
    async fn start(c: &Controller, metadata: &SsfTransmitterMetadataResolver) -> Receiver {
        Receiver::start_for(c, metadata, AUDIENCE).await
    }

    /// A receiver that takes SETs for `audience` only (and answers others
    /// `400 invalid_audience`).
    async fn start_for(
        c: &Controller,
        metadata: &SsfTransmitterMetadataResolver,
        audience: &str,
    ) -> Receiver {
        let taken = Arc::new(Mutex::new(Vec::new()));
        let handler = SsfPushHandler::new(
            processor_for(metadata, Arc::clone(&taken), audience).await,
            Some(PUSH_AUTH),
        );
        let pushes = Arc::new(AtomicUsize::new(0));
        let fail = Arc::new(AtomicUsize::new(0));
        let listener = c
            .receiver_listener
            .lock()
            .unwrap()
            .take()
            .expect("one receiver per controller");
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/push",
            axum::routing::post({
                let (pushes, fail) = (Arc::clone(&pushes), Arc::clone(&fail));
                move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
                    let (handler, pushes, fail) =
                        (handler.clone(), Arc::clone(&pushes), Arc::clone(&fail));
                    async move {
                        pushes.fetch_add(1, Ordering::SeqCst);
                        let failing = fail
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                        if failing {
                            return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, String::new());
                        }
                        let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                        let r = handler.handle(auth, &body).await;
                        (
                            axum::http::StatusCode::from_u16(r.status).unwrap(),
                            r.body.unwrap_or_default(),
                        )
                    }
                }
            }),
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            addr,
            taken,
            pushes,
            fail,
            task,
        }
    }

    fn url(&self) -> Url {
        Url::parse(&format!("http://{}/push", self.addr)).unwrap()
    }

    fn events(&self, event: &str) -> Vec<Map<String, Value>> {
        self.taken
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c["events"].get(event).is_some())
            .cloned()
            .collect()
    }
}

struct Controller {
    addr: SocketAddr,
    /// Where its receiver's push endpoint listens (the one allowed).
    receiver_listener: Mutex<Option<std::net::TcpListener>>,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Controller {
    /// A controller on `store` signing with the tests' RSA key, its
    /// transmitter's receivers `idp` and `other`; `extra` goes into
    /// `[ssf_transmitter]`.
    async fn start(store: &str, extra: &str) -> Controller {
        Controller::start_as(store, extra, None).await
    }

    /// [`Controller::start`] with `issuer` (and the URLs it publishes)
    /// instead of its own address: replicas share one.
    async fn start_as(store: &str, extra: &str, issuer: Option<&str>) -> Controller {
        Controller::start_full(store, extra, issuer, "").await
    }

    /// [`Controller::start`] with `top` added at the end of the file (other
    /// sections).
    async fn start_with(store: &str, extra: &str, top: &str) -> Controller {
        Controller::start_full(store, extra, None, top).await
    }

    async fn start_full(store: &str, extra: &str, issuer: Option<&str>, top: &str) -> Controller {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hash.key"), hex::encode(HASH_KEY)).unwrap();
        std::fs::write(dir.path().join("admin.token"), ADMIN).unwrap();
        std::fs::write(dir.path().join("idp.token"), IDP_TOKEN).unwrap();
        std::fs::write(dir.path().join("other.token"), OTHER_TOKEN).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let issuer = issuer.map_or_else(|| format!("http://{addr}"), str::to_owned);
        // The test receiver's port, held from now: its push endpoints are
        // the only ones allowed.
        let receiver_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let receiver_addr = receiver_listener.local_addr().unwrap();
        let toml = format!(
            "listen = \"{addr}\"\nstore = {store:?}\nhash_key_file = \"hash.key\"\nadmin_token_file = \"admin.token\"\n\
             [[nodes]]\nname = \"a\"\ntoken_sha256 = \"{node}\"\n\
             [signing]\nissuer = {issuer:?}\nkey_files = [{signing_key:?}]\n\
             [ssf_transmitter]\nretry_min_ms = 100\nretry_max_seconds = 1\nredeliver_seconds = 1\n{extra}\n\
             [[ssf_transmitter.receivers]]\nname = \"idp\"\ntoken_file = \"idp.token\"\naudience = {AUDIENCE:?}\n\
             push_endpoints = [\"http://{receiver_addr}/\"]\n\
             [[ssf_transmitter.receivers]]\nname = \"other\"\ntoken_file = \"other.token\"\n{top}",
            node = hex::encode(vigil_controller::config::token_hash(NODE)),
            signing_key = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rs256-test.pem"),
        );
        let path = dir.path().join("controller.toml");
        std::fs::write(&path, toml).unwrap();
        let config = vigil_controller::Config::load(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
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
            receiver_listener: Mutex::new(Some(receiver_listener)),
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

    fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn metadata(&self) -> Arc<SsfTransmitterMetadataResolver> {
        Arc::new(
            SsfTransmitterMetadataResolver::new(
                self.issuer(),
                None,
                Http,
                SsfTransmitterUriPolicy::DEFAULT,
            )
            .unwrap(),
        )
    }

    fn streams(
        &self,
        metadata: &Arc<SsfTransmitterMetadataResolver>,
        token: &str,
    ) -> SsfStreamClient {
        SsfStreamClient::new(
            Http,
            FixedSsfTransmitterTokenProvider(token.to_owned()),
            Arc::clone(metadata),
        )
    }

    async fn admin(&self, path: &str, body: Value) -> Value {
        let r = client()
            .post(self.url(path))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        serde_json::from_str(&r.text().await.unwrap()).unwrap()
    }

    async fn revoke(&self, name: &str) {
        self.admin("/v1/admin/users/revoke", json!({"user": name}))
            .await;
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

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

fn requested() -> Vec<String> {
    vec![SESSION_REVOKED.to_owned()]
}

fn opaque_user(name: &str) -> Value {
    json!({"format": "opaque", "id": user(name).to_string()})
}

/// The whole path: discovery, a push stream and a poll stream created by
/// the independent receiver, a verification request round-tripping, and
/// an operator's revocation of alice reaching both streams as a CAEP
/// `session-revoked` the receiver verifies against the controller's JWK
/// Set — once: acknowledged SETs are not handed out again.
#[tokio::test]
async fn an_admin_revocation_reaches_a_pushed_and_a_polled_receiver() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url(), "").await;
        let metadata = c.metadata();
        let m = metadata.resolve().await.unwrap();
        assert_eq!(m.issuer(), c.issuer());
        assert_eq!(
            m.delivery_methods_supported(),
            vec![
                "urn:ietf:rfc:8935".to_owned(),
                "urn:ietf:rfc:8936".to_owned()
            ]
        );
        assert_eq!(m.claims()["spec_version"], "1_0");
        let receiver = Receiver::start(&c, &metadata).await;
        let streams = c.streams(&metadata, IDP_TOKEN);
        let push = streams
            .create_stream(&SsfStreamConfiguration::push(
                &receiver.url(),
                Some(PUSH_AUTH),
                &requested(),
                Some("push"),
            ))
            .await
            .unwrap();
        assert_eq!(push.events_delivered(), requested());
        assert_eq!(push.audience(), vec![AUDIENCE.to_owned()]);
        let poll = streams
            .create_stream(&SsfStreamConfiguration::poll(&requested(), Some("poll")))
            .await
            .unwrap();
        let poll_url = poll.delivery_endpoint_url().unwrap();
        assert!(poll_url.as_str().starts_with(&c.issuer()), "{poll_url}");
        assert_eq!(streams.streams().await.unwrap().len(), 2);

        // A verification request round-trips with its state.
        streams
            .request_verification(push.stream_id().unwrap(), Some("state-1"))
            .await
            .unwrap();
        eventually("the verification SET is pushed", || {
            !receiver.events(VERIFICATION).is_empty()
        })
        .await;
        let v = &receiver.events(VERIFICATION)[0];
        assert_eq!(v["events"][VERIFICATION]["state"], "state-1");
        assert_eq!(
            v["sub_id"],
            json!({"format": "opaque", "id": push.stream_id().unwrap()})
        );

        c.revoke("alice").await;
        eventually("the revocation is pushed", || {
            !receiver.events(SESSION_REVOKED).is_empty()
        })
        .await;
        let pushed = receiver.events(SESSION_REVOKED);
        assert_eq!(pushed.len(), 1);
        assert_eq!(pushed[0]["sub_id"], opaque_user("alice"));
        assert_eq!(pushed[0]["iss"], json!(c.issuer()));
        assert!(pushed[0]["events"][SESSION_REVOKED]["reason_admin"]["en"].is_string());

        // The poll stream: the same event, verified, then acknowledged.
        let polled = Arc::new(Mutex::new(Vec::new()));
        let poller = SsfPoller::new(
            Http,
            FixedSsfTransmitterTokenProvider(IDP_TOKEN.to_owned()),
            Arc::new(move || Some(poll_url.clone())),
            processor(&metadata, Arc::clone(&polled)).await,
            SsfPollerOptions::default(),
        );
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while polled.lock().unwrap().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the revocation is polled"
            );
            poller.poll_now().await.unwrap();
        }
        let got = polled.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["sub_id"], opaque_user("alice"));
        assert_eq!(got[0]["aud"], json!(AUDIENCE));
        // The ack goes with the next poll; past `redeliver_seconds`
        // nothing is handed out again.
        poller.poll_now().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        poller.poll_now().await.unwrap();
        assert_eq!(polled.lock().unwrap().len(), 1);
        let metrics = c.metrics().await;
        assert!(
            metrics.contains(
                "vigil_controller_ssf_tx_sets_total{receiver=\"idp\",result=\"delivered\"}"
            ),
            "{metrics}"
        );
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

async fn raw(
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = client().request(method, url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The attack: a receiver (or anyone) reaching for another receiver's
/// stream, or making the controller post where it likes. No token or a
/// wrong one is `401`; another receiver's stream is `404` whatever the
/// call (SSF 1.0: no such stream *for this receiver*); a push endpoint
/// outside the receiver's `push_endpoints` is refused.
#[tokio::test]
async fn streams_belong_to_their_receiver() {
    let db = Db::new(false).await;
    let c = Controller::start(&db.url(), "").await;
    let streams = c.url("/v1/ssf/streams");
    let create =
        json!({"delivery": {"method": "urn:ietf:rfc:8936"}, "events_requested": [SESSION_REVOKED]});
    use reqwest::Method;
    assert_eq!(
        raw(Method::POST, streams.clone(), None, Some(create.clone()))
            .await
            .0,
        401
    );
    assert_eq!(
        raw(
            Method::POST,
            streams.clone(),
            Some("not-a-receiver-token-01234"),
            Some(create.clone())
        )
        .await
        .0,
        401
    );
    let (status, mine) = raw(
        Method::POST,
        streams.clone(),
        Some(IDP_TOKEN),
        Some(create.clone()),
    )
    .await;
    assert_eq!(status, 201, "{mine}");
    let id = mine["stream_id"].as_str().unwrap().to_owned();
    let q = format!("{streams}?stream_id={id}");
    assert_eq!(
        raw(Method::GET, q.clone(), Some(OTHER_TOKEN), None).await.0,
        404
    );
    assert_eq!(
        raw(Method::DELETE, q.clone(), Some(OTHER_TOKEN), None)
            .await
            .0,
        404
    );
    assert_eq!(
        raw(
            Method::PATCH,
            streams.clone(),
            Some(OTHER_TOKEN),
            Some(json!({"stream_id": id, "description": "x"}))
        )
        .await
        .0,
        404
    );
    assert_eq!(
        raw(
            Method::POST,
            c.url("/v1/ssf/status"),
            Some(OTHER_TOKEN),
            Some(json!({"stream_id": id, "status": "disabled"}))
        )
        .await
        .0,
        404
    );
    assert_eq!(
        raw(
            Method::POST,
            c.url("/v1/ssf/verify"),
            Some(OTHER_TOKEN),
            Some(json!({"stream_id": id}))
        )
        .await
        .0,
        404
    );
    assert_eq!(
        raw(
            Method::POST,
            c.url(&format!("/v1/ssf/poll/{id}")),
            Some(OTHER_TOKEN),
            Some(json!({}))
        )
        .await
        .0,
        404
    );
    let (status, list) = raw(Method::GET, streams.clone(), Some(OTHER_TOKEN), None).await;
    assert_eq!((status, list), (200, json!([])));
    // Pushing anywhere but under its allowed endpoint: another host,
    // another port of the same host, a look-alike host, user info.
    let allowed = c
        .receiver_listener
        .lock()
        .unwrap()
        .as_ref()
        .unwrap()
        .local_addr()
        .unwrap();
    for elsewhere in [
        "http://10.0.0.1/admin".to_owned(),
        format!("http://127.0.0.1:{}/push", allowed.port() ^ 1),
        format!("http://127.0.0.1.nip.io:{}/push", allowed.port()),
        format!("http://user@{allowed}/push"),
    ] {
        let body = json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": elsewhere}});
        let (status, _) = raw(Method::POST, streams.clone(), Some(IDP_TOKEN), Some(body)).await;
        assert_eq!(status, 400, "{elsewhere}");
    }
    let here = json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": format!("http://{allowed}/push")}});
    let (status, pushing) = raw(Method::POST, streams.clone(), Some(IDP_TOKEN), Some(here)).await;
    assert_eq!(status, 201, "{pushing}");
    let q2 = format!(
        "{streams}?stream_id={}",
        pushing["stream_id"].as_str().unwrap()
    );
    assert_eq!(raw(Method::DELETE, q2, Some(IDP_TOKEN), None).await.0, 204);
    let (status, _) = raw(
        Method::POST,
        streams.clone(),
        Some(OTHER_TOKEN),
        Some(json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": "http://127.0.0.1:1/push"}})),
    )
    .await;
    assert_eq!(status, 400, "a receiver without push_endpoints cannot push");
    // The operator sees every receiver's streams, never the receiver's
    // authorization header; a receiver's token is no admin's.
    let (status, all) = raw(
        Method::GET,
        c.url("/v1/admin/ssf/transmit/streams"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(all["streams"][0]["stream_id"], json!(id));
    assert_eq!(all["streams"][0]["receiver"], "idp");
    assert_eq!(all["streams"][0]["queued"], 0);
    assert_eq!(
        raw(
            Method::GET,
            c.url("/v1/admin/ssf/transmit/streams"),
            Some(IDP_TOKEN),
            None
        )
        .await
        .0,
        401
    );
    // The owner reads, then deletes.
    let (status, read) = raw(Method::GET, q.clone(), Some(IDP_TOKEN), None).await;
    assert_eq!(status, 200);
    assert_eq!(read["stream_id"], json!(id));
    assert_eq!(
        raw(Method::DELETE, q.clone(), Some(IDP_TOKEN), None)
            .await
            .0,
        204
    );
    assert_eq!(raw(Method::GET, q, Some(IDP_TOKEN), None).await.0, 404);
    c.stop().await;
    db.drop_db().await;
}

/// Subjects: with `default_subjects = "NONE"` a stream carries only the
/// subjects added, and a removed one no more. Status: a paused stream
/// keeps its events and delivers them once enabled.
#[tokio::test]
async fn subjects_filter_and_a_pause_keeps_events() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url(), "default_subjects = \"NONE\"").await;
        let metadata = c.metadata();
        assert_eq!(metadata.resolve().await.unwrap().claims()["default_subjects"], "NONE");
        let receiver = Receiver::start(&c, &metadata).await;
        let streams = c.streams(&metadata, IDP_TOKEN);
        let s = streams
            .create_stream(&SsfStreamConfiguration::push(&receiver.url(), Some(PUSH_AUTH), &requested(), None))
            .await
            .unwrap();
        let id = s.stream_id().unwrap().to_owned();
        let subject = |name: &str| opaque_user(name).as_object().unwrap().clone();
        streams.add_subject(&id, &subject("alice"), true).await.unwrap();
        c.revoke("bob").await;
        c.revoke("alice").await;
        eventually("alice's revocation is pushed", || {
            !receiver.events(SESSION_REVOKED).is_empty()
        })
        .await;
        streams.remove_subject(&id, &subject("alice")).await.unwrap();
        streams.add_subject(&id, &subject("carol"), false).await.unwrap();
        c.revoke("alice").await;
        c.revoke("carol").await;
        eventually("carol's revocation is pushed", || {
            receiver.events(SESSION_REVOKED).len() >= 2
        })
        .await;
        let subs: Vec<Value> = receiver
            .events(SESSION_REVOKED)
            .iter()
            .map(|e| e["sub_id"].clone())
            .collect();
        assert_eq!(subs, vec![opaque_user("alice"), opaque_user("carol")]);

        // Paused: dave's revocation waits in the queue.
        let paused = streams.update_status(&id, "paused", Some("maintenance")).await.unwrap();
        assert_eq!(paused.status, "paused");
        assert_eq!(streams.status(&id).await.unwrap().status, "paused");
        streams
            .add_subject(&id, &subject("dave"), false)
            .await
            .unwrap();
        c.revoke("dave").await;
        let queued = |c: &Controller| {
            let url = c.url("/metrics");
            async move {
                let text = client().get(url).send().await.unwrap().text().await.unwrap();
                text.lines()
                    .find_map(|l| {
                        l.strip_prefix("vigil_controller_ssf_tx_sets_total{receiver=\"idp\",result=\"enqueued\"} ")
                            .and_then(|v| v.parse::<f64>().ok())
                    })
                    .unwrap_or(0.0)
            }
        };
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while queued(&c).await < 3.0 {
            assert!(tokio::time::Instant::now() < deadline, "the paused stream's event is queued");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(receiver.events(SESSION_REVOKED).len(), 2, "nothing pushed while paused");
        streams.update_status(&id, "enabled", None).await.unwrap();
        eventually("the held event is pushed once enabled", || {
            receiver.events(SESSION_REVOKED).len() == 3
        })
        .await;
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// A receiver that fails (`500`) gets the SET again after back-off, the
/// same SET (its `jti`), until it takes it: at least once.
#[tokio::test]
async fn a_failing_receiver_gets_the_set_again_after_back_off() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url(), "").await;
        let metadata = c.metadata();
        let receiver = Receiver::start(&c, &metadata).await;
        receiver.fail.store(3, Ordering::SeqCst);
        c.streams(&metadata, IDP_TOKEN)
            .create_stream(&SsfStreamConfiguration::push(
                &receiver.url(),
                Some(PUSH_AUTH),
                &requested(),
                None,
            ))
            .await
            .unwrap();
        c.revoke("alice").await;
        eventually("the revocation is pushed after the failures", || {
            !receiver.events(SESSION_REVOKED).is_empty()
        })
        .await;
        assert_eq!(
            receiver.pushes.load(Ordering::SeqCst),
            4,
            "three failures, then taken"
        );
        assert_eq!(receiver.events(SESSION_REVOKED).len(), 1);
        let metrics = c.metrics().await;
        assert!(
            metrics.contains(
                "vigil_controller_ssf_tx_sets_total{receiver=\"idp\",result=\"retry\"} 3"
            ),
            "{metrics}"
        );
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// A node's enforced detection of alice's session, posted as a node does.
async fn detected(c: &Controller, reference: &str, session: vigil_fleet::SessionId) {
    let at = vigil_controller::api::now_secs() - 5;
    let batch = vigil_fleet::EventBatch {
        v: vigil_fleet::VERSION,
        events: vec![vigil_fleet::NodeEvent {
            id: format!("d-{reference}"),
            kind: vigil_fleet::NodeEventKind::Detection {
                reference: reference.to_owned(),
                session: Some(session),
                user: Some(user("alice")),
                route: "app".to_owned(),
                rule: Some("stolen-cookie".to_owned()),
                action: "revoke".to_owned(),
                enforced: true,
                score: 85,
                reasons: vec![("device_changed".to_owned(), 45)],
                at,
                facts: None,
            },
        }],
    };
    let r = client()
        .post(c.url("/v1/events"))
        .bearer_auth(NODE)
        .header("content-type", "application/json")
        .body(serde_json::to_string(&batch).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// An operator's confirmed compromise: the detection's user is revoked
/// and every stream that asked gets a RISC `credential-compromise` and a
/// CAEP `session-revoked` — once, however often it is reported. An
/// operator's revocation of a session the store knows the user of is a
/// `session-revoked` about user and session (a complex subject).
#[tokio::test]
async fn a_confirmed_compromise_is_sent_once_and_a_session_names_its_user() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url(), "").await;
        let metadata = c.metadata();
        let receiver = Receiver::start(&c, &metadata).await;
        let compromise =
            "https://schemas.openid.net/secevent/risc/event-type/credential-compromise";
        c.streams(&metadata, IDP_TOKEN)
            .create_stream(&SsfStreamConfiguration::push(
                &receiver.url(),
                Some(PUSH_AUTH),
                &[SESSION_REVOKED.to_owned(), compromise.to_owned()],
                None,
            ))
            .await
            .unwrap();
        let session = vigil_fleet::SessionId([7; 16]);
        detected(&c, "ref-7", session).await;
        let r = c
            .admin(
                "/v1/admin/sessions/revoke",
                json!({"session": session.to_string()}),
            )
            .await;
        assert!(r["seq"].is_u64());
        eventually("the session's revocation is pushed", || {
            !receiver.events(SESSION_REVOKED).is_empty()
        })
        .await;
        let s = &receiver.events(SESSION_REVOKED)[0];
        assert_eq!(
            s["sub_id"],
            json!({"format": "complex", "user": opaque_user("alice"),
                   "session": {"format": "opaque", "id": session.to_string()}})
        );
        assert_eq!(s["events"][SESSION_REVOKED]["initiating_entity"], "policy");

        let (status, body) = raw(
            reqwest::Method::POST,
            c.url("/v1/admin/detections/confirmed-compromise"),
            Some(ADMIN),
            Some(json!({"reference": "ref-7", "credential_type": "password"})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["changed"], true);
        assert_eq!(body["users"], json!([user("alice").to_string()]));
        eventually(
            "the compromise and the user's revocation are pushed",
            || {
                !receiver.events(compromise).is_empty()
                    && receiver.events(SESSION_REVOKED).len() == 2
            },
        )
        .await;
        let risc = &receiver.events(compromise)[0];
        assert_eq!(risc["sub_id"], opaque_user("alice"));
        assert_eq!(risc["events"][compromise]["credential_type"], "password");
        // Reported again: nothing done again.
        let (status, body) = raw(
            reqwest::Method::POST,
            c.url("/v1/admin/detections/confirmed-compromise"),
            Some(ADMIN),
            Some(json!({"reference": "ref-7"})),
        )
        .await;
        assert_eq!((status, &body["changed"]), (200, &json!(false)));
        for (bad, code) in [
            (json!({"reference": "ref-unknown"}), 404),
            (
                json!({"reference": "ref-7", "credential_type": "cookie"}),
                400,
            ),
            (json!({"reference": ""}), 400),
        ] {
            let (status, _) = raw(
                reqwest::Method::POST,
                c.url("/v1/admin/detections/confirmed-compromise"),
                Some(ADMIN),
                Some(bad.clone()),
            )
            .await;
            assert_eq!(status, code, "{bad}");
        }
        assert_eq!(
            raw(
                reqwest::Method::POST,
                c.url("/v1/admin/detections/confirmed-compromise"),
                Some(IDP_TOKEN),
                Some(json!({"reference": "ref-7"})),
            )
            .await
            .0,
            401,
            "a receiver's token is not the admin's"
        );
        // A marker revocation: once it is through, nothing else came.
        c.revoke("zoe").await;
        eventually("the marker is pushed", || {
            receiver.events(SESSION_REVOKED).len() == 3
        })
        .await;
        assert_eq!(receiver.events(compromise).len(), 1);
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// Replicas on one PostgreSQL database: revocations committed through
/// either are each enqueued once (one cursor, under its row lock) and
/// pushed once (one controller per stream at a time, by lease) — no SET
/// lost, none sent twice.
#[tokio::test]
async fn replicas_deliver_each_set_once() {
    let db = Db::new(true).await;
    let a = Controller::start(&db.url(), "").await;
    let b = Controller::start_as(&db.url(), "", Some(&a.issuer())).await;
    let metadata = a.metadata();
    let receiver = Receiver::start(&a, &metadata).await;
    a.streams(&metadata, IDP_TOKEN)
        .create_stream(&SsfStreamConfiguration::push(
            &receiver.url(),
            Some(PUSH_AUTH),
            &requested(),
            None,
        ))
        .await
        .unwrap();
    let n = 20;
    // Side by side, through both replicas.
    let mut calls = Vec::new();
    for i in 0..n {
        let url = if i % 2 == 0 { &a } else { &b }.url("/v1/admin/users/revoke");
        calls.push(tokio::spawn(async move {
            let r = client()
                .post(url)
                .bearer_auth(ADMIN)
                .header("content-type", "application/json")
                .body(json!({"user": format!("user-{i}")}).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }));
    }
    for call in calls {
        call.await.unwrap();
    }
    eventually("every revocation is pushed", || {
        receiver.events(SESSION_REVOKED).len() >= n
    })
    .await;
    // A marker through the other replica: once it is through, nothing
    // else is on its way.
    b.revoke("marker").await;
    eventually("the marker is pushed", || {
        receiver.events(SESSION_REVOKED).len() > n
    })
    .await;
    let got = receiver.events(SESSION_REVOKED);
    let mut subjects: Vec<String> = got.iter().map(|e| e["sub_id"]["id"].to_string()).collect();
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), n + 1, "one SET per revocation");
    assert_eq!(got.len(), n + 1, "none twice");
    assert_eq!(
        receiver.pushes.load(Ordering::SeqCst),
        n + 1,
        "no push repeated"
    );
    a.stop().await;
    b.stop().await;
    db.drop_db().await;
}

/// The claims of a compact JWS, unverified (the other tests verify).
fn payload(jwt: &str) -> Value {
    use base64::Engine;
    let part = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// RFC 8936 by hand: the SETs a poll hands out, by `jti`.
async fn poll(c: &Controller, id: &str, body: Value) -> Map<String, Value> {
    let (status, answer) = raw(
        reqwest::Method::POST,
        c.url(&format!("/v1/ssf/poll/{id}")),
        Some(IDP_TOKEN),
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    answer["sets"].as_object().unwrap().clone()
}

/// A queue holds `max_queue` SETs: a flood drops the oldest (counted),
/// never grows it. A SET the receiver reports in `setErrs` is not handed
/// out again. A user's entity risk crossing a level is a CAEP
/// `risk-level-change`, and back.
#[tokio::test]
async fn a_queue_is_bounded_refusals_stick_and_risk_levels_are_sent() {
    let db = Db::new(false).await;
    let c = Controller::start(&db.url(), "max_queue = 2").await;
    let risk = "https://schemas.openid.net/secevent/caep/event-type/risk-level-change";
    let (status, s) = raw(
        reqwest::Method::POST,
        c.url("/v1/ssf/streams"),
        Some(IDP_TOKEN),
        Some(json!({"delivery": {"method": "urn:ietf:rfc:8936"},
                    "events_requested": [SESSION_REVOKED, risk]})),
    )
    .await;
    assert_eq!(status, 201);
    let id = s["stream_id"].as_str().unwrap().to_owned();
    for name in ["u1", "u2", "u3", "u4"] {
        c.revoke(name).await;
    }
    let dropped = "vigil_controller_ssf_tx_sets_total{receiver=\"idp\",result=\"dropped\"} 2";
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !c.metrics().await.contains(dropped) {
        assert!(tokio::time::Instant::now() < deadline, "two dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sets = poll(&c, &id, json!({"returnImmediately": true})).await;
    let mut subjects: Vec<Value> = sets
        .values()
        .map(|j| payload(j.as_str().unwrap())["sub_id"].clone())
        .collect();
    subjects.sort_by_key(|v| v.to_string());
    let mut newest = vec![opaque_user("u3"), opaque_user("u4")];
    newest.sort_by_key(|v| v.to_string());
    assert_eq!(subjects, newest, "the newest two are kept");
    // One acknowledged, one refused: neither comes back.
    let jtis: Vec<&String> = sets.keys().collect();
    let mut errs = Map::new();
    errs.insert(
        jtis[1].clone(),
        json!({"err": "invalid_key", "description": "test"}),
    );
    let again = poll(
        &c,
        &id,
        json!({"returnImmediately": true, "ack": [jtis[0]], "setErrs": errs}),
    )
    .await;
    assert!(again.is_empty(), "{again:?}");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert!(
        poll(&c, &id, json!({"returnImmediately": true}))
            .await
            .is_empty(),
        "past redeliver_seconds too"
    );
    let metrics = c.metrics().await;
    assert!(
        metrics
            .contains("vigil_controller_ssf_tx_sets_total{receiver=\"idp\",result=\"refused\"} 1"),
        "{metrics}"
    );

    // Entity risk: high, then cleared.
    c.admin(
        "/v1/admin/users/risk",
        json!({"user": "rita", "points": 80, "ttl_seconds": 600}),
    )
    .await;
    let sets = poll(&c, &id, json!({})).await;
    assert_eq!(sets.len(), 1);
    let claims = payload(sets.values().next().unwrap().as_str().unwrap());
    assert_eq!(claims["sub_id"], opaque_user("rita"));
    let e = &claims["events"][risk];
    assert_eq!(
        (&e["principal"], &e["current_level"], &e["previous_level"]),
        (&json!("USER"), &json!("HIGH"), &json!("LOW"))
    );
    let ack: Vec<&String> = sets.keys().collect();
    c.admin(
        "/v1/admin/users/risk",
        json!({"user": "rita", "points": 0, "ttl_seconds": 0}),
    )
    .await;
    let sets = poll(&c, &id, json!({"ack": ack})).await;
    assert_eq!(sets.len(), 1);
    let e = &payload(sets.values().next().unwrap().as_str().unwrap())["events"][risk];
    assert_eq!(
        (&e["current_level"], &e["previous_level"]),
        (&json!("LOW"), &json!("HIGH"))
    );
    // Risk that stays within its level is not sent: the marker after it
    // comes alone.
    let ack: Vec<&String> = sets.keys().collect();
    c.admin(
        "/v1/admin/users/risk",
        json!({"user": "rita", "points": 5, "ttl_seconds": 600}),
    )
    .await;
    c.revoke("marker").await;
    let sets = poll(&c, &id, json!({"ack": ack})).await;
    assert_eq!(sets.len(), 1);
    assert_eq!(
        payload(sets.values().next().unwrap().as_str().unwrap())["sub_id"],
        opaque_user("marker")
    );
    c.stop().await;
    db.drop_db().await;
}

/// An authorization server's JWK Set served on loopback: the independent
/// `easyssf-test` transmitter's, handed to its own in-process handler.
async fn serve_jwks(t: &easyssf_test::TestTransmitter) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let t = t.clone();
    let jwks = Url::parse(&t.jwks_uri()).unwrap();
    let path = jwks.path().to_owned();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let (t, mut url) = (t.clone(), jwks.clone());
        async move {
            url.set_path(uri.path());
            let r = t.execute(SsfHttpRequest::of("GET", url)).await.unwrap();
            (
                axum::http::StatusCode::from_u16(r.status).unwrap(),
                [("content-type", "application/json")],
                r.body,
            )
        }
    });
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}{path}"), task)
}

/// The attack on OAuth client credentials: a receiver may authenticate
/// with an access token of the configured authorization server for its
/// `client_id` — and only with one: expired, for another audience, from
/// another issuer, signed by another key, unsigned, or for a client no
/// receiver is, it is `401`.
#[tokio::test]
async fn receivers_may_use_the_authorization_servers_access_tokens_only() {
    use easyssf_test::{TestSigningKey, TestTransmitter};
    let t = TestTransmitter::new();
    let (jwks, served) = serve_jwks(&t).await;
    let audience = "https://vigil.test/ssf-api";
    let db = Db::new(false).await;
    let c = Controller::start(
        &db.url(),
        &format!(
            "[ssf_transmitter.oauth]\nissuer = {:?}\njwks_uri = {jwks:?}\naudience = {audience:?}\n\
             [[ssf_transmitter.receivers]]\nname = \"oauth-rx\"\nclient_id = \"rx-client\"\n",
            t.issuer()
        ),
    )
    .await;
    let now = vigil_controller::api::now_secs();
    let token =
        |claims: Value| TestTransmitter::sign(t.key(), Some("at+jwt"), claims.as_object().unwrap());
    let good = json!({"iss": t.issuer(), "aud": audience, "exp": now + 300, "iat": now,
                      "client_id": "rx-client", "sub": "rx-client"});
    let create =
        json!({"delivery": {"method": "urn:ietf:rfc:8936"}, "events_requested": [SESSION_REVOKED]});
    let streams = c.url("/v1/ssf/streams");
    let (status, body) = raw(
        reqwest::Method::POST,
        streams.clone(),
        Some(&token(good.clone())),
        Some(create.clone()),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let metadata = c.metadata().resolve().await.unwrap();
    assert_eq!(
        metadata.claims()["authorization_schemes"],
        json!([{"spec_urn": "urn:ietf:rfc:6750"}, {"spec_urn": "urn:ietf:rfc:6749"}])
    );
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let other_key = TestSigningKey::generate(2048, t.key().key_id());
    let bad = [
        ("expired", token(with("exp", json!(now - 120)))),
        (
            "another audience",
            token(with("aud", json!("https://elsewhere"))),
        ),
        (
            "another issuer",
            token(with("iss", json!("https://evil.example"))),
        ),
        (
            "no receiver's client",
            token(with("client_id", json!("nobody"))),
        ),
        ("not yet valid", token(with("nbf", json!(now + 3_600)))),
        (
            "another key under its kid",
            TestTransmitter::sign(&other_key, Some("at+jwt"), good.as_object().unwrap()),
        ),
        (
            "unsigned",
            TestTransmitter::unsigned(good.as_object().unwrap()),
        ),
        (
            "an ID token's typ",
            TestTransmitter::sign(t.key(), Some("secevent+jwt"), good.as_object().unwrap()),
        ),
    ];
    for (why, token) in bad {
        let (status, _) = raw(reqwest::Method::GET, streams.clone(), Some(&token), None).await;
        assert_eq!(status, 401, "{why}");
    }
    // The token's receiver sees its own stream, and only it.
    let (status, list) = raw(
        reqwest::Method::GET,
        streams.clone(),
        Some(&token(good.clone())),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (_, mine) = raw(reqwest::Method::GET, streams, Some(IDP_TOKEN), None).await;
    assert_eq!(mine, json!([]));
    served.abort();
    c.stop().await;
    db.drop_db().await;
}

/// A receiver's `400` is its refusal of that SET for good: the SET leaves
/// the queue, is counted and recorded, and is not pushed again — the next
/// one goes out after it, not behind it.
#[tokio::test]
async fn a_set_refused_with_400_is_not_pushed_again() {
    let db = Db::new(false).await;
    let c = Controller::start(&db.url(), "").await;
    let metadata = c.metadata();
    // It expects another audience: each SET is answered 400 invalid_audience.
    let receiver = Receiver::start_for(&c, &metadata, "https://another.example").await;
    c.streams(&metadata, IDP_TOKEN)
        .create_stream(&SsfStreamConfiguration::push(
            &receiver.url(),
            Some(PUSH_AUTH),
            &requested(),
            None,
        ))
        .await
        .unwrap();
    let refused = |n: u32| {
        format!("vigil_controller_ssf_tx_sets_total{{receiver=\"idp\",result=\"refused\"}} {n}")
    };
    for (i, name) in ["alice", "bob"].into_iter().enumerate() {
        c.revoke(name).await;
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !c
            .metrics()
            .await
            .contains(&refused(u32::try_from(i).unwrap() + 1))
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}'s SET refused"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(
        receiver.pushes.load(Ordering::SeqCst),
        2,
        "each pushed once"
    );
    let (_, all) = raw(
        reqwest::Method::GET,
        c.url("/v1/admin/ssf/transmit/streams"),
        Some(ADMIN),
        None,
    )
    .await;
    let s = &all["streams"][0];
    assert_eq!((&s["queued"], &s["failures"]), (&json!(0), &json!(0)));
    assert_eq!(s["refused"].as_array().unwrap().len(), 2);
    assert_eq!(s["refused"][0]["err"], "invalid_audience");
    assert!(receiver.events(SESSION_REVOKED).is_empty());
    assert!(!c.metrics().await.contains("result=\"retry\""));
    c.stop().await;
    db.drop_db().await;
}

/// Both directions: an identity provider's CAEP `session-revoked` (signed
/// by the independent `easyssf-test` transmitter, pushed to Vigil's
/// receiver) revokes alice, and Vigil tells its own receivers — once: the
/// IdP's second signal about her within the echo window is taken (her
/// sessions revoked again) but not sent again, so two systems revoking on
/// each other's word stop after one round.
#[tokio::test]
async fn a_partners_revocation_is_passed_on_once() {
    use easyssf_test::TestTransmitter;
    use easyssf_test::subjects::iss_sub;
    let t = TestTransmitter::new();
    let (jwks, served) = serve_jwks(&t).await;
    let inbound = "https://vigil.test/ssf-in";
    let push_token = "idp-push-token-0123456789";
    let db = Db::new(false).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("idp-push.token"), push_token).unwrap();
    let extra = format!(
        "[[ssf.transmitters]]\nname = \"idp\"\nissuer = {:?}\naudience = {inbound:?}\njwks_uri = {jwks:?}\n\
         push_token_file = {:?}\n",
        t.issuer(),
        dir.path().join("idp-push.token").display().to_string(),
    );
    let c = Controller::start_with(&db.url(), "", &extra).await;
    let metadata = c.metadata();
    let receiver = Receiver::start(&c, &metadata).await;
    c.streams(&metadata, IDP_TOKEN)
        .create_stream(&SsfStreamConfiguration::push(
            &receiver.url(),
            Some(PUSH_AUTH),
            &requested(),
            None,
        ))
        .await
        .unwrap();
    let push = async |t: &TestTransmitter| {
        let mut claims = t.set_claims(SESSION_REVOKED, Some(iss_sub(t.issuer(), "alice")));
        claims.insert("aud".into(), inbound.into());
        let r = client()
            .post(c.url("/v1/ssf/push/idp"))
            .bearer_auth(push_token)
            .header("content-type", "application/secevent+jwt")
            .body(t.sign_set(&claims))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    };
    push(&t).await;
    eventually("the IdP's revocation is passed on", || {
        !receiver.events(SESSION_REVOKED).is_empty()
    })
    .await;
    assert_eq!(
        receiver.events(SESSION_REVOKED)[0]["sub_id"],
        opaque_user("alice")
    );
    // The IdP reports it again (its own echo): taken, not passed on.
    push(&t).await;
    c.revoke("marker").await;
    eventually("the marker is pushed", || {
        receiver.events(SESSION_REVOKED).len() >= 2
    })
    .await;
    let subs: Vec<Value> = receiver
        .events(SESSION_REVOKED)
        .iter()
        .map(|e| e["sub_id"].clone())
        .collect();
    assert_eq!(subs, vec![opaque_user("alice"), opaque_user("marker")]);
    served.abort();
    c.stop().await;
    db.drop_db().await;
}

/// A bad `[ssf_transmitter]` names every problem with its key, at once.
#[test]
fn a_bad_transmitter_config_names_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hash.key"), hex::encode(HASH_KEY)).unwrap();
    std::fs::write(dir.path().join("admin.token"), ADMIN).unwrap();
    std::fs::write(dir.path().join("short.token"), "short").unwrap();
    let path = dir.path().join("controller.toml");
    std::fs::write(
        &path,
        "hash_key_file = \"hash.key\"\nadmin_token_file = \"admin.token\"\n\
         [ssf_transmitter]\ndefault_subjects = \"SOME\"\nmax_queue = 0\nlong_poll_seconds = 9999\n\
         echo_window_seconds = 7200\nbase_url = \"ftp://x\"\n\
         [[ssf_transmitter.receivers]]\nname = \"bad name\"\ntoken_file = \"short.token\"\n\
         subject_format = \"email\"\npush_endpoints = [\"not a url\"]\n\
         [[ssf_transmitter.receivers]]\nname = \"b\"\nsubject_format = \"iss_sub\"\nclient_id = \"c\"\n\
         [[ssf_transmitter.receivers]]\nname = \"b\"\ntoken_sha256 = \"zz\"\n",
    )
    .unwrap();
    let e = match vigil_controller::Config::load(&path) {
        Ok(_) => panic!("a bad config is refused"),
        Err(e) => e,
    };
    let text = e.problems.join("\n");
    for key in [
        "ssf_transmitter: the transmitter signs its SETs with the [signing] keys",
        "ssf_transmitter.base_url",
        "ssf_transmitter.default_subjects",
        "ssf_transmitter.max_queue",
        "ssf_transmitter.long_poll_seconds",
        "ssf_transmitter.echo_window_seconds",
        "ssf_transmitter.receivers[0].name",
        "ssf_transmitter.receivers[0].token_file",
        "ssf_transmitter.receivers[0].subject_format: user names are known only with user_names = \"clear\"",
        "ssf_transmitter.receivers[0].push_endpoints[0]",
        "ssf_transmitter.receivers[1].subject_issuer",
        "ssf_transmitter.receivers[1].client_id: needs [ssf_transmitter.oauth]",
        "ssf_transmitter.receivers[2].name: \"b\" appears twice",
        "ssf_transmitter.receivers[2].token_sha256",
    ] {
        assert!(text.contains(key), "{key} in:\n{text}");
    }
}

/// A measurement, not a check (`cargo test --test ssf_transmit -- --ignored
/// --nocapture delivery_rate`): `N` user revocations committed through the
/// admin API, 8 at a time, and the time until a push receiver that
/// answers 202 at once (no verification: the transmitter is measured) has
/// them all. Prints SETs per second.
#[tokio::test]
#[ignore = "a measurement"]
async fn delivery_rate() {
    const N: usize = 500;
    for postgres in [false, true] {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url(), "").await;
        let listener = c.receiver_listener.lock().unwrap().take().unwrap();
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new().route(
            "/push",
            axum::routing::post({
                let got = Arc::clone(&got);
                move || {
                    got.fetch_add(1, Ordering::SeqCst);
                    async { axum::http::StatusCode::ACCEPTED }
                }
            }),
        );
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let (status, _) = raw(
            reqwest::Method::POST,
            c.url("/v1/ssf/streams"),
            Some(IDP_TOKEN),
            Some(json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": format!("http://{addr}/push")},
                        "events_requested": [SESSION_REVOKED]})),
        )
        .await;
        assert_eq!(status, 201);
        let started = std::time::Instant::now();
        let url = c.url("/v1/admin/users/revoke");
        let mut workers = Vec::new();
        for w in 0..8 {
            let url = url.clone();
            workers.push(tokio::spawn(async move {
                for i in (w..N).step_by(8) {
                    let r = client()
                        .post(&url)
                        .bearer_auth(ADMIN)
                        .header("content-type", "application/json")
                        .body(json!({"user": format!("u{i}")}).to_string())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                }
            }));
        }
        for w in workers {
            w.await.unwrap();
        }
        let committed = started.elapsed();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        while got.load(Ordering::SeqCst) < N {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let all = started.elapsed();
        println!(
            "{}: {N} revocations committed in {committed:?}; all {N} SETs pushed after {all:?}: {:.0} SETs/s",
            if postgres { "PostgreSQL" } else { "SQLite" },
            N as f64 / all.as_secs_f64()
        );
        server.abort();
        c.stop().await;
        db.drop_db().await;
    }
}

/// A backup carries the transmitter: a stream, its queued SETs and the
/// cursor, so that a restored controller neither loses nor re-sends them.
#[tokio::test]
async fn a_copied_store_keeps_streams_queues_and_the_cursor() {
    let from = Db::new(false).await;
    let c = Controller::start(&from.url(), "").await;
    let (_, s) = raw(
        reqwest::Method::POST,
        c.url("/v1/ssf/streams"),
        Some(IDP_TOKEN),
        Some(json!({"delivery": {"method": "urn:ietf:rfc:8936"}, "events_requested": [SESSION_REVOKED]})),
    )
    .await;
    let id = s["stream_id"].as_str().unwrap().to_owned();
    c.revoke("alice").await;
    let enqueued = "vigil_controller_ssf_tx_sets_total{receiver=\"idp\",result=\"enqueued\"} 1";
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !c.metrics().await.contains(enqueued) {
        assert!(tokio::time::Instant::now() < deadline, "enqueued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.stop().await;
    let to = Db::new(true).await;
    let (a, b) = (
        vigil_controller::store::Store::open(&from.url())
            .await
            .unwrap(),
        vigil_controller::store::Store::open(&to.url())
            .await
            .unwrap(),
    );
    vigil_controller::copy::copy(&a, &b).await.unwrap();
    assert_eq!(b.ssf_tx_stream(&id).await.unwrap().unwrap().client, "idp");
    assert_eq!(b.ssf_tx_queued(&id).await.unwrap(), 1);
    // The cursor came too: the restored controller sends alice's SET
    // once (it is queued), not twice.
    let c = Controller::start(&to.url(), "").await;
    let sets = poll(&c, &id, json!({"returnImmediately": true})).await;
    assert_eq!(sets.len(), 1);
    c.revoke("marker").await;
    let ack: Vec<&String> = sets.keys().collect();
    let sets = poll(&c, &id, json!({"ack": ack})).await;
    let subs: Vec<Value> = sets
        .values()
        .map(|j| payload(j.as_str().unwrap())["sub_id"].clone())
        .collect();
    assert_eq!(subs, vec![opaque_user("marker")]);
    c.stop().await;
    from.drop_db().await;
    to.drop_db().await;
}
