//! What the outbound tests share: a database per test (SQLite in a temp
//! dir, or a fresh PostgreSQL database on 127.0.0.1:5432), a controller
//! on loopback, and a recording HTTP receiver that answers as scripted.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

pub(crate) const ADMIN: &str = "admin-token-0123456789";
pub(crate) const NODE: &str = "node-a-token-0123456789";
pub(crate) const HASH_KEY: [u8; 32] = [0x11; 32];
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

pub(crate) use crate::common::{Db, client};

/// A controller on loopback, its files in a temp dir.
pub(crate) struct Controller {
    pub(crate) addr: SocketAddr,
    pub(crate) dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Controller {
    /// Starts one on `store` with `extra` config; `files` written beside
    /// the config first.
    pub(crate) async fn start(store: &str, extra: &str, files: &[(&str, &str)]) -> Controller {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hash.key"), hex::encode(HASH_KEY)).unwrap();
        std::fs::write(dir.path().join("admin.token"), ADMIN).unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let toml = format!(
            "listen = \"{addr}\"\nstore = {store:?}\nhash_key_file = \"hash.key\"\nadmin_token_file = \"admin.token\"\n{extra}\n\
             [[nodes]]\nname = \"a\"\ntoken_sha256 = \"{}\"\n",
            hex::encode(vigil_controller::config::token_hash(NODE)),
        );
        let path = dir.path().join("controller.toml");
        std::fs::write(&path, toml).unwrap();
        let config = vigil_controller::Config::load(&path).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            vigil_controller::run_on(listener, config, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Controller {
            addr,
            dir,
            stop: Some(stop),
            task,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// An admin POST; status and JSON body.
    pub(crate) async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = client()
            .post(self.url(path))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null),
        )
    }

    /// An admin GET; status and JSON body.
    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        let r = client()
            .get(self.url(path))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null),
        )
    }

    pub(crate) async fn metrics(&self) -> String {
        client()
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Open streams hold a graceful shutdown: not for long.
        if tokio::time::timeout(Duration::from_secs(2), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

/// The value of a metric series, 0 when absent.
pub(crate) fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// One request a receiver saw.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) path: String,
    pub(crate) headers: axum::http::HeaderMap,
    pub(crate) body: Vec<u8>,
    /// The status it was answered.
    pub(crate) status: u16,
}

/// A recording HTTP receiver on loopback: answers `fail_status` to the
/// first `fail_first` requests (all of them while `fail_first` is
/// `usize::MAX`), 200 after.
#[derive(Clone)]
pub(crate) struct Receiver {
    pub(crate) addr: SocketAddr,
    pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
    pub(crate) fail_first: Arc<Mutex<usize>>,
    pub(crate) fail_status: u16,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    pub(crate) async fn start(fail_first: usize, fail_status: u16) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let fail = Arc::new(Mutex::new(fail_first));
        let app = axum::Router::new().fallback({
            let seen = Arc::clone(&seen);
            let fail = Arc::clone(&fail);
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: bytes::Bytes| {
                let seen = Arc::clone(&seen);
                let fail = Arc::clone(&fail);
                async move {
                    let status = {
                        let mut f = fail.lock().unwrap();
                        if *f == usize::MAX {
                            fail_status
                        } else if *f > 0 {
                            *f -= 1;
                            fail_status
                        } else {
                            200
                        }
                    };
                    seen.lock().unwrap().push(Seen {
                        path: uri.path().to_owned(),
                        headers,
                        body: body.to_vec(),
                        status,
                    });
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            addr,
            seen,
            fail_first: fail,
            fail_status,
            task: Arc::new(task),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers 200 from now on.
    pub(crate) fn heal(&self) {
        *self.fail_first.lock().unwrap() = 0;
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `ok` holds of what was seen.
    pub(crate) async fn wait_for(&self, what: &str, ok: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let seen = self.seen();
            if ok(&seen) {
                return seen;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not seen in time; seen {:?}",
                seen.iter().map(|s| (&s.path, s.status)).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

/// Polls `f` until it gives `Some`, within [`DEADLINE`].
pub(crate) async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback port nothing listens on.
pub(crate) fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
