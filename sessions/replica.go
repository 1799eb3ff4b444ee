package sessions

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"hash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/balancer/httplog"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
)

// The replica's side of replication (replication.go): the streams owners
// open to this edge, the frozen copies of their sessions, promotion when an
// owner dies, and fencing of an owner that comes back.

// maxReplicaCopies bounds the copies an edge keeps for others. Owners are
// edges of the cluster (signed streams), so this is a bound against a bug,
// not an attacker: far above any edge's sessions.
const maxReplicaCopies = 1 << 20

// staleCopyAge: a copy its owner has not sent again this long after its
// stream began anew is one the owner no longer has (it ended while the
// stream was down): it is dropped, never promoted. So are the copies of an
// owner, alive, that has had no stream here this long (sweepCopies).
const staleCopyAge = time.Minute

// replicaStore holds the copies. Its mutex is taken last: after a shard's,
// never while taking another lock.
//
// A copy's history is bounded by this edge's edge.history as it is now:
// the hub's bounds, read when the copy is made (applySnapshot, under a
// shard lock) and set on every copy held when a reload changes them
// (hub.setHistoryBounds, under every shard lock and then this one). The
// store keeps no bounds of its own: taken once at start, a raised
// history.messages reached the owner's sessions and not their copies, and
// the owner's crash cost its clients what the copies had dropped.
type replicaStore struct {
	budget *historyBudget // the bound of all histories here, copies included
	// maxCopies is maxReplicaCopies (tests lower it).
	maxCopies int

	mu     sync.Mutex
	copies map[string]*replicaCopy
	// draining are owners seen draining: they hand their sessions on
	// (drain.go), so their copies are never promoted, only dropped.
	draining map[string]bool
	// streams is when each owner's current stream began; up counts its
	// streams begun and not ended (one, but for a moment when one ends as
	// the next begins), down is when its last one ended while none is up.
	streams map[string]time.Time
	up      map[string]int
	down    map[string]time.Time
}

// replicaCopy is the frozen copy of one session: serving nothing until it
// is promoted.
type replicaCopy struct {
	from   string     // the owner
	v      *v1Session // epoch, term, seq, history
	snapAt time.Time  // when its owner last sent it whole
}

func newReplicaStore(budget *historyBudget) *replicaStore {
	return &replicaStore{
		budget: budget, maxCopies: maxReplicaCopies,
		copies: make(map[string]*replicaCopy), draining: make(map[string]bool), streams: make(map[string]time.Time),
		up: make(map[string]int), down: make(map[string]time.Time),
	}
}

// streamBegan records that a stream of from began at now: its first batch
// verified.
func (st *replicaStore) streamBegan(from string, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.streams[from] = now
	st.up[from]++
	delete(st.down, from)
}

// streamEnded records that a stream of from that began ended at now.
func (st *replicaStore) streamEnded(from string, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.up[from]--; st.up[from] <= 0 {
		delete(st.up, from)
		st.down[from] = now
	}
}

// forgetStreams drops the records of from's streams unless one is up: from
// has left the cluster. Kept, an owner's few records outlived it, and
// owners named anew at each start (pods without stable names) grew them
// without bound. A stream still up records its end anew; the caller that
// sees it end forgets it then.
func (st *replicaStore) forgetStreams(from string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.up[from] == 0 {
		delete(st.streams, from)
		delete(st.down, from)
	}
}

// setBounds bounds the history of every copy held by messages and bytes,
// trimmed as a live session's is: at its next msg. Called with every shard
// lock held (hub.setHistoryBounds).
func (st *replicaStore) setBounds(messages, bytes int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, c := range st.copies {
		c.v.maxMessages, c.v.maxBytes = messages, bytes
	}
}

func (st *replicaStore) count() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.copies)
}

// owner returns who sent the copy of key, if one is held.
func (st *replicaStore) owner(key string) (string, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if c := st.copies[key]; c != nil {
		return c.from, true
	}
	return "", false
}

// take removes and returns the copy of key.
func (st *replicaStore) take(key string) *replicaCopy {
	st.mu.Lock()
	defer st.mu.Unlock()
	c := st.copies[key]
	delete(st.copies, key)
	return c
}

// takeOf removes and returns the copy of key if from sent it: another
// owner's copy that came since from was chosen stays.
func (st *replicaStore) takeOf(key, from string) *replicaCopy {
	st.mu.Lock()
	defer st.mu.Unlock()
	c := st.copies[key]
	if c == nil || c.from != from {
		return nil
	}
	delete(st.copies, key)
	return c
}

// dropUnsent forgets from's copies not sent whole since began: from said
// it sent every session it has (a synced record), so the rest ended while
// its stream was down, their frees never written. Kept, such a copy would
// be promoted at from's crash: the ended session back with its epoch and
// history. A zero began drops nothing.
func (st *replicaStore) dropUnsent(from string, began time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for key, c := range st.copies {
		if c.from == from && c.snapAt.Before(began) {
			delete(st.copies, key)
			c.v.forget()
		}
	}
}

// drop forgets the copy of key (the session is live here now).
func (st *replicaStore) drop(key string) {
	if c := st.take(key); c != nil {
		c.v.forget()
	}
}

// serveReplicate answers GET /_ringlb/replicate: an owner's stream of
// session records, from an edge of the cluster that signed the upgrade
// (configs.HeaderPeer) — never believed for its address.
func (s *Server) serveReplicate(ctx *fasthttp.RequestCtx) {
	if !ctx.IsGet() {
		ctx.Error("method not allowed\n", fasthttp.StatusMethodNotAllowed)
		return
	}
	o, r := s.hub.owner.Load(), s.hub.repl.Load()
	if o == nil || r == nil {
		ctx.Error("forbidden: this edge checks no ownership\n", fasthttp.StatusForbidden)
		return
	}
	from := string(ctx.QueryArgs().Peek("from"))
	ownerKey := string(ctx.QueryArgs().Peek("key"))
	ownerPub, err := base64.RawURLEncoding.DecodeString(ownerKey)
	if from == "" || err != nil || len(ownerPub) != 32 {
		ctx.Error("bad replication request\n", fasthttp.StatusBadRequest)
		return
	}
	err = o.peerRequest(ctx, from)
	if err == nil && !r.opening(string(ctx.Request.Header.Peek(configs.HeaderPeer)), o.m.Keyring().Enabled()) {
		err = errStreamReplayed
	}
	if err != nil {
		s.metrics.peerRefused.Inc()
		s.peerLog.Warn(s.log, "replication stream refused", "from", from, "remote", ctx.RemoteIP(), "err", err)
		ctx.Error("forbidden: not an edge of this cluster\n", fasthttp.StatusForbidden)
		return
	}
	if !r.addStream() {
		ctx.Error("service unavailable: shutting down\n", fasthttp.StatusServiceUnavailable)
		return
	}
	_ = s.upgrade(ctx, func(conn *websocket.Conn) {
		// fasthttp's hijack goroutine: the stream runs on one of ours, so
		// fasthttp releases the request at once (KeepHijackedConns).
		go r.serveStream(conn, from, ownerKey, ownerPub)
	}, r.wg.Done)
}

// errStreamReplayed refuses an upgrade whose signature opened a stream
// already: a copy seen on the wire (edge-to-edge requests are plain HTTP
// unless the network protects them) and sent again within
// health.PeerWindow. Each took a connection and a goroutine for
// streamIdle, however many copies came.
var errStreamReplayed = errors.New("replication upgrade replayed: its signature opened a stream already")

// opening reports whether the signed upgrade sig may open a stream: once
// per signature (keyed: a keyless cluster signs nothing).
func (r *replicator) opening(sig string, keyed bool) bool {
	if !keyed {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.upgrades.take(sig, time.Now())
}

// addStream counts an inbound stream in r.wg unless Shutdown began.
func (r *replicator) addStream() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.wg.Add(1)
	return true
}

// ownerStream is the replica's side of an owner's stream: the answers it
// writes, numbered in the order written (the owner checks each batch's MAC
// against the next number), and the fences it has to tell the owner
// between two of the owner's batches.
type ownerStream struct {
	from string
	conn *websocket.Conn

	mu   sync.Mutex // one batch written at a time
	mac  hash.Hash
	sent uint64
	head []byte

	fenceMu sync.Mutex
	fences  []pendingFence
	wake    chan struct{} // cap 1: fences queued
	pushed  atomic.Int64  // fences written by pushFences (its debug line, tests)
}

// write writes records as the stream's next answer.
func (o *ownerStream) write(records []byte, wait time.Duration) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.sent++
	o.head = appendBatchHead(o.head[:0], o.mac, o.sent, records)
	_ = o.conn.NetConn().SetWriteDeadline(time.Now().Add(wait))
	return writeBatch(o.conn, o.head, records)
}

// queueFence has f told to the owner at once (pushFences), not only in
// answer to its next batch: an owner whose sessions are idle sends none
// for linkIdle.
func (o *ownerStream) queueFence(f pendingFence) {
	o.fenceMu.Lock()
	// An owner not reading loses the oldest: the replicator keeps them
	// all the same, for its next stream.
	o.fences = keepFence(o.fences, f)
	o.fenceMu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// pushFences writes the fences queued for the owner that still hold
// (replicator.fenceHolds) as batches of their own (an answer without an
// ack: the owner takes it as such), until done or a write fails (the
// stream is then ending).
func (o *ownerStream) pushFences(done <-chan struct{}, r *replicator) {
	var (
		records []byte
		fences  []pendingFence
	)
	for {
		select {
		case <-done:
			return
		case <-o.wake:
		}
		o.fenceMu.Lock()
		fences = append(fences[:0], o.fences...)
		clear(o.fences)
		o.fences = o.fences[:0]
		o.fenceMu.Unlock()
		// Checked without the fence lock: fenceHolds takes a shard's lock,
		// which is taken before the replicator's and so before this one.
		records = records[:0]
		n := 0
		for i, f := range fences {
			if r.fenceHolds(f) {
				records = appendFence(records, f.term, r.o.self, f.key)
				n++
			}
			// The owner reads an answer up to maxAnswerBatch: past it, it
			// ends the stream, and the next one would push the same again.
			if n > 0 && (len(records) >= maxFencePush || i == len(fences)-1) {
				if err := o.write(records, r.srv.writeWait); err != nil {
					return
				}
				o.pushed.Add(int64(n))
				r.log.Debug("fences pushed on the owner's stream", "owner", o.from, "fences", n)
				records, n = records[:0], 0
			}
		}
	}
}

// maxFencePush bounds a batch of pushed fences: well within what an owner
// reads (maxAnswerBatch), a fence being at most a few hundred bytes.
const maxFencePush = maxAnswerBatch / 4

// serveStream applies an owner's batches and answers each: resyncs and
// fences for records it cannot apply, then the batch's ack. Fences for
// sessions this edge took over from the owner meanwhile (fenceLater) go
// back on the stream at once. ownerKey is the owner's public key for the
// stream (ownerPub, as sent).
func (r *replicator) serveStream(conn *websocket.Conn, from, ownerKey string, ownerPub []byte) {
	defer r.wg.Done()
	raw := conn.NetConn()
	defer raw.Close()
	stream := &ownerStream{from: from, conn: conn, wake: make(chan struct{}, 1)}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.inbound[conn] = stream
	// What the owner must be told already (it was unreachable, and is back).
	for _, f := range r.fences[from] {
		stream.queueFence(f)
	}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.inbound, conn)
		r.mu.Unlock()
	}()
	// What any owner may send, not this edge's own max_message_bytes: an
	// owner whose limit is higher (a rolling change of the setting) sends
	// a msg above this edge's alone as a batch, and a lower read limit
	// ended the stream at it, again each time it began anew, and the
	// owner's sessions went unreplicated. Only an edge of the cluster gets
	// this far (the signed upgrade and key exchange), and a batch is read
	// as it is long, not as the limit is high.
	conn.SetReadLimit(int64(maxLinkQueue + configs.MaxMessageBytesCeiling + 64<<10))
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return
	}
	keys, err := newStreamKeys(priv, ownerPub, false)
	if err != nil {
		r.log.Warn("replication stream refused: bad key", "from", from, "err", err)
		return
	}
	_ = raw.SetWriteDeadline(time.Now().Add(r.srv.writeWait))
	if err := writeBatch(conn, signHello(r.o.m.Keyring(), r.o.self, from, ownerKey, priv.PublicKey().Bytes()), nil); err != nil {
		return
	}
	stream.mac = keys.send // before any answer or push is written
	done := make(chan struct{})
	var pusher sync.WaitGroup
	pusher.Go(func() { stream.pushFences(done, r) })
	defer func() {
		close(done)
		_ = raw.Close() // a push blocked on a write ends with it
		pusher.Wait()
	}()
	var msg, answers []byte
	began, beganAt := false, time.Time{}
	defer func() {
		if !began {
			return
		}
		r.store.streamEnded(from, time.Now())
		// An owner gone before its stream ended: the membership change
		// that forgot it (promoteOrphans) came first, and may be the last.
		// Asked without the store's lock, which is taken last.
		if !r.o.member(from) {
			r.store.forgetStreams(from)
		}
	}()
	for want := uint64(1); ; want++ {
		_ = raw.SetReadDeadline(time.Now().Add(streamIdle))
		var kind int
		kind, msg, err = readMessage(conn, msg)
		if errors.Is(err, websocket.ErrReadLimit) {
			r.endLog.Warn(r.log, "replication stream ended: batch over the read limit", "from", from, "err", err)
		}
		if err != nil {
			return
		}
		records, err := openBatch(msg, keys.recv, want)
		if kind != websocket.BinaryMessage || err != nil {
			r.endLog.Warn(r.log, "replication stream ended: bad batch", "from", from, "err", err)
			return
		}
		if want == 1 {
			// The owner holds the stream's key: this is its stream, begun
			// anew, on which it sends every session it has whole
			// (sweepCopies). Not at the hello: anyone who saw the owner's
			// signed upgrade on the wire can send it again and be
			// answered one, and the owner's live stream would be taken
			// for ended, its copies dropped a minute later.
			beganAt = time.Now()
			r.store.streamBegan(from, beganAt)
			began = true
		}
		answers, err = r.applyStream(from, beganAt, records, answers[:0])
		if err != nil {
			r.endLog.Warn(r.log, "replication stream ended: bad record", "from", from, "err", err)
			return
		}
		answers = appendAck(answers, want)
		if err := stream.write(answers, r.srv.writeWait); err != nil {
			return
		}
	}
}

// applyStream applies one batch of from's records, on a stream of from's
// that began at began, to the copies and returns the answers for what it
// could not apply. A synced record drops from's copies not sent whole
// since began.
func (r *replicator) applyStream(from string, began time.Time, records, answers []byte) ([]byte, error) {
	var rec record
	rd := reader{b: records}
	for rd.next(&rec) {
		if len(rec.key) == 0 && rec.kind != recHello && rec.kind != recAck && rec.kind != recSynced {
			return answers, errBadRecord
		}
		switch rec.kind {
		case recSynced:
			r.store.dropUnsent(from, began)
		case recSnapshot:
			if len(rec.epoch) == 0 {
				return answers, errBadRecord
			}
			answers = r.applySnapshot(from, &rec, answers)
		case recAppend, recSkip:
			if rec.kind == recAppend && len(rec.payload) == 0 {
				return answers, errBadRecord
			}
			answers = r.applyAppend(&rec, answers)
		case recFree:
			st := r.store
			st.mu.Lock()
			if c := st.copies[string(rec.key)]; c != nil && c.from == from && c.v.term <= rec.term {
				delete(st.copies, string(rec.key))
				c.v.forget()
			}
			st.mu.Unlock()
		case recFence:
			if len(rec.epoch) == 0 {
				return answers, errBadRecord
			}
			key, holder := string(rec.key), string(rec.epoch)
			r.yield(key, holder, rec.term)
			st := r.store
			st.mu.Lock()
			if c := st.copies[key]; c != nil && c.v.term < rec.term {
				delete(st.copies, key)
				c.v.forget()
			}
			st.mu.Unlock()
		}
	}
	return answers, rd.err
}

// fenceHolds reports whether f is still true: this edge holds the session
// of f's key at f's term or later, not handed on. A fence is told only
// then: once the session ended here the key is its ring owner's again, and
// a new incarnation there (term 1) would yield to a fence of the old
// takeover still waiting out fenceTTL.
func (r *replicator) fenceHolds(f pendingFence) bool {
	term, moved := r.liveTerm(f.key)
	return term >= f.term && !moved
}

// liveTerm returns the term of the v1 session of key live here (0: none).
func (r *replicator) liveTerm(key string) (term uint64, moved bool) {
	sh := r.srv.hub.shardOf(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := sh.sessions[key]
	if s == nil {
		return 0, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.v1 == nil {
		return 0, false
	}
	return s.v1.term, s.movedTo != ""
}

func (r *replicator) applySnapshot(from string, rec *record, answers []byte) []byte {
	key := string(rec.key)
	// The sender serves an incarnation this edge took over from it: stale,
	// whatever this edge holds of the key now (the takeover may have
	// ended, and a new incarnation begun, here since).
	if term := r.takenOver(from, key, string(rec.epoch), rec.term); term > 0 {
		return appendFence(answers, term, r.o.self, key)
	}
	if live, moved := r.liveTerm(key); live != 0 && !moved {
		switch {
		case live > rec.term:
			// The sender is a stale owner: this edge took the session over.
			return appendFence(answers, live, r.o.self, key)
		case live == rec.term:
			return answers // handed here by a drain; the drained edge's last records
		}
		// This edge is the stale owner: the sender, of a newer term, took
		// the session over and chose this edge as its replica.
		r.yield(key, from, rec.term)
	}
	// The shard's lock is held while the copy is made: a reload sets the
	// bounds, and those of every copy held, under all of them.
	h := r.srv.hub
	sh := h.shardOf(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st := r.store
	st.mu.Lock()
	defer st.mu.Unlock()
	c := st.copies[key]
	switch {
	case c != nil && c.v.term > rec.term:
		return appendFence(answers, c.v.term, c.from, key)
	case c == nil && len(st.copies) >= st.maxCopies:
		// Said, not only logged: acknowledged as if kept, the owner showed
		// the session's msgs as replicated with no copy anywhere.
		r.fullLog.Warn(r.log, "replica full: not keeping a copy", "from", from, "copies", len(st.copies))
		return appendRefused(answers, key)
	case c != nil:
		c.v.forget()
	}
	v := &v1Session{epoch: string(rec.epoch), seq: rec.seq, committed: rec.seq, term: rec.term, maxMessages: h.historyMsgs, maxBytes: h.historyByte, budget: st.budget}
	st.copies[key] = &replicaCopy{from: from, v: v, snapAt: time.Now()}
	return answers
}

func (r *replicator) applyAppend(rec *record, answers []byte) []byte {
	st := r.store
	st.mu.Lock()
	c := st.copies[string(rec.key)]
	switch {
	case c == nil:
		st.mu.Unlock()
		key := string(rec.key)
		if live, _ := r.liveTerm(key); live > rec.term {
			return appendFence(answers, live, r.o.self, key)
		}
		return appendResync(answers, key)
	case c.v.term > rec.term:
		answers = appendFence(answers, c.v.term, c.from, string(rec.key))
	case c.v.term < rec.term:
		answers = appendResync(answers, string(rec.key))
	case rec.seq <= c.v.seq:
		// Already here (a snapshot raced the record).
	case rec.kind == recSkip:
		c.v.skipTo(rec.seq)
		c.v.committed = c.v.seq
	case rec.seq != c.v.seq+1:
		answers = appendResync(answers, string(rec.key))
	default:
		p := rec.payload
		c.v.seq = rec.seq
		c.v.remember(textFrame(len(p), func(b []byte) []byte { return append(b, p...) }))
		c.v.committed = c.v.seq
	}
	st.mu.Unlock()
	return answers
}

// promote makes from's copy of key a live session here: same epoch, seq
// and history, term one higher. Its clients resume as after a drain. false
// when there is no copy of from's (a newer owner's may have come since
// from was found gone: it is left alone), the session is live here
// already, or another edge's claim on the key holds here (skip: edges a
// balancer could not reach, whose claims do not).
func (r *replicator) promote(key, from, why string, skip []string) bool {
	h := r.srv.hub
	// Deferred first, so it runs last: after the shard lock is released.
	defer h.trimIdle()
	sh := h.shardOf(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.admitting[key].n > 0 {
		return false // a join is starting it here: the next one promotes
	}
	// That edge asked here whether the session lives, was told no (a copy
	// is no session) and may have started it: the copy made live would be
	// a second session of the key.
	if c, ok := sh.claimed(key, r.o.goneEdges(skip), h.now()); ok && c != r.o.self {
		return false
	}
	// Another live edge pinned it: its session lives there, where the ring
	// does not send the key — started while a balancer reached neither the
	// owner nor this edge, so it asked neither (and a claim holds 10 s,
	// where gossip can take longer to declare the owner dead): the copy
	// made live was a second session. An edge the balancer could not reach
	// is passed over, as placement passes it over.
	if n, ok := r.o.m.PinnedTo(xxhash.Sum64String(key), skip...); ok && n.Name != r.o.self {
		return false
	}
	// A session frozen here (handed on or yielded once) gives way: the
	// copy is newer.
	if sh.liveOrUnfrozen(key) {
		r.store.drop(key) // live here: the copy is stale
		return false
	}
	c := r.store.takeOf(key, from)
	if c == nil {
		return false
	}
	v := c.v
	v.term++
	v.committed = v.seq
	v.bumpable = true
	v.promotedSeq = v.seq
	s := &session{key: key, created: time.Now(), v1: v}
	delete(sh.claims, key)
	delete(sh.moved, key)
	sh.sessions[key] = s
	h.metrics.sessionsHosted.Inc()
	h.metrics.promotions.Inc()
	if o := h.owner.Load(); o != nil {
		o.created(key)
	}
	s.mu.Lock()
	if h.idleGrace > 0 {
		h.keepIdle(s)
	}
	r.assign(s)
	s.mu.Unlock()
	r.fenceLater(c.from, key, v.epoch, v.term)
	if r.log.Enabled(context.Background(), slog.LevelDebug) {
		r.log.Debug("session promoted", "key", httplog.KeyString(key), "from", c.from, "term", v.term, "seq", v.seq, "why", why)
	}
	return true
}

// promoteOnJoin promotes the copy of key for a join that the ring gives to
// this edge when the copy's owner is gone: left the cluster, or named by
// the balancer as unreachable (skip). A draining owner hands its sessions
// on itself.
func (r *replicator) promoteOnJoin(key []byte, skip []string) bool {
	from, ok := r.store.owner(string(key))
	if !ok {
		return false
	}
	r.store.mu.Lock()
	draining := r.store.draining[from]
	r.store.mu.Unlock()
	if draining || (!contains(skip, from) && r.o.member(from)) {
		return false
	}
	return r.promote(string(key), from, "join", skip)
}

// promoteOrphans promotes the copies of owners gossip has declared dead
// (membership changed), so their clients find the session wherever they
// resume; copies of owners that drained are dropped.
//
// A draining mark is of one life of its owner: dropped once the owner is
// gone or alive and not draining (started again under its name: a node
// announces draining only from its drain until it exits), whether or not
// it has copies here. Kept while only owners with copies were looked at,
// the mark of a drain that had handed every session on (its copies
// dropped with the hand-offs) outlived it, and the owner's next life's
// copies were dropped at its crash instead of promoted: every msg acked
// under sync replication lost (TestRestartedEdgeOnceDrainedIsPromotedFrom).
func (r *replicator) promoteOrphans() {
	st := r.store
	st.mu.Lock()
	bySource := map[string][]string{}
	for key, c := range st.copies {
		bySource[c.from] = append(bySource[c.from], key)
	}
	var marked []string // marks of owners with no copy here
	for from := range st.draining {
		if _, ok := bySource[from]; !ok {
			marked = append(marked, from)
		}
	}
	// Stream records of every owner, forgotten once it has left
	// (forgetStreams), copies here or none.
	recorded := make(map[string]bool)
	for _, streams := range []map[string]time.Time{st.streams, st.down} {
		for from := range streams {
			recorded[from] = true
		}
	}
	st.mu.Unlock()
	for _, from := range marked {
		if n, alive := r.o.m.Node(from); !alive || n.Meta.State != health.StateDraining {
			st.mu.Lock()
			delete(st.draining, from)
			st.mu.Unlock()
		}
	}
	for from := range recorded {
		if !r.o.member(from) {
			st.forgetStreams(from)
		}
	}
	snap := r.o.ring.Snapshot()
	for from, keys := range bySource {
		n, alive := r.o.m.Node(from)
		st.mu.Lock()
		switch {
		case alive && n.Meta.State == health.StateDraining:
			st.draining[from] = true
		case alive:
			delete(st.draining, from) // a life that has not drained
		}
		draining := st.draining[from]
		if !alive {
			delete(st.draining, from) // its stream records: forgetStreams, above
		}
		st.mu.Unlock()
		if alive {
			continue
		}
		promoted, dropped := 0, 0
		for _, key := range keys {
			// Only where balancers now send the key: a copy the ring gives
			// to another edge (views differed when the owner chose us)
			// would make a second session.
			if m, ok := snap.Locate([]byte(key)); !draining && ok && m.Name == r.o.self && r.promote(key, from, "owner gone", nil) {
				promoted++
				continue
			}
			if c := st.takeOf(key, from); c != nil {
				c.v.forget()
				dropped++
			}
		}
		if promoted+dropped > 0 {
			r.log.Info("owner gone: sessions taken over", "owner", from, "promoted", promoted, "dropped", dropped, "owner_drained", draining)
		}
	}
}

// sweepCopies drops copies their owner no longer has: not sent whole again
// staleCopyAge after the owner's stream began anew, or of an owner alive
// that has had no stream here for staleCopyAge.
//
// An owner keeps a stream up to every edge it replicates a session to
// (dialing it again within linkBackoffMax), so one alive and without a
// stream here for that long no longer counts this edge as a replica: it
// took it for dead (a stall, a one-way partition) and moved its sessions
// off, or cannot reach it. The frees it queued for the copies here may
// never have come (the path was down; a retired link writes them only
// within writeWait), and the sessions may have ended since: kept, such a
// copy was promoted at the owner's crash, an ended session back with its
// epoch and history. An owner that cannot reach us has no acknowledged msg
// on its copies here since then (its stream fell back to async) either.
// An owner gone from the cluster is not swept: promoteOrphans takes its
// copies over (within gossip's failure detection, seconds) or drops them.
func (r *replicator) sweepCopies(now time.Time) {
	st := r.store
	st.mu.Lock()
	owners := make([]string, 0, len(st.down))
	for from := range st.down {
		owners = append(owners, from)
	}
	st.mu.Unlock()
	// Asked without the store's lock, which is taken last.
	alive := make(map[string]bool, len(owners))
	for _, from := range owners {
		alive[from] = r.o.member(from)
	}
	abandoned := make(map[string]int)
	st.mu.Lock()
	for key, c := range st.copies {
		began, restarted := st.streams[c.from]
		ended, down := st.down[c.from]
		switch {
		case restarted && c.snapAt.Before(began) && now.Sub(began) > staleCopyAge:
		case down && alive[c.from] && now.Sub(ended) > staleCopyAge:
			abandoned[c.from]++
		default:
			continue
		}
		delete(st.copies, key)
		c.v.forget()
	}
	st.mu.Unlock()
	for from, n := range abandoned {
		r.log.Info("copies dropped: their owner, alive, has had no replication stream here for a minute", "owner", from, "copies", n)
	}
}

// yield gives the session of key up to holder, which took it over at
// term: a fence says this edge's copy of the session is an older
// incarnation's (it was paused or cut off while holder promoted it). The
// session stops sequencing, its waiting msgs are dropped unshown and its
// participants are closed with 1012: they resume on holder, resending what
// was not acknowledged.
func (r *replicator) yield(key, holder string, term uint64) {
	if holder == r.o.self {
		return
	}
	h := r.srv.hub
	sh := h.shardOf(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := sh.sessions[key]
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.v1 == nil || s.v1.term >= term || s.movedTo != "" {
		return
	}
	s.movedTo = holder
	sh.moved[key] = handover{edge: holder, until: time.Now().Add(settleWindow)}
	s.v1.dropPending()
	r.release(s)
	if o := h.owner.Load(); o != nil {
		o.unpin(key)
	}
	for _, p := range s.participants {
		p.stop(closeServiceRestart, "session taken over by "+holder)
	}
	if len(s.participants) == 0 {
		h.freeIdle(sh, s)
	}
	h.metrics.fencedOwners.Inc()
	r.log.Warn("fenced: another edge took this session over while this one was unreachable; handing its participants over", "key", httplog.KeyString(key), "holder", holder, "term", term)
}

// handoffState is s's v1 state as a hand-off entry: every seq the history
// holds, holes as null, the msgs waiting for the replica included (a
// hand-off freezes the session: they were sequenced, and the new owner
// shows them). Called with s.mu held.
func handoffState(key string, v *v1Session) handoffSession {
	hs := handoffSession{Key: key, Epoch: v.epoch, Seq: v.seq, Term: v.term}
	// The envelopes are copied (frames go back to their pool) into one
	// array for the session, not one each: a drain copies every session's
	// history at once, under its lock.
	size := 0
	v.entries(func(_ uint64, f *frame) {
		if f != nil {
			size += len(f.payload())
		}
	})
	buf := make([]byte, 0, size)
	if v.n > 0 {
		hs.History = make([]json.RawMessage, 0, v.n)
	}
	v.entries(func(_ uint64, f *frame) {
		if f == nil {
			hs.History = append(hs.History, json.RawMessage("null"))
			return
		}
		start := len(buf)
		buf = append(buf, f.payload()...)
		hs.History = append(hs.History, json.RawMessage(buf[start:len(buf):len(buf)]))
	})
	return hs
}
