package gslb

import (
	"testing"
	"time"

	"github.com/miekg/dns"
)

// A query with no question or with two, or with more records than a query
// has (two answer or authority records, three additional), is FORMERR, and a
// query with an OPT
// gets ours in it, as every answer to one does (RFC 6891 7: a response to a
// request with an OPT MUST carry one; Knot's FORMERR for no question does):
// max_udp_size, version 0, DO copied; a TSIG that verified signs it, as any
// answer (RFC 8945 5.3). Where the OPT itself is malformed (two, or one not
// the root's), the FORMERR carries none (screen). Before, both transports
// answered with the header and question alone — over UDP the loop's header
// check, over TCP miekg/dns's own FORMERR: 10 of 10 answers to such queries
// with one good OPT had none, and 4 of 4 to a signed one were unsigned; for
// the section counts, refused on the header alone, 6 of 6 had none and 2 of
// 2 were unsigned.
func TestFormErrForQuestionCountKeepsTheOPT(t *testing.T) {
	cfg := gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), "")
	cfg.Zones[0].Transfer.TSIG = tsigConfig(t) // a key the server knows
	s := startGSLB(t, cfg)
	key := tsigConfig(t).Name
	two := func(m *dns.Msg) {
		m.Question = append(m.Question, dns.Question{Name: "mail.ringlb.test.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
	}
	none := func(m *dns.Msg) { m.Question = nil }
	a := func(name string) dns.RR {
		rr, err := dns.NewRR(name + " 60 IN A 192.0.2.7")
		if err != nil {
			t.Fatal(err)
		}
		return rr
	}
	twoAnswers := func(m *dns.Msg) { m.Answer = []dns.RR{a("x.ringlb.test."), a("y.ringlb.test.")} }
	twoAuthority := func(m *dns.Msg) { m.Ns = []dns.RR{a("x.ringlb.test."), a("y.ringlb.test.")} }
	one := func(*dns.Msg) {}
	wrong := 0
	for _, network := range []string{"udp", "tcp"} {
		for _, tc := range []struct {
			what      string
			questions func(*dns.Msg)
			extra     []dns.RR // the query's OPT records
			opt, do   bool     // an OPT wanted in the answer, and its DO
			signed    bool
		}{
			{"two questions, EDNS", two, []dns.RR{optRR(".", 4096)}, true, false, false},
			{"two questions, EDNS with DO", two, []dns.RR{doOPT()}, true, true, false},
			{"no question, EDNS", none, []dns.RR{optRR(".", 512)}, true, false, false},
			{"no question, EDNS, signed", none, []dns.RR{optRR(".", 1232)}, true, false, true},
			{"two questions, EDNS with DO, signed", two, []dns.RR{doOPT()}, true, true, true},
			{"two questions, no EDNS", two, nil, false, false, false},
			{"two questions, two OPTs", two, []dns.RR{optRR(".", 1232), optRR(".", 1232)}, false, false, false},
			{"no question, an OPT not the root's", none, []dns.RR{optRR("ringlb.test.", 1232)}, false, false, false},
			// More records than a query has.
			{"two answer records, EDNS", twoAnswers, []dns.RR{optRR(".", 4096)}, true, false, false},
			{"two authority records, EDNS with DO, signed", twoAuthority, []dns.RR{doOPT()}, true, true, true},
			{"three additional records, EDNS", one, []dns.RR{optRR(".", 1232), a("x.ringlb.test."), a("y.ringlb.test.")}, true, false, false},
			{"two answer records, no EDNS", twoAnswers, nil, false, false, false},
		} {
			q := question("ringlb.test.", dns.TypeSOA, 0)
			q.Id = 4343
			tc.questions(q)
			q.Extra = tc.extra
			var wire []byte
			var mac string
			var err error
			if tc.signed {
				q.SetTsig(key, dns.HmacSHA256, 300, time.Now().Unix())
				wire, mac, err = dns.TsigGenerate(q, testTSIGSecret, "", false)
			} else {
				wire, err = q.Pack()
			}
			if err != nil {
				t.Fatal(err)
			}
			p := exchangeWire(t, s, network, wire)
			m := new(dns.Msg)
			if err := m.Unpack(p); err != nil {
				t.Fatalf("%s over %s: answer does not unpack: %v", tc.what, network, err)
			}
			if m.Rcode != dns.RcodeFormatError || m.Id != 4343 || len(m.Answer)+len(m.Ns) != 0 {
				t.Errorf("%s over %s: %s, id %d, %d records; want FORMERR, 4343, none", tc.what, network, dns.RcodeToString[m.Rcode], m.Id, len(m.Answer)+len(m.Ns))
			}
			opt := m.IsEdns0()
			switch {
			case !tc.opt && opt != nil:
				t.Errorf("%s over %s: an OPT in the answer to a malformed one: %v", tc.what, network, opt)
			case tc.opt && (opt == nil || opt.UDPSize() != 1232 || opt.Version() != 0 || opt.Do() != tc.do):
				wrong++
				t.Errorf("%s over %s: OPT %v; want ours, 1232 bytes, version 0, DO %v", tc.what, network, opt, tc.do)
			}
			if tc.signed {
				if m.IsTsig() == nil {
					wrong++
					t.Errorf("%s over %s: answer to a signed query unsigned", tc.what, network)
				} else if err := dns.TsigVerify(p, testTSIGSecret, mac, false); err != nil {
					t.Errorf("%s over %s: answer's TSIG: %v", tc.what, network, err)
				}
			}
		}
	}
	if wrong > 0 {
		t.Logf("%d answers without the OPT or the TSIG they should carry", wrong)
	}
}

// doOPT is an OPT record of 1232 bytes with DO set.
func doOPT() *dns.OPT {
	o := optRR(".", 1232)
	o.SetDo()
	return o
}
