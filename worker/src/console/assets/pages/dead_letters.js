// Dead letters: filter, select, then replay or purge. Both start with a dry run that counts what
// would be affected; confirming starts a job on the API, whose progress is polled here.

import * as api from '../api.js';
import { h, field, input, select, time, badge, errorNotice, notice, clear, button } from '../ui.js';

const FILTERS = ['source', 'module', 'handler', 'error_contains', 'since', 'status'];
const JOB_POLL_MS = 1000;

export async function render(ctx) {
  const q = ctx.query;
  const filters = {};
  for (const k of FILTERS) if (q.get(k)) filters[k] = q.get(k);
  const onlyId = q.get('id');

  const controls = {
    source: input('source', { value: filters.source || '' }),
    module: input('module', { value: filters.module || '' }),
    handler: input('handler', { value: filters.handler || '' }),
    error_contains: input('error_contains', { value: filters.error_contains || '', placeholder: 'e.g. 503' }),
    since: h('input', { type: 'datetime-local', name: 'since', value: '' }),
    status: select('status', [['parked', 'parked'], ['replayed', 'replayed'], ['purged', 'purged'], ['all', 'all']], filters.status || 'parked'),
  };
  if (filters.since) {
    const d = new Date(filters.since);
    if (!Number.isNaN(d.getTime())) controls.since.value = new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  }
  const labels = { source: 'Source', module: 'Module', handler: 'Handler', error_contains: 'Error contains', since: 'Failed since', status: 'Status' };
  ctx.main.appendChild(h('div', { class: 'page-head' }, h('h1', {}, 'Dead letters')));
  ctx.main.appendChild(
    h(
      'form',
      {
        class: 'filters',
        role: 'search',
        'aria-label': 'Filter dead letters',
        onsubmit: (ev) => {
          ev.preventDefault();
          const p = {};
          for (const k of FILTERS) {
            const v = controls[k].value.trim();
            if (v && !(k === 'status' && v === 'parked')) p[k] = k === 'since' ? new Date(v).toISOString() : v;
          }
          ctx.go(`#/dead-letters${api.qs(p)}`);
        },
      },
      FILTERS.map((k) => field(labels[k], controls[k])),
      h('div', { class: 'filter-actions' }, h('button', { type: 'submit' }, 'Filter'), h('a', { href: '#/dead-letters', class: 'button secondary' }, 'Clear')),
    ),
  );

  const panel = h('div', { id: 'dl-panel', 'aria-live': 'polite' });
  const tbody = h('tbody', {});
  const all = h('input', { type: 'checkbox', id: 'dl-all', 'aria-label': 'Select every dead letter shown' });
  const wrap = h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { id: 'dl-table' },
      h('caption', { class: 'visually-hidden' }, 'Dead letters, newest failure first'),
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, all), ['Last failure', 'Event', 'Source', 'Handler', 'Reason', 'Attempts', 'Last error', 'Status'].map((x) => h('th', { scope: 'col' }, x)))),
      tbody,
    ),
  );
  const empty = h('p', { class: 'empty' }, 'No dead letters match.');
  const more = h('div', { class: 'more' });
  const canAct = ctx.has('replay');
  const rate = input('rate', { value: '50', inputmode: 'decimal', size: 6 });
  const actions = h(
    'div',
    { class: 'actions', role: 'group', 'aria-label': 'Act on dead letters' },
    button('Replay selected', () => start('replay', 'selected')),
    button('Replay all matching', () => start('replay', 'filter')),
    field('Rate (per second)', rate),
    button('Purge selected', () => start('purge', 'selected'), { class: 'danger' }),
    button('Purge all matching', () => start('purge', 'filter'), { class: 'danger' }),
  );
  if (canAct) ctx.main.appendChild(actions);
  ctx.main.appendChild(panel);
  ctx.main.appendChild(wrap);
  ctx.main.appendChild(empty);
  ctx.main.appendChild(more);

  const boxes = () => [...tbody.querySelectorAll('input[type=checkbox]')];
  all.addEventListener('change', () => boxes().forEach((b) => (b.checked = all.checked)));
  let count = 0;
  const add = (items) => {
    for (const d of items) {
      count++;
      tbody.appendChild(
        h(
          'tr',
          {},
          h('td', {}, h('input', { type: 'checkbox', value: d.event_id, 'aria-label': `Select dead letter ${d.event_id}`, disabled: d.status !== 'parked' ? true : undefined, checked: onlyId === d.event_id ? true : undefined })),
          h('td', {}, time(d.last_failed_at)),
          h('td', {}, h('a', { href: `#/events/${d.event_id}`, class: 'mono small' }, d.event_id)),
          h('td', {}, d.source_id, h('div', { class: 'hint' }, d.module || '')),
          h('td', {}, d.handler || '—'),
          h('td', {}, d.reason),
          h('td', { class: 'num' }, String(d.attempts)),
          h('td', { class: 'wrap error-text' }, d.last_error),
          h('td', {}, badge(d.status), d.replay_count ? h('div', { class: 'hint' }, `replayed ${d.replay_count}×`) : null),
        ),
      );
    }
    wrap.hidden = count === 0;
    empty.hidden = count > 0;
  };
  const page = async (cursor) => {
    const r = await api.get(`/v1/dead-letters${api.qs({ ...filters, cursor, limit: 100 })}`);
    add(r.items);
    clear(more);
    if (r.next_cursor) more.appendChild(button('Older dead letters', () => page(r.next_cursor).catch((e) => more.appendChild(errorNotice(e)))));
  };
  await page();

  let timer = null;
  // kind: replay | purge; what: selected | filter.
  async function start(kind, what) {
    clearInterval(timer);
    clear(panel);
    const selection = {};
    if (what === 'selected') {
      selection.ids = boxes().filter((b) => b.checked).map((b) => b.value);
      if (!selection.ids.length) {
        panel.appendChild(notice('error', 'Select at least one dead letter first.'));
        return;
      }
    } else {
      for (const k of ['source', 'module', 'handler', 'error_contains', 'since']) if (filters[k]) selection[k] = filters[k];
      if (!Object.keys(selection).length) selection.all = true;
    }
    if (kind === 'replay') {
      const r = Number(rate.value);
      if (rate.value && (!Number.isFinite(r) || r <= 0)) {
        panel.appendChild(notice('error', 'The rate must be a positive number per second.'));
        return;
      }
      if (rate.value) selection.rate = r;
    }
    try {
      const dry = await api.post(`/v1/dead-letters/${kind}`, { ...selection, dry_run: true });
      const verb = kind === 'replay' ? 'replayed' : 'purged (payload dropped, cannot be undone)';
      const confirmBtn = button(kind === 'replay' ? `Replay ${dry.count}` : `Purge ${dry.count}`, () => run(kind, selection), { class: kind === 'purge' ? 'danger' : '', disabled: dry.count === 0 ? true : undefined });
      panel.appendChild(
        h(
          'section',
          { class: 'card', 'aria-labelledby': 'dry-title' },
          h('h2', { id: 'dry-title' }, `Dry run: ${dry.count} dead letter${dry.count === 1 ? '' : 's'} would be ${verb}`),
          dry.sample.length ? h('ul', { class: 'sample' }, dry.sample.map((d) => h('li', {}, h('span', { class: 'mono' }, d.event_id), ` ${d.source_id} · ${d.handler || '—'} · ${d.last_error}`))) : null,
          dry.count > dry.sample.length ? h('p', { class: 'hint' }, `and ${dry.count - dry.sample.length} more.`) : null,
          h('div', { class: 'actions' }, confirmBtn, button('Cancel', () => clear(panel), { class: 'secondary' })),
        ),
      );
      confirmBtn.focus();
    } catch (e) {
      panel.appendChild(errorNotice(e));
    }
  }

  async function run(kind, selection) {
    clear(panel);
    try {
      const job = await api.post(`/v1/dead-letters/${kind}`, selection);
      const bar = h('progress', { max: 1, value: 0, id: 'job-progress', 'aria-label': 'Job progress' });
      const text = h('p', { id: 'job-status', role: 'status' }, `Job ${job.id}: ${job.state}`);
      panel.appendChild(h('section', { class: 'card', 'aria-labelledby': 'job-title' }, h('h2', { id: 'job-title' }, kind === 'replay' ? 'Replaying' : 'Purging'), bar, text));
      const poll = async () => {
        try {
          const j = await api.get(`/v1/jobs/${job.id}`);
          if (j.total !== null) {
            bar.max = Math.max(1, j.total);
            bar.value = j.done + j.failed;
          }
          text.textContent = `Job ${j.id}: ${j.state} · ${j.done} done${j.failed ? `, ${j.failed} failed` : ''}${j.total !== null ? ` of ${j.total}` : ''}${j.error ? ` · ${j.error}` : ''}`;
          if (j.state === 'succeeded' || j.state === 'failed') {
            clearInterval(timer);
            panel.appendChild(h('p', {}, button('Refresh the list', () => ctx.go(`#/dead-letters${api.qs(filters)}`))));
          }
        } catch (e) {
          clearInterval(timer);
          panel.appendChild(errorNotice(e));
        }
      };
      timer = setInterval(poll, JOB_POLL_MS);
      await poll();
    } catch (e) {
      panel.appendChild(errorNotice(e));
    }
  }

  return () => clearInterval(timer);
}
