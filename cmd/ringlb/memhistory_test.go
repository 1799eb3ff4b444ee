package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// Histories are buffers a client makes an edge hold: every ringlb.v1 msg is
// kept for resumes, up to edge.history.total_bytes (256 MiB by default)
// across sessions — sized in the config file, not against the memory the
// process has. Low on memory, the listeners refuse new connections, but
// the connections already in kept sending small msgs (under the 16 KiB a
// holder may grow by) and every one was kept: 200 sessions of 1 MiB each
// took an edge limited to 64 MiB to a quarter of a gigabyte of histories
// (in a container, an OOM kill). A history is a holder like a send queue:
// low on memory it may not grow past 16 KiB; idle sessions' histories give
// way first, then a session's own oldest msgs (a resume from before them
// gets a reset) — every msg is still relayed and acknowledged.
func TestLowMemoryBoundsTheHistories(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	const (
		sessions = 200
		perConn  = 128     // msgs each: 1 MiB, the default history.bytes
		msgBytes = 8 << 10 // under the 16 KiB a holder may hold when low
		limitMiB = 64
	)
	edge, listen, admin, w := startLimitedEdge(t, fmt.Sprintf("%dMiB", limitMiB), "")
	metrics := "http://" + admin + "/metrics"

	// The connections first (before the edge is low and refuses them).
	conns := make([]*websocket.Conn, sessions)
	dialer := websocket.Dialer{Subprotocols: []string{"ringlb.v1"}, HandshakeTimeout: 10 * time.Second}
	for i := range conns {
		c, resp, err := dialer.Dial("ws://"+listen+"/ws", http.Header{"Ctstickiness": {fmt.Sprintf("hist-%d", i)}})
		if err != nil {
			t.Fatalf("join %d: %v (%v)", i, err, resp)
		}
		t.Cleanup(func() { c.Close() })
		conns[i] = c
	}

	data, _ := json.Marshal(strings.Repeat("e", msgBytes))
	msg := []byte(`{"type":"msg","data":` + string(data) + `}`)
	// Every connection sends its msgs and reads an ack for each: a client
	// that keeps up, as far as the edge can tell.
	var (
		mu     sync.Mutex
		acked  int
		failed []string
	)
	work := make(chan *websocket.Conn)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for c := range work {
				n, err := sendAndAck(c, msg, perConn)
				mu.Lock()
				acked += n
				if err != nil && len(failed) < 5 {
					failed = append(failed, err.Error())
				}
				mu.Unlock()
			}
		})
	}
	for _, c := range conns {
		work <- c
	}
	close(work)
	wg.Wait()
	w.running(t, "under the histories")

	histories := scrape(t, metrics, "ringlb_edge_history_bytes")
	heap := scrape(t, metrics, "go_memstats_heap_inuse_bytes")
	rss := vmRSS(t, edge.cmd.Process.Pid)
	t.Logf("%d sessions sent %d msgs of %d KiB (%d acknowledged; errors %q): histories %.0f MiB, heap %.0f MiB in use, RSS %.0f MiB, under GOMEMLIMIT=%dMiB",
		sessions, sessions*perConn, msgBytes>>10, acked, failed, histories/(1<<20), heap/(1<<20), float64(rss)/(1<<20), limitMiB)
	if acked != sessions*perConn {
		t.Errorf("%d of %d msgs acknowledged: low on memory, the edge refuses no small msg of a session that keeps up", acked, sessions*perConn)
	}
	if histories >= limitMiB<<20 {
		t.Errorf("the edge holds %.0f MiB of histories under a %d MiB memory limit", histories/(1<<20), limitMiB)
	}
	if w.count(msgLowMemory) == 0 {
		t.Errorf("no %q line", msgLowMemory)
	}
}

// sendAndAck writes n msgs on a ringlb.v1 connection and reads until an
// ack for each came; it returns the acks read.
func sendAndAck(c *websocket.Conn, msg []byte, n int) (int, error) {
	errc := make(chan error, 1)
	go func() {
		for range n {
			c.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if err := c.WriteMessage(websocket.TextMessage, msg); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	acks := 0
	for acks < n {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, data, err := c.ReadMessage()
		if err != nil {
			<-errc
			return acks, err
		}
		var m struct{ Type string }
		if json.Unmarshal(data, &m) == nil && m.Type == "ack" {
			acks++
		}
	}
	return acks, <-errc
}

// vmRSS is the resident memory of process pid, in bytes.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// Low on memory, a participant that keeps up must go on: its queue holds
// what is being written to it, and a burst — a few participants speaking
// at once — passes through it in a moment. Shed at 16 KiB, a reader that
// read each round whole before the next was closed 1013 before it had read
// a msg (4 senders × 2 msgs of 6 KiB at once); now a queue may pass a burst
// (sessions/sendbudget.go, lowMemoryBurst and lowMemoryGrace).
func TestLowMemoryKeepsAReaderOfBursts(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	const (
		senders  = 4
		perBurst = 2
		rounds   = 50
		msgBytes = 6 << 10
	)
	_, listen, _, w := startLimitedEdge(t, "64MiB", ", max_message_bytes: 1048576, max_incoming_bytes: 1073741824")

	reader := joinEdge(t, listen, "burst")
	var from []*websocket.Conn
	read := make([]atomic.Int64, senders)
	for i := range senders {
		c := joinEdge(t, listen, "burst")
		from = append(from, c)
		// The senders keep up too: they read what the others send.
		go func() {
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
				read[i].Add(1)
			}
		}()
	}
	// Low on memory: large messages held, then idle connections.
	var hs []*hoarder
	for i := range 200 {
		h, _ := openHoarder(t, listen, fmt.Sprintf("hoard-%d", i))
		if h == nil {
			break // refused: low already
		}
		hs = append(hs, h)
	}
	for _, h := range hs {
		h.announce(1 << 20)
	}
	idleUntilRefused(t, listen)
	w.waitLine(t, msgLowMemory)

	// One msg at a time passes (the reader's queue is empty each time).
	from[0].SetWriteDeadline(time.Now().Add(30 * time.Second))
	if err := from[0].WriteMessage(websocket.TextMessage, []byte("one")); err != nil {
		t.Fatal(err)
	}
	reader.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, data, err := reader.ReadMessage(); err != nil || string(data) != "one" {
		t.Fatalf("low on memory, a single msg: %q, %v", data, err)
	}

	// Rounds: every sender sends its burst at once, the reader reads the
	// round whole before the next — it keeps up with the session.
	payload := make([]byte, msgBytes)
	got, want := 0, 0
	var end error
	for range rounds {
		var wg sync.WaitGroup
		for _, c := range from {
			wg.Go(func() {
				for range perBurst {
					c.SetWriteDeadline(time.Now().Add(30 * time.Second))
					_ = c.WriteMessage(websocket.BinaryMessage, payload)
				}
			})
		}
		wg.Wait()
		want += senders * perBurst
		for end == nil && got < want {
			reader.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, _, err := reader.ReadMessage(); err != nil {
				end = err
				break
			}
			got++
		}
		if end != nil {
			break
		}
		// Every sender has read the round too before the next.
		for i := range read {
			for deadline := time.Now().Add(30 * time.Second); read[i].Load() < int64(want/senders*(senders-1)); time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("sender %d read %d of the others' %d msgs", i, read[i].Load(), want/senders*(senders-1))
				}
			}
		}
	}
	t.Logf("low on memory, %d rounds of %d senders × %d msgs of %d KiB at once: the reader got %d of %d (%v)", rounds, senders, perBurst, msgBytes>>10, got, rounds*senders*perBurst, end)
	if end != nil {
		t.Errorf("a reader that keeps up was ended after %d of %d msgs: %v", got, rounds*senders*perBurst, end)
	}
}
