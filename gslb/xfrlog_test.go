package gslb

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// lineCounter is a slog handler counting the records whose message holds a
// string.
type lineCounter struct {
	slog.Handler
	mu     sync.Mutex
	counts map[string]int
}

func (h *lineCounter) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	h.counts[r.Message]++
	h.mu.Unlock()
	return nil
}

func (h *lineCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h *lineCounter) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *lineCounter) WithGroup(string) slog.Handler            { return h }

func (h *lineCounter) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.counts[msg]
}

// Anyone may ask for a zone transfer over TCP, pipelined on a connection:
// each refusal costs a 29-byte query. Logged each time, one client writes
// the server's log as fast as it asks — disk, and a journal that
// rate-limits the service then drops its failover lines. The refusals are
// counted in queries_total and logged once per interval.
func TestRefusedTransfersDoNotFloodTheLog(t *testing.T) {
	h := &lineCounter{counts: map[string]int{}}
	s := startGSLBLogging(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""), slog.New(h), nil)
	m := new(dns.Msg)
	m.SetAxfr("ringlb.test.")
	b, _ := m.Pack()
	q := append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
	const conns, perConn = 8, 125
	refused := 0
	for range conns {
		c, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Write([]byte(strings.Repeat(string(q), perConn))); err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(c)
		for range perConn {
			var l [2]byte
			if _, err := io.ReadFull(r, l[:]); err != nil {
				t.Fatal(err)
			}
			a := make([]byte, binary.BigEndian.Uint16(l[:]))
			if _, err := io.ReadFull(r, a); err != nil {
				t.Fatal(err)
			}
			if a[3]&0xF == dns.RcodeRefused {
				refused++
			}
		}
		c.Close()
	}
	lines := h.count("zone transfer refused")
	t.Logf("%d AXFR from an address not allowed: %d REFUSED, %d log lines", conns*perConn, refused, lines)
	if refused != conns*perConn {
		t.Fatalf("%d of %d refused", refused, conns*perConn)
	}
	if got := counterValue(t, s, "ringlb_gslb_queries_total", "qtype", "AXFR"); got != conns*perConn {
		t.Errorf("queries_total{qtype=AXFR} %v, want %d", got, conns*perConn)
	}
	if lines != 1 {
		t.Errorf("%d refusals logged in %d lines, want 1 (one an interval)", refused, lines)
	}
}
