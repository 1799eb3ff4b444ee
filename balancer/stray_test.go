package balancer

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
)

// forged is the answer an attacker hides in what a careless backend sends
// beyond the end of an answer.
const forged = "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nX-Forged: 1\r\n\r\nforged!"

// A backend's answer that carries more bytes than its framing says — a
// body on a HEAD (a handler that answers HEAD as GET), a Content-Length
// counted in characters while the body is UTF-8 — left those bytes on the
// pooled connection to the edge, and the next request sent on it, any
// client's, was answered with them. A page that reflects the client's
// input at the start of its body let a client put an answer of its making
// there: the next client got the forged answer, and its own answer, with
// whatever its cookie showed, waited on the connection for the client after
// it. A connection with bytes left over is not reused now.
func TestStrayBytesNeverAnswerAnotherClient(t *testing.T) {
	// The backend answers /page with q reflected in the body — first, or
	// last when it miscounts — and /private with what the client's cookie
	// gives it.
	backend := func(miscount bool) string {
		return serveConns(t, func(c net.Conn, br *bufio.Reader) {
			for {
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				body := req.URL.Query().Get("q") + strings.Repeat("p", 8000)
				if miscount {
					body = strings.Repeat("p", 8000) + req.URL.Query().Get("q")
				}
				if req.URL.Path == "/private" {
					body = "private to " + req.Header.Get("Cookie")
				}
				length := len(body)
				if miscount {
					length = len([]rune(body)) // characters, not bytes
				}
				// HEAD answered as GET: the body goes too.
				if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", length, body); err != nil {
					return
				}
			}
		})
	}
	for _, tt := range []struct {
		name     string
		miscount bool
		method   string
		// victim is the next client's request method: a POST's body
		// streams, so its request cannot be sent again — it goes on a new
		// connection to the edge instead of the one with bytes waiting
		// (before: 502).
		victim string
	}{
		{"a body on HEAD", false, http.MethodHead, http.MethodGet},
		{"a Content-Length of characters", true, http.MethodGet, http.MethodGet},
		{"a Content-Length of characters, then a request with a body", true, http.MethodGet, http.MethodPost},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, configs.Balancer{})
			h.ring.Update([]ring.Member{{Name: "careless", URL: backend(tt.miscount), Weight: 1}})
			// The forged answer is left on the socket, beyond what the
			// pool's reader (4 KiB) took of the attacker's answer: after
			// the answer's head and padding to 4 KiB on a HEAD, after as
			// many 2-byte "é" as it has bytes when they are counted as
			// characters.
			var q string
			if tt.miscount {
				q = strings.Repeat("é", len(forged)) + forged
			} else {
				for range 3 {
					head := len(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(q)+8000))
					q = strings.Repeat("a", 4096-head) + forged
				}
			}
			c, err := net.Dial("tcp", h.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := fmt.Fprintf(c, "%s /page?q=%s HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\n\r\n", tt.method, url.QueryEscape(q)); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: tt.method})
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("the attacker's request: %d", resp.StatusCode)
			}
			victimReq := "GET /private HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\nCookie: victim\r\n\r\n"
			if tt.victim == http.MethodPost {
				victimReq = "POST /private HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\nCookie: victim\r\nContent-Length: 3\r\n\r\nx=1"
			}
			victim := answerBody(t, h.addr, victimReq)
			next := answerBody(t, h.addr, "GET /private HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\nCookie: attacker\r\n\r\n")
			t.Logf("the next client got %q, the one after it %q", victim, next)
			if victim != "200 private to victim" || next != "200 private to attacker" {
				t.Errorf("the next clients got %q and %q, want their own answers", victim, next)
			}
		})
	}
}

// answerBody sends req on a new connection and returns the answer's status
// and body ("502 bad gateway...").
func answerBody(t *testing.T, addr, req string) string {
	t.Helper()
	_, resp := rawRequest(t, addr, req)
	body, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
}
