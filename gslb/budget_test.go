package gslb

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// exchangeWire sends the packed query q to s over network with a real
// miekg/dns connection and returns the response exactly as it arrived (no
// TSIG verification: the tests check signatures themselves), or fails.
func exchangeWire(t *testing.T, s *Server, network string, q []byte) []byte {
	t.Helper()
	co, err := dns.DialTimeout(network, s.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()
	co.UDPSize = dns.MaxMsgSize // read the whole datagram, however big
	co.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := co.Write(q); err != nil {
		t.Fatal(err)
	}
	p, err := co.ReadMsgHeader(nil)
	if err != nil {
		t.Fatalf("%s: no answer: %v", network, err)
	}
	return p
}

// exchangeSized is exchangeWire for a message: the response unpacked and
// its size on the wire.
func exchangeSized(t *testing.T, s *Server, network string, q *dns.Msg) (*dns.Msg, int) {
	t.Helper()
	b, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	p := exchangeWire(t, s, network, b)
	m := new(dns.Msg)
	if err := m.Unpack(p); err != nil {
		t.Fatalf("answer does not unpack: %v", err)
	}
	return m, len(p)
}

func question(name string, qtype uint16, udpSize uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if udpSize > 0 {
		m.SetEdns0(udpSize, false)
	}
	return m
}

// A client cannot choose how big our UDP answers are: whatever EDNS buffer
// it advertises, an answer is at most 1232 bytes (DNS Flag Day 2020), 512
// without EDNS, and our OPT advertises 1232. Asked twice, so the second
// answer comes from the fast path's cache.
func TestUDPAnswerSizeCapped(t *testing.T) {
	s := startGSLB(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""))
	for _, tt := range []struct {
		name    string
		qtype   uint16
		udpSize uint16
		limit   int
	}{
		{"many.ringlb.test.", dns.TypeA, 4096, 1232},
		{"many.ringlb.test.", dns.TypeA, 65535, 1232},
		{"many.ringlb.test.", dns.TypeA, 800, 800},
		{"many.ringlb.test.", dns.TypeA, 0, 512},
		{"many.ringlb.test.", dns.TypeA, 100, 512}, // below 512 counts as 512 (RFC 6891)
		{"big.ringlb.test.", dns.TypeTXT, 4096, 1232},
		{"bigalias.ringlb.test.", dns.TypeTXT, 4096, 1232},
	} {
		t.Run(fmt.Sprintf("%s/%d", tt.name, tt.udpSize), func(t *testing.T) {
			for round := range 2 {
				q := question(tt.name, tt.qtype, tt.udpSize)
				qb, _ := q.Pack()
				m, n := exchangeSized(t, s, "udp", q)
				t.Logf("round %d: %d-byte query, %d-byte answer (%.1fx), TC %v, %d answers", round, len(qb), n, float64(n)/float64(len(qb)), m.Truncated, len(m.Answer))
				if n > tt.limit {
					t.Fatalf("round %d: %d-byte UDP answer to a client advertising %d, limit %d", round, n, tt.udpSize, tt.limit)
				}
				if opt := m.IsEdns0(); tt.udpSize > 0 && (opt == nil || opt.UDPSize() != 1232) {
					t.Fatalf("our OPT %v, want one advertising 1232", opt)
				}
			}
			// Over TCP the whole answer comes back.
			if m, _ := exchangeSized(t, s, "tcp", question(tt.name, tt.qtype, tt.udpSize)); m.Truncated || len(m.Answer) == 0 {
				t.Fatalf("TCP: TC %v, %d answers", m.Truncated, len(m.Answer))
			}
		})
	}
}

// rrsets counts the records of each RRset (owner, type; for RRSIGs, the
// type they cover too) in rrs.
func rrsets(rrs []dns.RR) map[string]int {
	out := map[string]int{}
	for _, rr := range rrs {
		h := rr.Header()
		key := strings.ToLower(h.Name) + "/" + dns.TypeToString[h.Rrtype]
		if sig, ok := rr.(*dns.RRSIG); ok {
			key += "/" + dns.TypeToString[sig.TypeCovered] // each set's signatures go with it
		}
		out[key]++
	}
	return out
}

// A truncated answer carries whole RRsets or none (RFC 2181 §9): for every
// buffer size, each RRset in a UDP answer is the full RRset that TCP gives,
// and TC is set exactly when an answer RRset had to be left out.
func TestTruncationKeepsWholeRRsets(t *testing.T) {
	s := startGSLB(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""))
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"big.ringlb.test.", dns.TypeTXT}, {"bigalias.ringlb.test.", dns.TypeTXT}, {"many.ringlb.test.", dns.TypeA}, {"www.ringlb.test.", dns.TypeA}} {
		full, _ := exchangeSized(t, s, "tcp", question(q.name, q.qtype, 0))
		want := rrsets(full.Answer)
		for _, size := range []uint16{0, 512, 600, 700, 800, 1000, 1232, 4096} {
			m, n := exchangeSized(t, s, "udp", question(q.name, q.qtype, size))
			got := rrsets(m.Answer)
			for set, count := range got {
				if count != want[set] {
					t.Errorf("%s buffer %d: RRset %s split: %d of %d records (TC %v, %d bytes)", q.name, size, set, count, want[set], m.Truncated, n)
				}
			}
			if missing := len(got) < len(want); missing != m.Truncated {
				t.Errorf("%s buffer %d: %d of %d RRsets, TC %v", q.name, size, len(got), len(want), m.Truncated)
			}
		}
	}
}

// gslb.max_udp_size sets the cap and what our OPT advertises; a reload
// changes both (and empties the fast path's cache, whose answers were cut
// to the old size).
func TestMaxUDPSizeConfigured(t *testing.T) {
	cfg := gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), "")
	cfg.MaxUDPSize = 512
	s := startGSLB(t, cfg)
	ask := func() (*dns.Msg, int) {
		t.Helper()
		return exchangeSized(t, s, "udp", question("big.ringlb.test.", dns.TypeTXT, 4096))
	}
	for range 2 {
		m, n := ask()
		if n > 512 || !m.Truncated || len(m.Answer) != 0 || m.IsEdns0().UDPSize() != 512 {
			t.Fatalf("max_udp_size 512: %d bytes, TC %v, %d answers, OPT says %d", n, m.Truncated, len(m.Answer), m.IsEdns0().UDPSize())
		}
	}
	cfg.MaxUDPSize = 4096
	if err := s.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		m, n := ask()
		if m.Truncated || len(m.Answer) != 6 || m.IsEdns0().UDPSize() != 4096 {
			t.Fatalf("after a reload to 4096: %d bytes, TC %v, %d answers, OPT says %d", n, m.Truncated, len(m.Answer), m.IsEdns0().UDPSize())
		}
	}
}

// fit's rules on messages built by hand: which section gives way first,
// when TC is set, and that the OPT and the TSIG always stay.
func TestFit(t *testing.T) {
	rr := func(s string) dns.RR {
		r, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	txt := func(name string, n int) []dns.RR {
		var out []dns.RR
		for i := range n {
			out = append(out, rr(fmt.Sprintf("%s 60 IN TXT \"%s%d\"", name, strings.Repeat("x", 90), i)))
		}
		return out
	}
	base := func() *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion("a.example.", dns.TypeTXT)
		m.Response = true
		return m
	}
	withOPT := func(m *dns.Msg) *dns.Msg { m.SetEdns0(1232, false); return m }
	for _, tt := range []struct {
		name                  string
		msg                   func() *dns.Msg
		size                  int
		answer, ns, extra, tc int // records left; tc 1 = set
	}{
		{"fits", func() *dns.Msg { m := base(); m.Answer = txt("a.example.", 3); return m }, 512, 3, 0, 0, 0},
		{"answer RRset too big", func() *dns.Msg { m := base(); m.Answer = txt("a.example.", 6); return m }, 512, 0, 0, 0, 1},
		{"second answer RRset goes, first stays", func() *dns.Msg {
			m := base()
			m.Answer = append([]dns.RR{rr("a.example. 60 IN CNAME b.example.")}, txt("b.example.", 6)...)
			return m
		}, 512, 1, 0, 0, 1},
		{"an additional RRset that does not fit is left out, a later one of its type kept", func() *dns.Msg {
			m := base()
			m.Answer = txt("a.example.", 2)
			m.Extra = append(txt("c.example.", 3), txt("d.example.", 1)...)
			return withOPT(m)
		}, 512, 2, 0, 2, 0},
		{"after an additional RRset left out, none of the next type", func() *dns.Msg {
			m := base()
			m.Answer = txt("a.example.", 2)
			m.Extra = append(txt("c.example.", 3), rr("e.example. 60 IN A 192.0.2.1"))
			return withOPT(m)
		}, 512, 2, 0, 1, 0},
		{"additional goes first, no TC", func() *dns.Msg {
			m := base()
			m.Answer = txt("a.example.", 2)
			m.Extra = txt("c.example.", 3)
			return withOPT(m)
		}, 512, 2, 0, 1, 0},
		{"authority goes before answer, with TC", func() *dns.Msg {
			m := base()
			m.Answer = txt("a.example.", 4)
			m.Ns = txt("example.", 2)
			return m
		}, 512, 4, 0, 0, 1},
		{"OPT stays when all else goes", func() *dns.Msg { m := base(); m.Answer = txt("a.example.", 9); return withOPT(m) }, 512, 0, 0, 1, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.msg()
			fit(m, tt.size)
			b, err := m.Pack()
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > tt.size || len(m.Answer) != tt.answer || len(m.Ns) != tt.ns || len(m.Extra) != tt.extra || m.Truncated != (tt.tc == 1) {
				t.Fatalf("%d bytes (budget %d), answer %d ns %d extra %d TC %v; want %d %d %d TC %v", len(b), tt.size, len(m.Answer), len(m.Ns), len(m.Extra), m.Truncated, tt.answer, tt.ns, tt.extra, tt.tc == 1)
			}
		})
	}
}
