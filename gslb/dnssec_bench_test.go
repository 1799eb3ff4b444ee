package gslb

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// BenchmarkSignedAnswer is the full answer path (what the UDP loop's cache
// of packed answers does not answer: ECS, TCP, a first query) for a query
// with DO, its signatures from the signature cache; beside it the same
// query without DO.
func BenchmarkSignedAnswer(b *testing.B) {
	ksk, zsk := testKeys(b)
	s, err := New(signed(fuzzConfig(b), ksk, zsk), "bench", nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	st := s.state.Load()
	remote := &net.UDPAddr{IP: net.ParseIP("10.1.2.3"), Port: 5353}
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"ide.ringlb.test.", dns.TypeA}, {"www.ringlb.test.", dns.TypeA}, {"nope.ringlb.test.", dns.TypeA},
		{"ringlb.test.", dns.TypeMX}, {"ringlb.test.", dns.TypeNS}} {
		for _, do := range []bool{false, true} {
			r := new(dns.Msg)
			r.SetQuestion(q.name, q.qtype)
			r.SetEdns0(1232, do)
			label := benchLabel(q.name, q.qtype)
			if do {
				label += "/do"
			}
			b.Run(label, func(b *testing.B) {
				b.ReportAllocs()
				buf := make([]byte, 0, 1232)
				for b.Loop() {
					m := s.answer(st, r, remote, false, nil)
					if _, err := m.PackBuffer(buf); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkSign is the cost of one fresh signature: an RRset never signed
// before (a changed managed answer, a new name's NSEC).
func BenchmarkSign(b *testing.B) {
	ksk, zsk := testKeys(b)
	sg, err := newSigner("ringlb.test.", configs.DefaultDNSSEC(ksk, zsk), configs.RateLimit{})
	if err != nil {
		b.Fatal(err)
	}
	a := &dns.A{Hdr: dns.RR_Header{Name: "ide.ringlb.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30}, A: net.IPv4(192, 0, 2, 1)}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		a.Hdr.Ttl = uint32(i) // a new RRset every time: never from the cache
		if _, err := sg.sigs([]dns.RR{a}, spendNone, netip.Addr{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFirstAnswerAfterFailover measures, over real UDP, the first
// answer to east's clients after east fails over to west and back — an
// answer nobody asked before, so (signed) one that needs a fresh signature:
// the signature cache is emptied before each failover, as if the answer
// had never been seen. It reports the median and the 99th percentile, with
// and without DO.
func BenchmarkFirstAnswerAfterFailover(b *testing.B) {
	ksk, zsk := testKeys(b)
	for _, do := range []bool{false, true} {
		name := "unsigned"
		if do {
			name = "signed"
		}
		b.Run(name, func(b *testing.B) {
			cfg := signed(fuzzConfig(b), ksk, zsk)
			// Unbounded, to measure what a first answer costs: at the
			// default budget (2000 a second) most would go out TC.
			cfg.Zones[0].DNSSEC.SignaturesPerSecond = 1_000_000
			s, err := New(cfg, "bench", nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Start(b.Context()); err != nil {
				b.Fatal(err)
			}
			defer s.Shutdown(b.Context())
			c, err := net.Dial("udp", s.Addr())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			q := question("ide.ringlb.test.", dns.TypeA, 1232)
			q.IsEdns0().SetDo(do)
			pkt, _ := q.Pack()
			buf := make([]byte, 2048)
			st := s.state.Load()
			sg := st.zones[0].signer
			mode := []string{configs.ServeRemove, ""}
			var took []time.Duration
			i := 0
			for b.Loop() {
				sg.cache.clear()
				// east's member out (east's clients get west's), or back in.
				if err := st.pools.setOverride("ide.ringlb.test.", "east", "bal-1", mode[i%2]); err != nil {
					b.Fatal(err)
				}
				i++
				start := time.Now()
				c.SetDeadline(start.Add(5 * time.Second))
				if _, err := c.Write(pkt); err != nil {
					b.Fatal(err)
				}
				n, err := c.Read(buf)
				if err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(start))
				m := new(dns.Msg)
				if err := m.Unpack(buf[:n]); err != nil || len(m.Answer) == 0 {
					b.Fatalf("answer %v: %v", m, err)
				}
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(took[len(took)*99/100].Microseconds()), "p99-µs")
		})
	}
}
