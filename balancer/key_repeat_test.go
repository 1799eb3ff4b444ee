package balancer

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
)

// A key source sent twice with different values routed by the first, while
// a third-party backend may take the last (PHP's $_GET, Django's
// request.GET and COOKIES): a client routed by session A's key was placed
// in session B on A's owner, a second copy of B beside the one on B's
// owner — a split any participant of B could make. Two different values
// of a header or query parameter are refused now (identical repeats
// pass); a cookie sent twice (browsers send a more specific path's first)
// routes by its first value, and the backend gets that one alone.
func TestRepeatedKeySourceIsNotAmbiguous(t *testing.T) {
	// The backend answers with what it reads as a last-wins framework
	// does: the key header, each cookie and query parameter named in
	// the request, the last of repeats.
	backend := keyEchoBackend(t, func(req *http.Request) string {
		last := func(vs []string) string {
			if len(vs) == 0 {
				return ""
			}
			return vs[len(vs)-1]
		}
		var cookies []string
		for _, ck := range req.Cookies() {
			if ck.Name == "ctstickiness" {
				cookies = append(cookies, ck.Value)
			}
		}
		return fmt.Sprintf("routed=%s session=%s token=%s cookie=%s",
			req.Header.Get("ctstickiness"), last(req.Header.Values("X-Session")), last(req.URL.Query()["token"]), strings.Join(cookies, ","))
	})
	h := newHarness(t, configs.Balancer{Key: configs.Key{Sources: []string{"header:X-Session", "header:ctstickiness", "cookie:ctstickiness", "query:token"}, HashQuery: ptr(false)}})
	h.ring.Update([]ring.Member{{Name: "lastwins", URL: backend, Weight: 1}})
	for _, tt := range []struct {
		name, head string
		want       string // the status and what the backend read
	}{
		{"a header twice", "X-Session: A\r\nX-Session: B\r\n", "400"},
		{"the key header twice", "ctstickiness: A\r\nctstickiness: B\r\n", "400"},
		{"a header twice, in two cases", "X-Session: A\r\nx-SESSION: B\r\n", "400"},
		{"a parameter twice, one encoded", "?token=A&tok%65n=B", "400"},
		{"a header twice, the same", "X-Session: A\r\nX-Session: A\r\n", "200 routed=A session=A token= cookie="},
		{"a query parameter twice", "?token=A&token=B", "400"},
		{"a query parameter twice, the same", "?token=A&token=A", "200 routed=A session= token=A cookie="},
		{"a cookie twice", "Cookie: ctstickiness=A; other=1; ctstickiness=B\r\n", "200 routed=A session= token= cookie=A"},
		{"a cookie on two lines", "Cookie: ctstickiness=A\r\nCookie: ctstickiness=B\r\n", "200 routed=A session= token= cookie=A"},
		{"a cookie twice, the same", "Cookie: ctstickiness=A; ctstickiness=A\r\n", "200 routed=A session= token= cookie=A,A"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			target, head := "/a", tt.head
			if strings.HasPrefix(head, "?") {
				target, head = "/a"+head, ""
			}
			got := answerOf(t, h.addr, "GET "+target+" HTTP/1.1\r\nHost: bal\r\n"+head+"\r\n")
			t.Logf("%s: %s", tt.name, got)
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// A path:N key was read from the path as fasthttp normalizes it (dot
// segments resolved, percent-encoding decoded, %2F taken for a slash) while
// the target went to the backend as sent: /s/A/../B/ws routed by B, and a
// backend that does not normalize (or splits before it decodes) placed the
// client in session A on B's owner — a split. A target whose key segment
// does not read the same as sent and as normalized is refused now; dot
// segments elsewhere and encoded bytes that decode to the same key pass.
func TestPathKeyReadsAsTheBackendReadsIt(t *testing.T) {
	backend := keyEchoBackend(t, func(req *http.Request) string {
		return fmt.Sprintf("routed=%s target=%s", req.Header.Get("ctstickiness"), req.RequestURI)
	})
	h := newHarness(t, configs.Balancer{Key: configs.Key{Sources: []string{"path:2"}}})
	h.ring.Update([]ring.Member{{Name: "raw", URL: backend, Weight: 1}})
	for _, tt := range []struct {
		target, want string
	}{
		{"/s/A/../B/ws", "400"},
		{"/s/A/x/../../B/ws", "400"},
		{"/s/./A/ws", "400"},
		{"/s/%2e%2e/B/ws", "400"},
		{"/s%2FA/B/ws", "400"},
		{"/s/A%2fB/ws", "400"},
		{"/s/A/ws", "200 routed=A target=/s/A/ws"},
		{"/s/A/x/../ws", "200 routed=A target=/s/A/x/../ws"},
		{"/s/%41/ws?q=/../B", "200 routed=A target=/s/%41/ws?q=/../B"},
		{"//s//A/ws", "200 routed=A target=//s//A/ws"},
		{"http://bal/s/A/ws", "200 routed=A target=/s/A/ws"},
		{"http://bal/s/A/../B/ws", "400"},
	} {
		t.Run(tt.target, func(t *testing.T) {
			got := answerOf(t, h.addr, "GET "+tt.target+" HTTP/1.1\r\nHost: bal\r\n\r\n")
			t.Logf("%s: %s", tt.target, got)
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// A backslash or a semicolon in the path went to the backend as sent and
// routed as a plain byte of a segment, while backends read them otherwise:
// IIS and other Windows stacks take "\" for "/" (/s/A\..\B/ws is their
// /s/B/ws), Tomcat, Jetty and Spring cut a segment at ";" (/s/A;x=1/ws is
// their session A, /s/A/..;/../B/ws climbs to /B/ws). Routed by A\..\B or
// A;x=1, the client joined the backend's session on another key's owner — a
// split. With a path key source, a target holding either, encoded or not,
// anywhere in its path is refused: one after the key segment moves it too
// (/s/A/x\..\..\B\ws\y/.. is /s/A for the balancer, /s/B/ws for IIS).
func TestPathKeyRefusesSeparatorsABackendMayRead(t *testing.T) {
	backend := keyEchoBackend(t, func(req *http.Request) string {
		return fmt.Sprintf("routed=%s target=%s", req.Header.Get("ctstickiness"), req.RequestURI)
	})
	h := newHarness(t, configs.Balancer{Key: configs.Key{Sources: []string{"path:2", "header:ctstickiness"}}})
	h.ring.Update([]ring.Member{{Name: "raw", URL: backend, Weight: 1}})
	for _, tt := range []struct {
		target, header, want string
	}{
		{`/s/A\..\B/ws`, "", "400"},
		{`/s/A%5C..%5CB/ws`, "", "400"},
		{`/s/A%5c..%5cB/ws`, "", "400"},
		{`/s\A/ws`, "", "400"},
		{`/s/A/x\..\..\B\ws\y/..`, "", "400"},
		{`/s/A;x=1/ws`, "", "400"},
		{`/s/A%3Bx=1/ws`, "", "400"},
		{`/s/A/..;/../B/ws`, "", "400"},
		{`/..;/s/A/ws`, "", "400"},
		{`/s;v=1/A/ws`, "", "400"},
		// No key segment for the balancer, the header's key routes, and
		// IIS reads session A.
		{`/s\A`, "Z", "400"},
		{`/s/A/ws?p=a;b\c&q=%5C`, "", "200 routed=A target=/s/A/ws?p=a;b\\c&q=%5C"},
		{`/s`, "Z", "200 routed=Z target=/s"},
		{`/s/A/ws`, "", "200 routed=A target=/s/A/ws"},
		{`/s/%41/ws`, "", "200 routed=A target=/s/%41/ws"},
	} {
		t.Run(tt.target, func(t *testing.T) {
			head := "GET " + tt.target + " HTTP/1.1\r\nHost: bal\r\n"
			if tt.header != "" {
				head += "Ctstickiness: " + tt.header + "\r\n"
			}
			got := answerOf(t, h.addr, head+"\r\n")
			t.Logf("%s: %s", tt.target, got)
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// keyEchoBackend is a backend that answers each request 200 with what
// read makes of it (what a framework behind the balancer reads).
func keyEchoBackend(t *testing.T, read func(*http.Request) string) string {
	return serveConns(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			body := read(req)
			if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body); err != nil {
				return
			}
		}
	})
}

// answerOf sends raw to addr and returns the answer's status, and its
// body after it when 200.
func answerOf(t *testing.T, addr, raw string) string {
	t.Helper()
	status, resp := rawRequest(t, addr, raw)
	body, _ := io.ReadAll(resp.Body)
	got := fmt.Sprint(status)
	if status == http.StatusOK {
		got += " " + string(body)
	}
	return got
}
