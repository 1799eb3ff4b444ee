package balancer

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// scrape reads h's admin /metrics as Prometheus does and returns the
// series of family name, as their labels and value.
func scrape(t *testing.T, h *harness, name string) []scrapedSeries {
	t.Helper()
	resp, err := h.client.Get("http://" + h.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out []scrapedSeries
	for _, m := range families[name].GetMetric() {
		s := scrapedSeries{labels: map[string]string{}}
		for _, l := range m.GetLabel() {
			s.labels[l.GetName()] = l.GetValue()
		}
		switch {
		case m.GetCounter() != nil:
			s.value = m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			s.value = m.GetGauge().GetValue()
		}
		out = append(out, s)
	}
	return out
}

type scrapedSeries struct {
	labels map[string]string
	value  float64
}

// A backend answering statuses outside HTTP's 100–599 makes no series of
// its own for each: they are counted under code="other", so a misbehaving
// edge cannot grow requests_total by hundreds of series.
func TestRequestsCodeLabelBounded(t *testing.T) {
	odd := serveConns(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			status := strings.TrimPrefix(req.URL.Path, "/status/")
			if _, err := fmt.Fprintf(c, "HTTP/1.1 %s Odd\r\nContent-Length: 0\r\n\r\n", status); err != nil {
				return
			}
		}
	})
	h := &harness{byName: map[string]*testEdge{}, reg: prometheus.NewRegistry(), ring: ring.New(ring.DefaultConfig())}
	h.ring.Update([]ring.Member{{Name: "odd", URL: odd, Weight: 1}})
	cfg := configs.Balancer{}
	cfg.Provision()
	bal, err := New(cfg, "bal-test", h.ring, slog.New(slog.DiscardHandler), h.reg)
	if err != nil {
		t.Fatal(err)
	}
	h.bal = bal
	h.serve(t)

	var statuses []int
	for s := 600; s < 700; s++ {
		statuses = append(statuses, s)
	}
	statuses = append(statuses, 999, 1000, 4096, 65536, 200, 404, 599)
	for _, s := range statuses {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(healthtest.Patience))
		fmt.Fprintf(c, "GET /status/%d HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\nConnection: close\r\n\r\n", s)
		_, _ = io.Copy(io.Discard, c)
		c.Close()
	}

	total, other := 0.0, 0.0
	codes := map[string]bool{}
	for _, s := range scrape(t, h, "ringlb_balancer_requests_total") {
		if s.labels["edge"] != "odd" {
			continue
		}
		code := s.labels["code"]
		codes[code] = true
		total += s.value
		if code == "other" {
			other += s.value
			continue
		}
		if n, err := strconv.Atoi(code); err != nil || n < 100 || n > 599 {
			t.Errorf("series code=%q: outside 100-599, not counted as other", code)
		}
	}
	t.Logf("%d requests, %d series of edge odd (%v), %v under other", len(statuses), len(codes), codes, other)
	if total != float64(len(statuses)) {
		t.Errorf("%v requests counted, want %d", total, len(statuses))
	}
	if len(codes) > 5 {
		t.Errorf("%d series for one edge: one per odd status", len(codes))
	}
}

// An edge gone from the cluster for good takes its series with it: gossip
// edges restarted under new names do not grow the balancer's series for
// ever. An edge with a tunnel left keeps its gauge until the tunnel ends
// (no gauge below 0 after). A static edge removed by a reload goes too.
func TestGoneEdgesSeriesForgotten(t *testing.T) {
	cl := healthtest.New(t)
	b := startClusterBalancerAfter(t, cl, "bal-1", configs.Balancer{SessionTable: configs.SessionTable{StartupWait: configs.Duration(time.Millisecond)}},
		func(bal *Balancer) { bal.goneEdgeSeriesAfter = 300 * time.Millisecond })
	edgeSeries := func(edge string) int {
		n := 0
		for _, name := range []string{"ringlb_balancer_connections_active", "ringlb_balancer_requests_total", "ringlb_balancer_backend_errors_total"} {
			for _, s := range scrape(t, b.harness, name) {
				if s.labels["edge"] == edge {
					n++
				}
			}
		}
		return n
	}
	join := func(name string) (*testEdge, *health.Membership) {
		e := startTestEdge(t, name)
		return e, cl.Join(name, health.Meta{Role: health.RoleEdge, Region: "east", URL: e.url, Weight: 1, State: health.StateAlive})
	}
	leave := func(m *health.Membership) {
		ctx, cancel := context.WithTimeout(context.Background(), healthtest.Patience)
		defer cancel()
		if err := m.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// Generations of edges, each restarted under a fresh name.
	var names []string
	for gen := range 3 {
		name := fmt.Sprintf("edge-gen%d", gen)
		names = append(names, name)
		_, m := join(name)
		waitRing(t, b, name)
		b.whoami(t, "/whoami", http.Header{"Ctstickiness": {"k"}})
		if n := edgeSeries(name); n == 0 {
			t.Fatalf("%s: no series while routed", name)
		}
		leave(m)
		waitRing(t, b)
	}
	for _, name := range names {
		healthtest.WaitUntil(t, name+"'s series gone", func() bool { return edgeSeries(name) == 0 })
	}

	// A tunnel outliving its edge's membership: the gauge stays, right,
	// until the tunnel ends, then goes; it never goes below 0.
	_, m := join("edge-tunnel")
	waitRing(t, b, "edge-tunnel")
	ws, _ := dialWS(t, b.addr, "/ws", http.Header{"Ctstickiness": {"k"}})
	leave(m)
	waitRing(t, b)
	// Several sweeps past the grace with the tunnel open.
	gone := time.Now()
	healthtest.WaitUntil(t, "sweeps past the grace", func() bool { return time.Since(gone) > 2*time.Second })
	if got := b.metric(t, "ringlb_balancer_connections_active", map[string]string{"edge": "edge-tunnel"}); got != 1 {
		t.Fatalf("connections_active{edge-tunnel} = %v with its tunnel open, want 1", got)
	}
	ws.Close()
	healthtest.WaitUntil(t, "tunnel released", func() bool { return b.bal.Tunnels() == 0 })
	healthtest.WaitUntil(t, "edge-tunnel's series gone", func() bool { return edgeSeries("edge-tunnel") == 0 })
	for _, s := range scrape(t, b.harness, "ringlb_balancer_connections_active") {
		if s.value < 0 {
			t.Fatalf("connections_active %v = %v", s.labels, s.value)
		}
	}

	// A static edge removed by a reload goes the same way; while
	// configured, even off the ring, it keeps its series.
	static := startTestEdge(t, "edge-static")
	cfg := b.bal.current.Load().cfg
	cfg.Edges = staticEdgesOf(static)
	if err := b.bal.Reload(provision(cfg)); err != nil {
		t.Fatal(err)
	}
	waitRing(t, b, "edge-static")
	b.whoami(t, "/whoami", http.Header{"Ctstickiness": {"k"}})
	if n := edgeSeries("edge-static"); n == 0 {
		t.Fatal("edge-static: no series while routed")
	}
	cfg.Edges = nil
	if err := b.bal.Reload(provision(cfg)); err != nil {
		t.Fatal(err)
	}
	waitRing(t, b)
	healthtest.WaitUntil(t, "edge-static's series gone", func() bool { return edgeSeries("edge-static") == 0 })
}

// An edge back on the ring as the sweep deletes its series (the sweep
// found it gone, then it rejoined and its ring rebuild made its error
// counters at 0) has them again: deleted, its first error made a series
// at 1, no increase to Prometheus, and an alert on increase(...) > 0
// missed it.
func TestEdgeBackAsItsSeriesGoKeepsItsErrorCounters(t *testing.T) {
	cl := healthtest.New(t)
	b := startClusterBalancer(t, cl, "bal-1", configs.Balancer{SessionTable: configs.SessionTable{StartupWait: configs.Duration(time.Millisecond)}})
	e := startTestEdge(t, "edge-back")
	cl.Join("edge-back", health.Meta{Role: health.RoleEdge, Region: "east", URL: e.url, Weight: 1, State: health.StateAlive})
	waitRing(t, b, "edge-back")
	errorSeries := func() map[string]float64 {
		out := map[string]float64{}
		for _, s := range scrape(t, b.harness, "ringlb_balancer_backend_errors_total") {
			if s.labels["edge"] == "edge-back" {
				out[s.labels["kind"]] = s.value
			}
		}
		return out
	}
	if got := errorSeries(); len(got) != len(errorKinds) {
		t.Fatalf("routed: error series %v, want one per kind at 0", got)
	}

	// The sweep's delete, decided while the edge was gone, lands now.
	b.bal.forgetEdge("edge-back")
	got := errorSeries()
	t.Logf("after the delete: %v", got)
	for _, kind := range errorKinds {
		if v, ok := got[kind]; !ok || v != 0 {
			t.Errorf("backend_errors_total{edge=edge-back,kind=%s}: %v (present %v), want 0 while the edge is routed to", kind, v, ok)
		}
	}
}
