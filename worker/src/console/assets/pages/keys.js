// API keys (admin): create (the key is shown once), list, revoke.

import * as api from '../api.js';
import { h, table, field, input, button, time, errorNotice, notice, clear, secretBox } from '../ui.js';

const SCOPES = [
  ['read', 'read: see sources, events, dead letters, stats'],
  ['sources:write', 'sources:write: add and change sources'],
  ['replay', 'replay: replay and purge dead letters'],
  ['admin', 'admin: everything, including API keys'],
];

export async function render(ctx) {
  ctx.main.appendChild(h('div', { class: 'page-head' }, h('h1', {}, 'API keys')));
  const flash = h('div', { id: 'keys-flash' });
  const listEl = h('div', {});
  const load = async () => {
    const r = await api.get('/v1/api-keys');
    const rows = r.items.map((k) =>
      h(
        'tr',
        {},
        h('td', { class: 'mono' }, k.id),
        h('td', {}, k.name),
        h('td', {}, k.scopes.join(', ')),
        h('td', {}, k.tenant || 'all'),
        h('td', {}, k.allowed_ips.length ? k.allowed_ips.join(', ') : 'anywhere'),
        h('td', {}, k.expires_at ? time(k.expires_at) : 'never'),
        h('td', {}, time(k.created_at), h('div', { class: 'hint' }, k.created_by)),
        h(
          'td',
          {},
          k.revoked_at
            ? ['revoked ', time(k.revoked_at)]
            : k.id === ctx.session.key_id
              ? h('span', { class: 'hint' }, 'this session’s key')
              : button('Revoke', async (ev) => {
                  const b = ev.currentTarget;
                  if (b.dataset.armed !== '1') {
                    b.dataset.armed = '1';
                    b.textContent = `Confirm revoking ${k.name}`;
                    b.setAttribute('aria-label', `Confirm revoking ${k.name} (key ${k.id})`);
                    return;
                  }
                  clear(flash);
                  try {
                    await api.del(`/v1/api-keys/${encodeURIComponent(k.id)}`);
                    flash.appendChild(notice('ok', `Key ${k.id} revoked: it stops working at once.`));
                    await load();
                  } catch (e) {
                    flash.appendChild(errorNotice(e));
                  }
                }, { class: 'danger', 'aria-label': `Revoke key ${k.name} (${k.id})` }),
        ),
      ),
    );
    clear(listEl).appendChild(table('API keys', ['Id', 'Name', 'Scopes', 'Tenant', 'Allowed from', 'Expires', 'Created', ''], rows, 'No keys.'));
  };

  const name = input('name', { required: true, maxlength: 128 });
  const tenant = input('tenant', { value: ctx.session.tenant || '', readonly: ctx.session.tenant ? true : undefined });
  const ips = input('allowed_ips', { placeholder: '10.0.0.0/8, 192.0.2.7' });
  const expires = h('input', { type: 'datetime-local', name: 'expires_at' });
  const scopeBoxes = SCOPES.map(([v, label]) => {
    const box = h('input', { type: 'checkbox', name: 'scopes', value: v, id: `scope-${v.replace(':', '-')}`, checked: v === 'read' ? true : undefined });
    return h('div', { class: 'check' }, box, h('label', { for: box.id }, label));
  });
  const created = h('div', { id: 'key-created' });
  const form = h(
    'form',
    {
      class: 'card narrow',
      'aria-labelledby': 'new-key-title',
      onsubmit: async (ev) => {
        ev.preventDefault();
        clear(created);
        const body = {
          name: name.value.trim(),
          scopes: scopeBoxes.map((d) => d.querySelector('input')).filter((b) => b.checked).map((b) => b.value),
          allowed_ips: ips.value.split(',').map((s) => s.trim()).filter(Boolean),
        };
        if (tenant.value.trim()) body.tenant = tenant.value.trim();
        if (expires.value) body.expires_at = new Date(expires.value).toISOString();
        try {
          const k = await api.post('/v1/api-keys', body);
          name.value = '';
          created.appendChild(notice('ok', h('p', {}, 'Key ', h('strong', {}, k.name), ` (${k.id}) created. `, h('strong', {}, 'It is shown once'), ': only its hash is kept.'), secretBox('New API key', k.key)));
          await load();
        } catch (e) {
          created.appendChild(errorNotice(e));
        }
      },
    },
    h('h2', { id: 'new-key-title' }, 'Create a key'),
    field('Name', name),
    h('fieldset', {}, h('legend', {}, 'Scopes'), scopeBoxes),
    field('Tenant', tenant, ctx.session.tenant ? 'Your key’s tenant.' : 'Empty: every tenant.'),
    field('Allowed from (CIDRs, comma-separated)', ips, 'Empty: anywhere.'),
    field('Expires', expires, 'Empty: never.'),
    h('button', { type: 'submit' }, 'Create key'),
  );
  ctx.main.appendChild(flash);
  ctx.main.appendChild(created);
  ctx.main.appendChild(listEl);
  ctx.main.appendChild(form);
  await load();
}
