package balancer

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/operator"
)

// Cluster is what the balancer reads of gossip membership: the live nodes
// and the recent changes (admin API), and the edges' session pins (routing).
// *health.Membership is one.
type Cluster interface {
	Members() []health.Node
	// Subscribe notifies of membership changes (FollowCluster).
	Subscribe() (<-chan struct{}, func())
	Recent() []health.Event
	// PinnedTo names an edge hosting a session whose key hashes to h
	// although the ring gives it to another edge, other than those skip
	// names.
	PinnedTo(h uint64, skip ...string) (health.Node, bool)
	// Keyring is the cluster's key: peers sign their reads of this admin
	// port with it, and the dashboard signs its reads of theirs.
	Keyring() *health.Keyring
	// Node returns the live member named name (the session table checks
	// who sends it entries).
	Node(name string) (health.Node, bool)
	// OpenChannel carries the session table between balancers.
	OpenChannel(id byte, receive func(from string, payload []byte)) (*health.Channel, error)
}

// clusterRef holds the Cluster set by SetCluster (nil: no gossip, e.g. static
// edges only).
type clusterRef struct{ atomic.Pointer[Cluster] }

// SetCluster gives the admin API the membership behind /api/nodes and
// /api/nodes/{name}/drain. Call it before ServeAdmin.
func (b *Balancer) SetCluster(c Cluster) {
	b.cluster.Store(&c)
	b.op.History.WatchMembership(c.Recent) // membership changes marked on the charts
}

func (b *Balancer) clusterOrNil() Cluster {
	if c := b.cluster.Load(); c != nil {
		return *c
	}
	return nil
}

// keyring is the cluster's key, nil without a cluster (or a key).
func (b *Balancer) keyring() *health.Keyring {
	if c := b.clusterOrNil(); c != nil {
		return c.Keyring()
	}
	return nil
}

type nodeView struct {
	Name   string `json:"name"`
	Role   string `json:"role"`
	Region string `json:"region,omitempty"`
	State  string `json:"state"`
	URL    string `json:"url,omitempty"`
	Admin  string `json:"admin,omitempty"`
	Weight int    `json:"weight,omitempty"`
	Gossip string `json:"gossip,omitempty"`
	// OnRing says whether this balancer routes to the node now.
	OnRing bool    `json:"on_ring"`
	Share  float64 `json:"share,omitempty"`
	// DrainDeadline is when a draining static edge's remaining sessions
	// move.
	DrainDeadline *time.Time `json:"drain_deadline,omitempty"`
}

type eventView struct {
	Kind  string    `json:"kind"`
	Node  string    `json:"node"`
	Role  string    `json:"role"`
	State string    `json:"state"`
	At    time.Time `json:"at"`
}

// serveNodes: GET /api/nodes → {"node","nodes":[...],"recent":[...]}; static
// edges are listed with role "edge" and state "static".
func (b *Balancer) serveNodes(w http.ResponseWriter, _ *http.Request) {
	nodes, recent, version := b.nodeViews()
	operator.WriteJSON(w, http.StatusOK, map[string]any{"node": b.name, "ring_version": version, "nodes": nodes, "recent": recent})
}

// nodeViews lists the gossip members and static edges, the recent
// membership changes and the ring version they were read with.
func (b *Balancer) nodeViews() ([]nodeView, []eventView, uint64) {
	snap := b.ring.Snapshot()
	shares := snap.Shares()
	var nodes []nodeView
	var recent []eventView
	seen := map[string]bool{}
	if c := b.clusterOrNil(); c != nil {
		for _, n := range c.Members() {
			_, on := shares[n.Name]
			nodes = append(nodes, nodeView{Name: n.Name, Role: string(n.Meta.Role), Region: n.Meta.Region, State: string(n.Meta.State),
				URL: n.Meta.URL, Admin: n.Meta.Admin, Weight: n.Meta.Weight, Gossip: n.Addr, OnRing: on, Share: shares[n.Name]})
			seen[n.Name] = true
		}
		for _, e := range c.Recent() {
			recent = append(recent, eventView{Kind: e.Kind, Node: e.Node.Name, Role: string(e.Node.Meta.Role), State: string(e.Node.Meta.State), At: e.At})
		}
	}
	for _, m := range snap.Members() {
		if !seen[m.Name] {
			seen[m.Name] = true
			nodes = append(nodes, nodeView{Name: m.Name, Role: "edge", State: "static", URL: m.URL, Weight: m.Weight, OnRing: true, Share: shares[m.Name]})
		}
	}
	// Static edges off the ring: draining (their live sessions stay until
	// the deadline) or down.
	if st := b.static.Load(); st != nil {
		for _, e := range st.edges {
			if seen[e.member.Name] {
				continue
			}
			v := nodeView{Name: e.member.Name, Role: "edge", State: "down", URL: e.member.URL, Weight: e.member.Weight}
			if up, _ := e.prober.Up(); up {
				if draining, deadline := b.staticDrain(e); draining {
					v.State, v.DrainDeadline = "draining", &deadline
				}
			}
			nodes = append(nodes, v)
		}
	}
	return nodes, recent, snap.Version()
}

// serveDrain: POST /api/nodes/{name}/drain. A static edge drains here and
// on every balancer of the cluster (the session table carries it): no new
// keys; its live sessions stay until they end or the deadline (?deadline=
// a duration, default balancer.session_table.drain_deadline). A gossip
// edge is asked (through its own admin API, whose address it gossips) to
// drain: it leaves the ring for new sessions and hands its live ones over;
// the answer is the edge's. ?state=off on a static edge is an undrain.
func (b *Balancer) serveDrain(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, ok := b.static.Load().edge(name); ok {
		switch state := r.URL.Query().Get("state"); state {
		case "", "on", "off":
			b.drainStatic(w, r, name, state != "off")
		default:
			operator.Describe(r.Context(), "drain", name+" "+state)
			operator.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("state must be on or off, got %q", state)})
		}
		return
	}
	operator.Describe(r.Context(), "drain", name)
	c := b.clusterOrNil()
	if c == nil {
		operator.WriteJSON(w, http.StatusNotFound, map[string]string{"error": "this balancer has no gossip membership; drain the edge on its own admin port"})
		return
	}
	var target *health.Node
	for _, n := range c.Members() {
		if n.Name == name {
			target = &n
			break
		}
	}
	switch {
	case target == nil:
		operator.WriteJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no live node named %q", name)})
		return
	case target.Meta.Role != health.RoleEdge:
		operator.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("%s is a %s; only edges drain", name, target.Meta.Role)})
		return
	case target.Meta.Admin == "":
		operator.WriteJSON(w, http.StatusBadGateway, map[string]string{"error": fmt.Sprintf("%s does not advertise an admin address", name)})
		return
	}
	code, body, err := b.callPeer(r.Context(), http.MethodPost, target.Name, strings.TrimSuffix(target.Meta.Admin, "/")+"/api/drain", r)
	if err != nil {
		operator.WriteJSON(w, http.StatusBadGateway, map[string]string{"error": fmt.Sprintf("ask %s to drain: %v", name, err)})
		return
	}
	b.log.Info("drain requested through the admin API", "edge", name, "status", code, "by", operator.Caller(r.Context()), "remote", r.RemoteAddr)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(body)
}

// serveUndrain: POST /api/nodes/{name}/undrain ends a static edge's drain
// by the admin API (on every balancer); a weight of 0 in the config stays.
func (b *Balancer) serveUndrain(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	operator.Describe(r.Context(), "drain", name+" off")
	if _, ok := b.static.Load().edge(name); !ok {
		operator.WriteJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no static edge named %q (a gossip edge ends its drain itself)", name)})
		return
	}
	b.drainStatic(w, r, name, false)
}

// drainStatic starts or ends a static edge's drain and answers with its
// state.
func (b *Balancer) drainStatic(w http.ResponseWriter, r *http.Request, name string, on bool) {
	state := "off"
	if on {
		state = "on"
	}
	operator.Describe(r.Context(), "drain", name+" "+state)
	after := b.table.settings.Load().drainAfter
	if v := r.URL.Query().Get("deadline"); v != "" && on {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second || d > 720*time.Hour {
			operator.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "deadline must be a duration in range [1s, 720h], e.g. 30m"})
			return
		}
		after = d
	}
	deadline := time.Now().Add(after)
	b.table.setDrain(name, on, deadline)
	b.log.Warn("static edge drain changed through the admin API", "edge", name, "draining", on, "deadline", deadline, "by", operator.Caller(r.Context()), "remote", r.RemoteAddr)
	e, _ := b.static.Load().edge(name)
	draining, dl := b.staticDrain(e)
	out := map[string]any{"node": b.name, "edge": name, "static": true, "draining": draining}
	if draining {
		out["deadline"] = dl
	}
	// Accepted: the other balancers take the change as the table carries it.
	operator.WriteJSON(w, http.StatusAccepted, out)
}
