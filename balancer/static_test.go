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
	}, nil, func() { changed <- struct{}{} }, nil)
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
