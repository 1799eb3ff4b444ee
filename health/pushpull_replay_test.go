package health

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringlb/ringlb/configs"
)

// streamTap is a TCP proxy in front of a node's gossip port that keeps what
// clients send through it: whole gossip streams (push/pull exchanges, joins)
// as anyone on the cluster's network can capture them. memberlist encrypts
// a stream once, with a fresh nonce, and keeps no record of those it has
// taken, so a capture sent again later is read as it was then.
type streamTap struct {
	ln net.Listener
	to string
	wg sync.WaitGroup

	mu      sync.Mutex
	streams [][]byte // complete client streams, oldest first, at most maxTapStreams
	done    int      // streams completed so far
}

// The tap's bounds: a push/pull of a few members is about a kilobyte.
const (
	maxTapStreams = 64
	maxTapStream  = 1 << 20
)

func newStreamTap(t *testing.T, to string) *streamTap {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &streamTap{ln: ln, to: to}
	p.wg.Go(p.serve)
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *streamTap) addr() string { return p.ln.Addr().String() }

func (p *streamTap) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Go(func() { p.relay(c) })
	}
}

// relay carries one stream both ways and keeps what the client sent.
func (p *streamTap) relay(c net.Conn) {
	defer c.Close()
	s, err := net.DialTimeout("tcp", p.to, 5*time.Second)
	if err != nil {
		return
	}
	defer s.Close()
	var back sync.WaitGroup
	back.Go(func() { io.Copy(c, s); c.Close() })
	rec := &boundedBuffer{limit: maxTapStream}
	io.Copy(s, io.TeeReader(c, rec))
	s.Close()
	back.Wait()
	if rec.Len() == 0 || rec.over {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.streams) == maxTapStreams {
		p.streams = slices.Delete(p.streams, 0, 1)
	}
	p.streams = append(p.streams, slices.Clone(rec.Bytes()))
	p.done++
}

// completed is how many streams have gone through the tap.
func (p *streamTap) completed() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

func (p *streamTap) captured() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.streams)
}

// boundedBuffer keeps at most limit bytes; beyond, it keeps nothing more
// and says so (over), taking the writes so the relay goes on.
type boundedBuffer struct {
	bytes.Buffer
	limit int
	over  bool
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if b.over || b.Len()+len(p) > b.limit {
		b.over = true
		return len(p), nil
	}
	return b.Buffer.Write(p)
}

// replayStream sends a captured stream to addr on a new connection, as
// someone without the key would, and reads (and drops) what the node
// answers until it closes the stream: memberlist merges a push/pull it took
// before closing it.
func replayStream(addr string, stream []byte) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(stream); err != nil {
		return
	}
	io.Copy(io.Discard, io.LimitReader(c, maxTapStream))
}

// countingLogger is a debug logger that counts the lines (memberlist's
// among them) containing what.
func countingLogger(what string, n *atomic.Int64) *slog.Logger {
	w := writerFunc(func(p []byte) (int, error) {
		n.Add(int64(bytes.Count(p, []byte(what))))
		return len(p), nil
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// watchPending polls, until done is closed, for the names of names that m
// has taken in and not believed (pending, joins.go); seen lists those found
// so far.
func watchPending(m *Membership, names []string, done <-chan struct{}) (seen func() []string) {
	var mu sync.Mutex
	got := map[string]bool{}
	go func() {
		for {
			m.mu.Lock()
			for _, n := range names {
				if _, ok := m.pending[n]; ok {
					mu.Lock()
					got[n] = true
					mu.Unlock()
				}
			}
			m.mu.Unlock()
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		var out []string
		for _, n := range names {
			if got[n] {
				out = append(out, n)
			}
		}
		return out
	}
}

// keyedClusters returns the test configuration of a node (testCluster)
// holding a key shared by every node it makes. Probes every 500 ms (a
// probe then waits 200 ms for its ack): at testCluster's 100 ms a probe
// waited 50 ms, and under the race detector a live node missed enough of
// them to be taken for dead — a real failure, not the replay's doing,
// which these tests must tell apart.
func keyedClusters(t *testing.T) func(name string, join ...string) configs.Cluster {
	key := writeKey(t, 32)
	return func(name string, join ...string) configs.Cluster {
		c := testCluster(name, join...)
		c.SecretKeyFile = key
		c.ProbeInterval = configs.Duration(500 * time.Millisecond)
		return c
	}
}

// A push/pull stream carries the sender's whole member list: every node it
// knows, with its state, incarnation, address and metadata, encrypted with
// the cluster's key. Someone without the key who captured such streams
// (here: a balancer's seed checks, which push/pull through a tap every
// second) sends them again to a balancer's gossip port, over and over:
//
//   - two edges the capture names alive have since left and been forgotten
//     (GossipToTheDeadTime): memberlist takes each in again as a join, and
//     it must not be believed — on no ring, the balancer's nor another
//     member's that memberlist tells of it;
//   - an edge the capture names dead (it had crashed) has since come back
//     and refuted its death with a newer incarnation: the replay must not
//     take it out of any view.
func TestReplayedPushPullNeitherResurrectsNorKills(t *testing.T) {
	// Its own nodes, on ports of their own, and no test hook: the replay
	// tests wait on memberlist's timers, side by side.
	t.Parallel()
	keyed := keyedClusters(t)
	// The victim must come back while the cluster still holds its death
	// (it is forgotten after this too), a few seconds after it was taken
	// for dead; then the departed edges are forgotten.
	tune := tuning{gossipToTheDead: 8 * time.Second}
	target := startTuned(t, keyed("target"), Meta{Role: RoleBalancer, Region: "east", State: StateAlive}, nil, tune)
	reg := prometheus.NewRegistry()
	reg.MustRegister(target.Collector())
	tap := newStreamTap(t, target.Addr())

	ghost := startTuned(t, keyed("ghost", target.Addr()), edgeMeta(1), nil, tune)
	stale := startTuned(t, keyed("stale", target.Addr()), edgeMeta(2), nil, tune)
	var refuted atomic.Int64
	victimCfg := keyed("victim", target.Addr())
	victim := startTuned(t, victimCfg, edgeMeta(3), countingLogger("Refuting", &refuted), tune)
	victimAddr := victim.Addr()
	// The witness's seed is the tap: it leads to no member's address, so
	// the witness joins through it again every seed check (1 s with the
	// local profile), each time a push/pull carrying its whole view.
	witness := startTuned(t, keyed("witness", tap.addr()), Meta{Role: RoleBalancer, Region: "east", State: StateAlive}, nil, tune)
	all := []*Membership{target, ghost, stale, victim, witness}
	waitAll(t, all, func(ns []Node) bool { return len(ns) == len(all) })

	// The victim crashes; while the cluster holds it dead, the witness's
	// push/pulls name it so.
	if err := victim.crash(); err != nil {
		t.Fatal(err)
	}
	release := holdAddr(t, victimAddr)
	gone := func(name string) func([]Node) bool {
		return func(ns []Node) bool { return !hasMember(name)(ns) }
	}
	waitAll(t, []*Membership{target, witness}, gone("victim"))
	deadAt := time.Now()
	from := tap.completed()
	waitFor(t, "two push/pulls through the tap after the victim was taken for dead", func() bool { return tap.completed() >= from+2 })
	capture := tap.captured()
	size := 0
	for _, s := range capture {
		size += len(s)
	}
	t.Logf("captured %d encrypted streams (%d bytes) from the witness to the target", len(capture), size)

	// The two edges leave for good (the time memberlist remembers them
	// runs from now).
	for _, m := range []*Membership{ghost, stale} {
		if err := m.Shutdown(t.Context()); err != nil {
			t.Fatal(err)
		}
	}

	// It comes back on its address while memberlist still holds its death,
	// hears of it and refutes it: a newer incarnation than any capture.
	release()
	for attempt := 1; ; attempt++ {
		victimCfg.Bind = victimAddr
		if victim = rebindTuned(t, victimCfg, edgeMeta(3), countingLogger("Refuting", &refuted), tune, attempt); victim != nil {
			break
		}
	}
	waitFor(t, "the restarted victim refutes its death", func() bool { return refuted.Load() > 0 })
	t.Logf("the victim refuted its death %s after it was taken for dead", time.Since(deadAt).Round(time.Millisecond))
	waitAll(t, []*Membership{target, witness, victim}, hasMember("victim"))
	refutedBefore := refuted.Load()
	waitAll(t, []*Membership{target, witness, victim}, func(ns []Node) bool { return gone("ghost")(ns) && gone("stale")(ns) })

	// The attacker: every captured stream to the target's gossip port,
	// again every 200 ms.
	replayStart := time.Now()
	stop := make(chan struct{})
	var replays atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			for _, s := range capture {
				replayStream(target.Addr(), s)
			}
			replays.Add(1)
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()
	departed := []string{"ghost", "stale"}
	seen := watchPending(target, departed, stop)

	// memberlist forgets the departed edges, then takes the replay's
	// alive records of them in as joins: the target pings them and hears
	// nothing, and memberlist takes them for dead again.
	waitFor(t, "the target takes both departed edges in from the replay", func() bool { return len(seen()) == len(departed) })
	tookIn := time.Since(replayStart)
	waitFor(t, "the target counts both replayed joins unconfirmed", func() bool { return joinsUnconfirmed(t, reg) >= 2 })
	t.Logf("memberlist took both departed edges in again %s after the replay began (they had just left), pinged them unanswered and dropped them unbelieved %s after; %d rounds of replay",
		tookIn.Round(time.Millisecond), time.Since(replayStart).Round(time.Millisecond), replays.Load())

	for _, m := range []*Membership{target, witness, victim} {
		ns := m.Members()
		for _, name := range departed {
			if hasMember(name)(ns) {
				t.Errorf("%s lists the departed %s again after a replayed push/pull: %v", m.LocalName(), name, ns)
			}
		}
		if !hasMember("victim")(ns) {
			t.Errorf("%s lost the live victim to a replayed push/pull naming it dead: %v", m.LocalName(), ns)
		}
		for _, ev := range m.Recent() {
			if !ev.At.After(replayStart) {
				continue
			}
			if slices.Contains(departed, ev.Node.Name) && ev.Kind == "join" {
				t.Errorf("%s believed a join of the departed %s at %s", m.LocalName(), ev.Node.Name, ev.At)
			}
			if ev.Node.Name == "victim" && ev.Kind == "leave" {
				t.Errorf("%s took the live victim for gone at %s", m.LocalName(), ev.At)
			}
		}
	}
	// What memberlist did with the victim's death in the replay: ignored
	// (older than the incarnation it refuted with), so the victim had
	// nothing more to refute.
	t.Logf("the victim refuted %d accusation(s) on its restart and %d during the replay", refutedBefore, refuted.Load()-refutedBefore)
}

// memberlist's incarnation numbers start again at 1 with each process, so
// once the cluster has forgotten an edge (GossipToTheDeadTime after it
// left), the edge started again has lower ones than its previous life had.
// Push/pulls captured during that life, replayed, are news about the live
// edge: its old metadata, then its leave, each until it hears of it and
// refutes. What this test holds is that it comes back by itself, believed
// at once, with its current metadata; how long it was out, and how often,
// it logs (see SECURITY.md: left).
func TestReplayedEarlierLifeOfARestartedEdge(t *testing.T) {
	// Its own nodes, on ports of their own, and no test hook: the replay
	// tests wait on memberlist's timers, side by side.
	t.Parallel()
	keyed := keyedClusters(t)
	target := startTuned(t, keyed("target"), Meta{Role: RoleBalancer, Region: "east", State: StateAlive}, nil, forgetSoon())
	tap := newStreamTap(t, target.Addr())
	edgeCfg := keyed("edge", target.Addr())
	edge := startTuned(t, edgeCfg, edgeMeta(1), nil, forgetSoon())
	edgeAddr := edge.Addr()
	witness := startTuned(t, keyed("witness", tap.addr()), Meta{Role: RoleBalancer, Region: "east", State: StateAlive}, nil, forgetSoon())
	views := []*Membership{target, witness}
	waitAll(t, append(views, edge), func(ns []Node) bool { return len(ns) == 3 })
	weighs := func(w int) func([]Node) bool {
		return func(ns []Node) bool {
			i := slices.IndexFunc(ns, func(n Node) bool { return n.Name == "edge" })
			return i >= 0 && ns[i].Meta.Weight == w
		}
	}
	// Its previous life: three weights (each a newer incarnation), each
	// in a push/pull captured, then its leave, also captured.
	for w := 2; w <= 4; w++ {
		if err := edge.UpdateMeta(t.Context(), func(m *Meta) { m.Weight = w }); err != nil {
			t.Fatal(err)
		}
		waitAll(t, views, weighs(w))
		from := tap.completed()
		waitFor(t, "a push/pull through the tap", func() bool { return tap.completed() > from })
	}
	if err := edge.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	release := holdAddr(t, edgeAddr)
	waitAll(t, views, func(ns []Node) bool { return !hasMember("edge")(ns) })
	leftAt := time.Now()
	from := tap.completed()
	waitFor(t, "a push/pull through the tap", func() bool { return tap.completed() > from })
	capture := tap.captured()

	// Forgotten, it starts again on its address, weight 1.
	time.Sleep(replayForget + 5*time.Second - time.Since(leftAt))
	var refuted atomic.Int64
	release()
	for attempt := 1; ; attempt++ {
		edgeCfg.Bind = edgeAddr
		if edge = rebindTuned(t, edgeCfg, edgeMeta(1), countingLogger("Refuting", &refuted), forgetSoon(), attempt); edge != nil {
			break
		}
	}
	if refuted.Load() != 0 {
		t.Skip("the cluster still held the edge's leave when it started again (a loaded machine): not the scenario")
	}
	waitAll(t, views, weighs(1))

	// The replay: the whole capture, in the order captured, five times.
	start := time.Now()
	for range 5 {
		for _, s := range capture {
			replayStream(target.Addr(), s)
		}
		time.Sleep(200 * time.Millisecond)
	}
	waitAll(t, views, weighs(1))
	t.Logf("replayed the %d streams of the edge's previous life 5 times; it refuted %d accusation(s)", len(capture), refuted.Load())
	for _, m := range views {
		var out time.Duration
		var outAt time.Time
		flaps, stale := 0, 0
		for _, ev := range m.Recent() {
			if ev.Node.Name != "edge" || ev.At.Before(start) {
				continue
			}
			switch {
			case ev.Kind == "leave":
				flaps++
				outAt = ev.At
			case ev.Kind == "join" && !outAt.IsZero():
				out += ev.At.Sub(outAt)
				outAt = time.Time{}
			}
			if ev.Kind != "leave" && ev.Node.Meta.Weight != 1 {
				stale++
			}
		}
		t.Logf("%s: the live edge out of its view %d time(s), %s in all; shown with its previous life's weight %d time(s)", m.LocalName(), flaps, out.Round(time.Millisecond), stale)
		if _, ok := m.Node("edge"); !ok {
			t.Errorf("%s does not list the live edge after the replay: %v", m.LocalName(), m.Members())
		}
	}
}
