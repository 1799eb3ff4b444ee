package gslb

import (
	"net"
	"testing"

	"github.com/miekg/dns"
)

// FuzzAnswer feeds arbitrary packets to the query path: whatever unpacks as
// a message must get an answer that packs, or none, and never a panic.
func FuzzAnswer(f *testing.F) {
	for _, q := range []struct {
		name  string
		qtype uint16
		edns  bool
	}{{"ide.ringlb.test.", dns.TypeA, true}, {"www.ringlb.test.", dns.TypeANY, false}, {"alias2.ringlb.test.", dns.TypeA, false},
		{"x.wild.ringlb.test.", dns.TypeTXT, true}, {"big.ringlb.test.", dns.TypeTXT, false}, {"example.com.", dns.TypeNS, false}} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		if q.edns {
			ecs(("10.2.3.4"), 24)(m)
		}
		b, _ := m.Pack()
		f.Add(b)
	}
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1})
	s, err := New(fuzzConfig(f), "fuzz", nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	st := s.state.Load()
	remote := &net.UDPAddr{IP: net.ParseIP("10.1.2.3"), Port: 5353}
	f.Fuzz(func(t *testing.T, packet []byte) {
		r := new(dns.Msg)
		if r.Unpack(packet) != nil {
			return
		}
		for _, tcp := range []bool{false, true} {
			if m := s.answer(st, r, remote, tcp); m != nil {
				if _, err := m.Pack(); err != nil {
					t.Fatalf("answer does not pack: %v\n%v", err, m)
				}
			}
		}
	})
}

// FuzzParseQuery: the fast path's own parser never panics, and what it
// accepts miekg/dns reads as the same single question.
func FuzzParseQuery(f *testing.F) {
	for _, name := range []string{"ide.ringlb.test.", "WwW.RiNgLb.TeSt.", "."} {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		b, _ := m.Pack()
		f.Add(b)
		m.SetEdns0(1232, true)
		b, _ = m.Pack()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		q, ok := parseQuery(p)
		if !ok {
			return
		}
		m := new(dns.Msg)
		if err := m.Unpack(p); err != nil {
			return // the full path answers FORMERR for these
		}
		if len(m.Question) != 1 || m.Question[0].Qtype != q.qtype || m.Question[0].Qclass != q.qclass {
			t.Fatalf("parseQuery %+v, miekg %v", q, m.Question)
		}
	})
}
