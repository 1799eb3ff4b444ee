package configs

import (
	"bytes"
	"errors"
	"unicode/utf8"
)

// MaxKeyLength is the largest balancer.key.max_length: a key of up to
// 4 KiB already costs more to hash and to carry in every request than any
// real session id; above that it is an abuse vector (header bloat, log
// bloat), so the limit itself is bounded.
const MaxKeyLength = 4096

// Errors of CheckKey, for callers to branch on and answer 400 with.
var (
	ErrKeyEmpty   = errors.New("stickiness key is empty")
	ErrKeyTooLong = errors.New("stickiness key too long")
	ErrKeyControl = errors.New("stickiness key contains control characters")
	ErrKeyNotUTF8 = errors.New("stickiness key is not valid UTF-8")
)

// CheckKey says whether key is a valid stickiness key: 1 to maxLength
// bytes (validated: 1 to MaxKeyLength) of UTF-8 without control characters
// (C0, DEL, C1). Balancers check
// it before routing and edges before joining, with the same maxLength
// (balancer.key.max_length), so every key a balancer routes is one its
// edges accept. It does not allocate.
//
// Why each rule: the length bounds what a client makes every balancer
// hash and forward and every edge hold per session. Keys end up in logs,
// JSON (/api/sessions, the v1 welcome, /api/lookup) and gossip pins, where
// a control character could forge or hide entries, and where invalid
// UTF-8 is rewritten to U+FFFD: two different keys would then show as one
// and an operator could not tell two sessions apart.
func CheckKey(key []byte, maxLength int) error {
	switch {
	case len(key) == 0:
		return ErrKeyEmpty
	case len(key) > maxLength:
		return ErrKeyTooLong
	}
	for i := 0; i < len(key); {
		c := key[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return ErrKeyControl
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(key[i:])
		if r == utf8.RuneError && size == 1 {
			return ErrKeyNotUTF8
		}
		if r <= 0x9f { // C1 controls, U+0080–U+009F (U+009B is a terminal's CSI)
			return ErrKeyControl
		}
		i += size
	}
	return nil
}

// ErrCrossOriginCookieKey is why CrossOriginCookieKey's upgrades are refused.
var ErrCrossOriginCookieKey = errors.New("a WebSocket opened by a page of another origin carries the session key only in a cookie; send it in the query or a join token")

// CrossOriginCookieKey reports whether a WebSocket upgrade whose stickiness
// key came from a cookie was opened by a page of another origin, by its
// Origin header and its Host, and must be refused. A browser attaches the
// cookie to whatever page opens the socket — for a SameSite=Lax cookie,
// any page of the same site, another subdomain of its domain included —
// so the key is then no secret the page proved it knew, and such a page
// would join, read and write the victim's session. (A page of another
// port of the host reads the cookie itself: no check helps there.) A key
// the page sends itself (a query parameter, a join token) is not ambient
// and is not held to this. Origin "null" (sandboxed frames, file: pages)
// is another origin; no Origin (no browser) is none. The scheme is not
// compared: a proxy terminating TLS in front is the same origin. It does
// not allocate.
func CrossOriginCookieKey(origin, host []byte) bool {
	if len(origin) == 0 {
		return false
	}
	rest, ok := bytes.CutPrefix(origin, []byte("https://"))
	if !ok {
		if rest, ok = bytes.CutPrefix(origin, []byte("http://")); !ok {
			return true
		}
	}
	return !bytes.EqualFold(rest, host)
}
