package sessions

import (
	"errors"
	"fmt"

	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/configs"
)

// keyName is the header, then the cookie, a session key is read from. The
// balancer always forwards the key it routed with in this header, whatever
// its source, so behind a balancer the header is the key.
const keyName = "ctstickiness"

// maxKeyLength bounds the keys edges exchange among themselves (claims,
// hand-offs) and the session a token may name: no edge's configuration
// accepts a longer key on a join (configs.MaxKeyLength bounds
// balancer.key.max_length). Joins are held to the configured limit
// (Server.keyMaxLength).
const maxKeyLength = configs.MaxKeyLength

var errKeyMissing = errors.New("missing session key: send header or cookie " + keyName)

// sessionKey returns the request's session key: the ctstickiness header,
// else the ctstickiness cookie, checked against the key rule the balancers
// route by (configs.CheckKey, which says why each part of it matters) with
// the same maxLength (balancer.key.max_length). The slice aliases the
// request.
func sessionKey(h *fasthttp.RequestHeader, maxLength int) ([]byte, error) {
	key := h.Peek(keyName)
	if len(key) == 0 {
		key = h.Cookie(keyName)
	}
	if len(key) == 0 {
		return nil, errKeyMissing
	}
	if err := configs.CheckKey(key, maxLength); err != nil {
		if errors.Is(err, configs.ErrKeyTooLong) {
			return nil, fmt.Errorf("%w: more than %d bytes", err, maxLength)
		}
		return nil, err
	}
	return key, nil
}
