package balancer

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/fasthttp/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

type accessLine struct {
	Time       time.Time `json:"time"`
	Type       string    `json:"type"`
	Client     string    `json:"client"`
	Key        string    `json:"key"`
	Edge       string    `json:"edge"`
	Status     int       `json:"status"`
	BytesIn    uint64    `json:"bytes_in"`
	BytesOut   uint64    `json:"bytes_out"`
	DurationMS float64   `json:"duration_ms"`
	Close      string    `json:"close"`
}

// readAccess waits until path holds n lines and returns them.
func readAccess(t *testing.T, path string, n int) []accessLine {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		raw, _ := os.ReadFile(path)
		lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
		if len(raw) > 0 && len(lines) >= n {
			out := make([]accessLine, len(lines))
			for i, l := range lines {
				if err := json.Unmarshal([]byte(l), &out[i]); err != nil {
					t.Fatalf("access line %q: %v", l, err)
				}
			}
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d lines, want %d:\n%s", path, len(lines), n, raw)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func keyHash(key string) string { return fmt.Sprintf("%016x", xxhash.Sum64String(key)) }

// One line per HTTP request and per closed tunnel, the key as its hash
// only; SIGUSR1's reopen moves lines to a new file after logrotate renamed
// the old one.
func TestAccessLog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	begin := time.Now().Truncate(time.Microsecond) // the lines' precision
	h := newHarness(t, configs.Balancer{AccessLog: configs.AccessLog{Enabled: true, Path: path}})
	key := h.keyOwnedBy(t, "edge-2")
	resp, body := h.get(t, "/whoami", http.Header{"Ctstickiness": {key}})
	if resp.StatusCode != 200 {
		t.Fatalf("GET: %d", resp.StatusCode)
	}
	lines := readAccess(t, path, 1)
	l := lines[0]
	if l.Type != "http" || l.Edge != "edge-2" || l.Status != 200 || l.Key != keyHash(key) || l.BytesOut != uint64(len(body)) ||
		!strings.HasPrefix(l.Client, "127.0.0.1:") || l.Close != "" || l.Time.Before(begin) || l.Time.After(time.Now()) {
		t.Errorf("request line %+v (body %d bytes)", l, len(body))
	}

	ws, _ := dialWS(t, h.addr, "/ws", http.Header{"Ctstickiness": {key}})
	msg := strings.Repeat("m", 1000)
	if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	if _, got, err := ws.ReadMessage(); err != nil || string(got) != msg {
		t.Fatalf("echo: %v", err)
	}
	ws.Close()
	lines = readAccess(t, path, 2)
	tl := lines[1]
	if tl.Type != "tunnel" || tl.Edge != "edge-2" || tl.Status != 101 || tl.Key != keyHash(key) || tl.Close != "client" ||
		tl.BytesIn < 1000 || tl.BytesOut < 1000 || tl.DurationMS <= 0 {
		t.Errorf("tunnel line %+v", tl)
	}
	raw, _ := os.ReadFile(path)
	if strings.Contains(string(raw), key) {
		t.Errorf("the key itself is in the access log:\n%s", raw)
	}

	// logrotate: rename, then SIGUSR1 (ReopenAccessLog).
	rotated := path + ".1"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	h.get(t, "/whoami", http.Header{"Ctstickiness": {key}}) // still to the renamed file
	readAccess(t, rotated, 3)
	h.bal.ReopenAccessLog()
	h.get(t, "/whoami", http.Header{"Ctstickiness": {key}})
	if fresh := readAccess(t, path, 1); fresh[0].Type != "http" {
		t.Errorf("after reopen: %+v", fresh)
	}
	if old := readAccess(t, rotated, 3); len(old) != 3 {
		t.Errorf("the rotated file got %d lines after the reopen, want 3", len(old))
	}

	// Reload switches it off: no more lines.
	cfg := h.bal.current.Load().cfg
	cfg.AccessLog = configs.AccessLog{}
	if err := h.bal.Reload(provision(cfg)); err != nil {
		t.Fatal(err)
	}
	h.get(t, "/whoami", http.Header{"Ctstickiness": {key}})
	h.bal.access.close() // flushes whatever was queued
	if fresh := readAccess(t, path, 1); len(fresh) != 1 {
		t.Errorf("lines after the access log was switched off: %+v", fresh)
	}
}

// blockedWriter never returns from Write until released: a disk that
// stopped.
type blockedWriter struct{ release chan struct{} }

func (b blockedWriter) Write(p []byte) (int, error) {
	<-b.release
	return len(p), nil
}

// A writer that falls behind costs the data path nothing: entries beyond the
// queue are dropped and counted, and enqueue never waits.
func TestAccessLogDropsWhenBehind(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := newAccessLog(reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.apply(configs.AccessLog{Enabled: true, Sample: 1}); err != nil {
		t.Fatal(err)
	}
	stuck := blockedWriter{release: make(chan struct{})}
	a.send(accessControl{w: stuck})
	e := accessEntry{at: time.Now(), kind: accessHTTP, status: 200}
	const n = accessQueue + 1000
	start := time.Now()
	for range n {
		a.enqueue(&e)
	}
	t.Logf("%d entries offered to a stopped writer in %s", n, time.Since(start))
	dropped := gatherCounter(t, reg, "ringlb_balancer_access_log_dropped_total")
	// The writer buffered a few hundred lines and is stuck writing them;
	// the queue holds accessQueue more; the rest were dropped.
	if dropped <= 0 || dropped > 1000 {
		t.Errorf("dropped %g of %d, want some, at most 1000", dropped, n)
	}
	close(stuck.release)
	a.close()
}

// Sampling logs about the share asked for.
func TestAccessLogSample(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := newAccessLog(reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	if err := a.apply(configs.AccessLog{Enabled: true, Sample: 0.1}); err != nil {
		t.Fatal(err)
	}
	a.send(accessControl{w: pw})
	counted := make(chan int)
	go func() {
		n := 0
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			n++
		}
		counted <- n
	}()
	e := accessEntry{at: time.Now(), kind: accessHTTP, status: 200}
	for range 5000 {
		a.enqueue(&e)
		if len(a.entries) > accessQueue/2 {
			time.Sleep(time.Millisecond) // let the writer keep up: this test counts sampling, not drops
		}
	}
	a.close()
	pw.Close()
	if n := <-counted; n < 300 || n > 700 {
		t.Errorf("%d of 5000 logged at sample 0.1", n)
	}
}

func gatherCounter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("%s not registered", name)
	return 0
}

// Logging a request costs the data path no allocation.
func TestAccessLogRequestAllocationFree(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := newAccessLog(reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	if err := a.apply(configs.AccessLog{Enabled: true, Sample: 1}); err != nil {
		t.Fatal(err)
	}
	a.send(accessControl{w: io.Discard})
	var ctx fasthttp.RequestCtx
	var req fasthttp.Request
	req.Header.Set(keyHeader, "session-1")
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 51234}, nil)
	ctx.Response.Header.Set(headerEdge, "edge-2")
	ctx.SetBodyString("hello")
	allocs := testing.AllocsPerRun(1000, func() {
		a.request(&ctx, time.Now())
		if len(a.entries) > accessQueue/2 {
			time.Sleep(time.Millisecond)
		}
	})
	if allocs != 0 {
		t.Errorf("%g allocations per logged request", allocs)
	}
	var tl accessEntry
	tl.kind, tl.client, tl.status = accessHTTP, netip.MustParseAddrPort("192.0.2.7:51234"), 200
	tl.setEdge([]byte("edge-2\n\"x"))
	line := string(tl.appendJSON(nil))
	var parsed accessLine
	if err := json.Unmarshal([]byte(line), &parsed); err != nil || parsed.Edge != "edge-2__x" {
		t.Errorf("a hostile edge name: %q → %+v %v", line, parsed, err)
	}
}

// Moving the log to another file (a reload with a new path) loses no line:
// every request logged while the destination changes lands in the old file
// or the new one.
func TestAccessLogSwitchLosesNoLine(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := newAccessLog(reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	paths := []string{filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")}
	if err := a.apply(configs.AccessLog{Enabled: true, Path: paths[0], Sample: 1}); err != nil {
		t.Fatal(err)
	}
	var ctx fasthttp.RequestCtx
	var req fasthttp.Request
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 51234}, nil)
	const offered = 20000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range offered {
			a.request(&ctx, time.Now())
			if len(a.entries) > accessQueue/2 {
				time.Sleep(time.Millisecond) // this test counts switches, not a writer behind
			}
		}
	}()
	switches := 0
	for running := true; running; switches++ {
		select {
		case <-done:
			running = false
		default:
		}
		if err := a.apply(configs.AccessLog{Enabled: true, Path: paths[switches%2], Sample: 1}); err != nil {
			t.Fatal(err)
		}
	}
	a.close()
	lines := 0
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		lines += strings.Count(string(raw), "\n")
	}
	dropped := gatherCounter(t, reg, "ringlb_balancer_access_log_dropped_total")
	t.Logf("%d requests over %d switches: %d lines, %g dropped", offered, switches, lines, dropped)
	if float64(lines)+dropped != offered {
		t.Errorf("%d lines + %g dropped for %d requests: %g lost in the switches", lines, dropped, offered, offered-float64(lines)-dropped)
	}
}

// A reload that switches the access log on after the balancer stopped (a
// PUT /api/config answered while the node stops) starts no writer: the
// stop closed the log already, and a writer started after it wrote to its
// file, owned by nobody, until the process exits.
func TestReloadAfterShutdownStartsNoAccessLogWriter(t *testing.T) {
	h := newHarness(t, provision(configs.Balancer{}))
	h.serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), healthtest.Patience)
	defer cancel()
	if err := h.bal.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	cfg := h.bal.current.Load().cfg
	cfg.AccessLog = configs.AccessLog{Enabled: true, Path: filepath.Join(t.TempDir(), "access.log"), Sample: 1}
	err := h.bal.Reload(cfg)
	t.Logf("reload after the shutdown: %v", err)
	h.bal.access.mu.Lock()
	started := h.bal.access.done != nil
	h.bal.access.mu.Unlock()
	if started {
		h.bal.access.close()
		t.Error("the reload after the shutdown started the access log's writer")
	}
}

// An IPv4 client reaching a dual-stack listener (listen: ":443"), or named
// by a proxy in front of one (nginx writes "PROXY TCP6 ::ffff:203.0.113.7"),
// has a 4-in-6 address. The access log wrote it so, "[::ffff:203.0.113.7]:5555",
// where X-Forwarded-For and the per-address limits say 203.0.113.7: a
// search of the log for the client's address (fail2ban, a GeoIP lookup)
// found nothing. The log writes the IPv4 address, as nginx logs it.
func TestAccessLogWritesAnIPv4ClientAsIPv4(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	h := newHarness(t, configs.Balancer{
		ProxyProtocol: configs.ProxyProtocol{Enabled: true},
		AccessLog:     configs.AccessLog{Enabled: true, Path: path},
	})
	resp, body := proxiedRequest(t, h.addr, []byte("PROXY TCP6 ::ffff:203.0.113.7 ::1 5555 80\r\n"), "mapped-key")
	if resp == nil || resp.StatusCode != 200 {
		t.Fatalf("request behind a TCP6 PROXY header: %v %s", resp, body)
	}
	var w whoami
	json.Unmarshal(body, &w)
	l := readAccess(t, path, 1)[0]
	t.Logf("X-Forwarded-For %q, access log client %q", w.XFF, l.Client)
	if w.XFF != "203.0.113.7" || l.Client != "203.0.113.7:5555" {
		t.Errorf("X-Forwarded-For %q and access log client %q, want 203.0.113.7 and 203.0.113.7:5555", w.XFF, l.Client)
	}
}
