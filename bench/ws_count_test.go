package bench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// dupRelay is a ringlb.v1 relay that sequences and acks as an edge does
// but delivers every msg twice under its seq: the known input of a
// duplicating backend, which ringlb's edge is not.
type dupRelay struct {
	mu    sync.Mutex
	seq   uint64
	conns []*websocket.Conn
}

func (d *dupRelay) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{Subprotocols: []string{protocolV1}}
	c, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	d.mu.Lock()
	d.conns = append(d.conns, c)
	c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"welcome","seq":%d}`, d.seq))
	d.mu.Unlock()
	for {
		_, msg, err := c.ReadMessage()
		if err != nil {
			return
		}
		i := bytes.Index(msg, []byte(`"data":`))
		if i < 0 {
			continue
		}
		data := bytes.TrimSuffix(msg[i:], []byte("}"))
		d.mu.Lock()
		d.seq++
		for _, o := range d.conns {
			if o == c {
				o.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"ack","seq":%d}`, d.seq))
				continue
			}
			for range 2 {
				o.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"msg","seq":%d,%s}`, d.seq, data))
			}
		}
		d.mu.Unlock()
	}
}

// A v1 msg delivered twice under one seq is one delivery and one
// duplicate, nothing lost. Before, the repeat was counted duplicated but
// not delivered, and lost subtracts duplicates from deliveries: every
// duplicate was also reported lost.
func TestWSv1DuplicatesAreNotLost(t *testing.T) {
	url := serveTarget(t, nil, &dupRelay{})
	res, err := RunWS(t.Context(), WSOptions{
		Targets: []string{url}, Sessions: 1, Participants: 2, Rate: 20,
		Duration: 300 * time.Millisecond, Drain: time.Minute, Mode: "v1",
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res.Summary())
	if res.Sent == 0 || res.Delivered != res.Expected || res.Duplicated != res.Delivered || res.Lost != 0 || res.SeqGaps != 0 || res.Unacked != 0 {
		t.Errorf("every msg delivered twice: sent %d, expected %d, delivered %d, duplicated %d, lost %d, seq gaps %d, unacked %d; want delivered = expected = duplicated, none lost",
			res.Sent, res.Expected, res.Delivered, res.Duplicated, res.Lost, res.SeqGaps, res.Unacked)
	}
}

// Ctrl-C ends a run in its ramp. Before, the ramp's pause between two
// dials was a plain sleep: with -ramp 1h over one connection the run slept
// the hour before it looked at its context again.
func TestWSRampEndsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan *WSResult, 1)
	go func() {
		res, err := RunWS(ctx, WSOptions{Targets: []string{"ws://" + closedPort(t) + "/ws"}, Sessions: 1, Participants: 1,
			Duration: time.Second, Ramp: time.Hour}, nil)
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	time.Sleep(100 * time.Millisecond) // into the ramp's first pause
	cancel()
	select {
	case res := <-done:
		if res != nil && res.ConnsOK != 0 {
			t.Errorf("connected %d after the cancel", res.ConnsOK)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the run still ramps 30s after its context ended")
	}
}

// Per sender, a receiver counts a msg that comes after a later one as
// reordered, a msg it already has as duplicated, and a msg that never
// comes as neither (the tally counts it lost). Before, the later msg was
// counted reordered when it came (a gap, not yet anything) and the late
// one duplicated when it came: 0 2 1 was "1 reordered, 1 duplicated, 1
// lost" where nothing was duplicated or lost, and 0 2 "1 reordered".
func TestWSCountsPerSender(t *testing.T) {
	for _, tc := range []struct {
		seqs           []uint32
		dup, reordered int64
	}{
		{[]uint32{0, 1, 2}, 0, 0},
		{[]uint32{0, 2, 1}, 0, 1},
		{[]uint32{0, 2}, 0, 0},
		{[]uint32{0, 1, 1}, 1, 0},
		{[]uint32{0, 3, 2, 1, 3}, 1, 2},
		{[]uint32{1, 0, 0}, 1, 1},
		{[]uint32{0, 100, 50, 50}, 1, 1},
	} {
		c := &wsClient{index: 1, next: make([]uint32, 2), arrivals: newArrivals(), latencies: latencySample{max: maxSamples}}
		c.seen = make([]uint64, 2)
		c.peers = []*wsClient{nil, c}
		var delivered atomic.Int64
		for _, seq := range tc.seqs {
			c.delivered(time.Now(), &delivered, 0, seq, 0)
		}
		if c.received != int64(len(tc.seqs)) || c.dup != tc.dup || c.reordered != tc.reordered {
			t.Errorf("%v: received %d, duplicated %d, reordered %d; want %d, %d, %d", tc.seqs, c.received, c.dup, c.reordered, len(tc.seqs), tc.dup, tc.reordered)
		}
	}
}

// serveTarget serves h on ln (nil: a listener of its own on 127.0.0.1),
// closed with the test, and returns its WebSocket URL.
func serveTarget(t *testing.T, ln net.Listener, h http.Handler) string {
	t.Helper()
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "ws://" + ln.Addr().String() + "/ws"
}

// allocatedSince collects garbage and returns a function telling how many
// bytes the process has allocated since.
func allocatedSince() func() uint64 {
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	return func() uint64 {
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
}
