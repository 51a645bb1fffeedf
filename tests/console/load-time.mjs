// How long each console page takes to show its content, in Debian's chromium: a full load of the
// page (HTML, modules, stylesheet, its API calls) until the page's data is on screen. Used for the
// console's figures on a database with many events:
//   node tests/console/load-time.mjs http://127.0.0.1:8081 hl_… [runs]
// Prints, per page, the median and the slowest of `runs` loads (default 7), caches warm.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, key, runsArg] = process.argv.slice(2);
if (!base || !key) {
  console.error('usage: node load-time.mjs <console URL> <API key> [runs]');
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
try {
  await page.goto(`${base}/#/signin`);
  await page.getByLabel('API key').fill(key);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor();
  const first = async (sel) => page.locator(sel).first().waitFor({ timeout: 30000 });
  const events = await page.evaluate(() => fetch('/v1/events?limit=1').then((r) => r.json()));
  const id = events.items[0] && events.items[0].id;
  const pages = [
    ['overview', '#/overview', () => first('.tiles')],
    ['sources', '#/sources', () => first('main table')],
    ['events', '#/events', () => first('#events-table tbody tr')],
    ['events, one source and type', '#/events?source=acme-2&event_type=push', () => first('#events-table tbody tr, main p.empty:not([hidden])')],
    ['events, status dead', '#/events?status=dead', () => first('#events-table tbody tr, main p.empty:not([hidden])')],
    ['event', `#/events/${id}`, () => first('#ev-attempts')],
    ['dead letters', '#/dead-letters', () => first('#dl-table tbody tr')],
    ['API keys', '#/api-keys', () => first('main table')],
  ];
  for (const [name, hash, ready] of pages) {
    const times = [];
    for (let i = 0; i < runs; i++) {
      await page.goto('about:blank');
      const t0 = Date.now();
      await page.goto(`${base}/${hash}`);
      await ready();
      times.push(Date.now() - t0);
    }
    times.sort((a, b) => a - b);
    console.log(`${name.padEnd(30)} median ${String(times[Math.floor(times.length / 2)]).padStart(5)} ms   max ${String(times[times.length - 1]).padStart(5)} ms`);
  }
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
