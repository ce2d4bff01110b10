// The approvals page (/ui/) in a real browser: Debian's chromium driven by
// playwright-core (never a downloaded browser). Run by tests/tests/ui.rs,
// which starts hoop around three waiting psql sessions and checks what psql
// printed afterwards; this script does what an approver does in the page
// and checks what the page shows.
//
// Environment (all set by the Rust test):
//   HOOP_UI       the page, http://127.0.0.1:PORT/ui/
//   ALICE_TOKEN   a dba's admin token; BOB_TOKEN: a dev's (not an approver)
//   GO_FILE       created once the page is up: the psql sessions then start
//   SCREENSHOT    where to save the page with its pending holds
//   OIDC_EMAIL    who the test issuer signs in
//   CHROMIUM      the browser (default /usr/bin/chromium)
//
// Prints one JSON object on stdout at the end; exits non-zero on the first
// failed check.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const UI = env('HOOP_UI');
const ALICE = env('ALICE_TOKEN');
const BOB = env('BOB_TOKEN');
const GO_FILE = env('GO_FILE');
const SCREENSHOT = env('SCREENSHOT');
const OIDC_EMAIL = env('OIDC_EMAIL');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const XSS = '<img src=x onerror="window.__hoopXss=1">';

const log = (...args) => console.error('[ui test]', ...args);
const results = { checks: [] };
function check(condition, what, detail) {
  if (!condition) throw new Error(`check failed: ${what}${detail === undefined ? '' : ': ' + JSON.stringify(detail)}`);
  results.checks.push(what);
  log('ok:', what);
}

async function waitFor(what, fn, timeoutMs = 20000, everyMs = 50) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await fn();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

async function api(token, pathname, init = {}) {
  const response = await fetch(new URL('../api/' + pathname, UI), {
    ...init,
    headers: { Authorization: 'Bearer ' + token, ...(init.headers || {}) },
  });
  return { status: response.status, json: await response.json().catch(() => null) };
}

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hoop-ui-chromium-'));
let context;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    viewport: { width: 1280, height: 1000 },
  });
  // Every CSP or Trusted Types violation and every script error is a failure:
  // the page must never even try to run or build HTML from strings.
  await context.addInitScript(() => {
    window.__violations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__violations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sample || ''}`);
    });
  });
  const page = context.pages()[0] || (await context.newPage());
  const pageErrors = [];
  page.on('pageerror', (error) => pageErrors.push(String(error)));
  page.on('console', (message) => {
    // Refused requests are listed below, with their URLs.
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
      pageErrors.push('console: ' + message.text());
    }
  });
  // Every failed request to hoop, to compare with the two this test provokes.
  const hoopOrigin = new URL(UI).origin;
  const failedRequests = [];
  page.on('response', (r) => {
    const url = new URL(r.url());
    if (url.origin === hoopOrigin && r.status() >= 400) failedRequests.push(`${r.status()} ${url.pathname}`);
  });

  // ---- the page, its policy, and a token login -------------------------
  const response = await page.goto(UI);
  const csp = response.headers()['content-security-policy'] || '';
  check(response.status() === 200, 'the page loads');
  check(csp.includes("default-src 'self'") && csp.includes("script-src 'self'") && !csp.includes('unsafe'),
    'the page is served with a strict Content-Security-Policy', csp);
  check((await context.cookies()).length === 0, 'no cookies before signing in');

  await page.locator('#token').fill('not-a-real-token');
  await page.locator('#token-form button[type=submit]').click();
  await page.locator('#login-error').waitFor({ state: 'visible' });
  check((await page.locator('#login-error').textContent()).includes('not accepted'), 'a wrong token is refused');

  await page.locator('#token').fill(ALICE);
  await page.locator('#token-form button[type=submit]').click();
  await page.locator('#who-name').waitFor({ state: 'visible' });
  check((await page.locator('#who-name').textContent()).includes('alice@example.com'), 'signed in with a token');
  check(await page.evaluate(() => sessionStorage.getItem('hoop.token')) === ALICE, 'the token is kept in sessionStorage');
  check((await context.cookies()).length === 0, 'no cookies after signing in');
  await page.locator('#no-pending').waitFor({ state: 'visible' });
  check(true, 'the page shows no pending holds before psql starts');

  // ---- holds appear live while psql waits ------------------------------
  fs.writeFileSync(GO_FILE, 'go\n');
  const seenAt = new Map();
  await waitFor('three pending holds in the page', async () => {
    const ids = await page.locator('#pending > li.hold').evaluateAll((cards) => cards.map((c) => c.dataset.hold));
    for (const id of ids) if (!seenAt.has(id)) seenAt.set(id, Date.now());
    return seenAt.size >= 3;
  }, 30000, 25);
  const listed = await api(ALICE, 'holds');
  const pending = listed.json.filter((h) => h.state === 'pending');
  check(pending.length === 3, 'the API lists three pending holds', pending.map((h) => h.statement));
  for (const hold of pending) {
    const latency = seenAt.get(hold.id) - Date.parse(hold.created_at);
    check(latency >= 0 && latency < 2000, `hold ${hold.id} appeared in the page ${latency} ms after it was created (< 2 s)`, latency);
  }
  const byStatement = (needle) => {
    const hold = pending.find((h) => h.statement.includes(needle));
    if (!hold) throw new Error(`no hold for ${needle}`);
    return hold;
  };
  const holdA = byStatement('id = 1');
  const holdB = byStatement('id = 2');
  const holdC = byStatement('id = 3');
  const card = (hold) => page.locator(`#hold-${hold.id}`);

  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  check(fs.statSync(SCREENSHOT).size > 10000, 'a screenshot of the pending holds was saved', SCREENSHOT);

  // Who, what, which rule, time left.
  const a = card(holdA);
  const field = (c, name) => c.locator(`dd[data-field=${name}]`).textContent();
  check(await field(a, 'user') === 'postgres', 'the card shows the database user');
  check(await field(a, 'database') === 'test', 'the card shows the database');
  check(await field(a, 'application_name') === 'psql', 'the card shows the application');
  check(/^127\.0\.0\.1:\d+$/.test(await field(a, 'client')), 'the card shows the client address', await field(a, 'client'));
  check((await field(a, 'workload')).startsWith('/'), 'the card shows the workload (cgroup)', await field(a, 'workload'));
  check(await a.locator('.rule').textContent() === 'ui-orders-deletes', 'the card shows the rule');
  check((await a.locator('.statement').textContent()).includes('DELETE FROM ui_orders WHERE id = 1'), 'the card shows the statement');
  const before = await a.locator('.countdown').textContent();
  check(/^\d+m \d{2}s left$/.test(before), 'the card shows the time left', before);
  await page.waitForTimeout(2100);
  const after = await a.locator('.countdown').textContent();
  const secs = (t) => { const m = /^(\d+)m (\d+)s/.exec(t); return Number(m[1]) * 60 + Number(m[2]); };
  check(secs(after) < secs(before), 'the countdown counts down', { before, after });
  check(await a.locator('.actions').isVisible(), 'an approver sees Approve and Deny');

  // ---- the attacker-controlled statement stays text --------------------
  const c = card(holdC);
  const shown = await c.locator('.statement').textContent();
  check(shown.includes(XSS), 'the <img onerror> statement is shown as text', shown);
  check(await page.locator('#app img').count() === 0, 'no <img> element was created from the statement');
  check(await page.evaluate(() => window.__hoopXss === undefined), 'no script from the statement ran');

  // ---- what the session ran before the hold ----------------------------
  await a.locator('.context summary').click();
  const contextItems = a.locator('.context-list li');
  await waitFor('the session context', async () => (await contextItems.count()) >= 3);
  const contextText = await contextItems.allTextContents();
  check(contextText.some((t) => t.includes("SELECT 'ui context probe'")), 'the context shows an earlier statement', contextText);
  check(contextText.some((t) => t.includes('SELECT count(*) FROM ui_orders') && t.includes('SELECT 1')),
    'the context shows an earlier statement with its outcome', contextText);
  const held = a.locator('.context-list li.held');
  check((await held.textContent()).includes('DELETE FROM ui_orders WHERE id = 1'), 'the context ends with the held statement');

  // ---- approve and deny ------------------------------------------------
  await a.locator('.approve').click();
  await a.waitFor({ state: 'detached', timeout: 5000 });
  const rowA = page.locator(`#decided tbody tr[data-hold="${holdA.id}"]`);
  await rowA.waitFor({ state: 'visible', timeout: 5000 });
  const rowAText = await rowA.textContent();
  check(rowAText.includes('approved') && rowAText.includes('alice@example.com (approved)'),
    'the approval moves to recent decisions with who decided', rowAText);

  const b = card(holdB);
  await b.locator('.deny').click();
  await b.locator('.reason').fill('ui test: not during the freeze');
  await b.locator('.deny-form button[type=submit]').click();
  await b.waitFor({ state: 'detached', timeout: 5000 });
  const rowB = page.locator(`#decided tbody tr[data-hold="${holdB.id}"]`);
  await rowB.waitFor({ state: 'visible', timeout: 5000 });
  const rowBText = await rowB.textContent();
  check(rowBText.includes('denied') && rowBText.includes('alice@example.com (denied)') && rowBText.includes('ui test: not during the freeze'),
    'the denial shows who decided and why', rowBText);

  // ---- someone outside the rule's approvers ----------------------------
  await page.locator('#sign-out').click();
  await page.locator('#token').waitFor({ state: 'visible' });
  check(await page.evaluate(() => sessionStorage.getItem('hoop.token')) === null, 'signing out forgets the token');
  await page.locator('#token').fill(BOB);
  await page.locator('#token-form button[type=submit]').click();
  await page.locator(`#hold-${holdC.id}`).waitFor({ state: 'visible' });
  const cAsBob = card(holdC);
  check(!(await cAsBob.locator('.actions').isVisible()), 'a non-approver sees no Approve or Deny buttons');
  check((await cAsBob.locator('.not-approver').textContent()).includes('dba'), 'a non-approver is told who may decide');
  const forbidden = await page.evaluate(async (id) => {
    const r = await fetch(`../api/holds/${id}/approve`, {
      method: 'POST', headers: { Authorization: 'Bearer ' + sessionStorage.getItem('hoop.token') },
    });
    return r.status;
  }, holdC.id);
  check(forbidden === 403, 'the API still refuses a non-approver with 403', forbidden);

  // ---- single sign-on against the test issuer --------------------------
  await page.locator('#sign-out').click();
  await page.locator('#oidc-button').waitFor({ state: 'visible' });
  await page.locator('#oidc-button').click();
  await page.locator('#sign-in').waitFor({ state: 'visible' });
  check(page.url().includes('code_challenge_method=S256'), 'the login goes to the issuer with a PKCE challenge', page.url());
  await page.locator('#sign-in').click();
  await page.locator('#who-name').waitFor({ state: 'visible' });
  check((await page.locator('#who-name').textContent()).includes(OIDC_EMAIL), 'signed in through OIDC', await page.locator('#who-name').textContent());
  check(!page.url().includes('code='), 'the authorization code is gone from the address bar', page.url());
  check((await context.cookies(UI)).length === 0, 'no cookies from hoop after the OIDC login');
  const cAsCarol = card(holdC);
  await cAsCarol.waitFor({ state: 'visible' });
  await cAsCarol.locator('.approve').click();
  const rowC = page.locator(`#decided tbody tr[data-hold="${holdC.id}"]`);
  await rowC.waitFor({ state: 'visible', timeout: 5000 });
  check((await rowC.textContent()).includes(`${OIDC_EMAIL} (approved)`), 'the OIDC user approved the last hold');

  const violations = await page.evaluate(() => window.__violations);
  check(violations.length === 0, 'no Content-Security-Policy or Trusted Types violation', violations);
  check(pageErrors.length === 0, 'no script errors in the page', pageErrors);
  const expected = ['401 /api/whoami', `403 /api/holds/${holdC.id}/approve`];
  check(JSON.stringify(failedRequests) === JSON.stringify(expected),
    'the only refused requests to hoop are the wrong token and the non-approver\'s approval', failedRequests);
  results.ok = true;
  results.holds = { approved: holdA.id, denied: holdB.id, oidc_approved: holdC.id };
  console.log(JSON.stringify(results));
} catch (error) {
  console.error('[ui test] FAILED:', error && error.stack ? error.stack : error);
  if (context) {
    try {
      const page = context.pages()[0];
      if (page) await page.screenshot({ path: SCREENSHOT.replace(/\.png$/, '-failure.png'), fullPage: true });
    } catch { /* best effort */ }
  }
  console.log(JSON.stringify({ ok: false, error: String(error && error.message ? error.message : error), checks: results.checks }));
  process.exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
