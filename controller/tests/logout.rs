//! Universal logout end to end over real HTTP on loopback: the fleet's
//! revocation reaches a node's sync stream; each configured app gets its
//! call through the outbox — a global token revocation request with a
//! signed bearer, an OIDC back-channel `logout_token`, a signed webhook —
//! verified by an independent party: the npm `jose` package
//! (`proxy/tests/idp/verify-jwt.mjs`, fetching the controller's JWK Set
//! over HTTP), and the webhook recipe of `docs/webhooks.md` with the `hmac`
//! crate. Needs node and `npm ci --prefix proxy/tests/idp`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod outbound;

use std::path::PathBuf;

use common::Stream;
use hmac::{Hmac, Mac};
use outbound::{Controller, Db, NODE, Receiver, Seen, client, eventually};
use serde_json::{Value, json};
use sha2::Sha256;
use vigil_fleet::Change;

const SECRET: &str = "app-hook-secret-0123456789abcdef0123";
const ISSUER: &str = "https://vigil.test";
const CLIENT_ID: &str = "crm-client";

fn key_file() -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/keys/rs256-test.pem"),
    )
    .unwrap()
}

/// What `verify-jwt.mjs` says of `token`.
fn jose_verify(token: &str, jwks_uri: &str, audience: &str, typ: &str) -> Value {
    use std::io::Write;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proxy/tests/idp");
    assert!(
        dir.join("node_modules/jose").is_dir(),
        "run `npm ci --prefix proxy/tests/idp` first"
    );
    let mut child = std::process::Command::new("node")
        .arg("verify-jwt.mjs")
        .current_dir(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node");
    let input = json!({"token": token, "jwks_uri": jwks_uri, "issuer": ISSUER, "audience": audience, "typ": typ});
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("verify-jwt.mjs: {}", String::from_utf8_lossy(&out.stdout)))
}

async fn jose(token: String, jwks_uri: String, audience: &'static str, typ: &'static str) -> Value {
    let audience = audience.to_owned();
    tokio::task::spawn_blocking(move || jose_verify(&token, &jwks_uri, &audience, typ))
        .await
        .unwrap()
}

fn header<'a>(s: &'a Seen, name: &str) -> Option<&'a str> {
    s.headers.get(name).and_then(|v| v.to_str().ok())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The config of a controller signing as [`ISSUER`], with three apps on
/// `rx`: `crm` (global token revocation, signed bearer), `wiki`
/// (back-channel logout), `tickets` (webhook).
fn logout_toml(rx: &Receiver, names: &str) -> String {
    format!(
        "user_names = {names:?}\n\
         [signing]\nissuer = {ISSUER:?}\nkey_files = [\"signing.pem\"]\n\
         [outbox]\nallow_http_loopback = true\npoll_ms = 20\nbackoff_base_ms = 20\nbackoff_max_ms = 100\nmax_attempts = 100\n\
         [logout]\ntoken_ttl_seconds = 60\n\
         [[logout.apps]]\nname = \"crm\"\nkind = \"global_token_revocation\"\nurl = {:?}\nsubject = \"email\"\n\
         [[logout.apps]]\nname = \"wiki\"\nkind = \"backchannel_logout\"\nurl = {:?}\nclient_id = {CLIENT_ID:?}\n\
         [[logout.apps]]\nname = \"tickets\"\nkind = \"webhook\"\nurl = {:?}\nsecret_file = \"tickets.secret\"\nsubject = \"opaque\"\n",
        rx.url("/gtr"),
        rx.url("/bcl"),
        rx.url("/hook"),
    )
}

fn target<'a>(record: &'a Value, name: &str) -> &'a Value {
    record["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == name)
        .unwrap_or_else(|| panic!("no target {name} in {record}"))
}

/// One universal logout: the node's stream gets the user's revocation;
/// `crm`'s endpoint fails its first call, so the record shows `failed`
/// (to be retried) and then `delivered`; `wiki` gets a `logout_token` and
/// `crm` a bearer that jose verifies against the controller's JWK Set;
/// `tickets` a webhook the recipe verifies.
async fn universal_logout_reaches_the_node_and_every_app(postgres: bool) {
    let db = Db::new(postgres).await;
    let rx = Receiver::start(0, 500).await;
    let c = Controller::start(
        &db.url(),
        &logout_toml(&rx, "clear"),
        &[("signing.pem", &key_file()), ("tickets.secret", SECRET)],
    )
    .await;
    let mut stream = Stream::open(c.url("/v1/sync?since=0"), NODE).await;
    // The apps' endpoints are down until healed below.
    *rx.fail_first.lock().unwrap() = usize::MAX;
    let rx_apps = rx.clone();
    let (status, record) = c
        .post(
            "/v1/admin/users/logout",
            json!({"user": "alice@example.com"}),
        )
        .await;
    assert_eq!(status, 200, "{record}");
    let id = record["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(record["by"], "admin_api");
    assert_eq!(target(&record, "nodes")["state"], "delivered");
    for app in ["crm", "wiki", "tickets"] {
        assert_eq!(target(&record, app)["state"], "pending");
    }
    // The fleet's revocation on the node's stream.
    let changes = stream.next_changes().await;
    let user = record["user"].as_str().unwrap().to_owned();
    assert!(
        changes
            .iter()
            .any(|ch| matches!(ch, Change::UserRevoked { user: u, .. } if u.to_string() == user)),
        "{changes:?}"
    );
    // Every app failing (the receiver answers 500): each shows failed.
    let failed = eventually("every app failed once", || async {
        let (_, r) = c.get(&format!("/v1/admin/logouts/{id}")).await;
        ["crm", "wiki", "tickets"]
            .iter()
            .all(|a| target(&r, a)["state"] == "failed")
            .then_some(r)
    })
    .await;
    let crm = target(&failed, "crm");
    assert!(
        crm["detail"].as_str().unwrap().starts_with("HTTP 500"),
        "{crm}"
    );
    assert!(
        crm["detail"].as_str().unwrap().ends_with("(will retry)"),
        "{crm}"
    );
    assert!(crm["attempts"].as_u64().unwrap() >= 1);
    rx_apps.heal();
    let done = eventually("every app delivered", || async {
        let (_, r) = c.get(&format!("/v1/admin/logouts/{id}")).await;
        ["crm", "wiki", "tickets"]
            .iter()
            .all(|a| target(&r, a)["state"] == "delivered")
            .then_some(r)
    })
    .await;
    assert!(target(&done, "crm")["attempts"].as_u64().unwrap() >= 2);
    assert_eq!(target(&done, "crm")["detail"], "HTTP 200");

    let jwks_uri = c.url("/.well-known/jwks.json");
    let seen = rx.seen();
    let ok = |path: &str| {
        seen.iter()
            .rev()
            .find(|s| s.path == path && s.status == 200)
            .unwrap()
            .clone()
    };
    // Global token revocation: {"sub_id"} with a bearer jose verifies.
    let gtr = ok("/gtr");
    assert_eq!(header(&gtr, "content-type"), Some("application/json"));
    let body: Value = serde_json::from_slice(&gtr.body).unwrap();
    assert_eq!(
        body,
        json!({"sub_id": {"format": "email", "email": "alice@example.com"}})
    );
    let bearer = header(&gtr, "authorization")
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned();
    let gtr_url: &'static str = Box::leak(rx.url("/gtr").into_boxed_str());
    let v = jose(bearer.clone(), jwks_uri.clone(), gtr_url, "JWT").await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["payload"]["iss"], ISSUER);
    assert_eq!(v["payload"]["aud"], gtr_url);
    let (iat, exp) = (
        v["payload"]["iat"].as_u64().unwrap(),
        v["payload"]["exp"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 60, "token_ttl_seconds");
    assert!(iat.abs_diff(now()) < 60);
    assert_eq!(v["payload"]["jti"].as_str().unwrap().len(), 32);
    // The same bearer for another audience is refused by jose.
    let v = jose(bearer, jwks_uri.clone(), "https://other.example", "JWT").await;
    assert_eq!(
        (v["ok"].clone(), v["code"].clone()),
        (json!(false), json!("ERR_JWT_CLAIM_VALIDATION_FAILED")),
        "{v}"
    );

    // Back-channel logout: a form-encoded logout_token, per OIDC BCL 1.0.
    let bcl = ok("/bcl");
    assert_eq!(
        header(&bcl, "content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&bcl.body)
        .into_owned()
        .collect();
    assert_eq!(form.len(), 1);
    assert_eq!(form[0].0, "logout_token");
    let v = jose(form[0].1.clone(), jwks_uri.clone(), CLIENT_ID, "logout+jwt").await;
    assert_eq!(v["ok"], true, "{v}");
    let p = &v["payload"];
    assert_eq!(p["iss"], ISSUER);
    assert_eq!(p["aud"], CLIENT_ID);
    assert_eq!(p["sub"], "alice@example.com");
    assert_eq!(
        p["events"],
        json!({"http://schemas.openid.net/event/backchannel-logout": {}})
    );
    assert!(p.get("nonce").is_none(), "a logout token never has a nonce");
    assert_eq!(v["header"]["typ"], "logout+jwt");
    // jose refuses it as any other kind of token.
    let v = jose(form[0].1.clone(), jwks_uri.clone(), CLIENT_ID, "JWT").await;
    assert_eq!(v["ok"], false, "{v}");

    // The app's custom API: a signed webhook of type logout.
    let hook = ok("/hook");
    let sig = header(&hook, "vigil-signature").unwrap();
    let (t, v1) = sig.split_once(',').unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&hook.body);
    mac.verify_slice(&hex::decode(v1.strip_prefix("v1=").unwrap()).unwrap())
        .expect("the webhook verifies");
    let b: Value = serde_json::from_slice(&hook.body).unwrap();
    assert_eq!(b["type"], "logout");
    assert_eq!(b["id"], header(&hook, "vigil-delivery").unwrap());
    assert_eq!(b["logout"]["id"], id.as_str());
    assert_eq!(
        b["logout"]["sub_id"],
        json!({"format": "opaque", "id": "alice@example.com"})
    );

    // The user's logouts.
    let (status, list) = c.get("/v1/admin/logouts?user=alice%40example.com").await;
    assert_eq!(status, 200);
    assert_eq!(list["logouts"].as_array().unwrap().len(), 1);
    assert_eq!(list["logouts"][0]["id"], id.as_str());
    let (status, v) = c.get(&format!("/v1/admin/logouts?key={user}")).await;
    assert_eq!((status, v["logouts"][0]["id"].clone()), (200, json!(id)));
    let (status, v) = c.get("/v1/admin/logouts/0123").await;
    assert_eq!((status, v["error"].as_str()), (404, Some("unknown_logout")));
    let (status, _) = c.get("/v1/admin/logouts?user=a&user=b").await;
    assert_eq!(status, 400);
    c.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn sqlite_universal_logout_reaches_the_node_and_every_app() {
    universal_logout_reaches_the_node_and_every_app(false).await;
}

#[tokio::test]
async fn postgres_universal_logout_reaches_the_node_and_every_app() {
    universal_logout_reaches_the_node_and_every_app(true).await;
}

/// Without user names kept, no app can be told who: each app target is
/// recorded `not_supported` and nothing is sent; the fleet's revocation
/// is made all the same. The user's erasure deletes the record.
#[tokio::test]
async fn an_app_without_names_is_not_supported() {
    let db = Db::new(false).await;
    let rx = Receiver::start(0, 500).await;
    let c = Controller::start(
        &db.url(),
        &logout_toml(&rx, "keyed"),
        &[("signing.pem", &key_file()), ("tickets.secret", SECRET)],
    )
    .await;
    let (status, record) = c
        .post("/v1/admin/users/logout", json!({"user": "bob"}))
        .await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(target(&record, "nodes")["state"], "delivered");
    for app in ["crm", "wiki", "tickets"] {
        let t = target(&record, app);
        assert_eq!(t["state"], "not_supported", "{t}");
        assert!(t["detail"].as_str().unwrap().contains("user_names"), "{t}");
    }
    let (_, again) = c
        .get(&format!(
            "/v1/admin/logouts/{}",
            record["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(again, record);
    // Nothing was queued for the apps.
    let m = c.metrics().await;
    assert!(
        !m.contains("vigil_controller_outbox_enqueued_total{endpoint=\"logout:"),
        "{m}"
    );
    assert!(rx.seen().is_empty());
    // The user's erasure takes their logouts with it.
    let (status, _) = c
        .post("/v1/admin/users/erase", json!({"user": "bob"}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = c
        .get(&format!(
            "/v1/admin/logouts/{}",
            record["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 404);
    let (_, list) = c.get("/v1/admin/logouts?user=bob").await;
    assert_eq!(list["logouts"], json!([]));
    // Without the admin's token: refused.
    let r = client()
        .post(c.url("/v1/admin/users/logout"))
        .bearer_auth(NODE)
        .header("content-type", "application/json")
        .body(r#"{"user":"bob"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    c.stop().await;
    db.drop_db().await;
}

/// Every problem of `[logout]` at once, each with its key.
#[test]
fn a_bad_logout_config_names_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hash.key"), "11".repeat(32)).unwrap();
    std::fs::write(dir.path().join("admin.token"), "admin-token-0123456789").unwrap();
    let path = dir.path().join("controller.toml");
    std::fs::write(
        &path,
        "hash_key_file = \"hash.key\"\nadmin_token_file = \"admin.token\"\n\
         [logout]\ntoken_ttl_seconds = 3600\n\
         [[logout.apps]]\nname = \"nodes\"\nkind = \"global_token_revocation\"\nurl = \"https://crm.example/gtr\"\nclient_id = \"x\"\n\
         [[logout.apps]]\nname = \"wiki\"\nkind = \"backchannel_logout\"\nurl = \"https://wiki.example/bcl\"\nsubject = \"iss_sub\"\n\
         [[logout.apps]]\nname = \"t\"\nkind = \"webhook\"\nurl = \"ftp://t.example/\"\n\
         [[logout.apps]]\nname = \"x\"\nkind = \"saml\"\nurl = \"https://x.example/\"\n",
    )
    .unwrap();
    let e = vigil_controller::Config::load(&path).unwrap_err();
    assert_eq!(
        e.problems,
        [
            "logout.token_ttl_seconds: 3600 is out of range; expected 10 to 600",
            "logout.apps[0].name: \"nodes\": 1 to 64 of a-z A-Z 0-9 - _, not \"nodes\"",
            "logout.apps[0].client_id: not used by kind \"global_token_revocation\"",
            "logout.apps[0].kind: a signed bearer needs [signing] (or give bearer_token_file)",
            "logout.apps[1].subject_issuer: needed with subject = \"iss_sub\"",
            "logout.apps[1].kind: a logout_token is signed: needs [signing]",
            "logout.apps[1].client_id: the app's client id (1 to 256 characters) is needed",
            "logout.apps[2].url: \"ftp://t.example/\": expected https://",
            "logout.apps[2].secret_file: needed by kind \"webhook\"",
            "logout.apps[3].kind: \"saml\": expected \"global_token_revocation\", \"backchannel_logout\" or \"webhook\"",
        ]
    );
}

/// A signal can be a universal logout: a transmitter whose
/// `session-revoked` is configured `logout` ends the user's sessions on
/// every node and calls every app, the logout recorded as the
/// transmitter's. The same SET pushed again (a retry, a replay) logs out
/// no one a second time.
#[tokio::test]
async fn a_signal_configured_as_logout_calls_every_app() {
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
         jwks_file = \"idp-jwks.json\"\npush_token_file = \"idp.token\"\n\
         [ssf.transmitters.actions]\nsession-revoked = \"logout\"\n",
        logout_toml(&rx, "clear"),
        t.issuer()
    );
    let c = Controller::start(
        &db.url(),
        &extra,
        &[
            ("signing.pem", &key_file()),
            ("tickets.secret", SECRET),
            ("idp-jwks.json", &jwks),
            ("idp.token", PUSH),
        ],
    )
    .await;
    let mut stream = Stream::open(c.url("/v1/sync?since=0"), NODE).await;
    let mut claims = t.set_claims(
        SESSION_REVOKED,
        Some(iss_sub(t.issuer(), "alice@example.com")),
    );
    claims.insert("aud".into(), AUDIENCE.into());
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
    let changes = stream.next_changes().await;
    assert!(
        changes
            .iter()
            .any(|ch| matches!(ch, Change::UserRevoked { .. })),
        "{changes:?}"
    );
    let record = eventually("the logout's apps delivered", || async {
        let (_, list) = c.get("/v1/admin/logouts?user=alice@example.com").await;
        let record = list["logouts"].as_array()?.first()?.clone();
        ["crm", "wiki", "tickets"]
            .iter()
            .all(|a| target(&record, a)["state"] == "delivered")
            .then_some(record)
    })
    .await;
    assert_eq!(record["by"], "ssf:idp");
    assert_eq!(target(&record, "nodes")["state"], "delivered");
    // The replay: taken once, logged out once.
    assert_eq!(push().await, 202);
    let (_, list) = c.get("/v1/admin/logouts?user=alice@example.com").await;
    assert_eq!(list["logouts"].as_array().unwrap().len(), 1, "{list}");
    c.stop().await;
    db.drop_db().await;
}
