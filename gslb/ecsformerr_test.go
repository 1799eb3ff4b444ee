package gslb

import (
	"testing"

	"github.com/miekg/dns"
)

// rawECS is a query edit: EDNS with a Client Subnet option of the bytes
// given (family, source prefix, scope 0, address), however wrong: miekg/dns
// packs only well-formed ones, so they go as a raw option of code 8.
func rawECS(family uint16, source uint8, addr ...byte) func(*dns.Msg) {
	return func(m *dns.Msg) {
		m.SetEdns0(1232, false)
		data := append([]byte{byte(family >> 8), byte(family), source, 0}, addr...)
		m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_LOCAL{Code: dns.EDNS0SUBNET, Data: data})
	}
}

// An ECS option whose address is not the source prefix's bytes — more or
// fewer than ceil(prefix / 8) —, whose family is neither IPv4 (1) nor IPv6
// (2), or whose prefix is longer than its family's address, is answered
// FORMERR (RFC 7871 6 and 7.1.2; as BIND, which takes family 0 only with
// prefix 0 and no address). Over UDP and TCP. Before, the wrong address
// lengths were answered as if the option were well formed (miekg/dns pads
// or cuts the address to the family's size): a resolver's bug, or a probe,
// was read as some client's network.
func TestECSMalformedFormErr(t *testing.T) {
	s := startGSLB(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""))
	bad := []struct {
		name string
		edit func(*dns.Msg)
	}{
		{"IPv4 /24 with 4 address bytes", rawECS(1, 24, 10, 2, 9, 0)},
		{"IPv4 /24 with 2 address bytes", rawECS(1, 24, 10, 2)},
		{"IPv4 /0 with 1 address byte", rawECS(1, 0, 10)},
		{"IPv6 /56 with 16 address bytes", rawECS(2, 56, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)},
		{"IPv6 /56 with 6 address bytes", rawECS(2, 56, 0x20, 0x01, 0x0d, 0xb8, 0, 0)},
		{"IPv4 /33", rawECS(1, 33, 10, 2, 9, 0, 0)},
		{"IPv6 /129", rawECS(2, 129, make([]byte, 17)...)},
		{"family 3", rawECS(3, 8, 10)},
		{"family 0 with a prefix", rawECS(0, 8, 10)},
		{"IPv4 /22, bits beyond the prefix set", rawECS(1, 22, 10, 2, 9)},
		{"shorter than its fixed part", func(m *dns.Msg) {
			m.SetEdns0(1232, false)
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_LOCAL{Code: dns.EDNS0SUBNET, Data: []byte{0, 1}})
		}},
	}
	good := []struct {
		name string
		edit func(*dns.Msg)
	}{
		{"IPv4 /24", rawECS(1, 24, 10, 2, 9)},
		{"IPv4 /0", rawECS(1, 0)},
		{"family 0, /0", rawECS(0, 0)},
		{"IPv6 /56", rawECS(2, 56, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0)},
	}
	for _, network := range []string{"udp", "tcp"} {
		formerr := 0
		for _, tt := range bad {
			m := query(t, s, network, "ide.ringlb.test.", dns.TypeA, tt.edit)
			if m.Rcode == dns.RcodeFormatError && len(m.Answer) == 0 {
				formerr++
				continue
			}
			t.Errorf("%s %s: %s with %d answers, want FORMERR", network, tt.name, dns.RcodeToString[m.Rcode], len(m.Answer))
		}
		t.Logf("%s: malformed ECS options answered FORMERR: %d of %d", network, formerr, len(bad))
		for _, tt := range good {
			if m := query(t, s, network, "ide.ringlb.test.", dns.TypeA, tt.edit); m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
				t.Errorf("%s %s: %s with %d answers, want an answer", network, tt.name, dns.RcodeToString[m.Rcode], len(m.Answer))
			}
		}
	}
}
