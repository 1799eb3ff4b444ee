package bench

import (
	"context"
	"encoding/binary"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// stallRelay relays binary frames to the session's other connection, but
// reads nothing for stall after each connection opens: a target that
// stops taking a sender's bytes for a while (a GC pause, a full queue).
type stallRelay struct {
	stall time.Duration
	mu    sync.Mutex
	conns []*websocket.Conn
	// stamps are the send times of the messages relayed, by sender and
	// sequence.
	stamps map[[2]uint32]time.Duration
}

func (s *stallRelay) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	s.mu.Lock()
	s.conns = append(s.conns, c)
	s.mu.Unlock()
	time.Sleep(s.stall)
	for {
		kind, msg, err := c.ReadMessage()
		if err != nil {
			return
		}
		if len(msg) < 16 {
			continue
		}
		s.mu.Lock()
		s.stamps[[2]uint32{binary.LittleEndian.Uint32(msg[8:]), binary.LittleEndian.Uint32(msg[12:])}] = time.Duration(binary.LittleEndian.Uint64(msg))
		for _, o := range s.conns {
			if o != c {
				o.SetWriteDeadline(time.Now().Add(5 * time.Second))
				o.WriteMessage(kind, msg)
			}
		}
		s.mu.Unlock()
	}
}

// A paced sender keeps to its schedule when a write blocks: the messages
// due while the target took nothing are sent once it takes them again,
// each stamped with when it was due, so their latency is counted (no
// coordinated omission): message n of a sender is stamped n intervals
// after its first. Before, the sender's ticker dropped the ticks that
// came while a write blocked: the messages of the stall were never sent
// (47 of 80 due), and the latency figures were those of the messages
// after it (p50 17 ms where half the messages waited on the target).
func TestWSPacedSenderKeepsItsSchedule(t *testing.T) {
	// A small receive window, so that 1 MiB messages block the sender's
	// writes for the stall rather than filling kernel buffers.
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		if err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	relay := &stallRelay{stall: 2 * time.Second, stamps: map[[2]uint32]time.Duration{}}
	url := serveTarget(t, ln, relay)
	const rate, duration = 10, 4 * time.Second
	res, err := RunWS(t.Context(), WSOptions{
		Targets: []string{url}, Sessions: 1, Participants: 2, Rate: rate,
		Size: 1 << 20, Duration: duration, Drain: time.Minute,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res.Summary())
	t.Logf("sent %d of %d due; latency p50 %s p90 %s max %s", res.Sent, int64(2*rate*duration.Seconds()), res.Latency.P50, res.Latency.P90, res.Latency.Max)
	// Nothing lost: the relay has recorded every message sent.
	relay.mu.Lock()
	defer relay.mu.Unlock()
	interval := time.Second / rate
	off := 0
	for key, at := range relay.stamps {
		from, seq := key[0], key[1]
		if first, ok := relay.stamps[[2]uint32{from, 0}]; !ok || at-first != time.Duration(seq)*interval {
			if off++; off == 1 {
				t.Errorf("participant %d's message %d stamped %s after its first; want %d intervals of %s, on its schedule", from, seq, at-first, seq, interval)
			}
		}
	}
	if off > 0 {
		t.Errorf("%d of %d messages off their schedule", off, len(relay.stamps))
	}
	if int64(len(relay.stamps)) != res.Sent {
		t.Errorf("the relay took %d messages of the %d sent", len(relay.stamps), res.Sent)
	}
	if res.Lost != 0 || res.ConnsOK != 2 {
		t.Errorf("connected %d, lost %d; want 2, none lost", res.ConnsOK, res.Lost)
	}
}
