// Sources: list, detail (where to point the provider, health, why the ingress cannot serve it,
// secrets, Notion's token capture), add with the provider's setup steps, rotate the secret with a
// grace period, enable/disable. A generated secret is shown once.

import * as api from '../api.js';
import { h, table, badge, field, input, select, button, dl, time, ago, notice, errorNotice, secretBox, clear, pct, ms, num, rateColumns } from '../ui.js';
import { PROVIDERS } from '../providers.js';

export async function render(ctx) {
  if (ctx.rest[0] === 'new') return renderNew(ctx);
  if (ctx.rest[0]) return renderOne(ctx, ctx.rest[0]);
  return renderList(ctx);
}

function webhookUrl(path) {
  // The ingress is another process (often another host); the console shows the path and the
  // URL on this host as a hint to adapt.
  return `https://<ingress host>${path}`;
}

async function renderList(ctx) {
  const [list, stats] = await Promise.all([api.get('/v1/sources'), api.get('/v1/stats/sources?window=1h').catch(() => ({ items: [] }))]);
  const byId = new Map(stats.items.map((s) => [s.source_id, s]));
  ctx.main.appendChild(
    h(
      'div',
      { class: 'page-head' },
      h('h1', {}, 'Sources'),
      ctx.has('sources:write') ? h('a', { class: 'button', href: '#/sources/new' }, 'Add a source') : null,
    ),
  );
  const rows = list.items.map((s) => {
    const st = byId.get(s.id);
    return h(
      'tr',
      {},
      h('td', {}, h('a', { href: `#/sources/${encodeURIComponent(s.id)}` }, s.id)),
      h('td', {}, s.tenant),
      h('td', {}, (PROVIDERS[s.provider] && PROVIDERS[s.provider].name) || s.provider),
      h('td', {}, s.enabled ? 'enabled' : h('strong', {}, 'disabled')),
      h('td', {}, st ? badge(st.health.state) : '—'),
      h('td', { class: 'num' }, st ? num(st.accepted) : '—'),
      h('td', { class: 'mono' }, s.path),
      h('td', {}, ago(s.created_at)),
    );
  });
  ctx.main.appendChild(table('Sources', ['Id', 'Tenant', 'Provider', 'Enabled', 'State', 'Accepted (1 h)', 'Path', 'Created'], rows, 'No sources yet.'));
}

async function renderOne(ctx, id) {
  const flash = h('div', { id: 'source-flash' });
  const body = h('div', {});
  ctx.main.appendChild(h('p', { class: 'crumbs' }, h('a', { href: '#/sources' }, 'Sources'), ' / ', id));
  ctx.main.appendChild(h('h1', {}, id));
  ctx.main.appendChild(flash);
  ctx.main.appendChild(body);
  const load = async () => {
    const [s, stats, rates] = await Promise.all([
      api.get(`/v1/sources/${encodeURIComponent(id)}`),
      api.get('/v1/stats/sources?window=1h').catch(() => ({ items: [] })),
      api.get(`/v1/stats/ingress?window=1h&source=${encodeURIComponent(id)}`).catch(() => ({ items: [] })),
    ]);
    const st = stats.items.find((x) => x.source_id === s.id);
    clear(body);
    body.appendChild(detail(ctx, s, st, flash, load, rates.items.length ? rates.items[0].buckets : []));
  };
  await load();
}

// What each refusal means for the person fixing it.
const REFUSALS = {
  invalid_signature: 'The signature did not match any valid secret: the provider may be signing with a rotated or different secret.',
  missing_signature: 'No signature header: signing is not set up on the provider’s side, or something else is posting here.',
  stale_timestamp: 'The signed timestamp is outside the tolerance: a clock is off, or an old request was replayed.',
  unsupported_media_type: 'The content type is not what this provider sends.',
  invalid_payload: 'Signed, but the body is not what this provider sends.',
  capture_not_armed: 'Notion’s verification request arrived while no capture was armed.',
  payload_too_large: 'The body was over the source’s max_body_bytes.',
  body_timeout: 'The body arrived too slowly (HOOKLINE_BODY_TIMEOUT, HOOKLINE_BODY_MIN_RATE).',
  invalid_dedup_key: 'The delivery id holds control characters.',
  bad_request: 'The request body could not be read.',
  unavailable: 'Answered 503: the broker or the database was unavailable; the provider retries.',
  source_misconfigured: 'Answered 503: the ingress cannot serve this source (see above).',
};

function requestsCard(st, buckets) {
  const now = Date.now();
  const refused = Object.entries(st.outcomes || {}).filter(([code]) => !['queued', 'duplicate', 'handshake'].includes(code));
  refused.sort((a, b) => b[1] - a[1]);
  const verification = new Set(Object.keys(st.verification_failures || {}));
  return h(
    'section',
    { class: 'card', 'aria-labelledby': 'src-requests' },
    h('h2', { id: 'src-requests' }, 'Requests (1 h)'),
    h(
      'p',
      {},
      rateColumns(buckets, {
        title: `Requests per minute over the last hour: ${st.received} received, ${st.duplicates} duplicates, ${st.rejected} refused`,
        from: now - 3600 * 1000,
        to: now,
        step: 60 * 1000,
        width: 480,
        height: 60,
      }),
      h('span', { class: 'legend', 'aria-hidden': 'true' }, h('span', { class: 'key key-ok' }), 'accepted', h('span', { class: 'key key-dup' }), 'duplicate', h('span', { class: 'key key-dead' }), 'refused'),
    ),
    dl([
      ['Received', num(st.received)],
      ['Duplicates', num(st.duplicates)],
      ['Refused', num(st.rejected)],
      ['Last verification failure', st.last_verification_failure_at ? ago(st.last_verification_failure_at) : 'none in the last hour'],
    ]),
    table(
      'Refused requests by reason, last hour',
      ['Reason', 'Requests', 'What it means'],
      refused.map(([code, n]) =>
        h('tr', {}, h('td', {}, h('code', {}, code), verification.has(code) ? h('div', { class: 'hint' }, 'verification') : null), h('td', { class: 'num' }, num(n)), h('td', {}, REFUSALS[code] || '')),
      ),
      'No request refused in the last hour.',
    ),
  );
}

function detail(ctx, s, st, flash, reload, buckets = []) {
  const p = PROVIDERS[s.provider] || { name: s.provider, steps: [] };
  const out = h('div', {});
  if (s.problem) {
    // The ingress answers 503 source_misconfigured for it: say so first, with the repair.
    out.appendChild(
      h(
        'section',
        { class: 'card card-bad', 'aria-labelledby': 'src-problem', id: 'src-problem-card' },
        h('h2', { id: 'src-problem' }, 'The ingress cannot serve this source'),
        h('p', { class: 'error-text' }, s.problem),
        h('p', {}, 'Until it is repaired every webhook to it is answered ', h('code', {}, '503 source_misconfigured'), ' (the provider retries). ',
          s.problem.startsWith('undecryptable_secret') ? 'Rotate the secret below with a grace period of 0s: the stored one cannot be opened by this deployment’s HOOKLINE_SECRET_KEY.' : ''),
      ),
    );
  }
  out.appendChild(
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'src-about' },
      h('h2', { id: 'src-about' }, 'About'),
      dl([
        ['Provider', p.name],
        ['Tenant', s.tenant],
        ['Enabled', s.enabled ? 'yes' : 'no: the ingress answers 404'],
        ['Created', time(s.created_at)],
        ['Updated', time(s.updated_at)],
        // Delivery figures cannot see a source the ingress refuses to serve: its problem wins.
        ['State (1 h)', s.problem ? h('span', {}, badge('failing'), ' the ingress cannot serve it (above)') : st ? h('span', {}, badge(st.health.state), st.health.reason ? ` ${st.health.reason}` : '') : '—'],
        ['Accepted / stored (1 h)', st ? `${num(st.accepted)} / ${num(st.stored)}` : '—'],
        ['Delivery success, p50 / p99', st ? `${pct(st.delivery.success_rate)}, ${ms(st.delivery.latency_ms_p50)} / ${ms(st.delivery.latency_ms_p99)}` : '—'],
        ['Dead letters (1 h)', st ? h('a', { href: `#/dead-letters?source=${encodeURIComponent(s.id)}` }, num(st.dead_letters)) : '—'],
      ]),
      h('p', {}, h('a', { href: `#/events?source=${encodeURIComponent(s.id)}` }, 'Events from this source'), ' · ', h('a', { href: `#/dead-letters?source=${encodeURIComponent(s.id)}` }, 'Its dead letters')),
    ),
  );
  if (st) out.appendChild(requestsCard(st, buckets));
  out.appendChild(
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'src-point' },
      h('h2', { id: 'src-point' }, 'Where to point the provider'),
      h('p', {}, 'Path on the ingress: ', h('code', {}, s.path)),
      h('p', {}, 'Webhook URL: ', h('code', {}, webhookUrl(s.path))),
      h('ol', {}, p.steps.map((x) => h('li', {}, x))),
    ),
  );
  if (s.provider === 'notion') out.appendChild(notionCapture(ctx, s, flash, reload));
  const opts = Object.entries(s.options || {});
  out.appendChild(
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'src-opts' },
      h('h2', { id: 'src-opts' }, 'Options'),
      opts.length ? dl(opts.map(([k, v]) => [k, h('code', {}, v)])) : h('p', { class: 'empty' }, 'Defaults only.'),
    ),
  );
  out.appendChild(
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'src-secrets' },
      h('h2', { id: 'src-secrets' }, 'Secrets'),
      s.secrets.length
        ? h('ul', {}, s.secrets.map((x) => h('li', {}, 'added ', time(x.created_at), x.expires_at ? [' · verifies until ', time(x.expires_at)] : ' · valid until rotated')))
        : h('p', { class: 'empty' }, 'None.'),
      ctx.has('sources:write') ? rotateForm(s, flash, reload) : null,
    ),
  );
  if (ctx.has('sources:write')) {
    out.appendChild(
      h(
        'section',
        { class: 'card', 'aria-labelledby': 'src-actions' },
        h('h2', { id: 'src-actions' }, 'Actions'),
        button(s.enabled ? 'Disable source' : 'Enable source', async () => {
          clear(flash);
          try {
            await api.post(`/v1/sources/${encodeURIComponent(s.id)}/${s.enabled ? 'disable' : 'enable'}`);
            await reload();
            flash.appendChild(notice('ok', s.enabled ? 'Disabled: the ingress now answers 404 for it.' : 'Enabled.'));
          } catch (e) {
            flash.appendChild(errorNotice(e));
          }
        }, { class: s.enabled ? 'danger' : '' }),
      ),
    );
  }
  return out;
}

// Notion signs with a verification token it sends once, unsigned: hookline stores it only while
// an operator has armed the capture. Arm it, have Notion send it, then reveal it for Notion's
// Verify dialog (every reveal is audited).
function notionCapture(ctx, s, flash, reload) {
  const captured = s.secrets.length > 0 || 'verification_token' in (s.options || {});
  const armedUntil = (s.options || {}).capture_armed_until;
  const armed = armedUntil && new Date(armedUntil) > new Date();
  const state = captured
    ? h('p', {}, badge('done'), ' A verification token is captured: this source verifies Notion’s signatures.')
    : armed
      ? h('p', {}, badge('running'), ' Armed until ', time(armedUntil), ': Notion’s next verification request will be captured. Create or re-send the subscription in Notion now.')
      : h('p', {}, badge('stored'), ' Not armed: Notion’s unsigned verification request is refused (', h('code', {}, '401 capture_not_armed'), ').');
  const section = h('section', { class: 'card', 'aria-labelledby': 'src-notion', id: 'src-notion-card' }, h('h2', { id: 'src-notion' }, 'Notion verification token'), state);
  if (!ctx.has('sources:write')) return section;
  const span = input('capture_for', { value: '10m', pattern: '[0-9]+(ms|s|m|h)?', required: true });
  const revealed = h('div', { id: 'notion-token' });
  if (!captured) {
    section.appendChild(
      h(
        'form',
        {
          class: 'inline-form',
          'aria-label': 'Arm the capture',
          onsubmit: async (ev) => {
            ev.preventDefault();
            clear(flash);
            try {
              const r = await api.post(`/v1/sources/${encodeURIComponent(s.id)}/arm-capture`, { for: span.value.trim() });
              await reload();
              flash.appendChild(notice('ok', h('p', {}, 'Capture armed until ', time(r.capture_armed_until), '.')));
            } catch (e) {
              flash.appendChild(errorNotice(e));
            }
          },
        },
        field('Capture for', span, 'At most 24h; the first captured request spends it.'),
        h('button', { type: 'submit' }, armed ? 'Arm again' : 'Arm the capture'),
      ),
    );
  } else {
    section.appendChild(
      button('Reveal the token', async () => {
        clear(revealed);
        try {
          const r = await api.get(`/v1/sources/${encodeURIComponent(s.id)}/captured`);
          revealed.appendChild(notice('ok', h('p', {}, 'Paste it into Notion’s ', h('em', {}, 'Verify'), ' dialog. This reveal is in the audit log.'), secretBox('Verification token', r.verification_token)));
        } catch (e) {
          revealed.appendChild(errorNotice(e));
        }
      }, { class: 'secondary' }),
    );
  }
  section.appendChild(revealed);
  return section;
}

function rotateForm(s, flash, reload) {
  const mode = select('mode', [['generate', 'Generate a new secret'], ['paste', 'Paste the provider’s new secret']], (PROVIDERS[s.provider] || {}).generate ? 'generate' : 'paste');
  const secret = h('input', { type: 'password', name: 'secret', autocomplete: 'off', class: 'mono' });
  const grace = input('grace', { value: '24h', pattern: '[0-9]+(ms|s|m|h|d)?', required: true });
  const secretField = field('New secret', secret);
  const sync = () => {
    secretField.hidden = mode.value !== 'paste';
  };
  mode.addEventListener('change', sync);
  sync();
  return h(
    'form',
    {
      class: 'inline-form',
      'aria-label': 'Rotate the secret',
      onsubmit: async (ev) => {
        ev.preventDefault();
        clear(flash);
        const body = { grace: grace.value };
        if (mode.value === 'paste') body.secret = secret.value;
        else body.generate_secret = true;
        try {
          const r = await api.post(`/v1/sources/${encodeURIComponent(s.id)}/rotate-secret`, body);
          secret.value = '';
          await reload();
          flash.appendChild(
            notice(
              'ok',
              h('p', {}, 'Secret rotated. ', r.previous_valid_until ? ['The previous one verifies until ', time(r.previous_valid_until), '.'] : ''),
              r.secret ? [h('p', {}, h('strong', {}, 'Shown once:'), ' give it to the provider now.'), secretBox('New secret', r.secret)] : null,
            ),
          );
        } catch (e) {
          flash.appendChild(errorNotice(e));
        }
      },
    },
    h('h3', {}, 'Rotate the secret'),
    field('New secret from', mode),
    secretField,
    field('Grace period for the current secret', grace, 'e.g. 24h, 30m, 0s'),
    h('button', { type: 'submit' }, 'Rotate'),
  );
}

function parseOptions(text) {
  const out = {};
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (!t) continue;
    const i = t.indexOf('=');
    if (i <= 0) throw new Error(`option line “${t}” is not name=value`);
    out[t.slice(0, i).trim()] = t.slice(i + 1).trim();
  }
  return out;
}

async function renderNew(ctx) {
  ctx.main.appendChild(h('p', { class: 'crumbs' }, h('a', { href: '#/sources' }, 'Sources'), ' / new'));
  ctx.main.appendChild(h('h1', {}, 'Add a source'));
  const result = h('div', { id: 'new-source-result' });
  const provider = select('provider', Object.entries(PROVIDERS).map(([k, p]) => [k, p.name]), 'github');
  const tenant = input('tenant', { required: !ctx.session.tenant, value: ctx.session.tenant || '', readonly: ctx.session.tenant ? true : undefined });
  const id = input('id', { pattern: '[A-Za-z0-9_-]{1,64}', placeholder: 'generated when empty' });
  const mode = select('secret_mode', [['generate', 'Let hookline generate it'], ['paste', 'Paste the provider’s secret'], ['none', 'No secret (Notion, Google Pub/Sub)']], 'generate');
  const secret = h('input', { type: 'password', name: 'secret', autocomplete: 'off', class: 'mono' });
  const options = h('textarea', { name: 'options', rows: 3, class: 'mono', spellcheck: 'false' });
  const steps = h('div', { class: 'card steps', 'aria-live': 'polite' });
  const secretField = field('Secret', secret);
  const sync = () => {
    const p = PROVIDERS[provider.value];
    if (p.noSecret) mode.value = 'none';
    else if (mode.value === 'none' || (mode.value === 'generate' && !p.generate)) mode.value = p.generate ? 'generate' : 'paste';
    secretField.hidden = mode.value !== 'paste';
    if (!options.value || options.dataset.auto === '1') {
      options.value = p.options || '';
      options.dataset.auto = '1';
    }
    clear(steps).appendChild(h('h2', {}, `Setting up ${p.name}`));
    steps.appendChild(h('p', {}, 'hookline needs: ', p.needs, '.'));
    steps.appendChild(h('ol', {}, p.steps.map((x) => h('li', {}, x))));
  };
  provider.addEventListener('change', sync);
  mode.addEventListener('change', sync);
  options.addEventListener('input', () => {
    options.dataset.auto = '0';
  });
  sync();
  const form = h(
    'form',
    {
      class: 'card',
      'aria-label': 'New source',
      onsubmit: async (ev) => {
        ev.preventDefault();
        clear(result);
        try {
          const body = { provider: provider.value, options: parseOptions(options.value) };
          if (!ctx.session.tenant) body.tenant = tenant.value.trim();
          if (id.value.trim()) body.id = id.value.trim();
          if (mode.value === 'generate') body.generate_secret = true;
          if (mode.value === 'paste') body.secret = secret.value;
          const r = await api.post('/v1/sources', body);
          secret.value = '';
          form.hidden = true;
          result.appendChild(
            notice(
              'ok',
              h('p', {}, 'Source ', h('a', { href: `#/sources/${encodeURIComponent(r.source.id)}` }, h('strong', {}, r.source.id)), ' added. Point the provider at ', h('code', {}, r.source.path), ' on the ingress.'),
              r.secret ? [h('p', {}, h('strong', {}, 'This secret is shown once.'), ' Give it to the provider now; hookline keeps it encrypted and never shows it again.'), secretBox('Generated secret', r.secret)] : null,
            ),
          );
        } catch (e) {
          result.appendChild(errorNotice(e));
        }
      },
    },
    field('Provider', provider),
    field('Tenant', tenant, ctx.session.tenant ? 'Your key’s tenant.' : 'The tenant this source belongs to.'),
    field('Id', id, 'Letters, digits, _ and -; it becomes the URL path.'),
    field('Secret', mode),
    secretField,
    field('Options (name=value, one a line)', options, 'tolerance, dedup_window, max_body_bytes and the provider’s own.'),
    h('button', { type: 'submit' }, 'Add source'),
  );
  ctx.main.appendChild(h('div', { class: 'two-col' }, form, steps));
  ctx.main.appendChild(result);
}
