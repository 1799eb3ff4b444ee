package gslb

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// A query that does not parse is answered FORMERR with its ID and nothing
// else, over TCP as over UDP: miekg/dns's own FORMERR (TCP) copied the
// query's flags — TC on a TCP answer, RA from a server that never
// recurses, AD and CD, which the README promises clear in every answer —
// and the question it had read.
func TestFormErrOverTCPIsUDPs(t *testing.T) {
	s := startGSLB(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""))
	question := []byte("\x03www\x06ringlb\x04test\x00\x00\x01\x00\x01")
	header := func(flags uint16, ar uint16) []byte {
		h := []byte{0x4d, 0x21}
		for _, n := range []uint16{flags, 1, 0, 0, ar} {
			h = binary.BigEndian.AppendUint16(h, n)
		}
		return h
	}
	for _, tt := range []struct {
		name string
		q    []byte
	}{
		// RD; TC, RA; AD, CD: an additional record counted and not sent.
		{"record counted, not sent", append(header(0x03b0, 1), question...)},
		// A malformed OPT: an option running past the record's RDATA.
		{"OPT option past its record", append(append(header(0x03b0, 1), question...), 0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 4, 0, 8, 0, 9)},
	} {
		udp := exchangeWire(t, s, "udp", tt.q)
		tcp := exchangeWire(t, s, "tcp", tt.q)
		want := []byte{0x4d, 0x21, 0x80, 0x01, 0, 0, 0, 0, 0, 0, 0, 0}
		if !bytes.Equal(udp, want) {
			t.Errorf("%s: UDP answer %x, want %x", tt.name, udp, want)
		}
		if !bytes.Equal(tcp, udp) {
			t.Errorf("%s: TCP answer %x, UDP's %x", tt.name, tcp, udp)
		}
	}
}
