package balancer

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// rawBackend is an edge at the TCP level that shows what a backend parses
// from the bytes the balancer sends: it reads every connection with
// net/http's request parser, records each request it parses (head and how
// much body), and answers 200, or 101 to a WebSocket upgrade of /ws (then
// reads until the balancer closes).
type rawBackend struct {
	url string
	ln  net.Listener
	wg  sync.WaitGroup

	mu     sync.Mutex
	reqs   []backendRequest
	conns  map[net.Conn]struct{}
	closed bool
	ended  chan struct{} // closed (and replaced) whenever a connection ends
}

// backendRequest is one request a rawBackend parsed.
type backendRequest struct {
	method, path string
	te           []string // Transfer-Encoding as parsed
	cl           int64    // Content-Length as parsed (-1: none or chunked)
	body         int64    // body bytes read
	complete     bool     // the body was read to its end
	header       http.Header
}

func startRawBackend(t *testing.T) *rawBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &rawBackend{url: "http://" + ln.Addr().String(), ln: ln, conns: map[net.Conn]struct{}{}, ended: make(chan struct{})}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			if b.closed {
				b.mu.Unlock()
				c.Close()
				return
			}
			b.conns[c] = struct{}{}
			b.wg.Add(1)
			b.mu.Unlock()
			go func() {
				defer b.wg.Done()
				b.serve(c)
				b.mu.Lock()
				delete(b.conns, c)
				close(b.ended)
				b.ended = make(chan struct{})
				b.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		b.closed = true
		for c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

func (b *rawBackend) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		n, err := io.Copy(io.Discard, req.Body)
		b.mu.Lock()
		b.reqs = append(b.reqs, backendRequest{req.Method, req.URL.Path, req.TransferEncoding, req.ContentLength, n, err == nil, req.Header})
		b.mu.Unlock()
		if err != nil {
			return
		}
		if req.URL.Path == "/ws" && strings.EqualFold(req.Header.Get("Upgrade"), "websocket") {
			if _, err := io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+wsSampleAccept+"\r\nX-Ringlb-Edge: raw\r\n\r\n"); err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, c)
			return
		}
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Ringlb-Edge: raw\r\n\r\nok\n"); err != nil {
			return
		}
	}
}

// settle returns the requests the backend parsed since the last settle, once
// it has parsed every byte it was sent: a probe request of its own, answered,
// shows every connection queued before it was accepted (the accept queue is
// FIFO); then the balancer's idle keep-alive connections are closed and the
// backend's connections all end.
func (b *rawBackend) settle(t *testing.T, bal *Balancer) []backendRequest {
	t.Helper()
	if got := exchange(t, b.ln.Addr().String(), "GET /settle HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n", 1, false); fmt.Sprint(got) != "[200]" {
		t.Fatalf("backend probe: %v", got)
	}
	// Looked at again as each connection ends, not every 10 ms.
	deadline := time.Now().Add(healthtest.Patience)
	for {
		bal.edges.closeIdle()
		b.mu.Lock()
		n, ended := len(b.conns), b.ended
		b.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the backend's connections end: not within %s", healthtest.Patience)
		}
		select {
		case <-ended:
		case <-time.After(10 * time.Millisecond):
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var reqs []backendRequest
	for _, r := range b.reqs {
		if r.path != "/settle" {
			reqs = append(reqs, r)
		}
	}
	b.reqs = nil
	return reqs
}

// exchange writes payload to a new connection to addr in one write and reads
// n responses, returning their status codes. With wantClose it then waits
// for the balancer to close the connection, and fails if more bytes come or
// the connection stays open.
func exchange(t *testing.T, addr, payload string, n int, wantClose bool) []int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, payload); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	// The answer to a HEAD has no body, whatever its Content-Length says
	// (read as a GET's, it waited out the deadline for a body that never
	// comes): the first final one, when the payload starts with a HEAD.
	var head *http.Request
	if strings.HasPrefix(payload, "HEAD ") {
		head = &http.Request{Method: http.MethodHead}
	}
	var statuses []int
	for range n {
		resp, err := http.ReadResponse(br, head)
		if err != nil {
			t.Errorf("after %v: read response: %v", statuses, err)
			return statuses
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 200 {
			head = nil
		}
		statuses = append(statuses, resp.StatusCode)
	}
	if wantClose {
		var one [1]byte
		switch m, err := br.Read(one[:]); {
		case m > 0:
			t.Errorf("more bytes after the answers %v: %q", statuses, one[:m])
		case err == nil || errors.Is(err, os.ErrDeadlineExceeded):
			t.Errorf("connection kept open after the answers %v (%v)", statuses, err)
		}
	}
	return statuses
}

// backendErrors sums ringlb_balancer_backend_errors_total over its series.
func (h *harness) backendErrors(t *testing.T) float64 {
	t.Helper()
	families, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() == "ringlb_balancer_backend_errors_total" {
			for _, m := range f.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// What a client smuggles: an edge-to-edge request the balancer refuses to
// proxy (/_ringlb/ paths), hidden in a body.
const smuggled = "POST /_ringlb/handoff HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

func chunk(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }

const (
	upgradeHead = "GET /whoami HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	wsHead   = "GET /ws HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	postHead = "POST /up HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\n"
)

// wsUpgrade is the sample upgrade (wsHead), whole, of target instead of /ws.
func wsUpgrade(target string) string { return strings.Replace(wsHead, "/ws", target, 1) + "\r\n" }

// withBoth is a TE.TE probe: one Transfer-Encoding variant (teLines) plus a
// Content-Length covering a body that, read as chunked, ends at once and
// leaves the smuggled request behind.
func withBoth(teLines string) string {
	body := "0\r\n\r\n" + smuggled
	return postHead + teLines + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body)) + body
}

// teOnly is a request framed by one Transfer-Encoding variant alone, with
// the smuggled request after an empty chunked body.
func teOnly(teLines string) string {
	return postHead + teLines + "\r\n" + "0\r\n\r\n" + smuggled
}

// Request smuggling payloads, sent raw to the balancer in front of a backend
// that records every request it parses. Each refused payload gets a 400 and
// its connection closed, and nothing of it reaches the backend; each
// accepted one reaches it as exactly the requests the client meant, with the
// bodies it meant, and never as the smuggled /_ringlb/handoff.
func TestSmugglingPayloads(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	backend := startRawBackend(t)
	h.ring.Update([]ring.Member{{Name: "raw", URL: backend.url, Weight: 1}})

	type want struct {
		statuses []int   // answers, in order
		bodies   []int64 // body length of each request the backend must parse whole
		closed   bool    // the balancer closes the connection after its answers
	}
	refused := want{statuses: []int{400}, closed: true}
	unsupported := want{statuses: []int{505}, closed: true}
	tests := []struct {
		name    string
		payload string
		want    want
	}{
		// The review's attack: an upgrade carrying a chunked body.
		{"upgrade chunked body", upgradeHead + "Transfer-Encoding: chunked\r\n\r\n" + chunk("0\r\n\r\n"+smuggled) + "0\r\n\r\n", refused},
		{"upgrade content-length body", upgradeHead + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(smuggled)) + smuggled, refused},
		{"upgrade transfer-encoding identity", upgradeHead + "Transfer-Encoding: identity\r\n\r\n", refused},
		{"websocket upgrade", wsHead + "\r\n", want{statuses: []int{101}, bodies: []int64{0}}},
		{"websocket upgrade content-length 0", wsHead + "Content-Length: 0\r\n\r\n", want{statuses: []int{101}, bodies: []int64{0}}},

		// A HEAD's body has no meaning (RFC 9110 9.3.2): a backend that
		// reads no body after a HEAD reads this one as a request.
		{"HEAD with a content-length body", "HEAD /up HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\n" + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(smuggled)) + smuggled, refused},
		{"HEAD with a chunked body", "HEAD /up HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(smuggled) + "0\r\n\r\n", refused},
		{"HEAD content-length 0", "HEAD /up HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\nContent-Length: 0\r\n\r\n", want{statuses: []int{200}, bodies: []int64{0}}},
		{"CL.TE", withBoth("Transfer-Encoding: chunked\r\n"), refused},
		{"TE.CL", postHead + "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n" + chunk(smuggled) + "0\r\n\r\n", refused},
		{"TE.TE xchunked", withBoth("Transfer-Encoding: xchunked\r\n"), refused},
		{"TE.TE leading space in value", withBoth("Transfer-Encoding:  chunked\r\n"), refused},
		{"TE.TE space before colon", withBoth("Transfer-Encoding : chunked\r\n"), refused},
		{"TE.TE chunked, identity", withBoth("Transfer-Encoding: chunked, identity\r\n"), refused},
		{"TE.TE identity", withBoth("Transfer-Encoding: identity\r\n"), refused},
		{"TE.TE two headers", withBoth("Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n"), refused},
		{"TE.TE folded value", withBoth("Transfer-Encoding:\r\n chunked\r\n"), refused},
		{"TE.TE hidden by folding", withBoth("X-Pad: y\r\n Transfer-Encoding: chunked\r\n"), refused},
		{"TE.TE bare LF", withBoth("X-Pad: y\nTransfer-Encoding: chunked\r\n"), refused},
		{"TE.TE bare CR", withBoth("X-Pad: y\rTransfer-Encoding: chunked\r\n"), refused},
		{"TE.TE vertical tab", withBoth("Transfer-Encoding:\vchunked\r\n"), refused},

		{"TE xchunked alone", teOnly("Transfer-Encoding: xchunked\r\n"), refused},
		{"TE chunked, identity alone", teOnly("Transfer-Encoding: chunked, identity\r\n"), refused},
		{"TE identity alone", teOnly("Transfer-Encoding: identity\r\n"), refused},
		{"TE folded alone", teOnly("Transfer-Encoding:\r\n chunked\r\n"), refused},
		{"TE after bare LF alone", teOnly("X-Pad: y\nTransfer-Encoding: chunked\r\n"), refused},
		{"TE hidden by folding alone", teOnly("X-Pad: y\r\n Transfer-Encoding: chunked\r\n"), refused},
		{"TE on HTTP/1.0", strings.Replace(teOnly("Transfer-Encoding: chunked\r\n"), "HTTP/1.1", "HTTP/1.0", 1), refused},
		// A tab around a framing header's value is whitespace to the RFC,
		// to HAProxy and to Go, part of the value to nginx 1.22, which
		// refuses the request (501, 400): parsers that disagree on framing.
		{"TE tab before value alone", teOnly("Transfer-Encoding:\tchunked\r\n"), refused},
		{"TE tab after value alone", teOnly("Transfer-Encoding: chunked\t\r\n"), refused},
		{"Content-Length tab before value", postHead + "Content-Length:\t2\r\n\r\n{}", refused},
		{"Content-Length tab after value", postHead + "Content-Length: 2\t\r\n\r\n{}", refused},

		// Only HTTP/1.0 and HTTP/1.1 are forwarded: another version
		// went on as the client wrote it, for each backend to frame by
		// its own reading of that version (505, nothing forwarded).
		{"HTTP/0.9 with a body", strings.Replace(postHead, "HTTP/1.1", "HTTP/0.9", 1) + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(smuggled)) + smuggled, unsupported},
		{"HTTP/1.9 with a body", strings.Replace(postHead, "HTTP/1.1", "HTTP/1.9", 1) + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(smuggled)) + smuggled, unsupported},
		{"HTTP/2.0", strings.Replace(postHead, "HTTP/1.1", "HTTP/2.0", 1) + "Content-Length: 2\r\n\r\n{}", unsupported},
		{"HTTP/1.0 with a body", strings.Replace(postHead, "HTTP/1.1", "HTTP/1.0", 1) + "Content-Length: 2\r\n\r\n{}", want{statuses: []int{200}, bodies: []int64{2}, closed: true}},

		// A header name is a token (RFC 9110 §5.1): a proxy that passes
		// another on lets each backend read it its own way.
		{"space inside a header name", postHead + "X A: b\r\nContent-Length: 2\r\n\r\n{}", refused},
		{"header name with a slash", postHead + "X/A: b\r\nContent-Length: 2\r\n\r\n{}", refused},
		{"header name with a non-ASCII byte", postHead + "X\xc3\xa9: b\r\nContent-Length: 2\r\n\r\n{}", refused},

		{"duplicate Content-Length", postHead + "Content-Length: 2\r\nContent-Length: " + fmt.Sprint(len(smuggled)+2) + "\r\n\r\n{}" + smuggled, refused},
		{"Content-Length list", postHead + "Content-Length: 2, 2\r\n\r\n{}", refused},
		{"Content-Length with sign", postHead + "Content-Length: +2\r\n\r\n{}", refused},

		// The chunked body itself is broken (bare LF framing): the
		// request's head may have gone on, its body never completes.
		{"chunk framing with bare LF", postHead + "Transfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n" + smuggled, want{statuses: []int{400}, closed: true}},

		// Methods a reverse proxy has no business passing on (nginx answers
		// both 405): CONNECT asks the backend for a tunnel to anywhere,
		// its 2xx relayed one way until close; TRACE reflects the request,
		// headers the balancer adds included.
		{"CONNECT", "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nctstickiness: k\r\n\r\n", want{statuses: []int{405}, closed: true}},
		{"TRACE", "TRACE /whoami HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\n\r\n", want{statuses: []int{405}, closed: true}},
		// In any case: a backend that folds a method's case reads them so.
		{"trace", "trace /whoami HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\n\r\n", want{statuses: []int{405}, closed: true}},
		{"Trace", "Trace /whoami HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\n\r\n", want{statuses: []int{405}, closed: true}},
		// (fasthttp's parser takes an authority-form target for CONNECT only.)
		{"connect", "connect evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nctstickiness: k\r\n\r\n", refused},

		// Accepted: the smuggled text stays a body.
		{"smuggled text in a Content-Length body", postHead + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(smuggled)) + smuggled, want{statuses: []int{200}, bodies: []int64{int64(len(smuggled))}}},
		{"smuggled text in a chunked body", postHead + "Transfer-Encoding: chunked\r\n\r\n" + chunk(smuggled) + "0\r\n\r\n", want{statuses: []int{200}, bodies: []int64{int64(len(smuggled))}}},
		{"chunk extension", postHead + "Transfer-Encoding: Chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\n\r\n", want{statuses: []int{200}, bodies: []int64{5}}},
		{"Content-Length named in Connection", postHead + fmt.Sprintf("Connection: Content-Length\r\nContent-Length: %d\r\n\r\n", len(smuggled)) + smuggled, want{statuses: []int{200}, bodies: []int64{int64(len(smuggled))}}},
		{"Transfer-Encoding named in Connection", postHead + "Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(smuggled) + "0\r\n\r\n", want{statuses: []int{200}, bodies: []int64{int64(len(smuggled))}}},
		{"chunked body with a trailer", postHead + "Transfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" + chunk(smuggled) + "0\r\nX-Sum: 1\r\n\r\n", want{statuses: []int{200}, bodies: []int64{int64(len(smuggled))}}},
		{"chunked body with a trailer smuggling a request", postHead + "Transfer-Encoding: chunked\r\n\r\n" + chunk("{}") + "0\r\nX-Sum: 1\r\n\r\n" + "GET /whoami HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\n\r\n", want{statuses: []int{200, 200}, bodies: []int64{2, 0}}},
		{"pipelined", postHead + "Content-Length: 2\r\n\r\n{}" + "GET /whoami HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\n\r\n", want{statuses: []int{200, 200}, bodies: []int64{2, 0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			statuses := exchange(t, h.addr, tt.payload, len(tt.want.statuses), tt.want.closed)
			reqs := backend.settle(t, h.bal)
			if fmt.Sprint(statuses) != fmt.Sprint(tt.want.statuses) {
				t.Errorf("answers %v, want %v", statuses, tt.want.statuses)
			}
			var whole []int64
			for _, r := range reqs {
				if strings.HasPrefix(r.path, "/_ringlb/") {
					t.Errorf("the backend parsed a smuggled request: %s %s", r.method, r.path)
				}
				if r.complete {
					whole = append(whole, r.body)
				}
			}
			if fmt.Sprint(whole) != fmt.Sprint(tt.want.bodies) {
				t.Errorf("the backend parsed %d whole requests with bodies %v, want %v (all parsed: %+v)", len(whole), whole, tt.want.bodies, reqs)
			}
		})
	}
	if n := h.backendErrors(t); n != 0 {
		t.Errorf("%v backend errors counted for the clients' bad requests", n)
	}
	// A 405 names the methods that are forwarded (RFC 9110 section 15.5.6).
	if code, resp := rawRequest(t, h.addr, "TRACE / HTTP/1.1\r\nHost: bal\r\n\r\n"); code != 405 || resp.Header.Get("Allow") != allowedMethods {
		t.Errorf("TRACE: %d, Allow %q; want 405, Allow %q", code, resp.Header.Get("Allow"), allowedMethods)
	}
}

// parsedHeader parses a raw request head the way the balancer's server does.
func parsedHeader(tb testing.TB, head string) *fasthttp.RequestHeader {
	tb.Helper()
	var h fasthttp.RequestHeader
	if err := h.Read(bufio.NewReader(strings.NewReader(head))); err != nil {
		tb.Fatal(err)
	}
	return &h
}

// The framing check runs on every request: no allocation.
func BenchmarkRefusal(b *testing.B) {
	for _, tt := range []struct{ name, head string }{
		{"get", "GET /whoami HTTP/1.1\r\nHost: ide.example.com\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\nCookie: ctstickiness=0123456789abcdef\r\n\r\n"},
		{"upgrade", wsHead + "Origin: https://ide.example.com\r\nSec-WebSocket-Protocol: ringlb.v1\r\n\r\n"},
		{"chunked", postHead + "Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"},
	} {
		h := parsedHeader(b, tt.head)
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if code, err := refusal(h, configs.DefaultMaxBodyBytes); code != 0 {
					b.Fatal(code, err)
				}
			}
		})
	}
}

func TestRefusalAllocs(t *testing.T) {
	h := parsedHeader(t, postHead+"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n")
	if n := testing.AllocsPerRun(100, func() { refusal(h, configs.DefaultMaxBodyBytes) }); n != 0 {
		t.Errorf("refusal allocates %v times per request", n)
	}
}

// A request without Host (HTTP/1.0 allows it) cannot be forwarded: the
// edge's pool dialed the edge, then refused to write it. Any client could so
// have an error counted against an edge (backend_errors_total, which
// alerts watch) and a WARN line written per request. The health path, which
// probes send without Host, still answers.
func TestRequestWithoutHost(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	backend := startRawBackend(t)
	h.ring.Update([]ring.Member{{Name: "raw", URL: backend.url, Weight: 1}})
	for _, tt := range []struct {
		name, payload string
		want          int
	}{
		{"plain", "GET /page HTTP/1.0\r\nctstickiness: k\r\n\r\n", 400},
		{"upgrade", strings.Replace(strings.Replace(wsHead, "HTTP/1.1", "HTTP/1.0", 1), "Host: bal\r\n", "", 1) + "\r\n", 400},
		{"health", "GET " + HealthPath + " HTTP/1.0\r\n\r\n", 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := exchange(t, h.addr, tt.payload, 1, false); fmt.Sprint(got) != fmt.Sprint([]int{tt.want}) {
				t.Errorf("answers %v, want [%d]", got, tt.want)
			}
			if reqs := backend.settle(t, h.bal); len(reqs) != 0 {
				t.Errorf("the backend got %+v", reqs)
			}
		})
	}
	if n := h.backendErrors(t); n != 0 {
		t.Errorf("%v backend errors counted for requests without Host", n)
	}
}
