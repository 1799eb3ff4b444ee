// ringlb demo pad: one shared text per session key, over ringlb.v1.
//
// Every msg a pad sends is its whole text, with the sequence number it was
// built on ({text, base, cursor, name}). The edge orders msgs; from that
// order every pad computes the same text, the "doc" of each seq:
//   - a msg built on the seq just before it (nobody wrote in between) is
//     the doc as it is: the last writer's text;
//   - a msg built on an older seq (written concurrently with others) is
//     merged: its author's edits (base doc → its text) applied to the doc
//     before it, by a three-way merge of character diffs.
// A late joiner (or a pad whose session moved) takes the last msg's text
// from the history and announces its own snapshot, which everyone then
// agrees on. A pad's unsent edits are merged into each new doc the same way.
'use strict';

const PROTOCOL = 'ringlb.v1';
const MAX_MSG_BYTES = 60000;   // under the edge's default max_message_bytes (64 KiB)
const CURSOR_THROTTLE_MS = 80; // cursor-only updates at most this often
const PING_EVERY_MS = 5000;    // round-trip measurement
const WANT_WAIT_MS = 1500;     // how long to wait for a peer's state when the history has none
const NAMES = ['Ada', 'Grace', 'Linus', 'Barbara', 'Ken', 'Margaret', 'Dennis', 'Frances', 'Edsger', 'Radia', 'Guido', 'Hedy'];
const COLORS = ['#2f6fed', '#1f9d55', '#d98a00', '#8e44ad', '#d64545', '#00a3a3', '#c2185b', '#5d6d7e'];

function $(id) { return document.getElementById(id); }
const ta = $('text');

// The session key: ?session=NAME, else a new random one put in the URL so
// that it can be shared. Whoever knows a key joins its session, so a new
// one is 128 bits from the browser's CSPRNG, as the balancer's assigned
// keys: a few characters of Math.random could be enumerated.
const params = new URLSearchParams(location.search);
let session = (params.get('session') || '').slice(0, 64);
if (!session) {
  session = 'pad-' + Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
  params.set('session', session);
  history.replaceState(null, '', '?' + params.toString());
}
const cookieKey = encodeURIComponent(session);

const me = {
  name: sessionStorage.getItem('ringlb.pad.name') || NAMES[Math.floor(Math.random() * NAMES.length)],
  color: COLORS[Math.floor(Math.random() * COLORS.length)],
};
sessionStorage.setItem('ringlb.pad.name', me.name);

const st = {
  ws: null,
  participant: null, // our id on the current connection
  edge: null,
  epoch: null,
  seq: 0,            // last sequence number applied
  doc: '',           // the text of seq: what everyone agrees on
  docs: new Map(),   // seq → doc, for the recent seqs (merging needs a msg's base)
  inflight: null,    // {text, base} of our msg not yet acked
  dirty: false,      // local changes to send once the inflight msg is acked
  synced: false,     // caught up after a (re)connect: may send
  syncToken: 0,
  resumeTries: 0,
  wantTimer: null,
  peers: new Map(),  // participant → {user, name, color, cursor, text}
  reconnects: 0,
  failures: 0,       // consecutive connections that never got a welcome
  retryTimer: null,
  pingTimer: null,
  cursorTimer: null,
  lastCursor: '',
  joined: false,     // this connection got its welcome
  misrouted: false,  // this connection's welcome named another session
};

// ---- text helpers -------------------------------------------------------

const MAX_DIFF_EDITS = 400; // beyond this, a diff is one replaced range
const KEEP_DOCS = 256;      // docs of this many recent seqs are kept

// splice describes b as a with one replaced range: a[start, end) → ins.
function splice(a, b) {
  let start = 0;
  const max = Math.min(a.length, b.length);
  while (start < max && a.charCodeAt(start) === b.charCodeAt(start)) start++;
  let endA = a.length, endB = b.length;
  while (endA > start && endB > start && a.charCodeAt(endA - 1) === b.charCodeAt(endB - 1)) { endA--; endB--; }
  return {start, end: endA, ins: b.slice(start, endB)};
}

// diffHunks lists the edits that turn a into b as hunks {start, end, ins}
// on a, in order: Myers' O(ND) diff on the part between the common prefix
// and suffix. Past MAX_DIFF_EDITS edits it is one replaced range.
function diffHunks(a, b) {
  const sp = splice(a, b);
  if (sp.start === sp.end && sp.ins === '') return [];
  const A = a.slice(sp.start, sp.end), B = sp.ins, n = A.length, m = B.length;
  if (n === 0 || m === 0) return [sp];
  const limit = Math.min(n + m, MAX_DIFF_EDITS), off = limit + 1;
  const v = new Int32Array(2 * limit + 3);
  const trace = [];
  let found = -1;
  for (let d = 0; d <= limit && found < 0; d++) {
    trace.push(v.slice());
    for (let k = -d; k <= d; k += 2) {
      let x = k === -d || (k !== d && v[off + k - 1] < v[off + k + 1]) ? v[off + k + 1] : v[off + k - 1] + 1;
      let y = x - k;
      while (x < n && y < m && A.charCodeAt(x) === B.charCodeAt(y)) { x++; y++; }
      v[off + k] = x;
      if (x >= n && y >= m) { found = d; break; }
    }
  }
  if (found < 0) return [sp];
  // Walk back through the trace: each step is one insertion or deletion.
  const ops = [];
  let x = n, y = m;
  for (let d = found; d > 0; d--) {
    const vd = trace[d], k = x - y;
    const prevK = k === -d || (k !== d && vd[off + k - 1] < vd[off + k + 1]) ? k + 1 : k - 1;
    const prevX = vd[off + prevK], prevY = prevX - prevK;
    while (x > prevX && y > prevY) { x--; y--; }
    if (x === prevX) ops.push({pos: prevX, ins: B[prevY]});
    else ops.push({pos: prevX, del: true});
    x = prevX; y = prevY;
  }
  const hunks = [];
  for (const op of ops.reverse()) {
    let h = hunks[hunks.length - 1];
    if (!h || op.pos !== h.end) {
      h = {start: op.pos, end: op.pos, ins: ''};
      hunks.push(h);
    }
    if (op.del) h.end++; else h.ins += op.ins;
  }
  return hunks.map((h) => ({start: h.start + sp.start, end: h.end + sp.start, ins: h.ins}));
}

// mapPos moves a position in a text to the same place after the hunks.
function mapPos(pos, hunks) {
  let shift = 0;
  for (const h of hunks) {
    if (h.start >= pos) break;
    if (h.end > pos) return h.start + shift + h.ins.length;
    shift += h.ins.length - (h.end - h.start);
  }
  return pos + shift;
}

// merge3 applies the edits base→a and base→b together. Edits that touch
// or overlap are a conflict, which a wins.
function merge3(base, a, b) {
  if (a === base || a === b) return b;
  if (b === base) return a;
  const all = [
    ...diffHunks(base, a).map((h) => ({...h, a: true})),
    ...diffHunks(base, b).map((h) => ({...h, a: false})),
  ].sort((x, y) => x.start - y.start || x.end - y.end);
  const chosen = [];
  for (let i = 0; i < all.length;) {
    let end = all[i].end, j = i + 1;
    while (j < all.length && all[j].start <= end) { end = Math.max(end, all[j].end); j++; }
    const group = all.slice(i, j);
    const fromA = group.filter((h) => h.a);
    chosen.push(...(fromA.length ? fromA : group));
    i = j;
  }
  let out = '', pos = 0;
  for (const h of chosen) { out += base.slice(pos, h.start) + h.ins; pos = h.end; }
  return out + base.slice(pos);
}

// setText replaces the textarea's text, keeping the local selection where
// it was in the text around it.
function setText(next) {
  const cur = ta.value;
  if (next === cur) return;
  const hunks = diffHunks(cur, next);
  const s = mapPos(ta.selectionStart, hunks), e = mapPos(ta.selectionEnd, hunks);
  const top = ta.scrollTop;
  ta.value = next;
  ta.setSelectionRange(s, e);
  ta.scrollTop = top;
}

// advance records the doc of seq: a snapshot {base, text}, or (text
// undefined) a msg that changes nothing. It returns the doc before.
function advance(seq, base, text) {
  const before = st.doc;
  if (typeof text === 'string') {
    const prev = st.docs.get(seq - 1), at = st.docs.get(base);
    // Written on the doc just before it, or nothing to merge with: the
    // text as it is. Written concurrently: its author's edits on top of
    // what came before (its edits win a conflict: it is the later msg).
    st.doc = base === seq - 1 || prev === undefined || at === undefined ? text : merge3(at, text, prev);
  }
  st.seq = seq;
  st.docs.set(seq, st.doc);
  st.docs.delete(seq - KEEP_DOCS);
  $('seq').textContent = seq;
  return before;
}

// startEpoch forgets the docs of another incarnation of the session: the
// next msg is taken as it is. after is the seq the next msg follows.
function startEpoch(epoch, after) {
  st.epoch = epoch;
  $('epoch').textContent = epoch;
  st.docs.clear();
  st.seq = after;
  if (after === 0) {
    // A new session: its doc is empty, and what we have is ours to send.
    st.doc = '';
    st.docs.set(0, '');
  }
}

// ---- connection ---------------------------------------------------------

function wsURL() {
  return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
}

function connect() {
  clearTimeout(st.retryTimer);
  // The balancer routes by this cookie (set just before every connect: a
  // tab of another session may have changed it meanwhile).
  document.cookie = 'ctstickiness=' + cookieKey + '; path=/; SameSite=Lax' + (location.protocol === 'https:' ? '; Secure' : '');
  setStatus(st.reconnects ? 'reconnecting…' : 'connecting…', 'warn');
  st.synced = false;
  st.joined = false;
  st.misrouted = false;
  st.inflight = null;
  const ws = new WebSocket(wsURL(), PROTOCOL);
  st.ws = ws;
  ws.onmessage = (ev) => {
    // A session not ours writes nothing here either, while it closes.
    if (ws !== st.ws || st.misrouted) return;
    let f;
    try { f = JSON.parse(ev.data); } catch (_) { return; }
    handle(f);
  };
  ws.onclose = (ev) => {
    if (ws !== st.ws) return;
    st.ws = null;
    clearInterval(st.pingTimer);
    clearTimeout(st.wantTimer);
    st.peers.clear();
    renderPresence();
    if (!st.joined) st.failures++;
    st.reconnects++;
    $('reconnects').textContent = st.reconnects;
    // 1012: the edge is draining or restarting; come back at once, through
    // the balancer, to the session's new edge. Otherwise back off.
    const delay = ev.code === 1012 ? 100 + Math.random() * 200 : Math.min(5000, 300 * 2 ** Math.min(st.failures, 5));
    setStatus((ev.code === 1012 ? 'edge draining' : 'disconnected (' + ev.code + ')') + ', reconnecting…', 'warn');
    if (st.failures >= 3 && !st.misrouted) {
      showHint('Cannot join the session. Open the pad through a balancer (e.g. http://127.0.0.1:8080/?session=' + session +
        '): an edge opened directly refuses sessions it does not own.');
    }
    st.retryTimer = setTimeout(connect, delay);
  };
}

function send(frame) {
  if (st.ws && st.ws.readyState === WebSocket.OPEN) st.ws.send(JSON.stringify(frame));
}

// resumeAfter asks for every msg after seq, then pings: the pong comes
// after the replay, so it marks the end of the catch-up.
function resumeAfter(after, epoch) {
  send({type: 'resume', after, epoch});
  requestSync();
}

function requestSync() {
  st.syncToken++;
  send({type: 'ping', ts: 'sync:' + st.syncToken});
}

function handle(f) {
  switch (f.type) {
    case 'welcome': return onWelcome(f);
    case 'msg': return onMsg(f);
    case 'ack': return onAck(f);
    case 'join':
      if (f.participant !== st.participant) st.peers.set(f.participant, {user: f.user});
      renderPresence();
      // Tell the newcomer who we are and where our cursor is.
      if (st.synced) sendSnapshot();
      return;
    case 'leave':
      st.peers.delete(f.participant);
      renderPresence();
      renderMirror();
      return;
    case 'reset': return onReset(f);
    case 'pong':
      if (f.ts === 'sync:' + st.syncToken) onSynced();
      else if (typeof f.ts === 'number') $('rtt').textContent = (performance.now() - f.ts).toFixed(1) + ' ms';
      return;
    case 'error':
      showHint('edge: ' + f.message);
      return;
  }
}

function onWelcome(w) {
  if (w.session !== cookieKey) {
    // The browser sent another ctstickiness cookie first: one on a more
    // specific path, or from another port of this host or another site of
    // its domain, or another tab's written just before our handshake.
    // Whoever holds that session would read and write this text: join
    // only our own.
    st.misrouted = true;
    showHint('The browser sent the key of another session (a ctstickiness cookie of another path or site); not joining it. Remove that cookie to join ' + session + '.');
    st.ws.close();
    return;
  }
  st.joined = true;
  st.failures = 0;
  st.participant = w.participant;
  st.edge = w.edge;
  st.peers.clear();
  for (const p of w.participants || []) {
    if (p.participant !== w.participant) st.peers.set(p.participant, {user: p.user});
  }
  $('edge').textContent = w.edge;
  $('epoch').textContent = w.epoch;
  hideHint();
  setStatus('joining ' + w.edge + '…', 'warn');
  renderPresence();
  st.resumeTries = 0;
  if (st.epoch === w.epoch && st.seq <= w.seq) {
    // The same incarnation of the session (a reconnect, or a move by
    // drain, which keeps epoch and history): replay what we missed.
    resumeAfter(st.seq, w.epoch);
  } else {
    // A first join or another incarnation: the last msg holds the text.
    startEpoch(w.epoch, Math.max(0, w.seq - 1));
    if (w.seq > 0) resumeAfter(w.seq - 1, w.epoch);
    else requestSync();
  }
  clearInterval(st.pingTimer);
  st.pingTimer = setInterval(() => send({type: 'ping', ts: performance.now()}), PING_EVERY_MS);
}

function onReset(r) {
  // The history does not reach back far enough (or the session is another
  // incarnation): take the last msg if there is one, else ask the peers.
  if (r.seq > 0 && st.resumeTries === 0) {
    st.resumeTries++;
    startEpoch(r.epoch, r.seq - 1);
    resumeAfter(r.seq - 1, r.epoch);
    return;
  }
  startEpoch(r.epoch, r.seq);
  if (r.seq === 0) {
    requestSync();
    return;
  }
  // Not even the last msg is kept (history off): whoever is here answers.
  send({type: 'msg', data: {want: true, name: me.name}});
  clearTimeout(st.wantTimer);
  st.wantTimer = setTimeout(onSynced, WANT_WAIT_MS);
}

function onSynced() {
  clearTimeout(st.wantTimer);
  if (st.synced) return;
  st.synced = true;
  setStatus('connected · ' + st.edge, 'ok');
  send({type: 'ping', ts: performance.now()});
  // Announce ourselves, and send what the catch-up did not contain (edits
  // made while offline, or a msg lost unacknowledged with the old edge).
  sendSnapshot();
}

function onMsg(m) {
  if (m.seq <= st.seq) return; // seen already (a replay overlaps live traffic)
  const d = m.data || {};
  if (m.from !== st.participant) {
    const p = st.peers.get(m.from);
    if (p) Object.assign(p, {name: d.name, color: d.color, cursor: d.cursor, text: d.text});
  }
  const snapshot = typeof d.text === 'string';
  const before = advance(m.seq, typeof d.base === 'number' ? d.base : m.seq - 1, snapshot ? d.text : undefined);
  if (snapshot) {
    integrate(before);
    // A peer's answer to our want ends our wait.
    if (!st.synced && st.wantTimer) onSynced();
  } else if (d.want && st.synced && m.from !== st.participant) {
    sendSnapshot();
  }
  renderPresence();
  renderMirror();
}

// integrate moves the textarea from the doc before to the new doc,
// keeping the local edits not in it yet, and sends them if it can.
function integrate(before) {
  const local = ta.value;
  const merged = st.inflight === null && local === before ? st.doc : merge3(before, local, st.doc);
  setText(merged);
  if (merged !== st.doc) {
    // Our edits are not in the doc yet: send them (now, or after the ack
    // of our msg in flight).
    if (st.inflight !== null) st.dirty = true;
    else sendSnapshot();
  }
}

function onAck(a) {
  const mine = st.inflight;
  st.inflight = null;
  const before = advance(a.seq, mine ? mine.base : a.seq - 1, mine ? mine.text : undefined);
  if (mine) integrate(before);
  if (st.dirty || ta.value !== st.doc) {
    st.dirty = false;
    sendSnapshot();
  }
  renderMirror();
}

// sendSnapshot sends the whole text and our cursor, one msg at a time:
// while one is unacknowledged the next waits (and coalesces).
function sendSnapshot() {
  if (!st.synced || !st.ws || st.ws.readyState !== WebSocket.OPEN) return;
  if (st.inflight !== null) {
    st.dirty = true;
    return;
  }
  const text = ta.value;
  const frame = JSON.stringify({type: 'msg', data: {text, base: st.seq, cursor: [ta.selectionStart, ta.selectionEnd], name: me.name, color: me.color}});
  if (new Blob([frame]).size > MAX_MSG_BYTES) {
    showHint('The text is too long for one message; shorten it to keep it shared.');
    return;
  }
  st.inflight = {text, base: st.seq};
  st.dirty = false;
  st.lastCursor = ta.selectionStart + ':' + ta.selectionEnd;
  st.ws.send(frame);
}

// ---- rendering ----------------------------------------------------------

function setStatus(text, kind) {
  const s = $('status');
  s.textContent = text;
  s.className = 'pill ' + kind;
}

function showHint(text) { $('hint').textContent = text; $('hint').hidden = false; }
function hideHint() { $('hint').hidden = true; }

function renderPresence() {
  const list = $('presence');
  const chip = (name, color, you) => {
    const li = document.createElement('li');
    const dot = document.createElement('span');
    dot.className = 'dot';
    dot.style.background = color;
    li.append(dot, document.createTextNode(name + (you ? ' (you)' : '')));
    return li;
  };
  const chips = st.joined ? [chip(me.name, me.color, true)] : [];
  for (const [id, p] of st.peers) chips.push(chip(p.name || 'guest ' + id.slice(0, 4), p.color || '#6b7588', false));
  list.replaceChildren(...chips);
  $('presence-count').textContent = chips.length;
}

// renderMirror draws the peers' cursors (and selections) into the layer
// under the textarea, at their place in our text.
function renderMirror() {
  const text = ta.value;
  const marks = [];
  for (const p of st.peers.values()) {
    if (!Array.isArray(p.cursor) || typeof p.text !== 'string') continue;
    const hunks = p.text === text ? [] : diffHunks(p.text, text);
    const s = Math.min(mapPos(p.cursor[0], hunks), text.length), e = Math.min(mapPos(p.cursor[1], hunks), text.length);
    marks.push({s: Math.min(s, e), e: Math.max(s, e), name: p.name || 'guest', color: p.color || '#6b7588'});
  }
  const mirror = $('mirror');
  const out = [];
  // Boundaries where a caret or a selection starts or ends.
  const cuts = new Set([0, text.length]);
  for (const m of marks) { cuts.add(m.s); cuts.add(m.e); }
  const points = [...cuts].sort((a, b) => a - b);
  for (let i = 0; i < points.length; i++) {
    const at = points[i];
    for (const m of marks) {
      if (m.e !== at) continue;
      const c = document.createElement('span');
      c.className = 'caret';
      c.style.setProperty('--c', m.color);
      const tag = document.createElement('span');
      tag.className = 'tag';
      tag.textContent = m.name;
      c.append(tag);
      out.push(c);
    }
    if (i + 1 < points.length) {
      const seg = text.slice(at, points[i + 1]);
      const sel = marks.find((m) => m.s <= at && points[i + 1] <= m.e && m.s < m.e);
      if (sel) {
        const s = document.createElement('span');
        s.className = 'sel';
        s.style.setProperty('--s', sel.color + '33');
        s.textContent = seg;
        out.push(s);
      } else {
        out.push(document.createTextNode(seg));
      }
    }
  }
  // A trailing newline needs something after it to take up its line.
  out.push(document.createTextNode('\u200b'));
  mirror.replaceChildren(...out);
  mirror.scrollTop = ta.scrollTop;
}

// ---- local input --------------------------------------------------------

ta.addEventListener('input', () => {
  sendSnapshot();
  renderMirror();
});
ta.addEventListener('scroll', () => { $('mirror').scrollTop = ta.scrollTop; });
document.addEventListener('selectionchange', () => {
  if (document.activeElement !== ta) return;
  const c = ta.selectionStart + ':' + ta.selectionEnd;
  if (c === st.lastCursor || st.cursorTimer) return;
  st.cursorTimer = setTimeout(() => {
    st.cursorTimer = null;
    if (ta.selectionStart + ':' + ta.selectionEnd !== st.lastCursor) sendSnapshot();
  }, CURSOR_THROTTLE_MS);
});
window.addEventListener('resize', renderMirror);

$('session').textContent = session;
$('cookie-key').textContent = cookieKey;
document.title = session + ' · ringlb pad';
renderPresence();
connect();
