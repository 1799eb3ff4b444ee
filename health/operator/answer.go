package operator

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// A read another node signed (configs.HeaderPeer, for this node) is
// answered signed (configs.HeaderPeerAnswer, health.Keyring.SignAnswer):
// the signature covers the status and the whole body, so the answer is
// built whole before any of it is sent. Only a node holding the cluster
// key makes such a read, but its requests can be seen on the wire and
// sent again within the signature's window; so what is held is bounded,
// each answer and all of them together.
//
// So is a change another node signed for this one (a balancer's dashboard
// forwarding the operator's drain or serve mode, over its method, URI and
// body): answered signed whether the rule lets it through or refuses it,
// so that its sender tells this node's answer from one made on the way.
// The signature asks for that and grants nothing: the change is the
// operator's credential's to make, as without it.
const (
	// maxSignedAnswer bounds one answer held to be signed: what a reader
	// takes at most (a balancer's dashboard 4 MiB, a gslb node 1 MiB). A
	// larger one goes out unsigned as it comes, which no reader announcing
	// health.PeerSigningAnswer takes, as none of them would read it whole.
	maxSignedAnswer = 4 << 20
	// signedAnswerSlots bounds the answers held at once, a port's;
	// beyond, a read waits for a slot while its reader waits (gone: 503).
	// Only a holder of the key, or whoever replays one of its reads
	// within the window, takes one; a read's answer is held while it is
	// built and sent (a reader that does not read: admin.request_timeout).
	signedAnswerSlots = 8
	// maxPeerChangeBody bounds the body of a change read to check its
	// signature, before the rule has looked at the caller: no more than
	// the server would read of a body left unread to keep the connection.
	// A peer's change with a larger body, or none announced, is answered
	// unsigned (the dashboard forwards changes without one).
	maxPeerChangeBody = 64 << 10
)

// answerSlots are the port's slots for signed answers (nil: not bounded,
// a test of the rule alone).
func (n *Node) answerSlots() chan struct{} {
	if n == nil {
		return nil
	}
	return n.answers
}

// peerReader is the node whose read r is, signed for this one, or "" when
// r is not such a read: caller, when Access let r through as a peer, or
// the signature checked here when it let r through as the operator (a
// peer on the loopback of a token-less port).
func (a Access) peerReader(r *http.Request, caller string) string {
	if node, ok := strings.CutPrefix(caller, CallerPeerPrefix); ok {
		return node
	}
	sig := r.Header.Get(configs.HeaderPeer)
	if sig == "" || a.Keyring == nil || r.ContentLength > maxPeerReadBody {
		return ""
	}
	node, err := a.Keyring().VerifyRequest(sig, a.Self, r.Method, r.URL.RequestURI(), nil, time.Now())
	if err != nil {
		return ""
	}
	return node
}

// peerChanger is the node whose change r is, signed for this one over its
// method, URI and body, or "" when r is not such a change. r's body, when
// it has one, is read to check it and left for the handler as it came.
func (a Access) peerChanger(r *http.Request) string {
	sig := r.Header.Get(configs.HeaderPeer)
	if sig == "" || a.Keyring == nil || r.ContentLength < 0 || r.ContentLength > maxPeerChangeBody {
		return ""
	}
	var body []byte
	if r.ContentLength > 0 {
		body = make([]byte, r.ContentLength)
		n, err := io.ReadFull(r.Body, body)
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(body[:n]), r.Body), r.Body}
		if err != nil {
			return ""
		}
	}
	node, err := a.Keyring().VerifyRequest(sig, a.Self, r.Method, r.URL.RequestURI(), body, time.Now())
	if err != nil {
		return ""
	}
	return node
}

// serveSigned answers r, a read or a change the node reader signed for
// this one, with h's answer, signed for it.
func (a Access) serveSigned(w http.ResponseWriter, r *http.Request, h http.Handler, reader string) {
	if slots := a.Node.answerSlots(); slots != nil {
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
		case <-r.Context().Done():
			refuse(w, http.StatusServiceUnavailable, "busy: too many signed answers being sent", false)
			return
		}
	}
	// The signature is over the body as sent: no compression, which the
	// reader's client would undo before checking it.
	r = r.Clone(r.Context())
	r.Header.Del("Accept-Encoding")
	aw := &answerWriter{w: w}
	h.ServeHTTP(aw, r)
	if aw.over {
		return
	}
	status := aw.status
	if status == 0 {
		status = http.StatusOK
	}
	body := aw.buf.Bytes()
	if r.Method == http.MethodHead || !bodyAllowed(status) {
		body = nil
	}
	if sig := a.Keyring().SignAnswer(a.Self, reader, r.Header.Get(configs.HeaderPeer), status, body); sig != "" {
		w.Header().Set(configs.HeaderPeerAnswer, sig)
	}
	if bodyAllowed(status) {
		w.Header().Set("Content-Length", strconv.Itoa(aw.buf.Len()))
	}
	w.WriteHeader(status)
	if len(body) > 0 {
		_, _ = w.Write(body)
	}
}

// bodyAllowed reports whether an answer of status carries a body.
func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// answerWriter holds a handler's answer (up to maxSignedAnswer) for
// serveSigned; beyond, it sends it on unsigned.
type answerWriter struct {
	w      http.ResponseWriter
	status int
	buf    bytes.Buffer
	over   bool
}

func (a *answerWriter) Header() http.Header { return a.w.Header() }

func (a *answerWriter) WriteHeader(code int) {
	if a.status == 0 && code >= 200 {
		a.status = code
	}
}

func (a *answerWriter) Write(p []byte) (int, error) {
	if a.status == 0 {
		a.status = http.StatusOK
	}
	if a.over {
		return a.w.Write(p)
	}
	if a.buf.Len()+len(p) <= maxSignedAnswer {
		return a.buf.Write(p)
	}
	a.over = true
	a.w.WriteHeader(a.status)
	if _, err := a.w.Write(a.buf.Bytes()); err != nil {
		return 0, err
	}
	a.buf = bytes.Buffer{}
	return a.w.Write(p)
}
