// ringlb dashboard: polls GET /api/cluster on this admin port and renders
// it. No framework and no build step; every value from the API is put into
// the page as text (never as HTML), since node names and reasons come from
// other nodes.
'use strict';

const TOKEN_KEY = 'ringlb.adminToken';
const REQUEST_TIMEOUT_MS = 8000;
const RATE_WINDOW_MS = 1500;
const PALETTE = ['#2f6fed', '#1f9d55', '#d98a00', '#8e44ad', '#d64545', '#00a3a3', '#c2185b', '#5d6d7e', '#7cb342', '#f4511e'];
const MODES = ['always', 'obey', 'remove', 'no'];

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  prev: null,      // the answer rates are measured against: see rateBase
  history: [],     // recent /api/cluster answers with their times
  timer: null,
  interval: 2000,
  inFlight: false,
  colors: new Map(), // edge name → colour, stable for the page's life
};

// el builds an element: el('td', {class: 'num'}, 'text', child, ...).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

function $(id) { return document.getElementById(id); }

function colorOf(name) {
  if (!state.colors.has(name)) state.colors.set(name, PALETTE[state.colors.size % PALETTE.length]);
  return state.colors.get(name);
}

function fmtInt(n) { return n === undefined || n === null ? '–' : Math.round(n).toLocaleString('en-US'); }
function fmtRate(n) {
  if (n === undefined || n === null || !isFinite(n)) return '–';
  return n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(1);
}
function fmtPct(f) { return f === undefined || f === null ? '–' : (100 * f).toFixed(1) + ' %'; }
function fmtSeconds(s) {
  if (s === undefined || s === null || !isFinite(s)) return '–';
  if (s < 0.001) return (s * 1e6).toFixed(0) + ' µs';
  if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 2 : 1) + ' ms';
  return s.toFixed(2) + ' s';
}
function fmtTime(iso) {
  const d = new Date(iso);
  return isNaN(d) ? '' : d.toLocaleTimeString('en-GB', {hour12: false});
}

function pill(text, kind) { return el('span', {class: 'pill ' + (kind || '')}, text); }

function statePill(s) {
  const kind = {alive: 'ok', static: 'info', draining: 'warn'}[s] || 'bad';
  return pill(s, kind);
}

// api calls this admin port with the token, bounded by REQUEST_TIMEOUT_MS.
// X-Ringlb-Admin marks its changes as the dashboard's own: the admin port
// refuses a POST without it (or the token), so no other web site can drain
// an edge through an operator's browser.
async function api(method, path) {
  const headers = {Accept: 'application/json', 'X-Ringlb-Admin': '1'};
  if (state.token) headers.Authorization = 'Bearer ' + state.token;
  const ctl = new AbortController();
  const timeout = setTimeout(() => ctl.abort(), REQUEST_TIMEOUT_MS);
  try {
    const resp = await fetch(path, {method, headers, signal: ctl.signal, cache: 'no-store'});
    let body = null;
    try { body = await resp.json(); } catch (_) { /* not JSON */ }
    if (resp.status === 401) {
      if (body && body.login && !state.token) {
        // This port has users: log in (the page comes back here).
        window.location.assign(body.login + '?next=' + encodeURIComponent(location.pathname));
      } else {
        showTokenForm(state.token ? 'The admin token was refused; enter the right one.' : null);
      }
    }
    return {status: resp.status, ok: resp.ok, body};
  } finally {
    clearTimeout(timeout);
  }
}

function setStatus(text, kind) {
  const s = $('status');
  s.textContent = text;
  s.className = 'pill ' + kind;
}

function showError(msg) {
  const e = $('error');
  e.textContent = msg || '';
  e.hidden = !msg;
}

async function refresh() {
  if (state.inFlight) return;
  state.inFlight = true;
  try {
    const r = await api('GET', '/api/cluster');
    if (!r.ok) {
      setStatus(r.status === 401 ? 'token needed' : 'error ' + r.status, 'bad');
      showError(r.body && r.body.error ? r.body.error : 'GET /api/cluster answered ' + r.status);
      return;
    }
    showError('');
    const now = {data: r.body, at: Date.parse(r.body.at) || Date.now()};
    state.prev = rateBase(now.at);
    render(r.body);
    setStatus('live · ' + fmtTime(r.body.at), 'ok');
    state.history.push(now);
  } catch (err) {
    setStatus('unreachable', 'bad');
    showError('cannot reach this balancer\'s admin API: ' + err.message);
  } finally {
    state.inFlight = false;
  }
}

function schedule() {
  clearInterval(state.timer);
  state.timer = null;
  if (state.interval > 0) state.timer = setInterval(refresh, state.interval);
}

// rateBase picks the earlier answer to measure rates against: the newest one
// at least RATE_WINDOW_MS old, so that a refresh right after another (a
// button's) does not show the noise of a few milliseconds.
function rateBase(at) {
  state.history = state.history.filter((h) => at - h.at < 60000);
  let base = state.history.length ? state.history[0] : null;
  for (const h of state.history) if (at - h.at >= RATE_WINDOW_MS) base = h;
  return base;
}

// rate is (now − before) per second between two refreshes, or undefined.
function rate(now, before, dt) {
  if (before === undefined || now === undefined || !(dt > 0) || now < before) return undefined;
  return (now - before) / dt;
}

function render(data) {
  const dt = state.prev ? ((Date.parse(data.at) || Date.now()) - state.prev.at) / 1000 : 0;
  const prevNodes = new Map(state.prev ? state.prev.data.nodes.map((n) => [n.name, n]) : []);
  $('node').textContent = data.node;
  $('ring-version').textContent = data.ring.version;
  for (const m of data.ring.members) colorOf(m.name);

  // Per-edge rates and recent lag from the difference with the last refresh.
  let sessions = 0, conns = 0, users = 0, msgRate = 0, lagSum = 0, lagCount = 0, haveStats = false;
  for (const n of data.nodes) {
    const st = n.stats;
    if (!st || st.error) continue;
    haveStats = true;
    sessions += st.sessions; conns += st.connections; users += st.users;
    const p = prevNodes.get(n.name);
    const ps = p && p.stats && !p.stats.error ? p.stats : null;
    n.msgRate = ps ? rate(st.messages_total, ps.messages_total, dt) : undefined;
    if (n.msgRate !== undefined) msgRate += n.msgRate;
    if (ps && st.lag_count > ps.lag_count) {
      n.recentLag = (st.lag_sum_seconds - ps.lag_sum_seconds) / (st.lag_count - ps.lag_count);
      lagSum += st.lag_sum_seconds - ps.lag_sum_seconds;
      lagCount += st.lag_count - ps.lag_count;
    }
  }
  $('c-edges').textContent = data.ring.members.length;
  $('c-sessions').textContent = haveStats ? fmtInt(sessions) : '–';
  $('c-connections').textContent = haveStats ? fmtInt(conns) : '–';
  // The cluster's own count (users.go): a user on two edges is one user,
  // where adding the edges' figures would count two.
  $('c-users').textContent = data.users && data.users.edges > 0 ? fmtInt(data.users.online) : haveStats ? fmtInt(users) : '–';
  $('c-msgs').textContent = state.prev && haveStats ? fmtRate(msgRate) : '–';
  $('c-lag').textContent = lagCount > 0 ? fmtSeconds(lagSum / lagCount) : 'idle';
  $('c-tunnels').textContent = fmtInt(data.balancer.connections_active);
  $('c-table').textContent = fmtInt(data.balancer.session_table_entries);
  const prevBal = state.prev ? state.prev.data.balancer : null;
  $('c-reqs').textContent = prevBal ? fmtRate(rate(data.balancer.requests_total, prevBal.requests_total, dt)) : '–';
  let dns = 0, prevDNS = 0, haveDNS = false;
  const prevGSLB = new Map(state.prev ? state.prev.data.gslb.map((g) => [g.node, g]) : []);
  for (const g of data.gslb) {
    const p = prevGSLB.get(g.node);
    if (!g.error && p && !p.error) { dns += g.queries_total; prevDNS += p.queries_total; haveDNS = true; }
  }
  $('c-dns').textContent = haveDNS ? fmtRate(rate(dns, prevDNS, dt)) : (data.gslb.length ? '–' : 'no gslb');

  renderRing(data.ring);
  renderRecent(data.recent);
  renderNodes(data);
  renderGSLB(data.gslb);
}

function renderRing(ring) {
  const chart = $('ring-chart');
  chart.replaceChildren();
  const r = 46, c = 2 * Math.PI * r;
  chart.append(svg('circle', {cx: 60, cy: 60, r, fill: 'none', stroke: '#e3e7ee', 'stroke-width': 18}));
  let offset = 0;
  for (const m of ring.members) {
    const len = m.share * c;
    chart.append(svg('circle', {
      cx: 60, cy: 60, r, fill: 'none', stroke: colorOf(m.name), 'stroke-width': 18,
      'stroke-dasharray': `${Math.max(len - 1, 0)} ${c}`, 'stroke-dashoffset': -offset, transform: 'rotate(-90 60 60)',
    }));
    offset += len;
  }
  const label = svg('text', {x: 60, y: 57, 'text-anchor': 'middle', 'font-size': 16, 'font-weight': 650, fill: '#1c2330'});
  label.textContent = ring.members.length;
  const sub = svg('text', {x: 60, y: 73, 'text-anchor': 'middle', 'font-size': 9, fill: '#6b7588'});
  sub.textContent = ring.members.length === 1 ? 'edge' : 'edges';
  chart.append(label, sub);

  const body = $('ring-table').tBodies[0];
  body.replaceChildren(...ring.members.map((m) => el('tr', {dataset: {edge: m.name}},
    el('td', {}, el('span', {class: 'swatch'}), m.name),
    el('td', {class: 'num'}, fmtPct(m.share)),
    el('td', {class: 'num'}, m.weight),
    el('td', {class: 'muted'}, m.url))));
  // Colour swatches through the CSSOM (allowed by the page's CSP, unlike
  // inline style attributes).
  body.querySelectorAll('tr').forEach((tr, i) => { tr.querySelector('.swatch').style.background = colorOf(ring.members[i].name); });
  if (!ring.members.length) body.append(el('tr', {}, el('td', {colspan: 4, class: 'muted'}, 'no edge on the ring: every request gets 503')));
}

function renderRecent(recent) {
  const list = $('recent');
  const items = recent.slice(-30).reverse().map((e) => el('li', {},
    el('time', {datetime: e.at}, fmtTime(e.at)),
    pill(e.kind, {join: 'ok', leave: 'bad', update: 'info'}[e.kind]),
    el('strong', {}, e.node),
    el('span', {class: 'muted'}, e.role + (e.state ? ' · ' + e.state : ''))));
  list.replaceChildren(...items);
  if (!items.length) list.append(el('li', {class: 'muted'}, 'no change since this balancer started (or no gossip)'));
}

function renderNodes(data) {
  const body = $('nodes').tBodies[0];
  const rows = data.nodes.map((n) => {
    const st = n.stats;
    const edge = n.role === 'edge';
    const cell = (v) => el('td', {class: 'num'}, st && !st.error ? v : '–');
    let statsCells;
    if (st && st.error) {
      statsCells = [el('td', {colspan: 5, class: 'why'}, 'metrics unavailable: ' + st.error)];
    } else {
      statsCells = [
        cell(fmtInt(st && st.sessions)),
        cell(fmtInt(st && st.connections)),
        cell(fmtInt(st && st.users)),
        cell(fmtRate(n.msgRate)),
        cell((n.recentLag !== undefined ? fmtSeconds(n.recentLag) : 'idle') + ' / ' + fmtSeconds(st && st.lag_p99_seconds)),
      ];
    }
    const tunnels = edge ? data.balancer.connections_per_edge[n.name] || 0 : undefined;
    const name = el('td', {}, edge && n.on_ring ? el('span', {class: 'swatch'}) : null, el('strong', {}, n.name),
      n.name === data.node ? el('span', {class: 'muted'}, ' (this balancer)') : null);
    const sw = name.querySelector('.swatch');
    if (sw) sw.style.background = colorOf(n.name);
    return el('tr', {dataset: {node: n.name, role: n.role}},
      name,
      el('td', {}, n.role),
      el('td', {}, n.region || '–'),
      el('td', {}, statePill(n.state), edge && !n.on_ring && n.state !== 'draining' ? el('span', {class: 'muted'}, ' off ring') : null),
      el('td', {class: 'num'}, edge ? (n.on_ring ? fmtPct(n.share) : '–') : ''),
      ...(edge ? statsCells : [el('td', {colspan: 5})]),
      el('td', {class: 'num'}, edge ? fmtInt(tunnels) : ''),
      el('td', {}, edge && n.state === 'alive' && n.admin ? drainButton(n.name) : null));
  });
  body.replaceChildren(...rows);
}

// drainButton asks twice (arm, then confirm within 4 s) rather than with a
// modal dialog, which would stop the page's refreshes.
function drainButton(name) {
  const b = el('button', {type: 'button', class: 'danger', dataset: {drain: name}}, 'drain');
  let disarm = null;
  b.addEventListener('click', async () => {
    if (!b.classList.contains('armed')) {
      b.classList.add('armed');
      b.textContent = 'confirm drain';
      disarm = setTimeout(() => { b.classList.remove('armed'); b.textContent = 'drain'; }, 4000);
      return;
    }
    clearTimeout(disarm);
    b.disabled = true;
    b.textContent = 'draining…';
    const r = await api('POST', '/api/nodes/' + encodeURIComponent(name) + '/drain');
    if (!r.ok) showError('drain ' + name + ': ' + (r.body && r.body.error ? r.body.error : 'answered ' + r.status));
    refresh();
  });
  return b;
}

function renderGSLB(nodes) {
  const box = $('gslb');
  if (!nodes.length) {
    box.replaceChildren(el('p', {class: 'muted'}, 'No gslb node in this balancer\'s gossip cluster. ' +
      'A gslb node that joins the cluster (cluster.join) shows up here with its pools.'));
    return;
  }
  box.replaceChildren(...nodes.map((g) => {
    const head = el('h3', {}, g.node, ' ', el('span', {class: 'muted small'}, (g.region ? g.region + ' · ' : '') + g.admin));
    if (g.error) return el('div', {class: 'gslb-node', dataset: {gslb: g.node}}, head, el('p', {class: 'banner'}, g.error));
    const names = (g.names || []).map((n) => el('div', {class: 'gslb-name'},
      el('h4', {}, n.name, n.auto_recover === false ? el('span', {class: 'muted small'}, ' (failover latches: auto_recover off)') : null),
      el('div', {class: 'scroll'}, el('table', {},
        el('thead', {}, el('tr', {},
          el('th', {}, 'region / member'), el('th', {}, 'address'), el('th', {}, 'monitor'), el('th', {}, 'serve mode'),
          el('th', {}, 'serving'), el('th', {}, 'set mode'))),
        el('tbody', {}, ...(n.regions || []).flatMap((r) => regionRows(n.name, r)))))));
    return el('div', {class: 'gslb-node', dataset: {gslb: g.node}}, head, ...names);
  }));
}

function regionRows(name, r) {
  let failover;
  if (r.servfail) failover = pill('SERVFAIL: nothing to answer', 'bad');
  else if (r.failover_to) failover = pill('failed over → ' + r.failover_to, 'warn');
  else if (r.failed_over) failover = pill('failover latched', 'warn');
  else failover = pill('serving its own members', 'ok');
  const head = el('tr', {class: 'region-row', dataset: {region: r.region}},
    el('td', {}, r.region), el('td', {colspan: 3}, 'answers ', (r.answers || []).join(', ') || '–', el('span', {class: 'muted'}, ' · TTL ' + r.ttl)),
    el('td', {colspan: 2}, failover));
  // Load-aware steering: the edges' load and, while loaded, where a share of the clients go.
  const st = r.steer, l = r.load;
  const steerRow = (st || l) ? el('tr', {class: 'steer-row', dataset: {steer: r.region}},
    el('td', {}, ''),
    el('td', {colspan: 3, class: 'muted'}, l ? 'edge load: ' + Math.round(l.sessions_per_edge) + ' sessions/edge · ' +
      Math.round(l.cpu_percent) + '% CPU · ' + l.edges + ' edges' : 'no edge load announced'),
    el('td', {colspan: 2}, st && st.active ? pill('steering ' + Math.round(st.share * 100) + '% → ' + st.to, 'warn') :
      st ? el('span', {class: 'muted'}, st.why || 'not steering') : '')) : null;
  const members = (r.members || []).map((m) => {
    const monitor = m.monitor ? pill(m.monitor + (m.up ? ' up' : ' down'), m.up ? 'ok' : 'bad') : el('span', {class: 'muted'}, 'not monitored');
    const mode = el('span', {}, m.override || m.serve_mode || 'obey', m.override ? el('span', {class: 'muted'}, ' (override; config ' + (m.serve_mode || 'obey') + ')') : null);
    return el('tr', {dataset: {member: m.member}},
      el('td', {}, '\u00a0\u00a0' + m.member),
      el('td', {}, m.address),
      el('td', {}, monitor),
      el('td', {}, mode),
      el('td', {}, m.serving ? pill('yes', 'ok') : pill('no', 'bad'), m.why ? el('div', {class: 'why'}, m.why) : null),
      el('td', {}, modeSelect(name, r.region, m)));
  });
  return [head, ...(steerRow ? [steerRow] : []), ...members];
}

function modeSelect(name, region, m) {
  const current = m.override || '';
  const s = el('select', {'aria-label': 'serve mode of ' + m.member, dataset: {mode: m.member}},
    el('option', {value: '', selected: current === ''}, 'config (' + (m.serve_mode || 'obey') + ')'),
    ...MODES.map((mode) => el('option', {value: mode, selected: current === mode}, mode)));
  s.addEventListener('change', async () => {
    s.disabled = true;
    const path = '/api/gslb/pools/' + [name, region, m.member].map(encodeURIComponent).join('/') + '/mode?mode=' + encodeURIComponent(s.value);
    const r = await api('POST', path);
    if (!r.ok) {
      const why = r.body && r.body.results ? r.body.results.filter((x) => x.status >= 300).map((x) => x.node + ': ' + (x.error || JSON.stringify(x.answer))).join('; ') : '';
      showError('serve mode of ' + m.member + ': ' + (why || (r.body && r.body.error) || 'answered ' + r.status));
    }
    refresh();
  });
  return s;
}

function showTokenForm(why) {
  $('token-form').hidden = false;
  if (why) $('token-why').textContent = why;
  $('token-input').focus();
}

// --- history: charts of every node's figures (uPlot), events marked.

const HISTORY_REFRESH_MS = 5000;
const charts = new Map(); // figure id → {plot, key}

// CHARTS: which series of which role each chart draws. A series spec picks
// the key (or, with prefix, every key starting so: a per-pool series) of
// every node of the role; dashed draws it dashed.
const CHARTS = {
  'chart-sessions': [{role: 'edge', key: 'sessions'}],
  'chart-connections': [{role: 'edge', key: 'connections'}],
  'chart-users': [{role: 'edge', key: 'users'}],
  'chart-messages': [{role: 'edge', key: 'messages_per_second'}],
  'chart-lag': [{role: 'edge', key: 'lag_p50_seconds', dashed: true, label: 'p50'}, {role: 'edge', key: 'lag_p99_seconds', label: 'p99'}],
  'chart-balancers': [{role: 'balancer', key: 'tunnels'}, {role: 'balancer', key: 'backend_errors_per_second', dashed: true, label: 'errors/s'}],
  'chart-dns': [{role: 'gslb', key: 'queries_per_second'}, {role: 'gslb', key: 'answers_per_second', dashed: true, label: 'answers/s'}],
  'chart-pools': [{role: 'gslb', prefix: 'members_up{'}],
};

async function refreshHistory() {
  const minutes = Number($('history-minutes').value) || 15;
  let r;
  try {
    r = await api('GET', '/api/history?cluster=1&minutes=' + minutes);
  } catch (err) {
    return; // the main refresh reports an unreachable balancer
  }
  if (!r.ok) return;
  const errs = (r.body.errors || []).map((e) => e.node + ': ' + e.error);
  $('history-error').textContent = errs.length ? 'history not read from ' + errs.join('; ') : '';
  $('history-error').hidden = !errs.length;
  const nodes = r.body.nodes || [];
  const events = mergeEvents(nodes);
  for (const [id, specs] of Object.entries(CHARTS)) drawChart(id, specs, nodes, events);
  // The list is the balancer's (newest first, each node its share): the
  // newest 40 of all let one node's events, dated ahead, hide the others'.
  renderEvents((r.body.events || []).map((e) => ({at: Date.parse(e.at) / 1000, kind: e.kind, node: e.node, text: e.text})));
}

// mergeEvents gathers every node's events; the same change seen by two
// nodes (two balancers see one membership change) is kept once.
function mergeEvents(nodes) {
  const seen = new Set();
  const out = [];
  for (const n of nodes) {
    for (const e of n.events || []) {
      const at = Date.parse(e.at) / 1000;
      const key = e.kind + '|' + e.text + '|' + Math.round(at / 5);
      if (seen.has(key)) continue;
      seen.add(key);
      out.push({at, kind: e.kind, node: e.node, text: e.text});
    }
  }
  return out.sort((a, b) => a.at - b.at);
}

// chartTables are the columns a chart draws: one [times, values] table per
// node and series, with its label and style.
function chartTables(specs, nodes) {
  const tables = [];
  for (const spec of specs) {
    for (const n of nodes) {
      if (n.role !== spec.role || !n.series) continue;
      const keys = spec.prefix ? Object.keys(n.series).filter((k) => k.startsWith(spec.prefix)).sort() : [spec.key];
      for (const k of keys) {
        const col = n.series[k];
        if (!col) continue;
        let label = n.node;
        if (spec.prefix) label = k.slice(spec.prefix.length, -1).replace(',', ' ') + ' (' + n.node + ')';
        if (spec.label) label += ' ' + spec.label;
        tables.push({times: n.times, values: col, label, color: colorOf(n.node + (spec.prefix ? k : '')), dashed: !!spec.dashed});
      }
    }
  }
  return tables;
}

function drawChart(id, specs, nodes, events) {
  const fig = $(id);
  const tables = chartTables(specs, nodes);
  if (!fig.querySelector('figcaption')) fig.append(el('figcaption', {}, fig.dataset.title));
  let data = null;
  if (tables.length) {
    // uPlot.join aligns the nodes' own sample times on one x axis.
    data = uPlot.join(tables.map((t) => [t.times, t.values.map((v) => (v === null ? null : v))]));
  }
  // What the page shows of the data: its span and points (the browser test
  // reads these).
  let first = null, last = null, points = 0;
  if (data) {
    for (let i = 0; i < data[0].length; i++) {
      if (data.slice(1).some((col) => col[i] !== null && col[i] !== undefined)) {
        if (first === null) first = data[0][i];
        last = data[0][i];
        points++;
      }
    }
  }
  fig.dataset.series = tables.map((t) => t.label).join(',');
  fig.dataset.points = String(points);
  fig.dataset.span = first === null ? '0' : String(Math.round(last - first));
  const key = tables.map((t) => t.label).join('|');
  let c = charts.get(id);
  if (!data || points === 0) {
    if (c) { c.plot.destroy(); charts.delete(id); }
    if (!fig.querySelector('.empty')) fig.append(el('div', {class: 'empty'}, 'no data yet'));
    return;
  }
  fig.querySelector('.empty')?.remove();
  fig.events = events;
  if (c && c.key !== key) { c.plot.destroy(); charts.delete(id); c = null; }
  if (!c) {
    const opts = {
      width: Math.max(fig.clientWidth, 300), height: 180,
      scales: {x: {time: true}},
      legend: {show: true, live: false},
      cursor: {points: {show: false}},
      series: [{}, ...tables.map((t) => ({label: t.label, stroke: t.color, width: 1.5, spanGaps: true, dash: t.dashed ? [5, 4] : undefined, points: {show: false}}))],
      axes: [{}, {size: 56}],
      plugins: [markerPlugin()],
    };
    c = {plot: new uPlot(opts, data, fig), key};
    charts.set(id, c);
  } else {
    c.plot.setData(data);
  }
}

// markerPlugin marks each event in the chart's span with a vertical line: an
// element over the plot (so it can carry the event as its title).
function markerPlugin() {
  return {
    hooks: {
      draw: [(u) => {
        u.over.querySelectorAll('.marker').forEach((m) => m.remove());
        const events = u.root.parentElement.events || [];
        const [min, max] = [u.scales.x.min, u.scales.x.max];
        for (const e of events) {
          if (e.at < min || e.at > max) continue;
          const m = el('div', {class: 'marker', title: fmtTime(new Date(e.at * 1000)) + ' ' + e.kind + ': ' + e.text, dataset: {kind: e.kind}});
          m.style.left = u.valToPos(e.at, 'x') + 'px';
          u.over.append(m);
        }
      }],
    },
  };
}

function renderEvents(events) {
  const list = $('events');
  const items = events.map((e) => el('li', {dataset: {kind: e.kind}},
    el('time', {}, fmtTime(new Date(e.at * 1000))),
    pill(e.kind, {membership: 'info', failover: 'bad', drain: 'warn'}[e.kind] || 'info'),
    el('span', {}, e.text), el('span', {class: 'muted'}, '· ' + e.node)));
  list.replaceChildren(...items);
}

// --- the audit log: every node's, merged by the balancer.

async function refreshAudit() {
  let r;
  try {
    r = await api('GET', '/api/audit?cluster=1&limit=100');
  } catch (err) {
    return;
  }
  if (!r.ok) return;
  const body = $('audit').tBodies[0];
  const rows = (r.body.records || []).map((rec) => el('tr', {dataset: {action: rec.action, node: rec.node}},
    el('td', {}, el('time', {datetime: rec.at}, fmtTime(rec.at)),
      // dated after the balancer read it: shown then, its own date beside
      rec.claimed_at ? el('span', {class: 'muted'}, ' (dated ' + rec.claimed_at + ')') : null),
    el('td', {}, rec.node),
    el('td', {class: 'who'}, rec.who, rec.for ? el('span', {class: 'muted'}, ' for ' + rec.for) : null),
    el('td', {class: 'muted'}, rec.remote),
    el('td', {}, rec.action),
    el('td', {}, rec.target || '', rec.changes ? el('div', {class: 'why'}, rec.changes.join(', ')) : null),
    el('td', {class: 'num'}, pill(String(rec.result), rec.result < 300 ? 'ok' : 'bad'))));
  body.replaceChildren(...rows);
  if (!rows.length) body.append(el('tr', {}, el('td', {colspan: 7, class: 'muted'}, 'no admin action recorded yet')));
}

async function refreshSlow() {
  await Promise.all([refreshHistory(), refreshAudit()]);
}

async function showWhoami() {
  try {
    const r = await api('GET', '/api/whoami');
    if (!r.ok) return;
    if (r.body.user) {
      $('whoami').textContent = r.body.user;
      $('whoami').hidden = false;
      $('logout-button').hidden = false;
      $('token-button').hidden = true;
    }
  } catch (_) { /* shown by the main refresh */ }
}

function init() {
  $('token-button').addEventListener('click', () => {
    const f = $('token-form');
    if (f.hidden) showTokenForm(); else f.hidden = true;
  });
  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    state.token = $('token-input').value.trim();
    if (state.token) sessionStorage.setItem(TOKEN_KEY, state.token); else sessionStorage.removeItem(TOKEN_KEY);
    $('token-input').value = '';
    $('token-form').hidden = true;
    refresh();
  });
  $('token-clear').addEventListener('click', () => {
    state.token = '';
    sessionStorage.removeItem(TOKEN_KEY);
    $('token-form').hidden = true;
    refresh();
  });
  $('interval').addEventListener('change', (ev) => {
    state.interval = Number(ev.target.value);
    schedule();
    if (state.interval > 0) refresh();
  });
  $('logout-button').addEventListener('click', async () => {
    await api('POST', '/logout');
    window.location.assign('/login');
  });
  $('history-minutes').addEventListener('change', refreshHistory);
  // Browsers slow timers down in hidden tabs: catch up when shown again.
  document.addEventListener('visibilitychange', () => { if (!document.hidden) { refresh(); refreshSlow(); } });
  refresh();
  schedule();
  showWhoami();
  refreshSlow();
  setInterval(refreshSlow, HISTORY_REFRESH_MS);
  window.addEventListener('resize', () => {
    for (const [id, c] of charts) c.plot.setSize({width: Math.max($(id).clientWidth, 300), height: 180});
  });
}

init();
