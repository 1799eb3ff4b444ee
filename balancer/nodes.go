package balancer

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ringlb/ringlb/balancer/ring"
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
	// PinnedTo names the edge hosting a session whose key hashes to h
	// although the ring gives it to another edge.
	PinnedTo(h uint64) (health.Node, bool)
	// Keyring is the cluster's key: peers sign their reads of this admin
	// port with it, and the dashboard signs its reads of theirs.
	Keyring() *health.Keyring
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
			nodes = append(nodes, nodeView{Name: m.Name, Role: "edge", State: "static", URL: m.URL, Weight: m.Weight, OnRing: true, Share: shares[m.Name]})
			seen[m.Name] = true
		}
	}
	if d := b.drainedStatic.Load(); d != nil {
		for _, e := range b.current.Load().cfg.Edges {
			if (*d)[e.Name] && !seen[e.Name] {
				nodes = append(nodes, nodeView{Name: e.Name, Role: "edge", State: "drained", URL: e.URL, Weight: e.Weight})
			}
		}
	}
	return nodes, recent, snap.Version()
}

// serveDrain: POST /api/nodes/{name}/drain asks that edge (through its own
// admin API, whose address it gossips) to drain: it leaves the ring for new
// sessions and hands its live ones over. The answer is the edge's. A static
// edge of this balancer's config (not in gossip, nobody to ask) is taken off
// this balancer's ring instead, and ?state=off puts it back; that drain is
// kept in cluster.state_dir.
func (b *Balancer) serveDrain(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	operator.Describe(r.Context(), "drain", name)
	if b.isStatic(name) {
		b.drainStatic(w, r, name)
		return
	}
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
	code, body, err := b.callPeer(r.Context(), http.MethodPost, strings.TrimSuffix(target.Meta.Admin, "/")+"/api/drain", r)
	if err != nil {
		operator.WriteJSON(w, http.StatusBadGateway, map[string]string{"error": fmt.Sprintf("ask %s to drain: %v", name, err)})
		return
	}
	b.log.Info("drain requested through the admin API", "edge", name, "status", code, "by", operator.Caller(r.Context()), "remote", r.RemoteAddr)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(body)
}

// isStatic reports whether name is a static edge of the config.
func (b *Balancer) isStatic(name string) bool {
	for _, e := range b.current.Load().cfg.Edges {
		if e.Name == name {
			return true
		}
	}
	return false
}

// drainStatic takes a static edge off this balancer's ring (state=on, the
// default) or puts it back (state=off). Its live tunnels are not touched:
// a static edge is a third-party backend that hands nothing over.
func (b *Balancer) drainStatic(w http.ResponseWriter, r *http.Request, name string) {
	state := r.URL.Query().Get("state")
	if state == "" {
		state = "on"
	}
	if state != "on" && state != "off" {
		operator.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("state must be on or off, got %q", state)})
		return
	}
	operator.Describe(r.Context(), "drain", name+" "+state)
	for {
		old := b.drainedStatic.Load()
		next := map[string]bool{}
		if old != nil {
			for k := range *old {
				next[k] = true
			}
		}
		if state == "on" {
			next[name] = true
		} else {
			delete(next, name)
		}
		if b.drainedStatic.CompareAndSwap(old, &next) {
			break
		}
	}
	b.saveState()
	b.rebuildRing()
	b.log.Warn("static edge drained through the admin API", "edge", name, "drained", state == "on", "by", operator.Caller(r.Context()), "remote", r.RemoteAddr)
	operator.WriteJSON(w, http.StatusAccepted, map[string]any{"edge": name, "static": true, "draining": state == "on"})
}

// undrained drops the static edges an operator drained from members.
func (b *Balancer) undrained(members []ring.Member) []ring.Member {
	d := b.drainedStatic.Load()
	if d == nil || len(*d) == 0 {
		return members
	}
	out := members[:0:0]
	for _, m := range members {
		if !(*d)[m.Name] {
			out = append(out, m)
		}
	}
	return out
}
