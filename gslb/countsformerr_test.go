package gslb

import (
	"encoding/binary"
	"testing"

	"github.com/miekg/dns"
)

// A query shorter than its header says — a question cut before its type or
// class, a record counted and not sent — does not parse (RFC 1035 4.1: the
// counts are the entries of each section), and is answered FORMERR over UDP
// and TCP, as NSD 4.6 answers it (Knot 3.2 answers FORMERR or nothing).
// miekg/dns reads what is there and stops: before, each was answered as a
// whole query — a question cut before its class as one of class 0 (REFUSED,
// a question echoed that the client never sent), a record counted and
// missing as none (the answer).
func TestQueryShorterThanItsCountsFormErr(t *testing.T) {
	s := startGSLB(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""))
	header := func(qd, an, ns, ar uint16) []byte {
		h := []byte{0x4d, 0x21, 0x01, 0x00}
		for _, n := range []uint16{qd, an, ns, ar} {
			h = binary.BigEndian.AppendUint16(h, n)
		}
		return h
	}
	name := []byte("\x03www\x06ringlb\x04test\x00")
	question := append(append([]byte(nil), name...), 0, 1, 0, 1)
	opt := []byte{0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0}
	record := append(append([]byte(nil), name...), 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1)
	cat := func(bs ...[]byte) []byte {
		var out []byte
		for _, b := range bs {
			out = append(out, b...)
		}
		return out
	}
	short := []struct {
		name string
		q    []byte
	}{
		{"question without its class", cat(header(1, 0, 0, 0), name, []byte{0, 1})},
		{"question without its type and class", cat(header(1, 0, 0, 0), name)},
		{"question counted, none sent", header(1, 0, 0, 0)},
		{"two questions counted, one sent", cat(header(2, 0, 0, 0), question)},
		{"answer record counted, none sent", cat(header(1, 1, 0, 0), question)},
		{"authority record counted, none sent", cat(header(1, 0, 1, 0), question)},
		{"two additional records counted, the OPT sent", cat(header(1, 0, 0, 2), question, opt)},
		{"an answer record cut short", cat(header(1, 1, 0, 0), question, record[:len(record)-2])},
	}
	whole := []struct {
		name string
		q    []byte
	}{
		{"a question", cat(header(1, 0, 0, 0), question)},
		{"a question and an OPT", cat(header(1, 0, 0, 1), question, opt)},
		{"a question and an answer record", cat(header(1, 1, 0, 0), question, record)},
	}
	for _, network := range []string{"udp", "tcp"} {
		formerr := 0
		for _, tt := range short {
			m := new(dns.Msg)
			if err := m.Unpack(exchangeWire(t, s, network, tt.q)); err != nil {
				t.Fatalf("%s %s: answer does not unpack: %v", network, tt.name, err)
			}
			if m.Id != 0x4d21 {
				t.Errorf("%s %s: answer's ID %x", network, tt.name, m.Id)
			}
			if m.Rcode == dns.RcodeFormatError {
				formerr++
			} else {
				t.Errorf("%s %s: %s with %d answers and question %v; want FORMERR", network, tt.name, dns.RcodeToString[m.Rcode], len(m.Answer), m.Question)
			}
		}
		t.Logf("%s: %d of %d queries shorter than their counts answered FORMERR", network, formerr, len(short))
		for _, tt := range whole {
			m := new(dns.Msg)
			if err := m.Unpack(exchangeWire(t, s, network, tt.q)); err != nil {
				t.Fatalf("%s %s: answer does not unpack: %v", network, tt.name, err)
			}
			if m.Rcode != dns.RcodeSuccess || len(m.Answer) == 0 {
				t.Errorf("%s %s: %s with %d answers; want the answer", network, tt.name, dns.RcodeToString[m.Rcode], len(m.Answer))
			}
		}
	}
}
