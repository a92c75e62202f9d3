//! The proxy under a service manager, as systemd runs it (`Type=notify`,
//! systemd/vigil-proxy.service): the test binds the unix datagram socket
//! systemd would and hands it over in `$NOTIFY_SOCKET`. `READY=1` comes
//! only once every listener accepts; a reload, good or bad, is
//! `RELOADING=1` with `MONOTONIC_USEC` then `READY=1`; a stop is
//! `STOPPING=1`; a binary upgrade (`vigil-proxy upgrade`) leaves a new
//! process that says `MAINPID=` itself, with no request refused meanwhile.

// Test code: a failed unwrap is a failed test. clippy.toml allows these in
// #[test] functions; this also covers the helpers in `common`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Browser, Ca, Config, Origin, Proxy, Route, free_addr, tls_client_builder};
use tokio::net::{TcpStream, UnixDatagram};
use tokio::time::Instant;

/// Generous: a debug build on a busy two-core machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// The socket systemd would listen on, and what the proxy said to it.
struct Notifications {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Notifications {
    fn bind() -> Notifications {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        Notifications {
            socket,
            path,
            _dir: dir,
        }
    }

    fn env(&self) -> [(&'static str, &std::ffi::OsStr); 1] {
        [("NOTIFY_SOCKET", self.path.as_os_str())]
    }

    /// The next message; panics with `proxy`'s log after the deadline.
    async fn next(&self, proxy: &Proxy) -> Message {
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(DEADLINE, self.socket.recv(&mut buf)).await {
            Ok(Ok(n)) => Message(String::from_utf8(buf[..n].to_vec()).unwrap()),
            Ok(Err(e)) => panic!("notify socket: {e}"),
            Err(_) => panic!(
                "no notification within {DEADLINE:?}; the proxy's log:\n{}",
                proxy.log()
            ),
        }
    }
}

/// One datagram: `KEY=value` lines.
#[derive(Debug, Clone)]
struct Message(String);

impl Message {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }

    fn is(&self, key: &str) -> bool {
        self.get(key) == Some("1")
    }
}

/// Whether every address accepts a connection now.
async fn all_accept(addrs: &[SocketAddr]) -> bool {
    for addr in addrs {
        if TcpStream::connect(addr).await.is_err() {
            return false;
        }
    }
    true
}

fn with_low(base: &Config, origin: &Origin, low: &str) -> String {
    base.clone()
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app").low(low))
        .render()
}

async fn status(url: &str) -> u16 {
    Browser::firefox().get(url).await.status().as_u16()
}

fn proxy_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vigil-proxy")
}

#[tokio::test]
async fn ready_comes_only_once_every_listener_accepts() {
    let origin = Origin::start();
    let ca = Ca::new("Notify CA");
    let leaf = ca.leaf(&["a.test"]);
    let https = free_addr();
    let base = Config::new();
    let http = base.http_addr();
    let config = base
        .tls_listener("https", https, true, &[&leaf])
        .upstream("app", origin.addr())
        .route(Route::new("app", "/", "app"))
        .render();
    let admin: SocketAddr = config
        .lines()
        .skip_while(|l| *l != "[admin]")
        .find_map(|l| l.strip_prefix("listen = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap()
        .parse()
        .unwrap();
    let notify = Notifications::bind();
    let proxy = Proxy::launch(&config, &notify.env());

    // Read as it is sent: the listeners are tried the moment it arrives.
    let mut before = Vec::new();
    let ready = loop {
        let message = notify.next(&proxy).await;
        if message.is("READY") {
            break message;
        }
        before.push(message);
    };
    assert!(
        all_accept(&[http, https, admin]).await,
        "READY=1 before every listener accepts"
    );
    assert!(before.is_empty(), "said before READY=1: {before:?}");
    assert_eq!(ready.get("MAINPID"), Some(proxy.pid().to_string().as_str()));
    assert_eq!(ready.get("STATUS"), Some("serving"));
    proxy.wait_until_serving().await;
    assert_eq!(status(&proxy.url("/echo")).await, 200);
}

#[tokio::test]
async fn a_reload_good_or_bad_says_reloading_then_ready() {
    let origin = Origin::start();
    let base = Config::new();
    let notify = Notifications::bind();
    let proxy = Proxy::launch(&with_low(&base, &origin, "allow"), &notify.env());
    assert!(notify.next(&proxy).await.is("READY"));
    proxy.wait_until_serving().await;
    let url = proxy.url("/echo");
    assert_eq!(status(&url).await, 200);

    // A good file: reloading, then ready with it in force.
    proxy.rewrite_config(&with_low(&base, &origin, "block"));
    proxy.hangup();
    let reloading = notify.next(&proxy).await;
    assert!(reloading.is("RELOADING"), "{reloading:?}");
    let first: u64 = reloading
        .get("MONOTONIC_USEC")
        .expect("systemd 253+ wants MONOTONIC_USEC with RELOADING=1")
        .parse()
        .unwrap();
    let ready = notify.next(&proxy).await;
    assert!(ready.is("READY"), "{ready:?}");
    assert_eq!(ready.get("STATUS"), Some("serving; config reloaded"));
    assert_eq!(status(&url).await, 403);

    // A bad file: the same two messages (the service is as ready as it
    // was), the running config stays, and the status says so.
    proxy.rewrite_config(
        &with_low(&base, &origin, "allow").replace("mode = \"enforce\"", "mode = \"loud\""),
    );
    proxy.hangup();
    let reloading = notify.next(&proxy).await;
    assert!(reloading.is("RELOADING"), "{reloading:?}");
    let second: u64 = reloading.get("MONOTONIC_USEC").unwrap().parse().unwrap();
    assert!(second > first, "MONOTONIC_USEC went {first} then {second}");
    let ready = notify.next(&proxy).await;
    assert!(ready.is("READY"), "{ready:?}");
    assert_eq!(
        ready.get("STATUS"),
        Some("serving; config reload refused, the running config stays")
    );
    assert_eq!(status(&url).await, 403);
    assert!(proxy.is_running());
    assert_eq!(
        proxy
            .metric("vigil_proxy_config_reloads_total", &[("result", "failed")])
            .await,
        1.0
    );

    // SIGTERM: stopping.
    proxy.terminate();
    let stopping = notify.next(&proxy).await;
    assert!(stopping.is("STOPPING"), "{stopping:?}");
}

#[tokio::test]
async fn an_upgrade_hands_every_socket_to_a_new_main_process_without_a_refusal() {
    let origin = Origin::start();
    // A short grace period: the old process's stop is waited for. Requests
    // in flight when it closes its listeners get this long to finish
    // (Pingora then drops its runtimes), so not 0.
    let base =
        Config::new().server("grace_period_seconds = 2\ngraceful_shutdown_timeout_seconds = 1");
    let config = with_low(&base, &origin, "allow");
    let notify = Notifications::bind();
    let proxy = Proxy::launch(&config, &notify.env());
    let old = notify.next(&proxy).await;
    assert!(old.is("READY"));
    proxy.wait_until_serving().await;
    let old_pid = proxy.pid();
    let url = proxy.url("/echo");

    // Requests all through the hand-over: none may be refused.
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let load = tokio::spawn({
        let url = url.clone();
        async move {
            // A new connection each time: a refused connection shows.
            let client = tls_client_builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let (mut ok, mut failed, mut unread) = (0u32, Vec::new(), 0u32);
            loop {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(r.status().to_string()),
                    // Closed with not a byte of an answer: the old process
                    // accepted the connection in the instant before its
                    // shutdown began and dropped it unread (Pingora drops
                    // a connection whose request it has not read yet when
                    // the shutdown fires, as it drops idle keep-alive
                    // ones). It can catch only the one request in flight
                    // then; sent again, it reaches the new process.
                    Err(e) if is_closed_unanswered(&e) && unread == 0 => {
                        unread += 1;
                        match client.get(&url).send().await {
                            Ok(r) if r.status() == 200 => ok += 1,
                            Ok(r) => failed.push(format!("again: {}", r.status())),
                            Err(e) => failed.push(format!("again: {}", chain(&e))),
                        }
                    }
                    Err(e) => failed.push(chain(&e)),
                }
                if stopped.try_recv().is_ok() {
                    return (ok, failed, unread);
                }
            }
        }
    });

    // Whatever happens from here, the successor is stopped with the test.
    let pid_file = proxy.dir().join("vigil-proxy.pid");
    let _successor = Successor {
        pid_file: pid_file.clone(),
        old: old_pid,
    };
    let upgrade = Command::new(proxy_bin())
        .args(["upgrade", "--config"])
        .arg(proxy.config_path())
        .output()
        .unwrap();
    assert!(
        upgrade.status.success(),
        "{}",
        String::from_utf8_lossy(&upgrade.stderr)
    );
    let new = notify.next(&proxy).await;
    assert!(new.is("READY"), "{new:?}");
    let new_pid: i32 = new.get("MAINPID").unwrap().parse().unwrap();
    assert_ne!(new_pid, i32::try_from(old_pid).unwrap());

    // The old process stops on its own, cleanly.
    let deadline = Instant::now() + DEADLINE;
    let exited = loop {
        if let Some(status) = proxy.exit_status() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the old process did not stop; its log:\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exited.success(), "{exited}");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        new_pid.to_string()
    );

    // The new process serves on the same sockets.
    stop.send(()).unwrap();
    let (ok, failed, unread) = load.await.unwrap();
    assert!(failed.is_empty(), "refused during the upgrade: {failed:?}");
    assert!(ok > 0);
    assert!(unread <= 1);
    assert_eq!(status(&url).await, 200);

    // And stops as the main process would.
    stop_by_pid(new_pid, &pid_file, &notify, &proxy).await;
}

/// The process an upgrade started (not a child of this test: its parent
/// was the old process), stopped when the test ends however it ends — a
/// failed assertion included — by the pid it wrote in the pid file, if
/// that is not the old process's (the old one is the test's child, which
/// [`Proxy`] stops). SIGTERM, then SIGKILL if it is still there after the
/// deadline.
struct Successor {
    pid_file: PathBuf,
    old: u32,
}

impl Drop for Successor {
    fn drop(&mut self) {
        let Some(pid) = std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .filter(|&p| p > 0 && u32::try_from(p).ok() != Some(self.old))
        else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(pid);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_err() {
            return; // gone already
        }
        // It removes its pid file as it exits.
        let deadline = std::time::Instant::now() + DEADLINE;
        while self.pid_file.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.pid_file.exists() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Whether a request failed because its connection closed before any
/// answer came (hyper's "connection closed before message completed").
fn is_closed_unanswered(e: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(h) = cause.downcast_ref::<hyper::Error>() {
            return h.is_incomplete_message();
        }
        source = cause.source();
    }
    false
}

/// An error with its causes.
fn chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// SIGTERM to the upgraded process (not a child of this test: its parent
/// was the old process) by the pid it announced; waits for STOPPING=1 and
/// for it to remove its pid file as it exits.
async fn stop_by_pid(pid: i32, pid_file: &Path, notify: &Notifications, proxy: &Proxy) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let stopping = notify.next(proxy).await;
    assert!(stopping.is("STOPPING"), "{stopping:?}");
    let deadline = Instant::now() + DEADLINE;
    while pid_file.exists() {
        assert!(Instant::now() < deadline, "the new process did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_upgrade_whose_new_process_fails_leaves_the_old_one_serving() {
    let origin = Origin::start();
    let base = Config::new();
    let notify = Notifications::bind();
    let proxy = Proxy::launch(&with_low(&base, &origin, "allow"), &notify.env());
    assert!(notify.next(&proxy).await.is("READY"));
    proxy.wait_until_serving().await;

    // The file turns bad after the check `vigil-proxy upgrade` makes: the
    // new process refuses it and exits; the old one keeps its sockets.
    proxy.rewrite_config("this is not toml");
    let pid_file = proxy.dir().join("vigil-proxy.pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(proxy.pid()).unwrap()),
        nix::sys::signal::Signal::SIGUSR2,
    )
    .unwrap();
    proxy.wait_for_log("binary upgrade failed").await;
    assert!(proxy.is_running());
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        proxy.pid().to_string()
    );
    assert_eq!(status(&proxy.url("/echo")).await, 200);
}
