package sessions

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/health"
)

// FuzzHubEvents drives the relay core without sockets (newPresenceHub)
// through an order of events the input chooses, on two session keys and
// a few clients: joins (ringlb.v1 or raw; editors, anonymous viewers,
// token holders, so a full session unseats a viewer and a token holder
// reclaims a viewers' session of the other mode), leaves, msgs, the
// presence interval ending, a drain's hand-off or a fence's yield and
// the participants' closing after it, another edge's hand-over mark
// expiring, a participant closed (a slow consumer), its queued frames
// read; a join resuming from a seq and epoch chosen from what the input
// says (the session's epoch, an earlier one, a wrong one; nothing to
// replay, one msg, all, a seq ahead); a session's idle timer running out
// (its own generation, a stale one, a session no longer in the map); a
// hand-off arriving (the key's epoch continued by the edge that took it,
// this edge's own hand-off coming back, a fresh epoch with or without a
// hole). Time stands still between events but where one says an interval
// ended: held presence timers are stopped after each.
//
// What each participant reads must make sense to a client: a welcome
// first; a join of someone it does not hold present, a leave of someone it
// does; msgs from those it holds present, with their acks, at seqs one
// after another from the welcome's; nothing the hub sends once its session
// was handed on. At the end, after one last interval, every participant
// still in a session that was not handed on, and not closed, holds the
// session's true participants present.
//
// A resume gets, right after its welcome, a reset when it asked for
// another epoch (reason epoch) or a seq past the welcome's (ahead), else
// the msgs the epoch sequenced after its seq up to the welcome's, holes
// left out, or a reset (history) when that history is not all held (it
// must be one when a seq in between names a msg the edge never had). Every
// msg a client reads, replayed or live, is the one sequenced at its seq in
// its epoch. An idle session's timer frees it in its own generation only;
// a hand-off is installed unless the key is live here (a frozen session
// gives way), and is the session a join then finds.
//
// Join pacing (pace.go): a paced msg goes through what the reader does
// before publish — its session's joiners' turn while its sender is a
// newcomer (joinerTurn; held while it says wait, tried again by the
// client's next paced msg, dropped once its sender is stopped) — and
// charges its sender's own fan-out bucket after. Time, which joinerTurn
// reads from the clock, advances for a session's pacing only, by an
// event that moves its participants' joins, its buckets and its count
// back. The newcomers' count is never below zero and is always the
// participants counted in (so 0 once every newcomer has left); a recount
// counts no participant stopped or past its two seconds; the joiners'
// bucket never holds more than a second's worth; a msg waits only in its
// sender's first second, and its sender's own bucket owes at most a
// second. Not reached: the sleeps of joinersTurn and pace (each wait is
// one try an event), their metrics and max_incoming_bytes charge, and a
// peer that closed its side (connected, which needs a socket).
func FuzzHubEvents(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		runHubEvents(t, in, false)
	})
}

// The events. The input is a byte of config (runHubEvents), then two
// bytes an event: what (its low four bits: the seeds from before the last
// five events are all below 11, and keep their meaning), then whom and
// where — bits 0–2 the client (slot mod hubFuzzSlots), bit 3 the key,
// bits 4–5 both set for raw mode, bits 6–7 the role of a joining client
// (evResume, evExpire, evInstall, evPaced and evAge read bits 4–7 their
// own way).
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
	evResume          // client joins key as a v1 editor resuming: bits 4–5 the epoch, 6–7 the seq
	evExpire          // key's idle timer runs: bits 4–5 its generation, stale, or a past session's
	evInstall         // a hand-off of key arrives: bits 4–5 what state, 6–7 msgs the sender added
	evPaced           // client sends a msg paced as its reader does (or tries its held one again): bits 4–5 its size
	evAge             // key's session's pacing clocks advance: bits 4–6 by how much (paceAges)
	numHubEvents
)

// paceAges are the steps evAge advances a session's pacing clocks by:
// within a newcomer's first second, past it, past its two counted ones.
var paceAges = [8]time.Duration{10 * time.Millisecond, 60 * time.Millisecond, 300 * time.Millisecond, 600 * time.Millisecond, time.Second, 1500 * time.Millisecond, 2 * time.Second, 3 * time.Second}

// pacedSizes are the lengths of evPaced's data (bits 4–5), past a
// FanoutDeliveryBytes' worth at the last.
var pacedSizes = [4]int{0, 200, 1500, 6000}

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
	// queued for it then (markHandedOn): all it may still get.
	frozen int
	closed bool // its writer met its stop: it writes nothing more

	epoch string // ringlb.v1: its welcome's
	// resume is what it asked to resume from, nil for a plain join;
	// resuming, that its welcome came and the frame after it did not yet.
	resume   *resumeAsk
	resuming bool
	// want are the seqs its replay must bring yet, in order; replaying,
	// that the replay began (it is one queued frame, however many msgs).
	want      []uint64
	replaying bool

	// held is its paced msg waiting its session's joiners' turn (nil:
	// none): its reader reads nothing more meanwhile.
	held *pacedMsg
	// joinTop is its session's last seq when it joined: a msg sequenced
	// by then and shown after (sync replication: committed later) may be
	// from someone who left before it came.
	joinTop uint64
}

// pacedMsg is a msg of evPaced as its reader read it.
type pacedMsg struct {
	n      uint64 // its number among what its client sent
	data   []byte // ringlb.v1: its data; raw: the frame's payload
	size   int    // what the reader counts: the whole frame's payload
	readAt time.Time
}

// resumeAsk is a resume on join and what its welcome makes of it: reset, the
// reason of the reset that must come; mayReset, of one that may (the
// history having let go of what was asked).
type resumeAsk struct {
	after           uint64
	epoch           string
	reset, mayReset string
}

// epochLog is what the fuzz knows was sequenced in one epoch: each seq's
// msg ("from data") or hole, first and last the lowest and highest seq
// known (0: none).
type epochLog struct {
	msgs        map[uint64]string
	holes       map[uint64]bool
	first, last uint64
	// lost are seqs of msgs clients may hold that a promoted copy lacked
	// (FuzzHubReplEvents): holes here, never another msg's seq; uncovered,
	// that a promotion lost more than its reserve covers, so a later msg
	// may take one.
	lost      map[uint64]bool
	uncovered bool
}

func (lg *epochLog) add(seq uint64, msg string) {
	if msg == "" {
		lg.holes[seq] = true
	} else {
		lg.msgs[seq] = msg
	}
	if lg.first == 0 {
		lg.first = seq
	}
	lg.last = max(lg.last, seq)
}

// envelope is the frame of msg ("from data") at seq as a hand-off carries
// it; "null" for a hole ("").
func envelope(seq uint64, msg string) json.RawMessage {
	from, data, ok := strings.Cut(msg, " ")
	if !ok {
		return json.RawMessage("null")
	}
	return fmt.Appendf(nil, `{"type":"msg","seq":%d,"from":%q,"ts":0,"data":%s}`, seq, from, data)
}

// runHubEvents runs FuzzHubEvents' input, or FuzzHubReplEvents' with
// repl.
func runHubEvents(t *testing.T, in []byte, repl bool) {
	if len(in) == 0 {
		return
	}
	ph := newPresenceHub(t)
	h := ph.h
	// Config: bits 0–1 max_participants − 2; bits 2–3 the history's
	// msgs (none, 2, 4, 16); bit 4 an idle_grace; bit 5 a cap of one idle
	// session; bit 6 history bytes for about two msgs (of 60–70 bytes).
	config := in[0]
	// Bit 7: max_fanout_bytes_per_second small enough for a msg to a
	// few others to put a bucket in debt, or four times that.
	rate := int64(16 << 10)
	if config&0x80 != 0 {
		rate = 4 << 10
	}
	srv := &Server{}
	srv.fanoutRate.Store(rate)
	srv.auth.Store(&authState{}) // what a token holder's msg is looked at under as it goes (relays)
	h.maxParticipants = 2 + int(config&3)
	h.historyMsgs = [4]int{0, 2, 4, 16}[config>>2&3]
	h.historyByte = 1 << 16
	if config&0x40 != 0 {
		h.historyByte = 150
	}
	if config&0x10 != 0 {
		// Kept idle past the test (close stops the timers): its timer
		// never fires by itself, evExpire runs what it would.
		h.idleGrace = time.Hour
	}
	if config&0x20 != 0 {
		h.idle.limit.Store(1)
	}
	defer h.close()
	in = in[1:]
	var rp *hubFuzzRepl
	if repl {
		if len(in) == 0 {
			return
		}
		h.budget.limit.Store(int64(historyTotals[in[0]&3]))
		rp = newHubFuzzRepl(h, ph.m)
		in = in[1:]
	}
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
		// What was sequenced, per epoch; each key's epochs, oldest first;
		// the session last seen in its map, and those gone from it since;
		// what this edge's last hand-off of it carried.
		logs     = map[string]*epochLog{}
		epochs   [2][]string
		seen     [2]*session
		past     [2][]*session
		handed   [2]*handoffSession
		installs int
		// left is each participant's session's last seq when it left.
		left = map[string]uint64{}
		// joinSkip is the balancer's skip of the join being admitted;
		// promotedHere, the promoted sessions checked (FuzzHubReplEvents).
		joinSkip     []string
		promotedHere = map[*session]bool{}
	)
	logOf := func(epoch string) *epochLog {
		if logs[epoch] == nil {
			logs[epoch] = &epochLog{msgs: map[uint64]string{}, holes: map[uint64]bool{}, lost: map[uint64]bool{}}
		}
		return logs[epoch]
	}
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s\nevents:\n  %s", fmt.Sprintf(format, args...), strings.Join(log, "\n  "))
	}
	sessionOf := h.sessionOf
	name := func(slot int) string { return string(rune('A' + slot)) }
	// liveHere reports whether a session of key lives here (not frozen).
	liveHere := func(key string) bool {
		s := sessionOf(key)
		if s == nil {
			return false
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.movedTo == ""
	}
	// sequenced logs msg at seq of epoch: no seq names two msgs (but
	// where a promotion lost more than its reserve covers).
	sequenced := func(epoch string, seq uint64, msg string) {
		lg := logOf(epoch)
		if old := lg.msgs[seq]; old != "" && !lg.uncovered {
			fail("seq %d of epoch %s names two msgs: %q, then %q", seq, epoch, old, msg)
		}
		delete(lg.lost, seq)
		// Seqs passed over since the last (a promotion's reserve, a
		// resume's lost msgs) are holes.
		for skipped := lg.last + 1; skipped < seq; skipped++ {
			if lg.msgs[skipped] == "" {
				lg.holes[skipped] = true
			}
		}
		lg.add(seq, msg)
	}

	// read checks what c's client reads now.
	read := func(c *hubClient) {
		es, stopped := ph.read(c.p)
		log = append(log, fmt.Sprintf("%s reads %d frames (closed: %v)", c.p.id, len(es), stopped))
		for _, e := range es {
			// A replay is one frame of the queue, however many msgs.
			if !c.replaying {
				if c.frozen == 0 {
					fail("%s got %s (from %q, seq %d) after its session was handed on", c.p.id, e.Type, e.From+e.Participant, e.Seq)
				}
				if c.frozen > 0 {
					c.frozen--
				}
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
			if e.Type == "msg" {
				if got, want := e.From+" "+string(e.Data), logOf(c.epoch).msgs[e.Seq]; got != want {
					fail("%s got msg %q at seq %d of epoch %s, which names %q", c.p.id, got, e.Seq, c.epoch, want)
				}
			}
			if r := c.resume; c.resuming {
				c.resuming = false
				if e.Type == "reset" {
					if e.Reason != r.reset && (r.reset != "" || e.Reason != r.mayReset) || e.Seq != c.seq || e.Epoch != c.epoch {
						fail("%s resumed after %d of epoch %s, welcomed at %d of %s: got %+v (a reset %q must come, %q may)", c.p.id, r.after, r.epoch, c.seq, c.epoch, e, r.reset, r.mayReset)
					}
					c.want = nil
					continue
				}
				if r.reset != "" {
					fail("%s resumed after %d of epoch %s, welcomed at %d of %s: got %s seq %d, not a reset (%s)", c.p.id, r.after, r.epoch, c.seq, c.epoch, e.Type, e.Seq, r.reset)
				}
			}
			if len(c.want) > 0 {
				if e.Type != "msg" || e.Seq != c.want[0] {
					fail("%s's replay brought %s seq %d, not msg seq %d (to come: %v)", c.p.id, e.Type, e.Seq, c.want[0], c.want)
				}
				c.want = c.want[1:]
				c.replaying = len(c.want) > 0
				continue
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
				c.epoch = e.Epoch
				if r := c.resume; r != nil {
					c.resuming = true
					switch {
					case r.epoch != e.Epoch:
						r.reset = "epoch"
					case r.after > e.Seq:
						r.reset = "ahead"
					case r.after < e.Seq:
						r.mayReset = "history"
						lg := logOf(e.Epoch)
						for seq := r.after + 1; seq <= e.Seq; seq++ {
							switch {
							case lg.holes[seq] || lg.lost[seq]:
							case lg.msgs[seq] != "":
								c.want = append(c.want, seq)
							default:
								// Never sequenced here: no history holds it.
								r.reset, c.want = "history", nil
							}
							if r.reset != "" {
								break
							}
						}
					}
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
				// A msg waiting for the replica while its sender left, or
				// before c came, is shown from someone not present.
				early := e.Seq <= c.joinTop || left[e.From] >= e.Seq
				if e.Type == "msg" && (e.From == c.p.id || !c.view[e.From] && !early) {
					fail("%s got a msg from %s, not told of (it holds %v present)", c.p.id, e.From, c.view)
				}
				// Seqs skipped past (a promotion's reserve, a resume's
				// lost msgs) are holes: nothing else is passed over.
				lg := logOf(c.epoch)
				for seq := c.seq + 1; seq < e.Seq; seq++ {
					if !lg.holes[seq] && !lg.lost[seq] {
						fail("%s got %s seq %d after seq %d", c.p.id, e.Type, e.Seq, c.seq)
					}
				}
				if e.Seq <= c.seq {
					fail("%s got %s seq %d after seq %d", c.p.id, e.Type, e.Seq, c.seq)
				}
				c.seq = e.Seq
			default:
				fail("%s got %+v", c.p.id, e)
			}
		}
		if stopped {
			c.closed = true
			return
		}
		// Welcome, reset and replay are queued at once: all read together.
		if c.resuming && c.resume.reset != "" || len(c.want) > 0 {
			fail("%s resumed after %d of epoch %s, welcomed at %d of %s: no reset (%q) or replay (%v) came", c.p.id, c.resume.after, c.resume.epoch, c.seq, c.epoch, c.resume.reset, c.want)
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

	// promoted checks a session of key (k) promoted here since last asked
	// (FuzzHubReplEvents): under sync it holds every seq its owner showed
	// (acknowledged by this edge), and its owner, when its session there
	// lives on (a balancer could not reach it, or gossip took it for
	// dead), has a fence waiting that yields it — then it no longer
	// counts as live.
	promoted := func(k int) {
		s := sessionOf(keys[k])
		if s == nil || promotedHere[s] {
			return
		}
		s.mu.Lock()
		v := s.v1
		var bumpable bool
		var epoch string
		var seq, term uint64
		if v != nil {
			bumpable, epoch, seq, term = v.bumpable, v.epoch, v.seq, v.term
		}
		s.mu.Unlock()
		if !bumpable {
			return
		}
		promotedHere[s] = true
		rp.elsewhere[s] = true
		for _, e := range rp.others {
			inc := e.incs[k]
			if inc == nil || inc.epoch != epoch || inc.term+1 != term {
				continue
			}
			inc.superseded = true
			log = append(log, fmt.Sprintf("  %s's copy of %s promoted here: epoch %s, seq %d, term %d", e.name, keys[k], epoch, seq, term))
			if seq < inc.acked {
				fail("%s promoted from %s at seq %d; %s showed up to %d, acknowledged here", keys[k], e.name, seq, e.name, inc.acked)
			}
			if inc.live {
				if !rp.fenced(e.name, keys[k], term) {
					fail("%s promoted from %s, whose session lives on at term %d: no fence waits for it", keys[k], e.name, inc.term)
				}
				log = append(log, fmt.Sprintf("  %s fenced: its session of %s yields when told", e.name, keys[k]))
				inc.live = false
			}
		}
	}

	// admit joins p to key as the Server does, and gives it slot.
	admit := func(slot int, key string, p *participant) *hubClient {
		if rp != nil {
			// The ring gives the key here (ownership.admit): a copy whose
			// owner is gone or skipped is promoted for the join.
			k := 0
			if key == keys[1] {
				k = 1
			}
			// An edge crashed that gossip has not declared dead yet is
			// one the balancer could not reach: in its skip.
			skip := joinSkip
			for _, e := range rp.others {
				if _, alive := rp.members.alive[e.name]; alive && e.crashed && !slices.Contains(skip, e.name) {
					skip = append(slices.Clip(skip), e.name)
				}
			}
			if rp.r.promoteOnJoin([]byte(key), skip) {
				log = append(log, fmt.Sprintf("  the join promotes the copy (skip %v)", skip))
				promoted(k)
			}
			// Where another edge's session lives, placement sends the
			// join (its claim answered, its pin); past a skip it asks
			// further: not played.
			if e := rp.liveElsewhere(k); e != nil {
				log = append(log, "  redirected to "+e.name)
				return nil
			}
		}
		// Admitted as the Server admits (hub.reserve): a key handed
		// on is sent to its new owner.
		if h.reserve([]byte(key), "edge-1", goneEdges{}) != "" {
			log = append(log, "  redirected")
			return nil
		}
		p.admitted = true
		unseated := counterValue(ph.m.unseated)
		if err := h.join([]byte(key), p); err != nil {
			log = append(log, "  refused: "+err.Error())
			return nil
		}
		if n := counterValue(ph.m.unseated) - unseated; n > 0 {
			log = append(log, fmt.Sprintf("  unseating %v", n))
		}
		c := &hubClient{p: p, key: key, view: presenceView{}, rawSeen: map[string]uint64{}, frozen: -1}
		if s := p.session; s.v1 != nil {
			s.mu.Lock()
			c.joinTop = s.v1.seq
			s.mu.Unlock()
		}
		slots[slot], of[p] = c, c
		return c
	}

	// paced sends c's msg m as its reader does (participant.received,
	// handleV1, the read loop's pace): a newcomer's waits its session's
	// joiners' turn first (joinersTurn, one try of its loop), and what it
	// fanned out is charged to its own bucket after.
	paced := func(c *hubClient, m *pacedMsg) {
		p, s := c.p, c.p.session
		if p.newcomer(m.readAt.UnixNano()) {
			s.mu.Lock()
			countedAt := s.newcomersAt
			s.mu.Unlock()
			before := time.Now().UnixNano()
			wait := h.joinerTurn(p, m.size, rate)
			s.mu.Lock()
			if wait > 0 && !p.newcomer(before) {
				fail("%s's msg waits %v past its first second", p.id, wait)
			}
			if p.gating != (wait > 0) {
				fail("%s gating %v, its msg to wait %v", p.id, p.gating, wait)
			}
			if s.newcomersAt != countedAt {
				for _, r := range s.participants {
					if r.pooled && (r.stopping() || !r.gating && !r.joinedWithin(before, 2*joinerWindow)) {
						fail("%s counted among %s's newcomers: stopped %v, joined %d ms before", r.id, s.key, r.stopping(), uint32(before/int64(time.Millisecond))-r.joinedMs)
					}
				}
			}
			s.mu.Unlock()
			if wait > 0 {
				if p.stopping() {
					log = append(log, fmt.Sprintf("  waits %v: dropped, %s stopped", wait, p.id))
					c.held = nil
					return
				}
				log = append(log, fmt.Sprintf("  waits its turn: %v", wait))
				c.held = m
				return
			}
		}
		c.held = nil
		var deliveries int
		if p.v1 {
			s.mu.Lock()
			seq, epoch := s.v1.seq, s.v1.epoch
			s.mu.Unlock()
			deliveries = h.publish(p, m.data, m.readAt)
			s.mu.Lock()
			now := s.v1.seq
			s.mu.Unlock()
			if now != seq {
				sequenced(epoch, now, fmt.Sprintf("%s %s", p.id, m.data))
			}
		} else {
			f := jsonFrame(env{Type: "raw", From: p.id, Seq: m.n, Data: m.data})
			deliveries = h.broadcast(p, f)
			f.release()
		}
		owed := p.fanout.charge(fanoutCost(m.size, deliveries), rate, m.readAt.UnixNano())
		log = append(log, fmt.Sprintf("  goes to %d, %s owes %v", deliveries, p.id, owed))
		if owed > time.Second {
			fail("%s owes %v of its own bucket, past a second", p.id, owed)
		}
	}

	// checkPace checks the newcomers' count and the joiners' bucket of
	// each session a client or a key has.
	checkPace := func() {
		ss := []*session{sessionOf(keys[0]), sessionOf(keys[1])}
		for _, c := range slots {
			if c != nil {
				ss = append(ss, c.p.session)
			}
		}
		for _, s := range ss {
			if s == nil {
				continue
			}
			s.mu.Lock()
			var pooled int32
			for _, r := range s.participants {
				if r.pooled {
					pooled++
				}
			}
			n, tokens := s.newcomers, s.joiners.tokens
			s.mu.Unlock()
			if n < 0 || n != pooled {
				fail("%s counts %d newcomers, %d of its %d participants counted in", s.key, n, pooled, len(s.participants))
			}
			if tokens > rate {
				fail("%s's joiners' bucket holds %d, past a second's worth (%d)", s.key, tokens, rate)
			}
		}
	}

	// checkRepl checks each live session's pending msgs and history, what
	// is queued to its participants, and edge-2's copies
	// (FuzzHubReplEvents).
	checkRepl := func() {
		// Failed once the locks are released (h.close takes them).
		var bad []string
		failNow := fail
		fail := func(format string, args ...any) {
			if bad == nil {
				bad = append(bad, fmt.Sprintf(format, args...))
			}
		}
		defer func() {
			if bad != nil {
				failNow("%s", bad[0])
			}
		}()
		h.eachSession(func(_ *hubShard, s *session) {
			s.mu.Lock()
			defer s.mu.Unlock()
			v := s.v1
			if v == nil || s.movedTo != "" {
				return
			}
			if uint64(len(v.pending)) != v.seq-v.committed {
				fail("%s at seq %d, committed %d, has %d msgs pending", s.key, v.seq, v.committed, len(v.pending))
			}
			for i, pm := range v.pending {
				if pm.seq != v.committed+1+uint64(i) {
					fail("%s's pending msg %d is seq %d, committed %d", s.key, i, pm.seq, v.committed)
				}
			}
			// Under sync, nothing is shown before edge-2 has it.
			if c := copyIn(rp.r2, s.key); !rp.async && !rp.elsewhere[s] && v.committed > rp.dropped[s] && (c == nil || c.epoch != v.epoch || c.seq < v.committed) {
				var at uint64
				if c != nil {
					at = c.seq
				}
				fail("%s shows seqs up to %d of epoch %s; edge-2's copy is at %d (%v)", s.key, v.committed, v.epoch, at, c != nil)
			}
			if len(v.pending) > 0 && !tracked(s) {
				fail("%s has %d msgs pending (seqs %d–%d) that nothing of its link will show: no batch's commit, orphan or snapshot due", s.key, len(v.pending), v.committed+1, v.seq)
			}
			lg := logOf(v.epoch)
			// Seqs past the last sequenced are a resume's skip past a
			// promotion's lost msgs (skipLost): holes.
			for seq := lg.last + 1; seq <= v.seq; seq++ {
				if lg.msgs[seq] == "" {
					lg.holes[seq] = true
				}
			}
			lg.last = max(lg.last, v.seq)
			v.entries(func(seq uint64, f *frame) {
				switch {
				case f == nil && lg.msgs[seq] != "" && !lg.lost[seq]:
					fail("%s's history holds a hole at seq %d, which names %q", s.key, seq, lg.msgs[seq])
				case f == nil:
					if lg.msgs[seq] == "" {
						lg.holes[seq] = true
					}
				case msgOf(t, f) != lg.msgs[seq]:
					fail("%s's history holds %q at seq %d, which names %q", s.key, msgOf(t, f), seq, lg.msgs[seq])
				}
			})
			for _, p := range s.participants {
				if e, ok := queuedPast(t, p); p.v1 && ok {
					fail("%s has %s seq %d queued, %s committed up to %d", p.id, e.Type, e.Seq, s.key, v.committed)
				}
			}
		})
		st := rp.r2.store
		st.mu.Lock()
		defer st.mu.Unlock()
		for key, c := range st.copies {
			lg := logOf(c.v.epoch)
			c.v.entries(func(seq uint64, f *frame) {
				if f != nil && msgOf(t, f) != lg.msgs[seq] {
					fail("edge-2's copy of %s holds %q at seq %d, which names %q", key, msgOf(t, f), seq, lg.msgs[seq])
				}
			})
		}
	}

	for i := 0; i+1 < len(in); i += 2 {
		kind, arg := int(in[i]&15), in[i+1]
		if rp != nil {
			kind = int(in[i]&31) % numReplEvents
		}
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
			p.srv = srv // what newcomerLeft reads the rate from
			p.v1 = !raw
			// A short queue, so a client that reads too seldom is a slow
			// consumer, closed as it is sent to (hub.deliver).
			p.out.limit = 8
			switch role {
			case roleViewer:
				p.viewer = true
			case roleHolder:
				p.user, p.shared = "user-"+name(slot), true
				p.token.Store(&heldToken{TokenClaims: TokenClaims{Session: key, User: p.user, Role: RoleEditor, Expires: time.Now().Add(time.Hour)}})
			}
			log = append(log, fmt.Sprintf("%s joins %s (v1 %v, role %d)", p.id, key, p.v1, role))
			admit(slot, key, p)
		case evResume:
			if c != nil {
				continue
			}
			conns++
			p := ph.newParticipant(fmt.Sprintf("%s%d", name(slot), conns))
			p.srv = srv
			p.out.limit = 8
			// The epoch: the session's (its last one's, when gone), its
			// first one's, or one it never had.
			epoch := "not-an-epoch"
			if n := len(epochs[k]); n > 0 {
				epoch = epochs[k][n-1]
			}
			if s := sessionOf(key); s != nil && s.v1 != nil {
				s.mu.Lock()
				epoch = s.v1.epoch
				s.mu.Unlock()
			}
			switch arg >> 4 & 3 {
			case 2:
				if len(epochs[k]) > 0 {
					epoch = epochs[k][0]
				}
			case 3:
				epoch = "not-an-epoch"
			}
			// The seq: the epoch's last (nothing to replay), one before,
			// none (all), past the last.
			last := logOf(epoch).last
			after := [4]uint64{last, max(last, 1) - 1, 0, last + 2}[arg>>6]
			if s := sessionOf(key); rp != nil && s != nil && s.v1 != nil {
				// What a client may have seen: the committed seq (a
				// pending one is nobody's), or beyond it the highest a
				// crashed session showed (a promotion's lost msgs).
				s.mu.Lock()
				if s.v1.epoch == epoch {
					last = s.v1.committed
				}
				s.mu.Unlock()
				top := logOf(epoch).last
				if top <= last {
					top = last + 2
				}
				after = [4]uint64{last, max(last, 1) - 1, 0, top}[arg>>6]
			}
			p.resumeSet, p.resumeAfter, p.resumeEpoch = true, after, epoch
			log = append(log, fmt.Sprintf("%s joins %s resuming after %d of epoch %s", p.id, key, after, epoch))
			if c := admit(slot, key, p); c != nil {
				c.resume = &resumeAsk{after: after, epoch: epoch}
			}
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
			if s := c.p.session; s.v1 != nil {
				s.mu.Lock()
				left[c.p.id] = s.v1.seq
				s.mu.Unlock()
			}
			slots[slot] = nil
		case evPublish:
			if c == nil || c.p.viewer || c.held != nil {
				// A viewer's msgs are refused, its raw frames dropped; a
				// client whose paced msg is held has its reader waiting
				// on it: nothing more of it is read until that goes.
				continue
			}
			c.sent++
			log = append(log, fmt.Sprintf("%s sends %d", c.p.id, c.sent))
			if c.p.v1 {
				s := c.p.session
				s.mu.Lock()
				seq, epoch := s.v1.seq, s.v1.epoch
				s.mu.Unlock()
				h.publish(c.p, fmt.Appendf(nil, "%d", c.sent), time.Now())
				s.mu.Lock()
				now := s.v1.seq
				s.mu.Unlock()
				if now != seq {
					sequenced(epoch, now, fmt.Sprintf("%s %d", c.p.id, c.sent))
				}
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
			underLocks(h, key, func(sh *hubShard, s *session) {
				if s.movedTo != "" {
					return
				}
				log = append(log, key+" handed off")
				s.movedTo = "edge-2"
				sh.moved[key] = handover{edge: "edge-2", until: time.Now().Add(settleWindow), empty: s.v1 == nil}
				if s.v1 != nil {
					st := handoffState(key, s.v1)
					handed[k] = &st
					// Every seq the history holds goes, the pending ones
					// included: the new owner shows them.
					if v := s.v1; st.Seq != v.seq || len(st.History) != v.n {
						fail("%s's hand-off carries seq %d, %d msgs; the session is at %d, holds %d (%d pending)", key, st.Seq, len(st.History), v.seq, v.n, len(v.pending))
					}
					s.v1.dropPending()
					if rp != nil {
						rp.r.release(s)
					}
				}
				frozen[k] = append(frozen[k], s.participants...)
				markHandedOn(s, of)
			})
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
			underLocks(h, key, func(sh *hubShard, s *session) {
				if s.v1 == nil || s.movedTo != "" {
					return
				}
				log = append(log, key+" yields to edge-3")
				s.movedTo = "edge-3"
				sh.moved[key] = handover{edge: "edge-3", until: time.Now().Add(settleWindow)}
				s.v1.dropPending()
				markHandedOn(s, of)
				for _, p := range s.participants {
					p.stop(closeServiceRestart, "session taken over by edge-3")
				}
				if len(s.participants) == 0 {
					h.freeIdle(sh, s)
				}
			})
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
		case evExpire:
			if h.idleGrace == 0 {
				continue // no idle timer runs
			}
			// What keepIdle's timer runs: expire of the session and the
			// generation it went idle in.
			cur := sessionOf(key)
			s, which := cur, arg>>4&3
			if which == 2 {
				if len(past[k]) == 0 {
					continue
				}
				s = past[k][len(past[k])-1]
			}
			if s == nil || s.v1 == nil {
				continue
			}
			s.mu.Lock()
			gen, idle := s.v1.idleGen, len(s.participants) == 0
			s.mu.Unlock()
			stale := which == 1
			if stale {
				if gen == 0 {
					continue
				}
				gen--
			}
			log = append(log, fmt.Sprintf("%s's idle timer of generation %d runs (stale %v, past %v)", key, gen, stale, s != cur))
			h.expire(s, gen)
			switch now := sessionOf(key); {
			case s == cur && !stale && idle:
				if now != nil {
					fail("%s idle past its timer of generation %d", key, gen)
				}
			case now != cur:
				fail("%s's session went (or changed) at a timer not its own", key)
			}
		case evInstall:
			// A drain elsewhere hands key here (POST /_ringlb/handoff):
			// not while another edge's session of it lives, which would
			// make two before any promotion.
			if rp != nil && rp.liveElsewhere(k) != nil {
				continue
			}
			type sent struct {
				seq uint64
				msg string // "": a hole
			}
			var (
				hs    handoffSession
				lg    *epochLog
				added []sent
			)
			switch arg >> 4 & 3 {
			case 0:
				// The key's last epoch, continued by the edge that took
				// it: its last msgs, then the sender's own.
				n := len(epochs[k])
				if n == 0 {
					continue
				}
				lg = logOf(epochs[k][n-1])
				hs = handoffSession{Key: key, Epoch: epochs[k][n-1], Seq: lg.last, Term: 2}
				// Only what that edge can hold: the epoch's last seqs
				// whose msg (or hole) is known. A seq sequenced before
				// any history reached it (a fresh hand-off's first ones)
				// it never had: it cannot send it, not even as a hole,
				// which says a msg was lost.
				from := lg.last + 1
				for seq := lg.last; seq >= max(lg.first, lg.last-min(lg.last, 2), 1) && (lg.msgs[seq] != "" || lg.holes[seq]); seq-- {
					from = seq
				}
				for seq := from; seq <= lg.last; seq++ {
					hs.History = append(hs.History, envelope(seq, lg.msgs[seq]))
				}
			case 1:
				// This edge's own hand-off of it coming back, while
				// nothing was sequenced since in its epoch.
				if handed[k] == nil {
					continue
				}
				hs, lg = *handed[k], logOf(handed[k].Epoch)
				if hs.Seq != lg.last {
					continue
				}
				hs.History = slices.Clone(hs.History)
			case 2, 3:
				// A fresh epoch (seqs 1–3 before its history), its first
				// seq a hole (a msg lost with a crashed owner) for 3.
				installs++
				hs = handoffSession{Key: key, Epoch: fmt.Sprintf("handed-%d", installs), Seq: 3, Term: 1}
				lg = logOf(hs.Epoch)
				if arg>>4&3 == 3 {
					hs.Seq++
					hs.History = append(hs.History, envelope(hs.Seq, ""))
					added = append(added, sent{hs.Seq, ""})
				}
			}
			for n := range int(arg >> 6) {
				hs.Seq++
				msg := fmt.Sprintf("Z%d %d", installs, n+1)
				hs.History = append(hs.History, envelope(hs.Seq, msg))
				added = append(added, sent{hs.Seq, msg})
			}
			cur := sessionOf(key)
			frozen := false
			if cur != nil {
				cur.mu.Lock()
				frozen = cur.movedTo != ""
				cur.mu.Unlock()
			}
			// Another edge's claim on the key (FuzzHubReplEvents' evClaim)
			// refuses it: that edge may have started the session.
			sh := h.shardOf(key)
			sh.mu.Lock()
			_, claimed := sh.claimed(key, goneEdges{}, h.now())
			sh.mu.Unlock()
			ok := h.install(hs, "", goneEdges{})
			log = append(log, fmt.Sprintf("a hand-off of %s arrives: epoch %s, seq %d, %d in history (installed %v)", key, hs.Epoch, hs.Seq, len(hs.History), ok))
			if ok != ((cur == nil || frozen) && !claimed) {
				fail("a hand-off of %s installed %v, its session here live %v, claimed %v", key, ok, cur != nil && !frozen, claimed)
			}
			if !ok {
				continue
			}
			for _, a := range added {
				lg.add(a.seq, a.msg)
			}
			lg.last = max(lg.last, hs.Seq)
			s := sessionOf(key)
			if s == nil || s == cur {
				fail("a hand-off of %s installed, and its session is %p (was %p)", key, s, cur)
			}
			if rp != nil {
				rp.elsewhere[s] = true
			}
			s.mu.Lock()
			epoch, seq, n := s.v1.epoch, s.v1.seq, len(s.participants)
			s.mu.Unlock()
			if epoch != hs.Epoch || seq != hs.Seq || n != 0 {
				fail("a hand-off of %s installed epoch %s seq %d with %d participants", key, epoch, seq, n)
			}
		case evPaced:
			if c == nil || c.p.viewer {
				continue
			}
			if c.held != nil {
				log = append(log, fmt.Sprintf("%s tries its held %d again", c.p.id, c.held.n))
				paced(c, c.held)
				break
			}
			c.sent++
			m := &pacedMsg{n: c.sent, readAt: time.Now()}
			pad := strings.Repeat("x", pacedSizes[arg>>4&3])
			if c.p.v1 {
				m.data = fmt.Appendf(nil, `"%d %s"`, c.sent, pad)
				m.size = len(`{"type":"msg","data":}`) + len(m.data)
			} else {
				m.data = fmt.Appendf(nil, `"%s"`, pad)
				f := jsonFrame(env{Type: "raw", From: c.p.id, Seq: c.sent, Data: m.data})
				m.size = len(f.payload())
				f.release()
			}
			log = append(log, fmt.Sprintf("%s sends %d paced (%d bytes)", c.p.id, c.sent, m.size))
			paced(c, m)
		case evShip:
			if rp.ship() {
				log = append(log, fmt.Sprintf("the link sends batch %d (%d bytes)", rp.l.nextBatch-1, len(rp.sent[len(rp.sent)-1])))
			}
		case evAck:
			if answers, ok := rp.ack(arg&0x10 != 0); ok {
				log = append(log, fmt.Sprintf("edge-2 applies a batch, answers %d bytes", len(answers)))
			}
		case evFallback:
			log = append(log, "replication_timeout: the link falls back to async")
			rp.async = true
			rp.l.mu.Lock()
			rp.l.fallBackLocked("the fuzz")
			var stuck []string
			h.eachSession(func(_ *hubShard, s *session) {
				s.mu.Lock()
				defer s.mu.Unlock()
				if s.repl == rp.l && s.v1 != nil && len(s.v1.pending) > 0 {
					stuck = append(stuck, fmt.Sprintf("%s (%d msgs)", s.key, len(s.v1.pending)))
				}
			})
			if stuck != nil {
				fail("pending after its link fell back: %v", stuck)
			}
		case evStreamDown:
			if rp.streamDown() {
				log = append(log, "the stream to edge-2 ends")
			}
		case evStreamUp:
			if rp.streamUp() {
				log = append(log, "a stream to edge-2 begins")
			}
		case evResyncKey:
			log = append(log, "edge-2 asks for "+key+" whole")
			rp.l.resyncKey(key)
		case evRelink:
			log = append(log, "the link closes; a new one takes its sessions")
			rp.async = true
			rp.relink()
		case evFence:
			// A newer owner's fence (stale with bit 4: a term not above
			// the session's).
			s := sessionOf(key)
			if s == nil || s.v1 == nil {
				continue
			}
			s.mu.Lock()
			term := s.v1.term + 1
			if arg&0x10 != 0 {
				term--
			}
			yields := s.movedTo == "" && term > s.v1.term
			if yields {
				markHandedOn(s, of)
			}
			s.mu.Unlock()
			log = append(log, fmt.Sprintf("a fence of %s at term %d (yields %v)", key, term, yields))
			rp.r.yield(key, "edge-3", term)
			s.mu.Lock()
			moved, pending := s.movedTo, len(s.v1.pending)
			s.mu.Unlock()
			if yields && (moved != "edge-3" || pending != 0) {
				fail("%s fenced: moved to %q, %d msgs pending", key, moved, pending)
			}
		case evPromote:
			// This edge's session of key crashes (its clients lose their
			// connections, nothing more is said); edge-2's copy is
			// promoted, as edge-2 would — here, where the clients resume.
			s := sessionOf(key)
			if s == nil || s.v1 == nil {
				continue
			}
			if rp.liveElsewhere(k) != nil {
				// This promotion is edge-2's, by paths not played there:
				// beside another edge's session it is placement's split,
				// not one promote decides here.
				continue
			}
			rp.r2.store.mu.Lock()
			c := rp.r2.store.copies[key]
			delete(rp.r2.store.copies, key)
			rp.r2.store.mu.Unlock()
			if c == nil {
				continue
			}
			var oldCommitted, oldSeq uint64
			var epoch string
			// Shown through edge-2: not seqs a hand-off or a promotion
			// brought here (their sessions' snapshots may not have gone).
			async := rp.async || rp.elsewhere[s]
			underLocks(h, key, func(sh *hubShard, s *session) {
				v := s.v1
				oldCommitted, oldSeq, epoch = v.committed, v.seq, v.epoch
				markHandedOn(s, of)
				s.movedTo = "crashed"
				v.dropPending()
				rp.r.release(s)
				for _, p := range s.participants {
					p.stop(closeServiceRestart, "crashed")
				}
				if len(s.participants) == 0 {
					h.freeIdle(sh, s)
				}
			})
			copySeq := c.v.seq
			log = append(log, fmt.Sprintf("%s crashes at seq %d (committed %d); edge-2's copy at %d of epoch %s is promoted", key, oldSeq, oldCommitted, copySeq, c.v.epoch))
			lg := logOf(epoch)
			if c.v.epoch != epoch {
				// An earlier incarnation's (its free not yet sent): the
				// crashed one's snapshot never reached edge-2, so under
				// sync it showed nothing.
				if !async && oldCommitted > 0 {
					fail("%s's copy is of epoch %s; the crashed session of %s showed up to %d", key, c.v.epoch, epoch, oldCommitted)
				}
				copySeq = 0
			}
			if !async && copySeq < oldCommitted {
				fail("%s's copy holds seqs up to %d, its clients were shown up to %d, nothing shown without the replica", key, copySeq, oldCommitted)
			}
			// Pending msgs the copy lacks were nobody's: gone. Those shown
			// that it lacks are lost: clients may hold them.
			for seq := max(copySeq, oldCommitted) + 1; seq <= oldSeq; seq++ {
				delete(lg.msgs, seq)
			}
			for seq := copySeq + 1; seq <= oldCommitted; seq++ {
				if lg.msgs[seq] != "" {
					lg.lost[seq] = true
				}
			}
			lg.last = max(copySeq, oldCommitted)
			if c.v.epoch == epoch && oldCommitted > copySeq+promotionSkip(h.historyMsgs) {
				lg.uncovered = true // beyond the reserve (reserveLost)
			}
			c.from = "edge-0" // gone: not edge-2, whose link this edge keeps
			rp.r.store.mu.Lock()
			if old := rp.r.store.copies[key]; old != nil {
				old.v.forget() // another edge's, older than this session
			}
			rp.r.store.copies[key] = c
			rp.r.store.mu.Unlock()
			if !rp.r.promote(key, c.from, "the fuzz", nil) {
				fail("%s's copy not promoted", key)
			}
			rp.elsewhere[sessionOf(key)] = true
		case evCopyLost:
			rp.r2.store.mu.Lock()
			if c := rp.r2.store.copies[key]; c != nil {
				log = append(log, "edge-2 drops its copy of "+key)
				if s := sessionOf(key); s != nil && s.v1 != nil {
					s.mu.Lock()
					rp.dropped[s] = s.v1.committed
					s.mu.Unlock()
				}
				delete(rp.r2.store.copies, key)
				c.v.forget()
			}
			rp.r2.store.mu.Unlock()
		case evOwnerSend:
			e, _ := rp.other(arg)
			inc := e.incs[k]
			if inc == nil || !inc.live {
				if inc = rp.begin(e, k, sessionOf(key) != nil); inc == nil {
					continue
				}
				log = append(log, fmt.Sprintf("%s starts %s: epoch %s, term %d", e.name, key, inc.epoch, inc.term))
			}
			n := int(arg >> 6)
			answers := rp.send(e, k, key, n, sequenced)
			log = append(log, fmt.Sprintf("%s replicates %s here: seq %d, %d msgs more; answered %d bytes (acked to %d, live %v)", e.name, key, inc.seq, n, len(answers), inc.acked, inc.live))
		case evOwnerState:
			e, _ := rp.other(arg)
			_, alive := rp.members.alive[e.name]
			switch arg >> 5 & 3 {
			case 0:
				if e.crashed {
					continue
				}
				log = append(log, e.name+" crashes")
				e.crash()
			case 1:
				if !alive {
					continue
				}
				log = append(log, fmt.Sprintf("gossip declares %s dead (crashed %v); the ring then gives the keys elsewhere: %v", e.name, e.crashed, arg&0x80 != 0))
				delete(rp.members.alive, e.name)
				rp.gossip(arg&0x80 != 0)
			case 2:
				if !alive || e.crashed || e.draining {
					continue
				}
				log = append(log, e.name+" drains")
				e.draining = true
				rp.members.alive[e.name] = health.Node{Meta: health.Meta{State: health.StateDraining}}
				rp.gossip(arg&0x80 != 0)
			case 3:
				if alive {
					continue
				}
				// Back: restarted (its sessions gone) or never down (taken
				// for dead: they live on, unless fenced).
				log = append(log, fmt.Sprintf("%s is back (crashed %v)", e.name, e.crashed))
				e.crashed, e.draining = false, false
				rp.members.alive[e.name] = health.Node{}
				rp.gossip(arg&0x80 != 0)
			}
		case evGossipRace:
			// o crashes; as promoteOrphans lists its copies, n, which took
			// o's session of key over elsewhere (term + 1, same epoch),
			// replicates it here.
			o, n := rp.other(arg)
			inc := o.incs[k]
			if _, alive := rp.members.alive[o.name]; !alive || inc == nil || inc.superseded {
				continue
			}
			// n's takeover is decided there, by paths not played: not
			// beside a session this edge holds (a join started it here
			// while o's crash was unknown), which would be n's split.
			if _, alive := rp.members.alive[n.name]; !alive || n.crashed || n.draining || n.incs[k] != nil && n.incs[k].live || sessionOf(key) != nil {
				continue
			}
			log = append(log, fmt.Sprintf("%s crashes and gossip declares it dead; %s took its %s over (term %d) and replicates it here meanwhile", o.name, n.name, key, inc.term+1))
			o.crash()
			delete(rp.members.alive, o.name)
			rp.members.onNode = func(name string) {
				if name != o.name {
					return
				}
				n.incs[k] = &incarnation{epoch: inc.epoch, term: inc.term + 1, seq: inc.seq, live: true}
				answers := rp.send(n, k, key, 0, sequenced)
				log = append(log, fmt.Sprintf("  %s's copy of %s arrives (answered %d bytes, live %v)", n.name, key, len(answers), n.incs[k].live))
			}
			rp.gossip(false)
			rp.members.onNode = nil
		case evJoinPromote:
			if c != nil {
				continue
			}
			joinSkip = nil
			if arg&0x20 == 0 {
				if from, ok := rp.r.store.owner(key); ok {
					joinSkip = []string{from}
				}
			}
			conns++
			p := ph.newParticipant(fmt.Sprintf("%s%d", name(slot), conns))
			p.srv = srv
			p.v1 = true
			p.out.limit = 8
			log = append(log, fmt.Sprintf("%s joins %s, the balancer skipping %v", p.id, key, joinSkip))
			admit(slot, key, p)
			joinSkip = nil
		case evClaim:
			// e asks this edge, a previous owner of key in its view,
			// whether it hosts it (taking the key's other owner for dead):
			// told no, it starts the session.
			e, _ := rp.other(arg)
			// A draining edge starts no session.
			if _, alive := rp.members.alive[e.name]; !alive || e.crashed || e.draining || rp.liveElsewhere(k) != nil {
				continue
			}
			holder := h.claim([]byte(key), "edge-1", e.name, settleWindow, rp.r.o.goneEdges(nil))
			log = append(log, fmt.Sprintf("%s claims %s here: told %q", e.name, key, holder))
			if holder == "" {
				inc := rp.begin(e, k, false) // told no: nothing here
				inc.byClaim = true
				log = append(log, fmt.Sprintf("  %s starts %s: epoch %s", e.name, key, inc.epoch))
			}
		case evAge:
			// Its clock moved back instead: each participant's join, its
			// own bucket, the joiners' bucket and their count, and what a
			// participant holds read; a past session of key's too.
			d := paceAges[arg>>4&7]
			ss := map[*session]bool{}
			if s := sessionOf(key); s != nil {
				ss[s] = true
			}
			for _, c := range slots {
				if c != nil && c.key == key {
					ss[c.p.session] = true
				}
			}
			if len(ss) == 0 {
				continue
			}
			log = append(log, fmt.Sprintf("%s's pacing ages %v", key, d))
			for s := range ss {
				s.mu.Lock()
				for _, p := range s.participants {
					p.joinedMs -= uint32(d / time.Millisecond)
					if p.fanout.at != 0 {
						p.fanout.at -= int64(d)
					}
				}
				if s.joiners.at != 0 {
					s.joiners.at -= int64(d)
				}
				if s.newcomersAt != 0 {
					s.newcomersAt -= int64(d)
				}
				s.mu.Unlock()
			}
			for _, c := range slots {
				if c != nil && c.held != nil && ss[c.p.session] {
					c.held.readAt = c.held.readAt.Add(-d)
				}
			}
		}
		quieten()
		checkPace()
		if rp != nil {
			promoted(0)
			promoted(1)
			checkRepl()
			// Never two live sessions of a key: this edge's and the
			// other edges'.
			for k, key := range keys {
				var live []string
				if liveHere(key) {
					live = append(live, "edge-1")
				}
				for _, e := range rp.others {
					// A session started on a claim here is one promote
					// is told of while the claim holds; past it (ten
					// seconds: gossip has long declared the owner dead,
					// and the claimer's pin, not played here, names it)
					// the product promises nothing of it here.
					if inc := e.incs[k]; inc != nil && inc.live && (!inc.byClaim || rp.claimHolds(h, key, e)) {
						live = append(live, fmt.Sprintf("%s (epoch %s, term %d)", e.name, inc.epoch, inc.term))
					}
				}
				if len(live) > 1 {
					fail("two live sessions of %s: %v", key, live)
				}
			}
		}
		// Sessions that came and went: their epochs, and the past ones
		// an idle timer may still run for.
		for k, key := range keys {
			s := sessionOf(key)
			if s == seen[k] {
				continue
			}
			if seen[k] != nil {
				past[k] = append(past[k], seen[k])
			}
			seen[k] = s
			if s != nil && s.v1 != nil {
				s.mu.Lock()
				epoch := s.v1.epoch
				s.mu.Unlock()
				if !slices.Contains(epochs[k], epoch) {
					epochs[k] = append(epochs[k], epoch)
				}
			}
		}
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
			seq = s.v1.committed // a pending msg is nobody's yet
		}
		s.mu.Unlock()
		if !c.p.v1 || !here || moved || c.closed || c.p.stopping() {
			continue
		}
		if !c.view.is(ids) {
			fail("%s holds %v present, the session has %v", c.p.id, c.view, ids)
		}
		for lg := logOf(c.epoch); seq > c.seq && (lg.holes[seq] || lg.lost[seq]); {
			seq-- // a reserve of holes nobody is told of
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
// are queued for it: all it may still read. A replay counts one (read
// tells its msgs after the first apart), a presence batch each of its
// messages. Called with s.mu held.
func markHandedOn(s *session, of map[*participant]*hubClient) {
	for _, p := range s.participants {
		if c := of[p]; c != nil {
			p.out.mu.Lock()
			c.frozen = 0
			for i := range p.out.n {
				if f := p.out.queue[(p.out.head+i)%len(p.out.queue)]; f.batch != nil {
					c.frozen++
				} else {
					c.frozen += len(jobMessages(f))
				}
			}
			p.out.mu.Unlock()
		}
	}
}

// underLocks runs do on the session of key, if there is one, with its
// shard's lock and its own held, as the edge's hand-off and fence do.
func underLocks(h *hub, key string, do func(sh *hubShard, s *session)) {
	sh := h.shardOf(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := sh.sessions[key]
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	do(sh, s)
}
