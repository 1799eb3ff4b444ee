package sessions

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// historyHeld sums the history bytes every session of e holds.
func historyHeld(e *testEdge) (sessions, bytes int) {
	e.s.hub.eachSession(func(_ *hubShard, s *session) {
		s.mu.Lock()
		if s.v1 != nil {
			sessions++
			bytes += s.v1.bytes
		}
		s.mu.Unlock()
	})
	return sessions, bytes
}

// One client with one connection at a time (max_connections 4) fills one
// ringlb.v1 session after another with history and leaves it: each is kept
// for idle_grace with its history, so without an edge-wide bound the edge
// holds sessions × history.bytes. The histories together stay within
// edge.history.total_bytes.
func TestHistoryBoundedAcrossSessions(t *testing.T) {
	const (
		perSession = 128 << 10
		total      = 1 << 20
		sessions   = 48 // 6 MiB of history without the edge-wide bound
		msgBytes   = 30 << 10
	)
	e := startEdge(t, configs.Edge{
		MaxConnections: 4,
		IdleGrace:      configs.Duration(time.Hour),
		History:        configs.History{Messages: 1000, Bytes: perSession, TotalBytes: total},
	}, nil)
	baseline := heapAfterGC()
	data := strings.Repeat("h", msgBytes)
	for i := range sessions {
		c := e.joinV1(t, fmt.Sprintf("hoard-%d", i), "", nil)
		for range perSession / msgBytes {
			c.msg(t, data)
			c.readType(t, "ack")
		}
		c.leave(t)
	}
	n, held := historyHeld(e)
	grown := heapAfterGC() - baseline
	t.Logf("%d sessions held by one client, %d bytes of history (heap grew %d)", n, held, grown)
	if held > total {
		t.Fatalf("%d sessions hold %d bytes of history, over edge.history.total_bytes %d", n, held, total)
	}
	if got := metricValue(t, e.s, "ringlb_edge_history_bytes"); int(got) != held {
		t.Errorf("ringlb_edge_history_bytes = %v, want %d", got, held)
	}

	// The edge still keeps history for the session in use: the budget
	// is taken from idle sessions first.
	c := e.joinV1(t, "in-use", "", nil)
	for range 3 {
		c.msg(t, data)
		c.readType(t, "ack")
	}
	if r := resumeFrom(t, e, "in-use", c.welcome.Epoch, 0); r != "" {
		t.Fatalf("live session under a full budget: reset %q, want its history", r)
	}
}

// A client that never reads asks for the whole history again and again:
// each resume queues a replay of every msg held, which pins a batch of
// frame references per resume until the writer gets to it. One replay
// waits at a time: further resumes are answered with an error, not
// queued.
func TestResumeFloodQueuesOneReplay(t *testing.T) {
	const msgs, resumes = 1000, 200
	e := startEdge(t, configs.Edge{SendQueue: 1024, History: configs.History{Messages: msgs, Bytes: 1 << 20}}, nil)
	a := e.joinV1(t, "replayed", "", nil)
	for i := range msgs {
		a.msg(t, i)
		a.readType(t, "ack")
	}
	baseline := heapAfterGC()
	c := rawJoinV1(t, e, "replayed")
	// Fill the socket and the writer first, so replays queue.
	var frames []byte
	resume := []byte(`{"type":"resume","after":0,"epoch":"` + a.welcome.Epoch + `"}`)
	for range resumes {
		frames = appendClientTextFrame(frames, resume)
	}
	_ = c.SetWriteDeadline(time.Now().Add(testDeadline))
	if _, err := c.Write(frames); err != nil {
		t.Fatal(err)
	}
	// A msg behind the resumes: once it is counted, the edge has read
	// every resume before it.
	before := metricValue(t, e.s, "ringlb_edge_messages_total")
	if _, err := c.Write(appendClientTextFrame(nil, []byte(`{"type":"msg","data":"last"}`))); err != nil {
		t.Fatal(err)
	}
	healthtest.WaitUntil(t, "every resume read", func() bool {
		return metricValue(t, e.s, "ringlb_edge_messages_total") > before
	})
	queued := replaysQueued(e)
	grown := heapAfterGC() - baseline
	t.Logf("%d resumes of %d msgs from a client that does not read: %d replays queued, heap grew %d", resumes, msgs, queued, grown)
	if queued > 1 {
		t.Fatalf("%d replays queued for one client", queued)
	}
}

// replaysQueued counts the replay batches waiting in every send queue.
func replaysQueued(e *testEdge) int {
	n := 0
	e.s.mu.Lock()
	defer e.s.mu.Unlock()
	for p := range e.s.conns {
		p.out.mu.Lock()
		for i := range p.out.n {
			if f := p.out.queue[(p.out.head+i)%len(p.out.queue)]; f != nil && f.batch != nil {
				n++
			}
		}
		p.out.mu.Unlock()
	}
	return n
}

// TestReplaysAreCountedAndOneWaits is the attack of a client alone in its
// session, with a small receive buffer, that asks for the whole history
// (1 MiB: 17 msgs of 58 KB) again and again while it moves the history on:
// each round a resume from the history's start, two ringlb.v1 pings with
// 58 KB stamps (their pongs keep the writer busy between replays) and a
// new msg; then it reads three large frames. A replay is a batch of the
// history's frames in one queue slot, held until written. Before, a batch
// counted nothing against the send budget ("the history's own"), but the
// history gave the frames' bytes back as it moved on while the batch
// still held them; and the writer cleared the mark of a replay on its way
// after each batch, though a resume had queued another meanwhile, so more
// than one waited: 1–5 replays queued at once, holding up to 2.6 MiB of msg
// frames the send budget counted nothing of, which history.total_bytes,
// max_queued_bytes and low-memory shedding never saw. Now a batch's frames
// count in the send budget until the writer takes each, and at most one
// replay waits: a resume while one does is answered error, as the
// contract says.
func TestReplaysAreCountedAndOneWaits(t *testing.T) {
	parallel(t)
	const (
		gen    = 17 // msgs filling history.bytes (1 MiB)
		size   = 58000
		rounds = 150
	)
	e := startEdge(t, configs.Edge{}, nil)
	c := rawJoinV1With(t, e, "replays", "", 4<<10)
	rf := newRawFrames(c)
	_, welcome, err := rf.next()
	if err != nil {
		t.Fatal(err)
	}
	var w env
	if err := json.Unmarshal(welcome, &w); err != nil || w.Type != "welcome" {
		t.Fatalf("first frame %q: %v", welcome, err)
	}
	msg := appendClientTextFrame(nil, []byte(`{"type":"msg","data":"`+strings.Repeat("m", size)+`"}`))
	ping := appendClientTextFrame(nil, []byte(`{"type":"ping","ts":"`+strings.Repeat("p", size)+`"}`))
	sent := 0 // msgs sent: the session's seq once the edge has read them
	send := func(b []byte, msgs int) {
		t.Helper()
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		sent += msgs
		// The edge has acted on everything before once it counts the
		// last msg.
		healthtest.WaitUntil(t, "the msgs read", func() bool {
			return metricValue(t, e.s, "ringlb_edge_messages_total") >= float64(sent)
		})
	}

	// What the edge holds for replays, looked at each round: the replays
	// queued, the bytes of the msg frames they hold, and what the send
	// budget counts for them — all it counts (ringlb_edge_queued_bytes
	// reads the counter) less the other frames queued — under the queue's
	// lock, so the writer takes nothing between.
	var most struct {
		replays                  int
		held, counted, histories int64
	}
	uncounted := 0
	look := func() {
		e.s.mu.Lock()
		defer e.s.mu.Unlock()
		for p := range e.s.conns {
			p.out.mu.Lock()
			replays, held, other, seen := 0, int64(0), int64(0), map[*frame]bool{}
			for i := range p.out.n {
				f := p.out.queue[(p.out.head+i)%len(p.out.queue)]
				if f.batch == nil {
					other += f.queuedSize()
					continue
				}
				replays++
				for _, g := range f.batch {
					if !seen[g] {
						seen[g] = true
						held += int64(len(g.wire()))
					}
				}
			}
			counted, histories := e.s.sendBudget.used.Load()-other, e.s.hub.budget.used.Load()
			p.out.mu.Unlock()
			if held > counted {
				uncounted++
			}
			most.replays = max(most.replays, replays)
			if held > most.held {
				most.held, most.counted, most.histories = held, counted, histories
			}
		}
	}

	send(bytes.Repeat(msg, gen), gen)
	refused, round := 0, 0
	var ended error
rounds:
	for ; round < rounds; round++ {
		resume := appendClientTextFrame(nil, []byte(fmt.Sprintf(`{"type":"resume","after":%d,"epoch":%q}`, sent-gen, w.Epoch)))
		send(append(append(resume, bytes.Repeat(ping, 2)...), msg...), 1)
		look()
		for large := 0; large < 3; {
			op, n, err := rf.head()
			if err == nil && op != websocket.TextMessage {
				err = fmt.Errorf("a frame of opcode %d", op)
			}
			if err != nil {
				ended = err // closed: what it held was looked at
				break rounds
			}
			if n >= size {
				large++
				if err := rf.skip(n); err != nil {
					t.Fatal(err)
				}
				continue
			}
			body, err := rf.body(n)
			if err != nil {
				t.Fatal(err)
			}
			var m env
			if err := json.Unmarshal(body, &m); err != nil {
				t.Fatalf("%q: %v", body, err)
			}
			switch m.Type {
			case "ack":
			case "error":
				refused++
			default:
				t.Fatalf("got %+v", m)
			}
		}
		// Slower than the edge writes: its writer waits on the socket.
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("%d rounds (%v), %d resumes refused: at most %d replays queued at once; at most %.2f MiB of msg frames held by those queued, of which the send budget counted %.2f MiB (ringlb_edge_history_bytes %.2f MiB)",
		round, ended, refused, most.replays, float64(most.held)/(1<<20), float64(most.counted)/(1<<20), float64(most.histories)/(1<<20))
	if most.replays > 1 {
		t.Errorf("%d replays queued at once for one client, want at most one", most.replays)
	}
	if uncounted > 0 {
		t.Errorf("%d of %d times the replays queued held msg frames the send budget did not count", uncounted, round)
	}
}
