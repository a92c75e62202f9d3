//! Runs against the crate's own loopback origin, no proxy: every request
//! of a lap arrives once, over HTTP/1.1 and cleartext HTTP/2 (prior
//! knowledge), in closed and open loop (which also records how late it
//! sent each request); a connection per request when
//! asked (`--new-connection`); and the binary, interrupted with
//! Ctrl-C, stops early and still reports what it did.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: failing loudly is the point"
)]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use vigil_eval::generate::{GenerateConfig, generate};
use vigil_load::origin::{Received, start};
use vigil_load::pacer::Pacer;
use vigil_load::plan::{Plan, PlanOptions};
use vigil_load::report::Report;
use vigil_load::run::{Load, Progress, RunConfig, run};
use vigil_load::target::{Protocol, TargetSpec};
use vigil_load::tls::Trust;

/// Generous: a debug build on a busy machine.
const DEADLINE: Duration = Duration::from_secs(60);

fn origin() -> (tokio::runtime::Runtime, std::net::SocketAddr, Arc<Received>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let received = Arc::new(Received::default());
    let (addr, _task) = rt
        .block_on(start(
            "127.0.0.1:0".parse().unwrap(),
            "/login".into(),
            received.clone(),
        ))
        .unwrap();
    (rt, addr, received)
}

/// The open loop's microsecond timer is there on this machine: without it
/// the open loop falls back to tokio's millisecond tick, and its latency
/// figures carry up to two milliseconds of the generator's own.
#[test]
fn the_open_loops_microsecond_timer_is_available() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(rt.block_on(async { Pacer::new().is_precise() }));
}

#[test]
fn every_request_of_a_lap_arrives_once_over_h1_and_h2c() {
    let (_rt, addr, received) = origin();
    let (corpus, _) = generate(&GenerateConfig {
        seed: 3,
        users: 20,
        sessions_per_class: 2,
        history_days: 1,
        ..GenerateConfig::default()
    });
    let plan = Arc::new(Plan::from_corpus(&corpus, &PlanOptions::default()).unwrap());
    let lap: u64 = plan.steps.iter().map(|s| 1 + u64::from(s.login)).sum();
    let logins: u64 = plan.steps.iter().map(|s| u64::from(s.login)).sum();
    let spec = TargetSpec::parse(&format!("http://{addr}/")).unwrap();
    let mut round = 0;
    for protocol in [Protocol::Http1, Protocol::Http2] {
        for load in [Load::Concurrency(8), Load::Rate(5_000)] {
            let endpoint = Arc::new(
                spec.endpoint(protocol, plan.devices.len(), &Trust::Insecure)
                    .unwrap(),
            );
            let cfg = RunConfig {
                load,
                duration: Duration::from_secs(120),
                max_requests: lap * 2,
                laps: Some(1),
                threads: 2,
                max_in_flight: 64,
                timeout: Duration::from_secs(20),
                login_path: "/login".into(),
                interval: Duration::from_secs(1),
                think: Duration::ZERO,
                new_connection: false,
                run_id: 0,
            };
            let (r0, l0, c0) = (
                received.requests.load(Ordering::SeqCst),
                received.logins.load(Ordering::SeqCst),
                received.with_session.load(Ordering::SeqCst),
            );
            let result = run(
                &plan,
                &endpoint,
                &cfg,
                round,
                &Arc::new(Progress::default()),
            )
            .unwrap();
            round += 1;
            let what = format!("{protocol:?} {load:?}");
            assert!(
                result.tally.errors.is_empty(),
                "{what}: {:?}",
                result.tally.errors
            );
            assert_eq!(result.tally.requests, lap, "{what}");
            assert_eq!(result.tally.served, lap, "{what}");
            assert_eq!(received.requests.load(Ordering::SeqCst) - r0, lap, "{what}");
            assert_eq!(
                received.logins.load(Ordering::SeqCst) - l0,
                logins,
                "{what}"
            );
            // Every browsing request carried its session cookie; logins none.
            assert_eq!(
                received.with_session.load(Ordering::SeqCst) - c0,
                lap - logins,
                "{what}"
            );
            // The open loop records how late it sent each step (a login
            // and the request after it leave as one step), and the report
            // says so; the closed loop has no intended times to be late for.
            let report = Report::new(
                "origin",
                String::new(),
                String::new(),
                &plan,
                &result.tally,
                result.elapsed,
            );
            match load {
                Load::Rate(_) => {
                    assert_eq!(
                        result.tally.sent_late.len(),
                        plan.steps.len() as u64,
                        "{what}"
                    );
                    let late = report.sent_late.expect("an open loop reports it");
                    assert!(late.p50 <= late.p99 && late.p99 <= late.max, "{what}");
                }
                Load::Concurrency(_) => {
                    assert!(result.tally.sent_late.is_empty(), "{what}");
                    assert_eq!(report.sent_late, None, "{what}");
                }
            }
        }
    }
}

#[test]
fn a_connection_per_request_opens_one_for_every_request() {
    let (_rt, addr, received) = origin();
    let (corpus, _) = generate(&GenerateConfig {
        seed: 3,
        users: 10,
        sessions_per_class: 1,
        history_days: 1,
        ..GenerateConfig::default()
    });
    let plan = Arc::new(Plan::from_corpus(&corpus, &PlanOptions::default()).unwrap());
    let lap: u64 = plan.steps.iter().map(|s| 1 + u64::from(s.login)).sum();
    let spec = TargetSpec::parse(&format!("http://{addr}/")).unwrap();
    for (load, new_connection) in [
        (Load::Concurrency(8), true),
        (Load::Rate(5_000), true),
        (Load::Concurrency(8), false),
    ] {
        let endpoint = Arc::new(
            spec.endpoint(Protocol::Http1, plan.devices.len(), &Trust::Insecure)
                .unwrap(),
        );
        let cfg = RunConfig {
            load,
            duration: Duration::from_secs(120),
            max_requests: lap * 2,
            laps: Some(1),
            threads: 2,
            max_in_flight: 64,
            timeout: Duration::from_secs(20),
            login_path: "/login".into(),
            interval: Duration::from_secs(1),
            think: Duration::ZERO,
            new_connection,
            run_id: 0,
        };
        let before = received.connections.load(Ordering::SeqCst);
        let result = run(&plan, &endpoint, &cfg, 0, &Arc::new(Progress::default())).unwrap();
        let what = format!("{load:?} new_connection={new_connection}");
        assert!(
            result.tally.errors.is_empty(),
            "{what}: {:?}",
            result.tally.errors
        );
        assert_eq!(result.tally.served, lap, "{what}");
        let accepted = received.connections.load(Ordering::SeqCst) - before;
        let opened = endpoint.opened.load(Ordering::SeqCst);
        assert_eq!(accepted, opened, "{what}");
        if new_connection {
            assert_eq!(opened, lap, "{what}");
        } else {
            // At most one per lane and thread: reused.
            assert!(opened <= 16, "{what}: {opened}");
        }
    }
}

#[test]
fn ctrl_c_ends_the_run_early_and_the_report_still_comes() {
    let (_rt, addr, received) = origin();
    let child = Command::new(env!("CARGO_BIN_EXE_vigil-load"))
        .args(["run", &format!("http://{addr}/")])
        .args(["--concurrency", "4", "--duration", "600s", "--json", "-"])
        .args(["--users", "20", "--sessions-per-class", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    // Interrupt once it is sending.
    while received.requests.load(Ordering::SeqCst) < 50 {
        assert!(started.elapsed() < DEADLINE, "the run never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(stderr.contains("interrupted"), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let requests = json["reports"][0]["requests"].as_u64().unwrap();
    // What it reports is what the origin got (all served, none lost).
    assert!(requests >= 50, "{requests}");
    assert_eq!(requests, received.requests.load(Ordering::SeqCst));
}
