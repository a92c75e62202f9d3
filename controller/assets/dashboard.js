// Vigil dashboard: enhancements only. Every page reads and every form works
// without this script. Served from the binary (CSP script-src 'self').
"use strict";

// A figure with `data-chart` (JSON: kind, t, series, max, unit; see
// controller/src/dashboard/chart.rs) is drawn with uPlot when the page
// loaded it. Its SVG, drawn by the server for a browser without script,
// stays for screen readers (visually hidden); its tables stay as they are.
function colourOf(cls) {
  const probe = document.createElement("span");
  probe.className = cls;
  document.body.append(probe);
  const colour = getComputedStyle(probe).backgroundColor;
  probe.remove();
  return colour;
}

// Steps between a value axis's ticks: whole numbers only, 1-2-5 up to
// far beyond any count a bucket can hold.
const COUNT_STEPS = [];
for (let p = 1; p <= 1e18; p *= 10) COUNT_STEPS.push(p, 2 * p, 5 * p);

function utcTime(seconds) {
  return new Date(seconds * 1000).toISOString().slice(0, 16).replace("T", " ") + "Z";
}

function drawChart(figure) {
  let d;
  try {
    d = JSON.parse(figure.dataset.chart);
  } catch {
    return;
  }
  if (!Array.isArray(d.t) || d.t.length === 0 || !Array.isArray(d.series) || d.series.length === 0) {
    return;
  }
  const raw = d.series.map((s) => s.values);
  let shown = raw;
  if (d.kind === "stacked") {
    // Each series on the ones before it; drawn tallest first so that
    // each lower one paints over it, and the legend reads the raw value.
    let below = d.t.map(() => 0);
    shown = raw.map((values) => (below = below.map((b, i) => b + (values[i] ?? 0))));
  }
  const order = d.kind === "stacked" ? [...raw.keys()].reverse() : [...raw.keys()];
  // Each bucket is drawn at its middle, so the cursor's nearest point is
  // the bucket under it; the legend names the bucket by its start.
  const step = d.step > 0 ? d.step : 3600;
  const mid = d.t.map((t) => t + step / 2);
  const bars = uPlot.paths.bars({ size: [0.8, 48], align: 0 });
  const unit = d.unit || "";
  const series = [{ label: "Time (UTC)", value: (u, v) => (v == null ? "-" : utcTime(v - step / 2)) }];
  const data = [mid];
  for (const i of order) {
    const s = d.series[i];
    const colour = colourOf(s.class);
    const line = d.kind === "lines";
    series.push({
      label: s.label,
      stroke: colour,
      fill: line ? undefined : colour,
      width: line ? 2 : 0,
      paths: line ? undefined : bars,
      points: { show: line },
      spanGaps: false,
      value: (u, v, si, idx) => (idx == null || raw[i][idx] == null ? "-" : raw[i][idx] + unit),
    });
    data.push(shown[i]);
  }
  const daily = step >= 86400;
  const width = () => Math.max(280, figure.clientWidth);
  const plot = new uPlot(
    {
      width: width(),
      height: 220,
      series,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      scales: {
        x: { time: true, range: () => [d.t[0], d.t[d.t.length - 1] + step] },
        y: { range: (u, min, max) => [0, d.max ?? Math.max(1, max)] },
      },
      axes: [
        // 24-hour UTC times under hourly data, dates under daily.
        {
          space: 80,
          values: (u, ticks) =>
            ticks.map((t) => (daily || t % 86400 === 0 ? utcTime(t).slice(5, 10) : utcTime(t).slice(11, 17))),
        },
        // Counts are whole: no tick between 0 and 1.
        { size: 64, incrs: COUNT_STEPS, values: (u, ticks) => ticks.map((v) => v + unit) },
      ],
      cursor: { drag: { x: false, y: false } },
      // The legend reads values; it does not hide series (a hidden one
      // would leave the stack above it counting it).
      legend: { live: true },
    },
    data,
  );
  const hasSvg = figure.querySelector("svg.chart") !== null;
  if (hasSvg) {
    // The server's SVG (visually hidden) reads every bar's value to a
    // screen reader; the canvas would only repeat it.
    plot.root.setAttribute("aria-hidden", "true");
  } else {
    const over = plot.root.querySelector(".u-over");
    if (over) {
      over.setAttribute("role", "img");
      over.setAttribute("aria-label", figure.dataset.chartLabel || "chart");
    }
  }
  figure.prepend(plot.root);
  figure.classList.add("drawn");
  window.addEventListener("resize", () => plot.setSize({ width: width(), height: 220 }));
}

document.addEventListener("DOMContentLoaded", () => {
  if (typeof uPlot === "function") {
    for (const figure of document.querySelectorAll("figure[data-chart]")) {
      drawChart(figure);
    }
  }
  // A copy button beside ids an operator pastes into tickets and searches.
  if (navigator.clipboard) {
    for (const el of document.querySelectorAll("[data-copy]")) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "copy";
      button.textContent = "Copy";
      button.setAttribute("aria-label", "Copy " + el.textContent);
      button.addEventListener("click", () => {
        navigator.clipboard.writeText(el.textContent).then(() => {
          button.textContent = "Copied";
        });
      });
      el.after(button);
    }
  }
  // A confirmation form's button is disabled once pressed: no double post.
  for (const form of document.querySelectorAll("form[action='/dashboard/act']")) {
    form.addEventListener("submit", () => {
      for (const b of form.querySelectorAll("button[type=submit]")) {
        b.disabled = true;
      }
    });
  }
});
