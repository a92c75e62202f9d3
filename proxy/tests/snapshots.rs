//! A session snapshot restores only when it is the one this node wrote:
//! edited, truncated, made under another key or rolled back, it is set
//! aside and never un-revokes a session.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::{Browser, Config, Origin, Proxy, Route};

const REJECTED: &str = "vigil_proxy_snapshots_rejected_total";

fn config(state: &Path, origin: &Origin) -> String {
    Config::new()
        .state_dir(state)
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app").high("revoke"))
        .render()
}

/// Revokes `dead` on a first proxy and stops it; returns the snapshot's
/// bytes and the generation record as written.
async fn revoke_and_stop(state: &Path, origin: &Origin) -> (Vec<u8>, Vec<u8>) {
    let first = Proxy::start(&config(state, origin)).await;
    let dead = Browser::firefox().cookie("session=dead");
    assert_eq!(dead.get(&first.url("/echo")).await.status(), 200);
    let replay = Browser::chrome().cookie("session=dead");
    assert_eq!(replay.get(&first.url("/echo")).await.status(), 303);
    let log = first.terminate();
    (
        std::fs::read(state.join("sessions.snapshot")).unwrap_or_else(|e| panic!("{e}: {log}")),
        std::fs::read(state.join("sessions.generation")).unwrap(),
    )
}

fn rejected_files(state: &Path) -> usize {
    std::fs::read_dir(state)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("sessions.snapshot.rejected-")
        })
        .count()
}

#[tokio::test]
async fn an_authentic_snapshot_restores_and_keeps_the_revocation() {
    let origin = Origin::start();
    let state = tempfile::tempdir().unwrap();
    revoke_and_stop(state.path(), &origin).await;
    let second = Proxy::start(&config(state.path(), &origin)).await;
    second.wait_for_log("session snapshot restored").await;
    let dead = Browser::firefox().cookie("session=dead");
    assert_eq!(dead.get(&second.url("/echo")).await.status(), 401);
}

#[tokio::test]
async fn an_edited_truncated_or_foreign_snapshot_is_set_aside() {
    let origin = Origin::start();
    let state = tempfile::tempdir().unwrap();
    let (bytes, _) = revoke_and_stop(state.path(), &origin).await;
    let snapshot = state.path().join("sessions.snapshot");
    let mut edited = bytes.clone();
    // One bit of the body flipped (a revocation's time, a count: anything).
    edited[48] ^= 1;
    let truncated = bytes[..bytes.len() - 10].to_vec();
    let foreign_key = state.path().join("session-hash.key");
    for (why, file, reason) in [
        ("edited", edited, "tampered"),
        ("truncated", truncated, "unauthenticated"),
    ] {
        std::fs::write(&snapshot, &file).unwrap();
        let proxy = Proxy::start(&config(state.path(), &origin)).await;
        proxy.wait_for_log("session snapshot rejected").await;
        assert_eq!(
            proxy.metric(REJECTED, &[("reason", reason)]).await,
            1.0,
            "{why}"
        );
        // Nothing restored: the revoked cookie is no longer known, and the
        // damaged file was kept aside, not overwritten.
        assert!(
            !snapshot.exists() || std::fs::read(&snapshot).unwrap() != file,
            "{why}"
        );
        proxy.terminate();
    }
    assert_eq!(rejected_files(state.path()), 2);
    // The same snapshot under another session hash key.
    std::fs::write(&snapshot, &bytes).unwrap();
    std::fs::write(&foreign_key, [7u8; 32]).unwrap();
    let proxy = Proxy::start(&config(state.path(), &origin)).await;
    proxy.wait_for_log("session snapshot rejected").await;
    assert_eq!(
        proxy.metric(REJECTED, &[("reason", "other_key")]).await,
        1.0
    );
}

#[tokio::test]
async fn an_authentic_but_older_snapshot_is_refused() {
    let origin = Origin::start();
    let state = tempfile::tempdir().unwrap();
    // An old snapshot from before the revocation...
    let first = Proxy::start(&config(state.path(), &origin)).await;
    let dead = Browser::firefox().cookie("session=dead");
    assert_eq!(dead.get(&first.url("/echo")).await.status(), 200);
    first.terminate();
    let old = std::fs::read(state.path().join("sessions.snapshot")).unwrap();
    // ...then the revocation, written in a newer generation.
    revoke_and_stop(state.path(), &origin).await;
    // Rolled back: the old, authentic file put in place of the new one.
    std::fs::write(state.path().join("sessions.snapshot"), &old).unwrap();
    let proxy = Proxy::start(&config(state.path(), &origin)).await;
    proxy.wait_for_log("session snapshot rejected").await;
    assert_eq!(
        proxy.metric(REJECTED, &[("reason", "rolled_back")]).await,
        1.0
    );
    assert_eq!(rejected_files(state.path()), 1);
}
