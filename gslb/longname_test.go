package gslb

import (
	"bytes"
	"testing"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// wireName is the presentation form of a name built from labels (raw
// octets, first label first) under ringlb.test.
func wireName(t *testing.T, labels ...[]byte) string {
	t.Helper()
	var wire []byte
	for _, l := range labels {
		wire = append(append(wire, byte(len(l))), l...)
	}
	wire = append(wire, 6, 'r', 'i', 'n', 'g', 'l', 'b', 4, 't', 'e', 's', 't', 0)
	name, _, err := dns.UnpackDomainName(wire, 0)
	if err != nil {
		t.Fatalf("%x: %v", wire, err)
	}
	return name
}

// wireLen is name's length on the wire.
func wireLen(t *testing.T, name string) int {
	t.Helper()
	buf := make([]byte, 300)
	n, err := dns.PackDomainName(name, buf, 0, nil, false)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return n
}

// fill is labels of 63 octets of c, then one that brings the name under
// ringlb.test. to total octets on the wire, its last octet last (the name's
// first label is the short one).
func fill(total int, c byte, last []byte) [][]byte {
	rest := total - 13 - (len(last) + 1)
	var labels [][]byte
	for rest > 0 {
		n := min(63, rest-1)
		labels = append(labels, bytes.Repeat([]byte{c}, n))
		rest -= n + 1
	}
	return append([][]byte{last}, labels...)
}

// A name of 254 or 255 octets that does not exist, asked with DO in a
// signed zone: its compact NSEC's next name is the name's successor, and
// "\000." in front of it, as for a shorter name, makes 256 or 257 octets —
// a name no DNS message may carry. Such answers did not parse in any client
// (miekg/dns: "domain name exceeded 255 wire-format octets"), over UDP and
// TCP; a resolver that gets one counts it against the server. The next
// name must be the name's immediate successor in canonical order, within
// 255 octets (RFC 4471 3.1.2, which RFC 9824 points to), and the answer
// must parse and validate.
func TestLongNamesGetNSECsThatParse(t *testing.T) {
	ksk, zsk := testKeys(t)
	s := startGSLB(t, signed(gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""), ksk, zsk))
	keys := dnskeys(t, s)
	a63 := bytes.Repeat([]byte{'a'}, 63)
	ff63 := bytes.Repeat([]byte{0xff}, 63)
	// under is the name's first label above labels of 'a' to total octets.
	under := func(total int, first []byte) [][]byte { return fill(total, 'a', first)[1:] }
	name := func(first []byte, rest [][]byte) string { return wireName(t, append([][]byte{first}, rest...)...) }
	r253, r254, r255 := under(253, []byte("x")), under(254, []byte("x")), under(255, []byte("xy"))
	r255ff := under(255, []byte("x\xff\xff"))
	for _, c := range []struct {
		what       string
		name, want string
	}{
		{"253 octets: a \\000 label in front", name([]byte("x"), r253), `\000.` + name([]byte("x"), r253)},
		{"254 octets: a zero octet after the first label", name([]byte("x"), r254), name([]byte("x\x00"), r254)},
		{"255 octets: the first label's last octet incremented", name([]byte("xy"), r255), name([]byte("xz"), r255)},
		{"255 octets: octets 0xff dropped", name([]byte("x\xff\xff"), r255ff), name([]byte("y"), r255ff)},
		{"255 octets: no upper-case successor", name([]byte("x@"), r255), name([]byte("x["), r255)},
		{"254 octets, first label of 63", wireName(t, a63, a63, a63, bytes.Repeat([]byte{'a'}, 48)), wireName(t, append(bytes.Repeat([]byte{'a'}, 62), 'b'), a63, a63, bytes.Repeat([]byte{'a'}, 48))},
		{"255 octets, first label all 0xff: its parent's successor", wireName(t, ff63, a63[:62], a63, bytes.Repeat([]byte{'a'}, 50)), wireName(t, append(bytes.Repeat([]byte{'a'}, 62), 0), a63, bytes.Repeat([]byte{'a'}, 50))},
	} {
		octets := wireLen(t, c.name)
		for _, network := range []string{"udp", "tcp"} {
			t.Run(network+"/"+c.what, func(t *testing.T) {
				if want := wireLen(t, c.want); octets < 253 || octets > 255 || want > 255 {
					t.Fatalf("the test's names: %d and %d octets", octets, want)
				}
				m := new(dns.Msg)
				m.SetQuestion(c.name, dns.TypeA)
				withDO(false)(m)
				cl := &dns.Client{Net: network}
				r, _, err := cl.Exchange(m, s.Addr())
				if err != nil {
					t.Fatalf("%d-octet name: the answer does not parse: %v", octets, err)
				}
				nsec := nsecOf(r)
				if r.Rcode != dns.RcodeSuccess || nsec == nil {
					t.Fatalf("%s, NSEC %v; want NOERROR with a compact NSEC:\n%v", dns.RcodeToString[r.Rcode], nsec, r)
				}
				if !dns.IsSubDomain(nsec.Hdr.Name, c.name) || !dns.IsSubDomain(c.name, nsec.Hdr.Name) {
					t.Errorf("NSEC owner %s, want the name asked", nsec.Hdr.Name)
				}
				if nsec.NextDomain != c.want {
					t.Errorf("next name\n%s, want\n%s", nsec.NextDomain, c.want)
				}
				if canonicalCompare(c.name, nsec.NextDomain) >= 0 {
					t.Errorf("next name %s not after %s", nsec.NextDomain, c.name)
				}
				checkSigned(t, r, keys)
			})
		}
	}
}

// A query for type NSEC at a name that does not exist: in a NODATA its
// proof was the NSEC at that name, whose own bitmap lists NSEC — the proof
// contradicted the answer, and a validator found it bogus (delv: "no valid
// RRSIG"). Answered as at a name that exists: the NSEC itself, in the
// answer section, which validates.
func TestNSECQueryForANameThatDoesNotExist(t *testing.T) {
	ksk, zsk := testKeys(t)
	s := startGSLB(t, signed(gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""), ksk, zsk))
	r := query(t, s, "udp", "nope.ringlb.test.", dns.TypeNSEC, withDO(false))
	if len(r.Answer) == 0 {
		t.Errorf("NSEC at a name that does not exist: nothing in the answer section:\n%v", r)
	}
	checkSigned(t, r, dnskeys(t, s))
	key, _, err := configs.ReadDNSSECKey(ksk, "ringlb.test")
	if err != nil {
		t.Fatal(err)
	}
	out := delvRun(t, s, key, "127.0.0.1", "nope.ringlb.test", "NSEC")
	t.Logf("delv: %s", firstLine(out))
	validated(t, out, false, `\000.nope.ringlb.test. RRSIG NSEC TYPE128`)
}
