// netsource dashboard: folds the server's "view" events (a snapshot, then increments) into
// hosts, objects, a feed and convergence samples, and renders them. No framework, no
// third-party code; all text goes through textContent.
'use strict';

const FEED_MAX = 200;
const LATENCY_MAX = 500;
const DELETED_TTL_MS = 120000;
const PHASES = ['ERROR', 'DEGRADED', 'DOWN', 'BUILD', 'PENDING', 'ACTIVE', 'DELETED'];
const PHASE_RANK = Object.fromEntries(PHASES.map((p, i) => [p, i]));
const KIND_COLORS = { network: '#0969da', port: '#1a7f37', secgroup: '#b26b00', loadbalancer: '#8250df',
  tapservice: '#bf3989', tapflow: '#1b7c83', trunk: '#57606a' };
const OTHER_COLORS = ['#953800', '#6639ba', '#0550ae', '#116329'];

const state = {
  hosts: new Map(),   // host -> HostView
  objects: new Map(), // host/kind/id -> ObjectView
  feed: [],           // newest last
  latency: [],
  version: 0,
  skew: 0,            // browser clock minus server clock
  ready: false,
  notice: '',         // what the views lack (e.g. object names), from the server
  kindColor: new Map(),
};

const $ = (id) => document.getElementById(id);
const serverNow = () => Date.now() - state.skew;
const keyOf = (o) => o.host + '/' + o.kind + '/' + o.id;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v; else if (k.startsWith('data-')) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? '' : String(c)));
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text != null) e.textContent = text;
  return e;
}

function formatAge(ms) {
  if (!(ms >= 0)) return '0s';
  if (ms < 1000) return Math.round(ms) + 'ms';
  if (ms < 60000) return Math.floor(ms / 1000) + 's';
  if (ms < 3600000) return Math.floor(ms / 60000) + 'm';
  if (ms < 172800000) return Math.floor(ms / 3600000) + 'h';
  return Math.floor(ms / 86400000) + 'd';
}

function formatMs(ms) {
  if (ms == null) return '';
  if (ms < 1) return ms.toFixed(2) + ' ms';
  if (ms < 1000) return ms.toFixed(ms < 10 ? 1 : 0) + ' ms';
  return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
}

function colorOf(kind) {
  if (KIND_COLORS[kind]) return KIND_COLORS[kind];
  if (!state.kindColor.has(kind)) state.kindColor.set(kind, OTHER_COLORS[state.kindColor.size % OTHER_COLORS.length]);
  return state.kindColor.get(kind);
}

// hostState is computed here, continuously: a host is down once its last heartbeat is
// older than down_after_ms (3 report intervals), even if no event arrives any more.
function hostState(h) {
  const age = serverNow() - Date.parse(h.seen);
  if (age > h.down_after_ms) return 'down';
  return h.state === 'down' ? 'up' : h.state;
}

function objectVisible(o) {
  return o.phase !== 'DELETED' || serverNow() - Date.parse(o.seen) < DELETED_TTL_MS;
}

// ---- stream ----

function apply(v) {
  state.skew = Date.now() - Date.parse(v.now);
  if (v.full) {
    state.hosts.clear();
    state.objects.clear();
    state.feed = [];
    state.latency = [];
  } else if (v.v <= state.version) {
    return; // already in the snapshot
  }
  state.version = v.v;
  state.ready = v.ready;
  state.notice = v.notice || '';
  for (const h of v.hosts || []) state.hosts.set(h.host, h);
  for (const o of v.objects || []) state.objects.set(keyOf(o), o);
  if (v.feed) state.feed = state.feed.concat(v.feed).slice(-FEED_MAX);
  if (v.latency) state.latency = state.latency.concat(v.latency).slice(-LATENCY_MAX);
  scheduleRender();
}

function connect() {
  const es = new EventSource('/api/events');
  es.addEventListener('view', (e) => apply(JSON.parse(e.data)));
  es.onopen = () => setConn('live', 'live');
  es.onerror = () => setConn('reconnecting', 'reconnecting…');
}

function setConn(s, text) {
  const c = $('conn');
  c.dataset.state = s;
  c.textContent = text;
}

// ---- rendering ----

let renderPending = false;
function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => { renderPending = false; render(); });
}

function matches(o, q) {
  if (!q) return true;
  return [o.host, o.kind, o.id, o.name, o.phase, o.reason].some((f) => f && f.toLowerCase().includes(q));
}

function sortedObjects() {
  const q = $('filter').value.trim().toLowerCase();
  const list = [...state.objects.values()].filter((o) => objectVisible(o) && matches(o, q));
  list.sort((a, b) => (PHASE_RANK[a.phase] ?? 9) - (PHASE_RANK[b.phase] ?? 9) || a.host.localeCompare(b.host) ||
    a.kind.localeCompare(b.kind) || (a.name || '').localeCompare(b.name || '') || a.id.localeCompare(b.id));
  return list;
}

function render() {
  const objects = sortedObjects();
  const hosts = [...state.hosts.values()].sort((a, b) => a.host.localeCompare(b.host));
  renderSummary(hosts);
  renderErrors(objects.filter((o) => o.phase === 'ERROR'));
  renderHosts(hosts, kindCounts());
  renderObjects(objects);
  renderFeed();
  renderChart();
}

function renderSummary(hosts) {
  const down = hosts.filter((h) => hostState(h) === 'down').length;
  const byPhase = {};
  let n = 0;
  for (const o of state.objects.values()) {
    if (!objectVisible(o)) continue;
    n++;
    byPhase[o.phase] = (byPhase[o.phase] || 0) + 1;
  }
  const parts = [hosts.length + ' hosts' + (down ? ' (' + down + ' down)' : ''), n + ' objects'];
  for (const p of PHASES) if (byPhase[p]) parts.push(byPhase[p] + ' ' + p);
  if (!state.ready) parts.push('loading…');
  if (state.notice) parts.push(state.notice);
  $('summary').textContent = parts.join(' · ');
}

// keyed updates a tbody so that it holds one row per item, in order, reusing rows by key.
function keyed(tbody, items, key, build, update) {
  const old = new Map();
  for (const tr of tbody.children) old.set(tr.dataset.key, tr);
  let prev = null;
  for (const it of items) {
    const k = key(it);
    let tr = old.get(k);
    if (tr) old.delete(k); else { tr = build(it); tr.dataset.key = k; }
    update(tr, it);
    const next = prev ? prev.nextSibling : tbody.firstChild;
    if (next !== tr) tbody.insertBefore(tr, next);
    prev = tr;
  }
  for (const tr of old.values()) tr.remove();
}

function setText(node, text) {
  const t = text == null ? '' : String(text);
  if (node.textContent !== t) node.textContent = t;
}

function setAttr(node, name, value) {
  if (node.getAttribute(name) !== value) node.setAttribute(name, value);
}

function renderErrors(errors) {
  setText($('error-count'), errors.length);
  $('no-errors').classList.toggle('hidden', errors.length > 0);
  $('errors').classList.toggle('hidden', errors.length === 0);
  keyed($('errors').tBodies[0], errors, keyOf,
    () => el('tr', {}, el('td'), el('td'), el('td'), el('td', { class: 'id' }), el('td', { class: 'reason' }), el('td')),
    (tr, o) => {
      for (const a of ['host', 'kind', 'id']) setAttr(tr, 'data-' + a, o[a]);
      const c = tr.cells;
      setText(c[0], o.host); setText(c[1], o.kind); setText(c[2], o.name || ''); setText(c[3], o.id);
      setText(c[4], o.reason); setText(c[5], formatAge(serverNow() - Date.parse(o.time)));
    });
}

function renderObjects(objects) {
  setText($('object-count'), objects.length);
  keyed($('objects').tBodies[0], objects, keyOf,
    () => el('tr', {}, el('td'), el('td'), el('td'), el('td', { class: 'id' }),
      el('td', {}, el('span', { class: 'phase' })), el('td', { class: 'reason' }), el('td'), el('td'), el('td')),
    (tr, o) => {
      for (const a of ['host', 'kind', 'id', 'phase']) setAttr(tr, 'data-' + a, o[a]);
      const h = state.hosts.get(o.host);
      setAttr(tr, 'data-host-state', h ? hostState(h) : 'unknown');
      const c = tr.cells;
      setText(c[0], o.host); setText(c[1], o.kind); setText(c[2], o.name || ''); setText(c[3], o.id);
      const badge = c[4].firstChild;
      setAttr(badge, 'data-phase', o.phase); setText(badge, o.phase);
      setText(c[5], o.reason); setText(c[6], formatAge(serverNow() - Date.parse(o.time)));
      setText(c[7], o.desired_seq); setText(c[8], formatMs(o.convergence_ms));
    });
}

// kindCounts counts the visible objects per host, kind and phase, in one pass.
function kindCounts() {
  const byHost = new Map();
  for (const o of state.objects.values()) {
    if (!objectVisible(o)) continue;
    if (!byHost.has(o.host)) byHost.set(o.host, new Map());
    const kinds = byHost.get(o.host);
    if (!kinds.has(o.kind)) kinds.set(o.kind, {});
    kinds.get(o.kind)[o.phase] = (kinds.get(o.kind)[o.phase] || 0) + 1;
  }
  return byHost;
}

function renderHosts(hosts, counts) {
  setText($('host-count'), hosts.length);
  $('no-hosts').classList.toggle('hidden', hosts.length > 0);
  const box = $('hosts');
  const cards = new Map([...box.children].map((c) => [c.dataset.host, c]));
  const seen = new Set();
  for (const h of hosts) {
    seen.add(h.host);
    let card = cards.get(h.host);
    if (!card) {
      card = el('div', { class: 'host', 'data-host': h.host },
        el('h3', {}, el('span', { class: 'name' }), el('span', { class: 'state' })),
        el('div', { class: 'meta' }), el('div', { class: 'kinds' }));
      box.append(card);
    }
    const st = hostState(h);
    setAttr(card, 'data-state', st);
    setText(card.querySelector('.name'), h.host);
    const badge = card.querySelector('.state');
    setAttr(badge, 'data-state', st); setText(badge, st);
    const age = serverNow() - Date.parse(h.seen);
    setText(card.querySelector('.meta'),
      'heartbeat ' + formatAge(age) + ' ago · every ' + formatAge(h.report_interval_ms) + ' (down after ' +
      formatAge(h.down_after_ms) + ') · applied seq ' + h.applied_seq + ' · lag ' + h.lag +
      (h.tunnel_ip ? ' · tunnel ' + h.tunnel_ip : '') + (h.version ? ' · ' + h.version : ''));
    renderKinds(card.querySelector('.kinds'), counts.get(h.host) || new Map());
  }
  for (const [name, card] of cards) if (!seen.has(name)) card.remove();
  [...box.children].sort((a, b) => a.dataset.host.localeCompare(b.dataset.host)).forEach((c) => box.append(c));
}

// renderKinds draws a host's objects as a kind x phase table of counts.
function renderKinds(box, counts) {
  const phases = new Set();
  for (const byPhase of counts.values()) for (const p of Object.keys(byPhase)) phases.add(p);
  const cols = PHASES.filter((p) => phases.has(p));
  const sig = JSON.stringify([cols, [...counts.entries()].sort()]);
  if (box.dataset.sig === sig) return;
  box.dataset.sig = sig;
  box.replaceChildren();
  if (counts.size === 0) { box.append(el('div', { class: 'empty' }, 'no objects reported')); return; }
  const head = el('tr', {}, el('th', {}, 'kind'), ...cols.map((p) => el('th', { class: 'n' }, p)));
  const rows = [...counts.keys()].sort().map((k) => el('tr', { 'data-kind': k }, el('td', {}, k),
    ...cols.map((p) => el('td', { class: 'n', 'data-phase': p }, counts.get(k)[p] || ''))));
  box.append(el('table', {}, el('thead', {}, head), el('tbody', {}, ...rows)));
}

// nameOf prefers the object's current name: a feed entry may predate the name's arrival.
function nameOf(o) {
  const cur = state.objects.get(keyOf(o));
  return (cur && cur.name) || o.name || o.id.slice(0, 8);
}

function renderFeed() {
  const list = $('feed');
  const items = state.feed.slice().reverse();
  const sig = String(state.version); // names may arrive after the events
  if (list.dataset.sig === sig) return;
  list.dataset.sig = sig;
  list.replaceChildren(...items.map((o) => el('li', { 'data-phase': o.phase },
    el('span', { class: 't' }, new Date(o.time).toLocaleTimeString([], { hour12: false }) + '.' + String(new Date(o.time).getMilliseconds()).padStart(3, '0')),
    el('span', {}, o.host),
    el('span', {}, el('span', { class: 'phase', 'data-phase': o.phase }, o.phase)),
    el('span', { class: 'what', title: o.reason || '' }, o.kind + ' ' + nameOf(o) + (o.reason ? ' — ' + o.reason : '')))));
}

function quantile(sorted, q) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

// renderChart plots every convergence sample (x: when, y: how long, log scale), one colour
// per kind; samples that ended in ERROR have a red ring.
function renderChart() {
  const chart = $('chart');
  const samples = state.latency;
  const sig = samples.length ? samples.length + ':' + samples[samples.length - 1].at : 'empty';
  if (chart.dataset.sig === sig) return;
  chart.dataset.sig = sig;
  chart.replaceChildren();
  const W = 640, H = 220, L = 52, R = 12, T = 10, B = 28;
  if (!samples.length) {
    chart.append(svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'no converged objects yet'));
    $('legend').replaceChildren();
    return;
  }
  const times = samples.map((s) => Date.parse(s.at));
  let t0 = Math.min(...times), t1 = Math.max(...times);
  if (t1 - t0 < 1000) { t0 -= 500; t1 += 500; }
  const vals = samples.map((s) => Math.max(s.ms, 0.01));
  const lo = Math.floor(Math.log10(Math.min(...vals)));
  const hi = Math.max(lo + 1, Math.ceil(Math.log10(Math.max(...vals))));
  const x = (t) => L + (t - t0) / (t1 - t0) * (W - L - R);
  const y = (ms) => T + (hi - Math.log10(Math.max(ms, 0.01))) / (hi - lo) * (H - T - B);
  for (let d = lo; d <= hi; d++) {
    const yy = y(Math.pow(10, d));
    chart.append(svg('line', { class: 'grid', x1: L, x2: W - R, y1: yy, y2: yy }));
    chart.append(svg('text', { x: L - 6, y: yy + 3, 'text-anchor': 'end' }, formatMs(Math.pow(10, d))));
  }
  chart.append(svg('line', { class: 'axis', x1: L, x2: L, y1: T, y2: H - B }));
  chart.append(svg('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }));
  for (const [t, anchor] of [[t0, 'start'], [(t0 + t1) / 2, 'middle'], [t1, 'end']]) {
    chart.append(svg('text', { x: x(t), y: H - B + 16, 'text-anchor': anchor }, new Date(t).toLocaleTimeString([], { hour12: false })));
  }
  const byKind = new Map();
  samples.forEach((s, i) => {
    if (!byKind.has(s.kind)) byKind.set(s.kind, []);
    byKind.get(s.kind).push(s.ms);
    const c = svg('circle', { cx: x(times[i]).toFixed(1), cy: y(vals[i]).toFixed(1), r: 3.5, fill: colorOf(s.kind),
      'data-kind': s.kind, class: s.phase === 'ERROR' ? 'err' : '' });
    c.append(svg('title', {}, s.kind + ' ' + s.id + ' on ' + s.host + ': ' + formatMs(s.ms) + ' to ' + s.phase));
    chart.append(c);
  });
  $('legend').replaceChildren(...[...byKind.keys()].sort().map((k) => {
    const v = byKind.get(k).slice().sort((a, b) => a - b);
    const sw = el('span', { class: 'sw' });
    sw.style.background = colorOf(k);
    return el('span', { 'data-kind': k }, sw, k + ': ' + v.length + ' · p50 ' + formatMs(quantile(v, 0.5)) + ' · p95 ' + formatMs(quantile(v, 0.95)));
  }));
}

document.addEventListener('DOMContentLoaded', () => {
  $('filter').addEventListener('input', scheduleRender);
  connect();
  setInterval(scheduleRender, 250); // ages and host liveness move on without events
});
