//! The HTML report: one self-contained page, viewable offline.
//!
//! The charts are drawn by uPlot (MIT), embedded in the page. Why uPlot:
//! about 50 KB minified with no dependencies, made for time series of many
//! points, and a plain IIFE build that works from an inline `<script>`. Its
//! files come from the npm registry at the version
//! `vendor/package-lock.json` (at the workspace's root) pins; only the
//! minified file, its stylesheet and licence are committed
//! (`vendor/uplot/`), with their hashes (`vendor/uplot/SHA256SUMS`), and a
//! test checks them against the lockfile (`tests/assets.rs`). The
//! controller's dashboard serves the same copy. They are
//! compiled in with `include_str!`, so the binary writes the page without
//! any file around it and the page loads nothing from the network.

use serde::Serialize;

use crate::report::Report;
use crate::slo::Check;

const UPLOT_JS: &str = include_str!("../../../vendor/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../../vendor/uplot/uPlot.min.css");
const UPLOT_LICENSE: &str = include_str!("../../../vendor/uplot/LICENSE");

#[derive(Serialize)]
struct Data<'a> {
    reports: &'a [Report],
    checks: &'a [Check],
    ratios: &'a [(String, String, f64, f64)],
    command: &'a str,
}

/// The page for one or more targets' reports, with the threshold checks and
/// the ratios of a comparison (`(target, baseline, throughput ratio, p99 ratio)`).
pub fn render(
    reports: &[Report],
    checks: &[Check],
    ratios: &[(String, String, f64, f64)],
    command: &str,
) -> String {
    let data = serde_json::to_string(&Data {
        reports,
        checks,
        ratios,
        command,
    })
    .unwrap_or_else(|_| "{}".to_owned());
    // Inside <script>, only "</" can end the element early.
    let data = data.replace("</", "<\\/");
    let license = UPLOT_LICENSE.replace("*/", "* /");
    TEMPLATE
        .replace("/*UPLOT_CSS*/", UPLOT_CSS)
        .replace("/*UPLOT_LICENSE*/", &license)
        .replace("/*UPLOT_JS*/", UPLOT_JS)
        .replace("/*DATA*/", &data)
}

const TEMPLATE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'">
<title>vigil-load report</title>
<style>/*UPLOT_CSS*/</style>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2330; max-width: 1200px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.muted { color: #667; } code { font-size: 12px; background: #f3f4f7; padding: 2px 4px; border-radius: 3px; }
table { border-collapse: collapse; margin: 6px 0 12px; } th, td { padding: 3px 10px; text-align: right; border-bottom: 1px solid #e4e6eb; }
th:first-child, td:first-child { text-align: left; } th { background: #f6f7f9; font-weight: 600; }
.pass { color: #1a7f37; font-weight: 600; } .fail { color: #cf222e; font-weight: 600; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
</style>
</head>
<body>
<h1>vigil-load report</h1>
<div class="muted" id="command"></div>
<h2>Summary</h2>
<table id="summary"></table>
<div id="ratios"></div>
<div id="checks"></div>
<h2>Latency</h2>
<div class="charts"><div id="over-time"></div><div id="percentiles"></div></div>
<div class="muted">Latency is measured from each request's intended send time (open loop) or from when a slot freed (fixed concurrency). In an open loop, "sent late" is how late the generator itself sent requests: the floor under every latency here.</div>
<h2>Detection by scenario class</h2>
<div id="classes"></div>
<script>/*
uPlot, embedded: https://github.com/leeoniya/uPlot
/*UPLOT_LICENSE*/
*/</script>
<script>/*UPLOT_JS*/</script>
<script>
"use strict";
const DATA = /*DATA*/;
const colours = ["#2f6fdf", "#e0702f", "#2a9d5c", "#b23bb5", "#c9a227", "#555"];
const us = v => v >= 1e6 ? (v / 1e6).toFixed(2) + " s" : v >= 1e3 ? (v / 1e3).toFixed(2) + " ms" : Math.round(v) + " µs";
const pct = v => v == null ? "–" : (v * 100).toFixed(2) + "%";
function el(tag, text, cls) { const e = document.createElement(tag); if (text != null) e.textContent = text; if (cls) e.className = cls; return e; }
function table(target, head, rows) {
  const t = target || el("table"); const tr = el("tr"); head.forEach(h => tr.appendChild(el("th", h))); t.appendChild(tr);
  rows.forEach(r => { const tr = el("tr"); r.forEach(c => tr.appendChild(c instanceof Node ? (() => { const td = el("td"); td.appendChild(c); return td; })() : el("td", c))); t.appendChild(tr); });
  return t;
}
document.getElementById("command").textContent = DATA.command;
table(document.getElementById("summary"),
  ["target", "load", "transport", "requests", "req/s", "p50", "p90", "p99", "p99.9", "max", "sent late p99", "errors", "CPU µs/req", "hijacks caught", "legit disturbed"],
  DATA.reports.map(r => [r.target, r.load, r.transport, String(r.requests), r.throughput.toFixed(0), us(r.latency.p50), us(r.latency.p90),
    us(r.latency.p99), us(r.latency.p999), us(r.latency.max), r.sent_late == null ? "–" : us(r.sent_late.p99),
    pct(r.error_rate), r.cpu_us_per_request == null ? "–" : r.cpu_us_per_request.toFixed(1),
    pct(r.detect), pct(r.disturbed)]));
if (DATA.ratios.length) {
  const d = document.getElementById("ratios"); d.appendChild(el("h2", "Ratios"));
  d.appendChild(table(null, ["target", "against", "throughput", "p99"], DATA.ratios.map(r => [r[0], r[1], r[2].toFixed(2) + "×", r[3].toFixed(2) + "×"])));
}
if (DATA.checks.length) {
  const d = document.getElementById("checks"); d.appendChild(el("h2", "Thresholds"));
  d.appendChild(table(null, ["target", "threshold", "measured", "result"], DATA.checks.map(c => [c.target, c.threshold,
    c.measured == null ? "not measured" : String(+c.measured.toFixed(4)), el("span", c.pass ? "pass" : "FAIL", c.pass ? "pass" : "fail")])));
}
const width = Math.min(1100, document.body.clientWidth - 20);
// Latency over time: p99 of every target, and p50 dashed.
(function () {
  const xs = new Set(); DATA.reports.forEach(r => r.timeline.forEach(p => xs.add(p.t)));
  const x = Array.from(xs).sort((a, b) => a - b);
  const data = [x]; const series = [{ label: "s" }];
  DATA.reports.forEach((r, i) => {
    const by = new Map(r.timeline.map(p => [p.t, p]));
    data.push(x.map(t => by.has(t) && by.get(t).rps > 0 ? by.get(t).p99 / 1000 : null));
    series.push({ label: r.target + " p99", stroke: colours[i % colours.length], width: 2 });
    data.push(x.map(t => by.has(t) && by.get(t).rps > 0 ? by.get(t).p50 / 1000 : null));
    series.push({ label: r.target + " p50", stroke: colours[i % colours.length], dash: [4, 4] });
  });
  new uPlot({ title: "Latency over time (ms)", width: width / 2 - 10, height: 320, series,
    scales: { x: { time: false } }, axes: [{ label: "seconds" }, { label: "ms" }] }, data, document.getElementById("over-time"));
})();
// Percentile distribution on a "nines" axis.
(function () {
  const nines = p => -Math.log10(Math.max(1e-7, 1 - p / 100));
  const xs = new Set(); DATA.reports.forEach(r => r.percentiles.forEach(p => xs.add(nines(p[0]))));
  const x = Array.from(xs).sort((a, b) => a - b);
  const data = [x]; const series = [{ label: "percentile" }];
  DATA.reports.forEach((r, i) => {
    const by = new Map(r.percentiles.map(p => [nines(p[0]), p[1] / 1000]));
    data.push(x.map(v => by.has(v) ? by.get(v) : null));
    series.push({ label: r.target, stroke: colours[i % colours.length], width: 2, spanGaps: true });
  });
  const label = v => v == null ? "" : (100 - 100 * Math.pow(10, -v)).toPrecision(6).replace(/\.?0+$/, "") + "%";
  new uPlot({ title: "Latency by percentile (ms)", width: width / 2 - 10, height: 320, series,
    scales: { x: { time: false } }, axes: [{ label: "percentile", values: (u, vals) => vals.map(label) }, { label: "ms" }] },
    data, document.getElementById("percentiles"));
})();
DATA.reports.forEach(r => {
  if (!r.classes.length) return;
  const d = document.getElementById("classes"); d.appendChild(el("h3", r.target));
  d.appendChild(table(null, ["class", "label", "sessions", "requests", "caught / disturbed", "rate", "blocked", "until detection (mean / median / p95)"],
    r.classes.map(c => [c.class, c.label, String(c.sessions), String(c.requests), String(c.label === "attack" ? c.caught : c.disturbed),
      pct(c.rate), String(c.blocked), c.until_detection ? c.until_detection.mean.toFixed(2) + " / " + c.until_detection.median + " / " + c.until_detection.p95 : ""])));
});
</script>
</body>
</html>
"##;
