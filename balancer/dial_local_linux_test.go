package balancer

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
)

// namedRawEdge is a backend that answers every upgrade with a 101 naming
// itself and holds the connection.
func namedRawEdge(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+wsSampleAccept+"\r\nX-Ringlb-Edge: "+name+"\r\n\r\n")
				io.Copy(io.Discard, c)
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// upgradeStatus sends a WebSocket upgrade for key on c and returns the
// answer's status line and the edge it names.
func upgradeStatus(t *testing.T, c net.Conn, key string) (string, string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nctstickiness: "+key+"\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("upgrade of %s: %v", key, err)
	}
	return resp.Status, resp.Header.Get("X-Ringlb-Edge")
}

// A dial to an edge that fails in this process — out of descriptors, here;
// of memory or local ports alike — is answered 503, and the edge is not
// blamed: not taken for suspect, its session's next participant not sent
// elsewhere. Before, EMFILE was taken for the edge being unreachable: 502,
// the live session's owner suspect for 5 s, and its next participants
// placed on a fallback edge with a skip while the earlier ones stayed on
// the owner — a split any client could bring about by holding connections
// until the balancer ran out of descriptors.
func TestLocalDialFailureBlamesNoEdge(t *testing.T) {
	b, addr := startBalancerFor(t, configs.Balancer{}, namedRawEdge(t, "e1"))
	b.ring.Update([]ring.Member{{Name: "e1", URL: namedRawEdge(t, "e1"), Weight: 1}, {Name: "e2", URL: namedRawEdge(t, "e2"), Weight: 1}})
	const key = "live-session"
	first, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	status, owner := upgradeStatus(t, first, key)
	if !strings.HasPrefix(status, "101") || owner == "" {
		t.Fatalf("first participant: %s from %q", status, owner)
	}

	// The next participant's connection is accepted; then the process
	// may open no descriptor more while the balancer dials for it.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(200 * time.Millisecond) // accepted and waiting for its request
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	free := 3
	for ; free < int(lim.Cur); free++ {
		if _, err := unix.FcntlInt(uintptr(free), unix.F_GETFD, 0); err == syscall.EBADF {
			break
		}
	}
	low := lim
	low.Cur = uint64(free)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nctstickiness: "+key+"\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatalf("the participant without descriptors: %v", err)
	}
	t.Logf("the participant while the balancer had no descriptor: %s", resp.Status)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("answered %s, want 503 Service Unavailable", resp.Status)
	}
	if b.isSuspect(owner) {
		t.Errorf("the owner %s is taken for suspect for the balancer's own shortage", owner)
	}

	third, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	if status, edge := upgradeStatus(t, third, key); !strings.HasPrefix(status, "101") || edge != owner {
		t.Errorf("the session's next participant: %s from %q, its first is on %s: split", status, edge, owner)
	}
}
