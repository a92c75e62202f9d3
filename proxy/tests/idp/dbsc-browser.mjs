// A person with a DBSC-capable browser, for the DBSC tests: Debian's
// headless Chromium with software session keys, driven by playwright-core.
//
//   node dbsc-browser.mjs '{"base": "https://app.test:PORT", "spki": B64,
//                           "host": "app.test", "cookie": "__Host-vigil-dbsc"}'
//
// Uses a persistent profile (DBSC is off in Playwright's incognito-like
// contexts), the test certificate allowed by its key
// (--ignore-certificate-errors-spki-list: --ignore-certificate-errors would
// silently turn DBSC off), and the test host mapped to 127.0.0.1. Steps:
// open /login (the app opens session b1; Vigil offers a registration),
// wait until the bound cookie appears (the browser registered), wait until
// it expires and is gone, open /echo (the browser must refresh first), and
// export every cookie through the DevTools protocol. Prints one JSON line:
// {"login", "registered", "bound", "expired", "echo": {status, body},
//  "refreshed", "exported": [{name, value}]}. Logs go to stderr.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const STEP_MS = 20_000;
const POLL_MS = 100;
const args = JSON.parse(process.argv[2]);
const profile = mkdtempSync(join(tmpdir(), 'vigil-dbsc-'));

const context = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--enable-features=DeviceBoundSessions,EnableBoundSessionCredentialsSoftwareKeysForManualTesting',
    `--ignore-certificate-errors-spki-list=${args.spki}`,
    `--host-resolver-rules=MAP ${args.host} 127.0.0.1`,
  ],
});

const out = {};
const bound = async () =>
  (await context.cookies(args.base)).find((c) => c.name === args.cookie)?.value ?? null;
const until = async (what, cond) => {
  const deadline = Date.now() + STEP_MS;
  while (Date.now() < deadline) {
    const v = await cond();
    if (v) return v;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  console.error(`dbsc-browser: gave up waiting for ${what}`);
  return null;
};

try {
  const page = context.pages()[0] ?? (await context.newPage());
  const login = await page.goto(`${args.base}/login?user=ann&session=b1`);
  out.login = login?.status() ?? null;
  out.bound = await until('registration', bound);
  out.registered = out.bound !== null;
  if (out.registered) {
    out.expired = (await until('expiry', async () => (await bound()) === null)) !== null;
    const echo = await page.goto(`${args.base}/echo`);
    out.echo = { status: echo?.status() ?? null, body: (await echo?.text()) ?? '' };
    const now = await bound();
    out.refreshed = now !== null && now !== out.bound;
  }
  const cdp = await context.newCDPSession(page);
  const { cookies } = await cdp.send('Network.getAllCookies');
  out.exported = cookies.map((c) => ({ name: c.name, value: c.value }));
} catch (err) {
  console.error(`dbsc-browser: ${err.stack}`);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(out));
