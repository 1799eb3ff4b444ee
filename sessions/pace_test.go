package sessions

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/configs"
)

// One participant's message costs the edge a delivery per other
// participant of its session, and nothing bounded how many a participant
// could make it do a second: one editor sending small messages as fast as
// its socket took them to a full session kept an edge core busy with
// deliveries alone, however slowly anyone typed. The attack: a sender
// writes 60 msgs of 1 KiB at once to a session of 7 readers, on an edge
// paced at 256 KiB a second. Before, every reader had all 60 within
// milliseconds — 7 × 60 deliveries, ~840 KiB of fan-out, more than three
// seconds' worth. Now each participant's fan-out is paced by
// edge.max_fanout_bytes_per_second: what the readers have received by any
// moment is at most a second's worth (the burst) and the rate since the
// first write, plus the message being paid for; every msg still reaches
// every reader, in order, and nobody is closed. The pace is set by a
// reload of an edge started at the default.
//
// No duration is asserted: the time since the first write only loosens
// the bound on a slow machine; a sender that is not paced breaks it on any.
func TestOneSendersFanoutIsPaced(t *testing.T) {
	const (
		readers = 7
		msgs    = 60
		size    = 1 << 10
		rate    = 256 << 10
	)
	for _, proto := range []string{"raw", protocolV1} {
		t.Run(proto, func(t *testing.T) {
			// Started at the default, paced by a reload: the setting is live.
			cfg := provisioned(configs.Edge{})
			e := startEdge(t, cfg, nil)
			cfg.MaxFanoutBytesPerSecond = rate
			if err := e.s.Reload(cfg); err != nil {
				t.Fatal(err)
			}
			key := "paced-" + proto
			rs := make([]*websocket.Conn, readers)
			var sender *websocket.Conn
			payload := make([]byte, size)
			for i := range payload {
				payload[i] = 'a' + byte(i%26)
			}
			frameOf := func(i int) []byte { return fmt.Appendf(nil, "%03d%s", i, payload[3:]) }
			if proto == protocolV1 {
				for i := range rs {
					rs[i] = e.joinV1(t, key, "", nil).Conn
				}
				sender = e.joinV1(t, key, "", nil).Conn
				frameOf = func(i int) []byte {
					return fmt.Appendf(nil, `{"type":"msg","data":"%03d%s"}`, i, payload[3:])
				}
			} else {
				for i := range rs {
					rs[i] = e.join(t, key)
				}
				sender = e.join(t, key)
			}
			perMsg := readers * (len(frameOf(0)) + configs.FanoutDeliveryBytes)

			start := time.Now()
			wrote := make(chan error, 1)
			go func() {
				for i := range msgs {
					if err := sender.WriteMessage(websocket.TextMessage, frameOf(i)); err != nil {
						wrote <- err
						return
					}
				}
				wrote <- nil
			}()

			// Reader 0's arrivals against the bucket; the others read
			// alongside, so none of them is behind for long.
			var wg sync.WaitGroup
			got := make([]int, readers)
			for i := 1; i < readers; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					got[i] = readMsgs(rs[i], proto, msgs, nil)
				}()
			}
			var over []string
			got[0] = readMsgs(rs[0], proto, msgs, func(n int) {
				elapsed := time.Since(start)
				allowed := rate + int(float64(rate)*elapsed.Seconds()) + perMsg
				if delivered := n * perMsg; delivered > allowed && len(over) < 5 {
					over = append(over, fmt.Sprintf("msg %d after %v: %d KiB delivered, at most %d KiB allowed", n, elapsed.Round(time.Millisecond), delivered>>10, allowed>>10))
				}
			})
			wg.Wait()
			if err := <-wrote; err != nil {
				t.Fatalf("sender: %v", err)
			}
			t.Logf("%d msgs of %d B to %d readers at %d KiB/s: the last after %v; %v closed as slow consumers",
				msgs, size, readers, rate>>10, time.Since(start).Round(time.Millisecond), metricValue(t, e.s, "ringlb_edge_slow_consumers_total"))
			for i, n := range got {
				if n != msgs {
					t.Errorf("reader %d got %d of %d msgs", i, n, msgs)
				}
			}
			for _, o := range over {
				t.Errorf("fan-out not paced: %s", o)
			}
			if metricValue(t, e.s, "ringlb_edge_fanout_paced_total") == 0 {
				t.Error("ringlb_edge_fanout_paced_total counted no pacing")
			}
		})
	}
}

// readMsgs reads up to want of the sender's msgs in order from c, calling
// each (if set) with the count so far after each; it stops at the first
// error or out-of-order msg and returns how many came.
func readMsgs(c *websocket.Conn, proto string, want int, each func(n int)) int {
	n := 0
	for n < want {
		_, data, err := c.ReadMessage()
		if err != nil {
			return n
		}
		prefix := fmt.Sprintf("%03d", n)
		if proto == protocolV1 {
			prefix = fmt.Sprintf(`"data":"%03d`, n)
			if !bytes.Contains(data, []byte(`"type":"msg"`)) {
				continue // presence
			}
		}
		if !bytes.Contains(data, []byte(prefix)) {
			return n
		}
		n++
		if each != nil {
			each(n)
		}
	}
	return n
}

// A resume costs its replay: each msg of it written to the participant,
// a write each. Charged as one small envelope, a client resuming from the
// start again and again, each replay read as it came, made the edge write
// the whole history over and over as fast as it could. The attack: a
// history of 50 msgs of 1 KiB, replayed 10 times, at 256 KiB a second.
// Before, all 10 replays (~1 MiB) within milliseconds; now what has been
// replayed by any moment is at most a second's worth and the rate since
// the first resume, plus the replay being paid for.
func TestResumesArePaced(t *testing.T) {
	const (
		msgs    = 50
		size    = 1 << 10
		resumes = 10
		rate    = 256 << 10
	)
	e := startEdge(t, configs.Edge{MaxFanoutBytesPerSecond: rate}, nil)
	writer := e.joinV1(t, "replayed", "", nil)
	data := strings.Repeat("x", size)
	for i := range msgs {
		writer.msg(t, fmt.Sprintf("%03d%s", i, data[3:]))
		writer.readType(t, "ack")
	}
	c := e.joinV1(t, "replayed", "", nil)
	epoch := c.welcome.Epoch
	var perReplay int
	start := time.Now()
	var over []string
	for r := range resumes {
		c.send(t, map[string]any{"type": "resume", "after": 0, "epoch": epoch})
		bytes := 0
		for n := 0; n < msgs; {
			_, b, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("replay %d: after %d msgs: %v", r, n, err)
			}
			if strings.Contains(string(b), `"type":"msg"`) {
				n++
				bytes += len(b) + configs.FanoutDeliveryBytes
			}
		}
		if perReplay == 0 {
			perReplay = bytes
		}
		elapsed := time.Since(start)
		allowed := rate + int(float64(rate)*elapsed.Seconds()) + perReplay
		if replayed := (r + 1) * perReplay; replayed > allowed {
			over = append(over, fmt.Sprintf("replay %d after %v: %d KiB replayed, at most %d KiB allowed", r+1, elapsed.Round(time.Millisecond), replayed>>10, allowed>>10))
		}
	}
	t.Logf("%d replays of %d msgs (%d KiB each with their deliveries) at %d KiB/s: the last after %v",
		resumes, msgs, perReplay>>10, rate>>10, time.Since(start).Round(time.Millisecond))
	for _, o := range over {
		t.Errorf("resumes not paced: %s", o)
	}
}

// The bucket itself, on a clock of its own: a second's worth at once, the
// rate after it, at most a second's wait however costly one message is.
func TestFanoutBucket(t *testing.T) {
	const rate = 1000
	var b fanoutBucket
	at := int64(1e12)
	steps := []struct {
		after time.Duration // since the last charge
		cost  int64
		want  time.Duration
	}{
		{0, 600, 0},                                 // a full bucket: 400 left
		{0, 400, 0},                                 // spent to the last byte
		{0, 250, 250 * time.Millisecond},            // owed 250: a quarter second
		{250 * time.Millisecond, 0, 0},              // paid
		{100 * time.Millisecond, 5000, time.Second}, // owed at most a second's worth
		{time.Second, 1, time.Millisecond},          // a second later: paid, nothing saved
		{2 * time.Second, 1000, 0},                  // two seconds idle: full again
	}
	for i, s := range steps {
		at += int64(s.after)
		if got := b.charge(s.cost, rate, at); got != s.want {
			t.Errorf("step %d (%v later, cost %d): wait %v, want %v", i, s.after, s.cost, got, s.want)
		}
	}
	if got := fanoutCost(100, 0); got != 100+configs.FanoutDeliveryBytes {
		t.Errorf("a message delivered to nobody costs %d, want one delivery", got)
	}
}

// TestResumeAfterAWholeReplay: a client that has read the last msg of a
// replay may resume again at once. The edge cleared its "replay on its
// way" mark only after writing that msg, so a client quick to resume (or
// a writer descheduled after its write) was answered "a replay is already
// on its way" for a replay it held whole — and, waiting for msgs, got none
// (TestResumesArePaced timed out so once in a full run). The mark now
// clears before the last msg goes out.
func TestResumeAfterAWholeReplay(t *testing.T) {
	e := startEdge(t, configs.Edge{}, nil)
	writer := e.joinV1(t, "replayed", "", nil)
	const msgs = 3
	for i := range msgs {
		writer.msg(t, i)
		writer.readType(t, "ack")
	}
	c := e.joinV1(t, "replayed", "", nil)
	refused := 0
	const resumes = 2000
	for range resumes {
		c.send(t, map[string]any{"type": "resume", "after": 0, "epoch": c.welcome.Epoch})
		for n := 0; n < msgs; {
			m := c.read(t)
			switch m.Type {
			case "msg":
				n++
			case "error":
				refused++
				c.send(t, map[string]any{"type": "resume", "after": 0, "epoch": c.welcome.Epoch})
			}
		}
	}
	t.Logf("%d resumes, each sent once the last replay's msgs had all arrived: %d answered \"a replay is already on its way\"", resumes, refused)
	if refused > 0 {
		t.Errorf("%d of %d resumes refused for a replay the client held whole", refused, resumes)
	}
}

// A control frame costs the edge too: reading it, and for a ping a pong
// written back, a write each. Unpaced, one connection sending pings as
// fast as its socket took them kept more than an edge core busy on its
// own — the flood the fan-out pace closed for messages, reopened by the
// frames RFC 6455 lets a client send at will (18.6 million pings in 2 s,
// 61,305 pongs written, 2.3 s of CPU, where the same client sending
// 1-byte messages to nobody was paced to 0.15 s). Each ping and pong is
// now charged as a message to nobody is: what the edge has answered by
// any moment is at most a second's worth and the rate since the first
// write, plus the frame being paid for. A flood of unsolicited pongs
// (nothing answered) is paced alike: a ping behind it is answered only
// once the rate has paid for them.
//
// No duration is asserted: the time since the first write only loosens
// the bound on a slow machine; a reader that is not paced breaks it on any.
func TestControlFrameFloodIsPaced(t *testing.T) {
	const (
		frames = 600
		rate   = 256 << 10
	)
	for _, kind := range []string{"ping", "pong"} {
		t.Run(kind, func(t *testing.T) {
			cfg := provisioned(configs.Edge{})
			cfg.MaxFanoutBytesPerSecond = rate
			e := startEdge(t, cfg, nil)
			c := rawJoinKey(t, e, "control-"+kind)
			op := byte(0x89)
			if kind == "pong" {
				op = 0x8a
			}
			var flood []byte
			for i := range frames {
				flood = append(flood, clientFrame(op, true, fmt.Appendf(nil, "%04d", i))...)
			}
			flood = append(flood, clientFrame(0x89, true, []byte("last"))...)
			perFrame := 4 + configs.FanoutDeliveryBytes

			start := time.Now()
			if _, err := c.Write(flood); err != nil {
				t.Fatal(err)
			}
			// The edge answers the latest ping it has read: each pong
			// names how many pings it had read by then.
			rf := newRawFrames(c)
			var over []string
			for {
				op, payload, err := rf.next()
				if err != nil {
					t.Fatalf("no pong to the last ping: %v", err)
				}
				if op != websocket.PongMessage {
					continue
				}
				n := frames // the last ping
				if string(payload) != "last" {
					if _, err := fmt.Sscanf(string(payload), "%04d", &n); err != nil {
						t.Fatalf("pong %q", payload)
					}
				}
				elapsed := time.Since(start)
				allowed := rate + int(float64(rate)*elapsed.Seconds()) + perFrame
				if taken := (n + 1) * perFrame; taken > allowed && len(over) < 5 {
					over = append(over, fmt.Sprintf("frame %d answered after %v: %d KiB taken, at most %d KiB allowed", n, elapsed.Round(time.Millisecond), taken>>10, allowed>>10))
				}
				if n == frames {
					break
				}
			}
			paced := metricValue(t, e.s, "ringlb_edge_fanout_paced_total")
			t.Logf("%d %ss and a ping at %d KiB/s: the ping answered after %v; paced %v times",
				frames, kind, rate>>10, time.Since(start).Round(time.Millisecond), paced)
			for _, o := range over {
				t.Errorf("control frames not paced: %s", o)
			}
			if paced == 0 {
				t.Error("ringlb_edge_fanout_paced_total counted no pacing")
			}
		})
	}
}

// A message's fragments cost a read each, whatever they hold, and a
// message is paced only once it is whole: one connection sending a
// message of empty continuation frames without end kept an edge core
// busy on its own (26.4 million fragments in 2 s, 1.9 s of CPU). Each
// fragment is now charged as a message to nobody (its bytes are paid with
// its message): what the edge has read of a message by any moment is at
// most a second's worth and the rate since the first write, plus the
// frame being paid for. The message still arrives whole.
//
// No duration is asserted: the time since the first write only loosens
// the bound on a slow machine; a reader that is not paced breaks it on any.
func TestFragmentFloodIsPaced(t *testing.T) {
	const (
		fragments = 600
		rate      = 256 << 10
	)
	cfg := provisioned(configs.Edge{})
	cfg.MaxFanoutBytesPerSecond = rate
	e := startEdge(t, cfg, nil)
	from := rawJoinKey(t, e, "fragments")
	to := e.join(t, "fragments")
	flood := clientFrame(0x01, true, []byte("first"))
	for range fragments {
		flood = append(flood, clientFrame(0x00, true, nil)...)
	}
	flood = append(flood, clientFrame(0x80, true, []byte(" last"))...)
	perFrame := configs.FanoutDeliveryBytes

	start := time.Now()
	if _, err := from.Write(flood); err != nil {
		t.Fatal(err)
	}
	kind, data, err := to.ReadMessage()
	if err != nil || kind != websocket.TextMessage || string(data) != "first last" {
		t.Fatalf("got %d %q, %v; want the message whole", kind, data, err)
	}
	elapsed := time.Since(start)
	paced := metricValue(t, e.s, "ringlb_edge_fanout_paced_total")
	t.Logf("a message of %d empty fragments at %d KiB/s: relayed after %v; paced %v times", fragments, rate>>10, elapsed.Round(time.Millisecond), paced)
	allowed := rate + int(float64(rate)*elapsed.Seconds()) + perFrame
	if taken := (fragments + 1) * perFrame; taken > allowed {
		t.Errorf("fragments not paced: %d fragments read after %v, %d KiB taken, at most %d KiB allowed", fragments+1, elapsed.Round(time.Millisecond), taken>>10, allowed>>10)
	}
	if paced == 0 {
		t.Error("ringlb_edge_fanout_paced_total counted no pacing")
	}
}

// A participant being closed still has what it sends read until its
// close handshake ends — frame by frame, its close looked for among them;
// after a frame it was refused for (1009, 1002), as bytes dropped unread —
// and no pace applied: a client refused at its join (1008: the session
// speaks the other mode, is full, its token revoked) flooded 24.9 million
// empty frames in the handshake's 2 s, 1.5 s of CPU, and one refused
// 1009 had 2.2 GB read and dropped, 1.9 s, connection after connection.
// What comes once the participant was stopped now waits out its pace
// until the handshake's end, the stop ending no wait, as what a
// participant that is not closing sends does: each frame, or each read
// of dropped bytes, as a message to nobody.
func TestFloodWhileClosingIsPaced(t *testing.T) {
	bigHead := []byte{0x82, 0x80 | 127}
	bigHead = binary.BigEndian.AppendUint64(bigHead, 1<<40)
	bigHead = append(bigHead, 1, 2, 3, 4)
	var emptyFrames []byte
	for range 1000 {
		emptyFrames = append(emptyFrames, clientFrame(0x82, true, nil)...)
	}
	for _, tc := range []struct {
		name  string
		join  func(e *testEdge) net.Conn
		flood []byte
	}{
		{"join refused", func(e *testEdge) net.Conn {
			e.joinV1(t, "closing", "", nil)
			c := askUpgrade(t, e, "closing")
			return c // refused 1008 after the 101
		}, emptyFrames},
		{"frame refused", func(e *testEdge) net.Conn {
			c := rawJoinKey(t, e, "closing")
			if _, err := c.Write(bigHead); err != nil {
				t.Fatal(err)
			}
			return c // refused 1009: what follows is dropped unread
		}, make([]byte, 64<<10)},
		{"join refused, then a frame without end", func(e *testEdge) net.Conn {
			e.joinV1(t, "closing", "", nil)
			c := askUpgrade(t, e, "closing")
			if _, err := c.Write(bigHead); err != nil {
				t.Fatal(err)
			}
			return c // its payload is skipped, unread
		}, make([]byte, 64<<10)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := provisioned(configs.Edge{})
			cfg.MaxFanoutBytesPerSecond = 256 << 10
			e := startEdge(t, cfg, nil)
			c := tc.join(e)
			// Read until the edge ends the connection.
			ended := make(chan struct{})
			go func() {
				defer close(ended)
				_ = c.SetReadDeadline(time.Now().Add(testDeadline))
				_, _ = io.Copy(io.Discard, c)
			}()
			start, sent := time.Now(), 0
			_ = c.SetWriteDeadline(time.Now().Add(testDeadline))
			for {
				n, err := c.Write(tc.flood)
				sent += n
				if err != nil {
					break
				}
			}
			<-ended
			paced := metricValue(t, e.s, "ringlb_edge_fanout_paced_total")
			t.Logf("the closing client wrote %d KiB before its connection ended, after %v; paced %v times", sent>>10, time.Since(start).Round(time.Millisecond), paced)
			if paced == 0 {
				t.Error("ringlb_edge_fanout_paced_total counted no pacing: what the closing participant sent was read unpaced")
			}
		})
	}
}
