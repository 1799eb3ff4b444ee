package balancer

import (
	"context"
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/configs"
)

// testEdge is a minimal stand-in for a ringlb edge, enough to see where the
// balancer sends things: every answer carries X-Ringlb-Edge; /whoami reports
// what the edge received; /ws echoes frames, and a text frame "close:CODE"
// makes it close with that code; keys pinned elsewhere get 421 +
// X-Ringlb-Owner, as a real edge answers for a pinned session.
type testEdge struct {
	name string
	url  string
	ln   net.Listener
	srv  *fasthttp.Server

	mu   sync.Mutex
	pins map[string]string // ctstickiness key → owning edge name
	skip []string          // X-Ringlb-Skip of each WebSocket upgrade, in order
	sigs []string          // and X-Ringlb-Peer of each
	// reserved are the paths under /_ringlb/ the edge was asked for (as
	// its fasthttp server reads them: the prefix a real edge routes by)
	reserved []string
}

// whoami is the /whoami answer of a testEdge.
type whoami struct {
	Edge   string `json:"edge"`
	Region string `json:"region"`
	Key    string `json:"key"`    // ctstickiness header received
	XFF    string `json:"xff"`    // X-Forwarded-For received
	Proto  string `json:"proto"`  // X-Forwarded-Proto received
	Host   string `json:"host"`   // X-Forwarded-Host received
	Hop    string `json:"hop"`    // Keep-Alive header received (must be stripped)
	Cookie string `json:"cookie"` // Cookie header received
}

func startTestEdge(t testing.TB, name string) *testEdge {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &testEdge{name: name, url: "http://" + ln.Addr().String(), ln: ln, pins: map[string]string{}}
	upgrader := websocket.FastHTTPUpgrader{
		Subprotocols:    []string{"ringlb.v1"},
		CheckOrigin:     func(*fasthttp.RequestCtx) bool { return true },
		ReadBufferSize:  64 << 10,
		WriteBufferSize: 64 << 10,
	}
	e.srv = &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("X-Ringlb-Edge", name)
		if strings.HasPrefix(string(ctx.Path()), "/_ringlb/") {
			e.mu.Lock()
			e.reserved = append(e.reserved, string(ctx.Path()))
			e.mu.Unlock()
		}
		key := string(ctx.Request.Header.Peek("ctstickiness"))
		e.mu.Lock()
		owner := e.pins[key]
		e.mu.Unlock()
		if owner != "" {
			ctx.Error("misdirected: session lives on "+owner, fasthttp.StatusMisdirectedRequest)
			ctx.Response.Header.Set("X-Ringlb-Edge", name) // ctx.Error resets headers
			ctx.Response.Header.Set("X-Ringlb-Owner", owner)
			return
		}
		switch string(ctx.Path()) {
		case "/whoami":
			body, _ := json.Marshal(whoami{
				Edge: name, Region: "test", Key: key,
				XFF:    string(ctx.Request.Header.Peek("X-Forwarded-For")),
				Proto:  string(ctx.Request.Header.Peek("X-Forwarded-Proto")),
				Host:   string(ctx.Request.Header.Peek("X-Forwarded-Host")),
				Hop:    string(ctx.Request.Header.Peek("Keep-Alive")),
				Cookie: string(ctx.Request.Header.Peek("Cookie")),
			})
			ctx.SetContentType("application/json")
			ctx.SetBody(body)
		case "/ws":
			e.mu.Lock()
			e.skip = append(e.skip, string(ctx.Request.Header.Peek("X-Ringlb-Skip")))
			e.sigs = append(e.sigs, string(ctx.Request.Header.Peek(configs.HeaderPeer)))
			e.mu.Unlock()
			err := upgrader.Upgrade(ctx, func(c *websocket.Conn) {
				defer c.Close()
				for {
					mt, data, err := c.ReadMessage()
					if err != nil {
						return
					}
					if code, ok := strings.CutPrefix(string(data), "close:"); ok && mt == websocket.TextMessage {
						n, _ := strconv.Atoi(code)
						_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(n, "bye"), time.Now().Add(5*time.Second))
						return
					}
					if err := c.WriteMessage(mt, data); err != nil {
						return
					}
				}
			})
			if err != nil {
				return // the upgrader answered with an error already
			}
		default:
			ctx.Error("not found", fasthttp.StatusNotFound)
			ctx.Response.Header.Set("X-Ringlb-Edge", name)
		}
	}}
	go func() { _ = e.srv.Serve(ln) }()
	t.Cleanup(e.stop)
	return e
}

// pin makes the edge answer key with 421 naming owner.
func (e *testEdge) pin(key, owner string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pins[key] = owner
}

// skips returns the X-Ringlb-Skip headers of the upgrades received.
func (e *testEdge) skips() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.skip...)
}

// skipSigs returns the X-Ringlb-Peer headers of the upgrades received.
func (e *testEdge) skipSigs() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.sigs...)
}

// stop closes the edge; afterwards dialing its address is refused.
func (e *testEdge) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = e.srv.ShutdownWithContext(ctx)
	_ = e.ln.Close()
}
