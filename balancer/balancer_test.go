package balancer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/fasthttp/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// harness is three test edges on a ring and a balancer in front of them, all
// on loopback listeners of port 0.
type harness struct {
	edges  []*testEdge
	byName map[string]*testEdge
	ring   *ring.Ring
	bal    *Balancer
	reg    *prometheus.Registry
	addr   string // data port host:port
	admin  string // admin port host:port
	client *http.Client
}

func newHarness(t *testing.T, cfg configs.Balancer) *harness {
	t.Helper()
	h := &harness{byName: map[string]*testEdge{}, reg: prometheus.NewRegistry()}
	var members []ring.Member
	for i := 1; i <= 3; i++ {
		e := startTestEdge(t, fmt.Sprintf("edge-%d", i))
		h.edges = append(h.edges, e)
		h.byName[e.name] = e
		members = append(members, ring.Member{Name: e.name, URL: e.url, Weight: 1})
	}
	h.ring = ring.New(ring.DefaultConfig())
	h.ring.Update(members)

	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cfg.Provision()
	bal, err := New(cfg, "bal-test", h.ring, logger, h.reg)
	if err != nil {
		t.Fatal(err)
	}
	h.bal = bal
	h.serve(t)
	return h
}

// serve runs h.bal's data and admin ports on free loopback ports until the
// test ends (then a bounded Shutdown).
func (h *harness) serve(t *testing.T) {
	t.Helper()
	bal := h.bal
	data, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr, h.admin = data.Addr().String(), admin.Addr().String()
	served := make(chan error, 2)
	go func() { served <- bal.Serve(data) }()
	go func() { served <- bal.ServeAdmin(admin) }()
	// Patience, not a time a request is expected to take: a 32 MiB body
	// through a race-built balancer on a starved machine (the suite beside
	// another) took more than 10 s, the bound this client once had.
	h.client = &http.Client{Transport: &http.Transport{}, Timeout: healthtest.Patience}
	t.Cleanup(func() {
		h.client.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = bal.Shutdown(ctx)
		for range 2 {
			// ErrClosed: Shutdown came before the Serve goroutine ran.
			if err := <-served; err != nil && !errors.Is(err, ErrClosed) {
				t.Errorf("serve: %v", err)
			}
		}
	})
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// keyOwnedBy returns a key whose owner is the named edge.
func (h *harness) keyOwnedBy(t *testing.T, edge string) string {
	t.Helper()
	return keyOwnedOn(t, h.ring, edge)
}

// keyOwnedOn returns a key whose owner on r is the named edge.
func keyOwnedOn(t *testing.T, r *ring.Ring, edge string) string {
	t.Helper()
	snap := r.Snapshot()
	for i := range 10000 {
		k := fmt.Sprintf("session-%d", i)
		if m, _ := snap.Locate([]byte(k)); m.Name == edge {
			return k
		}
	}
	t.Fatalf("no key owned by %s", edge)
	return ""
}

func (h *harness) owner(t *testing.T, key string) string {
	t.Helper()
	m, ok := h.ring.Snapshot().Locate([]byte(key))
	if !ok {
		t.Fatal("empty ring")
	}
	return m.Name
}

// get sends GET path to the balancer with extra header lines.
func (h *harness) get(t *testing.T, path string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+h.addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func (h *harness) whoami(t *testing.T, path string, header http.Header) (*http.Response, whoami) {
	t.Helper()
	resp, body := h.get(t, path, header)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	var w whoami
	if err := json.Unmarshal(body, &w); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, body)
	}
	if got := resp.Header.Get("X-Ringlb-Edge"); got != w.Edge {
		t.Fatalf("X-Ringlb-Edge %q, whoami says %q", got, w.Edge)
	}
	return resp, w
}

// metric returns the value of the series name{labels}, 0 when absent.
func (h *harness) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue series
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

func hashedKey(token string) string {
	var sum [8]byte
	binary.BigEndian.PutUint64(sum[:], xxhash.Sum64String(token))
	return hex.EncodeToString(sum[:])
}

func TestRoutesKeyToOwner(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	for _, edge := range []string{"edge-1", "edge-2", "edge-3"} {
		key := h.keyOwnedBy(t, edge)
		token := "tok-" + key
		tests := []struct {
			name    string
			path    string
			header  http.Header
			wantKey string // ctstickiness the edge must see
		}{
			{"header", "/whoami", http.Header{"Ctstickiness": {key}}, key},
			{"cookie", "/whoami", http.Header{"Cookie": {"other=1; ctstickiness=" + key}}, key},
			{"query hashed", "/whoami?token=" + url.QueryEscape(token), nil, hashedKey(token)},
		}
		for _, tt := range tests {
			t.Run(edge+"/"+tt.name, func(t *testing.T) {
				want := h.owner(t, tt.wantKey)
				for range 3 { // same key, same edge, every time
					_, w := h.whoami(t, tt.path, tt.header)
					if w.Edge != want {
						t.Fatalf("routed to %s, ring owner is %s", w.Edge, want)
					}
					if w.Key != tt.wantKey {
						t.Fatalf("edge saw ctstickiness %q, want %q", w.Key, tt.wantKey)
					}
				}
			})
		}
	}
}

func TestForwardedHeaders(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	_, w := h.whoami(t, "/whoami", http.Header{
		"Ctstickiness":      {"k1"},
		"X-Forwarded-For":   {"203.0.113.9"},
		"X-Forwarded-Proto": {"https"}, // a client must not be able to claim TLS
		"Keep-Alive":        {"timeout=5"},
	})
	if w.XFF != "203.0.113.9, 127.0.0.1" {
		t.Errorf("X-Forwarded-For %q, want the client's chain with the peer appended", w.XFF)
	}
	if w.Proto != "http" {
		t.Errorf("X-Forwarded-Proto %q, want http", w.Proto)
	}
	if w.Host != h.addr {
		t.Errorf("X-Forwarded-Host %q, want %q", w.Host, h.addr)
	}
	if w.Hop != "" {
		t.Errorf("hop-by-hop Keep-Alive reached the edge: %q", w.Hop)
	}
}

func TestRejectsBadKeys(t *testing.T) {
	f := false
	h := newHarness(t, configs.Balancer{Key: configs.Key{HashQuery: &f}})
	long := strings.Repeat("k", 300)
	tests := []struct {
		name   string
		path   string
		header http.Header
		want   string
	}{
		{"header too long", "/whoami", http.Header{"Ctstickiness": {long}}, "longer than 256"},
		{"cookie too long", "/whoami", http.Header{"Cookie": {"ctstickiness=" + long}}, "longer than 256"},
		{"query too long", "/whoami?token=" + long, nil, "longer than 256"},
		{"query control char", "/whoami?token=a%01b", nil, "control characters"},
		{"query DEL", "/whoami?token=a%7Fb", nil, "control characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := h.get(t, tt.path, tt.header)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), tt.want) {
				t.Fatalf("got %d %q, want 400 saying %q", resp.StatusCode, body, tt.want)
			}
		})
	}
	// net/http will not send a control character in a header; write it raw.
	t.Run("header control char", func(t *testing.T) {
		status, _ := rawRequest(t, h.addr, "GET /whoami HTTP/1.1\r\nHost: x\r\nctstickiness: a\x01b\r\nConnection: close\r\n\r\n")
		if status != http.StatusBadRequest {
			t.Fatalf("status %d, want 400", status)
		}
	})
}

// rawRequest writes req on a new connection and returns the response.
func rawRequest(t *testing.T, addr, req string) (int, *http.Response) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	resp := requestOn(t, c, req)
	return resp.StatusCode, resp
}

// requestOn writes req (or the rest of one) on c and reads the response
// whole; its Body holds what was read.
func requestOn(t *testing.T, c net.Conn, req string) *http.Response {
	t.Helper()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp
}

func TestAssignsStickyCookie(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	resp, w := h.whoami(t, "/whoami", nil)
	cookie := resp.Header.Get("Set-Cookie")
	m := regexp.MustCompile(`^ctstickiness=([0-9a-f]{32}); Path=/; SameSite=Lax$`).FindStringSubmatch(cookie)
	if m == nil {
		t.Fatalf("Set-Cookie %q", cookie)
	}
	key := m[1]
	if w.Key != key {
		t.Fatalf("edge saw ctstickiness %q, assigned %q", w.Key, key)
	}
	if want := h.owner(t, key); w.Edge != want {
		t.Fatalf("routed to %s, owner of the assigned key is %s", w.Edge, want)
	}
	for range 3 {
		resp, w2 := h.whoami(t, "/whoami", http.Header{"Cookie": {"ctstickiness=" + key}})
		if w2.Edge != w.Edge || resp.Header.Get("Set-Cookie") != "" {
			t.Fatalf("with the cookie: edge %s (want %s), Set-Cookie %q", w2.Edge, w.Edge, resp.Header.Get("Set-Cookie"))
		}
	}
}

func TestNoKeyWithoutAssign(t *testing.T) {
	f := false
	h := newHarness(t, configs.Balancer{Key: configs.Key{AssignCookie: &f}})
	resp, body := h.get(t, "/whoami", nil)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "no stickiness key") {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
}

func TestHealthFollowsRing(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	if resp, _ := h.get(t, HealthPath, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("health %d with 3 edges", resp.StatusCode)
	}
	h.ring.Update(nil)
	if resp, _ := h.get(t, HealthPath, nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("health %d on an empty ring", resp.StatusCode)
	}
	if resp, _ := h.get(t, "/whoami", http.Header{"Ctstickiness": {"k"}}); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("request on an empty ring: %d, want 503", resp.StatusCode)
	}
}

// Maintenance fails the health path for health checkers while requests
// still go through; switching it off brings the health path back.
func TestMaintenanceFailsHealthOnly(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	set := func(state string) (int, map[string]any) {
		t.Helper()
		resp, err := postAdmin(h.client, "http://"+h.admin+"/api/maintenance?state="+state)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v map[string]any
		json.NewDecoder(resp.Body).Decode(&v)
		return resp.StatusCode, v
	}
	if code, v := set("on"); code != http.StatusOK || v["maintenance"] != true {
		t.Fatalf("maintenance on: %d %v", code, v)
	}
	if resp, body := h.get(t, HealthPath, nil); resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "maintenance") {
		t.Fatalf("health in maintenance: %d %q", resp.StatusCode, body)
	}
	if resp, _ := h.get(t, "/whoami", http.Header{"Ctstickiness": {"k"}}); resp.StatusCode != http.StatusOK {
		t.Fatalf("request in maintenance: %d, want it served", resp.StatusCode)
	}
	if code, _ := set("sideways"); code != http.StatusBadRequest {
		t.Fatalf("bad state: %d, want 400", code)
	}
	if code, v := set("off"); code != http.StatusOK || v["maintenance"] != false {
		t.Fatalf("maintenance off: %d %v", code, v)
	}
	if resp, _ := h.get(t, HealthPath, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("health after maintenance: %d", resp.StatusCode)
	}
}

func TestFollows421(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	key := h.keyOwnedBy(t, "edge-1")
	h.byName["edge-1"].pin(key, "edge-3")

	_, w := h.whoami(t, "/whoami", http.Header{"Ctstickiness": {key}})
	if w.Edge != "edge-3" {
		t.Fatalf("HTTP: served by %s, want edge-3 (the pin)", w.Edge)
	}
	conn, resp := dialWS(t, h.addr, "/ws", http.Header{"Ctstickiness": {key}})
	defer conn.Close()
	if got := resp.Header.Get("X-Ringlb-Edge"); got != "edge-3" {
		t.Fatalf("WebSocket: served by %s, want edge-3 (the pin)", got)
	}

	// A redirect loop ends after maxRedirects hops with the 421 relayed.
	key2 := h.keyOwnedBy(t, "edge-2")
	h.byName["edge-2"].pin(key2, "edge-1")
	h.byName["edge-1"].pin(key2, "edge-2")
	resp2, _ := h.get(t, "/whoami", http.Header{"Ctstickiness": {key2}})
	if resp2.StatusCode != http.StatusMisdirectedRequest || resp2.Header.Get("X-Ringlb-Owner") == "" {
		t.Fatalf("loop: %d owner %q, want the 421 relayed", resp2.StatusCode, resp2.Header.Get("X-Ringlb-Owner"))
	}
}

func TestDeadEdgeFailsOver(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	key := h.keyOwnedBy(t, "edge-2")
	var buf [3]ring.Member
	cands := h.ring.Snapshot().Candidates([]byte(key), buf[:0])
	if len(cands) < 2 || cands[0].Name != "edge-2" {
		t.Fatalf("candidates %v: want edge-2 first", cands)
	}
	h.byName["edge-2"].stop() // still on the ring: the balancer learns by dialing

	_, w := h.whoami(t, "/whoami", http.Header{"Ctstickiness": {key}})
	if w.Edge != cands[1].Name {
		t.Fatalf("HTTP served by %s, want next candidate %s", w.Edge, cands[1].Name)
	}
	h.expectFallback(t, key, cands[1].Name, "edge-2")
	// The first failed dial made edge-2 a suspect: the WebSocket went
	// straight to the next candidate without dialing it again.
	if n := h.metric(t, "ringlb_balancer_backend_errors_total", map[string]string{"edge": "edge-2", "kind": "dial"}); n != 1 {
		t.Fatalf("backend_errors_total{edge-2,dial} = %v, want 1", n)
	}

	// All edges gone: 502.
	for _, e := range h.edges {
		e.stop()
	}
	if resp, _ := h.get(t, "/whoami", http.Header{"Ctstickiness": {key}}); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("all edges down: %d, want 502", resp.StatusCode)
	}
}

// A fallback edge takes X-Ringlb-Skip only with a balancer's signature
// (a skip moves a session off its owner): the balancer signs it for that
// edge, that request and that key with the cluster's key.
func TestFallbackSkipIsSigned(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	bal := healthtest.New(t).Join("bal-test", health.Meta{Role: health.RoleBalancer, State: health.StateAlive})
	h.bal.SetCluster(bal)
	key := h.keyOwnedBy(t, "edge-2")
	var buf [3]ring.Member
	cands := h.ring.Snapshot().Candidates([]byte(key), buf[:0])
	h.byName["edge-2"].stop()
	h.expectFallback(t, key, cands[1].Name, "edge-2")
	sigs := h.byName[cands[1].Name].skipSigs()
	signer, err := bal.Keyring().VerifyRequest(sigs[0], cands[1].Name, http.MethodGet, "/ws", health.SkipMessage("edge-2", []byte(key)), time.Now())
	if err != nil || signer != "bal-test" {
		t.Fatalf("the fallback's X-Ringlb-Peer %q: signer %q, %v; want bal-test's signature for %s", sigs[0], signer, err, cands[1].Name)
	}
}

// An edge that accepts the connection and closes it before answering, then
// refuses a dial (its process dying: what its listener had taken in is reset
// at a kill, and then nothing listens), is treated like one that cannot be
// dialed: the upgrade goes to the next candidate instead of failing with
// 502. (A live edge, which accepts the dial, is not:
// TestUpgradeClosedUnansweredByALiveBackendSplitsNothing.)
func TestWebSocketEdgeClosingUnansweredFailsOver(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	key := h.keyOwnedBy(t, "edge-2")
	var buf [3]ring.Member
	cands := h.ring.Snapshot().Candidates([]byte(key), buf[:0])
	e := h.byName["edge-2"]
	addr := e.ln.Addr().String()
	e.stop()
	ln, err := net.Listen("tcp", addr) // edge-2's address, now resetting
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		// The connections of the balancer's two tries, reset as a
		// killed process's kernel does; the listener gone before the
		// second's reset, as with the process.
		for i := range 2 {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if i == 1 {
				ln.Close()
			}
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
	h.expectFallback(t, key, cands[1].Name, "edge-2")
}

// expectFallback upgrades a WebSocket for key and checks that the fallback
// edge served it and learnt, in X-Ringlb-Skip, which edge could not be
// reached (so it checks ownership on the ring without it).
func (h *harness) expectFallback(t *testing.T, key, fallback, skipped string) {
	t.Helper()
	conn, resp := dialWS(t, h.addr, "/ws", http.Header{"Ctstickiness": {key}})
	conn.Close()
	if got := resp.Header.Get("X-Ringlb-Edge"); got != fallback {
		t.Fatalf("WebSocket served by %s, want next candidate %s", got, fallback)
	}
	if got := h.byName[fallback].skips(); len(got) != 1 || got[0] != skipped {
		t.Fatalf("fallback edge got X-Ringlb-Skip %q, want [%s]", got, skipped)
	}
}

func dialWS(t *testing.T, addr, path string, header http.Header, subprotocols ...string) (*websocket.Conn, *http.Response) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, Subprotocols: subprotocols}
	conn, resp, err := d.Dial("ws://"+addr+path, header)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (status %d)", path, err, status)
	}
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	return conn, resp
}

func TestWebSocketTunnel(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	for _, edge := range []string{"edge-1", "edge-2", "edge-3"} {
		t.Run(edge, func(t *testing.T) {
			// The last subtest's tunnel is released after its client
			// read the close, not before.
			waitTunnels(t, h.bal, 0)
			key := h.keyOwnedBy(t, edge)
			conn, resp := dialWS(t, h.addr, "/ws", http.Header{"Ctstickiness": {key}}, "ringlb.v1")
			defer conn.Close()
			if got := resp.Header.Get("X-Ringlb-Edge"); got != edge {
				t.Fatalf("101 X-Ringlb-Edge %q, want %s", got, edge)
			}
			if got := conn.Subprotocol(); got != "ringlb.v1" {
				t.Fatalf("subprotocol %q, want ringlb.v1", got)
			}
			big := bytes.Repeat([]byte{0, 1, 2, 0xff}, 256<<10) // 1 MiB binary frame
			for _, msg := range []struct {
				mt   int
				data []byte
			}{
				{websocket.TextMessage, []byte("hello ✓")},
				{websocket.BinaryMessage, []byte{0, 0xff, 0x80, '\n'}},
				{websocket.BinaryMessage, big},
				{websocket.TextMessage, []byte("")},
			} {
				if err := conn.WriteMessage(msg.mt, msg.data); err != nil {
					t.Fatal(err)
				}
				mt, data, err := conn.ReadMessage()
				if err != nil {
					t.Fatal(err)
				}
				if mt != msg.mt || !bytes.Equal(data, msg.data) {
					t.Fatalf("echo: type %d len %d, sent type %d len %d", mt, len(data), msg.mt, len(msg.data))
				}
			}
			if n := h.bal.Tunnels(); n != 1 {
				t.Fatalf("Tunnels() = %d, want 1", n)
			}
			if n := h.metric(t, "ringlb_balancer_connections_active", map[string]string{"edge": edge}); n != 1 {
				t.Fatalf("connections_active{%s} = %v, want 1", edge, n)
			}
			// The edge's close code reaches the client unchanged.
			if err := conn.WriteMessage(websocket.TextMessage, []byte("close:1012")); err != nil {
				t.Fatal(err)
			}
			_, _, err := conn.ReadMessage()
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.CloseServiceRestart {
				t.Fatalf("read after edge close: %v, want close 1012", err)
			}
		})
	}
}

func TestWebSocketAssignedCookie(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	conn, resp := dialWS(t, h.addr, "/ws", nil)
	defer conn.Close()
	m := regexp.MustCompile(`^ctstickiness=([0-9a-f]{32}); Path=/; SameSite=Lax$`).FindStringSubmatch(resp.Header.Get("Set-Cookie"))
	if m == nil {
		t.Fatalf("101 Set-Cookie %q", resp.Header.Get("Set-Cookie"))
	}
	if got, want := resp.Header.Get("X-Ringlb-Edge"), h.owner(t, m[1]); got != want {
		t.Fatalf("served by %s, owner of the assigned key is %s", got, want)
	}
	if resp.Header.Get("Sec-WebSocket-Accept") == "" {
		t.Fatal("101 lost Sec-WebSocket-Accept")
	}
	if err := conn.WriteMessage(websocket.TextMessage, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, data, err := conn.ReadMessage(); err != nil || string(data) != "x" {
		t.Fatalf("echo %q %v", data, err)
	}
}

// A client may send its first frame in the same packet as the upgrade
// request; fasthttp has it buffered when the connection is hijacked.
func TestWebSocketEarlyFrame(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	payload := []byte("early bird")
	mask := [4]byte{1, 2, 3, 4}
	frame := []byte{0x81, 0x80 | byte(len(payload))}
	frame = append(frame, mask[:]...)
	for i, p := range payload {
		frame = append(frame, p^mask[i%4])
	}
	req := "GET /ws HTTP/1.1\r\nHost: " + h.addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nctstickiness: early\r\n\r\n"
	if _, err := c.Write(append([]byte(req), frame...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("status %d accept %q", resp.StatusCode, resp.Header.Get("Sec-WebSocket-Accept"))
	}
	head := make([]byte, 2)
	if _, err := io.ReadFull(br, head); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, head[1]&0x7f)
	if _, err := io.ReadFull(br, got); err != nil {
		t.Fatal(err)
	}
	if head[0] != 0x81 || !bytes.Equal(got, payload) {
		t.Fatalf("echo %x %q", head, got)
	}
}

func TestWebSocketNon101Relayed(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	_, resp, err := d.Dial("ws://"+h.addr+"/nope", http.Header{"Ctstickiness": {"k"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("err %v resp %v, want the edge's 404", err, resp)
	}
	if resp.Header.Get("X-Ringlb-Edge") != h.owner(t, "k") {
		t.Fatalf("X-Ringlb-Edge %q", resp.Header.Get("X-Ringlb-Edge"))
	}
}

func TestTunnelIdleTimeout(t *testing.T) {
	h := newHarness(t, configs.Balancer{TunnelIdleTimeout: configs.Duration(50 * time.Millisecond)})
	conn, _ := dialWS(t, h.addr, "/ws", http.Header{"Ctstickiness": {"idle"}})
	defer conn.Close()
	_, _, err := conn.ReadMessage() // nothing is sent: the balancer closes the tunnel
	if err == nil {
		t.Fatal("read succeeded on an idle tunnel")
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the tunnel stayed open past 20s with a 50ms idle timeout")
	}
}

func TestShutdownClosesTunnels(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	conn, _ := dialWS(t, h.addr, "/ws", http.Header{"Ctstickiness": {"shutdown"}})
	defer conn.Close()
	if n := h.bal.Tunnels(); n != 1 {
		t.Fatalf("Tunnels() = %d, want 1", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.bal.Shutdown(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown with an open tunnel: %v, want deadline exceeded", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if n := h.bal.Tunnels(); n != 0 {
		t.Fatalf("Tunnels() = %d after Shutdown", n)
	}
	if _, _, err := conn.ReadMessage(); err == nil {
		t.Fatal("tunnel still open after Shutdown")
	}
	if n := h.metric(t, "ringlb_balancer_connections_active", nil); n != 0 {
		t.Fatalf("connections_active = %v after Shutdown", n)
	}
}

func TestShutdownIdle(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	h.whoami(t, "/whoami", http.Header{"Ctstickiness": {"k"}})
	if err := h.bal.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := h.bal.Serve(ln); !errors.Is(err, ErrClosed) {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
}

// Shutdown right as Serve starts (a signal at start-up) still ends Serve:
// the listener may reach fasthttp only after fasthttp's own Shutdown ran.
func TestShutdownRacingServe(t *testing.T) {
	r := ring.New(ring.DefaultConfig())
	for i := range 200 {
		cfg := configs.Balancer{}
		cfg.Provision()
		b, err := New(cfg, "bal-race", r, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- b.Serve(ln) }()
		if i%2 == 0 {
			runtime.Gosched()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := b.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		cancel()
		select {
		case err := <-served:
			if err != nil && !errors.Is(err, ErrClosed) {
				t.Fatalf("Serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: Serve still running 5 s after Shutdown", i)
		}
		ln.Close()
	}
}

func TestAdminAPI(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	get := func(path string, v any) int {
		t.Helper()
		resp, err := h.client.Get("http://" + h.admin + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if v != nil {
			if err := json.Unmarshal(body, v); err != nil {
				t.Fatalf("%s: %v: %s", path, err, body)
			}
		}
		return resp.StatusCode
	}
	if code := get("/healthz", nil); code != http.StatusOK {
		t.Fatalf("/healthz %d", code)
	}

	key := h.keyOwnedBy(t, "edge-2")
	var lookup struct {
		Key        string   `json:"key"`
		Owner      string   `json:"owner"`
		URL        string   `json:"url"`
		Candidates []string `json:"candidates"`
	}
	if code := get("/api/lookup?key="+url.QueryEscape(key), &lookup); code != http.StatusOK {
		t.Fatalf("/api/lookup %d", code)
	}
	if lookup.Key != key || lookup.Owner != "edge-2" || lookup.URL != h.byName["edge-2"].url || len(lookup.Candidates) != 3 {
		t.Fatalf("/api/lookup = %+v", lookup)
	}
	if code := get("/api/lookup", nil); code != http.StatusBadRequest {
		t.Fatalf("/api/lookup without key: %d", code)
	}

	var r struct {
		Node    string             `json:"node"`
		Version uint64             `json:"version"`
		Members []ringMember       `json:"members"`
		Shares  map[string]float64 `json:"shares"`
	}
	if code := get("/api/ring", &r); code != http.StatusOK {
		t.Fatalf("/api/ring %d", code)
	}
	if r.Node != "bal-test" || r.Version != h.ring.Snapshot().Version() || len(r.Members) != 3 || len(r.Shares) != 3 || r.Members[0].Name != "edge-1" {
		t.Fatalf("/api/ring = %+v", r)
	}

	h.whoami(t, "/whoami", http.Header{"Ctstickiness": {key}})
	resp, err := h.client.Get("http://" + h.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`ringlb_balancer_requests_total{code="200",edge="edge-2"} 1`,
		"ringlb_balancer_ring_members 3",
		"ringlb_balancer_ring_version ",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestAdminToken(t *testing.T) {
	file := t.TempDir() + "/token"
	if err := os.WriteFile(file, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, configs.Balancer{Admin: configs.Admin{TokenFile: file}})
	for _, tt := range []struct {
		path, auth string
		want       int
	}{
		{"/healthz", "", http.StatusOK},
		{"/api/ring", "", http.StatusUnauthorized},
		{"/api/ring", "Bearer wrong", http.StatusUnauthorized},
		{"/api/ring", "Bearer " + testToken, http.StatusOK},
		{"/metrics", "", http.StatusUnauthorized},
	} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+h.admin+tt.path, nil)
		if tt.auth != "" {
			req.Header.Set("Authorization", tt.auth)
		}
		resp, err := h.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s with %q: %d, want %d", tt.path, tt.auth, resp.StatusCode, tt.want)
		}
	}
}

// The reserved /_ringlb/ namespace is never proxied (edges keep their
// edge-to-edge endpoints there), and a client cannot send X-Ringlb-Skip.
func TestReservedPathsAndHeaders(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	key := h.keyOwnedBy(t, "edge-1")
	for _, path := range []string{"/_ringlb/claim", "/_ringlb/handoff", "/_ringlb/"} {
		resp, _ := h.get(t, path, http.Header{"Ctstickiness": {key}})
		if resp.StatusCode != http.StatusNotFound || resp.Header.Get("X-Ringlb-Edge") != "" {
			t.Errorf("%s: %d from edge %q, want 404 from the balancer", path, resp.StatusCode, resp.Header.Get("X-Ringlb-Edge"))
		}
	}
	// Spellings a client may try, raw (an HTTP client would clean some):
	// each is refused, or reaches the edge as a path outside /_ringlb/
	// (the balancer checks the path as fasthttp reads it, decoded and
	// cleaned, which is how the edge's own fasthttp routes it).
	for _, uri := range []string{
		"//_ringlb/claim", "/_ringlb/../_ringlb/claim", "/./_ringlb/claim", "/x/../_ringlb/claim",
		"/x/..%2F_ringlb/claim", "/x/%2e%2e/_ringlb/claim", "/%5Fringlb/claim", "/%5fringlb%2fclaim",
		"/_ringlb%2Fhandoff", "/%2F_ringlb/claim", "/_ringlb/claim%00", "/_ringlb/health/../claim",
		"/_ringlb/claim?x=1", "/_ringlb/claim#x", "/_RINGLB/claim", "/_ringlb;x/claim", "/_ringlb\\claim",
		"/%255Fringlb/claim", "//x/_ringlb/claim", "http://x/_ringlb/claim", "http://x//_ringlb/claim",
		"HTTP://x/_ringlb/claim", "https://x/_ringlb/handoff", "ws://x/_ringlb/replicate", "http:///_ringlb/claim",
		"_ringlb/claim", "*",
	} {
		for _, extra := range []string{"", "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"} {
			exchange(t, h.addr, "GET "+uri+" HTTP/1.1\r\nHost: bal\r\nctstickiness: "+key+"\r\n"+extra+"Connection: close\r\n\r\n", 1, false)
		}
	}
	for _, e := range h.edges {
		e.mu.Lock()
		if len(e.reserved) > 0 {
			t.Errorf("%s was asked for %q through the balancer", e.name, e.reserved)
		}
		e.mu.Unlock()
	}

	conn, _ := dialWS(t, h.addr, "/ws", http.Header{"Ctstickiness": {key}, "X-Ringlb-Skip": {"edge-2,edge-3"}})
	conn.Close()
	if got := h.byName["edge-1"].skips(); len(got) != 1 || got[0] != "" {
		t.Fatalf("edge got X-Ringlb-Skip %q from a client", got)
	}
}

// A 421 may name an edge that has left the ring but still hosts the
// session (draining, about to hand it on): the balancer finds it in gossip.
func TestFollows421ToDrainingEdge(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	draining := startTestEdge(t, "edge-9")
	m := healthtest.New(t).Join("edge-9", health.Meta{Role: health.RoleEdge, URL: draining.url, Weight: 1, State: health.StateDraining})
	h.bal.SetCluster(m)
	key := h.keyOwnedBy(t, "edge-1")
	h.byName["edge-1"].pin(key, "edge-9")
	conn, resp := dialWS(t, h.addr, "/ws", http.Header{"Ctstickiness": {key}})
	conn.Close()
	if got := resp.Header.Get("X-Ringlb-Edge"); got != "edge-9" {
		t.Fatalf("served by %q, want the draining edge-9 the 421 named", got)
	}
}

// Balancers read the edges' pins from gossip and send a pinned session
// straight to its edge, without the 421 hop.
func TestRoutesPinnedSessionsDirectly(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	pinned := startTestEdge(t, "edge-9")
	cl := healthtest.New(t)
	bal := cl.Join("bal-test", health.Meta{Role: health.RoleBalancer, State: health.StateAlive})
	edge := cl.Join("edge-9", health.Meta{Role: health.RoleEdge, URL: pinned.url, Weight: 1, State: health.StateAlive})
	h.bal.SetCluster(bal)
	key := h.keyOwnedBy(t, "edge-1")
	edge.Pin(xxhash.Sum64String(key))
	healthtest.WaitUntil(t, "the pin reaches the balancer's membership", func() bool {
		n, ok := bal.PinnedTo(xxhash.Sum64String(key))
		return ok && n.Name == "edge-9"
	})
	conn, resp := dialWS(t, h.addr, "/ws", http.Header{"Ctstickiness": {key}})
	conn.Close()
	if got := resp.Header.Get("X-Ringlb-Edge"); got != "edge-9" {
		t.Fatalf("pinned session served by %q, want edge-9", got)
	}
	if n := len(h.byName["edge-1"].skips()); n != 0 {
		t.Fatalf("the ring owner was dialed %d times; the pin should have saved the hop", n)
	}
}

// testToken is an admin token long enough for configs.ReadToken.
const testToken = "s3cret-s3cret-s3cret"

// postAdmin POSTs to an admin port as an admin client does: with
// X-Ringlb-Admin, the CSRF proof an admin port wants without a token.
func postAdmin(c *http.Client, url string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodPost, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set(configs.HeaderAdmin, "1")
	return c.Do(req)
}

// provision returns cfg with configs' defaults, as configs.Load gives it.
func provision(cfg configs.Balancer) configs.Balancer {
	cfg.Provision()
	return cfg
}

// Two maintenance changes at once (on, then off) each save the operator
// state: the file a restart reads holds what the node answered last, even
// when the older change's save writes after the newer one's.
func TestMaintenanceSavesTheLatestState(t *testing.T) {
	cfg := configs.Balancer{}
	cfg.Admin.StateDir = t.TempDir()
	cfg.Provision()
	h := &harness{byName: map[string]*testEdge{}, reg: prometheus.NewRegistry(), ring: ring.New(ring.DefaultConfig())}
	bal, err := New(cfg, "bal-test", h.ring, slog.New(slog.NewTextHandler(io.Discard, nil)), h.reg)
	if err != nil {
		t.Fatal(err)
	}
	// The first save (maintenance on) read its state and waits to write it
	// until the second (off) has answered.
	firstRead, release := make(chan struct{}), make(chan struct{})
	var saves atomic.Int32
	bal.beforeStateWrite = func() {
		if saves.Add(1) == 1 {
			close(firstRead)
			<-release
		}
	}
	h.bal = bal
	h.serve(t)
	set := func(state string) error {
		resp, err := postAdmin(h.client, "http://"+h.admin+"/api/maintenance?state="+state)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("maintenance %s: %d", state, resp.StatusCode)
		}
		return nil
	}
	on := make(chan error, 1)
	go func() { on <- set("on") }()
	<-firstRead
	if err := set("off"); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-on; err != nil {
		t.Fatal(err)
	}
	if bal.maintenance.Load() {
		t.Fatal("maintenance on after on, then off")
	}
	restarted, err := New(cfg, "bal-test", ring.New(ring.DefaultConfig()), slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer restarted.Shutdown(context.Background())
	if restarted.maintenance.Load() {
		t.Error("after a restart: maintenance on, though the node answered off last: the older save was written last")
	}
}
