// Events: search with filters (in the URL, so a search can be shared), newest first, older pages
// by cursor, and a live tail that polls for newer events. The event page shows the normalized
// fields, the forwarded headers, the payload as a collapsible tree and every attempt in order.

import * as api from '../api.js';
import { h, table, badge, field, input, select, dl, time, ago, errorNotice, jsonTree, clear, ms, notice, button } from '../ui.js';

const TAIL_MS = 2000;
// A tail left open on a busy system keeps this many rows at most, dropping the oldest.
const TAIL_KEEP = 1000;
const FILTERS = ['source', 'provider', 'module', 'event_type', 'entity_id', 'status', 'since', 'until'];

export async function render(ctx) {
  if (ctx.rest[0]) return renderOne(ctx, ctx.rest[0]);
  return renderList(ctx);
}

// datetime-local (local time, no zone) ↔ RFC 3339 for the API.
const toIso = (v) => (v ? new Date(v).toISOString() : '');
function toLocal(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

function row(e) {
  return h(
    'tr',
    { 'data-id': e.id },
    h('td', {}, time(e.received_at)),
    h('td', {}, h('a', { href: `#/events/${e.id}` }, e.event_type || '(none)')),
    h('td', {}, e.module),
    h('td', {}, h('a', { href: `#/sources/${encodeURIComponent(e.source_id)}` }, e.source_id), h('div', { class: 'hint' }, e.provider)),
    h('td', { class: 'mono' }, e.entity_id || '—'),
    h('td', {}, badge(e.status)),
  );
}

async function renderList(ctx) {
  const q = ctx.query;
  const controls = {
    source: input('source', { value: q.get('source') || '' }),
    provider: input('provider', { value: q.get('provider') || '' }),
    module: input('module', { value: q.get('module') || '', placeholder: 'e.g. issues or contact*' }),
    event_type: input('event_type', { value: q.get('event_type') || '', placeholder: 'e.g. invoice.* or *.created' }),
    entity_id: input('entity_id', { value: q.get('entity_id') || '' }),
    status: select('status', [['', 'any'], ['stored', 'stored'], ['delivered', 'delivered'], ['retrying', 'retrying'], ['dead', 'dead']], q.get('status') || ''),
    since: h('input', { type: 'datetime-local', name: 'since', value: toLocal(q.get('since')) }),
    until: h('input', { type: 'datetime-local', name: 'until', value: toLocal(q.get('until')) }),
  };
  const labels = { source: 'Source', provider: 'Provider', module: 'Module', event_type: 'Event type', entity_id: 'Entity id', status: 'Status', since: 'Received from', until: 'Received before' };
  const form = h(
    'form',
    {
      class: 'filters',
      role: 'search',
      'aria-label': 'Filter events',
      onsubmit: (ev) => {
        ev.preventDefault();
        const p = {};
        for (const k of FILTERS) {
          const v = controls[k].value.trim();
          if (v) p[k] = k === 'since' || k === 'until' ? toIso(v) : v;
        }
        ctx.go(`#/events${api.qs(p)}`);
      },
    },
    FILTERS.map((k) => field(labels[k], controls[k])),
    h('div', { class: 'filter-actions' }, h('button', { type: 'submit' }, 'Search'), h('a', { href: '#/events', class: 'button secondary' }, 'Clear')),
  );
  const tail = h('input', { type: 'checkbox', name: 'tail', id: 'tail' });
  const tailStatus = h('span', { class: 'hint', role: 'status', id: 'tail-status' });
  ctx.main.appendChild(
    h('div', { class: 'page-head' }, h('h1', {}, 'Events'), h('div', { class: 'tail' }, tail, h('label', { for: 'tail' }, 'Live tail'), ' ', tailStatus)),
  );
  ctx.main.appendChild(form);
  const filters = {};
  for (const k of FILTERS) if (q.get(k)) filters[k] = q.get(k);

  const tbody = h('tbody', {});
  const seen = new Set();
  const list = h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { id: 'events-table' },
      h('caption', { class: 'visually-hidden' }, 'Events, newest first'),
      h('thead', {}, h('tr', {}, ['Received', 'Event type', 'Module', 'Source', 'Entity', 'Status'].map((x) => h('th', { scope: 'col' }, x)))),
      tbody,
    ),
  );
  // Hidden until the first page answers, so "No events match" never flashes during a search.
  const empty = h('p', { class: 'empty', hidden: true }, 'No events match.');
  const more = h('div', { class: 'more' });
  ctx.main.appendChild(list);
  ctx.main.appendChild(empty);
  ctx.main.appendChild(more);

  let newest = null;
  const add = (items, where) => {
    const rows = [];
    for (const e of items) {
      if (seen.has(e.id)) continue;
      seen.add(e.id);
      rows.push(row(e));
      if (!newest || e.received_at > newest) newest = e.received_at;
    }
    if (where === 'top') {
      tbody.prepend(...rows);
      if (tbody.rows.length > TAIL_KEEP) {
        while (tbody.rows.length > TAIL_KEEP) {
          const last = tbody.lastElementChild;
          seen.delete(last.dataset.id);
          last.remove();
        }
        // The cursor of "Older events" no longer follows the last row shown.
        clear(more).appendChild(h('p', { class: 'hint' }, `The live tail keeps the newest ${TAIL_KEEP} events; search to see older ones.`));
      }
    } else tbody.append(...rows);
    empty.hidden = seen.size > 0;
    list.hidden = seen.size === 0;
    return rows.length;
  };
  const page = async (cursor) => {
    const r = await api.get(`/v1/events${api.qs({ ...filters, cursor, limit: 50 })}`);
    add(r.items, 'bottom');
    clear(more);
    if (r.next_cursor) more.appendChild(button('Older events', () => page(r.next_cursor).catch((e) => more.appendChild(errorNotice(e)))));
  };
  await page();

  // The tail asks for what arrived since the newest row shown (the API's `since` is inclusive;
  // rows already shown are skipped by id).
  let timer = null;
  const poll = async () => {
    try {
      const since = newest || filters.since;
      const r = await api.get(`/v1/events${api.qs({ ...filters, since, limit: 100 })}`);
      const n = add(r.items, 'top');
      tailStatus.textContent = n ? `${n} new` : `watching · ${new Date().toLocaleTimeString(undefined, { hour12: false })}`;
    } catch (e) {
      tailStatus.textContent = `tail paused: ${e.message}`;
    }
  };
  tail.addEventListener('change', () => {
    clearInterval(timer);
    timer = null;
    if (tail.checked) {
      tailStatus.textContent = 'watching';
      poll();
      timer = setInterval(poll, TAIL_MS);
    } else {
      tailStatus.textContent = '';
    }
  });
  return () => clearInterval(timer);
}

function attemptItem(a) {
  return h(
    'li',
    { class: `attempt attempt-${a.outcome}` },
    h(
      'div',
      { class: 'attempt-head' },
      badge(a.outcome === 'done' ? 'done' : a.outcome === 'retry' ? 'retry' : 'dead_letter'),
      ' ',
      h('strong', {}, a.handler),
      ` attempt ${a.attempt}`,
      a.http_status ? ` · HTTP ${a.http_status}` : '',
      ` · ${ms(a.duration_ms)} · `,
      time(a.started_at),
    ),
    dl([
      ['Destination', a.destination ? h('code', {}, a.destination) : '—'],
      ['Error', a.error_class || a.error ? `${a.error_class ? `${a.error_class}: ` : ''}${a.error || ''}` : undefined],
      ['Response', a.response_excerpt ? h('pre', { class: 'excerpt' }, a.response_excerpt) : undefined],
      ['Worker', a.worker],
    ]),
  );
}

async function renderOne(ctx, id) {
  const e = await api.get(`/v1/events/${encodeURIComponent(id)}`);
  ctx.main.appendChild(h('p', { class: 'crumbs' }, h('a', { href: '#/events' }, 'Events'), ' / ', h('span', { class: 'mono' }, id)));
  ctx.main.appendChild(h('div', { class: 'page-head' }, h('h1', {}, e.event_type || 'Event'), badge(e.status)));
  const flash = h('div', {});
  ctx.main.appendChild(flash);
  ctx.main.appendChild(
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'ev-fields' },
      h('h2', { id: 'ev-fields' }, 'Normalized fields'),
      dl([
        ['Event id', h('code', {}, e.id)],
        ['Source', h('a', { href: `#/sources/${encodeURIComponent(e.source_id)}` }, e.source_id)],
        ['Tenant', e.tenant],
        ['Provider', e.provider],
        ['Module', e.module],
        ['Event type', e.event_type],
        ['Entity id', e.entity_id],
        ['Dedup key', e.dedup_key ? h('code', {}, e.dedup_key) : null],
        ['Received', time(e.received_at)],
        ['Stored', e.stored ? time(e.processed_at) : 'not stored (no route stores it)'],
      ]),
    ),
  );
  if (e.dead_letter) {
    const d = e.dead_letter;
    ctx.main.appendChild(
      h(
        'section',
        { class: 'card card-bad', 'aria-labelledby': 'ev-dead' },
        h('h2', { id: 'ev-dead' }, 'Dead letter'),
        dl([
          ['Status', badge(d.status)],
          ['Reason', d.reason],
          ['Handler', d.handler],
          ['Attempts', String(d.attempts)],
          ['Last error', d.last_error],
          ['Failed', [time(d.first_failed_at), ' → ', time(d.last_failed_at)]],
          ['Replayed', String(d.replay_count)],
        ]),
        d.status === 'parked' && ctx.has('replay') ? h('p', {}, h('a', { class: 'button', href: `#/dead-letters?id=${e.id}` }, 'Replay or purge it')) : null,
      ),
    );
  }
  const attempts = [...e.attempts].sort((a, b) => a.started_at.localeCompare(b.started_at) || a.id - b.id);
  ctx.main.appendChild(
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'ev-attempts' },
      h('h2', { id: 'ev-attempts' }, `Attempts (${attempts.length})`),
      attempts.length ? h('ol', { class: 'timeline' }, attempts.map(attemptItem)) : h('p', { class: 'empty' }, 'No attempts recorded yet.'),
    ),
  );
  const headers = Object.entries(e.headers || {});
  ctx.main.appendChild(
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'ev-headers' },
      h('h2', { id: 'ev-headers' }, 'Headers'),
      table('Headers', ['Name', 'Value'], headers.map(([k, v]) => h('tr', {}, h('td', { class: 'mono' }, k), h('td', { class: 'mono wrap' }, typeof v === 'string' ? v : JSON.stringify(v)))), 'No headers kept.'),
    ),
  );
  ctx.main.appendChild(
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'ev-payload' },
      h('h2', { id: 'ev-payload' }, 'Payload'),
      e.payload === null ? h('p', { class: 'empty' }, 'Not kept (purged).') : h('div', { class: 'mono payload' }, jsonTree(e.payload)),
      e.payload === null ? null : h('details', {}, h('summary', {}, 'Raw JSON'), h('pre', { class: 'raw' }, JSON.stringify(e.payload, null, 2))),
    ),
  );
  if (!attempts.length && !e.dead_letter) flash.appendChild(notice('info', 'The worker has not handled this event yet.'));
}
