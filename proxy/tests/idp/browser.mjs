// A person with a real browser, for the one step-up test that needs one:
// headless Chromium (Debian's, not a Playwright download) driven by
// playwright-core.
//
//   node browser.mjs '{"start": URL, "cookies": [{name, value, url}],
//                      "login": "alice", "password": "pw-a", "otp": "123456",
//                      "stop_prefix": URL_PREFIX}'
//
// Opens start; whenever a page shows the test IdP's login form, fills it
// and submits it (once per page); stops when the page's URL starts with
// stop_prefix, or after 20 s. Prints one JSON line to stdout:
// {"url", "status", "body", "hops"}: the final URL, the HTTP status of its
// response (null if there was none), the page's text, and every URL the
// tab requested as a top-level navigation, redirects included, in order.
// Logs go to stderr; the exit status is 0 whenever that line was printed.

import { chromium } from 'playwright-core';

const TIMEOUT_MS = 20_000;
// How often the page is looked at for the login form or the stop URL.
const POLL_MS = 50;

const args = JSON.parse(process.argv[2]);
const deadline = Date.now() + TIMEOUT_MS;

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  // No QUIC, no background traffic: the tests count what reaches their
  // servers, and nothing but the test's own requests should.
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});

try {
  const context = await browser.newContext();
  await context.addCookies(args.cookies ?? []);
  const page = await context.newPage();

  const hops = [];
  // The last top-level response and the last top-level navigation that got
  // none: a redirect to a closed port fails, and leaves the tab on
  // chrome-error://, but the test wants the URL it was sent to.
  let last = { url: args.start, status: null };
  const topLevel = (request) => request.isNavigationRequest() && request.frame() === page.mainFrame();
  page.on('request', (request) => {
    if (topLevel(request)) hops.push(request.url());
  });
  page.on('response', (response) => {
    if (topLevel(response.request())) last = { url: response.url(), status: response.status() };
  });
  page.on('requestfailed', (request) => {
    if (topLevel(request)) {
      console.error(`browser: ${request.url()} failed: ${request.failure()?.errorText}`);
      last = { url: request.url(), status: null };
    }
  });
  const currentUrl = () => (page.url().startsWith('chrome-error:') ? last.url : page.url());

  try {
    await page.goto(args.start, { timeout: TIMEOUT_MS });
  } catch (err) {
    // A failed navigation is an outcome to report, not an error.
    console.error(`browser: ${err.message}`);
  }

  const submitted = new Set();
  while (!currentUrl().startsWith(args.stop_prefix) && Date.now() < deadline) {
    const pageUrl = page.url();
    const form = page.locator('form:has(input[name="login"])');
    if (!submitted.has(pageUrl) && (await form.count().catch(() => 0)) > 0) {
      submitted.add(pageUrl);
      await form.locator('input[name="login"]').fill(args.login ?? '');
      await form.locator('input[name="password"]').fill(args.password ?? '');
      await form.locator('input[name="otp"]').fill(args.otp ?? '');
      await Promise.all([
        page.waitForNavigation({ timeout: Math.max(deadline - Date.now(), 1) }).catch(() => {}),
        form.locator('button[type="submit"]').click(),
      ]);
      continue;
    }
    await page.waitForTimeout(POLL_MS);
  }

  const url = currentUrl();
  // A failed navigation leaves an error page whose text is Chromium's.
  const failed = page.url().startsWith('chrome-error:');
  const body = failed ? '' : await page.innerText('body').catch(() => '');
  const status = last.url === url ? last.status : null;
  process.stdout.write(`${JSON.stringify({ url, status, body, hops })}\n`);
} finally {
  await browser.close();
}
