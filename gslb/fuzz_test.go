package gslb

import (
	"net"
	"testing"
	"time"

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
			if m := s.answer(st, r, remote, tcp, nil); m != nil {
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

// FuzzUDPHandle feeds arbitrary packets to the whole UDP path as a socket
// hands them over: rate limiting, the fast path and its cache, the full path
// and FORMERR for what does not unpack. It must never panic, and whatever it
// sends must be a response that unpacks.
func FuzzUDPHandle(f *testing.F) {
	for _, q := range []struct {
		name  string
		qtype uint16
		edit  func(*dns.Msg)
	}{
		{"ide.ringlb.test.", dns.TypeA, nil},
		{"IDE.ringlb.test.", dns.TypeA, func(m *dns.Msg) { m.SetEdns0(1232, true) }},
		{"ide.ringlb.test.", dns.TypeA, ecs("10.2.3.4", 24)},
		{"big.ringlb.test.", dns.TypeTXT, nil},
		{"ringlb.test.", dns.TypeAXFR, nil},
		{"www.ringlb.test.", dns.TypeA, func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }},
	} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		if q.edit != nil {
			q.edit(m)
		}
		b, _ := m.Pack()
		f.Add(b)
	}
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	cfg := fuzzConfig(f)
	cfg.RateLimit.ResponsesPerSecond = 1000
	s, err := New(cfg, "fuzz", nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		f.Fatal(err)
	}
	defer conn.Close()
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		f.Fatal(err)
	}
	defer sink.Close()
	to := sink.LocalAddr().(*net.UDPAddr).AddrPort()
	l := &udpLoop{s: s, conn: conn, cache: map[string][]byte{}, key: make([]byte, 0, 512), out: make([]byte, 0, 4096)}
	buf := make([]byte, 65536)
	f.Fuzz(func(t *testing.T, packet []byte) {
		l.handle(packet, to)
		l.handle(packet, to) // again: a cache hit when cacheable
		for range 2 {
			sink.SetReadDeadline(time.Now().Add(time.Millisecond))
			n, _, err := sink.ReadFromUDPAddrPort(buf)
			if err != nil {
				return // nothing sent: allowed
			}
			m := new(dns.Msg)
			if err := m.Unpack(buf[:n]); err != nil || !m.Response {
				t.Fatalf("sent %x that is not a DNS response: %v", buf[:n], err)
			}
		}
	})
}
