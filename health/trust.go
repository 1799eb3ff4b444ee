package health

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/ringlb/ringlb/configs"
)

// trustMeta decides what this node believes of a member's metadata. Gossip
// is authenticated by the cluster's key, but a node still believes only what
// it can check — a compromised or misconfigured member must not be able to
// claim the whole ring (an absurd weight), pose as an unknown role, or point
// balancers and dashboards at an address outside the cluster's networks.
//
// distrust, when not empty, says why the member is ignored altogether; note,
// when not empty, says which part of its metadata was dropped (its admin
// address, its load) while the member stays.
func trustMeta(n *Node, allowed []netip.Prefix) (distrust, note string) {
	if !validNodeName(n.Name) {
		return fmt.Sprintf("name %q: want 1 to 64 letters, digits, '.', '-' or '_'", n.Name), ""
	}
	m := &n.Meta
	switch m.Role {
	case RoleEdge, RoleBalancer, RoleGSLB:
	default:
		return fmt.Sprintf("unknown role %q", m.Role), ""
	}
	switch m.State {
	case StateAlive, StateDraining:
	default:
		return fmt.Sprintf("unknown state %q", m.State), ""
	}
	if len(m.Region) > 64 {
		return "region longer than 64 bytes", ""
	}
	if m.Load != nil && (m.Role != RoleEdge || m.Load.Sessions < 0 || m.Load.Connections < 0 || m.Load.CPU < 0 || m.Load.CPU > 100) {
		// Load steers DNS answers (gslb): a number no edge could have is
		// not believed (the node stays; its load is dropped).
		m.Load, note = nil, fmt.Sprintf("load %+v out of range", *m.Load)
	}
	if m.Role == RoleEdge {
		if m.Weight < 1 || m.Weight > configs.MaxEdgeWeight {
			return fmt.Sprintf("edge weight %d outside [1, %d]", m.Weight, configs.MaxEdgeWeight), ""
		}
		if err := configs.CheckAdvertisedURL(m.URL, allowed); err != nil {
			return "edge url " + err.Error(), ""
		}
	} else {
		m.URL, m.Weight = "", 0 // only edges are dialed for traffic
	}
	if m.Admin != "" {
		if err := configs.CheckAdvertisedURL(m.Admin, allowed); err != nil {
			m.Admin, note = "", strings.TrimSpace(note+"; admin url "+err.Error())
		}
	}
	return "", note
}

// validNodeName: node names travel in headers (X-Ringlb-Owner,
// X-Ringlb-Skip, a comma-separated list) and in logs.
func validNodeName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r == '.' || r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}
