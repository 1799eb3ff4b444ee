package balancer

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// A static edge is on the ring while its monitor passes, and leaves it when
// its listener goes away.
func TestStaticEdgesFollowTheirMonitor(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	mon := configs.Monitor{Type: configs.MonitorTCP, Interval: configs.Duration(20 * time.Millisecond), Timeout: configs.Duration(500 * time.Millisecond), Rise: 2, Fall: 2}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	mon.Port, _ = strconv.Atoi(port)
	changed := make(chan struct{}, 8)
	one := 1
	s := newStaticEdges([]configs.StaticEdge{
		{Name: "legacy", URL: "http://" + ln.Addr().String(), Weight: &one, Monitor: &mon},
	}, nil, nil, func() { changed <- struct{}{} }, nil, nil)
	defer s.Close()
	if m := s.Members(); len(m) != 1 || m[0].Name != "legacy" {
		t.Fatalf("members %v", m)
	}
	ln.Close()
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("no change after the edge's listener closed")
	}
	if m := s.Members(); len(m) != 0 {
		t.Fatalf("down edge still a member: %v", m)
	}
}

// A reload keeps what the monitors saw: an edge found down stays off the
// ring until it passes its rise checks, whatever reloads come meanwhile.
// Before, every reload (a SIGHUP, a PUT of the config API, the same file
// again) started each static edge's monitor afresh, and a monitor starts
// up: a dead edge was back on the ring for fall checks, and reloads as
// often as that kept it there.
func TestReloadKeepsAStaticEdgeDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, port, _ := net.SplitHostPort(dead)
	mon := configs.Monitor{Type: configs.MonitorTCP, Interval: configs.Duration(time.Hour), Timeout: configs.Duration(time.Second), Rise: 2, Fall: 2}
	mon.Port, _ = strconv.Atoi(port)
	one := 1
	edges := []configs.StaticEdge{{Name: "legacy", URL: "http://" + dead, Weight: &one, Monitor: &mon}}
	// Seen down (by the process this one replaced, or by its checks).
	s := newStaticEdgesSeeded(edges, nil, nil, nil, nil, nil, map[string]bool{"legacy": false}, nil)
	if m := s.Members(); len(m) != 0 {
		t.Fatalf("a down edge is a member: %v", m)
	}
	for i := range 3 {
		next := newStaticEdges(edges, nil, s, nil, nil, nil)
		s.Close()
		s = next
		if m := s.Members(); len(m) != 0 {
			t.Fatalf("reload %d put the down edge back on the ring: %v", i+1, m)
		}
	}
	s.Close()
}

// A reload carries a static edge's run of failed checks with its state
// (health.Prober.Carry), as the gslb's reload does its members'. Before, it
// carried the state alone and the new monitor counted fall again: a backend
// whose health check fails, reloaded every fall-1 checks (config
// management, PUT /api/config), stayed on the ring for ever and took new
// sessions.
func TestReloadsKeepAStaticEdgesFallCount(t *testing.T) {
	var healthy atomic.Bool
	var failed atomic.Int64 // failed checks answered
	healthy.Store(true)
	check := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			failed.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(check.Close)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(check.URL, "http://"))
	const fall = 3
	edges := staticEdgesOf(startTestEdge(t, "edge-1"), startTestEdge(t, "edge-2"))
	mon := configs.Monitor{Type: configs.MonitorHTTP, Path: "/health", Interval: configs.Duration(500 * time.Millisecond), Timeout: configs.Duration(time.Second), Rise: 1, Fall: fall}
	mon.Port, _ = strconv.Atoi(port)
	edges[0].Monitor = &mon
	cfg := configs.Balancer{Edges: edges, SessionTable: configs.SessionTable{StartupWait: configs.Duration(time.Millisecond)}}
	cfg.Provision()
	b := startClusterBalancer(t, healthtest.New(t), "bal-1", cfg)
	waitRing(t, b, "edge-1", "edge-2")
	healthtest.WaitUntil(t, "edge-1's monitor settled", func() bool {
		e, ok := b.bal.static.Load().edge("edge-1")
		return ok && e.prober.Settled()
	})

	healthy.Store(false) // edge-1's health check fails from now on
	base := failed.Load()
	for range 4 {
		healthtest.WaitUntil(t, "fall-1 more failed checks", func() bool { return failed.Load() >= base+fall-1 })
		// Counted from before the reload: the new monitor checks at once.
		base = failed.Load()
		if err := b.bal.Reload(cfg); err != nil { // the same config
			t.Fatal(err)
		}
	}
	n := failed.Load()
	_, on := b.ring.Snapshot().Member("edge-1")
	t.Logf("edge-1 failed %d checks in a row (fall %d); on the ring: %v", n, fall, on)
	if n >= 2*fall && on {
		t.Errorf("edge-1 failed %d checks in a row (fall %d) and is still on the ring: each reload restarted its fall count", n, fall)
	}
}

// A reload that lands while the balancer stops (a PUT /api/config answered
// as the node shuts down) leaves no static monitor running: the edges it
// swaps in after the shutdown closed the static edges it found are
// nobody's, and their monitors probed until the process exits.
func TestReloadDuringShutdownLeavesNoMonitors(t *testing.T) {
	var probes atomic.Int64
	check := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		probes.Add(1)
		io.WriteString(w, "ok")
	}))
	t.Cleanup(check.Close)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(check.URL, "http://"))
	edges := staticEdgesOf(startTestEdge(t, "edge-1"))
	mon := configs.Monitor{Type: configs.MonitorHTTP, Path: "/health", Interval: configs.Duration(20 * time.Millisecond), Timeout: configs.Duration(time.Second), Rise: 1, Fall: 3}
	mon.Port, _ = strconv.Atoi(port)
	edges[0].Monitor = &mon
	cfg := configs.Balancer{Edges: edges, SessionTable: configs.SessionTable{StartupWait: configs.Duration(time.Millisecond)}}
	cfg.Provision()
	b := startClusterBalancer(t, healthtest.New(t), "bal-1", cfg)
	waitRing(t, b, "edge-1")

	// The shutdown's stop of the static edges comes between the reload's
	// check that the ring follows the cluster and its swap.
	b.bal.beforeStaticSwap = func() { b.bal.stopFollowing() }
	if err := b.bal.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	st := b.bal.static.Load()
	if st == nil {
		return
	}
	after := probes.Load()
	healthtest.WaitUntil(t, "a probe after the reload", func() bool { return probes.Load() > after+2 })
	t.Errorf("the reload's static edges outlived the shutdown: %d probes by the time it returned, %d since, owned by nobody", after, probes.Load()-after)
	st.Close()
}
