//! `vigil-controller` in the test process (`run_on`, on a port held from
//! the start so that no test beside this one takes it), for the fleet
//! tests: the same config every one of them wrote by hand before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The fleet's session hash key in the tests: 32 bytes of `0x5a`.
pub(crate) const FLEET_KEY: [u8; 32] = [0x5a; 32];

/// Writes [`FLEET_KEY`] as the hex key file `fleet-hash.key` in `dir`.
pub(crate) fn write_fleet_key(dir: &Path) -> PathBuf {
    let key = dir.join("fleet-hash.key");
    std::fs::write(&key, hex::encode(FLEET_KEY)).unwrap();
    key
}

/// A running controller; stopped (gracefully) when dropped.
pub(crate) struct InProcessController {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl InProcessController {
    /// Serves `store` (a store URL) to `nodes` (name, token), with the
    /// session hash key file `key` and the admin token `admin`; its
    /// config is written in `dir` as `file`. Within a Tokio runtime.
    pub(crate) fn start(
        dir: &Path,
        file: &str,
        store: &str,
        key: &Path,
        admin: &str,
        nodes: &[(&str, &str)],
    ) -> InProcessController {
        InProcessController::start_with(dir, file, store, key, admin, nodes, "")
    }

    /// [`InProcessController::start`] with `extra` at the end of its
    /// config (a `[dashboard]` table, say).
    pub(crate) fn start_with(
        dir: &Path,
        file: &str,
        store: &str,
        key: &Path,
        admin: &str,
        nodes: &[(&str, &str)],
        extra: &str,
    ) -> InProcessController {
        std::fs::write(dir.join("admin.token"), admin).unwrap();
        let bound = super::config::held_listener();
        let addr = bound.local_addr().unwrap();
        let mut text = format!(
            "listen = \"{addr}\"\nstore = {store:?}\nhash_key_file = {:?}\nadmin_token_file = \"admin.token\"\n",
            key.display().to_string(),
        );
        for (name, token) in nodes {
            text.push_str(&format!(
                "[[nodes]]\nname = {name:?}\ntoken_sha256 = \"{}\"\n",
                hex::encode(vigil_controller::config::token_hash(token))
            ));
        }
        text.push_str(extra);
        let path = dir.join(file);
        std::fs::write(&path, text).unwrap();
        let config = vigil_controller::Config::load(&path).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let bound = tokio::net::TcpListener::from_std(bound).unwrap();
        tokio::spawn(async move {
            vigil_controller::run_on(bound, config, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        InProcessController {
            addr,
            stop: Some(stop),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops taking connections (a graceful stop: streams open now end
    /// when their nodes let go).
    pub(crate) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
