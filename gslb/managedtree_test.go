package gslb

import (
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// managedTreeYAML manages two names deeper in the zone: app.eu, whose
// parent holds no record, and app.wild, below a wildcard that holds an
// address and a TXT record. Members are always served: no monitor.
const managedTreeYAML = `gslb:
  listen: 127.0.0.1:0
  rate_limit: { responses_per_second: 0 }
  zones:
    - origin: ringlb.test
      records:
        - "@ 3600 IN SOA ns1 hostmaster 2026120601 7200 3600 1209600 60"
        - "@ 3600 IN NS ns1"
        - "ns1 3600 IN A 192.0.2.53"
        - "*.wild 3600 IN A 192.0.2.99"
        - "*.wild 3600 IN TXT \"wildcard\""
  names:
    - name: app.eu.ringlb.test
      ttl: 30
      default_region: east
      regions:
        east: { serve_mode: always, members: [ { name: bal-1, address: 192.0.2.1 } ] }
    - name: app.wild.ringlb.test
      ttl: 30
      default_region: east
      regions:
        east: { serve_mode: always, members: [ { name: bal-2, address: 192.0.2.2 } ] }
`

// A managed name exists in its zone's tree as a name of the zone file
// does (RFC 1034 4.3.2, RFC 4592): the names between it and the apex are
// empty non-terminals (NODATA), and a wildcard above it answers neither
// for it nor for the names below it (it is their closest encloser: they
// do not exist). Before, the tree knew only the zone file's names: eu
// was NXDOMAIN — signed, a proof that nothing exists below it, so a
// resolver minimising its questions (RFC 9156) or reading NXDOMAIN as
// "nothing below" (RFC 8020) never asked for app.eu — while app.eu
// answered; x.app.wild got the wildcard's address and app.wild the
// wildcard's TXT record, where a secondary loading the transfer answered
// NXDOMAIN and NODATA.
func TestManagedNamesAreInTheirZonesTree(t *testing.T) {
	for _, sign := range []bool{false, true} {
		cfg := parseGSLBYAML(t, managedTreeYAML)
		if sign {
			ksk, zsk := testKeys(t)
			cfg = signed(cfg, ksk, zsk)
		}
		s := startGSLB(t, cfg)
		for _, tc := range []struct {
			name  string
			qtype uint16
			rcode int
			want  []string // the answer, in presentation form but for TTLs and RRSIGs
		}{
			{"app.eu.ringlb.test.", dns.TypeA, dns.RcodeSuccess, []string{"app.eu.ringlb.test. IN A 192.0.2.1"}},
			{"eu.ringlb.test.", dns.TypeA, dns.RcodeSuccess, nil},
			{"eu.ringlb.test.", dns.TypeTXT, dns.RcodeSuccess, nil},
			{"x.eu.ringlb.test.", dns.TypeA, dns.RcodeNameError, nil},
			{"app.wild.ringlb.test.", dns.TypeA, dns.RcodeSuccess, []string{"app.wild.ringlb.test. IN A 192.0.2.2"}},
			{"app.wild.ringlb.test.", dns.TypeTXT, dns.RcodeSuccess, nil},
			{"x.app.wild.ringlb.test.", dns.TypeA, dns.RcodeNameError, nil},
			{"other.wild.ringlb.test.", dns.TypeA, dns.RcodeSuccess, []string{"other.wild.ringlb.test. IN A 192.0.2.99"}},
		} {
			for _, network := range []string{"udp", "tcp"} {
				m := query(t, s, network, tc.name, tc.qtype, func(m *dns.Msg) {
					if sign {
						withDO(true)(m) // CO: the NXDOMAIN rcode, as unsigned
					}
				})
				var got []string
				for _, rr := range m.Answer {
					if h := rr.Header(); h.Rrtype != dns.TypeRRSIG {
						got = append(got, h.Name+" IN "+dns.TypeToString[h.Rrtype]+" "+strings.TrimPrefix(rr.String(), h.String()))
					}
				}
				if m.Rcode != tc.rcode || !slices.Equal(got, tc.want) || !m.Authoritative {
					t.Errorf("signed %v, %s %s over %s: %s AA %v %v, want %s %v", sign, tc.name, dns.TypeToString[tc.qtype], network,
						dns.RcodeToString[m.Rcode], m.Authoritative, got, dns.RcodeToString[tc.rcode], tc.want)
				}
				if sign && m.Rcode == dns.RcodeSuccess && len(tc.want) == 0 {
					for _, rr := range m.Ns {
						if nsec, ok := rr.(*dns.NSEC); ok && slices.Contains(nsec.TypeBitMap, dns.TypeNXNAME) {
							t.Errorf("%s %s over %s: a NODATA proved with NXNAME: %v", tc.name, dns.TypeToString[tc.qtype], network, nsec)
						}
					}
				}
			}
		}
	}
}
