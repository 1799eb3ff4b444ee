package gslb

import (
	"encoding/binary"
	"errors"
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
	for range 120 { // 6 MB of answers: far more than both sockets' buffers hold
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
	// Every connection accepted and answering first: a connection still in
	// the backlog is held by nobody yet, and counting before the server has
	// taken them all passed on a busy machine with the connections yet to
	// come (then "19 of 20" held).
	waitFor(t, "a query of every connection answered", func() bool {
		return counterValue(t, s, "ringlb_gslb_queries_total", "qtype", "TXT") >= conns
	})
	guard := s.tcpGuard.Load()
	t.Logf("after the writes: the server holds %d connections (%d descriptors more than before)", guard.Open(), openFDs(t)-before-conns)
	waitFor(t, "the server closed the connections whose clients never read", func() bool { return guard.Open() == 0 })
	t.Logf("after %v: the server holds %d of %d connections that never read (%d descriptors more than before); goroutines %d", time.Since(start).Round(time.Millisecond), guard.Open(), conns, openFDs(t)-before-conns, runtime.NumGoroutine())
	if r := query(t, s, "udp", "www.ringlb.test.", dns.TypeA, nil); len(r.Answer) != 1 {
		t.Fatalf("UDP meanwhile: %v", r)
	}
}

// Many TCP connections that announce a query and send nothing more
// (slowloris): each holds a descriptor and a goroutine until its read
// deadline, and anyone can open them faster than that. Before the cap, 3000
// such connections (announcing 64 KiB each) were 3000 held, 3000 goroutines
// and 192 MiB of heap: miekg/dns allocates the announced length up front.
func TestTCPConnectionsCapped(t *testing.T) {
	cfg := gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), "")
	cfg.MaxTCPConnections = 100
	cfg.MaxTCPConnectionsPerIP = 1000 // one client here, never at its share: the total is what is tested
	s := startGSLB(t, cfg)
	const conns = 1000
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heap0, g0 := ms.HeapInuse, runtime.NumGoroutine()
	cs := make([]net.Conn, 0, conns)
	t.Cleanup(func() {
		for _, c := range cs {
			c.Close()
		}
	})
	d := net.Dialer{Timeout: 5 * time.Second}
	for range conns {
		c, err := d.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatalf("after %d connections: %v", len(cs), err)
		}
		cs = append(cs, c)
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte{0x01, 0x00, 0}) // 256 bytes announced, 1 sent
	}
	guard := s.tcpGuard.Load()
	// The refusals are done once the listener's backlog is empty: wait
	// until every connection is either held or counted refused — or ended
	// for a new one's room, having waited the longest with nothing read
	// (those accepted before their client's first bytes arrived).
	refused := func() int {
		return counterOf(s.metrics.tcpRefused) + counterOf(s.metrics.tcpEndedWaiting)
	}
	for deadline := time.Now().Add(30 * time.Second); guard.Open()+refused() < conns && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	t.Logf("%d connections opened: the server holds %d, refused or ended %d; heap %+d KiB, goroutines %+d", conns, guard.Open(), refused(), (int64(ms.HeapInuse)-int64(heap0))>>10, runtime.NumGoroutine()-g0)
	if guard.Open() > cfg.MaxTCPConnections {
		t.Fatalf("the server holds %d TCP connections, over max_tcp_connections %d", guard.Open(), cfg.MaxTCPConnections)
	}
	if refused() < conns-cfg.MaxTCPConnections {
		t.Fatalf("%d connections refused or ended, want at least %d", refused(), conns-cfg.MaxTCPConnections)
	}
	if r := query(t, s, "udp", "www.ringlb.test.", dns.TypeA, nil); len(r.Answer) != 1 {
		t.Fatalf("UDP meanwhile: %v", r)
	}
	// The slots come back as the idle ones close.
	for _, c := range cs {
		c.Close()
	}
	for deadline := time.Now().Add(30 * time.Second); guard.Open() > 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if r := query(t, s, "tcp", "www.ringlb.test.", dns.TypeA, nil); len(r.Answer) != 1 {
		t.Fatalf("TCP once the idle connections are gone: %v", r)
	}
}

// A TCP query announced longer than any query can be ends its connection
// before the server buffers it (miekg/dns alone allocates what the prefix
// says, up to 64 KiB, and waits for it).
func TestTCPQueryTooLongClosed(t *testing.T) {
	// A read deadline beyond the test's wait: only the length closes it.
	s := startGSLBWith(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""), func(s *Server) { s.tcpReadTimeout = time.Minute })
	c, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte{0xff, 0xff, 0}); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes, want the connection closed", n)
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the connection announcing a 64 KiB query is still open")
	}
	// A query of the largest size is still read and answered.
	m := new(dns.Msg)
	m.SetQuestion("www.ringlb.test.", dns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_PADDING{Padding: make([]byte, 3000)})
	r := query(t, s, "tcp", "www.ringlb.test.", dns.TypeA, func(q *dns.Msg) { *q = *m })
	if len(r.Answer) != 1 {
		t.Fatalf("padded query: %v", r)
	}
}
