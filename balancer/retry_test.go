package balancer

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
)

// countingBackend answers each request it parses with answer(n), n counting
// the requests parsed on all its connections from 1; after the answer it
// keeps the connection unless answer says to close it.
func countingBackend(t *testing.T, answer func(n int) (reply string, closeAfter bool)) (url string, parsed func() int) {
	t.Helper()
	var (
		mu sync.Mutex
		n  int
	)
	url = serveConns(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			mu.Lock()
			n++
			reply, closeAfter := answer(n)
			mu.Unlock()
			if _, err := io.WriteString(c, reply); err != nil || closeAfter {
				return
			}
		}
	})
	return url, func() int {
		mu.Lock()
		defer mu.Unlock()
		return n
	}
}

// A GET whose answer is broken was sent again by the edge's pool, up to 5
// times (its retry of idempotent requests took any error for a stale
// keep-alive connection): one client request was five at the backend, and
// one that timed out held its client 5 × 30 s. Only a connection that
// closed before a byte of answer is retried now.
func TestBrokenAnswerNotRetried(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	url, parsed := countingBackend(t, func(int) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false
	})
	h.ring.Update([]ring.Member{{Name: "broken", URL: url, Weight: 1}})
	statuses := exchange(t, h.addr, "GET /report HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\n\r\n", 1, false)
	if fmt.Sprint(statuses) != "[502]" {
		t.Errorf("answers %v, want [502]", statuses)
	}
	if n := parsed(); n != 1 {
		t.Errorf("the backend got the client's one GET %d times, want 1", n)
	}
}

// A connection closed before a byte of answer to the first request it
// carried was not stale: the backend ended it over this request (a Go
// handler's panic closes it so, a query of death). The pool took it for a
// stale keep-alive connection and sent the GET again on a new one, four
// times: one client request was five at the backend, an amplifier for any
// request that harms it. It is sent once now; the client gets 502.
func TestRequestClosingAFreshConnectionNotResent(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	url, parsed := countingBackend(t, func(int) (string, bool) {
		return "", true // closed, nothing answered
	})
	h.ring.Update([]ring.Member{{Name: "closes", URL: url, Weight: 1}})
	statuses := exchange(t, h.addr, "GET /crash HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\n\r\n", 1, false)
	if fmt.Sprint(statuses) != "[502]" {
		t.Errorf("answers %v, want [502]", statuses)
	}
	if n := parsed(); n != 1 {
		t.Errorf("the backend got the client's one GET %d times, each on a new connection, want 1", n)
	}
}

// The retry the pool is there for still happens: a keep-alive connection the
// backend closed while it was idle in the pool.
func TestStaleKeepAliveRetried(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	// Each connection answers one request and closes without saying so.
	url, parsed := countingBackend(t, func(int) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n", true
	})
	h.ring.Update([]ring.Member{{Name: "closer", URL: url, Weight: 1}})
	for i := range 3 {
		resp, body := h.get(t, "/page", http.Header{"Ctstickiness": {"k"}})
		if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
			t.Fatalf("request %d: %d %q, want 200 through a fresh connection", i, resp.StatusCode, body)
		}
	}
	if n := parsed(); n != 3 {
		t.Errorf("the backend parsed %d requests, want 3", n)
	}
}

// Which errors of a request to an edge mean a stale pooled connection (and
// so a GET or HEAD is sent again on another), and which are the edge's answer.
func TestStaleConnectionErrors(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{io.EOF, true},
		{&net.OpError{Op: "write", Err: syscall.EPIPE}, true},
		{&net.OpError{Op: "read", Err: syscall.ECONNRESET}, true},
		{fasthttp.ErrTimeout, false},
		{fasthttp.ErrBodyTooLarge, false},
		{io.ErrUnexpectedEOF, false},
		{errors.New("error when reading response headers: small read buffer"), false},
		{&dialError{edge: "e", err: &net.OpError{Op: "dial", Err: syscall.ECONNRESET}}, false},
	} {
		if got := staleConnection(tt.err); got != tt.want {
			t.Errorf("staleConnection(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
