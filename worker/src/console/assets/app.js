// The console's shell: session, navigation, hash routing (#/events/…), focus management.
// Each page is a module exporting `render(ctx)`, which fills `ctx.main` and may return a
// cleanup function (stops polling when the user leaves the page).

import * as api from './api.js';
import { h, clear, errorNotice } from './ui.js';
import * as overview from './pages/overview.js';
import * as sources from './pages/sources.js';
import * as events from './pages/events.js';
import * as deadLetters from './pages/dead_letters.js';
import * as subscriptions from './pages/subscriptions.js';
import * as keys from './pages/keys.js';
import * as signin from './pages/signin.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
let session = null;
let cleanup = null;

const pages = [
  { path: 'overview', label: 'Overview', module: overview },
  { path: 'sources', label: 'Sources', module: sources },
  { path: 'events', label: 'Events', module: events },
  { path: 'dead-letters', label: 'Dead letters', module: deadLetters },
  { path: 'subscriptions', label: 'Subscriptions', module: subscriptions },
  { path: 'api-keys', label: 'API keys', module: keys, scope: 'admin' },
];

export function has(scope) {
  return !!session && (session.scopes.includes('admin') || session.scopes.includes(scope));
}

// `#/events/abc?source=x` → { page: 'events', rest: ['abc'], query: URLSearchParams }
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, query] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  return { page: parts[0] || 'overview', rest: parts.slice(1), query: new URLSearchParams(query || '') };
}

export function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function renderNav(current) {
  clear(nav);
  if (!session) return;
  nav.appendChild(
    h(
      'ul',
      {},
      pages
        .filter((p) => !p.scope || has(p.scope))
        .map((p) =>
          h(
            'li',
            {},
            h('a', { href: `#/${p.path}`, 'aria-current': p.path === current ? 'page' : undefined }, p.label),
          ),
        ),
    ),
  );
  clear(who);
  who.appendChild(
    h(
      'span',
      { class: 'who' },
      h('span', { class: 'mono' }, session.key_id),
      ' · ',
      session.tenant ? `tenant ${session.tenant}` : 'all tenants',
      ' · ',
      session.scopes.join(', '),
    ),
  );
  who.appendChild(
    h(
      'button',
      {
        type: 'button',
        class: 'secondary',
        onclick: async () => {
          try {
            await api.post('/console/sign-out');
          } catch {
            // Signed out already (expired session): the cookie is cleared either way.
          }
          session = null;
          api.setCsrf(null);
          go('#/signin');
        },
      },
      'Sign out',
    ),
  );
}

async function route() {
  if (cleanup) {
    try {
      cleanup();
    } catch {
      // A page's cleanup failing must not keep the next page from rendering.
    }
    cleanup = null;
  }
  const r = parseHash();
  if (!session && r.page !== 'signin') {
    try {
      session = await api.get('/console/session');
      api.setCsrf(session.csrf_token);
    } catch {
      session = null;
    }
    if (!session) {
      const back = location.hash && !location.hash.startsWith('#/signin') ? location.hash : '';
      location.replace(`#/signin${back ? `?next=${encodeURIComponent(back)}` : ''}`);
      return;
    }
  }
  const page = r.page === 'signin' ? { path: 'signin', label: 'Sign in', module: signin } : pages.find((p) => p.path === r.page);
  renderNav(page && page.path);
  clear(main);
  document.body.classList.toggle('signed-out', !session);
  if (!page || (page.scope && !has(page.scope))) {
    main.appendChild(h('h1', { tabindex: '-1' }, 'Not found'));
    main.appendChild(h('p', {}, 'There is no such page. ', h('a', { href: '#/overview' }, 'Go to the overview.')));
    focusHeading(page ? page.label : 'Not found');
    return;
  }
  try {
    const ctx = {
      main,
      rest: r.rest,
      query: r.query,
      session,
      has,
      go,
      signedIn: async (s) => {
        session = s;
        api.setCsrf(s.csrf_token);
      },
    };
    const result = await page.module.render(ctx);
    if (typeof result === 'function') cleanup = result;
  } catch (e) {
    if (e && e.status === 401) return;
    main.appendChild(errorNotice(e));
  }
  focusHeading(page.label);
}

// After a navigation, focus goes to the page's heading, so keyboard and screen-reader users
// start at the new content instead of the top of the document.
function focusHeading(label) {
  const h1 = main.querySelector('h1');
  document.title = `${h1 ? h1.textContent : label} · hookline`;
  if (h1) {
    h1.setAttribute('tabindex', '-1');
    h1.focus({ preventScroll: false });
  }
}

api.setUnauthorizedHandler(() => {
  session = null;
  api.setCsrf(null);
  if (!location.hash.startsWith('#/signin')) go('#/signin');
});

// The skip link moves focus itself: following its `#main` would replace the route in the hash.
document.querySelector('.skip').addEventListener('click', (ev) => {
  ev.preventDefault();
  main.focus();
});

window.addEventListener('hashchange', route);
route();
