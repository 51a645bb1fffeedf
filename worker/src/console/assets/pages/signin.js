// Sign in with an API key: the key is sent once to /console/session, which checks it like any
// API call and answers with an HttpOnly session cookie. The key is never stored in the browser.

import * as api from '../api.js';
import { h, field, errorNotice, clear } from '../ui.js';

export async function render(ctx) {
  const key = h('input', {
    type: 'password',
    name: 'key',
    autocomplete: 'off',
    required: true,
    spellcheck: 'false',
    placeholder: 'hl_…',
    class: 'mono',
  });
  const status = h('div', { id: 'signin-status' });
  const form = h(
    'form',
    {
      class: 'card signin',
      onsubmit: async (ev) => {
        ev.preventDefault();
        clear(status);
        const submit = form.querySelector('button[type=submit]');
        submit.disabled = true;
        try {
          const s = await api.post('/console/session', { key: key.value.trim() });
          key.value = '';
          await ctx.signedIn(s);
          const next = ctx.query.get('next');
          ctx.go(next && next.startsWith('#/') && !next.startsWith('#/signin') ? next : '#/overview');
        } catch (e) {
          status.appendChild(
            errorNotice(
              e.status === 401 || e.status === 403
                ? Object.assign(new Error('That key was refused: it is unknown, revoked, expired, or not allowed from here.'), { code: e.code })
                : e,
            ),
          );
          key.focus();
        } finally {
          submit.disabled = false;
        }
      },
    },
    h('h1', {}, 'Sign in'),
    h('p', {}, 'Use a hookline API key (', h('code', {}, 'hookline-worker api-keys create'), '). A tenant key sees only its tenant.'),
    field('API key', key),
    h('button', { type: 'submit' }, 'Sign in'),
    status,
  );
  ctx.main.appendChild(form);
}
