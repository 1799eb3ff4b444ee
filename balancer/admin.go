package balancer

import (
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sort"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
)

// ServeAdmin serves the admin port on ln until Shutdown; it then returns nil.
//
//	GET /healthz           200 "ok" while the process serves (liveness; never token-protected)
//	GET /metrics           Prometheus text
//	GET /api/ring          {"node","version","members":[{name,url,weight,share}]}
//	GET /api/lookup?key=K  {"key","owner","url","version","candidates":[...],"table":{...},"routes_to"}
//	GET /api/nodes         {"node","ring_version","nodes":[...],"recent":[...]} (gossip members and static edges)
//	POST /api/nodes/{name}/drain  drains a static edge (on every balancer), or asks
//	                       a gossip edge to drain (through its admin API)
//	POST /api/nodes/{name}/undrain  ends a static edge's drain
//	POST /api/maintenance?state=on|off  on: the health path (/_ringlb/health)
//	                       answers 503 "maintenance" while traffic still flows, so
//	                       health checks (a GSLB's, a floating IP's) move clients
//	                       away before the balancer is stopped; off: back in
//	GET /api/maintenance   {"node","maintenance"}
//	GET /                  the dashboard (dashboard.go), with GET /api/cluster and /api/gslb/...
//
// Everything but /healthz and the page's static files follows
// health.AdminAccess: with balancer.admin.token_file set, "Authorization:
// Bearer <token>" (or, for reads, a peer's request signed with the cluster's
// key); without, a request addressed to a loopback IP. Every POST also needs
// the CSRF proof (the token, or X-Ringlb-Admin: 1, and a same-origin Origin).
func (b *Balancer) ServeAdmin(ln net.Listener) error {
	b.mu.Lock()
	closing := b.closing
	b.mu.Unlock()
	if closing {
		return ErrClosed
	}
	if err := b.admin.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (b *Balancer) newAdminServer() *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	access := b.adminAccess()
	mux.Handle("GET /metrics", access.Read(promhttp.HandlerFor(b.reg, promhttp.HandlerOpts{ErrorLog: nil})))
	mux.Handle("GET /api/ring", access.Read(http.HandlerFunc(b.serveRing)))
	mux.Handle("GET /api/lookup", access.Read(http.HandlerFunc(b.serveLookup)))
	mux.Handle("GET /api/nodes", access.Read(http.HandlerFunc(b.serveNodes)))
	mux.Handle("POST /api/nodes/{name}/drain", access.Write(http.HandlerFunc(b.serveDrain)))
	mux.Handle("POST /api/nodes/{name}/undrain", access.Write(http.HandlerFunc(b.serveUndrain)))
	mux.Handle("GET /api/maintenance", access.Read(http.HandlerFunc(b.serveMaintenance)))
	mux.Handle("POST /api/maintenance", access.Write(http.HandlerFunc(b.serveMaintenance)))
	b.handleDashboard(mux, access)
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: configs.DefaultRequestTimeout,
		IdleTimeout:       b.cfg.IdleTimeout.D(),
		ErrorLog:          slogErrorLog(b.log),
	}
}

// adminAccess is who may use the admin API: the operator's token (reloaded
// with the config) and peers signing with the cluster's key.
func (b *Balancer) adminAccess() health.AdminAccess {
	return health.AdminAccess{
		Token:   func() []byte { return b.current.Load().adminToken },
		Keyring: b.keyring,
	}
}

type ringMember struct {
	Name   string  `json:"name"`
	URL    string  `json:"url"`
	Weight int     `json:"weight"`
	Share  float64 `json:"share"`
}

// ringView is GET /api/ring.
type ringView struct {
	Node    string             `json:"node"`
	Version uint64             `json:"version"`
	Members []ringMember       `json:"members"`
	Shares  map[string]float64 `json:"shares"`
}

func (b *Balancer) ringView() ringView {
	snap := b.ring.Snapshot()
	shares := snap.Shares()
	members := []ringMember{}
	for _, m := range snap.Members() {
		members = append(members, ringMember{Name: m.Name, URL: m.URL, Weight: m.Weight, Share: shares[m.Name]})
	}
	sort.Slice(members, func(i, j int) bool { return members[i].Name < members[j].Name })
	return ringView{b.name, snap.Version(), members, shares}
}

func (b *Balancer) serveRing(w http.ResponseWriter, _ *http.Request) {
	health.WriteJSON(w, http.StatusOK, b.ringView())
}

// serveLookup answers which edge owns a key. The key is used as given (it
// is not hashed like a query-parameter key would be): operators look up the
// ctstickiness value an edge or a client reports.
func (b *Balancer) serveLookup(w http.ResponseWriter, r *http.Request) {
	key := r.URL.Query().Get("key")
	if key == "" {
		health.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "key query parameter is required"})
		return
	}
	snap := b.ring.Snapshot()
	out := map[string]any{"key": key, "version": snap.Version(), "candidates": []string{}, "table": nil}
	var buf [8]ring.Member
	candidates := []string{}
	for _, m := range snap.Candidates([]byte(key), buf[:0]) {
		candidates = append(candidates, m.Name)
	}
	out["candidates"] = candidates
	owner, onRing := snap.Locate([]byte(key))
	if onRing {
		out["owner"], out["url"] = owner.Name, owner.URL
	}
	routesTo := owner.Name
	if v, ok := b.table.view(xxhash.Sum64String(key), snap); ok {
		out["table"] = v
		if v.Routable {
			routesTo = v.Backend
		}
	}
	if routesTo == "" {
		out["error"] = "no edge on the ring"
		health.WriteJSON(w, http.StatusServiceUnavailable, out)
		return
	}
	out["routes_to"] = routesTo
	health.WriteJSON(w, http.StatusOK, out)
}

// serveMaintenance reports, and on POST sets, maintenance mode.
func (b *Balancer) serveMaintenance(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		switch state := r.FormValue("state"); state {
		case "on", "off":
			if on := state == "on"; b.maintenance.Swap(on) != on {
				b.log.Warn("maintenance mode changed", "maintenance", on, "health", HealthPath, "by", health.AdminCaller(r.Context()), "remote", r.RemoteAddr)
			}
		default:
			health.WriteJSON(w, http.StatusBadRequest, map[string]any{"error": fmt.Sprintf("state must be on or off, got %q", state)})
			return
		}
	}
	health.WriteJSON(w, http.StatusOK, map[string]any{"node": b.name, "maintenance": b.maintenance.Load()})
}

// slogErrorLog routes net/http's own error lines to slog.
func slogErrorLog(l *slog.Logger) *log.Logger { return slog.NewLogLogger(l.Handler(), slog.LevelWarn) }
