package balancer

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
)

// serveConns is a backend at the TCP level: serve runs on each connection
// it accepts (with a reader over it and a 60 s deadline, a liveness bound)
// until it returns; the listener and every connection close, and every
// goroutine has returned, when the test ends. It returns the backend's URL.
func serveConns(t testing.TB, serve func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(60 * time.Second))
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// scriptedBackend answers every connection with answer, after reading the
// request head.
func scriptedBackend(t *testing.T, answer func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	return serveConns(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err == nil {
			answer(c, br)
		}
	})
}

// dialSlowReader connects to addr with a 4 KiB receive buffer, so what the
// balancer writes to it and it does not read stays with the balancer.
func dialSlowReader(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		}); err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// An upgrade the backend answers with an ordinary page (a download: the
// app ignored the Upgrade header) was read whole, up to 1 MiB, before a byte
// went to the client. A client asking for a large file with upgrade headers
// and not reading held a MiB of the balancer per connection: 200 such
// connections held 203 MiB of heap. The answer streams now, as a plain
// request's does.
func TestUpgradeAnswerStreams(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sets SO_RCVBUF")
	}
	h := newHarness(t, configs.Balancer{})
	const size = 1 << 20
	page := []byte(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", size, strings.Repeat("b", size)))
	url := scriptedBackend(t, func(c net.Conn, _ *bufio.Reader) { _, _ = c.Write(page) })
	h.ring.Update([]ring.Member{{Name: "app", URL: url, Weight: 1}})

	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := int64(ms.HeapInuse)
	const clients = 200
	for i := range clients {
		c := dialSlowReader(t, h.addr)
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.WriteString(c, strings.Replace(wsHead, "/ws", "/big.iso", 1)+"\r\n"); err != nil {
			t.Fatal(err)
		}
		// The answer has begun (a buffered answer begins only once read whole).
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
			t.Fatalf("client %d: %q %v, want the backend's 200", i, line, err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	grown := (int64(ms.HeapInuse) - before) >> 20
	t.Logf("%d clients not reading a %d MiB answer to an upgrade: heap in use grew %d MiB", clients, size>>20, grown)
	if grown > 40 {
		t.Errorf("heap grew %d MiB for %d clients, want well under 1 MiB each", grown, clients)
	}

	// A client that reads gets the whole answer, however large: nothing is
	// cut at a buffer's size.
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, strings.Replace(wsHead, "/ws", "/big.iso", 1)+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || err != nil || len(body) != size || !bytes.Equal(body, page[len(page)-size:]) {
		t.Errorf("%d, %d bytes, %v; want 200 and the %d bytes", resp.StatusCode, len(body), err, size)
	}
}

// Interim answers before the 101 (100 Continue to a forwarded Expect, 103
// Early Hints) were taken for the edge's answer: the client got a bare 101
// from the balancer, with no tunnel behind it, and the frames the edge sent
// were lost. They are passed over now, a bounded number of them.
func TestUpgradeAfterInterimAnswers(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	for _, tt := range []struct {
		name    string
		interim int
		tunnel  bool
	}{
		{"100 Continue", 1, true},
		{"a few", 5, true},
		{"a flood", 1000, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			url := scriptedBackend(t, func(c net.Conn, br *bufio.Reader) {
				_, _ = io.WriteString(c, strings.Repeat("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n", tt.interim/2)+
					strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", tt.interim%2)+
					"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+wsSampleAccept+"\r\n\r\nfrom the edge")
				_, _ = io.Copy(io.Discard, br)
			})
			h.ring.Update([]ring.Member{{Name: "hinting", URL: url, Weight: 1}})
			resp, br, _ := upgradeThrough(t, h.addr, wsHead+"\r\n")
			if !tt.tunnel {
				if resp.StatusCode != http.StatusBadGateway {
					t.Errorf("%d, want 502 for %d interim answers", resp.StatusCode, tt.interim)
				}
				return
			}
			if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != "websocket" {
				t.Fatalf("%d %v, want the edge's 101", resp.StatusCode, resp.Header)
			}
			got := make([]byte, len("from the edge"))
			if _, err := io.ReadFull(br, got); err != nil || string(got) != "from the edge" {
				t.Errorf("tunnel gave %q %v, want the edge's bytes after its 101", got, err)
			}
		})
	}
}

// An edge that closes an upgrade's connection before a byte of answer —
// ending it for room while the balancer was too starved to write its
// request in the edge's linger, or dying — gets the upgrade once more on a
// new connection before the balancer takes it for unreachable: a live edge
// answers it, a dying one refuses the dial. Before, the first close was
// final: with one edge, the client got 502 from a live edge.
func TestUpgradeClosedUnansweredTriedOnceMore(t *testing.T) {
	for _, tc := range []struct {
		name       string
		unanswered int // connections the edge closes before answering
		want       int
	}{
		{"once", 1, http.StatusSwitchingProtocols},
		{"every time", 1000, http.StatusBadGateway},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, configs.Balancer{})
			var seen atomic.Int64
			url := serveConns(t, func(c net.Conn, br *bufio.Reader) {
				if seen.Add(1) <= int64(tc.unanswered) {
					return // closed, nothing read or written
				}
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+wsSampleAccept+"\r\n\r\n")
				_, _ = io.Copy(io.Discard, br)
			})
			h.ring.Update([]ring.Member{{Name: "shedding", URL: url, Weight: 1}})
			resp, _, _ := upgradeThrough(t, h.addr, wsHead+"\r\n")
			if resp.StatusCode != tc.want {
				t.Errorf("%d after the edge closed %d connection(s) unanswered (%d seen), want %d", resp.StatusCode, min(tc.unanswered, int(seen.Load())), seen.Load(), tc.want)
			}
		})
	}
}

// upgradeThrough sends req, an upgrade (wsHead, wsUpgrade), to the balancer
// at addr on a connection of its own and reads the answer's head: the
// answer, a reader for what follows it (the tunnel's bytes) and the
// connection, which closes when the test ends.
func upgradeThrough(t *testing.T, addr, req string) (*http.Response, *bufio.Reader, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp, br, c
}
