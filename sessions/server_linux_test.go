package sessions

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"golang.org/x/sys/unix"

	"github.com/ringlb/ringlb/configs"
)

// The 101 is written only once the participant is in its session: a
// client that holds the 101 gets every frame sent after it. (Written by
// fasthttp before the join, a frame sent in between reached the others
// but not the newcomer.) The edge's join hook looks at the newcomer's
// socket: nothing may have arrived yet.
func TestUpgradeAnsweredOnceJoined(t *testing.T) {
	var (
		newcomer atomic.Pointer[net.TCPConn]
		early    = make(chan error, 1)
	)
	e := startEdge(t, configs.Edge{}, func(s *Server) {
		signal := s.joined // startEdge's: feeds e.joined
		s.joined = func(key string) {
			if c := newcomer.Load(); c != nil && key == "greet" {
				// Loopback delivers a write at once: a 101 written before
				// the join would be waiting in the socket now.
				if n, err := pending(c); n > 0 || err != nil {
					early <- fmt.Errorf("newcomer has %d bytes (%v) before its join was done", n, err)
				}
				close(early)
			}
			signal(key)
		}
	})
	first := e.join(t, "greet")

	c, err := net.Dial("tcp", e.data)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	newcomer.Store(c.(*net.TCPConn))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nCtstickiness: greet\r\n\r\n")
	e.waitJoined(t)
	if err := <-early; err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(testDeadline))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get(headerEdge) != "edge-t" {
		t.Fatalf("answer %v %v, want 101 from edge-t", resp, err)
	}
	// The first frame sent after the 101 reaches the newcomer.
	if err := first.WriteMessage(websocket.BinaryMessage, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	var head [2]byte
	if _, err := io.ReadFull(br, head[:]); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, head[1]&0x7f)
	if _, err := io.ReadFull(br, body); err != nil || head[0] != 0x82 || string(body) != "hello" {
		t.Fatalf("frame %x %q %v, want a binary frame \"hello\"", head, body, err)
	}
}

// pending reports how many bytes wait unread in c's socket, without
// reading them or waiting.
func pending(c *net.TCPConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		n    int
		perr error
		b    [64]byte
	)
	err = raw.Control(func(fd uintptr) {
		n, _, perr = unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if perr == unix.EAGAIN {
			n, perr = 0, nil
		}
	})
	if err != nil {
		return 0, err
	}
	return n, perr
}
