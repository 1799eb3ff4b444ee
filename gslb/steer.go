package gslb

import (
	"maps"
	"net/netip"
	"slices"

	"github.com/cespare/xxhash/v2"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
)

// Load-aware steering. Edges announce their load in their gossip metadata
// (health.Meta.Load: live sessions, connections, CPU; sessions.PublishLoad).
// Once per exchange round (agree.go) the gslb averages it per region over
// the region's alive edges — those it sees in its own gossip, else what a
// peer gslb node reports for a region it sees — and a region whose edges are
// at or above a level of its `steer` (sessions per edge, CPU percent)
// answers `share` of its clients, chosen by client network, with the first
// of its failover regions that serves and is not loaded itself. Steering
// ends only once every level is below (1 - hysteresis) of itself, so the
// answers do not flap while the load hovers at the level. A region with no
// member to serve fails over entirely, as without steering; a region whose
// edges announce nothing is not loaded.

// regionLoad is one region's edges' load, averaged per edge.
type regionLoad struct {
	Edges       int     `json:"edges"`
	Sessions    float64 `json:"sessions_per_edge"`
	Connections float64 `json:"connections_per_edge"`
	CPU         float64 `json:"cpu_percent"`
}

// maxAnnouncedLoad bounds what one edge's figures count for: a member holds
// the cluster key and is believed, but a typo'd or broken edge must not
// overflow an average.
const maxAnnouncedLoad = 10_000_000

// loadsOf averages the announced load of the alive edges among nodes, by
// their region.
func loadsOf(nodes []health.Node) map[string]regionLoad {
	out := map[string]regionLoad{}
	for _, n := range nodes {
		l := n.Meta.Load
		if n.Meta.Role != health.RoleEdge || n.Meta.State != health.StateAlive || l == nil || n.Meta.Region == "" {
			continue
		}
		r := out[n.Meta.Region]
		r.Edges++
		r.Sessions += float64(min(max(l.Sessions, 0), maxAnnouncedLoad))
		r.Connections += float64(min(max(l.Connections, 0), maxAnnouncedLoad))
		r.CPU += float64(min(max(l.CPU, 0), 100))
		out[n.Meta.Region] = r
	}
	for region, r := range out {
		r.Sessions /= float64(r.Edges)
		r.Connections /= float64(r.Edges)
		r.CPU /= float64(r.Edges)
		out[region] = r
	}
	return out
}

// mergeLoads is local with, for each region it lacks, the report of the
// peer that sees the most edges there (by name on a tie, so every node picks
// the same one).
func mergeLoads(local map[string]regionLoad, peers map[string]peerReport) map[string]regionLoad {
	out := maps.Clone(local)
	if out == nil {
		out = map[string]regionLoad{}
	}
	for _, name := range slices.Sorted(maps.Keys(peers)) {
		for region, l := range peers[name].loads {
			if _, mine := local[region]; mine {
				continue
			}
			if cur, ok := out[region]; !ok || l.Edges > cur.Edges {
				out[region] = l
			}
		}
	}
	return out
}

// overloaded reports whether l reaches a level of st, and released whether
// every level of st is below (1 - hysteresis) of itself.
func overloaded(st *configs.Steer, l regionLoad) (over, released bool) {
	released = true
	if lvl := float64(st.SessionsPerEdge); lvl > 0 {
		over = over || l.Sessions >= lvl
		released = released && l.Sessions < lvl*(1-st.Hysteresis)
	}
	if lvl := st.CPUPercent; lvl > 0 {
		over = over || l.CPU >= lvl
		released = released && l.CPU < lvl*(1-st.Hysteresis)
	}
	return over, released
}

// setLoads takes one sample of the regions' loads: steering starts for a
// region that reaches a level and ends for one released below every level.
// The answers are rebuilt when steering changed.
func (p *pools) setLoads(all map[string]regionLoad) {
	// Only the regions of our names: a peer's report names any region it
	// likes, and each would be a metric series.
	loads := map[string]regionLoad{}
	for _, n := range p.names {
		for rname := range n.regions {
			if l, ok := all[rname]; ok {
				loads[rname] = l
			}
		}
	}
	p.mu.Lock()
	p.loads = loads
	changed := false
	for name, n := range p.names {
		for _, rname := range n.order {
			st := n.regions[rname].cfg.Steer
			if st == nil {
				continue
			}
			k := regionKey{name, rname}
			over, released := overloaded(st, loads[rname])
			switch on := p.steering[k]; {
			case !on && over:
				p.steering[k] = true
				changed = true
				p.logger.Warn("region loaded: steering a share of its clients to its failover", "name", name, "region", rname, "share", st.Share, "load", loads[rname])
			case on && released:
				delete(p.steering, k)
				changed = true
				p.logger.Info("region no longer loaded: steering ends", "name", name, "region", rname, "load", loads[rname])
			}
		}
	}
	if p.metrics != nil && p.served.Load() {
		// Every region of our names, one no edge announces any more at 0:
		// left out, its gauges kept its last edges' figures after they had
		// gone.
		for _, n := range p.names {
			for region := range n.regions {
				l := loads[region]
				p.metrics.regionLoad.WithLabelValues(region, "sessions_per_edge").Set(l.Sessions)
				p.metrics.regionLoad.WithLabelValues(region, "connections_per_edge").Set(l.Connections)
				p.metrics.regionLoad.WithLabelValues(region, "cpu_percent").Set(l.CPU)
				p.metrics.regionLoad.WithLabelValues(region, "edges").Set(float64(l.Edges))
			}
		}
	}
	p.mu.Unlock()
	if changed {
		p.rebuild()
	}
}

// steerView is what a steering region answers its steered clients.
type steerView struct {
	to     string // the failover region answered from
	share  float64
	v4, v6 []netip.Addr
	ttl    uint32
}

// steerTarget picks where region r of n steers to: the first failover
// region that has members to serve, is not failed over and is not steering
// itself. nil: nowhere, the region answers all its clients itself.
func (p *pools) steerTarget(name string, n *managedName, r *region, serving map[string][]netip.Addr) *steerView {
	for _, f := range r.cfg.Failover {
		k := regionKey{name, f}
		if p.latched(k) || p.steering[k] || len(serving[f]) == 0 {
			continue
		}
		sv := &steerView{to: f, share: r.cfg.Steer.Share, ttl: uint32(n.cfg.FailoverTTL)}
		sv.v4, sv.v6 = split(serving[f])
		return sv
	}
	return nil
}

// steered reports whether client falls in the share of a steering region's
// clients answered from elsewhere: by its network (/24, /56), so one network
// gets one answer and resolvers' caches stay coherent.
func steered(client netip.Addr, share float64) bool {
	var b [17]byte
	b[16] = 's' // not the hash pick rotates by
	if client.Is4() {
		a := client.As4()
		copy(b[:], a[:3])
	} else {
		a := client.As16()
		copy(b[:], a[:7])
	}
	return float64(xxhash.Sum64(b[:])%10000) < share*10000
}

// steerScope is the ECS scope of a steering region's answer, or of a subset
// max_answers rotates: the client network both decide by, or the scope
// without them when longer.
func steerScope(client netip.Addr, bits int) int {
	if client.Is4() {
		return max(bits, 24)
	}
	return max(bits, 56)
}
