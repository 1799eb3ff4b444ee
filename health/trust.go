package health

import (
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
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
	if !configs.ValidNodeName(n.Name) {
		return fmt.Sprintf("name %s: want %s", quoted(n.Name), configs.NodeNameRule), ""
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
		if err := notThisHost(m.URL, n.Addr); err != nil {
			return "edge url " + err.Error(), ""
		}
	} else {
		m.URL, m.Weight = "", 0 // only edges are dialed for traffic
	}
	if m.Admin != "" {
		err := configs.CheckAdvertisedURL(m.Admin, allowed)
		if err == nil {
			err = notThisHost(m.Admin, n.Addr)
		}
		if err != nil {
			m.Admin, note = "", strings.TrimSpace(note+"; admin url "+err.Error())
		}
	}
	return "", note
}

// notThisHost refuses a URL (already checked by CheckAdvertisedURL) that
// would have the receiving node call its own host: a loopback or
// unspecified address (0.0.0.0 dials the local host) from a member whose
// gossip address (gossip, host:port) is not loopback — a member on one
// host with this one, the demo, may — and a link-local or multicast
// address from anyone. Loopback is among the default allowed networks: a
// member holding the key announcing 127.0.0.1:ADMIN had every balancer
// forward clients to its own admin port, whose tokenless reads trust a
// loopback Host, to its own data port, or to any local service; with
// wide allowed networks, 169.254.169.254 is a cloud's metadata service.
func notThisHost(raw, gossip string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(u.Hostname())
	if err != nil {
		return err
	}
	ip = ip.Unmap()
	switch {
	case ip.IsLinkLocalUnicast() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast():
		return fmt.Errorf("%q: a link-local or multicast address is never a member's", raw)
	case ip.IsLoopback() || ip.IsUnspecified():
		from, err := netip.ParseAddrPort(gossip)
		if err != nil || !from.Addr().Unmap().IsLoopback() {
			return fmt.Errorf("%q: the receiving node's own host, announced by a member gossiping from %s", raw, gossip)
		}
	}
	return nil
}

// quoted is s quoted for a reason or a log line, at most 64 bytes of it:
// a member's name and metadata are the member's to choose, and memberlist
// bounds neither in what it takes from others.
func quoted(s string) string {
	if len(s) <= 64 {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%q… (%d bytes)", s[:64], len(s))
}

// bounded is s as it is for a log line when at most 64 bytes, else as
// quoted cuts it.
func bounded(s string) string {
	if len(s) <= 64 {
		return s
	}
	return quoted(s)
}
