package balancer

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
)

// procStatusKiB reads a kB field (VmRSS, VmHWM) of /proc/self/status.
func procStatusKiB(t *testing.T, field string) int64 {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// bigBody is how a test client sends an oversize body.
type bigBody struct {
	head    string // request head without its blank line
	chunked bool   // chunked framing; else Content-Length: size
	expect  bool   // Expect: 100-continue, body sent only after a 100
	size    int64
}

// send writes the request to addr and returns the final status and the body
// bytes written. The body goes out in 64 KiB writes while the answer is read
// concurrently, and stops at the first write error (the balancer closed).
func (bb bigBody) send(t *testing.T, addr string) (int, int64) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(120 * time.Second))
	head := bb.head
	if bb.chunked {
		head += "Transfer-Encoding: chunked\r\n"
	} else {
		head += fmt.Sprintf("Content-Length: %d\r\n", bb.size)
	}
	if bb.expect {
		head += "Expect: 100-continue\r\n"
	}
	if _, err := io.WriteString(c, head+"\r\n"); err != nil {
		t.Fatal(err)
	}
	sent := make(chan int64, 1)
	write := func() {
		buf := pattern(64 << 10)
		var n int64
		defer func() { sent <- n }()
		for n < bb.size {
			p := buf[:min(int64(len(buf)), bb.size-n)]
			if bb.chunked {
				if _, err := fmt.Fprintf(c, "%x\r\n", len(p)); err != nil {
					return
				}
			}
			m, err := c.Write(p)
			n += int64(m)
			if err != nil {
				return
			}
			if bb.chunked {
				if _, err := io.WriteString(c, "\r\n"); err != nil {
					return
				}
			}
		}
		if bb.chunked {
			_, _ = io.WriteString(c, "0\r\n\r\n")
		}
	}
	br := bufio.NewReader(c)
	started := false
	if !bb.expect {
		go write()
		started = true
	}
	status := 0
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Errorf("read response: %v", err)
			break
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusContinue && !started {
			go write()
			started = true
			continue
		}
		status = resp.StatusCode
		break
	}
	c.Close() // ends the writer if the balancer still reads
	if !started {
		return status, 0
	}
	return status, <-sent
}

// A 200 MB body, declared or chunked, on a WebSocket upgrade or a plain
// request: the balancer answers without holding it (RSS stays near its
// baseline, at its peak and after), and no edge is counted as failing for
// the client's body.
func TestOversizeBodiesStayBounded(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc/self/status")
	}
	h := newHarness(t, configs.Balancer{}) // max_body_bytes: the default
	const size = 200 << 20
	const bound = 64 << 10 // KiB of growth allowed
	upgrade := upgradeHead
	post := "POST /whoami HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\n"
	tests := []struct {
		name string
		body bigBody
		want int
	}{
		{"upgrade content-length", bigBody{head: upgrade, size: size}, http.StatusBadRequest},
		{"upgrade chunked", bigBody{head: upgrade, chunked: true, size: size}, http.StatusBadRequest},
		{"post content-length", bigBody{head: post, size: size}, http.StatusRequestEntityTooLarge},
		{"post content-length expect 100-continue", bigBody{head: post, expect: true, size: size}, http.StatusRequestEntityTooLarge},
		{"post chunked", bigBody{head: post, chunked: true, size: size}, http.StatusRequestEntityTooLarge},
		{"post chunked at the limit", bigBody{head: post, chunked: true, size: configs.DefaultMaxBodyBytes}, http.StatusOK},
		{"post content-length at the limit", bigBody{head: post, size: configs.DefaultMaxBodyBytes}, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runtime.GC()
			debug.FreeOSMemory()
			before := procStatusKiB(t, "VmRSS")
			// Writing 5 resets the peak (VmHWM) to the current RSS.
			peakReset := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
			start := time.Now()
			status, sent := tt.body.send(t, h.addr)
			took := time.Since(start)
			peak := procStatusKiB(t, "VmHWM")
			runtime.GC()
			debug.FreeOSMemory()
			after := procStatusKiB(t, "VmRSS")
			t.Logf("status %d after %d body bytes sent in %v; RSS %d MiB before, peak %d MiB (reset: %v), %d MiB after",
				status, sent, took.Round(time.Millisecond), before>>10, peak>>10, peakReset, after>>10)
			if status != tt.want {
				t.Errorf("status %d, want %d", status, tt.want)
			}
			if peakReset && peak-before > bound {
				t.Errorf("RSS peaked %d MiB above its baseline of %d MiB", (peak-before)>>10, before>>10)
			}
			if after-before > bound {
				t.Errorf("RSS stayed %d MiB above its baseline of %d MiB", (after-before)>>10, before>>10)
			}
		})
	}

	for _, e := range h.edges {
		if h.bal.isSuspect(e.name) {
			t.Errorf("%s is marked unreachable after the clients' bodies", e.name)
		}
		key := h.keyOwnedBy(t, e.name)
		if _, w := h.whoami(t, "/whoami", http.Header{"Ctstickiness": {key}}); w.Edge != e.name {
			t.Errorf("key of %s served by %s", e.name, w.Edge)
		}
	}
	if n := h.backendErrors(t); n != 0 {
		t.Errorf("%v backend errors counted for the clients' bodies", n)
	}
}

// A chunked body that grows past max_body_bytes while it streams is cut
// off: the client gets 413 and the edge's request is aborted, never
// complete, with no more than the limit of it sent.
func TestChunkedBodyOverLimitAbortsTheEdgeRequest(t *testing.T) {
	const limit = 64 << 10
	backend := startRawBackend(t)
	r := ring.New(ring.DefaultConfig())
	r.Update([]ring.Member{{Name: "raw", URL: backend.url, Weight: 1}})
	bal, addr := serveBalancer(t, configs.Balancer{Limits: configs.Limits{MaxBodyBytes: limit}}, r)

	post := "POST /up HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\n"
	status, sent := bigBody{head: post, chunked: true, size: 8 << 20}.send(t, addr)
	reqs := backend.settle(t, bal)
	t.Logf("status %d after %d body bytes sent; the backend parsed %+v", status, sent, reqs)
	if status != http.StatusRequestEntityTooLarge {
		t.Errorf("status %d, want 413", status)
	}
	for _, r := range reqs {
		if r.complete || r.body > limit {
			t.Errorf("the edge got %d body bytes (complete: %v), want an aborted request of at most %d", r.body, r.complete, limit)
		}
	}

	// At the limit it goes through whole, re-chunked.
	status, _ = bigBody{head: post, chunked: true, size: limit}.send(t, addr)
	reqs = backend.settle(t, bal)
	if status != http.StatusOK || len(reqs) != 1 || !reqs[0].complete || reqs[0].body != limit {
		t.Errorf("a body at the limit: status %d, the backend parsed %+v", status, reqs)
	}
}

// With max_body_bytes raised, a 200 MB upload, declared or chunked, streams
// through to the edge whole without the balancer holding it: fasthttp's
// server hands the handler a stream and HostClient copies it to the edge
// in 4 KiB pieces.
func TestLargeBodiesStreamWithoutBuffering(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc/self/status")
	}
	const size = 200 << 20
	const bound = 64 << 10 // KiB of growth allowed
	backend := startRawBackend(t)
	r := ring.New(ring.DefaultConfig())
	r.Update([]ring.Member{{Name: "raw", URL: backend.url, Weight: 1}})
	bal, addr := serveBalancer(t, configs.Balancer{Limits: configs.Limits{MaxBodyBytes: size}}, r)
	post := "POST /up HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\n"
	for _, chunked := range []bool{false, true} {
		runtime.GC()
		debug.FreeOSMemory()
		before := procStatusKiB(t, "VmRSS")
		peakReset := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
		start := time.Now()
		status, sent := bigBody{head: post, chunked: chunked, size: size}.send(t, addr)
		took := time.Since(start)
		peak := procStatusKiB(t, "VmHWM")
		reqs := backend.settle(t, bal)
		t.Logf("chunked %v: status %d after %d body bytes in %v; RSS %d MiB before, peak %d MiB (reset: %v)",
			chunked, status, sent, took.Round(time.Millisecond), before>>10, peak>>10, peakReset)
		if status != http.StatusOK || len(reqs) != 1 || !reqs[0].complete || reqs[0].body != size {
			t.Errorf("chunked %v: status %d, the backend parsed %+v", chunked, status, reqs)
		}
		if peakReset && peak-before > bound {
			t.Errorf("chunked %v: RSS peaked %d MiB above its baseline of %d MiB", chunked, (peak-before)>>10, before>>10)
		}
	}
}
