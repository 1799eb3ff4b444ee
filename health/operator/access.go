package operator

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
)

// Access is the rule every admin port (balancer, edge, gslb) follows.
// Four kinds of caller:
//
//   - the operator by token: the bearer token of *.admin.token_file (scripts);
//   - the operator by login: a session cookie from POST /login, for a user of
//     *.admin.users_file (browsers);
//   - the operator by address: when neither a token nor a user is configured,
//     which configs allows only on loopback, this node's user or root on this
//     host (ownUser: the kernel says who holds the connection's other end)
//     naming it by a loopback address (not a name: a web page that rebinds
//     its own domain to 127.0.0.1 must not get in);
//   - a peer: another node of the cluster, proving it with a request signed
//     by the cluster's key (configs.HeaderPeer). A peer may read, never change:
//     a leaked peer credential drains nothing. A read signed for this node
//     is answered signed (configs.HeaderPeerAnswer, answer.go), whoever
//     else it passes for; so is a change signed for it, which only the
//     operator's credential beside the signature lets through (a balancer's
//     dashboard forwards the operator's changes so);
//   - anyone else: nothing but /healthz and the login page, which are not
//     wrapped.
//
// Changes (Write: every method but GET and HEAD) also need proof that no
// other web site sent them (CSRF): the bearer token, or the header
// X-Ringlb-Admin: 1, which a cross-origin page cannot send without a CORS
// preflight that no admin port answers; and when the browser names the
// page's origin (Origin), it must be this very host. Every change that gets
// through is an audit record (Audit): who, from where, what, and the status
// it was answered with.
type Access struct {
	// Token returns the operator's bearer token; empty: none configured.
	Token func() []byte
	// MetricsToken returns the scrape-only bearer token
	// (*.admin.metrics_token_file), which Metrics takes and nothing else
	// does; nil or empty: none configured.
	MetricsToken func() []byte
	// Keyring returns the cluster's key for peers' signed reads; nil or a
	// keyring without keys: no peer reads.
	Keyring func() *health.Keyring
	// Self is this node's name in the cluster: a peer's read must be
	// signed for it.
	Self string
	// Node holds the logins and the audit log; nil: neither (tests of the
	// rule alone).
	Node *Node
}

// maxPeerReadBody bounds what a signed read may carry: reads have no body.
const maxPeerReadBody = 0

// Read allows h to the operator and to peers.
func (a Access) Read(h http.Handler) http.Handler { return a.wrap(h, false) }

// Metrics allows h (GET /metrics) to whom Read allows and to the
// scrape-only token: Prometheus holds that one, not the operator's, so a
// scraper's credential reads figures and drains nothing.
func (a Access) Metrics(h http.Handler) http.Handler {
	read := a.Read(h)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var token []byte
		if a.MetricsToken != nil && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			token = a.MetricsToken()
		}
		if bearer, ok := bearerOf(r); ok && tokenIs(bearer, token) {
			h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, CallerMetrics)))
			return
		}
		read.ServeHTTP(w, r)
	})
}

// Write allows h to the operator only, with the CSRF rule, and records it
// in the audit log.
func (a Access) Write(h http.Handler) http.Handler { return a.wrap(h, true) }

func (a Access) wrap(h http.Handler, write bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		write := write || (r.Method != http.MethodGet && r.Method != http.MethodHead)
		if !write {
			a.serve(w, r, h, false)
			return
		}
		// A change a peer forwarded signed for this node (a balancer's
		// dashboard, beside the operator's credential) is answered signed,
		// let through or refused; the signature lets nothing through.
		if changer := a.peerChanger(r); changer != "" {
			a.serveSigned(w, r, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { a.serve(w, r, h, true) }), changer)
			return
		}
		a.serve(w, r, h, true)
	})
}

// serve answers r with h when the rule lets its caller through, else with
// the refusal.
func (a Access) serve(w http.ResponseWriter, r *http.Request, h http.Handler, write bool) {
	caller, code, msg := a.check(r, write)
	if code != 0 {
		// Logging in again leaves a planted cookie where it is: the
		// dashboard shows the message instead of going to the login.
		refuse(w, code, msg, a.Node.loginEnabled() && msg != ambiguousCookies)
		return
	}
	if !write {
		r = r.WithContext(context.WithValue(r.Context(), callerKey{}, caller))
		if reader := a.peerReader(r, caller); reader != "" {
			a.serveSigned(w, r, h, reader)
			return
		}
		h.ServeHTTP(w, r)
		return
	}
	if a.Node == nil {
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, caller)))
		return
	}
	// A change: the handler names what it did (Describe), this wrapper
	// knows who and how it ended; each change is one record.
	rec := &Record{At: time.Now().UTC(), Who: caller, For: onBehalf(r, caller), Remote: r.RemoteAddr,
		Action: r.Method + " " + r.URL.Path}
	ctx := context.WithValue(context.WithValue(r.Context(), callerKey{}, caller), recordKey{}, rec)
	// The record is kept (and synced) before the answer's first byte: an
	// answer beyond net/http's buffer goes out while the handler still
	// runs, and a client reading the audit log once answered must find it.
	sw := &statusWriter{ResponseWriter: w, answering: func(code int) {
		rec.Result = code
		a.Node.Audit.Add(*rec)
	}}
	defer sw.answer(http.StatusOK) // a handler that wrote nothing
	h.ServeHTTP(sw, r.WithContext(ctx))
}

// refuse answers a request the rule refuses. Messages are constants: nothing
// of the request is echoed. With logins configured a 401 names the login
// page, so the dashboard can send the browser there.
func refuse(w http.ResponseWriter, code int, msg string, login bool) {
	body := map[string]string{"error": msg}
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="ringlb"`)
		if login {
			body["login"] = PathLogin
		}
	}
	WriteJSON(w, code, body)
}

// bearerOf returns the request's bearer token, if it has one.
func bearerOf(r *http.Request) (string, bool) {
	return strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
}

// tokenIs reports whether bearer is token, a configured (non-empty) one,
// in constant time: a token must not leak through timing.
func tokenIs(bearer string, token []byte) bool {
	return len(token) > 0 && subtle.ConstantTimeCompare([]byte(bearer), token) == 1
}

// check returns who is calling, or the status and message that refuse it.
func (a Access) check(r *http.Request, write bool) (caller string, code int, msg string) {
	var token []byte
	if a.Token != nil {
		token = a.Token()
	}
	bearer, hasBearer := bearerOf(r)
	logins := a.Node.loginEnabled()
	operator := false
	switch {
	case hasBearer && tokenIs(bearer, token):
		operator, caller = true, CallerToken
	case logins:
		if a.Node.Logins.ambiguous(r) {
			return "", http.StatusUnauthorized, ambiguousCookies
		}
		if user, ok := a.Node.Logins.user(r); ok {
			operator, caller = true, CallerUserPrefix+user
		}
	case len(token) == 0:
		// Neither a token nor a user: the loopback rule.
		operator, caller = loopbackHost(r.Host) && ownUser(r), CallerLoopback
	}
	if write {
		switch {
		case !operator && (len(token) > 0 || logins):
			return "", http.StatusUnauthorized, "missing or wrong bearer token, and no login session"
		case !operator:
			return "", http.StatusForbidden, refusedWithoutToken
		// The token is the proof only when it is the token: a wrong one
		// beside a session cookie proves nothing of where the request came
		// from.
		case caller != CallerToken && r.Header.Get(configs.HeaderAdmin) != "1":
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
		if node, err := a.Keyring().VerifyRequest(r.Header.Get(configs.HeaderPeer), a.Self, r.Method, r.URL.RequestURI(), nil, time.Now()); err == nil {
			return CallerPeerPrefix + node, 0, ""
		}
		return "", http.StatusUnauthorized, "peer signature refused"
	}
	if len(token) > 0 || logins {
		return "", http.StatusUnauthorized, "missing or wrong bearer token, and no login session"
	}
	return "", http.StatusForbidden, refusedWithoutToken
}

// Callers, as Caller reports them and audit records name them.
const (
	CallerToken      = "token"
	CallerMetrics    = "metrics token"
	CallerLoopback   = "loopback"
	CallerUserPrefix = "user:"
	CallerPeerPrefix = "peer:"
)

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

// Caller says who made an admin request that Access let through: "token",
// "loopback", "user:NAME" or "peer:NODE".
func Caller(ctx context.Context) string {
	c, _ := ctx.Value(callerKey{}).(string)
	return c
}

// CallerUser is the logged-in user behind a request ("" for any other
// caller).
func CallerUser(ctx context.Context) string {
	u, _ := strings.CutPrefix(Caller(ctx), CallerUserPrefix)
	if u == Caller(ctx) {
		return ""
	}
	return u
}

type recordKey struct{}

// Describe names what an admin change did, for its audit record: the
// action ("drain", "serve_mode", …) and its target (an edge, a pool member).
// Outside a change Access let through it does nothing.
func Describe(ctx context.Context, action, target string) {
	if rec, ok := ctx.Value(recordKey{}).(*Record); ok {
		rec.Action, rec.Target = action, target
	}
}

// onBehalf is the user a peer's forwarded change was made for
// (configs.HeaderOnBehalf), believed only from a caller holding the token —
// the operator's own credential, which a balancer forwards for a logged-in
// user; it annotates the audit record and grants nothing.
func onBehalf(r *http.Request, caller string) string {
	v := r.Header.Get(configs.HeaderOnBehalf)
	if caller != CallerToken && caller != CallerLoopback || v == "" || len(v) > 128 {
		return ""
	}
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-_:@ ", c)) {
			return ""
		}
	}
	return v
}

// statusWriter tells answering the status a handler answers with, once,
// before any of the answer reaches the client.
type statusWriter struct {
	http.ResponseWriter
	answering func(code int)
	code      int
}

// answer calls answering with code, unless a status was already given.
func (s *statusWriter) answer(code int) {
	if s.code == 0 {
		s.code = code
		s.answering(code)
	}
}

func (s *statusWriter) WriteHeader(code int) {
	// A 1xx is not the answer: its status is still to come.
	if code >= http.StatusOK {
		s.answer(code)
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	s.answer(http.StatusOK)
	return s.ResponseWriter.Write(b)
}

// refusedWithoutToken answers whoever the loopback rule does not let in.
const refusedWithoutToken = "without a token the admin API answers only requests addressed to a loopback IP, from this node's user or root on this host"

// ownUser reports whether r comes over a connection whose other end, on
// this host, belongs to this process's user or root (peerUID): the
// loopback rule's caller. Every local user can reach a loopback port; only
// these two could read the node's token or memory anyway.
func ownUser(r *http.Request) bool {
	la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	local, err := netip.ParseAddrPort(la.String())
	if err != nil {
		return false
	}
	remote, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil || !remote.Addr().Unmap().IsLoopback() {
		return false
	}
	uid, err := peerUID(local, remote)
	return err == nil && (uid == 0 || int(uid) == os.Geteuid())
}

// loopbackHost reports whether a Host header names this host by a loopback
// IP ("localhost" included: browsers resolve it to loopback themselves).
func loopbackHost(host string) bool {
	name, ip, ok := requestHost(host)
	return ok && (name == "localhost" || ip.IsLoopback())
}

// requestHost is what a request's Host names, by configs.SplitHost's one
// rule (the port set aside): an IP address (ip valid), or a host name, lower
// case, as sent (a trailing dot kept). ok is false for a Host that is
// neither.
func requestHost(hostport string) (name string, ip netip.Addr, ok bool) {
	host, _, err := configs.SplitHost(hostport)
	if err != nil {
		return "", netip.Addr{}, false
	}
	if ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")); err == nil {
		return "", ip.Unmap(), true
	}
	return strings.ToLower(host), netip.Addr{}, true
}

// sameOrigin reports whether a browser's Origin is the admin port itself.
func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && strings.EqualFold(u.Host, host)
}
