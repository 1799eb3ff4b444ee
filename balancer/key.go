package balancer

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/cespare/xxhash/v2"
	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/configs"
)

// keyHeader is the header the edge finds the routing key in. The balancer
// always sets it to the key it routed with, whatever source the key came from,
// so the edge checks ownership with exactly the key the balancer hashed.
const keyHeader = configs.HeaderKey

// sourceKind is where a stickiness key was found.
type sourceKind uint8

const (
	sourceHeader sourceKind = iota + 1
	sourceCookie
	sourceQuery
	// sourceAssigned: the request had no key; the balancer generated one and
	// sets it as a cookie on the response.
	sourceAssigned
	// sourcePath: the Nth segment of the URL path.
	sourcePath
	// sourceIP: no key; the client address routes (no_key: source_ip).
	sourceIP
)

func (k sourceKind) String() string {
	switch k {
	case sourceHeader:
		return "header"
	case sourceCookie:
		return "cookie"
	case sourceQuery:
		return "query"
	case sourceAssigned:
		return "assigned"
	case sourcePath:
		return "path"
	case sourceIP:
		return "source_ip"
	}
	return "unknown"
}

// keySource is one parsed "KIND:NAME" spec of configs.Key.Sources.
type keySource struct {
	kind    sourceKind
	name    string
	segment int // path:N
}

// keyBufLen fits a hashed query key (16 hex digits), an assigned key (32 hex
// digits) and an IPv6 address in text.
const keyBufLen = 48

// keyBuf is caller-provided (stack) storage for keys the balancer makes
// itself, so that extracting a key never allocates.
type keyBuf [keyBufLen]byte

// Errors of key extraction. errNoKey is not a client error by itself: the
// balancer assigns a key when configured to. The others are the key rule's
// (configs.CheckKey), which the edges apply too.
var (
	errNoKey       = errors.New("no stickiness key")
	errKeyTooLong  = configs.ErrKeyTooLong
	errKeyControls = configs.ErrKeyControl
	errKeyNotUTF8  = configs.ErrKeyNotUTF8
	// errKeyAmbiguous: a header or query parameter source sent twice
	// with different values (keyExtractor.extract says why).
	errKeyAmbiguous = errors.New("stickiness key sent twice with different values")
	// errKeyPathNotAsSent: a path:N key segment that reads otherwise in
	// the target as sent (keyExtractor.extract says why).
	errKeyPathNotAsSent = errors.New("stickiness key segment of the path reads otherwise as sent than normalized")
	// errKeyPathSeparator: a path read for a path:N key holds a backslash
	// or a semicolon (keyExtractor.extract says why).
	errKeyPathSeparator = errors.New("path of a path stickiness key holds a backslash or a semicolon")
)

// keyExtractor reads the stickiness key of a request from the configured
// sources, in order. It is immutable after newKeyExtractor.
type keyExtractor struct {
	sources   []keySource
	hashQuery bool
	maxLength int
	// assignCookie is the cookie an assigned key is set in: the first
	// cookie source's name. Empty when keys are not assigned.
	assignCookie string
	// byIP routes key-less requests by the client address (no_key: source_ip).
	byIP bool
	// Pre-rendered 400 bodies, so that rejecting a key does not allocate.
	tooLongBody, controlsBody, notUTF8Body, ambiguousBody, pathBody, separatorBody, noKeyBody []byte
}

// newKeyExtractor makes the extractor of a provisioned key section: the
// sources configs parsed, the no-key policy it resolved.
func newKeyExtractor(cfg configs.Key) *keyExtractor {
	e := &keyExtractor{maxLength: cfg.MaxLength, hashQuery: *cfg.HashQuery, byIP: cfg.NoKey == configs.NoKeySourceIP, assignCookie: cfg.AssignCookieName}
	for _, p := range cfg.Parsed {
		src := keySource{name: p.Name, segment: p.Segment}
		switch p.From {
		case configs.KeyFromHeader:
			src.kind = sourceHeader
		case configs.KeyFromCookie:
			src.kind = sourceCookie
		case configs.KeyFromQuery:
			src.kind = sourceQuery
		case configs.KeyFromPath:
			src.kind = sourcePath
		}
		e.sources = append(e.sources, src)
	}
	e.tooLongBody = fmt.Appendf(nil, "bad request: stickiness key longer than %d bytes\n", e.maxLength)
	e.controlsBody = []byte("bad request: stickiness key contains control characters\n")
	e.notUTF8Body = []byte("bad request: stickiness key is not valid UTF-8\n")
	e.ambiguousBody = []byte("bad request: stickiness key sent twice with different values\n")
	e.pathBody = []byte("bad request: the path's stickiness key segment moves under dot segments or an encoded slash\n")
	e.separatorBody = []byte("bad request: the path holds a backslash or a semicolon, which backends read as a separator\n")
	e.noKeyBody = []byte("bad request: no stickiness key (send a ctstickiness header or cookie)\n")
	return e
}

// extract returns the request's stickiness key and where it came from, or
// errNoKey when no source has a non-empty value, or errKeyTooLong /
// errKeyControls / errKeyNotUTF8 / errKeyAmbiguous / errKeyPathNotAsSent /
// errKeyPathSeparator.
// The key aliases req's buffers or buf: it is valid until the request is
// released and buf goes out of scope. It does not allocate but to drop a
// cookie's repeats.
//
// A source sent twice with different values routes by one while a
// backend may read the other (PHP and Django take the last value of a
// parameter, Django of a cookie): a client routed by session A's key
// would be placed in session B on A's owner, a copy of B beside the one
// on B's owner — a split. Different values of a header or a query
// parameter are refused (400); identical repeats pass. A cookie sent
// twice is what browsers do for cookies of one name set on two paths or
// domains, the more specific path first (RFC 6265, 5.4), and refusing it
// would lock such a browser out until its cookies are cleared: the first
// value routes, as Go, PHP, Rack and Express read it, and the backend
// gets that value alone.
func (e *keyExtractor) extract(req *fasthttp.Request, buf *keyBuf) ([]byte, sourceKind, error) {
	for i := range e.sources {
		src := &e.sources[i]
		var v []byte
		switch src.kind {
		case sourceHeader:
			vs := req.Header.PeekAll(src.name)
			if len(vs) > 0 {
				v = vs[0]
			}
			for _, o := range vs[min(1, len(vs)):] {
				if !bytes.Equal(o, v) {
					return nil, src.kind, errKeyAmbiguous
				}
			}
		case sourceCookie:
			v = req.Header.Cookie(src.name)
			if repeatedCookie(&req.Header, src.name, v) {
				// The key moves to the end of the cookie list, copied
				// first: deleting reuses the buffers v aliases.
				first := string(v)
				req.Header.DelCookie(src.name)
				req.Header.SetCookie(src.name, first)
				v = req.Header.Cookie(src.name)
			}
		case sourcePath:
			// The key is read from the path fasthttp normalized (dot
			// segments resolved, percent-encoding decoded, %2F a slash),
			// the target goes to the backend as sent: /s/A/../B/ws would
			// route by B while a backend that does not normalize, or
			// splits before it decodes, reads A — a split. Such a target
			// is refused; dot segments that leave the key segment where
			// it is, and encoded bytes that decode to it, pass.
			// A backslash or a semicolon, encoded or not, is a byte of a
			// segment here and a separator to some backends: IIS reads
			// /s/A\..\B/ws as /s/B/ws, Tomcat and Spring /s/A;x=1/ws as
			// session A and /s/A/..;/../B/ws as /B/ws. Anywhere in the
			// path, before the key segment or after it, or with no key
			// segment at all, it can move the key the backend reads, so
			// it is refused too.
			raw := targetPath(req.Header.RequestURI())
			if holdsSeparator(raw) {
				return nil, src.kind, errKeyPathSeparator
			}
			v = pathSegment(req.URI().Path(), src.segment)
			if len(v) > 0 && !decodesTo(pathSegment(raw, src.segment), v) {
				return nil, src.kind, errKeyPathNotAsSent
			}
		case sourceQuery:
			v = req.URI().QueryArgs().Peek(src.name)
			for k, o := range req.URI().QueryArgs().All() {
				if string(k) == src.name && !bytes.Equal(o, v) {
					return nil, src.kind, errKeyAmbiguous
				}
			}
			if len(v) > 0 && e.hashQuery {
				// A query parameter is usually a credential (a join token):
				// it ends up in the ctstickiness header the edge gets, in
				// /api/lookup answers and in debug logs. Hashing keeps the
				// token itself out of all of them while still mapping one
				// token to one key on every balancer. xxhash is not a MAC:
				// this hides high-entropy tokens, it does not protect
				// guessable ones. No length limit applies to the raw token
				// (JWTs are often longer than 256 bytes); the hash has a
				// fixed length and fasthttp bounds the URI itself.
				// The edge never re-reads the parameter for routing: it gets
				// the resolved key in ctstickiness (and a repeat with another
				// value, which a backend could read instead, was refused).
				var sum [8]byte
				binary.BigEndian.PutUint64(sum[:], xxhash.Sum64(v))
				hex.Encode(buf[:16], sum[:])
				return buf[:16], sourceQuery, nil
			}
		}
		// The edge reads the key from the ctstickiness header, whose reader
		// drops blanks at either end, as the balancer's own header and
		// cookie readers do; a query or path key keeps them. Routed with
		// them, "room " went where "room " hashes but joined session "room"
		// on the edge (a 421 hop away), and a key of blanks reached the edge
		// empty, which then took the client's ctstickiness cookie for it.
		v = bytes.Trim(v, " ")
		if len(v) == 0 {
			continue
		}
		if err := e.check(v); err != nil {
			return nil, src.kind, err
		}
		return v, src.kind, nil
	}
	return nil, 0, errNoKey
}

// check rejects keys the balancer will not route with: the key rule
// edges apply too (configs.CheckKey, which says why), so a key routed here
// is one the edge accepts. Control characters, forwarded in the
// ctstickiness header, would also smuggle header syntax to the edge.
func (e *keyExtractor) check(key []byte) error {
	return configs.CheckKey(key, e.maxLength)
}

// rejectBody is the short text body of the 400 answer for err.
func (e *keyExtractor) rejectBody(err error) []byte {
	switch err {
	case errKeyTooLong:
		return e.tooLongBody
	case errKeyControls:
		return e.controlsBody
	case errKeyNotUTF8:
		return e.notUTF8Body
	case errKeyAmbiguous:
		return e.ambiguousBody
	case errKeyPathNotAsSent:
		return e.pathBody
	case errKeyPathSeparator:
		return e.separatorBody
	}
	return e.noKeyBody
}

// assignKey fills buf with a new random key: 128 bits from crypto/rand, hex.
// Unpredictable so that nobody can guess another browser's key and land in
// its session.
func assignKey(buf *keyBuf) []byte {
	var raw [16]byte
	_, _ = rand.Read(raw[:]) // never fails since Go 1.24
	hex.Encode(buf[:], raw[:])
	return buf[:32]
}

// repeatedCookie reports whether h holds cookie name more than once with a
// value other than first, its first.
func repeatedCookie(h *fasthttp.RequestHeader, name string, first []byte) bool {
	seen := false
	for k, v := range h.Cookies() {
		if string(k) != name {
			continue
		}
		if seen && !bytes.Equal(v, first) {
			return true
		}
		seen = true
	}
	return false
}

// pathSegment returns the nth (from 1) non-empty segment of path, or nil.
func pathSegment(path []byte, n int) []byte {
	for len(path) > 0 {
		if path[0] == '/' {
			path = path[1:]
			continue
		}
		end := bytes.IndexByte(path, '/')
		if end < 0 {
			end = len(path)
		}
		if n--; n == 0 {
			return path[:end]
		}
		path = path[end:]
	}
	return nil
}

// targetPath is the path of a request target as sent: an origin-form
// target up to its query, an absolute-form one's after its authority.
func targetPath(target []byte) []byte {
	if len(target) > 0 && target[0] != '/' {
		i := bytes.Index(target, []byte("://"))
		if i < 0 {
			return target // "*"
		}
		target = target[i+3:]
		if i = bytes.IndexByte(target, '/'); i < 0 {
			return nil
		}
		target = target[i:]
	}
	if i := bytes.IndexAny(target, "?#"); i >= 0 {
		target = target[:i]
	}
	return target
}

// decodedAt is the byte raw percent-decodes to at i, and where the next
// one begins.
func decodedAt(raw []byte, i int) (c byte, next int) {
	if raw[i] == '%' && i+2 < len(raw) {
		if hi, lo := unhex(raw[i+1]), unhex(raw[i+2]); hi >= 0 && lo >= 0 {
			return byte(hi<<4 | lo), i + 3
		}
	}
	return raw[i], i + 1
}

// decodesTo reports whether raw, percent-decoded, is decoded.
func decodesTo(raw, decoded []byte) bool {
	j := 0
	for i := 0; i < len(raw); {
		var c byte
		c, i = decodedAt(raw, i)
		if j == len(decoded) || decoded[j] != c {
			return false
		}
		j++
	}
	return j == len(decoded)
}

// holdsSeparator reports whether raw, percent-decoded or not, holds a
// backslash or a semicolon.
func holdsSeparator(raw []byte) bool {
	for i := 0; i < len(raw); {
		var c byte
		c, i = decodedAt(raw, i)
		if c == '\\' || c == ';' {
			return true
		}
	}
	return false
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

// ipKey formats the client address into buf as the key of a key-less
// request (no_key: source_ip).
func ipKey(ip net.IP, buf *keyBuf) []byte {
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return nil
	}
	return addr.Unmap().AppendTo(buf[:0])
}
