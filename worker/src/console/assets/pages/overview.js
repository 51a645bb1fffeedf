// Overview: is everything healthy, and if not, where and why. Sources and destinations with their
// state and reason, rates over the last hour, delivery latency, queue depth, dead letters waiting.

import * as api from '../api.js';
import { h, table, badge, pct, ms, num, ago, scatter, stackedBar, rateColumns, notice, errorNotice } from '../ui.js';

const REFRESH_MS = 10000;

export async function render(ctx) {
  const body = h('div', { 'aria-live': 'off' });
  ctx.main.appendChild(
    h('div', { class: 'page-head' }, h('h1', {}, 'Overview'), h('p', { class: 'hint' }, 'Last hour; refreshed every 10 s.')),
  );
  ctx.main.appendChild(body);
  await load(ctx, body);
  const timer = setInterval(() => load(ctx, body).catch(() => {}), REFRESH_MS);
  return () => clearInterval(timer);
}

// Each part is fetched on its own: when one fails (a slow or broken stats query), the others
// still show, with the error where the missing part would be.
async function load(ctx, body) {
  const [ov, src, dst, rates] = await Promise.allSettled([
    api.get('/v1/overview'),
    api.get('/v1/stats/sources?window=1h'),
    // With each destination's latest attempts (bounded: 200 each) for its latency chart.
    api.get('/v1/stats/destinations?window=1h&recent=200'),
    api.get('/v1/stats/ingress?window=1h'),
  ]);
  if ([ov, src, dst].every((r) => r.status === 'rejected')) throw ov.reason;
  const series = rates.status === 'fulfilled' ? rates.value : { items: [], bucket_seconds: 60 };
  const dests = dst.status === 'fulfilled' ? dst.value.items : [];
  const next = h('div', {});
  const sources = src.status === 'fulfilled' ? src.value.items : [];
  next.appendChild(ov.status === 'fulfilled' ? tiles(ov.value, sources, series) : errorNotice(ov.reason));
  next.appendChild(h('h2', {}, 'Sources'));
  next.appendChild(src.status === 'fulfilled' ? sourcesTable(sources, series) : errorNotice(src.reason));
  next.appendChild(h('h2', {}, 'Destinations'));
  next.appendChild(dst.status === 'fulfilled' ? destinationsTable(dests) : errorNotice(dst.reason));
  body.replaceChildren(next);
}

// The hour's request rate chart: every bucket from an hour ago to now.
function hourChart(buckets, title, width = 220) {
  const now = Date.now();
  return rateColumns(buckets, { title, from: now - 3600 * 1000, to: now, step: 60 * 1000, width });
}

// All sources' buckets added up by time.
function totals(series) {
  const byAt = new Map();
  for (const s of series.items) {
    for (const b of s.buckets) {
      const t = byAt.get(b.at) || { at: b.at, accepted: 0, duplicate: 0, rejected: 0 };
      t.accepted += b.accepted;
      t.duplicate += b.duplicate;
      t.rejected += b.rejected;
      byAt.set(b.at, t);
    }
  }
  return [...byAt.values()];
}

const legend = () =>
  h('span', { class: 'legend', 'aria-hidden': 'true' }, h('span', { class: 'key key-ok' }), 'accepted', h('span', { class: 'key key-dup' }), 'duplicate', h('span', { class: 'key key-dead' }), 'refused');

function tiles(ov, sources, series) {
  const states = { healthy: 0, degraded: 0, failing: 0 };
  for (const s of sources) states[s.health.state] = (states[s.health.state] || 0) + 1;
  const accepted = sources.reduce((n, s) => n + s.accepted, 0);
  const duplicates = sources.reduce((n, s) => n + (s.duplicates || 0), 0);
  const rejected = sources.reduce((n, s) => n + (s.rejected || 0), 0);
  const all = totals(series);
  const perMin = (n) => `${(n / 60).toFixed(n >= 600 ? 0 : 1)}/min`;
  const tile = (label, value, extra, wide) => h('li', { class: wide ? 'tile tile-wide' : 'tile' }, h('span', { class: 'tile-label' }, label), h('span', { class: 'tile-value' }, value), extra);
  return h(
    'ul',
    { class: 'tiles', 'aria-label': 'Summary' },
    tile('Sources', num(ov.sources), h('span', { class: 'hint' }, `${states.healthy} healthy · ${states.degraded} degraded · ${states.failing} failing`)),
    tile('Accepted (1 h)', num(accepted), h('span', { class: 'hint' }, `events · ${perMin(accepted)}`)),
    tile('Duplicates (1 h)', num(duplicates), h('span', { class: 'hint' }, 'answered 200 duplicate')),
    tile('Refused (1 h)', rejected ? h('span', { class: 'bad' }, num(rejected)) : '0', h('span', { class: 'hint' }, 'verification, size, 503 …')),
    tile(
      'Requests per minute (1 h)',
      hourChart(all, `Requests per minute over the last hour, all sources: ${num(accepted)} events accepted, ${num(duplicates)} duplicates, ${num(rejected)} refused`, 360),
      legend(),
      true,
    ),
    tile('Queue depth', ov.queue_depth === null ? 'n/a' : num(ov.queue_depth), h('span', { class: 'hint' }, ov.queue_depth === null ? 'shared queue: admin keys only' : 'ready in hookline.work')),
    tile(
      'Dead letters waiting',
      h('a', { href: '#/dead-letters' }, num(ov.dead_letters_parked)),
      ov.dead_letters_parked ? h('span', { class: 'hint' }, 'parked, not replayed') : null,
    ),
    tile('Broker', ov.broker === 'ok' ? 'up' : h('span', { class: 'bad' }, 'down')),
  );
}

function health(hl) {
  return h('div', {}, badge(hl.state), hl.reason ? h('p', { class: 'reason' }, hl.reason) : null);
}

function sourcesTable(items, series) {
  const bySource = new Map(series.items.map((s) => [s.source_id, s.buckets]));
  const order = { failing: 0, degraded: 1, healthy: 2 };
  const rows = [...items]
    .sort((a, b) => order[a.health.state] - order[b.health.state] || a.source_id.localeCompare(b.source_id))
    .map((s) =>
      h(
        'tr',
        {},
        h('td', {}, h('a', { href: `#/sources/${encodeURIComponent(s.source_id)}` }, s.source_id), h('div', { class: 'hint' }, `${s.provider} · ${s.tenant}`)),
        h('td', {}, health(s.health)),
        h('td', { class: 'num' }, num(s.accepted)),
        h('td', { class: 'num' }, num(s.duplicates)),
        h('td', { class: 'num' }, s.rejected ? h('a', { href: `#/sources/${encodeURIComponent(s.source_id)}`, class: 'bad' }, num(s.rejected)) : '0'),
        h('td', {}, hourChart(bySource.get(s.source_id) || [], `${s.source_id}: requests per minute over the last hour; ${s.received} received, ${s.duplicates} duplicates, ${s.rejected} refused`)),
        h('td', { class: 'num' }, num(s.stored)),
        h('td', { class: 'num' }, s.dead_letters ? h('a', { href: `#/dead-letters?source=${encodeURIComponent(s.source_id)}` }, num(s.dead_letters)) : '0'),
        h('td', { class: 'num' }, pct(s.delivery.success_rate)),
        h('td', { class: 'num' }, `${ms(s.delivery.latency_ms_p50)} / ${ms(s.delivery.latency_ms_p99)}`),
        h(
          'td',
          {},
          stackedBar(
            [
              { name: 'ok', value: s.delivery.done },
              { name: 'retry', value: s.delivery.retry },
              { name: 'dead', value: s.delivery.dead_letter },
            ],
            { title: `${s.source_id}: ${s.delivery.done} delivered, ${s.delivery.retry} retried, ${s.delivery.dead_letter} dead-lettered attempts in the last hour` },
          ),
        ),
      ),
    );
  return table('Sources, worst first', ['Source', 'State', 'Accepted', 'Duplicates', 'Refused', 'Requests / min', 'Stored', 'Dead letters', 'Delivery success', 'p50 / p99', 'Attempts'], rows, 'No sources yet: add one on the Sources page.');
}

function destinationsTable(items) {
  const rows = items.map((d) => {
    const points = d.recent_attempts.map((a) => ({ x: new Date(a.started_at).getTime(), y: a.duration_ms, kind: a.outcome === 'done' ? 'ok' : a.outcome === 'retry' ? 'retry' : 'dead' }));
    return h(
      'tr',
      {},
      h('td', {}, h('strong', {}, d.handler), d.destination ? h('div', { class: 'hint mono' }, d.destination) : null),
      h('td', {}, health(d.health)),
      h('td', { class: 'num' }, num(d.delivery.attempts)),
      h('td', { class: 'num' }, pct(d.delivery.success_rate)),
      h('td', { class: 'num' }, `${ms(d.delivery.latency_ms_p50)} / ${ms(d.delivery.latency_ms_p99)}`),
      h(
        'td',
        {},
        scatter(points, {
          title: `${d.handler}: latency of its last ${points.length} attempts this hour; p50 ${ms(d.delivery.latency_ms_p50)}, p99 ${ms(d.delivery.latency_ms_p99)}`,
          marks: [
            d.delivery.latency_ms_p50 !== null ? { name: 'p50', y: d.delivery.latency_ms_p50 } : null,
            d.delivery.latency_ms_p99 !== null ? { name: 'p99', y: d.delivery.latency_ms_p99 } : null,
          ].filter(Boolean),
        }),
      ),
      h('td', {}, d.delivery.last_success_at ? ago(d.delivery.last_success_at) : '—'),
    );
  });
  const t = table('Destinations', ['Handler', 'State', 'Attempts', 'Success', 'p50 / p99', 'Latency (dots: attempts; lines: p50, p99)', 'Last success'], rows, 'No deliveries in the last hour.');
  return items.length ? t : h('div', {}, t, notice('info', 'Destinations appear once the worker has made attempts to them.'));
}
