package sessions

import (
	"errors"

	"github.com/valyala/fasthttp"
)

// keyName is the header, then the cookie, a session key is read from. The
// balancer always forwards the key it routed with in this header, whatever
// its source, so behind a balancer the header is the key.
const keyName = "ctstickiness"

// maxKeyLength bounds a session key (DESIGN.md: 256 bytes, the balancer's
// default). Keys are held in memory per session and listed on the admin
// API, so an unbounded key would let one client grow both.
const maxKeyLength = 256

var (
	errKeyMissing = errors.New("missing session key: send header or cookie " + keyName)
	errKeyTooLong = errors.New("session key longer than 256 bytes")
	errKeyControl = errors.New("session key contains a control character")
)

// sessionKey returns the request's session key: the ctstickiness header,
// else the ctstickiness cookie. The slice aliases the request.
func sessionKey(h *fasthttp.RequestHeader) ([]byte, error) {
	key := h.Peek(keyName)
	if len(key) == 0 {
		key = h.Cookie(keyName)
	}
	if len(key) == 0 {
		return nil, errKeyMissing
	}
	if len(key) > maxKeyLength {
		return nil, errKeyTooLong
	}
	// Control characters are refused because keys end up in logs, JSON and
	// gossip pins, where a newline or escape could forge or hide entries.
	for _, c := range key {
		if c < 0x20 || c == 0x7f {
			return nil, errKeyControl
		}
	}
	return key, nil
}
