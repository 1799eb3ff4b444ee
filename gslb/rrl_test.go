package gslb

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

func TestRateLimiterDecide(t *testing.T) {
	slip := 2
	rl := newRateLimiter(configs.RateLimit{ResponsesPerSecond: new(4), Slip: &slip, IPv4Prefix: 24, IPv6Prefix: 56}, nil)
	now := time.Now()
	a, sameNet, other := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.200"), netip.MustParseAddr("198.51.100.1")
	var got []rrlAction
	for i := range 8 {
		c := a
		if i%2 == 1 {
			c = sameNet // one /24: one budget
		}
		got = append(got, rl.decide(c, now))
	}
	want := []rrlAction{rrlAllow, rrlAllow, rrlAllow, rrlAllow, rrlDrop, rrlSlip, rrlDrop, rrlSlip}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("decisions %v, want %v", got, want)
		}
	}
	if d := rl.decide(other, now); d != rrlAllow {
		t.Errorf("another /24 limited too: %v", d)
	}
	if d := rl.decide(netip.MustParseAddr("::ffff:192.0.2.9"), now); d == rrlAllow {
		t.Error("an IPv4-mapped address escapes its /24's limit")
	}
	// A quarter second later one token is back.
	later := now.Add(250 * time.Millisecond)
	if d := rl.decide(a, later); d != rrlAllow {
		t.Errorf("after refill: %v", d)
	}
	if d := rl.decide(a, later); d == rrlAllow {
		t.Error("refilled more than the elapsed time allows")
	}
	// IPv6 clients are grouped by /56.
	v6a, v6b, v6c := netip.MustParseAddr("2001:db8:0:ff::1"), netip.MustParseAddr("2001:db8:0:1::2"), netip.MustParseAddr("2001:db8:0:100::1")
	for range 4 {
		rl.decide(v6a, now)
	}
	if d := rl.decide(v6b, now); d == rrlAllow {
		t.Error("same /56 not limited")
	}
	if d := rl.decide(v6c, now); d != rrlAllow {
		t.Errorf("another /56 limited: %v", d)
	}
	if off := newRateLimiter(configs.RateLimit{ResponsesPerSecond: new(0)}, nil); off != nil {
		t.Error("rate limiter on with responses_per_second 0")
	}
}

func TestTruncatedReply(t *testing.T) {
	m := new(dns.Msg)
	m.SetQuestion("Ide.RinglB.test.", dns.TypeA)
	m.RecursionDesired = true
	// AD in a query asks whether the answer would be authenticated; a reply
	// with no records authenticates nothing (RFC 6840 section 5.8). CD is
	// cleared, as an authoritative server does (RFC 4035 section 3.1.6).
	m.AuthenticatedData, m.CheckingDisabled = true, true
	m.SetEdns0(1232, false)
	pkt, _ := m.Pack()
	out, _, ok := truncatedReply(nil, pkt)
	if !ok {
		t.Fatal("no slip reply")
	}
	r := new(dns.Msg)
	if err := r.Unpack(out); err != nil {
		t.Fatal(err)
	}
	if !r.Response || !r.Truncated || !r.Authoritative || r.Id != m.Id || !r.RecursionDesired || r.RecursionAvailable ||
		len(r.Question) != 1 || r.Question[0].Name != "Ide.RinglB.test." || len(r.Answer)+len(r.Ns)+len(r.Extra) != 0 {
		t.Fatalf("slip reply %v", r)
	}
	if r.AuthenticatedData || r.CheckingDisabled || r.Zero {
		t.Errorf("slip reply AD %v, CD %v, Z %v (want all false)", r.AuthenticatedData, r.CheckingDisabled, r.Zero)
	}
	for _, bad := range [][]byte{nil, pkt[:11], pkt[:14], {0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1}} {
		if _, _, ok := truncatedReply(nil, bad); ok {
			t.Errorf("slip reply to %v", bad)
		}
	}
}

// A config that says nothing of rate limiting limits: a spoofed flood of
// queries is not reflected whole at the address it names. Before RRL was
// on by default, nothing was slipped or dropped.
func TestRateLimitOnByDefault(t *testing.T) {
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	s := startGSLB(t, parseGSLBYAML(t, gslbYAML("", "", east.addr(), west.addr())))
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s.Addr())))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const sent = 2000
	q := new(dns.Msg)
	q.SetQuestion("www.ringlb.test.", dns.TypeA)
	b, _ := q.Pack()
	for range sent {
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	// The client's socket drops what overflows its buffer, so the server
	// says what it did; the client reads until nothing more comes.
	buf := make([]byte, 2048)
	got := 0
	for {
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(buf); err != nil {
			break
		}
		got++
	}
	drops, slips := int(rrlCount(t, s, "drop")), int(rrlCount(t, s, "slip"))
	t.Logf("%d queries at once from one address, no rate_limit in the config: of those that reached it, the server slipped %d (TC) and dropped %d; the client read %d answers",
		sent, slips, drops, got)
	if drops == 0 || slips == 0 || drops+slips >= sent {
		t.Errorf("dropped %d, slipped %d of %d: not rate-limited by default", drops, slips, sent)
	}
}

// Over the limit, UDP answers stop (some slipped as TC), TCP still answers.
func TestRateLimitOverUDP(t *testing.T) {
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	cfg := gslbConfig(t, east, west, "")
	cfg.RateLimit.ResponsesPerSecond = new(5)
	cfg.RateLimit.IPv4Prefix = 32 // so that 127.0.0.2 is another client prefix
	s := startGSLB(t, cfg)
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s.Addr())))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const sent = 60
	for i := range sent {
		m := new(dns.Msg)
		m.SetQuestion("www.ringlb.test.", dns.TypeA)
		m.Id = uint16(i + 1)
		b, _ := m.Pack()
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	// The server has decided every query (answers are counted before they
	// are written) before the client counts what came: a quiet second
	// ends the count, and a server that had not yet got to the rest (a
	// busy machine, the race detector) made them look dropped.
	waitFor(t, "every query answered, slipped or dropped", func() bool {
		return counterValue(t, s, "ringlb_gslb_queries_total", "qtype", "A")+rrlCount(t, s, "drop")+rrlCount(t, s, "slip") >= sent
	})
	answered, slipped := 0, 0
	buf := make([]byte, 2048)
	for {
		// Responses already queued arrive at once; the deadline only ends
		// the count once no more come.
		c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		if err != nil {
			break
		}
		r := new(dns.Msg)
		if err := r.Unpack(buf[:n]); err != nil {
			t.Fatal(err)
		}
		if r.Truncated && len(r.Answer) == 0 {
			slipped++
		} else if len(r.Answer) == 1 {
			answered++
		}
	}
	t.Logf("%d queries at once: %d answered, %d slipped (TC), %d dropped", sent, answered, slipped, sent-answered-slipped)
	if answered == 0 || answered >= sent/2 || slipped == 0 || answered+slipped >= sent {
		t.Fatalf("%d answered, %d slipped of %d: not limited to 5/s with slip 2", answered, slipped, sent)
	}
	drops, slips := rrlCount(t, s, "drop"), rrlCount(t, s, "slip")
	if int(drops) != sent-answered-slipped || int(slips) != slipped {
		t.Errorf("ringlb_gslb_rrl_total drop %v slip %v, client saw %d dropped, %d slipped", drops, slips, sent-answered-slipped, slipped)
	}
	// TCP is never limited: the retry a slipped client makes gets through.
	for range 10 {
		if m := query(t, s, "tcp", "www.ringlb.test.", dns.TypeA, nil); len(m.Answer) != 1 {
			t.Fatalf("TCP limited: %v", m)
		}
	}
	// Another prefix has its own budget, untouched by the flood.
	for range 5 {
		if m := queryFrom(t, s, "udp", "127.0.0.2", "www.ringlb.test.", dns.TypeA, nil); len(m.Answer) != 1 || m.Truncated {
			t.Fatalf("127.0.0.2 limited by 127.0.0.1's flood: %v", m)
		}
	}
}

// rrlCount reads ringlb_gslb_rrl_total{action} from s's registry.
func rrlCount(t *testing.T, s *Server, action string) float64 {
	t.Helper()
	return counterValue(t, s, "ringlb_gslb_rrl_total", "action", action)
}

// counterValue reads the counter or gauge name{label=value} from s's
// registry (0 when absent).
func counterValue(t *testing.T, s *Server, name, label, value string) float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					if g := m.GetGauge(); g != nil {
						return g.GetValue()
					}
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// A flood of one-off prefixes churns through the fixed table without
// handing the busy prefix (the reflection victim) a fresh budget.
func TestRateLimiterKeepsBusyPrefix(t *testing.T) {
	slip := 0
	rl := newRateLimiter(configs.RateLimit{ResponsesPerSecond: new(4), Slip: &slip, IPv4Prefix: 24, IPv6Prefix: 56}, nil)
	now := time.Now()
	victim := netip.MustParseAddr("192.0.2.1")
	for range 4 {
		rl.decide(victim, now)
	}
	allowed := 0
	for i := range 200_000 {
		// Nanoseconds apart: the victim earns 0.0016 tokens in all. The
		// victim asks a nanosecond after each newcomer: asked at the same
		// nanosecond, its bucket and the last newcomer's were as recent,
		// both busy by the table's rule, and the next newcomer whose two
		// candidates they were could take the victim's (the seed decides:
		// 1 run in a few dozen).
		at := now.Add(time.Duration(2 * i))
		other := netip.AddrFrom4([4]byte{byte(11 + i>>16), byte(i >> 8), byte(i), 1}) // one /24 each
		if rl.decide(other, at) != rrlAllow {
			t.Fatalf("a first response to %s limited", other)
		}
		if rl.decide(victim, at.Add(1)) == rrlAllow {
			allowed++
		}
	}
	if allowed > 0 {
		t.Errorf("the victim's prefix got %d fresh responses while others churned the table", allowed)
	}
}

// BenchmarkRateLimiterDecide is RRL's cost per UDP response.
func BenchmarkRateLimiterDecide(b *testing.B) {
	slip := 2
	rl := newRateLimiter(configs.RateLimit{ResponsesPerSecond: new(1_000_000_000), Slip: &slip, IPv4Prefix: 24, IPv6Prefix: 56}, nil)
	client, now := netip.MustParseAddr("192.0.2.1"), time.Now()
	b.ReportAllocs()
	for b.Loop() {
		rl.decide(client, now)
	}
}
