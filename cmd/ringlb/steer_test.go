package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/bench"
)

// TestSteeringUnderRealLoad is load-aware steering (gslb/README.md) with
// the real binary as separate processes in one keyed gossip cluster: a gslb
// whose name ide.ringlb.test has regions east (steer at 40 sessions per
// edge, share 0.5, hysteresis 0.2; failover west) and west; an east
// balancer and three edges of region east; a west balancer. The load is
// two `ringlb bench ws` processes through the east balancer, 105 sessions
// × 2 participants each, from 127.0.0.x sources: 70 sessions per east edge
// on average with both, 35 (in the band between 0.8 × 40 and 40) with one.
//
// It asserts, asking the gslb with ECS for 200 east client networks: none
// answered with west before the load; a share near 0.5 during it, with
// ringlb_gslb_steered_share{region="east"} 0.5; the share unchanged once
// the gslb has seen the load drop into the band; none once every session
// has closed; one steering start and one end in the gslb's log for the
// whole run (no flapping). How long the gslb took to follow the load is
// logged, never asserted.
func TestSteeringUnderRealLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "gossip.key")
	writeFile(t, key, generateKeyLine(t))
	cluster := func(name, region, join string) string {
		return fmt.Sprintf("cluster: { name: %s, region: %q, bind: 127.0.0.1:0, secret_key_file: %q, %s%s }\n", name, region, key, chaosGossip, join)
	}

	// Balancers route to every edge of their cluster, whatever its region:
	// a west edge here would take a share of the load run's sessions. The
	// west balancer routes to the east edges; its health is all the gslb
	// asks of it.
	var listens, admins []string
	join := ""
	for _, name := range []string{"bal-east", "bal-west"} {
		cfg := filepath.Join(dir, name+".yaml")
		writeFile(t, cfg, cluster(name, "", join)+"balancer: { listen: 127.0.0.1:0, admin: { listen: 127.0.0.1:0 } }\n")
		rec := startProc(t, bin, "balancer", "-config", cfg).waitLog(t, "balancer started")
		listens, admins = append(listens, rec["listen"].(string)), append(admins, rec["admin"].(string))
		if join == "" {
			join = fmt.Sprintf(", join: [%q]", rec["gossip"].(string))
		}
	}
	edgeAdmins := map[string]string{}
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("edge-%d", i)
		cfg := filepath.Join(dir, name+".yaml")
		writeFile(t, cfg, cluster(name, "east", join)+"edge: { listen: 127.0.0.1:0, admin: 127.0.0.1:0 }\n")
		edgeAdmins[name] = startProc(t, bin, "edge", "-config", cfg).waitLog(t, "edge started")["admin"].(string)
	}
	gcfg := filepath.Join(dir, "gslb.yaml")
	// RRL off: the test asks for hundreds of client networks (ECS) from one
	// address.
	writeFile(t, gcfg, cluster("gslb-1", "", join)+fmt.Sprintf(`gslb:
  listen: 127.0.0.1:0
  admin: { listen: 127.0.0.1:0 }
  rate_limit: { responses_per_second: 0 }
  zones: [ { origin: ringlb.test, records: [ "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60", "ns1 3600 IN A 127.0.0.1" ] } ]
  monitors: { bal: { type: http, interval: 200ms, timeout: 150ms, rise: 2, fall: 2 } }
  names:
    - name: ide.ringlb.test
      failover_ttl: 5
      geo: { east: [10.1.0.0/16], west: [10.2.0.0/16] }
      default_region: east
      regions:
        east:
          monitor: bal
          failover: [west]
          steer: { sessions_per_edge: %d, share: 0.5, hysteresis: 0.2 }
          members: [ { name: bal-east, address: 127.0.0.1, probe: %q } ]
        west: { monitor: bal, failover: [east], members: [ { name: bal-west, address: 127.0.0.2, probe: %q } ] }
`, steerLevel, listens[0], listens[1]))
	g := startProc(t, bin, "gslb", "-config", gcfg)
	grec := g.waitLog(t, "gslb started")
	server, gslbMetrics := grec["dns"].(string), "http://"+grec["admin"].(string)+"/metrics"
	const (
		steeredShare = `ringlb_gslb_steered_share{name="ide.ringlb.test.",region="east"}`
		eastEdges    = `ringlb_gslb_region_load{measure="edges",region="east"}`
		eastSessions = `ringlb_gslb_region_load{measure="sessions_per_edge",region="east"}`
	)

	waitRingMembers(t, "http://"+admins[0]+"/api/ring", 3)
	// Both regions serve (steering needs somewhere to steer to), and the
	// gslb has a sample of the three east edges' announced load.
	waitFor(t, "east and west clients answered by their own region", func() bool {
		return answerFor(t, server, "10.1.0.0") == "127.0.0.1" && answerFor(t, server, "10.2.0.0") == "127.0.0.2"
	})
	waitFor(t, "the gslb sees the load of three east edges", func() bool {
		return scrape(t, gslbMetrics, eastEdges) == 3 && scrape(t, gslbMetrics, eastSessions) == 0
	})
	if got := westShare(t, server); got != 0 {
		t.Fatalf("before the load: %.2f of east's client networks answered with west", got)
	}

	// The load run: two bench processes through the east balancer.
	const perRun = 105
	started := time.Now()
	stays := startLoadRun(t, bin, dir, "stays", listens[0], "127.0.0.1-127.0.0.4", perRun)
	leaves := startLoadRun(t, bin, dir, "leaves", listens[0], "127.0.0.5-127.0.0.8", perRun)
	byEdge := waitEdgeSessions(t, edgeAdmins, 2*perRun)
	inPlace := time.Now()
	t.Logf("load in place: %d sessions (%s, average %.0f per edge, level %d) %s after the load run started",
		2*perRun, byEdge, float64(2*perRun)/3, steerLevel, inPlace.Sub(started).Round(time.Millisecond))
	waitFor(t, "a share of east's clients steered to west", func() bool { return westShare(t, server) >= 0.3 })
	seen := time.Now()
	high := westShare(t, server)
	t.Logf("load start → steering seen: %s after the load run started, %s after its sessions were all open; %.2f of 200 east client networks answered with west",
		seen.Sub(started).Round(time.Millisecond), seen.Sub(inPlace).Round(time.Millisecond), high)
	if high > 0.7 {
		t.Errorf("%.2f of east's client networks steered, want about share 0.5", high)
	}
	if got := scrape(t, gslbMetrics, steeredShare); got != 0.5 {
		t.Errorf("%s = %g while loaded, want 0.5", steeredShare, got)
	}

	// Half the load leaves: 35 sessions per edge, below the level but above
	// 0.8 × 40. Once the gslb has sampled that, east still steers.
	halved := time.Now()
	leaves.stop(t, perRun)
	byEdge = waitEdgeSessions(t, edgeAdmins, perRun)
	waitFor(t, "the gslb sees the load in the hysteresis band", func() bool {
		return scrape(t, gslbMetrics, eastSessions) == float64(perRun)/3
	})
	t.Logf("in the band: the gslb saw %g sessions per east edge (%s) %s after half the load run was stopped",
		float64(perRun)/3, byEdge, time.Since(halved).Round(time.Millisecond))
	if got := westShare(t, server); got != high {
		t.Errorf("in the band (%s): %.2f of east's client networks steered, was %.2f; want no change (hysteresis)", byEdge, got, high)
	}
	if got := scrape(t, gslbMetrics, steeredShare); got != 0.5 {
		t.Errorf("%s = %g in the band, want 0.5", steeredShare, got)
	}
	if n := strings.Count(g.output(), "steering ends"); n != 0 {
		t.Errorf("the gslb ended steering %d times with the load in the band", n)
	}

	// The load stops: every session closed, steering ends.
	stopped := time.Now()
	stays.stop(t, perRun)
	waitEdgeSessions(t, edgeAdmins, 0)
	closed := time.Now()
	waitFor(t, "steering ends once the load has stopped", func() bool { return westShare(t, server) == 0 })
	off := time.Now()
	t.Logf("load end → steering off: %s after the load run was stopped, %s after its last session closed",
		off.Sub(stopped).Round(time.Millisecond), off.Sub(closed).Round(time.Millisecond))
	if got := scrape(t, gslbMetrics, steeredShare); got != 0 {
		t.Errorf("%s = %g after the load, want 0", steeredShare, got)
	}
	out := g.output()
	if on, ends := strings.Count(out, "region loaded: steering"), strings.Count(out, "steering ends"); on != 1 || ends != 1 {
		t.Errorf("the gslb started steering %d times and ended it %d times over the run, want once each", on, ends)
	}
}

// steerLevel is TestSteeringUnderRealLoad's steer.sessions_per_edge.
const steerLevel = 40

// answerFor asks the gslb at server for ide.ringlb.test. A on behalf of
// the client network at network/24 (ECS) and returns the one address
// answered, or what went wrong.
func answerFor(t *testing.T, server, network string) string {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion("ide.ringlb.test.", dns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{
		Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.ParseIP(network).To4(),
	})
	c := &dns.Client{Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, server)
	if err != nil {
		return fmt.Sprintf("error %v", err)
	}
	if len(r.Answer) != 1 {
		return fmt.Sprintf("%s with %d answers", dns.RcodeToString[r.Rcode], len(r.Answer))
	}
	if a, ok := r.Answer[0].(*dns.A); ok {
		return a.A.String()
	}
	return r.Answer[0].String()
}

// westShare asks the gslb at server on behalf of 200 east client networks
// (ECS 10.1.N.0/24), as gslb's TestSteeringFollowsEdgeLoad does in process,
// and returns the share answered with west's address. Any answer other
// than east's or west's fails the test.
func westShare(t *testing.T, server string) float64 {
	t.Helper()
	const clients = 200
	west := 0
	for i := range clients {
		switch got := answerFor(t, server, fmt.Sprintf("10.1.%d.0", i)); got {
		case "127.0.0.2":
			west++
		case "127.0.0.1":
		default:
			t.Fatalf("east client network 10.1.%d.0/24: %s", i, got)
		}
	}
	return float64(west) / clients
}

// waitEdgeSessions waits until the edges (name → admin address) hold n
// live sessions together, and returns how they are spread.
func waitEdgeSessions(t *testing.T, edgeAdmins map[string]string, n int) string {
	t.Helper()
	var spread []string
	// Two bench processes open the sessions beside the cluster's five: on
	// a loaded machine (load 13 on two cores) that took longer than the
	// 30 s of the other waits.
	pollUntil(t, 2*time.Minute, func() (bool, string) {
		spread = nil
		sum := 0
		for i := 1; i <= len(edgeAdmins); i++ {
			name := fmt.Sprintf("edge-%d", i)
			v := int(scrape(t, "http://"+edgeAdmins[name]+"/metrics", "ringlb_edge_sessions_active"))
			spread, sum = append(spread, fmt.Sprintf("%s %d", name, v)), sum+v
		}
		return sum == n, fmt.Sprintf("%d live sessions on the east edges: %d seen (%s)", n, sum, strings.Join(spread, ", "))
	})
	return strings.Join(spread, ", ")
}

// loadRun is a `ringlb bench ws` process holding sessions open through a
// balancer until it is stopped.
type loadRun struct {
	name, result string
	cmd          *exec.Cmd
	out          strings.Builder // stdout and stderr, read once it has exited
	stopped      bool
}

// startLoadRun starts sessions × 2 participants through the balancer at
// listen from the sources, each participant sending a message a second.
// Its duration only bounds a run the test fails to stop.
func startLoadRun(t *testing.T, bin, dir, name, listen, sources string, sessions int) *loadRun {
	t.Helper()
	l := &loadRun{name: name, result: filepath.Join(dir, "ws-"+name+".json")}
	l.cmd = exec.Command(bin, "bench", "ws", "-url", "ws://"+listen+"/ws", "-sources", sources,
		"-sessions", fmt.Sprint(sessions), "-participants", "2", "-rate", "1", "-duration", "3m", "-drain", "5s", "-json", l.result)
	l.cmd.Stdout, l.cmd.Stderr = &l.out, &l.out
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !l.stopped {
			stopProcess(l.cmd, 20*time.Second)
		}
	})
	return l
}

// stop ends the run as an operator's Ctrl-C does (its sessions close) and
// checks that it held sessions × 2 connections to the end.
func (l *loadRun) stop(t *testing.T, sessions int) {
	t.Helper()
	l.stopped = true
	stopProcess(l.cmd, 60*time.Second)
	if !l.cmd.ProcessState.Success() {
		t.Fatalf("bench ws %s: %v\n%s", l.name, l.cmd.ProcessState, l.out.String())
	}
	data, err := os.ReadFile(l.result)
	if err != nil {
		t.Fatalf("bench ws %s: %v\n%s", l.name, err, l.out.String())
	}
	var res bench.WSResult
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatalf("bench ws %s: %v", l.name, err)
	}
	if res.ConnsOK != 2*sessions || res.ConnsFailed != 0 || res.ClosedEarly != 0 || res.SplitSessions != 0 {
		t.Errorf("bench ws %s: %d connections ok, %d failed, %d closed early, %d split sessions; want %d ok and none else (first dial error %q)",
			l.name, res.ConnsOK, res.ConnsFailed, res.ClosedEarly, res.SplitSessions, 2*sessions, res.FirstDialError)
	}
	t.Logf("bench ws %s: %s; sessions by edge %v", l.name, res.Summary(), res.SessionsByEdge)
}
