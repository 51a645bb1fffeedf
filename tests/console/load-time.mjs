// How long each console page takes to show its data, in Debian's chromium: a load of the page
// (HTML, modules, stylesheet, its API calls) from navigation until the page's data is on screen.
// Run by deploy/dev/console-bench.sh (`make bench-console`) on a database with 1 million events:
//   node tests/console/load-time.mjs <console URL> <API key> [runs] [source id]
// Prints, per page, the first load with the browser's cache emptied (cold) and the median and
// slowest of `runs` further loads (cache warm, as when an operator moves between pages).

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, key, runsArg, source = 'acme-1'] = process.argv.slice(2);
if (!base || !key) {
  console.error('usage: node load-time.mjs <console URL> <API key> [runs] [source id]');
  process.exit(2);
}
const runs = Number(runsArg || 7);
const profile = mkdtempSync(join(tmpdir(), 'hookline-console-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = context.pages()[0] || (await context.newPage());
const cdp = await context.newCDPSession(page);
const failures = [];
try {
  await page.goto(`${base}/#/signin`);
  await page.getByLabel('API key').fill(key);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor();
  const json = (path) => page.evaluate((p) => fetch(p).then((r) => r.json()), path);
  const session = await json('/console/session');
  const events = await json('/v1/events?limit=1');
  const dead = await json('/v1/dead-letters?limit=1');
  const id = events.items[0] && events.items[0].id;
  const deadId = dead.items[0] && dead.items[0].event_id;
  const first = (sel) => () => page.locator(sel).first().waitFor({ timeout: 30000 });
  const rows = first('#events-table tbody tr, main p.empty');
  const pages = [
    ['overview', '#/overview', first('.tiles')],
    ['sources', '#/sources', first('main table')],
    ['source', `#/sources/${source}`, first('#src-point')],
    ['events (newest 50)', '#/events', first('#events-table tbody tr')],
    ['events, source + type', `#/events?source=${source}&event_type=push`, rows],
    ['events, type wildcard', '#/events?event_type=invoice.*', rows],
    ['events, one entity', '#/events?entity_id=ent_4242', rows],
    ['events, status dead', '#/events?status=dead', rows],
    ['event', id && `#/events/${id}`, first('#ev-attempts')],
    ['event, dead-lettered', deadId && `#/events/${deadId}`, first('#ev-attempts')],
    ['dead letters', '#/dead-letters', first('#dl-table tbody tr, main p.empty')],
    ['subscriptions', '#/subscriptions', first('#subs-list table, #subs-list p.empty')],
    ['API keys', session.scopes.includes('admin') && '#/api-keys', first('main table')],
  ];
  console.log(`${'page'.padEnd(26)} ${'cold'.padStart(7)} ${'median'.padStart(8)} ${'max'.padStart(7)}`);
  for (const [name, hash, ready] of pages) {
    if (!hash) continue;
    const times = [];
    try {
      for (let i = 0; i <= runs; i++) {
        await page.goto('about:blank');
        // The first load is cold: the browser's cache emptied (the session cookie kept).
        if (i === 0) await cdp.send('Network.clearBrowserCache');
        const t0 = performance.now();
        await page.goto(`${base}/${hash}`);
        await ready();
        times.push(Math.round(performance.now() - t0));
      }
    } catch (e) {
      failures.push(`${name}: ${e.message.split('\n')[0]}`);
      console.log(`${name.padEnd(26)} failed: ${e.message.split('\n')[0]}`);
      continue;
    }
    const cold = times.shift();
    times.sort((a, b) => a - b);
    const median = times[Math.floor(times.length / 2)];
    console.log(`${name.padEnd(26)} ${String(cold).padStart(4)} ms ${String(median).padStart(5)} ms ${String(times[times.length - 1]).padStart(4)} ms`);
  }
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
if (failures.length) {
  console.error(`pages that did not load: ${failures.join('; ')}`);
  process.exit(1);
}
