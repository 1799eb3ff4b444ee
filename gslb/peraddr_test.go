package gslb

import (
	"encoding/binary"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
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
	refused := func() int { return counterOf(s.metrics.tcpRefused) + counterOf(s.metrics.tcpRefusedPerIP) }

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
		len(flood), guard.Open(), refused(), counterOf(s.metrics.tcpRefused), counterOf(s.metrics.tcpRefusedPerIP))

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
	if got, want := counterOf(s.metrics.tcpRefusedPerIP), len(flood)-cfg.MaxTCPConnectionsPerIP; got != want {
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

// The per-address share bounds what one address holds, not what many do:
// eight addresses (a few hosts, or one host's IPv6 /61: a /64 each) each
// opening its share of connections that wait — before any query, after one,
// or in the middle of one trickled a byte at a time — held every slot until
// their deadlines (10 s between queries, 5 s for a query's bytes; a flood
// that keeps to them holds the port for ever), and every other client's TCP
// query was closed unanswered. At the cap a new connection within its
// client's share takes the place of the one waiting the longest (RFC 7766
// 6.2.3: a server may close an idle connection; its client reconnects), so
// waiting connections cannot hold the port.
func TestTCPWaitingConnectionsCannotHoldEverySlot(t *testing.T) {
	q := tcpQuery(t, "www.ringlb.test.", dns.TypeA)
	r := new(dns.Msg)
	r.SetQuestion("www.ringlb.test.", dns.TypeA)
	r.Response = true
	b, err := r.Pack()
	if err != nil {
		t.Fatal(err)
	}
	response := append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
	for _, flood := range []struct {
		name string
		wait func(t *testing.T, c net.Conn) // brings c to the waiting it tests
	}{
		{"before its first query", func(*testing.T, net.Conn) {}},
		{"answered, before its next query", func(t *testing.T, c net.Conn) {
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(q); err != nil {
				t.Fatal(err)
			}
			var l [2]byte
			if _, err := io.ReadFull(c, l[:]); err != nil {
				t.Fatalf("a flood connection's query: %v", err)
			}
			if _, err := io.ReadFull(c, make([]byte, binary.BigEndian.Uint16(l[:]))); err != nil {
				t.Fatal(err)
			}
		}},
		{"in a query trickled a byte at a time", func(t *testing.T, c net.Conn) {
			if _, err := c.Write(q[:3]); err != nil { // its length and a byte
				t.Fatal(err)
			}
		}},
		{"after a message it ignores (a response)", func(t *testing.T, c net.Conn) {
			if _, err := c.Write(response); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(flood.name, func(t *testing.T) {
			cfg := gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), "")
			cfg.MaxTCPConnections = 64
			cfg.MaxTCPConnectionsPerIP = 8
			// First-read and idle deadlines beyond the test, as a flood
			// that reopens its connections would hold them: on a busy
			// machine the flood's set-up outlasted the 10 s idle one, its
			// answered connections closed and left room.
			s := startGSLBWith(t, cfg, func(s *Server) { s.tcpReadTimeout, s.tcpIdleTimeout = 2*time.Minute, 2*time.Minute })
			guard := s.tcpGuard.Load()
			var conns []net.Conn
			t.Cleanup(func() {
				for _, c := range conns {
					c.Close()
				}
			})
			for a := range 8 {
				d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(10+a))}}
				for range cfg.MaxTCPConnectionsPerIP {
					c, err := d.Dial("tcp", s.Addr())
					if err != nil {
						t.Fatalf("flood: after %d connections: %v", len(conns), err)
					}
					conns = append(conns, c)
					flood.wait(t, c)
				}
			}
			_, port, _ := net.SplitHostPort(s.Addr())
			waitFor(t, "the flood's connections held, all they sent read", func() bool {
				return guard.Open() == cfg.MaxTCPConnections && unreadOnServer(t, port) == 0
			})
			ended := func() int { return counterOf(s.metrics.tcpEndedWaiting) }

			// Another client's queries, each on a connection of its own
			// kept open (its share of them): each needs a room.
			answered, last := queriesOnOwnConns(t, s, cfg.MaxTCPConnectionsPerIP)
			t.Logf("8 addresses holding %d connections waiting %s (the cap): another client's TCP queries answered %d of %d (last error: %v); ended to make room: %d",
				len(conns), flood.name, answered, cfg.MaxTCPConnectionsPerIP, last, ended())
			if answered != cfg.MaxTCPConnectionsPerIP {
				t.Errorf("another client's TCP queries answered %d of %d while 8 addresses held every slot", answered, cfg.MaxTCPConnectionsPerIP)
			}
			if held := guard.Open(); held > cfg.MaxTCPConnections {
				t.Errorf("the server holds %d connections, over its cap of %d", held, cfg.MaxTCPConnections)
			}
			if got := ended(); got != answered {
				t.Errorf("ringlb_gslb_tcp_ended_waiting_total = %d, want one for each of the %d connections that needed room", got, answered)
			}
		})
	}
}

// unreadOnServer is how many bytes wait unread on the server's side of the
// TCP connections to port (Linux: the rx_queue of /proc/net/tcp's
// established sockets bound to it).
func unreadOnServer(t *testing.T, port string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skip("no /proc/net/tcp:", err)
	}
	want, _ := strconv.Atoi(port)
	total := 0
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 5 || f[3] != "01" { // ESTABLISHED
			continue
		}
		_, p, _ := strings.Cut(f[1], ":")
		if lp, err := strconv.ParseUint(p, 16, 16); err != nil || int(lp) != want {
			continue
		}
		_, rx, _ := strings.Cut(f[4], ":")
		n, _ := strconv.ParseUint(rx, 16, 32)
		total += int(n)
	}
	return total
}

// queriesOnOwnConns sends n TCP queries for www.ringlb.test A to s from
// 127.0.0.3, each on a connection of its own kept open until the test
// ends (each needs a slot): how many were answered with the one address,
// and the last error.
func queriesOnOwnConns(t *testing.T, s *Server, n int) (answered int, last error) {
	t.Helper()
	answered, _, last = queriesRetried(t, s, n, 1)
	return answered, last
}

// queriesRetried is queriesOnOwnConns with each query sent again, on a
// new connection, when its connection closed unanswered, up to tries
// connections in all, as a DNS client does (RFC 7766 6.2.3): also how many
// connections more the queries took.
func queriesRetried(t *testing.T, s *Server, n, tries int) (answered, again int, last error) {
	t.Helper()
	for range n {
		m := new(dns.Msg)
		m.SetQuestion("www.ringlb.test.", dns.TypeA)
		c := &dns.Client{Net: "tcp", Timeout: 10 * time.Second, Dialer: &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}}}
		for try := range tries {
			conn, err := c.Dial(s.Addr())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			if try > 0 {
				again++
			}
			r, _, err := c.ExchangeWithConn(m, conn)
			if err != nil {
				last = err
				conn.Close() // its slot back for the next
				continue
			}
			if len(r.Answer) == 1 {
				answered++
			}
			break
		}
	}
	return answered, again, last
}

// counterOf is the value of one of a server's own counters (s.metrics).
func counterOf(c interface{ Write(*dto.Metric) error }) int {
	var m dto.Metric
	c.Write(&m)
	return int(m.GetCounter().GetValue())
}
