//! Remediation webhooks end to end over real HTTP on loopback: a receiver
//! that verifies each delivery's signature the way `docs/webhooks.md`
//! tells receivers to (HMAC-SHA256 computed here with the `hmac` crate,
//! compared in constant time, the timestamp within five minutes), fails as
//! scripted, and sees the retries; dead letters through the admin API; the
//! outbox on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod outbound;

use hmac::{Hmac, Mac};
use outbound::{Controller, Db, NODE, Receiver, Seen, client, closed_port, eventually, metric};
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &str = "whsec-0123456789abcdef0123456789abcdef";

/// Why a receiver following the recipe refuses a delivery.
#[derive(Debug, PartialEq, Eq)]
enum Rejected {
    NoHeader,
    Malformed,
    Stale,
    BadSignature,
}

/// The receiver's recipe (`docs/webhooks.md`, Verifying a delivery):
/// parse `t=<unix>,v1=<hex>`, refuse a `t` more than 300 s from `now`,
/// compute HMAC-SHA256(secret, "<t>.<body>") and compare it with `v1` in
/// constant time (`Mac::verify_slice`).
fn verify(secret: &[u8], header: Option<&str>, body: &[u8], now: u64) -> Result<u64, Rejected> {
    let header = header.ok_or(Rejected::NoHeader)?;
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = Some(v.parse::<u64>().map_err(|_| Rejected::Malformed)?),
            Some(("v1", v)) => v1.push(hex::decode(v).map_err(|_| Rejected::Malformed)?),
            _ => {}
        }
    }
    let t = t.ok_or(Rejected::Malformed)?;
    if v1.is_empty() {
        return Err(Rejected::Malformed);
    }
    if now.abs_diff(t) > 300 {
        return Err(Rejected::Stale);
    }
    for sig in &v1 {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        if mac.verify_slice(sig).is_ok() {
            return Ok(t);
        }
    }
    Err(Rejected::BadSignature)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn header<'a>(s: &'a Seen, name: &str) -> Option<&'a str> {
    s.headers.get(name).and_then(|v| v.to_str().ok())
}

fn body(s: &Seen) -> Value {
    serde_json::from_slice(&s.body).unwrap()
}

/// A controller with one webhook `hook` at `url`.
/// `outbox` adds to or overrides the fast defaults of the tests.
fn webhook_toml(url: &str, events: &str, outbox: &str) -> String {
    let defaults: String = [
        "allow_http_loopback = true",
        "poll_ms = 20",
        "backoff_base_ms = 20",
        "backoff_max_ms = 200",
    ]
    .iter()
    .filter(|d| !outbox.contains(d.split(" =").next().unwrap()))
    .map(|d| format!("{d}\n"))
    .collect();
    format!(
        "[outbox]\n{defaults}{outbox}\n\
         [[webhooks]]\nname = \"hook\"\nurl = {url:?}\nsecret_file = \"hook.secret\"\nevents = [{events}]\n"
    )
}

async fn post_detection(c: &Controller, id: &str, action: &str, score: u8) -> u16 {
    let batch = json!({"v": 3, "events": [{
        "id": id, "kind": "detection", "reference": format!("ref-{id}"),
        "session": null, "user": null, "route": "app", "rule": "travel",
        "action": action, "enforced": true, "score": score,
        "reasons": [["impossible_travel", 60]], "at": now(),
    }]});
    client()
        .post(c.url("/v1/events"))
        .bearer_auth(NODE)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&batch).unwrap())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The receiver fails the first two attempts; the third is delivered.
/// Every attempt carries the same delivery id and body and a signature
/// the recipe accepts; the body is the documented contract; a node's
/// batch posted again is not delivered again, and a detection below the
/// webhook's filter is not delivered at all.
async fn a_webhook_is_signed_retried_and_delivered_once(postgres: bool) {
    let db = Db::new(postgres).await;
    let rx = Receiver::start(2, 500).await;
    let extra = format!(
        "user_names = \"clear\"\n{}detection_min_score = 50\ndetection_actions = [\"revoke\", \"block\"]\n",
        webhook_toml(&rx.url("/hook"), "\"revocation\", \"detection\"", "")
    );
    let c = Controller::start(&db.url(), &extra, &[("hook.secret", SECRET)]).await;
    let (status, answer) = c
        .post(
            "/v1/admin/users/revoke",
            json!({"user": "alice@example.com"}),
        )
        .await;
    assert_eq!(status, 200);
    let seq = answer["seq"].as_u64().unwrap();
    let seen = rx.wait_for("three attempts", |s| s.len() >= 3).await;
    assert_eq!(
        seen.iter().map(|s| s.status).collect::<Vec<_>>(),
        [500, 500, 200]
    );
    let id = header(&seen[0], "vigil-delivery").unwrap().to_owned();
    for s in &seen {
        assert_eq!(s.path, "/hook");
        assert_eq!(
            header(s, "vigil-delivery"),
            Some(id.as_str()),
            "one id for every attempt"
        );
        assert_eq!(s.body, seen[0].body, "one body for every attempt");
        assert_eq!(header(s, "content-type"), Some("application/json"));
        verify(
            SECRET.as_bytes(),
            header(s, "vigil-signature"),
            &s.body,
            now(),
        )
        .unwrap();
    }
    let b = body(&seen[0]);
    assert_eq!(b["version"], 1);
    assert_eq!(b["id"], id.as_str());
    assert_eq!(b["type"], "revocation");
    assert!(b["occurred_at"].as_u64().unwrap() >= now() - 60);
    assert_eq!(b["revocation"]["scope"], "user");
    assert_eq!(b["revocation"]["by"], "admin_api");
    assert_eq!(b["revocation"]["seq"], seq);
    assert_eq!(b["revocation"]["user"]["name"], "alice@example.com");
    assert_eq!(b["revocation"]["user"]["key"].as_str().unwrap().len(), 16);

    // A detection the filter passes, posted twice (the node had no ack):
    // one delivery. One below the score, one of another action: none.
    assert_eq!(post_detection(&c, "d-1", "revoke", 80).await, 200);
    assert_eq!(post_detection(&c, "d-1", "revoke", 80).await, 200);
    assert_eq!(post_detection(&c, "d-2", "revoke", 40).await, 200);
    assert_eq!(post_detection(&c, "d-3", "step_up", 90).await, 200);
    let seen = rx.wait_for("the detection", |s| s.len() >= 4).await;
    let d = body(&seen[3]);
    assert_eq!(d["type"], "detection");
    assert_eq!(d["detection"]["node"], "a");
    assert_eq!(d["detection"]["reference"], "ref-d-1");
    assert_eq!(d["detection"]["action"], "revoke");
    assert_eq!(d["detection"]["score"], 80);
    assert_eq!(
        d["detection"]["reasons"],
        json!([{"code": "impossible_travel", "points": 60}])
    );
    verify(
        SECRET.as_bytes(),
        header(&seen[3], "vigil-signature"),
        &seen[3].body,
        now(),
    )
    .unwrap();
    // The duplicate was enqueued under the same id: counted, not sent.
    let m = eventually("the duplicate counted", || async {
        let m = c.metrics().await;
        (metric(&m, "vigil_controller_outbox_enqueued_total{endpoint=\"webhook:hook\",result=\"duplicate\"}") == 1.0)
            .then_some(m)
    })
    .await;
    assert_eq!(
        metric(
            &m,
            "vigil_controller_outbox_attempts_total{endpoint=\"webhook:hook\",result=\"failed\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "vigil_controller_outbox_attempts_total{endpoint=\"webhook:hook\",result=\"delivered\"}"
        ),
        2.0
    );
    assert_eq!(rx.seen().len(), 4, "nothing else was sent");
    c.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn sqlite_a_webhook_is_signed_retried_and_delivered_once() {
    a_webhook_is_signed_retried_and_delivered_once(false).await;
}

#[tokio::test]
async fn postgres_a_webhook_is_signed_retried_and_delivered_once() {
    a_webhook_is_signed_retried_and_delivered_once(true).await;
}

/// An endpoint that always fails: after `max_attempts` the call is a dead
/// letter in the admin API with its last error; retried by the admin once
/// the endpoint is back, it is delivered (same id); another is deleted.
async fn a_failing_endpoint_yields_dead_letters_to_retry_or_delete(postgres: bool) {
    let db = Db::new(postgres).await;
    let rx = Receiver::start(usize::MAX, 503).await;
    let extra = webhook_toml(&rx.url("/hook"), "\"revocation\"", "max_attempts = 3");
    let c = Controller::start(&db.url(), &extra, &[("hook.secret", SECRET)]).await;
    for user in ["bob", "carol"] {
        let (status, _) = c
            .post("/v1/admin/users/revoke", json!({"user": user}))
            .await;
        assert_eq!(status, 200);
    }
    let dead = eventually("two dead letters", || async {
        let (status, v) = c.get("/v1/admin/outbox/dead").await;
        assert_eq!(status, 200);
        (v["dead_letters"].as_array().unwrap().len() == 2).then_some(v)
    })
    .await;
    assert_eq!(rx.seen().len(), 6, "three attempts each");
    for d in dead["dead_letters"].as_array().unwrap() {
        assert_eq!(d["endpoint"], "webhook:hook");
        assert_eq!(d["kind"], "webhook");
        assert_eq!(d["attempts"], 3);
        assert_eq!(d["last_error"], "HTTP 503");
        assert_eq!(d["id"].as_str().unwrap().len(), 32);
    }
    assert_eq!(dead["next_offset"], Value::Null);
    let retried = dead["dead_letters"][0]["id"].as_str().unwrap().to_owned();
    let deleted = dead["dead_letters"][1]["id"].as_str().unwrap().to_owned();

    rx.heal();
    let (status, v) = c
        .post("/v1/admin/outbox/retry", json!({"id": retried}))
        .await;
    assert_eq!((status, v["state"].as_str()), (200, Some("pending")));
    let seen = rx
        .wait_for("the retried delivery", |s| {
            s.iter().any(|s| s.status == 200)
        })
        .await;
    let ok = seen.iter().find(|s| s.status == 200).unwrap();
    assert_eq!(header(ok, "vigil-delivery"), Some(retried.as_str()));
    verify(
        SECRET.as_bytes(),
        header(ok, "vigil-signature"),
        &ok.body,
        now(),
    )
    .unwrap();
    let (status, v) = c
        .post("/v1/admin/outbox/retry", json!({"id": retried}))
        .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (404, Some("unknown_delivery")),
        "delivered: no longer a dead letter"
    );

    let (status, _) = c
        .post("/v1/admin/outbox/delete", json!({"id": deleted}))
        .await;
    assert_eq!(status, 200);
    let (status, v) = c
        .post("/v1/admin/outbox/delete", json!({"id": deleted}))
        .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (404, Some("unknown_delivery"))
    );
    let (_, v) = c.get("/v1/admin/outbox/dead").await;
    assert_eq!(v["dead_letters"], json!([]));
    // Without the admin's token: refused before anything is read.
    let r = client()
        .post(c.url("/v1/admin/outbox/retry"))
        .bearer_auth(NODE)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&json!({"id": retried})).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let m = c.metrics().await;
    assert_eq!(
        metric(
            &m,
            "vigil_controller_outbox_attempts_total{endpoint=\"webhook:hook\",result=\"dead\"}"
        ),
        2.0
    );
    c.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn sqlite_a_failing_endpoint_yields_dead_letters_to_retry_or_delete() {
    a_failing_endpoint_yields_dead_letters_to_retry_or_delete(false).await;
}

#[tokio::test]
async fn postgres_a_failing_endpoint_yields_dead_letters_to_retry_or_delete() {
    a_failing_endpoint_yields_dead_letters_to_retry_or_delete(true).await;
}

/// What a receiver following the recipe refuses: a body changed in
/// transit, a signature under another secret, a delivery replayed more
/// than five minutes later, a missing or mangled header.
#[tokio::test]
async fn a_forged_or_stale_signature_is_what_the_recipe_rejects() {
    let db = Db::new(false).await;
    let rx = Receiver::start(0, 500).await;
    let extra = webhook_toml(&rx.url("/hook"), "\"revocation\"", "");
    let c = Controller::start(&db.url(), &extra, &[("hook.secret", SECRET)]).await;
    let (status, _) = c
        .post("/v1/admin/users/revoke", json!({"user": "dave"}))
        .await;
    assert_eq!(status, 200);
    let seen = rx.wait_for("the delivery", |s| !s.is_empty()).await;
    let s = &seen[0];
    let sig = header(s, "vigil-signature").unwrap();
    let t = verify(SECRET.as_bytes(), Some(sig), &s.body, now()).unwrap();
    // The body is the user key's revocation; the name is not kept.
    assert_eq!(body(s)["revocation"]["user"]["name"], Value::Null);

    let mut changed = s.body.clone();
    changed.extend_from_slice(b" ");
    assert_eq!(
        verify(SECRET.as_bytes(), Some(sig), &changed, now()),
        Err(Rejected::BadSignature)
    );
    let tampered = String::from_utf8(s.body.clone())
        .unwrap()
        .replace("admin_api", "someone");
    assert_eq!(
        verify(SECRET.as_bytes(), Some(sig), tampered.as_bytes(), now()),
        Err(Rejected::BadSignature)
    );
    assert_eq!(
        verify(
            b"another-secret-0123456789abcdef0123",
            Some(sig),
            &s.body,
            now()
        ),
        Err(Rejected::BadSignature)
    );
    // Replayed 301 s after it was signed.
    assert_eq!(
        verify(SECRET.as_bytes(), Some(sig), &s.body, t + 301),
        Err(Rejected::Stale)
    );
    // A forger who moves the timestamp forward breaks the signature.
    let moved = sig.replacen(&format!("t={t}"), &format!("t={}", t + 400), 1);
    assert_eq!(
        verify(SECRET.as_bytes(), Some(&moved), &s.body, t + 401),
        Err(Rejected::BadSignature)
    );
    assert_eq!(
        verify(SECRET.as_bytes(), None, &s.body, now()),
        Err(Rejected::NoHeader)
    );
    assert_eq!(
        verify(SECRET.as_bytes(), Some("t=1"), &s.body, now()),
        Err(Rejected::Malformed)
    );
    assert_eq!(
        verify(SECRET.as_bytes(), Some("v1=zz,t=1"), &s.body, now()),
        Err(Rejected::Malformed)
    );
    c.stop().await;
    db.drop_db().await;
}

/// A queue at its bound: what comes beyond is a dead letter at once,
/// counted, never held in memory; the pending ones stay.
#[tokio::test]
async fn a_full_queue_dead_letters_the_overflow() {
    let db = Db::new(false).await;
    let down = format!("http://127.0.0.1:{}/hook", closed_port());
    // Long back-off: the first attempt fails at once, the rest wait.
    let extra = format!(
        "[outbox]\nallow_http_loopback = true\npoll_ms = 20\nbackoff_base_ms = 600000\nmax_queue = 2\n\
         [[webhooks]]\nname = \"hook\"\nurl = {down:?}\nsecret_file = \"hook.secret\"\nevents = [\"revocation\"]\n"
    );
    let c = Controller::start(&db.url(), &extra, &[("hook.secret", SECRET)]).await;
    for i in 0..5 {
        let (status, _) = c
            .post("/v1/admin/users/revoke", json!({"user": format!("u{i}")}))
            .await;
        assert_eq!(status, 200);
    }
    let m = c.metrics().await;
    assert_eq!(
        metric(
            &m,
            "vigil_controller_outbox_enqueued_total{endpoint=\"webhook:hook\",result=\"pending\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "vigil_controller_outbox_enqueued_total{endpoint=\"webhook:hook\",result=\"overflow\"}"
        ),
        3.0
    );
    let (_, v) = c.get("/v1/admin/outbox/dead").await;
    let dead = v["dead_letters"].as_array().unwrap();
    assert_eq!(dead.len(), 3);
    for d in dead {
        assert_eq!(d["attempts"], 0);
        assert_eq!(
            d["last_error"],
            "queue full: 2 calls pending for this endpoint"
        );
    }
    c.stop().await;
    db.drop_db().await;
}

/// A call owed when the controller stops is delivered by the next one on
/// the same store, under the same id: nothing is lost with the process.
async fn a_restart_loses_no_call(postgres: bool) {
    let db = Db::new(postgres).await;
    let down = format!("http://127.0.0.1:{}/hook", closed_port());
    let first = Controller::start(
        &db.url(),
        &webhook_toml(
            &down,
            "\"revocation\"",
            "backoff_base_ms = 2000\nbackoff_max_ms = 2000",
        ),
        &[("hook.secret", SECRET)],
    )
    .await;
    let (status, _) = first
        .post("/v1/admin/users/revoke", json!({"user": "erin"}))
        .await;
    assert_eq!(status, 200);
    eventually("the first attempt failed", || async {
        let m = first.metrics().await;
        (metric(
            &m,
            "vigil_controller_outbox_attempts_total{endpoint=\"webhook:hook\",result=\"failed\"}",
        ) >= 1.0)
            .then_some(())
    })
    .await;
    first.stop().await;

    let rx = Receiver::start(0, 500).await;
    let second = Controller::start(
        &db.url(),
        &webhook_toml(&rx.url("/hook"), "\"revocation\"", ""),
        &[("hook.secret", SECRET)],
    )
    .await;
    let seen = rx.wait_for("the owed call", |s| !s.is_empty()).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(body(&seen[0])["revocation"]["scope"], "user");
    verify(
        SECRET.as_bytes(),
        header(&seen[0], "vigil-signature"),
        &seen[0].body,
        now(),
    )
    .unwrap();
    second.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn sqlite_a_restart_loses_no_call() {
    a_restart_loses_no_call(false).await;
}

#[tokio::test]
async fn postgres_a_restart_loses_no_call() {
    a_restart_loses_no_call(true).await;
}

/// Two replicas on one PostgreSQL store, one endpoint: every call is
/// delivered exactly once (each row claimed by one replica at a time).
#[tokio::test]
async fn postgres_two_replicas_deliver_each_call_once() {
    let db = Db::new(true).await;
    let rx = Receiver::start(0, 500).await;
    let extra = webhook_toml(&rx.url("/hook"), "\"revocation\"", "");
    let a = Controller::start(&db.url(), &extra, &[("hook.secret", SECRET)]).await;
    let b = Controller::start(&db.url(), &extra, &[("hook.secret", SECRET)]).await;
    let n = 40;
    let mut calls = Vec::new();
    for i in 0..n {
        let c = if i % 2 == 0 { &a } else { &b };
        calls.push(c.post("/v1/admin/users/revoke", json!({"user": format!("r{i}")})));
    }
    for (status, _) in futures_join(calls).await {
        assert_eq!(status, 200);
    }
    let seen = rx.wait_for("every call", |s| s.len() >= n).await;
    let mut ids: Vec<_> = seen
        .iter()
        .map(|s| header(s, "vigil-delivery").unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "every call once");
    // Each replica counts what it delivered: the two sum to the calls.
    let series =
        "vigil_controller_outbox_attempts_total{endpoint=\"webhook:hook\",result=\"delivered\"}";
    eventually("every delivery recorded", || async {
        let sum = metric(&a.metrics().await, series) + metric(&b.metrics().await, series);
        (sum >= n as f64).then_some(())
    })
    .await;
    let delivered = metric(&a.metrics().await, series) + metric(&b.metrics().await, series);
    assert_eq!(delivered, n as f64);
    assert_eq!(rx.seen().len(), n, "no call delivered twice");
    a.stop().await;
    b.stop().await;
    db.drop_db().await;
}

async fn futures_join<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    for f in fs {
        out.push(f.await);
    }
    out
}

/// Every problem of `[outbox]` and `[[webhooks]]` at once, each with its
/// key.
#[test]
fn a_bad_webhook_config_names_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hash.key"), "11".repeat(32)).unwrap();
    std::fs::write(dir.path().join("admin.token"), "admin-token-0123456789").unwrap();
    std::fs::write(dir.path().join("short.secret"), "short").unwrap();
    std::fs::write(dir.path().join("ok.secret"), SECRET).unwrap();
    let path = dir.path().join("controller.toml");
    std::fs::write(
        &path,
        "hash_key_file = \"hash.key\"\nadmin_token_file = \"admin.token\"\n\
         [outbox]\nmax_attempts = 0\nbackoff_base_ms = 5\n\
         [[webhooks]]\nname = \"a b\"\nurl = \"http://soar.example.com/hook\"\nsecret_file = \"short.secret\"\nevents = [\"step_up_failure\", \"detections\"]\n\
         [[webhooks]]\nname = \"loop\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret_file = \"ok.secret\"\nevents = [\"signal\"]\nmax_concurrency = 0\ndetection_actions = [\"kill\"]\n",
    )
    .unwrap();
    let e = vigil_controller::Config::load(&path).unwrap_err();
    assert_eq!(
        e.problems,
        [
            "outbox.max_attempts: 0 is out of range; expected 1 to 100",
            "outbox.backoff_base_ms: 5 is out of range; expected 10 to 3600000",
            "webhooks[0].name: \"a b\": 1 to 64 of a-z A-Z 0-9 - _",
            "webhooks[0].url: \"http://soar.example.com/hook\": expected https://",
            "webhooks[0].secret_file: short.secret: a secret of at least 32 characters",
            "webhooks[0].events: \"step_up_failure\": the controller does not learn of failed \
             step-ups (nodes do not report them); not available in this version",
            "webhooks[0].events: \"detections\": expected \"detection\", \"revocation\", \"signal\" or \"logout\"",
            "webhooks[1].url: \"http://127.0.0.1:9/hook\": http:// to loopback needs [outbox] allow_http_loopback = true",
            "webhooks[1].detection_actions: \"kill\": expected \"allow\", \"step_up\", \"block\" or \"revoke\"",
            "webhooks[1].max_concurrency: 0 is out of range; expected 1 to 64",
        ]
    );
}

/// A SET acted on, from an independent transmitter (`easyssf-test`): a
/// `signal` event and, since it revoked the user, a `revocation` by
/// `ssf:<transmitter>`; the same SET pushed again is a replay the
/// receiver takes once, and tells no webhook again.
#[tokio::test]
async fn a_set_acted_on_is_told_as_a_signal_and_a_revocation() {
    use easyssf_test::TestTransmitter;
    use easyssf_test::subjects::iss_sub;
    const PUSH: &str = "idp-push-token-0123456789";
    const AUDIENCE: &str = "https://vigil.test/ssf";
    const SESSION_REVOKED: &str =
        "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
    let db = Db::new(false).await;
    let rx = Receiver::start(0, 500).await;
    let t = TestTransmitter::new();
    let jwks = serde_json::to_string(&t.jwk_set()).unwrap();
    let extra = format!(
        "{}[[ssf.transmitters]]\nname = \"idp\"\nissuer = {:?}\naudience = {AUDIENCE:?}\n\
         jwks_file = \"idp-jwks.json\"\npush_token_file = \"idp.token\"\n",
        webhook_toml(&rx.url("/hook"), "\"signal\", \"revocation\"", ""),
        t.issuer()
    );
    let c = Controller::start(
        &db.url(),
        &extra,
        &[
            ("hook.secret", SECRET),
            ("idp-jwks.json", &jwks),
            ("idp.token", PUSH),
        ],
    )
    .await;
    let mut claims = t.set_claims(SESSION_REVOKED, Some(iss_sub(t.issuer(), "alice")));
    claims.insert("aud".into(), AUDIENCE.into());
    let jti = claims["jti"].as_str().unwrap().to_owned();
    let set = t.sign_set(&claims);
    let push = || async {
        client()
            .post(c.url("/v1/ssf/push/idp"))
            .bearer_auth(PUSH)
            .header("content-type", "application/secevent+jwt")
            .body(set.clone())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(push().await, 202);
    let seen = rx.wait_for("two deliveries", |s| s.len() >= 2).await;
    let mut bodies: Vec<Value> = seen.iter().map(body).collect();
    bodies.sort_by_key(|b| b["type"].as_str().unwrap().to_owned());
    for s in &seen {
        verify(
            SECRET.as_bytes(),
            header(s, "vigil-signature"),
            &s.body,
            now(),
        )
        .unwrap();
    }
    let (revocation, signal) = (&bodies[0], &bodies[1]);
    assert_eq!(signal["type"], "signal");
    assert_eq!(signal["signal"]["transmitter"], "idp");
    assert_eq!(signal["signal"]["event"], SESSION_REVOKED);
    assert_eq!(signal["signal"]["jti"], jti.as_str());
    assert_eq!(signal["signal"]["action"], "revoke_user");
    assert_eq!(revocation["type"], "revocation");
    assert_eq!(revocation["revocation"]["by"], "ssf:idp");
    assert_eq!(revocation["revocation"]["scope"], "user");
    assert_eq!(
        revocation["revocation"]["user"]["key"],
        signal["signal"]["user"]["key"]
    );
    // The replay: taken once, told once.
    assert_eq!(push().await, 202);
    let m = c.metrics().await;
    assert_eq!(
        metric(
            &m,
            "vigil_controller_outbox_enqueued_total{endpoint=\"webhook:hook\",result=\"pending\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "vigil_controller_ssf_sets_total{result=\"duplicate\",transmitter=\"idp\"}"
        ),
        1.0
    );
    c.stop().await;
    db.drop_db().await;
}

/// A universal logout is told to the webhooks that asked for `logout`.
#[tokio::test]
async fn a_logout_is_told_to_the_webhooks_that_asked() {
    let db = Db::new(false).await;
    let rx = Receiver::start(0, 500).await;
    let extra = format!(
        "user_names = \"clear\"\n{}",
        webhook_toml(&rx.url("/hook"), "\"logout\"", "")
    );
    let c = Controller::start(&db.url(), &extra, &[("hook.secret", SECRET)]).await;
    let (status, record) = c
        .post("/v1/admin/users/logout", json!({"user": "frank"}))
        .await;
    assert_eq!(status, 200, "{record}");
    let seen = rx.wait_for("the logout", |s| !s.is_empty()).await;
    assert_eq!(seen.len(), 1);
    verify(
        SECRET.as_bytes(),
        header(&seen[0], "vigil-signature"),
        &seen[0].body,
        now(),
    )
    .unwrap();
    let b = body(&seen[0]);
    assert_eq!(b["type"], "logout");
    assert_eq!(b["logout"], record);
    c.stop().await;
    db.drop_db().await;
}

/// A call pending for a webhook the config no longer has is not left
/// pending for ever: the next controller dead-letters it at start.
#[tokio::test]
async fn a_call_to_a_removed_webhook_becomes_a_dead_letter() {
    let db = Db::new(false).await;
    let down = format!("http://127.0.0.1:{}/hook", closed_port());
    let first = Controller::start(
        &db.url(),
        &webhook_toml(
            &down,
            "\"revocation\"",
            "backoff_base_ms = 600000\nbackoff_max_ms = 600000",
        ),
        &[("hook.secret", SECRET)],
    )
    .await;
    let (status, _) = first
        .post("/v1/admin/users/revoke", json!({"user": "gina"}))
        .await;
    assert_eq!(status, 200);
    eventually("the first attempt failed", || async {
        let m = first.metrics().await;
        (metric(
            &m,
            "vigil_controller_outbox_attempts_total{endpoint=\"webhook:hook\",result=\"failed\"}",
        ) >= 1.0)
            .then_some(())
    })
    .await;
    first.stop().await;
    let renamed =
        webhook_toml(&down, "\"revocation\"", "").replace("name = \"hook\"", "name = \"renamed\"");
    let second = Controller::start(&db.url(), &renamed, &[("hook.secret", SECRET)]).await;
    let dead = eventually("the orphan dead-lettered", || async {
        let (_, v) = second.get("/v1/admin/outbox/dead").await;
        (v["dead_letters"].as_array().unwrap().len() == 1).then_some(v)
    })
    .await;
    assert_eq!(dead["dead_letters"][0]["endpoint"], "webhook:hook");
    assert_eq!(
        dead["dead_letters"][0]["last_error"],
        "endpoint no longer configured"
    );
    assert_eq!(dead["dead_letters"][0]["attempts"], 1);
    second.stop().await;
    db.drop_db().await;
}
