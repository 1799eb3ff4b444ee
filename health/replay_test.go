package health

import (
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringlb/ringlb/configs"
)

// recordingTransport is a member's transport that keeps a copy of every
// packet it sends: what anyone on the cluster's network can capture.
// memberlist encrypts each packet with a fresh nonce but keeps no record of
// the ones it has taken, so a capture decrypts as well later as it did then.
type recordingTransport struct {
	memberlist.NodeAwareTransport
	mu   sync.Mutex
	to   string // only packets to this address
	sent [][]byte
	stop bool
}

func (r *recordingTransport) keep(b []byte, addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.stop && addr == r.to {
		r.sent = append(r.sent, slices.Clone(b))
	}
}

func (r *recordingTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	r.keep(b, addr)
	return r.NodeAwareTransport.WriteTo(b, addr)
}

func (r *recordingTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	r.keep(b, a.Addr)
	return r.NodeAwareTransport.WriteToAddress(b, a)
}

func (r *recordingTransport) captured() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stop = true
	return slices.Clone(r.sent)
}

// metaDelegate announces fixed metadata and carries nothing else.
type metaDelegate struct{ meta []byte }

func (d metaDelegate) NodeMeta(int) []byte             { return d.meta }
func (d metaDelegate) NotifyMsg([]byte)                {}
func (d metaDelegate) GetBroadcasts(int, int) [][]byte { return nil }
func (d metaDelegate) LocalState(bool) []byte          { return nil }
func (d metaDelegate) MergeRemoteState([]byte, bool)   {}

// startRecordedMember starts a plain memberlist member named name holding
// the cluster's key, announcing meta, which joins seed and records the
// packets it sends there (seed "": it joins nothing, records nothing, and
// is the seed of the next).
func startRecordedMember(t *testing.T, name, keyFile string, meta Meta, seed string) (*memberlist.Memberlist, *recordingTransport) {
	t.Helper()
	enc, err := meta.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return startPlainMember(t, name, keyFile, metaDelegate{meta: enc}, seed)
}

// startPlainMember starts a plain memberlist member named name holding the
// cluster's key, with del as its delegate, which joins seed and records
// the packets it sends there: what a node of another build can do.
func startPlainMember(t *testing.T, name, keyFile string, del memberlist.Delegate, seed string) (*memberlist.Memberlist, *recordingTransport) {
	t.Helper()
	keys, err := configs.ReadKeyring(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := memberlist.NewKeyring(keys, keys[0])
	if err != nil {
		t.Fatal(err)
	}
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}, BindPort: 0})
	if err != nil {
		t.Fatal(err)
	}
	rt := &recordingTransport{NodeAwareTransport: nt, to: seed}
	mc := memberlist.DefaultLocalConfig()
	mc.Name = name
	mc.BindAddr, mc.BindPort = "127.0.0.1", nt.GetAutoBindPort()
	mc.AdvertisePort = mc.BindPort
	mc.ProbeInterval, mc.ProbeTimeout, mc.GossipInterval = 100*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	mc.Keyring, mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = kr, true, true
	mc.Delegate = del
	mc.Transport = rt
	mc.LogOutput = discard{}
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ml.Shutdown() })
	if seed == "" {
		return ml, rt
	}
	if _, err := ml.Join([]string{seed}); err != nil {
		t.Fatal(err)
	}
	return ml, rt
}

// replayForget is how long the replay tests' nodes remember a member that
// left or died (memberlist's GossipToTheDeadTime, 15 s with the local
// profile): a replay makes a join only once it has passed, and the tests
// waited it out. Long enough still for what they do within it: a member
// taken for dead comes back and refutes, a departed one is pinged.
const replayForget = 3 * time.Second

// forgetSoon is the replay tests' tuning (replayForget).
func forgetSoon() tuning { return tuning{gossipToTheDead: replayForget} }

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func hasMember(name string) func([]Node) bool {
	return func(ns []Node) bool { return slices.ContainsFunc(ns, func(n Node) bool { return n.Name == name }) }
}

// An edge leaves the cluster for good. Someone without the key, who
// captured the encrypted UDP packets it sent while it was a member,
// replays them once memberlist has forgotten it (GossipToTheDeadTime): its
// alive message, of the incarnation it left with, is news again, and the
// departed edge is back on every ring until probes take it for dead — and
// back again at the next replay, for as long as the attacker likes.
func TestReplayedAliveDoesNotResurrectADepartedEdge(t *testing.T) {
	// Its own nodes, on ports of their own, and no test hook: the replay
	// tests wait on memberlist's timers, side by side.
	t.Parallel()
	target, cfg, unanswered := replayTarget(t)
	reg := prometheus.NewRegistry()
	reg.MustRegister(target.Collector())

	ghostMeta := edgeMeta(7)
	ghostMeta.PeerSigning = PeerSigningAnswer
	ghost, rec := startRecordedMember(t, "ghost", cfg.SecretKeyFile, ghostMeta, target.Addr())
	waitAll(t, []*Membership{target}, hasMember("ghost"))
	// Gossip rounds after the join carry the ghost's own alive message.
	time.Sleep(500 * time.Millisecond)
	capture := rec.captured()
	ghostAddr := ghost.LocalNode().Address()
	if err := ghost.Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	ghost.Shutdown()
	release := holdAddr(t, ghostAddr)
	waitAll(t, []*Membership{target}, func(ns []Node) bool { return !hasMember("ghost")(ns) })
	t.Logf("captured %d encrypted packets from the edge before it left", len(capture))
	if n := joinsUnconfirmed(t, reg); n != 0 {
		t.Fatalf("ringlb_gossip_joins_unconfirmed_total %v after a member joined, answered and left; want 0", n)
	}

	// The attacker: a UDP socket without the key, replaying the capture
	// every 200 ms until the target takes the departed edge in again (its
	// memberlist forgets a departed node after replayForget).
	start := time.Now()
	defer replayLoop(t, target.Addr(), capture, 200*time.Millisecond)()

	// memberlist takes the replayed join in; this node pings the edge and
	// believes it only if it answers, which nobody without the key can do.
	waitUnanswered(t, target, unanswered)
	t.Logf("memberlist took the departed edge in again %s after the replay began; its pings unanswered", time.Since(start).Round(time.Millisecond))
	if hasMember("ghost")(target.Members()) {
		t.Fatalf("a replayed capture put the departed edge back in the target's view: %v", target.Members())
	}
	for _, ev := range target.Recent() {
		if ev.Node.Name == "ghost" && ev.Kind == "join" && ev.At.After(start) {
			t.Errorf("a join of the departed edge was recorded at %s", ev.At)
		}
	}

	// Not believed, and counted once memberlist takes it for dead: an
	// operator sees replays on a graph, not only in a rate-limited log.
	deadline := time.Now().Add(60 * time.Second)
	for joinsUnconfirmed(t, reg) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("ringlb_gossip_joins_unconfirmed_total did not count the replayed join")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("ringlb_gossip_joins_unconfirmed_total counted the replayed join %s after the replay began", time.Since(start).Round(time.Millisecond))
	if hasMember("ghost")(target.Members()) {
		t.Fatalf("a replayed capture put the departed edge back in the target's view: %v", target.Members())
	}

	// The edge itself, started again on its address, answers and is
	// believed, the replay going on. (On another address memberlist
	// refuses it while it still holds the replayed one, whatever this node
	// believes: see SECURITY.md.)
	release()
	for attempt := 1; ; attempt++ {
		back := testCluster("ghost", target.Addr())
		back.Bind = ghostAddr
		back.SecretKeyFile = cfg.SecretKeyFile
		if rebindTuned(t, back, ghostMeta, nil, forgetSoon(), attempt) != nil {
			break
		}
	}
	waitAll(t, []*Membership{target}, hasMember("ghost"))
}

// replayLoop sends capture to addr from an attacker's socket (replaySocket)
// again every pause until the returned stop is called.
func replayLoop(t *testing.T, addr string, capture [][]byte, pause time.Duration) (stop func()) {
	t.Helper()
	attacker, to := replaySocket(t, addr)
	stopped := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			for _, p := range capture {
				attacker.WriteToUDP(p, to)
			}
			select {
			case <-stopped:
				return
			case <-time.After(pause):
			}
		}
	})
	return func() { close(stopped); wg.Wait() }
}

// replaySocket is the attacker's: a UDP socket without the key, and the
// address it replays to (addr), closed as the test ends.
func replaySocket(t *testing.T, addr string) (*net.UDPConn, *net.UDPAddr) {
	t.Helper()
	attacker, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { attacker.Close() })
	to, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return attacker, to
}

// replayTarget is a keyed balancer node a replay is aimed at, its config
// (the key file to capture with) and the count of its log lines saying a
// member memberlist took in does not answer (unansweredLog).
func replayTarget(t *testing.T) (*Membership, configs.Cluster, *atomic.Int64) {
	t.Helper()
	cfg := testCluster("target")
	cfg.SecretKeyFile = writeKey(t, 32)
	unanswered := new(atomic.Int64)
	target := startTuned(t, cfg, Meta{Role: RoleBalancer, Region: "east", State: StateAlive}, countingLogger(unansweredLog, unanswered), forgetSoon())
	return target, cfg, unanswered
}

// unansweredLog is what a node logs when a member memberlist took in does
// not answer its ping (joins.go).
const unansweredLog = "does not answer this node's pings"

// waitUnanswered waits until m has pinged a member memberlist took in and
// heard nothing: unanswered counts the lines of m's log saying so
// (countingLogger).
func waitUnanswered(t *testing.T, m *Membership, unanswered *atomic.Int64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for unanswered.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s never took the replayed join in: members %v", m.LocalName(), m.Members())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// joinsUnconfirmed reads ringlb_gossip_joins_unconfirmed_total from reg, as
// a scrape would (-1: not exported).
func joinsUnconfirmed(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "ringlb_gossip_joins_unconfirmed_total" && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return -1
}

// A replay of an edge's later life after a replay of its earlier one: the
// earlier capture's join, never believed (its pings unanswered), was
// recorded as a departure when memberlist took it for dead, and a join
// within rejoinWithin of a departure is believed at once — so the later
// capture (a higher incarnation: every metadata update raises it) put the
// departed edge back on this node's rings without a ping. A join that was
// never believed leaves no departure; the later life is pinged, and
// unanswered, like the first.
func TestReplayedLaterLifeAfterAPendingJoinIsNotBelieved(t *testing.T) {
	// Its own nodes, on ports of their own, and no test hook: the replay
	// tests wait on memberlist's timers, side by side.
	t.Parallel()
	target, cfg, unanswered := replayTarget(t)
	ghost, rec := startRecordedMember(t, "ghost", cfg.SecretKeyFile, edgeMeta(7), target.Addr())
	waitAll(t, []*Membership{target}, hasMember("ghost"))
	// Gossip rounds after the join carry the ghost's own alive message;
	// then a later incarnation of it (a metadata update) and its rounds.
	time.Sleep(500 * time.Millisecond)
	rec.mu.Lock()
	earlier := slices.Clone(rec.sent)
	rec.sent = nil
	rec.mu.Unlock()
	if err := ghost.UpdateNode(time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	later := rec.captured()
	ghostAddr := ghost.LocalNode().Address()
	if err := ghost.Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	ghost.Shutdown()
	holdAddr(t, ghostAddr)
	waitAll(t, []*Membership{target}, func(ns []Node) bool { return !hasMember("ghost")(ns) })

	attacker, to := replaySocket(t, target.Addr())
	send := func(capture [][]byte) {
		for _, p := range capture {
			attacker.WriteToUDP(p, to)
		}
	}
	pending := func() bool {
		target.mu.Lock()
		defer target.mu.Unlock()
		_, ok := target.pending["ghost"]
		return ok
	}
	// The earlier life, until memberlist (having forgotten the departed
	// edge) takes it in, pending, and then for dead: its pings unanswered.
	deadline := time.Now().Add(60 * time.Second)
	for !pending() {
		if time.Now().After(deadline) {
			t.Fatal("the replayed earlier life was never taken in")
		}
		send(earlier)
		time.Sleep(100 * time.Millisecond)
	}
	waitUnanswered(t, target, unanswered)
	for pending() {
		if time.Now().After(deadline) {
			t.Fatal("the replayed earlier life was never taken for dead")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The later life, within rejoinWithin.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		send(later)
		if hasMember("ghost")(target.Members()) {
			t.Fatalf("the replayed later life of a departed edge was believed without a ping: %v", target.Edges(""))
		}
	}
}
