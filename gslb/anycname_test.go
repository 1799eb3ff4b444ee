package gslb

import (
	"slices"
	"testing"

	"github.com/miekg/dns"
)

// ANY at a name that owns a CNAME is answered with the CNAME RRset, not
// followed, signed with DO: RFC 8482 4.2 allows the synthesised HINFO only
// where no CNAME is at the owner, and NSD and Knot answer the CNAME (the
// differential test's "ANY at a CNAME" cases). Before, every such name got
// the HINFO — a CNAME and other data at one owner, a CNAME to a managed name,
// a wildcard CNAME, over UDP and TCP, with DO signed — 40 of 40 answers here.
func TestANYAtACNAMEAnswersTheCNAME(t *testing.T) {
	ksk, zsk := testKeys(t)
	cfg := withCNAMEToManaged(gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""))
	cfg.Zones[0].Records = append(cfg.Zones[0].Records,
		"www 3600 IN A 192.0.2.80",
		"docs 3600 IN CNAME www",
		"alias2 3600 IN CNAME docs",
		"away 3600 IN CNAME example.org.",
		"*.wc 3600 IN CNAME www")
	s := startGSLB(t, signed(cfg, ksk, zsk))
	keys := dnskeys(t, s)
	wrong := 0
	for _, tc := range []struct{ name, target string }{
		{"docs.ringlb.test.", "www.ringlb.test."},
		{"alias2.ringlb.test.", "docs.ringlb.test."},
		{"app.ringlb.test.", "ide.ringlb.test."}, // to the managed name
		{"away.ringlb.test.", "example.org."},
		{"host.wc.ringlb.test.", "www.ringlb.test."}, // the wildcard's, as the name asked
	} {
		for _, network := range []string{"udp", "udp", "tcp"} { // UDP twice: the loop's cache too
			for _, do := range []bool{false, true} {
				m := query(t, s, network, tc.name, dns.TypeANY, func(m *dns.Msg) { m.SetEdns0(1232, do) })
				var types []uint16
				for _, rr := range m.Answer {
					types = append(types, rr.Header().Rrtype)
				}
				want := []uint16{dns.TypeCNAME}
				if do {
					want = append(want, dns.TypeRRSIG)
				}
				cname := rrsOf(m.Answer, dns.TypeCNAME)
				if m.Rcode != dns.RcodeSuccess || !m.Authoritative || !slices.Equal(types, want) || len(m.Ns) != 0 ||
					cname[0].Header().Name != tc.name || cname[0].(*dns.CNAME).Target != tc.target {
					wrong++
					t.Errorf("ANY at %s over %s, DO %v: want the CNAME to %s alone (signed with DO), got %s AA %v:\n%v",
						tc.name, network, do, tc.target, dns.RcodeToString[m.Rcode], m.Authoritative, m)
					continue
				}
				if do {
					checkSigned(t, m, keys)
				}
			}
		}
	}
	if wrong > 0 {
		t.Logf("%d of 30 answers to ANY at a CNAME were not the CNAME", wrong)
	}
}
