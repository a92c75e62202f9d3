//! The proxy under test, as a real child process of the built binary.
//!
//! When the environment variable `VIGIL_PROXY_BIN` is set, the binary at that
//! path is launched instead of this build's, so an attack test can be run
//! against an older release to show it fails there.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::client::http_client;

/// Longest wait for a proxy to start serving, or for a log line to appear.
/// Generous: a debug build may start slowly when every test starts one.
const DEADLINE: Duration = Duration::from_secs(30);
/// How often a condition is polled while waiting for it.
const POLL: Duration = Duration::from_millis(20);

/// A running `vigil-proxy`, killed by its handle when dropped.
///
/// Its stderr goes to `stderr.log` in its own temporary directory, which also
/// holds its config file and its `state_dir`.
#[derive(Debug)]
pub(crate) struct Proxy {
    child: Mutex<Child>,
    dir: TempDir,
    config_path: PathBuf,
    log_path: PathBuf,
    listeners: Vec<Listener>,
    admin: Option<SocketAddr>,
    http: reqwest::Client,
}

#[derive(Debug, Clone)]
struct Listener {
    name: String,
    addr: SocketAddr,
    tls: bool,
}

/// A scrape of the admin listener's `/metrics`.
#[derive(Debug, Clone)]
pub(crate) struct Metrics(String);

/// The binary to launch: `VIGIL_PROXY_BIN` when set, else this build's.
fn proxy_bin() -> PathBuf {
    std::env::var_os("VIGIL_PROXY_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_vigil-proxy")),
        PathBuf::from,
    )
}

// === impl Proxy ===

/// The demo's addresses, as `vigil-proxy demo` takes them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DemoAddrs {
    pub(crate) listen: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) origin: SocketAddr,
    pub(crate) listen_b: SocketAddr,
    pub(crate) admin_b: SocketAddr,
    pub(crate) controller: SocketAddr,
}

impl Proxy {
    /// Runs `vigil-proxy run -c FILE` with `config` written to FILE and
    /// waits until every listener accepts connections and admin `/readyz`
    /// answers 200. Sets `server.state_dir` to the proxy's own directory
    /// unless the config names one. Panics, with the proxy's log, if it exits
    /// or is not ready within the deadline.
    pub(crate) async fn start(config: &str) -> Proxy {
        let proxy = Self::launch(config, &[]);
        proxy.wait_until_serving().await;
        proxy
    }

    /// Runs `vigil-proxy run -c FILE` as [`Proxy::start`] does, with `env`
    /// added to its environment, and returns at once: the caller watches
    /// its start its own way (then [`Proxy::wait_until_serving`]).
    pub(crate) fn launch(config: &str, env: &[(&str, &std::ffi::OsStr)]) -> Proxy {
        let dir = TempDir::new().unwrap();
        let table = with_state_dir(config, dir.path());
        let listeners = listeners_of(&table);
        let admin = table
            .get("admin")
            .and_then(|a| a.get("listen"))
            .and_then(|l| l.as_str())
            .map(|l| l.parse().unwrap());

        let config_path = dir.path().join("vigil-proxy.toml");
        std::fs::write(&config_path, toml::to_string(&table).unwrap()).unwrap();
        let args = vec![
            "run".to_owned(),
            "-c".to_owned(),
            config_path.display().to_string(),
        ];
        Self::spawn_process(dir, config_path, &args, listeners, admin, env)
    }

    /// Runs `vigil-proxy demo` with the given addresses (node A is the proxy
    /// returned; node B and the controller run beside it) and waits until it
    /// serves, like [`Proxy::start`].
    pub(crate) async fn demo(addrs: DemoAddrs) -> Proxy {
        let DemoAddrs {
            listen,
            admin,
            origin,
            listen_b,
            admin_b,
            controller,
        } = addrs;
        let dir = TempDir::new().unwrap();
        let args = [
            "demo".to_owned(),
            "--listen".to_owned(),
            listen.to_string(),
            "--admin".to_owned(),
            admin.to_string(),
            "--origin".to_owned(),
            origin.to_string(),
            "--listen-b".to_owned(),
            listen_b.to_string(),
            "--admin-b".to_owned(),
            admin_b.to_string(),
            "--controller".to_owned(),
            controller.to_string(),
        ];
        // The demo app listens too; waiting for it keeps the first request
        // from racing its start.
        let listeners = vec![
            Listener {
                name: "http".to_owned(),
                addr: listen,
                tls: false,
            },
            Listener {
                name: "demo-origin".to_owned(),
                addr: origin,
                tls: false,
            },
            Listener {
                name: "demo-node-b".to_owned(),
                addr: listen_b,
                tls: false,
            },
            Listener {
                name: "demo-controller".to_owned(),
                addr: controller,
                tls: false,
            },
        ];
        Self::spawn(dir, PathBuf::new(), &args, listeners, Some(admin)).await
    }

    /// `http://<the listener called name><path>`.
    pub(crate) fn url_of(&self, name: &str, path: &str) -> String {
        format!("http://{}{path}", self.listener(name))
    }

    async fn spawn(
        dir: TempDir,
        config_path: PathBuf,
        args: &[String],
        listeners: Vec<Listener>,
        admin: Option<SocketAddr>,
    ) -> Proxy {
        let proxy = Self::spawn_process(dir, config_path, args, listeners, admin, &[]);
        proxy.wait_until_serving().await;
        proxy
    }

    fn spawn_process(
        dir: TempDir,
        config_path: PathBuf,
        args: &[String],
        listeners: Vec<Listener>,
        admin: Option<SocketAddr>,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Proxy {
        let log_path = dir.path().join("stderr.log");
        let child = Command::new(proxy_bin())
            .args(args)
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(File::create(dir.path().join("stdout.log")).unwrap())
            .stderr(File::create(&log_path).unwrap())
            .spawn()
            .unwrap();
        Proxy {
            child: Mutex::new(child),
            dir,
            config_path,
            log_path,
            listeners,
            admin,
            http: http_client(),
        }
    }

    /// Waits until every listener accepts and admin `/readyz` answers 200;
    /// panics, with the log, if the process exits or the deadline passes.
    pub(crate) async fn wait_until_serving(&self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.exit_status() {
                panic!(
                    "vigil-proxy exited with {status} before serving; its log:\n{}",
                    self.log()
                );
            }
            if self.serving().await {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "vigil-proxy was not serving within {DEADLINE:?}; its log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn serving(&self) -> bool {
        for listener in &self.listeners {
            if TcpStream::connect(listener.addr).await.is_err() {
                return false;
            }
        }
        match self.admin {
            Some(_) => self
                .admin_get("/readyz")
                .await
                .is_ok_and(|r| r.status() == 200),
            None => true,
        }
    }

    /// The address of the first cleartext listener.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.listeners
            .iter()
            .find(|l| !l.tls)
            .expect("the config has a cleartext listener")
            .addr
    }

    /// `http://<first cleartext listener><path>`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// The address of the listener called `name`.
    pub(crate) fn listener(&self, name: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("no listener named {name:?}"))
            .addr
    }

    /// The admin listener's address.
    pub(crate) fn admin(&self) -> SocketAddr {
        self.admin.expect("the config has an admin listener")
    }

    /// GET `path` from the admin listener.
    pub(crate) async fn admin_get(&self, path: &str) -> reqwest::Result<reqwest::Response> {
        let url = format!("http://{}{path}", self.admin());
        self.http.get(url).send().await
    }

    /// Scrapes `/metrics`.
    pub(crate) async fn metrics(&self) -> Metrics {
        let response = self.admin_get("/metrics").await.unwrap();
        assert_eq!(response.status(), 200, "GET /metrics");
        Metrics(response.text().await.unwrap())
    }

    /// The sum of the series of metric `name` whose labels include `labels`;
    /// 0 when there is none.
    pub(crate) async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.metrics().await.value(name, labels)
    }

    /// Polls metric `name` (summed as in [`Proxy::metric`]) until `want`
    /// holds of it and returns the value; panics with the last scrape if it
    /// does not within the deadline. Counters may be bumped after the
    /// response has left, so tests wait for them instead of reading once.
    pub(crate) async fn wait_for_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        want: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let metrics = self.metrics().await;
            let value = metrics.value(name, labels);
            if want(value) {
                return value;
            }
            if Instant::now() > deadline {
                panic!(
                    "{name}{labels:?} stayed at {value}, not the value wanted; /metrics:\n{}",
                    metrics.text()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Replaces the config file with `config` (given `server.state_dir` as
    /// [`Proxy::start`] does), in one rename so that no reader sees half a
    /// file. Invalid TOML is written as it is.
    pub(crate) fn rewrite_config(&self, config: &str) {
        let text = match config.parse::<toml::Table>() {
            Ok(_) => toml::to_string(&with_state_dir(config, self.dir.path())).unwrap(),
            Err(_) => config.to_owned(),
        };
        let staged = self.dir.path().join("vigil-proxy.toml.new");
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, &self.config_path).unwrap();
    }

    /// Sends SIGHUP (reload the config) to the pid this harness started.
    pub(crate) fn hangup(&self) {
        let child = self.child.lock().unwrap();
        let status = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -HUP failed");
    }

    /// Asks the proxy to shut down gracefully (SIGTERM to the pid this
    /// harness started) and waits for it to exit; returns its log.
    pub(crate) fn terminate(&self) -> String {
        self.stop_with("-TERM")
    }

    /// Stops the proxy fast (SIGINT to the pid this harness started: no
    /// grace for requests in flight) and waits for it to exit; returns its
    /// log.
    pub(crate) fn interrupt(&self) -> String {
        self.stop_with("-INT")
    }

    /// Sends `signal` and waits (within the deadline) for the exit.
    fn stop_with(&self, signal: &str) -> String {
        let mut child = self.child.lock().unwrap();
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
        let deadline = std::time::Instant::now() + DEADLINE;
        while child.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the proxy did not exit after {signal}:\n{}",
                self.log()
            );
            std::thread::sleep(POLL);
        }
        drop(child);
        self.log()
    }

    /// Everything the proxy has written to stderr so far.
    pub(crate) fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// Waits until the log contains `needle` and returns the first line that
    /// does. Panics with the log if it does not appear within the deadline.
    pub(crate) async fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            if Instant::now() > deadline {
                panic!("{needle:?} never appeared in the proxy's log:\n{log}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The process id of the proxy this harness started, to read its
    /// `/proc/<pid>/status`.
    pub(crate) fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    /// Whether the process is still running.
    pub(crate) fn is_running(&self) -> bool {
        self.exit_status().is_none()
    }

    pub(crate) fn exit_status(&self) -> Option<std::process::ExitStatus> {
        self.child.lock().unwrap().try_wait().unwrap()
    }

    /// The proxy's temporary directory (config, logs, state).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file it was started with (empty for the demo).
    pub(crate) fn config_path(&self) -> &Path {
        &self.config_path
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Ok(child) = self.child.get_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `config` parsed, with `server.state_dir` set to `dir` unless it names one.
fn with_state_dir(config: &str, dir: &Path) -> toml::Table {
    let mut table: toml::Table = config
        .parse()
        .unwrap_or_else(|e| panic!("the proxy wants a config that is valid TOML: {e}\n{config}"));
    let server = table
        .entry("server")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let Some(server) = server.as_table_mut() {
        server
            .entry("state_dir")
            .or_insert_with(|| toml::Value::String(dir.display().to_string()));
    }
    table
}

fn listeners_of(table: &toml::Table) -> Vec<Listener> {
    let Some(listeners) = table.get("listeners").and_then(|l| l.as_array()) else {
        return Vec::new();
    };
    listeners
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let addr = l.get("listen")?.as_str()?.parse().ok()?;
            let name = l
                .get("name")
                .and_then(|n| n.as_str())
                .map_or_else(|| format!("listeners[{i}]"), str::to_owned);
            let tls = l
                .get("certificates")
                .and_then(|c| c.as_array())
                .is_some_and(|c| !c.is_empty());
            Some(Listener { name, addr, tls })
        })
        .collect()
}

// === impl Metrics ===

impl Metrics {
    /// The sum of the series of `name` whose labels include every pair in
    /// `labels`; 0 when none does.
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(parse_sample)
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// Whether any series of `name` exists.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.0
            .lines()
            .filter_map(parse_sample)
            .any(|s| s.name == name)
    }

    /// The scrape as text.
    pub(crate) fn text(&self) -> &str {
        &self.0
    }
}

struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// One line of the Prometheus text format: `name{k="v",...} value`.
fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)),
        None => (series, Vec::new()),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

fn parse_labels(mut rest: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                _ => value.push(c),
            }
        }
        labels.push((key.trim_start_matches(',').trim().to_owned(), value));
        rest = &after[end..];
    }
    labels
}
