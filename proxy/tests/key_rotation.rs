//! Rotation of the fleet's session hash key with real processes: a
//! controller (in this test process, on SQLite) and two proxy processes
//! that run key K1, then restart with K2 current and K1 previous
//! (docs/controller.md, "Rotating the hash key"). Node A comes back from
//! its own snapshot; node B from nothing but what the controller holds,
//! all of it under K1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Browser, Config, Origin, Proxy, Route};

const ADMIN: &str = "rotation-admin-token-0123456789";
const NODE_A: &str = "rotation-node-a-token-0123";
const NODE_B: &str = "rotation-node-b-token-0123";
const DEADLINE: Duration = Duration::from_secs(30);

/// A node's config: `keys` is what `[session]` says of the keys.
fn node(
    state: &Path,
    origin: SocketAddr,
    controller: SocketAddr,
    token: &str,
    keys: &str,
) -> String {
    std::fs::create_dir_all(state).unwrap();
    let token_file = state.join("controller.token");
    std::fs::write(&token_file, token).unwrap();
    Config::new()
        .state_dir(state)
        .upstream("app", origin)
        .route(Route::new("app", "/", "app").high("revoke"))
        .section(&format!(
            "[session]\n{keys}\n\n[controller]\nurl = \"http://{controller}\"\ntoken_file = {:?}\n",
            token_file.display().to_string()
        ))
        .render()
}

fn quoted(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

async fn connected(p: &Proxy) {
    p.wait_for_metric("vigil_proxy_fleet_connected", &[], |v| v == 1.0)
        .await;
}

async fn applied(proxy: &Proxy, kind: &str, n: f64) {
    proxy
        .wait_for_metric(
            "vigil_proxy_fleet_changes_applied_total",
            &[("kind", kind)],
            |v| v >= n,
        )
        .await;
}

/// Polls until `browser` is refused on `proxy` as an ended session.
async fn until_ended(proxy: &Proxy, browser: &Browser) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let status = browser.get(&proxy.url("/echo")).await.status();
        if status == 401 {
            return;
        }
        assert_eq!(
            status, 200,
            "allowed until the revocation arrives, then 401"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the revocation never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The public id of the key in `file`, as the proxy reports it.
fn key_id(file: &Path) -> String {
    let bytes: [u8; 32] = hex::decode(std::fs::read_to_string(file).unwrap().trim())
        .unwrap()
        .try_into()
        .unwrap();
    vigil_engine::SessionHashKey::from_bytes(bytes)
        .id()
        .to_string()
}

#[tokio::test]
async fn revocations_and_baselines_made_under_the_old_key_hold_after_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let k1: PathBuf = dir.path().join("k1.key");
    let k2: PathBuf = dir.path().join("k2.key");
    std::fs::write(&k1, "5a".repeat(32)).unwrap();
    std::fs::write(&k2, "a5".repeat(32)).unwrap();
    std::fs::write(dir.path().join("admin.token"), ADMIN).unwrap();
    let hash = |t: &str| hex::encode(vigil_controller::config::token_hash(t));
    let listen = common::free_addr();
    // The controller, on the same store each time, with `keys` (its
    // hash key settings); it is stopped through the sender returned.
    let controller = |keys: String| {
        let config = dir.path().join("controller.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{listen}\"\nstore = \"sqlite://{}\"\n{keys}\nadmin_token_file = \"admin.token\"\n\
                 [[nodes]]\nname = \"a\"\ntoken_sha256 = \"{}\"\n[[nodes]]\nname = \"b\"\ntoken_sha256 = \"{}\"\n",
                dir.path().join("controller.db").display(),
                hash(NODE_A),
                hash(NODE_B),
            ),
        )
        .unwrap();
        let config = vigil_controller::Config::load(&config).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(async move {
            vigil_controller::run(config, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        (stop, running)
    };
    let (stop, running) = controller(format!("hash_key_file = {}", quoted(&k1)));
    let origin = Origin::start();
    let before = format!("hash_key_file = {}", quoted(&k1));
    let a = Proxy::start(&node(
        &dir.path().join("a"),
        origin.addr(),
        listen,
        NODE_A,
        &before,
    ))
    .await;
    let b = Proxy::start(&node(
        &dir.path().join("b"),
        origin.addr(),
        listen,
        NODE_B,
        &before,
    ))
    .await;
    connected(&a).await;
    connected(&b).await;

    // Under K1: ann signs in on A and B learns her baseline; bob's session
    // is stolen, replayed from another device on A and revoked fleet-wide.
    let ann = Browser::firefox();
    let login = ann.get(&a.url("/login?user=ann&session=s-ann")).await;
    assert_eq!(login.status(), 200);
    let ann = ann.cookie("session=s-ann");
    assert_eq!(ann.get(&a.url("/echo")).await.status(), 200);
    let bob = Browser::firefox();
    let login = bob.get(&a.url("/login?user=bob&session=s-bob")).await;
    assert_eq!(login.status(), 200);
    let bob = bob.cookie("session=s-bob");
    assert_eq!(bob.get(&a.url("/echo")).await.status(), 200);
    applied(&b, "session_baseline", 2.0).await;
    let thief = Browser::chrome().cookie("session=s-bob");
    assert_eq!(thief.get(&a.url("/echo")).await.status(), 303);
    until_ended(&b, &bob).await;
    // Carol's too; her cookie is not presented again until the end.
    let carol = Browser::firefox();
    let login = carol.get(&a.url("/login?user=carol&session=s-carol")).await;
    assert_eq!(login.status(), 200);
    let carol = carol.cookie("session=s-carol");
    assert_eq!(carol.get(&a.url("/echo")).await.status(), 200);
    let carol_thief = Browser::chrome().cookie("session=s-carol");
    assert_eq!(carol_thief.get(&a.url("/echo")).await.status(), 303);
    until_ended(&b, &carol).await;

    // The switch: K2 current, K1 previous, user keys kept on K1. A comes
    // back with its snapshot; B with an empty state directory.
    let log = a.terminate();
    assert!(
        dir.path().join("a/sessions.snapshot").exists(),
        "A wrote no snapshot: {log}"
    );
    b.terminate();
    drop((a, b));
    // Step 2 of the procedure: the controller first, then the nodes. It
    // takes what switched nodes re-key (no evidence of its own) only while
    // it has a previous key itself.
    let _ = stop.send(());
    running.await.unwrap();
    let (stop, _running) = controller(format!(
        "hash_key_file = {}\nprevious_hash_key_file = {}\nuser_key_file = {}",
        quoted(&k2),
        quoted(&k1),
        quoted(&k1)
    ));
    let after = format!(
        "hash_key_file = {}\nprevious_hash_key_file = {}\nuser_key_file = {}",
        quoted(&k2),
        quoted(&k1),
        quoted(&k1)
    );
    let a = Proxy::start(&node(
        &dir.path().join("a"),
        origin.addr(),
        listen,
        NODE_A,
        &after,
    ))
    .await;
    let b = Proxy::start(&node(
        &dir.path().join("b2"),
        origin.addr(),
        listen,
        NODE_B,
        &after,
    ))
    .await;
    connected(&a).await;
    connected(&b).await;
    for p in [&a, &b] {
        for (role, file) in [("current", &k2), ("previous", &k1), ("user", &k1)] {
            let id = key_id(file);
            assert_eq!(
                p.metric("vigil_proxy_hash_key_info", &[("role", role), ("id", &id)])
                    .await,
                1.0,
                "{role}"
            );
        }
    }
    // B knows the fleet's state only from the controller.
    applied(&b, "session_revoked", 1.0).await;
    applied(&b, "session_baseline", 1.0).await;

    // Bob's revoked cookie is no fresh session under K2, on either node,
    // for the owner's browser as for the thief's.
    for p in [&a, &b] {
        assert_eq!(bob.get(&p.url("/echo")).await.status(), 401);
        assert_eq!(thief.get(&p.url("/echo")).await.status(), 401);
    }
    // Ann goes on from her baseline on A, re-keyed on sight.
    assert_eq!(ann.get(&a.url("/echo")).await.status(), 200);
    // A thief replaying her cookie on B from another device is judged
    // against her K1 baseline, as with no rotation: revoked, and the
    // revocation (told under both keys) reaches A.
    let ann_thief = Browser::chrome().cookie("session=s-ann");
    assert_eq!(ann_thief.get(&b.url("/echo")).await.status(), 303);
    until_ended(&a, &ann).await;

    // The previous key dropped (too early: the point of this part). Node B
    // comes back on K2 alone from nothing but the controller. Bob's
    // revocation, re-keyed on sight during the overlap, was told under K2
    // and holds; Carol's, never presented, was left under K1 alone and her
    // revoked cookie is a fresh session: why the overlap must outlast the
    // revocation lifetime (docs/controller.md, "Rotating the hash key").
    b.terminate();
    drop(b);
    let dropped = format!(
        "hash_key_file = {}\nuser_key_file = {}",
        quoted(&k2),
        quoted(&k1)
    );
    let c = Proxy::start(&node(
        &dir.path().join("b3"),
        origin.addr(),
        listen,
        NODE_B,
        &dropped,
    ))
    .await;
    connected(&c).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while bob.get(&c.url("/echo")).await.status() != 401 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob's re-keyed revocation never reached the controller under K2"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(carol.get(&c.url("/echo")).await.status(), 200);

    let _ = stop.send(());
}
