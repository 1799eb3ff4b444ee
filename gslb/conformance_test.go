package gslb

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/miekg/dns"
	dto "github.com/prometheus/client_model/go"
)

func optRR(name string, udpSize uint16) *dns.OPT {
	o := &dns.OPT{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeOPT}}
	o.SetUDPSize(udpSize)
	return o
}

// Malformed EDNS is refused with FORMERR (RFC 6891 6.1.1): two OPT records,
// an OPT outside the additional section, an OPT whose owner is not the root.
// Over UDP and TCP, and never answered.
func TestMalformedEDNSFormErr(t *testing.T) {
	s := startGSLB(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""))
	for _, tt := range []struct {
		name string
		edit func(*dns.Msg)
	}{
		{"two OPT", func(m *dns.Msg) { m.Extra = []dns.RR{optRR(".", 1232), optRR(".", 4096)} }},
		{"OPT in answer", func(m *dns.Msg) { m.Answer = []dns.RR{optRR(".", 1232)} }},
		{"OPT in authority", func(m *dns.Msg) { m.Ns = []dns.RR{optRR(".", 1232)} }},
		{"OPT in answer and additional", func(m *dns.Msg) {
			m.Answer = []dns.RR{optRR(".", 1232)}
			m.Extra = []dns.RR{optRR(".", 1232)}
		}},
		{"OPT owner not root", func(m *dns.Msg) { m.Extra = []dns.RR{optRR("www.ringlb.test.", 1232)} }},
	} {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(tt.name+"/"+network, func(t *testing.T) {
				q := question("www.ringlb.test.", dns.TypeA, 0)
				q.Id = 4242
				tt.edit(q)
				m, _ := exchangeSized(t, s, network, q)
				if m.Rcode != dns.RcodeFormatError || len(m.Answer) != 0 || m.Id != 4242 {
					t.Fatalf("rcode %s with %d answers, id %d; want FORMERR, none, 4242", dns.RcodeToString[m.Rcode], len(m.Answer), m.Id)
				}
			})
		}
	}
}

// Found by FuzzUDPHandle: a TSIG with no RDATA (RDLENGTH 0) unpacks
// (miekg/dns) as one with no algorithm; its BADKEY answer echoed the empty
// algorithm, which packs as zero bytes under an RDLENGTH counting one: an
// answer no client could read. Such a query is FORMERR now.
func TestTSIGWithoutRDATA(t *testing.T) {
	s := startGSLB(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""))
	q := []byte("\x9b\xfd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01\x03www\x06ringlb\x04test\x00\x00\x01\x00\x01" +
		"\x03xfr\x06ringlb\x04test\x00\x00\xfa\x00\xff\x00\x00\x00\x00\x00\x00")
	for _, network := range []string{"udp", "tcp"} {
		m := new(dns.Msg)
		if err := m.Unpack(exchangeWire(t, s, network, q)); err != nil {
			t.Fatalf("%s: answer does not unpack: %v", network, err)
		}
		if m.Rcode != dns.RcodeFormatError || m.Id != 0x9bfd {
			t.Fatalf("%s: %s, id %x; want FORMERR", network, dns.RcodeToString[m.Rcode], m.Id)
		}
	}
}

// An EDNS version we do not implement gets BADVERS (RFC 6891 6.1.3): the
// extended rcode 16 split between the header (0) and our OPT (1), our OPT at
// version 0, no answer, the question echoed.
func TestBadVersOnTheWire(t *testing.T) {
	s := startGSLB(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""))
	for _, network := range []string{"udp", "tcp"} {
		q := question("www.ringlb.test.", dns.TypeA, 4096)
		q.IsEdns0().SetVersion(1)
		b, _ := q.Pack()
		p := exchangeWire(t, s, network, b)
		if p[3]&0xF != 0 {
			t.Errorf("%s: header rcode %d, want 0 (BADVERS lives in the OPT)", network, p[3]&0xF)
		}
		m := new(dns.Msg)
		if err := m.Unpack(p); err != nil {
			t.Fatal(err)
		}
		opt := m.IsEdns0()
		if m.Rcode != dns.RcodeBadVers || opt == nil || opt.Version() != 0 || opt.ExtendedRcode() != dns.RcodeBadVers || len(m.Answer) != 0 || len(m.Question) != 1 {
			t.Fatalf("%s: rcode %d, OPT %v, %d answers, question %v; want BADVERS in a version-0 OPT", network, m.Rcode, opt, len(m.Answer), m.Question)
		}
	}
}

// Every opcode but QUERY gets NOTIMP (RFC 1035 4.1.1, RFC 6895 2.2) with
// the header echoed (ID, opcode, question), over UDP and TCP: never
// silence, never an answer.
func TestOpcodesNotImplemented(t *testing.T) {
	s := startGSLB(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""))
	for _, opcode := range []int{dns.OpcodeIQuery, dns.OpcodeStatus, 3, dns.OpcodeNotify, dns.OpcodeUpdate, 6, 7, 15} {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(fmt.Sprintf("%d/%s", opcode, network), func(t *testing.T) {
				q := question("ringlb.test.", dns.TypeSOA, 0)
				q.Id = 777
				q.Opcode = opcode
				if opcode == dns.OpcodeUpdate {
					// A real update: one record to add, one to delete, with EDNS.
					q.SetUpdate("ringlb.test.")
					rr, _ := dns.NewRR("evil.ringlb.test. 60 IN A 203.0.113.1")
					q.Insert([]dns.RR{rr})
					q.RemoveName([]dns.RR{&dns.ANY{Hdr: dns.RR_Header{Name: "www.ringlb.test."}}})
					q.SetEdns0(1232, false)
					q.Id = 777
				}
				m, _ := exchangeSized(t, s, network, q)
				if m.Rcode != dns.RcodeNotImplemented || m.Opcode != opcode || m.Id != 777 || !m.Response {
					t.Fatalf("rcode %s, opcode %d, id %d; want NOTIMP, %d, 777", dns.RcodeToString[m.Rcode], m.Opcode, m.Id, opcode)
				}
				if len(m.Question) != 1 || m.Question[0].Name != "ringlb.test." || len(m.Answer)+len(m.Ns) != 0 {
					t.Fatalf("question %v, %d answer and %d authority records; want the question echoed alone", m.Question, len(m.Answer), len(m.Ns))
				}
			})
		}
	}
	// The update was not applied.
	if m := query(t, s, "udp", "evil.ringlb.test.", dns.TypeA, nil); m.Rcode != dns.RcodeNameError {
		t.Fatalf("evil.ringlb.test after an UPDATE: %s", dns.RcodeToString[m.Rcode])
	}
}

// Refusals are counted with their rcode in ringlb_gslb_queries_total, over
// both transports, whichever layer refuses.
func TestRefusalsCounted(t *testing.T) {
	cfg := gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), "")
	cfg.Zones[0].Transfer.TSIG = tsigConfig(t)
	s := startGSLB(t, cfg)
	rcodes := func() map[string]float64 {
		mfs, err := s.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, mf := range mfs {
			if mf.GetName() != "ringlb_gslb_queries_total" {
				continue
			}
			for _, m := range mf.Metric {
				out[label(m, "rcode")] += m.GetCounter().GetValue()
			}
		}
		return out
	}
	for _, network := range []string{"udp", "tcp"} {
		update := question("ringlb.test.", dns.TypeSOA, 0)
		update.Opcode = dns.OpcodeUpdate
		exchangeSized(t, s, network, update)
		twoOPT := question("www.ringlb.test.", dns.TypeA, 0)
		twoOPT.Extra = []dns.RR{optRR(".", 1232), optRR(".", 1232)}
		exchangeSized(t, s, network, twoOPT)
		twoQuestions := question("www.ringlb.test.", dns.TypeA, 0)
		twoQuestions.Question = append(twoQuestions.Question, twoQuestions.Question[0])
		exchangeSized(t, s, network, twoQuestions)
		q, _ := signedQuery(t, "www.ringlb.test.", dns.TypeA, "nokey.", dns.HmacSHA256, testTSIGSecret, 0)
		exchangeWire(t, s, network, q)
		// A query that does not unpack: its one question's first label
		// runs past the end.
		junk := make([]byte, 20)
		binary.BigEndian.PutUint16(junk[4:], 1)
		junk[12] = 63
		exchangeWire(t, s, network, junk)
	}
	got := rcodes()
	for rcode, want := range map[string]float64{"NOTIMP": 2, "FORMERR": 6, "NOTAUTH": 2} {
		if got[rcode] != want {
			t.Errorf("ringlb_gslb_queries_total{rcode=%q} = %v, want %v (all: %v)", rcode, got[rcode], want, got)
		}
	}
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

var _ = strings.ToLower
