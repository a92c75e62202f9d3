//! Shared Signals for real: the identity provider (the `easyssf-test`
//! crate's transmitter, an independent SET producer) pushes a CAEP
//! `session-revoked` for a user to `vigil-controller` (in this test
//! process, on SQLite or a fresh PostgreSQL database), and the signed-in
//! session of that user on a `vigil-proxy` node attached to it ends, within
//! the fleet budget; a bystander's does not.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Browser, Config, Origin, Proxy, Route};
use easyssf_test::TestTransmitter;
use easyssf_test::subjects::{complex, iss_sub, opaque};

const ADMIN: &str = "signals-admin-token-0123456789";
const NODE: &str = "signals-node-token-0123";
const PUSH: &str = "signals-push-token-0123456789";
const AUDIENCE: &str = "https://vigil.test/ssf";
const DEADLINE: Duration = Duration::from_secs(30);
const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

async fn a_session_revoked_by_the_idp_ends_the_users_session_on_the_node(postgres: bool) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("fleet-hash.key");
    std::fs::write(&key, "5a".repeat(32)).unwrap();
    std::fs::write(dir.path().join("admin.token"), ADMIN).unwrap();
    std::fs::write(dir.path().join("idp.token"), PUSH).unwrap();
    let idp = TestTransmitter::new();
    // The IdP's JWK Set as it publishes it, given to the controller as a
    // file.
    std::fs::write(
        dir.path().join("idp-jwks.json"),
        serde_json::json!({"keys": [idp.key().public_jwk()]}).to_string(),
    )
    .unwrap();
    let pg = if postgres {
        sqlx::any::install_default_drivers();
        let name = format!("vigil_signals_{:016x}", rand::random::<u64>());
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
    let listen = common::free_addr();
    let config = dir.path().join("controller.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{listen}\"\nstore = {store:?}\nhash_key_file = {:?}\nadmin_token_file = \"admin.token\"\n\
             [[nodes]]\nname = \"a\"\ntoken_sha256 = \"{}\"\n\
             [[ssf.transmitters]]\nname = \"idp\"\nissuer = {:?}\naudience = {AUDIENCE:?}\n\
             jwks_file = \"idp-jwks.json\"\npush_token_file = \"idp.token\"\n",
            key.display().to_string(),
            hex::encode(vigil_controller::config::token_hash(NODE)),
            idp.issuer(),
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
    let node = Proxy::start(
        &Config::new()
            .state_dir(&state)
            .upstream("app", origin.addr())
            .route(Route::new("app", "/", "app").high("revoke"))
            .section(&format!(
                "[session]\nhash_key_file = {:?}\n\n[controller]\nurl = \"http://{listen}\"\ntoken_file = {:?}\n",
                key.display().to_string(),
                token_file.display().to_string()
            ))
            .render(),
    )
    .await;
    node.wait_for_metric("vigil_proxy_fleet_connected", &[], |v| v == 1.0)
        .await;

    // Alice (named by the app as the IdP's `sub`) and a bystander sign in.
    let alice = Browser::firefox();
    let login = alice
        .get(&node.url("/login?user=alice&session=s-alice"))
        .await;
    assert_eq!(login.status(), 200);
    let alice = alice.cookie("session=s-alice");
    let carol = Browser::chrome();
    let login = carol
        .get(&node.url("/login?user=carol&session=s-carol"))
        .await;
    assert_eq!(login.status(), 200);
    let carol = carol.cookie("session=s-carol");
    assert_eq!(alice.get(&node.url("/echo")).await.status(), 200);

    // The IdP revokes alice's session and tells Vigil.
    let mut claims = idp.set_claims(
        "https://schemas.openid.net/secevent/caep/event-type/session-revoked",
        Some(complex(
            Some(iss_sub(idp.issuer(), "alice")),
            Some(opaque("idp-session-7")),
        )),
    );
    claims.insert("aud".into(), AUDIENCE.into());
    let set = idp.sign_set(&claims);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pushed = tokio::time::Instant::now();
    let r = reqwest::Client::new()
        .post(format!("http://{listen}/v1/ssf/push/idp"))
        .bearer_auth(PUSH)
        .header("content-type", "application/secevent+jwt")
        .body(set)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // The stolen-or-not cookie is dead at the edge, whatever the app does.
    loop {
        let status = alice.get(&node.url("/echo")).await.status();
        if status == 401 {
            break;
        }
        assert_eq!(
            status, 200,
            "allowed until the revocation arrives, then 401"
        );
        assert!(
            tokio::time::Instant::now() < pushed + DEADLINE,
            "the revocation never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "SET pushed to session refused at the edge: {} ms",
        pushed.elapsed().as_millis()
    );
    assert_eq!(carol.get(&node.url("/echo")).await.status(), 200);

    let _ = stop.send(());
    drop(node);
    if let Some(name) = pg {
        let admin = sqlx::AnyPool::connect(PG_ADMIN).await.unwrap();
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&admin)
        .await;
    }
}

#[tokio::test]
async fn sqlite_a_session_revoked_by_the_idp_ends_the_users_session_on_the_node() {
    a_session_revoked_by_the_idp_ends_the_users_session_on_the_node(false).await;
}

#[tokio::test]
async fn postgres_a_session_revoked_by_the_idp_ends_the_users_session_on_the_node() {
    a_session_revoked_by_the_idp_ends_the_users_session_on_the_node(true).await;
}
