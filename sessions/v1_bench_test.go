package sessions

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"

	"github.com/ringlb/ringlb/configs"
)

// BenchmarkFanoutV1 is BenchmarkFanout in ringlb.v1: one client msg is
// decoded, sequenced, wrapped once into a msg envelope shared by the n-1
// recipients and the history, and acknowledged to the sender. Raw TCP
// clients again, so the allocations counted are the edge's.
func BenchmarkFanoutV1(b *testing.B) {
	data := []byte(`"an edit: insert 'x' at line 42, column 7 (64 bytes of payload)"`)
	for _, n := range []int{2, 8, 64} {
		b.Run(fmt.Sprintf("participants=%d", n), func(b *testing.B) { benchmarkFanoutV1(b, n, data) })
	}
}

func benchmarkFanoutV1(b *testing.B, n int, data []byte) {
	const batch = 64
	e := startEdge(b, configs.Edge{SendQueue: 4 * batch, MaxFanoutBytesPerSecond: unpaced}, nil)
	sender := rawJoinV1(b, e, "bench")
	// The sender's acks are waited for like the recipients' msgs. Waiting
	// only for the recipients let the sender's writer fall rounds behind
	// on a busy machine until its queue (4 batches) overflowed: the edge
	// closed the sender with 1013 and the benchmark waited forever.
	done := make(chan struct{}, n*4)
	go rawReceiveV1(bufio.NewReaderSize(sender, 4096), `{"type":"ack"`, batch, done)
	for range n - 1 {
		br := bufio.NewReaderSize(rawJoinV1(b, e, "bench"), 4096)
		go rawReceiveV1(br, `{"type":"msg"`, batch, done)
	}
	var frames []byte
	msg := append(append([]byte(`{"type":"msg","data":`), data...), '}')
	for range batch {
		frames = appendClientTextFrame(frames, msg)
	}
	sent, mallocs := measureFanout(b, sender, frames, batch, n, n, done)
	b.ReportMetric(float64(mallocs)/float64(sent), "allocs/msg")
}

// rawJoinV1 opens a ringlb.v1 WebSocket by hand and waits until the edge
// has joined it.
func rawJoinV1(tb testing.TB, e *testEdge, key string) net.Conn {
	tb.Helper()
	return rawJoinV1With(tb, e, key, "", 0)
}

// rawJoinV1With is rawJoinV1 with header lines added to the upgrade (each
// ending in \r\n) and, when rcvbuf is not 0, a receive buffer of that
// size, set before connecting (so the window is as small from the first
// packet), so that the kernel does not absorb what the edge writes on the
// client's behalf.
func rawJoinV1With(tb testing.TB, e *testEdge, key, header string, rcvbuf int) net.Conn {
	tb.Helper()
	var d net.Dialer
	if rcvbuf != 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	c, err := d.Dial("tcp", e.data)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	req := "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Protocol: " + protocolV1 + "\r\nctstickiness: " + key + "\r\n" + header + "\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		tb.Fatal(err)
	}
	var head []byte
	one := make([]byte, 1)
	for len(head) < 4 || string(head[len(head)-4:]) != "\r\n\r\n" {
		if _, err := c.Read(one); err != nil {
			tb.Fatal(err)
		}
		head = append(head, one[0])
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytesReaderOf(head)), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-Websocket-Protocol") != protocolV1 {
		tb.Fatalf("upgrade: %v %v", resp, err)
	}
	e.waitJoined(tb)
	return c
}

// rawReceiveV1 reads server frames, signalling done every batch envelopes
// that start with prefix (welcome and presence are not counted).
func rawReceiveV1(br *bufio.Reader, prefix string, batch int, done chan<- struct{}) {
	var hdr [8]byte
	count := 0
	for {
		if _, err := io.ReadFull(br, hdr[:2]); err != nil {
			return
		}
		length := int(hdr[1] & 0x7f)
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
		head, err := br.Peek(min(length, len(prefix)))
		if err != nil {
			return
		}
		isMsg := string(head) == prefix
		if _, err := br.Discard(length); err != nil {
			return
		}
		if isMsg {
			if count++; count%batch == 0 {
				done <- struct{}{}
			}
		}
	}
}

// appendClientTextFrame appends a masked text frame (payload < 64 KiB).
func appendClientTextFrame(dst, payload []byte) []byte {
	start := len(dst)
	dst = appendClientFrame(dst, payload)
	dst[start] = 0x81
	return dst
}
