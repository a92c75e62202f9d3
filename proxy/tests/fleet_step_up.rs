//! A user-level step-up across the fleet, for real: `vigil-controller` (in
//! this test process, on SQLite or a fresh PostgreSQL database) asks every
//! session of a user to sign in afresh — an operator's
//! `POST /v1/admin/users/step-up`, then the identity provider's CAEP
//! `credential-change` (a SET signed by the `easyssf-test` crate's
//! transmitter) — and a `vigil-proxy` node attached to it sends that
//! user's next request to the real OpenID provider (npm `oidc-provider`,
//! `tests/idp/`). The user signs in and goes on; a bystander is never
//! asked; a thief holding the cookie cannot pass.
//!
//! Needs node and `npm ci --prefix proxy/tests/idp`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{CLIENT_SECRET, Config, FormClient, Idp, IdpConfig, Origin, Page, Proxy, Route};
use easyssf_test::TestTransmitter;
use easyssf_test::subjects::{complex, iss_sub, opaque};

const ADMIN: &str = "stepup-admin-token-0123456789";
const NODE: &str = "stepup-node-token-0123";
const PUSH: &str = "stepup-push-token-0123456789";
const AUDIENCE: &str = "https://vigil.test/ssf";
const CALLBACK: &str = "/.vigil/oidc/callback";
const DEADLINE: Duration = Duration::from_secs(30);
const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The controller, the provider and one node in front of an origin.
struct Fleet {
    // Dropped in order: the node before the provider it talks to.
    node: Proxy,
    idp: Idp,
    transmitter: TestTransmitter,
    controller: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    store: String,
    pg: Option<String>,
    _origin: Origin,
    _dir: tempfile::TempDir,
}

impl Fleet {
    /// With `backchannel`, the provider's client has a back-channel
    /// logout URI (the controller's receiver, which takes the provider's
    /// logout tokens as provider `op`), so its ID tokens carry `sid`.
    async fn start(postgres: bool, backchannel: bool) -> Fleet {
        // The route allows at low risk: only the user's step-up sends
        // anyone to the provider here.
        Fleet::with_route(postgres, backchannel, Route::new("app", "/", "app").oidc()).await
    }

    async fn with_route(postgres: bool, backchannel: bool, route: Route) -> Fleet {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("fleet-hash.key");
        std::fs::write(&key, "5a".repeat(32)).unwrap();
        std::fs::write(dir.path().join("admin.token"), ADMIN).unwrap();
        std::fs::write(dir.path().join("idp.token"), PUSH).unwrap();
        let transmitter = TestTransmitter::new();
        std::fs::write(
            dir.path().join("idp-jwks.json"),
            serde_json::json!({"keys": [transmitter.key().public_jwk()]}).to_string(),
        )
        .unwrap();
        let pg = if postgres {
            sqlx::any::install_default_drivers();
            let name = format!("vigil_stepup_{:016x}", rand::random::<u64>());
            let admin = sqlx::AnyPool::connect(PG_ADMIN).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&admin)
                .await
                .unwrap();
            Some(name)
        } else {
            None
        };
        let store = match &pg {
            Some(name) => format!("postgres://postgres@127.0.0.1:5432/{name}"),
            None => format!("sqlite://{}", dir.path().join("controller.db").display()),
        };
        let node_config = Config::new();
        let controller = common::free_addr();
        let mut idp_config =
            IdpConfig::new().redirect_uri(&format!("http://{}{CALLBACK}", node_config.http_addr()));
        if backchannel {
            idp_config = idp_config.backchannel_logout_uri(&format!(
                "http://{controller}/v1/oidc/backchannel-logout/op"
            ));
        }
        // The provider is its own transmitter: its SETs' `iss` is its
        // OpenID issuer (signed with the `easyssf-test` transmitter's key).
        let idp = Idp::start(&idp_config);
        let config = dir.path().join("controller.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{controller}\"\nstore = {store:?}\nhash_key_file = {:?}\nadmin_token_file = \"admin.token\"\n\
                 [[nodes]]\nname = \"a\"\ntoken_sha256 = \"{}\"\n\
                 [[ssf.transmitters]]\nname = \"idp\"\nissuer = {:?}\naudience = {AUDIENCE:?}\n\
                 jwks_file = \"idp-jwks.json\"\npush_token_file = \"idp.token\"\n\
                 [[backchannel_logout.providers]]\nname = \"op\"\nissuer = {:?}\nclient_id = \"vigil\"\njwks_uri = {:?}\n",
                key.display().to_string(),
                hex::encode(vigil_controller::config::token_hash(NODE)),
                idp.issuer(),
                idp.issuer(),
                idp.url("/jwks"),
            ),
        )
        .unwrap();
        let config = vigil_controller::Config::load(&config).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            vigil_controller::run(config, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });

        let origin = Origin::start();
        let state = dir.path().join("a");
        std::fs::create_dir_all(&state).unwrap();
        let token_file = state.join("controller.token");
        std::fs::write(&token_file, NODE).unwrap();
        let secret = dir.path().join("client-secret");
        std::fs::write(&secret, format!("{CLIENT_SECRET}\n")).unwrap();
        let config = node_config.state_dir(&state).upstream("app", origin.addr());
        let config = config
            .route(route)
            .section(&format!(
                "[session]\nhash_key_file = {:?}\n\n[controller]\nurl = \"http://{controller}\"\ntoken_file = {:?}\n\n\
                 [oidc]\nissuer = {:?}\nclient_id = \"vigil\"\nclient_secret_file = {:?}\n",
                key.display().to_string(),
                token_file.display().to_string(),
                idp.issuer(),
                secret.display().to_string(),
            ));
        let node = Proxy::start(&config.render()).await;
        node.wait_for_metric("vigil_proxy_fleet_connected", &[], |v| v == 1.0)
            .await;
        Fleet {
            node,
            idp,
            transmitter,
            controller,
            stop: Some(stop),
            store,
            pg,
            _origin: origin,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        self.node.url(path)
    }

    /// `user` signs in at the app and gets session cookie `session`.
    async fn signed_in(&self, user: &str, session: &str) -> FormClient {
        let mut person = FormClient::new();
        let login = person
            .get(&self.url(&format!("/login?user={user}&session={session}")))
            .await;
        assert_eq!(login.status, 200, "{}", login.body);
        let page = person.get(&self.url("/echo")).await;
        assert_eq!(page.status, 200, "{}", page.body);
        person
    }

    /// Polls `path` as `person` until the node sends them to the
    /// provider (`303` to the issuer); every answer before must be the
    /// page. Returns the redirect.
    async fn until_sent_to_sign_in(&self, person: &mut FormClient, path: &str) -> Page {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let page = person.get(&self.url(path)).await;
            if page.status == 303 {
                let to = page.location().unwrap();
                assert!(to.starts_with(self.idp.issuer()), "{to}");
                return page;
            }
            assert_eq!(page.status, 200, "the page until the step-up arrives");
            assert!(
                tokio::time::Instant::now() < deadline,
                "the step-up never arrived"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Follows `sent` to the provider's form, signs in as `login`, and
    /// requests Vigil's callback; returns its answer.
    async fn sign_in(
        &self,
        person: &mut FormClient,
        sent: &Page,
        login: &str,
        password: &str,
    ) -> Page {
        let form = person.follow(&sent.location().unwrap(), 5).await.page;
        assert_eq!(form.status, 200);
        assert!(form.body.contains("<form"), "{}", form.body);
        let answer = person
            .submit_login(&form.url, &form.body, login, password, None)
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
        person.get(&callback).await
    }

    async fn admin_step_up(&self, user: &str) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("http://{}/v1/admin/users/step-up", self.controller))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(serde_json::json!({ "user": user }).to_string())
            .send()
            .await
            .unwrap()
    }

    async fn push(&self, event: &str, user: &str) -> reqwest::StatusCode {
        let payload = serde_json::json!({
            "event_timestamp": now_secs(),
            "credential_type": "password",
            "change_type": "update"
        });
        self.push_set(event, iss_sub(self.idp.issuer(), user), payload)
            .await
    }

    /// Pushes a SET of `event` about `subject` with `payload`, as the
    /// provider (its issuer, the transmitter's key).
    async fn push_set(
        &self,
        event: &str,
        subject: serde_json::Map<String, serde_json::Value>,
        payload: serde_json::Value,
    ) -> reqwest::StatusCode {
        let mut claims = self.transmitter.set_claims_with_payload(
            &format!("https://schemas.openid.net/secevent/caep/event-type/{event}"),
            Some(subject),
            payload.as_object().unwrap().clone(),
        );
        claims.insert("aud".into(), AUDIENCE.into());
        claims.insert("iss".into(), self.idp.issuer().into());
        let set = self.transmitter.sign_set(&claims);
        reqwest::Client::new()
            .post(format!("http://{}/v1/ssf/push/idp", self.controller))
            .bearer_auth(PUSH)
            .header("content-type", "application/secevent+jwt")
            .body(set)
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(name) = self.pg.take() {
            let admin = sqlx::AnyPool::connect(PG_ADMIN).await.unwrap();
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&admin)
            .await;
        }
    }
}

impl Fleet {
    /// Polls the controller's store until it maps `n` Vigil sessions to
    /// provider sessions.
    async fn until_idp_sessions(&self, n: i64) {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&self.store).await.unwrap();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let held: i64 = sqlx::Row::try_get(
                &sqlx::query("SELECT COUNT(*) FROM idp_sessions")
                    .fetch_one(&pool)
                    .await
                    .unwrap(),
                0,
            )
            .unwrap();
            if held == n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{held} provider sessions mapped, not {n}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn a_user_who_says_it_was_me_and_passes_labels_that_block_at_the_controller() {
    it_was_me_across_the_fleet(false).await;
}

#[tokio::test]
async fn the_owners_it_was_me_never_labels_a_thiefs_detection() {
    it_was_me_across_the_fleet(true).await;
}

/// Alice signs in from Firefox, then goes on from a new laptop: blocked
/// twice within a minute, she disputes the second block and passes. A
/// node tells the controller one detection a session a minute: the first
/// block stands for the second, and is labelled — unless (`thief_first`)
/// the minute's told detection is a thief's, replaying her cookie from
/// another device just before: then nothing is labelled, since her word
/// is not about his request.
async fn it_was_me_across_the_fleet(thief_first: bool) {
    let route = Route::new("app", "/", "app")
        .medium("block")
        .high("block")
        .it_was_me();
    let fleet = Fleet::with_route(false, false, route).await;
    let login = common::Browser::firefox()
        .get(&fleet.url("/login?user=alice&session=s-alice"))
        .await;
    assert_eq!(login.status(), 200);
    let thiefs = if thief_first {
        let r = common::Browser::chrome()
            .cookie("session=s-alice")
            .get(&fleet.url("/"))
            .await;
        assert_eq!(r.status(), 403);
        Some(r.headers()["vigil-reference"].to_str().unwrap().to_owned())
    } else {
        None
    };
    let mut laptop = FormClient::new();
    laptop.set_cookie(
        fleet.url("").trim_start_matches("http://"),
        "session",
        "s-alice",
    );
    let first = laptop.get(&fleet.url("/")).await;
    assert_eq!(first.status, 403, "{}", first.body);
    let block = first.header("vigil-reference").unwrap().to_owned();
    let blocked = laptop.get(&fleet.url("/reports")).await;
    assert_eq!(blocked.status, 403, "{}", blocked.body);
    let disputed = blocked.header("vigil-reference").unwrap().to_owned();
    assert_ne!(disputed, block);
    let href = format!("href=\"{CALLBACK}?it_was_me=");
    let start = blocked.body.find(&href).unwrap() + "href=\"".len();
    let end = start + blocked.body[start..].find('"').unwrap();
    let link = fleet.url(&blocked.body[start..end]);

    // "It was me": she signs in at the provider and lands on the page.
    let sent = laptop.get(&link).await;
    assert_eq!(sent.status, 303, "{}", sent.body);
    let passed = fleet.sign_in(&mut laptop, &sent, "alice", "pw-a").await;
    assert_eq!(passed.status, 303, "{}", passed.body);
    assert_eq!(passed.header("location"), Some("/reports"));
    assert_eq!(laptop.get(&fleet.url("/reports")).await.status, 200);

    // Once the controller holds her confirmed baseline (the pass, and any
    // label with it, are one transaction), what is labelled.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&fleet.store).await.unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let confirmed: i64 = sqlx::Row::try_get(
            &sqlx::query("SELECT COUNT(*) FROM session_baselines WHERE confirmed = 1")
                .fetch_one(&pool)
                .await
                .unwrap(),
            0,
        )
        .unwrap();
        if confirmed == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pass never reached the controller"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = sqlx::query("SELECT reference, action, stepped_up FROM detections")
        .fetch_all(&pool)
        .await
        .unwrap();
    let mut held: Vec<(String, String, bool)> = rows
        .iter()
        .map(|r| {
            let stepped_up: Option<i64> = sqlx::Row::try_get(r, 2).unwrap();
            (
                sqlx::Row::try_get(r, 0).unwrap(),
                sqlx::Row::try_get(r, 1).unwrap(),
                stepped_up.is_some(),
            )
        })
        .collect();
    held.sort();
    match thiefs {
        // Her first block stands for the page she disputed, which was
        // never told on its own: labelled step_up_passed (counted apart
        // on the precision page and in the export).
        None => assert_eq!(held, [(block, "block".to_owned(), true)]),
        // The minute's told detection is the thief's: her blocks were
        // not told, and his is not labelled with her word.
        Some(thiefs) => assert_eq!(held, [(thiefs, "block".to_owned(), false)]),
    }
    pool.close().await;
    fleet.stop().await;
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn a_users_step_up_reaches_the_node_and_only_their_sign_in_passes(postgres: bool) {
    let fleet = Fleet::start(postgres, false).await;
    let mut alice = fleet.signed_in("alice", "s-alice").await;
    let mut carol = fleet.signed_in("carol", "s-carol").await;
    // A thief with a copy of alice's cookie, on the same kind of client
    // from the same network: nothing passive tells them apart.
    let mut thief = FormClient::new();
    thief.set_cookie(
        fleet.url("").trim_start_matches("http://"),
        "session",
        "s-alice",
    );
    assert_eq!(thief.get(&fleet.url("/echo")).await.status, 200);

    // Unauthenticated and malformed calls change nothing.
    let r = reqwest::Client::new()
        .post(format!(
            "http://{}/v1/admin/users/step-up",
            fleet.controller
        ))
        .body(r#"{"user":"alice"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = reqwest::Client::new()
        .post(format!(
            "http://{}/v1/admin/users/step-up",
            fleet.controller
        ))
        .bearer_auth(ADMIN)
        .body(r#"{"user":""}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(thief.get(&fleet.url("/echo")).await.status, 200);

    // The operator asks alice to sign in again everywhere.
    let asked = tokio::time::Instant::now();
    let r = fleet.admin_step_up("alice").await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert!(body["seq"].as_u64().unwrap() > 0, "{body}");

    // The thief is sent to the provider first, and cannot pass: with his
    // own account the session is not his...
    let sent = fleet.until_sent_to_sign_in(&mut thief, "/echo").await;
    eprintln!(
        "admin step-up to the first request sent to the provider: {} ms",
        asked.elapsed().as_millis()
    );
    let refused = fleet.sign_in(&mut thief, &sent, "bob", "pw-b").await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    // ...and alice's password he does not have: the form again.
    let sent = thief.get(&fleet.url("/echo")).await;
    assert_eq!(sent.status, 303);
    let form = thief.follow(&sent.location().unwrap(), 5).await.page;
    let answer = thief
        .submit_login(&form.url, &form.body, "alice", "guessed", None)
        .await;
    assert_eq!(answer.status, 200);
    assert!(answer.body.contains("<form"), "{}", answer.body);
    assert_eq!(thief.get(&fleet.url("/echo")).await.status, 303);
    // The bystander is never asked.
    assert_eq!(carol.get(&fleet.url("/echo")).await.status, 200);

    // Alice signs in at the provider and goes on to her page.
    let sent = fleet.until_sent_to_sign_in(&mut alice, "/echo?a=1").await;
    let passed = fleet.sign_in(&mut alice, &sent, "alice", "pw-a").await;
    assert_eq!(passed.status, 303, "{}", passed.body);
    assert_eq!(passed.header("location"), Some("/echo?a=1"));
    let passed_at = now_secs();
    let page = alice.get(&fleet.url("/echo?a=1")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(alice.get(&fleet.url("/echo")).await.status, 200);
    assert_eq!(carol.get(&fleet.url("/echo")).await.status, 200);

    // The reason is the node's own, in its decision log.
    let log = fleet.node.log();
    assert!(log.contains("step_up_required"), "{log}");
    assert!(!log.contains("s-alice"), "raw session cookie in the log");

    // Then the identity provider says alice's credential changed. Seconds
    // are the clocks' grain: a step-up passed in the second of the ask
    // counts as after it, so the ask must come in a later second than the
    // pass for it to ask anything (a condition on the clock, not a wait
    // for the system under test).
    while now_secs() <= passed_at {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fleet.push("credential-change", "alice").await, 202);
    let sent = fleet.until_sent_to_sign_in(&mut alice, "/echo?b=2").await;
    let passed = fleet.sign_in(&mut alice, &sent, "alice", "pw-a").await;
    assert_eq!(passed.status, 303, "{}", passed.body);
    assert_eq!(alice.get(&fleet.url("/echo?b=2")).await.status, 200);
    assert_eq!(carol.get(&fleet.url("/echo")).await.status, 200);

    let metrics = fleet.node.metrics().await;
    assert!(
        metrics.value(
            "vigil_proxy_fleet_changes_applied_total",
            &[("kind", "user_step_up")]
        ) >= 2.0,
        "{}",
        metrics.text()
    );
    fleet.stop().await;
}

#[tokio::test]
async fn sqlite_a_users_step_up_reaches_the_node_and_only_their_sign_in_passes() {
    a_users_step_up_reaches_the_node_and_only_their_sign_in_passes(false).await;
}

#[tokio::test]
async fn postgres_a_users_step_up_reaches_the_node_and_only_their_sign_in_passes() {
    a_users_step_up_reaches_the_node_and_only_their_sign_in_passes(true).await;
}

/// Vigil learns the provider's session (`sid`) from the ID token of each
/// step-up login, and the controller maps it: when the provider ends one
/// of alice's sessions (a CAEP `session-revoked` naming her and that
/// session), the Vigil session that signed in under it is refused at the
/// edge, and her other one — signed in under another provider session —
/// goes on, as does a bystander's. The raw `sid` is never in the node's
/// log nor in the controller's store.
async fn a_revoked_idp_session_ends_only_the_session_signed_in_under_it(postgres: bool) {
    let fleet = Fleet::start(postgres, true).await;
    let mut laptop = fleet.signed_in("alice", "s-laptop").await;
    let mut phone = fleet.signed_in("alice", "s-phone").await;
    let mut carol = fleet.signed_in("carol", "s-carol").await;
    assert_eq!(fleet.admin_step_up("alice").await.status(), 200);
    let mut sids = Vec::new();
    for (person, path) in [(&mut laptop, "/echo?l=1"), (&mut phone, "/echo?p=1")] {
        let sent = fleet.until_sent_to_sign_in(person, path).await;
        let passed = fleet.sign_in(person, &sent, "alice", "pw-a").await;
        assert_eq!(passed.status, 303, "{}", passed.body);
        sids.push(fleet.idp.last_sid("alice").await.expect("a sid"));
    }
    // Two browsers, two provider sessions.
    assert_ne!(sids[0], sids[1]);
    fleet.until_idp_sessions(2).await;

    let revoked = tokio::time::Instant::now();
    let status = fleet
        .push_set(
            "session-revoked",
            complex(
                Some(iss_sub(fleet.idp.issuer(), "alice")),
                Some(opaque(&sids[0])),
            ),
            serde_json::json!({"event_timestamp": now_secs()}),
        )
        .await;
    assert_eq!(status, 202);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let status = laptop.get(&fleet.url("/echo?l=1")).await.status;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200, "the page until the revocation arrives");
        assert!(tokio::time::Instant::now() < deadline, "never revoked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "provider session revoked to the session refused at the edge: {} ms",
        revoked.elapsed().as_millis()
    );
    assert_eq!(phone.get(&fleet.url("/echo?p=1")).await.status, 200);
    assert_eq!(carol.get(&fleet.url("/echo")).await.status, 200);
    // The raw sid is nowhere Vigil keeps things.
    let log = fleet.node.log();
    assert!(log.contains("sid_learnt=true"), "{log}");
    for sid in &sids {
        assert!(!log.contains(sid.as_str()), "raw sid in the node's log");
    }
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&fleet.store).await.unwrap();
    let rows = sqlx::query("SELECT idp_session, session, user_key FROM idp_sessions")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "the revoked mapping is spent");
    for row in rows {
        for i in 0..3 {
            let v: String = sqlx::Row::try_get(&row, i).unwrap();
            assert!(sids.iter().all(|sid| !v.contains(sid.as_str())));
        }
    }
    drop(pool);
    fleet.stop().await;
}

#[tokio::test]
async fn sqlite_a_revoked_idp_session_ends_only_the_session_signed_in_under_it() {
    a_revoked_idp_session_ends_only_the_session_signed_in_under_it(false).await;
}

#[tokio::test]
async fn postgres_a_revoked_idp_session_ends_only_the_session_signed_in_under_it() {
    a_revoked_idp_session_ends_only_the_session_signed_in_under_it(true).await;
}

/// OpenID Connect back-channel logout from the real provider: alice signs
/// out at the provider from her laptop (RP-initiated logout, confirmed on
/// its form); the provider posts its logout token (`sub` and `sid`) to the
/// controller, which ends the Vigil session signed in under that provider
/// session on every node — the laptop's cookie is refused at the edge —
/// while her phone (another provider session) and a bystander go on.
async fn signing_out_at_the_provider_ends_that_session_at_the_edge(postgres: bool) {
    let fleet = Fleet::start(postgres, true).await;
    let mut laptop = fleet.signed_in("alice", "s-laptop").await;
    let mut phone = fleet.signed_in("alice", "s-phone").await;
    let mut carol = fleet.signed_in("carol", "s-carol").await;
    assert_eq!(fleet.admin_step_up("alice").await.status(), 200);
    for (person, path) in [(&mut laptop, "/echo?l=1"), (&mut phone, "/echo?p=1")] {
        let sent = fleet.until_sent_to_sign_in(person, path).await;
        let passed = fleet.sign_in(person, &sent, "alice", "pw-a").await;
        assert_eq!(passed.status, 303, "{}", passed.body);
    }
    fleet.until_idp_sessions(2).await;

    // Sign out at the provider: its logout page, then its confirmation.
    let page = laptop.get(&fleet.idp.url("/session/end")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let action = page
        .body
        .split("action=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the logout form")
        .to_owned();
    let xsrf = page
        .body
        .split("name=\"xsrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the form's xsrf")
        .to_owned();
    let action = url::Url::parse(&fleet.idp.url("/"))
        .unwrap()
        .join(&action)
        .unwrap();
    let signed_out = tokio::time::Instant::now();
    let done = laptop
        .post_form(action.as_str(), &[("xsrf", &xsrf), ("logout", "yes")])
        .await;
    assert!(done.status < 400, "{}: {}", done.status, done.body);

    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let status = laptop.get(&fleet.url("/echo?l=1")).await.status;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200, "the page until the logout arrives");
        assert!(
            tokio::time::Instant::now() < deadline,
            "never logged out; the provider's log:\n{}",
            fleet.idp.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "signed out at the provider to the session refused at the edge: {} ms",
        signed_out.elapsed().as_millis()
    );
    assert_eq!(phone.get(&fleet.url("/echo?p=1")).await.status, 200);
    assert_eq!(carol.get(&fleet.url("/echo")).await.status, 200);
    let metrics = reqwest::Client::new()
        .get(format!("http://{}/metrics", fleet.controller))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "vigil_controller_backchannel_logout_tokens_total{provider=\"op\",result=\"accepted\"} 1"
        ),
        "{metrics}"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn sqlite_signing_out_at_the_provider_ends_that_session_at_the_edge() {
    signing_out_at_the_provider_ends_that_session_at_the_edge(false).await;
}

#[tokio::test]
async fn postgres_signing_out_at_the_provider_ends_that_session_at_the_edge() {
    signing_out_at_the_provider_ends_that_session_at_the_edge(true).await;
}
