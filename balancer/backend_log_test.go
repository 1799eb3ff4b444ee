package balancer

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
)

// lockedBuffer is a log destination safe for concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A backend's answer is the client's: a session cookie it sets belongs in
// the client's response, never in the balancer's log — even when the answer
// is malformed, or its head longer than the balancer reads (a long Location
// that echoes the client's URL is enough), and fasthttp's error quotes what
// it read. Plain requests and WebSocket upgrades, at debug level.
func TestBackendAnswersStayOutOfLogs(t *testing.T) {
	const secret = "s3ss10n-c00k1e-planted"
	cookie := "Set-Cookie: session=" + secret + "\r\n"
	answers := []string{
		"HTTP/1.1 200 OK\r\n" + cookie + "A header line without a colon\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\n" + cookie + "Content-Length: x\r\n\r\n",
		"HTTP/1.1 302 Found\r\n" + cookie + "Location: /" + strings.Repeat("a", 8000) + "\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 2x0 " + secret + "\r\n\r\n",
		"HTTP/1.1 403 Forbidden\r\n" + cookie + "Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
	}
	var logs lockedBuffer
	r := ring.New(ring.DefaultConfig())
	_, addr := serveBalancerLogging(t, configs.Balancer{}, r, slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))

	for i, answer := range answers {
		backend, stop := answeringBackend(t, answer)
		r.Update([]ring.Member{{Name: "backend", URL: "http://" + backend, Weight: 1}})
		for _, head := range []string{"GET /page HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\n", wsHead} {
			statuses := exchange(t, addr, head+"\r\n", 1, false)
			if len(statuses) != 1 || statuses[0] != http.StatusBadGateway {
				t.Errorf("answer %d to %q: %v, want 502", i, head[:8], statuses)
			}
		}
		stop()
	}
	if strings.Contains(logs.String(), secret) {
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, secret) {
				t.Errorf("log line carries the backend's cookie: %.300s", line)
			}
		}
	}
}

// A backend's 421 naming an owner that is on no ring is relayed, and said
// in the log — once per log interval, not once per request: a third-party
// backend answers every request so, and its X-Ringlb-Owner is its own text,
// logged only when it is a node name.
func TestStray421LogBounded(t *testing.T) {
	const planted = "planted-owner-text"
	var logs lockedBuffer
	r := ring.New(ring.DefaultConfig())
	_, addr := serveBalancerLogging(t, configs.Balancer{}, r, slog.New(slog.NewJSONHandler(&logs, nil)))
	backend, stop := answeringBackend(t, "HTTP/1.1 421 Misdirected Request\r\n"+configs.HeaderOwner+": "+planted+"/"+strings.Repeat("x", 200)+"\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
	t.Cleanup(stop)
	r.Update([]ring.Member{{Name: "backend", URL: "http://" + backend, Weight: 1}})
	const requests = 20
	statuses := exchange(t, addr, strings.Repeat("GET /page HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\n\r\n", requests), requests, false)
	if len(statuses) != requests {
		t.Fatalf("%d answers, want %d", len(statuses), requests)
	}
	for _, s := range statuses {
		if s != http.StatusMisdirectedRequest {
			t.Fatalf("answers %v, want the backend's 421 relayed", statuses)
		}
	}
	said := strings.Count(logs.String(), "421 names an edge not on the ring")
	if said != 1 {
		t.Errorf("the stray 421 said %d times for %d requests, want once per log interval", said, requests)
	}
	if strings.Contains(logs.String(), planted) {
		t.Errorf("the backend's own header text reached the log: %.400s", logs.String())
	}
}

// answeringBackend serves answer, as written, to each request on a
// connection of its own; stop closes it and waits for it.
func answeringBackend(t *testing.T, answer string) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
				_, _ = io.WriteString(c, answer)
			}
			c.Close()
		}
	}()
	return ln.Addr().String(), func() { ln.Close(); wg.Wait() }
}
