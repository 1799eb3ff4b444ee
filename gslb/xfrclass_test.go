package gslb

import (
	"fmt"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// A transfer is of the class the zone is: AXFR and IXFR of another class
// than IN (or ANY, which every query takes as IN) are REFUSED with AA clear,
// as any query of such a class is, and as NSD refuses CH and NONE; with a
// TSIG the refusal is signed with its key. Before, the zone was looked up by
// name alone and the IN zone sent for CH, NONE and HS alike: 12 of 12 such
// requests (AXFR and IXFR, three classes, unsigned and signed) got it.
func TestTransferOfAnotherClassRefused(t *testing.T) {
	plain := startGSLB(t, withTransfer(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""), configs.Transfer{Allow: []string{"127.0.0.1/32"}}))
	keyed := transferServer(t, bigZone(t, 0), nil)
	key := tsigConfig(t).Name
	served := 0
	for _, srv := range []struct {
		name string
		s    *Server
	}{{"unsigned", plain}, {"signed", keyed}} {
		for _, qtype := range []uint16{dns.TypeAXFR, dns.TypeIXFR} {
			for _, class := range []uint16{dns.ClassINET, dns.ClassANY, dns.ClassCHAOS, dns.ClassNONE, dns.ClassHESIOD} {
				what := fmt.Sprintf("%s %s class %s", srv.name, dns.TypeToString[qtype], dns.ClassToString[class])
				m := new(dns.Msg)
				m.SetQuestion("ringlb.test.", qtype)
				if qtype == dns.TypeIXFR {
					m.SetIxfr("ringlb.test.", 1, "ns1.ringlb.test.", "hostmaster.ringlb.test.")
				}
				m.Question[0].Qclass = class
				c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second}
				if srv.s == keyed {
					m.SetTsig(key, dns.HmacSHA256, 300, time.Now().Unix())
					c.TsigSecret = map[string]string{key: testTSIGSecret} // the answer's TSIG verified
				}
				r, _, err := c.Exchange(m, srv.s.Addr())
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				if srv.s == keyed && r.IsTsig() == nil {
					t.Errorf("%s: answer to a signed request unsigned", what)
				}
				if class == dns.ClassINET || class == dns.ClassANY {
					// Served: the zone's first message.
					if r.Rcode != dns.RcodeSuccess || len(r.Answer) < 10 {
						t.Errorf("%s: %s with %d records, want the zone", what, dns.RcodeToString[r.Rcode], len(r.Answer))
					}
					continue
				}
				if r.Rcode != dns.RcodeRefused || r.Authoritative || len(r.Answer) != 0 {
					served++
					t.Errorf("%s: %s, AA %v, %d records; want REFUSED, AA clear, none", what, dns.RcodeToString[r.Rcode], r.Authoritative, len(r.Answer))
				}
			}
		}
	}
	if served > 0 {
		t.Logf("%d of 12 transfers of another class were not refused", served)
	}
}
