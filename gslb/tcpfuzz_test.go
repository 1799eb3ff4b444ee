package gslb

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// FuzzTCPStream feeds arbitrary bytes to the TCP listener as one client's
// stream — length prefixes and the messages they frame, pipelined, cut
// short, announcing more than a query may be — through everything a TCP
// query passes: the connection caps, the reader that refuses a long length
// prefix and marks a malformed Client Subnet option, miekg/dns's framing
// and unpacking, TSIG verification and the answer. Whatever comes back
// must be framed messages that unpack as responses, each to a query the
// stream held, and the server must answer the next client.
func FuzzTCPStream(f *testing.F) {
	frame := func(msgs ...[]byte) []byte {
		var out []byte
		for _, m := range msgs {
			out = binary.BigEndian.AppendUint16(out, uint16(len(m)))
			out = append(out, m...)
		}
		return out
	}
	seeds := hostileSeeds(f)
	for _, b := range seeds {
		f.Add(frame(b))
	}
	f.Add(frame(seeds[0], seeds[1], seeds[2]))
	f.Add(frame(seeds[len(seeds)-1], seeds[0]))
	f.Add([]byte{0x10, 0x01})                      // 4097: refused before a byte of it
	f.Add([]byte{0x00})                            // half a length prefix
	f.Add([]byte{0x00, 0x00, 0x00, 0x00})          // two empty messages
	f.Add(append([]byte{0x00, 0x40}, seeds[0]...)) // a length longer than what follows

	cfg := fuzzTSIGConfig(f)
	s, err := New(cfg, "fuzz", nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	s.tcpReadTimeout, s.tcpIdleTimeout = time.Second, time.Second
	if err := s.Start(f.Context()); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	probe := new(dns.Msg).SetQuestion("www.ringlb.test.", dns.TypeA)
	f.Fuzz(func(t *testing.T, stream []byte) {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(stream); err != nil {
			return // closed by the server already (a refused length prefix)
		}
		c.(*net.TCPConn).CloseWrite()
		for {
			var n [2]byte
			if _, err := io.ReadFull(c, n[:]); err != nil {
				var nerr net.Error
				if errors.As(err, &nerr) && nerr.Timeout() {
					t.Fatalf("connection held after the stream ended: %v", err)
				}
				break // EOF or reset: the server is done with it
			}
			p := make([]byte, binary.BigEndian.Uint16(n[:]))
			if _, err := io.ReadFull(c, p); err != nil {
				break
			}
			m := new(dns.Msg)
			if err := m.Unpack(p); err != nil || !m.Response {
				t.Fatalf("sent %x, not a DNS response: %v", p, err)
			}
		}
		r, _, err := (&dns.Client{Net: "tcp", Timeout: 10 * time.Second}).Exchange(probe, s.Addr())
		if err != nil || r.Rcode != dns.RcodeSuccess {
			t.Fatalf("the next client's query: %v %v", r, err)
		}
	})
}
