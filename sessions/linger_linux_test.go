package sessions

import (
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/balancer/acceptguard/acceptguardtest"
	"github.com/ringlb/ringlb/configs"
)

// The edge's ports, like the balancer's (balancer's TestErrorAnswerNotReset
// says why): a client that keeps sending after the edge has answered its bad
// request and closed must read the whole answer and a clean end, and never
// be reset.
func TestErrorAnswerNotReset(t *testing.T) {
	e := startEdge(t, configs.Edge{}, nil)
	// A head over the edge's limit (configs.EdgeHeadBytes), the rest of it
	// sent only after the answer.
	big := "GET /whoami HTTP/1.1\r\nHost: edge\r\nX-Big: " + strings.Repeat("y", configs.EdgeHeadBytes+4096)
	// A malformed head with a body behind it, more than the edge's read
	// buffer holds, part of it sent only after the answer: the edge has not
	// read it all when it closes.
	body := strings.Repeat("z", configs.EdgeHeadBytes+8<<10)
	malformed := "POST /whoami HTTP/1.1\r\nHost: edge\r\nNo colon here\r\nContent-Length: 65536\r\n\r\n" + body
	for _, tt := range []struct {
		name, addr, first, rest, want string
	}{
		{"data port head too large", e.data, big, strings.Repeat("y", 4096) + "\r\n\r\n", "HTTP/1.1 431 "},
		{"data port malformed head", e.data, malformed, body[:8<<10], "HTTP/1.1 400 "},
		// The admin port is net/http's (health/operator), behind the guard too.
		{"admin port malformed head", e.admin, malformed, body[:8<<10], "HTTP/1.1 400 "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			acceptguardtest.NotReset(t, tt.addr, tt.first, tt.rest, tt.want)
		})
	}
}

// A participant's connection was handed over at the upgrade: the edge
// closes it at once when it ends the participant (here the drain's 1012),
// never lingering. The client reads to the end, then writes: the edge's
// socket is closed already, so the write draws a reset (a lingering socket
// would take it).
func TestParticipantClosesAtOnce(t *testing.T) {
	e := startEdge(t, configs.Edge{DrainTimeout: configs.Duration(100 * time.Millisecond)}, nil)
	c := rawJoinKey(t, e, "leaving")
	_ = c.SetDeadline(time.Now().Add(acceptguardtest.Patience))
	req, _ := http.NewRequest(http.MethodPost, "http://"+e.admin+"/api/drain", nil)
	req.Header.Set(configs.HeaderAdmin, "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /api/drain: %v %v", resp, err)
	}
	resp.Body.Close()
	// The edge's close frame (a server frame: not masked, a short payload).
	head := make([]byte, 2)
	if _, err := io.ReadFull(c, head); err != nil || head[0] != 0x88 || head[1] < 2 || head[1] > 125 {
		t.Fatalf("close frame head %x, %v", head, err)
	}
	payload := make([]byte, head[1])
	if _, err := io.ReadFull(c, payload); err != nil || binary.BigEndian.Uint16(payload) != closeServiceRestart {
		t.Fatalf("close frame %q, %v; want 1012", payload, err)
	}
	// The client's answer (masked with a zero key), then the edge's FIN.
	if _, err := c.Write([]byte{0x88, 0x82, 0, 0, 0, 0, payload[0], payload[1]}); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
		t.Fatalf("after the close frames: %q, %v; want the FIN", rest, err)
	}
	if !acceptguardtest.ResetAfterWrite(t, c.(*net.TCPConn), []byte("after the end")) {
		t.Error("a write after the participant's end was taken in; want a reset (the edge's socket closed at once)")
	}
}
