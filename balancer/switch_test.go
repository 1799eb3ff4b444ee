package balancer

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
)

// wsAccept is the Sec-WebSocket-Accept answering key (RFC 6455, 4.2.2).
func wsAccept(key string) string {
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// wsSwitch is the 101 head a test backend answers an upgrade request
// with: extra header lines (each ending CRLF), then the blank line.
func wsSwitch(req *http.Request, extra string) string {
	return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		wsAccept(req.Header.Get("Sec-WebSocket-Key")) + "\r\n" + extra + "\r\n"
}

// After a 101 the balancer is a byte tunnel: whatever the client sends goes
// to the backend unread. A 101 that answers no WebSocket handshake — a
// third-party backend's page that answers with the status a client asks
// for (httpbin's /status/101), the connection staying HTTP — opened such a
// tunnel, and the client's next requests reached the backend raw, as the
// balancer's own: an X-Forwarded-For of its choosing, the X-Ringlb- and
// Forwarded headers the balancer drops, /_ringlb/ paths. Only a 101 that
// accepts the client's WebSocket key (Sec-WebSocket-Accept, and Upgrade:
// websocket) opens a tunnel now; any other is a broken handshake, 502.
func TestA101ThatIsNoWebSocketOpensNoTunnel(t *testing.T) {
	url := serveConns(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			var answer string
			switch {
			case req.URL.Path == "/status/101":
				// The status asked for, and the connection stays HTTP.
				answer = "HTTP/1.1 101 Switching Protocols\r\n\r\n"
			case req.URL.Path == "/status/101-upgrade":
				// The same, naming websocket, with no accept.
				answer = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
			case req.URL.Path == "/status/101-wrong-accept":
				answer = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + wsAccept("another key") + "\r\n\r\n"
			case req.URL.Path == "/ws":
				answer = wsSwitch(req, "")
			default:
				// Who the backend takes the client for: the last entry
				// of X-Forwarded-For, which the balancer vouches for.
				xff := strings.Split(req.Header.Get("X-Forwarded-For"), ",")
				body := "client " + strings.TrimSpace(xff[len(xff)-1])
				answer = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			}
			if _, err := io.WriteString(c, answer); err != nil {
				return
			}
		}
	})
	b, addr := startRawBalancer(t, configs.Balancer{})
	b.ring.Update([]ring.Member{{Name: "app", URL: url, Weight: 1}})

	for _, path := range []string{"/status/101", "/status/101-upgrade", "/status/101-wrong-accept"} {
		t.Run(path, func(t *testing.T) {
			resp, br, c := upgradeThrough(t, addr, wsUpgrade(path))
			_, _ = io.Copy(io.Discard, resp.Body)
			seen := fmt.Sprint(resp.StatusCode)
			if resp.StatusCode == http.StatusSwitchingProtocols {
				// Through the tunnel, raw, as if from 10.0.0.1.
				_, _ = io.WriteString(c, "GET /whoami HTTP/1.1\r\nHost: bal\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n")
				if next, err := http.ReadResponse(br, nil); err == nil {
					body, _ := io.ReadAll(next.Body)
					seen += ", then through the tunnel: " + string(body)
				}
			}
			t.Logf("upgrade to %s: %s", path, seen)
			if resp.StatusCode != http.StatusBadGateway {
				t.Errorf("upgrade to %s: %s, want 502", path, seen)
			}
		})
	}
	// A WebSocket handshake's 101 still opens its tunnel.
	if status, _ := rawRequest(t, addr, wsUpgrade("/ws")); status != http.StatusSwitchingProtocols {
		t.Errorf("a WebSocket handshake: %d, want 101", status)
	}
}

// wsSampleAccept answers the key every raw test client here sends, RFC
// 6455's sample "dGhlIHNhbXBsZSBub25jZQ==" (its 1.3): the 101 of a test
// backend that answers without reading the key.
const wsSampleAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

// The check runs on every upgrade: no allocation.
func TestAcceptsWebSocketAllocations(t *testing.T) {
	head := []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + wsSampleAccept + "\r\n\r\n")
	key := []byte("dGhlIHNhbXBsZSBub25jZQ==")
	if !acceptsWebSocket(head, key) {
		t.Fatal("RFC 6455's sample handshake refused")
	}
	if n := testing.AllocsPerRun(100, func() { acceptsWebSocket(head, key) }); n != 0 {
		t.Errorf("acceptsWebSocket allocates %v times", n)
	}
}

// An upgrade reaches the edge naming websocket alone, in one Upgrade line:
// the protocol the balancer took it for. A request with a second Upgrade
// line (Upgrade: websocket, then Upgrade: h2c) is a WebSocket upgrade to
// the balancer, which reads the first; the edge got both lines, and a
// backend that switches to h2c whenever Upgrade names it answered 101 for
// h2c on the balancer's connection — refused (no WebSocket accept), the
// client got 502 where nginx, passing the first line alone, got the
// WebSocket server's answer. Now the edge gets `Upgrade: websocket` only
// and the handshake goes through. (Found by TestUpgradeAgainstNginx.)
func TestAnUpgradeReachesTheEdgeAsWebSocketAlone(t *testing.T) {
	seen := make(chan []string, 1)
	url := serveConns(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		ups := req.Header.Values("Upgrade")
		seen <- ups
		answer := wsSwitch(req, "")
		for _, up := range ups {
			for tok := range strings.SplitSeq(up, ",") {
				if strings.EqualFold(strings.TrimSpace(tok), "h2c") {
					answer = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
				}
			}
		}
		_, _ = io.WriteString(c, answer)
	})
	b, addr := startRawBalancer(t, configs.Balancer{})
	b.ring.Update([]ring.Member{{Name: "app", URL: url, Weight: 1}})

	status, _ := rawRequest(t, addr, wsHead+"Upgrade: h2c\r\n\r\n")
	ups := <-seen
	t.Logf("the edge got Upgrade %q; the client %d", ups, status)
	if fmt.Sprint(ups) != "[websocket]" {
		t.Errorf("the edge got Upgrade %q, want [websocket]", ups)
	}
	if status != http.StatusSwitchingProtocols {
		t.Errorf("the WebSocket handshake: %d, want 101", status)
	}
}
