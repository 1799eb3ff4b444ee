package gslb

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// TestTransfersOutBounded is the attack of secondaries (or whoever holds
// an allowed address and the zone's key) that ask for transfers and do
// not read them: each transfer held the zone's records, its messages and
// a goroutine until its write deadline, however many there were at once.
// Now at most 10 run at once, as BIND's transfers-out; one
// more is answered SERVFAIL at once (a secondary tries again later), and
// a slot frees when its transfer ends.
func TestTransfersOutBounded(t *testing.T) {
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	cfg := withTransfer(t, gslbConfig(t, east, west, ""), configs.Transfer{Allow: []string{"127.0.0.0/8"}})
	// A zone far larger than what a socket that is not read takes.
	zone, err := os.ReadFile(cfg.Zones[0].File)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.Write(zone)
	for i := range 150000 {
		fmt.Fprintf(&b, "host-%05d 300 IN A 192.0.2.%d\n", i, i%250+1)
	}
	cfg.Zones[0].File = filepath.Join(t.TempDir(), "big.zone")
	if err := os.WriteFile(cfg.Zones[0].File, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startGSLB(t, cfg)

	const asked = maxTransfersOut + 4
	conns := make([]*dns.Conn, asked)
	for i := range conns {
		// Each from an address of its own (no one client's TCP share is
		// what refuses it), with a small receive buffer it never reads.
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 3, byte(i+1))},
			Control: func(_, _ string, c syscall.RawConn) error {
				return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
			}}
		c, err := d.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns[i] = &dns.Conn{Conn: c}
		m := new(dns.Msg)
		m.SetAxfr("ringlb.test.")
		if err := conns[i].WriteMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	// Each connection's first message: the transfer's first, or a refusal.
	started, refused := 0, 0
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		m, err := c.ReadMsg()
		switch {
		case err != nil:
			t.Fatalf("transfer %d: %v", i, err)
		case m.Rcode == dns.RcodeSuccess && len(m.Answer) > 0:
			started++
		case m.Rcode == dns.RcodeServerFailure:
			refused++
		default:
			t.Fatalf("transfer %d: %s", i, dns.RcodeToString[m.Rcode])
		}
	}
	t.Logf("%d transfers asked at once, none read: %d started, %d refused SERVFAIL", asked, started, refused)
	if started != maxTransfersOut || refused != asked-maxTransfersOut {
		t.Fatalf("%d started and %d refused, want %d and %d", started, refused, maxTransfersOut, asked-maxTransfersOut)
	}
	// The stalled ones end (their readers gone), and transfers run again.
	for _, c := range conns {
		c.Close()
	}
	waitFor(t, "a transfer runs again", func() bool {
		m := new(dns.Msg)
		m.SetAxfr("ringlb.test.")
		tr := &dns.Transfer{DialTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
		ch, err := tr.In(m, s.Addr())
		if err != nil {
			return false
		}
		n := 0
		for env := range ch {
			if env.Error != nil {
				return false
			}
			n += len(env.RR)
		}
		return n > 150000
	})
}
