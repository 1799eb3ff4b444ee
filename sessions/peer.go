package sessions

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
)

// The /_ringlb/ paths are edge-to-edge; balancers never proxy that prefix,
// and edges believe them only when signed with the cluster's key
// (configs.HeaderPeer) by the edge they name — never because of the address
// they come from: a request smuggled through a proxy, or sent by any host of
// the network, must not claim or install a session.
const (
	pathClaim     = configs.PathClaim
	pathHandoff   = configs.PathHandoff
	pathReplicate = configs.PathReplicate
	headerOwner   = configs.HeaderOwner
	headerOwnerAt = configs.HeaderOwnerURL
	headerSkip    = configs.HeaderSkip
	headerClaimBy = configs.HeaderClaimBy
	argClaimGone  = configs.ArgClaimGone
	argHanded     = configs.ArgClaimHanded
	argHandedAt   = configs.ArgClaimHandedAt
	argClaimNonce = configs.ArgClaimNonce
)

// peerTimeout bounds one edge-to-edge request (claim). A peer that does not
// answer in time is taken for dead: its sessions are reconnecting anyway.
const peerTimeout = 500 * time.Millisecond

// handoffTimeout bounds one hand-off request of a usual batch
// (maxHandoffBytes); a longer one has handoffTime.
const handoffTimeout = 5 * time.Second

// handoffMinRate is the slowest link between edges a hand-off is given
// time for: 4 Mbit/s. A session larger than a batch (edge.history raised
// for large documents) comes alone, and crosses in its size's time: with
// handoffTimeout for every size, one over 60 MiB at 100 Mbit/s timed out,
// was sent again cut to what every edge reads, and resumes from before its
// newest msgs were reset (TestDrainGivesALargeHandOffItsTime).
const handoffMinRate = 512 << 10 // bytes a second

// handoffTime bounds a hand-off request whose body is n bytes long: its
// sender's whole request, its new owner's read of it and the body slot it
// holds there.
func handoffTime(n int) time.Duration {
	return max(handoffTimeout, time.Duration(n/handoffMinRate+1)*time.Second)
}

// handoffSession is one session in a hand-off: its ringlb.v1 state and the
// msg envelopes of its history, oldest first.
type handoffSession struct {
	Key   string `json:"key"`
	Epoch string `json:"epoch"`
	Seq   uint64 `json:"seq"`
	// Term is the session's incarnation count (replication.go); absent
	// from an edge that predates replication: 1.
	Term uint64 `json:"term,omitempty"`
	// History: null for a seq with no msg (lost with a crashed owner).
	History []json.RawMessage `json:"history"`
}

type handoffRequest struct {
	From     string           `json:"from"`
	Sessions []handoffSession `json:"sessions"`
}

// appendJSON appends r as json.Marshal writes it, byte for byte, without
// checking and compacting each history envelope again as json.Marshal does
// with a RawMessage: they are this edge's own frames. A drain encodes
// batches of up to 2 MiB (BenchmarkHandoffEncode, 26 sessions of 1,000
// msgs: 5.6 ms with json.Marshal, 0.73 ms so).
func (r *handoffRequest) appendJSON(dst []byte) []byte {
	// Grown once: the envelopes, a comma each, and room for the rest.
	n := 32 + 2*len(r.From)
	for i := range r.Sessions {
		hs := &r.Sessions[i]
		n += 96 + 2*len(hs.Key) + 2*len(hs.Epoch)
		for _, env := range hs.History {
			n += len(env) + 5 // a comma, or "null" for a lost seq
		}
	}
	dst = slices.Grow(dst, n)
	dst = append(dst, `{"from":`...)
	dst = appendJSONString(dst, r.From)
	dst = append(dst, `,"sessions":`...)
	if r.Sessions == nil {
		return append(dst, "null}"...)
	}
	dst = append(dst, '[')
	for i := range r.Sessions {
		hs := &r.Sessions[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"key":`...)
		dst = appendJSONString(dst, hs.Key)
		dst = append(dst, `,"epoch":`...)
		dst = appendJSONString(dst, hs.Epoch)
		dst = append(dst, `,"seq":`...)
		dst = strconv.AppendUint(dst, hs.Seq, 10)
		if hs.Term != 0 {
			dst = append(dst, `,"term":`...)
			dst = strconv.AppendUint(dst, hs.Term, 10)
		}
		dst = append(dst, `,"history":`...)
		if hs.History == nil {
			dst = append(dst, "null"...)
		} else {
			dst = append(dst, '[')
			for j, env := range hs.History {
				if j > 0 {
					dst = append(dst, ',')
				}
				if env == nil {
					env = json.RawMessage("null")
				}
				dst = append(dst, env...)
			}
			dst = append(dst, ']')
		}
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}

// appendJSONString appends s as a JSON string, as json.Marshal writes it.
func appendJSONString(dst []byte, s string) []byte {
	b, _ := json.Marshal(s) // a string always encodes
	return append(dst, b...)
}

type handoffResponse struct {
	Installed int      `json:"installed"`
	Refused   []string `json:"refused,omitempty"` // live here already, or claimed by another edge
}

// UseKeyring gives the edge the cluster's key: peers sign their reads of
// the admin port and their claims and hand-offs with it. Call it before
// Serve and ServeAdmin (UseCluster does).
func (s *Server) UseKeyring(k *health.Keyring) { s.keyring.Store(k) }

// newPeerClient returns the client of claims and hand-offs. Each request's
// context bounds it: a claim's to peerTimeout, a hand-off's to its
// handoffTime.
func newPeerClient() *http.Client {
	return &http.Client{CheckRedirect: configs.NoRedirect, Transport: &http.Transport{
		// Claims come in bursts after a ring change: keep connections
		// to every peer rather than dial one per claim.
		MaxIdleConnsPerHost: 32,
		IdleConnTimeout:     settleWindow,
		DialContext:         (&net.Dialer{Timeout: peerTimeout}).DialContext,
	}}
}

// peerRequest says which edge of the cluster sent an edge-to-edge request,
// or why it is refused. With a cluster key the request must carry a valid
// signature (configs.HeaderPeer) by the edge it names; without one (a
// loopback or explicitly insecure cluster) the named edge's advertised
// address must be the request's source — the insecure mode, documented as
// such.
func (o *ownership) peerRequest(ctx *fasthttp.RequestCtx, name string) error {
	n, ok := o.m.Node(name)
	if !ok || n.Meta.Role != health.RoleEdge || name == o.self {
		return errors.New("not an edge of this cluster")
	}
	if kr := o.m.Keyring(); kr.Enabled() {
		signer, err := kr.VerifyRequest(string(ctx.Request.Header.Peek(configs.HeaderPeer)), o.self, string(ctx.Method()), string(ctx.RequestURI()), ctx.PostBody(), time.Now())
		if err != nil {
			return err
		}
		if signer != name {
			return fmt.Errorf("signed by %s, not by %s", signer, name)
		}
		o.srv.idleShare.member(ctx.Conn())
		return nil
	}
	u, err := url.Parse(n.Meta.URL)
	if err != nil {
		return err
	}
	if want := net.ParseIP(u.Hostname()); want != nil && !want.Equal(ctx.RemoteIP()) {
		return errors.New("not from the edge's address")
	}
	return nil
}

// sigsKept is how many peer signatures an onceSigs remembers unless told
// otherwise (kept).
const sigsKept = 256

// onceSigs remembers peer signatures that took their effect once — a
// hand-off head's body slot (bodyGate), a replication stream
// (serveReplicate), a claim (serveClaim) — each until it could no longer
// verify, so that a copy seen on the wire and sent again within
// health.PeerWindow takes none. Past kept (sigsKept when 0) in 2 ×
// PeerWindow the oldest is forgotten first. A signature is held as a
// 16-byte digest. Its owner's lock guards it.
type onceSigs struct {
	kept  int
	until map[[16]byte]int64 // Unix nanoseconds
	order [][16]byte         // oldest first from next, once full
	next  int                // the entry of order overwritten next
}

// seen reports whether sig ("" is never) took its effect before.
func (o *onceSigs) seen(sig string, now time.Time) bool {
	if sig == "" {
		return false
	}
	until, ok := o.until[sigDigest(sig)]
	return ok && now.UnixNano() < until
}

// take reports whether sig takes its effect now — it has not before — and
// remembers it if so.
func (o *onceSigs) take(sig string, now time.Time) bool {
	if o.seen(sig, now) {
		return false
	}
	o.add(sig, now)
	return true
}

// add remembers sig ("": nothing).
func (o *onceSigs) add(sig string, now time.Time) {
	if sig == "" {
		return
	}
	if o.until == nil {
		n := cmp.Or(o.kept, sigsKept)
		o.until, o.order = make(map[[16]byte]int64, n), make([][16]byte, 0, n)
	}
	d := sigDigest(sig)
	if _, ok := o.until[d]; !ok {
		if len(o.order) < cap(o.order) {
			o.order = append(o.order, d)
		} else {
			delete(o.until, o.order[o.next])
			o.order[o.next] = d
			o.next = (o.next + 1) % len(o.order)
		}
	}
	// Its time is within PeerWindow of now, either way: it verifies until
	// 2 × PeerWindow from now at most.
	o.until[d] = now.Add(2 * health.PeerWindow).UnixNano()
}

func sigDigest(sig string) (d [16]byte) {
	sum := sha256.Sum256([]byte(sig))
	copy(d[:], sum[:])
	return d
}

// errHeadUnsigned refuses a hand-off's head without configs.HeaderPeerHead
// from anyone but an edge of an earlier release.
var errHeadUnsigned = errors.New("hand-off head not signed (" + configs.HeaderPeerHead + ")")

// checkHead says whether the head of a hand-off h (isHandoff) may have one
// of the data port's hand-off slots, before any of its body is read: the
// body's own signature (configs.HeaderPeer) covers the body, so it can
// only be checked once the body has come, and until then anyone could hold
// the slots. With a cluster key the head must carry an edge's signature
// for this edge over its request line and the length it announces
// (configs.HeaderPeerHead); sig is that signature, which takes a slot
// once (bodyGate). An edge of an earlier release signs no head: an
// unsigned head is taken as before — sig "" — while the edge its
// configs.HeaderPeer names is a member announcing an earlier
// peer_signing (a rolling upgrade; its body is checked as any). Without a
// key (the documented insecure mode) the head is not checked: the sender's
// address is, with the body.
func (o *ownership) checkHead(h *fasthttp.RequestHeader, now time.Time) (sig string, err error) {
	kr := o.m.Keyring()
	if !kr.Enabled() {
		return "", nil
	}
	v := h.Peek(configs.HeaderPeerHead)
	if len(v) == 0 {
		name, _, _ := strings.Cut(string(h.Peek(configs.HeaderPeer)), " ")
		if n, ok := o.m.Node(name); ok && n.Meta.Role == health.RoleEdge && n.Meta.PeerSigning < health.PeerSigningHead && name != o.self {
			return "", nil
		}
		return "", errHeadUnsigned
	}
	sig = string(v)
	signer, err := kr.VerifyHead(sig, o.self, string(h.Method()), string(h.RequestURI()), h.ContentLength(), now)
	if err != nil {
		return "", err
	}
	if n, ok := o.m.Node(signer); !ok || n.Meta.Role != health.RoleEdge || signer == o.self {
		return "", fmt.Errorf("head signed by %s: not an edge of this cluster", signer)
	}
	return sig, nil
}

// errSkipUnsigned refuses a join whose X-Ringlb-Skip no node of the
// cluster signed for this edge.
var errSkipUnsigned = errors.New("X-Ringlb-Skip must be signed by a balancer of this cluster")

// checkSkip refuses a join carrying X-Ringlb-Skip without a balancer's
// signature (configs.HeaderPeer over the request line, the skip list and
// the key: health.SkipMessage). A skip makes this edge place the session
// on the ring without the edges it names — the replica takes a session
// over from its live owner, whose participants are all closed — so it is
// the balancer's word that it could not reach them, not anyone's who
// reaches the data port and knows a key. Without a cluster key (the
// documented insecure mode) any skip is taken; unsigned, only while a
// balancer of an earlier release, which does not sign, is a member.
func (s *Server) checkSkip(ctx *fasthttp.RequestCtx, key []byte) error {
	skip := ctx.Request.Header.Peek(headerSkip)
	o := s.hub.owner.Load()
	if len(skip) == 0 || o == nil {
		return nil
	}
	kr := o.m.Keyring()
	if !kr.Enabled() {
		return nil
	}
	sig := ctx.Request.Header.Peek(configs.HeaderPeer)
	if len(sig) == 0 && o.unsigningBalancer() {
		return nil
	}
	if _, err := kr.VerifyRequest(string(sig), o.self, string(ctx.Method()), string(ctx.RequestURI()), health.SkipMessage(string(skip), key), time.Now()); err != nil {
		return fmt.Errorf("%w: %w", errSkipUnsigned, err)
	}
	return nil
}

// unsigningBalancer reports whether a balancer of an earlier release, which
// sends X-Ringlb-Skip unsigned, is a member: during a rolling upgrade its
// fallbacks must still land.
func (o *ownership) unsigningBalancer() bool { return o.m.BalancerBelow(health.PeerSigningSkip) }

// signed prepares an edge-to-edge POST of body to the edge to at u+path,
// signed as this edge.
func (o *ownership) signed(ctx context.Context, to, u, path string, body []byte) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(u, "/")+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	o.m.Keyring().SignRequest(req.Header, o.self, to, req.Method, req.URL.RequestURI(), body)
	return req, nil
}

// serveClaim answers POST /_ringlb/claim from another edge: 409 +
// X-Ringlb-Owner when a session of the key (body) is live or joining here,
// or belongs to a third edge; else 200, and the claim is recorded — the
// claimer's, or that of the edge a draining claimer handed the key to
// (argHanded).
func (s *Server) serveClaim(ctx *fasthttp.RequestCtx) {
	by := string(ctx.Request.Header.Peek(headerClaimBy))
	key := ctx.PostBody()
	if !ctx.IsPost() || by == "" || len(key) == 0 || len(key) > maxKeyLength {
		ctx.Error("bad claim\n", fasthttp.StatusBadRequest)
		return
	}
	o := s.hub.owner.Load()
	if o == nil {
		ctx.Error("forbidden: this edge checks no ownership\n", fasthttp.StatusForbidden)
		return
	}
	if err := o.peerRequest(ctx, by); err != nil {
		s.metrics.peerRefused.Inc()
		s.log.Debug("claim refused", "by", by, "remote", ctx.RemoteIP(), "err", err)
		ctx.Error("forbidden: not an edge of this cluster\n", fasthttp.StatusForbidden)
		return
	}
	claimer, _ := o.m.Node(by) // a member: peerRequest checked
	if o.claimTaken(claimer, string(ctx.Request.Header.Peek(configs.HeaderPeer))) {
		s.metrics.peerRefused.Inc()
		s.log.Debug("claim refused: taken once already", "by", by, "remote", ctx.RemoteIP())
		ctx.Error("forbidden: this claim was taken once already (sent again on the way?)\n", fasthttp.StatusForbidden)
		return
	}
	var holder string
	if to := string(ctx.QueryArgs().Peek(argHanded)); to != "" {
		// A draining edge handed the key to edge to: recorded as to's
		// claim (handedOn), even when to is not heard of here yet — it
		// joined a moment ago, which is when this matters (a join sent
		// here then gets a 421 naming it, not a second session).
		at := string(ctx.QueryArgs().Peek(argHandedAt))
		if to == by || to == s.name || !configs.ValidNodeName(to) || at != "" && o.m.CheckEdgeURL(at) != nil {
			ctx.Error("bad claim: handed to the claimer, to this edge, to no node name, or at no address an edge of this cluster could have\n", fasthttp.StatusBadRequest)
			return
		}
		holder = s.hub.handedOn(key, s.name, to, at, settleWindow)
	} else {
		// The edges the claimer found dead are its word, as a balancer's
		// skip is (both signed by the cluster's own).
		gone := o.goneEdges(skipList(ctx.QueryArgs().Peek(argClaimGone)))
		holder = s.hub.claim(key, s.name, by, settleWindow, gone)
	}
	status, body := fasthttp.StatusOK, claimedBody
	if holder != "" {
		status, body = fasthttp.StatusConflict, hostedPrefix+holder+"\n"
		ctx.Response.Header.Set(headerOwner, holder)
		at := ""
		if n, ok := o.m.Node(holder); ok {
			at = n.Meta.URL
		} else {
			at = s.hub.handedAt(key, holder) // not heard of here yet
		}
		if at != "" && holder != s.name {
			// In the signed body for a claimer that reads it there; in
			// a header, unsigned, for an earlier release's.
			if claimer.Meta.PeerSigning >= health.PeerSigningClaimOnce {
				body += ownerAtPrefix + at + "\n"
			}
			ctx.Response.Header.Set(headerOwnerAt, at)
		}
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetBodyString(body)
	// Signed for the claimer and this very claim: an answer made on the
	// path settles nothing there (claim).
	if sig := o.m.Keyring().SignAnswer(s.name, by, string(ctx.Request.Header.Peek(configs.HeaderPeer)), status, []byte(body)); sig != "" {
		ctx.Response.Header.Set(configs.HeaderPeerAnswer, sig)
	}
}

// claimSigsKept is how many claim signatures an edge remembers (claimTaken):
// more than a drain of 10,000 sessions within a ring change's settle window
// and the new sessions of a scale-out ask of one edge in a minute. Past it,
// the oldest could take its effect once more. ~1 MiB (measured).
const claimSigsKept = 1 << 14

// claimTaken reports whether a claim by the edge by signed sig took its effect
// here before, and remembers it if not — from an edge that gives each claim
// a nonce (health.PeerSigningClaimOnce), whose claims never share a
// signature: a copy seen on the wire and sent again within the signature's
// window takes none. An earlier release's claims (no nonce: two alike
// within a second are one signature) are taken as before.
func (o *ownership) claimTaken(by health.Node, sig string) bool {
	if by.Meta.PeerSigning < health.PeerSigningClaimOnce {
		return false
	}
	o.claimSigsMu.Lock()
	defer o.claimSigsMu.Unlock()
	return !o.claimSigs.take(sig, time.Now()) // the signature's clock, not the hub's
}

// The bodies of a claim's answers: a 409 names the holder in its body
// too (hostedPrefix, the holder, a newline), which the answer's signature
// covers (X-Ringlb-Owner it does not) — and, for a claimer announcing
// health.PeerSigningClaimOnce, a third edge's address on a line of its own
// (ownerAtPrefix, the address, a newline), which X-Ringlb-Owner-URL gives
// unsigned.
const (
	claimedBody   = "claimed\n"
	hostedPrefix  = "hosted by "
	ownerAtPrefix = "at "
)

// serveHandoff installs sessions handed on by a draining edge, each idle
// (kept for idle_grace) until its clients resume.
func (s *Server) serveHandoff(ctx *fasthttp.RequestCtx) {
	defer s.bodies.give(&ctx.Request.Header) // its body's slot (bodies.go)
	if !ctx.IsPost() {
		ctx.Error("method not allowed\n", fasthttp.StatusMethodNotAllowed)
		return
	}
	o := s.hub.owner.Load()
	if o == nil {
		ctx.Error("forbidden: this edge checks no ownership\n", fasthttp.StatusForbidden)
		return
	}
	refuse := func(from string, err error) {
		s.metrics.peerRefused.Inc()
		s.peerLog.Warn(s.log, "hand-off refused", "from", from, "remote", ctx.RemoteIP(), "err", err)
		ctx.Error("forbidden: not an edge of this cluster\n", fasthttp.StatusForbidden)
	}
	// With a cluster key the signature is checked before the body is
	// parsed: nothing unsigned reaches the JSON decoder.
	signer, _, _ := strings.Cut(string(ctx.Request.Header.Peek(configs.HeaderPeer)), " ")
	keyed := o.m.Keyring().Enabled()
	if keyed {
		if err := o.peerRequest(ctx, signer); err != nil {
			refuse(signer, err)
			return
		}
	}
	// A draining edge hands on what it hosts once (Drain): a session
	// installed after that would stay here until the edge exits, while
	// the key's next owner starts it anew. 421: the sender sends it to
	// the owner of its ring without this edge (handOff).
	s.installing.RLock()
	defer s.installing.RUnlock()
	if s.draining.Load() {
		ctx.Error("misdirected: this edge drains; hand its sessions to the next owner\n", fasthttp.StatusMisdirectedRequest)
		return
	}
	var req handoffRequest
	if err := json.Unmarshal(ctx.PostBody(), &req); err != nil {
		ctx.Error("bad hand-off: "+err.Error()+"\n", fasthttp.StatusBadRequest)
		return
	}
	switch {
	case keyed && req.From != signer:
		refuse(req.From, fmt.Errorf("signed by %s, not by %s", signer, req.From))
		return
	case !keyed:
		if err := o.peerRequest(ctx, req.From); err != nil {
			refuse(req.From, err)
			return
		}
	}
	var resp handoffResponse
	gone := o.goneEdges(nil)
	for _, hs := range req.Sessions {
		if len(hs.Key) == 0 || len(hs.Key) > maxKeyLength || hs.Epoch == "" || len(hs.Epoch) > maxEpochLength || uint64(len(hs.History)) > hs.Seq {
			resp.Refused = append(resp.Refused, hs.Key)
			continue
		}
		if s.hub.install(hs, req.From, gone) {
			resp.Installed++
		} else {
			resp.Refused = append(resp.Refused, hs.Key)
		}
	}
	s.log.Info("hand-off received", "from", req.From, "installed", resp.Installed, "refused", len(resp.Refused))
	body, _ := json.Marshal(resp)
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}
