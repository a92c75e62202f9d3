// Operators at the dashboard of a real fleet, in a real browser: headless
// Chromium (Debian's, not a Playwright download) driven by playwright-core,
// with axe-core's accessibility checks on every page shown. Driven by
// proxy/tests/fleet_controller.rs, which starts the controller and two
// edge nodes and checks on the nodes what the operators did here.
//
//   node fleet.mjs '{"base": URL, "token": ADMIN, "viewer": VIEWER,
//                    "fp": REF, "revoke": REF, "forged": SESSION, "out": FILE}'
//
// 1. A responder signs in, searches for the reference id `fp` from the
//    navigation bar, reads the detection's facts and marks it a false
//    positive through the confirmation page.
// 2. They search for the reference id `revoke`, read its facts, go on to
//    its user and revoke the user's session through the confirmation page.
// 3. A page of another origin (http://localhost:1, served by this script
//    through Playwright's routing: no server listens there)
//    posts the responder's own form, with their valid CSRF token, to revoke
//    the session `forged`: the answer's status is recorded.
// 4. A viewer signs in: the detection `fp` offers no action; the
//    confirmation page and a form posted from the dashboard's own page
//    (with the viewer's valid CSRF token) are refused: statuses recorded.
//
// Writes one JSON object to `out`: {"steps": [path…], "fp": {"detection",
// "done"}, "revoke": {"detection", "user", "done"}, "forged": STATUS,
// "viewer": {"actions", "confirm", "post"}, "axe": {PAGE: [violations]},
// "csp": [messages]}. Fails (exit 1) on any step that does not happen
// within 20 s.

import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const TIMEOUT_MS = 20_000;
const args = JSON.parse(process.argv[2]);
const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const FORGER = 'http://localhost:1';

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

const result = { steps: [], fp: {}, revoke: {}, viewer: {}, axe: {}, csp: [] };

// A page of its own context (its own cookies), with CSP violations
// recorded and `step(name)` running axe-core on what it shows.
async function open() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT_MS);
  page.on('console', (m) => {
    if (/Content.Security.Policy/i.test(m.text())) result.csp.push(m.text());
  });
  page.on('load', () => console.error(`browser: loaded ${page.url()}`));
  const step = async (name) => {
    result.steps.push(new URL(page.url()).pathname);
    // Evaluated through the DevTools protocol, which the page's CSP does
    // not govern: the page itself runs no inline script.
    await page.evaluate(axeSource);
    result.axe[name] = await page.evaluate(async () => {
      const r = await globalThis.axe.run(document, {
        runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] },
      });
      return r.violations.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
    });
  };
  pages.push(page);
  return { context, page, step };
}

// The pages opened, for what they showed when a step fails.
const pages = [];

async function signIn(page, step, token, name) {
  await page.goto(`${args.base}/dashboard`);
  await page.waitForURL(/\/dashboard\/login$/);
  if (name) await step(name);
  await page.getByLabel('Admin or viewer token').fill(token);
  await Promise.all([
    page.waitForURL(/\/dashboard$/),
    page.getByRole('button', { name: 'Sign in', exact: true }).click(),
  ]);
}

// Searches for `reference` from the navigation bar and opens its detection.
async function findDetection(page, reference) {
  await page.getByRole('searchbox', { name: 'Search' }).fill(reference);
  await page.keyboard.press('Enter');
  await page.waitForURL(/\/dashboard\/search\?q=/);
  await Promise.all([
    page.waitForURL(/\/dashboard\/detection\?reference=/),
    // A node's reference id is 16 hex digits, as a user key is: the
    // search also offers a user by that key; the detection's link it is.
    page.locator('main a[href^="/dashboard/detection?reference="]')
      .filter({ hasText: reference }).first().click(),
  ]);
}

// Posts a form of `fields` to the dashboard's `/dashboard/act` from the
// page's own document (a form built through the DevTools protocol: the
// page's CSP allows no script of its own); the answer's status.
async function post(page, fields) {
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url() === `${args.base}/dashboard/act`),
    page.evaluate(({ action, fields }) => {
      const form = document.createElement('form');
      form.method = 'post';
      form.action = action;
      for (const [name, value] of Object.entries(fields)) {
        const input = document.createElement('input');
        input.type = 'hidden';
        input.name = name;
        input.value = value;
        form.appendChild(input);
      }
      document.body.appendChild(form);
      form.submit();
    }, { action: `${args.base}/dashboard/act`, fields }),
  ]);
  await page.waitForLoadState();
  return response.status();
}

try {
  // 1. The responder frees a false positive.
  const { context, page, step } = await open();
  await signIn(page, step, args.token, 'login');
  await step('overview');
  await findDetection(page, args.fp);
  await step('detection');
  result.fp.detection = await page.innerText('main');
  await Promise.all([
    page.waitForURL(/\/dashboard\/confirm\?/),
    page.getByRole('link', { name: 'Mark false positive…' }).click(),
  ]);
  await step('confirm-false-positive');
  await Promise.all([
    page.waitForURL(/\/dashboard\/act$/),
    page.getByRole('button', { name: 'Mark a false positive' }).click(),
  ]);
  await step('done-false-positive');
  result.fp.done = await page.innerText('main');

  // 2. They find a user from a reference id and revoke the session.
  await findDetection(page, args.revoke);
  result.revoke.detection = await page.innerText('main');
  await Promise.all([
    page.waitForURL(/\/dashboard\/user\?key=/),
    page.locator('main a[href^="/dashboard/user?key="]').first().click(),
  ]);
  await step('user');
  result.revoke.user = await page.innerText('main');
  await Promise.all([
    page.waitForURL(/\/dashboard\/confirm\?action=revoke-session/),
    page.getByRole('link', { name: 'Revoke…' }).first().click(),
  ]);
  await step('confirm-revoke');
  await Promise.all([
    page.waitForURL(/\/dashboard\/act$/),
    page.getByRole('button', { name: 'Revoke a session' }).click(),
  ]);
  await step('done-revoke');
  result.revoke.done = await page.innerText('main');

  // 3. Another origin posts the responder's form, token and all.
  await page.goto(`${args.base}/dashboard`);
  const csrf = await page.locator('input[name="csrf"]').first().inputValue();
  await context.route(`${FORGER}/**`, (route) => route.fulfill({
    status: 200,
    contentType: 'text/html; charset=utf-8',
    body: `<!doctype html><html lang="en"><head><title>Win a prize</title></head><body><main>
<form id="f" method="post" action="${args.base}/dashboard/act">
<input type="hidden" name="csrf" value="${csrf}">
<input type="hidden" name="action" value="revoke-session">
<input type="hidden" name="session" value="${args.forged}">
<button type="submit">Claim</button></form></main></body></html>`,
  }));
  const forger = await context.newPage();
  forger.setDefaultTimeout(TIMEOUT_MS);
  await forger.goto(`${FORGER}/prize`);
  const [forged] = await Promise.all([
    forger.waitForResponse((r) => r.url() === `${args.base}/dashboard/act`),
    forger.getByRole('button', { name: 'Claim' }).click(),
  ]);
  result.forged = forged.status();
  await forger.close();
  await context.close();

  // 4. A viewer reads, and cannot act.
  const viewer = await open();
  await signIn(viewer.page, viewer.step, args.viewer);
  await findDetection(viewer.page, args.fp);
  await viewer.step('viewer-detection');
  result.viewer.actions = await viewer.page
    .locator('main a[href^="/dashboard/confirm"], main form[action="/dashboard/act"]')
    .count();
  const confirm = await viewer.page.goto(
    `${args.base}/dashboard/confirm?action=revoke-session&session=${args.forged}`);
  result.viewer.confirm = confirm.status();
  await viewer.step('viewer-refused');
  await viewer.page.goto(`${args.base}/dashboard`);
  const viewerCsrf = await viewer.page.locator('input[name="csrf"]').first().inputValue();
  result.viewer.post = await post(viewer.page, {
    csrf: viewerCsrf, action: 'revoke-session', session: args.forged,
  });
  await viewer.context.close();
  writeFileSync(args.out, JSON.stringify(result));
} catch (e) {
  for (const p of pages) {
    if (!p.isClosed()) {
      console.error(`browser: at ${p.url()}: ${await p.innerText('body').catch(() => '')}`);
    }
  }
  throw e;
} finally {
  await browser.close();
}
