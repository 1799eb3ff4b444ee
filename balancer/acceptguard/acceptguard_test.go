package acceptguard

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testWait bounds every wait for an event; generous, never a pass/fail figure.
const testWait = 20 * time.Second

type counter struct{ n atomic.Int64 }

func (c *counter) Inc()         { c.n.Add(1) }
func (c *counter) value() int64 { return c.n.Load() }

// logLines collects a logger's JSON lines.
type logLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logLines) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), `"msg":"`+msg+`"`)
}

func (l *logLines) logger() *slog.Logger { return slog.New(slog.NewJSONHandler(l, nil)) }

func TestNextDelay(t *testing.T) {
	var got []time.Duration
	d := time.Duration(0)
	for range 10 {
		d = nextDelay(d)
		got = append(got, d)
	}
	want := []time.Duration{5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("backoff %v, want 5ms doubling to 1s: %v", got, want)
		}
	}
}

func TestLogLimit(t *testing.T) {
	r := LogLimit{Every: 10 * time.Second}
	t0 := time.Unix(1000, 0)
	for _, step := range []struct {
		at             time.Duration
		ok             bool
		wantSuppressed int
	}{
		{0, true, 0},
		{time.Second, false, 0},
		{9 * time.Second, false, 0},
		{10 * time.Second, true, 2},
		{11 * time.Second, false, 0},
		{30 * time.Second, true, 1},
	} {
		ok, n := r.Allow(t0.Add(step.at))
		if ok != step.ok || n != step.wantSuppressed {
			t.Fatalf("at +%s: allow = %v, %d; want %v, %d", step.at, ok, n, step.ok, step.wantSuppressed)
		}
	}
}

// acceptLoop accepts on l until it fails, sending what it gets.
func acceptLoop(l net.Listener) (<-chan net.Conn, <-chan error) {
	conns, failed := make(chan net.Conn, 16), make(chan error, 1)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				failed <- err
				return
			}
			conns <- c
		}
	}()
	return conns, failed
}

// acceptNext runs acceptLoop on l; next returns the next connection
// accepted (the test fails when Accept does, or when none comes).
func acceptNext(t *testing.T, l net.Listener) (next func() net.Conn) {
	conns, failed := acceptLoop(l)
	return func() net.Conn {
		t.Helper()
		select {
		case c := <-conns:
			return c
		case err := <-failed:
			t.Fatalf("Accept: %v", err)
		case <-time.After(testWait):
			t.Fatal("no connection accepted")
		}
		return nil
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testWait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(testWait))
	return c
}

func TestMaxConns(t *testing.T) {
	var refused counter
	var logs logLines
	g := Wrap(listen(t), Config{Name: "test", Logger: logs.logger(), MaxConns: 2, Refused: &refused,
		Refusal: HTTPAnswer(http.StatusServiceUnavailable, "too many connections"), LogEvery: time.Hour})
	defer g.Close()
	next := acceptNext(t, g)
	dial(t, g.Addr().String())
	dial(t, g.Addr().String())
	held := []net.Conn{next(), next()}

	for i := range 3 {
		c := dial(t, g.Addr().String())
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" {
			t.Fatalf("connection %d beyond the cap: %v %v, want 503 with Retry-After", i+3, resp, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if string(body) != "too many connections\n" {
			t.Errorf("refusal body %q", body)
		}
	}
	if refused.value() != 3 || g.Open() != 2 {
		t.Errorf("refused %d, open %d; want 3 and 2", refused.value(), g.Open())
	}
	if n := logs.count(msgRefused); n != 1 {
		t.Errorf("%d refusal lines for 3 refusals within LogEvery, want 1", n)
	}

	// Closing one (twice: the slot is freed once) makes room for one.
	held[0].Close()
	held[0].Close()
	if g.Open() != 1 {
		t.Fatalf("open %d after a close, want 1", g.Open())
	}
	dial(t, g.Addr().String())
	next()
	c := dial(t, g.Addr().String())
	if line, _ := bufio.NewReader(c).ReadString('\n'); !strings.HasPrefix(line, "HTTP/1.1 503 ") {
		t.Fatalf("beyond the cap again: %q", line)
	}

	// SetMax(0) lifts the cap for the next connections.
	g.SetMax(0)
	dial(t, g.Addr().String())
	next()
	if g.Open() != 3 {
		t.Errorf("open %d without a cap, want 3", g.Open())
	}
}

func TestCloseEndsAccept(t *testing.T) {
	g := Wrap(listen(t), Config{})
	_, failed := acceptLoop(g)
	g.Close()
	select {
	case err := <-failed:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(testWait):
		t.Fatal("Accept still running after Close")
	}
}

// A refused client reads the refusal as the answer to its request: written
// as soon as the connection was accepted, it reached an HTTP client before
// its request went out, and Go's transport took it for a stray response on
// an idle connection and dropped it — the client saw the connection fail,
// not the 503. And a request still on its way when the connection closed
// unread was answered with a reset, which can destroy the refusal before
// it is read. Each client here sends a POST of 32 KiB.
func TestRefusalAnswersTheRequest(t *testing.T) {
	var refused counter
	g := Wrap(listen(t), Config{MaxConns: 1, Refused: &refused, Refusal: HTTPAnswer(http.StatusServiceUnavailable, "too many connections")})
	defer g.Close()
	next := acceptNext(t, g)
	dial(t, g.Addr().String())
	next() // the one slot, held
	const clients = 100
	got503 := 0
	var others []string
	for range clients {
		client := &http.Client{Timeout: testWait, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := client.Post("http://"+g.Addr().String()+"/", "text/plain", strings.NewReader(strings.Repeat("x", 32<<10)))
		if err == nil && resp.StatusCode == http.StatusServiceUnavailable {
			got503++
		} else if len(others) < 3 {
			others = append(others, fmt.Sprint(resp, err))
		}
		if err == nil {
			resp.Body.Close()
		}
	}
	if got503 != clients {
		t.Errorf("%d of %d refused clients read the 503; others: %v", got503, clients, others)
	}
}
