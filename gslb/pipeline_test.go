package gslb

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// A resolver may pipeline queries on one TCP connection (RFC 7766 6.2.1.1).
// miekg/dns closes a connection after 128 queries by default; closed with
// queries still unread, the kernel resets it, and the client's kernel
// drops the answers it had received but not yet read. Every query sent on
// an open connection is answered and read.
func TestTCPPipelinedQueriesAllAnswered(t *testing.T) {
	s := startGSLB(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""))
	const queries = 300
	burst := pipelined(t, queries)
	c, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(burst); err != nil {
		t.Fatal(err)
	}
	// Read only once the server has answered: a client busy elsewhere, or
	// on a slow path, reads late.
	answered := func() float64 { return counterValue(t, s, "ringlb_gslb_queries_total", "qtype", "A") }
	for deadline := time.Now().Add(30 * time.Second); answered() < queries; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d queries pipelined on one connection: the server answered %v", queries, answered())
		}
	}
	r := bufio.NewReader(c)
	seen := map[uint16]bool{}
	for len(seen) < queries {
		var l [2]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			t.Fatalf("after %d answers of %d: %v", len(seen), queries, err)
		}
		a := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(r, a); err != nil {
			t.Fatal(err)
		}
		m := new(dns.Msg)
		if err := m.Unpack(a); err != nil || len(m.Answer) != 1 {
			t.Fatalf("answer %d: %v %v", len(seen), m, err)
		}
		seen[m.Id] = true
	}
	t.Logf("%d pipelined queries on one connection: %d answers read", queries, len(seen))
}

// A stop (an upgrade's hand-off, a shutdown) ends a connection whose
// client pipelined more queries than were answered by then: the answers
// written before it reach the client, then the end of the stream, and the
// client sends the rest again elsewhere (RFC 7766 6.2.1.1). Closed with
// its queries unread, the connection was reset instead, and the client's
// kernel dropped the answers it had received but not yet read.
func TestTCPStopDeliversTheAnswersWritten(t *testing.T) {
	s := startGSLB(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""))
	// More than the server answers before the stop, and within what a
	// lingering close drops (acceptguard's lingerBytes, 64 KiB).
	const queries = 1500
	burst := pipelined(t, queries)
	c, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	go c.Write(burst) // until the server stops reading them
	answered := func() float64 { return counterValue(t, s, "ringlb_gslb_queries_total", "qtype", "A") }
	for deadline := time.Now().Add(30 * time.Second); answered() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no query answered")
		}
	}
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		stopped <- s.Shutdown(ctx)
	}()
	// Read once the server has stopped: a client busy elsewhere reads late.
	if err := <-stopped; err != nil {
		t.Errorf("shutdown: %v", err)
	}
	r := bufio.NewReader(c)
	read := 0
	var end error
	for {
		var l [2]byte
		if _, end = io.ReadFull(r, l[:]); end != nil {
			break
		}
		a := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, end = io.ReadFull(r, a); end != nil {
			break
		}
		read++
	}
	t.Logf("%d queries pipelined: %d answered before the stop, %d answers read, then %v", queries, int(answered()), read, end)
	if end != io.EOF || float64(read) != answered() {
		t.Errorf("read %d answers of the %v written, then %v; want every one, then the end of the stream", read, answered(), end)
	}
}

// pipelined is n queries for www.ringlb.test. A (ids 1 to n), framed for
// TCP one after the other, to be sent in one write.
func pipelined(t *testing.T, n int) []byte {
	t.Helper()
	var burst []byte
	for i := range n {
		m := new(dns.Msg)
		m.SetQuestion("www.ringlb.test.", dns.TypeA)
		m.Id = uint16(i + 1)
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		burst = append(binary.BigEndian.AppendUint16(burst, uint16(len(b))), b...)
	}
	return burst
}
