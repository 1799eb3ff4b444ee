package gslb

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	dto "github.com/prometheus/client_model/go"

	"github.com/ringlb/ringlb/configs"
)

// reloadStateYAML is ide.ringlb.test with east's members (YAML flow
// entries) monitored over HTTP, and west's one member always served.
func reloadStateYAML(east string) string {
	return fmt.Sprintf(`gslb:
  listen: 127.0.0.1:0
  rate_limit: { responses_per_second: 0 }
  zones: [ { origin: ringlb.test, file: testdata/ringlb.test.zone } ]
  monitors:
    bal: { type: http, interval: 100ms, timeout: 100ms, rise: 1, fall: 1, jitter: 0.01 }
  names:
    - name: ide.ringlb.test
      ttl: 30
      failover_ttl: 5
      geo: { east: [127.0.0.1/32], west: [127.0.0.2/32] }
      default_region: east
      regions:
        east: { monitor: bal, failover: [west], members: [ %s ] }
        west: { serve_mode: always, failover: [east], members: [ { name: w1, address: 192.0.2.9 } ] }
`, east)
}

// reloadStateMember is an east member probed at probe (serve_mode "" for
// the region's).
func reloadStateMember(name, addr, probe, mode string) string {
	if mode != "" {
		return fmt.Sprintf("{ name: %s, address: %s, serve_mode: %s }", name, addr, mode)
	}
	return fmt.Sprintf("{ name: %s, address: %s, probe: %q }", name, addr, probe)
}

// eastAnswer is ide.ringlb.test's A records for an east client, sorted.
func eastAnswer(t *testing.T, s *Server) []string {
	t.Helper()
	var out []string
	for _, rr := range query(t, s, "udp", "ide.ringlb.test.", dns.TypeA, nil).Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	slices.Sort(out)
	return out
}

// Two reloads at once leave the monitors of the state served, and only
// those, running: pools the later reload replaced (and stopped, before
// they started) would probe, owned by nobody, until the process exits.
func TestReloadsAtOnceLeaveNoMonitorsBehind(t *testing.T) {
	var probes atomic.Int64
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		probes.Add(1)
	}))
	defer backend.Close()
	cfg := parseGSLBYAML(t, reloadStateYAML(reloadStateMember("e1", "192.0.2.1", strings.TrimPrefix(backend.URL, "http://"), "")))
	s, err := New(cfg, "gslb-test", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	}()
	// The first reload's state is swapped in; the second reload runs
	// whole before the first starts its pools.
	var first *state
	s.beforePoolsStart = func() {
		if first == nil {
			first = s.state.Load()
			reloadReturns(t, s, cfg)
		}
	}
	reloadReturns(t, s, cfg)
	if first == s.state.Load() {
		t.Fatal("the second reload's state is not the one served")
	}
	if first.pools.cancel != nil {
		first.pools.stop()
		t.Errorf("the replaced state's monitors were started after the reload that replaced it (%d probes in all)", probes.Load())
	}
	if s.state.Load().pools.cancel == nil {
		t.Error("the state served has no monitors running")
	}
}

// A reload that runs as Start is about to start the monitors (through the
// Go API: the binary plugs its config file in after the start) starts the
// state it swaps in; Start then started that state's pools a second time —
// the first run's context lost, so a Shutdown waited for it for ever — or
// the replaced state's, stopped already, which then probed with no owner.
func TestReloadAsStartBeginsLeavesOneRunOfMonitors(t *testing.T) {
	var probes atomic.Int64
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		probes.Add(1)
	}))
	defer backend.Close()
	cfg := parseGSLBYAML(t, reloadStateYAML(reloadStateMember("e1", "192.0.2.1", strings.TrimPrefix(backend.URL, "http://"), "")))
	s, err := New(cfg, "gslb-test", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := s.state.Load()
	s.beforeFirstPoolsStart = func() { reloadReturns(t, s, cfg) }
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if first == s.state.Load() {
		t.Fatal("the reload's state is not the one served")
	}
	if first.pools.cancel != nil {
		t.Errorf("the replaced state's monitors were started after the reload stopped them (%d probes in all)", probes.Load())
		first.pools.stop()
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		done <- s.Shutdown(ctx)
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown: %v (a run of monitors it could not stop)", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Shutdown never returned: it waits for monitors it cannot stop")
	}
}

// reloadReturns runs s.Reload(cfg) and fails, with every goroutine's
// stack, if it has not returned within a generous bound.
func reloadReturns(t *testing.T, s *Server, cfg configs.GSLB) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Reload(cfg) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		buf := make([]byte, 1<<20)
		panic("the reload never returned:\n" + string(buf[:runtime.Stack(buf, true)]))
	}
}

// A reload that latches a failover: e1 is held out by the operator and
// the reload removes e2, so east has no member left and fails over to
// west. Taking over the pools' state, the reload held the old pools' lock
// while the new pools, rebuilt, saved the operator state — read from the
// old pools, still the server's: it waited for that lock for ever. The
// reload never returned (nor any reload after it), east's dead member went
// on being answered, and the shutdown hung.
func TestReloadThatLatchesAFailoverReturns(t *testing.T) {
	b := newFakeBalancer(t)
	e1, e2 := reloadStateMember("e1", "192.0.2.1", b.addr(), ""), reloadStateMember("e2", "192.0.2.2", b.addr(), "")
	s := startGSLB(t, parseGSLBYAML(t, reloadStateYAML(e1+", "+e2)))
	waitFor(t, "east's monitors settled", func() bool {
		return slices.Equal(eastAnswer(t, s), []string{"192.0.2.1", "192.0.2.2"}) && monitorsSettled(s)
	})
	if err := s.state.Load().pools.setOverride("ide.ringlb.test.", "east", "e1", configs.ServeRemove); err != nil {
		t.Fatal(err)
	}
	reloadReturns(t, s, parseGSLBYAML(t, reloadStateYAML(e1)))
	if got := eastAnswer(t, s); !slices.Equal(got, []string{"192.0.2.9"}) {
		t.Errorf("east, its one member held out: %v, want west's 192.0.2.9", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// A reload saves the operator state it takes over: the overrides and
// latches of members and regions it removed are gone from the state
// directory too. Before, they were dropped in memory only: a member held
// out, removed by one reload and added back by another, was served — and
// held out again after a restart.
func TestReloadSavesTheStateItTookOver(t *testing.T) {
	dir := t.TempDir()
	cfgOf := func(east string) configs.GSLB {
		cfg := parseGSLBYAML(t, reloadStateYAML(east))
		cfg.Admin.StateDir = dir
		return cfg
	}
	e1, e2 := reloadStateMember("e1", "192.0.2.1", "", configs.ServeAlways), reloadStateMember("e2", "192.0.2.2", "", configs.ServeAlways)
	s, err := New(cfgOf(e1+", "+e2), "gslb-test", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.state.Load().pools.setOverride("ide.ringlb.test.", "east", "e2", configs.ServeRemove); err != nil {
		t.Fatal(err)
	}
	s.saveState()
	reloadReturns(t, s, cfgOf(e1))
	reloadReturns(t, s, cfgOf(e1+", "+e2))
	if got := eastAnswer(t, s); !slices.Equal(got, []string{"192.0.2.1", "192.0.2.2"}) {
		t.Fatalf("east after e2 was removed and added back: %v", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	again := startGSLB(t, cfgOf(e1+", "+e2))
	if got := eastAnswer(t, again); !slices.Equal(got, []string{"192.0.2.1", "192.0.2.2"}) {
		t.Errorf("east after a restart: %v, want both members: the override the reload dropped came back", got)
	}
}

// A reload that changes the answers without changing the managed names'
// config — here the monitors' port, e1's monitor now asking a balancer
// that answers — gives the zone a new serial, so secondaries transfer the
// new answers. Before, the serial stayed, the zone's content changed under
// it: only a change of the names' config, or of the answers while the
// pools run, made a new one.
func TestReloadThatChangesTheAnswersBumpsTheSerial(t *testing.T) {
	live := newFakeBalancer(t)
	_, livePort, _ := net.SplitHostPort(live.addr())
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, deadPort, _ := net.SplitHostPort(closed.Addr().String())
	closed.Close()
	cfgOf := func(port string) configs.GSLB {
		y := reloadStateYAML("{ name: e1, address: 127.0.0.1 }, " + reloadStateMember("e2", "192.0.2.5", "", configs.ServeAlways))
		y = strings.Replace(y, "bal: { type: http,", "bal: { type: http, port: "+port+",", 1)
		return withTransfer(t, parseGSLBYAML(t, y), configs.Transfer{Allow: []string{"127.0.0.0/8"}})
	}
	s := startGSLB(t, cfgOf(deadPort))
	waitFor(t, "e1 held out by its monitor", func() bool {
		return slices.Equal(eastAnswer(t, s), []string{"192.0.2.5"}) && monitorsSettled(s)
	})
	serial := func() uint32 {
		return query(t, s, "tcp", "ringlb.test.", dns.TypeSOA, nil).Answer[0].(*dns.SOA).Serial
	}
	before := serial()
	reloadReturns(t, s, cfgOf(livePort))
	waitFor(t, "e1 answered, its monitor settled", func() bool {
		return slices.Equal(eastAnswer(t, s), []string{"127.0.0.1", "192.0.2.5"}) && monitorsSettled(s)
	})
	if after := serial(); after == before {
		t.Errorf("serial %d before the reload and after it, the answers changed in between", after)
	}
}

// monitorsSettled reports whether every monitored member's state is
// settled (a reload seeds the new monitors with those).
func monitorsSettled(s *Server) bool {
	for _, n := range s.state.Load().pools.names {
		for _, r := range n.regions {
			for _, m := range r.members {
				if m.prober != nil && !m.prober.Settled() {
					return false
				}
			}
		}
	}
	return true
}

// adminPost serves s's admin API on a loopback listener and returns a
// function that POSTs path there as the operator (loopback rule), giving
// the status and body.
func adminPost(t *testing.T, s *Server) func(path string) (int, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.ServeAdmin(ln)
	admin := "http://" + ln.Addr().String()
	return func(path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, admin+path, nil)
		req.Header.Set(configs.HeaderAdmin, "1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
}

// An operator's serve mode set while a reload runs holds: it lands on the
// pools the reload takes over before they are copied, or on the new ones.
// Before, one landing on the old pools after the reload had copied them
// was answered 200 and lost (35 of 300 such races).
func TestServeModeSetDuringAReloadHolds(t *testing.T) {
	e1, e2 := reloadStateMember("e1", "192.0.2.1", "", configs.ServeAlways), reloadStateMember("e2", "192.0.2.2", "", configs.ServeAlways)
	cfg := parseGSLBYAML(t, reloadStateYAML(e1+", "+e2))
	s := startGSLB(t, cfg)
	post := adminPost(t, s)
	lost := 0
	const rounds = 300
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range rounds {
		mode := []string{configs.ServeAlways, configs.ServeRemove}[i%2]
		done := make(chan error, 1)
		go func() { done <- s.Reload(cfg) }()
		time.Sleep(time.Duration(rnd.IntN(3000)) * time.Microsecond)
		if code, body := post("/api/pools/ide.ringlb.test/east/e2/mode?mode=" + mode); code != http.StatusOK {
			t.Fatalf("serve mode %s: %d %s", mode, code, body)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if o, _ := s.state.Load().pools.saved(); len(o) != 1 || o[0].Mode != mode {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d serve modes set during a reload were answered 200 and lost", lost, rounds)
	}
}

// A member no monitor checks (serve mode no) cannot be set to obey: there
// is nothing to obey, and it was served unchecked ("not monitored") — the
// region's dead member answered where it had failed over. The config's
// check refuses obey without a monitor; the admin API now does too,
// saying what to set instead.
func TestObeyRefusedForAMemberNoMonitorChecks(t *testing.T) {
	dead := newFakeBalancer(t)
	dead.healthy.Store(false)
	e1 := fmt.Sprintf("{ name: e1, address: 192.0.2.1, serve_mode: no, probe: %q }", dead.addr())
	s := startGSLB(t, parseGSLBYAML(t, reloadStateYAML(e1+", "+reloadStateMember("e2", "192.0.2.2", dead.addr(), ""))))
	waitFor(t, "east failed over", func() bool { return slices.Equal(eastAnswer(t, s), []string{"192.0.2.9"}) })
	post := adminPost(t, s)
	code, body := post("/api/pools/ide.ringlb.test/east/e1/mode?mode=obey")
	if code != http.StatusBadRequest || !strings.Contains(body, "no monitor") {
		t.Errorf("obey for a member no monitor checks: %d %s, want 400 naming the missing monitor", code, body)
	}
	if got := eastAnswer(t, s); !slices.Equal(got, []string{"192.0.2.9"}) {
		t.Errorf("east after the obey: %v, want still west's 192.0.2.9", got)
	}
}

// An upgrade replaces the process: the old one hands the new one what an
// operator set — serve-mode overrides, failover latches, the query log's
// switch — and the serials' offset, as it stops answering (the hand-off's
// end, HandOffState). Without cluster.state_dir nothing carried them: the
// new process answered with the member an operator had taken out, the
// failover held with auto_recover: false undone, the query log off, and
// the serials back at the zone files', older than the secondaries' copy.
func TestUpgradeKeepsOverridesLatchesAndTheSerial(t *testing.T) {
	cfg := fuzzConfig(t)
	old := startGSLB(t, cfg)
	pools := old.state.Load().pools
	if err := pools.setOverride("ide.ringlb.test.", "east", "bal-1", configs.ServeRemove); err != nil {
		t.Fatal(err)
	}
	pools.restore(nil, []savedLatch{{Name: "ide.ringlb.test.", Region: "west", Why: "latched: west failed, auto_recover off"}})
	old.queryLog.Store(true)
	waitAnswer(t, old, "127.0.0.1", "192.0.2.2")
	wantOverrides, wantLatches := pools.saved()
	serial := old.state.Load().serial.Load()

	next := startGSLB(t, cfg)
	if got := answerIPs(queryFrom(t, next, "udp", "127.0.0.1", "ide.ringlb.test.", dns.TypeA, nil)); got != "192.0.2.1" {
		t.Fatalf("a process of its own answers %q, want 192.0.2.1 by its config", got)
	}
	if err := next.TakeHandOffState(old.HandOffState()); err != nil {
		t.Fatal(err)
	}
	overrides, latches := next.state.Load().pools.saved()
	if !slices.Equal(overrides, wantOverrides) || !slices.Equal(latches, wantLatches) {
		t.Errorf("the new process's overrides %v and latches %v, want the old one's %v and %v", overrides, latches, wantOverrides, wantLatches)
	}
	if got := answerIPs(queryFrom(t, next, "udp", "127.0.0.1", "ide.ringlb.test.", dns.TypeA, nil)); got != "192.0.2.2" {
		t.Errorf("the new process answers %q for east, whose member an operator removed: want its failover's 192.0.2.2", got)
	}
	if !next.queryLog.Load() {
		t.Error("the query log an operator switched on is off in the new process")
	}
	if got := next.state.Load().serial.Load(); int32(got-serial) <= 0 {
		t.Errorf("the new process's serial offset %d is not past the old one's %d: secondaries keep their copy", got, serial)
	}
}

// deadE1 is a member e1 of east (192.0.2.1) whose probe target, dead,
// fails every check, as reloadStateYAML's members are written.
func deadE1(t *testing.T) (*fakeBalancer, string) {
	t.Helper()
	dead := newFakeBalancer(t)
	dead.healthy.Store(false)
	return dead, reloadStateMember("e1", "192.0.2.1", dead.addr(), "")
}

// obeyDeadE1 brings dead e1 of s back as the demo does after a remove
// (mode=obey, README) and waits until east has failed over all the same.
func obeyDeadE1(t *testing.T, s *Server) {
	t.Helper()
	post := adminPost(t, s)
	if code, body := post("/api/pools/ide.ringlb.test/east/e1/mode?mode=obey"); code != http.StatusOK {
		t.Fatalf("obey: %d %s", code, body)
	}
	waitFor(t, "east failed over (e1 dead)", func() bool { return slices.Equal(eastAnswer(t, s), []string{"192.0.2.9"}) })
}

// An `obey` override set while a member was monitored is not carried by a
// reload onto the same member once the config makes it `serve_mode: no`:
// no prober runs for it then, and obey with no prober is "not monitored".
// Before, it was, and the dead member was answered — where the admin API
// refuses exactly this (TestObeyRefusedForAMemberNoMonitorChecks).
func TestObeyOverrideDroppedWhereNoMonitorRuns(t *testing.T) {
	dead, e1 := deadE1(t)
	s := startGSLB(t, parseGSLBYAML(t, reloadStateYAML(e1)))
	obeyDeadE1(t, s)
	// The config now takes e1 out of service altogether.
	e1No := fmt.Sprintf("{ name: e1, address: 192.0.2.1, serve_mode: no, probe: %q }", dead.addr())
	reloadReturns(t, s, parseGSLBYAML(t, reloadStateYAML(e1No)))
	if got := eastAnswer(t, s); !slices.Equal(got, []string{"192.0.2.9"}) {
		for _, r := range s.state.Load().pools.status()[0]["regions"].([]map[string]any) {
			if r["region"] == "east" {
				t.Logf("east member: %v", r["members"])
			}
		}
		t.Errorf("east after the reload making dead e1 serve_mode no: %v, want west's 192.0.2.9", got)
	}
}

// The same through a restart: the saved obey override is not restored onto
// the member the config now says is not served nor monitored (it was).
func TestObeyOverrideNotRestoredWhereNoMonitorRuns(t *testing.T) {
	dead, e1 := deadE1(t)
	dir := t.TempDir()
	cfg := parseGSLBYAML(t, reloadStateYAML(e1))
	cfg.Admin.StateDir = dir
	s := startGSLB(t, cfg)
	obeyDeadE1(t, s)
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	e1No := fmt.Sprintf("{ name: e1, address: 192.0.2.1, serve_mode: no, probe: %q }", dead.addr())
	cfg2 := parseGSLBYAML(t, reloadStateYAML(e1No))
	cfg2.Admin.StateDir = dir
	again := startGSLB(t, cfg2)
	if got := eastAnswer(t, again); !slices.Equal(got, []string{"192.0.2.9"}) {
		t.Errorf("east after a restart with dead e1 serve_mode no: %v, want west's 192.0.2.9", got)
	}
}

// A reload carries a member's run of failed checks with its state
// (Prober.Carry). Before, it carried the state alone and the new prober
// counted fall again: a dead member reloaded every fall-1 failed checks
// (config management, PUT /api/config) stayed up, served, for ever.
func TestReloadsKeepTheFallCount(t *testing.T) {
	var healthy atomic.Bool
	var failed atomic.Int64 // failed checks answered in a row
	healthy.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			failed.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	const fall = 3
	yaml := strings.Replace(reloadStateYAML(reloadStateMember("e1", "192.0.2.1", addr, "")),
		"bal: { type: http, interval: 100ms, timeout: 100ms, rise: 1, fall: 1, jitter: 0.01 }",
		"bal: { type: http, interval: 2s, timeout: 1s, rise: 1, fall: 3, jitter: 0.01 }", 1)
	cfg := parseGSLBYAML(t, yaml)
	s := startGSLB(t, cfg)
	waitFor(t, "e1 up and settled", func() bool {
		return slices.Equal(eastAnswer(t, s), []string{"192.0.2.1"}) && monitorsSettled(s)
	})
	healthy.Store(false) // e1 is dead from now on
	for range 4 {
		base := failed.Load()
		waitFor(t, "fall-1 more failed checks", func() bool { return failed.Load() >= base+fall-1 })
		reloadReturns(t, s, cfg) // the same config
	}
	n := failed.Load()
	got := eastAnswer(t, s)
	t.Logf("e1 failed %d checks in a row (fall %d); east answers %v", n, fall, got)
	if n >= 2*fall && slices.Equal(got, []string{"192.0.2.1"}) {
		t.Errorf("e1 failed %d checks in a row (fall %d) and is still answered: each reload restarted its fall count", n, fall)
	}
}

// A reload that is refused (here: a zone file that does not load) builds
// new pools all the same; their first rebuild wrote every member's
// ringlb_gslb_member_up from the fresh probers, which start up: a dead
// member read 1 again, and nothing wrote it back until its monitor had a
// transition (never, while the member stayed dead) — the shipped alert
// (ringlb_gslb_member_up == 0) resolved on a refused reload. Only the
// server's pools write the gauges now.
func TestRefusedReloadLeavesTheGaugesAlone(t *testing.T) {
	_, e1 := deadE1(t)
	s := startGSLB(t, parseGSLBYAML(t, reloadStateYAML(e1)))
	gauge := func() float64 {
		var m dto.Metric
		if err := s.metrics.memberUp.WithLabelValues("ide.ringlb.test.", "east", "e1").Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetGauge().GetValue()
	}
	waitFor(t, "e1 down and east failed over", func() bool {
		return slices.Equal(eastAnswer(t, s), []string{"192.0.2.9"}) && monitorsSettled(s) && gauge() == 0
	})
	bad := parseGSLBYAML(t, reloadStateYAML(e1))
	bad.Zones[0].File = "testdata/no-such.zone"
	if err := s.Reload(bad); err == nil {
		t.Fatal("a reload with a missing zone file was taken")
	}
	// The member is still dead and still failed over...
	if got := eastAnswer(t, s); !slices.Equal(got, []string{"192.0.2.9"}) {
		t.Fatalf("east after the refused reload: %v", got)
	}
	// ...so its gauge must still say so (the member's monitor has no transition to come).
	if g := gauge(); g != 0 {
		t.Errorf("ringlb_gslb_member_up of dead e1 after a refused reload: %v, want 0", g)
	}
}

// A reload that lands after Shutdown stopped the monitors (a PUT
// /api/config answered while the node stops) starts none: they would
// probe, owned by nobody, until the process exits.
func TestReloadAfterShutdownStartsNoMonitors(t *testing.T) {
	var probes atomic.Int64
	probed := make(chan struct{}, 1)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		probes.Add(1)
		select {
		case probed <- struct{}{}:
		default:
		}
	}))
	defer backend.Close()
	cfg := parseGSLBYAML(t, reloadStateYAML(reloadStateMember("e1", "192.0.2.1", strings.TrimPrefix(backend.URL, "http://"), "")))
	s, err := New(cfg, "gslb-test", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	<-probed // the monitors run
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	before := probes.Load()
	reloadReturns(t, s, cfg)
	if p := s.state.Load().pools; p.cancel != nil {
		p.stop()
		t.Errorf("the reload after Shutdown started the monitors (%d probes before it, %d after they were stopped)", before, probes.Load())
	}
}
