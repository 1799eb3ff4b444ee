package sessions

import (
	"fmt"
	"strings"
	"testing"
	"time"

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
