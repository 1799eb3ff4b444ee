package gslb

import (
	"testing"

	"github.com/miekg/dns"
)

// An IXFR asking from the version the server has, or a newer one (RFC 1982
// serial arithmetic), is answered with one message holding the current SOA
// alone (RFC 1995 2 and 4), its ID, flags and question the request's, signed
// with the request's key as every message of a transfer; an older version,
// one half the serial space away (undefined in RFC 1982: taken as older, as
// Knot takes it) and another zone's SOA get the whole zone, as an AXFR (RFC
// 1995 4 allows it). Before, every IXFR got the whole zone: a secondary
// asking IXFR at its refresh moved the zone each time, where NSD and Knot
// send one record (4 of 4 up-to-date requests, unsigned and signed zone, got
// the whole zone: 2,226 and 684 records).
func TestIXFRUpToDateAnswersOneSOA(t *testing.T) {
	for _, tc := range bothZones(t, 2000, 100) {
		t.Run(tc.name, func(t *testing.T) {
			s := transferServer(t, tc.cfg, nil)
			st := s.state.Load()
			soa := st.soa(st.zones[0])
			cur := soa.Serial
			whole := len(freshTransfer(t, st, st.zones[0]))
			for _, c := range []struct {
				what   string
				owner  string // of the request's SOA
				serial uint32
				want   int // records
			}{
				{"the current serial", "ringlb.test.", cur, 1},
				{"the current serial, the SOA in another case", "RingLB.Test.", cur, 1},
				{"one ahead", "ringlb.test.", cur + 1, 1},
				{"2^31-1 ahead", "ringlb.test.", cur + 1<<31 - 1, 1},
				{"one behind", "ringlb.test.", cur - 1, whole},
				{"2^31 away", "ringlb.test.", cur + 1<<31, whole},
				// Larger as a number, but 2^31-1 behind (RFC 1982 3.2).
				{"2^31+1 above, so behind", "ringlb.test.", cur + 1<<31 + 1, whole},
				{"another zone's SOA at the current serial", "example.org.", cur, whole},
			} {
				req := new(dns.Msg)
				req.SetIxfr("ringlb.test.", c.serial, "ns1.ringlb.test.", "hostmaster.ringlb.test.")
				req.Ns[0].Header().Name = c.owner
				req.RecursionDesired = true
				msgs := rawXFRRequest(t, s, req, true) // every TSIG verified
				var rrs []dns.RR
				for i, m := range msgs {
					if m.Id != req.Id || !m.Authoritative || !m.RecursionDesired || len(m.Question) != 1 || m.Question[0] != req.Question[0] {
						t.Errorf("%s: message %d: id %d (asked %d), aa %v rd %v, question %v", c.what, i, m.Id, req.Id, m.Authoritative, m.RecursionDesired, m.Question)
					}
					rrs = append(rrs, m.Answer...)
				}
				if len(rrs) != c.want {
					t.Errorf("IXFR from %s (%d, the server's %d): %d records in %d messages, want %d", c.what, c.serial, cur, len(rrs), len(msgs), c.want)
					continue
				}
				if got, ok := rrs[0].(*dns.SOA); !ok || got.String() != soa.String() {
					t.Errorf("IXFR from %s: first record %v, want the current SOA %v", c.what, rrs[0], soa)
				}
			}
		})
	}
}
