package gslb

import (
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// established says whether the TCP connection c is still established (not
// closed or reset by its peer), read without reading what it received.
func established(c net.Conn) bool {
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return false
	}
	state := uint8(0)
	raw.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			state = info.State
		}
	})
	return state == unix.BPF_TCP_ESTABLISHED
}

// Connections whose clients pipeline queries for big answers and never
// read: the server's write blocks once the sockets' buffers are full, and
// the connection is busy — not waiting for a query — until the write
// deadline (5 s) closes it. Addresses holding every slot so, and
// reconnecting as soon as one is closed, shut every other client out of
// TCP: a connection blocked writing to a client that does not read waits
// on its client as an idle one does, and is ended so at the cap.
func TestTCPBlockedWritersCannotHoldEverySlot(t *testing.T) {
	cfg := hugeZone(gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""))
	cfg.MaxTCPConnections = 32
	cfg.MaxTCPConnectionsPerIP = 8
	s := startGSLB(t, cfg)
	guard := s.tcpGuard.Load()
	q := tcpQuery(t, "txt.huge.test.", dns.TypeTXT)
	var burst []byte
	for range 120 { // 6 MB of answers: more than both sockets' buffers hold (loopback grows them to MBs)
		burst = append(burst, q...)
	}
	dial := func(src net.IP) net.Conn {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: src}, Control: func(_, _ string, c syscall.RawConn) error {
			return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024) })
		}}
		c, err := d.Dial("tcp", s.Addr())
		if err != nil {
			return nil
		}
		c.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
		c.Write(burst) // as much as the server reads: it stops once its writes block
		return c
	}

	// The attack: 4 addresses × their share of 8 = the cap, each slot
	// reconnected as soon as the server closes it, until the test ends.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(stop); wg.Wait() })
	for a := range 4 {
		for range cfg.MaxTCPConnectionsPerIP {
			wg.Add(1)
			go func() {
				defer wg.Done()
				src := net.IPv4(127, 0, 0, byte(20+a))
				var c net.Conn
				defer func() {
					if c != nil {
						c.Close()
					}
				}()
				for {
					if c == nil || !established(c) {
						if c != nil {
							c.Close()
						}
						c = dial(src)
					}
					select {
					case <-stop:
						return
					case <-time.After(20 * time.Millisecond):
					}
				}
			}()
		}
	}
	waitFor(t, "the attack holding every slot, its answers written", func() bool {
		return guard.Open() == cfg.MaxTCPConnections && counterValue(t, s, "ringlb_gslb_queries_total", "qtype", "TXT") >= float64(cfg.MaxTCPConnections)
	})
	waitStalled(t, s, cfg.MaxTCPConnections)

	// Another client's queries. At the cap its new connection may
	// itself be ended, before its query arrives, by one of the attack's
	// new connections when nothing else waits; or refused when nothing
	// waits at all: its query is sent again on a new connection, as a DNS
	// client does (one failed in the race detector's runs, 7 of 8).
	answered, again, last := queriesRetried(t, s, 8, 3)
	t.Logf("4 addresses holding the %d slots with connections blocked writing to clients that never read, reconnecting at once: another client's TCP queries answered %d of 8, %d sent again (last error: %v); ended to make room: %v, refused at the cap: %v",
		cfg.MaxTCPConnections, answered, again, last, counterOf(s.metrics.tcpEndedWaiting), counterOf(s.metrics.tcpRefused))
	if answered != 8 {
		t.Errorf("another client's TCP queries answered %d of 8, each on up to 3 connections", answered)
	}
	if held := guard.Open(); held > cfg.MaxTCPConnections {
		t.Errorf("the server holds %d connections, over its cap of %d", held, cfg.MaxTCPConnections)
	}
}

// waitStalled waits until n of s's TCP connections are stalled writing to
// clients that do not read.
func waitStalled(t *testing.T, s *Server, n int) {
	t.Helper()
	waitFor(t, "the attack's connections stalled writing", func() bool { return s.tcpGuard.Load().Stalled() >= n })
}
