package balancer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// The balancer re-frames every answer it relays — its own Content-Length,
// or chunked coding for one without a length — but kept parts of the
// edge's head as the edge wrote them, and a client reads the framing by
// some of them, or refuses them:
//
//   - the edge's HTTP version: an HTTP/1.0 answer without a length went to
//     the client as "HTTP/1.0 200 OK" with Transfer-Encoding: chunked, a
//     coding an HTTP/1.0 message cannot carry (RFC 9112, 6.1, has the
//     recipient treat its framing as faulty): read to the close, as clients
//     that ignore it on HTTP/1.0 do, the chunk sizes and the next pipelined
//     request's answer became this answer's body; "HTTP/2.0" and
//     "HTTP/1.2" status lines went on as written;
//   - a header name with a space inside ("X A: b"), no token, which HAProxy
//     and nginx refuse (502);
//   - a status below 100: "099" went out as "HTTP/1.1 99 Low", a status
//     line no client reads;
//   - a NUL in the reason phrase.
//
// The same went for the non-101 answer to an upgrade, whose handshake also
// took a status below 100 for an interim answer: it passed over "099" and
// read what its body held as the answer — here the forged one.
//
// Now the balancer speaks its own version (RFC 9110, 6.2: an intermediary
// sends its own), refuses the answers a client cannot read (502) and sends
// the status's own reason for one with a control byte.
func TestRelayedAnswerHeadIsWellFormed(t *testing.T) {
	for _, tt := range []struct {
		name, answer string
		close        bool // the edge closes after the answer
		status       int  // what the client gets
		// upgradeStatus: what it gets when the answer is to an upgrade,
		// when not status (the handshake reads HTTP/1.x status lines
		// only).
		upgradeStatus int
	}{
		{"HTTP/1.0 without length", "HTTP/1.0 200 OK\r\nX-Case: 1\r\n\r\nok", true, 200, 0},
		{"HTTP/1.0 keep-alive with length", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", false, 200, 0},
		{"HTTP/2.0 status line", "HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false, 200, 502},
		{"HTTP/1.2 status line", "HTTP/1.2 200 OK\r\nContent-Length: 2\r\n\r\nok", false, 200, 0},
		{"space in a header name", "HTTP/1.1 200 OK\r\nX A: b\r\nContent-Length: 2\r\n\r\nok", false, 502, 0},
		{"status 099", fmt.Sprintf("HTTP/1.1 099 Low\r\nContent-Length: %d\r\n\r\n%s", len(forged), forged), false, 502, 0},
		{"NUL in the reason", "HTTP/1.1 200 O\x00K\r\nContent-Length: 2\r\n\r\nok", false, 200, 0},
	} {
		for _, upgrade := range []bool{false, true} {
			name, status := tt.name, tt.status
			first := "GET /case HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\n\r\n"
			if upgrade {
				// The answer to an upgrade that is no 101 goes the
				// upgrade's way (handshake, relayAnswer).
				name += ", to an upgrade"
				first = upgradeHead + "\r\n"
				if tt.upgradeStatus != 0 {
					status = tt.upgradeStatus
				}
			}
			t.Run(name, func(t *testing.T) { relayedAnswerHead(t, tt.answer, first, tt.close, status) })
		}
	}
}

// relayedAnswerHead sends first and a pipelined innocent request to a
// balancer whose edge answers the first with answer (closing after it when
// close) and checks that the client reads, strictly, an HTTP/1.1 status
// answer and the innocent request's own answer.
func relayedAnswerHead(t *testing.T, answer, first string, closeAfter bool, status int) {
	t.Helper()
	h := newHarness(t, configs.Balancer{})
	h.ring.Update([]ring.Member{{Name: "careless", URL: serveConns(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if id, ok := strings.CutPrefix(req.URL.Path, "/innocent/"); ok {
				n, _ := strconv.Atoi(id)
				if _, err := io.WriteString(c, innocentAnswer(n)); err != nil {
					return
				}
				continue
			}
			if _, err := io.WriteString(c, answer); err != nil || closeAfter {
				return
			}
		}
	}), Weight: 1}})
	raw := exchangeRaw(t, h.addr, first+"GET /innocent/1 HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\n\r\n")
	answers, _, err := readStrict(raw, []string{"GET", "GET"})
	t.Logf("the client read %q", raw)
	if err != nil {
		t.Fatalf("what the client got does not read strictly: %v", err)
	}
	if len(answers) != 2 || answers[0].status != status || answers[0].proto != "HTTP/1.1" || !answers[1].innocent(1) {
		t.Fatalf("the client got %v, want an HTTP/1.1 %d and the pipelined request's own answer", answers, status)
	}
	if status == 200 && answers[0].body != "ok" {
		t.Errorf("body %q, want the edge's", answers[0].body)
	}
}

// An answer whose status has no body (204, 304) while its head announces
// one — a Content-Length other than 0, or Transfer-Encoding — was taken as
// ending with its head and its connection to the edge kept for the next
// request, any client's. A backend that sends that body anyway, after the
// head (a handler that writes its 204's body, a 304 as its 200), has it
// read as the next request's answer when it comes after that request went
// out, which the check for bytes waiting (TestStrayBytesNeverAnswerAnotherClient)
// cannot see: the next client got the forged answer the body held. Such a
// connection now carries no other request (pooledConn.spent).
func TestLateBodyOfABodilessAnswerAnswersNoOne(t *testing.T) {
	for _, tt := range []struct{ name, head, late string }{
		{"204 with a Content-Length", fmt.Sprintf("HTTP/1.1 204 No Content\r\nContent-Length: %d\r\n\r\n", len(forged)), forged},
		{"204 chunked", "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n", chunk(forged) + "0\r\n\r\n"},
		{"304 with a Content-Length", fmt.Sprintf("HTTP/1.1 304 Not Modified\r\nContent-Length: %d\r\n\r\n", len(forged)), forged},
		{"304 chunked", "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", chunk(forged) + "0\r\n\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, configs.Balancer{})
			// The edge answers /page with the head alone, and writes its
			// body once the next request on the connection has come.
			h.ring.Update([]ring.Member{{Name: "careless", URL: serveConns(t, func(c net.Conn, br *bufio.Reader) {
				late := ""
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					answer := "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nprivate " + req.Header.Get("Cookie")
					if req.URL.Path == "/page" {
						answer = tt.head
					}
					if _, err := io.WriteString(c, late+answer); err != nil {
						return
					}
					late = ""
					if req.URL.Path == "/page" {
						late = tt.late
					}
				}
			}), Weight: 1}})
			if got := answerBody(t, h.addr, "GET /page HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\n\r\n"); got[:3] != tt.head[9:12] {
				t.Fatalf("the page's answer: %q", got)
			}
			got := answerBody(t, h.addr, "GET /private HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\nCookie: vic\r\n\r\n")
			t.Logf("the next client got %q", got)
			if got != "200 private vic" {
				t.Errorf("the next client got %q, want its own answer", got)
			}
		})
	}
}

// exchangeRaw writes payload to a new connection to addr, shuts its write
// side and returns all the front sent until it closed.
func exchangeRaw(t *testing.T, addr, payload string) []byte {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(healthtest.Patience))
	if _, err := io.WriteString(c, payload); err != nil && !errors.Is(err, io.ErrClosedPipe) {
		t.Logf("write: %v", err) // a front may close before it took all
	}
	_ = c.(*net.TCPConn).CloseWrite()
	all, err := io.ReadAll(c)
	if err != nil && !isReset(err) {
		t.Fatalf("reading the answers from %s: %v (got %q)", addr, err, all)
	}
	return all
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && strings.Contains(op.Err.Error(), "connection reset")
}

func trimForLog(s string) string {
	if len(s) > 80 {
		return s[:40] + fmt.Sprintf("…(%d bytes)…", len(s)-60) + s[len(s)-20:]
	}
	return s
}

// strictAnswer is one answer as readStrict read it.
type strictAnswer struct {
	proto  string
	status int
	fields [][2]string // name, value
	body   string
	// closeDelimited: no length, the body ran to the close.
	closeDelimited bool
	trailers       [][2]string
}

func (a strictAnswer) get(name string) string {
	for _, f := range a.fields {
		if strings.EqualFold(f[0], name) {
			return f[1]
		}
	}
	return ""
}

func (a strictAnswer) innocent(id int) bool {
	return a.status == 200 && a.get("X-Innocent") == strconv.Itoa(id) && a.body == fmt.Sprintf("innocent %d", id) && a.get("X-Forged") == ""
}

func (a strictAnswer) String() string {
	s := fmt.Sprintf("%s %d", a.proto, a.status)
	for _, mark := range []string{"X-Case", "X-Forged", "X-Innocent"} {
		if v := a.get(mark); v != "" {
			s += " " + mark + ":" + v
		}
	}
	if a.closeDelimited {
		s += " (to the close)"
	}
	if len(a.trailers) > 0 {
		s += fmt.Sprintf(" trailers %q", a.trailers)
	}
	return s + fmt.Sprintf(" body %q", trimForLog(a.body))
}

// readStrict reads the answers in raw as a strict HTTP/1.1 client
// (RFC 9112) does, the answers being to requests of methods, in order.
// truncated: raw ended inside an answer (a front that cut an answer short
// closes the connection: the client sees it cut, and takes nothing after
// it for an answer). err: raw holds what a strict client refuses — the
// place where clients that are not strict read it in more than one way.
// After a 101 the rest is another protocol's and is not read.
func readStrict(raw []byte, methods []string) (answers []strictAnswer, truncated bool, err error) {
	for len(raw) > 0 {
		end := bytes.Index(raw, []byte("\r\n\r\n"))
		if end < 0 {
			return answers, false, fmt.Errorf("a head without its blank line (CRLF CRLF): %q", trimForLog(string(raw)))
		}
		lines := strings.Split(string(raw[:end]), "\r\n")
		raw = raw[end+4:]
		for _, l := range lines {
			if strings.ContainsAny(l, "\r\n") {
				return answers, false, fmt.Errorf("a bare CR or LF in the head's line %q", l)
			}
		}
		var a strictAnswer
		if a.proto, a.status, err = strictStatusLine(lines[0]); err != nil {
			return answers, false, err
		}
		if a.fields, err = strictFields(lines[1:]); err != nil {
			return answers, false, err
		}
		var cls, tes []string
		for _, f := range a.fields {
			switch strings.ToLower(f[0]) {
			case "content-length":
				cls = append(cls, f[1])
			case "transfer-encoding":
				tes = append(tes, f[1])
			}
		}
		method := ""
		if len(methods) > 0 {
			method = methods[0]
		}
		noBody := method == "HEAD" || 100 <= a.status && a.status < 200 || a.status == 204 || a.status == 304
		switch {
		case len(cls) > 0 && len(tes) > 0:
			return answers, false, fmt.Errorf("both Content-Length %q and Transfer-Encoding %q", cls, tes)
		case len(cls) > 1:
			return answers, false, fmt.Errorf("%d Content-Length lines", len(cls))
		case len(tes) > 1 || len(tes) == 1 && tes[0] != "chunked":
			return answers, false, fmt.Errorf("Transfer-Encoding %q", tes)
		case len(tes) == 1 && a.proto == "HTTP/1.0":
			return answers, false, errors.New("Transfer-Encoding on HTTP/1.0")
		case (a.status < 200 || a.status == 204) && (len(cls) > 0 || len(tes) > 0):
			return answers, false, fmt.Errorf("a %d with a length", a.status)
		}
		if a.status == 101 {
			return append(answers, a), false, nil // another protocol follows
		}
		if a.status < 200 && a.status >= 100 {
			answers = append(answers, a)
			continue // interim: the answer follows
		}
		if len(methods) > 0 {
			methods = methods[1:]
		}
		switch {
		case noBody:
		case len(tes) == 1:
			var cut bool
			a.body, a.trailers, raw, cut, err = strictChunked(raw)
			if err != nil {
				return append(answers, a), false, err
			}
			if cut {
				return append(answers, a), true, nil
			}
		case len(cls) == 1:
			n, err := strconv.ParseUint(cls[0], 10, 62)
			if err != nil || strings.TrimLeft(cls[0], "0123456789") != "" {
				return answers, false, fmt.Errorf("Content-Length %q", cls[0])
			}
			if uint64(len(raw)) < n {
				a.body = string(raw)
				return append(answers, a), true, nil
			}
			a.body, raw = string(raw[:n]), raw[n:]
		default:
			a.body, a.closeDelimited, raw = string(raw), true, nil
		}
		answers = append(answers, a)
	}
	return answers, false, nil
}

// strictStatusLine reads "HTTP/1.x NNN reason".
func strictStatusLine(l string) (proto string, status int, err error) {
	proto, rest, ok := strings.Cut(l, " ")
	if !ok || proto != "HTTP/1.1" && proto != "HTTP/1.0" {
		return "", 0, fmt.Errorf("status line %q", l)
	}
	code, reason, ok := strings.Cut(rest, " ")
	if !ok || len(code) != 3 || strings.Trim(code, "0123456789") != "" || !fieldValue(reason) {
		return "", 0, fmt.Errorf("status line %q", l)
	}
	status, _ = strconv.Atoi(code)
	return proto, status, nil
}

// strictFields reads header (or trailer) lines: a token, a colon, a value
// of the bytes a field may hold, no fold.
func strictFields(lines []string) ([][2]string, error) {
	var fields [][2]string
	for _, l := range lines {
		if l == "" || l[0] == ' ' || l[0] == '\t' {
			return nil, fmt.Errorf("a folded or empty line %q", l)
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok || !token(name) {
			return nil, fmt.Errorf("field name %q", name)
		}
		value = strings.Trim(value, " \t")
		if !fieldValue(value) {
			return nil, fmt.Errorf("field %s's value %q", name, value)
		}
		fields = append(fields, [2]string{name, value})
	}
	return fields, nil
}

// strictChunked reads a chunked body at the start of raw, its trailer
// section too, and returns what follows it. cut: raw ended inside it.
func strictChunked(raw []byte) (body string, trailers [][2]string, rest []byte, cut bool, err error) {
	var b strings.Builder
	for {
		i := bytes.Index(raw, []byte("\r\n"))
		if i < 0 {
			return b.String(), nil, nil, !bytes.ContainsAny(raw, "\r\n"), errorIf(bytes.ContainsAny(raw, "\r\n"), "a chunk size line %q", raw)
		}
		line := string(raw[:i])
		raw = raw[i+2:]
		size, ext, _ := strings.Cut(line, ";")
		n, perr := strconv.ParseUint(size, 16, 62)
		if perr != nil || strings.Trim(size, "0123456789abcdefABCDEF") != "" || len(size) > 15 || strings.ContainsAny(ext, "\r\n\x00") {
			return b.String(), nil, nil, false, fmt.Errorf("a chunk size line %q", line)
		}
		if n == 0 {
			break
		}
		if uint64(len(raw)) < n+2 {
			return b.String(), nil, nil, true, nil
		}
		if string(raw[n:n+2]) != "\r\n" {
			return b.String(), nil, nil, false, fmt.Errorf("chunk data not ended by CRLF: %q", raw[n:n+2])
		}
		b.Write(raw[:n])
		raw = raw[n+2:]
	}
	for {
		i := bytes.Index(raw, []byte("\r\n"))
		if i < 0 {
			return b.String(), trailers, nil, !bytes.ContainsAny(raw, "\r\n"), errorIf(bytes.ContainsAny(raw, "\r\n"), "a trailer line %q", raw)
		}
		line := string(raw[:i])
		raw = raw[i+2:]
		if line == "" {
			return b.String(), trailers, raw, false, nil
		}
		f, err := strictFields([]string{line})
		if err != nil {
			return b.String(), trailers, nil, false, fmt.Errorf("trailer: %w", err)
		}
		switch strings.ToLower(f[0][0]) {
		case "content-length", "transfer-encoding", "trailer", "connection", "keep-alive", "upgrade", "te":
			return b.String(), trailers, nil, false, fmt.Errorf("the framing field %s in a trailer", f[0][0])
		}
		trailers = append(trailers, f[0])
	}
}

func errorIf(cond bool, format string, args ...any) error {
	if !cond {
		return nil
	}
	return fmt.Errorf(format, args...)
}

// token reports whether s is an RFC 9110 token (a field name).
func token(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

// fieldValue reports whether s holds only bytes a field value (or reason
// phrase) may: HTAB, SP, VCHAR, obs-text.
func fieldValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// innocentAnswer is a backend's answer to an innocent client's request
// (innocentRequest, on Linux), naming id.
func innocentAnswer(id int) string {
	body := fmt.Sprintf("innocent %d", id)
	return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Innocent: %d\r\n\r\n%s", len(body), id, body)
}
