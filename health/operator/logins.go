package operator

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/time/rate"

	"github.com/ringlb/ringlb/balancer/acceptguard"
	"github.com/ringlb/ringlb/configs"
)

// Logins are the operators who log in to an admin port with a user name and
// a password (*.admin.users_file, or the generated "admin"), and their
// sessions: a random cookie per login, kept by its SHA-256 (the state file
// never holds a usable cookie), valid for SessionTTL.
type Logins struct {
	users atomic.Pointer[map[string][]byte] // name → bcrypt hash
	store *Store
	audit *AuditLog
	log   *slog.Logger
	now   func() time.Time
	// checks bounds the bcrypt comparisons running at once: each costs tens
	// of milliseconds of CPU, and anyone may ask for one.
	checks chan struct{}
	rate   *rate.Limiter // checksPerSecond
	// unknownHash is what a name that is no user's is checked against
	// (unknownHashFor), replaced with the users.
	unknownHash atomic.Pointer[[]byte]
	// nameKey keys the fingerprints of names that are no user's (who).
	nameKey [32]byte
	results *prometheus.CounterVec

	mu       sync.Mutex
	sessions map[[sha256.Size]byte]session
	// Failed logins per client network and per user name, in the window.
	byAddr, byUser map[string]*failures
	// known: the networks each user has logged in from (the last success),
	// which the user name's failure count does not refuse.
	known map[knownNetwork]time.Time
	// order has the sessions' snapshots, numbered under mu, written in
	// their order (write).
	order SaveOrder
	// held says why no session begins or ends now (Hold); "": they do.
	held string
	// unsaved counts the sessions' changes whose save has not ended (Hold
	// waits for them).
	unsaved sync.WaitGroup
}

// knownNetwork is a client network a user has logged in from.
type knownNetwork struct {
	User    string `json:"user"`
	Network string `json:"network"`
}

// savedNetwork is a knownNetwork as the state file keeps it.
type savedNetwork struct {
	knownNetwork
	Last time.Time `json:"last"`
}

// savedSession is a session as the state file keeps it.
type savedSession struct {
	ID string `json:"id"` // hex SHA-256 of the cookie
	session
}

type session struct {
	User    string    `json:"user"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	// PasswordID names the user's password hash at the login
	// (passwordID): a session ends when the password changes.
	PasswordID string `json:"password_id"`
	// plainOverTLS: the session's SessionCookie came over TLS and was
	// ignored, which is recorded once a session (ignoredOverTLS).
	plainOverTLS bool
}

// passwordID names a user's bcrypt hash in a session: hex of the first 16
// bytes of its SHA-256 — enough to tell a changed password, too little to
// stand for the hash (which the state directory never holds).
func passwordID(hash []byte) string {
	sum := sha256.Sum256(hash)
	return hex.EncodeToString(sum[:16])
}

type failures struct {
	count int
	since time.Time
}

// Login rules.
const (
	// SessionCookie is the login session's cookie: HttpOnly (no script
	// reads it), SameSite=Strict (no other site's request carries it),
	// Path=/; over TLS (overTLS) it is SessionHostCookie, Secure.
	SessionCookie = configs.CookieAdmin
	// SessionHostCookie is the session cookie of a login over TLS
	// (overTLS), the only one taken over TLS and taken before
	// SessionCookie otherwise: a name no other host can set.
	SessionHostCookie = configs.CookieAdminHost
	// SessionTTL is how long a login lasts.
	SessionTTL = 12 * time.Hour
	// maxSessions bounds the sessions kept; a login beyond it ends the
	// oldest.
	maxSessions = 256
	// failuresAllowed failed logins per client network, and per user name,
	// within failureWindow; more are refused with 429 until the window
	// ends, without checking the password. The name's count does not
	// refuse a network the user has logged in from before (knownNetworks):
	// anyone may send a name's wrong passwords, and the lockout must not
	// become a way to keep its operator out.
	failuresAllowed = 5
	failureWindow   = 5 * time.Minute
	// maxFailureEntries bounds each failure table (one entry per network
	// or name tried).
	maxFailureEntries = 4096
	// concurrentChecks is how many bcrypt comparisons run at once; a login
	// that finds them all busy for checkWait is answered 503.
	concurrentChecks = 2
	checkWait        = 2 * time.Second
	// checksPerSecond (burst checkBurst) bounds the password checks of a
	// port overall: a spray of logins for new names from new networks
	// escapes both failure tables, and each check costs tens of
	// milliseconds of CPU. Beyond it a login is answered 503 unchecked;
	// operators log in a few times a day.
	checksPerSecond = 2
	checkBurst      = 5
	// knownNetworkTTL is how long a network a user logged in from stays
	// known after its last login; maxKnownPerUser and maxKnownNetworks bound
	// the table (the user's, then the whole table's, oldest is forgotten).
	// Only a login with the right password adds to it.
	knownNetworkTTL  = 30 * 24 * time.Hour
	maxKnownPerUser  = 16
	maxKnownNetworks = 256
	// maxLoginForm bounds a login request's body.
	maxLoginForm = 4 << 10
	// sessionsConcern is the state file of the sessions, and
	// knownNetworksConcern that of the networks users logged in from.
	sessionsConcern      = "sessions"
	knownNetworksConcern = "login-networks"
)

// PathLogin and PathLogout are the login page and the logout action.
const (
	PathLogin  = "/login"
	PathLogout = "/logout"
)

// newLogins starts the logins of users with the sessions the state
// directory keeps, or, without one, those of the process this one replaced
// by an upgrade (inherited, a savedSession list; nil when none).
func newLogins(users map[string][]byte, store *Store, inherited []byte, audit *AuditLog, log *slog.Logger, m *metrics) *Logins {
	l := &Logins{store: store, audit: audit, log: log, now: time.Now, checks: make(chan struct{}, concurrentChecks), rate: rate.NewLimiter(checksPerSecond, checkBurst),
		results: m.logins, sessions: map[[sha256.Size]byte]session{}, byAddr: map[string]*failures{}, byUser: map[string]*failures{},
		known: map[knownNetwork]time.Time{}}
	l.users.Store(&users)
	unknown := unknownHashFor(users, nil)
	l.unknownHash.Store(&unknown)
	_, _ = rand.Read(l.nameKey[:])
	// Held to the cap of a live node, the newest kept, as newSession
	// would have: a file of more was restored whole, and a login then
	// ended only the oldest, never bringing the table back under it.
	now := l.now()
	// A login lasts SessionTTL from its creation (newSession): one that
	// claims to be created later than now (a minute of clock skew aside)
	// or to last longer was not made by a login here.
	valid := func(s savedSession) bool {
		b, err := hex.DecodeString(s.ID)
		return err == nil && len(b) == sha256.Size && s.Expires.After(now) &&
			!s.Created.After(now.Add(time.Minute)) && s.Expires.Sub(s.Created) <= SessionTTL
	}
	newer := func(a, b savedSession) bool { return a.Created.After(b.Created) }
	load := func() ([]savedSession, error) {
		return loadNewest(store, sessionsConcern, maxSessions, valid, newer)
	}
	if store.Dir() == "" && inherited != nil {
		// Held to the rules of the state file: the hand-off's file is
		// this user's as the state directory is, and no more believed.
		load = func() ([]savedSession, error) {
			return decodeNewest(inherited, "login sessions of the process this one replaced", maxSessions, valid, newer)
		}
	}
	switch saved, err := load(); {
	case errors.Is(err, ErrNoState):
	case err != nil:
		log.Warn("login sessions not restored: everyone logs in again", "err", err)
	default:
		for _, s := range saved {
			var id [sha256.Size]byte
			hex.Decode(id[:], []byte(s.ID))
			l.sessions[id] = s.session
		}
	}
	// The same for the networks users logged in from: the newest, at most
	// maxKnownPerUser of a user, as remember keeps them.
	recent := func(k savedNetwork) bool { return now.Sub(k.Last) < knownNetworkTTL }
	later := func(a, b savedNetwork) bool { return a.Last.After(b.Last) }
	switch networks, err := loadNewest(store, knownNetworksConcern, maxKnownNetworks, recent, later); {
	case errors.Is(err, ErrNoState):
	case err != nil:
		log.Warn("networks users logged in from not restored: a locked user name refuses them until their next login", "err", err)
	default:
		perUser := map[string]int{}
		for _, k := range networks {
			if perUser[k.User] < maxKnownPerUser {
				perUser[k.User]++
				l.known[k.knownNetwork] = k.Last
			}
		}
	}
	return l
}

// SetUsers replaces the users (a reload); sessions of users no longer
// listed, or whose password changed, stop working at once. The change is
// logged by name.
func (l *Logins) SetUsers(users map[string][]byte) {
	unknown := unknownHashFor(users, *l.unknownHash.Load())
	l.unknownHash.Store(&unknown)
	old := *l.users.Swap(&users)
	var added, removed, changed []string
	for name, hash := range users {
		switch was, ok := old[name]; {
		case !ok:
			added = append(added, name)
		case !bytes.Equal(was, hash):
			changed = append(changed, name)
		}
	}
	for name := range old {
		if _, ok := users[name]; !ok {
			removed = append(removed, name)
		}
	}
	if len(added)+len(removed)+len(changed) > 0 {
		slices.Sort(added)
		slices.Sort(removed)
		slices.Sort(changed)
		l.log.Info("admin users reloaded: the sessions of removed users and of changed passwords ended", "added", added, "removed", removed, "password_changed", changed)
	}
}

// unknownHashFor is the hash a name that is no user's is checked against:
// of a random password, at the users' cost (the commonest, the higher of
// two as common), so that it costs the time a user's wrong password does
// and a login's answer does not tell which names are users. It is made
// anew only when the users' cost is not current's: at the start, and after
// a reload that gave the users stronger (or weaker) hashes — before, the
// start's cost stayed, and a name answered in a fraction of a user's time.
func unknownHashFor(users map[string][]byte, current []byte) []byte {
	count := map[int]int{}
	cost := bcrypt.DefaultCost
	for _, h := range users {
		if c, err := bcrypt.Cost(h); err == nil {
			count[c]++
			if count[c] > count[cost] || count[c] == count[cost] && c > cost {
				cost = c
			}
		}
	}
	if c, err := bcrypt.Cost(current); err == nil && c == cost {
		return current
	}
	var random [18]byte
	_, _ = rand.Read(random[:]) // crypto/rand.Read never fails on Linux (it panics first)
	// A cost bcrypt.Cost read (or the default) is within bcrypt's range.
	hash, _ := bcrypt.GenerateFromPassword(random[:], cost)
	return hash
}

// loginEnabled reports whether callers log in on this port.
func (n *Node) loginEnabled() bool { return n != nil && n.Logins != nil }

// user returns the logged-in user of a request's session cookie.
func (l *Logins) user(r *http.Request) (string, bool) {
	id, ok := cookieID(r)
	if !ok {
		l.ignoredOverTLS(r)
		return "", false
	}
	return l.sessionUser(id)
}

// ignoredOverTLS logs and records, once a session, a valid SessionCookie
// that came over TLS alone and stood for nobody (sessionCookies): the
// operators learn whose session was planted, or why one of them, holding a
// cookie of a plain-HTTP login, was sent to log in again.
func (l *Logins) ignoredOverTLS(r *http.Request) {
	if !overTLS(r) {
		return
	}
	for _, c := range r.CookiesNamed(SessionCookie) {
		id, ok := sessionID(c.Value)
		if !ok {
			continue
		}
		user, ok := l.sessionUser(id)
		if !ok {
			continue
		}
		l.mu.Lock()
		s, ok := l.sessions[id]
		first := ok && !s.plainOverTLS
		if first {
			s.plainOverTLS = true
			l.sessions[id] = s
		}
		l.mu.Unlock()
		if !first {
			continue
		}
		l.log.Warn("admin session cookie "+SessionCookie+" ignored over TLS, where only "+SessionHostCookie+
			" is taken: planted by another host of the domain or a man in the middle, or left from a login over plain HTTP", "user", user, "remote", r.RemoteAddr)
		// Recorded as a refused login: rate-limited like them.
		l.audit.AddRefused(Record{Who: SessionCookie + " over TLS", Remote: r.RemoteAddr, Action: "login",
			Target: CallerUserPrefix + user, Result: http.StatusUnauthorized})
	}
}

// sessionUser is the logged-in user of the session id.
func (l *Logins) sessionUser(id [sha256.Size]byte) (string, bool) {
	l.mu.Lock()
	s, ok := l.sessions[id]
	l.mu.Unlock()
	if !ok || !l.now().Before(s.Expires) {
		return "", false
	}
	// A session of a user no longer listed, or of a password changed
	// since (a reload, or a restart with the file changed), ends: before,
	// a password changed for a compromise left the sessions it had made.
	if hash, listed := (*l.users.Load())[s.User]; !listed || s.PasswordID != passwordID(hash) {
		return "", false
	}
	return s.User, true
}

// ambiguousCookies refuses a request with more than one session cookie.
const ambiguousCookies = "more than one " + SessionCookie + " cookie: another site of this domain may have set one to pass for your session; clear this site's cookies in the browser and log in again"

// ambiguous reports whether r carries more than one session cookie, and
// records the refusal with the users of the valid sessions among them.
// Cookie tossing: a sibling host name (a.example.com beside
// admin.example.com), anything else that sets cookies for a parent domain,
// or a man in the middle of a plain-HTTP page of the host sets
// ringlb_admin=<a session of its own> with Domain=.example.com and a longer
// Path; the browser sends both, the more specific path first, and the
// operator's reads and changes ran as the planted session (login CSRF:
// their changes audited as another user's, that user shown what they
// submit). Which one the operator's is cannot be told, so neither is taken.
func (l *Logins) ambiguous(r *http.Request) bool {
	cookies := sessionCookies(r)
	if len(cookies) < 2 {
		return false
	}
	var users []string
	for _, c := range cookies {
		if id, ok := sessionID(c.Value); ok {
			if user, ok := l.sessionUser(id); ok {
				users = append(users, CallerUserPrefix+user)
			}
		}
	}
	// Recorded as a refused login: rate-limited like them (anyone may
	// send two cookies), and the operators learn whose session was
	// planted.
	l.audit.AddRefused(Record{Who: "several session cookies", Remote: r.RemoteAddr, Action: "login",
		Target: strings.Join(users, " "), Result: http.StatusUnauthorized})
	return true
}

// sessionCookies are a request's session cookies of the one name taken.
// SessionHostCookie comes first: beside it, a SessionCookie may be anyone's
// that could set cookies for the domain. Over TLS it is the only one: a
// login there sets it, so a SessionCookie alone was planted (a sibling
// host's Domain cookie, a man in the middle of a plain-HTTP page) or is
// left from a login over plain HTTP, and a browser that never logged in
// was the planter's. Over plain HTTP a SessionCookie is taken: behind a TLS
// proxy a browser's reads say no Origin (overTLS), and a plain-HTTP port
// has no other.
func sessionCookies(r *http.Request) []*http.Cookie {
	cookies := r.CookiesNamed(SessionHostCookie)
	if len(cookies) == 0 && !overTLS(r) {
		cookies = r.CookiesNamed(SessionCookie)
	}
	return cookies
}

// cookieID is the session key of a request's cookie (sessionCookies): the
// SHA-256 of its 32 random bytes.
func cookieID(r *http.Request) ([sha256.Size]byte, bool) {
	cookies := sessionCookies(r)
	if len(cookies) == 0 {
		return [sha256.Size]byte{}, false
	}
	return sessionID(cookies[0].Value)
}

// sessionID is the session key of a cookie's value.
func sessionID(value string) ([sha256.Size]byte, bool) {
	if len(value) != base64.RawURLEncoding.EncodedLen(32) {
		return [sha256.Size]byte{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil {
		return [sha256.Size]byte{}, false
	}
	return sha256.Sum256(raw), true
}

// unknownUserPrefix begins the audit record's name of a login for a name
// that is no user of the port (Logins.who).
const unknownUserPrefix = "unknown user #"

// who names a login's caller in its audit record: a user of this port by
// name, any other text typed as the name only by a fingerprint of it (the
// first 4 bytes of an HMAC-SHA256 under a key of this process). What is
// typed there is often the password, one field too early, and the record
// is served to the operators and to every peer (GET /api/audit) and kept on
// disk. The same text gives the same fingerprint, so a name guessed again
// is told from a spray; without the key, which never leaves the process,
// no reader can test candidate passwords against one.
func (l *Logins) who(typed string) string {
	if typed == "" {
		return "-"
	}
	if _, known := (*l.users.Load())[typed]; known {
		return CallerUserPrefix + typed
	}
	mac := hmac.New(sha256.New, l.nameKey[:])
	mac.Write([]byte(typed))
	return unknownUserPrefix + hex.EncodeToString(mac.Sum(nil)[:4])
}

// loginOutcome is what one login attempt came to.
type loginOutcome int

const (
	loginOK loginOutcome = iota
	loginWrong
	loginLocked
	loginBusy
)

var outcomeLabel = [...]string{loginOK: "ok", loginWrong: "wrong", loginLocked: "locked", loginBusy: "busy"}

// attempt checks a user name and password from addr.
func (l *Logins) attempt(ctx context.Context, user, password, addr string) loginOutcome {
	net := clientNetwork(addr)
	now := l.now()
	l.mu.Lock()
	// A network the user logged in from before is refused by its own
	// count only: five wrong passwords for a name, sent from anywhere, would
	// otherwise keep its operator out for as long as they are repeated. A
	// guesser there is held to that network's count and to the check rate;
	// guessers elsewhere are held to the name's count too.
	locked := l.failed(l.byAddr, net, now) >= failuresAllowed ||
		l.failed(l.byUser, user, now) >= failuresAllowed && !l.knownFrom(user, net, now)
	if !locked {
		// Counted as a failure before the check, given back unless it is
		// one: counted after it, every login sent at once with the first
		// passed the count above before any had failed, and was checked.
		l.fail(l.byAddr, net, now)
		l.fail(l.byUser, user, now)
	}
	l.mu.Unlock()
	if locked {
		return loginLocked
	}
	unchecked := func() {
		l.mu.Lock()
		l.unfail(l.byAddr, net)
		l.unfail(l.byUser, user)
		l.mu.Unlock()
	}
	if !l.rate.Allow() {
		unchecked()
		return loginBusy
	}
	wait, cancel := context.WithTimeout(ctx, checkWait)
	defer cancel()
	select {
	case l.checks <- struct{}{}:
	case <-wait.Done():
		unchecked()
		return loginBusy
	}
	hash, known := (*l.users.Load())[user]
	if !known {
		hash = *l.unknownHash.Load()
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(password))
	<-l.checks
	if err != nil || !known {
		return loginWrong // counted above
	}
	// A success clears neither count (it only gives back its own): the
	// name's counts guesses sent from anywhere, and a guesser elsewhere
	// keeps guessing while the operator logs in; both end with their
	// window.
	unchecked()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.remember(user, net, now)
	return loginOK
}

// knownFrom reports whether user logged in from network within
// knownNetworkTTL (l.mu held).
func (l *Logins) knownFrom(user, network string, now time.Time) bool {
	last, ok := l.known[knownNetwork{user, network}]
	return ok && now.Sub(last) < knownNetworkTTL
}

// remember records a login of user from network (l.mu held) and saves the
// table. It holds at most maxKnownPerUser networks of one user and
// maxKnownNetworks in all, forgetting the oldest logins first; only a
// login with the right password gets here, so no guesser fills it.
func (l *Logins) remember(user, network string, now time.Time) {
	k := knownNetwork{user, network}
	if _, ok := l.known[k]; !ok {
		var mine int
		var oldestMine, oldest knownNetwork
		var oldestMineAt, oldestAt time.Time
		for o, at := range l.known {
			if now.Sub(at) >= knownNetworkTTL {
				delete(l.known, o)
				continue
			}
			if o.User == user {
				if mine++; oldestMineAt.IsZero() || at.Before(oldestMineAt) {
					oldestMine, oldestMineAt = o, at
				}
			}
			if oldestAt.IsZero() || at.Before(oldestAt) {
				oldest, oldestAt = o, at
			}
		}
		switch {
		case mine >= maxKnownPerUser:
			delete(l.known, oldestMine)
		case len(l.known) >= maxKnownNetworks:
			delete(l.known, oldest)
		}
	}
	l.known[k] = now
	out := make([]savedNetwork, 0, len(l.known))
	for o, at := range l.known {
		out = append(out, savedNetwork{o, at.UTC()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Last.Before(out[j].Last) })
	// Written under l.mu: a few writes a day (one per login with the right
	// password), and two logins must not write their tables out of order.
	if err := l.store.Save(knownNetworksConcern, out); err != nil {
		l.log.Error("networks users logged in from not saved: after a restart a locked user name refuses them until their next login", "err", err)
	}
}

// failed is the count of failures of key in the current window (l.mu held).
func (l *Logins) failed(table map[string]*failures, key string, now time.Time) int {
	f := table[key]
	if f == nil || now.Sub(f.since) > failureWindow {
		return 0
	}
	return f.count
}

// fail counts a failure of key (l.mu held). A full table first forgets
// expired entries, then the oldest: an attacker spraying names or addresses
// gets no more memory, and at worst resets the count of an old entry.
func (l *Logins) fail(table map[string]*failures, key string, now time.Time) {
	f := table[key]
	if f == nil || now.Sub(f.since) > failureWindow {
		if f == nil && len(table) >= maxFailureEntries {
			var oldest string
			var oldestAt time.Time
			for k, v := range table {
				if now.Sub(v.since) > failureWindow {
					delete(table, k)
				} else if oldest == "" || v.since.Before(oldestAt) {
					oldest, oldestAt = k, v.since
				}
			}
			if len(table) >= maxFailureEntries {
				delete(table, oldest)
			}
		}
		f = &failures{since: now}
		table[key] = f
	}
	f.count++
}

// unfail gives back a failure fail counted for key (l.mu held): a login
// counted before its check that was not checked, or was right.
func (l *Logins) unfail(table map[string]*failures, key string) {
	if f := table[key]; f != nil && f.count > 0 {
		f.count--
	}
}

// clientNetwork is what failed logins are counted by: the client's IPv4
// address, or its IPv6 /64 (one host holds a whole /64), as the admin
// port's connections are (acceptguard.ClientNetwork).
func clientNetwork(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	return acceptguard.ClientNetwork(a).String()
}

// Hold makes every login and logout refused, saying why, until release:
// while an upgrade hands the node over, the new process starts from the
// sessions as they are now (the hand-off's, or the state file's), and a
// logout answered by the one exiting came back to life there. It returns
// once the changes made before it are saved. nil Logins: nothing to hold.
func (l *Logins) Hold(why string) (release func()) {
	if l == nil {
		return func() {}
	}
	l.mu.Lock()
	l.held = why
	l.mu.Unlock()
	l.unsaved.Wait()
	return func() {
		l.mu.Lock()
		l.held = ""
		l.mu.Unlock()
	}
}

// newSession starts a login session for user and returns its cookie value;
// held is why it did not (Hold).
func (l *Logins) newSession(user string) (value string, expires time.Time, held string) {
	var raw [32]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails on Linux (it panics first)
	now := l.now()
	s := session{User: user, Created: now.UTC(), Expires: now.Add(SessionTTL).UTC(), PasswordID: passwordID((*l.users.Load())[user])}
	l.mu.Lock()
	if l.held != "" {
		defer l.mu.Unlock()
		return "", time.Time{}, l.held
	}
	for id, old := range l.sessions {
		if !now.Before(old.Expires) {
			delete(l.sessions, id)
		}
	}
	if len(l.sessions) >= maxSessions {
		var oldest [sha256.Size]byte
		var at time.Time
		for id, old := range l.sessions {
			if at.IsZero() || old.Created.Before(at) {
				oldest, at = id, old.Created
			}
		}
		delete(l.sessions, oldest)
	}
	l.sessions[sha256.Sum256(raw[:])] = s
	l.unsaved.Add(1)
	l.mu.Unlock()
	l.save()
	return base64.RawURLEncoding.EncodeToString(raw[:]), s.Expires, ""
}

// endSession ends the session of a request's cookie; held is why it did
// not (Hold).
func (l *Logins) endSession(r *http.Request) (held string) {
	id, ok := cookieID(r)
	if !ok {
		return ""
	}
	l.mu.Lock()
	if l.held != "" {
		defer l.mu.Unlock()
		return l.held
	}
	_, had := l.sessions[id]
	delete(l.sessions, id)
	if had {
		l.unsaved.Add(1)
	}
	l.mu.Unlock()
	if had {
		l.save()
	}
	return ""
}

// save writes the sessions to the state directory, so a restart does not
// log everyone out, and ends one unsaved change.
func (l *Logins) save() {
	defer l.unsaved.Done()
	l.write(l.snapshot())
}

// snapshot is saved with its place in the order of snapshots.
func (l *Logins) snapshot() (uint64, []savedSession) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.order.Next(), l.savedLocked()
}

// write writes the sessions of snapshot seq, unless a later snapshot was
// written already. A login and a logout save at once, each writing after
// it took its snapshot: the login's, older, written last brought the
// logged-out session back after a restart, valid for the rest of its
// life. Not written under mu, which every request's cookie check takes.
func (l *Logins) write(seq uint64, sessions []savedSession) {
	l.order.Write(seq, func() {
		if err := l.store.Save(sessionsConcern, sessions); err != nil {
			l.log.Error("login sessions not saved yet: a restart before they are written reads the sessions saved before", "err", err)
		}
	})
}

// saved is the sessions as the state file (and an upgrade's hand-off)
// keeps them, oldest first.
func (l *Logins) saved() []savedSession {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.savedLocked()
}

// savedLocked is saved with l.mu held.
func (l *Logins) savedLocked() []savedSession {
	out := make([]savedSession, 0, len(l.sessions))
	for id, s := range l.sessions {
		out = append(out, savedSession{hex.EncodeToString(id[:]), s})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out
}

//go:embed login.html
var loginPage string

//go:embed login.css
var loginCSS []byte

var loginTemplate = template.Must(template.New("login").Parse(loginPage))

// serveLoginPage is GET /login: a form that POSTs to /login. It holds no
// data, so it is open to anyone.
func (n *Node) serveLoginPage(w http.ResponseWriter, r *http.Request) {
	n.renderLogin(w, http.StatusOK, "", r.URL.Query().Get("next"))
}

// renderLogin answers with the page; next is where the form goes after a
// login. Callers take it from the URL, or from a form they parsed within
// bounds, never with r.FormValue: that parses a multipart body of any size
// (32 MiB in memory, the rest to temporary files), for anyone, even on GET.
func (n *Node) renderLogin(w http.ResponseWriter, code int, message, next string) {
	loginHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_ = loginTemplate.Execute(w, map[string]any{
		"Node": n.name, "Role": n.role, "Next": n.localPath(next), "Error": message, "Enabled": n.loginEnabled(),
	})
}

// loginHeaders: the page posts a password, so it may not be framed
// (clickjacking) and it runs no script at all.
func loginHeaders(w http.ResponseWriter) {
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// same-origin, not no-referrer: under no-referrer a browser's form
	// POST says Origin: null, and the login's CSRF rule wants the origin.
	w.Header().Set("Referrer-Policy", "same-origin")
	w.Header().Set("Cache-Control", "no-store")
}

// localPath keeps a "next" target only when it is a path of this port: a
// login must not redirect a browser to another site (open redirect).
// Anything else goes to the port's home. Browsers read a backslash as a
// slash and drop tabs and newlines anywhere in a URL ("/<TAB>/evil" is
// "//evil", another host), so no control character or backslash passes.
func (n *Node) localPath(p string) string {
	if p == "" || !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || len(p) > 256 {
		return n.home
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == 0x7f || c == '\\' {
			return n.home
		}
	}
	return p
}

// serveLogin is POST /login (form fields user, password, next). A browser's
// form gets a redirect to next with the session cookie, or the page again
// with why; a client asking for JSON gets JSON.
func (n *Node) serveLogin(w http.ResponseWriter, r *http.Request) {
	jsonClient := strings.Contains(r.Header.Get("Accept"), "application/json")
	// Bounded before anything reads it: anyone may post here.
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginForm)
	next := r.URL.Query().Get("next") // the form's, once it is parsed
	answer := func(code int, msg string) {
		if jsonClient {
			WriteJSON(w, code, map[string]string{"error": msg})
			return
		}
		n.renderLogin(w, code, msg, next)
	}
	if !n.loginEnabled() {
		answer(http.StatusNotFound, "this admin port has no users: it is open from this host only")
		return
	}
	// Login CSRF: another site must not log a browser in as someone else.
	// A form of this very page sends Origin (or at least Sec-Fetch-Site:
	// same-origin); a script or curl sends neither.
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" || r.Header.Get("Sec-Fetch-Site") == "same-site" {
		answer(http.StatusForbidden, "cross-site login refused")
		return
	}
	if origin := r.Header.Get("Origin"); origin != "" && !sameOrigin(origin, r.Host) {
		answer(http.StatusForbidden, "cross-origin login refused")
		return
	}
	// DNS rebinding: a page that rebinds its own name to this port is
	// same-origin to that name, so the checks above pass it, and its
	// guesses would come from the operator's own address — five lock the
	// operator out (the failure tables count by address and by user). It
	// needs a name, the attacker's: a login names the port as its
	// operators do or not at all (addressedAs).
	if !addressedAs(r.Host, n.names) {
		answer(http.StatusForbidden, "log in by this admin port's IP address, localhost or a name in its admin.hosts")
		return
	}
	if err := r.ParseForm(); err != nil {
		answer(http.StatusBadRequest, "bad login form")
		return
	}
	next = r.Form.Get("next")
	user, password := r.PostForm.Get("user"), r.PostForm.Get("password")
	rec := Record{Who: n.Logins.who(user), Remote: r.RemoteAddr, Action: "login"}
	outcome := loginWrong
	if configs.ValidUserName(user) && len(password) <= 72 { // bcrypt's own limit
		outcome = n.Logins.attempt(r.Context(), user, password, r.RemoteAddr)
	}
	n.Logins.results.WithLabelValues(outcomeLabel[outcome]).Inc()
	switch outcome {
	case loginLocked:
		rec.Result = http.StatusTooManyRequests
		n.Audit.AddRefused(rec)
		w.Header().Set("Retry-After", strconv.Itoa(int(failureWindow.Seconds())))
		answer(http.StatusTooManyRequests, "too many failed logins: try again in a few minutes")
		return
	case loginBusy:
		rec.Result = http.StatusServiceUnavailable
		n.Audit.AddRefused(rec)
		w.Header().Set("Retry-After", "1")
		answer(http.StatusServiceUnavailable, "busy checking other logins: try again")
		return
	case loginWrong:
		rec.Result = http.StatusUnauthorized
		n.Audit.AddRefused(rec)
		answer(http.StatusUnauthorized, "wrong user or password")
		return
	}
	value, expires, held := n.Logins.newSession(user)
	if held != "" {
		rec.Result = http.StatusServiceUnavailable
		n.Audit.AddRefused(rec)
		w.Header().Set("Retry-After", "1")
		answer(http.StatusServiceUnavailable, held)
		return
	}
	name := SessionCookie
	if overTLS(r) {
		name = SessionHostCookie
	}
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/", Expires: expires, MaxAge: int(SessionTTL.Seconds()),
		HttpOnly: true, Secure: overTLS(r), SameSite: http.SameSiteStrictMode})
	rec.Result = http.StatusOK
	n.Audit.Add(rec)
	n.log.Info("admin login", "user", user, "remote", r.RemoteAddr)
	if jsonClient {
		WriteJSON(w, http.StatusOK, map[string]any{"user": user, "expires": expires})
		return
	}
	http.Redirect(w, r, n.localPath(next), http.StatusSeeOther)
}

// overTLS reports whether the browser reached the port over TLS, which
// makes the session cookie Secure (a browser sends it over TLS only, never
// in clear to an http:// URL of the host): the connection's own, or a
// proxy's in front of the port — an admin port serves plain HTTP, so TLS is
// nginx's or HAProxy's — which the page's Origin names. A client that
// misstates its Origin only marks its own cookie.
func overTLS(r *http.Request) bool {
	return r.TLS != nil || strings.HasPrefix(r.Header.Get("Origin"), "https://")
}

// serveLogout is POST /logout (behind Access.Write: the CSRF rule, an
// audit record): ends the session and clears the cookie.
func (n *Node) serveLogout(w http.ResponseWriter, r *http.Request) {
	Describe(r.Context(), "logout", CallerUser(r.Context()))
	if n.Logins != nil {
		if held := n.Logins.endSession(r); held != "" {
			w.Header().Set("Retry-After", "1")
			WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": held})
			return
		}
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: overTLS(r), SameSite: http.SameSiteStrictMode})
	// Both names, whichever the login set: a browser takes this one only
	// over TLS (Secure), and ignores it otherwise.
	http.SetCookie(w, &http.Cookie{Name: SessionHostCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	WriteJSON(w, http.StatusOK, map[string]bool{"logged_out": true})
}

// loginNames are the host names a login may address an admin port by
// besides IP addresses and localhost: admin.hosts and listen's own name,
// lower case, without a trailing dot.
func loginNames(admin configs.Admin) []string {
	names := make([]string, 0, len(admin.Hosts)+1)
	for _, h := range admin.Hosts {
		names = append(names, strings.ToLower(strings.TrimSuffix(h, ".")))
	}
	if host, _, err := net.SplitHostPort(admin.Listen); err == nil && host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			names = append(names, strings.ToLower(strings.TrimSuffix(host, ".")))
		}
	}
	return names
}

// addressedAs reports whether a request's Host names the admin port as
// its operators do: an IP address (which no page can rebind), localhost
// (which browsers resolve themselves), or one of names. No Host at all
// (HTTP/1.0) names nothing a page could rebind either.
func addressedAs(hostport string, names []string) bool {
	if hostport == "" {
		return true
	}
	name, ip, ok := requestHost(hostport)
	if !ok {
		return false
	}
	return ip.IsValid() || name == "localhost" || slices.Contains(names, strings.TrimSuffix(name, "."))
}
