package sessions

import (
	"container/list"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/configs"
)

// protocolV1 is the subprotocol of the JSON envelope protocol
// (docs/CONTRACT.md, "WebSocket relay"); a connection without it speaks raw
// mode.
const protocolV1 = configs.ProtocolV1

// Refusals of a join to a session of the other mode (1008). A key's first
// participant sets its mode: raw frames are not envelopes and envelopes are
// sequenced, so mixing them would give one side frames it cannot read.
var (
	errSessionRaw = errors.New("session speaks raw mode, not " + protocolV1)
	errSessionV1  = errors.New("session speaks " + protocolV1 + ", not raw mode")
)

// joinInfo is who a participant is and how it speaks, set by the Server
// before run and read-only after.
type joinInfo struct {
	v1     bool   // negotiated ringlb.v1
	id     string // participant id, unique per connection
	user   string // the token's user, else id
	shared bool   // user came from a token: several connections may share it
	viewer bool   // token role viewer, or anonymous viewer: may not send
	// resume is the ?resume=SEQ&epoch=E of the upgrade (resumeSet tells
	// whether it was given).
	resumeSet   bool
	resumeAfter uint64
	resumeEpoch string
}

// newParticipantID returns a random id: unguessable, so a participant id
// seen in a session says nothing about other sessions.
func newParticipantID() string {
	var b [9]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// v1Session is the state of a ringlb.v1 session: its incarnation (epoch),
// its sequence and its bounded history. Guarded by the session's lock. A
// replica's copy of another edge's session is one too (replica.go), which a
// promotion turns into a live session as it is.
type v1Session struct {
	epoch string
	seq   uint64 // last sequence number given; the first msg gets 1
	// committed is the last seq that may be shown: sent to the others,
	// acked, replayed, named in welcome. It trails seq only under sync
	// replication, while a msg waits for its replica (pending).
	committed uint64
	// term counts the session's owners: 1 on the edge that started it,
	// plus one per promotion on a replica (replication.go). A record or a
	// fence of a higher term tells an owner it was superseded.
	term uint64
	// pending are sequenced msgs waiting for the replica (sync), oldest
	// first, each holding a reference: they go out at commit.
	pending []pendingMsg
	// bumpable: promoted from a replica and nothing sequenced since, so a
	// resume from beyond seq names msgs the dead owner sequenced that never
	// reached the replica (async): seq skips past them (resume).
	bumpable bool
	// promotedSeq is seq when the copy was promoted: resumes may move seq
	// at most promotionSkip past it in all (skipLost).
	promotedSeq uint64
	// history holds the last msg frames sent to recipients (seq
	// seq-len+1 .. seq), each holding one reference, oldest at head. A nil
	// entry is a hole: a seq the dead owner gave that never reached this
	// edge (bumpable); replays skip it.
	history     []*frame
	head        int // index of the oldest entry in history (a ring)
	n           int // entries held
	bytes       int // their wire bytes
	maxMessages int
	maxBytes    int
	idleGen     uint64      // bumped each time the session goes idle
	idleTimer   *time.Timer // runs while no participant is left
	// budget is the edge's bound on all histories together (budget.go).
	budget *historyBudget
	// presenceAt is when presence last went out (Unix ns; 0: never);
	// presenceTick counts joins and leaves, so a batch knows who was told
	// what; held, while not nil, is what waits for the batch (presence.go).
	presenceAt   int64
	presenceTick uint32
	held         *heldPresence
	// idleElem is this session's place among the idle sessions (idle.go),
	// nil while it has participants; keptElem its place among those
	// holding a history, nil too once the budget took it.
	idleElem, keptElem *list.Element
}

// pendingMsg is a msg sequenced under sync replication, waiting for the
// replica to have it before anyone sees it.
type pendingMsg struct {
	f    *frame
	from *participant
	seq  uint64
}

func newV1Session(maxMessages, maxBytes int, budget *historyBudget) *v1Session {
	var e [12]byte
	_, _ = rand.Read(e[:])
	return &v1Session{epoch: base64.RawURLEncoding.EncodeToString(e[:]), term: 1, maxMessages: maxMessages, maxBytes: maxBytes, budget: budget}
}

// remember appends f (seq v.seq) to the history, evicting the oldest
// entries beyond either bound, and beyond the edge's (budget.go). It takes
// over the caller's reference.
func (v *v1Session) remember(f *frame) {
	size := len(f.wire())
	if v.maxMessages <= 0 || v.maxBytes <= 0 || size > v.maxBytes {
		// No history kept, or this one message alone is over the byte
		// bound: the history is emptied, so a resume from before it gets
		// reset rather than a gap.
		v.forget()
		f.release()
		return
	}
	for v.n > 0 && (v.n >= v.maxMessages || v.bytes+size > v.maxBytes) {
		v.dropOldest()
	}
	// A history is a holder (sendbudget.go): low on memory it may not grow
	// past lowMemoryHold, as at the budget idle histories give way first,
	// then this one's oldest msgs — a resume from before them gets a reset.
	if !v.budget.tryTakeHeld(int64(v.bytes), int64(size)) && !v.budget.takeFromIdle(int64(size)) {
		for !v.budget.tryTakeHeld(int64(v.bytes), int64(size)) {
			if v.n == 0 {
				// The edge's histories are full of live sessions': this
				// one keeps none, like a message over its own bound.
				f.release()
				return
			}
			v.dropOldest()
		}
	}
	if v.n == len(v.history) {
		// Grow the ring (to at most maxMessages).
		v.history, v.head = growRing(v.history, v.head, v.n, min(max(2*len(v.history), 16), v.maxMessages)), 0
	}
	v.history[(v.head+v.n)%len(v.history)] = f
	v.n++
	v.bytes += len(f.wire())
}

// rememberHole appends a hole (a seq with no msg) to the history.
func (v *v1Session) rememberHole() {
	if v.maxMessages <= 0 {
		return
	}
	for v.n > 0 && v.n >= v.maxMessages {
		v.dropOldest()
	}
	if v.n == len(v.history) {
		v.history, v.head = growRing(v.history, v.head, v.n, min(max(2*len(v.history), 16), v.maxMessages)), 0
	}
	v.history[(v.head+v.n)%len(v.history)] = nil
	v.n++
}

// skipTo moves seq to seq, the seqs between becoming holes (or, beyond the
// history's length, emptying it).
func (v *v1Session) skipTo(seq uint64) {
	if seq <= v.seq {
		return
	}
	if seq-v.seq >= uint64(max(v.maxMessages, 0)) {
		v.forget()
		v.seq = seq
		return
	}
	for v.seq < seq {
		v.rememberHole()
		v.seq++
	}
}

func (v *v1Session) dropOldest() {
	f := v.history[v.head]
	v.history[v.head] = nil
	v.head = (v.head + 1) % len(v.history)
	v.n--
	if f != nil {
		v.bytes -= len(f.wire())
		v.budget.give(int64(len(f.wire())))
		f.release()
	}
}

// entries calls fn for every seq the history holds, oldest first, up to
// seq (the uncommitted included); f is nil for a hole.
func (v *v1Session) entries(fn func(seq uint64, f *frame)) {
	first := v.seq - uint64(v.n) + 1
	for i := range v.n {
		fn(first+uint64(i), v.history[(v.head+i)%len(v.history)])
	}
}

// dropPending releases the msgs waiting for the replica unsent: the
// session was frozen (a drain) or superseded (fenced), and their senders
// resend them after resuming elsewhere.
func (v *v1Session) dropPending() {
	for i := range v.pending {
		v.pending[i].f.release()
		v.pending[i] = pendingMsg{}
	}
	v.pending = v.pending[:0]
}

// forget releases the whole history.
func (v *v1Session) forget() {
	for v.n > 0 {
		v.dropOldest()
	}
	v.history, v.head = nil, 0
}

// since returns the committed history after seq after, oldest first,
// holes left out, and whether the history reaches back that far (otherwise
// the client needs a reset).
func (v *v1Session) since(after uint64) (frames []*frame, ok bool) {
	if after == v.committed {
		// Nothing shown after it: nothing to replay, whatever the history
		// holds. Under sync replication msgs waiting for the replica may
		// fill it (more of them than it keeps, or the edge's budget
		// taking its oldest): the oldest entry is then past after+1, and
		// a client that missed nothing was told reset "history".
		return nil, true
	}
	first := v.seq - uint64(v.n) + 1 // seq of the oldest entry held
	if after > v.committed || after+1 < first {
		return nil, false
	}
	end := v.n - int(v.seq-v.committed)
	for i := int(after + 1 - first); i < end; i++ {
		if f := v.history[(v.head+i)%len(v.history)]; f != nil {
			frames = append(frames, f)
		}
	}
	return frames, true
}

// Envelopes. Server frames are built by appending to a frame's buffer, so
// a msg costs one exactly sized buffer (shared by every recipient and the
// history) and no encoder.

// inbound is a client frame of ringlb.v1.
type inbound struct {
	Type  string          `json:"type"`
	Data  json.RawMessage `json:"data"`
	TS    json.RawMessage `json:"ts"`
	After *uint64         `json:"after"`
	Epoch string          `json:"epoch"`
	Token string          `json:"token"` // a refresh's join token
}

// memberInfo is one entry of welcome.participants and the body of
// join/leave events.
type memberInfo struct {
	Participant string `json:"participant"`
	User        string `json:"user"`
}

type welcomeFrame struct {
	Type         string       `json:"type"`
	Session      string       `json:"session"`
	Participant  string       `json:"participant"`
	User         string       `json:"user"`
	Edge         string       `json:"edge"`
	Seq          uint64       `json:"seq"`
	Epoch        string       `json:"epoch"`
	Participants []memberInfo `json:"participants"`
	// Expires is when the participant's join token expires (Unix seconds;
	// absent without one): refresh it before then (lapse.go).
	Expires int64 `json:"expires,omitempty"`
}

type presenceFrame struct {
	Type string `json:"type"`
	memberInfo
}

type resetFrame struct {
	Type   string `json:"type"`
	Seq    uint64 `json:"seq"`
	Epoch  string `json:"epoch"`
	Reason string `json:"reason"`
}

type errorFrame struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// textFrame returns an unpooled text frame holding body: its buffer is
// exactly sized and goes to the GC with the last reference, so frames kept
// in a history hold only their own bytes.
func textFrame(size int, build func([]byte) []byte) *frame {
	f := &frame{kind: websocket.TextMessage, buf: make([]byte, frameHeadroom, frameHeadroom+size)}
	f.buf = build(f.buf)
	f.encode()
	f.readAt = time.Now()
	f.refs.Store(1)
	return f
}

// text returns a text frame holding body from the hub's size-classed
// pools (textPools): for the frames written per msg, so that a msg costs
// no allocation once the pools are warm, and one kept in a history holds
// about its own size.
func (h *hub) text(size int, build func([]byte) []byte) *frame {
	f := h.texts.get(size)
	f.kind = websocket.TextMessage
	f.buf = build(f.buf)
	f.encode()
	f.readAt = time.Now()
	return f
}

// jsonFrame encodes v (a server envelope) as an unpooled text frame.
func jsonFrame(v any) *frame {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own envelope types get here; they always encode.
		panic("sessions: encode envelope: " + err.Error())
	}
	return textFrame(len(b), func(buf []byte) []byte { return append(buf, b...) })
}

func unixMillis(t time.Time) int64 { return t.UnixMilli() }

// deliver enqueues f to p without blocking, like broadcast: a full queue
// makes p a slow consumer (1013). It takes a reference of its own.
func (h *hub) deliver(p *participant, f *frame) {
	if p.stopping() {
		return
	}
	f.retain()
	if !p.enqueue(f) {
		f.release()
		if p.stop(closeTryAgainLater, "send queue full, or the edge's send queues full together") {
			h.metrics.slowConsumers.Inc()
		}
	}
}

// deliverOthers enqueues f to every participant of s but except (nil: all)
// and returns how many that is.
func (h *hub) deliverOthers(s *session, except *participant, f *frame) (n int) {
	for _, q := range s.participants {
		if q != except {
			h.deliver(q, f)
			n++
		}
	}
	return n
}

// joinV1 greets p (already in s.participants) with welcome, replays the
// history it asked for on the upgrade, and tells the others. Called with
// s.mu held, so nothing is sequenced in between: the replay comes before
// any live msg.
func (h *hub) joinV1(s *session, p *participant) {
	v := s.v1
	if p.resumeSet {
		h.skipLost(s, p.resumeAfter, p.resumeEpoch) // before the welcome names seq
	}
	// Told to the others now, or with the next presence batch (alone:
	// nobody to tell).
	v.presenceTick++
	p.joinTick = v.presenceTick
	p.announced = len(s.participants) == 1 || h.presenceDue(s, time.Now())
	if !p.announced {
		h.metrics.presencePaced.Inc()
	}
	w := welcomeFrame{
		Type: "welcome", Session: s.key, Participant: p.id, User: p.user, Edge: h.edge,
		Seq: v.committed, Epoch: v.epoch, Participants: make([]memberInfo, 0, len(s.participants)),
	}
	for _, q := range s.participants {
		w.Participants = append(w.Participants, memberInfo{q.id, q.user})
	}
	if t := p.token.Load(); t != nil {
		w.Expires = t.Expires.Unix()
	}
	f := jsonFrame(w)
	h.deliver(p, f)
	f.release()
	if p.resumeSet {
		h.resume(s, p, p.resumeAfter, p.resumeEpoch)
	}
	if len(s.participants) > 1 && p.announced {
		f := jsonFrame(presenceFrame{"join", memberInfo{p.id, p.user}})
		h.deliverOthers(s, p, f)
		f.release()
	}
}

// leaveV1 tells the remaining participants p left: now, or with the next
// presence batch those that knew of it (presence.go). A session handed on
// tells nobody: its participants are being closed for the new owner, which
// tells its own presence (and its held batch was dropped unsent, p's join
// with it). Called with s.mu held.
func (h *hub) leaveV1(s *session, p *participant) {
	if len(s.participants) == 0 {
		h.endPresence(s)
		return
	}
	if s.movedTo != "" {
		return
	}
	s.v1.presenceTick++
	if !p.announced || !h.presenceDue(s, time.Now()) {
		h.holdLeave(s, p)
		return
	}
	f := jsonFrame(presenceFrame{"leave", memberInfo{p.id, p.user}})
	h.deliverOthers(s, nil, f)
	f.release()
}

// skipLost moves a promoted session's seq to after when a client resumes
// from beyond it, before anything is sequenced there: that client saw msgs
// up to after, which the dead owner sequenced and its replica never
// received (async, or sync fallen back). They are lost; skipping their
// seqs keeps the epoch (no reset) and one msg per seq (no later msg reuses
// a seq a client holds another msg at). Called with s.mu held.
//
// The skip is the client's word, and its holes take history slots as msgs
// do, so resumes together may move seq at most promotionSkip past the
// copy's: the reserve reserveLost sets aside for the same unseen msgs, a
// loss no takeover avoids anyway. A client further ahead gets reset
// "ahead". Beyond it, any participant (a viewer too: resume is reading)
// emptied the copy's history with one claim, and clients behind the copy
// got reset "history" for msgs it held (TestOneClaimCannotEmptyAPromotedHistory);
// bounded per resume rather than from the copy, resume after resume
// pushed seq as far as a client liked
// (TestResumesCannotPushAPromotedSessionsSeq).
func (h *hub) skipLost(s *session, after uint64, epoch string) {
	v := s.v1
	if epoch != v.epoch || after <= v.committed || !v.bumpable || after-v.promotedSeq > promotionSkip(v.maxMessages) {
		return
	}
	h.metrics.replicationLost.Add(float64(after - v.seq))
	v.skipTo(after)
	v.committed = v.seq
	if r := h.repl.Load(); r != nil {
		r.skipped(s)
	}
}

// reserveLost starts a promoted session's first msg past a reserve of
// seqs: the dead owner may have sequenced msgs beyond the copy (async, or a
// sync stream fallen back) that clients saw and have not resumed with yet
// — skipLost moves seq past those of the clients that did. Sequenced at
// seq+1, such a seq would name a second msg, and a client holding the first
// would resume without a reset and never know (seen under load in the
// chaos crash: "seq 17 names two msgs"). The reserve is holes, kept in the
// history like any, so a client behind the copy still replays what the
// copy holds; it is a quarter of the history, at most promotionReserve. A
// dead owner further ahead than that is beyond what the reserve covers.
// Called with s.mu held, before anything is sequenced.
func (h *hub) reserveLost(s *session) {
	v := s.v1
	v.skipTo(v.seq + promotionSkip(v.maxMessages))
	v.committed = v.seq
	v.bumpable = false
	if r := h.repl.Load(); r != nil {
		r.skipped(s)
	}
}

// promotionReserve bounds reserveLost's seqs: more than a session's msgs
// in flight to a replica at any ordinary moment (a few milliseconds'
// worth), and small beside a history of the default 1000 msgs.
const promotionReserve = 256

// promotionSkip is reserveLost's reserve for a history of maxMessages.
func promotionSkip(maxMessages int) uint64 {
	return uint64(min(promotionReserve, max(maxMessages/4, 1)))
}

// resume replays to p every msg after seq after, or sends reset when the
// epoch is another incarnation's or the history no longer reaches back.
// It returns what the replay costs p's fan-out pace (pace.go). Called with
// s.mu held.
func (h *hub) resume(s *session, p *participant, after uint64, epoch string) (cost int64) {
	v := s.v1
	h.skipLost(s, after, epoch)
	reason := ""
	frames, ok := v.since(after)
	switch {
	case epoch != v.epoch:
		reason = "epoch"
	case !ok && after > v.committed:
		reason = "ahead"
	case !ok:
		reason = "history"
	}
	if reason != "" {
		f := jsonFrame(resetFrame{"reset", v.committed, v.epoch, reason})
		h.deliver(p, f)
		f.release()
		return 0
	}
	if len(frames) == 0 {
		return 0
	}
	for _, f := range frames {
		f.retain()
		cost += fanoutCost(len(f.wire()), 1)
	}
	b := &frame{batch: frames}
	b.refs.Store(1)
	h.deliver(p, b) // the writer takes its msgs one by one (takeReplayed)
	b.release()
	return cost
}

// publish sequences data from p: the others get msg, the history keeps it,
// p gets ack — all under the session lock, so every participant sees one
// order and a resume sees exactly what was live. Under sync replication
// the msg is sequenced and kept, and the rest waits for its replica
// (commit).
func (h *hub) publish(p *participant, data []byte, readAt time.Time) (deliveries int) {
	s := p.session
	s.mu.Lock()
	defer s.mu.Unlock()
	if !relays(s, p) {
		// Not sequenced, not acked: a client handed to another edge by a
		// drain resends it after resuming on the new owner, so it is
		// neither lost nor duplicated.
		return 0
	}
	v := s.v1
	if !p.announced {
		h.sendHeldPresence(s) // its join before its msg
	}
	if v.bumpable {
		h.reserveLost(s)
	}
	v.seq++
	seq := v.seq
	f := h.text(64+len(p.id)+len(data), func(b []byte) []byte {
		b = append(b, `{"type":"msg","seq":`...)
		b = strconv.AppendUint(b, seq, 10)
		b = append(b, `,"from":"`...)
		b = append(b, p.id...) // base64url: nothing to escape
		b = append(b, `","ts":`...)
		b = strconv.AppendInt(b, unixMillis(readAt), 10)
		b = append(b, `,"data":`...)
		b = append(b, data...) // valid JSON: the decoder checked it
		return append(b, '}')
	})
	f.readAt = readAt
	v.bumpable = false
	if r := h.repl.Load(); r != nil && r.replicate(s, f, seq) {
		// Sync: nobody sees it before the replica has it.
		f.retain()
		v.pending = append(v.pending, pendingMsg{f: f, from: p, seq: seq})
		v.remember(f) // takes over our reference
		// Delivered to the others at its commit.
		return len(s.participants) - 1
	}
	deliveries = h.deliverOthers(s, p, f)
	v.remember(f) // takes over our reference
	v.committed = seq
	h.ack(p, seq)
	return deliveries
}

// ack tells p its msg got seq.
func (h *hub) ack(p *participant, seq uint64) {
	ack := h.text(40, func(b []byte) []byte {
		b = append(b, `{"type":"ack","seq":`...)
		b = strconv.AppendUint(b, seq, 10)
		return append(b, '}')
	})
	h.deliver(p, ack)
	ack.release()
}

// commit shows the pending msgs of s up to seq upTo, in order: the others
// get each msg, its sender (if still here) its ack. Called with s.mu held,
// once the replica has them (or replication gave up waiting).
func (h *hub) commit(s *session, upTo uint64) {
	v := s.v1
	if v == nil || s.movedTo != "" {
		return // frozen: the pending msgs were dropped, their senders resend
	}
	n := 0
	for ; n < len(v.pending) && v.pending[n].seq <= upTo; n++ {
		pm := v.pending[n]
		h.deliverOthers(s, pm.from, pm.f)
		if slices.Contains(s.participants, pm.from) {
			h.ack(pm.from, pm.seq)
		}
		pm.f.release()
		v.committed = pm.seq
	}
	if n == 0 {
		return
	}
	rest := copy(v.pending, v.pending[n:])
	clear(v.pending[rest:])
	v.pending = v.pending[:rest]
}

// handleV1 acts on one client envelope and returns what it costs p's
// fan-out pace (pace.go): a delivery to each other participant for a msg,
// the replay for a resume, one delivery for anything else. Mistakes get
// an error frame, not a close: an IDE plugin's bug should not cost its
// user the session.
func (p *participant) handleV1(kind int, payload []byte, readAt time.Time) (cost int64) {
	h := p.srv.hub
	cost = fanoutCost(len(payload), 1)
	if kind != websocket.TextMessage {
		p.sendError("bad_request", protocolV1+" frames are JSON text")
		return
	}
	in, err := decodeInbound(payload)
	if err != nil {
		p.sendError("bad_request", "not a JSON object: "+err.Error())
		return
	}
	switch string(in.typ) {
	case "msg":
		if p.viewer {
			p.sendError("forbidden", "viewers may not send messages")
			return
		}
		if len(in.data) == 0 {
			p.sendError("bad_request", "msg needs data")
			return
		}
		if !p.joinersTurn(len(payload), readAt) {
			return
		}
		p.srv.metrics.messages.Inc()
		cost = fanoutCost(len(payload), h.publish(p, in.data, readAt))
	case "ping":
		ts := in.ts
		if len(ts) == 0 {
			ts = []byte("null")
		}
		f := h.text(64+len(ts), func(b []byte) []byte {
			b = append(b, `{"type":"pong","ts":`...)
			b = append(b, ts...)
			b = append(b, `,"server_ts":`...)
			b = strconv.AppendInt(b, unixMillis(time.Now()), 10)
			return append(b, '}')
		})
		h.deliver(p, f)
		f.release()
	case "resume":
		if !in.afterSet {
			p.sendError("bad_request", "resume needs after")
			return
		}
		if p.replayWaiting() {
			// The replay under way, and the live msgs after it, already
			// bring everything after the earlier resume's seq.
			p.sendError("bad_request", "a replay is already on its way: resume again once it has arrived")
			return
		}
		s := p.session
		s.mu.Lock()
		cost += h.resume(s, p, in.after, string(in.epoch))
		s.mu.Unlock()
	case "token":
		p.refreshToken(in.token)
	default:
		p.sendError("bad_request", "unknown type "+strconv.Quote(string(in.typ)))
	}
	return cost
}

func (p *participant) sendError(code, message string) {
	f := jsonFrame(errorFrame{"error", code, message})
	p.srv.hub.deliver(p, f)
	f.release()
}
