package operator

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ringlb/ringlb/configs"
)

// statsdWait bounds every wait of these tests for something to arrive.
const statsdWait = 30 * time.Second

// statsdSink parses StatsD lines (name:value|type) into gauges (last value)
// and counters (summed, as StatsD does).
type statsdSink struct {
	mu       sync.Mutex
	gauges   map[string]float64
	counters map[string]float64
	changed  chan struct{}
}

func newSink() *statsdSink {
	return &statsdSink{gauges: map[string]float64{}, counters: map[string]float64{}, changed: make(chan struct{}, 1)}
}

func (k *statsdSink) line(t *testing.T, line string) {
	name, rest, ok1 := strings.Cut(line, ":")
	value, kind, ok2 := strings.Cut(rest, "|")
	v, err := strconv.ParseFloat(value, 64)
	if !ok1 || !ok2 || err != nil || strings.HasPrefix(value, "-") || strings.HasPrefix(value, "+") {
		t.Errorf("bad StatsD line %q", line)
		return
	}
	k.mu.Lock()
	switch kind {
	case "g":
		k.gauges[name] = v
	case "c":
		k.counters[name] += v
	default:
		t.Errorf("line %q: type %q, want g or c", line, kind)
	}
	k.mu.Unlock()
	select {
	case k.changed <- struct{}{}:
	default:
	}
}

// waitFor waits until done holds over what arrived.
func (k *statsdSink) waitFor(t *testing.T, what string, done func(g, c map[string]float64) bool) {
	t.Helper()
	deadline := time.After(statsdWait)
	for {
		k.mu.Lock()
		ok := done(k.gauges, k.counters)
		k.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-k.changed:
		case <-deadline:
			k.mu.Lock()
			defer k.mu.Unlock()
			t.Fatalf("%s: not seen; %d gauges, counters %v", what, len(k.gauges), k.counters)
		}
	}
}

// tcpStatsD is a StatsD server on TCP: every connection's lines go to the sink.
func tcpStatsD(t *testing.T, k *statsdSink) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					k.line(t, sc.Text())
				}
			}()
		}
	}()
	return ln
}

// udpStatsD is a StatsD server on UDP: every datagram's lines go to the
// sink; one over maxDatagram bytes, unless it is 0, fails the test.
func udpStatsD(t *testing.T, k *statsdSink, maxDatagram int) *net.UDPConn {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			if maxDatagram > 0 && n > maxDatagram {
				t.Errorf("datagram of %d bytes, over %d", n, maxDatagram)
			}
			for _, line := range strings.Split(string(buf[:n]), "\n") {
				k.line(t, line)
			}
		}
	}()
	return conn
}

// testFamily registers a gauge, a labelled counter and a histogram of the
// family ringlb_test_, and a metric of another family that is not pushed.
type testFamily struct {
	reg      *prometheus.Registry
	gauge    prometheus.Gauge
	requests *prometheus.CounterVec
	lag      prometheus.Histogram
}

func newTestFamily(t *testing.T) *testFamily {
	f := &testFamily{
		reg:      prometheus.NewRegistry(),
		gauge:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "ringlb_test_sessions_active", Help: "h"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ringlb_test_requests_total", Help: "h"}, []string{"edge", "code"}),
		lag:      prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ringlb_test_lag_seconds", Help: "h", Buckets: []float64{0.001, 0.01, 0.1}}),
	}
	other := prometheus.NewGauge(prometheus.GaugeOpts{Name: "ringlb_other_thing", Help: "h"})
	f.reg.MustRegister(f.gauge, f.requests, f.lag, other)
	return f
}

func TestStatsDOverTCP(t *testing.T) {
	k := newSink()
	ln := tcpStatsD(t, k)
	f := newTestFamily(t)
	s := NewStatsD("n1", "ringlb_test_", f.reg, nil)
	defer s.Close()
	f.gauge.Set(3)
	f.requests.WithLabelValues("edge-1", "200").Add(5)
	f.requests.WithLabelValues("edge.2:x", "101").Add(1)
	f.lag.Observe(0.005)
	f.lag.Observe(0.005)
	s.Apply(configs.StatsD{Address: ln.Addr().String(), Protocol: configs.StatsDTCP, Interval: configs.Duration(20 * time.Millisecond)})
	k.waitFor(t, "the first push", func(g, c map[string]float64) bool {
		return g["ringlb.n1.test_sessions_active"] == 3 &&
			c["ringlb.n1.test_requests_total.code.200.edge.edge-1"] == 5 &&
			c["ringlb.n1.test_requests_total.code.101.edge.edge_x2e2_x3ax"] == 1 &&
			c["ringlb.n1.test_lag_seconds.count"] == 2 && g["ringlb.n1.test_lag_seconds.p99"] == 0.01
	})
	k.mu.Lock()
	for name := range k.gauges {
		if strings.Contains(name, "other") {
			t.Errorf("a metric of another family was pushed: %s", name)
		}
	}
	k.mu.Unlock()
	// Counters go as increases: three more requests add three.
	f.requests.WithLabelValues("edge-1", "200").Add(3)
	k.waitFor(t, "the increase", func(_, c map[string]float64) bool {
		return c["ringlb.n1.test_requests_total.code.200.edge.edge-1"] == 8
	})
	// Close pushes what is new and returns.
	f.gauge.Set(7)
	s.Close()
	k.waitFor(t, "the push on close", func(g, _ map[string]float64) bool { return g["ringlb.n1.test_sessions_active"] == 7 })
}

func TestStatsDOverUDP(t *testing.T) {
	k := newSink()
	conn := udpStatsD(t, k, statsdDatagram)
	f := newTestFamily(t)
	for i := range 100 { // more lines than one datagram holds
		f.requests.WithLabelValues(fmt.Sprintf("edge-%03d", i), "200").Inc()
	}
	s := NewStatsD("n1", "ringlb_test_", f.reg, nil)
	defer s.Close()
	s.Apply(configs.StatsD{Address: conn.LocalAddr().String(), Prefix: "p.", Interval: configs.Duration(20 * time.Millisecond)})
	k.waitFor(t, "100 counters", func(_, c map[string]float64) bool {
		return len(c) == 100 && c["p.test_requests_total.code.200.edge.edge-099"] == 1
	})
	// Apply with no address stops it.
	s.Apply(configs.StatsD{})
}

// A server that accepts and never reads, then one that is gone: pushes
// fail (each within its write deadline), are counted, hold up nothing, and
// Close returns. Once a server listens again the counters' whole increase
// since the last push that got through arrives: nothing is lost.
func TestStatsDDeadServerDoesNotBlock(t *testing.T) {
	stuck, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var heldMu sync.Mutex
	go func() {
		// One connection, then the port is closed: a push on a second,
		// fresh connection would fit in its empty window and get through,
		// which ends the outage this test looks at.
		c, err := stuck.Accept()
		stuck.Close()
		if err != nil {
			return
		}
		heldMu.Lock()
		held = append(held, c) // never read: the window fills
		heldMu.Unlock()
	}()
	f := newTestFamily(t)
	// Gauges go out with every push: ~0.8 MB each.
	long := strings.Repeat("x", 150)
	wide := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ringlb_test_wide", Help: "h"}, []string{"edge"})
	f.reg.MustRegister(wide)
	for i := range 4000 {
		wide.WithLabelValues(fmt.Sprintf("edge-%d-%s", i, long)).Set(1)
	}
	var logs bytes.Buffer
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil))
	s := NewStatsD("n1", "ringlb_test_", f.reg, log)
	start := time.Now()
	s.Apply(configs.StatsD{Address: stuck.Addr().String(), Protocol: configs.StatsDTCP, Interval: configs.Duration(20 * time.Millisecond)})
	failed := func() float64 {
		var m dto.Metric
		_ = s.pushes.WithLabelValues("failed").Write(&m)
		return m.GetCounter().GetValue()
	}
	waitUntil(t, "a push to the server that never reads fails", func() bool { return failed() >= 1 })
	t.Logf("first failed push after %s (write deadline %s)", time.Since(start).Round(time.Millisecond), statsdTimeout)
	stuck.Close()
	heldMu.Lock()
	for _, c := range held {
		c.Close()
	}
	heldMu.Unlock()
	// The node's own figures change freely: nothing waits on StatsD.
	for range 1000 {
		f.requests.WithLabelValues("edge-1", "200").Inc()
	}
	// Gone: refused at once.
	before := failed()
	waitUntil(t, "pushes to a closed port fail", func() bool { return failed() >= before+2 })
	logMu.Lock()
	if n := strings.Count(logs.String(), "StatsD push failed"); n != 1 {
		t.Errorf("failure logged %d times, want once per outage:\n%s", n, logs.String())
	}
	logMu.Unlock()
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(statsdWait):
		t.Fatal("Close did not return")
	}
	// A server again: everything counted since the last good push (none
	// got through) arrives.
	k := newSink()
	ln := tcpStatsD(t, k)
	s.Apply(configs.StatsD{Address: ln.Addr().String(), Protocol: configs.StatsDTCP, Interval: configs.Duration(20 * time.Millisecond)})
	defer s.Close()
	k.waitFor(t, "the counts of the outage", func(_, c map[string]float64) bool {
		return c["ringlb.n1.test_requests_total.code.200.edge.edge-1"] == 1000
	})
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), statsdWait)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting: %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// A StatsD server that restarts closes the pusher's connection: the counts
// of the moment are not written into the dead connection (where the kernel
// would take them and lose them) but reach the server once it is back.
func TestStatsDServerRestartLosesNoCount(t *testing.T) {
	first, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := first.Addr().String()
	k := newSink()
	conns := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := first.Accept()
			if err != nil {
				return
			}
			conns <- c
			go func() {
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					k.line(t, sc.Text())
				}
			}()
		}
	}()
	f := newTestFamily(t)
	f.requests.WithLabelValues("edge-1", "200").Inc()
	s := NewStatsD("n1", "ringlb_test_", f.reg, nil)
	defer s.Close()
	s.Apply(configs.StatsD{Address: addr, Protocol: configs.StatsDTCP, Interval: configs.Duration(20 * time.Millisecond)})
	name := "ringlb.n1.test_requests_total.code.200.edge.edge-1"
	k.waitFor(t, "the first count", func(_, c map[string]float64) bool { return c[name] == 1 })
	first.Close()
	for len(conns) > 0 {
		(<-conns).Close()
	}
	f.requests.WithLabelValues("edge-1", "200").Add(5)
	failed := func() float64 {
		var m dto.Metric
		_ = s.pushes.WithLabelValues("failed").Write(&m)
		return m.GetCounter().GetValue()
	}
	waitUntil(t, "a push fails while the server is down", func() bool { return failed() >= 1 })
	again, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	go func() {
		c, err := again.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			k.line(t, sc.Text())
		}
	}()
	k.waitFor(t, "the counts of the restart", func(_, c map[string]float64) bool { return c[name] == 6 })
}

// Distinct label values give distinct names. Every character other than
// letters, digits, '-' and '_' became '_', so edges "a.b" and "a_b" were
// pushed as one name: StatsD summed and overwrote the two, and each
// counter's increase was computed against the other's last value — one
// edge's count inflated, the other's dropped. Characters a name cannot
// carry are escaped, so no two values share a name.
func TestStatsDLabelValuesKeepTheirOwnNames(t *testing.T) {
	k := newSink()
	conn := udpStatsD(t, k, 0)
	f := newTestFamily(t)
	dotted := "ringlb.n1.test_requests_total.code.200.edge.a_x2eb"
	underscored := "ringlb.n1.test_requests_total.code.200.edge.a_b"
	f.requests.WithLabelValues("a.b", "200").Add(5)
	f.requests.WithLabelValues("a_b", "200").Add(3)
	s := NewStatsD("n1", "ringlb_test_", f.reg, nil)
	defer s.Close()
	s.Apply(configs.StatsD{Address: conn.LocalAddr().String(), Interval: configs.Duration(20 * time.Millisecond)})
	k.waitFor(t, "each edge's count under its own name", func(_, c map[string]float64) bool {
		return c[dotted] == 5 && c[underscored] == 3
	})
	f.requests.WithLabelValues("a.b", "200").Add(2)
	k.waitFor(t, "the increase of a.b", func(_, c map[string]float64) bool { return c[dotted] >= 7 })
	s.Close() // one push more: whatever it sends is in the sink
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.counters[dotted] != 7 || k.counters[underscored] != 3 {
		t.Errorf("a.b counted %v, a_b %v; want 7 and 3 (all counters: %v)", k.counters[dotted], k.counters[underscored], k.counters)
	}
}

// statsdSafe is one-to-one: every string of up to five of the characters
// that meet in its escapes gets a name of its own, and ordinary values
// keep theirs.
func TestStatsDSafeIsOneToOne(t *testing.T) {
	for _, v := range []string{"edge-1", "max_connections", "200", "_"} {
		if got := statsdSafe(v); got != v {
			t.Errorf("statsdSafe(%q) = %q, want it unchanged", v, got)
		}
	}
	const alphabet = "_x.5fa:"
	seen := map[string]string{}
	var walk func(v string)
	walk = func(v string) {
		name := statsdSafe(v)
		if other, ok := seen[name]; ok {
			t.Fatalf("%q and %q are both named %q", other, v, name)
		}
		if strings.ContainsAny(name, ".:|\n") {
			t.Fatalf("statsdSafe(%q) = %q holds syntax", v, name)
		}
		seen[name] = v
		if len(v) < 5 {
			for i := range len(alphabet) {
				walk(v + alphabet[i:i+1])
			}
		}
	}
	walk("")
}
