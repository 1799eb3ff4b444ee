package health

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/ringlb/ringlb/configs"
)

// Keyring is the cluster's shared secret (cluster.secret_key_file): the
// gossip encryption keys, and the peer-signing keys derived from them. A
// request one node makes to another (an edge's claim or hand-off, a
// dashboard or gslb peer reading an admin API) carries configs.HeaderPeer, an HMAC
// over the request under the derived key, so the receiver knows it comes
// from a node holding the cluster's key — never from its source address;
// and the answer to such a read carries configs.HeaderPeerAnswer, so the
// reader knows it too (answer.go).
//
// Rotation keeps the cluster whole: every key of the file is accepted, the
// first one is used. Reload swaps the keys of gossip and of signing at once.
//
// A nil *Keyring, or one made without keys, is a cluster without a key
// (loopback or cluster.insecure_gossip): nothing is encrypted or signed, and
// Verify refuses everything.
type Keyring struct {
	ml   *memberlist.Keyring // gossip's; nil without keys
	sign atomic.Pointer[[][]byte]
	// members looks a node up in the membership the keyring serves (set
	// before gossip starts; nil: every node signs bound signatures, and
	// its answers).
	members func(name string) (Node, bool)
	// log is the membership's logger (nil: none).
	log *slog.Logger
	// answers are the peers' answers refused (answer.go).
	answers answerRefusals
}

// A node's signature on a request to another node travels in
// configs.HeaderPeer: "NODE UNIXSECONDS MAC TO" with MAC the base64url
// HMAC-SHA256 of the request and of TO, the node it is for, under a key
// derived from the primary gossip key. Naming the receiver keeps a request
// captured on its way to one node from being replayed to another.
//
// Nodes of earlier releases sign "NODE UNIXSECONDS MAC", for whichever node
// receives it, and refuse a fourth field. So that a rolling upgrade keeps
// claims, hand-offs, replication and peer reads working, each node
// announces the form it signs in its metadata (Meta.PeerSigning): a node
// signs for an earlier release's node in that node's form, and accepts the
// unbound form only from a member that announces no other — never from one
// that signs bound signatures, whose unbound signature can only be one made
// for an earlier release's node, replayed. Once every node is upgraded, no
// unbound signature is accepted anywhere.

// PeerWindow is how far a signature's time may be from the receiver's clock.
// A replay inside it repeats a request the cluster itself made: admin reads
// are idempotent, and a claim (from an edge announcing
// PeerSigningClaimOnce), a hand-off's head and a replication stream's
// upgrade take their effect once (sessions' onceSigs).
const PeerWindow = 30 * time.Second

// Errors of VerifyRequest.
var (
	ErrNoKeyring    = errors.New("the cluster has no key: peer requests cannot be verified")
	ErrPeerMissing  = errors.New("no peer signature")
	ErrPeerMalform  = errors.New("malformed peer signature")
	ErrPeerExpired  = errors.New("peer signature outside the time window (are the clocks in sync?)")
	ErrPeerBadMAC   = errors.New("peer signature does not verify with the cluster's keys")
	ErrPeerNotOurs  = errors.New("peer signature is for another node")
	ErrPeerUnbound  = errors.New("peer signature names no receiver, and its signer signs for its receivers (a replay?)")
	errKeylessSwap  = errors.New("cluster.secret_key_file: adding or removing the cluster key needs a restart of every node")
	peerSigningInfo = "ringlb peer request v1"
)

// newKeyring makes the keyring of keys (primary first); no keys: nil.
func newKeyring(keys [][]byte) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	ml, err := memberlist.NewKeyring(keys, keys[0])
	if err != nil {
		return nil, fmt.Errorf("cluster.secret_key_file: %w", err)
	}
	k := &Keyring{ml: ml}
	k.setSigning(keys)
	return k, nil
}

func (k *Keyring) setSigning(keys [][]byte) {
	derived := make([][]byte, len(keys))
	for i, key := range keys {
		// A key of its own for signing, so a MAC never doubles as a
		// gossip key or reveals anything about one.
		d, err := hkdf.Key(sha256.New, key, nil, peerSigningInfo, 32)
		if err != nil {
			panic("health: hkdf: " + err.Error()) // only for lengths beyond 255×32 bytes
		}
		derived[i] = d
	}
	k.sign.Store(&derived)
}

// Enabled reports whether the cluster has a key.
func (k *Keyring) Enabled() bool { return k != nil && k.ml != nil }

// replace installs keys (primary first) without a partition: new keys are
// accepted before the primary changes, old ones removed after.
func (k *Keyring) replace(keys [][]byte) error {
	if !k.Enabled() || len(keys) == 0 {
		if k.Enabled() != (len(keys) > 0) {
			return errKeylessSwap
		}
		return nil
	}
	old := k.ml.GetKeys()
	for _, key := range keys {
		if !containsKey(old, key) {
			if err := k.ml.AddKey(key); err != nil {
				return fmt.Errorf("cluster.secret_key_file: %w", err)
			}
		}
	}
	if err := k.ml.UseKey(keys[0]); err != nil {
		return fmt.Errorf("cluster.secret_key_file: %w", err)
	}
	for _, key := range old {
		if !containsKey(keys, key) {
			if err := k.ml.RemoveKey(key); err != nil {
				return fmt.Errorf("cluster.secret_key_file: %w", err)
			}
		}
	}
	k.setSigning(keys)
	return nil
}

func containsKey(keys [][]byte, key []byte) bool {
	for _, k := range keys {
		if bytes.Equal(k, key) {
			return true
		}
	}
	return false
}

// SignRequest adds node's signature for the node to over method, uri
// (path and query, as the receiver sees it), time and body to h. Without a
// key it adds nothing.
func (k *Keyring) SignRequest(h http.Header, node, to, method, uri string, body []byte) {
	if v := k.Sign(node, to, method, uri, body); v != "" {
		h.Set(configs.HeaderPeer, v)
	}
}

// Sign is SignRequest's configs.HeaderPeer value ("" without a key).
func (k *Keyring) Sign(node, to, method, uri string, body []byte) string {
	if !k.Enabled() {
		return ""
	}
	keys := *k.sign.Load()
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	if !k.signsBound(to) {
		mac := peerMAC(keys[0], node, "", ts, method, uri, body)
		return node + " " + ts + " " + base64.RawURLEncoding.EncodeToString(mac)
	}
	mac := peerMAC(keys[0], node, to, ts, method, uri, body)
	return node + " " + ts + " " + base64.RawURLEncoding.EncodeToString(mac) + " " + to
}

// A request's head may be signed too (configs.HeaderPeerHead), where its
// receiver must know the sender before it reads the body: a hand-off's
// body is read in one of a few slots, and its configs.HeaderPeer, a MAC
// over the body, can be checked only once the body has come. A head's
// signature is a request's (Sign, VerifyRequest: the same keys, window and
// receiver) over the method with headTag after it, the URI, and
// headMessage of the body's announced length. A request line's method
// holds no space, so no request's signature has a head's message — not
// even one whose body spells headMessage — nor a head's a request's.
const headTag = " head"

// headMessage is what a head's signature covers in place of a body: a
// fixed tag and the body's announced length (Content-Length), so a head
// signed for one length takes no slot for a larger body.
func headMessage(length int) []byte {
	return strconv.AppendInt([]byte("ringlb request head\n"), int64(length), 10)
}

// SignHead is the configs.HeaderPeerHead value of node's request to the
// node to (method, uri) announcing a body of length bytes ("" without a
// key).
func (k *Keyring) SignHead(node, to, method, uri string, length int) string {
	return k.Sign(node, to, method+headTag, uri, headMessage(length))
}

// VerifyHead checks a configs.HeaderPeerHead value for the head of a
// request (method, uri, the body length it announces) received by the node
// self, as VerifyRequest checks a request's, and returns the signing
// node's name. A head signature seen on the wire can be sent again to
// self within PeerWindow; the receiver bounds what that replay takes.
func (k *Keyring) VerifyHead(header, self, method, uri string, length int, now time.Time) (string, error) {
	return k.VerifyRequest(header, self, method+headTag, uri, headMessage(length), now)
}

// SkipMessage is what a balancer's signature on a WebSocket upgrade that
// carries configs.HeaderSkip covers besides the request line: the skip
// list as sent and the session key it routed, so a signature made for one
// key's fallback cannot move another's session.
func SkipMessage(skip string, key []byte) []byte {
	return append(append([]byte(skip), '\n'), key...)
}

// upgradeTag follows the method of an upgrade's signature (SignUpgrade) as
// headTag follows a head's: a request line's method holds no space, so no
// other signature — a skip's (SkipMessage, over the bare method) or a
// head's — is an upgrade's, nor an upgrade's one of theirs.
const upgradeTag = " upgrade"

// SignUpgrade is the configs.HeaderPeer value of node's WebSocket upgrade
// (GET uri) of the session key, forwarded to the edge to without
// X-Ringlb-Skip ("" without a key). It tells the edge the participant came
// through a balancer of the cluster; an upgrade with a skip is signed over
// SkipMessage instead, which says as much.
func (k *Keyring) SignUpgrade(node, to, uri string, key []byte) string {
	return k.Sign(node, to, http.MethodGet+upgradeTag, uri, key)
}

// VerifyUpgrade checks a SignUpgrade value for an upgrade (uri, key)
// received by the node self, as VerifyRequest checks a request's, and
// returns the signing node's name.
func (k *Keyring) VerifyUpgrade(header, self, uri string, key []byte, now time.Time) (string, error) {
	return k.VerifyRequest(header, self, http.MethodGet+upgradeTag, uri, key, now)
}

// forwardedTag follows the method of the signature a balancer puts on each
// plain request it forwards to an edge (SignForwarded), as upgradeTag does
// an upgrade's: no other signature is a forwarded request's, nor the other
// way round.
const forwardedTag = " forwarded"

// SignForwarded is the configs.HeaderPeer value of a plain request (method)
// that node forwards to the edge to for the session key it routed ("" without
// a key). It tells the edge that the connection it came on is the
// balancer's keep-alive connection, which the edge then does not count
// against its address's share while idle (sessions' connshare.go). The
// request URI is not covered: the balancer's HTTP client writes it anew.
func (k *Keyring) SignForwarded(node, to, method string, key []byte) string {
	return k.Sign(node, to, method+forwardedTag, "", key)
}

// VerifyForwarded checks a SignForwarded value for a plain request (method,
// key) received by the node self, as VerifyRequest checks a request's, and
// returns the signing node's name.
func (k *Keyring) VerifyForwarded(header, self, method string, key []byte, now time.Time) (string, error) {
	return k.VerifyRequest(header, self, method+forwardedTag, "", key, now)
}

// signsBound reports whether node makes (and so takes) signatures that name
// their receiver: any node but a member announcing an earlier release's form.
func (k *Keyring) signsBound(node string) bool {
	if k.members == nil {
		return true
	}
	n, ok := k.members(node)
	return !ok || n.Meta.PeerSigning >= PeerSigningBound
}

// VerifyRequest checks a configs.HeaderPeer value for a request (method,
// uri, body) received by the node self against every key of the ring and
// the time window around now, and returns the signing node's name.
func (k *Keyring) VerifyRequest(header, self, method, uri string, body []byte, now time.Time) (string, error) {
	if !k.Enabled() {
		return "", ErrNoKeyring
	}
	if header == "" {
		return "", ErrPeerMissing
	}
	// Bounded before any work: the header comes from anyone.
	if len(header) > 256 {
		return "", ErrPeerMalform
	}
	node, rest, ok1 := strings.Cut(header, " ")
	ts, rest, ok2 := strings.Cut(rest, " ")
	sig, to, bound := strings.Cut(rest, " ")
	if !ok1 || !ok2 || node == "" || (bound && (to == "" || strings.Contains(to, " "))) {
		return "", ErrPeerMalform
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return "", ErrPeerMalform
	}
	// Strict: one spelling per MAC (as Sign writes it), so a signature
	// sent again with other padding bits is the same header, which a
	// receiver that remembers the signatures it took (a hand-off's head)
	// knows again.
	mac, err := base64.RawURLEncoding.Strict().DecodeString(sig)
	if err != nil || len(mac) != sha256.Size {
		return "", ErrPeerMalform
	}
	if d := now.Sub(time.Unix(sec, 0)); d > PeerWindow || d < -PeerWindow {
		return "", ErrPeerExpired
	}
	if bound && to != self {
		return "", ErrPeerNotOurs
	}
	if !bound && k.signsBound(node) {
		return "", ErrPeerUnbound
	}
	for _, key := range *k.sign.Load() {
		if hmac.Equal(mac, peerMAC(key, node, to, ts, method, uri, body)) {
			return node, nil
		}
	}
	return "", ErrPeerBadMAC
}

// peerMAC is the MAC of a request from node to the node to; to "": an
// earlier release's, which names no receiver. The two never share a
// message: each begins with its own version line.
func peerMAC(key []byte, node, to, ts, method, uri string, body []byte) []byte {
	sum := sha256.Sum256(body)
	version := "ringlb-peer-v2"
	if to == "" {
		version = "ringlb-peer-v1"
	}
	// Fields separated by newlines, none of which may hold one (a node
	// name, a decimal time, a method, a request URI on the wire), so no
	// two requests share a message. Written as one buffer: a Write per
	// field allocated a copy of each (every forwarded upgrade is signed).
	msg := make([]byte, 0, len(version)+len(node)+len(to)+len(ts)+len(method)+len(uri)+2*sha256.Size+7)
	msg = append(append(msg, version...), '\n')
	msg = append(append(msg, node...), '\n')
	if to != "" { // v1 names no receiver
		msg = append(append(msg, to...), '\n')
	}
	for _, f := range [...]string{ts, method, uri} {
		msg = append(append(msg, f...), '\n')
	}
	msg = append(hex.AppendEncode(msg, sum[:]), '\n')
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

// loadKeyring is the keyring of cluster.secret_key_file (none: nil), with
// the keys the check of cfg read (configs.Cluster.Keyring).
func loadKeyring(cfg configs.Cluster) (*Keyring, error) {
	if cfg.SecretKeyFile == "" {
		return nil, nil
	}
	keys, err := cfg.Keyring()
	if err != nil {
		return nil, fmt.Errorf("cluster.secret_key_file: %w", err)
	}
	return newKeyring(keys)
}
