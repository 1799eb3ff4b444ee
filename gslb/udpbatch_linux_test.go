//go:build linux

package gslb

import (
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// BenchmarkUDPBatch is the batched loop's work for one full batch of
// repeated queries over real loopback sockets: one recvmmsg, the cache
// answering each, one sendmmsg. It reports the allocations per batch, which
// stay 0 (the RawConn callbacks are bound once, not made per call).
func BenchmarkUDPBatch(b *testing.B) {
	s, err := New(fuzzConfig(b), "bench", nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client, err := net.DialUDP("udp", nil, conn.LocalAddr().(*net.UDPAddr))
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	batch, err := newUDPBatch(conn)
	if err != nil {
		b.Fatal(err)
	}
	l := newUDPLoop(s, conn, batch)
	pkt, _ := question("ide.ringlb.test.", dns.TypeA, 1232).Pack()
	answer := make([]byte, 2048)
	round := func() {
		for range udpBatchSize {
			if _, err := client.Write(pkt); err != nil {
				b.Fatal(err)
			}
		}
		for got := 0; got < udpBatchSize; {
			n, errno, err := batch.read()
			if err != nil || errno != 0 {
				b.Fatalf("read: %v %v", err, errno)
			}
			for i := range n {
				q, from, ok := batch.query(i)
				if !ok {
					b.Fatal("query not read")
				}
				l.handle(q, from)
			}
			batch.flush()
			got += n
		}
		client.SetReadDeadline(time.Now().Add(10 * time.Second))
		for range udpBatchSize {
			if _, err := client.Read(answer); err != nil {
				b.Fatal(err)
			}
		}
	}
	round() // fill the cache
	b.ReportAllocs()
	for b.Loop() {
		round()
	}
}

// One client's queries (one source address and port) reach every socket of
// the port, not only the one the kernel's hash of the client picks: the
// loops share a busy resolver's load.
func TestUDPQueriesSpreadOverSockets(t *testing.T) {
	pcs, err := listenUDP("127.0.0.1:0", 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, pc := range pcs {
		defer pc.Close()
	}
	if err := spreadQueries(pcs[0], len(pcs)); err != nil {
		t.Fatal(err)
	}
	client, err := net.Dial("udp", pcs[0].LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	const queries = 200 // all fit in the receive buffers, read after
	for range queries {
		if _, err := client.Write([]byte("query")); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]int, len(pcs))
	buf := make([]byte, 64)
	for i, pc := range pcs {
		for {
			// Everything was sent before the first read: a quiet socket
			// has nothing more to give.
			pc.SetReadDeadline(time.Now().Add(time.Second))
			if _, _, err := pc.ReadFrom(buf); err != nil {
				break
			}
			got[i]++
		}
	}
	total := got[0] + got[1]
	t.Logf("%d queries from one client: %v per socket", queries, got)
	if total == 0 {
		t.Fatal("no query arrived")
	}
	for i, n := range got {
		if n < total/4 {
			t.Errorf("socket %d received %d of %d queries: not spread", i, n, total)
		}
	}
}
