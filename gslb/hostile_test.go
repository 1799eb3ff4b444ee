package gslb

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// openFDs counts this process's open descriptors (Linux): the test's
// client sockets and the server's share the process.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	return len(ents)
}

// tcpQuery is q packed with its TCP length prefix.
func tcpQuery(t *testing.T, name string, qtype uint16) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
}

// dialSmallWindow dials addr over TCP with a tiny receive buffer, set before
// connecting so that the window it advertises stays tiny.
func dialSmallWindow(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024) })
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// hugeZone adds zone huge.test to cfg, whose name txt.huge.test has a TXT
// RRset of about 50 KB: the most a TCP answer can carry, near enough.
func hugeZone(cfg configs.GSLB) configs.GSLB {
	recs := []string{"@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60", "@ 3600 IN NS ns1.ringlb.test."}
	for i := range 200 {
		recs = append(recs, fmt.Sprintf("txt 3600 IN TXT \"%03d%s\"", i, strings.Repeat("x", 240)))
	}
	cfg.Zones = append(append([]configs.Zone(nil), cfg.Zones...), configs.Zone{Origin: "huge.test", Records: recs})
	return cfg
}

// A TCP client that pipelines queries for big answers and never reads
// them: the server's writes fill the socket and block. Without a write
// deadline the server holds the connection (descriptor, goroutine, the
// answers in the kernel's buffers) for ever.
func TestTCPClientThatNeverReads(t *testing.T) {
	// A short write deadline keeps the test short; 5 s in service.
	s := startGSLBWith(t, hugeZone(gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), "")), func(s *Server) { s.tcpWriteTimeout = 300 * time.Millisecond })
	const conns = 20
	q := tcpQuery(t, "txt.huge.test.", dns.TypeTXT)
	var burst []byte
	for range 120 { // under miekg/dns's 128 queries a connection, after which it closes
		burst = append(burst, q...)
	}
	before := openFDs(t)
	start := time.Now()
	for range conns {
		c := dialSmallWindow(t, s.Addr())
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(burst); err != nil {
			t.Fatal(err)
		}
	}
	held := func() int { return openFDs(t) - before - conns } // the server's side
	t.Logf("after the writes: the server holds %d connections", held())
	deadline := time.Now().Add(30 * time.Second)
	for held() > conns/4 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("after %v: the server holds %d of %d connections that never read; goroutines %d", time.Since(start).Round(time.Millisecond), held(), conns, runtime.NumGoroutine())
	if h := held(); h > conns/4 {
		t.Fatalf("the server still holds %d of %d connections whose clients never read", h, conns)
	}
	if r := query(t, s, "udp", "www.ringlb.test.", dns.TypeA, nil); len(r.Answer) != 1 {
		t.Fatalf("UDP meanwhile: %v", r)
	}
}
