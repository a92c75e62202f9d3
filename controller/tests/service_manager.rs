//! The controller under a service manager, as systemd runs it
//! (`Type=notify`, systemd/vigil-controller.service): the test binds the
//! unix datagram socket systemd would and hands it over in
//! `$NOTIFY_SOCKET`. `READY=1` comes once the store is open and the API
//! answers; `SIGHUP`, with no reload to give, neither ends it nor says
//! anything; `SIGTERM` is `STOPPING=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixDatagram};

const DEADLINE: Duration = Duration::from_secs(60);

/// Killed by its handle when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn next(socket: &UnixDatagram, log: &std::path::Path) -> String {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(DEADLINE, socket.recv(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8(buf[..n].to_vec()).unwrap(),
        Ok(Err(e)) => panic!("notify socket: {e}"),
        Err(_) => panic!(
            "no notification within {DEADLINE:?}; the controller's log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        ),
    }
}

/// The status line of `GET /healthz`, on a connection of its own.
async fn healthz(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: controller\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(DEADLINE, stream.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    answer.lines().next().unwrap_or_default().to_owned()
}

fn kill(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn ready_once_the_api_answers_and_stopping_on_sigterm_sighup_ignored() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hash.key"), "11".repeat(32)).unwrap();
    std::fs::write(dir.path().join("admin.token"), "admin-token-0123456789").unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let store = format!("sqlite://{}", dir.path().join("controller.db").display());
    let config = dir.path().join("controller.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{addr}\"\nstore = {store:?}\nhash_key_file = \"hash.key\"\nadmin_token_file = \"admin.token\"\n"
        ),
    )
    .unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let log = dir.path().join("controller.log");
    let process = Process(
        Command::new(env!("CARGO_BIN_EXE_vigil-controller"))
            .args(["run", "--config"])
            .arg(&config)
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );

    let ready = next(&notify, &log).await;
    // Asked the moment it arrives: the store is open, the API answers.
    assert_eq!(healthz(addr).await, "HTTP/1.1 200 OK");
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(
        ready
            .lines()
            .any(|l| l == format!("MAINPID={}", process.0.id())),
        "{ready}"
    );

    // No reload to give: SIGHUP is refused aloud, the process serves on.
    kill(&process.0, "HUP");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("vigil-controller has no config reload")
    {
        assert!(tokio::time::Instant::now() < deadline, "SIGHUP not logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(healthz(addr).await, "HTTP/1.1 200 OK");

    kill(&process.0, "TERM");
    let stopping = next(&notify, &log).await;
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
    let mut process = process;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = process.0.try_wait().unwrap() {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
}
