package sessions

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/configs"
)

// Each participant's fan-out is paced (pace.go), but its bucket starts
// full: one client holding a session's key as an editor that joins, sends
// one msg and leaves, in a loop, had every msg paid from a bucket nobody
// had drawn on, and cost the edge N-1 deliveries a cycle as fast as it
// could connect. The attack: 49 honest participants who only read; one
// client joins, sends a msg of 64 bytes and leaves, one connection at a
// time, for a bounded count of cycles, on an edge paced at 2 MiB a second
// (a msg to the 49 counts ~50 KiB, the join and leave told to them ~100
// KiB more: ~14 cycles a second). Two churners: one that
// waits for its ack and the edge's close before the next cycle, one that
// sends its msg and a close and drops the connection at once. The edge
// runs in a child process (TestChurnEdge), so its CPU is its own.
//
// Before: each cycle's msg reached the 49 at once, as many a second as the
// churner connected, with its join and leave. Now what the session's
// newcomers fan out together is paced like one participant while only one
// of them is there at a time (joinerWindow): what an honest reader has
// received of the churner by any moment is at most a second's worth and
// the rate since the first cycle, plus the msg being paid for. The polite
// churner's msgs all reach every honest participant, in order; nobody
// honest is closed. Deliveries per second and CPU are reported, not
// asserted; the time since the first cycle only loosens the bound.
func TestChurningEditorsFanoutIsPaced(t *testing.T) {
	parallel(t)
	const (
		honest = 49
		rate   = 2 << 20
	)
	cycles := 300
	if testing.Short() {
		cycles = 120
	}
	for _, polite := range []bool{true, false} {
		name := "waits for its ack and close"
		if !polite {
			name = "drops each connection at once"
		}
		t.Run(name, func(t *testing.T) {
			edge := startChurnEdge(t, rate)
			e := &testEdge{data: edge.data}
			key := "churned-editor"

			type member struct {
				mu       sync.Mutex
				got      int // the churner's msgs, in order
				presence int // joins and leaves of the churner's connections
				out      []string
				closed   error
			}
			var (
				start   atomic.Int64 // Unix ns of the first cycle
				honestM sync.Mutex
				ids     = map[string]bool{}
				members []*member
				overMu  sync.Mutex
				over    []string
			)
			// What one churner msg counts against the pace: its envelope
			// and a delivery to each honest participant, at least.
			envelope := func(i int) []byte {
				return fmt.Appendf(nil, `{"type":"msg","data":{"i":%d,"pad":"%s"}}`, i, "0123456789abcdef0123456789abcdef0123")
			}
			perMsg := honest * (len(envelope(0)) + configs.FanoutDeliveryBytes)
			for i := range honest {
				c, resp, err := e.dialV1(t, key, "", nil)
				if err != nil {
					t.Fatalf("dial: %v (%v)", err, resp)
				}
				cl := &v1Client{Conn: c}
				w := cl.read(t)
				honestM.Lock()
				ids[w.Participant] = true
				honestM.Unlock()
				_ = c.SetReadDeadline(time.Time{})
				m := &member{}
				members = append(members, m)
				go func() {
					for {
						_, b, err := c.ReadMessage()
						if err != nil {
							m.mu.Lock()
							m.closed = err
							m.mu.Unlock()
							return
						}
						var f env
						if json.Unmarshal(b, &f) != nil {
							continue
						}
						honestM.Lock()
						fromHonest := ids[f.From] || ids[f.Participant]
						honestM.Unlock()
						if fromHonest {
							continue
						}
						if f.Type == "join" || f.Type == "leave" {
							m.mu.Lock()
							m.presence++
							m.mu.Unlock()
						}
						if f.Type != "msg" {
							continue
						}
						var d struct{ I int }
						_ = json.Unmarshal(f.Data, &d)
						m.mu.Lock()
						if polite && d.I != m.got {
							m.out = append(m.out, fmt.Sprintf("churner's msg %d after %d", d.I, m.got))
						}
						m.got++
						n := m.got
						m.mu.Unlock()
						if i != 0 {
							continue
						}
						// Member 0's arrivals against one participant's pace.
						elapsed := time.Since(time.Unix(0, start.Load()))
						allowed := rate + int(float64(rate)*elapsed.Seconds()) + perMsg
						if delivered := n * perMsg; delivered > allowed {
							overMu.Lock()
							if len(over) < 5 {
								over = append(over, fmt.Sprintf("msg %d after %v: %d KiB fanned out, at most %d KiB allowed", n, elapsed.Round(time.Millisecond), delivered>>10, allowed>>10))
							}
							overMu.Unlock()
						}
					}
				}()
			}
			// Past their first two seconds the honest are counted out of
			// the session's newcomers (2 × joinerWindow): a crowd's
			// second's worth each is theirs, not a churner's.
			idle0, idleAt := edge.cpu(t), time.Now()
			time.Sleep(2*time.Second + 100*time.Millisecond)
			idle := float64(edge.cpu(t)-idle0) / time.Since(idleAt).Seconds() / float64(time.Millisecond)

			cpu0 := edge.cpu(t)
			start.Store(time.Now().UnixNano())
			refused := 0
			for i := range cycles {
				c, resp, err := e.dialV1(t, key, "", nil)
				if err != nil {
					t.Fatalf("churn %d: %v (%v)", i, err, resp)
				}
				if polite {
					ch := &v1Client{Conn: c}
					if w := ch.read(t); w.Type != "welcome" {
						refused++ // full: its close
						c.Close()
						continue
					}
					if err := c.WriteMessage(websocket.TextMessage, envelope(i)); err != nil {
						t.Fatalf("churn %d: %v", i, err)
					}
					ch.readType(t, "ack")
					ch.leave(t)
				} else {
					_ = c.WriteMessage(websocket.TextMessage, envelope(i))
					_ = c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
				}
				c.Close()
			}
			elapsed := time.Since(time.Unix(0, start.Load()))
			waiting := sessionParticipants(t, edge.admin, key) - honest
			if polite {
				waitFor(t, "every churner msg at every honest participant", func() bool {
					for _, m := range members {
						m.mu.Lock()
						n := m.got
						m.mu.Unlock()
						if n != cycles-refused {
							return false
						}
					}
					return true
				})
			} else {
				// The churner's connections the edge still holds, paying
				// for their msgs, end; then nothing more comes.
				waitFor(t, "the session back to its honest participants", func() bool {
					return sessionParticipants(t, edge.admin, key) == honest
				})
			}
			drained := time.Since(time.Unix(0, start.Load()))
			cpu := edge.cpu(t) - cpu0

			deliveries, presence := 0, 0
			for _, m := range members {
				m.mu.Lock()
				deliveries += m.got
				presence += m.presence
				for _, o := range m.out {
					t.Errorf("%s", o)
				}
				if m.closed != nil {
					t.Errorf("an honest participant was closed: %v", m.closed)
				}
				m.mu.Unlock()
			}
			t.Logf("%d cycles in %v (%.0f a second; %d refused, the session full): %d msg deliveries to the %d honest, %.1f a cycle, %.0f a second until the last came (%v); %.1f presence deliveries a cycle; %d of its connections still on the edge at its last cycle; edge CPU %v, %.0f µs a cycle, %.2f of a core (idle before: %.0f ms a second); ringlb_edge_joiners_paced_total %v",
				cycles, elapsed.Round(time.Millisecond), float64(cycles)/elapsed.Seconds(), refused, deliveries, honest,
				float64(deliveries)/float64(cycles), float64(deliveries)/drained.Seconds(), drained.Round(time.Millisecond),
				float64(presence)/float64(cycles), waiting, cpu, float64(cpu.Microseconds())/float64(cycles), cpu.Seconds()/drained.Seconds(), idle,
				edge.metric(t, "ringlb_edge_joiners_paced_total"))
			for _, o := range over {
				t.Errorf("churning editors' fan-out not paced: %s", o)
			}
			if edge.metric(t, "ringlb_edge_joiners_paced_total") <= 0 {
				t.Error("ringlb_edge_joiners_paced_total counted no msg held back")
			}
		})
	}
}

// sessionParticipants reads how many participants the session of key has
// on the edge whose admin port is admin (0: none).
func sessionParticipants(t *testing.T, admin, key string) int {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/api/sessions")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list []sessionInfo
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	for _, s := range list {
		if s.Key == key {
			return s.Participants
		}
	}
	return 0
}

// A crowd is not a churner: a class of 50 opening a link at once, each
// pad sending a snapshot of the text (32 KiB) once it has its welcome, on
// an edge paced at 4 MiB a second. Each snapshot fanned out counts 1.6
// MiB at most, within its pad's own second's worth; together they count
// up to 80 MiB, twenty seconds of one participant's pace. Each newcomer
// still connected brings its own second's worth to its session's joiners'
// bucket, so nobody's snapshot waits. What happened is asserted: every
// snapshot acked, nobody closed, none held back; how long the crowd took
// is reported.
func TestJoiningCrowdIsNotPaced(t *testing.T) {
	const size = 32 << 10
	crowd := 50
	if testing.Short() {
		// Under the race detector 50 readers fighting for the
		// session's lock reach their turn seconds after their read:
		// not a crowd's timing.
		crowd = 20
	}
	e := startEdge(t, configs.Edge{MaxFanoutBytesPerSecond: 4 << 20}, nil)
	snapshot := fmt.Appendf(nil, `{"type":"msg","data":"%0*d"}`, size, 0)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		last    time.Duration
		failed  []string
		arrived atomic.Int64
	)
	start := time.Now()
	for i := range crowd {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, resp, err := e.dialV1(t, "class", "", nil)
			if err != nil {
				mu.Lock()
				failed = append(failed, fmt.Sprintf("pad %d: %v (%v)", i, err, resp))
				mu.Unlock()
				return
			}
			defer c.Close()
			_ = c.SetReadDeadline(time.Now().Add(testDeadline))
			if err := c.WriteMessage(websocket.TextMessage, snapshot); err != nil {
				mu.Lock()
				failed = append(failed, fmt.Sprintf("pad %d: %v", i, err))
				mu.Unlock()
				return
			}
			for {
				_, b, err := c.ReadMessage()
				if err != nil {
					mu.Lock()
					failed = append(failed, fmt.Sprintf("pad %d before its ack: %v", i, err))
					mu.Unlock()
					return
				}
				var f env
				if json.Unmarshal(b, &f) == nil && f.Type == "ack" {
					break
				}
				if f.Type == "msg" {
					arrived.Add(1)
				}
			}
			mu.Lock()
			last = max(last, time.Since(start))
			mu.Unlock()
			// Read on until all have their acks, as pads do.
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, f := range failed {
		t.Error(f)
	}
	held, paced := metricValue(t, e.s, "ringlb_edge_joiners_paced_total"), metricValue(t, e.s, "ringlb_edge_fanout_paced_total")
	t.Logf("%d pads joined at once, each sending %d KiB: the last acked after %v; %d snapshots had arrived at pads before their own ack; joiners held back %v, fan-out paced %v",
		crowd, size>>10, last.Round(time.Millisecond), arrived.Load(), held, paced)
	if held != 0 || paced != 0 {
		t.Errorf("a crowd was paced: ringlb_edge_joiners_paced_total %v, ringlb_edge_fanout_paced_total %v", held, paced)
	}
}

// The joiners' bucket on a clock of its own: one participant's second's
// worth above zero, each newcomer counted in another below it, paid
// before a message goes; what newcomers that left spent stays.
func TestJoinersBucketShare(t *testing.T) {
	const rate = 1000
	var b fanoutBucket
	at := int64(1e12)
	steps := []struct {
		after time.Duration // since the last call
		n     int64         // newcomers counted
		cost  int64
		want  time.Duration
	}{
		{0, 1, 600, 0},                       // full: 400 left
		{0, 1, 600, 0},                       // not in debt: goes, 200 owed
		{0, 1, 1, 200 * time.Millisecond},    // owed: waits, charged nothing
		{0, 3, 1500, 0},                      // two more counted in: 2000 below zero before anyone waits
		{0, 3, 1000, 0},                      // 1700 owed, goes: 2700 owed
		{0, 3, 1, 233333333},                 // 700 past the two's: at 3000 a second
		{0, 1, 1, 2700 * time.Millisecond},   // the two left: what they spent stays
		{2 * time.Second, 1, 1000, 0},        // two seconds quiet: full again
		{100 * time.Millisecond, 1, 5000, 0}, // 100 back at one's rate: goes
		{0, 1, 1, time.Second},               // owed at most a second's worth past the floor
	}
	for i, s := range steps {
		at += int64(s.after)
		if got := b.share(s.cost, rate, s.n, at); got != s.want {
			t.Errorf("step %d (%v later, %d newcomers, cost %d): wait %v, want %v", i, s.after, s.n, s.cost, got, s.want)
		}
	}
}

// The joiners' bucket is shared, so one client holding a session's key as
// an editor could keep it in debt for every newcomer: a connection that
// joins brings a second's worth at once, its msg goes on it, and leaving
// within its first second it leaves what it spent. Joining again each 1.3
// seconds, the churner always found the room its own join made, and the
// honest newcomer's first msg, waiting for the bucket to climb past what
// its newcomers bring, never found it while the churner went on: it waited
// until the churner stopped (and, held past pongWait, its reader would take
// its peer for silent). The churner spends no more than one participant's
// pace. Now a newcomer's message waits no longer than its first second (a
// client could have waited that second out before sending it, and then
// the joiners' bucket would not have held it at all): the honest newcomer's
// msg is sequenced before the churner's third after it. How long it waited
// is reported.
func TestChurnerHoldsNoNewcomerBack(t *testing.T) {
	const (
		rate   = 64 << 10
		cycles = 6
	)
	e := startEdge(t, configs.Edge{MaxFanoutBytesPerSecond: rate}, nil)
	key := "held-newcomer"
	for range 3 {
		r := e.joinV1(t, key, "", nil)
		_ = r.SetReadDeadline(time.Time{})
		go func() {
			for {
				if _, _, err := r.ReadMessage(); err != nil {
					return
				}
			}
		}()
	}
	// Past their two counted seconds, the readers bring nothing.
	time.Sleep(2*time.Second + 100*time.Millisecond)

	// Each churner msg counts more than two seconds' worth: to the three
	// readers (and the newcomer), with its join and leave.
	big := fmt.Appendf(nil, `{"type":"msg","data":"%0*d"}`, 48<<10, 0)
	type acked struct {
		seq uint64
		err error
		at  time.Time
	}
	startH := make(chan struct{})
	var (
		hSentAt atomic.Int64
		hAck    = make(chan acked, 1)
	)
	go func() {
		<-startH
		c, resp, err := e.dialV1(t, key, "", nil)
		if err != nil {
			hAck <- acked{err: fmt.Errorf("dial: %v (%v)", err, resp)}
			return
		}
		if _, _, err := c.ReadMessage(); err != nil { // the welcome
			hAck <- acked{err: err}
			return
		}
		hSentAt.Store(time.Now().UnixNano())
		if err := c.WriteMessage(websocket.TextMessage, []byte(`{"type":"msg","data":"hello"}`)); err != nil {
			hAck <- acked{err: err}
			return
		}
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				hAck <- acked{err: err}
				return
			}
			var f env
			if json.Unmarshal(b, &f) == nil && f.Type == "ack" {
				hAck <- acked{seq: f.Seq, at: time.Now()}
				break
			}
		}
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	var (
		h     *acked
		after []uint64 // the churner's msgs sent after the newcomer's
	)
	for i := 0; i < cycles && h == nil; i++ {
		c := e.joinV1(t, key, "", nil)
		sentAfter := hSentAt.Load() != 0
		if err := c.WriteMessage(websocket.TextMessage, big); err != nil {
			t.Fatal(err)
		}
		for {
			if f := c.read(t); f.Type == "ack" {
				if sentAfter {
					after = append(after, f.Seq)
				}
				break
			}
		}
		c.Close() // within its first second: what it spent stays spent
		wait := 1300 * time.Millisecond
		if i == 1 {
			// The churner sees the newcomer join (its presence) and
			// churns at once, while the newcomer's msg waits.
			close(startH)
			waitFor(t, "the newcomer's msg sent", func() bool { return hSentAt.Load() != 0 })
			wait = 50 * time.Millisecond
		}
		select {
		case a := <-hAck:
			h = &a
		case <-time.After(wait):
		}
	}
	if h == nil {
		a := <-hAck
		h = &a
	}
	if h.err != nil {
		t.Fatalf("the honest newcomer: %v", h.err)
	}
	before := 0
	for _, seq := range after {
		if seq < h.seq {
			before++
		}
	}
	t.Logf("the honest newcomer's first msg was acked %v after it was sent; %d of the churner's msgs sent after it were sequenced first; ringlb_edge_joiners_paced_total %v",
		h.at.Sub(time.Unix(0, hSentAt.Load())).Round(time.Millisecond), before, metricValue(t, e.s, "ringlb_edge_joiners_paced_total"))
	if before >= 3 {
		t.Errorf("a churner held an honest newcomer's first msg back: %d of its msgs sent after it went first", before)
	}
}
