package health

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// A signed read of a node's admin API (a gslb node reading a peer's
// /api/monitors, a balancer's dashboard reading an edge) proves the reader
// with its configs.HeaderPeer; the answer proves its node the same way. So
// does the answer to a change a dashboard forwards signed (a drain, a
// serve mode, beside the operator's credential, which alone makes it):
// below, a read is either.
// Whoever can change traffic between two nodes (a spoofed address on the
// LAN) needs no key to rewrite an unsigned answer: enough forged views and
// a gslb majority takes a healthy member out of its answers or keeps a
// dead one in.
//
// So the node answering a signed read signs its answer
// (configs.HeaderPeerAnswer): a signature in configs.HeaderPeer's form
// (Sign: the same keys, window and receiver rule, made for the reader)
// over the status followed by answerTag in place of a method, the
// request's MAC in place of its URI, and the body. Bound to the request's
// MAC, an answer is good for its own request only: one recorded and sent
// again is refused for any other (the same request sent again within the
// same second has the same MAC: its answer is at most as old as that).
// A request line's method holds no space and a status is no tagged
// method, so no answer's signature is a request's, nor the other way round.
//
// A reader requires the signature from a peer announcing
// PeerSigningAnswer, and reads an earlier release's peer, which signs no
// answer, as before: a rolling upgrade keeps every read working. An
// answer refused counts as no answer: the reader goes on as with an
// unreachable peer.
const answerTag = " answer"

// ErrAnswerUnsigned is ReadAnswer's error for an answer that a peer
// announcing PeerSigningAnswer did not sign for the request it answers.
var ErrAnswerUnsigned = errors.New("peer answer not signed by the peer for this request (altered or replayed on the way?)")

// errAnswerTooLarge: an answer beyond the reader's bound cannot be checked
// whole.
var errAnswerTooLarge = errors.New("peer answer larger than the reader takes")

// requestMAC is the MAC field of a configs.HeaderPeer value ("" when it
// has none).
func requestMAC(request string) string {
	_, rest, _ := strings.Cut(request, " ")
	_, rest, _ = strings.Cut(rest, " ")
	mac, _, _ := strings.Cut(rest, " ")
	return mac
}

// SignAnswer is the configs.HeaderPeerAnswer value of node's answer
// (status, body) to the read the node to signed with request, its
// configs.HeaderPeer value ("" without a key).
func (k *Keyring) SignAnswer(node, to, request string, status int, body []byte) string {
	return k.Sign(node, to, strconv.Itoa(status)+answerTag, requestMAC(request), body)
}

// VerifyAnswer checks a configs.HeaderPeerAnswer value on the answer
// (status, body) the node self got from the node peer to its read signed
// with request, as VerifyRequest checks a request's.
func (k *Keyring) VerifyAnswer(header, self, peer, request string, status int, body []byte, now time.Time) error {
	mac := requestMAC(request)
	if mac == "" {
		return ErrPeerMalform
	}
	signer, err := k.VerifyRequest(header, self, strconv.Itoa(status)+answerTag, mac, body, now)
	if err != nil {
		return err
	}
	if signer != peer {
		return fmt.Errorf("signed by %q, not by the node read", bounded(signer))
	}
	return nil
}

// SignsAnswers reports whether node signs the answers of form (the
// PeerSigning form that began signing them): any node but a member
// announcing an earlier release's form.
func (k *Keyring) SignsAnswers(node string, form int) bool {
	if k.members == nil {
		return true
	}
	n, ok := k.members(node)
	return !ok || n.Meta.PeerSigning >= form
}

// MaxPeerView bounds a node's JSON view of its pools or probes as another
// node reads it: a gslb node's /api/monitors (every member it probes, what
// its peers vote with) and /api/pools (every managed name, region and
// member: 1.8 KiB, as the node indents it, for a name of two regions of a
// member each — over 500 such names). A larger answer is refused, shown as
// the node's error, never passed on: a balancer's dashboard put each gslb
// node's names into every /api/cluster answer up to 4 MiB (its bound for
// any peer answer), once a gslb node in the gossip.
const MaxPeerView = 1 << 20

// ReadAnswer reads the body of resp, the answer of the node peer to a
// request that the node self signed (SignRequest), at most limit bytes;
// form is the PeerSigning form from which such answers are signed
// (PeerSigningAnswer for an admin read or change, PeerSigningClaimAnswer
// for a claim). With a cluster key, from a peer announcing form, the
// answer must carry the peer's valid configs.HeaderPeerAnswer for that
// request, its status and body, else it is ErrAnswerUnsigned: counted
// (ringlb_peer_answers_refused_total) and logged when a peer's answers
// begin to be refused and when they verify again. An earlier release's
// peer is read as before: its body, cut at limit.
func (k *Keyring) ReadAnswer(resp *http.Response, self, peer string, form int, limit int64) ([]byte, error) {
	if !k.Enabled() || !k.SignsAnswers(peer, form) {
		return io.ReadAll(io.LimitReader(resp.Body, limit))
	}
	// One byte beyond: a body cut at limit cannot be checked.
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(body)) > limit {
		err = errAnswerTooLarge
	} else {
		var request string
		if resp.Request != nil {
			request = resp.Request.Header.Get(configs.HeaderPeer)
		}
		err = k.VerifyAnswer(resp.Header.Get(configs.HeaderPeerAnswer), self, peer, request, resp.StatusCode, body, time.Now())
	}
	k.answers.note(k.log, peer, err)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAnswerUnsigned, err)
	}
	return body, nil
}

// maxRefusingPeers bounds the peers whose answers are remembered as being
// refused, for the log's transitions: a cluster's nodes, many times over.
const maxRefusingPeers = 1024

// answerRefusals counts the answers refused and remembers which peers'
// are being refused, so that a peer whose every answer is refused (an
// attack going on, a peer's clock off) is one log line, not one a read.
type answerRefusals struct {
	refused  atomic.Uint64
	mu       sync.Mutex
	refusing map[string]bool
}

// note records the outcome of a check of peer's answer (err nil: it
// verified).
func (a *answerRefusals) note(log *slog.Logger, peer string, err error) {
	if err != nil {
		a.refused.Add(1)
	}
	a.mu.Lock()
	changed := false
	switch was := a.refusing[peer]; {
	case err != nil && !was && len(a.refusing) < maxRefusingPeers:
		if a.refusing == nil {
			a.refusing = map[string]bool{}
		}
		a.refusing[peer], changed = true, true
	case err == nil && was:
		delete(a.refusing, peer)
		changed = true
	}
	a.mu.Unlock()
	switch {
	case log == nil || !changed:
	case err != nil:
		log.Warn("peer answers refused: not signed by the peer for the request they answer; read as no answer until they are",
			"peer", bounded(peer), "err", err)
	default:
		log.Info("peer answers verify again", "peer", bounded(peer))
	}
}
