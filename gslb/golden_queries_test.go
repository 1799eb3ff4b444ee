package gslb

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The queries of the golden test of answers without DO
// (TestAnswersWithoutDOUnchanged): every kind of answer the server gives,
// over UDP (with and without EDNS) and TCP, from both regions' clients.
// testdata/nodo.golden holds the SHA-256 of each answer the server gave
// before DNSSEC, byte for byte. A query for a signed zone's own records (DNSKEY, CDS, CDNSKEY)
// or for NXNAME is left out: signing adds the first, RFC 9824 refuses the
// second.
var goldenQueries = []struct {
	name  string
	qtype uint16
	class uint16
	edns  uint16 // EDNS buffer size, 0: no EDNS
	ecs   string // EDNS Client Subnet /24, "" for none
}{
	{"www.ringlb.test.", dns.TypeA, dns.ClassINET, 0, ""},
	{"www.ringlb.test.", dns.TypeAAAA, dns.ClassINET, 1232, ""},
	{"WwW.RiNgLb.TeSt.", dns.TypeA, dns.ClassINET, 1232, ""},
	{"ringlb.test.", dns.TypeMX, dns.ClassINET, 0, ""},
	{"ringlb.test.", dns.TypeSOA, dns.ClassINET, 1232, ""},
	{"ringlb.test.", dns.TypeNS, dns.ClassINET, 0, ""},
	{"ringlb.test.", dns.TypeCAA, dns.ClassINET, 4096, ""},
	{"ringlb.test.", dns.TypeDS, dns.ClassINET, 1232, ""},
	{"ringlb.test.", dns.TypeTXT, dns.ClassINET, 1232, ""},
	{"mail.ringlb.test.", dns.TypeTXT, dns.ClassINET, 0, ""},
	{"www.ringlb.test.", dns.TypeNSEC, dns.ClassINET, 1232, ""},
	{"nope.ringlb.test.", dns.TypeA, dns.ClassINET, 0, ""},
	{"nope.ringlb.test.", dns.TypeA, dns.ClassINET, 1232, ""},
	{"deeper.nope.ringlb.test.", dns.TypeAAAA, dns.ClassINET, 1232, ""},
	{"sub.ringlb.test.", dns.TypeA, dns.ClassINET, 1232, ""},
	{"alias2.ringlb.test.", dns.TypeA, dns.ClassINET, 1232, ""},
	{"docs.ringlb.test.", dns.TypeTXT, dns.ClassINET, 0, ""},
	{"away.ringlb.test.", dns.TypeA, dns.ClassINET, 0, ""},
	{"x.wild.ringlb.test.", dns.TypeA, dns.ClassINET, 1232, ""},
	{"x.wild.ringlb.test.", dns.TypeTXT, dns.ClassINET, 0, ""},
	{"www.ringlb.test.", dns.TypeANY, dns.ClassINET, 1232, ""},
	{"_ide._tcp.ringlb.test.", dns.TypeSRV, dns.ClassINET, 0, ""},
	{"1.ringlb.test.", dns.TypePTR, dns.ClassINET, 0, ""},
	{"big.ringlb.test.", dns.TypeTXT, dns.ClassINET, 0, ""},
	{"big.ringlb.test.", dns.TypeTXT, dns.ClassINET, 4096, ""},
	{"bigalias.ringlb.test.", dns.TypeTXT, dns.ClassINET, 512, ""},
	{"many.ringlb.test.", dns.TypeA, dns.ClassINET, 1232, ""},
	{"ide.ringlb.test.", dns.TypeA, dns.ClassINET, 0, ""},
	{"ide.ringlb.test.", dns.TypeA, dns.ClassINET, 1232, ""},
	{"IDE.ringlb.test.", dns.TypeAAAA, dns.ClassINET, 1232, ""},
	{"ide.ringlb.test.", dns.TypeTXT, dns.ClassINET, 0, ""},
	{"ide.ringlb.test.", dns.TypeANY, dns.ClassINET, 0, ""},
	{"ide.ringlb.test.", dns.TypeA, dns.ClassINET, 1232, "10.2.3.0"},
	{"ide.ringlb.test.", dns.TypeA, dns.ClassINET, 1232, "10.1.3.0"},
	{"www.ringlb.test.", dns.TypeA, dns.ClassINET, 1232, "10.2.3.0"},
	{"example.com.", dns.TypeA, dns.ClassINET, 1232, ""},
	{"www.ringlb.test.", dns.TypeA, dns.ClassCHAOS, 0, ""},
}

// noDOAnswers asks s every golden query (fixed ID, RD set, no DO) over each
// transport from each region's client address, and returns one line per
// answer: the query, then the SHA-256 of the answer's bytes; answers holds
// the answers themselves by line.
func noDOAnswers(t *testing.T, s *Server) (lines []string, answers map[string][]byte) {
	t.Helper()
	answers = map[string][]byte{}
	for _, q := range goldenQueries {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		m.Question[0].Qclass = q.class
		m.Id, m.RecursionDesired = 0x5151, true
		if q.edns > 0 {
			m.SetEdns0(q.edns, false)
			if q.ecs != "" {
				m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.ParseIP(q.ecs).To4()})
			}
		}
		pkt, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		for _, network := range []string{"udp", "tcp"} {
			for _, src := range []string{"127.0.0.1", "127.0.0.2"} {
				resp := exchangeFrom(t, s, network, src, pkt)
				sum := sha256.Sum256(resp)
				line := fmt.Sprintf("%s %s %s edns=%d ecs=%q %s %s: %s", q.name, dns.TypeToString[q.qtype], dns.ClassToString[q.class], q.edns, q.ecs, network, src, hex.EncodeToString(sum[:]))
				lines = append(lines, line)
				answers[line] = resp
			}
		}
	}
	return lines, answers
}

// exchangeFrom sends the packed query q to s from the address src and
// returns the answer's bytes as they arrived.
func exchangeFrom(t *testing.T, s *Server, network, src string, q []byte) []byte {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if network == "tcp" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	} else {
		d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial(network, s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	co := &dns.Conn{Conn: c, UDPSize: dns.MaxMsgSize}
	co.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := co.Write(q); err != nil {
		t.Fatal(err)
	}
	p, err := co.ReadMsgHeader(nil)
	if err != nil {
		t.Fatalf("%s from %s: no answer: %v", network, src, err)
	}
	return p
}
