package balancer

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
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
	}, nil, nil, func() { changed <- struct{}{} }, nil)
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
	s := newStaticEdgesSeeded(edges, nil, nil, nil, nil, map[string]bool{"legacy": false})
	if m := s.Members(); len(m) != 0 {
		t.Fatalf("a down edge is a member: %v", m)
	}
	for i := range 3 {
		next := newStaticEdges(edges, nil, s, nil, nil)
		s.Close()
		s = next
		if m := s.Members(); len(m) != 0 {
			t.Fatalf("reload %d put the down edge back on the ring: %v", i+1, m)
		}
	}
	s.Close()
}
