package gslb

import (
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// hostileSeeds are queries that take the refusal paths: bad and good
// TSIGs, malformed EDNS, other opcodes, a big RRset for small buffers, and
// the hand-built malformedSeeds.
func hostileSeeds(tb testing.TB) [][]byte {
	var out [][]byte
	add := func(m *dns.Msg) {
		b, err := m.Pack()
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, b)
	}
	signed := func(key, secret string, edns bool) {
		m := new(dns.Msg)
		m.SetQuestion("www.ringlb.test.", dns.TypeA)
		if edns {
			m.SetEdns0(4096, false)
		}
		m.SetTsig(key, dns.HmacSHA256, 300, time.Now().Unix())
		b, _, err := dns.TsigGenerate(m, secret, "", false)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, b)
	}
	signed("xfr.ringlb.test.", testTSIGSecret, false)
	signed("xfr.ringlb.test.", testTSIGSecret, true)
	signed("other.ringlb.test.", testTSIGSecret, false)
	signed("xfr.ringlb.test.", "d3Jvbmc=", true)
	for _, edit := range []func(*dns.Msg){
		func(m *dns.Msg) { m.Extra = []dns.RR{optRR(".", 1232), optRR(".", 4096)} },
		func(m *dns.Msg) { m.Answer = []dns.RR{optRR(".", 1232)} },
		func(m *dns.Msg) { m.Extra = []dns.RR{optRR("www.ringlb.test.", 1232)} },
		func(m *dns.Msg) { m.SetEdns0(1232, false); m.IsEdns0().SetVersion(1) },
		func(m *dns.Msg) { m.Opcode = dns.OpcodeUpdate },
		func(m *dns.Msg) { m.Opcode = 15; m.SetEdns0(512, false) },
		func(m *dns.Msg) {
			m.Question[0] = dns.Question{Name: "many.ringlb.test.", Qtype: dns.TypeA, Qclass: dns.ClassINET}
			m.SetEdns0(4096, false)
		},
		func(m *dns.Msg) {
			m.Question[0] = dns.Question{Name: "bigalias.ringlb.test.", Qtype: dns.TypeTXT, Qclass: dns.ClassINET}
		},
		// Type RRSIG, refused in a signed zone; names outside the zone and
		// a class but IN, which RRL slips refuse too.
		func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeRRSIG; m.SetEdns0(1232, true) },
		func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeRRSIG },
		func(m *dns.Msg) { m.Question[0].Name = "xringlb.test." },
		func(m *dns.Msg) { m.Question[0].Name = "test." },
		func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS },
		// Client Subnet addresses of the wrong length for their prefix.
		rawECS(1, 24, 10, 2, 9, 0),
		rawECS(1, 24, 10, 2),
		rawECS(2, 56, 0x20, 0x01, 0x0d, 0xb8, 0, 0),
		rawECS(0, 0),
		rawECS(1, 22, 10, 2, 9),
	} {
		m := new(dns.Msg)
		m.SetQuestion("www.ringlb.test.", dns.TypeA)
		edit(m)
		add(m)
	}
	for _, p := range malformedSeeds() {
		out = append(out, p.b)
	}
	return out
}

// fuzzTSIGConfig is fuzzConfig with the zone's TSIG key, so that signed
// queries reach the verification and signing paths.
func fuzzTSIGConfig(tb testing.TB) configs.GSLB {
	cfg := fuzzConfig(tb)
	cfg.Zones = append([]configs.Zone(nil), cfg.Zones...)
	cfg.Zones[0].Transfer.TSIG = tsigConfig(tb)
	return cfg
}

// FuzzAnswer feeds arbitrary packets to the query path (the zone signed, so
// queries with DO are signed too): whatever unpacks as
// a message must get an answer that packs (signed when it carries a TSIG)
// into bytes a client can unpack, or none, and never a panic; over UDP the answer fits the client's budget,
// and every RRset in it is whole (as in the TCP answer to the same query).
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
	// With DO: the zone is signed, so these take the signing path.
	// The last one is 255 octets long, the most a name may be: its compact
	// NSEC's next name must be no longer.
	a63 := strings.Repeat("a", 63) + "."
	for _, q := range []string{"ide.ringlb.test.", "nope.ringlb.test.", "bigalias.ringlb.test.", "ringlb.test.", a63 + a63 + a63 + strings.Repeat("a", 49) + ".ringlb.test."} {
		m := new(dns.Msg)
		m.SetQuestion(q, dns.TypeTXT)
		m.SetEdns0(512, true)
		b, _ := m.Pack()
		f.Add(b)
	}
	// Answers with additional records (the MX and NS targets' addresses),
	// signed and not, and an SRV to the managed name (none).
	for _, q := range []struct {
		name  string
		qtype uint16
		do    bool
	}{{"ringlb.test.", dns.TypeMX, true}, {"ringlb.test.", dns.TypeNS, false}, {"_ide._tcp.ringlb.test.", dns.TypeSRV, true}} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		m.SetEdns0(512, q.do)
		b, _ := m.Pack()
		f.Add(b)
	}
	// Below a DNAME (fuzzServer's): synthesised, chased, out of the zone,
	// to the managed name, a loop, past 255 octets; with DO and without.
	for _, q := range []struct {
		name  string
		qtype uint16
		do    bool
	}{{"deep.dn.ringlb.test.", dns.TypeTXT, true}, {"nope.dn.ringlb.test.", dns.TypeA, true}, {"a.dn-out.ringlb.test.", dns.TypeA, false},
		{"ide.dn-apex.ringlb.test.", dns.TypeA, false}, {"mail.dn-apex.ringlb.test.", dns.TypeMX, true}, {"a.dn-self.ringlb.test.", dns.TypeA, true},
		{"deep.dn.ringlb.test.", dns.TypeCNAME, false}, {"deep.dn.ringlb.test.", dns.TypeANY, true}, {"dn.ringlb.test.", dns.TypeDNAME, true},
		{a63 + a63 + a63 + strings.Repeat("a", 40) + ".dn-self.ringlb.test.", dns.TypeA, true}} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		m.SetEdns0(1232, q.do)
		b, _ := m.Pack()
		f.Add(b)
	}
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1})
	for _, b := range hostileSeeds(f) {
		f.Add(b)
	}
	s, st, remote := fuzzServer(f)
	f.Fuzz(func(t *testing.T, packet []byte) {
		r := new(dns.Msg)
		if r.Unpack(packet) != nil {
			return
		}
		var status error
		if r.IsTsig() != nil {
			status = s.verifyTSIG(packet)
		}
		var answers [2]*dns.Msg
		for i, tcp := range []bool{false, true} {
			m := s.answer(st, r, remote, tcp, status)
			if m == nil {
				continue
			}
			answers[i] = m.Copy()
			var b []byte
			var err error
			if m.IsTsig() != nil {
				b, _, err = dns.TsigGenerateWithProvider(m, tsigProvider{s}, r.IsTsig().MAC, false)
			} else {
				b, err = m.Pack()
			}
			if err != nil {
				t.Fatalf("answer does not pack: %v\n%v", err, m)
			}
			if err := new(dns.Msg).Unpack(b); err != nil {
				t.Fatalf("answer packs as %x, which does not unpack: %v", b, err)
			}
			if opt := r.IsEdns0(); !tcp {
				limit := st.udpLimit(false, 0)
				if opt != nil {
					limit = st.udpLimit(true, opt.UDPSize())
				}
				if len(b) > limit {
					t.Fatalf("%d-byte UDP answer, budget %d\n%v", len(b), limit, m)
				}
			}
		}
		if answers[0] == nil || answers[1] == nil {
			return
		}
		full := rrsets(answers[1].Answer)
		for set, n := range rrsets(answers[0].Answer) {
			if n != full[set] {
				t.Fatalf("UDP answer has %d of the %d records of %s\n%v", n, full[set], set, answers[0])
			}
		}
		// Additional RRsets are left out whole, or kept whole.
		fullExtra := rrsets(answers[1].Extra)
		for set, n := range rrsets(answers[0].Extra) {
			if n != fullExtra[set] {
				t.Fatalf("UDP answer has %d of the %d additional records of %s\n%v", n, fullExtra[set], set, answers[0])
			}
		}
	})
}

// FuzzSlip feeds arbitrary packets to what an RRL slip is made of: the
// slip (header and question, the rcode and AA the answer would have), the
// look for a TSIG, the signed slip, and the look for a malformed Client
// Subnet option. None may panic; a slip must unpack as a truncated response
// with the query's question and no records; a query the full path refuses
// (REFUSED) gets a slip that refuses it, and only such a query; and a slip
// for an answer that succeeds claims authority as that answer does (a
// referral none).
func FuzzSlip(f *testing.F) {
	for _, b := range hostileSeeds(f) {
		f.Add(b)
	}
	for _, name := range []string{"www.ringlb.test.", "WWW.RingLB.Test.", "ringlb.test.", "example.org.", ".", "host.Deleg.ringlb.test."} {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		b, _ := m.Pack()
		f.Add(b)
	}
	m := new(dns.Msg)
	m.SetQuestion("deleg.ringlb.test.", dns.TypeDS)
	b, _ := m.Pack()
	f.Add(b)
	s, st, remote := fuzzServer(f)
	f.Fuzz(func(t *testing.T, packet []byte) {
		rawFaults(packet)
		slip, tsig, ok := st.slipReply(nil, packet)
		if !ok {
			return
		}
		if tsig {
			if b := s.signedSlip(st, packet, slip); b != nil {
				if err := new(dns.Msg).Unpack(b); err != nil {
					t.Fatalf("signed slip %x does not unpack: %v", b, err)
				}
			}
		}
		m := new(dns.Msg)
		if err := m.Unpack(slip); err != nil || !m.Response || !m.Truncated || len(m.Question) != 1 || len(m.Answer)+len(m.Ns) != 0 || len(m.Extra) > 1 || len(m.Extra) == 1 && m.IsEdns0() == nil {
			t.Fatalf("slip %x: %v\n%v", slip, err, m)
		}
		r := new(dns.Msg)
		if r.Unpack(packet) != nil || len(r.Question) != 1 || r.IsTsig() != nil || malformed(r) != "" || r.Opcode != dns.OpcodeQuery || r.Response {
			return
		}
		if (r.IsEdns0() != nil) != (m.IsEdns0() != nil) {
			t.Fatalf("the query's OPT %v, the slip's %v", r.IsEdns0(), m.IsEdns0())
		}
		if opt := r.IsEdns0(); opt != nil && opt.Version() != 0 {
			if m.Rcode != dns.RcodeBadVers {
				t.Fatalf("slip to EDNS version %d: %s, want BADVERS", opt.Version(), dns.RcodeToString[m.Rcode])
			}
			return
		}
		if opt := r.IsEdns0(); opt != nil && opt.Do() != m.IsEdns0().Do() {
			t.Fatalf("slip's DO %v, the query's %v", m.IsEdns0().Do(), opt.Do())
		}
		if m.Question[0] != r.Question[0] {
			t.Fatalf("slip's question %v, the query's %v", m.Question[0], r.Question[0])
		}
		full := s.answer(st, r, remote, false, nil)
		if full == nil {
			return
		}
		if (full.Rcode == dns.RcodeRefused) != (m.Rcode == dns.RcodeRefused) || (m.Rcode == dns.RcodeRefused && m.Authoritative) ||
			full.Rcode == dns.RcodeSuccess && m.Rcode == dns.RcodeSuccess && full.Authoritative != m.Authoritative {
			t.Fatalf("slip %s AA %v, the full answer %s AA %v\n%v", dns.RcodeToString[m.Rcode], m.Authoritative, dns.RcodeToString[full.Rcode], full.Authoritative, r)
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
	for _, b := range hostileSeeds(f) {
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
		// What the fast path takes, screen would pass: its cache never
		// holds an answer that skipped a refusal.
		if why := malformed(m); why != "" || m.IsTsig() != nil || m.Opcode != dns.OpcodeQuery || m.IsEdns0() != nil && m.IsEdns0().Version() != 0 {
			t.Fatalf("parseQuery took a query screen refuses (%s): %v", why, m)
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
	for _, b := range hostileSeeds(f) {
		f.Add(b)
	}
	cfg := fuzzTSIGConfig(f)
	cfg.RateLimit.ResponsesPerSecond = new(1000)
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
	l := newUDPLoop(s, conn, nil)
	buf := make([]byte, 65536)
	f.Fuzz(func(t *testing.T, packet []byte) {
		l.handle(packet, to)
		l.handle(packet, to) // again: a cache hit when cacheable
		// Read all that was sent before judging any of it: a packet left
		// in the sink would be blamed on the next input (and mislead the
		// minimizer).
		var sent [][]byte
		for range 2 {
			sink.SetReadDeadline(time.Now().Add(time.Millisecond))
			n, _, err := sink.ReadFromUDPAddrPort(buf)
			if err != nil {
				break // nothing (more) sent: allowed
			}
			sent = append(sent, append([]byte(nil), buf[:n]...))
		}
		for _, p := range sent {
			m := new(dns.Msg)
			if err := m.Unpack(p); err != nil || !m.Response {
				t.Fatalf("sent %x that is not a DNS response: %v", p, err)
			}
			if len(p) > cfg.MaxUDPSize {
				t.Fatalf("sent %d bytes, over max_udp_size %d", len(p), cfg.MaxUDPSize)
			}
		}
	})
}

// malformedSeeds are hand-built packets miekg/dns would not pack: a
// compression pointer to itself, two questions, Client Subnet options with
// impossible prefix lengths or families, an EDNS option longer than its
// record, names of the most labels and of one too many.
func malformedSeeds() []struct {
	name string
	b    []byte
} {
	header := func(qd, ar uint16) []byte {
		h := []byte{0x12, 0x34, 0, 0}
		for _, n := range []uint16{qd, 0, 0, ar} {
			h = binary.BigEndian.AppendUint16(h, n)
		}
		return h
	}
	www := []byte("\x03www\x06ringlb\x04test\x00\x00\x01\x00\x01")
	ide := []byte("\x03ide\x06ringlb\x04test\x00\x00\x01\x00\x01")
	opt := func(options ...[]byte) []byte {
		var rdata []byte
		for _, o := range options {
			rdata = append(rdata, o...)
		}
		b := []byte{0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0}
		b = binary.BigEndian.AppendUint16(b, uint16(len(rdata)))
		return append(b, rdata...)
	}
	ecs := func(family uint16, source, scope uint8, addr ...byte) []byte {
		b := binary.BigEndian.AppendUint16([]byte{0, 8}, uint16(4+len(addr)))
		b = binary.BigEndian.AppendUint16(b, family)
		return append(append(b, source, scope), addr...)
	}
	labels := func(n int) []byte {
		var b []byte
		for range n {
			b = append(b, 1, 'a')
		}
		return append(b, 0, 0, 1, 0, 1)
	}
	cat := func(bs ...[]byte) []byte {
		var out []byte
		for _, b := range bs {
			out = append(out, b...)
		}
		return out
	}
	return []struct {
		name string
		b    []byte
	}{
		{"pointer-loop", cat(header(1, 0), []byte{0xc0, 12, 0, 1, 0, 1})},
		{"pointer-forward", cat(header(1, 0), []byte{0xc0, 14, 0xc0, 12, 0, 1, 0, 1})},
		{"two-questions", cat(header(2, 0), www, www)},
		{"ecs-v4-prefix-33", cat(header(1, 1), ide, opt(ecs(1, 33, 0, 10, 2, 3, 4, 5)))},
		{"ecs-v6-prefix-200", cat(header(1, 1), ide, opt(ecs(2, 200, 0, 0x20, 1)))},
		{"ecs-family-3", cat(header(1, 1), ide, opt(ecs(3, 24, 0, 10, 2, 3)))},
		{"ecs-scope-in-query", cat(header(1, 1), ide, opt(ecs(1, 24, 24, 10, 2, 3)))},
		{"ecs-address-too-long", cat(header(1, 1), ide, opt(ecs(1, 8, 0, 10, 2, 3, 4)))},
		{"ecs-two", cat(header(1, 1), ide, opt(ecs(1, 24, 0, 10, 2, 3), ecs(1, 24, 0, 10, 1, 3)))},
		{"edns-option-overlong", cat(header(1, 1), www, opt([]byte{0, 10, 0xff, 0xff, 1, 2}))},
		{"name-127-labels", cat(header(1, 0), labels(127))},
		{"name-128-labels", cat(header(1, 0), labels(128))},
	}
}

// fuzzServer is a server with a signed zone and a TSIG key, its answering
// state, and the client address the fuzz targets answer.
func fuzzServer(f *testing.F) (*Server, *state, *net.UDPAddr) {
	f.Helper()
	ksk, zsk := testKeys(f)
	cfg := fuzzTSIGConfig(f)
	// The test zone and DNAMEs (dname.go): to a name with a name below
	// it, out of the zone, to the apex (and so to the managed name), to
	// itself.
	text, err := os.ReadFile(cfg.Zones[0].File)
	if err != nil {
		f.Fatal(err)
	}
	text = append(text, "dn IN DNAME sub\ndn-out IN DNAME example.org.\ndn-apex IN DNAME @\ndn-self IN DNAME x.dn-self\n"...)
	file := filepath.Join(f.TempDir(), "ringlb.test.zone")
	if err := os.WriteFile(file, text, 0o600); err != nil {
		f.Fatal(err)
	}
	cfg.Zones[0].File = file
	s, err := New(signed(cfg, ksk, zsk), "fuzz", nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	return s, s.state.Load(), &net.UDPAddr{IP: net.ParseIP("10.1.2.3"), Port: 5353}
}
