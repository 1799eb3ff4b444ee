package gslb

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// A UDP answer does not depend on the case in which its question was first
// asked. The loop's cache keeps an answer by its lower-cased question, made
// by the full path for whoever asked first, and answers a repeat by
// patching the question's case: what it sends must be what the full path
// would send that client. Names compressed only against names of the same
// case (miekg/dns), so an answer made for a 0x20 resolver's
// WWW.RingLB.test carried its owners and the zone's names written out again
// — bigger, and at the edge of a client's buffer truncated — and every
// later asker of that loop got it: with a 740-byte buffer, the six TXT
// records of big fit for a lower-case asker (734 bytes) until an
// upper-case one asked first (749), then TC for everyone until the cache
// was dropped. And the full path answered a 0x20 resolver bigger than a
// client asking in lower case, where NSD and Knot compress its names
// against the question whatever its case — with Client Subnet too (never
// cached), as a resolver sending both asks. Each answer is asked in one case, then in another (from the
// cache), and compared byte for byte with the full path's answer to the
// same query (the query log on: nothing cached is used).
func TestUDPAnswerDoesNotDependOnTheCaseAskedFirst(t *testing.T) {
	cfg := gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), "")
	cfg.UDPWorkers = 1 // one loop, one cache
	s := startGSLB(t, cfg)
	spellings := func(name string) []string {
		alternate := []byte(name)
		for i := range alternate {
			if i%2 == 0 {
				alternate[i] = strings.ToUpper(string(alternate[i]))[0]
			}
		}
		return []string{strings.ToUpper(name), string(alternate), name}
	}
	exchange := func(name string, qtype, size uint16, ecs bool) []byte {
		q := question(name, qtype, size)
		q.Id = 0x2020 // the same query but for its case
		if ecs {
			o := q.IsEdns0()
			o.Option = append(o.Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.IPv4(10, 2, 3, 0).To4()})
		}
		b, err := q.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return exchangeWire(t, s, "udp", b)
	}
	cases := []struct {
		name  string
		qtype uint16
		size  uint16
		ecs   bool // with a Client Subnet option: never cached
	}{
		{"www.ringlb.test.", dns.TypeA, 0, false},
		{"www.ringlb.test.", dns.TypeMX, 1232, false}, // NODATA: the SOA
		{"nope.ringlb.test.", dns.TypeA, 0, false},    // NXDOMAIN
		{"ringlb.test.", dns.TypeMX, 1232, false},     // additional records
		{"ringlb.test.", dns.TypeNS, 0, false},
		{"alias2.ringlb.test.", dns.TypeA, 0, false}, // a CNAME chain
		{"x.wild.ringlb.test.", dns.TypeA, 0, false}, // a wildcard
		{"ide.ringlb.test.", dns.TypeA, 0, false},    // a managed name
		{"host.deleg.ringlb.test.", dns.TypeA, 1232, false},
		{"big.ringlb.test.", dns.TypeTXT, 740, false}, // fits in lower case
		{"bigalias.ringlb.test.", dns.TypeTXT, 765, false},
		{"ide.ringlb.test.", dns.TypeA, 1232, true},
		{"big.ringlb.test.", dns.TypeTXT, 752, true},
	}
	differ, truncated, bigger, compared := 0, 0, 0, 0
	for _, c := range cases {
		for _, first := range spellings(c.name) {
			for _, then := range spellings(c.name) {
				if first == then {
					continue
				}
				s.queryLog.Store(false)
				exchange(first, c.qtype, c.size, c.ecs)
				cached := exchange(then, c.qtype, c.size, c.ecs)
				s.queryLog.Store(true) // the full path, whatever is cached
				full := exchange(then, c.qtype, c.size, c.ecs)
				compared++
				if lower := exchange(c.name, c.qtype, c.size, c.ecs); len(full) != len(lower) {
					bigger++
					t.Errorf("%s %s (EDNS %d) asked as %s: %d bytes from the full path, %d asked in lower case", c.name, dns.TypeToString[c.qtype], c.size, then, len(full), len(lower))
				}
				if bytes.Equal(cached, full) {
					continue
				}
				differ++
				var mc, mf dns.Msg
				if err := mc.Unpack(cached); err != nil {
					t.Fatal(err)
				}
				if err := mf.Unpack(full); err != nil {
					t.Fatal(err)
				}
				what := fmt.Sprintf("%s %s (EDNS %d) asked as %s after %s", c.name, dns.TypeToString[c.qtype], c.size, then, first)
				if mc.Truncated != mf.Truncated {
					truncated++
					t.Errorf("%s: TC %v from the cache (%d bytes), %v from the full path (%d bytes)", what, mc.Truncated, len(cached), mf.Truncated, len(full))
				} else {
					t.Errorf("%s: %d bytes from the cache, %d from the full path", what, len(cached), len(full))
				}
			}
		}
	}
	t.Logf("%d of %d answers from the cache differ from the full path's (%d truncated where the full path's is not, or the reverse); %d of the full path's differ in size from the answer to the lower-case name", differ, compared, truncated, bigger)
}
