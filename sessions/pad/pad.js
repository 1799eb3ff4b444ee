// ringlb demo pad: one shared text per session key, over ringlb.v1.
//
// Every msg a pad sends is a whole-document snapshot {text, cursor, name}:
// the edge orders msgs, so every pad ends with the text of the last one,
// and a late joiner (or a pad whose session moved) reconstructs the text
// from the last msg of the history alone. Concurrent edits are kept by a
// three-way merge: a pad that sees another's snapshot while it has edits of
// its own merges both (when they touch different places) and sends the
// result, which then is the last snapshot for everyone.
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
// that it can be shared.
const params = new URLSearchParams(location.search);
let session = (params.get('session') || '').slice(0, 64);
if (!session) {
  session = 'pad-' + Math.random().toString(36).slice(2, 8);
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
  base: '',          // the text of msg seq: the last text everyone agrees on
  inflight: null,    // the text of our msg not yet acked
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
};

// ---- text helpers -------------------------------------------------------

// splice describes b as a against one replaced range: a[start, end) → ins.
function splice(a, b) {
  let start = 0;
  const max = Math.min(a.length, b.length);
  while (start < max && a.charCodeAt(start) === b.charCodeAt(start)) start++;
  let endA = a.length, endB = b.length;
  while (endA > start && endB > start && a.charCodeAt(endA - 1) === b.charCodeAt(endB - 1)) { endA--; endB--; }
  return {start, end: endA, ins: b.slice(start, endB)};
}

// mapPos moves a position in a to where the same place is in b.
function mapPos(pos, sp) {
  if (pos <= sp.start) return pos;
  if (pos >= sp.end) return pos + sp.ins.length - (sp.end - sp.start);
  return sp.start + sp.ins.length;
}

// merge3 combines the edits base→a and base→b when they touch different
// places; when they overlap, a (this pad's) wins: it is sent next, so it
// becomes everyone's text.
function merge3(base, a, b) {
  if (a === base || a === b) return b;
  if (b === base) return a;
  const da = splice(base, a), db = splice(base, b);
  if (da.end <= db.start) return base.slice(0, da.start) + da.ins + base.slice(da.end, db.start) + db.ins + base.slice(db.end);
  if (db.end <= da.start) return base.slice(0, db.start) + db.ins + base.slice(db.end, da.start) + da.ins + base.slice(da.end);
  return a;
}

// setText replaces the textarea's text, keeping the local selection where
// it was in the text around it.
function setText(next) {
  const cur = ta.value;
  if (next === cur) return;
  const sp = splice(cur, next);
  const s = mapPos(ta.selectionStart, sp), e = mapPos(ta.selectionEnd, sp);
  const top = ta.scrollTop;
  ta.value = next;
  ta.setSelectionRange(s, e);
  ta.scrollTop = top;
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
  st.inflight = null;
  const ws = new WebSocket(wsURL(), PROTOCOL);
  st.ws = ws;
  ws.onmessage = (ev) => {
    if (ws !== st.ws) return;
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
    if (st.failures >= 3) {
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
    st.epoch = w.epoch;
    st.seq = Math.max(0, w.seq - 1);
    if (w.seq > 0) resumeAfter(w.seq - 1, w.epoch);
    else requestSync();
  }
  clearInterval(st.pingTimer);
  st.pingTimer = setInterval(() => send({type: 'ping', ts: performance.now()}), PING_EVERY_MS);
}

function onReset(r) {
  // The history does not reach back far enough (or the session is another
  // incarnation): take the last msg if there is one, else ask the peers.
  st.epoch = r.epoch;
  $('epoch').textContent = r.epoch;
  if (r.seq > 0 && st.resumeTries === 0) {
    st.resumeTries++;
    st.seq = r.seq - 1;
    resumeAfter(r.seq - 1, r.epoch);
    return;
  }
  st.seq = r.seq;
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
  st.seq = m.seq;
  $('seq').textContent = m.seq;
  const d = m.data || {};
  if (m.from !== st.participant) {
    const p = st.peers.get(m.from);
    if (p) Object.assign(p, {name: d.name, color: d.color, cursor: d.cursor, text: d.text});
  }
  if (d.want) {
    if (st.synced && m.from !== st.participant) sendSnapshot();
  } else if (typeof d.text === 'string') {
    integrate(d.text);
    // A peer's answer to our want ends our wait.
    if (!st.synced && st.wantTimer) onSynced();
  }
  renderPresence();
  renderMirror();
}

// integrate takes in the text of msg st.seq, keeping local edits.
function integrate(text) {
  const local = ta.value;
  const merged = st.inflight === null && local === st.base ? text : merge3(st.base, local, text);
  st.base = text;
  setText(merged);
  if (merged !== text) {
    // Our edits are not in the latest text: send the merge (now, or after
    // the ack of our msg in flight, which lands after this one).
    if (st.inflight !== null) st.dirty = true;
    else sendSnapshot();
  }
}

function onAck(a) {
  st.seq = a.seq;
  $('seq').textContent = a.seq;
  if (st.inflight !== null) st.base = st.inflight;
  st.inflight = null;
  if (st.dirty || ta.value !== st.base) {
    st.dirty = false;
    sendSnapshot();
  }
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
  const frame = JSON.stringify({type: 'msg', data: {text, cursor: [ta.selectionStart, ta.selectionEnd], name: me.name, color: me.color}});
  if (new Blob([frame]).size > MAX_MSG_BYTES) {
    showHint('The text is too long for one message; shorten it to keep it shared.');
    return;
  }
  st.inflight = text;
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
    const sp = splice(p.text, text);
    const s = Math.min(mapPos(p.cursor[0], sp), text.length), e = Math.min(mapPos(p.cursor[1], sp), text.length);
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
