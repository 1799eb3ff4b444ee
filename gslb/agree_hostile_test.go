package gslb

import (
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// fastAgreeConfig is gslbConfig with a member going down on its first
// failed check. Its monitors (so exchange rounds, each peer's read bounded
// by the interval) run every second: at 200 ms the honest peer's answer
// missed its bound under the race detector on a loaded machine, a round
// missed besides the one the test makes, and east failed over (2 of 2
// loaded race runs).
func fastAgreeConfig(t *testing.T, eastProbe, westProbe string) configs.GSLB {
	t.Helper()
	y := gslbYAML("  rate_limit: { responses_per_second: 0 }\n", "", eastProbe, westProbe)
	y = strings.Replace(y, "interval: 1s, timeout: 1s, rise: 2, fall: 4, jitter: 0.01", "interval: 1s, timeout: 1s, rise: 1, fall: 1", 1)
	return parseGSLBYAML(t, y)
}

// joinPeer joins a member of role gslb, named name, announcing admin as its
// admin address, to the cluster of seed (keyless, as startNameserver's).
func joinPeer(t *testing.T, seed, name, admin string) {
	t.Helper()
	cluster := configs.Cluster{Name: name, Region: "east", Bind: "127.0.0.1:0", Profile: "local", Join: []string{seed},
		ProbeInterval: configs.Duration(100 * time.Millisecond), GossipInterval: configs.Duration(50 * time.Millisecond)}
	healthtest.NewKeyless(t).JoinWith(cluster, health.Meta{Role: health.RoleGSLB, Region: "east", Admin: admin, State: health.StateAlive})
}

func failovers(t *testing.T, s *Server, region string) float64 {
	t.Helper()
	var m dto.Metric
	if err := s.metrics.failovers.WithLabelValues("ide.ringlb.test.", region).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// gslb-a cannot reach east's member (its path is broken); gslb-b, an
// honest peer, sees it up: a tie, so the member is served. Three more gslb
// members answer slowly — overloaded, or an admin address that swallows
// packets — each read running to its timeout. gslb-b then misses one round
// (a 503, a lost packet). The rule is that a peer leaves the vote after 3
// rounds unheard and one missed round costs no vote; but the reads went one
// after another, each slow peer adding an interval to the round, and the
// rule was kept by the clock (3 intervals): with rounds that long, one
// missed round took gslb-b out of the vote, gslb-a decided alone and
// failed east over — a healthy member out, for everyone gslb-a answers.
func TestSlowPeersCostNoVote(t *testing.T) {
	west := newFakeBalancer(t)
	deadAddr := closedAddr(t)

	// gslb-b: sees bal-1 up; fails the read after failNext is set, once.
	var honestReads, failNext atomic.Int32
	honest := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failNext.CompareAndSwap(1, 2) {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		honestReads.Add(1)
		fmt.Fprint(w, `{"node":"gslb-b","members":{"ide.ringlb.test./east/bal-1":true,"ide.ringlb.test./west/bal-2":true}}`)
	}))
	defer honest.Close()
	// The slow ones: each read held until the reader gives up on it.
	var slowReads atomic.Int32
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		slowReads.Add(1)
		<-r.Context().Done()
	}))
	defer slow.Close()

	a, ma := startNameserver(t, "gslb-a", fastAgreeConfig(t, deadAddr, west.addr()), "")
	joinPeer(t, ma.Addr(), "gslb-b", honest.URL)
	for i := range 3 {
		joinPeer(t, ma.Addr(), fmt.Sprintf("gslb-slow-%d", i), slow.URL)
	}
	healthtest.WaitMembers(t, ma, "gslb-a sees its four peers", func(n []health.Node) bool { return len(n) == 5 })
	const bal1 = "ide.ringlb.test./east/bal-1"
	healthtest.WaitUntil(t, "gslb-a's own probe sees bal-1 down", func() bool { return !a.state.Load().pools.localMonitors()[bal1] })
	healthtest.WaitUntil(t, "gslb-b's view is in gslb-a's vote", func() bool {
		up, why := a.agreed(memberKey{"ide.ringlb.test.", "east", "bal-1"}, false, "broken path", true)
		return up && strings.HasPrefix(why, "down for 1 of 2")
	})
	waitAnswer(t, a, "127.0.0.1", "192.0.2.1")
	before := failovers(t, a, "east")

	// gslb-b misses one round, then answers again for two.
	start, startSlow := honestReads.Load(), slowReads.Load()
	failNext.Store(1)
	healthtest.WaitUntil(t, "gslb-b misses a round and is heard twice after it", func() bool {
		return failNext.Load() == 2 && honestReads.Load() >= start+2
	})
	lost := failovers(t, a, "east") - before
	t.Logf("slow peers' reads over the %d rounds: %d; east failed over %.0f times on gslb-b's one missed round", honestReads.Load()-start+1, slowReads.Load()-startSlow, lost)
	if lost != 0 {
		t.Errorf("one missed round of gslb-b took it out of the vote: east failed over %.0f times with its member seen up by half the nameservers", lost)
	}
	if got := answerIPs(queryFrom(t, a, "udp", "127.0.0.1", "ide.ringlb.test.", 1, nil)); got != "192.0.2.1" {
		t.Errorf("gslb-a answers east's clients %s, want bal-1", got)
	}
}

// A member of role gslb answers /api/monitors with a 1 MiB view naming
// members nobody probes, and another with an 8 MiB head. What a peer's
// report holds is what can vote: the members this node probes itself. The
// rest was kept, per peer, until its next read, and the head read whole
// each round (net/http's default limit is 10 MiB).
func TestPeerReportsBounded(t *testing.T) {
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	// The view is built once: built per read, under the race detector on a
	// busy machine, it took longer than the round the reader waits.
	var b strings.Builder
	b.WriteString(`{"members":{"ide.ringlb.test./east/bal-1":false`)
	for i := 0; b.Len() < 1<<20-100; i++ {
		fmt.Fprintf(&b, `,"ide.ringlb.test./east/x%d":false`, i)
	}
	b.WriteString(`}}`)
	view := []byte(b.String())
	var junkReads atomic.Int32
	junk := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		junkReads.Add(1)
		w.Write(view)
	}))
	defer junk.Close()
	pad := http.Header{}
	for i := range 8 << 10 {
		pad.Add(fmt.Sprintf("X-Pad-%d", i), strings.Repeat("p", 1000))
	}
	var headReads atomic.Int32
	bigHead := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		headReads.Add(1)
		maps.Copy(w.Header(), pad)
		w.Write([]byte(`{"members":{"ide.ringlb.test./east/bal-1":false}}`))
	}))
	bigHead.Config.MaxHeaderBytes = 1 << 20
	bigHead.Start()
	defer bigHead.Close()

	// Rounds of three seconds, each read bounded by its round: with the
	// race detector on a busy machine (load 15), reading the 1 MiB view
	// took 2-4 s at times, and rounds of a second heard the junk peer
	// too seldom to do so within the test's wait.
	y := gslbYAML("  rate_limit: { responses_per_second: 0 }\n", "", east.addr(), west.addr())
	y = strings.Replace(y, "interval: 1s, timeout: 1s", "interval: 3s, timeout: 1s", 1)
	a, ma := startNameserver(t, "gslb-a", parseGSLBYAML(t, y), "")
	joinPeer(t, ma.Addr(), "gslb-junk", junk.URL)
	joinPeer(t, ma.Addr(), "gslb-bighead", bigHead.URL)
	healthtest.WaitMembers(t, ma, "gslb-a sees its two peers", func(n []health.Node) bool { return len(n) == 3 })
	const bal1 = "ide.ringlb.test./east/bal-1"
	healthtest.WaitUntil(t, "gslb-a has heard the junk peer, read the other twice and settled bal-1", func() bool {
		pv := a.peers.Load()
		if pv == nil {
			return false
		}
		_, heard := pv.reports["gslb-junk"]
		_, settled := a.state.Load().pools.localMonitors()[bal1]
		return heard && headReads.Load() >= 2 && settled
	})
	pv := a.peers.Load()
	held := len(pv.reports["gslb-junk"].members)
	_, bigHeard := pv.reports["gslb-bighead"]
	t.Logf("the junk peer's report holds %d members; the 8 MiB head's report heard: %v", held, bigHeard)
	if held > 2 {
		t.Errorf("a peer's report holds %d members, want at most the 2 this node probes", held)
	}
	if bigHeard {
		t.Errorf("a peer answering an 8 MiB head was read whole and heard")
	}
	// The junk peer's word on bal-1 still counts: 1 of 2 down, no majority.
	if up, why := a.agreed(memberKey{"ide.ringlb.test.", "east", "bal-1"}, true, "", true); !up || !strings.HasPrefix(why, "down for 1 of 2") {
		t.Errorf("bal-1: up %v, %q; want up, down for 1 of 2", up, why)
	}
}

// East's member is dead and gslb-a has failed east over. gslb-b starts
// (a deploy, a crash and restart): its probers start up, as a fresh node's
// must, until their first checks confirm a state. It reported that start
// state to gslb-a as its view — "up" — so gslb-a had a tie, served the dead
// member again until gslb-b's own checks had failed fall times, and failed
// over once more; gslb-b served it all that while. A view no check has
// confirmed is no vote, and a node whose own view is not confirmed yet
// goes by its peers'.
func TestRestartedPeerBringsNoDeadMemberBack(t *testing.T) {
	west := newFakeBalancer(t)
	deadAddr := closedAddr(t)
	cfg := func() configs.GSLB {
		y := gslbYAML("  rate_limit: { responses_per_second: 0 }\n", "", deadAddr, west.addr())
		y = strings.Replace(y, "interval: 1s, timeout: 1s, rise: 2, fall: 4, jitter: 0.01", "interval: 200ms, timeout: 200ms, rise: 2, fall: 8", 1)
		return parseGSLBYAML(t, y)
	}
	a, ma := startNameserver(t, "gslb-a", cfg(), "")
	waitAnswer(t, a, "127.0.0.1", "192.0.2.2")
	before := failovers(t, a, "east")

	b, mb := startNameserver(t, "gslb-b", cfg(), ma.Addr())
	healthtest.WaitMembers(t, mb, "gslb-b joins gslb-a", func(n []health.Node) bool { return len(n) == 2 })
	var heard *peerViews
	healthtest.WaitUntil(t, "gslb-b hears gslb-a", func() bool { heard = b.peers.Load(); return heard != nil && len(heard.reports) == 1 })
	// The round that stored what gslb-b heard rebuilds its answers after
	// storing it: until then it answers as before, the dead member (a
	// round descheduled between the two; shown holding the pools' lock
	// there). The next round's views are stored once that rebuild is done.
	healthtest.WaitUntil(t, "gslb-b rebuilds its answers by what it heard", func() bool { return b.peers.Load() != heard })
	first := answerIPs(queryFrom(t, b, "udp", "127.0.0.1", "ide.ringlb.test.", 1, nil))
	const bal1 = "ide.ringlb.test./east/bal-1"
	healthtest.WaitUntil(t, "gslb-b's own probe settles bal-1 down", func() bool {
		up, ok := b.state.Load().pools.localMonitors()[bal1]
		return ok && !up
	})
	healthtest.WaitUntil(t, "gslb-a counts gslb-b's settled view", func() bool {
		_, why := a.agreed(memberKey{"ide.ringlb.test.", "east", "bal-1"}, false, "", true)
		return strings.HasPrefix(why, "down for 2 of 2")
	})
	again := failovers(t, a, "east") - before
	t.Logf("gslb-b's first answer to east's clients: %s; gslb-a failed east over again %.0f times", first, again)
	if again != 0 {
		t.Errorf("gslb-b's start brought the dead member back on gslb-a: east failed over again %.0f times", again)
	}
	if first != "192.0.2.2" {
		t.Errorf("gslb-b, just started, answered east's clients %s (the dead member); gslb-a had it down", first)
	}
}

// closedAddr is the address of a loopback listener closed again: a pool
// member that refuses every check.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
