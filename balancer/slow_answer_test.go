package balancer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// slowBackend is a third-party backend (net/http) whose answers take their
// time, behind a balancer whose request_timeout is short: what is timed is
// the balancer's, never the test's. Its handlers end when the test does.
type slowBackend struct {
	h    *harness
	tls  *tls.Config   // the client's, when the balancer terminates TLS
	stop chan struct{} // closed when the test ends: every handler returns
	// cut receives the error of a backend write that failed: the balancer
	// closed the connection under an answer it was sending.
	cut chan error
}

// slowTimeout is the balancer's request_timeout in these tests.
const slowTimeout = time.Second

// slowTrickle is what /trickle sends: a line every 200 ms for about three
// times slowTimeout.
var slowTrickle = func() []byte {
	var b bytes.Buffer
	for i := range 16 {
		fmt.Fprintf(&b, "line %02d of a body that takes its time\n", i)
	}
	return b.Bytes()
}()

// slowDownload is /download's body: more than the sockets on the way hold,
// so the balancer writes it for as long as the client takes to read it.
var slowDownload = pattern(16 << 20)

// newSlowBackend starts a balancer with request_timeout slowTimeout
// (terminating TLS with withTLS) in front of a slowBackend.
func newSlowBackend(t *testing.T, withTLS bool) *slowBackend {
	t.Helper()
	cfg := configs.Balancer{Limits: configs.Limits{RequestTimeout: configs.Duration(slowTimeout)}}
	var clientTLS *tls.Config
	if withTLS {
		certFile, keyFile, pool := writeTestCert(t)
		cfg.TLS = configs.TLS{CertFile: certFile, KeyFile: keyFile}
		clientTLS = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	}
	h := newHarness(t, cfg)
	sb := &slowBackend{h: h, tls: clientTLS, stop: make(chan struct{}), cut: make(chan error, 16)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(sb.serve)}
	go srv.Serve(ln)
	// After the harness's: runs before the balancer's Shutdown.
	t.Cleanup(func() {
		close(sb.stop)
		srv.Close()
	})
	h.ring.Update([]ring.Member{{Name: "slow", URL: "http://" + ln.Addr().String(), Weight: 1}})
	return sb
}

func (sb *slowBackend) serve(w http.ResponseWriter, r *http.Request) {
	flush := w.(http.Flusher).Flush
	wait := func(d time.Duration) bool {
		select {
		case <-time.After(d):
			return true
		case <-sb.stop:
		case <-r.Context().Done():
		}
		return false
	}
	switch r.URL.Path {
	case "/trickle": // a line every 200 ms, chunked
		for line := range bytes.Lines(slowTrickle) {
			if _, err := w.Write(line); err != nil {
				return
			}
			flush()
			if !wait(200 * time.Millisecond) {
				return
			}
		}
	case "/stall": // the head and some of the body, then nothing
		// More than the balancer's 4 KiB write buffer, which a body of
		// known length fills before it is written to the client.
		w.Header().Set("Content-Length", strconv.Itoa(1<<20))
		w.Write(pattern(16 << 10))
		flush()
		wait(healthtest.Patience * 4)
	case "/nohead": // not even a head
		wait(healthtest.Patience * 4)
	case "/download": // all of it, as fast as it is taken
		w.Header().Set("Content-Length", strconv.Itoa(len(slowDownload)))
		w.Write(slowDownload)
	case "/stall-chunked": // /stall without a length: chunked
		w.Write(pattern(16 << 10))
		flush()
		wait(healthtest.Patience * 4)
	case "/endless", "/endless-chunked": // more than anyone reads, until the connection is cut
		if r.URL.Path == "/endless" {
			w.Header().Set("Content-Length", strconv.Itoa(1<<40))
		}
		buf := pattern(64 << 10)
		for {
			if _, err := w.Write(buf); err != nil {
				sb.cut <- err
				return
			}
		}
	}
}

// get sends GET path with a key on a new connection whose receive buffer
// is small and reads the answer through pace (nil: as fast as it comes).
// It returns the status, the body bytes read and how reading them ended.
func (sb *slowBackend) get(t *testing.T, path string, pace func(io.Reader) io.Reader) (int, []byte, error) {
	t.Helper()
	c := sb.dial(t, path)
	defer c.Close()
	var r io.Reader = c
	if pace != nil {
		r = pace(c)
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(r, 64<<10), nil)
	if err != nil {
		return 0, nil, err
	}
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// dial opens a client connection with a small receive buffer (the
// sockets on the way hold less) and sends GET path on it.
func (sb *slowBackend) dial(t *testing.T, path string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", sb.h.addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.(*net.TCPConn).SetReadBuffer(64 << 10)
	c := conn
	if sb.tls != nil {
		c = tls.Client(conn, sb.tls)
	}
	_ = c.SetDeadline(time.Now().Add(healthtest.Patience))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: bal\r\nctstickiness: slow\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
	return c
}

// steadily reads at most 128 KiB every 25 ms: about 5 MiB/s, far from a
// stall at any moment, slower than the balancer writes.
func steadily(r io.Reader) io.Reader {
	return &pacedReader{r: r, every: time.NewTicker(25 * time.Millisecond)}
}

type pacedReader struct {
	r     io.Reader
	every *time.Ticker
	left  int // bytes this tick still allows
}

func (p *pacedReader) Read(b []byte) (int, error) {
	if p.left == 0 {
		<-p.every.C
		p.left = 128 << 10
	}
	// Several reads a tick: one of a TLS connection returns one record.
	n, err := p.r.Read(b[:min(len(b), p.left)])
	p.left -= n
	return n, err
}

func (sb *slowBackend) responseErrors(t *testing.T) float64 {
	return sb.h.metric(t, "ringlb_balancer_backend_errors_total", map[string]string{"edge": "slow", "kind": errorKindResponse})
}

// An answer whose body is still coming when request_timeout has passed
// goes on while bytes move: the timeout is between two reads from the
// backend, and between two writes to the client, as nginx's
// proxy_read_timeout and send_timeout and HAProxy's timeout server and
// client are. A backend or a client that stalls for it is still cut, the
// head must still come within it, and only a backend's stall counts
// against the backend.
func TestSlowAnswers(t *testing.T) {
	skipTimedWhenShort(t)
	sb := newSlowBackend(t, false)
	sb.clientSide(t)

	t.Run("a backend that stalls after its head is cut and counted", func(t *testing.T) {
		before := sb.responseErrors(t)
		start := time.Now()
		status, body, err := sb.get(t, "/stall", nil)
		t.Logf("status %d, %d bytes in %v, read ended with %v", status, len(body), time.Since(start).Round(time.Millisecond), err)
		if status != http.StatusOK || err == nil || len(body) >= 1<<20 {
			t.Errorf("status %d, %d bytes, %v: want the head, then the body cut short", status, len(body), err)
		}
		healthtest.WaitUntil(t, "the stalled answer counted against its backend", func() bool {
			return sb.responseErrors(t) > before
		})
	})

	t.Run("a backend that sends no head is answered 502 and counted", func(t *testing.T) {
		before := sb.responseErrors(t)
		start := time.Now()
		status, body, err := sb.get(t, "/nohead", nil)
		t.Logf("status %d %q in %v, read ended with %v", status, body, time.Since(start).Round(time.Millisecond), err)
		if status != http.StatusBadGateway {
			t.Errorf("status %d, want 502", status)
		}
		if after := sb.responseErrors(t); after <= before {
			t.Errorf("no backend error counted")
		}
	})
}

// The same client's side when the balancer terminates TLS: the write
// deadlines are the TLS connection's.
func TestSlowAnswersOverTLS(t *testing.T) {
	skipTimedWhenShort(t)
	newSlowBackend(t, true).clientSide(t)
}

// skipTimedWhenShort skips, with -short, a test of the balancer's own
// request_timeout: its clients read and trickle at paces set against that
// 1 s, and the race detector's run (-short) on a loaded machine stalled
// them past it (a steady reader cut at 6 of 16 MiB). `go test ./...` runs
// them.
func skipTimedWhenShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("paces set against a 1 s request_timeout; run without -short")
	}
}

// clientSide runs the subtests where the client sets the pace: a trickled
// body, a client reading slowly, one that stops reading.
func (sb *slowBackend) clientSide(t *testing.T) {
	t.Run("a body trickled for three times the timeout arrives whole", func(t *testing.T) {
		start := time.Now()
		status, body, err := sb.get(t, "/trickle", nil)
		t.Logf("status %d, %d of %d bytes in %v, read ended with %v", status, len(body), len(slowTrickle), time.Since(start).Round(time.Millisecond), err)
		if status != http.StatusOK || err != nil || !bytes.Equal(body, slowTrickle) {
			t.Errorf("status %d, %d of %d bytes, %v: want the whole body", status, len(body), len(slowTrickle), err)
		}
	})

	t.Run("a client reading slowly but steadily gets the whole body", func(t *testing.T) {
		start := time.Now()
		status, body, err := sb.get(t, "/download", steadily)
		t.Logf("status %d, %d of %d bytes in %v, read ended with %v", status, len(body), len(slowDownload), time.Since(start).Round(time.Millisecond), err)
		if status != http.StatusOK || err != nil || !bytes.Equal(body, slowDownload) {
			t.Errorf("status %d, %d of %d bytes, %v: want the whole body", status, len(body), len(slowDownload), err)
		}
	})

	t.Run("a client that stops reading is cut, not counted against the backend", func(t *testing.T) {
		before := sb.responseErrors(t)
		c := sb.dial(t, "/endless")
		defer c.Close()
		br := bufio.NewReaderSize(c, 4<<10)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		// The client reads nothing more until the balancer has given up
		// on it, which the backend sees as its connection closed.
		start := time.Now()
		select {
		case err := <-sb.cut:
			t.Logf("the backend's write failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
		case <-time.After(healthtest.Patience):
			t.Fatalf("the balancer still relays to a client that reads nothing after %v", healthtest.Patience)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		t.Logf("then the client read %d more bytes, ending with %v", n, err)
		if err == nil {
			t.Errorf("the body ended cleanly after %d bytes; want it cut", n)
		}
		if after := sb.responseErrors(t); after != before {
			t.Errorf("a client's stall counted %v backend errors", after-before)
		}
		if sb.h.bal.isSuspect("slow") {
			t.Errorf("the backend is marked unreachable for a client's stall")
		}
	})

}

// A Shutdown whose bound ends under a TLS client's answer still being
// sent cuts the connection, outside the lock every connection's start and
// end takes, and returns: the client sees its answer end short.
func TestShutdownCutsATLSAnswerInFlight(t *testing.T) {
	sb := newSlowBackend(t, true)
	c := sb.dial(t, "/stall")
	defer c.Close()
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /stall: %s", resp.Status)
	}
	// The answer's head is here, its body stalls: the request is in flight.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan error, 1)
	began := time.Now()
	go func() { done <- sb.h.bal.Shutdown(ctx) }()
	select {
	case err := <-done:
		t.Logf("Shutdown returned after %s: %v", time.Since(began).Round(time.Millisecond), err)
	case <-time.After(healthtest.Patience):
		t.Fatal("Shutdown did not return")
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil || n >= 1<<20 {
		t.Errorf("the answer in flight after Shutdown: %d bytes, %v; want it cut short", n, err)
	}
}
