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
func (b *Balancer) SetCluster(c Cluster) { b.cluster.Store(&c) }

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
		}
	}
	return nodes, recent, snap.Version()
}

// serveDrain: POST /api/nodes/{name}/drain asks that edge (through its own
// admin API, whose address it gossips) to drain: it leaves the ring for new
// sessions and hands its live ones over. The answer is the edge's.
func (b *Balancer) serveDrain(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
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
