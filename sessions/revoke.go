package sessions

import (
	"errors"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringlb/ringlb/health/operator"
)

// maxRevocations bounds the revocations an edge holds at once (users and
// nonces together, a few hundred bytes each at most: tens of MB). Entries
// expire on their own (below); a revocation beyond the bound is refused
// with 503 rather than evicting one that still protects something.
const maxRevocations = 100_000

// errRevocationsFull refuses a revocation while maxRevocations are held.
var errRevocationsFull = errors.New("too many revocations held; they expire with the tokens they revoke")

// revocations are the token revocations of one edge process: not shared
// with other edges nor kept across a restart (an operator revokes on
// every edge). Every entry is bounded in time by the token lifetimes it
// can affect, so memory is bounded by the revocation rate:
//   - a user revocation at T refuses the user's tokens issued at or before
//     T + tokenClockSkew (whole seconds): the edge admits a token whose
//     issue time is up to tokenClockSkew ahead of its clock (an issuer's
//     clock running ahead), so a token minted a moment before the
//     revocation may carry a time up to that far past T, and must not slip
//     through; tokens for the user minted after that admit again. Any token
//     it refuses expires by T + tokenClockSkew + max_token_ttl (VerifyToken
//     refuses longer lifetimes), so the entry may go then;
//   - a nonce revocation refuses that one token; it is kept until the
//     token's expiry when the edge knows it (a participant holds the
//     token), else for as long as a token issued by now, by a clock up to
//     tokenClockSkew ahead, may live: tokenClockSkew + max_token_ttl.
//
// Expired entries are dropped lazily: on a listing, and before a
// revocation once their count has doubled since the last prune or reached
// maxRevocations.
type revocations struct {
	maxTTL time.Duration
	held   prometheus.Gauge // ringlb_edge_token_revocations: entries held

	mu     sync.Mutex
	users  map[string]userRevocation
	nonces map[string]time.Time // nonce → when the entry is dropped
	// pruneAt is the entry count at which a revocation prunes first:
	// twice what the last prune left (at least minPruneAt), so pruning
	// costs O(1) per revocation, amortized.
	pruneAt int
}

const minPruneAt = 1024

type userRevocation struct {
	before time.Time // tokens issued at or before (whole seconds) are refused
	until  time.Time // when the entry is dropped
}

// refuses reports whether c (of the revoked user) was issued at or before
// u.before. Issue times are whole seconds: a token minted in the second of
// u.before counts as before it, so none minted before it slips through.
func (u userRevocation) refuses(c *TokenClaims) bool { return c.IssuedAt.Unix() <= u.before.Unix() }

func newRevocations(maxTTL time.Duration, held prometheus.Gauge) *revocations {
	return &revocations{maxTTL: maxTTL, held: held, users: make(map[string]userRevocation), nonces: make(map[string]time.Time), pruneAt: minPruneAt}
}

// revoked reports whether c is revoked.
func (r *revocations) revoked(c *TokenClaims) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if u, ok := r.users[c.User]; ok && u.refuses(c) {
		return true
	}
	_, ok := r.nonces[c.Nonce]
	return ok
}

// revokeUser refuses user's tokens issued at or before now, by any clock
// the edge takes tokens from: at or before now + tokenClockSkew.
func (r *revocations) revokeUser(user string, now time.Time) (userRevocation, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.users[user]; !ok && !r.room(now) {
		return userRevocation{}, errRevocationsFull
	}
	before := now.Add(tokenClockSkew)
	u := userRevocation{before: before, until: before.Add(r.maxTTL)}
	r.users[user] = u
	r.held.Set(float64(len(r.users) + len(r.nonces)))
	return u, nil
}

// revokeNonce refuses the token of nonce, whose expiry is expires when
// known (else zero: a token issued by now, its issue time up to
// tokenClockSkew ahead, expires by now + tokenClockSkew + max_token_ttl).
func (r *revocations) revokeNonce(nonce string, expires, now time.Time) (time.Time, error) {
	until := expires
	if until.IsZero() {
		until = now.Add(tokenClockSkew + r.maxTTL)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old, ok := r.nonces[nonce]
	if !ok && !r.room(now) {
		return time.Time{}, errRevocationsFull
	}
	if old.After(until) {
		until = old
	}
	r.nonces[nonce] = until
	r.held.Set(float64(len(r.users) + len(r.nonces)))
	return until, nil
}

// room reports whether one more entry fits, pruning first when the count
// reached pruneAt or the cap. Called with mu held.
func (r *revocations) room(now time.Time) bool {
	if n := len(r.users) + len(r.nonces); n >= r.pruneAt || n >= maxRevocations {
		r.prune(now)
	}
	return len(r.users)+len(r.nonces) < maxRevocations
}

// prune drops the entries that protect nothing any more: every token they
// could refuse has expired. Called with mu held; O(entries).
func (r *revocations) prune(now time.Time) {
	for user, u := range r.users {
		if !now.Before(u.until) {
			delete(r.users, user)
		}
	}
	for nonce, until := range r.nonces {
		if !now.Before(until) {
			delete(r.nonces, nonce)
		}
	}
	r.pruneAt = max(2*(len(r.users)+len(r.nonces)), minPruneAt)
	r.held.Set(float64(len(r.users) + len(r.nonces)))
}

// revokedList is the answer of GET /api/tokens/revoked.
type revokedList struct {
	Users  []revokedUser  `json:"users"`
	Nonces []revokedNonce `json:"nonces"`
}

type revokedUser struct {
	User   string    `json:"user"`
	Before time.Time `json:"before"` // tokens issued at or before are refused
	Until  time.Time `json:"until"`  // the entry is dropped then
}

type revokedNonce struct {
	Nonce string    `json:"nonce"`
	Until time.Time `json:"until"`
}

// list prunes and returns the entries held, sorted.
func (r *revocations) list(now time.Time) revokedList {
	r.mu.Lock()
	r.prune(now)
	l := revokedList{Users: make([]revokedUser, 0, len(r.users)), Nonces: make([]revokedNonce, 0, len(r.nonces))}
	for user, u := range r.users {
		l.Users = append(l.Users, revokedUser{user, u.before.UTC(), u.until.UTC()})
	}
	for nonce, until := range r.nonces {
		l.Nonces = append(l.Nonces, revokedNonce{nonce, until.UTC()})
	}
	r.mu.Unlock()
	sort.Slice(l.Users, func(i, j int) bool { return l.Users[i].User < l.Users[j].User })
	sort.Slice(l.Nonces, func(i, j int) bool { return l.Nonces[i].Nonce < l.Nonces[j].Nonce })
	return l
}

// maxRevokeBody bounds a revoke request's form: one user (≤ 256 bytes) or
// one nonce, URL-encoded.
const maxRevokeBody = 4 << 10

// handleRevocations registers the revocation API on an admin mux:
//
//	POST /api/tokens/revoke  user=U: refuse every token of U issued until now;
//	                         nonce=N: refuse that one token. Form body or
//	                         query. Connected holders are closed with 1008.
//	                         200 {"user"|"nonce", "before", "until", "closed"}
//	GET  /api/tokens/revoked {"users":[{user,before,until}],"nonces":[{nonce,until}]}
//
// Revocations are this edge process's only (revocations says why that is
// bounded); an operator revokes on every edge.
func (s *Server) handleRevocations(mux *http.ServeMux, access operator.Access) {
	mux.Handle("POST /api/tokens/revoke", access.Write(http.HandlerFunc(s.serveRevoke)))
	mux.Handle("GET /api/tokens/revoked", access.Read(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		operator.WriteJSON(w, http.StatusOK, s.revocations.list(time.Now()))
	})))
}

func (s *Server) serveRevoke(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxRevokeBody)
	if err := r.ParseForm(); err != nil {
		operator.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "bad form: " + err.Error()})
		return
	}
	users, nonces := r.Form["user"], r.Form["nonce"]
	switch {
	case len(users) == 1 && len(nonces) == 0:
		operator.Describe(r.Context(), "revoke_tokens", "user "+users[0])
	case len(nonces) == 1 && len(users) == 0:
		operator.Describe(r.Context(), "revoke_tokens", "nonce "+nonces[0])
	default:
		operator.Describe(r.Context(), "revoke_tokens", "")
	}
	if len(users)+len(nonces) != 1 {
		operator.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "give exactly one user=U (every token of U issued until now) or nonce=N (that one token)"})
		return
	}
	if !s.auth.Load().configured {
		operator.WriteJSON(w, http.StatusConflict, map[string]string{"error": "this edge has no edge.auth.hmac_secret_file: it admits no tokens to revoke"})
		return
	}
	now := time.Now()
	var (
		answer  map[string]any
		matches func(*TokenClaims) bool
	)
	if len(users) == 1 {
		user := users[0]
		if err := checkUser(user); err != nil {
			operator.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		u, err := s.revocations.revokeUser(user, now)
		if err != nil {
			operator.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
			return
		}
		answer = map[string]any{"user": user, "before": u.before.UTC(), "until": u.until.UTC()}
		matches = func(c *TokenClaims) bool { return c.User == user && u.refuses(c) }
		s.log.Info("tokens revoked", "user", user, "issued_before", u.before, "kept_until", u.until)
	} else {
		nonce := nonces[0]
		if !validNonce(nonce) {
			operator.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "nonce must be a token's n: 16 base64url characters"})
			return
		}
		// A connected holder tells the token's expiry: the entry need not
		// outlive it.
		var expires time.Time
		s.forTokenHolders(func(_ *participant, t *heldToken) {
			if t.Nonce == nonce {
				expires = t.Expires
			}
		})
		until, err := s.revocations.revokeNonce(nonce, expires, now)
		if err != nil {
			operator.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
			return
		}
		answer = map[string]any{"nonce": nonce, "until": until.UTC()}
		matches = func(c *TokenClaims) bool { return c.Nonce == nonce }
		s.log.Info("token revoked", "nonce", nonce, "kept_until", until)
	}
	s.metrics.tokensRevoked.Inc()
	// Recorded first, closed second: a join that passed admit before the
	// record is either registered by now (closed here) or checks again
	// after registering (serveConn), so none slips through.
	closed := 0
	s.forTokenHolders(func(p *participant, t *heldToken) {
		if matches(&t.TokenClaims) && p.stop(closePolicy, "token revoked") {
			closed++
		}
	})
	s.metrics.revokedClosed.Add(float64(closed))
	answer["closed"] = closed
	operator.WriteJSON(w, http.StatusOK, answer)
}

// forTokenHolders calls f for each connection that holds a token, with
// that token, under s.mu (f must not block).
func (s *Server) forTokenHolders(f func(*participant, *heldToken)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for p := range s.conns {
		if t := p.token.Load(); t != nil {
			f(p, t)
		}
	}
}

// revokedAfterRegister closes p (once it has joined, or once a refresh
// gave it a token) when its token was revoked while it was being admitted
// (see serveRevoke).
func (s *Server) revokedAfterRegister(p *participant) {
	if t := p.token.Load(); t != nil && s.revocations.revoked(&t.TokenClaims) && p.stop(closePolicy, "token revoked") {
		s.metrics.revokedClosed.Inc()
	}
}
