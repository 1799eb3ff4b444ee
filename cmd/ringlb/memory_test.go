package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// memoryLimitedBinary returns a script that runs bin with the Go memory
// limit GOMEMLIMIT=limit, as an operator's systemd unit or container
// environment sets it (without one, ringlb derives the limit from its
// cgroup's).
func memoryLimitedBinary(t *testing.T, bin, limit string) string {
	return wrappedBinary(t, bin, "ringlb-memlimit", "export GOMEMLIMIT="+limit)
}

// startLimitedEdge runs an edge under GOMEMLIMIT=limit with the edge
// section's extra settings (", key: value"...) and returns it, its data
// and admin addresses and its log, once it serves.
func startLimitedEdge(t *testing.T, limit, extra string) (edge *proc, listen, admin string, w *logWatch) {
	t.Helper()
	return startEdgeOf(t, memoryLimitedBinary(t, buildBinary(t), limit), extra)
}

// startEdgeOf is startLimitedEdge with the binary (or script) bin.
func startEdgeOf(t *testing.T, bin, extra string) (edge *proc, listen, admin string, w *logWatch) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "edge.yaml")
	writeFile(t, cfg, "cluster: { name: edge-1, bind: 127.0.0.1:0, profile: local }\n"+
		"edge: { listen: 127.0.0.1:0, admin: 127.0.0.1:0, drain_timeout: 1s"+extra+" }\n")
	edge = startProc(t, bin, "edge", "-config", cfg)
	rec := edge.waitLog(t, "edge started")
	listen, admin = rec["listen"].(string), rec["admin"].(string)
	w = watchLogs(edge)
	waitStatus(t, "http://"+listen+"/whoami", 200)
	return edge, listen, admin, w
}

// hoarder is a WebSocket connection to an edge that announced the largest
// message and sent one byte of it: the edge makes room for the whole
// message and holds it for as long as the connection stays.
type hoarder struct {
	c  net.Conn
	br *bufio.Reader
}

// openHoarder upgrades a raw connection to addr for session key. It
// returns nil and the status line when the edge does not answer 101.
func openHoarder(t *testing.T, addr, key string) (*hoarder, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nCtstickiness: %s\r\n\r\n", key)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, "no answer: " + err.Error()
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		c.Close()
		return nil, resp.Status
	}
	c.SetDeadline(time.Time{})
	t.Cleanup(func() { c.Close() })
	return &hoarder{c: c, br: br}, resp.Status
}

// announce sends a masked binary frame's head announcing n bytes and the
// first byte of its payload.
func (h *hoarder) announce(n uint64) error {
	head := []byte{0x82, 0x80 | 127}
	head = binary.BigEndian.AppendUint64(head, n)
	head = append(head, 1, 2, 3, 4, 'x'^1)
	h.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := h.c.Write(head)
	return err
}

// closeCode waits for the edge's close frame, passing over its pings, and
// returns its code; -1 when the connection ends (or nothing comes within
// wait) without one.
func (h *hoarder) closeCode(wait time.Duration) int {
	h.c.SetReadDeadline(time.Now().Add(wait))
	for {
		var head [2]byte
		if _, err := io.ReadFull(h.br, head[:]); err != nil || head[1]&0x7f > 125 {
			return -1 // the edge sends nothing longer than a control frame here
		}
		body := make([]byte, head[1]&0x7f)
		if _, err := io.ReadFull(h.br, body); err != nil {
			return -1
		}
		if head[0]&0x0f == websocket.CloseMessage {
			if len(body) < 2 {
				return -1
			}
			return int(binary.BigEndian.Uint16(body))
		}
	}
}

// Low on memory, an edge degrades instead of growing until the kernel
// kills it: with the budgets an operator sized for a large machine
// (messages up to 1 MiB, a gigabyte of them arriving at once) and the
// process limited to 64 MiB, 200 connections that each announce a 1 MiB
// message and send a byte of it would make the edge hold 200 MiB. Before,
// the edge took every one (and in a 256 MiB container it was OOM-killed).
// Now, once its memory nears the limit, it answers new connections 503,
// closes the connections whose messages it cannot make room for with 1013
// (try again later), keeps relaying the sessions it has, and serves
// again once the memory comes back.
func TestLowMemoryDegradesTheEdge(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	const (
		hoarders = 200
		message  = 1 << 20
	)
	_, listen, admin, w := startLimitedEdge(t, "64MiB", ", max_message_bytes: 1048576, max_incoming_bytes: 1073741824")
	whoami := "http://" + listen + "/whoami"

	// A session that keeps relaying throughout.
	a, b := joinEdge(t, listen, "steady"), joinEdge(t, listen, "steady")
	relay := relayer(t, a, b, "steady session")
	relay("before")

	// The connections first (a few KiB each), then their announcements.
	var hs []*hoarder
	for i := range hoarders {
		h, status := openHoarder(t, listen, fmt.Sprintf("hoard-%d", i))
		if h == nil {
			t.Fatalf("hoarder %d: %s", i, status)
		}
		hs = append(hs, h)
	}
	for _, h := range hs {
		h.announce(message) // a write error: the edge closed it already
	}
	// Each announcement is either held (no close frame comes) or refused
	// with a close; a held one is found out by the short wait.
	codes := make(chan int, len(hs))
	for _, h := range hs {
		go func() { codes <- h.closeCode(5 * time.Second) }()
	}
	closed := map[int]int{}
	held := 0
	for range hs {
		if code := <-codes; code >= 0 {
			closed[code]++
		} else {
			held++
		}
	}
	w.running(t, "under the large messages")
	metrics := "http://" + admin + "/metrics"
	t.Logf("%d connections announcing %d MiB each: %d held, closed %v; the edge's heap %.0f MiB in use, %.0f MiB of messages being received",
		len(hs), message>>20, held, closed, scrape(t, metrics, "go_memstats_heap_inuse_bytes")/(1<<20), scrape(t, metrics, "ringlb_edge_incoming_bytes")/(1<<20))
	if held >= hoarders/2 {
		t.Errorf("the edge held %d messages of %d MiB under a 64 MiB limit", held, message>>20)
	}
	if closed[1013] == 0 {
		t.Errorf("no announcement was refused with 1013 (closed %v)", closed)
	}

	// The messages it holds took the edge to its low mark; what else a
	// client makes it hold — connections — takes it past: from there new
	// connections are refused.
	idle := idleUntilRefused(t, listen)
	status := freshStatus(whoami)
	t.Logf("then %d idle connections; GET /whoami: %s; heap %.0f MiB in use, %.0f MiB of messages being received",
		len(idle), status, scrape(t, metrics, "go_memstats_heap_inuse_bytes")/(1<<20), scrape(t, metrics, "ringlb_edge_incoming_bytes")/(1<<20))
	w.running(t, "under the hoard")
	if !strings.HasPrefix(status, "503") {
		t.Errorf("GET /whoami while low on memory: %s, want 503", status)
	}
	relay("under the hoard")
	if v := scrape(t, metrics, `ringlb_edge_rejected_connections_total{reason="memory"}`); v <= 0 {
		t.Errorf(`ringlb_edge_rejected_connections_total{reason="memory"} = %v, want > 0`, v)
	}

	for _, h := range hs {
		h.c.Close()
	}
	closeAll(idle)
	released := time.Now()
	waitStatus(t, whoami, 200)
	t.Logf("serving new connections again %s after the hoarders left", time.Since(released).Round(time.Millisecond))
	relay("after")
	w.running(t, "after the hoard")
	// The line follows the state that let the request in.
	w.waitLine(t, msgMemoryRecovered)
	if n := w.count(msgLowMemory); n == 0 {
		t.Errorf("no %q line", msgLowMemory)
	}
}

// maxIdle bounds the idle connections idleUntilRefused opens.
const maxIdle = 4000

// idleUntilRefused opens connections to addr that each send part of a
// request head and wait (a node keeps each, with its buffers, until its
// request timeout) until the node refuses a new one with 503; they are
// closed when the test ends. It fails the test if none is refused within
// maxIdle connections.
func idleUntilRefused(t *testing.T, addr string) []net.Conn {
	t.Helper()
	var idle []net.Conn
	t.Cleanup(func() { closeAll(idle) })
	for refused := 0; refused == 0; {
		if len(idle) == maxIdle {
			t.Fatalf("%d idle connections and none refused", maxIdle)
		}
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatalf("idle connection %d: %v", len(idle), err)
		}
		idle = append(idle, c)
		io.WriteString(c, "GET /whoami HTTP/1.1\r\nHost: node\r\nX-Pad: "+strings.Repeat("p", 2048))
		if len(idle)%50 == 0 {
			refused = refusedNow(addr)
		}
	}
	return idle
}

// refusedNow opens one connection to addr and reports 1 when it is refused
// with 503, else 0.
func refusedNow(addr string) int {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return 0
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /whoami HTTP/1.1\r\nHost: node\r\n\r\n")
	line, _ := bufio.NewReader(c).ReadString('\n')
	if strings.HasPrefix(line, "HTTP/1.1 503 ") {
		return 1
	}
	return 0
}

// relayer returns a check that a message from a reaches b, named what and
// when in the message and in failures: the session that must keep relaying
// while the node is low on memory.
func relayer(t *testing.T, a, b *websocket.Conn, what string) func(when string) {
	return func(when string) {
		t.Helper()
		msg := what + " " + when
		a.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if err := a.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatalf("%s: write: %v", msg, err)
		}
		b.SetReadDeadline(time.Now().Add(30 * time.Second))
		for {
			_, data, err := b.ReadMessage()
			if err != nil {
				t.Fatalf("%s: read: %v", msg, err)
			}
			if string(data) == msg {
				return
			}
		}
	}
}

// freshStatus is the status line of a GET of url on a new connection (one
// kept alive from before is served still).
func freshStatus(url string) string {
	fresh := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := fresh.Get(url)
	if err != nil {
		return "no answer: " + err.Error()
	}
	resp.Body.Close()
	return resp.Status
}

// waitLine waits (generously) until the process has logged msg.
func (w *logWatch) waitLine(t *testing.T, msg string) {
	t.Helper()
	for deadline := time.After(30 * time.Second); w.count(msg) == 0; {
		select {
		case <-w.more:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no %q line within 30s", msg)
		}
	}
}

// A balancer low on memory refuses new connections with 503 and keeps
// relaying the tunnels it has; it serves again once they are gone. Its
// memory grows with its connections alone (a tunnel's buffers are fixed),
// so the connections are what take it to its limit here: 32 MiB.
func TestLowMemoryDegradesTheBalancer(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "balancer.yaml")
	writeFile(t, cfg, "cluster: { name: bal-1, bind: 127.0.0.1:0, profile: local, probe_interval: 200ms }\n"+
		"balancer: { listen: 127.0.0.1:0, admin: { listen: 127.0.0.1:0 } }\n")
	bal := startProc(t, memoryLimitedBinary(t, bin, "32MiB"), "balancer", "-config", cfg)
	rec := bal.waitLog(t, "balancer started")
	listen, admin, gossip := rec["listen"].(string), rec["admin"].(string), rec["gossip"].(string)
	ecfg := filepath.Join(dir, "edge.yaml")
	writeFile(t, ecfg, fmt.Sprintf("cluster: { name: edge-1, bind: 127.0.0.1:0, join: [%q], profile: local, probe_interval: 200ms }\n"+
		"edge: { listen: 127.0.0.1:0, admin: 127.0.0.1:0 }\n", gossip))
	startProc(t, bin, "edge", "-config", ecfg).waitLog(t, "edge started")
	w := watchLogs(bal)
	health := "http://" + listen + "/_ringlb/health"
	waitStatus(t, health, 200)

	// A session through the balancer, once it routes to the edge.
	var a, b *websocket.Conn
	for deadline := time.Now().Add(30 * time.Second); a == nil; time.Sleep(50 * time.Millisecond) {
		c, _, err := websocket.DefaultDialer.Dial("ws://"+listen+"/ws", http.Header{"Ctstickiness": {"steady"}})
		if err == nil {
			a = c
			t.Cleanup(func() { c.Close() })
		} else if time.Now().After(deadline) {
			t.Fatalf("no tunnel through the balancer within 30s: %v", err)
		}
	}
	b = joinEdge(t, listen, "steady")
	relay := relayer(t, a, b, "through the balancer")
	relay("before")

	idle := idleUntilRefused(t, listen)
	status := freshStatus(health)
	metrics := "http://" + admin + "/metrics"
	t.Logf("%d idle connections; GET %s on a new one: %s; heap %.0f MiB in use", len(idle), health, status, scrape(t, metrics, "go_memstats_heap_inuse_bytes")/(1<<20))
	w.running(t, "under the idle connections")
	if !strings.HasPrefix(status, "503") {
		t.Errorf("a new connection while low on memory: %s, want 503", status)
	}
	relay("while low on memory")
	if v := scrape(t, metrics, `ringlb_balancer_rejected_connections_total{reason="memory"}`); v <= 0 {
		t.Errorf(`ringlb_balancer_rejected_connections_total{reason="memory"} = %v, want > 0`, v)
	}
	closeAll(idle)
	waitStatus(t, health, 200)
	relay("after")
	w.waitLine(t, msgMemoryRecovered)
	if w.count(msgLowMemory) == 0 {
		t.Errorf("no %q line", msgLowMemory)
	}
}

// Log messages of the memory guard (balancer/acceptguard) the test waits for.
const (
	msgLowMemory       = "low on memory: refusing new connections and shedding the largest holders"
	msgMemoryRecovered = "memory recovered: accepting connections again"
	msgLimitShared     = "memory limit lowered: other processes of the memory cgroup hold memory"
	msgLimitOwn        = "memory limit back to the process's own"
)

// `ringlb check` says which memory limit a node started alike would take.
func TestCheckPrintsTheMemoryLimit(t *testing.T) {
	bin := buildBinary(t)
	cfg := filepath.Join(t.TempDir(), "edge.yaml")
	writeFile(t, cfg, "cluster: { name: edge-1, bind: 127.0.0.1:0 }\nedge: { listen: 127.0.0.1:0, admin: 127.0.0.1:0 }\n")
	for _, tc := range []struct{ env, want string }{
		{"GOMEMLIMIT=1GiB", "memory limit 1024 MiB"},
		// Off: whatever this machine's cgroup says, the node would take none.
		{"AUTOMEMLIMIT=off", "memory limit none (set GOMEMLIMIT or a cgroup limit)"},
	} {
		cmd := exec.Command(bin, "check", "-config", cfg)
		cmd.Env = append(os.Environ(), "GOMEMLIMIT=", tc.env)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s check: %v\n%s", tc.env, err, out)
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("%s: check says %q, want %q in it", tc.env, out, tc.want)
		}
	}
}
