// Subscriptions: a tenant's own HTTP destinations for its events. List, create (the signing
// secret is shown once), pause or resume, send a test event, delete with confirmation; a
// subscription's page shows its latest deliveries (attempts of handler `sub:<id>`).

import * as api from '../api.js';
import { h, table, field, input, button, dl, time, ago, badge, ms, notice, errorNotice, clear, secretBox } from '../ui.js';

export async function render(ctx) {
  if (ctx.rest[0]) return renderOne(ctx, ctx.rest[0]);
  return renderList(ctx);
}

const state = (s) => badge(s.paused ? 'paused' : 'active');
const patterns = (s) => h('span', { class: 'mono' }, s.event_types.join(', '));

async function renderList(ctx) {
  ctx.main.appendChild(h('div', { class: 'page-head' }, h('h1', {}, 'Subscriptions')));
  ctx.main.appendChild(
    h('p', { class: 'intro' }, 'HTTP destinations a tenant registers for its own events, signed with their own secret (Standard Webhooks headers). Workers pick changes up without a restart.'),
  );
  const flash = h('div', { id: 'subs-flash' });
  const listEl = h('div', { id: 'subs-list' });
  const load = async () => {
    const r = await api.get('/v1/subscriptions');
    const rows = r.items.map((s) =>
      h(
        'tr',
        { 'data-id': s.id },
        h('td', {}, h('a', { href: `#/subscriptions/${encodeURIComponent(s.id)}` }, s.description || s.id), s.description ? h('div', { class: 'hint mono' }, s.id) : null),
        h('td', {}, s.tenant),
        h('td', { class: 'mono wrap' }, s.url),
        h('td', {}, patterns(s)),
        h('td', {}, state(s)),
        h('td', {}, ago(s.created_at)),
        h('td', {}, ctx.has('sources:write') ? actions(s, flash, load) : null),
      ),
    );
    clear(listEl).appendChild(table('Subscriptions', ['Subscription', 'Tenant', 'URL', 'Event types', 'State', 'Created', ''], rows, 'No subscriptions yet.'));
  };
  ctx.main.appendChild(flash);
  ctx.main.appendChild(listEl);
  await load();
  if (ctx.has('sources:write')) ctx.main.appendChild(createForm(ctx, flash, load));
}

// Pause/resume, test, delete (a second press confirms).
function actions(s, flash, reload) {
  const name = s.description || s.id;
  const run = async (what, fn) => {
    clear(flash);
    try {
      await fn();
      await reload();
      flash.appendChild(notice('ok', what));
    } catch (e) {
      flash.appendChild(errorNotice(e));
    }
  };
  return h(
    'div',
    { class: 'actions' },
    button(s.paused ? 'Resume' : 'Pause', () => run(s.paused ? `${name} resumed.` : `${name} paused: events are no longer sent to it.`, () => api.post(`/v1/subscriptions/${encodeURIComponent(s.id)}/${s.paused ? 'resume' : 'pause'}`)), {
      class: 'secondary',
      'aria-label': `${s.paused ? 'Resume' : 'Pause'} subscription ${name}`,
    }),
    button('Send test', async () => {
      clear(flash);
      try {
        flash.appendChild(testResult(name, await api.post(`/v1/subscriptions/${encodeURIComponent(s.id)}/test`)));
      } catch (e) {
        flash.appendChild(errorNotice(e));
      }
    }, { class: 'secondary', 'aria-label': `Send test event to subscription ${name}` }),
    button('Delete', (ev) => {
      const b = ev.currentTarget;
      if (b.dataset.armed !== '1') {
        b.dataset.armed = '1';
        b.textContent = 'Confirm delete';
        b.setAttribute('aria-label', `Confirm delete of subscription ${name}`);
        b.focus();
        return;
      }
      run(`${name} deleted.`, () => api.del(`/v1/subscriptions/${encodeURIComponent(s.id)}`));
    }, { class: 'danger', 'aria-label': `Delete subscription ${name}` }),
  );
}

function testResult(name, r) {
  const what = [r.http_status ? `HTTP ${r.http_status}` : null, r.duration_ms !== null && r.duration_ms !== undefined ? ms(r.duration_ms) : null].filter(Boolean).join(' · ');
  return notice(
    r.delivered ? 'ok' : 'error',
    h('p', {}, r.delivered ? `Test event delivered to ${name}` : `Test event to ${name} failed`, what ? ` (${what})` : '', '.'),
    r.error ? h('p', {}, r.error_class ? `${r.error_class}: ` : '', r.error) : null,
    r.response_excerpt ? h('pre', { class: 'excerpt' }, r.response_excerpt) : null,
  );
}

function createForm(ctx, flash, reload) {
  const created = h('div', { id: 'sub-created' });
  const tenant = input('tenant', { required: !ctx.session.tenant, value: ctx.session.tenant || '', readonly: ctx.session.tenant ? true : undefined });
  const url = input('url', { type: 'url', required: true, placeholder: 'https://example.com/hooks', class: 'mono' });
  const types = input('event_types', { required: true, value: '*', class: 'mono' });
  const description = input('description', { maxlength: 200 });
  const attempts = input('max_attempts', { type: 'number', min: 1, max: 20, value: '8' });
  const timeout = input('timeout', { value: '10s', pattern: '[0-9]+(ms|s)' });
  const form = h(
    'form',
    {
      class: 'card narrow',
      'aria-labelledby': 'new-sub-title',
      onsubmit: async (ev) => {
        ev.preventDefault();
        clear(created);
        clear(flash);
        const body = {
          url: url.value.trim(),
          event_types: types.value.split(',').map((s) => s.trim()).filter(Boolean),
          max_attempts: Number(attempts.value),
          timeout: timeout.value.trim(),
        };
        if (!ctx.session.tenant) body.tenant = tenant.value.trim();
        if (description.value.trim()) body.description = description.value.trim();
        try {
          const r = await api.post('/v1/subscriptions', body);
          url.value = '';
          description.value = '';
          created.appendChild(
            notice(
              'ok',
              h('p', {}, 'Subscription ', h('a', { href: `#/subscriptions/${encodeURIComponent(r.subscription.id)}` }, h('strong', {}, r.subscription.id)), ' created. ', h('strong', {}, 'Its signing secret is shown once'), ': give it to the receiver now.'),
              secretBox('Signing secret', r.secret),
            ),
          );
          await reload();
        } catch (e) {
          created.appendChild(errorNotice(e));
        }
      },
    },
    h('h2', { id: 'new-sub-title' }, 'Add a subscription'),
    field('Tenant', tenant, ctx.session.tenant ? 'Your key’s tenant.' : 'Whose events it receives.'),
    field('URL', url, 'https, on a public address (the operator may allow more hosts).'),
    field('Event types', types, 'Comma-separated patterns; * matches anything (invoice.*, *).'),
    field('Description', description),
    field('Attempts before dead-lettering', attempts, '1 to 20.'),
    field('Timeout', timeout, '100ms to 30s.'),
    h('button', { type: 'submit' }, 'Add subscription'),
  );
  return h('div', {}, created, form);
}

async function renderOne(ctx, id) {
  ctx.main.appendChild(h('p', { class: 'crumbs' }, h('a', { href: '#/subscriptions' }, 'Subscriptions'), ' / ', id));
  const s = await api.get(`/v1/subscriptions/${encodeURIComponent(id)}`);
  ctx.main.appendChild(h('div', { class: 'page-head' }, h('h1', {}, s.description || s.id), state(s)));
  const flash = h('div', { id: 'sub-flash' });
  ctx.main.appendChild(flash);
  const reload = () => ctx.go(`#/subscriptions/${encodeURIComponent(id)}`);
  ctx.main.appendChild(
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'sub-about' },
      h('h2', { id: 'sub-about' }, 'About'),
      dl([
        ['Id', h('span', { class: 'mono' }, s.id)],
        ['Tenant', s.tenant],
        ['URL', h('span', { class: 'mono wrap' }, s.url)],
        ['Event types', patterns(s)],
        ['Attempts', String(s.max_attempts)],
        ['Timeout', s.timeout_ms % 1000 === 0 ? `${s.timeout_ms / 1000} s` : `${s.timeout_ms} ms`],
        ['Created', [time(s.created_at), ' by ', s.created_by]],
        ['Updated', time(s.updated_at)],
      ]),
      ctx.has('sources:write') ? actions(s, flash, reload) : null,
    ),
  );
  const attempts = await api.get(`/v1/attempts?handler=${encodeURIComponent(`sub:${s.id}`)}&limit=50`);
  const rows = attempts.items.map((a) =>
    h(
      'tr',
      {},
      h('td', {}, time(a.started_at)),
      h('td', {}, h('a', { href: `#/events/${encodeURIComponent(a.event_id)}`, class: 'mono' }, a.event_id)),
      h('td', { class: 'num' }, String(a.attempt)),
      h('td', {}, badge(a.outcome)),
      h('td', { class: 'num' }, a.http_status ? String(a.http_status) : '—'),
      h('td', { class: 'num' }, ms(a.duration_ms)),
      h('td', {}, a.error || ''),
    ),
  );
  ctx.main.appendChild(
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'sub-deliveries' },
      h('h2', { id: 'sub-deliveries' }, 'Latest deliveries'),
      table('Latest deliveries', ['Started', 'Event', 'Attempt', 'Outcome', 'HTTP', 'Duration', 'Error'], rows, 'No deliveries yet.'),
    ),
  );
}
