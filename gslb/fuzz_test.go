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
