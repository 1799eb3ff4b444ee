package balancer

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// An HTTP/1.0 client cannot read chunked coding (RFC 9112, 6.1: a server
// must not send Transfer-Encoding to it). An answer of unknown length went
// to it chunked: it took the chunk sizes for body bytes and, having asked
// for keep-alive, waited for the close that never came. Such an answer
// now goes to it as nginx sends it: without a coding, ended by the close.
func TestHTTP10ClientGetsNoChunkedAnswer(t *testing.T) {
	edge := serveConns(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			answer := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
			if req.Method == http.MethodHead {
				answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
			}
			if _, err := io.WriteString(c, answer); err != nil {
				return
			}
		}
	})
	path := filepath.Join(t.TempDir(), "access.log")
	h := newHarness(t, configs.Balancer{AccessLog: configs.AccessLog{Enabled: true, Path: path}})
	h.ring.Update([]ring.Member{{Name: "chunky", URL: edge, Weight: 1}})
	for _, conn := range []string{"keep-alive", "close", ""} {
		t.Run("Connection: "+conn, func(t *testing.T) {
			c, err := net.Dial("tcp", h.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			req := "GET /a HTTP/1.0\r\nHost: bal\r\nctstickiness: k\r\n"
			if conn != "" {
				req += "Connection: " + conn + "\r\n"
			}
			if _, err := io.WriteString(c, req+"\r\n"); err != nil {
				t.Fatal(err)
			}
			// Read as an HTTP/1.0 client does: everything up to the close.
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(c)
			t.Logf("the HTTP/1.0 client got %q (%v)", got, err)
			if err != nil {
				t.Fatalf("the answer did not end with the connection: %v", err)
			}
			head, body, _ := strings.Cut(string(got), "\r\n\r\n")
			if strings.Contains(strings.ToLower(head), "transfer-encoding") || body != "hello" {
				t.Errorf("got head %q and body %q, want no coding and the body %q", head, body, "hello")
			}
			// What the client took for the answer reads as one to a
			// strict HTTP/1.0 reader too.
			resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(got))), &http.Request{Method: http.MethodGet, ProtoMajor: 1, ProtoMinor: 0})
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || string(b) != "hello" {
				t.Errorf("read strictly: %d %q", resp.StatusCode, b)
			}
		})
	}
	t.Run("HEAD", func(t *testing.T) {
		// No body: the connection stays, the head names no coding.
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		for range 2 {
			if _, err := io.WriteString(c, "HEAD /a HTTP/1.0\r\nHost: bal\r\nctstickiness: k\r\nConnection: keep-alive\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodHead, ProtoMajor: 1, ProtoMinor: 0})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("HEAD: %d %v", resp.StatusCode, resp.Header)
			if resp.StatusCode != http.StatusOK || len(resp.TransferEncoding) > 0 || resp.Header.Get("Transfer-Encoding") != "" {
				t.Errorf("HEAD answered %d with %v, want 200 without a coding", resp.StatusCode, resp.Header)
			}
		}
	})
	// Each is logged as a plain request is.
	for _, l := range readAccess(t, path, 5) {
		if l.Type != "http" || l.Status != http.StatusOK {
			t.Errorf("access line %+v, want an http line with 200", l)
		}
	}
}

// An answer sent to an HTTP/1.0 client up to its close is timed as any
// streamed answer: an edge that stalls in its body is cut and counted, a
// client that stops reading is cut without blame on the edge.
func TestHTTP10AnswerTimedAsAStream(t *testing.T) {
	skipTimedWhenShort(t)
	sb := newSlowBackend(t, false)
	dial := func(path string) (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", sb.h.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.(*net.TCPConn).SetReadBuffer(64 << 10)
		_ = c.SetDeadline(time.Now().Add(healthtest.Patience))
		if _, err := io.WriteString(c, "GET "+path+" HTTP/1.0\r\nHost: bal\r\nctstickiness: slow\r\nConnection: keep-alive\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReaderSize(c, 4<<10)
		head, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet, ProtoMajor: 1, ProtoMinor: 0})
		if err != nil {
			t.Fatal(err)
		}
		if head.StatusCode != http.StatusOK || len(head.TransferEncoding) > 0 || !head.Close {
			t.Fatalf("head %d %v close=%v, want 200, no coding, closing", head.StatusCode, head.TransferEncoding, head.Close)
		}
		return c, br
	}

	t.Run("an edge that stalls in its body is cut and counted", func(t *testing.T) {
		before := sb.responseErrors(t)
		_, br := dial("/stall-chunked")
		start := time.Now()
		n, err := io.Copy(io.Discard, br)
		t.Logf("%d bytes, then the connection ended after %v (%v)", n, time.Since(start).Round(time.Millisecond), err)
		if err != nil {
			t.Errorf("the connection did not end: %v", err)
		}
		healthtest.WaitUntil(t, "the stalled answer counted against its backend", func() bool {
			return sb.responseErrors(t) > before
		})
	})

	t.Run("a client that stops reading is cut, not counted against the edge", func(t *testing.T) {
		before := sb.responseErrors(t)
		dial("/endless-chunked")
		start := time.Now()
		select {
		case err := <-sb.cut:
			t.Logf("the backend's write failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
		case <-time.After(healthtest.Patience):
			t.Fatalf("the balancer still relays to a client that reads nothing after %v", healthtest.Patience)
		}
		if after := sb.responseErrors(t); after != before {
			t.Errorf("a client's stall counted %v backend errors", after-before)
		}
	})
}

// Shutdown waits for an answer streamed to an HTTP/1.0 client up to its
// close as for a tunnel, and cuts it when its context ends: the hijacked
// connection is no longer among those fasthttp serves.
func TestShutdownCutsAnHTTP10Answer(t *testing.T) {
	sb := newSlowBackend(t, false)
	c, err := net.Dial("tcp", sb.h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(healthtest.Patience))
	if _, err := io.WriteString(c, "GET /endless-chunked HTTP/1.0\r\nHost: bal\r\nctstickiness: slow\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	if _, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet, ProtoMajor: 1, ProtoMinor: 0}); err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, br) // as fast as it comes: never ends by itself
		read <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := sb.h.bal.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown with an answer streaming: %v, want deadline exceeded", err)
	}
	select {
	case err := <-read:
		t.Logf("the client's read ended: %v", err)
	case <-time.After(healthtest.Patience):
		t.Fatal("the answer still streams after Shutdown")
	}
}
