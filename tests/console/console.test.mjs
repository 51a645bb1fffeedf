// The operator console in a real browser: Debian's chromium driven by playwright-core, against
// the real ingress, worker and API that tests/tests/console.rs started for this run (described
// in HOOKLINE_CONSOLE_WORLD). Each page is checked with axe-core (no serious or critical
// violation) and photographed into the screenshots folder. Waits poll with deadlines.

import { test as nodeTest, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const world = JSON.parse(process.env.HOOKLINE_CONSOLE_WORLD || '{}');
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const timings = {};
let context;
let page;
let profile;

before(async () => {
  assert.ok(world.console, 'HOOKLINE_CONSOLE_WORLD is set by tests/tests/console.rs');
  profile = mkdtempSync(join(tmpdir(), 'hookline-console-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
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
    viewport: { width: 1280, height: 900 },
  });
  // Injected by the browser itself, so the console's CSP (script-src 'self') still holds.
  await context.addInitScript({ content: AXE });
  page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(20000);
  page.on('pageerror', (e) => console.error('page error:', e.message));
});

after(async () => {
  if (context) await context.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
  console.log('page timings (ms, navigation to content):', JSON.stringify(timings));
});

// A test that leaves a screenshot of the page it failed on.
function test(name, fn, options = {}) {
  nodeTest(name, options, async (t) => {
    try {
      await fn(t);
    } catch (e) {
      const file = `FAILED-${name.replace(/[^a-z0-9]+/gi, '-').slice(0, 60)}`;
      await shot(file).catch(() => {});
      throw e;
    }
  });
}

// Polls `check` until it returns a truthy value; fails after `ms`.
async function eventually(what, ms, check) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) assert.fail(`timed out after ${ms} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function axe(name) {
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(
    bad.map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`),
    [],
    `accessibility violations on ${name}`,
  );
}

async function shot(name) {
  await page.screenshot({ path: join(world.screenshots, `${name}.png`), fullPage: true });
}

// Opens a console page and waits until its heading and `ready` (a locator) are visible.
async function open(hash, heading, ready) {
  const t0 = Date.now();
  await page.goto(`${world.console}/${hash}`);
  await page.getByRole('heading', { level: 1, name: heading }).waitFor();
  if (ready) await ready.waitFor();
  timings[hash.split('?')[0]] = Date.now() - t0;
}

async function signIn(key) {
  await page.goto(`${world.console}/#/signin`);
  await page.getByLabel('API key').fill(key);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

async function signOut() {
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { level: 1, name: 'Sign in' }).waitFor();
}

// A GitHub webhook signed as GitHub does (X-Hub-Signature-256 over the body).
async function sendGithub(event, body) {
  const raw = JSON.stringify(body);
  const sig = createHmac('sha256', world.secret).update(raw).digest('hex');
  const res = await fetch(`${world.ingress}/webhooks/${world.source}`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'x-github-event': event,
      'x-github-delivery': randomUUID(),
      'x-github-hook-id': '4242',
      'x-hub-signature-256': `sha256=${sig}`,
    },
    body: raw,
  });
  assert.equal(res.status, 202, `ingress accepted the ${event} webhook`);
  return (await res.json()).id;
}

// Reloads an event's page until `check(text of main)` holds.
async function eventPageUntil(id, what, check) {
  return eventually(what, 30000, async () => {
    // The same URL again is no navigation in a single-page app: reload to fetch anew.
    if (page.url().endsWith(`#/events/${id}`)) await page.reload();
    else await page.goto(`${world.console}/#/events/${id}`);
    await page.locator('main h1').waitFor();
    await page.locator('#ev-fields').waitFor({ timeout: 5000 });
    return check(await page.locator('main').innerText());
  });
}

test('a bad key is refused', async () => {
  await page.goto(world.console);
  await page.getByRole('heading', { level: 1, name: 'Sign in' }).waitFor();
  await axe('sign in');
  await shot('01-sign-in');
  await signIn(`hl_${'x'.repeat(43)}`);
  const alert = page.getByRole('alert');
  await alert.waitFor();
  assert.match(await alert.innerText(), /refused/);
  assert.match(await alert.innerText(), /invalid_api_key/);
  await shot('02-sign-in-refused');
  // Still signed out: a page needing a session sends us back to sign in.
  await page.goto(`${world.console}/#/events`);
  await page.getByRole('heading', { level: 1, name: 'Sign in' }).waitFor();
});

test('sign in with an admin key', async () => {
  await signIn(world.admin_key);
  await page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor();
  const nav = page.getByRole('navigation', { name: 'Console' });
  for (const link of ['Overview', 'Sources', 'Events', 'Dead letters', 'Subscriptions', 'API keys']) {
    await nav.getByRole('link', { name: link }).waitFor();
  }
  // The key never lands in the page's storage or a readable cookie.
  const stored = await page.evaluate(() => JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie);
  assert.ok(!stored.includes(world.admin_key.slice(3)), 'the key is not stored in the browser');
  assert.ok(!stored.includes('hookline_session'), 'the session cookie is HttpOnly');
});

test('a signed webhook appears in the live tail and its page shows the stored attempt', async () => {
  await open('#/events', 'Events');
  await page.getByLabel('Live tail').check();
  await page.locator('#tail-status').filter({ hasText: 'watching' }).waitFor();
  const id = await sendGithub('issues', { action: 'opened', issue: { id: 1347, title: 'console test' }, repository: { full_name: 'acme/app' } });
  const row = page.locator(`#events-table tr[data-id="${id}"]`);
  await row.waitFor({ timeout: 30000 });
  assert.match(await row.innerText(), /issues\.opened/);
  await axe('events');
  await shot('03-events-live-tail');
  await row.getByRole('link', { name: 'issues.opened' }).click();
  await page.getByRole('heading', { level: 1, name: 'issues.opened' }).waitFor();
  await eventPageUntil(id, 'the store attempt on the event page', (text) => /store\s+attempt 1/.test(text) && /done/.test(text));
  const main = await page.locator('main').innerText();
  assert.match(main, /acme-gh/);
  assert.match(main, /x-github-event|hookline-h-x-github-event/i);
  assert.match(main, /console test/);
  await axe('event');
  await shot('04-event');
  // The payload tree folds with the keyboard.
  const summary = page.locator('details.json > summary').first();
  await summary.focus();
  await page.keyboard.press('Enter');
  assert.equal(await page.locator('details.json').first().getAttribute('open'), null);
});

let deadId;

test('an event routed to a failing destination shows its retries and lands in dead letters', async () => {
  deadId = await sendGithub('push', { ref: 'refs/heads/main', head_commit: { id: 'abc123' }, repository: { id: 99, full_name: 'acme/app' } });
  await eventPageUntil(deadId, 'three crm attempts and a dead letter', (text) => /crm\s+attempt 3/.test(text) && /Dead letter/.test(text));
  const main = await page.locator('main').innerText();
  assert.match(main, /crm\s+attempt 1/);
  assert.match(main, /HTTP 500/);
  assert.match(main, /retries_exhausted/);
  await axe('dead event');
  await shot('05-event-dead-lettered');
  await open('#/dead-letters', 'Dead letters', page.locator('#dl-table'));
  await page.getByRole('link', { name: deadId }).waitFor();
  await axe('dead letters');
  await shot('06-dead-letters');
});

test('replaying it from the console after the destination recovers delivers it once', async () => {
  await open('#/dead-letters', 'Dead letters', page.locator('#dl-table'));
  await page.getByLabel(`Select dead letter ${deadId}`).check();
  await page.getByRole('button', { name: 'Replay selected' }).click();
  await page.getByRole('heading', { name: /Dry run: 1 dead letter would be replayed/ }).waitFor();
  await axe('replay dry run');
  await shot('07-replay-dry-run');
  await page.getByRole('button', { name: 'Replay 1' }).click();
  await page.locator('#job-status').filter({ hasText: 'succeeded' }).waitFor({ timeout: 30000 });
  assert.match(await page.locator('#job-status').innerText(), /1 done/);
  await shot('08-replay-job');
  await eventPageUntil(deadId, 'the replayed event delivered', (text) => /crm\s+attempt 1[\s\S]*crm\s+attempt 1/.test(text) || /delivered/.test(text));
  await eventPageUntil(deadId, 'status delivered', async () => (await page.locator('main .page-head .badge').innerText()) === 'delivered');
  await shot('09-event-delivered');
});

test('sources: list, detail, add with a generated secret shown once', async () => {
  await open('#/sources', 'Sources', page.locator('table'));
  const text = await page.locator('main').innerText();
  assert.match(text, /acme-gh/);
  assert.match(text, /globex-gh/);
  await axe('sources');
  await shot('10-sources');
  await open(`#/sources/${world.source}`, world.source, page.locator('#src-point'));
  assert.match(await page.locator('main').innerText(), new RegExp(`/webhooks/${world.source}`));
  await axe('source');
  await shot('11-source');
  await open('#/sources/new', 'Add a source');
  await page.getByLabel('Provider').selectOption('standard-webhooks');
  await page.getByLabel('Tenant').fill('acme');
  await page.getByLabel('Id', { exact: true }).fill('console-sw');
  await axe('add source');
  await page.getByRole('button', { name: 'Add source' }).click();
  const secret = page.getByLabel('Generated secret');
  await secret.waitFor();
  const generatedSecret = await secret.inputValue();
  assert.match(generatedSecret, /^whsec_/);
  await shot('12-source-added');
  await open('#/sources/console-sw', 'console-sw', page.locator('#src-secrets'));
  assert.ok(!(await page.content()).includes(generatedSecret), 'the secret is not shown again');
});

test('a request with a bad signature shows on its source page by reason, and in the overview', async () => {
  const raw = JSON.stringify({ action: 'opened', zen: randomUUID() });
  const res = await fetch(`${world.ingress}/webhooks/${world.source}`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'x-github-event': 'issues',
      'x-github-delivery': randomUUID(),
      'x-github-hook-id': '4242',
      'x-hub-signature-256': `sha256=${createHmac('sha256', 'a-rotated-secret').update(raw).digest('hex')}`,
    },
    body: raw,
  });
  assert.equal(res.status, 401, 'the ingress refused the forged signature');
  await eventually('the refusal on the source page', 30000, async () => {
    await page.goto(`${world.console}/#/overview`);
    await page.goto(`${world.console}/#/sources/${world.source}`);
    await page.locator('#src-requests').waitFor({ timeout: 5000 });
    const card = await page.locator('#src-requests').locator('..').innerText();
    return /invalid_signature/.test(card) && /rotated or different secret/.test(card);
  });
  await axe('source requests');
  await shot('11b-source-refusals');
  await open('#/overview', 'Overview', page.locator('.tiles'));
  await eventually('the overview counts the refusal', 30000, async () => {
    const tile = await page.locator('.tile', { hasText: 'Refused (1 h)' }).innerText();
    return /Refused \(1 h\)\s*[1-9]/i.test(tile);
  });
  assert.ok(await page.locator('svg.chart title', { hasText: 'Requests per minute over the last hour' }).count(), 'the request-rate chart is drawn');
});

test('a source the ingress cannot serve says why on its page', async () => {
  await open(`#/sources/${world.broken_source}`, world.broken_source, page.locator('#src-problem-card'));
  const card = await page.locator('#src-problem-card').innerText();
  assert.match(card, /cannot serve this source/);
  assert.match(card, /undecryptable_secret/);
  assert.match(card, /503 source_misconfigured/);
  await axe('broken source');
  await shot('12b-source-broken');
});

test('Notion: arm the capture, Notion sends its token, reveal it', async () => {
  await open(`#/sources/${world.notion_source}`, world.notion_source, page.locator('#src-notion-card'));
  assert.match(await page.locator('#src-notion-card').innerText(), /Not armed/);
  await page.getByLabel('Capture for').fill('10m');
  await page.getByRole('button', { name: 'Arm the capture' }).click();
  await page.locator('#src-notion-card').filter({ hasText: 'Armed until' }).waitFor();
  await axe('notion armed');
  await shot('12c-source-notion-armed');
  // Notion's first request: unsigned, carrying the token. The ingress sees the arming within its
  // source refresh.
  const token = `secret_${randomUUID().replace(/-/g, '')}`;
  await eventually('the ingress captures the token', 15000, async () => {
    const res = await fetch(`${world.ingress}/webhooks/${world.notion_source}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ verification_token: token }),
    });
    return res.status === 200;
  });
  // The same URL again is no navigation in a single-page app: reload to fetch anew.
  await page.reload();
  await page.locator('#src-notion-card').filter({ hasText: 'verification token is captured' }).waitFor();
  await page.getByRole('button', { name: 'Reveal the token' }).click();
  const box = page.getByLabel('Verification token', { exact: true });
  await box.waitFor();
  assert.equal(await box.inputValue(), token);
  await axe('notion captured');
  await shot('12d-source-notion-captured');
});

test('subscriptions: add (secret shown once), send a test event, see deliveries, pause, delete', async () => {
  await open('#/subscriptions', 'Subscriptions', page.locator('#subs-list'));
  await page.getByLabel('Tenant').fill('acme');
  await page.getByLabel('URL').fill(world.subscription_url);
  await page.getByLabel('Event types').fill('issues.*');
  await page.getByLabel('Description').fill('CRM sync');
  await axe('subscriptions');
  await page.getByRole('button', { name: 'Add subscription' }).click();
  const secret = page.getByLabel('Signing secret');
  await secret.waitFor();
  assert.match(await secret.inputValue(), /^whsec_/);
  const row = page.locator('#subs-list tr', { hasText: 'CRM sync' });
  await row.waitFor();
  assert.match(await row.innerText(), /issues\.\*/);
  assert.match(await row.innerText(), /active/);
  await shot('17-subscriptions');
  await page.getByRole('button', { name: 'Send test event to subscription CRM sync' }).click();
  await page.locator('#subs-flash').filter({ hasText: 'Test event delivered to CRM sync' }).waitFor();
  assert.match(await page.locator('#subs-flash').innerText(), /HTTP 200/);
  // A matching event is delivered by the workers, who pick the subscription up without a restart.
  const id = await sendGithub('issues', { action: 'closed', issue: { id: 77 }, repository: { full_name: 'acme/app' } });
  await row.getByRole('link', { name: 'CRM sync' }).click();
  await page.getByRole('heading', { level: 1, name: 'CRM sync' }).waitFor();
  await eventually('the event among the latest deliveries', 30000, async () => {
    await page.reload();
    await page.locator('#sub-deliveries').waitFor();
    const text = await page.locator('main').innerText();
    return text.includes(id) && /done/.test(text);
  });
  await axe('subscription');
  await shot('18-subscription');
  await page.getByRole('button', { name: 'Pause subscription CRM sync' }).click();
  await page.locator('main .page-head .badge').filter({ hasText: 'paused' }).waitFor();
  await open('#/subscriptions', 'Subscriptions', page.locator('#subs-list table'));
  await page.getByRole('button', { name: 'Delete subscription CRM sync' }).click();
  await axe('subscriptions, confirming a delete');
  await page.getByRole('button', { name: 'Confirm delete of subscription CRM sync' }).click();
  await page.locator('#subs-flash').filter({ hasText: 'CRM sync deleted' }).waitFor();
  assert.equal(await page.locator('#subs-list tr', { hasText: 'CRM sync' }).count(), 0);
});

test('a cookie-authenticated mutation without the CSRF token is refused', async () => {
  const res = await page.evaluate(async () => {
    const r = await fetch('/v1/sources', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ provider: 'github', tenant: 'acme', id: 'forged', generate_secret: true }),
    });
    return { status: r.status, body: await r.json() };
  });
  assert.equal(res.status, 403);
  assert.equal(res.body.error, 'csrf_token_invalid');
});

test('API keys: create shown once, list, revoke', async () => {
  await open('#/api-keys', 'API keys', page.locator('table'));
  await page.getByLabel('Name').fill('console-made');
  await page.getByRole('button', { name: 'Create key' }).click();
  const key = page.getByLabel('New API key');
  await key.waitFor();
  assert.match(await key.inputValue(), /^hl_/);
  await axe('api keys');
  await shot('13-api-keys');
  const revoke = page.getByRole('button', { name: /Revoke key console-made/ });
  await revoke.click();
  await axe('api keys, confirming a revocation');
  await page.getByRole('button', { name: /Confirm revoking console-made/ }).click();
  await page.locator('#keys-flash').filter({ hasText: 'revoked' }).waitFor();
});

test('overview shows sources, destinations and dead letters', async () => {
  await open('#/overview', 'Overview', page.locator('.tiles'));
  await page.getByRole('link', { name: 'acme-gh' }).first().waitFor();
  await page.getByText('crm', { exact: true }).waitFor();
  // A destination's latency chart draws its latest attempts, which come with its stats.
  const crm = page.getByRole('row').filter({ has: page.getByText('crm', { exact: true }) });
  await crm.locator('svg circle.dot').first().waitFor();
  const chart = await crm.locator('svg title').filter({ hasText: 'latency' }).textContent();
  assert.match(chart, /latency of its last [1-9]\d* attempts this hour/);
  await axe('overview');
  await shot('14-overview');
});

test('the keyboard reaches every navigation link and the skip link', async () => {
  await page.goto(`${world.console}/#/overview`);
  await page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor();
  // After a navigation focus is on the page's heading; going backwards from there passes the
  // header's controls and ends at the skip link.
  assert.equal(await page.evaluate(() => document.activeElement.tagName), 'H1');
  const seen = [];
  while (seen.length < 14 && seen[seen.length - 1] !== 'Skip to content') {
    await page.keyboard.press('Shift+Tab');
    seen.push(await page.evaluate(() => document.activeElement.textContent.trim()));
  }
  for (const link of ['Sign out', 'API keys', 'Subscriptions', 'Dead letters', 'Events', 'Sources', 'Overview', 'hookline', 'Skip to content']) {
    assert.ok(seen.includes(link), `the keyboard reaches ${link}: ${seen.join(' | ')}`);
  }
  // The skip link moves focus to the content without changing the page.
  await page.keyboard.press('Enter');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'main');
  assert.match(page.url(), /#\/overview$/);
  await signOut();
  await page.goto(`${world.console}/#/sources`);
  await page.getByRole('heading', { level: 1, name: 'Sign in' }).waitFor();
});

test("a tenant key does not see another tenant's source", async () => {
  await signIn(world.tenant_key);
  await page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor();
  await page.locator('.tiles').waitFor();
  assert.equal(await page.getByRole('link', { name: 'API keys' }).count(), 0, 'no API keys page for a read key');
  await shot('15-overview-tenant');
  await open('#/sources', 'Sources', page.locator('table'));
  const text = await page.locator('main').innerText();
  assert.match(text, /acme-gh/);
  assert.ok(!text.includes(world.other_source), `a tenant key lists ${world.other_source}`);
  assert.ok(!text.includes('globex'), 'nothing of the other tenant shows');
  await axe('sources (tenant)');
  await shot('16-sources-tenant');
  await page.goto(`${world.console}/#/sources/${world.other_source}`);
  await page.getByRole('alert').filter({ hasText: 'not_found' }).waitFor();
  await open('#/events', 'Events', page.locator('#events-table'));
  assert.ok(!(await page.locator('main').innerText()).includes(world.other_source));
  await signOut();
});
