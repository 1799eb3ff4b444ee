package sessions

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// FuzzHubEvents drives the relay core without sockets (newPresenceHub)
// through an order of events the input chooses, on two session keys and
// a few clients: joins (ringlb.v1 or raw; editors, anonymous viewers,
// token holders, so a full session unseats a viewer and a token holder
// reclaims a viewers' session of the other mode), leaves, msgs, the
// presence interval ending, a drain's hand-off or a fence's yield and
// the participants' closing after it, another edge's hand-over mark
// expiring, a participant closed (a slow consumer), its queued frames
// read. Time stands still between events but where one says an interval
// ended: held presence timers are stopped after each.
//
// What each participant reads must make sense to a client: a welcome
// first; a join of someone it does not hold present, a leave of someone it
// does; msgs from those it holds present, with their acks, at seqs one
// after another from the welcome's; nothing the hub sends once its session
// was handed on. At the end, after one last interval, every participant
// still in a session that was not handed on, and not closed, holds the
// session's true participants present.
func FuzzHubEvents(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		runHubEvents(t, in)
	})
}

// The events. The input is a byte of config (runHubEvents), then two
// bytes an event: what, then whom and where — bits 0–2 the client (slot
// mod hubFuzzSlots), bit 3 the key, bits 4–5 both set for raw mode, bits
// 6–7 the role of a joining client.
const (
	evJoin     = iota // client (slot) joins key: arg's mode and role
	evLeave           // client's reader ends: it leaves its session
	evPublish         // client sends a msg (raw: a frame)
	evInterval        // key's presence interval ends (its timer fires)
	evQuiet           // key's interval ends, and the next one passes quiet
	evHandOff         // a drain freezes key's session for its new owner
	evHandedOn        // the drain closes the frozen session's participants
	evYield           // a fence: key's session yields to a newer owner
	evSweep           // hand-over marks and claims expire
	evStop            // client is closed (a slow consumer, a revocation)
	evRead            // client's writer writes what is queued
	numHubEvents
)

// hubFuzzSlots is how many clients an input plays with.
const hubFuzzSlots = 5

// Roles of a joining client (arg>>6).
const (
	roleEditor = iota // anonymous editor
	roleEditor2
	roleViewer // anonymous viewer: unseated for a token holder
	roleHolder // token holder (editor)
)

// hubClient is one connection of the fuzz: a participant and what its
// client has read.
type hubClient struct {
	p       *participant
	key     string
	view    presenceView      // ringlb.v1: who it holds present
	welcome bool              // ringlb.v1: its welcome came
	seq     uint64            // ringlb.v1: the last seq of a msg or ack it got
	rawSeen map[string]uint64 // raw: the last frame of each sender it got
	sent    uint64            // msgs (frames) it sent
	// frozen, from its session's hand-off (≥ 0), is how many frames were
	// queued for it then: all it may still get.
	frozen int
	closed bool // its writer met its stop: it writes nothing more
}

func runHubEvents(t *testing.T, in []byte) {
	if len(in) == 0 {
		return
	}
	ph := newPresenceHub(t)
	h := ph.h
	// Config: bits 0–1 max_participants − 2; bit 4 an idle_grace; bit 5
	// a cap of one idle session.
	config := in[0]
	h.maxParticipants = 2 + int(config&3)
	if config&0x10 != 0 {
		// Kept idle past the test (close stops the timers): a session
		// revived or trimmed, never expired.
		h.idleGrace = time.Hour
	}
	if config&0x20 != 0 {
		h.idle.limit.Store(1)
	}
	defer h.close()
	in = in[1:]
	if len(in) > 128 {
		in = in[:128] // 64 events
	}

	keys := [2]string{"a", "b"}
	var (
		slots  [hubFuzzSlots]*hubClient
		of     = map[*participant]*hubClient{}
		frozen [2][]*participant // a hand-off's participants, closed when handed on
		conns  int
		log    []string
	)
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s\nevents:\n  %s", fmt.Sprintf(format, args...), strings.Join(log, "\n  "))
	}
	sessionOf := func(key string) *session {
		sh := h.shardOf(key)
		sh.mu.Lock()
		defer sh.mu.Unlock()
		return sh.sessions[key]
	}
	name := func(slot int) string { return string(rune('A' + slot)) }

	// read checks what c's client reads now.
	read := func(c *hubClient) {
		es, stopped := ph.read(c.p)
		log = append(log, fmt.Sprintf("%s reads %d frames (closed: %v)", c.p.id, len(es), stopped))
		for _, e := range es {
			if c.frozen == 0 {
				fail("%s got %s (from %q, seq %d) after its session was handed on", c.p.id, e.Type, e.From+e.Participant, e.Seq)
			}
			if c.frozen > 0 {
				c.frozen--
			}
			if !c.p.v1 {
				if e.Type != "raw" || e.From == c.p.id {
					fail("%s (raw) got %+v", c.p.id, e)
				}
				if e.Seq <= c.rawSeen[e.From] {
					fail("%s got frame %d of %s after its frame %d", c.p.id, e.Seq, e.From, c.rawSeen[e.From])
				}
				c.rawSeen[e.From] = e.Seq
				continue
			}
			if !c.welcome && e.Type != "welcome" {
				fail("%s got %s %s before its welcome", c.p.id, e.Type, e.From+e.Participant)
			}
			switch e.Type {
			case "welcome":
				if c.welcome {
					fail("%s welcomed twice", c.p.id)
				}
				c.welcome, c.seq = true, e.Seq
				for _, q := range e.Participants {
					if c.view[q.Participant] {
						fail("%s's welcome lists %s twice", c.p.id, q.Participant)
					}
					c.view[q.Participant] = true
				}
				if e.Participant != c.p.id || !c.view[c.p.id] {
					fail("%s's welcome names %s, lists %v", c.p.id, e.Participant, e.Participants)
				}
			case "join":
				if c.view[e.Participant] {
					fail("%s told %s joined, which it holds present", c.p.id, e.Participant)
				}
				c.view[e.Participant] = true
			case "leave":
				if !c.view[e.Participant] || e.Participant == c.p.id {
					fail("%s told %s left, which it does not hold present", c.p.id, e.Participant)
				}
				delete(c.view, e.Participant)
			case "msg", "ack":
				if e.Type == "msg" && (e.From == c.p.id || !c.view[e.From]) {
					fail("%s got a msg from %s, not told of (it holds %v present)", c.p.id, e.From, c.view)
				}
				if e.Seq != c.seq+1 {
					fail("%s got %s seq %d after seq %d", c.p.id, e.Type, e.Seq, c.seq)
				}
				c.seq = e.Seq
			default:
				fail("%s got %+v", c.p.id, e)
			}
		}
		if stopped {
			c.closed = true
		}
	}

	// quieten stops the timers of held presence: between events no time
	// passes, the interval ends only by evInterval or evQuiet.
	quieten := func() {
		h.eachSession(func(_ *hubShard, s *session) {
			s.mu.Lock()
			if s.v1 != nil && s.v1.held != nil {
				s.v1.held.timer.Stop()
			}
			s.mu.Unlock()
		})
	}

	for i := 0; i+1 < len(in); i += 2 {
		kind, arg := int(in[i])%numHubEvents, in[i+1]
		slot := int(arg&7) % hubFuzzSlots
		k := int(arg>>3) & 1
		key := keys[k]
		c := slots[slot]
		switch kind {
		case evJoin:
			if c != nil {
				continue // one connection per client at a time
			}
			raw, role := (arg>>4)&3 == 3, int(arg>>6)
			conns++
			p := ph.newParticipant(fmt.Sprintf("%s%d", name(slot), conns))
			p.v1 = !raw
			// A short queue, so a client that reads too seldom is a slow
			// consumer, closed as it is sent to (hub.deliver).
			p.out.limit = 8
			switch role {
			case roleViewer:
				p.viewer = true
			case roleHolder:
				p.user, p.shared = "user-"+name(slot), true
				p.token.Store(&heldToken{TokenClaims: TokenClaims{Session: key, User: p.user, Role: RoleEditor}})
			}
			log = append(log, fmt.Sprintf("%s joins %s (v1 %v, role %d)", p.id, key, p.v1, role))
			// Admitted as the Server admits (hub.reserve): a key handed
			// on is sent to its new owner.
			if h.reserve([]byte(key), "edge-1", nil) != "" {
				log = append(log, "  redirected")
				continue
			}
			p.admitted = true
			unseated := counterValue(ph.m.unseated)
			if err := h.join([]byte(key), p); err != nil {
				log = append(log, "  refused: "+err.Error())
				continue
			}
			if n := counterValue(ph.m.unseated) - unseated; n > 0 {
				log = append(log, fmt.Sprintf("  unseating %v", n))
			}
			c = &hubClient{p: p, key: key, view: presenceView{}, rawSeen: map[string]uint64{}, frozen: -1}
			slots[slot], of[p] = c, c
		case evLeave:
			if c == nil {
				continue
			}
			// Its writer wrote what was queued, then its reader ended
			// (participant.finish).
			log = append(log, c.p.id+" leaves")
			read(c)
			c.p.stop(0, "")
			h.leave(c.p)
			slots[slot] = nil
		case evPublish:
			if c == nil || c.p.viewer {
				continue // a viewer's msgs are refused, its raw frames dropped
			}
			c.sent++
			log = append(log, fmt.Sprintf("%s sends %d", c.p.id, c.sent))
			if c.p.v1 {
				h.publish(c.p, fmt.Appendf(nil, "%d", c.sent), time.Now())
				continue
			}
			f := jsonFrame(env{Type: "raw", From: c.p.id, Seq: c.sent})
			h.broadcast(c.p, f)
			f.release()
		case evInterval, evQuiet:
			s := sessionOf(key)
			if s == nil || s.v1 == nil {
				continue
			}
			log = append(log, key+"'s presence interval ends")
			h.flushPresence(s)
			if kind == evQuiet {
				log = append(log, "  and the next one passes quiet")
				s.mu.Lock()
				s.v1.presenceAt = 0
				s.mu.Unlock()
			}
		case evHandOff:
			// What ownership.handOff does to a session under its locks
			// (an ownership with a ring and peers is more than this
			// needs): frozen, marked moved, its waiting msgs dropped; its
			// participants closed once the new owner has it (evHandedOn).
			sh := h.shardOf(key)
			sh.mu.Lock()
			s := sh.sessions[key]
			if s == nil {
				sh.mu.Unlock()
				continue
			}
			s.mu.Lock()
			if s.movedTo == "" {
				log = append(log, key+" handed off")
				s.movedTo = "edge-2"
				sh.moved[key] = handover{edge: "edge-2", until: time.Now().Add(settleWindow), empty: s.v1 == nil}
				if s.v1 != nil {
					_ = handoffState(key, s.v1)
					s.v1.dropPending()
				}
				frozen[k] = append(frozen[k], s.participants...)
				markHandedOn(s, of)
			}
			s.mu.Unlock()
			sh.mu.Unlock()
		case evHandedOn:
			if frozen[k] == nil {
				continue
			}
			log = append(log, key+" handed on: its participants closed")
			for _, p := range frozen[k] {
				p.stop(closeServiceRestart, "session moved to edge-2")
			}
			frozen[k] = nil
		case evYield:
			// What replicator.yield does under its locks (a replicator
			// needs a cluster; nothing here is replicated, so its release
			// and unpin have nothing to do).
			sh := h.shardOf(key)
			sh.mu.Lock()
			s := sh.sessions[key]
			if s == nil {
				sh.mu.Unlock()
				continue
			}
			s.mu.Lock()
			if s.v1 != nil && s.movedTo == "" {
				log = append(log, key+" yields to edge-3")
				s.movedTo = "edge-3"
				sh.moved[key] = handover{edge: "edge-3", until: time.Now().Add(settleWindow)}
				s.v1.dropPending()
				markHandedOn(s, of)
				for _, p := range s.participants {
					p.stop(closeServiceRestart, "session taken over by edge-3")
				}
				if len(s.participants) == 0 {
					if s.v1.idleTimer != nil {
						s.v1.idleTimer.Stop()
						s.v1.idleTimer = nil
					}
					h.free(sh, s)
				}
			}
			s.mu.Unlock()
			sh.mu.Unlock()
		case evSweep:
			log = append(log, "hand-over marks expire")
			h.sweep(time.Now().Add(settleWindow + time.Second))
		case evStop:
			if c == nil {
				continue
			}
			log = append(log, c.p.id+" closed")
			c.p.stop(closeTryAgainLater, "closed by the fuzz")
		case evRead:
			if c == nil {
				continue
			}
			read(c)
		}
		quieten()
	}

	// One last interval, then every client reads what it was sent.
	for _, key := range keys {
		if s := sessionOf(key); s != nil && s.v1 != nil {
			h.flushPresence(s)
		}
	}
	log = append(log, "(the end: a last interval, everyone reads)")
	for _, c := range slots {
		if c == nil {
			continue
		}
		read(c)
		s := c.p.session
		s.mu.Lock()
		here := slices.Contains(s.participants, c.p)
		var ids []string
		for _, q := range s.participants {
			ids = append(ids, q.id)
		}
		moved := s.movedTo != ""
		var seq uint64
		if s.v1 != nil {
			seq = s.v1.seq
		}
		s.mu.Unlock()
		if !c.p.v1 || !here || moved || c.closed || c.p.stopping() {
			continue
		}
		if !c.view.is(ids) {
			fail("%s holds %v present, the session has %v", c.p.id, c.view, ids)
		}
		if c.seq != seq {
			fail("%s got msgs up to seq %d, the session is at %d", c.p.id, c.seq, seq)
		}
	}
	if testing.Verbose() {
		t.Logf("events:\n  %s", strings.Join(log, "\n  "))
	}
}

// markHandedOn records, for each participant of s handed on, how many frames
// are queued for it: all it may still read. Called with s.mu held.
func markHandedOn(s *session, of map[*participant]*hubClient) {
	for _, p := range s.participants {
		if c := of[p]; c != nil {
			p.out.mu.Lock()
			c.frozen = p.out.n
			p.out.mu.Unlock()
		}
	}
}
