//! The HTML report opened in headless Chromium, with the network off: the
//! page draws both charts and fills its tables from the embedded data,
//! loading nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test"
)]

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use vigil_eval::generate::{GenerateConfig, generate};
use vigil_load::origin::{Received, start};
use vigil_load::plan::{Plan, PlanOptions};
use vigil_load::report::Report;
use vigil_load::run::{Load, Progress, RunConfig, run};
use vigil_load::target::{Protocol, TargetSpec};
use vigil_load::tls::Trust;
use vigil_load::{html, slo};

#[test]
fn the_html_report_draws_its_charts_offline_in_chromium() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let received = Arc::new(Received::default());
    let (origin, _task) = rt
        .block_on(start(
            "127.0.0.1:0".parse().unwrap(),
            "/login".into(),
            received,
        ))
        .unwrap();
    let (corpus, _) = generate(&GenerateConfig {
        users: 30,
        sessions_per_class: 2,
        history_days: 1,
        ..GenerateConfig::default()
    });
    let plan = Arc::new(Plan::from_corpus(&corpus, &PlanOptions::default()).unwrap());
    let spec = TargetSpec::parse(&format!("name=origin,url=http://{origin}/")).unwrap();
    let endpoint = Arc::new(spec.endpoint(Protocol::Http1, 1, &Trust::Insecure).unwrap());
    let cfg = RunConfig {
        load: Load::Rate(400),
        duration: Duration::from_secs(2),
        max_requests: 5_000,
        laps: None,
        threads: 1,
        max_in_flight: 64,
        timeout: Duration::from_secs(10),
        login_path: "/login".into(),
        interval: Duration::from_millis(250),
        think: Duration::ZERO,
        new_connection: false,
        run_id: 0,
    };
    let result = run(&plan, &endpoint, &cfg, 0, &Arc::new(Progress::default())).unwrap();
    let report = Report::new(
        "origin </script><b>",
        "rate 400/s".into(),
        "HTTP/1.1 over cleartext".into(),
        &plan,
        &result.tally,
        result.elapsed,
    );
    let checks: Vec<_> = slo::parse("p99<10s,errors<=0")
        .unwrap()
        .iter()
        .map(|t| t.check(&report))
        .collect();
    // An open loop: the generator's own lateness goes in the summary.
    let late = report.sent_late.as_ref().expect("an open loop").p99;
    let page = html::render(&[report], &checks, &[], "vigil-load run …");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.html");
    std::fs::write(&file, &page).unwrap();

    let out = Command::new("/usr/bin/chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            // Nothing may be fetched: a request anywhere would fail.
            "--proxy-server=127.0.0.1:9",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("file://{}", file.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Both charts drew (uPlot adds its root and canvas), the summary and
    // the threshold rows are there, and the hostile target name stayed text.
    assert_eq!(dom.matches("class=\"uplot").count(), 2, "{dom}");
    assert!(dom.matches("<canvas").count() >= 2);
    assert!(dom.contains("Latency over time"));
    assert!(
        dom.contains("origin &lt;/script&gt;&lt;b&gt;"),
        "the name was not escaped"
    );
    assert!(dom.contains(">pass<"));
    // The summary's one row, cell by cell, under its header.
    let head = "<th>legit disturbed</th></tr><tr>";
    let row = dom
        .split_once(head)
        .and_then(|(_, rest)| rest.split_once("</tr>"))
        .map(|(row, _)| row)
        .expect("the summary's row");
    let cells: Vec<&str> = row
        .split("<td>")
        .skip(1)
        .map(|c| c.trim_end_matches("</td>"))
        .collect();
    assert!(dom.contains("<th>sent late p99</th>"), "{dom}");
    let shown = cells.get(10).expect("a sent-late cell");
    let shown_us = match shown.split_once(' ') {
        Some((n, "µs")) => n.parse::<f64>().unwrap(),
        Some((n, "ms")) => n.parse::<f64>().unwrap() * 1000.0,
        _ => panic!("sent late shown as {shown:?}"),
    };
    // Milliseconds are shown to two decimals.
    assert!(
        (shown_us - late as f64).abs() <= 5.0,
        "sent late p99 {late} µs shown as {shown}"
    );
}
