package sessions

import (
	"bytes"
	"fmt"
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
