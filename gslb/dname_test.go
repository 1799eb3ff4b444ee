package gslb

import (
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// dnameConfig is the test config (ide.ringlb.test. managed) with
// ringlb.test's records inline, and records.
func dnameConfig(t *testing.T, records ...string) configs.GSLB {
	t.Helper()
	cfg := fuzzConfig(t)
	cfg.Zones = slices.Clone(cfg.Zones)
	cfg.Zones[0].File = ""
	cfg.Zones[0].Records = append([]string{
		"@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60",
		"@ 3600 IN NS ns1.elsewhere.example.",
	}, records...)
	return cfg
}

// A name below a DNAME is answered with the DNAME, the CNAME synthesised
// from it (the DNAME's TTL) and its target's records, the rcode the last
// name's; one leading to a managed name is answered by the pools, its
// addresses owned by that name.
func TestDNAMEAnswers(t *testing.T) {
	s := startGSLB(t, dnameConfig(t, "dn 600 IN DNAME tgt", "host.tgt 3600 IN A 192.0.2.1", "to-ide 300 IN DNAME ringlb.test."))
	m := query(t, s, "udp", "host.dn.ringlb.test.", dns.TypeA, nil)
	if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 3 {
		t.Fatalf("host.dn: %v", m)
	}
	d, ok1 := m.Answer[0].(*dns.DNAME)
	c, ok2 := m.Answer[1].(*dns.CNAME)
	a, ok3 := m.Answer[2].(*dns.A)
	if !ok1 || !ok2 || !ok3 || d.Target != "tgt.ringlb.test." || c.Hdr.Name != "host.dn.ringlb.test." || c.Target != "host.tgt.ringlb.test." ||
		c.Hdr.Ttl != 600 || a.Hdr.Name != "host.tgt.ringlb.test." {
		t.Errorf("host.dn: %v", m)
	}
	if m := query(t, s, "udp", "nope.dn.ringlb.test.", dns.TypeA, nil); m.Rcode != dns.RcodeNameError || len(m.Answer) != 2 {
		t.Errorf("nope.dn: %v", m)
	}
	m = query(t, s, "udp", "ide.to-ide.ringlb.test.", dns.TypeA, nil)
	if len(m.Answer) < 3 {
		t.Fatalf("ide.to-ide: %v", m)
	}
	for _, rr := range m.Answer[2:] {
		if rr.Header().Name != "ide.ringlb.test." {
			t.Errorf("ide.to-ide: %v owned by %s, want the managed name", rr, rr.Header().Name)
		}
	}
}

// Signed (DO), the DNAME and the target's records carry their signatures,
// the synthesised CNAME none (RFC 6672 5.3.1: validators derive it from the
// DNAME); a target that does not exist is denied as at the end of a CNAME
// chain.
func TestDNAMESigned(t *testing.T) {
	ksk, zsk := testKeys(t)
	long := strings.Repeat("m", 63) + "." + strings.Repeat("n", 63) + "." + strings.Repeat("o", 63)
	s := startGSLB(t, signed(dnameConfig(t, "dn 600 IN DNAME tgt", "host.tgt 3600 IN A 192.0.2.1", "dn-long 600 IN DNAME "+long), ksk, zsk))
	keys := dnskeys(t, s)
	// Too long a rewritten name: YXDOMAIN, the DNAME signed.
	m := query(t, s, "tcp", strings.Repeat("x", 60)+".dn-long.ringlb.test.", dns.TypeA, withDO(true))
	if m.Rcode != dns.RcodeYXDomain || len(rrsOf(m.Answer, dns.TypeDNAME)) != 1 || len(rrsOf(m.Answer, dns.TypeCNAME)) != 0 {
		t.Errorf("past 255 octets: want YXDOMAIN with the DNAME alone:\n%v", m)
	}
	checkSigned(t, m, keys)
	for _, name := range []string{"host.dn.ringlb.test.", "nope.dn.ringlb.test."} {
		m := query(t, s, "tcp", name, dns.TypeA, withDO(true))
		var rest []dns.RR
		cnames := 0
		for _, rr := range m.Answer {
			switch h := rr.Header(); {
			case h.Rrtype == dns.TypeCNAME:
				cnames++
			case h.Rrtype == dns.TypeRRSIG && rr.(*dns.RRSIG).TypeCovered == dns.TypeCNAME:
				t.Errorf("%s: the synthesised CNAME is signed: %v", name, rr)
			default:
				rest = append(rest, rr)
			}
		}
		if cnames != 1 || len(rrsOf(rest, dns.TypeDNAME)) != 1 {
			t.Errorf("%s: want the DNAME and one CNAME:\n%v", name, m)
		}
		m.Answer = rest
		checkSigned(t, m, keys)
		if name == "nope.dn.ringlb.test." {
			if nsec := nsecOf(m); m.Rcode != dns.RcodeNameError || nsec == nil || nsec.Hdr.Name != "nope.tgt.ringlb.test." {
				t.Errorf("%s: want NXDOMAIN proved at nope.tgt:\n%v", name, m)
			}
		}
	}
}

// A signed transfer has the DNAME's owner in the NSEC chain with DNAME in
// its bitmap, the DNAME signed, and no name below the DNAME.
func TestDNAMESignedTransfer(t *testing.T) {
	ksk, zsk := testKeys(t)
	s := startGSLB(t, signed(withTransfer(t, dnameConfig(t, "dn 600 IN DNAME tgt", "host.tgt 3600 IN A 192.0.2.1"),
		configs.Transfer{Allow: []string{"127.0.0.1/32"}}), ksk, zsk))
	rrs, err := axfr(t, s, "", "")
	if err != nil {
		t.Fatal(err)
	}
	signedDNAME, nsec := false, false
	for _, rr := range rrs {
		h := rr.Header()
		switch {
		case h.Name != "dn.ringlb.test." && dns.IsSubDomain("dn.ringlb.test.", h.Name):
			t.Errorf("a record below the DNAME: %v", rr)
		case h.Rrtype == dns.TypeRRSIG && rr.(*dns.RRSIG).TypeCovered == dns.TypeDNAME:
			signedDNAME = true
		case h.Rrtype == dns.TypeNSEC && h.Name == "dn.ringlb.test.":
			nsec = slices.Equal(rr.(*dns.NSEC).TypeBitMap, []uint16{dns.TypeDNAME, dns.TypeRRSIG, dns.TypeNSEC})
			if !nsec {
				t.Errorf("the DNAME's NSEC %v, want DNAME RRSIG NSEC", rr)
			}
		}
	}
	if !signedDNAME || !nsec {
		t.Errorf("signed transfer: DNAME signed %v, its NSEC %v:\n%v", signedDNAME, nsec, rrs)
	}
}

// Data below a DNAME would never be answered (RFC 6672 2.4): a zone holding
// any is refused at load, the error naming the file, the name and the
// DNAME; so is a managed name at or below a DNAME.
func TestDNAMEOccludedRefused(t *testing.T) {
	file := filepath.Join(t.TempDir(), "ringlb.test.zone")
	zone := "$ORIGIN ringlb.test.\n@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60\n@ 3600 IN NS ns1\nns1 3600 IN A 127.0.0.1\n" +
		"dn 3600 IN DNAME tgt\nhost.dn 3600 IN A 192.0.2.1\n"
	if err := os.WriteFile(file, []byte(zone), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fuzzConfig(t)
	cfg.Zones = slices.Clone(cfg.Zones)
	cfg.Zones[0].File = file
	_, err := New(cfg, "gslb-test", nil, nil)
	if err == nil {
		t.Fatal("data below a DNAME loaded, want an error")
	}
	for _, want := range []string{file, "host.dn.ringlb.test.", "DNAME at dn.ringlb.test."} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	for _, c := range []struct{ dname, managed string }{
		{"ide 3600 IN DNAME elsewhere.example.", "ide.ringlb.test."},
		{"dn 3600 IN DNAME elsewhere.example.", "ide.dn.ringlb.test."},
		{"@ 3600 IN DNAME elsewhere.example.", "ide.ringlb.test."},
	} {
		cfg := dnameConfig(t, c.dname)
		cfg.Names = slices.Clone(cfg.Names)
		cfg.Names[0].Name = c.managed
		_, err := New(cfg, "gslb-test", nil, nil)
		if err == nil || !strings.Contains(err.Error(), "gslb.yaml:9: gslb.names[0].name: "+c.managed) || !strings.Contains(err.Error(), "(in gslb.yaml:5, gslb.zones[0].records)") {
			t.Errorf("managed %s with %q: error %v, want one naming the name and the records", c.managed, c.dname, err)
		}
	}
	// Two DNAMEs at one name: one target for the names below.
	if _, err := New(dnameConfig(t, "dn 3600 IN DNAME a", "dn 3600 IN DNAME b"), "gslb-test", nil, nil); err == nil || !strings.Contains(err.Error(), "more than one DNAME") {
		t.Errorf("two DNAMEs at dn: %v", err)
	}
}

// The paths beside answerVia's: the UDP answer cache serves a DNAME answer
// as made (to any case of the name asked), a zone transfer carries the
// DNAME as any record, an MX reached through a DNAME gets its target's
// addresses in additional, and ANY below a DNAME is answered minimally at
// its target.
func TestDNAMEPaths(t *testing.T) {
	cfg := dnameConfig(t, "dn 600 IN DNAME tgt", "host.tgt 3600 IN A 192.0.2.1", "mx.tgt 3600 IN MX 10 host.tgt")
	cfg.UDPWorkers = 1 // one loop, one answer cache
	s := startGSLB(t, withTransfer(t, cfg, configs.Transfer{Allow: []string{"127.0.0.1/32"}}))
	first := query(t, s, "udp", "host.dn.ringlb.test.", dns.TypeA, nil)
	for _, name := range []string{"host.dn.ringlb.test.", "HoSt.dN.ringlb.test."} {
		m := query(t, s, "udp", name, dns.TypeA, nil)
		if len(m.Answer) != 3 || m.Answer[2].String() != first.Answer[2].String() || m.Question[0].Name != name {
			t.Errorf("%s again (cached): %v, want as first:\n%v", name, m, first)
		}
	}
	rrs, err := axfr(t, s, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if d := rrsOf(rrs, dns.TypeDNAME); len(d) != 1 || d[0].Header().Name != "dn.ringlb.test." {
		t.Errorf("AXFR: DNAME records %v, want dn's", d)
	}
	m := query(t, s, "tcp", "mx.dn.ringlb.test.", dns.TypeMX, nil)
	if len(rrsOf(m.Answer, dns.TypeMX)) != 1 || len(m.Extra) == 0 || m.Extra[0].Header().Name != "host.tgt.ringlb.test." {
		t.Errorf("MX through a DNAME: want its target's address in additional:\n%v", m)
	}
	m = query(t, s, "tcp", "host.dn.ringlb.test.", dns.TypeANY, nil)
	if h := rrsOf(m.Answer, dns.TypeHINFO); len(h) != 1 || h[0].Header().Name != "host.tgt.ringlb.test." || len(rrsOf(m.Answer, dns.TypeDNAME)) != 1 {
		t.Errorf("ANY below a DNAME: want the DNAME, the CNAME and a HINFO at the target:\n%v", m)
	}
}

// nameWireLen counts a name as packed: escapes one octet each, 255 the most
// a name may have, which dns.IsDomainName takes 256 for.
func TestNameWireLen(t *testing.T) {
	a63 := strings.Repeat("a", 63) + "."
	for _, name := range []string{"a.b.", `a\.b.c.`, `a\046b.c.`, `\\x.y.`, a63 + a63 + a63 + strings.Repeat("a", 61) + ".", a63 + a63 + a63 + strings.Repeat("a", 62) + "."} {
		buf := make([]byte, 300)
		want, err := dns.PackDomainName(name, buf, 0, nil, false)
		if err != nil {
			want = 256 // the one octet too many
		}
		if got := nameWireLen(name); got != want {
			t.Errorf("%s: %d, want %d", name, got, want)
		}
	}
}

// A DNAME at the apex (RFC 6672 allows it; NSD and Knot load it) rewrites
// every name of the zone but the apex, whose records still answer.
func TestDNAMEAtApex(t *testing.T) {
	cfg := dnameConfig(t, "@ 600 IN DNAME elsewhere.example.")
	cfg.Names = nil // ide.ringlb.test. would be below it: refused
	s := startGSLB(t, cfg)
	m := query(t, s, "udp", "www.ringlb.test.", dns.TypeA, nil)
	if len(m.Answer) != 2 || m.Answer[1].(*dns.CNAME).Target != "www.elsewhere.example." || m.Rcode != dns.RcodeSuccess {
		t.Errorf("www below an apex DNAME: %v", m)
	}
	if m := query(t, s, "udp", "ringlb.test.", dns.TypeSOA, nil); len(m.Answer) != 1 {
		t.Errorf("the apex's SOA: %v", m)
	}
}

// BenchmarkDNAMEAnswer is answer for a name below a DNAME: the DNAME, the
// synthesised CNAME and the target's A (a zone without DNAME pays nothing:
// BenchmarkAnswer).
func BenchmarkDNAMEAnswer(b *testing.B) {
	cfg := fuzzConfig(b)
	cfg.Zones = slices.Clone(cfg.Zones)
	cfg.Zones[0].File = ""
	cfg.Zones[0].Records = []string{"@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60", "@ 3600 IN NS ns1.elsewhere.example.",
		"dn 600 IN DNAME tgt", "host.tgt 3600 IN A 192.0.2.1"}
	s, err := New(cfg, "bench", nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	st := s.state.Load()
	remote := &net.UDPAddr{IP: net.ParseIP("10.1.2.3"), Port: 5353}
	r := new(dns.Msg)
	r.SetQuestion("host.dn.ringlb.test.", dns.TypeA)
	b.ReportAllocs()
	buf := make([]byte, 0, 512)
	for b.Loop() {
		m := s.answer(st, r, remote, false, nil)
		if _, err := m.PackBuffer(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// A DNAME's RDATA is never compressed: DNAME is not one of RFC 1035's
// types, and a server MUST NOT compress a name in the RDATA of such a type
// (RFC 3597 4; RFC 6672 2.5), as a server or cache that copies it whole
// would carry a pointer into another message. A later name may point into
// it (RFC 1035 4.1.4: a pointer to any earlier name): the synthesised
// CNAME's target may, and that is how an answer below dn-long fits 512
// bytes where NSD and Knot truncate (differential_test.go: dnameFits).
// Checked on the wire, over UDP (made and cached), TCP and AXFR: every
// DNAME's RDATA is written out, and some name points into one.
func TestDNAMERdataNeverCompressed(t *testing.T) {
	long := strings.Repeat("l", 51) + "." + strings.Repeat("m", 63) + "." + strings.Repeat("n", 63) + "." + strings.Repeat("o", 51) + ".ringlb.test."
	cfg := dnameConfig(t, "dn 600 IN DNAME tgt", "host.tgt 3600 IN A 192.0.2.1", "dn-apex 600 IN DNAME @",
		"dn-long 600 IN DNAME "+long, "x."+long+" 3600 IN A 192.0.2.2")
	cfg.UDPWorkers = 1 // one loop, one answer cache
	s := startGSLB(t, withTransfer(t, cfg, configs.Transfer{Allow: []string{"127.0.0.1/32"}}))
	exchange := func(network, name string, qtype uint16) []byte {
		t.Helper()
		q, err := new(dns.Msg).SetQuestion(name, qtype).Pack()
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial(network, s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if network == "tcp" {
			q = append([]byte{byte(len(q) >> 8), byte(len(q))}, q...)
		}
		if _, err := c.Write(q); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 65537)
		if network == "udp" {
			n, err := c.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			return buf[:n]
		}
		if _, err := io.ReadFull(c, buf[:2]); err != nil {
			t.Fatal(err)
		}
		n := int(buf[0])<<8 | int(buf[1])
		if _, err := io.ReadFull(c, buf[:n]); err != nil {
			t.Fatal(err)
		}
		return buf[:n]
	}
	// pointers counts the compression pointers in the name at off.
	pointers := func(msg []byte, off int) int {
		for n := 0; off < len(msg); {
			switch l := int(msg[off]); {
			case l == 0:
				return n
			case l&0xC0 == 0xC0:
				return n + 1 // a pointer ends the name
			default:
				off += 1 + l
			}
		}
		return -1
	}
	dnames, into := 0, 0
	for _, c := range []struct {
		network, name string
		qtype         uint16
	}{
		{"udp", "host.dn.ringlb.test.", dns.TypeA},
		{"udp", "host.dn.ringlb.test.", dns.TypeA}, // from the answer cache
		{"tcp", "host.dn.ringlb.test.", dns.TypeA},
		{"udp", "dn.ringlb.test.", dns.TypeDNAME},
		{"udp", "host.tgt.dn-apex.ringlb.test.", dns.TypeA},
		{"udp", "x.dn-long.ringlb.test.", dns.TypeA},
		{"tcp", "ringlb.test.", dns.TypeAXFR},
	} {
		msg := exchange(c.network, c.name, c.qtype)
		var m dns.Msg
		if err := m.Unpack(msg); err != nil || m.Rcode != dns.RcodeSuccess {
			t.Fatalf("%s %s over %s: %v %v", c.name, dns.TypeToString[c.qtype], c.network, err, m.Rcode)
		}
		off := 12
		for range m.Question {
			off = skipName(msg, off) + 4
		}
		seen := 0
		eachRecord(msg, off, len(m.Answer)+len(m.Ns)+len(m.Extra), func(at int) bool {
			rdata := at + 10
			switch binary.BigEndian.Uint16(msg[at:]) {
			case dns.TypeDNAME:
				seen++
				if p := pointers(msg, rdata); p != 0 {
					t.Errorf("%s %s over %s: a DNAME's RDATA holds %d compression pointer(s)", c.name, dns.TypeToString[c.qtype], c.network, p)
				}
			case dns.TypeCNAME:
				if pointers(msg, rdata) > 0 {
					into++
				}
			}
			return true
		})
		if seen == 0 {
			t.Errorf("%s %s over %s: no DNAME in the answer", c.name, dns.TypeToString[c.qtype], c.network)
		}
		dnames += seen
	}
	t.Logf("%d DNAME records on the wire, none compressed; %d synthesised CNAMEs' targets compressed", dnames, into)
	if into == 0 {
		t.Error("no CNAME target compressed: the answers are not packed as served")
	}
}
