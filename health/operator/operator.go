// Package operator is the admin plane the three roles share: who may use an
// admin port (Access: token, login, loopback, peers), login sessions, the
// audit log of every admin action, the state directory that keeps an
// operator's overrides across restarts, and the history of the node's own
// metrics behind the dashboard's charts.
//
// It is not an admin API: each role (balancer, sessions, gslb) mounts its
// own endpoints with Access and adds these. It imports health and configs
// only, so the roles, which never import each other, share it.
package operator

import (
	"crypto/rand"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/ringlb/ringlb/configs"
)

// Config is what a node's admin plane is made from.
type Config struct {
	// Node and Role name the node in records, events and the login page.
	Node, Role string
	// Admin is the role's admin section: its listen address (loopback or
	// not), users, history interval and state directory.
	Admin configs.Admin
	// Registry is the node's own: History samples it and the admin plane's
	// metrics are registered in it. nil: a new one.
	Registry *prometheus.Registry
	// Series are the figures History keeps (each role's choice).
	Series []SeriesSpec
	Logger *slog.Logger
	// Home is where a login goes without a "next" (default /api/whoami;
	// the balancer's is its dashboard, /).
	Home string
}

// Node is one node's admin plane. Its only goroutine is History.Run, run by
// the caller (while its admin port serves).
type Node struct {
	name, role string
	home       string
	log        *slog.Logger
	Store      *Store
	Audit      *AuditLog
	// Logins is nil when nobody logs in on this port (no user, loopback).
	Logins *Logins
	// configuredUsers: users were configured at start (not only the
	// generated one), so a reload may replace them (ReloadUsers).
	configuredUsers bool
	// names are what a login may address the port by besides an IP
	// address and localhost (loginNames).
	names   []string
	History *History
	// configFile serves /api/config once UseConfigFile gave it one.
	configFile atomic.Pointer[ConfigFile]
	// answers are the slots of signed answers to peers' reads (answer.go).
	answers chan struct{}
}

// UseConfigFile serves f on /api/config (cmd/ringlb: the -config file).
func (n *Node) UseConfigFile(f *ConfigFile) { n.configFile.Store(f) }

// GeneratedUser is the user name of a generated password.
const GeneratedUser = "admin"

// generatedConcern is the state file holding a generated password's hash.
const generatedConcern = "admin-password"

type metrics struct {
	auditRecords     prometheus.Counter
	auditSuppressed  prometheus.Counter
	stateWriteErrors prometheus.Counter
	logins           *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry) *metrics {
	return &metrics{
		auditRecords: registered(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "ringlb_admin_audit_records_total",
			Help: "Admin actions recorded in the audit log (changes, logins, logouts)."})),
		auditSuppressed: registered(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "ringlb_admin_audit_suppressed_total",
			Help: "Refused logins not recorded in the audit log, over its rate limit."})),
		stateWriteErrors: registered(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "ringlb_admin_state_write_errors_total",
			Help: "Operator state or audit records that could not be written to cluster.state_dir (kept in memory)."})),
		logins: registered(reg, NewCounterVec(prometheus.CounterOpts{Name: "ringlb_admin_logins_total",
			Help: "Login attempts on the admin port, by result: ok, wrong, locked (too many failures), busy."}, "result", outcomeLabel[:]...)),
	}
}

// NewCounterVec is prometheus.NewCounterVec for a counter of one label
// whose values the code knows: each is exported at 0 from the start. A
// series that first appears at 1 is no increase to Prometheus, so an
// alert on increase(...) > 0 missed the first event of its kind — on a
// node that runs for months, often the only one. values are the code's
// own, never a request's: the series stay bounded.
func NewCounterVec(opts prometheus.CounterOpts, label string, values ...string) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(opts, []string{label})
	for _, value := range values {
		v.WithLabelValues(value)
	}
	return v
}

// registered registers c with reg and returns it — or the collector of the
// same name reg holds already (a second admin plane on one registry), so
// that what is counted is what a scrape reads.
func registered[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}

// New makes a node's admin plane. It does not fail: a state directory it
// cannot use is logged and the node keeps its state in memory (a node that
// serves beats one that refuses to start over its bookkeeping); bad users
// are caught by configs before a node starts.
func New(cfg Config) *Node {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := newMetrics(reg)
	n := &Node{name: cfg.Node, role: cfg.Role, home: cfg.Home, log: log, names: loginNames(cfg.Admin), answers: make(chan struct{}, signedAnswerSlots)}
	if n.home == "" {
		n.home = "/api/whoami"
	}
	store, err := OpenStore(cfg.Admin.StateDir)
	if err != nil {
		log.Error("operator state is kept in memory only: a restart forgets drains, overrides and logins", "err", err)
		store = &Store{}
	}
	store.log = log
	n.Store = store
	n.Audit = newAuditLog(cfg.Node, store.Dir(), log, m)
	interval := cfg.Admin.HistoryInterval.D()
	if interval <= 0 {
		interval = configs.DefaultHistoryInterval
	}
	n.History = newHistory(cfg.Node, cfg.Role, reg, cfg.Series, interval, log)
	n.Audit.onRecord = n.History.auditEvent

	users, err := cfg.Admin.Users()
	if err != nil {
		log.Error("admin users not read: nobody can log in", "err", err)
		users = map[string][]byte{}
	}
	n.configuredUsers = len(users) > 0
	var inherited adminHandOff
	if len(cfg.Admin.Inherited) > 0 {
		if err := json.Unmarshal(cfg.Admin.Inherited, &inherited); err != nil {
			log.Warn("the admin state of the process this one replaced is unreadable: a generated password is made anew, and everyone logs in again", "err", err)
			inherited = adminHandOff{}
		}
	}
	if len(users) == 0 && !loopbackListen(cfg.Admin.Listen) {
		if hash := n.generatedPassword(inherited.Hash); hash != nil {
			users[GeneratedUser] = hash
		}
	}
	if len(users) > 0 {
		n.Logins = newLogins(users, store, inherited.Sessions, n.Audit, log, m)
	}
	return n
}

// generatedHash is the generated password as the state directory keeps
// it: its bcrypt hash.
type generatedHash struct {
	Hash string `json:"hash"`
}

// adminHandOff is the admin plane's part of an upgrade's start state
// (configs.Admin.Inherited, HandOff): what, without a state directory,
// only the process's memory keeps. A child of an earlier release reads
// its hash and ignores the rest.
type adminHandOff struct {
	// Hash is the generated password's bcrypt hash.
	Hash string `json:"hash,omitempty"`
	// Sessions are the login sessions, a savedSession list (hashes of the
	// cookies, as the state file keeps them): without them each upgrade
	// logged every operator out.
	Sessions json.RawMessage `json:"sessions,omitempty"`
}

// generatedPassword is the hash of the password of the user "admin" on a
// port beyond loopback with no user configured: read from the state
// directory, else the one of the process this one replaced by an upgrade
// (inherited, HandOff), or made now and logged once. Without a
// state directory it is made (and logged) at every start but an upgrade.
func (n *Node) generatedPassword(inherited string) []byte {
	var saved generatedHash
	err := n.Store.Load(generatedConcern, &saved)
	if err == nil {
		if _, cerr := bcrypt.Cost([]byte(saved.Hash)); cerr == nil {
			return []byte(saved.Hash)
		}
		err = errors.New("not a bcrypt hash")
	}
	if !errors.Is(err, ErrNoState) {
		n.log.Warn("the generated admin password's hash is unreadable: a new password is made", "err", err)
	}
	if inherited != "" {
		if _, err := bcrypt.Cost([]byte(inherited)); err == nil {
			if n.Store.Dir() != "" {
				if err := n.Store.Save(generatedConcern, generatedHash{Hash: inherited}); err != nil {
					n.log.Error("the generated admin password's hash not saved yet: a start before it is written makes another", "err", err)
				}
			}
			n.log.Info("the generated admin password is the one of the process this one replaced", "user", GeneratedUser)
			return []byte(inherited)
		}
		n.log.Warn("the generated admin password of the process this one replaced is unreadable: a new password is made")
	}
	var raw [18]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails on Linux (it panics first)
	password := base64.RawURLEncoding.EncodeToString(raw[:])
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		n.log.Error("admin password not generated: log in with the token", "err", err)
		return nil
	}
	saved.Hash = string(hash)
	kept := "its hash is kept in " + n.Store.Dir() + "; it is not shown again"
	if n.Store.Dir() == "" {
		kept = "set cluster.state_dir to keep it, or admin.users_file to choose users: without, every start (an upgrade aside) makes a new one"
	} else if err := n.Store.Save(generatedConcern, saved); err != nil {
		n.log.Error("the generated admin password's hash not saved yet: a start before it is written makes another", "err", err)
	}
	// The one log line that carries a secret, by design (as CodeTogether's
	// server prints its generated password): the operator needs it once.
	n.log.Warn("no admin user is configured on an admin port beyond loopback: generated a password for the dashboard login",
		"user", GeneratedUser, "password", password, "note", kept)
	return hash
}

// HandOff is the admin plane's part of the start state of the process an
// upgrade starts (configs.Admin.Inherited): the generated password's hash,
// and the login sessions when no state directory keeps them for it (its
// files are the child's already); nil when there is nothing to carry.
func (n *Node) HandOff() []byte {
	if n == nil || n.Logins == nil {
		return nil
	}
	var part adminHandOff
	if hash, ok := (*n.Logins.users.Load())[GeneratedUser]; ok && !n.configuredUsers {
		part.Hash = string(hash)
	}
	if n.Store.Dir() == "" {
		if sessions := n.Logins.saved(); len(sessions) > 0 {
			part.Sessions, _ = json.Marshal(sessions) // strings and times always encode
		}
	}
	if part.Hash == "" && part.Sessions == nil {
		return nil
	}
	p, _ := json.Marshal(part) // as above
	return p
}

// loopbackListen reports whether an admin listen address is on loopback:
// its host, written as a Host names it (an IPv6 address in brackets, which
// SplitHostPort takes off), is one loopbackHost takes.
func loopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	return loopbackHost(net.JoinHostPort(host, ""))
}

// Close releases the audit log's file and writes once more the state a
// failed save left unwritten (Store.Close).
func (n *Node) Close() {
	if n != nil {
		n.Audit.close()
		n.Store.Close()
	}
}

// Mount registers the login page and actions and this node's audit log and
// history on an admin mux:
//
//	GET  /login, /login.css   the login form (open: it holds no data)
//	POST /login               user, password → a session cookie (rate-limited)
//	POST /logout              ends the session (Access.Write)
//	GET  /api/whoami          who the caller is to this port
//	GET  /api/audit?limit=N   this node's audit records, newest first (a balancer mounts its own, cluster-wide)
//	GET  /api/history?minutes=N  this node's history (likewise)
//	GET  /api/config, POST /api/config/check, PUT /api/config  the config file (ConfigFile)
//
// withHistoryAndAudit false leaves audit and history to the caller.
func (n *Node) Mount(mux *http.ServeMux, access Access, withHistoryAndAudit bool) {
	mux.HandleFunc("GET "+PathLogin, n.serveLoginPage)
	mux.HandleFunc("POST "+PathLogin, n.serveLogin)
	mux.HandleFunc("GET /login.css", func(w http.ResponseWriter, _ *http.Request) {
		loginHeaders(w)
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
		_, _ = w.Write(loginCSS)
	})
	mux.Handle("POST "+PathLogout, access.Write(http.HandlerFunc(n.serveLogout)))
	mux.Handle("GET /api/whoami", access.Read(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, map[string]any{"node": n.name, "who": Caller(r.Context()), "user": CallerUser(r.Context()), "logins": n.loginEnabled()})
	})))
	mux.Handle("GET /api/config", access.Read(http.HandlerFunc(n.serveConfig)))
	mux.Handle("POST /api/config/check", access.Write(http.HandlerFunc(n.serveConfigCheck)))
	mux.Handle("PUT /api/config", access.Write(http.HandlerFunc(n.servePutConfig)))
	if withHistoryAndAudit {
		mux.Handle("GET /api/audit", access.Read(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			WriteJSON(w, http.StatusOK, n.AuditView(r))
		})))
		mux.Handle("GET /api/history", access.Read(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			WriteJSON(w, http.StatusOK, n.History.View(Minutes(r)))
		})))
	}
}

// AuditView is GET /api/audit on this node.
type AuditView struct {
	Node    string   `json:"node"`
	Records []Record `json:"records"`
}

// DefaultAuditLimit is how many records GET /api/audit gives without ?limit.
const DefaultAuditLimit = 200

// AuditView answers GET /api/audit?limit=N (1 to the records kept in memory).
func (n *Node) AuditView(r *http.Request) AuditView {
	return AuditView{Node: n.name, Records: n.Audit.List(AuditLimit(r))}
}

// AuditLimit is a request's ?limit (DefaultAuditLimit when absent or bad).
func AuditLimit(r *http.Request) int {
	limit, err := strconv.Atoi(r.URL.Query().Get("limit"))
	if err != nil || limit <= 0 {
		return DefaultAuditLimit
	}
	return min(limit, auditMemoryRecords)
}

// Minutes is a request's ?minutes (1–60; 60 when absent or bad).
func Minutes(r *http.Request) int {
	m, err := strconv.Atoi(strings.TrimSpace(r.URL.Query().Get("minutes")))
	if err != nil || m <= 0 {
		return maxMinutes
	}
	return min(m, maxMinutes)
}

// String names the node in messages.
func (n *Node) String() string { return fmt.Sprintf("%s %s", n.role, n.name) }

// ReloadUsers checks a reload's admin users (admin as its check read them,
// configs.Admin.Users) and returns what applies them: the users of the
// file and the environment replace the port's, a removed user's sessions
// and those of a changed password ending at once (Logins.user). Whether
// the port takes logins is its start's: a reload that lists the first
// user, or none any more, is refused (section names the role's config
// section), as a users_file of another path is.
func (n *Node) ReloadUsers(section string, admin configs.Admin) (apply func(), err error) {
	if n == nil {
		return func() {}, nil
	}
	users, err := admin.Users()
	if err != nil {
		return nil, fmt.Errorf("%s.admin.users_file: %w", section, err)
	}
	switch {
	case len(users) > 0 && !n.configuredUsers:
		return nil, fmt.Errorf("%s.admin.users_file: lists %d users now, none at start: a port takes logins from its start (without users it keeps the loopback rule, or beyond loopback a generated password); restart the node to apply it", section, len(users))
	case len(users) == 0 && n.configuredUsers:
		return nil, fmt.Errorf("%s.admin.users_file: lists no user now: a port without users keeps the loopback rule, or beyond loopback generates a password, from its start; list a user, or restart the node to apply it", section)
	case len(users) == 0:
		return func() {}, nil // the generated user, if any, stays
	}
	return func() { n.Logins.SetUsers(users) }, nil
}
