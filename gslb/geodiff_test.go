//go:build linux

package gslb

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The geo differential test: an operator moving a name steered by client
// network from gdnsd (its geoip plugin, a nets-only map) to ringlb expects
// the same region for the same client, and an EDNS Client Subnet option
// (RFC 7871) in the answer that a resolver can cache by. One configuration
// (geoRegions, geoNets, geoDefault) is written out for both servers, all
// regions up and then two down; the corpus (geoCorpus) goes to both from
// several loopback addresses over UDP and TCP; the answers are compared in
// geoNormal's form. Each answer of
// either server is also checked against the configuration itself
// (geoCheck): the region of the client's network, and an ECS scope that
// claims no client of another region. A difference with gdnsd is either
// listed in geoDeviations with its reason, or a failure.

// geoRegions are the regions of ide.geo.test., the addresses each answers
// and where its clients go while it is down, in both servers (gdnsd: each
// net's datacenter list, the region then its failover). The first is the
// default (geoDefault).
var geoRegions = []struct {
	name     string
	addrs    []string
	failover []string
}{
	{"home", []string{"198.51.100.1", "2001:db8:ff::1"}, nil},
	{"east", []string{"198.51.100.11", "198.51.100.12", "2001:db8:ff::11"}, nil},
	{"west", []string{"198.51.100.21", "2001:db8:ff::21"}, []string{"east"}},
	{"south", []string{"198.51.100.31", "198.51.100.32"}, nil}, // no IPv6 member: its AAAA is a NODATA
}

// geoServed is the region whose members answer region's clients while the
// regions of down are down: the region, else the first of its failover list
// that is up, else the region's own all the same (every member down: both
// servers answer them, ringlb's all_down serve_all).
func geoServed(region string, down []string) string {
	if !slices.Contains(down, region) {
		return region
	}
	for _, g := range geoRegions {
		if g.name != region {
			continue
		}
		for _, f := range g.failover {
			if !slices.Contains(down, f) {
				return f
			}
		}
	}
	return region
}

// geoDefault is the region of a client no net holds: gdnsd's first
// datacenter, ringlb's default_region.
const geoDefault = "home"

// geoNets map client networks to regions: nested networks in both
// families, and the loopback addresses the queries come from.
var geoNets = []struct{ prefix, region string }{
	{"10.0.0.0/8", "east"},
	{"10.2.0.0/16", "west"},
	{"192.0.2.0/24", "south"},
	{"2001:db8::/32", "east"},
	{"2001:db8:1::/48", "west"},
	{"127.0.0.2/32", "west"},
	{"127.0.0.3/32", "east"},
	{"127.0.0.4/32", "south"},
}

// geoStatic is geo.test.'s static part, served by both. gdnsd clamps an SOA
// TTL to the negative TTL: both are 300.
const geoStatic = `$ORIGIN geo.test.
$TTL 3600
@     300 IN SOA   ns1 hostmaster 2026120501 7200 3600 1209600 300
@         IN NS    ns1
ns1       IN A     127.0.0.1
www   300 IN A     192.0.2.80
www   300 IN AAAA  2001:db8::80
alias 300 IN CNAME ide
`

const geoName = "ide.geo.test."

// geoCase is one query of the corpus.
type geoCase struct {
	what  string // the case's name, unique: geoDeviations are keyed by it
	src   string // the querier's address (127.0.0.x)
	name  string
	qtype uint16
	edns  bool   // EDNS (set whenever ecs or do is)
	do    bool   // DO set
	ecs   []byte // the Client Subnet option's data, however wrong; nil: none
}

// ecsData is the Client Subnet option of p, in p's family, well formed:
// the address cut to ceil(bits / 8) bytes, bits beyond the prefix zero.
func ecsData(p netip.Prefix) []byte {
	p = p.Masked()
	family, a := byte(2), p.Addr().AsSlice()
	if p.Addr().Is4() {
		family = 1
	}
	return append([]byte{0, family, byte(p.Bits()), 0}, a[:(p.Bits()+7)/8]...)
}

// geoCorpus is every query: the grid of well-formed options (addresses
// inside, outside and at the edges of the nested nets, with every source
// prefix around their boundaries, each once after masking), then the
// corner cases. The querier's address rotates over 127.0.0.1 to .5, so a
// /0 option (which names no client) is answered by it.
func geoCorpus() []geoCase {
	var cs []geoCase
	srcs := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}
	seen := map[netip.Prefix]bool{}
	grid := func(addrs []string, bits []int, qtype uint16) {
		for _, a := range addrs {
			for _, b := range bits {
				p := netip.PrefixFrom(netip.MustParseAddr(a), b).Masked()
				if seen[p] {
					continue
				}
				seen[p] = true
				src := srcs[len(cs)%len(srcs)]
				cs = append(cs, geoCase{what: fmt.Sprintf("ECS %s %s from %s", p, dns.TypeToString[qtype], src),
					src: src, name: geoName, qtype: qtype, edns: true, ecs: ecsData(p)})
			}
		}
	}
	grid([]string{"9.255.255.255", "10.0.0.0", "10.1.255.255", "10.2.0.0", "10.2.255.255", "10.3.0.0",
		"10.255.255.255", "11.0.0.0", "192.0.1.255", "192.0.2.0", "192.0.2.255", "192.0.3.0"},
		[]int{0, 7, 8, 9, 15, 16, 17, 24, 25, 32}, dns.TypeA)
	grid([]string{"2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db8::", "2001:db8:0:ffff::", "2001:db8:1::",
		"2001:db8:1:ffff:ffff:ffff:ffff:ffff", "2001:db8:2::", "2001:db9::"},
		[]int{0, 31, 32, 33, 47, 48, 56, 64, 128}, dns.TypeAAAA)
	// IPv4-mapped addresses in family 2, as a resolver writes its IPv4
	// clients (RFC 7871 6 leaves it to the resolver).
	grid([]string{"::ffff:10.2.9.0", "::ffff:11.0.0.0"}, []int{104, 112, 120, 128}, dns.TypeA)

	q := func(what, src, name string, qtype uint16, ecs []byte) geoCase {
		return geoCase{what: what, src: src, name: name, qtype: qtype, edns: ecs != nil, ecs: ecs}
	}
	pfx := func(s string) []byte { return ecsData(netip.MustParsePrefix(s)) }
	raw := func(family uint16, source, scope uint8, addr ...byte) []byte {
		return append([]byte{byte(family >> 8), byte(family), source, scope}, addr...)
	}
	for _, src := range srcs {
		cs = append(cs, q("no EDNS A from "+src, src, geoName, dns.TypeA, nil),
			q("no EDNS AAAA from "+src, src, geoName, dns.TypeAAAA, nil))
	}
	for _, src := range srcs[1:4] {
		cs = append(cs, q("ECS 0.0.0.0/0 AAAA from "+src, src, geoName, dns.TypeAAAA, pfx("0.0.0.0/0")),
			q("ECS ::/0 A from "+src, src, geoName, dns.TypeA, pfx("::/0")))
	}
	cs = append(cs,
		geoCase{what: "EDNS without ECS from 127.0.0.2", src: "127.0.0.2", name: geoName, qtype: dns.TypeA, edns: true},
		geoCase{what: "ECS 10.2.0.0/16 with DO", src: "127.0.0.1", name: geoName, qtype: dns.TypeA, edns: true, do: true, ecs: pfx("10.2.0.0/16")},
		geoCase{what: "ECS 2001:db8:1::/48 AAAA with DO", src: "127.0.0.3", name: geoName, qtype: dns.TypeAAAA, edns: true, do: true, ecs: pfx("2001:db8:1::/48")},
		geoCase{what: "ECS 10.5.0.0/24 www A with DO", src: "127.0.0.1", name: "www.geo.test.", qtype: dns.TypeA, edns: true, do: true, ecs: pfx("10.5.0.0/24")},
		// The other family's question.
		q("ECS 10.2.9.0/24 AAAA", "127.0.0.1", geoName, dns.TypeAAAA, pfx("10.2.9.0/24")),
		q("ECS 2001:db8:1::/48 A", "127.0.0.1", geoName, dns.TypeA, pfx("2001:db8:1::/48")),
		// Bits set beyond the source prefix (RFC 7871 6: they must be 0).
		q("ECS 10.2.0.0 as /12 (bits beyond the prefix)", "127.0.0.1", geoName, dns.TypeA, raw(1, 12, 0, 10, 2)),
		q("ECS 10.3.0.0 as /15 (bits beyond the prefix)", "127.0.0.1", geoName, dns.TypeA, raw(1, 15, 0, 10, 3)),
		q("ECS 10.2.9.0 as /22 (bits beyond the prefix)", "127.0.0.1", geoName, dns.TypeA, raw(1, 22, 0, 10, 2, 9)),
		q("ECS 2001:db8:1:: as /47 (bits beyond the prefix)", "127.0.0.1", geoName, dns.TypeAAAA, raw(2, 47, 0, 0x20, 0x01, 0x0d, 0xb8, 0, 1)),
		// A nonzero scope in a query (RFC 7871 6: it must be 0).
		q("ECS 10.2.9.0/24 scope 24 in the query", "127.0.0.1", geoName, dns.TypeA, raw(1, 24, 24, 10, 2, 9)),
		q("ECS 2001:db8:1::/48 scope 48 in the query", "127.0.0.1", geoName, dns.TypeAAAA, raw(2, 48, 48, 0x20, 0x01, 0x0d, 0xb8, 0, 1)),
		// Malformed: RFC 7871 6 and 7.1.2 (FORMERR).
		q("ECS family 3", "127.0.0.1", geoName, dns.TypeA, raw(3, 8, 0, 10)),
		q("ECS family 0 with a prefix", "127.0.0.1", geoName, dns.TypeA, raw(0, 8, 0, 10)),
		q("ECS family 0, /0 (as dig once sent)", "127.0.0.2", geoName, dns.TypeA, raw(0, 0, 0)),
		q("ECS family 1 /33", "127.0.0.1", geoName, dns.TypeA, raw(1, 33, 0, 10, 2, 9, 0, 0)),
		q("ECS family 2 /129", "127.0.0.1", geoName, dns.TypeAAAA, raw(2, 129, 0, make([]byte, 17)...)),
		q("ECS family 1 /24 with 4 address bytes", "127.0.0.1", geoName, dns.TypeA, raw(1, 24, 0, 10, 2, 9, 0)),
		q("ECS family 1 /24 with 2 address bytes", "127.0.0.1", geoName, dns.TypeA, raw(1, 24, 0, 10, 2)),
		q("ECS family 1 /128 with an IPv6 address", "127.0.0.1", geoName, dns.TypeA, raw(1, 128, 0, netip.MustParseAddr("2001:db8:1::").AsSlice()...)),
		q("ECS family 2 /56 with 16 address bytes", "127.0.0.1", geoName, dns.TypeAAAA, raw(2, 56, 0, netip.MustParseAddr("2001:db8:1::").AsSlice()...)),
		q("ECS family 2 /32 with an IPv4 address", "127.0.0.1", geoName, dns.TypeA, raw(2, 32, 0, 10, 2, 9, 0)),
		q("ECS shorter than its fixed part", "127.0.0.1", geoName, dns.TypeA, []byte{0, 1}),
		// Names that are not steered: scope 0.
		q("ECS 10.2.0.0/16 www A (static)", "127.0.0.1", "www.geo.test.", dns.TypeA, pfx("10.2.0.0/16")),
		q("ECS 2001:db8:1::/48 www AAAA (static)", "127.0.0.1", "www.geo.test.", dns.TypeAAAA, pfx("2001:db8:1::/48")),
		q("ECS 10.2.0.0/16 NODATA (static)", "127.0.0.1", "www.geo.test.", dns.TypeMX, pfx("10.2.0.0/16")),
		q("ECS 10.2.0.0/16 NXDOMAIN", "127.0.0.1", "nope.geo.test.", dns.TypeA, pfx("10.2.0.0/16")),
		q("ECS 10.2.0.0/16 apex SOA", "127.0.0.1", "geo.test.", dns.TypeSOA, pfx("10.2.0.0/16")),
		q("ECS 10.2.0.0/16 steered name NODATA (MX)", "127.0.0.1", geoName, dns.TypeMX, pfx("10.2.0.0/16")),
		q("ECS 192.0.2.0/24 AAAA (a region without IPv6 members)", "127.0.0.1", geoName, dns.TypeAAAA, pfx("192.0.2.0/24")),
		q("ECS 192.0.3.0/24 AAAA (beside the region without IPv6 members)", "127.0.0.1", geoName, dns.TypeAAAA, pfx("192.0.3.0/24")),
		q("no EDNS AAAA from the region without IPv6 members", "127.0.0.4", geoName, dns.TypeAAAA, nil),
		q("ECS 10.2.0.0/16 for a zone not served (REFUSED)", "127.0.0.1", "example.org.", dns.TypeA, pfx("10.2.0.0/16")),
		// A CNAME to the steered name.
		q("ECS 10.2.0.0/16 CNAME to the steered name", "127.0.0.1", "alias.geo.test.", dns.TypeA, pfx("10.2.0.0/16")),
		q("ECS 10.5.0.0/24 CNAME to the steered name", "127.0.0.1", "alias.geo.test.", dns.TypeA, pfx("10.5.0.0/24")),
		// 6to4 and Teredo addresses, which gdnsd reads as the IPv4
		// addresses they carry.
		q("ECS 2002:a02:900::/40 (6to4 of 10.2.9.0)", "127.0.0.1", geoName, dns.TypeAAAA, pfx("2002:a02:900::/40")),
	)
	return cs
}

// geoDeviation is why a case's answers differ between gdnsd and ringlb:
// a choice ringlb documents (gslb/README.md), or where gdnsd departs from
// RFC 7871, with its section.
type geoDeviation struct{ why string }

// geoDeviations are the cases whose answers differ from gdnsd's, by what,
// each with why.
func geoDeviations() map[string]geoDeviation {
	const (
		scopeInQuery = "gdnsd answers FORMERR for a nonzero scope in a query; RFC 7871 6 says a query's scope MUST be 0 but " +
			"sets no server action (its SHOULD FORMERR is for wrong address octets and bits beyond the prefix): ringlb " +
			"reads the option's network and ignores the scope (gslb/README.md, Traffic-managed names)"
		familyZero = "family 0 with prefix 0 and no address, as dig once sent: ringlb takes it as a /0 option, as BIND does " +
			"(gslb/README.md, Traffic-managed names); gdnsd answers FORMERR (an unknown family, RFC 7871 6)"
		cname = "ringlb follows a CNAME to the steered name in its zone and answers by region with the region's scope, " +
			"as it answers every in-zone CNAME (gslb/README.md: TestCNAMEToManagedNameAnswersByRegion); gdnsd answers the " +
			"CNAME alone, scope 0, as RFC 7871 7.2.1 says a server SHOULD. ringlb's scope holds for both records (the CNAME " +
			"is every client's): only narrower than the CNAME needs, never claiming another region's clients"
		sixToFour = "gdnsd reads the IPv4 address inside 6to4 (2002::/16), Teredo, IPv4-compatible and NAT64 addresses " +
			"and answers its net (west for 10.2.9.0); RFC 7871 asks none of it. ringlb reads only IPv4-mapped addresses " +
			"(::ffff:0:0/96) as IPv4, every other as IPv6 (gslb/README.md, Traffic-managed names)"
	)
	d := map[string]geoDeviation{
		"ECS family 0, /0 (as dig once sent)":       {familyZero},
		"ECS 10.2.0.0/16 CNAME to the steered name": {cname},
		"ECS 10.5.0.0/24 CNAME to the steered name": {cname},
		"ECS 2002:a02:900::/40 (6to4 of 10.2.9.0)":  {sixToFour},
		"ECS 10.2.9.0/24 scope 24 in the query":     {scopeInQuery},
		"ECS 2001:db8:1::/48 scope 48 in the query": {scopeInQuery},
	}
	return d
}

// geoExchange sends c over network from c.src to addr and returns the answer.
func geoExchange(c geoCase, network, addr string) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(c.name, c.qtype)
	if c.edns || c.ecs != nil || c.do {
		m.SetEdns0(1232, c.do)
		if c.ecs != nil {
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_LOCAL{Code: dns.EDNS0SUBNET, Data: c.ecs})
		}
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	if network == "tcp" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(c.src)}
	} else {
		d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(c.src)}
	}
	cl := &dns.Client{Net: network, UDPSize: dns.MaxMsgSize, Timeout: 5 * time.Second, Dialer: d}
	r, _, err := cl.Exchange(m, addr)
	return r, err
}

// geoECS is the Client Subnet option of r, nil when it has none.
func geoECS(r *dns.Msg) *dns.EDNS0_SUBNET {
	if o := r.IsEdns0(); o != nil {
		for _, e := range o.Option {
			if s, ok := e.(*dns.EDNS0_SUBNET); ok {
				return s
			}
		}
	}
	return nil
}

// geoRegionOf is the region whose addresses r answers: "" for none, "?"
// for addresses of no one region.
func geoRegionOf(r *dns.Msg) string {
	region := ""
	for _, rr := range r.Answer {
		var a string
		switch v := rr.(type) {
		case *dns.A:
			a = v.A.String()
		case *dns.AAAA:
			a = v.AAAA.String()
		default:
			continue
		}
		got := "?"
		for _, g := range geoRegions {
			if slices.Contains(g.addrs, a) {
				got = g.name
			}
		}
		if region != "" && region != got {
			return "?"
		}
		region = got
	}
	return region
}

// geoNormal is r as compared: the rcode, AA and TC; for an answer that is
// not FORMERR, the answer and authority sections as sorted records (names
// in lower case, TTLs kept), whether it has EDNS and DO, and its ECS
// option: family, source prefix, scope and address as echoed. Not
// compared: the ID, the question echoed, the OPT's UDP size (each
// server's own), additional records (neither adds any here).
func geoNormal(r *dns.Msg) string {
	var b strings.Builder
	fmt.Fprintf(&b, "rcode %s aa=%v tc=%v\n", dns.RcodeToString[r.Rcode], r.Authoritative, r.Truncated)
	if r.Rcode == dns.RcodeFormatError {
		return b.String()
	}
	fmt.Fprintf(&b, "region %q\n", geoRegionOf(r))
	for _, sec := range []struct {
		name string
		rrs  []dns.RR
	}{{"answer", r.Answer}, {"authority", r.Ns}} {
		var lines []string
		for _, rr := range sec.rrs {
			lines = append(lines, lowerNames(rr).String())
		}
		slices.Sort(lines)
		for _, l := range lines {
			fmt.Fprintf(&b, "%s %s\n", sec.name, l)
		}
	}
	if o := r.IsEdns0(); o != nil {
		fmt.Fprintf(&b, "edns do=%v\n", o.Do())
	}
	if e := geoECS(r); e != nil {
		fmt.Fprintf(&b, "ecs family %d source /%d scope /%d address %s\n", e.Family, e.SourceNetmask, e.SourceScope, e.Address)
	}
	return b.String()
}

// geoTable is geoNets as IPv6 prefixes (an IPv4 net as its IPv4-mapped
// addresses, ::ffff:0:0/96 and below), longest first: one address space
// in which the networks an ECS scope claims are checked.
func geoTable() []struct {
	p      netip.Prefix
	region string
} {
	var t []struct {
		p      netip.Prefix
		region string
	}
	for _, n := range geoNets {
		p := netip.MustParsePrefix(n.prefix)
		t = append(t, struct {
			p      netip.Prefix
			region string
		}{as6(p), n.region})
	}
	slices.SortStableFunc(t, func(a, b struct {
		p      netip.Prefix
		region string
	}) int {
		return b.p.Bits() - a.p.Bits()
	})
	return t
}

// as6 is p in IPv6: an IPv4 prefix as its IPv4-mapped addresses.
func as6(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4() {
		return netip.PrefixFrom(netip.AddrFrom16(p.Addr().As16()), p.Bits()+96)
	}
	return p
}

// geoSpec says what the configuration answers for the network n (in
// IPv6, as6) while the regions of down are down: the region serving its
// own address (that of the longest net holding all of n, else geoDefault;
// geoServed), and whether every client in n is served by that region —
// whether an answer may be cached for all of n.
func geoSpec(n netip.Prefix, down []string) (region string, uniform bool) {
	region = geoDefault
	table := geoTable()
	for _, g := range table {
		if g.p.Bits() <= n.Bits() && g.p.Contains(n.Addr()) {
			region = g.region
			break
		}
	}
	region = geoServed(region, down)
	for _, g := range table {
		// A longer net inside n served by another region: its clients
		// are in n but answered otherwise.
		if g.p.Bits() > n.Bits() && n.Contains(g.p.Addr()) && geoServed(g.region, down) != region {
			return region, false
		}
	}
	return region, true
}

// geoCheck checks r, a server's answer to c, against the configuration
// alone, and returns what is wrong, "" when nothing is: the region of the
// client (the ECS prefix, masked, unless /0; else the querier's address),
// and for an ECS answer of the steered name whose scope is not longer than
// the source prefix, that every client of the network the scope claims
// (RFC 7871 7.3.1: a resolver answers them all from it) has that region;
// a scope other than 0 for a name or type that is not steered, or for a /0
// source; no ECS option in the answer to a query with one (RFC 7871 7.2.1).
// A malformed option (geoWellFormed) must be answered FORMERR. The regions
// of down are down. narrow is set when the scope is narrower than the
// widest one that would be right (an inefficiency only: a resolver asks
// again for clients the answer holds for).
func geoCheck(c geoCase, r *dns.Msg, steered bool, down []string) (wrong string, narrow bool) {
	p, ok := geoWellFormed(c.ecs)
	if c.ecs != nil && !ok {
		if r.Rcode != dns.RcodeFormatError {
			return fmt.Sprintf("malformed ECS answered %s", dns.RcodeToString[r.Rcode]), false
		}
		return "", false
	}
	if r.Rcode == dns.RcodeFormatError {
		return "well-formed query answered FORMERR", false
	}
	e := geoECS(r)
	if c.ecs != nil && e == nil {
		return "no ECS option in the answer (RFC 7871 7.2.1: a server that takes ECS echoes it)", false
	}
	if !steered {
		if e != nil && e.SourceScope != 0 {
			return fmt.Sprintf("scope /%d for a name that is not steered", e.SourceScope), false
		}
		return "", false
	}
	client := as6(netip.PrefixFrom(netip.MustParseAddr(c.src), 32))
	if c.ecs != nil && p.Bits() > 0 {
		client = as6(p)
	}
	want, _ := geoSpec(netip.PrefixFrom(client.Addr(), 128), down)
	if got := geoRegionOf(r); len(r.Answer) > 0 && got != want {
		return fmt.Sprintf("region %s, want %s", got, want), false
	}
	if e == nil {
		return "", false
	}
	scope := int(e.SourceScope)
	if e.Family == 1 {
		scope += 96
	}
	if p.Bits() == 0 {
		if e.SourceScope != 0 {
			return fmt.Sprintf("scope /%d for a /0 source", e.SourceScope), false
		}
		return "", false
	}
	if e.SourceScope > e.SourceNetmask {
		// The resolver keeps it for this source prefix alone (RFC 7871
		// 7.3.1): no other network is claimed.
		return "", false
	}
	claimed := netip.PrefixFrom(client.Addr(), scope).Masked()
	if _, uniform := geoSpec(claimed, down); !uniform {
		shown := claimed.String()
		if claimed.Addr().Is4In6() && claimed.Bits() >= 96 {
			shown = netip.PrefixFrom(claimed.Addr().Unmap(), claimed.Bits()-96).String()
		}
		return fmt.Sprintf("scope /%d claims %s, which holds clients of another region", e.SourceScope, shown), false
	}
	if least := map[uint16]int{1: 96, 2: 0}[e.Family]; scope > least {
		wider := netip.PrefixFrom(client.Addr(), scope-1).Masked()
		if region, uniform := geoSpec(wider, down); uniform && region == want {
			return "", true
		}
	}
	return "", false
}

// geoWellFormed is the source prefix of the Client Subnet option data
// (RFC 7871 6), ok false when it is malformed: too short, a family but 1
// and 2, a prefix longer than the family's address, an address of other
// than ceil(prefix / 8) bytes or with a bit set beyond the prefix (a
// server SHOULD answer FORMERR). A scope in a query (which MUST be 0; RFC
// 7871 sets no server action) is taken as the option's, and so is family
// 0 with prefix 0 and no address (gslb/README.md: as BIND takes it).
func geoWellFormed(data []byte) (netip.Prefix, bool) {
	if len(data) < 4 {
		return netip.Prefix{}, false
	}
	family, bits, addr := int(data[0])<<8|int(data[1]), int(data[2]), data[4:]
	if n := len(addr); n > 0 && n == (bits+7)/8 && addr[n-1]&byte(0xff>>(bits-8*(n-1))) != 0 {
		return netip.Prefix{}, false
	}
	var a [16]byte
	var base netip.Addr
	switch family {
	case 0:
		if bits != 0 || len(addr) != 0 {
			return netip.Prefix{}, false
		}
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0), true
	case 1:
		if bits > 32 || len(addr) != (bits+7)/8 {
			return netip.Prefix{}, false
		}
		var b4 [4]byte
		copy(b4[:], addr)
		base = netip.AddrFrom4(b4)
	case 2:
		if bits > 128 || len(addr) != (bits+7)/8 {
			return netip.Prefix{}, false
		}
		copy(a[:], addr)
		base = netip.AddrFrom16(a)
	default:
		return netip.Prefix{}, false
	}
	p, _ := base.Prefix(bits)
	return p, true
}

// startGdnsd runs gdnsd 3 in the foreground (start) serving geo.test.:
// geoStatic and ide.geo.test. through its geoip plugin, one map of nets
// only (geoNets; no GeoIP database), its datacenters the regions with
// geoDefault first (a client no net holds gets the first), each always up
// (service_types up) but the regions of down, forced down in its
// admin_state file. Its config, zones, run and state directories in a
// directory of its own; run as nobody when the test runs as root (asNobody).
// It returns its address once it answers geo.test.'s SOA (runDNSPeer).
func startGdnsd(t *testing.T, gdnsd string, down []string) string {
	t.Helper()
	dir := t.TempDir()
	for _, sub := range []string{"zones", "run", "state"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	zone := geoStatic + "ide 30 DYNA geoip!ide\n"
	if err := os.WriteFile(filepath.Join(dir, "zones", "geo.test"), []byte(zone), 0o600); err != nil {
		t.Fatal(err)
	}
	var state strings.Builder
	for _, d := range down {
		fmt.Fprintf(&state, "geoip/ide/%s => DOWN\n", d)
	}
	if err := os.WriteFile(filepath.Join(dir, "state", "admin_state"), []byte(state.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cred := asNobody(t, dir)
	var dcs, nets, dcmap []string
	lists := map[string]string{}
	for _, g := range geoRegions {
		dcs = append(dcs, g.name)
		var v4, v6 []string
		for i, a := range g.addrs {
			kv := fmt.Sprintf("m%d => %s", i+1, a)
			if netip.MustParseAddr(a).Is4() {
				v4 = append(v4, kv)
			} else {
				v6 = append(v6, kv)
			}
		}
		addrs := "addrs_v4 => { " + strings.Join(v4, ", ") + " }"
		if len(v6) > 0 {
			addrs += ", addrs_v6 => { " + strings.Join(v6, ", ") + " }"
		}
		dcmap = append(dcmap, fmt.Sprintf("%s => { %s }", g.name, addrs))
		lists[g.name] = "[ " + strings.Join(append([]string{g.name}, g.failover...), ", ") + " ]"
	}
	for _, n := range geoNets {
		nets = append(nets, n.prefix+" => "+lists[n.region])
	}
	return runDNSPeer(t, "gdnsd", "geo.test.", nil, func(attempt, port int) *exec.Cmd {
		conf := filepath.Join(dir, "config")
		err := os.WriteFile(conf, []byte(fmt.Sprintf(`options => {
  listen => [ 127.0.0.1:%d ]
  run_dir => %s
  state_dir => %s
  udp_threads => 1
  tcp_threads => 1
}
plugins => { geoip => {
  maps => { geo => {
    datacenters => [ %s ]
    nets => { %s }
  } }
  resources => { ide => { map => geo, service_types => up, dcmap => { %s } } }
} }
`, port, filepath.Join(dir, "run"), filepath.Join(dir, "state"), strings.Join(dcs, ", "), strings.Join(nets, ", "), strings.Join(dcmap, ", "))), 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if cred != nil {
			if err := os.Chown(conf, int(cred.Uid), int(cred.Gid)); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command(gdnsd, "-c", dir, "start")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		return cmd
	})
}

// geoRinglbYAML is ringlb's configuration of the same: geo.test.'s static
// part from zone, ide.geo.test. with geoNets as its geo prefixes,
// geoDefault as its default region, every member always served but those
// of the regions of down (serve_mode no), TTL 30 failed over or not.
func geoRinglbYAML(zone string, down []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `gslb:
  listen: 127.0.0.1:0
  rate_limit: { responses_per_second: 0 }
  zones: [ { origin: geo.test, file: %q } ]
  names:
    - name: ide.geo.test
      ttl: 30
      failover_ttl: 30
      default_region: %s
      geo:
`, zone, geoDefault)
	for _, g := range geoRegions {
		var nets []string
		for _, n := range geoNets {
			if n.region == g.name {
				nets = append(nets, n.prefix)
			}
		}
		if len(nets) > 0 {
			fmt.Fprintf(&b, "        %s: [ %s ]\n", g.name, strings.Join(nets, ", "))
		}
	}
	b.WriteString("      regions:\n")
	for _, g := range geoRegions {
		var ms []string
		for i, a := range g.addrs {
			ms = append(ms, fmt.Sprintf("{ name: m%d, address: %s }", i+1, a))
		}
		mode := "always"
		if slices.Contains(down, g.name) {
			mode = "no"
		}
		fmt.Fprintf(&b, "        %s: { serve_mode: %s, failover: [ %s ], members: [ %s ] }\n", g.name, mode, strings.Join(g.failover, ", "), strings.Join(ms, ", "))
	}
	return b.String()
}

// TestGeoAgainstGdnsd compares ringlb's region choice and Client Subnet
// answers with gdnsd 3's (its geoip plugin, nets only) for one name steered
// by client network, as an operator moving it from gdnsd expects them:
// geoCorpus over UDP and TCP from loopback addresses, compared in
// geoNormal's form but for geoDeviations, and both servers' answers checked
// against the configuration (geoCheck): a wrong region or a scope claiming
// another region's clients is ringlb's fault, and is reported as gdnsd's
// for gdnsd.
func TestGeoAgainstGdnsd(t *testing.T) {
	if testing.Short() {
		t.Skip("a comparison of answers with another server's: not with -short")
	}
	bin := sbinPath("gdnsd")
	if bin == "" {
		t.Skip("gdnsd not installed (apt-get install gdnsd): no reference server to compare with")
	}
	corpus := geoCorpus()
	cases := map[string]bool{}
	for _, c := range corpus {
		if cases[c.what] {
			t.Fatalf("two cases named %q: a deviation would be either's", c.what)
		}
		cases[c.what] = true
	}
	devs := geoDeviations()
	for what := range devs {
		if !cases[what] {
			t.Fatalf("deviation %q names no case of the corpus", what)
		}
	}
	zone := filepath.Join(t.TempDir(), "geo.test.zone")
	if err := os.WriteFile(zone, []byte(geoStatic), 0o600); err != nil {
		t.Fatal(err)
	}
	// All up, then west (failing over to east) and south (with nowhere to
	// go: its own members all the same) down.
	for _, down := range [][]string{nil, {"west", "south"}} {
		name := "all up"
		if down != nil {
			name = strings.Join(down, " and ") + " down"
		}
		t.Run(name, func(t *testing.T) {
			peer := startGdnsd(t, bin, down)
			s := startGSLB(t, parseGSLBYAML(t, geoRinglbYAML(zone, down)))
			compareGeo(t, corpus, devs, down, peer, s.Addr())
		})
	}
}

// compareGeo sends corpus to gdnsd at peer and ringlb at addr, the regions
// of down being down in both, compares their answers (but for devs) and
// checks each against the configuration (geoCheck).
func compareGeo(t *testing.T, corpus []geoCase, devs map[string]geoDeviation, down []string, peer, addr string) {
	compared, alike, deviating := 0, 0, 0
	narrow := map[string]int{}
	gdnsdWrong := map[string]bool{}
	for _, c := range corpus {
		// ringlb follows a CNAME to the steered name in its zone; gdnsd
		// answers the CNAME alone.
		steeredBy := map[string]bool{"ringlb": c.name == geoName || c.name == "alias.geo.test.", "gdnsd": c.name == geoName}
		if c.qtype != dns.TypeA && c.qtype != dns.TypeAAAA {
			steeredBy["ringlb"], steeredBy["gdnsd"] = false, false
		}
		for _, network := range []string{"udp", "tcp"} {
			compared++
			got := map[string]string{}
			for _, srv := range []struct{ name, addr string }{{"gdnsd", peer}, {"ringlb", addr}} {
				r, err := geoExchange(c, network, srv.addr)
				var nerr net.Error
				switch {
				case errors.As(err, &nerr) && nerr.Timeout():
					got[srv.name] = "no answer\n"
					continue
				case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
					got[srv.name] = "connection closed without an answer\n"
					continue
				case err != nil && r == nil:
					got[srv.name] = "error: " + err.Error() + "\n"
					continue
				}
				got[srv.name] = geoNormal(r)
				wrong, nar := geoCheck(c, r, steeredBy[srv.name], down)
				switch {
				case wrong != "" && srv.name == "ringlb":
					t.Errorf("ringlb fault: %s over %s: %s\n%s", c.what, network, wrong, got[srv.name])
				case wrong != "":
					gdnsdWrong[c.what+" over "+network+": "+wrong] = true
				case nar:
					narrow[srv.name]++
				}
			}
			if got["gdnsd"] == got["ringlb"] {
				alike++
				continue
			}
			if d, ok := devs[c.what]; ok {
				deviating++
				t.Logf("%s over %s: differs as documented: %s", c.what, network, d.why)
				continue
			}
			t.Errorf("%s (%s %s from %s) over %s:\ngdnsd:\n%sringlb:\n%s", c.what, c.name, dns.TypeToString[c.qtype], c.src, network, got["gdnsd"], got["ringlb"])
		}
	}
	for _, w := range slices.Sorted(func(yield func(string) bool) {
		for k := range gdnsdWrong {
			if !yield(k) {
				return
			}
		}
	}) {
		t.Logf("gdnsd, against the configuration: %s", w)
	}
	t.Logf("%d answers compared with gdnsd: %d alike, %d differing as documented (geoDeviations), %d differing otherwise (failures above)",
		compared, alike, deviating, compared-alike-deviating)
	t.Logf("scopes narrower than the configuration allows (inefficient, not wrong): gdnsd %d, ringlb %d", narrow["gdnsd"], narrow["ringlb"])
}
