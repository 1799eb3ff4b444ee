package gslb

import (
	"net"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// FuzzLoadZone feeds arbitrary text to the zone loader as a zone's inline
// records (the same parser and checks as a zone file, without $INCLUDE:
// the fuzzer must not read the machine's files). It must never panic, and
// a zone it loads must hold what its checks promise (zone.go): every record
// with a wire form, no record twice, one TTL per RRset, no CNAME beside
// other data but its DNSSEC records, class IN and no meta-type only; and it
// must answer its SOA, authoritatively, in a message that packs. Seeds are
// in testdata/fuzz/FuzzLoadZone: the nastiest zones of the differential
// corpus (zonecheck_test.go).
func FuzzLoadZone(f *testing.F) {
	f.Add([]byte(zc("www IN A 192.0.2.80", "www IN CNAME x.example.")))
	f.Add([]byte(zc("www 300 IN A 192.0.2.80", "WWW 600 IN A 192.0.2.80", "dn IN DNAME tgt", "x.dn IN A 192.0.2.1")))
	s, err := New(parseGSLBYAML(f, "gslb:\n  listen: 127.0.0.1:0\n  zones: [ { origin: zc.test, records: [ \"@ 60 IN SOA ns1 hostmaster 1 2 3 4 5\" ] } ]\n"), "fuzz", nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	remote := &net.UDPAddr{IP: net.ParseIP("10.1.2.3"), Port: 5353}
	f.Fuzz(func(t *testing.T, text []byte) {
		cfg := s.state.Load().cfg
		cfg.Zones = append(cfg.Zones[:0:0], cfg.Zones[0])
		cfg.Zones[0].Records = []string{string(text)}
		st, err := s.build(cfg)
		if err != nil {
			if !strings.Contains(err.Error(), "zone zc.test.: ") {
				t.Fatalf("a refusal that names no zone: %v", err)
			}
			return
		}
		z := st.zones[0]
		buf := make([]byte, dns.MaxMsgSize+512)
		for name, byType := range z.names {
			for t0, rrs := range byType {
				for i, rr := range rrs {
					h := rr.Header()
					if h.Name != name || h.Rrtype != t0 || h.Class != dns.ClassINET || metaType(t0) {
						t.Fatalf("%v filed under %s %s", rr, name, typeName(t0))
					}
					if n, err := dns.PackRR(rr, buf, 0, nil, false); err != nil {
						t.Fatalf("%v has no wire form: %v", rr, err)
					} else if _, _, err := dns.UnpackRR(buf[:n], 0); err != nil {
						t.Fatalf("%v packs to what does not unpack: %v", rr, err)
					}
					if t0 != dns.TypeRRSIG && h.Ttl != rrs[0].Header().Ttl {
						t.Fatalf("%s %s: TTLs %d and %d in one RRset", name, typeName(t0), rrs[0].Header().Ttl, h.Ttl)
					}
					for _, other := range rrs[:i] {
						if dns.IsDuplicate(other, rr) {
							t.Fatalf("%v twice", rr)
						}
					}
				}
				if t0 == dns.TypeCNAME && len(rrs) > 0 {
					if other := besideCNAME(byType, dns.TypeCNAME); other != 0 || len(rrs) != 1 {
						t.Fatalf("%s: %d CNAMEs beside %s", name, len(rrs), typeName(other))
					}
				}
			}
		}
		q := new(dns.Msg)
		q.SetQuestion(z.origin, dns.TypeSOA)
		for _, tcp := range []bool{false, true} {
			m := s.answer(st, q, remote, tcp, nil)
			if m == nil || m.Rcode != dns.RcodeSuccess || !m.Authoritative || len(m.Answer) != 1 || m.Answer[0].Header().Rrtype != dns.TypeSOA ||
				!strings.EqualFold(m.Answer[0].Header().Name, z.origin) {
				t.Fatalf("the SOA asked (tcp %v): %v", tcp, m)
			}
			if _, err := m.Pack(); err != nil {
				t.Fatalf("the SOA's answer does not pack: %v\n%v", err, m)
			}
		}
	})
}
