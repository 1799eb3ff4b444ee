package acceptguard

import (
	"bufio"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestClientNetwork(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7":               "192.0.2.7",
		"::ffff:192.0.2.7":        "192.0.2.7",
		"2001:db8:1:2:3:4:5:6":    "2001:db8:1:2::",
		"2001:db8:1:2:ffff::1":    "2001:db8:1:2::",
		"2001:db8:1:3::1":         "2001:db8:1:3::",
		"::1":                     "::",
		"fe80::1%eth0":            "fe80::",
		"2001:db8:ffff:ffff:1::9": "2001:db8:ffff:ffff::",
	} {
		if got := ClientNetwork(netip.MustParseAddr(in)).String(); got != want {
			t.Errorf("ClientNetwork(%s) = %s, want %s", in, got, want)
		}
	}
}

// A host holds a whole IPv6 /64: its addresses share one client's cap.
func TestPerAddrKeying(t *testing.T) {
	now := time.Unix(1000, 0)
	a1, a2 := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	other := netip.MustParseAddr("2001:db8:0:1::1")

	p := NewPerAddr(PerAddrLimits{MaxConns: 2})
	s1, v1 := p.Admit(a1, now)
	s2, v2 := p.Admit(a2, now)
	_, v3 := p.Admit(a1, now)
	_, v4 := p.Admit(other, now)
	if v1 != Admitted || v2 != Admitted || v3 != TooManyOpen || v4 != Admitted {
		t.Fatalf("by network: %v %v %v %v, want the /64's third connection refused, another /64 admitted", v1, v2, v3, v4)
	}
	p.Release(s1)
	if _, v := p.Admit(a2, now); v != Admitted {
		t.Fatalf("after a release: %v", v)
	}
	p.Release(s2)

	q := NewPerAddr(PerAddrLimits{MaxConns: 1})
	_, v1 = q.Admit(netip.MustParseAddr("::ffff:"+"192.0.2.1"), now)
	_, v2 = q.Admit(netip.MustParseAddr("192.0.2.1"), now)
	if v1 != Admitted || v2 != TooManyOpen {
		t.Fatalf("%v %v, want a 4-in-6 address counted as its IPv4 one", v1, v2)
	}
}

func TestPerAddrRate(t *testing.T) {
	// Release refills with the clock: real times.
	now := time.Now()
	a := netip.MustParseAddr("192.0.2.1")
	p := NewPerAddr(PerAddrLimits{NewPerSecond: 1, NewBurst: 2})
	var got []Verdict
	for range 3 {
		s, v := p.Admit(a, now)
		got = append(got, v)
		p.Release(s)
	}
	_, later := p.Admit(a, now.Add(2*time.Second))
	if got[0] != Admitted || got[1] != Admitted || got[2] != TooManyNew || later != Admitted {
		t.Fatalf("burst 2 at 1/s: %v then %v two seconds later", got, later)
	}
}

// Every limit off: nothing is kept, a Slot holds nothing.
func TestPerAddrOff(t *testing.T) {
	p := NewPerAddr(PerAddrLimits{})
	for range 3 {
		if _, v := p.Admit(netip.MustParseAddr("192.0.2.1"), time.Now()); v != Admitted {
			t.Fatal(v)
		}
	}
	p.Release(p.Hold(netip.MustParseAddr("192.0.2.1")))
	if p.Clients() != 0 {
		t.Fatalf("%d clients kept with no limit", p.Clients())
	}
}

// A client that spent a token and never came back was kept for ever (its
// bucket refilled only when it came back): one entry per address that ever
// connected. Admit forgets them once their bucket has refilled.
func TestPerAddrForgetsClientsGone(t *testing.T) {
	t0 := time.Now() // Release refills with the clock
	p := NewPerAddr(PerAddrLimits{MaxConns: 10, NewPerSecond: 10, NewBurst: 20})
	const clients = 1000
	for i := range clients {
		s, v := p.Admit(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), t0)
		if v != Admitted {
			t.Fatal(v)
		}
		p.Release(s)
	}
	before := p.Clients()
	// A full bucket takes 2 s; the sweep runs every sweepEvery.
	s, _ := p.Admit(netip.MustParseAddr("192.0.2.1"), t0.Add(sweepEvery+time.Second))
	t.Logf("%d clients that opened and closed one connection each: %d kept, %d after the sweep", clients, before, p.Clients())
	if p.Clients() != 1 {
		t.Fatalf("%d clients kept after their buckets refilled, want only the one holding a connection", p.Clients())
	}
	p.Release(s)
}

func TestMaxConnsPerIP(t *testing.T) {
	var refused, refusedIP counter
	var logs logLines
	g := Wrap(listen(t), Config{Name: "test", Logger: logs.logger(), MaxConns: 10, Refused: &refused,
		MaxConnsPerIP: 2, RefusedPerIP: &refusedIP,
		RefusalPerIP: HTTPAnswer(http.StatusTooManyRequests, "too many connections from your address"), LogEvery: time.Hour})
	defer g.Close()
	next := acceptNext(t, g)
	from := func(src string) net.Conn {
		t.Helper()
		d := net.Dialer{Timeout: testWait, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", g.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(testWait))
		return c
	}
	refusedAt := func(c net.Conn) bool {
		t.Helper()
		line, _ := bufio.NewReader(c).ReadString('\n')
		return strings.HasPrefix(line, "HTTP/1.1 429 ")
	}
	from("127.0.0.2")
	from("127.0.0.2")
	held := []net.Conn{next(), next()}
	for i := range 3 {
		if !refusedAt(from("127.0.0.2")) {
			t.Fatalf("127.0.0.2's connection %d beyond its share was not refused", i+3)
		}
	}
	from("127.0.0.3")
	next()
	if refusedIP.value() != 3 || refused.value() != 0 || g.Open() != 3 {
		t.Errorf("refused per address %d, at the total %d, open %d; want 3, 0, 3", refusedIP.value(), refused.value(), g.Open())
	}
	if n := logs.count(msgRefusedPerIP); n != 1 {
		t.Errorf("%d refusal lines for 3 refusals within LogEvery, want 1", n)
	}

	// Closing one (twice: the slot is freed once) makes room for one.
	held[0].Close()
	held[0].Close()
	from("127.0.0.2")
	next()
	if !refusedAt(from("127.0.0.2")) {
		t.Fatal("beyond the share again: not refused")
	}

	// SetMaxPerIP(0) lifts the share for the next connections.
	g.SetMaxPerIP(0)
	from("127.0.0.2")
	next()
	if g.Open() != 4 {
		t.Errorf("open %d without a share, want 4", g.Open())
	}
}

// Admit and Release of a client already kept (it holds a connection): the
// accept path, no allocation.
func BenchmarkPerAddrAdmitRelease(b *testing.B) {
	p := NewPerAddr(PerAddrLimits{MaxConns: 1 << 20, NewPerSecond: 1e9, NewBurst: 1 << 20})
	a := netip.MustParseAddr("2001:db8::1")
	held, _ := p.Admit(a, time.Now())
	defer p.Release(held)
	b.ReportAllocs()
	for b.Loop() {
		s, _ := p.Admit(a, time.Now())
		p.Release(s)
	}
}
