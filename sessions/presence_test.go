package sessions

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ringlb/ringlb/configs"
)

// churnEdgeEnv makes this test binary the edge of TestPresenceChurnIsPaced
// (TestChurnEdge), so the edge's CPU is read apart from its clients'.
const churnEdgeEnv = "RINGLB_CHURN_EDGE"

// Every join and leave of a ringlb.v1 session sends a presence event to
// every other participant, and nothing paced them: one client holding a
// session's key (an anonymous viewer will do) that joins and leaves in a
// loop costs one handshake per cycle, and the edge 2 × (N-1) deliveries.
// The attack: 49 honest participants, two of them sending a msg every
// 10 ms; one client joins and leaves as fast as it can, one connection at
// a time, for a bounded count of cycles; halfway through, one more honest
// participant joins and stays. The edge runs in a child process
// (TestChurnEdge), so its CPU per cycle is its own.
//
// Before: 98 presence deliveries per cycle, every one of them sent. Now a
// session's presence goes out at most once per presenceInterval, the
// changes in between coalesced: the churner's flaps, joined and left within
// one interval, reach nobody, and what reaches them is bounded by the
// intervals the churn lasted, however many cycles it ran. Every honest
// participant still ends with the session's true presence (the churner
// gone, the late joiner there) and every msg, in order. Latencies and CPU
// are reported, never asserted; the bound on deliveries counts intervals,
// so a slow machine only loosens it.
func TestPresenceChurnIsPaced(t *testing.T) {
	const (
		honest  = 49
		senders = 2
		every   = 10 * time.Millisecond
	)
	cycles := 1000
	if testing.Short() {
		cycles = 200
	}
	edge := startChurnEdge(t, 0)
	e := &testEdge{data: edge.data}
	key := "churned"

	// An honest participant: its reader keeps its view of the session's
	// presence, counts the presence events it gets, and times the msgs.
	type member struct {
		c         *v1Client
		mu        sync.Mutex
		view      presenceView
		wrong     []string           // joins of someone already seen, leaves of someone never seen
		presence  [2]int             // events about the churner, about the others
		got       [senders]int       // the next msg expected of each sender
		seen      [senders]bool      // one of its msgs came (a late joiner's first may be any)
		out       []string           // msgs out of order
		latencies [2][]time.Duration // baseline, churn
	}
	var (
		phase    atomic.Int32 // 0 baseline, 1 churn
		honestMu sync.Mutex
		honestID = map[string]bool{}
		members  []*member
	)
	isHonest := func(id string) bool {
		honestMu.Lock()
		defer honestMu.Unlock()
		return honestID[id]
	}
	addMember := func() *member {
		c, resp, err := e.dialV1(t, key, "", nil)
		if err != nil {
			t.Fatalf("dial: %v (%v)", err, resp)
		}
		m := &member{c: &v1Client{Conn: c}}
		m.c.welcome = m.c.read(t)
		honestMu.Lock()
		honestID[m.c.welcome.Participant] = true
		honestMu.Unlock()
		m.view = m.c.presence()
		_ = c.SetReadDeadline(time.Time{})
		go func() {
			for {
				_, b, err := c.ReadMessage()
				if err != nil {
					return
				}
				var f env
				if err := json.Unmarshal(b, &f); err != nil {
					continue
				}
				now := time.Now()
				m.mu.Lock()
				switch f.Type {
				case "join", "leave":
					if m.view[f.Participant] == (f.Type == "join") {
						m.wrong = append(m.wrong, f.Type+" of "+f.Participant)
					}
					m.view.apply(f)
					if isHonest(f.Participant) {
						m.presence[1]++
					} else {
						m.presence[0]++
					}
				case "msg":
					var d struct {
						S, I int
						T    int64
					}
					if json.Unmarshal(f.Data, &d) == nil && d.S < senders {
						if m.seen[d.S] && d.I != m.got[d.S] {
							m.out = append(m.out, fmt.Sprintf("sender %d: msg %d after %d", d.S, d.I, m.got[d.S]))
						}
						m.got[d.S], m.seen[d.S] = d.I+1, true
						ph := min(phase.Load(), 1)
						m.latencies[ph] = append(m.latencies[ph], now.Sub(time.Unix(0, d.T)))
					}
				}
				m.mu.Unlock()
			}
		}()
		members = append(members, m)
		return m
	}
	for range honest {
		addMember()
	}
	allSee := func(want func(presenceView) bool) func() bool {
		return func() bool {
			for _, m := range members {
				m.mu.Lock()
				ok := want(m.view)
				m.mu.Unlock()
				if !ok {
					return false
				}
			}
			return true
		}
	}
	trueSet := func() map[string]bool {
		honestMu.Lock()
		defer honestMu.Unlock()
		out := map[string]bool{}
		for id := range honestID {
			out[id] = true
		}
		return out
	}
	sameAs := func(want map[string]bool) func(presenceView) bool {
		return func(v presenceView) bool {
			if len(v) != len(want) {
				return false
			}
			for id := range want {
				if !v[id] {
					return false
				}
			}
			return true
		}
	}
	waitFor(t, "every honest participant seeing the 49", allSee(sameAs(trueSet())))

	// Senders: members 0 and 1, a msg every 10 ms until stopped.
	var sent [senders]atomic.Int64
	stop := make(chan struct{})
	var sending sync.WaitGroup
	for s := range senders {
		me := members[s].c
		sending.Add(1)
		go func() {
			defer sending.Done()
			tick := time.NewTicker(every)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				b, _ := json.Marshal(map[string]any{"type": "msg", "data": map[string]any{"s": s, "i": i, "t": time.Now().UnixNano()}})
				if err := me.WriteMessage(websocket.TextMessage, b); err != nil {
					return
				}
				sent[s].Add(1)
			}
		}()
	}
	time.Sleep(50 * every) // the baseline: 50 msgs each, before any churn

	phase.Store(1)
	cpu0 := edge.cpu(t)
	start := time.Now()
	var late *member
	for i := range cycles {
		if i == cycles/2 {
			late = addMember()
		}
		c, resp, err := e.dialV1(t, key, "", nil)
		if err != nil {
			t.Fatalf("churn %d: %v (%v)", i, err, resp)
		}
		ch := &v1Client{Conn: c}
		if w := ch.read(t); w.Type != "welcome" {
			t.Fatalf("churn %d: first frame %+v", i, w)
		}
		ch.leave(t)
		c.Close()
	}
	elapsed := time.Since(start)
	cpu := edge.cpu(t) - cpu0
	close(stop)
	sending.Wait()

	want := trueSet()
	waitFor(t, "every honest participant seeing the session's true presence", allSee(sameAs(want)))
	waitFor(t, "every msg at every honest participant", func() bool {
		for i, m := range members {
			m.mu.Lock()
			for s := range senders {
				if i != s && m.got[s] != int(sent[s].Load()) {
					m.mu.Unlock()
					return false
				}
			}
			m.mu.Unlock()
		}
		return true
	})
	if late == nil {
		t.Fatal("the late joiner never joined")
	}

	var churnerEvents, honestEvents int
	var lat [2][]time.Duration
	for _, m := range members {
		m.mu.Lock()
		churnerEvents += m.presence[0]
		honestEvents += m.presence[1]
		for ph := range lat {
			lat[ph] = append(lat[ph], m.latencies[ph]...)
		}
		for _, o := range m.out {
			t.Errorf("%s", o)
		}
		for _, w := range m.wrong {
			t.Errorf("a participant was told a %s, which its view did not allow", w)
		}
		m.mu.Unlock()
	}
	perCycle := float64(churnerEvents) / float64(cycles)
	t.Logf("%d churn cycles in %v (%.0f a second) against %d honest participants: %d presence deliveries about the churner, %.2f per cycle (unpaced: %d); edge CPU %v, %.1f µs per cycle",
		cycles, elapsed.Round(time.Millisecond), float64(cycles)/elapsed.Seconds(), honest, churnerEvents, perCycle, 2*honest, cpu, float64(cpu.Microseconds())/float64(cycles))
	for ph, name := range []string{"baseline", "during churn"} {
		t.Logf("honest msg latency %s: %s", name, quantiles(lat[ph]))
	}
	paced, coalesced := edge.metric(t, "ringlb_edge_presence_paced_total"), edge.metric(t, "ringlb_edge_presence_coalesced_total")
	t.Logf("ringlb_edge_presence_paced_total %v, ringlb_edge_presence_coalesced_total %v", paced, coalesced)

	// Each interval sends at most the churner's leave and its next join
	// to each honest participant (50 of them at most), plus the first.
	intervals := int(elapsed/presenceInterval) + 2
	if bound := 2 * (honest + 1) * intervals; churnerEvents > bound {
		t.Errorf("churn not paced: %d presence deliveries about the churner over %d cycles, at most %d allowed (%d intervals)", churnerEvents, cycles, bound, intervals)
	}
	if paced == 0 || coalesced == 0 {
		t.Errorf("presence pacing counted nothing: paced %v, coalesced %v", paced, coalesced)
	}
}

// quantiles summarizes ds: count, p50, p90, p99, max.
func quantiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	slices.Sort(ds)
	q := func(f float64) time.Duration {
		return ds[min(len(ds)-1, int(f*float64(len(ds))))].Round(10 * time.Microsecond)
	}
	return fmt.Sprintf("n=%d p50 %v p90 %v p99 %v max %v", len(ds), q(0.5), q(0.9), q(0.99), ds[len(ds)-1].Round(10*time.Microsecond))
}

// churnEdge is an edge in a child process (TestChurnEdge).
type churnEdge struct {
	data, admin string
	pid         int
}

// startChurnEdge starts this test binary as an edge (TestChurnEdge),
// paced at fanoutRate bytes a second (0: the default), and returns its
// addresses; it ends when the test does.
func startChurnEdge(t *testing.T, fanoutRate int) *churnEdge {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestChurnEdge$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), churnEdgeEnv+"="+strconv.Itoa(max(fanoutRate, 1)))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	ready := make(chan *churnEdge, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ce churnEdge
			if _, err := fmt.Sscanf(sc.Text(), "churn edge %s %s", &ce.data, &ce.admin); err == nil {
				ce.pid = cmd.Process.Pid
				ready <- &ce
				_, _ = io.Copy(io.Discard, stdout)
				return
			}
		}
		close(ready)
	}()
	select {
	case ce := <-ready:
		if ce == nil {
			t.Fatal("the edge process ended before serving")
		}
		return ce
	case <-time.After(testDeadline):
		t.Fatal("the edge process never served")
	}
	return nil
}

// cpu returns the edge process's CPU time so far (user and system), 0
// where /proc is not there.
func (ce *churnEdge) cpu(t *testing.T) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", ce.pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	// Fields 14 and 15 of stat (utime, stime), counted from the state.
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const clockTicks = 100 // USER_HZ
	return time.Duration(ut+st) * time.Second / clockTicks
}

// metric reads a counter from the edge process's /metrics.
func (ce *churnEdge) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + ce.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

// TestChurnEdge is the edge of TestPresenceChurnIsPaced and
// TestChurningEditorsFanoutIsPaced: it serves on loopback, says where on
// stdout, and serves until stdin closes. Skipped in a normal run.
func TestChurnEdge(t *testing.T) {
	v := os.Getenv(churnEdgeEnv)
	if v == "" {
		t.Skip("the edge process of TestPresenceChurnIsPaced")
	}
	var cfg configs.Edge
	if rate, _ := strconv.Atoi(v); rate > 1 {
		cfg.MaxFanoutBytesPerSecond = rate
	}
	e := startEdge(t, cfg, func(s *Server) { s.joined = nil })
	fmt.Printf("churn edge %s %s\n", e.data, e.admin)
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// BenchmarkHubJoinLeave is the join path of ringlb.v1 in the relay core,
// without sockets: a participant joins a session of n-1 others (its
// welcome, the others' presence) and leaves it again, the queues emptied
// as writers would. Each iteration is one churn cycle, as fast as the hub
// takes them: most of their presence is held and coalesced (presence.go).
// With quiet, the session's presence is taken as quiet before each join
// and leave, so each is told at once, as in a session without churn.
func BenchmarkHubJoinLeave(b *testing.B) {
	for _, quiet := range []bool{false, true} {
		for _, n := range []int{2, 50} {
			b.Run(fmt.Sprintf("quiet=%v/participants=%d", quiet, n), func(b *testing.B) { benchmarkJoinLeave(b, n, quiet) })
		}
	}
}

func benchmarkJoinLeave(b *testing.B, n int, quiet bool) {
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	h := newHub(n, m)
	h.idle = newIdleSessions(16)
	h.budget = newHistoryBudget(1<<20, h.idle)
	h.historyMsgs, h.historyByte = 16, 1<<16
	var budget byteBudget
	budget.limit.Store(configs.DefaultMaxQueuedBytes)
	newP := func() *participant {
		p := &participant{}
		p.v1 = true
		p.id = newParticipantID()
		p.user = p.id
		p.out.limit = 1 << 20
		p.out.budget = &budget
		p.out.writing = true // no writer goroutine: drain takes the frames
		return p
	}
	drain := func(p *participant) {
		for p.out.n > 0 {
			_, f, _ := p.nextJob()
			f.release()
		}
	}
	key := []byte("bench")
	ps := make([]*participant, n-1)
	for i := range ps {
		ps[i] = newP()
		if err := h.join(key, ps[i]); err != nil {
			b.Fatal(err)
		}
	}
	s := ps[0].session
	h.flushPresence(s) // the joins above, told
	quieten := func() {
		if quiet {
			s.mu.Lock()
			s.v1.presenceAt = 0
			s.mu.Unlock()
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		q := newP()
		quieten()
		if err := h.join(key, q); err != nil {
			b.Fatal(err)
		}
		quieten()
		h.leave(q)
		drain(q)
		for _, p := range ps {
			drain(p)
		}
	}
}

// presenceView is a client's view of who is in its session: its welcome's
// participants, then every join and leave applied.
type presenceView map[string]bool

// presence returns c's view as its welcome gave it.
func (c *v1Client) presence() presenceView {
	v := presenceView{}
	for _, p := range c.welcome.Participants {
		v[p.Participant] = true
	}
	return v
}

// apply applies m if it is a join or a leave.
func (v presenceView) apply(m env) {
	switch m.Type {
	case "join":
		v[m.Participant] = true
	case "leave":
		delete(v, m.Participant)
	}
}

// is reports whether v holds exactly ids.
func (v presenceView) is(ids []string) bool {
	if len(v) != len(ids) {
		return false
	}
	for _, id := range ids {
		if !v[id] {
			return false
		}
	}
	return true
}

// presenceHub is a hub whose participants have no writer: what each is
// sent stays queued for frames to read.
type presenceHub struct {
	h      *hub
	m      *metrics
	ps     map[string]*participant
	join   func(name string)
	leave  func(name string)
	frames func(p *participant) []string // "welcome A,B", "join C", "msg C"…
	// newParticipant returns a ringlb.v1 participant named name, not
	// joined yet, whose frames stay queued.
	newParticipant func(name string) *participant
	// read takes the envelopes queued for p, in order, as its writer would
	// write them; stopped reports that p was stopped, after which its
	// writer writes nothing more (a stop wins over queued frames).
	read func(p *participant) (es []env, stopped bool)
}

func newPresenceHub(t *testing.T) *presenceHub {
	t.Helper()
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	h := newHub(16, m)
	h.idle = newIdleSessions(16)
	h.budget = newHistoryBudget(1<<20, h.idle)
	var budget byteBudget
	budget.limit.Store(configs.DefaultMaxQueuedBytes)
	key := []byte("net")
	ph := &presenceHub{h: h, m: m, ps: map[string]*participant{}}
	ph.newParticipant = func(name string) *participant {
		p := &participant{}
		p.v1 = true
		p.id, p.user = name, name
		p.out.limit = 64
		p.out.budget = &budget
		p.out.writing = true // no writer: frames stays queued
		return p
	}
	ph.join = func(name string) {
		p := ph.newParticipant(name)
		if err := h.join(key, p); err != nil {
			t.Fatal(err)
		}
		ph.ps[name] = p
	}
	ph.leave = func(name string) { h.leave(ph.ps[name]) }
	ph.read = func(p *participant) (es []env, stopped bool) {
		for {
			// Only while a job is due: nextJob with none ends the writer
			// (writing cleared), and the next enqueue would start one.
			p.out.mu.Lock()
			due := p.out.n > 0 || p.out.stopDue
			closing := p.out.closing
			p.out.mu.Unlock()
			if !due || closing {
				return es, stopped || closing
			}
			job, f, _ := p.nextJob()
			if job == jobClose {
				stopped = true
				continue // the close handshake is all that is left
			}
			for _, m := range jobMessages(f) {
				var e env
				if err := json.Unmarshal(m, &e); err != nil {
					t.Fatal(err)
				}
				es = append(es, e)
			}
			f.release()
		}
	}
	ph.frames = func(p *participant) []string {
		var out []string
		es, _ := ph.read(p)
		for _, e := range es {
			switch e.Type {
			case "welcome":
				var names []string
				for _, q := range e.Participants {
					names = append(names, q.Participant)
				}
				out = append(out, "welcome "+strings.Join(names, ","))
			case "msg":
				out = append(out, "msg "+e.From)
			default:
				out = append(out, e.Type+" "+e.Participant)
			}
		}
		return out
	}
	return ph
}

// A presence batch brings each participant what it has not been told,
// whenever it joined: in one interval, after A and B (told at once), C
// joins, B leaves, D joins, C leaves, E joins and leaves. A was told of
// none of it; C's and D's welcomes listed who was there. The batch tells
// A of B's leave and D's join — not of C nor E, whom it never saw — and D
// of C's leave; nobody of E. In the relay core, without sockets, so the
// whole sequence falls within one interval.
func TestPresenceBatchTellsEachItsNetChange(t *testing.T) {
	ph := newPresenceHub(t)
	h, m, ps, join, leave, frames := ph.h, ph.m, ph.ps, ph.join, ph.leave, ph.frames
	join("A")
	join("B")
	join("C")
	leave("B")
	join("D")
	leave("C")
	join("E")
	leave("E")
	for name, want := range map[string][]string{
		"A": {"welcome A", "join B"},
		"D": {"welcome A,C,D"},
	} {
		if got := frames(ps[name]); !slices.Equal(got, want) {
			t.Fatalf("%s before the batch: %q, want %q (the joins and leaves all within one interval?)", name, got, want)
		}
	}
	h.flushPresence(ps["A"].session)
	for name, want := range map[string][]string{
		"A": {"leave B", "join D"},
		"D": {"leave C"},
	} {
		if got := frames(ps[name]); !slices.Equal(got, want) {
			t.Errorf("%s got %q from the batch, want %q", name, got, want)
		}
	}
	if v := counterValue(m.presenceCoalesced); v != 4 {
		t.Errorf("ringlb_edge_presence_coalesced_total %v, want 4 (C's and E's joins and leaves)", v)
	}
	// Told, the next change waits for the next interval again.
	join("F")
	if got := frames(ps["A"]); len(got) != 0 {
		t.Errorf("A got %q right after a batch, want F's join held", got)
	}
	h.flushPresence(ps["A"].session)
	if got := frames(ps["A"]); !slices.Equal(got, []string{"join F"}) {
		t.Errorf("A got %q, want F's join", got)
	}
}

// counterValue reads c.
func counterValue(c prometheus.Counter) float64 {
	var d dto.Metric
	_ = c.Write(&d)
	return d.GetCounter().GetValue()
}

// A participant whose join is held that publishes at once: the others are
// told of its join before they get its msg (and not again with the batch).
func TestPresenceJoinGoesBeforeItsMsgs(t *testing.T) {
	ph := newPresenceHub(t)
	ph.join("A")
	ph.join("B") // the first change after a quiet interval: told at once
	ph.join("C") // held for the batch
	for name, want := range map[string][]string{"A": {"welcome A", "join B"}, "B": {"welcome A,B"}} {
		if got := ph.frames(ph.ps[name]); !slices.Equal(got, want) {
			t.Fatalf("%s before C publishes: %q, want %q (C's join held)", name, got, want)
		}
	}
	ph.h.publish(ph.ps["C"], []byte(`"hello"`), time.Now())
	for _, name := range []string{"A", "B"} {
		if got := ph.frames(ph.ps[name]); !slices.Equal(got, []string{"join C", "msg C"}) {
			t.Errorf("%s got %q, want C's join before its msg", name, got)
		}
	}
	ph.h.flushPresence(ph.ps["A"].session) // the interval's end: nothing left to tell
	if got := ph.frames(ph.ps["A"]); len(got) != 0 {
		t.Errorf("A got %q from the batch, want nothing (C's join told already)", got)
	}
}

// A session handed on (a drain's hand-off, a fence) while a join is held:
// the batch's timer finds it moved and tells nobody, and its participants,
// closed for the new owner, leave one by one — the one whose join was
// never told among them. Their leaves are told to nobody either: the
// others are being closed too, and the new owner tells its own presence.
func TestPresenceOfAHandedOnSessionEndsQuietly(t *testing.T) {
	ph := newPresenceHub(t)
	ph.join("A")
	ph.join("B") // told at once
	ph.join("C") // held for the batch
	for _, name := range []string{"A", "B", "C"} {
		ph.frames(ph.ps[name])
	}
	s := ph.ps["A"].session
	s.mu.Lock()
	s.movedTo = "edge-2" // what handOff and yield set
	s.mu.Unlock()
	ph.h.flushPresence(s) // the interval ends after the hand-over
	for _, name := range []string{"C", "A", "B"} {
		ph.leave(name)
	}
	for _, name := range []string{"A", "B", "C"} {
		if got := ph.frames(ph.ps[name]); len(got) != 0 {
			t.Errorf("%s got %q after its session was handed on, want nothing", name, got)
		}
	}
}

// jobMessages are the payloads of the messages a queued job f writes: a
// resume's replay is one slot, a batch of history frames the writer takes
// in order, those it has not taken yet (participant.takeReplayed); a
// presence batch is one frame holding its events one message after
// another (presenceBatch).
func jobMessages(f *frame) [][]byte {
	fs := []*frame{f}
	if f.batch != nil {
		fs = f.batch
	}
	var ms [][]byte
	for _, g := range fs {
		for w := g.wire(); len(w) > 0; {
			n, head := int(w[1]&0x7f), 2
			switch n {
			case 126:
				n, head = int(binary.BigEndian.Uint16(w[2:])), 4
			case 127:
				n, head = int(binary.BigEndian.Uint64(w[2:])), 10
			}
			ms = append(ms, w[head:head+n])
			w = w[head+n:]
		}
	}
	return ms
}
