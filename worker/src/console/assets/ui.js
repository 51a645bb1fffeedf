// DOM helpers. Everything the API returns is inserted as text (never as HTML), so a payload or
// an error message cannot inject markup into the console.

export function h(tag, attrs, ...children) {
  const svg = tag.startsWith('svg:');
  const el = svg
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.setAttribute('class', v);
    else if (k in el && !svg && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

let ids = 0;
export const uid = (p) => `${p}-${++ids}`;

// A labelled control: <div class=field><label for=…>…</label><control id=…></div>.
export function field(label, control, hint) {
  if (!control.id) control.id = uid('f');
  const hintEl = hint ? h('p', { class: 'hint', id: `${control.id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: 'field' }, h('label', { for: control.id }, label), control, hintEl);
}

export function input(name, attrs = {}) {
  return h('input', { name, type: 'text', ...attrs });
}

export function select(name, options, value) {
  return h(
    'select',
    { name },
    options.map(([v, label]) => h('option', { value: v, selected: v === value ? true : undefined }, label)),
  );
}

export function button(label, onclick, attrs = {}) {
  return h('button', { type: 'button', onclick, ...attrs }, label);
}

export function badge(state) {
  return h('span', { class: `badge badge-${state}` }, state.replace('_', ' '));
}

export function notice(kind, ...content) {
  return h('div', { class: `notice notice-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, ...content);
}

export function errorNotice(e) {
  const code = e && e.code ? ` (${e.code})` : '';
  return notice('error', `${(e && e.message) || e}${code}`);
}

export function table(caption, headers, rows, empty = 'Nothing here.') {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      {},
      h('caption', { class: 'visually-hidden' }, caption),
      h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows),
    ),
  );
}

export function dl(pairs) {
  return h(
    'dl',
    { class: 'fields' },
    pairs.filter(([, v]) => v !== undefined).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '—')]),
  );
}

export function time(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return h('time', { datetime: iso, title: iso }, d.toLocaleString(undefined, { hour12: false }));
}

export function ago(iso) {
  if (!iso) return '—';
  const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  const text = s < 60 ? `${s}s ago` : s < 3600 ? `${Math.round(s / 60)}m ago` : s < 86400 ? `${Math.round(s / 3600)}h ago` : `${Math.round(s / 86400)}d ago`;
  return h('time', { datetime: iso, title: iso }, text);
}

export const pct = (x) => (x === null || x === undefined ? '—' : `${(x * 100).toFixed(x >= 0.999 || x === 0 ? 0 : 1)}%`);
export const ms = (x) => (x === null || x === undefined ? '—' : `${x < 10 ? x.toFixed(1) : Math.round(x)} ms`);
export const num = (x) => (x === null || x === undefined ? '—' : Number(x).toLocaleString());

// Text that can be copied: a read-only input (selectable, labelled) and a copy button.
export function secretBox(label, value) {
  const box = h('input', { type: 'text', readonly: true, value, class: 'mono secret', spellcheck: 'false' });
  const status = h('span', { class: 'hint', role: 'status' });
  return h(
    'div',
    { class: 'secret-box' },
    field(label, box),
    button('Copy', async () => {
      box.select();
      try {
        await navigator.clipboard.writeText(value);
        status.textContent = 'Copied.';
      } catch {
        status.textContent = 'Select the text and copy it.';
      }
    }),
    status,
  );
}

// A JSON value as nested, collapsible <details>: objects and arrays fold, scalars are text.
export function jsonTree(value, label = 'payload', depth = 0) {
  if (value === null || typeof value !== 'object') {
    return h('span', { class: `json-${value === null ? 'null' : typeof value}` }, JSON.stringify(value));
  }
  const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
  const summary = Array.isArray(value) ? `[${entries.length}]` : `{${entries.length}}`;
  return h(
    'details',
    { class: 'json', open: depth < 2 ? true : undefined },
    h('summary', {}, h('span', { class: 'json-key' }, String(label)), ' ', h('span', { class: 'hint' }, summary)),
    h(
      'ul',
      {},
      entries.map(([k, v]) =>
        v !== null && typeof v === 'object'
          ? h('li', {}, jsonTree(v, k, depth + 1))
          : h('li', {}, h('span', { class: 'json-key' }, String(k)), ': ', jsonTree(v, k, depth + 1)),
      ),
    ),
  );
}

// A small inline SVG chart: one dot per value along time, y from 0 to the max, a line at each
// `marks` value (e.g. p50 and p99), described by `title` for screen readers.
export function scatter(points, { title, width = 220, height = 44, marks = [] }) {
  const svg = h('svg:svg', { viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', class: 'chart' });
  svg.appendChild(h('svg:title', {}, title));
  if (!points.length) return svg;
  const xs = points.map((p) => p.x);
  const x0 = Math.min(...xs);
  const x1 = Math.max(...xs);
  const ymax = Math.max(1, ...points.map((p) => p.y), ...marks.map((m) => m.y));
  const X = (x) => (x1 === x0 ? width / 2 : 3 + ((x - x0) / (x1 - x0)) * (width - 6));
  const Y = (y) => height - 3 - (y / ymax) * (height - 6);
  svg.appendChild(h('svg:line', { x1: 0, x2: width, y1: height - 1, y2: height - 1, class: 'axis' }));
  for (const m of marks) {
    svg.appendChild(h('svg:line', { x1: 0, x2: width, y1: Y(m.y), y2: Y(m.y), class: `mark mark-${m.name}` }));
  }
  for (const p of points) {
    svg.appendChild(h('svg:circle', { cx: X(p.x), cy: Y(p.y), r: 2.2, class: `dot dot-${p.kind}` }));
  }
  return svg;
}

// Proportions as one stacked bar (accepted → stored / dead), with a text title.
export function stackedBar(parts, { title, width = 160, height = 12 }) {
  const total = parts.reduce((s, p) => s + p.value, 0);
  const svg = h('svg:svg', { viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', class: 'chart' });
  svg.appendChild(h('svg:title', {}, title));
  svg.appendChild(h('svg:rect', { x: 0, y: 0, width, height, class: 'bar-bg' }));
  let x = 0;
  for (const p of parts) {
    if (!total || !p.value) continue;
    const w = (p.value / total) * width;
    svg.appendChild(h('svg:rect', { x, y: 0, width: w, height, class: `bar bar-${p.name}` }));
    x += w;
  }
  return svg;
}

// Requests over time as stacked columns, one per bucket from `from` to `to` (ms) every `step`
// ms: accepted, duplicate, rejected. Buckets the API left out (no request) are drawn empty.
export function rateColumns(buckets, { title, from, to, step, width = 220, height = 44 }) {
  const svg = h('svg:svg', { viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', class: 'chart' });
  svg.appendChild(h('svg:title', {}, title));
  svg.appendChild(h('svg:line', { x1: 0, x2: width, y1: height - 1, y2: height - 1, class: 'axis' }));
  const start = Math.floor(from / step) * step;
  const n = Math.max(1, Math.ceil((to - start) / step));
  const byAt = new Map(buckets.map((b) => [Math.floor(new Date(b.at).getTime() / step) * step, b]));
  const total = (b) => b.accepted + b.duplicate + b.rejected;
  const ymax = Math.max(1, ...buckets.map(total));
  const w = width / n;
  for (let i = 0; i < n; i++) {
    const b = byAt.get(start + i * step);
    if (!b) continue;
    let y = height - 1;
    for (const [name, value] of [['ok', b.accepted], ['dup', b.duplicate], ['dead', b.rejected]]) {
      if (!value) continue;
      const bh = (value / ymax) * (height - 4);
      y -= bh;
      svg.appendChild(h('svg:rect', { x: i * w + 0.5, y, width: Math.max(1, w - 1), height: bh, class: `bar bar-${name}` }));
    }
  }
  return svg;
}
