package balancer

import (
	"bytes"
	"errors"
	"io"

	"github.com/valyala/fasthttp"
)

// Request framing: one request from a client is one request at the edge.
//
// Where a body ends is decided by Content-Length or Transfer-Encoding. When
// two parsers can disagree about it — both headers, a coding other than
// chunked, two lengths, a header hidden by folding or by a bare LF — the
// bytes one takes for a body the other takes for the next request, and a
// client can smuggle a request past the balancer's checks (its /_ringlb/
// refusal) straight to an edge. So such a request is refused with 400 and its
// connection closed, as HAProxy and Go's net/http do, and every request that
// goes on is re-framed: the headers the edge gets describe the body the
// balancer writes, never the client's framing headers.
//
// fasthttp's parser already refuses two Content-Length or Transfer-Encoding
// headers, codings other than chunked and identity, Transfer-Encoding on
// HTTP/1.0 and malformed lengths; it accepts Content-Length with
// Transfer-Encoding (chunked wins), "identity" (ignored), folded lines
// (joined) and bare LF line ends. checkFraming relies on none of this: it
// reads the raw header block itself.

var (
	errBareLineEnd = errors.New("header line not ended by CRLF")
	errFolded      = errors.New("folded header line")
	errBadName     = errors.New("header name not a token")
	errTwoLengths  = errors.New("more than one Content-Length")
	errBadLength   = errors.New("malformed Content-Length")
	errTwoCodings  = errors.New("more than one Transfer-Encoding")
	errCoding      = errors.New(`a Transfer-Encoding other than "chunked"`)
	errBothFraming = errors.New("both Content-Length and Transfer-Encoding")
	errUpgradeBody = errors.New("upgrade request with a body")
	errHeadBody    = errors.New("HEAD request with a body")
	// errBodyTooLarge: a declared body over max_body_bytes, or a chunked
	// one that grew past it while it streamed to the edge.
	errBodyTooLarge = errors.New("request body too large")
	// A body that failed as it streamed: broken chunks, the client gone.
	errBodyUnreadable = errors.New("unreadable request body")
	errBodyTimeout    = errors.New("request body not received in time")
	// errNoHost: a request without Host (HTTP/1.0 allows it) cannot be
	// forwarded; the edge's pool found out only after dialing the edge, an
	// error counted against it.
	errNoHost = errors.New("no Host header")
	// errMethod: CONNECT asks the backend for a tunnel to anywhere (its 2xx
	// was relayed one way until close) and TRACE reflects the request back,
	// the headers this balancer adds included; no IDE backend serves either,
	// and nginx refuses both.
	errMethod = errors.New("method not allowed: CONNECT and TRACE are not forwarded")
	// errVersion: a request line naming another version than HTTP/1.0 or
	// HTTP/1.1 was forwarded with it as written (HTTP/2.0, HTTP/9.9, a
	// HTTP/0.9 line with headers and a body), for each backend to read as
	// it reads such a line — framing rules differ by version. nginx and
	// Go's net/http answer 505 to a major version other than 1.
	errVersion = errors.New("HTTP version not supported: HTTP/1.0 and HTTP/1.1 only")
)

// allowedMethods is the Allow header of the 405 that errMethod gets (RFC
// 9110 section 15.5.6: a 405 names what the target allows).
const allowedMethods = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"

// checkFraming reads the raw header block of h and reports whether the body
// is chunked, or why its framing is ambiguous. No allocation.
func checkFraming(h *fasthttp.RequestHeader) (chunked bool, err error) {
	raw := h.RawHeaders()
	lengths, codings := 0, 0
	for len(raw) > 0 {
		i := bytes.IndexByte(raw, '\n')
		if i < 1 || raw[i-1] != '\r' {
			return false, errBareLineEnd
		}
		line := raw[:i-1]
		raw = raw[i+1:]
		if len(raw) > 0 && (raw[0] == ' ' || raw[0] == '\t') {
			return false, errFolded
		}
		if bytes.IndexByte(line, '\r') >= 0 {
			return false, errBareLineEnd
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			continue // fasthttp refuses a line without one
		}
		// A name is a token (RFC 9110 §5.1). fasthttp passes "X A: b" on
		// as it came, and backends read such a name each their own way
		// (one takes it, another answers 400, a third splits it).
		if !isToken(line[:colon]) {
			return false, errBadName
		}
		// Only Content-Length and Transfer-Encoding matter from here.
		if asciiLower(line[0]) != 'c' && asciiLower(line[0]) != 't' {
			continue
		}
		// Only spaces are trimmed. A tab is whitespace around a value
		// to the RFC (OWS), to HAProxy and to Go, and part of it to
		// nginx 1.22, which refuses "Transfer-Encoding:\tchunked" (501)
		// and "Content-Length: 2\t" (400): parsers disagreeing on
		// where a body ends. No client needs one here.
		name, value := line[:colon], bytes.Trim(line[colon+1:], " ")
		switch {
		case asciiEqualFold(name, "Content-Length"):
			lengths++
			if !allDigits(value) {
				return false, errBadLength
			}
		case asciiEqualFold(name, "Transfer-Encoding"):
			codings++
			// Coding names are case-insensitive (RFC 9112 §7), but
			// only ASCII folds: "chunKed" with a Kelvin sign is not
			// chunked.
			if !asciiEqualFold(value, "chunked") {
				return false, errCoding
			}
		}
	}
	switch {
	case lengths > 1:
		return false, errTwoLengths
	case codings > 1:
		return false, errTwoCodings
	case lengths > 0 && codings > 0:
		return false, errBothFraming
	}
	return codings == 1, nil
}

// isToken reports whether b is a non-empty RFC 9110 token: letters, digits
// and !#$%&'*+-.^_`|~.
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c >= 0x80 || !tokenChar[c] {
			return false
		}
	}
	return true
}

// tokenChar marks the bytes a token may hold.
var tokenChar = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// asciiEqualFold compares b with s folding ASCII letters only.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		if asciiLower(b[i]) != asciiLower(s[i]) {
			return false
		}
	}
	return true
}

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}

func asciiLower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// refusal returns the status for a request the balancer refuses for its
// version, its method, its framing or its body, with the reason, or 0 to let it on. maxBody is
// balancer.limits.max_body_bytes.
func refusal(h *fasthttp.RequestHeader, maxBody int64) (int, error) {
	if p := h.Protocol(); string(p) != "HTTP/1.1" && string(p) != "HTTP/1.0" {
		return fasthttp.StatusHTTPVersionNotSupported, errVersion
	}
	// In any case: methods are case-sensitive (RFC 9110 9.1), but a
	// backend that folds them reads "trace" as TRACE.
	if m := h.Method(); asciiEqualFold(m, fasthttp.MethodConnect) || asciiEqualFold(m, fasthttp.MethodTrace) {
		return fasthttp.StatusMethodNotAllowed, errMethod
	}
	chunked, err := checkFraming(h)
	if err != nil {
		return fasthttp.StatusBadRequest, err
	}
	length := int64(h.ContentLength()) // -1 chunked, -2 none
	// An upgrade carries no body (the RFC 6455 handshake is a GET): the
	// bytes after its head are WebSocket frames, which only the edge
	// may read. A body here is a second request in disguise.
	if (chunked || length > 0) && isWebSocketUpgrade(h) {
		return fasthttp.StatusBadRequest, errUpgradeBody
	}
	// Nor does a HEAD (its content has no meaning, RFC 9110 9.3.2): a
	// backend that reads no body after one reads it as the next request.
	// HAProxy and nginx forward it. In any case, as TRACE above.
	if (chunked || length > 0) && asciiEqualFold(h.Method(), fasthttp.MethodHead) {
		return fasthttp.StatusBadRequest, errHeadBody
	}
	// Refused before a byte of the body is forwarded; a chunked body is
	// counted as it streams (bodyLimit).
	if length > maxBody {
		return fasthttp.StatusRequestEntityTooLarge, errBodyTooLarge
	}
	return 0, nil
}

// bodyLimit is the request body stream handed to the edge's HostClient. It
// counts what passes, fails a body past the limit (errBodyTooLarge) before
// the excess is forwarded, and keeps the first error so the caller can tell
// a client's body failing (too large, broken chunks, the client gone) from
// the edge failing: only the latter is the edge's fault.
type bodyLimit struct {
	r    io.Reader
	left int64 // bytes still allowed
	err  error // sticky: io.EOF, errBodyTooLarge or the client stream's error
	// trailer, for a chunked body, is the request's header: the client's
	// trailer fields are parsed into it as the body ends and HostClient
	// writes them after the last chunk, past prepareRequestHeader, which
	// saw only the head — a client's Forwarded, X-Ringlb- or ctstickiness
	// there reached the edge, and fasthttp (the edge's server, any
	// fasthttp app) reads a trailer field as a header when the head has
	// none (TestClientTrailerNeverReachesABackend). They are dropped, as
	// nginx drops them (RFC 9110 6.5.1 lets a proxy).
	trailer *fasthttp.RequestHeader
}

func (l *bodyLimit) Read(p []byte) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	if int64(len(p)) > l.left {
		p = p[:l.left+1] // one byte more tells a body past the limit
	}
	n, err := l.r.Read(p)
	if int64(n) > l.left {
		l.err = errBodyTooLarge
		return 0, l.err
	}
	l.left -= int64(n)
	if err == io.EOF && l.trailer != nil {
		// The head is written already: fasthttp moves the fields of a
		// trailer no longer announced to the head, which nothing sends
		// again, and the trailer goes out empty.
		l.trailer.Del(fasthttp.HeaderTrailer)
	}
	if err != nil {
		l.err = err
		if n > 0 {
			// fasthttp's chunk writer drops the error of a read that
			// returned data; the next Read returns it.
			return n, nil
		}
	}
	return n, err
}

// clientFault is the client body's failure, nil when the body was read
// whole (or not at all).
func (l *bodyLimit) clientFault() error {
	if l == nil || l.err == io.EOF {
		return nil
	}
	return l.err
}
