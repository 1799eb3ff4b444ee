package gslb

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// ecsAnswer asks name A with ECS addr/24 over UDP; it returns the answer's
// addresses and the scope the server claims them valid for.
func ecsAnswer(t *testing.T, s *Server, name, addr string) (string, int) {
	t.Helper()
	return scopedAnswer(t, query(t, s, "udp", name, dns.TypeA, ecs(addr, 24)), fmt.Sprintf("%s/24", addr))
}

// scopedAnswer is m's addresses and the scope its ECS option claims them
// valid for; asked names the ECS the query sent.
func scopedAnswer(t *testing.T, m *dns.Msg, asked string) (string, int) {
	t.Helper()
	for _, o := range m.IsEdns0().Option {
		if e, ok := o.(*dns.EDNS0_SUBNET); ok {
			return answerIPs(m), int(e.SourceScope)
		}
	}
	t.Fatalf("ECS %s: no ECS in the answer %v", asked, m)
	return "", 0
}

// A resolver with EDNS Client Subnet caches an answer for every client in
// the network the scope names (RFC 7871 7.3.1). The scope must therefore
// leave out every network another region answers: east is 10.0.0.0/8 but
// west 10.2.0.0/16 inside it, and the default region (east) answers the
// rest. Each answer is checked as a resolver would use it: a client inside
// the claimed network gets the same answer when it asks itself.
func TestECSScopeCoversOnlyTheRegion(t *testing.T) {
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	cfg := parseGSLB(t, "", east.addr(), west.addr())
	cfg.Names[0].Geo = map[string][]string{"east": {"10.0.0.0/8", "127.0.0.1/32"}, "west": {"10.2.0.0/16", "127.0.0.2/32", "192.168.7.0/24"}}
	s := cnameToManagedConfig2(t, cfg)
	for _, c := range []struct{ client, inside, want string }{
		{"10.5.0.0", "10.2.9.0", "192.0.2.1"},       // east's /8, around west's /16
		{"10.2.9.0", "10.2.200.0", "192.0.2.2"},     // west's /16
		{"11.0.0.0", "10.2.9.0", "192.0.2.1"},       // no prefix: the default region
		{"192.168.6.0", "192.168.7.0", "192.0.2.1"}, // no prefix, next to west's /24
	} {
		for _, name := range []string{"ide.ringlb.test.", "app.ringlb.test."} {
			got, scope := ecsAnswer(t, s, name, c.client)
			if got != c.want {
				t.Errorf("%s for %s: %s, want %s", name, c.client, got, c.want)
				continue
			}
			claimed := netip.PrefixFrom(netip.MustParseAddr(c.client), scope).Masked()
			t.Logf("%s for %s/24: %s, scope /%d (%s)", name, c.client, got, scope, claimed)
			inside := netip.MustParseAddr(c.inside)
			if !claimed.Contains(inside) {
				continue // the scope leaves the other network out
			}
			if other, _ := ecsAnswer(t, s, name, c.inside); other != got {
				t.Errorf("%s for %s: %s with scope /%d, claimed for %s, but %s gets %s", name, c.client, got, scope, claimed, c.inside, other)
			}
		}
	}
}

func TestECSScopeIPv6(t *testing.T) {
	nv := &nameView{deflt: "east", geo: []geoEntry{
		{netip.MustParsePrefix("2001:db8:0:200::/56"), "west"},
		{netip.MustParsePrefix("10.2.0.0/16"), "west"},
		{netip.MustParsePrefix("2001:db8::/32"), "east"},
	}}
	for _, c := range []struct {
		client string
		want   int
	}{
		{"2001:db8:0:300::", 56}, // east's /32; west's /56 shares 55 bits with it
		{"2001:db8:1::", 48},     // east's /32; shares 47 bits with west's /56
		{"2001:db9::", 32},       // the default (east); shares 31 bits with west's /56
		{"2001:db8:0:2ff::", 56}, // west's /56 itself
		{"10.3.0.0", 16},         // the default, next to west's 10.2.0.0/16
	} {
		a := netip.MustParseAddr(c.client)
		region, bits := nv.clientRegion(a)
		if got := nv.ecsScope(a, region, bits); got != c.want {
			t.Errorf("%s (%s /%d): scope /%d, want /%d", c.client, region, bits, got, c.want)
		}
	}
}

// ECS with a source prefix of 0 carries no client information: a client
// opted out (RFC 7871 7.1.2), and its resolver passes the /0 on. The answer
// is then the querier's own — as without ECS — with scope 0, the answer a
// resolver keeps for /0 queries alone, not the default region's for
// address 0.0.0.0 nor a scope naming a network no client is in.
func TestECSSourcePrefixZero(t *testing.T) {
	s := startGSLB(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""))
	for _, c := range []struct{ src, want string }{{"127.0.0.1", "192.0.2.1"}, {"127.0.0.2", "192.0.2.2"}} {
		m := queryFrom(t, s, "udp", c.src, "ide.ringlb.test.", dns.TypeA, ecs("0.0.0.0", 0))
		var e *dns.EDNS0_SUBNET
		for _, o := range m.IsEdns0().Option {
			e, _ = o.(*dns.EDNS0_SUBNET)
		}
		if got := answerIPs(m); got != c.want || e == nil || e.SourceNetmask != 0 || e.SourceScope != 0 {
			t.Errorf("from %s with ECS /0: %s, ECS %v; want %s, scope 0", c.src, got, e, c.want)
		}
	}
}

// With max_answers the subset answered is rotated by the client's /24
// (/56): the answer then depends on that network, and the scope must say
// so, or a resolver gives the first asker's subset to every client of the
// region (or, for the default region, to all its clients) and the rotation
// spreads nothing — and whoever asks first chooses the member they all get.
func TestECSScopeWithMaxAnswers(t *testing.T) {
	cfg := fuzzConfig(t)
	cfg.Names[0].MaxAnswers = 1
	east := cfg.Names[0].Regions["east"]
	east.Members = append(slices.Clone(east.Members), configs.Member{Name: "bal-3", Address: "192.0.2.11", ServeMode: configs.ServeAlways})
	cfg.Names[0].Regions["east"] = east
	s := startGSLB(t, cfg)
	checked := 0
	for i := range 8 {
		for _, c := range []struct{ client, inside string }{
			{fmt.Sprintf("10.1.%d.0", i), fmt.Sprintf("10.1.%d.0", 100+i)}, // east's 10.1.0.0/16
			{fmt.Sprintf("11.0.%d.0", i), fmt.Sprintf("11.0.%d.0", 100+i)}, // the default region (east)
		} {
			got, scope := ecsAnswer(t, s, "ide.ringlb.test.", c.client)
			claimed := netip.PrefixFrom(netip.MustParseAddr(c.client), scope).Masked()
			if !claimed.Contains(netip.MustParseAddr(c.inside)) {
				continue
			}
			checked++
			if other, _ := ecsAnswer(t, s, "ide.ringlb.test.", c.inside); other != got {
				t.Errorf("for %s: %s with scope /%d, claimed for %s, but %s gets %s", c.client, got, scope, claimed, c.inside, other)
			}
		}
	}
	t.Logf("%d answers claimed for a network holding another client's", checked)
}

// ecs6Answer asks name A with ECS family 2 (IPv6), addr/bits, as a resolver
// does that writes its IPv4 clients as IPv4-mapped IPv6 addresses
// (::ffff:a.b.c.d/120); it returns the answer's addresses and scope.
func ecs6Answer(t *testing.T, s *Server, name, addr string, bits uint8) (string, int) {
	t.Helper()
	m := query(t, s, "udp", name, dns.TypeA, func(m *dns.Msg) {
		m.SetEdns0(1232, false)
		m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 2, SourceNetmask: bits, Address: netip.MustParseAddr(addr).AsSlice()})
	})
	return scopedAnswer(t, m, fmt.Sprintf("%s/%d", addr, bits))
}

// The scope is a length in the ECS option's family: a resolver keeps an
// answer for the IPv6 network of that length around its client (RFC 7871
// 7.3.1). An IPv4-mapped address in family 2 is answered by the IPv4 geo
// prefixes, so its scope must count the 96 bits of ::ffff:0:0/96 too: an
// IPv4 length alone claimed a network of IPv6 that holds every mapped
// address — every IPv4 client of a resolver that writes them so — and a
// native IPv6 client's answer, decided without the IPv4 prefixes, must not
// claim the mapped ones either (scope 0 did, for the default region).
func TestECSScopeOfMappedAddresses(t *testing.T) {
	s := startGSLB(t, fuzzConfig(t)) // east 10.1.0.0/16 and 127.0.0.1, west 10.2.0.0/16 and 127.0.0.2, default east
	for _, c := range []struct {
		client string
		bits   uint8
		inside []string // other clients of the same resolver
	}{
		{"::ffff:10.2.9.0", 120, []string{"::ffff:10.1.9.0", "::ffff:11.0.0.0"}}, // west's 10.2.0.0/16
		{"::ffff:10.1.9.0", 120, []string{"::ffff:10.2.9.0", "::ffff:11.0.0.0"}}, // east's 10.1.0.0/16
		{"::ffff:11.0.0.0", 120, []string{"::ffff:10.2.9.0", "::ffff:10.3.0.0"}}, // the default region
		{"2001:db8::", 56, []string{"::ffff:10.2.9.0", "2001:db8:1::"}},          // native IPv6: the default region
	} {
		got, scope := ecs6Answer(t, s, "ide.ringlb.test.", c.client, c.bits)
		claimed := netip.PrefixFrom(netip.MustParseAddr(c.client), scope).Masked()
		t.Logf("%s/%d: %s, scope /%d (%s)", c.client, c.bits, got, scope, claimed)
		for _, in := range c.inside {
			inside := netip.MustParseAddr(in)
			if !claimed.Contains(inside) {
				continue
			}
			bits := uint8(120)
			if !inside.Is4In6() {
				bits = 56
			}
			if other, _ := ecs6Answer(t, s, "ide.ringlb.test.", in, bits); other != got {
				t.Errorf("%s: %s with scope /%d, claimed for %s, but %s gets %s", c.client, got, scope, claimed, in, other)
			}
		}
	}
}

// A resolver keys what it caches on the ECS source prefix (RFC 7871 7.3.1),
// and the address bits beyond it are not its client's: they must be zero,
// and a server receiving an option with any set SHOULD return FORMERR, a
// signal to the option's writer to fix it (RFC 7871 6), as gdnsd does.
// 10.2.9.0 sent as a /8 chose west (10.2.0.0/16) at first, and a resolver
// kept west for the /8 it asked for — for east's clients too; then the
// bits were masked off and the option answered as the network it names
// (TestGeoAgainstGdnsd: 8 answers where gdnsd said FORMERR). Now FORMERR,
// over UDP and TCP, and the same option without those bits is answered.
func TestECSBitsBeyondTheSourcePrefixFormErr(t *testing.T) {
	s := startGSLB(t, fuzzConfig(t)) // east 10.1.0.0/16, west 10.2.0.0/16, default east
	for _, c := range []struct {
		what       string
		family     uint16
		bits       uint8
		addr, bare []byte // with bits beyond the prefix, and without
	}{
		// The address is the prefix's bytes (ceil(prefix / 8)): more is
		// FORMERR too (TestECSMalformedFormErr), so the bits beyond are the
		// last byte's.
		{"10.2.0.0 as a /12", 1, 12, []byte{10, 2}, []byte{10, 0}},
		{"10.2.9.0 as a /22", 1, 22, []byte{10, 2, 9}, []byte{10, 2, 8}},
		{"::ffff:10.2.0.0 as a /108", 2, 108, netip.MustParseAddr("::ffff:10.2.0.0").AsSlice()[:14], netip.MustParseAddr("::ffff:10.0.0.0").AsSlice()[:14]},
		{"2001:db8:1:: as a /47", 2, 47, []byte{0x20, 0x01, 0x0d, 0xb8, 0, 1}, []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0}},
	} {
		for _, network := range []string{"udp", "tcp"} {
			if m := query(t, s, network, "ide.ringlb.test.", dns.TypeA, rawECS(c.family, c.bits, c.addr...)); m.Rcode != dns.RcodeFormatError || len(m.Answer) != 0 {
				t.Errorf("%s over %s: %s with %d answers, want FORMERR", c.what, network, dns.RcodeToString[m.Rcode], len(m.Answer))
			}
			if m := query(t, s, network, "ide.ringlb.test.", dns.TypeA, rawECS(c.family, c.bits, c.bare...)); m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
				t.Errorf("%s without the bits beyond, over %s: %s with %d answers, want an answer", c.what, network, dns.RcodeToString[m.Rcode], len(m.Answer))
			}
		}
	}
}

// A negative answer is cached by resolvers as for every client, whatever
// its scope (RFC 7871 7.4: an authoritative server SHOULD set the scope
// so, 0). A steered name has no record of a type other than A and AAAA in
// any region: its NODATA for MX or TXT is every client's, and its scope 0.
// Before, it carried the region's scope (/16 for 10.2.3.0/24, west), so a
// resolver honouring it asked again for every network (gdnsd: 0;
// TestGeoAgainstGdnsd). Now 0, while the A answer keeps its region's scope.
func TestECSScopeZeroForTheSteeredNamesNODATA(t *testing.T) {
	s := startGSLB(t, fuzzConfig(t)) // east 10.1.0.0/16, west 10.2.0.0/16, default east
	for _, qtype := range []uint16{dns.TypeMX, dns.TypeTXT, dns.TypeA} {
		for _, network := range []string{"udp", "tcp"} {
			m := query(t, s, network, "ide.ringlb.test.", qtype, ecs("10.2.3.0", 24))
			_, scope := scopedAnswer(t, m, "10.2.3.0/24")
			switch {
			case m.Rcode != dns.RcodeSuccess:
				t.Errorf("%s over %s: %s", dns.TypeToString[qtype], network, dns.RcodeToString[m.Rcode])
			case qtype == dns.TypeA && scope != 16:
				t.Errorf("A over %s: scope /%d, want west's /16", network, scope)
			case qtype != dns.TypeA && (len(m.Answer) != 0 || scope != 0):
				t.Errorf("%s over %s: %d answers, scope /%d; want a NODATA with scope 0", dns.TypeToString[qtype], network, len(m.Answer), scope)
			}
		}
	}
}

// A server that takes ECS echoes the option in its answer to a query
// carrying one, "regardless of whether the client information was needed"
// (RFC 7871 7.2.1: MUST), scope 0 when it was not. Before, ringlb's
// refusals — a zone it does not serve, a class but IN, a transfer over UDP
// — left it out (gdnsd echoes it; TestGeoAgainstGdnsd); now each carries
// it, with scope 0, over UDP and TCP.
func TestECSEchoedInRefusals(t *testing.T) {
	s := startGSLB(t, fuzzConfig(t))
	for _, c := range []struct {
		what  string
		name  string
		qtype uint16
		edit  func(*dns.Msg)
	}{
		{"a zone not served", "example.org.", dns.TypeA, nil},
		{"class CH", "ide.ringlb.test.", dns.TypeA, func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }},
		{"IXFR over UDP", "ringlb.test.", dns.TypeIXFR, nil},
	} {
		for _, network := range []string{"udp", "tcp"} {
			if c.qtype == dns.TypeIXFR && network == "tcp" {
				continue // a transfer over TCP is served (or refused) by serveTransfer
			}
			m := query(t, s, network, c.name, c.qtype, func(m *dns.Msg) {
				ecs("10.2.3.0", 24)(m)
				if c.edit != nil {
					c.edit(m)
				}
			})
			var e *dns.EDNS0_SUBNET
			if o := m.IsEdns0(); o != nil {
				for _, opt := range o.Option {
					if x, ok := opt.(*dns.EDNS0_SUBNET); ok {
						e = x
					}
				}
			}
			if m.Rcode != dns.RcodeRefused || e == nil || e.SourceNetmask != 24 || e.SourceScope != 0 || !net.IP(e.Address).Equal(net.ParseIP("10.2.3.0")) {
				t.Errorf("%s over %s: %s, ECS %v; want REFUSED with 10.2.3.0/24 echoed, scope 0", c.what, network, dns.RcodeToString[m.Rcode], e)
			}
		}
	}
}
