package sessions

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// BenchmarkFanout relays one small binary frame from one participant to
// n-1 others through a real edge on loopback. The clients speak raw TCP
// (hand-made handshake and frames, no allocation) so the allocations
// counted are the edge's own. Frames go in batches smaller than the send
// queue, each batch waited for, so no one becomes a slow consumer.
//
// Reported per delivered message (one frame written to one recipient):
// ns/delivery and allocs/delivery.
func BenchmarkFanout(b *testing.B) {
	small := []byte("an edit: insert 'x' at line 42, column 7 (64 bytes of payload).")
	for _, size := range []int{len(small), 4 << 10} {
		payload := small
		if size != len(small) {
			payload = make([]byte, size)
		}
		for _, n := range []int{2, 8, 64} {
			b.Run(fmt.Sprintf("bytes=%d/participants=%d", size, n), func(b *testing.B) { benchmarkFanout(b, n, payload) })
		}
	}
}

// unpaced is a max_fanout_bytes_per_second no benchmark's sender reaches:
// the fan-out benchmarks measure the edge's cost of a delivery, not its
// pacing (pace.go), which a sender going flat out meets at once.
const unpaced = 1 << 40

func benchmarkFanout(b *testing.B, n int, payload []byte) {
	const batch = 64
	e := startEdge(b, configs.Edge{SendQueue: 4 * batch, MaxFanoutBytesPerSecond: unpaced}, nil)
	sender := rawJoin(b, e)
	done := make(chan struct{}, n*4)
	for range n - 1 {
		br := bufio.NewReaderSize(rawJoin(b, e), 4096)
		go rawReceive(br, batch, done)
	}
	var frames []byte
	for range batch {
		frames = appendClientFrame(frames, payload)
	}
	measureFanout(b, sender, frames, batch, n, n-1, done)
}

// rawJoin opens a WebSocket by hand and waits until the edge has joined it
// to the benchmark's session.
func rawJoin(tb testing.TB, e *testEdge) net.Conn {
	tb.Helper()
	return rawJoinKey(tb, e, "bench")
}

// askUpgrade dials e's data port and sends the upgrade request of a
// participant of key, reading nothing; the connection closes as the test
// ends.
func askUpgrade(tb testing.TB, e *testEdge, key string) net.Conn {
	tb.Helper()
	c, err := net.Dial("tcp", e.data)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	req := "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nctstickiness: " + key + "\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		tb.Fatal(err)
	}
	return c
}

// rawJoinKey opens a WebSocket by hand and waits until the edge has joined
// it to the session key.
func rawJoinKey(tb testing.TB, e *testEdge, key string) net.Conn {
	tb.Helper()
	c := askUpgrade(tb, e, key)
	// Read the head byte by byte: nothing after it may be buffered away.
	var head []byte
	one := make([]byte, 1)
	for len(head) < 4 || string(head[len(head)-4:]) != "\r\n\r\n" {
		if _, err := c.Read(one); err != nil {
			tb.Fatal(err)
		}
		head = append(head, one[0])
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytesReaderOf(head)), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		tb.Fatalf("upgrade: %v %v", resp, err)
	}
	e.waitJoined(tb)
	return c
}

type bytesReader []byte

func (b *bytesReader) Read(p []byte) (int, error) {
	if len(*b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, *b)
	*b = (*b)[n:]
	return n, nil
}

func bytesReaderOf(b []byte) *bytesReader { r := bytesReader(b); return &r }

// rawReceive reads server frames (unmasked), signalling done every batch
// data frames. It returns when the connection closes.
func rawReceive(br *bufio.Reader, batch int, done chan<- struct{}) {
	var hdr [8]byte
	count := 0
	for {
		if _, err := io.ReadFull(br, hdr[:2]); err != nil {
			return
		}
		opcode, length := hdr[0]&0x0f, int(hdr[1]&0x7f)
		switch length {
		case 126:
			if _, err := io.ReadFull(br, hdr[:2]); err != nil {
				return
			}
			length = int(binary.BigEndian.Uint16(hdr[:2]))
		case 127:
			if _, err := io.ReadFull(br, hdr[:8]); err != nil {
				return
			}
			length = int(binary.BigEndian.Uint64(hdr[:8]))
		}
		if _, err := br.Discard(length); err != nil {
			return
		}
		if opcode == 0x1 || opcode == 0x2 {
			if count++; count%batch == 0 {
				done <- struct{}{}
			}
		}
	}
}

// appendClientFrame appends a masked binary frame (payload < 64 KiB).
func appendClientFrame(dst, payload []byte) []byte {
	mask := [4]byte{1, 2, 3, 4}
	if len(payload) < 126 {
		dst = append(dst, 0x82, 0x80|byte(len(payload)))
	} else {
		dst = append(dst, 0x82, 0x80|126, byte(len(payload)>>8), byte(len(payload)))
	}
	dst = append(dst, mask[:]...)
	for i, c := range payload {
		dst = append(dst, c^mask[i%4])
	}
	return dst
}

// measureFanout writes frames (batch client frames) from sender round after
// round until b.N frames went out, waits for readers signals on done each
// round (one per reader that got the whole batch), and reports ns and
// allocations per delivered message to the n-1 recipients. It returns the
// frames sent and the allocations counted. A round not complete within
// testDeadline fails the benchmark: a reader whose connection the edge
// closed never signals again.
func measureFanout(b *testing.B, sender io.Writer, frames []byte, batch, n, readers int, done <-chan struct{}) (sent int, mallocs uint64) {
	rounds := (b.N + batch - 1) / batch
	// One timer for every round: time.After would allocate, and the
	// allocations counted are the process's.
	timeout := time.NewTimer(testDeadline)
	defer timeout.Stop()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for round := range rounds {
		if _, err := sender.Write(frames); err != nil {
			b.Fatal(err)
		}
		timeout.Reset(testDeadline)
		for got := range readers {
			select {
			case <-done:
			case <-timeout.C:
				b.Fatalf("round %d: %d of %d readers got the batch within %s (a connection closed?)", round, got, readers, testDeadline)
			}
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	runtime.ReadMemStats(&after)
	deliveries := float64(rounds * batch * (n - 1))
	mallocs = after.Mallocs - before.Mallocs
	b.ReportMetric(float64(elapsed.Nanoseconds())/deliveries, "ns/delivery")
	b.ReportMetric(float64(mallocs)/deliveries, "allocs/delivery")
	return rounds * batch, mallocs
}
