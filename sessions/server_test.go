package sessions

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	dto "github.com/prometheus/client_model/go"

	"github.com/ringlb/ringlb/configs"
)

// testDeadline is generous: it only keeps a broken test from hanging.
const testDeadline = 30 * time.Second

type testEdge struct {
	s      *Server
	data   string // host:port
	admin  string // host:port
	joined chan string
}

// provisioned returns cfg with configs' defaults, as configs.Load gives it.
func provisioned(cfg configs.Edge) configs.Edge {
	cfg.Provision()
	return cfg
}

// startEdge starts a Server on loopback listeners. The listeners accept
// before Serve runs, so no readiness wait is needed. Cleanup shuts it down
// and checks that Serve and ServeAdmin returned nil.
func startEdge(t testing.TB, cfg configs.Edge, tweak func(*Server)) *testEdge {
	t.Helper()
	return startEdgeLogging(t, cfg, slog.New(slog.DiscardHandler), tweak)
}

// startEdgeLogging is startEdge with the edge's log going to logger.
func startEdgeLogging(t testing.TB, cfg configs.Edge, logger *slog.Logger, tweak func(*Server)) *testEdge {
	t.Helper()
	s := New(provisioned(cfg), "edge-t", "east", logger, nil)
	e := &testEdge{s: s, joined: make(chan string, 1024)}
	s.joined = func(key string) { e.joined <- key }
	if tweak != nil {
		tweak(s)
	}
	dl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	al, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.data, e.admin = dl.Addr().String(), al.Addr().String()
	served := make(chan error, 2)
	go func() { served <- s.Serve(dl) }()
	go func() { served <- s.ServeAdmin(al) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		for range 2 {
			// ErrClosed: the test ended before Serve's goroutine began.
			if err := <-served; err != nil && !errors.Is(err, ErrClosed) {
				t.Errorf("Serve: %v", err)
			}
		}
	})
	return e
}

// dial connects a WebSocket with the session key in the ctstickiness header.
func (e *testEdge) dial(t testing.TB, key string) (*websocket.Conn, *http.Response) {
	t.Helper()
	h := http.Header{}
	h.Set("ctstickiness", key)
	return e.dialHeader(t, h, nil)
}

func (e *testEdge) dialHeader(t testing.TB, h http.Header, netDial func(network, addr string) (net.Conn, error)) (*websocket.Conn, *http.Response) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: testDeadline, NetDial: netDial}
	c, resp, err := d.Dial("ws://"+e.data+"/ws", h)
	if err != nil {
		t.Fatalf("dial: %v (response %v)", err, resp)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(testDeadline))
	return c, resp
}

// join dials and waits until the edge has joined the connection to key.
func (e *testEdge) join(t testing.TB, key string) *websocket.Conn {
	t.Helper()
	c, _ := e.dial(t, key)
	e.waitJoined(t)
	return c
}

func (e *testEdge) waitJoined(t testing.TB) {
	t.Helper()
	select {
	case <-e.joined:
	case <-time.After(testDeadline):
		t.Fatal("participant never joined")
	}
}

func (e *testEdge) get(t testing.TB, addr, path string) (*http.Response, string) {
	t.Helper()
	c := http.Client{Timeout: testDeadline}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// closeCode reads until the connection fails and returns the close code
// the server sent (0 if none).
func closeCode(t testing.TB, c *websocket.Conn) int {
	t.Helper()
	for n := 0; ; n++ {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		t.Logf("read ended without a close frame after %d frames: %v", n, err)
		return 0
	}
}

func TestUpgradeCarriesEdgeHeader(t *testing.T) {
	e := startEdge(t, configs.Edge{}, nil)
	_, resp := e.dial(t, "k1")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := resp.Header.Get("X-Ringlb-Edge"); got != "edge-t" {
		t.Fatalf("X-Ringlb-Edge on 101 = %q, want edge-t", got)
	}
}

func TestPlainEndpoints(t *testing.T) {
	e := startEdge(t, configs.Edge{}, nil)
	tests := []struct {
		path, wantType, wantBody string
		wantCode                 int
	}{
		{"/whoami", "application/json", `{"edge":"edge-t","region":"east"}`, 200},
		{"/", "text/html; charset=utf-8", "", 200},
		{"/pad/pad.js", "text/javascript; charset=utf-8", "", 200},
		{"/nope", "", "", 404},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, body := e.get(t, e.data, tt.path)
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.wantCode)
			}
			if got := resp.Header.Get("X-Ringlb-Edge"); got != "edge-t" {
				t.Errorf("X-Ringlb-Edge = %q", got)
			}
			if tt.wantType != "" && resp.Header.Get("Content-Type") != tt.wantType {
				t.Errorf("Content-Type = %q, want %q", resp.Header.Get("Content-Type"), tt.wantType)
			}
			if tt.wantBody != "" && body != tt.wantBody {
				t.Errorf("body = %q, want %q", body, tt.wantBody)
			}
		})
	}
	var who struct{ Edge, Region string }
	_, body := e.get(t, e.data, "/whoami")
	if err := json.Unmarshal([]byte(body), &who); err != nil || who.Edge != "edge-t" || who.Region != "east" {
		t.Fatalf("whoami %q: %+v %v", body, who, err)
	}
}

// The pad's files are served as the dashboard and the login page are: no
// page of another site may frame them (X-Frame-Options for the browsers
// that predate frame-ancestors), none is sniffed into another type, and the
// session key in the page's URL goes out in no Referer.
func TestPadHeaders(t *testing.T) {
	e := startEdge(t, configs.Edge{}, nil)
	for _, path := range []string{"/?session=k", padScriptPath, padStylePath} {
		resp, _ := e.get(t, e.data, path)
		for name, want := range map[string]string{
			"X-Frame-Options":        "DENY",
			"X-Content-Type-Options": "nosniff",
			"Referrer-Policy":        "no-referrer",
		} {
			if got := resp.Header.Get(name); got != want {
				t.Errorf("%s: %s = %q, want %q", path, name, got, want)
			}
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: Content-Security-Policy %q", path, csp)
		}
	}
}

func TestSessionKeySources(t *testing.T) {
	tests := []struct {
		name   string
		header http.Header
		want   string
	}{
		{"header", http.Header{"Ctstickiness": {"from-header"}}, "from-header"},
		{"cookie", http.Header{"Cookie": {"a=b; ctstickiness=from-cookie"}}, "from-cookie"},
		{"header wins", http.Header{"Ctstickiness": {"h"}, "Cookie": {"ctstickiness=c"}}, "h"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := startEdge(t, configs.Edge{}, nil)
			e.dialHeader(t, tt.header, nil)
			if got := <-e.joined; got != tt.want {
				t.Fatalf("joined session %q, want %q", got, tt.want)
			}
			_, body := e.get(t, e.admin, "/api/sessions")
			var list []sessionInfo
			if err := json.Unmarshal([]byte(body), &list); err != nil {
				t.Fatal(err)
			}
			if len(list) != 1 || list[0].Key != tt.want || list[0].Participants != 1 || list[0].Created.IsZero() {
				t.Fatalf("/api/sessions = %s", body)
			}
		})
	}
}

// TestSessionKeyRejected speaks raw HTTP: Go's clients refuse to send the
// control characters under test.
func TestSessionKeyRejected(t *testing.T) {
	e := startEdge(t, configs.Edge{}, nil)
	tests := []struct {
		name, headers string
		// fasthttp itself answers 400 to some malformed headers, before
		// the edge's handler (and its X-Ringlb-Edge) runs.
		parserRejects bool
	}{
		{"missing", "", false},
		{"empty header", "ctstickiness: \r\n", false},
		{"too long", "ctstickiness: " + strings.Repeat("k", configs.MaxKeyLength+1) + "\r\n", false},
		{"too long cookie", "Cookie: ctstickiness=" + strings.Repeat("k", configs.MaxKeyLength+1) + "\r\n", false},
		{"tab", "ctstickiness: a\tb\r\n", false},
		{"control in cookie", "Cookie: ctstickiness=a\x01b\r\n", true},
		{"DEL", "ctstickiness: a\x7fb\r\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", e.data)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(testDeadline))
			req := "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + tt.headers + "\r\n"
			if _, err := io.WriteString(c, req); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400", resp.StatusCode)
			}
			if !tt.parserRejects && resp.Header.Get("X-Ringlb-Edge") != "edge-t" {
				t.Errorf("400 without X-Ringlb-Edge")
			}
		})
	}
	// 256 bytes is still a key.
	e.dial(t, strings.Repeat("k", 256))
	e.waitJoined(t)
}

type message struct {
	kind int
	data string
}

func TestRelayToOthersUnchanged(t *testing.T) {
	e := startEdge(t, configs.Edge{}, nil)
	conns := make([]*websocket.Conn, 3)
	for i := range conns {
		conns[i] = e.join(t, "room")
	}
	// Another session on the same edge must hear nothing.
	outsider := e.join(t, "elsewhere")
	outsider2 := e.join(t, "elsewhere")

	sent := map[message]int{} // message → sender
	for i, c := range conns {
		for _, m := range []message{
			{websocket.TextMessage, fmt.Sprintf("text from %d ✓", i)},
			{websocket.BinaryMessage, string([]byte{byte(i), 0, 0xff, 0xfe, '\n'})},
			{websocket.TextMessage, strings.Repeat(string(rune('a'+i)), 3000)},
		} {
			if err := c.WriteMessage(m.kind, []byte(m.data)); err != nil {
				t.Fatal(err)
			}
			sent[m] = i
		}
	}
	for i, c := range conns {
		got := map[message]bool{}
		for range 2 * 3 {
			kind, data, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("participant %d: %v", i, err)
			}
			m := message{kind, string(data)}
			from, ok := sent[m]
			switch {
			case !ok:
				t.Fatalf("participant %d got %v, never sent (kind or bytes changed)", i, m)
			case from == i:
				t.Fatalf("participant %d got its own frame %v back", i, m)
			case got[m]:
				t.Fatalf("participant %d got %v twice", i, m)
			}
			got[m] = true
		}
	}
	// A leak from "room" would be queued before this frame.
	if err := outsider.WriteMessage(websocket.TextMessage, []byte("only this")); err != nil {
		t.Fatal(err)
	}
	if _, data, err := outsider2.ReadMessage(); err != nil || string(data) != "only this" {
		t.Fatalf("outsider2 got %q, %v", data, err)
	}
}

func TestTotalOrder(t *testing.T) {
	const senders, perSender = 3, 200
	// Queues hold everything, so no one is a slow consumer under -race.
	e := startEdge(t, configs.Edge{SendQueue: 1024}, nil)
	conns := make([]*websocket.Conn, senders+1)
	for i := range conns {
		conns[i] = e.join(t, "ordered")
	}
	received := make([][]string, len(conns))
	readErr := make(chan error, len(conns))
	for i, c := range conns {
		want := senders * perSender
		if i < senders {
			want -= perSender
		}
		go func() {
			for range want {
				_, data, err := c.ReadMessage()
				if err != nil {
					readErr <- fmt.Errorf("participant %d: %w", i, err)
					return
				}
				received[i] = append(received[i], string(data))
			}
			readErr <- nil
		}()
	}
	sendErr := make(chan error, senders)
	for i := range senders {
		go func() {
			for n := range perSender {
				if err := conns[i].WriteMessage(websocket.TextMessage, fmt.Appendf(nil, "%d-%d", i, n)); err != nil {
					sendErr <- err
					return
				}
			}
			sendErr <- nil
		}()
	}
	for range senders {
		if err := <-sendErr; err != nil {
			t.Fatal(err)
		}
	}
	for range conns {
		if err := <-readErr; err != nil {
			t.Fatal(err)
		}
	}
	sender := func(m string) int { return int(m[0] - '0') }
	for a := range conns {
		// Each sender's frames arrive in the order sent.
		next := make([]int, senders)
		for _, m := range received[a] {
			var s, n int
			fmt.Sscanf(m, "%d-%d", &s, &n)
			if s == a || n != next[s] {
				t.Fatalf("participant %d: got %s, want %d-%d", a, m, s, next[s])
			}
			next[s]++
		}
		for b := a + 1; b < len(conns); b++ {
			// Frames both received: from senders other than a and b.
			common := func(seq []string) []string {
				var out []string
				for _, m := range seq {
					if s := sender(m); s != a && s != b {
						out = append(out, m)
					}
				}
				return out
			}
			ca, cb := common(received[a]), common(received[b])
			if len(ca) != len(cb) {
				t.Fatalf("participants %d and %d: %d vs %d common frames", a, b, len(ca), len(cb))
			}
			for i := range ca {
				if ca[i] != cb[i] {
					t.Fatalf("participants %d and %d disagree at %d: %s vs %s", a, b, i, ca[i], cb[i])
				}
			}
		}
	}
}

func TestOversizedFrameClosed1009(t *testing.T) {
	e := startEdge(t, configs.Edge{MaxMessageBytes: 1024}, nil)
	big := e.join(t, "s")
	a := e.join(t, "s")
	b := e.join(t, "s")
	// Exactly the limit is fine.
	if err := big.WriteMessage(websocket.BinaryMessage, make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*websocket.Conn{a, b} {
		if _, data, err := c.ReadMessage(); err != nil || len(data) != 1024 {
			t.Fatalf("limit-sized frame: %d bytes, %v", len(data), err)
		}
	}
	if err := big.WriteMessage(websocket.BinaryMessage, make([]byte, 1025)); err != nil {
		t.Fatal(err)
	}
	if code := closeCode(t, big); code != websocket.CloseMessageTooBig {
		t.Fatalf("close code %d, want 1009", code)
	}
	if err := a.WriteMessage(websocket.TextMessage, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if _, data, err := b.ReadMessage(); err != nil || string(data) != "still here" {
		t.Fatalf("after 1009: %q, %v", data, err)
	}
}

func TestMaxParticipantsRefused1008(t *testing.T) {
	e := startEdge(t, configs.Edge{MaxParticipants: 2}, nil)
	a := e.join(t, "full")
	b := e.join(t, "full")
	c, resp := e.dial(t, "full")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d: refusal comes after the upgrade", resp.StatusCode)
	}
	if code := closeCode(t, c); code != websocket.ClosePolicyViolation {
		t.Fatalf("close code %d, want 1008", code)
	}
	// Another session is not affected, and the full one still relays.
	e.join(t, "other")
	if err := a.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, data, err := b.ReadMessage(); err != nil || string(data) != "hi" {
		t.Fatalf("%q, %v", data, err)
	}
}

func TestSlowConsumerClosed1013(t *testing.T) {
	const frames, size = 512, 32 << 10 // 16 MiB: more than the socket buffers hold
	e := startEdge(t, configs.Edge{SendQueue: 2}, func(s *Server) {
		s.writeWait = time.Minute // the slow reader is woken later; do not drop it first
	})
	sender := e.join(t, "s")
	fast := []*websocket.Conn{e.join(t, "s"), e.join(t, "s")}
	// A fixed receive buffer (no autotuning, which could grow to tens of
	// MiB), so the kernel cannot absorb the stream on the slow participant's
	// behalf. Not tiny: with a buffer far below loopback's 64 KiB MSS the
	// receiver never advertises a window update when it starts reading,
	// and the sender waits for its backed-off zero-window probes.
	slow, _ := e.dialHeader(t, http.Header{"Ctstickiness": {"s"}}, func(network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		if err == nil {
			err = c.(*net.TCPConn).SetReadBuffer(256 << 10)
		}
		return c, err
	})
	e.waitJoined(t)

	payload := make([]byte, size)
	for i := range frames {
		payload[0], payload[1] = byte(i), byte(i>>8)
		if err := sender.WriteMessage(websocket.BinaryMessage, payload); err != nil {
			t.Fatal(err)
		}
		// Lockstep keeps the fast participants' queues short.
		for j, c := range fast {
			_, data, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("fast %d, frame %d: %v", j, i, err)
			}
			if len(data) != size || data[0] != byte(i) || data[1] != byte(i>>8) {
				t.Fatalf("fast %d: frame %d out of order or changed", j, i)
			}
		}
	}
	_ = slow.SetReadDeadline(time.Now().Add(testDeadline))
	if code := closeCode(t, slow); code != websocket.CloseTryAgainLater {
		t.Fatalf("slow consumer close code %d, want 1013", code)
	}
	if got := metricValue(t, e.s, "ringlb_edge_slow_consumers_total"); got != 1 {
		t.Fatalf("slow consumers = %v, want 1", got)
	}
}

func TestShutdownCloses1012(t *testing.T) {
	s := New(provisioned(configs.Edge{}), "edge-t", "east", slog.New(slog.DiscardHandler), nil)
	e := &testEdge{s: s, joined: make(chan string, 16)}
	s.joined = func(k string) { e.joined <- k }
	dl, _ := net.Listen("tcp", "127.0.0.1:0")
	al, _ := net.Listen("tcp", "127.0.0.1:0")
	e.data, e.admin = dl.Addr().String(), al.Addr().String()
	served := make(chan error, 2)
	go func() { served <- s.Serve(dl) }()
	go func() { served <- s.ServeAdmin(al) }()

	conns := []*websocket.Conn{e.join(t, "a"), e.join(t, "a"), e.join(t, "b")}
	if resp, body := e.get(t, e.admin, "/healthz"); resp.StatusCode != 200 || body != "ok\n" {
		t.Fatalf("healthz %d %q", resp.StatusCode, body)
	}
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	for i, c := range conns {
		if code := closeCode(t, c); code != websocket.CloseServiceRestart {
			t.Fatalf("conn %d: close code %d, want 1012", i, code)
		}
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for range 2 {
		if err := <-served; err != nil {
			t.Fatalf("Serve: %v", err)
		}
	}
	if sessions, connections := s.Stats(); sessions != 0 || connections != 0 {
		t.Fatalf("after Shutdown: %d sessions, %d connections", sessions, connections)
	}
	if err := s.Serve(dl); !errors.Is(err, ErrClosed) {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
	rec := httptest.NewRecorder()
	s.admin.Handler.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("healthz while draining: %d", rec.Code)
	}
}

// TestShutdownBounded: a peer that never answers the close frame cannot hold
// Shutdown past its context.
func TestShutdownBounded(t *testing.T) {
	s := New(provisioned(configs.Edge{}), "edge-t", "east", slog.New(slog.DiscardHandler), nil)
	s.closeWait = time.Hour
	e := &testEdge{s: s, joined: make(chan string, 16)}
	s.joined = func(k string) { e.joined <- k }
	dl, _ := net.Listen("tcp", "127.0.0.1:0")
	e.data = dl.Addr().String()
	served := make(chan error, 1)
	go func() { served <- s.Serve(dl) }()
	e.join(t, "mute") // never reads, so never answers the close

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown = %v, want context.Canceled", err)
	}
	if _, connections := s.Stats(); connections != 0 {
		t.Fatalf("%d connections left", connections)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

func TestAdminEndpoints(t *testing.T) {
	e := startEdge(t, configs.Edge{}, nil)
	a := e.join(t, "sess-1")
	b := e.join(t, "sess-1")
	e.join(t, "sess-2")
	if err := a.WriteMessage(websocket.TextMessage, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	if sessions, connections := e.s.Stats(); sessions != 2 || connections != 3 {
		t.Fatalf("Stats = %d, %d", sessions, connections)
	}

	_, body := e.get(t, e.admin, "/api/sessions")
	var list []sessionInfo
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Key != "sess-1" || list[0].Participants != 2 || list[1].Key != "sess-2" || list[1].Participants != 1 {
		t.Fatalf("/api/sessions = %s", body)
	}

	resp, body := e.get(t, e.admin, "/metrics")
	if resp.StatusCode != 200 {
		t.Fatalf("metrics %d", resp.StatusCode)
	}
	for _, want := range []string{
		"ringlb_edge_sessions_active 2",
		"ringlb_edge_connections_active 3",
		"ringlb_edge_users_online 3",
		"ringlb_edge_sessions_hosted_total 2",
		"ringlb_edge_messages_total 1",
		"ringlb_edge_slow_consumers_total 0",
		// The lag is observed just after the write returns, maybe after
		// the scrape: only its presence is certain.
		"# TYPE ringlb_edge_lag_seconds histogram",
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestSessionFreed: the last participant to leave frees the session.
func TestSessionFreed(t *testing.T) {
	e := startEdge(t, configs.Edge{}, nil)
	a := e.join(t, "gone")
	b := e.join(t, "gone")
	for _, c := range []*websocket.Conn{a, b} {
		if err := c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")); err != nil {
			t.Fatal(err)
		}
		if code := closeCode(t, c); code != websocket.CloseNormalClosure {
			t.Fatalf("close echo %d", code)
		}
	}
	// The server closes its side only after leave; wait for that with the
	// metric's own signal: a read on the raw socket returns EOF.
	for _, c := range []*websocket.Conn{a, b} {
		_ = c.NetConn().SetReadDeadline(time.Now().Add(testDeadline))
		if _, err := c.NetConn().Read(make([]byte, 1)); err == nil {
			t.Fatal("server kept the socket open")
		}
	}
	// unregister runs right after the socket closes; Shutdown waits for it.
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	if err := e.s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if sessions, connections := e.s.Stats(); sessions != 0 || connections != 0 {
		t.Fatalf("Stats = %d, %d", sessions, connections)
	}
	if got := metricValue(t, e.s, "ringlb_edge_sessions_active"); got != 0 {
		t.Fatalf("sessions_active = %v", got)
	}
	if got := metricValue(t, e.s, "ringlb_edge_sessions_hosted_total"); got != 1 {
		t.Fatalf("sessions_hosted_total = %v", got)
	}
}

// metricValue reads a gauge or counter from the server's registry.
func metricValue(t testing.TB, s *Server, name string) float64 {
	t.Helper()
	m := findMetric(t, s, name, func(*dto.Metric) bool { return true })
	if m == nil {
		t.Fatalf("no metric %s", name)
	}
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return m.GetGauge().GetValue()
}

// labelledValue reads the counter name whose one label has value label (0
// when it has not counted yet).
func labelledValue(t testing.TB, s *Server, name, label string) float64 {
	t.Helper()
	m := findMetric(t, s, name, func(m *dto.Metric) bool { return m.GetLabel()[0].GetValue() == label })
	return m.GetCounter().GetValue() // nil-safe: 0
}

// findMetric returns the first series of name in the server's registry
// that match accepts, nil when none does.
func findMetric(t testing.TB, s *Server, name string, match func(*dto.Metric) bool) *dto.Metric {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if match(m) {
				return m
			}
		}
	}
	return nil
}
