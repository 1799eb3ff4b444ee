package health

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// AdminAccess is the rule every admin port (balancer, edge, gslb) follows.
// Three kinds of caller:
//
//   - the operator: the bearer token of *.admin.token_file, or — when no
//     token is configured, which configs allows only on loopback — anyone
//     on this host who names it by a loopback address (not a name: a web
//     page that rebinds its own domain to 127.0.0.1 must not get in);
//   - a peer: another node of the cluster, proving it with a request signed
//     by the cluster's key (configs.HeaderPeer). A peer may read, never change:
//     a leaked peer credential drains nothing;
//   - anyone else: nothing but /healthz, which is not wrapped.
//
// Changes (Write: every method but GET and HEAD) also need proof that no
// other web site sent them (CSRF): the bearer token, or the header
// X-Ringlb-Admin: 1, which a cross-origin page cannot send without a CORS
// preflight that no admin port answers; and when the browser names the
// page's origin (Origin), it must be this very host.
type AdminAccess struct {
	// Token returns the operator's bearer token; empty: none configured.
	Token func() []byte
	// Keyring returns the cluster's key for peers' signed reads; nil or a
	// keyring without keys: no peer reads.
	Keyring func() *Keyring
}

// maxPeerReadBody bounds what a signed read may carry: reads have no body.
const maxPeerReadBody = 0

// Read allows h to the operator and to peers.
func (a AdminAccess) Read(h http.Handler) http.Handler { return a.wrap(h, false) }

// Write allows h to the operator only, with the CSRF rule.
func (a AdminAccess) Write(h http.Handler) http.Handler { return a.wrap(h, true) }

func (a AdminAccess) wrap(h http.Handler, write bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caller, code, msg := a.check(r, write || (r.Method != http.MethodGet && r.Method != http.MethodHead))
		if code != 0 {
			if code == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="ringlb"`)
			}
			WriteJSON(w, code, map[string]string{"error": msg})
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, caller)))
	})
}

// check returns who is calling, or the status and message that refuse it.
// Messages are constants: nothing of the request is echoed.
func (a AdminAccess) check(r *http.Request, write bool) (caller string, code int, msg string) {
	var token []byte
	if a.Token != nil {
		token = a.Token()
	}
	bearer, hasBearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	operator := false
	switch {
	case len(token) > 0:
		// Constant time: the token must not leak through timing.
		operator = hasBearer && subtle.ConstantTimeCompare([]byte(bearer), token) == 1
		caller = "token"
	default:
		operator = loopbackHost(r.Host)
		caller = "loopback"
	}
	if write {
		switch {
		case !operator && len(token) > 0:
			return "", http.StatusUnauthorized, "missing or wrong bearer token"
		case !operator:
			return "", http.StatusForbidden, "without a token the admin API answers only requests addressed to a loopback IP"
		case !hasBearer && r.Header.Get(configs.HeaderAdmin) != "1":
			return "", http.StatusForbidden, "a change needs the bearer token or the header X-Ringlb-Admin: 1"
		case r.Header.Get("Sec-Fetch-Site") == "cross-site":
			return "", http.StatusForbidden, "cross-site request refused"
		}
		if origin := r.Header.Get("Origin"); origin != "" && !sameOrigin(origin, r.Host) {
			return "", http.StatusForbidden, "cross-origin request refused"
		}
		return caller, 0, ""
	}
	if operator {
		return caller, 0, ""
	}
	if a.Keyring != nil && r.Header.Get(configs.HeaderPeer) != "" && r.ContentLength <= maxPeerReadBody {
		if node, err := a.Keyring().VerifyRequest(r.Header.Get(configs.HeaderPeer), r.Method, r.URL.RequestURI(), nil, time.Now()); err == nil {
			return "peer:" + node, 0, ""
		}
		return "", http.StatusUnauthorized, "peer signature refused"
	}
	if len(token) > 0 {
		return "", http.StatusUnauthorized, "missing or wrong bearer token"
	}
	return "", http.StatusForbidden, "without a token the admin API answers only requests addressed to a loopback IP"
}

// WriteJSON answers an admin request with v as indented JSON.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

type callerKey struct{}

// AdminCaller says who made an admin request that AdminAccess let through:
// "token", "loopback" or "peer:NODE".
func AdminCaller(ctx context.Context) string {
	c, _ := ctx.Value(callerKey{}).(string)
	return c
}

// loopbackHost reports whether a Host header names this host by a loopback
// IP ("localhost" included: browsers resolve it to loopback themselves).
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// sameOrigin reports whether a browser's Origin is the admin port itself.
func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && strings.EqualFold(u.Host, host)
}
