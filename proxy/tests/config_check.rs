//! `vigil-proxy check` and `run` on good and bad config files.

// Test code: a failed unwrap is a failed test. clippy.toml allows these in
// #[test] functions; this also covers the helpers in `common`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Ca, Config, Route};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_vigil-proxy");

fn check(path: &Path) -> Output {
    Command::new(BIN)
        .args(["check", "-c"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_example_config_passes_once_its_files_exist() {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/vigil-proxy.toml"
    ))
    .unwrap();
    let ca = Ca::new("Test CA");
    let app = ca.leaf(&["app.example.com"]);
    let wildcard = ca.leaf(&["*.example.org"]);
    let dir = TempDir::new().unwrap();
    let config = example
        .replace(
            "/etc/vigil/tls/app.example.com.pem",
            app.cert_path().to_str().unwrap(),
        )
        .replace(
            "/etc/vigil/tls/app.example.com.key",
            app.key_path().to_str().unwrap(),
        )
        .replace(
            "/etc/vigil/tls/wildcard.example.org.pem",
            wildcard.cert_path().to_str().unwrap(),
        )
        .replace(
            "/etc/vigil/tls/wildcard.example.org.key",
            wildcard.key_path().to_str().unwrap(),
        )
        .replace("/var/lib/vigil", dir.path().to_str().unwrap());
    let egress = write(&dir, "zscaler-egress.txt", "# egress\n185.46.212.0/22\n");
    let config = config.replace("/etc/vigil/zscaler-egress.txt", egress.to_str().unwrap());
    let path = write(&dir, "vigil-proxy.toml", &config);

    let output = check(&path);

    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), format!("{}: ok\n", path.display()));
}

#[test]
fn a_config_like_the_tests_run_passes() {
    let dir = TempDir::new().unwrap();
    let config = Config::new()
        .section("[limits]\nmax_cookies = 200\n\n[headers]\nrisk_to_app = true")
        .upstream("app", "127.0.0.1:3000".parse().unwrap())
        .route(Route::new("app", "/", "app").mode("monitor").high("revoke"))
        .render()
        .replace(
            "[server]\n",
            &format!(
                "[server]\nstate_dir = {:?}\n",
                dir.path().display().to_string()
            ),
        );
    let path = write(&dir, "vigil-proxy.toml", &config);

    let output = check(&path);

    assert!(
        output.status.success(),
        "{}\n{config}",
        text(&output.stderr)
    );
    assert_eq!(text(&output.stdout), format!("{}: ok\n", path.display()));
}

#[test]
fn check_reports_every_problem_in_one_run() {
    let dir = TempDir::new().unwrap();
    let config = format!(
        r#"
[server]
threads = "two"
colour = "blue"
state_dir = {state_dir:?}

[admin]
listen = "127.0.0.1:9901"

[[listeners]]
name = "http"
listen = "not-an-address"

[[listeners]]
name = "https"
listen = "127.0.0.1:8443"
[[listeners.certificates]]
cert = "/nonexistent/vigil/cert.pem"
key = "/nonexistent/vigil/key.pem"
server_names = ["app.example.com"]

[[upstreams]]
name = "app"
addresses = ["127.0.0.1:3000"]

[[routes]]
name = "app"
path_prefix = "/"
upstream = "app"
mode = "loud"

[[routes]]
name = "api"
path_prefix = "/api"
upstream = "nope"
[routes.policy]
high = "deny"
"#,
        state_dir = dir.path().display().to_string()
    );
    let path = write(&dir, "bad.toml", &config);

    let output = check(&path);

    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    let prefix = format!("error: {}: ", path.display());
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.starts_with(&prefix),
            "not an `error: FILE: KEY: PROBLEM` line: {line}"
        );
    }
    let expected = [
        "server.threads",
        "server.colour",
        "listeners[0].listen",
        "listeners[1].certificates[0].cert",
        "routes[0].mode",
        "routes[1].upstream",
        "routes[1].policy.high",
    ];
    let missing: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|key| !stderr.contains(&format!("{prefix}{key}: ")))
        .collect();
    assert!(
        missing.is_empty(),
        "not reported: {missing:?}\nstderr:\n{stderr}"
    );
    assert!(!text(&output.stdout).contains("ok"));
}

#[test]
fn a_file_that_is_not_toml_fails_check() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "garbage.toml", "[server\nthreads = = 2\n");

    let output = check(&path);

    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(&format!("error: {}: ", path.display())),
        "{stderr}"
    );
}

#[test]
fn a_missing_file_fails_check() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("absent.toml");

    let output = check(&path);

    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains(&path.display().to_string()));
}

#[test]
fn run_refuses_a_bad_config() {
    let dir = TempDir::new().unwrap();
    let path = write(
        &dir,
        "bad.toml",
        "[server]\nthreads = \"two\"\n\n[[listeners]]\nname = \"http\"\nlisten = \"nowhere\"\n",
    );
    let mut child = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Polls the process itself; a proxy that starts anyway is killed here.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };

    let status = status.expect("run exits on a bad config instead of serving");
    assert!(!status.success());
}

/// Every bounded number at its upper bound (and again at its lower bound):
/// `check` accepts the file, and `run` starts on it and judges requests —
/// the stores it sizes and the clocks it sets take the extremes.
#[tokio::test]
async fn what_check_accepts_at_every_bound_run_runs() {
    use common::{Browser, Origin, Proxy};
    let origin = Origin::start();
    for (label, v) in [("upper", Bounds::UPPER), ("lower", Bounds::LOWER)] {
        let config = Config::new()
            .server(&format!("file_check_seconds = {}", v.file_check))
            .section(&format!(
                "[session]\nmax_sessions = {ms}\nidle_timeout_seconds = {idle}\n\
                 revocation_ttl_seconds = {ttl}\nsnapshot_interval_seconds = {snap}\n\
                 [limits]\nmax_cookies = {mc}\nmax_credential_bytes = {mcb}\n\
                 [risk]\nconcurrent_window_seconds = {win}\ndetection_window_seconds = {win}\n\
                 user_idle_timeout_seconds = {win}\nmax_users = {mu}\n\
                 [risk.model]\nlearning_period_days = {days}\n\
                 [fingerprint]\nmax_connections = {conns}\nconnection_idle_timeout_seconds = {cidle}\n",
                ms = v.max_sessions,
                idle = v.idle,
                ttl = v.idle.max(v.ttl),
                snap = v.snapshot,
                mc = v.max_cookies,
                mcb = v.max_credential_bytes,
                win = v.window,
                mu = v.max_users,
                days = v.learning_days,
                conns = v.max_connections,
                cidle = v.connection_idle,
            ))
            .upstream("app", origin.addr())
            .route(Route::new("app", "/", "app"));
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "bounds.toml", &config.render());
        let out = check(&path);
        assert!(out.status.success(), "{label}: {}", text(&out.stderr));
        let proxy = Proxy::start(&config.render()).await;
        let owner = Browser::firefox().cookie("session=bounds");
        for _ in 0..2 {
            assert_eq!(
                owner.get(&proxy.url("/echo")).await.status(),
                200,
                "{label}"
            );
        }
        // At the lower bound a session idle for one second is forgotten:
        // whether the thief's request comes within that second is the
        // machine's timing, not the proxy's behaviour, so the replay is
        // judged at the upper bound only.
        if label == "upper" {
            let thief = Browser::chrome().cookie("session=bounds");
            assert_eq!(
                thief.get(&proxy.url("/echo")).await.status(),
                403,
                "{label}"
            );
        }
        assert!(proxy.is_running(), "{label}");
    }
}

#[test]
fn a_number_past_its_bound_is_refused_by_check_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new()
        .section(
            "[session]\nidle_timeout_seconds = 40000000000\nrevocation_ttl_seconds = 40000000000\n",
        )
        .upstream("app", "127.0.0.1:9".parse().unwrap())
        .route(Route::new("app", "/", "app"));
    let path = write(&dir, "over.toml", &config.render());
    let out = check(&path);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "session.idle_timeout_seconds: 40000000000 is out of range; expected 1 to 31536000"
        ),
        "{err}"
    );
    assert!(err.contains("session.revocation_ttl_seconds"), "{err}");
}

struct Bounds {
    file_check: u64,
    max_sessions: u64,
    idle: u64,
    ttl: u64,
    snapshot: u64,
    max_cookies: u64,
    max_credential_bytes: u64,
    window: u64,
    max_users: u64,
    learning_days: u64,
    max_connections: u64,
    connection_idle: u64,
}

impl Bounds {
    const UPPER: Bounds = Bounds {
        file_check: 86_400,
        max_sessions: 100_000_000,
        idle: 31_536_000,
        ttl: 157_680_000,
        snapshot: 86_400,
        max_cookies: 10_000,
        max_credential_bytes: 65_536,
        window: 31_536_000,
        max_users: 100_000_000,
        learning_days: 3_650,
        max_connections: 10_000_000,
        connection_idle: 604_800,
    };
    const LOWER: Bounds = Bounds {
        file_check: 1,
        max_sessions: 1,
        idle: 1,
        ttl: 1,
        snapshot: 1,
        max_cookies: 1,
        max_credential_bytes: 16,
        window: 1,
        max_users: 1,
        learning_days: 0,
        max_connections: 1,
        connection_idle: 1,
    };
}

/// Vigil's companion, its DBSC cookie and the app's session cookie named
/// alike: `check` and `run` refuse the file alike, each collision named
/// with the file and its key in one run (the companion's `__Host-` name is
/// the DBSC cookie's; the DBSC cookie is the app's session cookie, which
/// Vigil would take out of every request to the app).
#[test]
fn check_and_run_refuse_colliding_cookie_names_alike() {
    let dir = TempDir::new().unwrap();
    let config = format!(
        "[server]\nstate_dir = {:?}\n\n[[listeners]]\nname = \"http\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[upstreams]]\nname = \"app\"\naddresses = [\"127.0.0.1:3000\"]\n\n\
         [[routes]]\nname = \"app\"\npath_prefix = \"/\"\nupstream = \"app\"\ndbsc = \"offer\"\n\n\
         [session]\ncookies = [\"sid\", \"__Host-sid\"]\n\n[binding]\nenabled = true\ncookie_name = \"vigil-dbsc\"\n\n\
         [dbsc]\ncookie_name = \"__Host-sid\"\n",
        dir.path().display().to_string()
    );
    let path = write(&dir, "collide.toml", &config);
    let prefix = format!("error: {}: ", path.display());
    // The DBSC cookie named as the app's session cookie.
    let output = check(&path);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let checked = text(&output.stderr);
    assert!(
        checked.contains(&format!(
            "{prefix}dbsc.cookie_name: \"__Host-sid\" is a session cookie of the app"
        )),
        "{checked}"
    );

    // With the default DBSC name, the companion's `__Host-` name is it.
    let config = config.replace("[dbsc]\ncookie_name = \"__Host-sid\"\n", "");
    let path = write(&dir, "collide.toml", &config);
    let output = check(&path);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let checked = text(&output.stderr);
    assert!(
        checked.contains(&format!(
            "{prefix}binding.cookie_name: \"vigil-dbsc\" collides with [dbsc] cookie_name \"__Host-vigil-dbsc\""
        )),
        "{checked}"
    );
    let mut child = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Polls the process itself; a proxy that starts anyway is killed here.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = status.expect("run exits on colliding cookie names instead of serving");
    assert!(!status.success());
    let mut ran = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut ran).unwrap();
    for line in checked.lines().filter(|l| l.starts_with(&prefix)) {
        assert!(ran.contains(line), "check said {line:?}; run said:\n{ran}");
    }
}
