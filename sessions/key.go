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
const keyName = configs.HeaderKey

// maxKeyLength bounds a session key on an edge: a join's, those edges
// exchange (claims, hand-offs) and the session a token may name. It is the
// most any balancer may be configured to pass (balancer.key.max_length is
// at most configs.MaxKeyLength), so no setting can make an edge refuse a
// key its balancers route; the balancer holds clients to its own limit.
const maxKeyLength = configs.MaxKeyLength

var errKeyMissing = errors.New("missing session key: send header or cookie " + keyName)

// sessionKey returns the request's session key: the ctstickiness header,
// else the ctstickiness cookie, checked against the key rule the balancers
// route by (configs.CheckKey, which says why each part of it matters) up to
// maxKeyLength. The slice aliases the request.
func sessionKey(h *fasthttp.RequestHeader) ([]byte, error) {
	const maxLength = maxKeyLength
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
