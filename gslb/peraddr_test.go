package gslb

import (
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
	dto "github.com/prometheus/client_model/go"
)

// One client address opening gslb.max_tcp_connections idle TCP connections
// took every slot, and held them until their read deadline: every other
// client's TCP query (a truncated answer's retry, a transfer) was closed
// unanswered meanwhile. With gslb.max_tcp_connections_per_ip, one address
// holds its share and the others find room.
func TestTCPOneClientCannotTakeEverySlot(t *testing.T) {
	cfg := gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), "")
	cfg.MaxTCPConnections = 64
	cfg.MaxTCPConnectionsPerIP = 8
	// A read deadline beyond the test: the flood's idle connections stay
	// held for as long as the test runs, as a flood that reopens them would.
	s := startGSLBWith(t, cfg, func(s *Server) { s.tcpReadTimeout = 2 * time.Minute })
	guard := s.tcpGuard.Load()
	counter := func(c interface{ Write(*dto.Metric) error }) int {
		var m dto.Metric
		c.Write(&m)
		return int(m.GetCounter().GetValue())
	}
	refused := func() int { return counter(s.metrics.tcpRefused) + counter(s.metrics.tcpRefusedPerIP) }

	flood := make([]net.Conn, 0, cfg.MaxTCPConnections)
	t.Cleanup(func() {
		for _, c := range flood {
			c.Close()
		}
	})
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	for range cfg.MaxTCPConnections {
		c, err := d.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatalf("flood: after %d connections: %v", len(flood), err)
		}
		flood = append(flood, c)
	}
	// Wait until the server has taken or refused every one.
	for deadline := time.Now().Add(30 * time.Second); guard.Open()+refused() < len(flood) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("127.0.0.2 opened %d idle connections: the server holds %d, refused %d (at max_tcp_connections %d, at the per-address share %d)",
		len(flood), guard.Open(), refused(), counter(s.metrics.tcpRefused), counter(s.metrics.tcpRefusedPerIP))

	// Another client's query over TCP, from 127.0.0.3.
	m := new(dns.Msg)
	m.SetQuestion("www.ringlb.test.", dns.TypeA)
	c := &dns.Client{Net: "tcp", Timeout: 30 * time.Second, Dialer: &net.Dialer{Timeout: 30 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}}}
	r, _, err := c.Exchange(m, s.Addr())
	if err != nil {
		t.Fatalf("127.0.0.3's TCP query while 127.0.0.2 holds its connections: %v", err)
	}
	if len(r.Answer) != 1 {
		t.Fatalf("127.0.0.3's TCP query: %v", r)
	}
	if held := guard.Open(); held > cfg.MaxTCPConnectionsPerIP+1 {
		t.Errorf("the server holds %d connections, want at most 127.0.0.2's share %d (and 127.0.0.3's)", held, cfg.MaxTCPConnectionsPerIP)
	}
	if got, want := counter(s.metrics.tcpRefusedPerIP), len(flood)-cfg.MaxTCPConnectionsPerIP; got != want {
		t.Errorf("ringlb_gslb_tcp_refused_per_ip_total = %d, want %d", got, want)
	}
}

// A reload changes one client's share as it changes the total.
func TestTCPPerIPShareFollowsReload(t *testing.T) {
	cfg := gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), "")
	cfg.MaxTCPConnectionsPerIP = 2
	s := startGSLBWith(t, cfg, func(s *Server) { s.tcpReadTimeout = 2 * time.Minute })
	guard := s.tcpGuard.Load()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	for range 2 {
		c, err := d.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	for deadline := time.Now().Add(30 * time.Second); guard.Open() < 2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	exchange := func() error {
		m := new(dns.Msg)
		m.SetQuestion("www.ringlb.test.", dns.TypeA)
		c := &dns.Client{Net: "tcp", Timeout: 30 * time.Second, Dialer: &d}
		_, _, err := c.Exchange(m, s.Addr())
		return err
	}
	if err := exchange(); err == nil {
		t.Fatal("a third connection from 127.0.0.2 was served at a share of 2")
	}
	cfg.MaxTCPConnectionsPerIP = 3
	if err := s.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if err := exchange(); err != nil {
		t.Fatalf("a third connection from 127.0.0.2 after the share was raised to 3: %v", err)
	}
}
