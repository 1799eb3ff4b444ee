package sessions

import "time"

// A join token admits its holder when it joins, and keeps it only while it
// would still admit a new join: until the token expires, and while the
// secret that signed it is accepted (edge.auth rotation, reload.go). A
// participant whose token lapsed is closed with 1008 and a reason saying
// which; a ringlb.v1 client refreshes its token before then
// ({"type":"token","token":T}: refreshToken), or joins again with a fresh
// one and resumes, losing nothing. Revocation (revoke.go) closes holders
// the same way.
//
// Expiry costs no timer of its own: the participant's ping timer waits
// until the token's expiry when that comes before the next ping, and its
// callback closes the participant instead of pinging (the callback arms
// the timer again each time, whether or not the ping could be written:
// participant.pingDue; a refresh arms it for the token it brings). Each
// message the participant sends is looked at too, once it has arrived
// whole (participant.received) and as it goes out (relays): a lapsed
// token writes nothing more, even in the moment before the timer's
// callback runs. A secret stops being accepted at a reload (every holder
// is looked at then) or when a rotation's overlap ends (Server.overlapEnd
// runs then).

// heldToken is a participant's verified join token and the secret it was
// verified with (the authState's own slice), so that the participant can
// be told when that secret is no longer accepted.
type heldToken struct {
	TokenClaims
	signer []byte
}

// Close reasons of a lapsed token.
const (
	lapseExpired = "token expired"
	lapseRotated = "token's secret rotated out"
)

// lapse says why p's token no longer admits at now under auth: "" while
// it does, and for a participant without a token. An edge whose reload
// turned auth off takes no token as a claim any more, so it closes none.
func (p *participant) lapse(now time.Time, auth *authState) string {
	t := p.token.Load()
	switch {
	case t == nil:
		return ""
	case !now.Before(t.Expires):
		return lapseExpired
	case auth.configured && !auth.accepts(t.signer, now):
		return lapseRotated
	}
	return ""
}

// closeIfLapsed closes p with 1008 when its token lapsed at now, and
// reports whether it did. It never blocks (stop does not).
func (p *participant) closeIfLapsed(now time.Time) bool {
	s := p.srv
	reason := p.lapse(now, s.auth.Load())
	if reason == "" || !p.stop(closePolicy, reason) {
		return false
	}
	if reason == lapseExpired {
		s.metrics.lapsedExpired.Inc()
	} else {
		s.metrics.lapsedRotated.Inc()
	}
	return true
}

// untilPing is how long from now p's ping timer waits: pingInterval, or
// until its token expires when that is sooner (pingDue then closes p).
func (p *participant) untilPing(now time.Time) time.Duration {
	d := p.srv.pingInterval
	if t := p.token.Load(); t != nil {
		if left := t.Expires.Sub(now); left < d {
			d = max(left, 0)
		}
	}
	return d
}

// closeLapsedHolders closes every participant whose token lapsed at now
// (after a reload changed the secrets accepted, or when an overlap ended)
// and returns how many.
func (s *Server) closeLapsedHolders(now time.Time) int {
	n := 0
	s.forTokenHolders(func(p *participant, _ *heldToken) {
		if p.closeIfLapsed(now) {
			n++
		}
	})
	return n
}

// tokenFrame answers a refresh: the fresh token's expiry (Unix seconds).
type tokenFrame struct {
	Type    string `json:"type"`
	Expires int64  `json:"expires"`
}

// refreshToken takes a fresh join token from a ringlb.v1 participant in
// place of the one it holds, so that its connection outlives the token it
// joined with, and answers {"type":"token","expires":E}. The fresh token
// must verify as a join would and be for the same session, user and role:
// a refresh extends who the participant is, never changes it (a viewer
// becomes an editor by joining as one). A refusal is an error frame, and
// the connection stays until the token it holds lapses. Run by the reader.
func (p *participant) refreshToken(token []byte) {
	s := p.srv
	cur := p.token.Load()
	if cur == nil {
		p.sendError("forbidden", "joined without a token: nothing to refresh (join again with one)")
		return
	}
	if len(token) == 0 {
		p.sendError("bad_request", "token needs its token")
		return
	}
	auth := s.auth.Load()
	if !auth.configured || auth.secret == nil {
		p.sendError("forbidden", "join tokens cannot be verified")
		return
	}
	now := time.Now()
	held, err := auth.verify(string(token), now, s.cfg.Auth.MaxTokenTTL.D())
	switch {
	case err != nil:
		p.sendError("forbidden", err.Error())
		return
	case held.Session != p.session.key:
		p.sendError("forbidden", "token is for another session")
		return
	case held.User != cur.User || held.Role != cur.Role:
		p.sendError("forbidden", "a refresh must be for the same user and role")
		return
	case s.revocations.revoked(&held.TokenClaims):
		s.metrics.revokedRefused.Inc()
		p.sendError("forbidden", "token revoked")
		return
	}
	p.token.Store(held)
	// A revocation recorded, or a reload done, between the checks above
	// and the store walked the holders with the token held before: look
	// again, as a join does once registered.
	s.revokedAfterRegister(p)
	if p.closeIfLapsed(time.Now()) || p.stopping() {
		return
	}
	// The ping timer waits for the expiry of the token it was armed with:
	// refreshed to one expiring sooner (an issuer cutting access short),
	// its holder read on past that until the next ping, up to
	// pingInterval later (TestRefreshedToShorterTokenClosedAtItsExpiry).
	p.out.mu.Lock()
	p.armPinger(time.Now())
	p.out.mu.Unlock()
	f := jsonFrame(tokenFrame{"token", held.Expires.Unix()})
	s.hub.deliver(p, f)
	f.release()
}
