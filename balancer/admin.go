package balancer

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/health/operator"
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
//	GET /api/history?minutes=N[&cluster=1]  this balancer's history (operator.History), or the cluster's
//	GET /api/audit[?cluster=1]  this balancer's audit records, or the cluster's merged
//	GET /login, POST /login, POST /logout, GET /api/whoami  (operator.Node.Mount)
//
// Everything but /healthz and the page's static files follows
// operator.Access: with balancer.admin.token_file set, "Authorization:
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
	// The history is sampled while the admin port serves.
	defer b.op.History.Start()()
	if err := b.admin.Serve(operator.Listener(ln, b.cfg.Admin, b.log, b.reg)); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// historySeries are the balancer's figures kept for the dashboard's charts
// (docs/CONTRACT.md, "Metrics").
var historySeries = []operator.SeriesSpec{
	{Name: "tunnels", Metric: "ringlb_balancer_connections_active", Kind: operator.Gauge},
	{Name: "requests_per_second", Metric: "ringlb_balancer_requests_total", Kind: operator.Rate},
	{Name: "backend_errors_per_second", Metric: "ringlb_balancer_backend_errors_total", Kind: operator.Rate},
	{Name: "rejected_per_second", Metric: "ringlb_balancer_rejected_connections_total", Kind: operator.Rate},
	{Name: "ring_members", Metric: "ringlb_balancer_ring_members", Kind: operator.Gauge},
}

// balancerConcern is the state file of the balancer's operator state.
const balancerConcern = "balancer"

// balancerState is what an operator set on this balancer that a restart
// must not forget: maintenance, and the static edges' admin drains (as the
// session table knows them, from here or from another balancer: stamped,
// so a peer's later change still wins once the table is shared again).
type balancerState struct {
	Maintenance  bool                        `json:"maintenance"`
	StaticDrains map[string]staticDrainState `json:"static_drains,omitempty"`
	// WeightZeroSince is when each static edge got weight 0 in the config
	// (its drain's clock), by name. An earlier release neither reads nor
	// writes it: its restarts start the clocks afresh, as they did.
	WeightZeroSince map[string]time.Time `json:"weight_zero_since,omitempty"`
}

// staticDrainState is one static edge's admin drain in cluster.state_dir.
type staticDrainState struct {
	On       bool      `json:"on"`
	Deadline time.Time `json:"deadline"`
	Stamp    int64     `json:"stamp"` // unix ns of the change
}

// restoreState applies the state saved in cluster.state_dir, before the
// ports serve: a balancer restarted during maintenance stays out of the
// health checks, a drained static edge off the ring.
func (b *Balancer) restoreState() {
	var st balancerState
	switch err := b.op.Store.Load(balancerConcern, &st); {
	case errors.Is(err, operator.ErrNoState):
		return
	case err != nil:
		b.log.Error("operator state not restored", "err", err)
		return
	}
	b.maintenance.Store(st.Maintenance)
	if len(st.WeightZeroSince) <= maxStateMembers {
		b.zeroSince, b.savedZeroSince = st.WeightZeroSince, st.WeightZeroSince
	}
	var drained []string
	for name, d := range st.StaticDrains {
		b.table.restoreDrain(name, drainState{on: d.On, deadline: d.Deadline.UnixNano(), stamp: d.Stamp})
		if d.On {
			drained = append(drained, name)
		}
	}
	if st.Maintenance || len(drained) > 0 {
		sort.Strings(drained)
		b.log.Warn("operator state restored", "maintenance", st.Maintenance, "drained_static_edges", drained)
	}
}

// saveState writes the operator state; a failure is logged (the change
// stands, in memory, and the Store writes it again).
func (b *Balancer) saveState() {
	seq, st := b.stateSnapshot()
	if b.beforeStateWrite != nil {
		b.beforeStateWrite()
	}
	// Maintenance switched on and off at once, or a drain saved beside
	// it: the older snapshot written last was what a restart came back to.
	b.saves.order.Write(seq, func() {
		if err := b.op.Store.Save(balancerConcern, st); err != nil {
			b.log.Error("operator state not saved yet: a restart before it is written would forget the change", "err", err)
		}
	})
}

// stateSnapshot is the operator state with its place in the order of
// snapshots (saveState).
func (b *Balancer) stateSnapshot() (uint64, balancerState) {
	b.saves.mu.Lock()
	defer b.saves.mu.Unlock()
	seq := b.saves.order.Next()
	st := balancerState{Maintenance: b.maintenance.Load(), WeightZeroSince: b.zeroSinceToSave()}
	for name, d := range b.table.drains.all() {
		if st.StaticDrains == nil {
			st.StaticDrains = map[string]staticDrainState{}
		}
		st.StaticDrains[name] = staticDrainState{On: d.on, Deadline: time.Unix(0, d.deadline), Stamp: d.stamp}
	}
	return seq, st
}

func (b *Balancer) newAdminServer() *http.Server {
	b.op = operator.New(operator.Config{Node: b.name, Role: "balancer", Admin: b.cfg.Admin, Registry: b.reg, Series: historySeries, Logger: b.log, Home: "/"})
	b.restoreState()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	access := b.adminAccess()
	mux.Handle("GET /metrics", access.Metrics(promhttp.HandlerFor(b.reg, promhttp.HandlerOpts{ErrorLog: nil})))
	mux.Handle("GET /api/ring", access.Read(http.HandlerFunc(b.serveRing)))
	mux.Handle("GET /api/lookup", access.Read(http.HandlerFunc(b.serveLookup)))
	mux.Handle("GET /api/nodes", access.Read(http.HandlerFunc(b.serveNodes)))
	mux.Handle("POST /api/nodes/{name}/drain", access.Write(http.HandlerFunc(b.serveDrain)))
	mux.Handle("POST /api/nodes/{name}/undrain", access.Write(http.HandlerFunc(b.serveUndrain)))
	mux.Handle("GET /api/maintenance", access.Read(http.HandlerFunc(b.serveMaintenance)))
	mux.Handle("POST /api/maintenance", access.Write(http.HandlerFunc(b.serveMaintenance)))
	b.op.Mount(mux, access, false)
	b.handleDashboard(mux, access)
	return operator.NewServer(mux, b.cfg.Admin, b.log)
}

// Operator is the admin plane of this node: cmd/ringlb gives it the config
// file (operator.Node.UseConfigFile) behind /api/config.
func (b *Balancer) Operator() *operator.Node { return b.op }

// adminAccess is who may use the admin API: the operator's token (reloaded
// with the config) and peers signing with the cluster's key.
func (b *Balancer) adminAccess() operator.Access {
	return operator.Access{
		Token:        func() []byte { return b.current.Load().adminToken },
		MetricsToken: func() []byte { return b.current.Load().metricsToken },
		Keyring:      b.keyring,
		Self:         b.name,
		Node:         b.op,
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
	operator.WriteJSON(w, http.StatusOK, b.ringView())
}

// serveLookup answers which edge owns a key. The key is used as given (it
// is not hashed like a query-parameter key would be): operators look up the
// ctstickiness value an edge or a client reports.
func (b *Balancer) serveLookup(w http.ResponseWriter, r *http.Request) {
	key := r.URL.Query().Get("key")
	if key == "" {
		operator.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "key query parameter is required"})
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
		operator.WriteJSON(w, http.StatusServiceUnavailable, out)
		return
	}
	out["routes_to"] = routesTo
	operator.WriteJSON(w, http.StatusOK, out)
}

// serveMaintenance reports, and on POST sets, maintenance mode.
func (b *Balancer) serveMaintenance(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		state := r.FormValue("state")
		operator.Describe(r.Context(), "maintenance", b.name+" "+state)
		switch state {
		case "on", "off":
			if on := state == "on"; b.maintenance.Swap(on) != on {
				b.saveState()
				b.log.Warn("maintenance mode changed", "maintenance", on, "health", HealthPath, "by", operator.Caller(r.Context()), "remote", r.RemoteAddr)
			}
		default:
			operator.WriteJSON(w, http.StatusBadRequest, map[string]any{"error": fmt.Sprintf("state must be on or off, got %q", state)})
			return
		}
	}
	operator.WriteJSON(w, http.StatusOK, map[string]any{"node": b.name, "maintenance": b.maintenance.Load()})
}
