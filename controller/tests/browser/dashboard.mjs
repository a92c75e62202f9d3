// An operator at the dashboard in a real browser: headless Chromium
// (Debian's, not a Playwright download) driven by playwright-core, with
// axe-core's accessibility checks on every page visited.
//
//   node dashboard.mjs '{"base": URL, "token": T, "reference": R, "user": KEY,
//                        "out": FILE, "screenshots": DIR?}'
//
// Signs in with the token, searches for the reference id from the
// navigation bar, opens the detection, reads its facts, marks it a false
// positive through the confirmation page, goes back to the detection and
// on to its user's page, then to the precision of the labels. Writes one
// JSON object to `out`: {"steps": [path…], "detection", "done",
// "labelled", "user", "precision": TEXT, "axe": {PAGE: [violations]},
// "charts": {PAGE: [{"label", "drawn", "legend": [series…]}]}, "csp":
// [messages]}. Screenshots of each page to DIR when given. Fails (exit 1)
// on any step that does not happen within 20 s.

import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const TIMEOUT_MS = 20_000;
const args = JSON.parse(process.argv[2]);
const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

const result = { steps: [], axe: {}, charts: {}, csp: [] };
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT_MS);
  // A CSP violation is reported on the console: the pages must have none.
  page.on('console', (m) => {
    if (/Content.Security.Policy/i.test(m.text())) result.csp.push(m.text());
  });
  const step = async (name) => {
    result.steps.push(new URL(page.url()).pathname);
    // Evaluated through the DevTools protocol, which the page's CSP does
    // not govern: the page itself runs no inline script.
    await page.evaluate(axeSource);
    const found = await page.evaluate(async () => {
      const r = await globalThis.axe.run(document, {
        runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] },
      });
      return r.violations.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
    });
    result.axe[name] = found;
    // Each figure with chart data: whether the chart library drew it (a
    // canvas of a plot), and the series its legend names.
    result.charts[name] = await page.evaluate(() =>
      [...document.querySelectorAll('figure[data-chart]')].map((f) => ({
        label: f.dataset.chartLabel,
        drawn: f.classList.contains('drawn') && f.querySelector('.uplot canvas') !== null,
        legend: [...f.querySelectorAll('.u-legend .u-series .u-label')].map((l) => l.textContent),
      })));
    if (args.screenshots) {
      await page.screenshot({ path: `${args.screenshots}/dashboard-${name}.png`, fullPage: true });
    }
  };

  page.on('load', () => console.error(`browser: loaded ${page.url()}`));
  await page.goto(`${args.base}/dashboard`);
  await page.waitForURL(/\/dashboard\/login$/);
  await step('login');
  await page.getByLabel('Admin or viewer token').fill(args.token);
  await Promise.all([
    page.waitForURL(/\/dashboard$/),
    page.getByRole('button', { name: 'Sign in', exact: true }).click(),
  ]);
  await step('overview');
  // The cursor over the hour a node's counts fell in (found from the
  // figure's own data: bucket i is drawn at (i + ½) / n of the plot's
  // width): the legend reads that hour's counts, each action's own, not
  // the stack's running total.
  const judged = 'figure[data-chart-label^="Requests judged"]';
  const data = JSON.parse(await page.getAttribute(judged, 'data-chart'));
  const busy = data.t.findIndex((_, i) => data.series.some((s) => s.values[i] > 0));
  const box = await page.locator(`${judged} .u-over`).boundingBox();
  await page.mouse.move(box.x + ((busy + 0.5) / data.t.length) * box.width, box.y + box.height / 2);
  result.hover = await page.evaluate((sel) =>
    [...document.querySelectorAll(`${sel} .u-legend .u-series`)].map(
      (tr) => `${tr.querySelector('.u-label').textContent}=${tr.querySelector('.u-value').textContent}`,
    ), judged);
  result.hoverStart = data.t[busy];
  await page.mouse.move(0, 0);

  // The rules page, from the overview's link, and back.
  await Promise.all([
    page.waitForURL(/\/dashboard\/rules$/),
    page.getByRole('link', { name: 'Rules: matches and shadow results' }).click(),
  ]);
  await step('rules');
  result.rules = await page.innerText('main');
  await Promise.all([
    page.waitForURL(/\/dashboard$/),
    page.getByRole('link', { name: 'Overview', exact: true }).click(),
  ]);

  await page.getByRole('searchbox', { name: 'Search' }).fill(args.reference);
  await page.keyboard.press('Enter');
  await page.waitForURL(/\/dashboard\/search\?q=/);
  await step('search');
  await Promise.all([
    page.waitForURL(/\/dashboard\/detection\?reference=/),
    page.getByRole('link', { name: args.reference, exact: true }).first().click(),
  ]);
  await step('detection');
  result.detection = await page.innerText('main');

  await Promise.all([
    page.waitForURL(/\/dashboard\/confirm\?/),
    page.getByRole('link', { name: 'Mark false positive…' }).click(),
  ]);
  await step('confirm');
  await Promise.all([
    page.waitForURL(/\/dashboard\/act$/),
    page.getByRole('button', { name: 'Mark a false positive' }).click(),
  ]);
  await step('done');
  result.done = await page.innerText('main');

  // Back to the detection, now labelled, and on to its user.
  await Promise.all([
    page.waitForURL(/\/dashboard\/detection\?reference=/),
    page.getByRole('link', { name: 'Back to the detection' }).click(),
  ]);
  result.labelled = await page.innerText('main');
  await Promise.all([
    page.waitForURL(/\/dashboard\/user\?key=/),
    page.getByRole('link', { name: args.user, exact: true }).first().click(),
  ]);
  await step('user');
  result.user = await page.innerText('main');

  // The precision of operators' labels, from the overview's link: the
  // false positive just marked is counted there.
  await Promise.all([
    page.waitForURL(/\/dashboard$/),
    page.getByRole('link', { name: 'Overview', exact: true }).click(),
  ]);
  await Promise.all([
    page.waitForURL(/\/dashboard\/precision$/),
    page.getByRole('link', { name: "Precision of detections (operators' labels)" }).click(),
  ]);
  await step('precision');
  result.precision = await page.innerText('main');
  writeFileSync(args.out, JSON.stringify(result));
} finally {
  await browser.close();
}
